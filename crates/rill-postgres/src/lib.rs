//! PostgreSQL as a Rill sink, exactly-once by two-phase commit.
//!
//! [`PostgresSink`] writes a stream into a table: each sink subtask copies a checkpoint's rows
//! into a transaction, `PREPARE TRANSACTION`s it at the checkpoint's barrier, and `COMMIT
//! PREPARED`s it when the checkpoint completes. Readers of the table see a checkpoint's rows
//! all at once, and never a row twice, however often the job fails and restarts: a restored
//! job commits what its checkpoint had prepared and rolls back the rest. The protocol is
//! `rill-core`'s [`TransactionalWriter`](rill_core::transactional::TransactionalWriter), the
//! one the event log's sink uses and the simulator checks under crashes; this crate adds only
//! the SQL ([`target`]).
//!
//! ```no_run
//! use rill::prelude::*;
//! use rill_postgres::{PostgresSink, PostgresSinkExt, row};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let env = StreamEnv::new();
//! let sink = PostgresSink::new(
//!     "host=127.0.0.1 user=rill dbname=rill",
//!     "page_counts",
//!     &["page", "views"],
//!     |(page, views): &(String, i64)| row![page.clone(), *views],
//! )?;
//! env.from_iter(vec![("home".to_owned(), 3_i64)])
//!     .sink_to_postgres(sink);
//! env.execute("page counts")?;
//! # Ok(())
//! # }
//! ```
//!
//! What the server needs: `max_prepared_transactions` above zero (at least twice the sink's
//! parallelism; it is 0 by default), and the table, created beforehand. The sink creates the
//! table `rill_commit_marks`, where each commit records which checkpoint's output it is, so that
//! a job restored from an older checkpoint than the one whose output the table holds is refused
//! (see `allow_rewind`) instead of writing it twice. Rows are best appended to a table without
//! unique keys that two checkpoints could both write: a prepared transaction keeps its rows
//! locked until its checkpoint completes, so a later row with the same key waits for it (the
//! data session gives up after a lock timeout of 10 s, and the job restarts).
//! [`PostgresSink::at_least_once`] copies each batch at once instead. For keyed results,
//! [`PostgresSink::upsert`] stages a checkpoint's rows in a table of their own and applies
//! them with `INSERT … ON CONFLICT … DO UPDATE` when the checkpoint completes.
//!
//! TLS is not supported: connect over loopback or a private network.

mod connection;
mod row;
pub mod target;

use std::sync::Arc;

use postgres::types::Type;
use rill_api::{DataStream, SinkHandle};
use rill_core::Data;
use rill_core::operator::OperatorInfo;
use rill_core::transactional::{Encode, TransactionalWriter};

use connection::{Connection, redact};
pub use postgres::types::ToSql;
pub use row::Row;
use target::{MARKS_TABLE, PostgresTarget, Table};

/// What can go wrong writing to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The server could not be reached or refused the session.
    #[error("cannot connect to PostgreSQL with '{config}': {}", explain(.source))]
    Connect {
        /// The connection parameters, without a password.
        config: String,
        /// The client's error.
        source: postgres::Error,
    },
    /// A statement failed.
    #[error("PostgreSQL failed {doing}: {}", explain(.source))]
    Query {
        /// What the sink was doing.
        doing: String,
        /// The client's error.
        source: postgres::Error,
    },
    /// The table or its columns are not what the sink was told.
    #[error("table '{table}': {reason}")]
    Table {
        /// The table.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// A record was mapped to a row of the wrong width.
    #[error("a row of {got} values for table '{table}', whose sink writes the columns ({columns})")]
    RowWidth {
        /// The table.
        table: String,
        /// The columns the sink writes.
        columns: String,
        /// How many values the row had.
        got: usize,
    },
    /// The server does not allow prepared transactions.
    #[error(
        "PostgreSQL at '{config}' has max_prepared_transactions = 0, and an exactly-once sink \
         prepares a transaction per subtask and checkpoint: set it in postgresql.conf to at \
         least twice the sink's parallelism and restart the server"
    )]
    NoPreparedTransactions {
        /// The connection parameters, without a password.
        config: String,
    },
    /// The two-phase-commit protocol was not followed (a bug in the caller).
    #[error("{0}")]
    Protocol(String),
    /// A session's thread could not be started, or ended.
    #[error("PostgreSQL session: {0}")]
    Thread(String),
}

/// The client's error with what the server said (its message, SQLSTATE, detail and hint),
/// which the client's own `Display` leaves out.
fn explain(error: &postgres::Error) -> String {
    use std::error::Error as _;
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    match error.source() {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// A table of a PostgreSQL database, written by a stream.
pub struct PostgresSink<T> {
    table: Arc<Table>,
    encode: Encode<PostgresTarget, T>,
    exactly_once: bool,
}

impl<T: Data> PostgresSink<T> {
    /// Writes into the `columns` of `table` the row `to_row` makes of each value, over
    /// connections made with `config` (`host=… port=… user=… dbname=…`, or a `postgresql://`
    /// URL). Connects once to check the table and its columns, and that the server allows
    /// prepared transactions; creates the table of commit marks if it is missing. Names are
    /// plain identifiers (letters, digits, `_`, `$`), the table optionally qualified by its
    /// schema; PostgreSQL folds them to lower case.
    pub fn new(
        config: &str,
        table: &str,
        columns: &[&str],
        to_row: impl Fn(&T) -> Row + Send + Sync + 'static,
    ) -> Result<Self, PostgresError> {
        let table = check_table(config, table, columns, None)?;
        Ok(PostgresSink {
            table: Arc::new(table),
            encode: Arc::new(to_row),
            exactly_once: true,
        })
    }

    /// Upserts into `table` instead: the rows of a checkpoint are applied when it completes —
    /// for each value of the `key` columns, the last row written, by `INSERT … ON CONFLICT
    /// (key) DO UPDATE` — for tables that hold each key's latest result, which a dashboard
    /// reads. `key` must carry a unique constraint. The rows wait in a staging table of their
    /// own (`rill_staged_<table>`, created if missing), so that a prepared transaction locks no
    /// row of the table: results of one key from consecutive checkpoints never wait for each
    /// other.
    pub fn upsert(
        config: &str,
        table: &str,
        columns: &[&str],
        key: &[&str],
        to_row: impl Fn(&T) -> Row + Send + Sync + 'static,
    ) -> Result<Self, PostgresError> {
        let table = check_table(config, table, columns, Some(key))?;
        Ok(PostgresSink {
            table: Arc::new(table),
            encode: Arc::new(to_row),
            exactly_once: true,
        })
    }

    /// The writer of the sink subtask `info` describes: what [`PostgresSinkExt::sink_to_postgres`]
    /// runs, for a driver or test of one's own.
    pub fn writer(&self, info: &OperatorInfo) -> TransactionalWriter<PostgresTarget, T> {
        TransactionalWriter::new(
            PostgresTarget::new(self.table.clone()),
            info,
            self.encode.clone(),
            self.exactly_once,
        )
    }

    /// Copies each batch at once instead of committing per checkpoint: lower latency, and no
    /// prepared transactions, but a job that fails and restarts writes again what it wrote
    /// since its last checkpoint.
    pub fn at_least_once(mut self) -> Self {
        self.exactly_once = false;
        self
    }
}

/// Checks the table and the server, and creates the commit marks' table (and, to upsert by
/// `key`, the staging table).
fn check_table(
    config: &str,
    table: &str,
    columns: &[&str],
    key: Option<&[&str]>,
) -> Result<Table, PostgresError> {
    let refuse = |reason: String| PostgresError::Table {
        table: table.to_owned(),
        reason,
    };
    if !table.split('.').all(is_identifier) || table.split('.').count() > 2 {
        return Err(refuse(
            "not a table name (an identifier, or schema.identifier)".to_owned(),
        ));
    }
    if columns.is_empty() {
        return Err(refuse("no columns to write".to_owned()));
    }
    if let Some(column) = columns.iter().find(|column| !is_identifier(column)) {
        return Err(refuse(format!("'{column}' is not a column name")));
    }
    if let Some(key) = key
        && (key.is_empty() || key.iter().any(|column| !columns.contains(column)))
    {
        return Err(refuse(format!(
            "the upsert key ({}) must be one or more of the columns written ({})",
            key.join(", "),
            columns.join(", ")
        )));
    }
    let connection = Connection::open(config)?;
    let prepared_allowed: String =
        connection.run("reading max_prepared_transactions", |client| {
            Ok(client
                .query_one("SHOW max_prepared_transactions", &[])?
                .get(0))
        })?;
    if prepared_allowed.trim() == "0" {
        return Err(PostgresError::NoPreparedTransactions {
            config: redact(config),
        });
    }
    let probe = format!("SELECT {} FROM {table} LIMIT 0", columns.join(", "));
    let types: Vec<Type> = connection
        .run("reading the table's columns", move |client| {
            let statement = client.prepare(&probe)?;
            Ok(statement
                .columns()
                .iter()
                .map(|column| column.type_().clone())
                .collect())
        })
        .map_err(|error| refuse(error.to_string()))?;
    connection.run("creating the commit marks' table", |client| {
        client.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {MARKS_TABLE} (\
                 writer text NOT NULL, \
                 transaction_id text NOT NULL, \
                 checkpoint bigint NOT NULL, \
                 PRIMARY KEY (writer, transaction_id))"
        ))
    })?;
    let columns: Vec<String> = columns.iter().map(|column| (*column).to_owned()).collect();
    let upsert = key.map(|key| {
        let key: Vec<String> = key.iter().map(|column| (*column).to_owned()).collect();
        target::Upsert::new(table, &columns, &key)
    });
    if let Some(upsert) = &upsert {
        let create = upsert.create_staging(table, &columns);
        connection.run("creating the staging table", move |client| {
            client.batch_execute(&create)
        })?;
        // Running it (for no transaction, then rolling back) checks the key against the
        // table's unique constraints, which PostgreSQL looks for when it plans the statement.
        let apply = upsert.apply.clone();
        connection
            .run("checking the upsert key", move |client| {
                let mut transaction = client.transaction()?;
                transaction.execute(&apply, &[&"rill: no such transaction"])?;
                transaction.rollback()
            })
            .map_err(|error| refuse(error.to_string()))?;
    }
    Ok(Table {
        config: config.to_owned(),
        name: table.to_owned(),
        columns,
        types,
        upsert,
    })
}

/// Whether `name` is a plain SQL identifier.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// Writes a stream to PostgreSQL.
pub trait PostgresSinkExt<T> {
    /// Writes the stream into a table: exactly-once by default (a checkpoint's rows become
    /// visible when it completes, or at the end of a job without checkpoints), or
    /// at-least-once (see [`PostgresSink::at_least_once`]).
    fn sink_to_postgres(self, sink: PostgresSink<T>) -> SinkHandle;
}

impl<T: Data> PostgresSinkExt<T> for DataStream<T> {
    fn sink_to_postgres(self, sink: PostgresSink<T>) -> SinkHandle {
        let name = format!("postgres sink '{}'", sink.table.name);
        self.sink_with(&name, move |info| sink.writer(info))
    }
}

#[cfg(test)]
mod tests {
    use super::is_identifier;

    #[test]
    fn only_plain_identifiers_are_names() {
        assert!(is_identifier("page_counts"));
        assert!(is_identifier("_x$1"));
        assert!(!is_identifier("1x"));
        assert!(!is_identifier("x; DROP TABLE y"));
        assert!(!is_identifier(""));
    }
}

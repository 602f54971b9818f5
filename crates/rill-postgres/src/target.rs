//! [`PostgresTarget`]: a table of a PostgreSQL database as the target of `rill-core`'s
//! two-phase-commit writer ([`TransactionalWriter`](rill_core::transactional::TransactionalWriter)).
//!
//! Each sink subtask holds two sessions. The *data* session stages a checkpoint's rows in a
//! transaction (binary `COPY`), and at the barrier inserts the commit mark and runs `PREPARE
//! TRANSACTION '<job>/<uid>/<subtask>/<sequence>'`: from then on the rows are durable on the
//! server whatever happens to the job, and invisible until `COMMIT PREPARED`, which the *control*
//! session runs when the checkpoint completes (a session inside a transaction cannot). A
//! transaction not yet prepared dies with its session when the job's process does. The commit
//! marks live in the table `rill_commit_marks` (writer, transaction, checkpoint), a row inserted
//! by the prepared transaction itself, so it becomes visible with the rows it marks; the newest
//! checkpoint of a writer is the largest there, and each commit deletes that writer's older rows.

use std::sync::Arc;

use postgres::Client;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use rill_core::transactional::{CommitMark, TransactionalTarget};

use crate::connection::Connection;
use crate::{PostgresError, Row};

/// The table the commit marks are kept in.
pub(crate) const MARKS_TABLE: &str = "rill_commit_marks";

/// The longest transaction id PostgreSQL takes (`PREPARE TRANSACTION`'s limit).
const MAX_TRANSACTION_ID: usize = 199;

/// How long a statement of the data session waits for a row lock before it fails. Rows that a
/// prepared transaction holds stay locked until its checkpoint completes — which the sink,
/// waiting, would never hear of: failing turns such a wait into a restart, whose restore commits
/// the transaction.
const LOCK_TIMEOUT: &str = "10s";

/// The table a sink writes, as checked when the sink was built.
#[derive(Debug)]
pub(crate) struct Table {
    /// The connection parameters.
    pub(crate) config: String,
    /// The table's name, as given (checked to be a plain, optionally qualified, identifier).
    pub(crate) name: String,
    /// The columns a row fills, in order.
    pub(crate) columns: Vec<String>,
    /// Their types, as the server reported them.
    pub(crate) types: Vec<Type>,
}

impl Table {
    fn copy_statement(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN BINARY",
            self.name,
            self.columns.join(", ")
        )
    }
}

/// The two sessions of a sink subtask.
struct Sessions {
    data: Connection,
    control: Connection,
}

/// One sink subtask's writer of a table, through prepared transactions.
pub struct PostgresTarget {
    table: Arc<Table>,
    /// Opened on first use, so that building a job's subtasks never blocks or fails.
    sessions: Option<Sessions>,
    /// The transaction the data session has open.
    open: Option<String>,
}

impl PostgresTarget {
    pub(crate) fn new(table: Arc<Table>) -> Self {
        PostgresTarget {
            table,
            sessions: None,
            open: None,
        }
    }

    fn sessions(&mut self) -> Result<&Sessions, PostgresError> {
        if self.sessions.is_none() {
            let data = Connection::open(&self.table.config)?;
            data.run("setting the lock timeout", |client| {
                client.batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
            })?;
            let control = Connection::open(&self.table.config)?;
            self.sessions = Some(Sessions { data, control });
        }
        self.sessions
            .as_ref()
            .ok_or_else(|| PostgresError::Thread("no session".to_owned()))
    }

    /// Copies `rows` into the table in the data session (inside its open transaction, if any).
    fn copy(&mut self, rows: Vec<Row>) -> Result<(), PostgresError> {
        let expected = self.table.columns.len();
        if let Some(row) = rows.iter().find(|row| row.len() != expected) {
            return Err(PostgresError::RowWidth {
                table: self.table.name.clone(),
                columns: self.table.columns.join(", "),
                got: row.len(),
            });
        }
        let table = self.table.clone();
        let doing = format!("copying {} rows into table '{}'", rows.len(), table.name);
        self.sessions()?
            .data
            .run(&doing, move |client| copy_rows(client, &table, &rows))
    }
}

/// Writes `rows` with one binary `COPY`.
fn copy_rows(client: &mut Client, table: &Table, rows: &[Row]) -> Result<(), postgres::Error> {
    let statement = table.copy_statement();
    let mut writer = BinaryCopyInWriter::new(client.copy_in(&statement)?, &table.types);
    for row in rows {
        let values: Vec<&(dyn ToSql + Sync)> = row.values().collect();
        writer.write(&values)?;
    }
    writer.finish()?;
    Ok(())
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Runs `statement` on a prepared transaction, which may already be gone: committing or
/// rolling back one that is not prepared does nothing (the contract's idempotence).
fn resolve(client: &mut Client, statement: &str) -> Result<(), postgres::Error> {
    match client.batch_execute(statement) {
        Err(error) if error.code() == Some(&SqlState::UNDEFINED_OBJECT) => Ok(()),
        other => other,
    }
}

impl TransactionalTarget for PostgresTarget {
    type Produced = Row;
    type Error = PostgresError;

    fn describe(&self) -> String {
        format!("PostgreSQL table '{}'", self.table.name)
    }

    fn append(&mut self, rows: Vec<Row>) -> Result<(), PostgresError> {
        self.copy(rows)
    }

    fn stage(&mut self, id: &str, rows: Vec<Row>) -> Result<(), PostgresError> {
        match &self.open {
            Some(open) if open == id => {}
            Some(open) => {
                return Err(PostgresError::Protocol(format!(
                    "transaction '{id}' staged while '{open}' is open"
                )));
            }
            None => {
                if id.len() > MAX_TRANSACTION_ID {
                    return Err(PostgresError::Protocol(format!(
                        "transaction id '{id}' is longer than PostgreSQL's {MAX_TRANSACTION_ID} \
                         bytes: give the job or the sink a shorter name or uid"
                    )));
                }
                self.sessions()?
                    .data
                    .run("opening a transaction", |client| {
                        client.batch_execute("BEGIN")
                    })?;
                self.open = Some(id.to_owned());
            }
        }
        self.copy(rows)
    }

    fn prepare(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), PostgresError> {
        if self.open.as_deref() != Some(id) {
            return Err(PostgresError::Protocol(format!(
                "transaction '{id}' prepared without being staged"
            )));
        }
        let mark = mark.map(|mark| (mark.writer.to_owned(), mark.checkpoint as i64));
        let transaction = id.to_owned();
        let doing = format!("preparing transaction '{id}'");
        self.sessions()?.data.run(&doing, move |client| {
            if let Some((writer, checkpoint)) = mark {
                client.execute(
                    &format!(
                        "INSERT INTO {MARKS_TABLE} (writer, transaction_id, checkpoint) \
                         VALUES ($1, $2, $3)"
                    ),
                    &[&writer, &transaction, &checkpoint],
                )?;
            }
            client.batch_execute(&format!("PREPARE TRANSACTION {}", literal(&transaction)))
        })?;
        self.open = None;
        Ok(())
    }

    fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), PostgresError> {
        let statement = format!("COMMIT PREPARED {}", literal(id));
        let prune = mark.map(|mark| (mark.writer.to_owned(), mark.checkpoint as i64));
        let doing = format!("committing transaction '{id}'");
        self.sessions()?.control.run(&doing, move |client| {
            resolve(client, &statement)?;
            if let Some((writer, checkpoint)) = prune {
                client.execute(
                    &format!("DELETE FROM {MARKS_TABLE} WHERE writer = $1 AND checkpoint < $2"),
                    &[&writer, &checkpoint],
                )?;
            }
            Ok(())
        })
    }

    fn abort(&mut self, id: &str) -> Result<(), PostgresError> {
        let statement = format!("ROLLBACK PREPARED {}", literal(id));
        let doing = format!("rolling back transaction '{id}'");
        self.sessions()?
            .control
            .run(&doing, move |client| resolve(client, &statement))
    }

    fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, PostgresError> {
        let prefix = prefix.to_owned();
        self.sessions()?
            .control
            .run("listing prepared transactions", move |client| {
                let rows = client.query(
                    "SELECT gid FROM pg_prepared_xacts \
                     WHERE database = current_database() AND starts_with(gid, $1) ORDER BY gid",
                    &[&prefix],
                )?;
                Ok(rows.iter().map(|row| row.get(0)).collect())
            })
    }

    fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, PostgresError> {
        let writer = writer.to_owned();
        let newest: Option<i64> =
            self.sessions()?
                .control
                .run("reading the commit marks", move |client| {
                    let row = client.query_one(
                        &format!("SELECT max(checkpoint) FROM {MARKS_TABLE} WHERE writer = $1"),
                        &[&writer],
                    )?;
                    Ok(row.get(0))
                })?;
        Ok(newest.map(|checkpoint| checkpoint as u64))
    }

    fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), PostgresError> {
        let writer = writer.to_owned();
        let to = to.map(|checkpoint| checkpoint as i64);
        self.sessions()?
            .control
            .run("moving the commit mark back", move |client| {
                let mut transaction = client.transaction()?;
                transaction.execute(
                    &format!(
                        "DELETE FROM {MARKS_TABLE} WHERE writer = $1 \
                         AND ($2::bigint IS NULL OR checkpoint > $2)"
                    ),
                    &[&writer, &to],
                )?;
                if let Some(to) = to {
                    transaction.execute(
                        &format!(
                            "INSERT INTO {MARKS_TABLE} (writer, transaction_id, checkpoint) \
                             VALUES ($1, 'rewind', $2) \
                             ON CONFLICT (writer, transaction_id) \
                             DO UPDATE SET checkpoint = EXCLUDED.checkpoint"
                        ),
                        &[&writer, &to],
                    )?;
                }
                transaction.commit()
            })
    }

    /// PostgreSQL's `PREPARE TRANSACTION` and `COMMIT PREPARED` are durable when they return.
    fn flush(&mut self) -> Result<(), PostgresError> {
        Ok(())
    }
}

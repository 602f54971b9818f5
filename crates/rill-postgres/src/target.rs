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
//! by the prepared transaction itself (by the transaction that applies them, for upserts), so
//! it becomes visible with the rows it marks; the newest
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
    /// In upsert mode, the staging table and the statements that apply a transaction.
    pub(crate) upsert: Option<Upsert>,
}

/// Upsert mode: a transaction's rows are staged in a table of their own (the target's columns,
/// the transaction's id and the row's order), so that a prepared transaction locks no row of
/// the target; its commit applies them — the last row of each key, `INSERT … ON CONFLICT …
/// DO UPDATE` — and deletes them, in one transaction.
#[derive(Debug)]
pub(crate) struct Upsert {
    /// The staging table.
    pub(crate) staging: String,
    /// Applies the staged rows of transaction `$1` to the target.
    pub(crate) apply: String,
}

impl Upsert {
    /// The staging table of `table` and the statement applying a transaction of it, with the
    /// rows' `key` columns.
    pub(crate) fn new(table: &str, columns: &[String], key: &[String]) -> Self {
        let staging = match table.rsplit_once('.') {
            Some((schema, name)) => format!("{schema}.rill_staged_{name}"),
            None => format!("rill_staged_{table}"),
        };
        let (columns, key) = (columns.join(", "), key.join(", "));
        let updates: Vec<String> = columns
            .split(", ")
            .filter(|column| !key.split(", ").any(|k| k == *column))
            .map(|column| format!("{column} = EXCLUDED.{column}"))
            .collect();
        let on_conflict = if updates.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let apply = format!(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM (SELECT DISTINCT ON ({key}) \
             {columns} FROM {staging} WHERE rill_transaction = $1 ORDER BY {key}, rill_seq DESC) \
             AS latest ON CONFLICT ({key}) {on_conflict}"
        );
        Upsert { staging, apply }
    }

    /// Creates the staging table, if missing.
    pub(crate) fn create_staging(&self, table: &str, columns: &[String]) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {staging} AS SELECT {columns} FROM {table} WITH NO DATA; \
             ALTER TABLE {staging} ADD COLUMN IF NOT EXISTS rill_transaction text, \
             ADD COLUMN IF NOT EXISTS rill_seq bigserial",
            staging = self.staging,
            columns = columns.join(", ")
        )
    }
}

impl Table {
    /// The `COPY` a transaction's rows go in with: into the table, or (upserts) into the
    /// staging table, each row with the transaction's id.
    fn copy_statement(&self) -> String {
        match &self.upsert {
            None => format!(
                "COPY {} ({}) FROM STDIN BINARY",
                self.name,
                self.columns.join(", ")
            ),
            Some(upsert) => format!(
                "COPY {} ({}, rill_transaction) FROM STDIN BINARY",
                upsert.staging,
                self.columns.join(", ")
            ),
        }
    }

    /// In upsert mode, applies the staged rows of transaction `id`, deletes them and records
    /// the commit `mark` (writer, checkpoint), in one transaction: run again, it finds nothing
    /// to apply. In append mode, the rows and the mark came with the prepared transaction.
    fn apply_staged(
        &self,
        client: &mut Client,
        id: &str,
        mark: Option<&(String, i64)>,
    ) -> Result<(), postgres::Error> {
        let Some(upsert) = &self.upsert else {
            return Ok(());
        };
        let mut transaction = client.transaction()?;
        transaction.execute(&upsert.apply, &[&id])?;
        transaction.execute(
            &format!("DELETE FROM {} WHERE rill_transaction = $1", upsert.staging),
            &[&id],
        )?;
        if let Some((writer, checkpoint)) = mark {
            transaction.execute(
                &format!(
                    "INSERT INTO {MARKS_TABLE} (writer, transaction_id, checkpoint) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
                ),
                &[writer, &id, checkpoint],
            )?;
        }
        transaction.commit()
    }

    /// The types of a row as [`Table::copy_statement`] copies it.
    fn copy_types(&self) -> Vec<Type> {
        let mut types = self.types.clone();
        if self.upsert.is_some() {
            types.push(Type::TEXT);
        }
        types
    }
}

/// The id of the next batch an at-least-once upsert sink applies at once.
fn at_once_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("at-once/{}/{next}", std::process::id())
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

    /// Copies `rows` of transaction `id` into the table (or its staging table) in the data
    /// session, inside its open transaction, if any.
    fn copy(&mut self, id: &str, rows: Vec<Row>) -> Result<(), PostgresError> {
        let expected = self.table.columns.len();
        if let Some(row) = rows.iter().find(|row| row.len() != expected) {
            return Err(PostgresError::RowWidth {
                table: self.table.name.clone(),
                columns: self.table.columns.join(", "),
                got: row.len(),
            });
        }
        let (table, id) = (self.table.clone(), id.to_owned());
        let doing = format!("copying {} rows into table '{}'", rows.len(), table.name);
        self.sessions()?
            .data
            .run(&doing, move |client| copy_rows(client, &table, &id, &rows))
    }
}

/// Writes `rows` of transaction `id` with one binary `COPY`.
fn copy_rows(
    client: &mut Client,
    table: &Table,
    id: &str,
    rows: &[Row],
) -> Result<(), postgres::Error> {
    let statement = table.copy_statement();
    let mut writer = BinaryCopyInWriter::new(client.copy_in(&statement)?, &table.copy_types());
    let id: &(dyn ToSql + Sync) = &id;
    for row in rows {
        let mut values: Vec<&(dyn ToSql + Sync)> = row.values().collect();
        if table.upsert.is_some() {
            values.push(id);
        }
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
        let id = at_once_id();
        self.copy(&id, rows)?;
        let table = self.table.clone();
        self.sessions()?
            .data
            .run("applying upserts", move |client| {
                table.apply_staged(client, &id, None)
            })
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
        self.copy(id, rows)
    }

    fn prepare(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), PostgresError> {
        if self.open.as_deref() != Some(id) {
            return Err(PostgresError::Protocol(format!(
                "transaction '{id}' prepared without being staged"
            )));
        }
        // Upserts record their mark when they are applied, with them.
        let mark = mark
            .filter(|_| self.table.upsert.is_none())
            .map(|mark| (mark.writer.to_owned(), mark.checkpoint as i64));
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
        let (table, id) = (self.table.clone(), id.to_owned());
        self.sessions()?.control.run(&doing, move |client| {
            resolve(client, &statement)?;
            // Upserts: a crash between the two leaves the rows committed in the staging table:
            // the restored sink commits the transaction again, and the apply finds them.
            table.apply_staged(client, &id, prune.as_ref())?;
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

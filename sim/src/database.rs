//! A model of a database with prepared transactions — what PostgreSQL's two-phase commit
//! promises `rill-postgres`'s target — as the target of simulated sinks, so that scenarios run
//! the shared two-phase-commit writer against a system whose transactions behave unlike the
//! log's.
//!
//! The database is a server beside the job: it survives every crash of the job's process or
//! machine. A [`DatabaseSession`] is one sink subtask's sessions with it. Rows staged in a
//! transaction stay in the session until it is prepared, so a transaction not yet prepared dies
//! with the session, as PostgreSQL rolls back the transaction of a connection that drops; a
//! prepared transaction is durable at once and invisible until committed. Only prepared
//! transactions are listed as open (a session's unprepared one is gone with the process that
//! would list it). The commit marks are rows that a prepared transaction inserts and its commit
//! makes visible; a writer's newest is its largest, and a commit deletes that writer's older
//! ones — as `rill-postgres` keeps them in `rill_commit_marks`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rill_core::transactional::{CommitMark, TransactionalTarget};

use crate::log::LogRecord;

/// A contract broken by the writer: the model refuses it, as the server would.
#[derive(Debug, thiserror::Error)]
#[error("the database refuses: {0}")]
pub struct DatabaseError(String);

/// A prepared transaction.
#[derive(Debug)]
struct Prepared {
    rows: Vec<LogRecord>,
    /// (writer, checkpoint) of the mark it inserted.
    mark: Option<(String, u64)>,
}

#[derive(Debug, Default)]
struct Tables {
    /// The table's committed rows, in commit order.
    committed: Vec<LogRecord>,
    /// Prepared transactions by id.
    prepared: BTreeMap<String, Prepared>,
    /// Committed marks: by writer, the checkpoint of each transaction that marked it.
    marks: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The simulated database, shared by every attempt of a run.
#[derive(Clone, Debug, Default)]
pub struct SimDatabase {
    tables: Arc<Mutex<Tables>>,
}

impl SimDatabase {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A sink subtask's sessions.
    pub fn session(&self) -> DatabaseSession {
        DatabaseSession {
            database: self.clone(),
            open: None,
        }
    }

    /// Runs `read` over the committed rows.
    pub fn with_committed<R>(&self, read: impl FnOnce(&[LogRecord]) -> R) -> R {
        read(&self.tables().committed)
    }

    /// The prepared transactions, by id.
    pub fn prepared(&self) -> Vec<String> {
        self.tables().prepared.keys().cloned().collect()
    }
}

/// One sink subtask's sessions with the database.
pub struct DatabaseSession {
    database: SimDatabase,
    /// The transaction open in the data session, and its rows.
    open: Option<(String, Vec<LogRecord>)>,
}

impl TransactionalTarget for DatabaseSession {
    type Produced = LogRecord;
    type Error = DatabaseError;

    fn describe(&self) -> String {
        "the simulated database's table".to_owned()
    }

    fn append(&mut self, records: Vec<LogRecord>) -> Result<(), DatabaseError> {
        self.database.tables().committed.extend(records);
        Ok(())
    }

    fn stage(&mut self, id: &str, records: Vec<LogRecord>) -> Result<(), DatabaseError> {
        match &mut self.open {
            Some((open, rows)) if open == id => rows.extend(records),
            Some((open, _)) => {
                return Err(DatabaseError(format!(
                    "transaction '{id}' staged while '{open}' is open"
                )));
            }
            None => self.open = Some((id.to_owned(), records)),
        }
        Ok(())
    }

    fn prepare(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), DatabaseError> {
        let Some((open, rows)) = self.open.take_if(|(open, _)| open.as_str() == id) else {
            return Err(DatabaseError(format!(
                "transaction '{id}' prepared without being staged"
            )));
        };
        let mut tables = self.database.tables();
        if tables.prepared.contains_key(&open) {
            return Err(DatabaseError(format!(
                "transaction identifier '{open}' is already in use"
            )));
        }
        let mark = mark.map(|mark| (mark.writer.to_owned(), mark.checkpoint));
        tables.prepared.insert(open, Prepared { rows, mark });
        Ok(())
    }

    fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), DatabaseError> {
        let mut tables = self.database.tables();
        if let Some(prepared) = tables.prepared.remove(id) {
            tables.committed.extend(prepared.rows);
            if let Some((writer, checkpoint)) = prepared.mark {
                let marks = tables.marks.entry(writer).or_default();
                marks.insert(id.to_owned(), checkpoint);
            }
        }
        if let Some(mark) = mark
            && let Some(marks) = tables.marks.get_mut(mark.writer)
        {
            marks.retain(|_, checkpoint| *checkpoint >= mark.checkpoint);
        }
        Ok(())
    }

    fn abort(&mut self, id: &str) -> Result<(), DatabaseError> {
        self.database.tables().prepared.remove(id);
        Ok(())
    }

    fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, DatabaseError> {
        let tables = self.database.tables();
        let ids = tables.prepared.keys().filter(|id| id.starts_with(prefix));
        Ok(ids.cloned().collect())
    }

    fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, DatabaseError> {
        let tables = self.database.tables();
        let marks = tables.marks.get(writer);
        Ok(marks.and_then(|marks| marks.values().max().copied()))
    }

    fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), DatabaseError> {
        let mut tables = self.database.tables();
        let marks = tables.marks.entry(writer.to_owned()).or_default();
        marks.retain(|_, checkpoint| to.is_some_and(|to| *checkpoint <= to));
        if let Some(to) = to {
            marks.insert("rewind".to_owned(), to);
        }
        Ok(())
    }

    /// The server's prepares and commits are durable when they return.
    fn flush(&mut self) -> Result<(), DatabaseError> {
        Ok(())
    }
}

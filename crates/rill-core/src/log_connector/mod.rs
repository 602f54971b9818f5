//! An event log as a source and as a two-phase-commit sink, over any log that keeps the
//! [`ConnectorLog`] contract: `rill-log`'s embedded log in real jobs, the simulator's model of it
//! in simulated ones — so the simulator checks the very code real jobs run. [`LogReader`] (in
//! `reader`) is the source; [`LogWriter`] (in `writer`) the sink, the two-phase-commit writer of
//! [`crate::transactional`] over a [`LogTarget`].

use std::sync::Arc;

mod reader;
mod writer;

pub use reader::{LogBehind, LogReader};
pub use writer::{LogTarget, LogWriter};

use crate::transactional::CommitMark;

/// What the log connectors need of a log. Implementations keep this contract:
/// - `read` returns committed records of one partition from an offset, in offset order, with no
///   gap;
/// - `append` and `stage` hand their records to the OS (a crash of the process loses nothing,
///   a crash of the machine may); `prepare` and `flush` make everything written so far durable;
/// - `commit` appends a staged transaction's records, and commits nothing for a transaction
///   that is not staged (never was, or was committed or aborted), so it is idempotent; it may
///   move them in pieces, each atomic, in order: a crash between them leaves the rest staged,
///   and committing again moves it (aborting it is refused); like `append`, it is durable only
///   after a `flush`;
/// - `open_transactions` lists staged transactions (prepared or not) by id prefix;
/// - `commit` records its [`CommitMark`] in the same atomic write as its first records, keeping the
///   newest checkpoint per writer (a mark never goes back), and `committed_checkpoint` reads it:
///   what the log holds of a writer's output is what its mark says, so a writer restored from
///   an older point, or finding the log behind its checkpoint, can tell.
pub trait ConnectorLog: Clone + Send + Sync + 'static {
    /// A record read from a partition.
    type Record: Send;
    /// A record to write.
    type Produced: Send;
    /// What can go wrong.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The end offset of each partition of `topic`, by partition.
    fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, Self::Error>;
    /// Committed records of a partition from offset `from`: at most `max.0` of them, and no
    /// more once they hold `max.1` bytes (at least one, when there is one).
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: (usize, usize),
    ) -> Result<Vec<Self::Record>, Self::Error>;
    /// A read record's timestamp, in ms.
    fn timestamp(record: &Self::Record) -> i64;
    /// The bytes a read record holds (what `read`'s byte limit counts).
    fn bytes(record: &Self::Record) -> usize;
    /// Appends records to `topic`.
    fn append(&self, topic: &str, records: Vec<Self::Produced>) -> Result<(), Self::Error>;
    /// Stages records for `topic` under transaction `id`, opening it if needed.
    fn stage(&self, id: &str, topic: &str, records: Vec<Self::Produced>)
    -> Result<(), Self::Error>;
    /// Prepares transaction `id`: its records are durable from now on.
    fn prepare(&self, id: &str) -> Result<(), Self::Error>;
    /// Commits transaction `id`, and records `mark` with it, if any.
    fn commit(&self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), Self::Error>;
    /// The newest checkpoint whose output `writer` committed, as its marks recorded.
    fn committed_checkpoint(&self, writer: &str) -> Result<Option<u64>, Self::Error>;
    /// Moves `writer`'s mark back to `to` (removes it for none), durably: a rewind the job
    /// was allowed.
    fn rewind_commit_mark(&self, writer: &str, to: Option<u64>) -> Result<(), Self::Error>;
    /// Aborts transaction `id`.
    fn abort(&self, id: &str) -> Result<(), Self::Error>;
    /// The ids of the open transactions starting with `prefix`.
    fn open_transactions(&self, prefix: &str) -> Result<Vec<String>, Self::Error>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), Self::Error>;
}

/// Decodes a log record into a stream value.
pub type Decode<L, T> = Arc<dyn Fn(<L as ConnectorLog>::Record) -> T + Send + Sync>;

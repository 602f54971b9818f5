//! Exactly-once output by two-phase commit, over any system that keeps the
//! [`TransactionalTarget`] contract: the event log (`rill-log`, and the simulator's model of it),
//! a PostgreSQL database (`rill-postgres`, and the simulator's model of prepared transactions),
//! or any connector a user writes. [`TransactionalWriter`] (in `writer`) is the sink's side of
//! the protocol, written once: it stages each checkpoint's records in a transaction, prepares it
//! at the barrier, commits it when the checkpoint completes, and on restore commits what the
//! checkpoint had prepared and aborts everything else its subtask left. Because the simulator
//! runs the same writer against its models under crashes, what it checks is the code real jobs
//! run; a connector adds only the calls to its system.

use std::sync::Arc;

mod writer;

pub use writer::{SinkRestoreError, TransactionalWriter};

/// What a two-phase-commit sink needs of the system it writes. One value serves one sink
/// subtask (it may hold connections of its own). Implementations keep this contract:
/// - `stage` adds records to transaction `id`, opening it if needed; nobody sees them before
///   the commit;
/// - `prepare` makes the transaction's records durable, so that it can still be committed
///   after a crash of the job's process or machine; a transaction staged but not prepared may
///   be lost in such a crash (it then commits nothing);
/// - `commit` makes a prepared transaction's records visible, and commits nothing for a
///   transaction that is not prepared (never was, or was committed or aborted), so it is
///   idempotent; `abort` drops one;
/// - `open_transactions` lists the transactions still open (at least every prepared one) by id
///   prefix;
/// - a commit records its [`CommitMark`] atomically with its records — given at `prepare` and
///   again at `commit`, so that a system records it where its transactions allow — keeping the
///   newest checkpoint per writer (a mark never goes back), and `committed_checkpoint` reads it:
///   what the system holds of a writer's output is what its mark says, so a writer restored
///   from an older point, or finding the system behind its checkpoint, can tell;
/// - `append` writes records at once, outside any transaction (at-least-once);
/// - once `flush` returns, every `append`, `prepare` and `commit` before it is durable (a
///   system whose writes are durable when they return does nothing here).
pub trait TransactionalTarget: Send + 'static {
    /// A record to write.
    type Produced: Send;
    /// What can go wrong.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What is written, for errors: "topic 'counts'", "table 'counts'".
    fn describe(&self) -> String;
    /// Writes records at once, outside any transaction.
    fn append(&mut self, records: Vec<Self::Produced>) -> Result<(), Self::Error>;
    /// Stages records under transaction `id`, opening it if needed.
    fn stage(&mut self, id: &str, records: Vec<Self::Produced>) -> Result<(), Self::Error>;
    /// Prepares transaction `id`, whose commit will record `mark`: its records are durable from
    /// now on.
    fn prepare(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), Self::Error>;
    /// Commits transaction `id`, and records `mark` with it, if any (and not recorded by
    /// `prepare`).
    fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), Self::Error>;
    /// Aborts transaction `id`.
    fn abort(&mut self, id: &str) -> Result<(), Self::Error>;
    /// The ids of the open transactions starting with `prefix`.
    fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, Self::Error>;
    /// The newest checkpoint whose output `writer` committed, as its marks recorded.
    fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, Self::Error>;
    /// Moves `writer`'s mark back to `to` (removes it for none), durably: a rewind the job
    /// was allowed.
    fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), Self::Error>;
    /// Makes everything written so far durable.
    fn flush(&mut self) -> Result<(), Self::Error>;
}

/// What a commit records beside the records: whose output it is and which checkpoint's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitMark<'a> {
    /// The writer: one sink of one job (`<job>/<uid>/` for [`TransactionalWriter`]), all its
    /// subtasks.
    pub writer: &'a str,
    /// The checkpoint the committed records belong to.
    pub checkpoint: u64,
}

/// Turns a stream value into a record of the target.
pub type Encode<X, T> = Arc<dyn Fn(&T) -> <X as TransactionalTarget>::Produced + Send + Sync>;

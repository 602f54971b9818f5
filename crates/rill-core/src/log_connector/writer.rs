//! The event log as the target of a two-phase-commit sink: [`LogTarget`] writes one topic
//! through the log's transactions, and [`LogWriter`] is the sink — the
//! [`TransactionalWriter`] every exactly-once connector shares. The log records a commit's
//! [`CommitMark`] in the commit's first atomic write, so it takes the mark at `commit`.

use crate::transactional::{CommitMark, TransactionalTarget, TransactionalWriter};

use super::ConnectorLog;

/// One topic of a log, written through its transactions.
pub struct LogTarget<L> {
    log: L,
    topic: String,
}

impl<L: ConnectorLog> LogTarget<L> {
    /// Writes `topic` of `log`.
    pub fn new(log: &L, topic: &str) -> Self {
        LogTarget {
            log: log.clone(),
            topic: topic.to_owned(),
        }
    }
}

/// A log sink subtask: a two-phase-commit writer of one topic.
pub type LogWriter<L, T> = TransactionalWriter<LogTarget<L>, T>;

impl<L: ConnectorLog> TransactionalTarget for LogTarget<L> {
    type Produced = L::Produced;
    type Error = L::Error;

    fn describe(&self) -> String {
        format!("topic '{}'", self.topic)
    }

    fn append(&mut self, records: Vec<L::Produced>) -> Result<(), L::Error> {
        self.log.append(&self.topic, records)
    }

    fn stage(&mut self, id: &str, records: Vec<L::Produced>) -> Result<(), L::Error> {
        self.log.stage(id, &self.topic, records)
    }

    fn prepare(&mut self, id: &str, _mark: Option<CommitMark<'_>>) -> Result<(), L::Error> {
        self.log.prepare(id)
    }

    fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), L::Error> {
        self.log.commit(id, mark)
    }

    fn abort(&mut self, id: &str) -> Result<(), L::Error> {
        self.log.abort(id)
    }

    fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, L::Error> {
        self.log.open_transactions(prefix)
    }

    fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, L::Error> {
        self.log.committed_checkpoint(writer)
    }

    fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), L::Error> {
        self.log.rewind_commit_mark(writer, to)
    }

    fn flush(&mut self) -> Result<(), L::Error> {
        self.log.flush()
    }
}

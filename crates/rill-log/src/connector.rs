//! The embedded log as the log of `rill-core`'s log source and two-phase-commit sink
//! ([`rill_core::log_connector`]).

use rill_core::log_connector::ConnectorLog;
use rill_core::transactional::CommitMark;

use crate::{EventLog, LogError, LogRecord, ProducerRecord};

impl ConnectorLog for EventLog {
    type Record = LogRecord;
    type Produced = ProducerRecord;
    type Error = LogError;

    fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, LogError> {
        EventLog::end_offsets(self, topic)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: (usize, usize),
    ) -> Result<Vec<LogRecord>, LogError> {
        EventLog::read_bounded(self, topic, partition, from, max)
    }

    fn timestamp(record: &LogRecord) -> i64 {
        record.timestamp
    }

    fn bytes(record: &LogRecord) -> usize {
        record.value.len() + record.key.as_ref().map_or(0, Vec::len)
    }

    fn append(&self, topic: &str, records: Vec<ProducerRecord>) -> Result<(), LogError> {
        self.append_batch(topic, records).map(drop)
    }

    fn stage(&self, id: &str, topic: &str, records: Vec<ProducerRecord>) -> Result<(), LogError> {
        EventLog::stage(self, id, topic, &records)
    }

    fn prepare(&self, id: &str) -> Result<(), LogError> {
        EventLog::prepare(self, id)
    }

    fn commit(&self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), LogError> {
        EventLog::commit_marked(self, id, mark).map(drop)
    }

    fn rewind_commit_mark(&self, writer: &str, to: Option<u64>) -> Result<(), LogError> {
        EventLog::rewind_commit_mark(self, writer, to)
    }

    fn committed_checkpoint(&self, writer: &str) -> Result<Option<u64>, LogError> {
        EventLog::committed_checkpoint(self, writer)
    }

    fn abort(&self, id: &str) -> Result<(), LogError> {
        let records = EventLog::abort(self, id)?;
        tracing::info!(transaction = %id, records, "aborted a transaction a failed run left open");
        Ok(())
    }

    fn open_transactions(&self, prefix: &str) -> Result<Vec<String>, LogError> {
        Ok(self
            .transactions(prefix)?
            .into_iter()
            .map(|transaction| transaction.id)
            .collect())
    }

    fn flush(&self) -> Result<(), LogError> {
        EventLog::flush(self)
    }
}

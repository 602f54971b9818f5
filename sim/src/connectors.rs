//! The simulated log as the log of `rill-core`'s log source and two-phase-commit sink
//! ([`rill_core::log_connector`]), so simulated jobs run the connector code real jobs run
//! (broken on purpose there, with `plant_defect`, when a scenario asks for it).

use rill_core::log_connector::{CommitMark, ConnectorLog};

use crate::log::{LogRecord, SimLog, SimLogError};

/// The partition the simulated sink writes: the output topic has one.
const OUTPUT_PARTITION: u32 = 0;

impl ConnectorLog for SimLog {
    type Record = LogRecord;
    type Produced = LogRecord;
    type Error = SimLogError;

    /// Where the input *will* end: the simulator's producer may still be appending it, and a
    /// bounded source reads until then.
    fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, SimLogError> {
        self.stop_offsets(topic)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, SimLogError> {
        SimLog::read(self, topic, partition, from, max)
    }

    fn timestamp(record: &LogRecord) -> i64 {
        record.timestamp
    }

    fn append(&self, topic: &str, records: Vec<LogRecord>) -> Result<(), SimLogError> {
        SimLog::append(self, topic, OUTPUT_PARTITION, records)
    }

    fn stage(&self, id: &str, topic: &str, records: Vec<LogRecord>) -> Result<(), SimLogError> {
        SimLog::stage(self, id, topic, records)
    }

    fn prepare(&self, id: &str) -> Result<(), SimLogError> {
        SimLog::prepare(self, id)
    }

    fn commit(&self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), SimLogError> {
        SimLog::commit(self, id, mark)
    }

    fn committed_checkpoint(&self, writer: &str) -> Result<Option<u64>, SimLogError> {
        SimLog::committed_checkpoint(self, writer)
    }

    fn abort(&self, id: &str) -> Result<(), SimLogError> {
        SimLog::abort(self, id)
    }

    fn open_transactions(&self, prefix: &str) -> Result<Vec<String>, SimLogError> {
        SimLog::open_transactions(self, prefix)
    }

    fn flush(&self) -> Result<(), SimLogError> {
        SimLog::flush(self)
    }
}

//! The simulated log as the log of `rill-core`'s log source and two-phase-commit sink
//! ([`rill_core::log_connector`]) — so simulated jobs run the connector code real jobs run —
//! and the broken variants the simulator must catch, as wrappers around that code.

use rill_core::checkpoint::CheckpointId;
use rill_core::log_connector::ConnectorLog;
use rill_core::operator::Sink;
use rill_core::source::{Source, SourceOutput, SourcePoll};
use rill_core::{BoxError, Record};

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

    fn commit(&self, id: &str) -> Result<(), SimLogError> {
        SimLog::commit(self, id);
        Ok(())
    }

    fn abort(&self, id: &str) -> Result<(), SimLogError> {
        SimLog::abort(self, id);
        Ok(())
    }

    fn open_transactions(&self, prefix: &str) -> Result<Vec<String>, SimLogError> {
        Ok(SimLog::open_transactions(self, prefix))
    }

    fn flush(&self) -> Result<(), SimLogError> {
        SimLog::flush(self);
        Ok(())
    }
}

/// Broken on purpose: a source that ignores the offsets it is restored with, so a restored job
/// reads its input again from the start.
pub struct ForgetsOffsets<S>(pub S);

impl<S: Source> Source for ForgetsOffsets<S> {
    type Out = S::Out;

    fn poll_next(&mut self, out: &mut SourceOutput<S::Out>) -> Result<SourcePoll, BoxError> {
        self.0.poll_next(out)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        self.0.snapshot_position()
    }

    fn restore_position(&mut self, _position: &[u8]) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Broken on purpose: a sink that commits what it pre-commits at once, before the checkpoint
/// completes.
pub struct CommitsAtPreCommit<S>(pub S);

impl<S: Sink> Sink for CommitsAtPreCommit<S> {
    type In = S::In;

    fn write_batch(&mut self, records: Vec<Record<S::In>>) -> Result<(), BoxError> {
        self.0.write_batch(records)
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        self.0.finish()
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>, BoxError> {
        let state = self.0.pre_commit(checkpoint)?;
        self.0.commit(checkpoint)?;
        Ok(state)
    }

    fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), BoxError> {
        self.0.commit(checkpoint)
    }

    fn restore(&mut self, states: Vec<Vec<u8>>) -> Result<(), BoxError> {
        self.0.restore(states)
    }
}

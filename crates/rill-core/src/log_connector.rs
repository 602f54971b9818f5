//! An event log as a source and as a two-phase-commit sink, over any log that keeps the
//! [`ConnectorLog`] contract: `rill-log`'s embedded log in real jobs, the simulator's model of it
//! in simulated ones — so the simulator checks the very code real jobs run.
//!
//! [`LogReader`] reads a topic: partition `p` goes to source subtask `p % parallelism`, and each
//! subtask reads its partitions in turn, in offset order. **Bounded**, it stops at the end
//! offsets the log reports when the job starts, so the job ends; otherwise it keeps polling for
//! new records. A record's log timestamp becomes its event timestamp. Its checkpointed position
//! is the next offset of each of its partitions, so a restored job reads on from there.
//!
//! Given a watermark strategy ([`LogReader::with_watermarks`]), the reader keeps one watermark
//! generator per partition it reads ([`PartitionWatermarks`]) and emits the minimum after each
//! poll, so that a partition lagging behind in event time holds the watermark back rather than
//! seeing its records arrive late. A bounded partition read to its stop offset has ended and
//! no longer counts; with idleness, neither does one that has been quiet for the timeout. The
//! generators are not checkpointed: a restored job starts every subtask's watermark afresh,
//! and the records read again from the checkpointed offsets bring the generators back.
//!
//! [`LogWriter`] writes a topic through the log's transactions: each checkpoint's records are
//! staged under a transaction `<job>/<uid>/<subtask>/<sequence>`, prepared (durable) at the
//! checkpoint's barrier, and committed when the checkpoint completes — durably, because the
//! next checkpoint's state no longer lists them. Restored, it commits what the checkpoint had
//! prepared (commits are idempotent) and aborts whatever else its subtask, or a subtask it takes
//! over after a rescale, left open. So readers, who see committed records only, see every
//! record exactly once however often the job fails and restarts. At-least-once, it appends each
//! batch at once and flushes at every barrier instead.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointId;
#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::element::{Data, Record, Timestamp};
use crate::error::BoxError;
use crate::operator::Sink;
use crate::source::{Source, SourceOutput, SourcePoll, decode_position, encode_position};
use crate::time::{PartitionWatermarks, WatermarkStrategy};

/// What the log connectors need of a log. Implementations keep this contract:
/// - `read` returns committed records of one partition from an offset, in offset order, with no
///   gap;
/// - `append` and `stage` hand their records to the OS (a crash of the process loses nothing,
///   a crash of the machine may); `prepare` and `flush` make everything written so far durable;
/// - `commit` appends a staged transaction's records atomically, and commits nothing for a
///   transaction that is not staged (never was, or was committed or aborted), so it is
///   idempotent; like `append`, it is durable only after a `flush`;
/// - `open_transactions` lists staged transactions (prepared or not) by id prefix.
pub trait ConnectorLog: Clone + Send + Sync + 'static {
    /// A record read from a partition.
    type Record: Send;
    /// A record to write.
    type Produced: Send;
    /// What can go wrong.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The end offset of each partition of `topic`, by partition.
    fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, Self::Error>;
    /// Up to `max` committed records of a partition from offset `from`.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<Self::Record>, Self::Error>;
    /// A read record's timestamp, in ms.
    fn timestamp(record: &Self::Record) -> i64;
    /// Appends records to `topic`.
    fn append(&self, topic: &str, records: Vec<Self::Produced>) -> Result<(), Self::Error>;
    /// Stages records for `topic` under transaction `id`, opening it if needed.
    fn stage(&self, id: &str, topic: &str, records: Vec<Self::Produced>)
    -> Result<(), Self::Error>;
    /// Prepares transaction `id`: its records are durable from now on.
    fn prepare(&self, id: &str) -> Result<(), Self::Error>;
    /// Commits transaction `id`.
    fn commit(&self, id: &str) -> Result<(), Self::Error>;
    /// Aborts transaction `id`.
    fn abort(&self, id: &str) -> Result<(), Self::Error>;
    /// The ids of the open transactions starting with `prefix`.
    fn open_transactions(&self, prefix: &str) -> Result<Vec<String>, Self::Error>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), Self::Error>;
}

/// Decodes a log record into a stream value.
pub type Decode<L, T> = Arc<dyn Fn(<L as ConnectorLog>::Record) -> T + Send + Sync>;

/// Encodes a stream value into a record to write.
pub type Encode<L, T> = Arc<dyn Fn(&T) -> <L as ConnectorLog>::Produced + Send + Sync>;

struct PartitionCursor {
    partition: u32,
    next: u64,
    /// Bounded: where to stop.
    stop: Option<u64>,
}

/// One source subtask's reader of a topic.
pub struct LogReader<L: ConnectorLog, T> {
    log: L,
    topic: String,
    cursors: Vec<PartitionCursor>,
    turn: usize,
    decode: Decode<L, T>,
    /// One watermark generator per cursor, in cursor order, if the reader has a strategy.
    watermarks: Option<PartitionWatermarks>,
    /// Why the reader could not start, reported at its first poll.
    start_error: Option<BoxError>,
    /// Planted on purpose: `SourceForgetsOffsets` (it ignores the offsets it is restored with
    /// and reads from where it started), `SourceRestoresOneAhead` or `SourceRestoresOneBehind`
    /// (it restores each offset one record off).
    #[cfg(feature = "defects")]
    defect: Option<Defect>,
}

impl<L: ConnectorLog, T> LogReader<L, T> {
    /// The reader of subtask `subtask` of `parallelism`, from offset `start_offset` of each
    /// partition (or its end, if nearer); `bounded` stops at the end offsets of now.
    pub fn new(
        log: &L,
        topic: &str,
        (subtask, parallelism): (u32, u32),
        (bounded, start_offset): (bool, u64),
        decode: Decode<L, T>,
    ) -> Self {
        let mut reader = LogReader {
            log: log.clone(),
            topic: topic.to_owned(),
            cursors: Vec::new(),
            turn: 0,
            decode,
            watermarks: None,
            start_error: None,
            #[cfg(feature = "defects")]
            defect: None,
        };
        match log.end_offsets(topic) {
            Ok(ends) => {
                reader.cursors = (subtask..ends.len() as u32)
                    .step_by(parallelism.max(1) as usize)
                    .map(|partition| {
                        let end = ends[partition as usize];
                        PartitionCursor {
                            partition,
                            next: start_offset.min(end),
                            stop: bounded.then_some(end),
                        }
                    })
                    .collect();
            }
            Err(error) => reader.start_error = Some(error.into()),
        }
        reader
    }

    /// Emits watermarks by `strategy`, one generator per partition the reader reads.
    pub fn with_watermarks(mut self, strategy: WatermarkStrategy) -> Self {
        self.watermarks = Some(PartitionWatermarks::new(strategy, self.cursors.len()));
        self
    }

    fn exhausted(&self) -> bool {
        self.cursors.iter().all(PartitionCursor::reached_stop)
    }

    /// Breaks the reader on purpose, for the simulator to catch.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        if matches!(
            defect,
            Defect::SourceForgetsOffsets
                | Defect::SourceRestoresOneAhead
                | Defect::SourceRestoresOneBehind
        ) {
            self.defect = Some(defect);
        }
    }

    /// Where a partition checkpointed at `next` is read on from: `next`, unless a planted
    /// defect ignores it (`None`: where the reader started) or moves it by one.
    #[cfg(feature = "defects")]
    fn restored_offset(&self, next: u64) -> Option<u64> {
        match self.defect {
            Some(Defect::SourceForgetsOffsets) => None,
            Some(Defect::SourceRestoresOneAhead) => Some(next + 1),
            Some(Defect::SourceRestoresOneBehind) => Some(next.saturating_sub(1)),
            _ => Some(next),
        }
    }

    #[cfg(not(feature = "defects"))]
    fn restored_offset(&self, next: u64) -> Option<u64> {
        Some(next)
    }
}

impl PartitionCursor {
    fn reached_stop(&self) -> bool {
        self.stop.is_some_and(|stop| self.next >= stop)
    }
}

impl<L: ConnectorLog, T: Data> Source for LogReader<L, T> {
    type Out = T;

    fn poll_next(&mut self, out: &mut SourceOutput<T>) -> Result<SourcePoll, BoxError> {
        if let Some(error) = self.start_error.take() {
            return Err(error);
        }
        let count = self.cursors.len();
        for offset in 0..count {
            if out.remaining() == 0 {
                break;
            }
            let index = (self.turn + offset) % count;
            let cursor = &mut self.cursors[index];
            let want = match cursor.stop {
                Some(stop) => out
                    .remaining()
                    .min(stop.saturating_sub(cursor.next) as usize),
                None => out.remaining(),
            };
            if want == 0 {
                continue;
            }
            for record in self
                .log
                .read(&self.topic, cursor.partition, cursor.next, want)?
            {
                cursor.next += 1;
                let timestamp = Timestamp(L::timestamp(&record));
                if let Some(watermarks) = &mut self.watermarks {
                    watermarks.on_record(index, timestamp);
                }
                out.collect_with_timestamp((self.decode)(record), timestamp);
            }
        }
        self.turn = (self.turn + 1) % count.max(1);
        if let Some(watermarks) = &mut self.watermarks {
            for (index, cursor) in self.cursors.iter().enumerate() {
                if cursor.reached_stop() {
                    watermarks.end_partition(index);
                }
            }
            watermarks.emit_to(out);
        }
        Ok(if self.exhausted() {
            SourcePoll::Finished
        } else if out.is_empty() {
            SourcePoll::Idle
        } else {
            SourcePoll::Ready
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        let offsets: Vec<(u32, u64)> = self.cursors.iter().map(|c| (c.partition, c.next)).collect();
        encode_position(&offsets).map(Some)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        let offsets: Vec<(u32, u64)> = decode_position(position)?;
        for (partition, next) in offsets {
            let Some(next) = self.restored_offset(next) else {
                continue;
            };
            if let Some(cursor) = self.cursors.iter_mut().find(|c| c.partition == partition) {
                cursor.next = next;
            }
        }
        Ok(())
    }
}

/// A writer's checkpointed state.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WriterState {
    subtask: u32,
    next_sequence: u64,
    /// (checkpoint, sequence) of the transactions prepared and not yet committed.
    prepared: Vec<(u64, u64)>,
}

/// One sink subtask's writer of a topic.
pub struct LogWriter<L: ConnectorLog, T> {
    log: L,
    topic: String,
    encode: Encode<L, T>,
    exactly_once: bool,
    /// `<job>/<uid>/`: what this sink's transaction ids start with.
    prefix: String,
    parallelism: u32,
    state: WriterState,
    /// Records were staged since the last prepare.
    open: bool,
    /// Planted on purpose: `SinkCommitsAtPreCommit` (it commits each transaction at
    /// pre-commit, before its checkpoint completes), `SinkSkipsFlush` (its flushes do
    /// nothing, so what it appends or commits is lost in a crash of the machine), or one of
    /// the restore's: `SinkAbortsCommittedOnRestore`, `SinkCommitsLeftoversOnRestore`,
    /// `SinkLeavesTakenOverOpen`.
    #[cfg(feature = "defects")]
    defect: Option<Defect>,
}

impl<L: ConnectorLog, T> LogWriter<L, T> {
    /// The writer of subtask `subtask` of `parallelism`; `prefix` (`<job>/<uid>/`) names its
    /// transactions; `exactly_once` chooses transactions over appends.
    pub fn new(
        log: &L,
        topic: &str,
        (prefix, subtask, parallelism): (String, u32, u32),
        encode: Encode<L, T>,
        exactly_once: bool,
    ) -> Self {
        LogWriter {
            log: log.clone(),
            topic: topic.to_owned(),
            encode,
            exactly_once,
            prefix,
            parallelism,
            state: WriterState {
                subtask,
                ..WriterState::default()
            },
            open: false,
            #[cfg(feature = "defects")]
            defect: None,
        }
    }

    fn transaction_id(&self, subtask: u32, sequence: u64) -> String {
        format!("{}{subtask}/{sequence}", self.prefix)
    }

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), L::Error> {
        if self.skips_flush() {
            return Ok(());
        }
        self.log.flush()
    }

    /// Breaks the writer on purpose, for the simulator to catch.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        if matches!(
            defect,
            Defect::SinkCommitsAtPreCommit
                | Defect::SinkSkipsFlush
                | Defect::SinkAbortsCommittedOnRestore
                | Defect::SinkCommitsLeftoversOnRestore
                | Defect::SinkLeavesTakenOverOpen
        ) {
            self.defect = Some(defect);
        }
    }

    /// Whether the planted defect is `defect`.
    #[cfg(feature = "defects")]
    fn planted(&self, defect: Defect) -> bool {
        self.defect == Some(defect)
    }

    /// Whether a planted defect commits at pre-commit.
    #[cfg(feature = "defects")]
    fn commits_at_pre_commit(&self) -> bool {
        self.planted(Defect::SinkCommitsAtPreCommit)
    }

    #[cfg(not(feature = "defects"))]
    fn commits_at_pre_commit(&self) -> bool {
        false
    }

    /// Whether a planted defect skips flushes.
    #[cfg(feature = "defects")]
    fn skips_flush(&self) -> bool {
        self.planted(Defect::SinkSkipsFlush)
    }

    #[cfg(not(feature = "defects"))]
    fn skips_flush(&self) -> bool {
        false
    }

    /// How many of a restored state's prepared transactions (oldest first) to commit: all,
    /// unless a planted defect takes the newest for one still in flight.
    #[cfg(feature = "defects")]
    fn restored_to_commit(&self, prepared: usize) -> usize {
        if self.planted(Defect::SinkAbortsCommittedOnRestore) {
            return prepared.saturating_sub(1);
        }
        prepared
    }

    #[cfg(not(feature = "defects"))]
    fn restored_to_commit(&self, prepared: usize) -> usize {
        prepared
    }

    /// Whether a planted defect commits the leftovers it should abort.
    #[cfg(feature = "defects")]
    fn commits_leftovers(&self) -> bool {
        self.planted(Defect::SinkCommitsLeftoversOnRestore)
    }

    #[cfg(not(feature = "defects"))]
    fn commits_leftovers(&self) -> bool {
        false
    }

    /// Whether a planted defect forgets the leftovers of the subtasks it takes over.
    #[cfg(feature = "defects")]
    fn forgets_taken_over(&self) -> bool {
        self.planted(Defect::SinkLeavesTakenOverOpen)
    }

    #[cfg(not(feature = "defects"))]
    fn forgets_taken_over(&self) -> bool {
        false
    }
}

impl<L: ConnectorLog, T: Data> Sink for LogWriter<L, T> {
    type In = T;

    fn write_batch(&mut self, records: Vec<Record<T>>) -> Result<(), BoxError> {
        let batch: Vec<L::Produced> = records
            .iter()
            .map(|record| (self.encode)(&record.value))
            .collect();
        if self.exactly_once {
            let id = self.transaction_id(self.state.subtask, self.state.next_sequence);
            self.log.stage(&id, &self.topic, batch)?;
            self.open = true;
        } else {
            self.log.append(&self.topic, batch)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        if !self.exactly_once {
            self.flush()?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>, BoxError> {
        if !self.exactly_once {
            // What was appended must survive a crash of the machine once the checkpoint does.
            self.flush()?;
            return Ok(None);
        }
        if self.open {
            let sequence = self.state.next_sequence;
            self.log
                .prepare(&self.transaction_id(self.state.subtask, sequence))?;
            self.state.prepared.push((checkpoint.0, sequence));
            self.state.next_sequence += 1;
            self.open = false;
        }
        let state = encode_position(&self.state)?;
        if self.commits_at_pre_commit() {
            self.commit(checkpoint)?;
        }
        Ok(Some(state))
    }

    fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), BoxError> {
        let due = self
            .state
            .prepared
            .iter()
            .take_while(|(prepared_at, _)| *prepared_at <= checkpoint.0)
            .count();
        for (_, sequence) in self.state.prepared.drain(..due).collect::<Vec<_>>() {
            self.log
                .commit(&self.transaction_id(self.state.subtask, sequence))?;
        }
        // The next checkpoint's state no longer lists these transactions: were the commits
        // lost in a crash of the machine, a restore from it would abort them (found by the
        // simulator's `idle-sink-machine-crashes`). So they must be durable now.
        if due > 0 {
            self.flush()?;
        }
        Ok(())
    }

    fn restore(&mut self, states: Vec<Vec<u8>>) -> Result<(), BoxError> {
        if !self.exactly_once {
            return Ok(());
        }
        let restored = states
            .iter()
            .map(|bytes| decode_position::<WriterState>(bytes))
            .collect::<Result<Vec<_>, _>>()?;
        for state in &restored {
            let due = self.restored_to_commit(state.prepared.len());
            for &(_, sequence) in &state.prepared[..due] {
                self.log
                    .commit(&self.transaction_id(state.subtask, sequence))?;
            }
        }
        // Durable before the restored job's checkpoints stop listing them (see `commit`).
        if restored.iter().any(|state| !state.prepared.is_empty()) {
            self.flush()?;
        }
        // What this instance left open, and what subtasks that no longer exist left (those
        // this one takes over: `old % parallelism == own`) — whether or not the checkpoint
        // knew them: an attempt that failed before its first checkpoint, at a parallelism of
        // its own, leaves transactions that no restored state names.
        let own = self.state.subtask;
        let commits_leftovers = self.commits_leftovers();
        for leftover in self.log.open_transactions(&self.prefix)? {
            let Some(subtask) = leftover
                .strip_prefix(self.prefix.as_str())
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(subtask, _)| subtask.parse::<u32>().ok())
            else {
                continue;
            };
            let taken_over = subtask >= self.parallelism
                && subtask % self.parallelism == own
                && !self.forgets_taken_over();
            if subtask != own && !taken_over {
                continue;
            }
            if commits_leftovers {
                self.log.commit(&leftover)?;
            } else {
                self.log.abort(&leftover)?;
            }
        }
        if commits_leftovers {
            self.flush()?;
        }
        self.state.next_sequence = restored
            .iter()
            .find(|state| state.subtask == own)
            .map_or(0, |state| state.next_sequence);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::source::{AnySource, Polled};
    use crate::time::WatermarkStatus;

    /// A log of partitions whose records are bare timestamps: all a reader needs. It writes
    /// nothing.
    #[derive(Clone, Default)]
    struct Timestamps(Arc<Mutex<Vec<Vec<i64>>>>);

    impl Timestamps {
        fn new(partitions: &[&[i64]]) -> Self {
            Timestamps(Arc::new(Mutex::new(
                partitions.iter().map(|p| p.to_vec()).collect(),
            )))
        }

        fn append(&self, partition: usize, timestamp: i64) {
            self.0.lock().unwrap()[partition].push(timestamp);
        }
    }

    impl ConnectorLog for Timestamps {
        type Record = i64;
        type Produced = ();
        type Error = Infallible;

        fn end_offsets(&self, _topic: &str) -> Result<Vec<u64>, Infallible> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .map(|p| p.len() as u64)
                .collect())
        }

        fn read(
            &self,
            _topic: &str,
            partition: u32,
            from: u64,
            max: usize,
        ) -> Result<Vec<i64>, Infallible> {
            let partitions = self.0.lock().unwrap();
            let records = &partitions[partition as usize];
            let from = (from as usize).min(records.len());
            Ok(records[from..records.len().min(from + max)].to_vec())
        }

        fn timestamp(record: &i64) -> i64 {
            *record
        }

        fn append(&self, _topic: &str, _records: Vec<()>) -> Result<(), Infallible> {
            Ok(())
        }

        fn stage(&self, _id: &str, _topic: &str, _records: Vec<()>) -> Result<(), Infallible> {
            Ok(())
        }

        fn prepare(&self, _id: &str) -> Result<(), Infallible> {
            Ok(())
        }

        fn commit(&self, _id: &str) -> Result<(), Infallible> {
            Ok(())
        }

        fn abort(&self, _id: &str) -> Result<(), Infallible> {
            Ok(())
        }

        fn open_transactions(&self, _prefix: &str) -> Result<Vec<String>, Infallible> {
            Ok(Vec::new())
        }

        fn flush(&self) -> Result<(), Infallible> {
            Ok(())
        }
    }

    /// A log that keeps only which transactions are open, and what became of the others.
    #[derive(Clone, Default)]
    struct Transactions(Arc<Mutex<BTreeMap<String, &'static str>>>);

    impl Transactions {
        fn with_open(ids: &[&str]) -> Self {
            let log = Transactions::default();
            for id in ids {
                log.0.lock().unwrap().insert((*id).to_owned(), "open");
            }
            log
        }

        fn state(&self) -> Vec<(String, &'static str)> {
            let map = self.0.lock().unwrap();
            map.iter().map(|(id, state)| (id.clone(), *state)).collect()
        }

        fn resolve(&self, id: &str, to: &'static str) {
            if let Some(state) = self.0.lock().unwrap().get_mut(id)
                && *state == "open"
            {
                *state = to;
            }
        }
    }

    impl ConnectorLog for Transactions {
        type Record = ();
        type Produced = ();
        type Error = Infallible;

        fn end_offsets(&self, _topic: &str) -> Result<Vec<u64>, Infallible> {
            Ok(Vec::new())
        }

        fn read(&self, _: &str, _: u32, _: u64, _: usize) -> Result<Vec<()>, Infallible> {
            Ok(Vec::new())
        }

        fn timestamp(_record: &()) -> i64 {
            0
        }

        fn append(&self, _topic: &str, _records: Vec<()>) -> Result<(), Infallible> {
            Ok(())
        }

        fn stage(&self, id: &str, _topic: &str, _records: Vec<()>) -> Result<(), Infallible> {
            self.0
                .lock()
                .unwrap()
                .entry(id.to_owned())
                .or_insert("open");
            Ok(())
        }

        fn prepare(&self, _id: &str) -> Result<(), Infallible> {
            Ok(())
        }

        fn commit(&self, id: &str) -> Result<(), Infallible> {
            self.resolve(id, "committed");
            Ok(())
        }

        fn abort(&self, id: &str) -> Result<(), Infallible> {
            self.resolve(id, "aborted");
            Ok(())
        }

        fn open_transactions(&self, prefix: &str) -> Result<Vec<String>, Infallible> {
            let map = self.0.lock().unwrap();
            Ok(map
                .iter()
                .filter(|(id, state)| id.starts_with(prefix) && **state == "open")
                .map(|(id, _)| id.clone())
                .collect())
        }

        fn flush(&self) -> Result<(), Infallible> {
            Ok(())
        }
    }

    #[test]
    fn a_fresh_sink_aborts_what_the_subtasks_it_takes_over_left_open() {
        // Subtasks 0..4 of an attempt that failed before its first checkpoint left these; the
        // job starts again, from no checkpoint, at parallelism 2 (found by the simulator's
        // `rescale-down-key-group-boundaries`: transactions 2/0 and 3/5 stayed open for good).
        let log = Transactions::with_open(&["j/u/0/0", "j/u/1/0", "j/u/2/0", "j/u/3/5", "k/u/0/0"]);
        let place = ("j/u/".to_owned(), 0, 2);
        let mut writer: LogWriter<Transactions, ()> =
            LogWriter::new(&log, "out", place, Arc::new(|_: &()| ()), true);
        writer.restore(Vec::new()).unwrap();
        let expected = [
            ("j/u/0/0", "aborted"),
            ("j/u/1/0", "open"),
            ("j/u/2/0", "aborted"),
            ("j/u/3/5", "open"),
            ("k/u/0/0", "open"),
        ];
        let expected: Vec<(String, &str)> = expected
            .iter()
            .map(|(id, state)| ((*id).to_owned(), *state))
            .collect();
        assert_eq!(
            log.state(),
            expected,
            "subtask 1 takes over 3; another job is not ours"
        );
    }

    fn reader(
        log: &Timestamps,
        bounded: bool,
        strategy: WatermarkStrategy,
    ) -> LogReader<Timestamps, i64> {
        LogReader::new(log, "events", (0, 1), (bounded, 0), Arc::new(|t| t))
            .with_watermarks(strategy)
    }

    fn record_timestamps(polled: &mut Polled) -> Vec<i64> {
        polled
            .records
            .take()
            .map(|records| {
                records
                    .downcast::<i64>()
                    .unwrap()
                    .into_iter()
                    .map(|r| r.value)
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_lagging_partition_holds_the_watermark_back_until_it_ends() {
        let ahead: Vec<i64> = (1..=9).map(|second| second * 1_000).collect();
        let log = Timestamps::new(&[&ahead, &[100, 200, 300], &[]]);
        let mut reader = reader(&log, true, WatermarkStrategy::monotonous());
        let mut watermarks = Vec::new();
        let mut latest = Timestamp::MIN;
        loop {
            let mut polled = reader.poll(2, Timestamp(0)).unwrap();
            for timestamp in record_timestamps(&mut polled) {
                assert!(
                    Timestamp(timestamp) > latest,
                    "the record at {timestamp} ms came behind the watermark {latest}"
                );
            }
            if let Some(watermark) = polled.watermark {
                watermarks.push(watermark);
                latest = watermark;
            }
            if polled.status == SourcePoll::Finished {
                break;
            }
        }
        assert_eq!(
            watermarks,
            [Timestamp(199), Timestamp(6_999), Timestamp::MAX],
            "partition 1 holds it at 199 while partition 0 reads on to 6 000; then partition 1 \
             ends (the empty partition 2 has ended from the start), and at last partition 0"
        );
    }

    #[test]
    fn an_empty_partition_holds_the_watermark_back_unless_it_is_idle() {
        let log = Timestamps::new(&[&[1_000, 2_000], &[]]);
        let mut patient = reader(&log, false, WatermarkStrategy::monotonous());
        for now in [0, 1_000, 1_000_000] {
            let polled = patient.poll(10, Timestamp(now)).unwrap();
            assert_eq!(polled.watermark, None, "at {now} ms");
            assert_eq!(polled.watermark_status, WatermarkStatus::Active);
        }

        let idleness = WatermarkStrategy::monotonous().with_idleness(Duration::from_millis(100));
        let mut reader = reader(&log, false, idleness);
        let mut poll_at = |now: i64| {
            let mut polled = reader.poll(10, Timestamp(now)).unwrap();
            let read = record_timestamps(&mut polled);
            (read, polled.watermark, polled.watermark_status)
        };
        let (active, idle) = (WatermarkStatus::Active, WatermarkStatus::Idle);
        assert_eq!(poll_at(0), (vec![1_000, 2_000], None, active));
        log.append(0, 2_100);
        assert_eq!(poll_at(60), (vec![2_100], None, active));
        assert_eq!(poll_at(99), (vec![], None, active));
        assert_eq!(
            poll_at(100),
            (vec![], Some(Timestamp(2_099)), active),
            "partition 1 has been quiet for the timeout: partition 0 decides alone"
        );
        log.append(1, 1_500);
        assert_eq!(
            poll_at(150),
            (vec![1_500], None, active),
            "partition 1 is active again, behind: it holds the watermark where it is"
        );
        log.append(0, 3_000);
        log.append(1, 2_500);
        assert_eq!(
            poll_at(160),
            (vec![2_500, 3_000], Some(Timestamp(2_499)), active)
        );
        assert_eq!(
            poll_at(260),
            (vec![], None, idle),
            "both partitions are quiet: the subtask is idle"
        );
        log.append(0, 4_000);
        assert_eq!(
            poll_at(270),
            (vec![4_000], Some(Timestamp(3_999)), active),
            "partition 1 is still idle"
        );
    }
}

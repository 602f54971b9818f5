//! [`LogReader`] reads a topic: partition `p` goes to source subtask `p % parallelism`, and each
//! subtask reads its partitions in turn, in offset order. **Bounded**, it stops at the end
//! offsets the log reports when the job starts, so the job ends; otherwise it keeps polling for
//! new records. A record's log timestamp becomes its event timestamp. Its checkpointed position
//! is the next offset of each of its partitions, so a restored job reads on from there.
//!
//! Given a watermark strategy ([`LogReader::with_watermarks`]), the reader keeps one watermark
//! generator per partition it reads ([`PartitionWatermarks`]) and emits the minimum — after a
//! poll once the job's watermark interval has passed, and right after a record whose punctuated
//! watermark advanced it — so that a partition lagging behind in event time holds the
//! watermark back rather than seeing its records arrive late. A bounded partition read to its stop offset has ended and
//! no longer counts; with idleness, neither does one that has been quiet for the timeout. The
//! generators are not checkpointed: a restored job starts every subtask's watermark afresh,
//! and the records read again from the checkpointed offsets bring the generators back.
//!
//! A poll reads up to the batch's count of records and stops early once they hold
//! [`READ_BYTES_PER_POLL`] bytes (at least one record), so large records do not make a batch
//! of a thousand of them.

#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::element::{Data, Timestamp};
use crate::error::BoxError;
use crate::source::{Source, SourceOutput, SourcePoll, decode_position, encode_position};
use crate::time::{PartitionWatermarks, WatermarkStrategy, collect_record};

use super::{ConnectorLog, Decode};

/// The bytes of keys and values a poll reads at most (the record that reaches it included).
pub const READ_BYTES_PER_POLL: usize = 4 << 20;

/// A checkpoint read further into a partition than the log now holds: the log lost records
/// (damaged, or restored from an older copy), and reading on would skip what replaces them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the log is behind the checkpoint: partition {partition} of topic '{topic}' ends at offset \
     {end}, but the checkpoint had read it up to offset {checkpointed}. The log lost records \
     (damaged, or restored from an older copy); start from a checkpoint that read no further \
     than the log holds"
)]
pub struct LogBehind {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset the checkpoint reads on from.
    pub checkpointed: u64,
    /// The partition's end offset in the log.
    pub end: u64,
}

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
        self.watermarks = Some(PartitionWatermarks::new(&strategy, self.cursors.len()));
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
        let mut bytes_left = READ_BYTES_PER_POLL;
        for offset in 0..count {
            if out.remaining() == 0 || bytes_left == 0 {
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
            for record in self.log.read(
                &self.topic,
                cursor.partition,
                cursor.next,
                (want, bytes_left),
            )? {
                bytes_left = bytes_left.saturating_sub(L::bytes(&record));
                cursor.next += 1;
                let timestamp = Timestamp(L::timestamp(&record));
                let value = (self.decode)(record);
                collect_record(self.watermarks.as_mut(), out, index, value, timestamp);
            }
        }
        self.turn = (self.turn + 1) % count.max(1);
        if let Some(watermarks) = &mut self.watermarks {
            watermarks.end_poll(self.cursors.iter().map(PartitionCursor::reached_stop), out);
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
        let ends = self.log.end_offsets(&self.topic)?;
        for &(partition, next) in &offsets {
            let end = ends.get(partition as usize).copied().unwrap_or(0);
            if next > end {
                return Err(LogBehind {
                    topic: self.topic.clone(),
                    partition,
                    checkpointed: next,
                    end,
                }
                .into());
            }
        }
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::source::{AnySource, Polled};
    use crate::time::WatermarkStatus;
    use crate::transactional::CommitMark;

    /// What each record of [`Timestamps`] weighs: a poll takes four of them.
    const RECORD_BYTES: usize = READ_BYTES_PER_POLL / 4;

    /// A log of partitions whose records are bare timestamps, each [`RECORD_BYTES`] large: all
    /// a reader needs. It writes nothing.
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
            (max, max_bytes): (usize, usize),
        ) -> Result<Vec<i64>, Infallible> {
            let partitions = self.0.lock().unwrap();
            let records = &partitions[partition as usize];
            let from = (from as usize).min(records.len());
            let fit = max_bytes.div_ceil(RECORD_BYTES).max(1);
            Ok(records[from..records.len().min(from + max.min(fit))].to_vec())
        }

        fn timestamp(record: &i64) -> i64 {
            *record
        }

        fn bytes(_record: &i64) -> usize {
            RECORD_BYTES
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

        fn commit(&self, _id: &str, _mark: Option<CommitMark<'_>>) -> Result<(), Infallible> {
            Ok(())
        }

        fn committed_checkpoint(&self, _writer: &str) -> Result<Option<u64>, Infallible> {
            Ok(None)
        }

        fn rewind_commit_mark(&self, _writer: &str, _to: Option<u64>) -> Result<(), Infallible> {
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

    fn reader(
        log: &Timestamps,
        bounded: bool,
        strategy: WatermarkStrategy,
    ) -> LogReader<Timestamps, i64> {
        LogReader::new(log, "events", (0, 1), (bounded, 0), Arc::new(|t| t))
            .with_watermarks(strategy)
    }

    fn record_timestamps(polled: &Polled) -> Vec<i64> {
        polled.values()
    }

    #[test]
    fn a_poll_stops_once_its_records_hold_the_bytes_of_a_poll() {
        let log = Timestamps::new(&[&[1, 2, 3], &[4, 5, 6]]);
        let mut reader = reader(&log, true, WatermarkStrategy::monotonous());
        let mut polls = Vec::new();
        loop {
            let polled = reader.poll(1_024, Timestamp(0), 0).unwrap();
            polls.push(record_timestamps(&polled));
            if polled.status == SourcePoll::Finished {
                break;
            }
        }
        assert_eq!(
            polls,
            [vec![1, 2, 3, 4], vec![5, 6]],
            "four records' bytes per poll, across partitions, however many a batch may hold"
        );
    }

    #[test]
    fn a_lagging_partition_holds_the_watermark_back_until_it_ends() {
        let ahead: Vec<i64> = (1..=9).map(|second| second * 1_000).collect();
        let log = Timestamps::new(&[&ahead, &[100, 200, 300], &[]]);
        let mut reader = reader(&log, true, WatermarkStrategy::monotonous());
        let mut watermarks = Vec::new();
        let mut latest = Timestamp::MIN;
        for now in 0.. {
            let polled = reader.poll(2, Timestamp(now), 1).unwrap();
            for timestamp in record_timestamps(&polled) {
                assert!(
                    Timestamp(timestamp) > latest,
                    "the record at {timestamp} ms came behind the watermark {latest}"
                );
            }
            if let Some(&watermark) = polled.watermarks().last() {
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
            let polled = patient.poll(10, Timestamp(now), 1).unwrap();
            assert_eq!(polled.watermarks(), [], "at {now} ms");
            assert_eq!(polled.watermark_status, WatermarkStatus::Active);
        }

        let idleness = WatermarkStrategy::monotonous().with_idleness(Duration::from_millis(100));
        let mut reader = reader(&log, false, idleness);
        let mut poll_at = |now: i64| {
            let polled = reader.poll(10, Timestamp(now), 1).unwrap();
            let read = record_timestamps(&polled);
            (
                read,
                polled.watermarks().last().copied(),
                polled.watermark_status,
            )
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

    #[test]
    fn a_checkpoint_past_the_end_of_a_partition_is_a_log_behind_its_checkpoint() {
        let log = Timestamps::new(&[&[1, 2, 3], &[1, 2]]);
        let mut reader = reader(&log, false, WatermarkStrategy::monotonous());
        let position = encode_position(&vec![(0u32, 3u64), (1, 5)]).unwrap();
        let error = Source::restore_position(&mut reader, &position).unwrap_err();
        assert_eq!(
            error.downcast_ref::<LogBehind>(),
            Some(&LogBehind {
                topic: "events".to_owned(),
                partition: 1,
                checkpointed: 5,
                end: 2,
            })
        );
        let position = encode_position(&vec![(0u32, 3u64), (1, 2)]).unwrap();
        Source::restore_position(&mut reader, &position).expect("read to the end");
    }
}

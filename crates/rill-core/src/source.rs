//! Sources: the typed trait, its type-erased form, the built-in sources that need no I/O (an
//! iterator, and a parallel sequence of numbers), and [`WithWatermarks`], which gives any
//! source event time.
//!
//! A subtask polls its source with the processing time of the poll
//! ([`SourceOutput::processing_time`]) and the job's watermark interval; a source may emit
//! records, watermarks between and after them (each placed after the records emitted before
//! it), and say that it is idle ([`SourceOutput::mark_idle`]: it should not hold back the
//! watermarks downstream until it emits again). Watermark generation itself lives in
//! [`crate::time`].

use std::ops::Range;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::element::{Data, Record, Records, Timestamp};
use crate::error::{BoxError, OperatorError};
use crate::time::{PartitionWatermarks, TimestampAssigner, WatermarkStatus, WatermarkStrategy};

/// What a source says after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePoll {
    /// More records may be available right away.
    Ready,
    /// Nothing is available now; poll again later.
    Idle,
    /// The source has no more records: this poll's records are its last.
    Finished,
}

/// Collects what one poll of a source emits.
pub struct SourceOutput<T> {
    records: Vec<Record<T>>,
    max_records: usize,
    /// The watermarks emitted, each with the number of records emitted before it; in order,
    /// at most one per position.
    watermarks: Vec<(usize, Timestamp)>,
    processing_time: Timestamp,
    watermark_interval_ms: u64,
    idle: bool,
}

impl<T> SourceOutput<T> {
    /// An empty output that accepts `max_records` records, for a poll at processing time
    /// `processing_time` of a job whose sources emit periodic watermarks every
    /// `watermark_interval_ms` (0: never).
    pub fn new(max_records: usize, processing_time: Timestamp, watermark_interval_ms: u64) -> Self {
        SourceOutput {
            records: Vec::with_capacity(max_records),
            max_records,
            watermarks: Vec::new(),
            processing_time,
            watermark_interval_ms,
            idle: false,
        }
    }

    /// How often, in milliseconds of processing time, the job's sources emit the watermarks of
    /// periodic generators (0: never); see [`crate::time`].
    pub fn watermark_interval_ms(&self) -> u64 {
        self.watermark_interval_ms
    }

    /// The processing time of this poll, in milliseconds since the Unix epoch: the driver's
    /// clock (the wall clock in the runtime, the virtual clock in the simulator).
    pub fn processing_time(&self) -> Timestamp {
        self.processing_time
    }

    /// Says that the source is idle: until it emits again, its watermark should not hold back
    /// the operators downstream. Valid for this poll only (a poll without it means active),
    /// and ignored if the poll emits a record.
    pub fn mark_idle(&mut self) {
        self.idle = true;
    }

    /// Emits a record without a timestamp.
    pub fn collect(&mut self, value: T) {
        self.records.push(Record::new(value));
    }

    /// Emits a record with an event timestamp.
    pub fn collect_with_timestamp(&mut self, value: T, timestamp: Timestamp) {
        self.records.push(Record::with_timestamp(value, timestamp));
    }

    /// Emits a watermark after the records emitted so far: downstream sees it after them and
    /// before the records emitted next.
    pub fn emit_watermark(&mut self, watermark: Timestamp) {
        place_watermark(&mut self.watermarks, self.records.len(), watermark);
    }

    /// How many more records this poll may emit; a source should stop at zero.
    pub fn remaining(&self) -> usize {
        self.max_records.saturating_sub(self.records.len())
    }

    /// Whether this poll emitted a record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A source of records: what built-ins and connectors implement.
pub trait Source: Send + 'static {
    /// The type of the records it emits.
    type Out: Data;

    /// Emits up to `out.remaining()` records.
    fn poll_next(&mut self, out: &mut SourceOutput<Self::Out>) -> Result<SourcePoll, BoxError>;

    /// Where the source stands, for a checkpoint: what [`Source::restore_position`] needs to
    /// resume right after the last record emitted. `None` means the source cannot resume (a
    /// restored job reads it again from the start).
    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        Ok(None)
    }

    /// Resumes from a position taken by [`Source::snapshot_position`].
    fn restore_position(&mut self, _position: &[u8]) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Places a watermark after the first `position` records, keeping one watermark (the largest)
/// per position.
fn place_watermark(placed: &mut Vec<(usize, Timestamp)>, position: usize, watermark: Timestamp) {
    match placed.last_mut() {
        Some((at, last)) if *at == position => *last = (*last).max(watermark),
        _ => placed.push((position, watermark)),
    }
}

/// Encodes a source position with the snapshot encoding (bincode).
pub fn encode_position<P: Serialize>(position: &P) -> Result<Vec<u8>, BoxError> {
    Ok(bincode::serde::encode_to_vec(
        position,
        bincode::config::standard(),
    )?)
}

/// Decodes a source position written by [`encode_position`].
pub fn decode_position<P: DeserializeOwned>(bytes: &[u8]) -> Result<P, BoxError> {
    let (position, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
    if read != bytes.len() {
        return Err(format!(
            "a source position of {} bytes has {} bytes left over",
            bytes.len(),
            bytes.len() - read
        )
        .into());
    }
    Ok(position)
}

/// Something a poll emitted, type-erased.
#[derive(Debug)]
pub enum Emitted {
    /// Records, in order.
    Records(Records),
    /// A watermark, after the records before it.
    Watermark(Timestamp),
}

/// One poll's result, type-erased.
pub struct Polled {
    /// The records and watermarks emitted, in order.
    pub emitted: Vec<Emitted>,
    /// Whether the source is idle (see [`SourceOutput::mark_idle`]); always active when the
    /// poll emitted records.
    pub watermark_status: WatermarkStatus,
    /// What the source said.
    pub status: SourcePoll,
}

#[cfg(test)]
impl Polled {
    /// The values of the records emitted, in order.
    pub(crate) fn values<T: Data>(&self) -> Vec<T> {
        self.records()
            .into_iter()
            .map(|record| record.value)
            .collect()
    }

    /// The records emitted, in order.
    pub(crate) fn records<T: Data>(&self) -> Vec<Record<T>> {
        let mut all = Vec::new();
        for event in &self.emitted {
            if let Emitted::Records(records) = event {
                all.extend(records.clone().downcast::<T>().expect("records of type T"));
            }
        }
        all
    }

    /// The watermarks emitted, in order.
    pub(crate) fn watermarks(&self) -> Vec<Timestamp> {
        self.emitted
            .iter()
            .filter_map(|event| match event {
                Emitted::Watermark(watermark) => Some(*watermark),
                Emitted::Records(_) => None,
            })
            .collect()
    }
}

/// The type-erased source a subtask drives.
pub trait AnySource: Send {
    /// Polls the source for up to `max_records` records, at processing time `now`, in a job
    /// whose periodic watermarks are due every `watermark_interval_ms` (0: never).
    fn poll(
        &mut self,
        max_records: usize,
        now: Timestamp,
        watermark_interval_ms: u64,
    ) -> Result<Polled, OperatorError>;
    /// See [`Source::snapshot_position`].
    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, OperatorError>;
    /// See [`Source::restore_position`].
    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError>;
}

impl<S: Source> AnySource for S {
    fn poll(
        &mut self,
        max_records: usize,
        now: Timestamp,
        watermark_interval_ms: u64,
    ) -> Result<Polled, OperatorError> {
        let mut out = SourceOutput::new(max_records, now, watermark_interval_ms);
        let status = self.poll_next(&mut out).map_err(OperatorError::from_user)?;
        let watermark_status = if out.idle && out.records.is_empty() {
            WatermarkStatus::Idle
        } else {
            WatermarkStatus::Active
        };
        Ok(Polled {
            emitted: in_order(out.records, out.watermarks),
            watermark_status,
            status,
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, OperatorError> {
        Source::snapshot_position(self).map_err(OperatorError::from_user)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        Source::restore_position(self, position).map_err(OperatorError::from_user)
    }
}

/// A poll's records cut where its watermarks go, with the watermarks between them. Most polls
/// have one watermark or none, after every record: the records then stay in one vector.
fn in_order<T: Data>(
    mut records: Vec<Record<T>>,
    watermarks: Vec<(usize, Timestamp)>,
) -> Vec<Emitted> {
    let mut emitted = Vec::with_capacity(2 * watermarks.len() + 1);
    let mut cut = 0;
    for (position, watermark) in watermarks {
        let rest = records.split_off(position - cut);
        cut = position;
        if !records.is_empty() {
            emitted.push(Emitted::Records(Records::new(std::mem::replace(
                &mut records,
                rest,
            ))));
        } else {
            records = rest;
        }
        emitted.push(Emitted::Watermark(watermark));
    }
    if !records.is_empty() {
        emitted.push(Emitted::Records(Records::new(records)));
    }
    emitted
}

/// The timestamp assigner of a [`WithWatermarks`] that keeps the timestamps its source gives.
pub type KeepTimestamps<T> = fn(&T) -> Timestamp;

/// Gives any source event time: runs a [`WatermarkStrategy`] over its records, treating the
/// subtask's whole input as one partition, and optionally stamps them with a
/// [`TimestampAssigner`] first.
///
/// The strategy's watermarks replace any the source emits itself; a punctuated one follows the
/// record it was emitted for. Records without a timestamp keep the source active but move no
/// watermark. A source that reads several partitions with their own pace of event time should
/// rather keep a [`PartitionWatermarks`] per partition itself, as the log source does, so that
/// one slow partition holds the watermark back.
pub struct WithWatermarks<S, A> {
    source: S,
    assigner: Option<A>,
    watermarks: PartitionWatermarks,
}

impl<S: Source> WithWatermarks<S, KeepTimestamps<S::Out>> {
    /// Watermarks from the timestamps the source gives its records.
    pub fn new(source: S, strategy: WatermarkStrategy) -> Self {
        WithWatermarks {
            source,
            assigner: None,
            watermarks: PartitionWatermarks::new(&strategy, 1),
        }
    }
}

impl<S: Source, A: TimestampAssigner<S::Out>> WithWatermarks<S, A> {
    /// Stamps each record with the time `assigner` reads from it (replacing the source's
    /// timestamp), and derives watermarks from those timestamps.
    pub fn with_timestamps(source: S, assigner: A, strategy: WatermarkStrategy) -> Self {
        WithWatermarks {
            source,
            assigner: Some(assigner),
            watermarks: PartitionWatermarks::new(&strategy, 1),
        }
    }
}

impl<S: Source, A: TimestampAssigner<S::Out>> Source for WithWatermarks<S, A> {
    type Out = S::Out;

    fn poll_next(&mut self, out: &mut SourceOutput<S::Out>) -> Result<SourcePoll, BoxError> {
        let status = self.source.poll_next(out)?;
        out.watermarks.clear();
        let watermarks = &mut self.watermarks;
        for (index, record) in out.records.iter_mut().enumerate() {
            if let Some(assigner) = &self.assigner {
                let timestamp = assigner.extract_timestamp(&record.value, record.timestamp());
                record.set_timestamp(timestamp);
            }
            let timestamp = record.timestamp().unwrap_or(Timestamp::MIN);
            if let Some(watermark) = watermarks.on_record(0, timestamp) {
                place_watermark(&mut out.watermarks, index + 1, watermark);
            }
        }
        watermarks.emit_to(out);
        Ok(status)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        self.source.snapshot_position()
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        self.source.restore_position(position)
    }
}

/// Emits the items of an iterator, in order, then finishes. Not parallel. It resumes by
/// skipping the items it had emitted, so the iterator must yield the same items every run.
pub struct IterSource<I: Iterator> {
    items: I,
    emitted: u64,
}

impl<I: Iterator> IterSource<I> {
    /// A source over the given iterator.
    pub fn new(items: impl IntoIterator<IntoIter = I>) -> Self {
        IterSource {
            items: items.into_iter(),
            emitted: 0,
        }
    }
}

impl<I> Source for IterSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Data,
{
    type Out = I::Item;

    fn poll_next(&mut self, out: &mut SourceOutput<I::Item>) -> Result<SourcePoll, BoxError> {
        while out.remaining() > 0 {
            match self.items.next() {
                Some(item) => {
                    out.collect(item);
                    self.emitted += 1;
                }
                None => return Ok(SourcePoll::Finished),
            }
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        encode_position(&self.emitted).map(Some)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        let emitted: u64 = decode_position(position)?;
        for skipped in self.emitted..emitted {
            if self.items.next().is_none() {
                return Err(format!(
                    "the iterator ended after {skipped} items; the checkpoint had read {emitted}"
                )
                .into());
            }
        }
        self.emitted = self.emitted.max(emitted);
        Ok(())
    }
}

/// Emits the numbers of a range; subtask `i` of `p` emits the `i`-th of `p` contiguous slices.
pub struct SequenceSource {
    next: u64,
    end: u64,
}

impl SequenceSource {
    /// The slice of `range` that subtask `index` of `parallelism` emits.
    pub fn slice(range: Range<u64>, index: u32, parallelism: u32) -> Self {
        let length = u128::from(range.end.saturating_sub(range.start));
        let bound =
            |i: u32| range.start + (length * u128::from(i) / u128::from(parallelism)) as u64;
        SequenceSource {
            next: bound(index),
            end: bound(index + 1),
        }
    }
}

impl Source for SequenceSource {
    type Out = u64;

    fn poll_next(&mut self, out: &mut SourceOutput<u64>) -> Result<SourcePoll, BoxError> {
        let stop = self
            .end
            .min(self.next.saturating_add(out.remaining() as u64));
        out.records.extend((self.next..stop).map(Record::new));
        self.next = stop;
        Ok(if self.next == self.end {
            SourcePoll::Finished
        } else {
            SourcePoll::Ready
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        encode_position(&self.next).map(Some)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        let next: u64 = decode_position(position)?;
        if next > self.end {
            return Err(format!("position {next} is past this slice's end {}", self.end).into());
        }
        self.next = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(source: &mut dyn AnySource, max: usize) -> Vec<u64> {
        let mut all = Vec::new();
        loop {
            let polled = source.poll(max, Timestamp(0), 0).unwrap();
            all.extend(polled.values::<u64>());
            if polled.status == SourcePoll::Finished {
                return all;
            }
        }
    }

    #[test]
    fn sequence_slices_partition_the_range() {
        let mut all = Vec::new();
        for index in 0..3 {
            all.extend(drain(&mut SequenceSource::slice(5..15, index, 3), 4));
        }
        assert_eq!(all, (5..15).collect::<Vec<_>>());
    }

    #[test]
    fn sources_resume_from_their_position() {
        let mut sequence = SequenceSource::slice(0..100, 1, 2);
        sequence.poll(7, Timestamp(0), 0).unwrap();
        let position = AnySource::snapshot_position(&mut sequence)
            .unwrap()
            .unwrap();
        let mut resumed = SequenceSource::slice(0..100, 1, 2);
        AnySource::restore_position(&mut resumed, &position).unwrap();
        assert_eq!(drain(&mut resumed, 10), (57..100).collect::<Vec<_>>());

        let mut items = IterSource::new(0u64..10);
        items.poll(3, Timestamp(0), 0).unwrap();
        let position = AnySource::snapshot_position(&mut items).unwrap().unwrap();
        let mut resumed = IterSource::new(0u64..10);
        AnySource::restore_position(&mut resumed, &position).unwrap();
        assert_eq!(drain(&mut resumed, 4), (3..10).collect::<Vec<_>>());
        let mut shorter = IterSource::new(0u64..2);
        let error = AnySource::restore_position(&mut shorter, &position).unwrap_err();
        assert!(error.to_string().contains("ended after 2 items"), "{error}");
    }

    #[test]
    fn iterator_source_respects_the_batch_limit() {
        let mut source = IterSource::new(0u64..5);
        let first = source.poll(2, Timestamp(0), 0).unwrap();
        assert_eq!(first.values::<u64>(), [0, 1]);
        assert_eq!(first.status, SourcePoll::Ready);
        assert_eq!(drain(&mut source, 2), vec![2, 3, 4]);
    }

    /// Emits, at each poll, the next script entry's values (with the timestamp each carries,
    /// if any) and a watermark of its own far ahead of them; idle when the script is out.
    struct Scripted(std::collections::VecDeque<Vec<(u64, Option<i64>)>>);

    impl Source for Scripted {
        type Out = u64;

        fn poll_next(&mut self, out: &mut SourceOutput<u64>) -> Result<SourcePoll, BoxError> {
            let Some(values) = self.0.pop_front() else {
                return Ok(SourcePoll::Idle);
            };
            for (value, timestamp) in values {
                out.records.push(Record::with_optional_timestamp(
                    value,
                    timestamp.map(Timestamp),
                ));
            }
            out.emit_watermark(Timestamp(1_000_000));
            Ok(SourcePoll::Ready)
        }
    }

    fn timestamps(polled: &Polled) -> Vec<Option<Timestamp>> {
        polled
            .records::<u64>()
            .iter()
            .map(Record::timestamp)
            .collect()
    }

    /// What a poll emitted, in order: record values and watermarks.
    #[derive(Debug, PartialEq)]
    enum Out {
        Values(Vec<u64>),
        Watermark(i64),
    }

    fn emitted(polled: &Polled) -> Vec<Out> {
        polled
            .emitted
            .iter()
            .map(|event| match event {
                Emitted::Records(records) => Out::Values(
                    records
                        .clone()
                        .downcast::<u64>()
                        .unwrap()
                        .into_iter()
                        .map(|r| r.value)
                        .collect(),
                ),
                Emitted::Watermark(watermark) => Out::Watermark(watermark.0),
            })
            .collect()
    }

    #[test]
    fn with_watermarks_replaces_the_sources_watermarks_by_the_strategys() {
        let script = vec![
            vec![(1, Some(100)), (2, Some(300)), (3, None)],
            vec![(4, Some(200))],
            vec![(5, Some(280))],
        ];
        let mut source = WithWatermarks::new(
            Scripted(script.into()),
            WatermarkStrategy::bounded_out_of_orderness(std::time::Duration::from_millis(50)),
        );
        let first = source.poll(10, Timestamp(0), 200).unwrap();
        assert_eq!(
            timestamps(&first),
            [Some(Timestamp(100)), Some(Timestamp(300)), None],
            "records keep the timestamps the source gave them"
        );
        assert_eq!(
            first.watermarks(),
            [],
            "not the source's own, and the first periodic one is due an interval later"
        );
        assert_eq!(first.watermark_status, WatermarkStatus::Active);
        let second = source.poll(10, Timestamp(200), 200).unwrap();
        assert_eq!(
            emitted(&second),
            [Out::Values(vec![4]), Out::Watermark(249)],
            "the periodic watermark follows the poll's records"
        );
        let third = source.poll(10, Timestamp(400), 200).unwrap();
        assert_eq!(third.watermarks(), [], "an older record moves nothing");
    }

    #[test]
    fn a_periodic_watermark_makes_the_records_read_after_it_late_not_those_before() {
        // One poll per ms, a watermark due every 3 ms: a record is late if it is read after a
        // watermark that passed it, whatever the polls between (per poll, 1 500 would be late
        // too: 2 999 would follow the poll of 3 000).
        let times = [1_000, 2_000, 3_000, 1_500, 4_000, 5_000, 2_500, 6_000];
        let late_records = |batch: usize| {
            let mut source = WithWatermarks::with_timestamps(
                IterSource::new(times),
                |t: &i64| Timestamp(*t),
                WatermarkStrategy::monotonous(),
            );
            let (mut late, mut watermark, mut read) = (Vec::new(), Timestamp::MIN, 0);
            for now in 0.. {
                let polled = source.poll(batch, Timestamp(now), 3).unwrap();
                for event in &polled.emitted {
                    match event {
                        Emitted::Records(records) => {
                            for record in records.clone().downcast::<i64>().unwrap() {
                                read += 1;
                                if record.timestamp().is_some_and(|t| t <= watermark) {
                                    late.push(record.value);
                                }
                            }
                        }
                        Emitted::Watermark(at) => watermark = *at,
                    }
                }
                if polled.status == SourcePoll::Finished {
                    return (late, read);
                }
            }
            unreachable!("the source finishes")
        };
        assert_eq!(
            late_records(8),
            (vec![], 8),
            "one poll reads everything: no watermark comes before the end"
        );
        assert_eq!(
            late_records(1),
            (vec![2_500], 8),
            "1 500 is read before the watermark due at 3 ms (2 999), 2 500 after it"
        );
    }

    #[test]
    fn a_punctuated_watermark_follows_its_record_within_the_poll() {
        let mut source = WithWatermarks::with_timestamps(
            IterSource::new(1u64..=7),
            |value: &u64| Timestamp(*value as i64 * 1_000),
            WatermarkStrategy::punctuated(|t: Timestamp| {
                (t.0 % 3_000 == 0).then(|| Timestamp(t.0 - 1))
            }),
        );
        let polled = source.poll(10, Timestamp(0), 200).unwrap();
        assert_eq!(
            emitted(&polled),
            [
                Out::Values(vec![1, 2, 3]),
                Out::Watermark(2_999),
                Out::Values(vec![4, 5, 6]),
                Out::Watermark(5_999),
                Out::Values(vec![7]),
            ]
        );
    }

    #[test]
    fn with_timestamps_stamps_each_record_from_its_value() {
        let mut source = WithWatermarks::with_timestamps(
            IterSource::new(1u64..=5),
            |value: &u64| Timestamp(*value as i64 * 1_000),
            WatermarkStrategy::monotonous(),
        );
        source.poll(0, Timestamp(0), 1).unwrap();
        let polled = source.poll(3, Timestamp(1), 1).unwrap();
        assert_eq!(
            timestamps(&polled),
            [
                Some(Timestamp(1_000)),
                Some(Timestamp(2_000)),
                Some(Timestamp(3_000))
            ]
        );
        assert_eq!(polled.watermarks(), [Timestamp(2_999)]);
        let position = AnySource::snapshot_position(&mut source).unwrap().unwrap();
        let mut resumed = WithWatermarks::with_timestamps(
            IterSource::new(1u64..=5),
            |value: &u64| Timestamp(*value as i64 * 1_000),
            WatermarkStrategy::monotonous(),
        );
        AnySource::restore_position(&mut resumed, &position).unwrap();
        let rest = resumed.poll(3, Timestamp(0), 1).unwrap();
        assert_eq!(
            timestamps(&rest),
            [Some(Timestamp(4_000)), Some(Timestamp(5_000))],
            "the position is the wrapped source's"
        );
        assert_eq!(rest.status, SourcePoll::Finished);
    }

    #[test]
    fn a_wrapped_source_without_records_goes_idle_after_the_timeout_and_back_with_a_record() {
        let script = vec![vec![(1, Some(100))], vec![], vec![], vec![(2, Some(500))]];
        let strategy =
            WatermarkStrategy::monotonous().with_idleness(std::time::Duration::from_millis(100));
        let mut source = WithWatermarks::new(Scripted(script.into()), strategy);
        let status_at = |source: &mut WithWatermarks<_, _>, now: i64| {
            let polled: Polled = AnySource::poll(source, 10, Timestamp(now), 1).unwrap();
            (polled.watermark_status, polled.watermarks().last().copied())
        };
        assert_eq!(status_at(&mut source, 0), (WatermarkStatus::Active, None));
        assert_eq!(
            status_at(&mut source, 99),
            (WatermarkStatus::Active, Some(Timestamp(99)))
        );
        assert_eq!(status_at(&mut source, 100), (WatermarkStatus::Idle, None));
        assert_eq!(
            status_at(&mut source, 150),
            (WatermarkStatus::Active, Some(Timestamp(499))),
            "a record makes it active at once"
        );
        assert_eq!(status_at(&mut source, 250), (WatermarkStatus::Idle, None));
    }

    #[test]
    fn a_poll_that_emits_records_is_active_even_if_it_says_idle() {
        struct Contrary;
        impl Source for Contrary {
            type Out = u64;

            fn poll_next(&mut self, out: &mut SourceOutput<u64>) -> Result<SourcePoll, BoxError> {
                out.collect(out.processing_time().0 as u64);
                out.mark_idle();
                Ok(SourcePoll::Ready)
            }
        }
        let polled = Contrary.poll(1, Timestamp(42), 0).unwrap();
        assert_eq!(polled.watermark_status, WatermarkStatus::Active);
        assert_eq!(
            polled.records::<u64>(),
            [Record::new(42)],
            "the source sees the poll's processing time"
        );
    }
}

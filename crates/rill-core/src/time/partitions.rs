//! The watermarks of one source subtask: a generator per partition it reads, combined into
//! the subtask's watermark and status.

use crate::element::Timestamp;
use crate::source::SourceOutput;

use super::WatermarkStatus;
use super::generator::{PartitionGenerator, WatermarkOutput, WatermarkStrategy};

/// Milliseconds of a duration, saturating: durations come from users and are never negative.
fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// What the end of a poll of [`PartitionWatermarks`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkUpdate {
    /// The combined watermark, if it advanced since it was last emitted.
    pub watermark: Option<Timestamp>,
    /// Whether the subtask is idle: every partition it reads that has not ended is idle, or it
    /// reads none.
    pub status: WatermarkStatus,
}

/// One partition: its generator and where it stands.
#[derive(Debug)]
struct Partition {
    generator: PartitionGenerator,
    /// The largest watermark its generator emitted; `Timestamp::MIN` before the first.
    watermark: Timestamp,
    /// A record came since the previous poll.
    fresh: bool,
    /// The processing time of the last poll that found a record, or of the first poll.
    last_active: Option<Timestamp>,
    /// Quiet for the idle timeout, as of the last poll, and no record since.
    idle: bool,
    ended: bool,
}

/// The watermark generators of one source subtask: one per partition it reads.
///
/// The subtask's watermark is the minimum of the partitions' watermarks (what each partition's
/// generator emitted last) over the partitions that are neither idle nor ended —
/// `Timestamp::MAX` once every partition has ended — and it is emitted as soon as it
/// advances: right after the record whose punctuated watermark moved it, or at the end of the
/// poll where a periodic emission, an idle partition or an ended one moved it. It never goes
/// back.
///
/// A partition is idle once no record has come from it for the strategy's idle timeout of
/// processing time — one that never had a record counts from the first poll — and is active
/// again with its next record: from then on it holds the watermark back again (which, since
/// the watermark never goes back, holds it where it is until the partition catches up). When
/// every open partition is idle, or the subtask reads no partition at all, the subtask is idle
/// ([`WatermarkStatus::Idle`]): downstream operators then stop waiting for it.
///
/// A source that reads partitions hands each record to its output with [`collect_record`],
/// which reports it to the generators, and ends each poll with
/// [`PartitionWatermarks::end_poll`]. Underneath,
/// the source reports each record with [`PartitionWatermarks::on_record`] (cheap: it runs per
/// record) and emits the watermark it returns, if any, right after that record; it reports
/// each partition it has read to the end with [`PartitionWatermarks::end_partition`]; and it
/// ends each poll with [`PartitionWatermarks::emit_to`] (or [`PartitionWatermarks::poll`]),
/// which runs the periodic emission once the watermark interval has passed since the last one
/// (the first is due one interval after the first poll).
#[derive(Debug)]
pub struct PartitionWatermarks {
    idle_timeout_ms: Option<i64>,
    partitions: Vec<Partition>,
    /// The combined watermark emitted last.
    watermark: Timestamp,
    /// The processing time from which the next periodic emission is due; `None` before the
    /// first poll.
    next_periodic_emit: Option<Timestamp>,
}

impl PartitionWatermarks {
    /// Generators for `partitions` partitions, numbered `0..partitions`.
    pub fn new(strategy: &WatermarkStrategy, partitions: usize) -> Self {
        PartitionWatermarks {
            idle_timeout_ms: strategy.idle_timeout().map(millis),
            partitions: (0..partitions)
                .map(|_| Partition {
                    generator: strategy.create_generator(),
                    watermark: Timestamp::MIN,
                    fresh: false,
                    last_active: None,
                    idle: false,
                    ended: false,
                })
                .collect(),
            watermark: Timestamp::MIN,
            next_periodic_emit: None,
        }
    }

    /// Partition `partition` delivered a record with this timestamp (`Timestamp::MIN` for a
    /// record without one: it keeps the partition active, and its generator does not see it).
    /// Returns the combined watermark if the partition's generator emitted one for this record
    /// and it advanced: emit it right after the record.
    ///
    /// # Panics
    /// If `partition` is not below the number of partitions the generators were made for.
    #[inline]
    pub fn on_record(&mut self, partition: usize, timestamp: Timestamp) -> Option<Timestamp> {
        let state = &mut self.partitions[partition];
        state.fresh = true;
        state.idle = false;
        if timestamp == Timestamp::MIN {
            return None;
        }
        let mut output = WatermarkOutput::default();
        state.generator.on_event(timestamp, &mut output);
        let emitted = output.take()?;
        state.watermark = state.watermark.max(emitted);
        self.advance().watermark
    }

    /// Partition `partition` has no more records: it no longer holds the watermark back.
    ///
    /// # Panics
    /// If `partition` is not below the number of partitions the generators were made for.
    pub fn end_partition(&mut self, partition: usize) {
        self.partitions[partition].ended = true;
    }

    /// Ends a poll at processing time `now`: marks the partitions that have been quiet for the
    /// idle timeout idle, runs the generators' periodic emission if it is due
    /// (`watermark_interval_ms` after the last one; 0 never), and returns the combined
    /// watermark, if it advanced, and the status.
    pub fn poll(&mut self, now: Timestamp, watermark_interval_ms: u64) -> WatermarkUpdate {
        for state in &mut self.partitions {
            if state.ended {
                continue;
            }
            let fresh = std::mem::take(&mut state.fresh);
            let last_active = match state.last_active {
                Some(at) if !fresh => at,
                _ => *state.last_active.insert(now),
            };
            state.idle = !fresh
                && self
                    .idle_timeout_ms
                    .is_some_and(|timeout| now.0.saturating_sub(last_active.0) >= timeout);
        }
        if watermark_interval_ms > 0 {
            let interval = i64::try_from(watermark_interval_ms).unwrap_or(i64::MAX);
            let due = *self
                .next_periodic_emit
                .get_or_insert(Timestamp(now.0.saturating_add(interval)));
            if now >= due {
                self.next_periodic_emit = Some(Timestamp(now.0.saturating_add(interval)));
                self.emit_periodic();
            }
        }
        self.advance()
    }

    /// Polls at the output's processing time and watermark interval, and hands the result to
    /// the output: the watermark, if it advanced, after the poll's records, and idleness.
    pub fn emit_to<T>(&mut self, out: &mut SourceOutput<T>) {
        let update = self.poll(out.processing_time(), out.watermark_interval_ms());
        if let Some(watermark) = update.watermark {
            out.emit_watermark(watermark);
        }
        if update.status == WatermarkStatus::Idle {
            out.mark_idle();
        }
    }

    /// Ends a poll: the partitions whose flag in `ended` (by index) is set no longer hold the
    /// watermark back; then [`PartitionWatermarks::emit_to`].
    pub fn end_poll<T>(
        &mut self,
        ended: impl IntoIterator<Item = bool>,
        out: &mut SourceOutput<T>,
    ) {
        for (partition, ended) in ended.into_iter().enumerate() {
            if ended {
                self.end_partition(partition);
            }
        }
        self.emit_to(out);
    }

    fn emit_periodic(&mut self) {
        let mut output = WatermarkOutput::default();
        for state in self.partitions.iter_mut().filter(|state| !state.ended) {
            state.generator.on_periodic_emit(&mut output);
            if let Some(emitted) = output.take() {
                state.watermark = state.watermark.max(emitted);
            }
        }
    }

    /// The combined watermark and status now; the watermark if it advanced.
    fn advance(&mut self) -> WatermarkUpdate {
        let counted = self
            .partitions
            .iter()
            .filter(|state| !state.ended && !state.idle);
        let minimum = counted.map(|state| state.watermark).min();
        let all_ended = !self.partitions.is_empty() && self.partitions.iter().all(|s| s.ended);
        let (candidate, status) = match minimum {
            Some(watermark) => (watermark, WatermarkStatus::Active),
            None if all_ended => (Timestamp::MAX, WatermarkStatus::Active),
            None => (Timestamp::MIN, WatermarkStatus::Idle),
        };
        let advanced = candidate > self.watermark;
        if advanced {
            self.watermark = candidate;
        }
        WatermarkUpdate {
            watermark: advanced.then_some(candidate),
            status,
        }
    }
}

/// Hands `value`, read from partition `partition` at `timestamp`, to `out`, followed by the
/// watermark it advances, if the source has generators (`watermarks`). Runs per record.
#[inline]
pub fn collect_record<T>(
    watermarks: Option<&mut PartitionWatermarks>,
    out: &mut SourceOutput<T>,
    partition: usize,
    value: T,
    timestamp: Timestamp,
) {
    out.collect_with_timestamp(value, timestamp);
    if let Some(watermark) =
        watermarks.and_then(|watermarks| watermarks.on_record(partition, timestamp))
    {
        out.emit_watermark(watermark);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const ACTIVE: WatermarkStatus = WatermarkStatus::Active;
    const IDLE: WatermarkStatus = WatermarkStatus::Idle;
    /// A periodic emission at every poll a millisecond or more after the previous one.
    const EVERY_MS: u64 = 1;

    fn update(watermark: Option<i64>, status: WatermarkStatus) -> WatermarkUpdate {
        WatermarkUpdate {
            watermark: watermark.map(Timestamp),
            status,
        }
    }

    fn bounded(ms: u64) -> WatermarkStrategy {
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(ms))
    }

    /// Generators that have had their first poll at processing time 0.
    fn started(strategy: &WatermarkStrategy, partitions: usize) -> PartitionWatermarks {
        let mut watermarks = PartitionWatermarks::new(strategy, partitions);
        watermarks.poll(Timestamp(0), EVERY_MS);
        watermarks
    }

    #[test]
    fn the_periodic_watermark_trails_the_largest_timestamp_by_the_bound_and_a_millisecond() {
        let mut watermarks = PartitionWatermarks::new(&bounded(100), 1);
        assert_eq!(watermarks.on_record(0, Timestamp(1_000)), None);
        assert_eq!(watermarks.on_record(0, Timestamp(900)), None);
        assert_eq!(
            watermarks.poll(Timestamp(0), 200),
            update(None, ACTIVE),
            "the first poll only schedules the first emission, an interval later"
        );
        assert_eq!(watermarks.poll(Timestamp(199), 200), update(None, ACTIVE));
        assert_eq!(
            watermarks.poll(Timestamp(200), 200),
            update(Some(899), ACTIVE)
        );
        watermarks.on_record(0, Timestamp(2_000));
        assert_eq!(
            watermarks.poll(Timestamp(399), 200),
            update(None, ACTIVE),
            "the next emission is due an interval after the last"
        );
        assert_eq!(
            watermarks.poll(Timestamp(400), 200),
            update(Some(1_899), ACTIVE)
        );
        watermarks.on_record(0, Timestamp(1_950));
        assert_eq!(
            watermarks.poll(Timestamp(600), 200),
            update(None, ACTIVE),
            "an older record moves nothing"
        );
    }

    #[test]
    fn an_interval_of_zero_turns_periodic_emission_off() {
        let mut watermarks = PartitionWatermarks::new(&WatermarkStrategy::monotonous(), 1);
        for now in [0, 1_000, 1_000_000] {
            watermarks.on_record(0, Timestamp(now));
            assert_eq!(watermarks.poll(Timestamp(now), 0), update(None, ACTIVE));
        }
    }

    #[test]
    fn a_punctuated_watermark_is_returned_at_its_record_and_combined_over_partitions() {
        let strategy = WatermarkStrategy::punctuated(|t: Timestamp| Some(Timestamp(t.0 - 1)));
        let mut watermarks = PartitionWatermarks::new(&strategy, 2);
        assert_eq!(
            watermarks.on_record(0, Timestamp(500)),
            None,
            "partition 1 has said nothing: it holds the watermark back"
        );
        assert_eq!(
            watermarks.on_record(1, Timestamp(300)),
            Some(Timestamp(299))
        );
        assert_eq!(
            watermarks.on_record(1, Timestamp(800)),
            Some(Timestamp(499))
        );
        assert_eq!(
            watermarks.on_record(1, Timestamp(700)),
            None,
            "a lower watermark from a generator moves nothing"
        );
        assert_eq!(
            watermarks.poll(Timestamp(10_000), 0),
            update(None, ACTIVE),
            "nothing periodic, with or without an interval"
        );
        assert_eq!(
            watermarks.on_record(0, Timestamp(900)),
            Some(Timestamp(799))
        );
    }

    #[test]
    fn one_slow_partition_holds_the_watermark_back() {
        let mut watermarks = started(&WatermarkStrategy::monotonous(), 2);
        watermarks.on_record(0, Timestamp(5_000));
        assert_eq!(
            watermarks.poll(Timestamp(1), EVERY_MS),
            update(None, ACTIVE),
            "partition 1 has said nothing: without idleness it holds everything back"
        );
        watermarks.on_record(1, Timestamp(100));
        assert_eq!(
            watermarks.poll(Timestamp(1_000_000), EVERY_MS),
            update(Some(99), ACTIVE)
        );
        watermarks.on_record(0, Timestamp(9_000));
        watermarks.on_record(1, Timestamp(200));
        assert_eq!(
            watermarks.poll(Timestamp(1_000_001), EVERY_MS),
            update(Some(199), ACTIVE)
        );
    }

    #[test]
    fn an_idle_partition_lets_the_watermark_advance_until_its_next_record() {
        let strategy = bounded(0).with_idleness(Duration::from_millis(50));
        let mut watermarks = started(&strategy, 2);
        watermarks.on_record(0, Timestamp(1_000));
        watermarks.on_record(1, Timestamp(100));
        assert_eq!(
            watermarks.poll(Timestamp(1), EVERY_MS),
            update(Some(99), ACTIVE)
        );
        watermarks.on_record(0, Timestamp(2_000));
        assert_eq!(
            watermarks.poll(Timestamp(50), EVERY_MS),
            update(None, ACTIVE),
            "partition 1 is quiet, but not for long enough"
        );
        watermarks.on_record(0, Timestamp(3_000));
        assert_eq!(
            watermarks.poll(Timestamp(51), EVERY_MS),
            update(Some(2_999), ACTIVE),
            "partition 1 is idle: partition 0 alone decides"
        );
        watermarks.on_record(1, Timestamp(150));
        watermarks.on_record(0, Timestamp(4_000));
        assert_eq!(
            watermarks.poll(Timestamp(60), EVERY_MS),
            update(None, ACTIVE),
            "partition 1 is active again: it holds the watermark where it is, never back"
        );
        watermarks.on_record(1, Timestamp(3_500));
        assert_eq!(
            watermarks.poll(Timestamp(70), EVERY_MS),
            update(Some(3_499), ACTIVE),
            "and it advances as partition 1 catches up"
        );
    }

    #[test]
    fn a_partition_going_idle_moves_the_watermark_even_without_periodic_emission() {
        let strategy = WatermarkStrategy::punctuated(|t: Timestamp| Some(Timestamp(t.0 - 1)))
            .with_idleness(Duration::from_millis(50));
        let mut watermarks = PartitionWatermarks::new(&strategy, 2);
        watermarks.on_record(1, Timestamp(100));
        assert_eq!(
            watermarks.on_record(0, Timestamp(1_000)),
            Some(Timestamp(99))
        );
        assert_eq!(watermarks.poll(Timestamp(0), 0), update(None, ACTIVE));
        watermarks.on_record(0, Timestamp(2_000));
        assert_eq!(
            watermarks.poll(Timestamp(50), 0),
            update(Some(1_999), ACTIVE),
            "partition 1 went idle"
        );
    }

    #[test]
    fn a_partition_that_never_had_a_record_is_idle_after_the_timeout_from_the_first_poll() {
        let strategy = bounded(0).with_idleness(Duration::from_millis(50));
        let mut watermarks = PartitionWatermarks::new(&strategy, 2);
        watermarks.on_record(0, Timestamp(1_000));
        assert_eq!(
            watermarks.poll(Timestamp(500), EVERY_MS),
            update(None, ACTIVE)
        );
        watermarks.on_record(0, Timestamp(1_001));
        assert_eq!(
            watermarks.poll(Timestamp(549), EVERY_MS),
            update(None, ACTIVE)
        );
        watermarks.on_record(0, Timestamp(1_002));
        assert_eq!(
            watermarks.poll(Timestamp(550), EVERY_MS),
            update(Some(1_001), ACTIVE)
        );
    }

    #[test]
    fn when_every_open_partition_is_idle_the_subtask_is_idle() {
        let strategy = bounded(0).with_idleness(Duration::from_millis(10));
        let mut watermarks = started(&strategy, 2);
        watermarks.on_record(0, Timestamp(1_000));
        watermarks.on_record(1, Timestamp(2_000));
        assert_eq!(
            watermarks.poll(Timestamp(1), EVERY_MS),
            update(Some(999), ACTIVE)
        );
        watermarks.end_partition(0);
        assert_eq!(
            watermarks.poll(Timestamp(5), EVERY_MS),
            update(Some(1_999), ACTIVE),
            "an ended partition no longer holds it back"
        );
        assert_eq!(watermarks.poll(Timestamp(11), EVERY_MS), update(None, IDLE));
        watermarks.on_record(1, Timestamp(2_500));
        assert_eq!(
            watermarks.poll(Timestamp(12), EVERY_MS),
            update(Some(2_499), ACTIVE)
        );
    }

    #[test]
    fn ended_partitions_do_not_count_and_all_ended_means_no_more_records() {
        let mut watermarks = started(&WatermarkStrategy::monotonous(), 3);
        watermarks.on_record(0, Timestamp(300));
        watermarks.on_record(1, Timestamp(100));
        watermarks.end_partition(2);
        assert_eq!(
            watermarks.poll(Timestamp(1), EVERY_MS),
            update(Some(99), ACTIVE),
            "partition 2 ended without a record and holds nothing back"
        );
        watermarks.end_partition(1);
        assert_eq!(
            watermarks.poll(Timestamp(1), EVERY_MS),
            update(Some(299), ACTIVE),
            "an ended partition moves the watermark without waiting for the interval"
        );
        watermarks.end_partition(0);
        assert_eq!(
            watermarks.poll(Timestamp(1), EVERY_MS),
            update(Some(i64::MAX), ACTIVE)
        );
    }

    #[test]
    fn a_subtask_reading_no_partition_is_idle() {
        let mut watermarks = PartitionWatermarks::new(&WatermarkStrategy::monotonous(), 0);
        assert_eq!(watermarks.poll(Timestamp(0), EVERY_MS), update(None, IDLE));
    }

    #[test]
    fn extreme_settings_saturate_instead_of_overflowing() {
        let mut watermarks = started(&bounded(u64::MAX), 1);
        watermarks.on_record(0, Timestamp(i64::MIN + 1));
        assert_eq!(
            watermarks.poll(Timestamp(1), EVERY_MS),
            update(None, ACTIVE)
        );
        watermarks.on_record(0, Timestamp(5));
        assert_eq!(
            watermarks.poll(Timestamp::MAX, u64::MAX),
            update(Some(i64::MIN + 5), ACTIVE),
            "5 ms less i64::MAX ms less 1 ms"
        );
        let strategy = WatermarkStrategy::monotonous().with_idleness(Duration::MAX);
        let mut watermarks = PartitionWatermarks::new(&strategy, 1);
        assert_eq!(
            watermarks.poll(Timestamp(0), EVERY_MS),
            update(None, ACTIVE)
        );
        assert_eq!(
            watermarks.poll(Timestamp(i64::MAX - 1), EVERY_MS),
            update(None, ACTIVE)
        );
        assert_eq!(
            watermarks.poll(Timestamp::MAX, EVERY_MS),
            update(None, IDLE),
            "i64::MAX ms have passed: the longest timeout there is"
        );
    }
}

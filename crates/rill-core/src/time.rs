//! Event time at the sources: watermark strategies, and the per-partition watermark generators
//! a source subtask runs them with.
//!
//! A [`WatermarkStrategy`] says how far a source's watermark trails the timestamps it has seen
//! (Flink's convention: the largest timestamp seen, minus the allowed out-of-orderness, minus
//! 1 ms, so that a record at exactly the largest timestamp seen is not late), and, optionally,
//! after how much processing time without a record a partition stops holding the watermark
//! back (**idleness**).
//!
//! A source subtask often reads several partitions (of a log topic, say) whose event times
//! advance at different paces. One generator for all of them would let the fastest partition
//! push the watermark past records a slower one has still to deliver, and those would arrive
//! late. So [`PartitionWatermarks`] keeps one generator per partition and emits the minimum
//! over the partitions that are neither idle nor ended. A partition is idle once no record has
//! come from it for the idle timeout of processing time — one that never had a record counts
//! from the generator's first poll — and is active again with its next record: from then on it
//! holds the watermark back again (the watermark never goes back, so it holds it where it is
//! until the partition catches up). When every open partition is idle, or the subtask reads no
//! partition at all, the subtask is idle ([`WatermarkStatus::Idle`]): downstream operators then
//! stop waiting for it.
//!
//! Nothing here reads a clock: processing time is what the driver passes to the source's poll
//! ([`crate::source::SourceOutput::processing_time`]) — the wall clock in the runtime, the
//! virtual clock in the simulator.

use std::time::Duration;

use crate::element::Timestamp;
use crate::source::SourceOutput;

/// Whether a stream holds back the watermarks of the operators it feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatermarkStatus {
    /// Records and watermarks may come: the stream's watermark counts.
    Active,
    /// Nothing is expected for a while: the stream's watermark does not count until it is
    /// active again.
    Idle,
}

/// How a source derives watermarks from the event timestamps of its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkStrategy {
    max_out_of_orderness: Duration,
    idle_timeout: Option<Duration>,
}

impl WatermarkStrategy {
    /// Records may arrive up to `max_out_of_orderness` behind the largest timestamp seen (at
    /// millisecond resolution): the watermark is that timestamp minus `max_out_of_orderness`
    /// minus 1 ms.
    pub fn bounded_out_of_orderness(max_out_of_orderness: Duration) -> Self {
        WatermarkStrategy {
            max_out_of_orderness,
            idle_timeout: None,
        }
    }

    /// Timestamps never decrease (within a partition): the watermark is the largest timestamp
    /// seen minus 1 ms.
    pub fn monotonous() -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO)
    }

    /// A partition with no record for `timeout` of processing time (at millisecond
    /// resolution) is idle: it does not hold the watermark back until its next record.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }
}

/// Milliseconds of a duration, saturating: durations come from users and are never negative.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// What a poll of [`PartitionWatermarks`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkUpdate {
    /// The combined watermark, if it advanced since the previous poll.
    pub watermark: Option<Timestamp>,
    /// Whether the subtask is idle: every partition it reads that has not ended is idle, or it
    /// reads none.
    pub status: WatermarkStatus,
}

/// One partition's generator.
#[derive(Clone, Copy, Debug)]
struct PartitionClock {
    /// The largest timestamp seen; `Timestamp::MIN` before the first.
    max_timestamp: Timestamp,
    /// A record came since the previous poll.
    fresh: bool,
    /// The processing time of the last poll that found a record, or of the first poll.
    last_active: Option<Timestamp>,
    ended: bool,
}

/// The watermark generators of one source subtask: one per partition it reads.
///
/// The source reports each record with [`PartitionWatermarks::on_record`] (cheap: it runs per
/// record), each partition it has read to the end with [`PartitionWatermarks::end_partition`],
/// and at the end of each poll asks for the combined watermark with
/// [`PartitionWatermarks::poll`] (or hands it to its output with
/// [`PartitionWatermarks::emit_to`]).
#[derive(Clone, Debug)]
pub struct PartitionWatermarks {
    out_of_orderness_ms: i64,
    idle_timeout_ms: Option<i64>,
    partitions: Vec<PartitionClock>,
    /// The combined watermark emitted last: it never goes back.
    watermark: Timestamp,
}

impl PartitionWatermarks {
    /// Generators for `partitions` partitions, numbered `0..partitions`.
    pub fn new(strategy: WatermarkStrategy, partitions: usize) -> Self {
        PartitionWatermarks {
            out_of_orderness_ms: millis(strategy.max_out_of_orderness),
            idle_timeout_ms: strategy.idle_timeout.map(millis),
            partitions: vec![
                PartitionClock {
                    max_timestamp: Timestamp::MIN,
                    fresh: false,
                    last_active: None,
                    ended: false,
                };
                partitions
            ],
            watermark: Timestamp::MIN,
        }
    }

    /// Partition `partition` delivered a record with this timestamp (`Timestamp::MIN` for a
    /// record without one: it keeps the partition active, and moves no watermark).
    ///
    /// # Panics
    /// If `partition` is not below the number of partitions the generators were made for.
    #[inline]
    pub fn on_record(&mut self, partition: usize, timestamp: Timestamp) {
        let clock = &mut self.partitions[partition];
        clock.max_timestamp = clock.max_timestamp.max(timestamp);
        clock.fresh = true;
    }

    /// Partition `partition` has no more records: it no longer holds the watermark back.
    ///
    /// # Panics
    /// If `partition` is not below the number of partitions the generators were made for.
    pub fn end_partition(&mut self, partition: usize) {
        self.partitions[partition].ended = true;
    }

    /// The combined watermark and status at processing time `now`, after the records reported
    /// since the previous poll: the minimum over the partitions that are neither idle nor
    /// ended (`Timestamp::MAX` once every partition has ended).
    pub fn poll(&mut self, now: Timestamp) -> WatermarkUpdate {
        let mut minimum: Option<Timestamp> = None;
        let mut open = 0usize;
        for clock in &mut self.partitions {
            if clock.ended {
                continue;
            }
            open += 1;
            let fresh = std::mem::take(&mut clock.fresh);
            let last_active = match clock.last_active {
                Some(at) if !fresh => at,
                _ => *clock.last_active.insert(now),
            };
            let idle = !fresh
                && self
                    .idle_timeout_ms
                    .is_some_and(|timeout| now.0.saturating_sub(last_active.0) >= timeout);
            if !idle {
                let watermark = partition_watermark(clock.max_timestamp, self.out_of_orderness_ms);
                minimum = Some(minimum.map_or(watermark, |m| m.min(watermark)));
            }
        }
        let all_ended = open == 0 && !self.partitions.is_empty();
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

    /// Polls at the output's processing time and hands the result to the output: the
    /// watermark, if it advanced, and idleness.
    pub fn emit_to<T>(&mut self, out: &mut SourceOutput<T>) {
        let update = self.poll(out.processing_time());
        if let Some(watermark) = update.watermark {
            out.emit_watermark(watermark);
        }
        if update.status == WatermarkStatus::Idle {
            out.mark_idle();
        }
    }
}

/// One partition's watermark: its largest timestamp, less the out-of-orderness, less 1 ms.
fn partition_watermark(max_timestamp: Timestamp, out_of_orderness_ms: i64) -> Timestamp {
    if max_timestamp == Timestamp::MIN {
        return Timestamp::MIN;
    }
    Timestamp(
        max_timestamp
            .0
            .saturating_sub(out_of_orderness_ms)
            .saturating_sub(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVE: WatermarkStatus = WatermarkStatus::Active;
    const IDLE: WatermarkStatus = WatermarkStatus::Idle;

    fn update(watermark: Option<i64>, status: WatermarkStatus) -> WatermarkUpdate {
        WatermarkUpdate {
            watermark: watermark.map(Timestamp),
            status,
        }
    }

    fn bounded(ms: u64) -> WatermarkStrategy {
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(ms))
    }

    #[test]
    fn the_watermark_trails_the_largest_timestamp_by_the_out_of_orderness_and_a_millisecond() {
        let mut watermarks = PartitionWatermarks::new(bounded(100), 1);
        assert_eq!(
            watermarks.poll(Timestamp(0)),
            update(None, ACTIVE),
            "no record yet: no watermark, but not idle either"
        );
        watermarks.on_record(0, Timestamp(1_000));
        watermarks.on_record(0, Timestamp(900));
        assert_eq!(watermarks.poll(Timestamp(1)), update(Some(899), ACTIVE));
        watermarks.on_record(0, Timestamp(950));
        assert_eq!(
            watermarks.poll(Timestamp(2)),
            update(None, ACTIVE),
            "an older record moves nothing"
        );
    }

    #[test]
    fn monotonous_timestamps_trail_by_one_millisecond() {
        let mut watermarks = PartitionWatermarks::new(WatermarkStrategy::monotonous(), 1);
        watermarks.on_record(0, Timestamp(10));
        watermarks.on_record(0, Timestamp(20));
        assert_eq!(watermarks.poll(Timestamp(0)), update(Some(19), ACTIVE));
    }

    #[test]
    fn one_slow_partition_holds_the_watermark_back() {
        let mut watermarks = PartitionWatermarks::new(WatermarkStrategy::monotonous(), 2);
        watermarks.on_record(0, Timestamp(5_000));
        assert_eq!(
            watermarks.poll(Timestamp(0)),
            update(None, ACTIVE),
            "partition 1 has said nothing: without idleness it holds everything back"
        );
        watermarks.on_record(1, Timestamp(100));
        assert_eq!(
            watermarks.poll(Timestamp(1_000_000)),
            update(Some(99), ACTIVE)
        );
        watermarks.on_record(0, Timestamp(9_000));
        watermarks.on_record(1, Timestamp(200));
        assert_eq!(
            watermarks.poll(Timestamp(1_000_001)),
            update(Some(199), ACTIVE)
        );
    }

    #[test]
    fn an_idle_partition_lets_the_watermark_advance_until_its_next_record() {
        let strategy = bounded(0).with_idleness(Duration::from_millis(50));
        let mut watermarks = PartitionWatermarks::new(strategy, 2);
        watermarks.on_record(0, Timestamp(1_000));
        watermarks.on_record(1, Timestamp(100));
        assert_eq!(watermarks.poll(Timestamp(0)), update(Some(99), ACTIVE));
        watermarks.on_record(0, Timestamp(2_000));
        assert_eq!(
            watermarks.poll(Timestamp(49)),
            update(None, ACTIVE),
            "partition 1 is quiet, but not for long enough"
        );
        watermarks.on_record(0, Timestamp(3_000));
        assert_eq!(
            watermarks.poll(Timestamp(50)),
            update(Some(2_999), ACTIVE),
            "partition 1 is idle: partition 0 alone decides"
        );
        watermarks.on_record(1, Timestamp(150));
        watermarks.on_record(0, Timestamp(4_000));
        assert_eq!(
            watermarks.poll(Timestamp(60)),
            update(None, ACTIVE),
            "partition 1 is active again: it holds the watermark where it is"
        );
        watermarks.on_record(1, Timestamp(3_500));
        assert_eq!(
            watermarks.poll(Timestamp(70)),
            update(Some(3_499), ACTIVE),
            "and it advances as partition 1 catches up"
        );
    }

    #[test]
    fn a_partition_that_never_had_a_record_is_idle_after_the_timeout_from_the_first_poll() {
        let strategy = bounded(0).with_idleness(Duration::from_millis(50));
        let mut watermarks = PartitionWatermarks::new(strategy, 2);
        watermarks.on_record(0, Timestamp(1_000));
        assert_eq!(watermarks.poll(Timestamp(500)), update(None, ACTIVE));
        watermarks.on_record(0, Timestamp(1_001));
        assert_eq!(watermarks.poll(Timestamp(549)), update(None, ACTIVE));
        watermarks.on_record(0, Timestamp(1_002));
        assert_eq!(watermarks.poll(Timestamp(550)), update(Some(1_001), ACTIVE));
    }

    #[test]
    fn when_every_open_partition_is_idle_the_subtask_is_idle() {
        let strategy = bounded(0).with_idleness(Duration::from_millis(10));
        let mut watermarks = PartitionWatermarks::new(strategy, 2);
        watermarks.on_record(0, Timestamp(1_000));
        watermarks.on_record(1, Timestamp(2_000));
        assert_eq!(watermarks.poll(Timestamp(0)), update(Some(999), ACTIVE));
        watermarks.end_partition(0);
        assert_eq!(
            watermarks.poll(Timestamp(5)),
            update(Some(1_999), ACTIVE),
            "an ended partition no longer holds it back"
        );
        assert_eq!(watermarks.poll(Timestamp(10)), update(None, IDLE));
        watermarks.on_record(1, Timestamp(2_500));
        assert_eq!(watermarks.poll(Timestamp(11)), update(Some(2_499), ACTIVE));
    }

    #[test]
    fn ended_partitions_do_not_count_and_all_ended_means_no_more_records() {
        let mut watermarks = PartitionWatermarks::new(WatermarkStrategy::monotonous(), 3);
        watermarks.on_record(0, Timestamp(300));
        watermarks.on_record(1, Timestamp(100));
        watermarks.end_partition(2);
        assert_eq!(
            watermarks.poll(Timestamp(0)),
            update(Some(99), ACTIVE),
            "partition 2 ended without a record and holds nothing back"
        );
        watermarks.end_partition(1);
        assert_eq!(watermarks.poll(Timestamp(0)), update(Some(299), ACTIVE));
        watermarks.end_partition(0);
        assert_eq!(
            watermarks.poll(Timestamp(0)),
            update(Some(i64::MAX), ACTIVE)
        );
    }

    #[test]
    fn a_subtask_reading_no_partition_is_idle() {
        let mut watermarks = PartitionWatermarks::new(WatermarkStrategy::monotonous(), 0);
        assert_eq!(watermarks.poll(Timestamp(0)), update(None, IDLE));
    }

    #[test]
    fn extreme_settings_saturate_instead_of_overflowing() {
        let mut watermarks = PartitionWatermarks::new(bounded(u64::MAX), 1);
        watermarks.on_record(0, Timestamp(i64::MIN + 1));
        assert_eq!(watermarks.poll(Timestamp::MIN), update(None, ACTIVE));
        watermarks.on_record(0, Timestamp(5));
        assert_eq!(
            watermarks.poll(Timestamp::MAX),
            update(Some(i64::MIN + 5), ACTIVE),
            "5 ms less i64::MAX ms less 1 ms"
        );
        let strategy = WatermarkStrategy::monotonous().with_idleness(Duration::MAX);
        let mut watermarks = PartitionWatermarks::new(strategy, 1);
        assert_eq!(watermarks.poll(Timestamp(0)), update(None, ACTIVE));
        assert_eq!(
            watermarks.poll(Timestamp(i64::MAX - 1)),
            update(None, ACTIVE)
        );
        assert_eq!(
            watermarks.poll(Timestamp::MAX),
            update(None, IDLE),
            "i64::MAX ms have passed: the longest timeout there is"
        );
    }
}

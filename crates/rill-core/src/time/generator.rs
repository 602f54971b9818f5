//! Timestamp assigners, watermark generators and the strategy that makes one generator per
//! partition.
//!
//! A strategy holds a *supplier* of generators rather than a generator to clone: a generator
//! keeps mutable per-partition state (the largest timestamp seen, say), and every partition of
//! every subtask must start from a fresh one. A supplier gives that without asking generators
//! to be `Clone` — which would keep [`WatermarkGenerator`] from being a trait object — and it
//! is what Flink's strategies hold too. The built-in bounded out-of-orderness generator is
//! supplied as itself rather than boxed: a partition calls its generator at every record, and
//! the built-in one is then called directly, with no dynamic dispatch; only a user's own
//! generator costs a virtual call per record.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::element::Timestamp;

/// How often sources emit the watermarks of periodic generators, in milliseconds of processing
/// time, unless the job sets another interval (Flink's default too).
pub const DEFAULT_WATERMARK_INTERVAL_MS: u64 = 200;

/// Reads a record's event time from its value: what a source stamps the record with, and
/// hands to the watermark generator. Any `Fn(&T) -> Timestamp` is one.
pub trait TimestampAssigner<T>: Send + 'static {
    /// The event time of `value`, in milliseconds since the Unix epoch; `record_timestamp` is
    /// the time the source gave the record, if any.
    fn extract_timestamp(&self, value: &T, record_timestamp: Option<Timestamp>) -> Timestamp;
}

impl<T, F> TimestampAssigner<T> for F
where
    F: Fn(&T) -> Timestamp + Send + 'static,
{
    #[inline]
    fn extract_timestamp(&self, value: &T, _record_timestamp: Option<Timestamp>) -> Timestamp {
        self(value)
    }
}

/// Where a generator emits its watermarks.
#[derive(Debug, Default)]
pub struct WatermarkOutput {
    emitted: Option<Timestamp>,
}

impl WatermarkOutput {
    /// Emits a watermark: no record at or before `watermark` is still to come from this
    /// partition. A watermark at or below one emitted before changes nothing.
    #[inline]
    pub fn emit_watermark(&mut self, watermark: Timestamp) {
        self.emitted = Some(self.emitted.map_or(watermark, |w| w.max(watermark)));
    }

    /// The largest watermark emitted, taken out.
    #[inline]
    pub(crate) fn take(&mut self) -> Option<Timestamp> {
        self.emitted.take()
    }
}

/// Generates the watermarks of one partition from the timestamps of its records.
///
/// [`WatermarkGenerator::on_event`] runs at every record with an event time: keep it cheap. A
/// *periodic* generator only takes note there, and emits from
/// [`WatermarkGenerator::on_periodic_emit`], which the source calls once every watermark
/// interval of processing time; a *punctuated* one emits from `on_event`, and its watermark
/// follows that record downstream.
pub trait WatermarkGenerator: Send {
    /// A record with event time `timestamp` was read.
    fn on_event(&mut self, timestamp: Timestamp, output: &mut WatermarkOutput);

    /// The watermark interval has passed: emit the watermark, if this generator is periodic.
    fn on_periodic_emit(&mut self, output: &mut WatermarkOutput);
}

/// Records come at most a bound behind the largest timestamp seen: the periodic watermark is
/// that timestamp, less the bound, less 1 ms (Flink's rule, so that a record at exactly the
/// largest timestamp seen is not late). With a bound of 0, the generator for timestamps that
/// never decrease ([`BoundedOutOfOrderness::monotonous`]).
#[derive(Clone, Copy, Debug)]
pub struct BoundedOutOfOrderness {
    out_of_orderness_ms: i64,
    /// `Timestamp::MIN` before the first record.
    max_timestamp: Timestamp,
}

impl BoundedOutOfOrderness {
    /// Records may come up to `max_out_of_orderness` (at millisecond resolution) behind the
    /// largest timestamp seen.
    pub fn new(max_out_of_orderness: Duration) -> Self {
        BoundedOutOfOrderness {
            out_of_orderness_ms: i64::try_from(max_out_of_orderness.as_millis())
                .unwrap_or(i64::MAX),
            max_timestamp: Timestamp::MIN,
        }
    }

    /// Timestamps never decrease: the watermark is the largest seen, less 1 ms.
    pub fn monotonous() -> Self {
        Self::new(Duration::ZERO)
    }
}

impl WatermarkGenerator for BoundedOutOfOrderness {
    #[inline]
    fn on_event(&mut self, timestamp: Timestamp, _output: &mut WatermarkOutput) {
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    fn on_periodic_emit(&mut self, output: &mut WatermarkOutput) {
        if self.max_timestamp > Timestamp::MIN {
            output.emit_watermark(Timestamp(
                self.max_timestamp
                    .0
                    .saturating_sub(self.out_of_orderness_ms)
                    .saturating_sub(1),
            ));
        }
    }
}

/// A punctuated generator: at every record, `watermark_of(timestamp)` says whether that record
/// carries a watermark, and which; nothing is emitted periodically.
///
/// For example, a stream whose records at whole seconds close the second before them:
/// `Punctuated::new(|t: Timestamp| (t.0 % 1_000 == 0).then(|| Timestamp(t.0 - 1)))`.
#[derive(Clone, Debug)]
pub struct Punctuated<F> {
    watermark_of: F,
}

impl<F> Punctuated<F>
where
    F: FnMut(Timestamp) -> Option<Timestamp> + Send,
{
    /// A generator that emits `watermark_of(timestamp)` at each record where it is `Some`.
    pub fn new(watermark_of: F) -> Self {
        Punctuated { watermark_of }
    }
}

impl<F> WatermarkGenerator for Punctuated<F>
where
    F: FnMut(Timestamp) -> Option<Timestamp> + Send,
{
    #[inline]
    fn on_event(&mut self, timestamp: Timestamp, output: &mut WatermarkOutput) {
        if let Some(watermark) = (self.watermark_of)(timestamp) {
            output.emit_watermark(watermark);
        }
    }

    fn on_periodic_emit(&mut self, _output: &mut WatermarkOutput) {}
}

type Supplier = Arc<dyn Fn() -> Box<dyn WatermarkGenerator> + Send + Sync>;

/// Which generator each partition gets.
#[derive(Clone)]
enum GeneratorSupply {
    BoundedOutOfOrderness(Duration),
    Custom(Supplier),
}

/// How a source derives watermarks from the event timestamps of its records: the generator
/// each partition runs, and whether quiet partitions go idle.
///
/// The timestamps themselves come from the source, or from a [`TimestampAssigner`] given
/// beside the strategy (`StreamEnv::from_iter_with_timestamps`,
/// [`crate::source::WithWatermarks::with_timestamps`]).
#[derive(Clone)]
pub struct WatermarkStrategy {
    generator: GeneratorSupply,
    idle_timeout: Option<Duration>,
}

impl WatermarkStrategy {
    /// Records may arrive up to `max_out_of_orderness` behind the largest timestamp seen (at
    /// millisecond resolution): periodically, the watermark is that timestamp minus
    /// `max_out_of_orderness` minus 1 ms ([`BoundedOutOfOrderness`]).
    pub fn bounded_out_of_orderness(max_out_of_orderness: Duration) -> Self {
        WatermarkStrategy {
            generator: GeneratorSupply::BoundedOutOfOrderness(max_out_of_orderness),
            idle_timeout: None,
        }
    }

    /// Timestamps never decrease (within a partition): periodically, the watermark is the
    /// largest timestamp seen minus 1 ms.
    pub fn monotonous() -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO)
    }

    /// Each partition runs a generator made by `supplier`: a periodic one, a punctuated one,
    /// or both at once.
    pub fn for_generator<G, F>(supplier: F) -> Self
    where
        G: WatermarkGenerator + 'static,
        F: Fn() -> G + Send + Sync + 'static,
    {
        WatermarkStrategy {
            generator: GeneratorSupply::Custom(Arc::new(move || Box::new(supplier()))),
            idle_timeout: None,
        }
    }

    /// Punctuated watermarks: `watermark_of(timestamp)` at each record where it is `Some`
    /// (see [`Punctuated`]); each partition runs its own copy of the function.
    pub fn punctuated<F>(watermark_of: F) -> Self
    where
        F: FnMut(Timestamp) -> Option<Timestamp> + Clone + Send + Sync + 'static,
    {
        Self::for_generator(move || Punctuated::new(watermark_of.clone()))
    }

    /// A partition with no record for `timeout` of processing time (at millisecond
    /// resolution) is idle: it does not hold the watermark back until its next record.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The idle timeout, if partitions go idle.
    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// A fresh generator for one partition.
    pub(crate) fn create_generator(&self) -> PartitionGenerator {
        match &self.generator {
            GeneratorSupply::BoundedOutOfOrderness(bound) => {
                PartitionGenerator::BoundedOutOfOrderness(BoundedOutOfOrderness::new(*bound))
            }
            GeneratorSupply::Custom(supplier) => PartitionGenerator::Custom(supplier()),
        }
    }
}

impl fmt::Debug for WatermarkStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("WatermarkStrategy");
        match &self.generator {
            GeneratorSupply::BoundedOutOfOrderness(bound) => {
                debug.field("bounded_out_of_orderness", bound)
            }
            GeneratorSupply::Custom(_) => debug.field("generator", &"custom"),
        };
        debug.field("idle_timeout", &self.idle_timeout).finish()
    }
}

/// One partition's generator: the built-in one called directly, a user's through a box.
pub(crate) enum PartitionGenerator {
    BoundedOutOfOrderness(BoundedOutOfOrderness),
    Custom(Box<dyn WatermarkGenerator>),
}

impl PartitionGenerator {
    #[inline]
    pub(crate) fn on_event(&mut self, timestamp: Timestamp, output: &mut WatermarkOutput) {
        match self {
            PartitionGenerator::BoundedOutOfOrderness(generator) => {
                generator.on_event(timestamp, output);
            }
            PartitionGenerator::Custom(generator) => generator.on_event(timestamp, output),
        }
    }

    pub(crate) fn on_periodic_emit(&mut self, output: &mut WatermarkOutput) {
        match self {
            PartitionGenerator::BoundedOutOfOrderness(generator) => {
                generator.on_periodic_emit(output);
            }
            PartitionGenerator::Custom(generator) => generator.on_periodic_emit(output),
        }
    }
}

impl fmt::Debug for PartitionGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionGenerator::BoundedOutOfOrderness(generator) => generator.fmt(f),
            PartitionGenerator::Custom(_) => f.write_str("custom generator"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(generator: &mut dyn WatermarkGenerator, timestamps: &[i64]) -> Vec<Option<i64>> {
        let mut output = WatermarkOutput::default();
        let mut seen: Vec<_> = timestamps
            .iter()
            .map(|&t| {
                generator.on_event(Timestamp(t), &mut output);
                output.take().map(|w| w.0)
            })
            .collect();
        generator.on_periodic_emit(&mut output);
        seen.push(output.take().map(|w| w.0));
        seen
    }

    #[test]
    fn bounded_out_of_orderness_emits_only_periodically_the_largest_less_the_bound_and_a_ms() {
        let mut generator = BoundedOutOfOrderness::new(Duration::from_millis(100));
        assert_eq!(
            emitted(&mut generator, &[]),
            [None],
            "no record yet: nothing"
        );
        assert_eq!(
            emitted(&mut generator, &[1_000, 900]),
            [None, None, Some(899)]
        );
        assert_eq!(
            emitted(&mut BoundedOutOfOrderness::monotonous(), &[10, 20]),
            [None, None, Some(19)]
        );
    }

    #[test]
    fn a_bound_too_large_for_milliseconds_saturates() {
        let mut generator = BoundedOutOfOrderness::new(Duration::MAX);
        assert_eq!(emitted(&mut generator, &[5]), [None, Some(i64::MIN + 5)]);
    }

    #[test]
    fn a_punctuated_generator_emits_at_the_records_it_picks_and_never_periodically() {
        let mut generator =
            Punctuated::new(|t: Timestamp| (t.0 % 1_000 == 0).then(|| Timestamp(t.0 - 1)));
        assert_eq!(
            emitted(&mut generator, &[999, 1_000, 1_500, 2_000]),
            [None, Some(999), None, Some(1_999), None]
        );
    }

    #[test]
    fn a_strategy_gives_every_partition_a_fresh_generator() {
        let strategy = WatermarkStrategy::punctuated({
            let mut largest = Timestamp::MIN;
            move |t: Timestamp| {
                let advanced = t > largest;
                largest = largest.max(t);
                advanced.then_some(t)
            }
        });
        let mut output = WatermarkOutput::default();
        let mut first = strategy.create_generator();
        first.on_event(Timestamp(50), &mut output);
        assert_eq!(output.take(), Some(Timestamp(50)));
        let mut second = strategy.create_generator();
        second.on_event(Timestamp(10), &mut output);
        assert_eq!(
            output.take(),
            Some(Timestamp(10)),
            "the second partition's function starts from the strategy's copy, not the first's"
        );
    }
}

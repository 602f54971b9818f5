//! Proptest strategies for operator inputs: keyed event streams in event time, and the points
//! where a checkpoint is cut.
//!
//! [`keyed_events`] draws a stream of records and watermarks that keep the watermark contract:
//! record `i` happens at `i * step_ms`, arrives up to `max_disorder_ms` late, and every
//! watermark trails the latest time seen by that much and 1 ms more, so no on-time record is
//! ever behind one; a share of records (`late_percent`) is drawn late on purpose, behind the
//! last watermark. Keys can be skewed toward the low ones. Processing time, if asked for
//! (`processing_time_percent`), starts at 0 and moves forward after a share of records. Shrinking
//! removes records and keeps the rest consistent: watermarks are derived from the records that
//! remain.

use proptest::prelude::*;
use proptest::sample::Index;
use rill_core::element::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Input;

/// A record of a keyed event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyedEvent {
    /// Its key, in `0..keys`.
    pub key: u32,
    /// Its value.
    pub value: u32,
}

/// The shape of a keyed event stream.
#[derive(Clone, Copy, Debug)]
pub struct EventStream {
    /// How many distinct keys.
    pub keys: u32,
    /// 0 spreads records evenly over the keys; higher values send more to the low keys.
    pub skew: u32,
    /// How far behind the latest record a record may arrive (its watermark's distance).
    pub max_disorder_ms: i64,
    /// The share of records, in percent, that arrive behind the watermark.
    pub late_percent: u32,
    /// The share of records, in percent, after which a watermark follows.
    pub watermark_percent: u32,
    /// The most records.
    pub max_len: usize,
    /// Event time between consecutive records.
    pub step_ms: i64,
    /// The share of records, in percent, after which processing time moves forward (by 1 to
    /// `processing_step_ms`): what processing-time timers fire on. 0 draws no processing time.
    pub processing_time_percent: u32,
    /// The most processing time moves forward at once.
    pub processing_step_ms: i64,
}

impl Default for EventStream {
    fn default() -> Self {
        EventStream {
            keys: 5,
            skew: 0,
            max_disorder_ms: 20,
            late_percent: 0,
            watermark_percent: 25,
            max_len: 60,
            step_ms: 3,
            processing_time_percent: 0,
            processing_step_ms: 10,
        }
    }
}

/// One drawn record before times are assigned: key draw, value, delay, late, watermark after,
/// processing time after, and by how much.
type Draw = (u32, u32, i64, u32, u32, u32, i64);

fn assemble(config: EventStream, draws: Vec<Draw>) -> Vec<Input<KeyedEvent>> {
    let mut inputs = Vec::new();
    let mut latest = i64::MIN;
    let mut watermark = i64::MIN;
    let mut now = 0;
    for (position, draw) in draws.into_iter().enumerate() {
        let (key_draw, value, delay, late, watermark_draw, clock_draw, clock_step) = draw;
        // A skewed key: the smallest of `skew + 1` uniform draws leans toward key 0.
        let mut key = key_draw % config.keys.max(1);
        for shift in 1..=config.skew {
            key = key.min(key_draw.rotate_left(shift * 7) % config.keys.max(1));
        }
        let time = position as i64 * config.step_ms;
        let timestamp = if late < config.late_percent && watermark > i64::MIN {
            watermark - delay
        } else {
            time - delay
        };
        latest = latest.max(time - delay);
        inputs.push(Input::Record(
            KeyedEvent { key, value },
            Timestamp(timestamp),
        ));
        let next = latest - config.max_disorder_ms - 1;
        if watermark_draw < config.watermark_percent && next > watermark {
            watermark = next;
            inputs.push(Input::Watermark(Timestamp(watermark)));
        }
        if clock_draw < config.processing_time_percent {
            now += clock_step;
            inputs.push(Input::ProcessingTime(Timestamp(now)));
        }
    }
    inputs
}

/// Keyed event streams of the given shape.
pub fn keyed_events(config: EventStream) -> impl Strategy<Value = Vec<Input<KeyedEvent>>> {
    let draw = (
        any::<u32>(),
        0u32..1_000,
        0..=config.max_disorder_ms.max(0),
        0u32..100,
        0u32..100,
        0u32..100,
        1..=config.processing_step_ms.max(1),
    );
    proptest::collection::vec(draw, 0..=config.max_len)
        .prop_map(move |draws| assemble(config, draws))
}

/// Where a checkpoint is cut: an index into the input, `0..=len` once resolved with
/// [`cut_at`].
pub fn cut_points() -> impl Strategy<Value = Index> {
    any::<Index>()
}

/// The step before which the cut falls, for an input of `len` steps (`len`: after the last).
pub fn cut_at(cut: &Index, len: usize) -> usize {
    cut.index(len + 1)
}

/// Where a run is stopped, one to `max_cuts` times: each cut resolved with [`cuts_at`].
pub fn several_cut_points(max_cuts: usize) -> impl Strategy<Value = Vec<Index>> {
    proptest::collection::vec(any::<Index>(), 1..=max_cuts.max(1))
}

/// The steps before which the cuts fall, in input order, for an input of `len` steps.
pub fn cuts_at(cuts: &[Index], len: usize) -> Vec<usize> {
    let mut steps: Vec<usize> = cuts.iter().map(|cut| cut_at(cut, len)).collect();
    steps.sort_unstable();
    steps
}

/// Where a keyed operator's run is stopped and restored, and how many instances run it
/// before and after each restore: a job stopped with a savepoint and started again at another
/// parallelism, possibly several times. Drawn by [`rescales`], resolved with
/// [`Rescales::resolve`].
#[derive(Clone, Debug)]
pub struct Rescales {
    /// How many instances run the input's first steps.
    pub initial: u32,
    /// Each restore: where it cuts the input, and how many instances run on from there.
    pub restores: Vec<(Index, u32)>,
}

impl Rescales {
    /// The restores for an input of `len` steps: the step each cuts before, in input order,
    /// with the parallelism from there on.
    pub fn resolve(&self, len: usize) -> Vec<(usize, u32)> {
        let mut restores: Vec<(usize, u32)> = self
            .restores
            .iter()
            .map(|(cut, parallelism)| (cut_at(cut, len), *parallelism))
            .collect();
        // Stable: two restores at one step keep their drawn order.
        restores.sort_by_key(|(step, _)| *step);
        restores
    }
}

/// One to `max_restores` restores, every parallelism (the initial one too) in
/// `1..=max_parallelism`: instances split and merge their key groups.
pub fn rescales(max_restores: usize, max_parallelism: u32) -> impl Strategy<Value = Rescales> {
    let parallelism = 1..=max_parallelism.max(1);
    (
        parallelism.clone(),
        proptest::collection::vec((any::<Index>(), parallelism), 1..=max_restores.max(1)),
    )
        .prop_map(|(initial, restores)| Rescales { initial, restores })
}

#[cfg(test)]
mod tests {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;

    #[test]
    fn watermarks_never_go_back_and_on_time_records_are_never_behind_one() {
        let config = EventStream {
            late_percent: 20,
            ..EventStream::default()
        };
        let mut runner = TestRunner::deterministic();
        let mut late = 0;
        for _ in 0..200 {
            let inputs = keyed_events(config)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let mut watermark = i64::MIN;
            for input in &inputs {
                match *input {
                    Input::Watermark(Timestamp(time)) => {
                        assert!(time > watermark, "{inputs:?}");
                        watermark = time;
                    }
                    Input::Record(event, Timestamp(time)) => {
                        assert!(event.key < config.keys);
                        if time <= watermark {
                            late += 1;
                        }
                    }
                    Input::ProcessingTime(_) => unreachable!("not drawn"),
                }
            }
        }
        assert!(late > 0, "some records were drawn late");
        let on_time = EventStream::default();
        for _ in 0..200 {
            let inputs = keyed_events(on_time)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let mut watermark = i64::MIN;
            for input in &inputs {
                match *input {
                    Input::Watermark(Timestamp(time)) => watermark = time,
                    Input::Record(_, Timestamp(time)) => {
                        assert!(time > watermark, "no late record drawn: {inputs:?}")
                    }
                    Input::ProcessingTime(_) => {}
                }
            }
        }
    }

    #[test]
    fn skew_leans_toward_the_low_keys() {
        let mut runner = TestRunner::deterministic();
        let mut count_zero = |skew| {
            let config = EventStream {
                skew,
                keys: 10,
                max_len: 400,
                ..EventStream::default()
            };
            (0..20)
                .flat_map(|_| {
                    keyed_events(config)
                        .new_tree(&mut runner)
                        .unwrap()
                        .current()
                })
                .filter(|input| matches!(input, Input::Record(KeyedEvent { key: 0, .. }, _)))
                .count()
        };
        let (even, skewed) = (count_zero(0), count_zero(3));
        assert!(
            skewed > 2 * even,
            "key 0: {even} records evenly, {skewed} skewed"
        );
    }

    /// The processing times of an input, in order.
    fn clock(inputs: &[Input<KeyedEvent>]) -> Vec<i64> {
        inputs
            .iter()
            .filter_map(|input| match input {
                Input::ProcessingTime(Timestamp(now)) => Some(*now),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn processing_time_moves_forward_only_when_asked_for() {
        let mut runner = TestRunner::deterministic();
        let config = EventStream {
            processing_time_percent: 30,
            processing_step_ms: 5,
            ..EventStream::default()
        };
        let mut steps = 0;
        for _ in 0..100 {
            let times = clock(
                &keyed_events(config)
                    .new_tree(&mut runner)
                    .unwrap()
                    .current(),
            );
            for pair in times.windows(2) {
                assert!((1..=5).contains(&(pair[1] - pair[0])), "{times:?}");
            }
            steps += times.len();
            let without = keyed_events(EventStream::default());
            assert!(clock(&without.new_tree(&mut runner).unwrap().current()).is_empty());
        }
        assert!(steps > 0, "processing time was drawn");
    }

    #[test]
    fn rescales_resolve_in_input_order_within_the_input() {
        let mut runner = TestRunner::deterministic();
        for _ in 0..100 {
            let plan = rescales(3, 4).new_tree(&mut runner).unwrap().current();
            assert!((1..=4).contains(&plan.initial));
            let restores = plan.resolve(10);
            assert!((1..=3).contains(&restores.len()));
            assert!(restores.windows(2).all(|pair| pair[0].0 <= pair[1].0));
            assert!(
                restores
                    .iter()
                    .all(|&(cut, p)| cut <= 10 && (1..=4).contains(&p))
            );
            let cuts = several_cut_points(3)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let steps = cuts_at(&cuts, 10);
            assert!(
                steps.windows(2).all(|pair| pair[0] <= pair[1]) && steps.iter().all(|&s| s <= 10)
            );
        }
    }
}

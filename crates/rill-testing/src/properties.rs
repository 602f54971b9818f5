//! Ready-made properties of operators, each a one-line check over generated inputs.
//!
//! - **Checkpoint transparency**: an operator stopped after any steps of its input — once or
//!   several times — and restored each time from its snapshot into a fresh instance, emits
//!   exactly what the same operator emits never stopping: the same outputs, in the same order,
//!   at the same steps.
//! - **Rescale invariance**: a keyed operator whose key groups are split over several
//!   instances, and restored from snapshots into more or fewer instances (a job stopped with a
//!   savepoint and started at another parallelism, possibly several times), emits what one
//!   instance never stopping emits: at each record, the same outputs in the same order; at a
//!   watermark, a processing-time step or the end of input, the same outputs as a multiset
//!   (each instance fires its own timers; different keys' outputs interleave).
//! - **Key-order independence**: for operators that claim it, reordering the records of
//!   different keys between two time steps (keeping each key's own order) changes no output:
//!   the records between two time steps emit the same multiset, and every time step the same.
//!
//! `check_*` run one input and return proptest's `TestCaseError`, for your own `proptest!`
//! blocks; `assert_*` run proptest over a strategy and panic with the first output that
//! differs (its index, and the step that emitted it) and the shrunk input, for use in tests.
//! Outputs are compared by their `Debug` rendering with their timestamps (a side-output value
//! renders as its tag and type, unless [`crate::side_outputs::ShowSideOutputs`] shows it).

use std::fmt::Debug;

use proptest::sample::Index;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use rill_core::key::{Key, KeyGroupRange, key_group_of};
use rill_core::operator::OneInputOperator;

use crate::Input;
use crate::harness::{HarnessError, KeyedInstances, OperatorHarness};
use crate::strategies::{Rescales, cut_points, cuts_at, rescales, several_cut_points};

mod minimize;
mod outputs;

use minimize::{Failure, NoStops, RescaleStops, Stops, minimize};
use outputs::{Emissions, Order, by_segment, by_step, compare};

/// The number of key groups the properties run operators with.
pub const MAX_PARALLELISM: u32 = 128;

/// A run that could not be completed: the operator failed (its error says so), or the harness
/// refused what it was asked.
fn failed(error: HarnessError) -> TestCaseError {
    TestCaseError::fail(error.to_string())
}

/// Plays `inputs` into a harness, without ending its input.
pub fn play<O: OneInputOperator>(
    harness: &mut OperatorHarness<O>,
    inputs: &[Input<O::In>],
) -> Result<(), HarnessError> {
    for input in inputs {
        match input {
            Input::Record(value, timestamp) => harness.push_at(value.clone(), *timestamp)?,
            Input::Watermark(watermark) => harness.advance_watermark(*watermark)?,
            Input::ProcessingTime(now) => harness.advance_processing_time(*now)?,
        }
    }
    Ok(())
}

/// The outputs, step by step, of a fresh operator from `make` over `inputs` to the end of
/// input, stopped before each step in `cuts` (in order) and restored from its snapshot into a
/// fresh operator from `make`. As in a job, the snapshot is encoded while the operator runs on
/// — here up to the next cut, where it fails and what it emitted meanwhile is lost — and a
/// restored operator is told the processing time first, as the runtime tells a subtask before
/// it runs.
fn run_restored<O>(
    make: &impl Fn() -> O,
    inputs: &[Input<O::In>],
    cuts: &[usize],
) -> Result<Emissions, HarnessError>
where
    O: OneInputOperator,
    O::Out: Debug,
{
    let mut harness = OperatorHarness::new(make());
    let mut emissions = Emissions::default();
    let mut cuts = cuts.iter().peekable();
    let mut clock = None;
    for position in 0..=inputs.len() {
        while cuts.next_if(|&&cut| cut == position).is_some() {
            let pending = harness.begin_snapshot()?;
            let failure = cuts.peek().map_or(inputs.len(), |&&next| next);
            play(&mut harness, &inputs[position..failure])?;
            let snapshot = pending.complete()?;
            harness = OperatorHarness::restored(make(), &snapshot)?;
            if let Some(now) = clock {
                harness.advance_processing_time(now)?;
            }
        }
        let Some(input) = inputs.get(position) else {
            break;
        };
        if let Input::ProcessingTime(now) = input {
            clock = Some(*now);
        }
        play(&mut harness, std::slice::from_ref(input))?;
        emissions.push(harness.take_output());
    }
    harness.end_input()?;
    emissions.push(harness.take_output());
    Ok(emissions)
}

/// The outputs, step by step, of `initial` fresh instances of a keyed operator over
/// `inputs` to the end of input, stopped before each step of `restores` (in order) and restored
/// from their snapshots into the parallelism given with it.
fn run_rescaled<O, K>(
    make: &impl Fn(KeyGroupRange) -> O,
    key_of: &(impl Fn(&O::In) -> K + Clone + 'static),
    inputs: &[Input<O::In>],
    initial: u32,
    restores: &[(usize, u32)],
) -> Result<Emissions, HarnessError>
where
    O: OneInputOperator,
    O::Out: Debug,
    K: Key,
{
    let mut instances = KeyedInstances::new(initial, MAX_PARALLELISM, make, key_of.clone())?;
    let mut emissions = Emissions::default();
    let mut restores = restores.iter().peekable();
    let mut clock = None;
    for position in 0..=inputs.len() {
        while let Some((_, parallelism)) = restores.next_if(|(cut, _)| *cut == position) {
            let snapshots = instances.snapshot()?;
            instances = KeyedInstances::restored(
                &snapshots,
                *parallelism,
                MAX_PARALLELISM,
                make,
                key_of.clone(),
            )?;
            if let Some(now) = clock {
                instances.advance_processing_time(now)?;
            }
        }
        let Some(input) = inputs.get(position) else {
            break;
        };
        match input {
            Input::Record(value, timestamp) => instances.push_at(value.clone(), *timestamp)?,
            Input::Watermark(watermark) => instances.advance_watermark(*watermark)?,
            Input::ProcessingTime(now) => {
                clock = Some(*now);
                instances.advance_processing_time(*now)?;
            }
        }
        emissions.push(instances.take_output());
    }
    instances.end_input()?;
    emissions.push(instances.take_output());
    Ok(emissions)
}

/// Checkpoint transparency for one input, cut before step `cut` (after `cut` steps).
pub fn check_checkpoint_transparency<O>(
    make: impl Fn() -> O,
    inputs: &[Input<O::In>],
    cut: usize,
) -> Result<(), TestCaseError>
where
    O: OneInputOperator,
    O::Out: Debug,
{
    check_checkpoint_transparency_at(make, inputs, &[cut])
}

/// Checkpoint transparency for one input, cut before each step in `cuts`: at each, the
/// operator is snapshotted and a fresh instance restored from the snapshot runs on (so a
/// restored operator is snapshotted and restored again).
pub fn check_checkpoint_transparency_at<O>(
    make: impl Fn() -> O,
    inputs: &[Input<O::In>],
    cuts: &[usize],
) -> Result<(), TestCaseError>
where
    O: OneInputOperator,
    O::Out: Debug,
{
    let mut cuts = cuts.to_vec();
    cuts.sort_unstable();
    cuts.iter_mut()
        .for_each(|cut| *cut = (*cut).min(inputs.len()));
    let in_order = |_: Option<&Input<O::In>>| Order::Specified;
    let expected = run_restored(&make, inputs, &[]).map_err(failed)?;
    let restored = run_restored(&make, inputs, &cuts).map_err(failed)?;
    compare(
        &format!("restored from snapshots taken before steps {cuts:?}"),
        &by_step(expected, inputs, in_order),
        &by_step(restored, inputs, in_order),
    )
}

/// Rescale invariance for one input: one instance runs to step `cut`, then its snapshot is
/// split over `parallelism` instances that run the rest.
pub fn check_rescale_invariance<O, K>(
    make: impl Fn(KeyGroupRange) -> O,
    key_of: impl Fn(&O::In) -> K + Clone + 'static,
    inputs: &[Input<O::In>],
    cut: usize,
    parallelism: u32,
) -> Result<(), TestCaseError>
where
    O: OneInputOperator,
    O::Out: Debug,
    K: Key,
{
    check_rescales(make, key_of, inputs, 1, &[(cut, parallelism)])
}

/// Rescale invariance for one input: `initial` instances run it, and before each step of
/// `restores` (in order) their snapshots are assigned to the parallelism given with it, as a
/// job restored at that parallelism assigns them. The outputs are compared with those of one
/// instance that never stops.
pub fn check_rescales<O, K>(
    make: impl Fn(KeyGroupRange) -> O,
    key_of: impl Fn(&O::In) -> K + Clone + 'static,
    inputs: &[Input<O::In>],
    initial: u32,
    restores: &[(usize, u32)],
) -> Result<(), TestCaseError>
where
    O: OneInputOperator,
    O::Out: Debug,
    K: Key,
{
    let mut restores = restores.to_vec();
    restores.sort_by_key(|(cut, _)| *cut);
    restores
        .iter_mut()
        .for_each(|(cut, _)| *cut = (*cut).min(inputs.len()));
    let everything = KeyGroupRange::for_subtask(0, 1, MAX_PARALLELISM);
    let expected = run_restored(&|| make(everything), inputs, &[]).map_err(failed)?;
    let rescaled = run_rescaled(&make, &key_of, inputs, initial, &restores).map_err(failed)?;
    // A record reaches one instance: what it emits comes in order. Time steps reach every
    // instance, each firing its own keys' timers.
    let order = |input: Option<&Input<O::In>>| match input {
        Some(Input::Record(..)) => Order::Specified,
        _ => Order::Unspecified,
    };
    let instances = |count: u32| match count {
        1 => "1 instance".to_owned(),
        _ => format!("{count} instances"),
    };
    let plan: Vec<String> = restores
        .iter()
        .map(|&(cut, parallelism)| format!("from step {cut} by {}", instances(parallelism)))
        .collect();
    compare(
        &format!(
            "run by {}, then {} (one instance never stopping expected)",
            instances(initial),
            plan.join(", then ")
        ),
        &by_step(expected, inputs, order),
        &by_step(rescaled, inputs, order),
    )
}

/// Reorders the records of different keys between consecutive watermarks (or processing-time
/// steps), keeping each key's own order: records are grouped by a shuffled order of their
/// key groups, chosen by `shuffle`.
fn reorder_keys<T: Clone, K: Key>(
    inputs: &[Input<T>],
    key_of: impl Fn(&T) -> K,
    shuffle: &Index,
) -> Vec<Input<T>> {
    let rank = |value: &T| {
        let group = key_group_of(&key_of(value), MAX_PARALLELISM);
        (group as usize + shuffle.index(MAX_PARALLELISM as usize)) % MAX_PARALLELISM as usize
    };
    let is_record = |input: &Input<T>| matches!(input, Input::Record(..));
    let mut reordered = Vec::with_capacity(inputs.len());
    for segment in inputs.split_inclusive(|input| !is_record(input)) {
        let (records, marker) = match segment.split_last() {
            Some((last, records)) if !is_record(last) => (records, Some(last)),
            _ => (segment, None),
        };
        let mut records = records.to_vec();
        records.sort_by_key(|record| match record {
            Input::Record(value, _) => rank(value),
            _ => 0,
        });
        reordered.extend(records);
        reordered.extend(marker.cloned());
    }
    reordered
}

/// Key-order independence for one input and one reordering.
pub fn check_key_order_independence<O, K>(
    make: impl Fn() -> O,
    key_of: impl Fn(&O::In) -> K,
    inputs: &[Input<O::In>],
    shuffle: &Index,
) -> Result<(), TestCaseError>
where
    O: OneInputOperator,
    O::Out: Debug,
    K: Key,
{
    let expected = run_restored(&make, inputs, &[]).map_err(failed)?;
    let reordered = reorder_keys(inputs, key_of, shuffle);
    let emitted = run_restored(&make, &reordered, &[]).map_err(failed)?;
    // Reordering keeps every time step in place, so both inputs have the same segments.
    compare(
        "with the records of different keys reordered between time steps",
        &by_segment(expected, inputs),
        &by_segment(emitted, &reordered),
    )
}

/// Runs `check` over the inputs `inputs` draws, each with the stops `stops` draws and
/// `resolve` places in it, with proptest; on a failure, minimizes the shrunk input further
/// (see [`minimize`]) and panics with it, one step per line.
fn assert_property<T, D, S>(
    name: &str,
    inputs: impl Strategy<Value = Vec<Input<T>>>,
    stops: impl Strategy<Value = D>,
    resolve: impl Fn(&D, usize) -> S,
    check: impl Fn(&[Input<T>], &S) -> Result<(), TestCaseError>,
) where
    T: Clone + Debug,
    D: Debug,
    S: Stops,
{
    // No regression files: the shrunk input is in the panic message.
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&(inputs, stops), |(inputs, drawn)| {
        check(&inputs, &resolve(&drawn, inputs.len()))
    });
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(reason, (inputs, drawn))) => {
            let stops = resolve(&drawn, inputs.len());
            let failure = Failure {
                inputs,
                stops,
                reason: reason.message().to_owned(),
            };
            let Failure { inputs, reason, .. } = minimize(failure, check);
            let steps: Vec<String> = inputs
                .iter()
                .enumerate()
                .map(|(index, input)| format!("  {index:>3}: {input:?}"))
                .collect();
            panic!(
                "{name} does not hold: {reason}\nshrunk input ({} steps):\n{}",
                inputs.len(),
                steps.join("\n")
            )
        }
        Err(TestError::Abort(reason)) => panic!("{name} could not be checked: {reason}"),
    }
}

/// The most times one run is stopped and restored by the `assert_*` properties.
pub const MAX_RESTORES: usize = 3;

/// Asserts checkpoint transparency over inputs `inputs` draws, each stopped and restored
/// after one to [`MAX_RESTORES`] points of every kind.
///
/// # Panics
/// When the property fails: with the shrunk input, the cuts, and the first differing output.
pub fn assert_checkpoint_transparent<O>(
    make: impl Fn() -> O,
    inputs: impl Strategy<Value = Vec<Input<O::In>>>,
) where
    O: OneInputOperator,
    O::In: Debug,
    O::Out: Debug,
{
    assert_property(
        "checkpoint transparency",
        inputs,
        several_cut_points(MAX_RESTORES),
        |cuts, len| cuts_at(cuts, len),
        |inputs, cuts| check_checkpoint_transparency_at(&make, inputs, cuts),
    );
}

/// Asserts rescale invariance with up to `parallelism` instances: each input drawn from
/// `inputs` is run by 1 to `parallelism` instances, restored one to [`MAX_RESTORES`] times
/// into 1 to `parallelism` instances (key groups split and merged).
///
/// # Panics
/// When the property fails: with the shrunk input, the restores, and the first differing
/// output.
pub fn assert_rescale_invariant<O, K>(
    make: impl Fn(KeyGroupRange) -> O,
    key_of: impl Fn(&O::In) -> K + Clone + 'static,
    inputs: impl Strategy<Value = Vec<Input<O::In>>>,
    parallelism: u32,
) where
    O: OneInputOperator,
    O::In: Debug,
    O::Out: Debug,
    K: Key,
{
    assert_property(
        "rescale invariance",
        inputs,
        rescales(MAX_RESTORES, parallelism),
        |plan: &Rescales, len| RescaleStops {
            initial: plan.initial,
            restores: plan.resolve(len),
        },
        |inputs, stops| {
            let RescaleStops { initial, restores } = stops;
            check_rescales(&make, key_of.clone(), inputs, *initial, restores)
        },
    );
}

/// Asserts key-order independence.
///
/// # Panics
/// When the property fails: with the shrunk input, the reordering, and the first differing
/// output.
pub fn assert_key_order_independent<O, K>(
    make: impl Fn() -> O,
    key_of: impl Fn(&O::In) -> K,
    inputs: impl Strategy<Value = Vec<Input<O::In>>>,
) where
    O: OneInputOperator,
    O::In: Debug,
    O::Out: Debug,
    K: Key,
{
    assert_property(
        "key-order independence",
        inputs,
        cut_points(),
        |shuffle, _| NoStops(*shuffle),
        |inputs, NoStops(shuffle)| check_key_order_independence(&make, &key_of, inputs, shuffle),
    );
}

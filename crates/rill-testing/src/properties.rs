//! Ready-made properties of operators, each a one-line check over generated inputs.
//!
//! - **Checkpoint transparency**: an operator restored from a snapshot taken after any step of
//!   its input emits exactly what the same operator emits never stopping, in the same order.
//! - **Rescale invariance**: a keyed operator's snapshot split over several instances, each
//!   owning a range of key groups (as a job restored at another parallelism), emits together
//!   what one instance emits (as a multiset: the instances' outputs interleave).
//! - **Key-order independence**: for operators that claim it, reordering the records of
//!   different keys between two watermarks changes no output (as a multiset).
//!
//! `check_*` run one input and return proptest's `TestCaseError`; `assert_*` run proptest over
//! a strategy and panic with the shrunk input and the first output that differs, for use in
//! tests. Outputs are compared by their `Debug` rendering with their timestamps (a side-output
//! value renders as its tag and type).

use std::fmt::Debug;

use proptest::sample::Index;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use rill_core::element::Record;
use rill_core::key::{Key, KeyGroupRange, key_group_of};
use rill_core::operator::OneInputOperator;

use crate::Input;
use crate::harness::{HarnessError, KeyedInstances, OperatorHarness};
use crate::strategies::{cut_at, cut_points};

/// The number of key groups the properties run operators with.
pub const MAX_PARALLELISM: u32 = 128;

fn failed(error: HarnessError) -> TestCaseError {
    TestCaseError::fail(format!("the operator failed: {error}"))
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

fn render<T: Debug>(records: &[Record<T>]) -> Vec<String> {
    records
        .iter()
        .map(|record| match record.timestamp() {
            Some(timestamp) => format!("{:?} @ {timestamp}", record.value),
            None => format!("{:?}", record.value),
        })
        .collect()
}

/// Fails with the first place the two outputs differ.
fn compare(what: &str, expected: &[String], actual: &[String]) -> Result<(), TestCaseError> {
    let first = expected
        .iter()
        .zip(actual)
        .position(|(expected, actual)| expected != actual)
        .unwrap_or(expected.len().min(actual.len()));
    if expected.len() == actual.len() && first == expected.len() {
        return Ok(());
    }
    let show = |output: &[String]| {
        output
            .get(first)
            .cloned()
            .unwrap_or_else(|| "(nothing)".into())
    };
    Err(TestCaseError::fail(format!(
        "{what}: the outputs differ first at output #{first}: expected {}, got {} \
         ({} outputs expected, {} emitted)",
        show(expected),
        show(actual),
        expected.len(),
        actual.len()
    )))
}

/// The whole output of a fresh operator over `inputs`, to the end of input.
fn run_through<O: OneInputOperator>(
    operator: O,
    inputs: &[Input<O::In>],
) -> Result<Vec<Record<O::Out>>, HarnessError> {
    let mut harness = OperatorHarness::new(operator);
    play(&mut harness, inputs)?;
    harness.end_input()?;
    Ok(harness.take_output())
}

/// Checkpoint transparency for one input, cut after step `cut`.
pub fn check_checkpoint_transparency<O>(
    make: impl Fn() -> O,
    inputs: &[Input<O::In>],
    cut: usize,
) -> Result<(), TestCaseError>
where
    O: OneInputOperator,
    O::Out: Debug,
{
    let expected = run_through(make(), inputs).map_err(failed)?;
    let cut = cut.min(inputs.len());
    let mut before = OperatorHarness::new(make());
    play(&mut before, &inputs[..cut]).map_err(failed)?;
    let snapshot = before.snapshot().map_err(failed)?;
    let mut emitted = before.take_output();
    let mut after = OperatorHarness::restored(make(), &snapshot).map_err(failed)?;
    play(&mut after, &inputs[cut..]).map_err(failed)?;
    after.end_input().map_err(failed)?;
    emitted.extend(after.take_output());
    compare(
        &format!("restored from a snapshot after step {cut}"),
        &render(&expected),
        &render(&emitted),
    )
}

fn sorted<T: Debug>(records: &[Record<T>]) -> Vec<String> {
    let mut rendered = render(records);
    rendered.sort();
    rendered
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
    let everything = KeyGroupRange::for_subtask(0, 1, MAX_PARALLELISM);
    let expected = run_through(make(everything), inputs).map_err(failed)?;
    let cut = cut.min(inputs.len());
    let mut before = OperatorHarness::new(make(everything));
    play(&mut before, &inputs[..cut]).map_err(failed)?;
    let snapshot = before.snapshot().map_err(failed)?;
    let mut emitted = before.take_output();
    let mut after =
        KeyedInstances::restored(&[snapshot], parallelism, MAX_PARALLELISM, &make, key_of)
            .map_err(failed)?;
    for input in &inputs[cut..] {
        let step = match input {
            Input::Record(value, timestamp) => after.push_at(value.clone(), *timestamp),
            Input::Watermark(watermark) => after.advance_watermark(*watermark),
            Input::ProcessingTime(now) => after.advance_processing_time(*now),
        };
        step.map_err(failed)?;
    }
    after.end_input().map_err(failed)?;
    emitted.extend(after.take_output());
    compare(
        &format!("split over {parallelism} instances after step {cut} (sorted outputs)"),
        &sorted(&expected),
        &sorted(&emitted),
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
    let expected = run_through(make(), inputs).map_err(failed)?;
    let reordered = reorder_keys(inputs, key_of, shuffle);
    let emitted = run_through(make(), &reordered).map_err(failed)?;
    compare(
        "with the keys' records reordered (sorted outputs)",
        &sorted(&expected),
        &sorted(&emitted),
    )
}

/// Runs `check` over `inputs` with proptest; panics with the shrunk input on a failure.
fn assert_property<I: Debug, E: Debug + Clone>(
    name: &str,
    inputs: impl Strategy<Value = I>,
    extra: impl Strategy<Value = E>,
    check: impl Fn(&I, &E) -> Result<(), TestCaseError>,
) {
    // No regression files: the shrunk input is in the panic message.
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    match runner.run(&(inputs, extra), |(inputs, extra)| check(&inputs, &extra)) {
        Ok(()) => {}
        Err(TestError::Fail(reason, (inputs, extra))) => {
            panic!("{name} does not hold: {reason}\nshrunk input: {inputs:#?}\nwith {extra:?}")
        }
        Err(TestError::Abort(reason)) => panic!("{name} could not be checked: {reason}"),
    }
}

/// Asserts checkpoint transparency over inputs `inputs` draws, cut at every kind of point.
///
/// # Panics
/// When the property fails: with the shrunk input, the cut, and the first differing output.
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
        cut_points(),
        |inputs, cut| check_checkpoint_transparency(&make, inputs, cut_at(cut, inputs.len())),
    );
}

/// Asserts rescale invariance from one instance to `parallelism`.
///
/// # Panics
/// When the property fails: with the shrunk input, the cut, and the first differing output.
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
    assert_property("rescale invariance", inputs, cut_points(), |inputs, cut| {
        check_rescale_invariance(
            &make,
            key_of.clone(),
            inputs,
            cut_at(cut, inputs.len()),
            parallelism,
        )
    });
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
        |inputs, shuffle| check_key_order_independence(&make, &key_of, inputs, shuffle),
    );
}

//! What each step of an input made an operator emit, and how the emissions of two runs are
//! compared: group by group (a step, or the records between two time steps), in order where
//! Rill specifies the order, as multisets where it does not. A difference is reported at the
//! first output that differs, with its index and the step that emitted it.

use std::fmt::Debug;

use proptest::test_runner::TestCaseError;
use rill_core::element::Record;

use crate::Input;

/// The outputs of a run, step by step: one entry per step of the input, and a last one for
/// the end of input. Each output is rendered with its timestamp, as failures show it.
#[derive(Debug, Default)]
pub(crate) struct Emissions {
    steps: Vec<Vec<String>>,
}

impl Emissions {
    /// Records what the next step emitted.
    pub(crate) fn push<T: Debug>(&mut self, records: Vec<Record<T>>) {
        self.steps.push(records.iter().map(render).collect());
    }
}

/// One output as failures show it: its value, and its timestamp if it has one.
fn render<T: Debug>(record: &Record<T>) -> String {
    match record.timestamp() {
        Some(timestamp) => format!("{:?} @ {timestamp}", record.value),
        None => format!("{:?}", record.value),
    }
}

/// Whether the outputs of a group come in an order Rill specifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// In order: one instance emitted them, for one key (a record), or for all its keys.
    Specified,
    /// As a multiset: several instances, or records of several keys in another arrival
    /// order, emitted them; different keys' outputs may interleave in any order.
    Unspecified,
}

/// Outputs compared together.
#[derive(Debug)]
pub(crate) struct Group {
    /// Which steps emitted them.
    label: String,
    order: Order,
    outputs: Vec<String>,
}

/// What step `index` of the input was, for failure messages; `None` is the end of input.
fn describe<T>(index: usize, input: Option<&Input<T>>) -> String {
    match input {
        Some(Input::Record(_, timestamp)) => format!("step {index}: a record at {timestamp}"),
        Some(Input::Watermark(watermark)) => format!("step {index}: watermark {watermark}"),
        Some(Input::ProcessingTime(now)) => format!("step {index}: processing time {now}"),
        None => "the end of input".to_owned(),
    }
}

/// One group per step of `inputs` (and the end of input), ordered as `order` says.
pub(crate) fn by_step<T>(
    emissions: Emissions,
    inputs: &[Input<T>],
    order: impl Fn(Option<&Input<T>>) -> Order,
) -> Vec<Group> {
    emissions
        .steps
        .into_iter()
        .enumerate()
        .map(|(index, outputs)| {
            let input = inputs.get(index);
            Group {
                label: describe(index, input),
                order: order(input),
                outputs,
            }
        })
        .collect()
}

/// One unordered group per run of consecutive records of `inputs`, and one per other step:
/// what a reordering of the records between two time steps must leave unchanged.
pub(crate) fn by_segment<T>(emissions: Emissions, inputs: &[Input<T>]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut run_start: Option<usize> = None;
    for (index, outputs) in emissions.steps.into_iter().enumerate() {
        let input = inputs.get(index);
        if matches!(input, Some(Input::Record(..))) {
            let start = *run_start.get_or_insert(index);
            if start < index
                && let Some(run) = groups.last_mut()
            {
                run.label = format!("steps {start}..={index}: records");
                run.outputs.extend(outputs);
                continue;
            }
        } else {
            run_start = None;
        }
        groups.push(Group {
            label: describe(index, input),
            order: Order::Unspecified,
            outputs,
        });
    }
    groups
}

/// The index of the first output where `expected` and `actual` differ, if they do.
fn first_difference(expected: &[String], actual: &[String]) -> Option<usize> {
    let common = expected.iter().zip(actual).position(|(e, a)| e != a);
    match common {
        Some(index) => Some(index),
        None if expected.len() != actual.len() => Some(expected.len().min(actual.len())),
        None => None,
    }
}

/// What `expected` has and `actual` lacks, and the reverse, counting repeats.
fn multiset_difference(expected: &[String], actual: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut expected, mut actual) = (expected.to_vec(), actual.to_vec());
    expected.sort();
    actual.sort();
    let (mut missing, mut unexpected) = (Vec::new(), Vec::new());
    let (mut e, mut a) = (
        expected.into_iter().peekable(),
        actual.into_iter().peekable(),
    );
    loop {
        match (e.peek(), a.peek()) {
            (Some(left), Some(right)) if left == right => {
                e.next();
                a.next();
            }
            (Some(left), Some(right)) if left < right => missing.extend(e.next()),
            (Some(_), Some(_)) | (None, Some(_)) => unexpected.extend(a.next()),
            (Some(_), None) => missing.extend(e.next()),
            (None, None) => return (missing, unexpected),
        }
    }
}

/// Fails with the first output where `actual` differs from `expected`; both are grouped from
/// the same input, so their groups correspond one to one.
pub(crate) fn compare(
    what: &str,
    expected: &[Group],
    actual: &[Group],
) -> Result<(), TestCaseError> {
    debug_assert_eq!(expected.len(), actual.len(), "groups of one input");
    let totals = |groups: &[Group]| groups.iter().map(|g| g.outputs.len()).sum::<usize>();
    let counts = format!(
        "{} outputs expected, {} emitted",
        totals(expected),
        totals(actual)
    );
    let mut index = 0;
    for (expected, actual) in expected.iter().zip(actual) {
        let label = &expected.label;
        match expected.order {
            Order::Specified => {
                if let Some(offset) = first_difference(&expected.outputs, &actual.outputs) {
                    let show = |outputs: &[String]| {
                        outputs
                            .get(offset)
                            .cloned()
                            .unwrap_or_else(|| "(nothing)".to_owned())
                    };
                    return Err(TestCaseError::fail(format!(
                        "{what}: the outputs differ first at output #{}, emitted at {label}: \
                         expected {}, got {} ({counts})",
                        index + offset,
                        show(&expected.outputs),
                        show(&actual.outputs),
                    )));
                }
            }
            Order::Unspecified => {
                let (missing, unexpected) = multiset_difference(&expected.outputs, &actual.outputs);
                if !missing.is_empty() || !unexpected.is_empty() {
                    return Err(TestCaseError::fail(format!(
                        "{what}: the outputs differ first at output #{index}, emitted at \
                         {label} (compared as a multiset: different keys' outputs may come in \
                         any order): missing {missing:?}, unexpected {unexpected:?} ({counts})"
                    )));
                }
            }
        }
        index += expected.outputs.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rill_core::element::Timestamp;

    use super::*;

    fn emissions(steps: &[&[u32]]) -> Emissions {
        let mut emissions = Emissions::default();
        for step in steps {
            emissions.push(step.iter().map(|&value| Record::new(value)).collect());
        }
        emissions
    }

    /// Two records, a watermark, a record, and the end of input.
    fn inputs() -> Vec<Input<u32>> {
        vec![
            Input::Record(1, Timestamp(1)),
            Input::Record(2, Timestamp(2)),
            Input::Watermark(Timestamp(5)),
            Input::Record(3, Timestamp(6)),
        ]
    }

    fn ordered(steps: &[&[u32]]) -> Vec<Group> {
        by_step(emissions(steps), &inputs(), |_| Order::Specified)
    }

    #[test]
    fn in_order_the_first_differing_output_is_named_with_its_index_and_step() {
        let expected = ordered(&[&[1], &[2], &[7, 8], &[], &[9]]);
        assert!(
            compare(
                "same",
                &expected,
                &ordered(&[&[1], &[2], &[7, 8], &[], &[9]])
            )
            .is_ok()
        );
        let error = compare(
            "swapped",
            &expected,
            &ordered(&[&[1], &[2], &[8, 7], &[], &[9]]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("output #2, emitted at step 2: watermark 5ms"),
            "{error}"
        );
        assert!(error.contains("expected 7, got 8"), "{error}");
        let late = compare("late", &expected, &ordered(&[&[1], &[2], &[7], &[8], &[9]]))
            .unwrap_err()
            .to_string();
        assert!(
            late.contains("output #3") && late.contains("got (nothing)"),
            "{late}"
        );
    }

    #[test]
    fn as_multisets_order_does_not_count_but_repeats_do() {
        let unordered =
            |steps: &[&[u32]]| by_step(emissions(steps), &inputs(), |_| Order::Unspecified);
        let expected = unordered(&[&[], &[], &[7, 8, 8], &[], &[]]);
        assert!(
            compare(
                "same",
                &expected,
                &unordered(&[&[], &[], &[8, 7, 8], &[], &[]])
            )
            .is_ok()
        );
        let error = compare(
            "one 8",
            &expected,
            &unordered(&[&[], &[], &[8, 7, 9], &[], &[]]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(r#"missing ["8"], unexpected ["9"]"#),
            "{error}"
        );
    }

    #[test]
    fn segments_gather_the_records_between_time_steps() {
        let groups = by_segment(emissions(&[&[1], &[2], &[7], &[3], &[9]]), &inputs());
        let labels: Vec<&str> = groups.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "steps 0..=1: records",
                "step 2: watermark 5ms",
                "step 3: a record at 6ms",
                "the end of input"
            ]
        );
        assert_eq!(groups[0].outputs, ["1", "2"]);
        let swapped = by_segment(emissions(&[&[2], &[1], &[7], &[3], &[9]]), &inputs());
        assert!(compare("swapped", &groups, &swapped).is_ok());
    }
}

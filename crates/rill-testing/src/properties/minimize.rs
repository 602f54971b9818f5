//! Shrinking a failing input further than proptest does.
//!
//! Proptest deletes each element of a drawn input once, in one pass, and shrinks the points
//! where a run stops as fractions of the input's length; a failure that needs a step before a
//! stop and another after it often stays long. Here the failing input's steps and the run's
//! stops are deleted one at a time — each stop staying after the step it followed — for as
//! long as the property still fails, until no single deletion does: every step left is needed
//! for the failure. Deleting steps keeps an input consistent (watermarks still only move
//! forward), and the number of checks is bounded.

use std::fmt::Debug;

use proptest::test_runner::TestCaseError;

use crate::Input;

/// The most times the property is checked while minimizing one failure.
pub(crate) const MINIMIZE_CHECKS_MAX: usize = 20_000;

/// Where a run stops (and how it restarts), resolved against its input's steps.
pub(crate) trait Stops: Clone + Debug {
    /// The stops for the input without its step `step`: a stop after a later step moves one
    /// step earlier, with that step.
    fn without_step(&self, step: usize) -> Self;

    /// Simpler stops to try instead: one stop fewer, or fewer instances.
    fn simpler(&self) -> Vec<Self>;
}

/// Checkpoint cuts: the steps after which the run stops, in order.
impl Stops for Vec<usize> {
    fn without_step(&self, step: usize) -> Self {
        self.iter()
            .map(|&cut| if cut > step { cut - 1 } else { cut })
            .collect()
    }

    fn simpler(&self) -> Vec<Self> {
        (0..self.len())
            .map(|index| {
                let mut fewer = self.clone();
                fewer.remove(index);
                fewer
            })
            .collect()
    }
}

/// A rescaled run: its initial parallelism, and each restore with the parallelism after it.
#[derive(Clone, Debug)]
pub(crate) struct RescaleStops {
    pub(crate) initial: u32,
    pub(crate) restores: Vec<(usize, u32)>,
}

impl Stops for RescaleStops {
    fn without_step(&self, step: usize) -> Self {
        let restores = self
            .restores
            .iter()
            .map(|&(cut, parallelism)| (if cut > step { cut - 1 } else { cut }, parallelism))
            .collect();
        RescaleStops {
            initial: self.initial,
            restores,
        }
    }

    fn simpler(&self) -> Vec<Self> {
        let mut simpler = Vec::new();
        if self.restores.len() > 1 {
            for index in 0..self.restores.len() {
                let mut fewer = self.clone();
                fewer.restores.remove(index);
                simpler.push(fewer);
            }
        }
        if self.initial > 1 {
            simpler.push(RescaleStops {
                initial: self.initial - 1,
                ..self.clone()
            });
        }
        for index in 0..self.restores.len() {
            if self.restores[index].1 > 1 {
                let mut fewer = self.clone();
                fewer.restores[index].1 -= 1;
                simpler.push(fewer);
            }
        }
        simpler
    }
}

/// No stops: a run that is compared with another order of its input.
#[derive(Clone, Debug)]
pub(crate) struct NoStops<S>(pub(crate) S);

impl<S: Clone + Debug> Stops for NoStops<S> {
    fn without_step(&self, _step: usize) -> Self {
        self.clone()
    }

    fn simpler(&self) -> Vec<Self> {
        Vec::new()
    }
}

/// A failure: the input, the stops, and what the property said.
pub(crate) struct Failure<T, S> {
    pub(crate) inputs: Vec<Input<T>>,
    pub(crate) stops: S,
    pub(crate) reason: String,
}

/// The message of a failed check.
pub(crate) fn reason(error: &TestCaseError) -> String {
    match error {
        TestCaseError::Fail(reason) | TestCaseError::Reject(reason) => reason.message().to_owned(),
    }
}

/// A property being checked against smaller and smaller inputs, with the checks counted.
struct Budgeted<C> {
    check: C,
    checks: usize,
}

impl<C> Budgeted<C> {
    fn exhausted(&self) -> bool {
        self.checks >= MINIMIZE_CHECKS_MAX
    }

    /// What the property says about `inputs` with `stops`, if it fails.
    fn failure<T, S>(&mut self, inputs: &[Input<T>], stops: &S) -> Option<String>
    where
        C: Fn(&[Input<T>], &S) -> Result<(), TestCaseError>,
    {
        self.checks += 1;
        (self.check)(inputs, stops)
            .err()
            .map(|error| reason(&error))
    }
}

/// Deletes steps and stops from a failure while `check` still fails, until no single deletion
/// does (or [`MINIMIZE_CHECKS_MAX`] checks ran).
pub(crate) fn minimize<T: Clone, S: Stops>(
    mut failure: Failure<T, S>,
    check: impl Fn(&[Input<T>], &S) -> Result<(), TestCaseError>,
) -> Failure<T, S> {
    let mut property = Budgeted { check, checks: 0 };
    loop {
        let mut smaller = false;
        for stops in failure.stops.simpler() {
            if property.exhausted() {
                return failure;
            }
            if let Some(reason) = property.failure(&failure.inputs, &stops) {
                failure.stops = stops;
                failure.reason = reason;
                smaller = true;
                break;
            }
        }
        // From the end, so that a deletion moves no step still to be tried.
        for step in (0..failure.inputs.len()).rev() {
            if property.exhausted() {
                return failure;
            }
            let mut inputs = failure.inputs.clone();
            inputs.remove(step);
            let stops = failure.stops.without_step(step);
            if let Some(reason) = property.failure(&inputs, &stops) {
                failure = Failure {
                    inputs,
                    stops,
                    reason,
                };
                smaller = true;
            }
        }
        if !smaller {
            return failure;
        }
    }
}

#[cfg(test)]
mod tests {
    use rill_core::element::Timestamp;

    use super::*;

    fn record(value: u32) -> Input<u32> {
        Input::Record(value, Timestamp(i64::from(value)))
    }

    /// Fails when a 7 comes before a cut and a 9 after it.
    fn seven_then_cut_then_nine(
        inputs: &[Input<u32>],
        cuts: &[usize],
    ) -> Result<(), TestCaseError> {
        let position = |wanted: u32| {
            inputs
                .iter()
                .position(|input| matches!(input, Input::Record(value, _) if *value == wanted))
        };
        let (Some(seven), Some(nine)) = (position(7), position(9)) else {
            return Ok(());
        };
        if cuts.iter().any(|&cut| seven < cut && cut <= nine) {
            return Err(TestCaseError::fail(format!("7 at {seven}, 9 at {nine}")));
        }
        Ok(())
    }

    #[test]
    fn minimizing_keeps_only_the_steps_and_stops_the_failure_needs() {
        let mut inputs: Vec<Input<u32>> = (0..30).map(record).collect();
        inputs.insert(12, Input::Watermark(Timestamp(5)));
        let failure = Failure {
            inputs,
            stops: vec![3, 9, 20, 25],
            reason: String::new(),
        };
        let minimal = minimize(failure, |inputs, cuts: &Vec<usize>| {
            seven_then_cut_then_nine(inputs, cuts)
        });
        assert_eq!(minimal.inputs, vec![record(7), record(9)]);
        assert_eq!(minimal.stops, vec![1]);
        assert_eq!(minimal.reason, "7 at 0, 9 at 1");
    }

    #[test]
    fn rescale_stops_get_simpler_one_change_at_a_time() {
        let stops = RescaleStops {
            initial: 2,
            restores: vec![(3, 1), (5, 3)],
        };
        let simpler: Vec<(u32, Vec<(usize, u32)>)> = stops
            .simpler()
            .into_iter()
            .map(|s| (s.initial, s.restores))
            .collect();
        assert_eq!(
            simpler,
            vec![
                (2, vec![(5, 3)]),
                (2, vec![(3, 1)]),
                (1, vec![(3, 1), (5, 3)]),
                (2, vec![(3, 1), (5, 2)]),
            ]
        );
        assert_eq!(stops.without_step(4).restores, vec![(3, 1), (4, 3)]);
    }
}

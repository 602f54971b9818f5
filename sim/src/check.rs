//! The properties a run is checked against, with the reference model's output as the oracle.
//!
//! - **exactly-once**: the committed output is, as a multiset, exactly the reference output —
//!   every input contributed once — and the keyed operator's state in the final checkpoint is
//!   the reference's final state, key by key (for the event-time jobs: every window fired and
//!   was cleaned up, every timer fired; see `jobs::event_time`);
//! - **at-least-once**: nothing of the reference output is missing; duplicates are counted;
//! - **liveness**: the job finished after the last fault (checked with every property) — or
//!   it was refused as it had to be after a fault damaged its checkpoints (`Outcome::Refused`),
//!   and then what it committed holds nothing twice.
//!
//! A violation names the property, the counts, and the first records involved by key.

use rustc_hash::FxHashMap;

use crate::jobs::{FinalState, Job, Multiset};
use crate::log::LogRecord;
use crate::scenario::Property;
use crate::world::Outcome;

/// The property every restore keeps: each source position and keyed chunk of the checkpoint
/// goes to exactly the subtask it belongs to (see [`crate::accounting`]).
pub const STATE_ACCOUNTING: &str = "state accounting";

/// Records shown in a violation.
const SHOWN_RECORDS_MAX: usize = 5;

/// A property that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which property.
    pub property: &'static str,
    /// What was seen.
    pub detail: String,
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// The first violated property.
    pub violation: Option<Violation>,
    /// Output records committed more often than the reference says.
    pub duplicates: u64,
    /// Keys whose final state was compared with the reference.
    pub keys_checked: usize,
}

/// What a finished run left: the committed output by partition, the final state read from its
/// last checkpoint (`None` for jobs without keyed state), and the transactions still open.
pub type RunLeft<'a> = (
    &'a [Vec<LogRecord>],
    Option<Result<FinalState, String>>,
    &'a [String],
);

/// Checks a finished run: its outcome, its committed output, the final state read from its
/// last checkpoint (`None` for jobs without keyed state) and the transactions it left open
/// against the reference output and final state (and no transaction open, exactly-once).
pub fn check(
    property: Property,
    job: &Job,
    outcome: &Outcome,
    (expected, expected_state): (&Multiset, &FinalState),
    (committed, final_state, open): RunLeft<'_>,
) -> Checked {
    let refused = match outcome {
        Outcome::Finished => None,
        Outcome::Refused(reason) => Some(reason),
        Outcome::Failed(reason) | Outcome::Stuck(reason) => {
            return Checked {
                violation: Some(Violation {
                    property: Property::Liveness.name(),
                    detail: format!("the job did not finish: {reason}"),
                }),
                duplicates: 0,
                keys_checked: 0,
            };
        }
        Outcome::StorageViolated(reason) => {
            return Checked {
                violation: Some(Violation {
                    property: "storage contract",
                    detail: reason.clone(),
                }),
                duplicates: 0,
                keys_checked: 0,
            };
        }
        Outcome::Misrestored(reason) => {
            return Checked {
                violation: Some(Violation {
                    property: STATE_ACCOUNTING,
                    detail: reason.clone(),
                }),
                duplicates: 0,
                keys_checked: 0,
            };
        }
    };
    let mut counts: FxHashMap<&[u8], i64> =
        FxHashMap::with_capacity_and_hasher(expected.len(), Default::default());
    for record in committed.iter().flatten() {
        *counts.entry(&*record.value).or_default() += 1;
    }
    let mut missing: Vec<(&[u8], i64)> = Vec::new();
    let mut extra: Vec<(&[u8], i64)> = Vec::new();
    for (bytes, &want) in expected {
        let got = counts.remove(bytes.as_slice()).unwrap_or(0);
        if want > got {
            missing.push((bytes, want - got));
        } else if got > want {
            extra.push((bytes, got - want));
        }
    }
    extra.extend(counts);
    let duplicates: u64 = extra.iter().map(|(_, n)| *n as u64).sum();
    let lost: u64 = missing.iter().map(|(_, n)| *n as u64).sum();
    if let Some(reason) = refused {
        // A refusal ends the job loudly with its output unfinished: what it did commit must
        // hold nothing twice.
        let violation = (property == Property::ExactlyOnce && duplicates > 0).then(|| {
            let mut detail = format!(
                "the job refused to go on ({reason}), but {duplicates} output records were committed more often than the reference says"
            );
            push_records(&mut detail, job, "extra", &extra);
            Violation {
                property: property.name(),
                detail,
            }
        });
        return Checked {
            violation,
            duplicates,
            keys_checked: 0,
        };
    }
    if lost == 0 && duplicates == 0 && property == Property::ExactlyOnce && !open.is_empty() {
        // A transaction left open holds records no reader will see, and (in a log that keeps
        // readers behind open transactions) holds every reader back: every restore must have
        // resolved what the attempts before it left, and the final checkpoint committed the rest.
        let mut detail = format!(
            "the output is right but the job ended with {} transactions open:",
            open.len()
        );
        for id in open.iter().take(SHOWN_RECORDS_MAX) {
            detail.push_str(&format!("\n    {id}"));
        }
        return Checked {
            violation: Some(Violation {
                property: property.name(),
                detail,
            }),
            duplicates,
            keys_checked: 0,
        };
    }
    if lost == 0
        && duplicates == 0
        && property == Property::ExactlyOnce
        && let Some(state) = final_state
    {
        let keys_checked = expected_state.len();
        return Checked {
            violation: state_mismatch(state, expected_state).map(|detail| Violation {
                property: property.name(),
                detail,
            }),
            duplicates,
            keys_checked,
        };
    }
    let violated = match property {
        Property::ExactlyOnce => lost > 0 || duplicates > 0,
        Property::AtLeastOnce => lost > 0,
        Property::Liveness => false,
    };
    let violation = violated.then(|| {
        let expected_total: i64 = expected.values().sum();
        let mut detail = format!(
            "expected {expected_total} output records, {} committed: {lost} missing, {duplicates} extra",
            committed.iter().map(Vec::len).sum::<usize>()
        );
        push_records(&mut detail, job, "missing", &missing);
        push_records(&mut detail, job, "extra", &extra);
        Violation {
            property: property.name(),
            detail,
        }
    });
    Checked {
        violation,
        duplicates,
        keys_checked: 0,
    }
}

/// Adds the first few of `records` (with how many are missing or extra) to `detail`, by key.
fn push_records(detail: &mut String, job: &Job, label: &str, records: &[(&[u8], i64)]) {
    let mut shown: Vec<((String, String), i64)> = records
        .iter()
        .map(|(bytes, n)| (job.render(bytes), *n))
        .collect();
    shown.sort();
    for ((key, value), n) in shown.into_iter().take(SHOWN_RECORDS_MAX) {
        if value.is_empty() {
            detail.push_str(&format!("\n    {label}: {key} x{n}"));
        } else {
            detail.push_str(&format!("\n    {label}: key {key}: ({key}, {value}) x{n}"));
        }
    }
}

/// How the final state differs from the reference, if it does.
fn state_mismatch(state: Result<FinalState, String>, expected: &FinalState) -> Option<String> {
    let state = match state {
        Ok(state) => state,
        Err(reason) => return Some(format!("cannot read the final state: {reason}")),
    };
    let differing: Vec<String> = expected
        .keys()
        .chain(state.keys().filter(|key| !expected.contains_key(*key)))
        .filter(|key| state.get(*key) != expected.get(*key))
        .map(|key| {
            let show = |value: Option<&String>| value.map_or("absent".to_owned(), Clone::clone);
            format!(
                "key {key}: final state {}, expected {}",
                show(state.get(key)),
                show(expected.get(key))
            )
        })
        .collect();
    (!differing.is_empty()).then(|| {
        let mut detail = format!(
            "the output is right but the final state of {} keys is not",
            differing.len()
        );
        for line in differing.iter().take(SHOWN_RECORDS_MAX) {
            detail.push_str(&format!("\n    {line}"));
        }
        detail
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobKind;

    fn record(bytes: &[u8]) -> LogRecord {
        LogRecord {
            value: bytes.into(),
            timestamp: 0,
        }
    }

    fn expected() -> Multiset {
        [(vec![1], 1), (vec![2], 2)].into_iter().collect()
    }

    #[test]
    fn exactly_once_needs_every_record_exactly_as_often() {
        let exact = [record(&[1]), record(&[2]), record(&[2])];
        let checked = check(
            Property::ExactlyOnce,
            &JobKind::LogPipeline.into(),
            &Outcome::Finished,
            (&expected(), &FinalState::new()),
            (&[exact.to_vec()], None, &[]),
        );
        assert_eq!(checked.violation, None);
        let duplicated = [record(&[1]), record(&[1]), record(&[2]), record(&[2])];
        let checked = check(
            Property::ExactlyOnce,
            &JobKind::LogPipeline.into(),
            &Outcome::Finished,
            (&expected(), &FinalState::new()),
            (&[duplicated.to_vec()], None, &[]),
        );
        assert_eq!(checked.violation.map(|v| v.property), Some("exactly-once"));
        assert_eq!(checked.duplicates, 1);
    }

    #[test]
    fn at_least_once_allows_duplicates_but_not_loss() {
        let duplicated = [record(&[1]), record(&[1]), record(&[2]), record(&[2])];
        let checked = check(
            Property::AtLeastOnce,
            &JobKind::LogPipeline.into(),
            &Outcome::Finished,
            (&expected(), &FinalState::new()),
            (&[duplicated.to_vec()], None, &[]),
        );
        assert_eq!((checked.violation, checked.duplicates), (None, 1));
        let lost = [record(&[1]), record(&[2])];
        let checked = check(
            Property::AtLeastOnce,
            &JobKind::LogPipeline.into(),
            &Outcome::Finished,
            (&expected(), &FinalState::new()),
            (&[lost.to_vec()], None, &[]),
        );
        assert_eq!(checked.violation.map(|v| v.property), Some("at-least-once"));
    }

    #[test]
    fn a_final_state_that_differs_is_a_violation() {
        let exact = [record(&[1]), record(&[2]), record(&[2])];
        let reference: FinalState = [("a".to_owned(), "2".to_owned())].into_iter().collect();
        let wrong: FinalState = [("a".to_owned(), "3".to_owned())].into_iter().collect();
        let checked = check(
            Property::ExactlyOnce,
            &JobKind::Wordcount.into(),
            &Outcome::Finished,
            (&expected(), &reference),
            (&[exact.to_vec()], Some(Ok(wrong)), &[]),
        );
        let violation = checked.violation.expect("a violation");
        assert!(
            violation
                .detail
                .contains("key a: final state 3, expected 2"),
            "{}",
            violation.detail
        );
        let checked = check(
            Property::ExactlyOnce,
            &JobKind::Wordcount.into(),
            &Outcome::Finished,
            (&expected(), &reference),
            (&[exact.to_vec()], Some(Ok(reference.clone())), &[]),
        );
        assert_eq!((checked.violation, checked.keys_checked), (None, 1));
    }

    #[test]
    fn a_refusal_may_leave_output_missing_but_never_twice() {
        let refused = Outcome::Refused("sink 'job/sink/' refused the rewind".to_owned());
        let check_refused = |committed: &[LogRecord]| {
            check(
                Property::ExactlyOnce,
                &JobKind::LogPipeline.into(),
                &refused,
                (&expected(), &FinalState::new()),
                (&[committed.to_vec()], None, &[]),
            )
        };
        assert_eq!(check_refused(&[record(&[2])]).violation, None);
        let twice = check_refused(&[record(&[1]), record(&[1])]);
        let violation = twice.violation.expect("a violation");
        assert_eq!(violation.property, "exactly-once");
        assert!(
            violation.detail.contains("refused the rewind"),
            "{}",
            violation.detail
        );
        assert_eq!(twice.duplicates, 1);
    }

    #[test]
    fn a_transaction_left_open_violates_exactly_once() {
        let exact = [record(&[1]), record(&[2]), record(&[2])];
        let open = ["job/sink/2/7".to_owned()];
        let checked = check(
            Property::ExactlyOnce,
            &JobKind::LogPipeline.into(),
            &Outcome::Finished,
            (&expected(), &FinalState::new()),
            (&[exact.to_vec()], None, &open),
        );
        let violation = checked.violation.expect("a violation");
        assert!(
            violation.detail.contains("job/sink/2/7"),
            "{}",
            violation.detail
        );
    }

    #[test]
    fn a_job_that_does_not_finish_violates_liveness() {
        let stuck = Outcome::Stuck("no progress".to_owned());
        let checked = check(
            Property::ExactlyOnce,
            &JobKind::LogPipeline.into(),
            &stuck,
            (&expected(), &FinalState::new()),
            (&[], None, &[]),
        );
        assert_eq!(checked.violation.map(|v| v.property), Some("liveness"));
    }
}

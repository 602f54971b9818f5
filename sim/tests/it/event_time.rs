//! The event-time jobs: their runs commit exactly their reference models, with and without
//! crashes, and window operators or process functions that lose their timers on restore are
//! caught.

use rill_sim::runner::{run_seed, shrink};
use rill_sim::scenario::Scenario;

/// A small scenario of `job`, with `role` at parallelism 2 and `faults` appended.
pub(crate) fn scenario(job: &str, role: &str, faults: &str) -> Scenario {
    let text = format!(
        r#"
description = "{job} in a test"
job = "{job}"
property = "exactly-once"

[input]
records = 400
partitions = 3
keys = 8
arrival_ms = 20

[parallelism]
source = 2
{role} = 2

[checkpoint]
interval_ms = 2
{faults}"#
    );
    Scenario::parse("test", &text).expect("a valid scenario")
}

const JOBS: [(&str, &str); 4] = [
    ("window-aggregate", "window"),
    ("event-timers", "timers"),
    ("session-windows", "sessions"),
    ("join", "join"),
];

const CRASHES: &str = r#"
[[fault]]
kind = "crash-subtask"
count = 2

[[fault]]
kind = "crash-job"
unsynced = "lost"
"#;

#[test]
fn a_failure_free_run_of_each_event_time_job_commits_its_reference() {
    for (job, role) in JOBS {
        let scenario = scenario(job, role, "");
        for seed in 0..3 {
            let report = run_seed(&scenario, seed, None, false);
            assert_eq!(report.checked.violation, None, "{job}, seed {seed}");
            assert_eq!(report.stats.faults_injected, 0);
            assert!(
                report.stats.checkpoints_completed > 2,
                "{job}, seed {seed}: {} checkpoints",
                report.stats.checkpoints_completed
            );
        }
    }
}

#[test]
fn each_event_time_job_commits_its_reference_through_crashes() {
    for (job, role) in JOBS {
        let scenario = scenario(job, role, CRASHES);
        for seed in 0..3 {
            let report = run_seed(&scenario, seed, None, false);
            assert_eq!(report.checked.violation, None, "{job}, seed {seed}");
            assert_eq!(report.stats.recoveries, 3, "{job}, seed {seed}");
        }
    }
}

#[test]
fn the_timer_job_checks_each_keys_count_in_its_final_checkpoint() {
    let scenario = scenario("event-timers", "timers", CRASHES);
    let report = run_seed(&scenario, 1, None, false);
    assert_eq!(report.checked.violation, None);
    assert_eq!(report.checked.keys_checked, 8, "one count per key");
}

#[test]
fn an_event_time_run_is_a_function_of_its_seed() {
    let scenario = scenario("session-windows", "sessions", CRASHES);
    let first = run_seed(&scenario, 11, None, false);
    let again = run_seed(&scenario, 11, None, false);
    assert_eq!(
        (first.trace_hash, first.stats),
        (again.trace_hash, again.stats)
    );
    assert_ne!(
        first.trace_hash,
        run_seed(&scenario, 12, None, false).trace_hash
    );
}

/// Runs `scenario` under seeds `0..10` and returns the first report that violates it.
fn first_caught(scenario: &Scenario) -> rill_sim::runner::SeedReport {
    (0..10)
        .map(|seed| run_seed(scenario, seed, None, false))
        .find(|report| report.checked.violation.is_some())
        .expect("some seed catches the broken component")
}

fn broken(job: &str, role: &str, defect: &str) -> Scenario {
    let mut scenario = scenario(
        job,
        role,
        "[[fault]]\nkind = \"crash-subtask\"\ncount = 2\n",
    );
    let defect = Scenario::parse(
        "defect",
        &format!(
            "description = \"d\"\njob = \"{job}\"\nproperty = \"exactly-once\"\nbroken = \"{defect}\"\nexpect = \"violation\"\n"
        ),
    )
    .expect("a valid scenario");
    scenario.spec.broken = defect.spec.broken;
    scenario.spec.expect = defect.spec.expect;
    scenario
}

#[test]
fn a_window_operator_that_drops_its_timers_on_restore_is_caught_by_missing_windows() {
    for (job, role) in [
        ("window-aggregate", "window"),
        ("session-windows", "sessions"),
    ] {
        let scenario = broken(job, role, "window-drops-timers");
        let caught = first_caught(&scenario);
        let violation = caught.checked.violation.as_ref().expect("a violation");
        assert_eq!(violation.property, "exactly-once", "{job}");
        assert!(
            violation.detail.contains("missing") && violation.detail.contains(" 0 extra"),
            "{job}: windows go missing, none is made up: {}",
            violation.detail
        );
        let smallest = shrink(&scenario, caught.seed, &caught.schedule);
        assert_eq!(smallest.len(), 1, "{job}: one crash shows it: {smallest:?}");
        let without_faults = run_seed(&scenario, caught.seed, Some(Vec::new()), false);
        assert_eq!(
            without_faults.checked.violation, None,
            "{job}: the defect shows only on a restore"
        );
    }
}

#[test]
fn a_process_function_that_drops_its_timers_on_restore_is_caught() {
    let scenario = broken("event-timers", "timers", "process-drops-timers");
    let caught = first_caught(&scenario);
    let violation = caught.checked.violation.as_ref().expect("a violation");
    assert_eq!(violation.property, "exactly-once");
    assert!(violation.detail.contains("missing"), "{}", violation.detail);
}

#[test]
fn an_interval_join_that_drops_its_timers_leaves_state_behind() {
    let scenario = broken("join", "join", "process-drops-timers");
    let caught = first_caught(&scenario);
    let violation = caught.checked.violation.as_ref().expect("a violation");
    assert_eq!(violation.property, "exactly-once");
    assert!(
        violation
            .detail
            .contains("the output is right but the final state")
            && violation.detail.contains("interval-join: interval-join-"),
        "the pairs are all there, but waiting records never expired: {}",
        violation.detail
    );
}

#[test]
fn a_defect_the_job_does_not_have_is_refused() {
    let text = r#"
description = "a word count has no windows"
job = "wordcount"
property = "exactly-once"
broken = "window-drops-timers"
expect = "violation"
"#;
    let error = Scenario::parse("bad", text).expect_err("refused");
    assert!(
        error.contains("job 'wordcount' has no component that 'window-drops-timers' breaks"),
        "{error}"
    );
}

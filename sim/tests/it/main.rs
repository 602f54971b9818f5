//! The simulator's own tests: runs are pure functions of their seed, a correct job passes with
//! its output and final state checked, broken components are caught and their fault schedules
//! shrink, every scenario file is valid, and bad scenario files are refused with a clear error.

use std::path::Path;

use rill_sim::faults::Defect;
use rill_sim::jobs::{Job, JobKind};
use rill_sim::runner::{run_seed, schedule_of, select_faults, shrink, shrink_to_indices};
use rill_sim::scenario::{Expect, Scenario};

mod event_time;
mod process;
mod user_jobs;

const WORDCOUNT: &str = r#"
description = "word count with two subtask crashes"
job = "wordcount"
property = "exactly-once"

[input]
records = 300
partitions = 2
keys = 20

[parallelism]
source = 2
count = 2

[[fault]]
kind = "crash-subtask"
count = 2
"#;

fn scenario(text: &str) -> Scenario {
    Scenario::parse("test", text).expect("a valid scenario")
}

fn with_defect(defect: &str) -> Scenario {
    scenario(&format!(
        "broken = \"{defect}\"\nexpect = \"violation\"\n{WORDCOUNT}"
    ))
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let wordcount = scenario(WORDCOUNT);
    let first = run_seed(&wordcount, 7, None, false);
    let again = run_seed(&wordcount, 7, None, false);
    let other = run_seed(&wordcount, 8, None, false);
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.stats, again.stats);
    assert_ne!(first.trace_hash, other.trace_hash);
}

#[test]
fn a_correct_job_passes_with_its_output_and_final_state_checked() {
    let wordcount = scenario(WORDCOUNT);
    for seed in 0..5 {
        let report = run_seed(&wordcount, seed, None, false);
        assert_eq!(report.checked.violation, None, "seed {seed}");
        assert_eq!(report.stats.faults_injected, 2, "seed {seed}");
        assert_eq!(report.stats.recoveries, 2, "seed {seed}");
        assert!(report.stats.checkpoints_completed > 0, "seed {seed}");
        assert!(
            report.checked.keys_checked > 0,
            "seed {seed}: the final state was not read"
        );
    }
}

#[test]
fn a_source_that_forgets_its_offsets_is_caught_and_the_schedule_shrinks() {
    let broken = with_defect("source-forgets-offsets");
    let failing = (0..10)
        .map(|seed| run_seed(&broken, seed, None, false))
        .find(|report| report.checked.violation.is_some())
        .expect("some seed catches the broken source");
    let violation = failing.checked.violation.as_ref().expect("a violation");
    assert_eq!(violation.property, "exactly-once");
    assert!(violation.detail.contains("extra"), "{}", violation.detail);
    let smallest = shrink(&broken, failing.seed, &failing.schedule);
    assert_eq!(
        smallest.len(),
        1,
        "one crash is enough to show the bug: {smallest:?}"
    );
    let replayed = run_seed(&broken, failing.seed, Some(smallest), false);
    assert!(replayed.checked.violation.is_some());
}

#[test]
fn without_faults_a_broken_source_goes_unnoticed() {
    let broken = with_defect("source-forgets-offsets");
    let report = run_seed(&broken, 3, Some(Vec::new()), false);
    assert_eq!(report.checked.violation, None);
    assert_eq!(schedule_of(&broken, 3).len(), 2);
}

#[test]
fn a_sink_that_commits_at_pre_commit_is_caught() {
    let broken = with_defect("sink-commits-at-pre-commit").spec;
    let mut scenario = scenario(WORDCOUNT);
    scenario.spec.broken = broken.broken;
    scenario.spec.faults = Scenario::parse(
        "crashes",
        r#"
description = "coordinator crashes"
job = "wordcount"
property = "exactly-once"
[[fault]]
kind = "crash-coordinator"
point = "after-acks"
count = 3
"#,
    )
    .expect("valid")
    .spec
    .faults;
    let caught = (0..20).any(|seed| {
        run_seed(&scenario, seed, None, false)
            .checked
            .violation
            .is_some()
    });
    assert!(caught, "no seed caught the sink that commits early");
}

#[test]
fn a_hung_run_is_cut_short_once_progress_stops() {
    let stalling = with_defect("partitioner-leaks-credits");
    let report = run_seed(&stalling, 0, Some(Vec::new()), false);
    let violation = report.checked.violation.expect("the stall is caught");
    assert_eq!(violation.property, "liveness");
    assert!(
        violation.detail.contains("no progress")
            && violation.detail.contains("for 5000 virtual ms"),
        "{}",
        violation.detail
    );
}

#[test]
fn a_shrunk_schedule_replays_by_the_indices_it_kept() {
    let broken = with_defect("source-forgets-offsets");
    let failing = (0..10)
        .map(|seed| run_seed(&broken, seed, None, false))
        .find(|report| report.checked.violation.is_some())
        .expect("some seed catches the broken source");
    let kept = shrink_to_indices(&broken, failing.seed, &failing.schedule);
    let replayed = select_faults(&schedule_of(&broken, failing.seed), &kept);
    assert_eq!(replayed, shrink(&broken, failing.seed, &failing.schedule));
    let again = run_seed(&broken, failing.seed, Some(replayed.clone()), false);
    let once_more = run_seed(&broken, failing.seed, Some(replayed), false);
    assert!(again.checked.violation.is_some());
    assert_eq!(again.trace_hash, once_more.trace_hash);
}

fn scenario_file(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.toml"));
    let text = std::fs::read_to_string(path).expect("the scenario file");
    Scenario::parse(name, &text).expect("a valid scenario")
}

#[test]
fn a_checkpoint_damaged_before_its_commit_is_a_clean_fall_back() {
    let corrupt = scenario_file("corrupt-checkpoint-before-commit");
    for seed in 0..5 {
        let report = run_seed(&corrupt, seed, None, false);
        assert_eq!(report.checked.violation, None, "seed {seed}");
        assert_eq!(report.stats.fallbacks, 2, "seed {seed}");
        assert_eq!(report.stats.refusals, 0, "seed {seed}");
    }
}

#[test]
fn a_committed_checkpoint_damaged_is_a_refused_rewind() {
    let corrupt = scenario_file("corrupt-newest-checkpoint");
    let refused = (0..10)
        .map(|seed| run_seed(&corrupt, seed, None, false))
        .inspect(|report| assert_eq!(report.checked.violation, None, "seed {}", report.seed))
        .filter(|report| report.stats.refusals > 0)
        .count();
    assert!(refused > 0, "no seed refused");
}

#[test]
fn every_scenario_file_is_valid_and_each_fault_kind_is_covered() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let scenarios = Scenario::load_dir(&dir).expect("the scenarios load");
    assert!(scenarios.len() >= 12, "{} scenarios", scenarios.len());
    let kinds: std::collections::BTreeSet<String> = scenarios
        .iter()
        .flat_map(|s| s.spec.faults.iter())
        .map(|fault| {
            fault
                .fault
                .to_string()
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for kind in [
        "crash-subtask",
        "crash-job",
        "crash-coordinator",
        "crash-sink-before-commit",
        "tear-write",
        "slow-channel",
        "slow-subtask",
        "crash-during-recovery",
        "rescale",
        "corrupt-checkpoint",
    ] {
        assert!(
            kinds.contains(kind),
            "no scenario injects {kind}: {kinds:?}"
        );
    }
}

#[test]
fn every_job_and_every_broken_component_has_a_scenario() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let scenarios = Scenario::load_dir(&dir).expect("the scenarios load");
    for job in JobKind::ALL {
        assert!(
            scenarios
                .iter()
                .any(|s| matches!(s.spec.job, Job::Catalog(kind) if kind == job)),
            "no scenario runs the job '{}'",
            job.name()
        );
    }
    for defect in Defect::ALL {
        assert!(
            scenarios
                .iter()
                .any(|s| s.spec.broken == Some(defect) && s.spec.expect == Expect::Violation),
            "no scenario must catch the broken component '{}'",
            defect.name()
        );
    }
}

#[test]
fn bad_scenarios_are_refused_with_what_is_wrong() {
    let cases = [
        (WORDCOUNT.replace("keys = 20", "keyz = 20"), "keyz"),
        (
            WORDCOUNT.replace("count = 2\n\n[[fault]]", "counter = 2\n\n[[fault]]"),
            "no operator role 'counter'",
        ),
        (
            WORDCOUNT.replace("kind = \"crash-subtask\"", "kind = \"crash-everything\""),
            "crash-everything",
        ),
        (
            format!("{WORDCOUNT}target = \"nowhere\"\n"),
            "no operator 'nowhere'",
        ),
        (format!("{WORDCOUNT}at = 1.5\n"), "outside 0.0..=1.0"),
        (
            WORDCOUNT.replace("job = \"wordcount\"", "job = \"tetris\""),
            "tetris",
        ),
    ];
    for (text, expected) in cases {
        let error = Scenario::parse("bad", &text).expect_err("refused");
        assert!(
            error.contains(expected),
            "{error:?} should mention {expected:?}"
        );
    }
}

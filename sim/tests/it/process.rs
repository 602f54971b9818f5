//! The keyed process jobs: state in namespaces read back key by key, and processing-time timers
//! whose firing time the output does not depend on.

use rill_sim::runner::run_seed;
use rill_sim::scenario::Scenario;

fn scenario(job: &str, role: &str, extra: &str) -> Scenario {
    let text = format!(
        r#"
description = "{job} in a test"
job = "{job}"
property = "exactly-once"
{extra}

[input]
records = 400
partitions = 2
keys = 8
arrival_ms = 20

[parallelism]
source = 2
{role} = 2

[checkpoint]
interval_ms = 2

[[fault]]
kind = "crash-subtask"
count = 2
"#
    );
    Scenario::parse("test", &text).expect("a valid scenario")
}

#[test]
fn namespaced_state_is_restored_and_read_back_key_by_key() {
    let scenario = scenario("bucket-sums", "buckets", "");
    for seed in 0..3 {
        let report = run_seed(&scenario, seed, None, false);
        assert_eq!(report.checked.violation, None, "seed {seed}");
        assert_eq!(report.checked.keys_checked, 8, "seed {seed}");
        assert_eq!(report.stats.recoveries, 2, "seed {seed}");
    }
}

#[test]
fn processing_time_timers_survive_restores_without_changing_the_output() {
    let scenario = scenario("processing-timers", "timers", "");
    for seed in 0..3 {
        let report = run_seed(&scenario, seed, None, false);
        assert_eq!(report.checked.violation, None, "seed {seed}");
        assert_eq!(report.stats.recoveries, 2, "seed {seed}");
    }
    let broken = scenario(
        "processing-timers",
        "timers",
        "broken = \"process-drops-timers\"\nexpect = \"violation\"",
    );
    let caught = (0..5).any(|seed| run_seed(&broken, seed, None, false).checked.violation.is_some());
    assert!(caught, "timers dropped on restore go unseen");
}

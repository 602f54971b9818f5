//! The keyed process jobs: state in namespaces read back key by key, and processing-time timers
//! whose firing time the output does not depend on.

use rill_sim::faults::Defect;
use rill_sim::runner::run_seed;
use rill_sim::scenario::Expect;

use super::event_time::scenario;

const CRASHES: &str = r#"
[[fault]]
kind = "crash-subtask"
count = 2
"#;

#[test]
fn namespaced_state_is_restored_and_read_back_key_by_key() {
    let scenario = scenario("bucket-sums", "buckets", CRASHES);
    for seed in 0..3 {
        let report = run_seed(&scenario, seed, None, false);
        assert_eq!(report.checked.violation, None, "seed {seed}");
        assert_eq!(report.checked.keys_checked, 8, "seed {seed}");
        assert_eq!(report.stats.recoveries, 2, "seed {seed}");
    }
}

#[test]
fn processing_time_timers_survive_restores_without_changing_the_output() {
    let mut timers = scenario("processing-timers", "timers", CRASHES);
    for seed in 0..3 {
        let report = run_seed(&timers, seed, None, false);
        assert_eq!(report.checked.violation, None, "seed {seed}");
        assert_eq!(report.stats.recoveries, 2, "seed {seed}");
    }
    timers.spec.broken = Some(Defect::ProcessDropsTimers);
    timers.spec.expect = Expect::Violation;
    let caught = (0..5).any(|seed| {
        run_seed(&timers, seed, None, false)
            .checked
            .violation
            .is_some()
    });
    assert!(caught, "timers dropped on restore go unseen");
}

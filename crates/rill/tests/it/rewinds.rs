//! A job that would start behind what its sink committed — its checkpoints deleted — is
//! refused, naming what the sink committed, unless the rewind is allowed.

use std::time::Duration;

use rill::prelude::*;

fn committed(log: &EventLog) -> u64 {
    log.end_offsets("upper").unwrap().iter().sum()
}

/// Upper-cases the lines, bounded, with checkpoints in `checkpoints`.
fn upper_case(
    log: &EventLog,
    checkpoints: &std::path::Path,
    allow_rewind: bool,
) -> Result<(), RillError> {
    let env = StreamEnv::new();
    env.enable_checkpointing(Duration::from_millis(50))
        .set_checkpoint_dir(checkpoints);
    if allow_rewind {
        env.allow_rewind();
    }
    env.from_log(LogSource::text(log, "lines")?.bounded())
        .map(|line: String| line.to_uppercase())
        .uid("upper")
        .sink_to_log(LogSink::text(log, "upper")?);
    env.execute("upper case").map(drop)
}

#[test]
fn a_job_whose_checkpoints_were_deleted_does_not_commit_its_output_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open_or_create(dir.path().join("log")).unwrap();
    log.create_topic("lines", 1).unwrap();
    log.create_topic("upper", 1).unwrap();
    let lines = (0..100)
        .map(|i| ProducerRecord::new(format!("line {i}")))
        .collect();
    log.append_batch("lines", lines).unwrap();
    let checkpoints = dir.path().join("checkpoints");

    upper_case(&log, &checkpoints, false).unwrap();
    assert_eq!(committed(&log), 100);

    std::fs::remove_dir_all(&checkpoints).unwrap();
    let error = upper_case(&log, &checkpoints, false)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("sink 'upper case/") && error.contains("starts from no checkpoint"),
        "{error}"
    );
    assert_eq!(committed(&log), 100, "nothing written twice");

    std::fs::remove_dir_all(&checkpoints).unwrap();
    upper_case(&log, &checkpoints, true).unwrap();
    assert_eq!(
        committed(&log),
        200,
        "allowed, the rewind writes the output again"
    );
}

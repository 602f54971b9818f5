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
    // Two more runs over a few more lines each: the sink's mark is at the third run's final
    // checkpoint at least, past where a new store's numbering starts.
    for run in 0..2 {
        let more = (0..10)
            .map(|i| ProducerRecord::new(format!("more {run} {i}")))
            .collect();
        log.append_batch("lines", more).unwrap();
        upper_case(&log, &checkpoints, false).unwrap();
    }
    assert_eq!(committed(&log), 120);

    std::fs::remove_dir_all(&checkpoints).unwrap();
    let error = upper_case(&log, &checkpoints, false)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("sink 'upper case/") && error.contains("starts from no checkpoint"),
        "{error}"
    );
    assert_eq!(committed(&log), 120, "nothing written twice");

    std::fs::remove_dir_all(&checkpoints).unwrap();
    upper_case(&log, &checkpoints, true).unwrap();
    assert_eq!(
        committed(&log),
        240,
        "allowed, the rewind writes the output again"
    );

    let more = (100..150)
        .map(|i| ProducerRecord::new(format!("line {i}")))
        .collect();
    log.append_batch("lines", more).unwrap();
    upper_case(&log, &checkpoints, false).unwrap();
    assert_eq!(
        committed(&log),
        290,
        "the next run resumes from the rewound run's checkpoints (numbered from 1 again in \
         the new store) without being refused, and writes the new lines once"
    );
}

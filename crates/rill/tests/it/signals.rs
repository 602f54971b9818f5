//! A job run until it is asked to stop: a stop request (as an application's shutdown would)
//! stops a job with a checkpoint store with a savepoint that the next run goes on from (every
//! record committed once over both runs), and cancels one without, saying that its output was
//! not committed (and none was). One test sends Ctrl-C itself: to this test process, with
//! tokio's handler installed first, so that no signal can reach the process before something
//! listens for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rill::prelude::*;
use rill::store::CheckpointStore;
use rill::{RunningJob, SignalledEnd, StopSignal};
use tokio::signal::unix::{SignalKind, signal};

const LINES: u64 = 2_000;

fn committed(log: &EventLog) -> u64 {
    log.end_offsets("upper").unwrap().iter().sum()
}

/// A log with `LINES` lines in topic `lines` and an empty topic `upper`.
fn log_with_lines(dir: &std::path::Path) -> EventLog {
    let log = EventLog::open_or_create(dir.join("log")).unwrap();
    log.create_topic("lines", 2).unwrap();
    log.create_topic("upper", 2).unwrap();
    let lines = (0..LINES)
        .map(|i| ProducerRecord::new(format!("line {i}")))
        .collect();
    log.append_batch("lines", lines).unwrap();
    log
}

/// Upper-cases the lines into `upper`, reading `lines` unbounded unless `bounded`.
fn upper_case(log: &EventLog, checkpoints: Option<&std::path::Path>, bounded: bool) -> StreamEnv {
    let env = StreamEnv::new();
    if let Some(dir) = checkpoints {
        env.enable_checkpointing(Duration::from_millis(20))
            .set_checkpoint_dir(dir);
    }
    let mut source = LogSource::text(log, "lines").unwrap();
    if bounded {
        source = source.bounded();
    }
    env.from_log(source)
        .map(|line: String| line.to_uppercase())
        .uid("upper")
        .sink_to_log(LogSink::text(log, "upper").unwrap());
    env
}

/// Runs the job until it ends, sending this process SIGINT until it has (again and again: the
/// job may start listening after one has arrived).
fn interrupted(job: RunningJob) -> SignalledEnd {
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Installed before the first signal is sent: from here on SIGINT reaches tokio, never the
    // default action that ends the process. Kept until the job has ended.
    let _handler = signals.block_on(async { signal(SignalKind::interrupt()).unwrap() });
    let ended = Arc::new(AtomicBool::new(false));
    let sender = std::thread::spawn({
        let ended = ended.clone();
        move || {
            while !ended.load(Ordering::Acquire) {
                let status = std::process::Command::new("kill")
                    .args(["-INT", &std::process::id().to_string()])
                    .status()
                    .unwrap();
                assert!(status.success(), "kill -INT failed: {status}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let end = signals.block_on(job.join_until_signal());
    ended.store(true, Ordering::Release);
    sender.join().unwrap();
    end.unwrap()
}

/// Runs the job until it ends, asking it to stop at once.
fn stopped(job: RunningJob) -> SignalledEnd {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(job.join_until(async {})).unwrap()
}

#[test]
fn a_stop_request_takes_a_savepoint_the_next_run_goes_on_from() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_lines(dir.path());
    let checkpoints = dir.path().join("checkpoints");

    let job = upper_case(&log, Some(&checkpoints), false)
        .execute_async("upper case")
        .unwrap();
    let end = stopped(job);
    let SignalledEnd::Savepoint {
        signal, savepoint, ..
    } = &end
    else {
        panic!("not stopped with a savepoint: {end}");
    };
    assert_eq!(*signal, StopSignal::Requested);
    assert!(
        end.to_string()
            .contains(&format!("with savepoint {}", savepoint.checkpoint.0)),
        "{end}"
    );
    let store = CheckpointStore::open_read_only(&checkpoints).unwrap();
    let stored = store.get("upper case", savepoint.checkpoint).unwrap();
    assert!(stored.is_some(), "savepoint {savepoint:?} is in the store");

    upper_case(&log, Some(&checkpoints), true)
        .execute("upper case")
        .unwrap();
    assert_eq!(committed(&log), LINES, "every line committed once");
}

#[test]
fn a_stop_request_cancels_a_job_without_checkpoints_and_says_its_output_was_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_lines(dir.path());

    let job = upper_case(&log, None, false)
        .execute_async("upper case")
        .unwrap();
    let end = stopped(job);
    assert!(
        matches!(
            end,
            SignalledEnd::Cancelled {
                signal: StopSignal::Requested,
                ..
            }
        ),
        "{end:?}"
    );
    assert!(end.to_string().contains("was not committed"), "{end}");
    assert_eq!(committed(&log), 0);
}

#[test]
fn ctrl_c_stops_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_lines(dir.path());
    let job = upper_case(&log, None, false)
        .execute_async("upper case")
        .unwrap();
    let end = interrupted(job);
    assert!(
        matches!(
            end,
            SignalledEnd::Cancelled {
                signal: StopSignal::Interrupt,
                ..
            }
        ),
        "{end:?}"
    );
    assert!(end.to_string().contains("on Ctrl-C"), "{end}");
}

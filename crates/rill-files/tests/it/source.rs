//! The file source in real jobs: a bounded directory of JSON lines read exactly; every line
//! read exactly once across a failure and across a stop, a savepoint and a rescale (the output
//! committed exactly-once to the event log, so that a line read twice or skipped shows); a file
//! added while a watching job runs.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rill::prelude::*;
use rill_files::{FileSource, FilesExt};

use crate::{Event, fails_once_at, small_batches, wait_until, write_events, write_parts};

/// A log with the topic `ids`, in a directory of its own.
fn ids_log(dir: &Path) -> EventLog {
    let log = EventLog::open_or_create(dir.join("log")).unwrap();
    log.create_topic("ids", 1).unwrap();
    log
}

/// The ids committed to the topic `ids`, sorted.
fn committed_ids(log: &EventLog) -> Vec<u64> {
    let end = log.end_offsets("ids").unwrap()[0];
    let mut ids: Vec<u64> = log
        .read("ids", 0, 0, end as usize)
        .unwrap()
        .iter()
        .map(|record| String::from_utf8_lossy(&record.value).parse().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// Reads the events of `source`, passes each to `inspect`, and commits their ids to `ids`
/// exactly-once.
fn ids_job(
    env: &StreamEnv,
    log: &EventLog,
    source: FileSource<Event>,
    inspect: impl Fn(&Event) + Send + Sync + 'static,
) {
    let sink = LogSink::with_encoder(log, "ids", |event: &Event| {
        ProducerRecord::new(event.id.to_string().into_bytes())
    })
    .unwrap();
    env.from_files(source)
        .uid("events")
        .map(move |event| {
            inspect(&event);
            event
        })
        .sink_to_log(sink);
}

#[test]
fn a_bounded_job_reads_a_directory_of_json_lines_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for (file, name) in ["b.jsonl", "a.jsonl", "c.jsonl"].iter().enumerate() {
        expected.extend(write_events(dir.path(), name, file as u64 * 100, 100));
    }
    std::fs::write(dir.path().join("empty.jsonl"), "").unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let events = env
        .from_files(FileSource::<Event>::json_lines(dir.path()).unwrap())
        .collect();
    env.execute("json lines").unwrap();
    let mut read = events.take();
    read.sort();
    assert_eq!(read, expected);
}

#[test]
fn a_job_that_fails_mid_run_restores_its_checkpoint_and_reads_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::create_dir(&input).unwrap();
    let total = write_parts(&input, 5, 1_200);
    let log = ids_log(dir.path());
    // The 4000th event read, counted over every attempt, fails its subtask once.
    let (env, seen, inspect) = fails_once_at(4_000);
    let source = FileSource::json_lines(&input).unwrap();
    ids_job(&env, &log, source, inspect);
    let report = env.execute("ids").unwrap();
    assert_eq!(report.restarts, 1);
    assert!(report.checkpoints_completed > 0);
    assert_eq!(committed_ids(&log), (0..total).collect::<Vec<_>>());
    let read_again = seen.load(Ordering::Relaxed) - total;
    assert!(
        read_again < 4_000,
        "the second attempt read on from a checkpoint, not from the start: {read_again} events \
         read twice"
    );
}

#[test]
fn a_watching_job_stopped_with_a_savepoint_and_rescaled_reads_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::create_dir(&input).unwrap();
    let total = write_parts(&input, 7, 1_000);
    let log = ids_log(dir.path());
    let configured = |parallelism: u32, source: FileSource<Event>| {
        let env = small_batches(parallelism);
        env.enable_checkpointing(Duration::from_millis(20));
        env.set_checkpoint_dir(dir.path().join("checkpoints"));
        ids_job(&env, &log, source, |_| {
            std::thread::sleep(Duration::from_micros(100));
        });
        env
    };
    // Watching, the first run never ends by itself: it is stopped part-way.
    let watching = FileSource::json_lines(&input)
        .unwrap()
        .watch(Duration::from_millis(10));
    let job = configured(2, watching).execute_async("ids").unwrap();
    wait_until("a quarter of the ids committed", || {
        committed_ids(&log).len() as u64 >= total / 4
    });
    let savepoint = job.stop_with_savepoint().wait().unwrap();
    assert!(savepoint.savepoint);
    job.wait().unwrap();
    let stopped_at = committed_ids(&log).len() as u64;
    assert!(stopped_at < total, "stopped part-way");

    // Resumed at parallelism 3 from the savepoint, bounded: the files the first run knew.
    configured(3, FileSource::json_lines(&input).unwrap().bounded())
        .execute("ids")
        .unwrap();
    assert_eq!(committed_ids(&log), (0..total).collect::<Vec<_>>());
}

#[test]
fn a_watching_job_reads_a_file_added_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = write_events(dir.path(), "a.jsonl", 0, 50);
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let source = FileSource::<Event>::json_lines(dir.path())
        .unwrap()
        .watch(Duration::from_millis(10));
    let events = env.from_files(source).collect();
    let job = env.execute_async("watching").unwrap();
    wait_until("the first file read", || events.len() == 50);
    // Written under a hidden name, then put in place whole.
    expected.extend(write_events(dir.path(), ".b.jsonl.tmp", 50, 70));
    std::fs::rename(dir.path().join(".b.jsonl.tmp"), dir.path().join("b.jsonl")).unwrap();
    wait_until("the added file read", || events.len() >= 120);
    job.cancel();
    assert!(job.wait().is_err(), "a cancelled job says so");
    let mut read = events.take();
    read.sort();
    assert_eq!(read, expected);
}

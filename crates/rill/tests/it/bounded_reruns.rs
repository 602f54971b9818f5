//! A bounded event-time job run again over more input: the end of the first run's input must
//! not make every record of the second run late.

use std::time::Duration;

use rill::prelude::*;

const SECOND: i64 = 1_000;

/// Appends one view of `page` at each time (ms).
fn append_views(log: &EventLog, page: &str, times: &[i64]) {
    let records = times
        .iter()
        .map(|&at| ProducerRecord::new(page.as_bytes().to_vec()).with_timestamp(at))
        .collect();
    log.append_batch("views", records).unwrap();
}

/// Counts views per page in one-second windows, bounded, checkpointing to `checkpoints`.
fn count_views(log: &EventLog, checkpoints: &std::path::Path) {
    let env = StreamEnv::new();
    env.enable_checkpointing(Duration::from_millis(50))
        .set_checkpoint_dir(checkpoints);
    let source = LogSource::text(log, "views")
        .unwrap()
        .bounded()
        .with_watermarks(WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO));
    let sink = LogSink::with_encoder(log, "counts", |views: &(String, u64)| {
        ProducerRecord::new(views.1.to_string().into_bytes())
    })
    .unwrap();
    env.from_log(source)
        .map(|page| (page, 1u64))
        .key_by(|(page, _): &(String, u64)| page.clone())
        .window(WindowAssigner::tumbling(Duration::from_secs(1)).unwrap())
        .reduce(|(page, a), (_, b)| (page, a + b))
        .uid("views-per-second")
        .sink_to_log(sink);
    env.execute("views per second").unwrap();
}

/// A log with the topics `views` and `counts`, in a directory of its own.
fn views_log() -> (tempfile::TempDir, EventLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open_or_create(dir.path().join("log")).unwrap();
    log.create_topic("views", 1).unwrap();
    log.create_topic("counts", 1).unwrap();
    (dir, log)
}

fn counted(log: &EventLog) -> u64 {
    let end = log.end_offsets("counts").unwrap()[0];
    log.read("counts", 0, 0, end as usize)
        .unwrap()
        .iter()
        .map(|record| {
            String::from_utf8_lossy(&record.value)
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn a_bounded_windowed_job_run_again_counts_the_records_appended_since() {
    let (dir, log) = views_log();
    let checkpoints = dir.path().join("checkpoints");

    append_views(&log, "home", &[100, 900, 1_500, 2_200]);
    count_views(&log, &checkpoints);
    assert_eq!(counted(&log), 4);

    // The second run's views: in the window the first run's end of input fired early
    // ([2 s, 3 s)), and later ones. None is late for what the first run's views reached.
    append_views(
        &log,
        "home",
        &[2 * SECOND + 500, 3 * SECOND + 10, 5 * SECOND],
    );
    count_views(&log, &checkpoints);
    assert_eq!(counted(&log), 7, "every view of both runs is counted, once");
}

#[test]
fn retention_holds_across_runs() {
    let (dir, log) = views_log();
    let checkpoints = dir.path().join("checkpoints");
    for run in 0..6 {
        append_views(&log, "home", &[run * SECOND + 1]);
        count_views(&log, &checkpoints);
    }
    let store = rill::store::CheckpointStore::open_read_only(&checkpoints).unwrap();
    let kept = store.list("views per second").unwrap();
    assert!(
        (1..=3).contains(&kept.len()),
        "the store keeps the default 3, whatever run wrote them: {} kept",
        kept.len()
    );
    assert_eq!(counted(&log), 6);
}

//! Jobs that read and write the embedded event log: word count end to end against a reference,
//! the bounded mode ending the job, and the unbounded mode picking up new records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rill::prelude::*;

use crate::support::Counter;

fn split(line: String) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

fn read_all(log: &EventLog, topic: &str) -> Vec<LogRecord> {
    let ends = log.end_offsets(topic).unwrap();
    let mut records = Vec::new();
    for (partition, end) in ends.into_iter().enumerate() {
        records.extend(log.read(topic, partition as u32, 0, end as usize).unwrap());
    }
    records
}

fn word_count_job(env: &StreamEnv, log: &EventLog, bounded: bool) {
    word_count_job_with(env, log, bounded, |_| {});
}

/// The word count job, with `inspect` called on every line before it is split.
fn word_count_job_with(
    env: &StreamEnv,
    log: &EventLog,
    bounded: bool,
    inspect: impl Fn(&str) + Send + Sync + 'static,
) {
    let mut source = LogSource::text(log, "lines").unwrap();
    if bounded {
        source = source.bounded();
    }
    let sink = LogSink::with_encoder(log, "counts", |(word, count): &(String, u64)| {
        ProducerRecord::new(format!("{word}\t{count}").into_bytes())
            .with_key(word.clone().into_bytes())
    })
    .unwrap();
    env.from_log(source)
        .map(move |line: String| {
            inspect(&line);
            line
        })
        .flat_map(split)
        .key_by(|word: &String| word.clone())
        .process(Counter::new())
        .sink_to_log(sink);
}

/// Per word, the counts in log order.
fn counts_by_word(records: &[LogRecord]) -> BTreeMap<String, Vec<u64>> {
    let mut by_word: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in records {
        let text = String::from_utf8(record.value.clone()).unwrap();
        let (word, count) = text.split_once('\t').unwrap();
        by_word
            .entry(word.to_owned())
            .or_default()
            .push(count.parse().unwrap());
    }
    by_word
}

/// A log whose topic `lines` (with `partitions` partitions) holds `lines`, and an empty topic
/// `counts`; with each word's count in `lines`.
fn log_with_lines(
    dir: &std::path::Path,
    partitions: u32,
    lines: &[String],
) -> (EventLog, BTreeMap<String, u64>) {
    let log = EventLog::open_or_create(dir).unwrap();
    log.create_topic("lines", partitions).unwrap();
    log.create_topic("counts", 2).unwrap();
    append_lines(&log, lines);
    (log, word_counts(lines))
}

fn append_lines(log: &EventLog, lines: &[String]) {
    let records = lines
        .iter()
        .map(|l| ProducerRecord::new(l.clone().into_bytes()))
        .collect();
    log.append_batch("lines", records).unwrap();
}

/// Each word's count in `lines`.
fn word_counts(lines: &[String]) -> BTreeMap<String, u64> {
    let mut reference: BTreeMap<String, u64> = BTreeMap::new();
    for word in lines.iter().flat_map(|l| l.split_whitespace()) {
        *reference.entry(word.to_owned()).or_default() += 1;
    }
    reference
}

#[test]
fn bounded_word_count_over_the_log_equals_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..3_000)
        .map(|i| format!("alpha b{} c{}", i % 17, i % 5))
        .collect();
    let (log, reference) = log_with_lines(dir.path(), 3, &lines);

    let env = StreamEnv::new();
    env.set_parallelism(2);
    word_count_job(&env, &log, true);
    env.execute("wordcount").unwrap();

    let by_word = counts_by_word(&read_all(&log, "counts"));
    assert_eq!(
        by_word.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (word, counts) in by_word {
        assert_eq!(
            counts,
            (1..=reference[&word]).collect::<Vec<_>>(),
            "updates of '{word}'"
        );
    }
}

#[test]
fn an_unbounded_source_picks_up_records_appended_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open_or_create(dir.path()).unwrap();
    log.create_topic("lines", 2).unwrap();
    log.create_topic("counts", 1).unwrap();
    let env = StreamEnv::new();
    // The sink commits what it wrote at each checkpoint: only then do readers see it.
    env.enable_checkpointing(Duration::from_millis(50));
    word_count_job(&env, &log, false);
    let job = env.execute_async("live wordcount").unwrap();
    for round in 0..5 {
        log.append(
            "lines",
            ProducerRecord::new(format!("live round{round}").into_bytes()),
        )
        .unwrap();
    }
    // Wait (bounded) for the five updates of "live" to come out, then stop the job.
    let deadline = Instant::now() + Duration::from_secs(30);
    let live_counts = loop {
        let counts = counts_by_word(&read_all(&log, "counts"));
        let live = counts.get("live").cloned().unwrap_or_default();
        if live.len() == 5 || Instant::now() > deadline {
            break live;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    job.cancel();
    assert!(
        job.wait().is_err(),
        "a cancelled job reports that it was cancelled"
    );
    assert_eq!(live_counts, vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open_or_create(dir.path()).unwrap();
    let error = LogSource::text(&log, "nope").err().expect("unknown topic");
    assert!(error.to_string().contains("nope"), "{error}");
}

#[test]
fn a_word_count_started_again_resumes_from_its_checkpoint_and_its_log_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..4_000)
        .map(|i| format!("line{i} w{} w{}", i % 13, i % 5))
        .collect();
    let (log, mut reference) = log_with_lines(&dir.path().join("log"), 2, &lines);
    // Small batches: a source subtask takes a checkpoint between two batches.
    let mut config = ExecutionConfig::default();
    config.runtime.flow.batch_size = 16;
    let configured = || {
        let env = StreamEnv::with_config(config);
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(5));
        env.set_checkpoint_dir(dir.path().join("checkpoints"));
        env
    };
    // The first run fails at the first line it reads once a checkpoint has committed counts. It
    // reads slowly, so that this usually comes half-way, and is unbounded, so that it is still
    // running then; the line appended after the counts came makes sure it reads one more.
    let crash = Arc::new(AtomicBool::new(false));
    let first = configured();
    let crashing = crash.clone();
    word_count_job_with(&first, &log, false, move |line| {
        std::thread::sleep(Duration::from_micros(100));
        assert!(!crashing.load(Ordering::SeqCst), "crash at {line}");
    });
    let job = first.execute_async("wordcount").unwrap();
    wait_for_committed(&log, 1);
    crash.store(true, Ordering::SeqCst);
    append_lines(&log, &["crash".to_owned()]);
    *reference.entry("crash".to_owned()).or_default() += 1;
    assert!(job.wait().is_err());
    let after_first = read_all(&log, "counts").len();

    let second = configured();
    word_count_job(&second, &log, true);
    second.execute("wordcount").unwrap();
    let records = read_all(&log, "counts");
    let written_by_second = records.len() - after_first;
    assert_exactly_once(&records, &reference);
    let total_words: u64 = reference.values().sum();
    assert!(
        (written_by_second as u64) < total_words,
        "the second run read on from the checkpoint's offsets ({written_by_second} of {total_words} updates)"
    );
}

/// Every word's committed counts are exactly 1, 2, …, n with n its true count: nothing lost,
/// nothing twice.
fn assert_exactly_once(records: &[LogRecord], reference: &BTreeMap<String, u64>) {
    let by_word = counts_by_word(records);
    assert_eq!(
        by_word.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (word, counts) in by_word {
        let mut sorted = counts.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (1..=reference[&word]).collect::<Vec<_>>(),
            "the committed counts of '{word}'"
        );
    }
}

#[test]
fn a_panic_in_a_subtask_restarts_the_job_and_the_committed_output_is_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..6_000)
        .map(|i| format!("line{} w{} w{}", i % 101, i % 13, i % 7))
        .collect();
    let (log, reference) = log_with_lines(&dir.path().join("log"), 3, &lines);
    let mut config = ExecutionConfig::default();
    config.runtime.flow.batch_size = 16;
    let env = StreamEnv::with_config(config);
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(5));
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 10,
    });
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    word_count_job_with(&env, &log, true, move |_| {
        std::thread::sleep(Duration::from_micros(50));
        // The 4000th line read, counted over every attempt, fails its subtask once.
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n != 4_000, "injected failure");
    });
    let report = env.execute("wordcount").unwrap();
    assert_eq!(report.restarts, 1);
    assert!(report.checkpoints_completed > 0);
    assert_exactly_once(&read_all(&log, "counts"), &reference);
    assert!(
        log.transactions("").unwrap().is_empty(),
        "no transaction is left open"
    );
}

/// Waits (bounded) until the topic `counts` holds at least `at_least` committed records.
fn wait_for_committed(log: &EventLog, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_all(log, "counts").len() < at_least {
        assert!(
            Instant::now() < deadline,
            "no progress to {at_least} records"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_word_count_on_fjall_state_stopped_with_savepoints_and_rescaled_two_three_one_is_exactly_once()
{
    let dir = tempfile::tempdir().unwrap();
    let fjall = StateBackendConfig::Fjall {
        dir: dir.path().join("state"),
    };
    rescale_two_three_one(dir.path(), [fjall.clone(), fjall.clone(), fjall]);
}

#[test]
fn savepoints_restore_across_state_backends_and_parallelisms() {
    let dir = tempfile::tempdir().unwrap();
    let fjall = StateBackendConfig::Fjall {
        dir: dir.path().join("state"),
    };
    rescale_two_three_one(
        dir.path(),
        [
            StateBackendConfig::Memory,
            fjall,
            StateBackendConfig::Memory,
        ],
    );
}

/// Runs word count at parallelism 2, then 3, each stopped with a savepoint part-way, then at
/// parallelism 1 to the end, the runs keeping their state in `backends`; checks that every
/// committed count is there exactly once.
fn rescale_two_three_one(dir: &std::path::Path, backends: [StateBackendConfig; 3]) {
    let lines: Vec<String> = (0..6_000)
        .map(|i| format!("line{} w{} w{}", i % 101, i % 13, i % 7))
        .collect();
    let reference = word_counts(&lines);
    let total: u64 = reference.values().sum();
    // The input comes in parts, the next one appended once a run has stopped: each run that is
    // stopped has only part of it to read, so it stops part-way however fast it runs.
    let (first_part, rest) = lines.split_at(lines.len() / 2);
    let (second_part, last_part) = rest.split_at(rest.len() / 2);
    let (log, _) = log_with_lines(&dir.join("log"), 3, first_part);
    let configured = |parallelism: u32, bounded: bool, backend: &StateBackendConfig| {
        let mut config = ExecutionConfig::default();
        config.runtime.flow.batch_size = 16;
        let env = StreamEnv::with_config(config);
        env.set_parallelism(parallelism);
        env.enable_checkpointing(Duration::from_millis(20));
        env.set_checkpoint_dir(dir.join("checkpoints"));
        env.set_state_backend(backend.clone());
        word_count_job_with(&env, &log, bounded, |_| {
            std::thread::sleep(Duration::from_micros(100));
        });
        env
    };
    let [first, second, last] = backends;
    let runs = [
        (2, total / 4, first, second_part),
        (3, total / 2, second, last_part),
    ];
    for (parallelism, progress, backend, next_part) in runs {
        let job = configured(parallelism, false, &backend)
            .execute_async("rescaled")
            .unwrap();
        wait_for_committed(&log, progress as usize);
        let savepoint = job.stop_with_savepoint().wait().unwrap();
        assert!(savepoint.savepoint);
        let report = job.wait().unwrap();
        assert_eq!(
            report.latest_checkpoint.map(|c| c.checkpoint),
            Some(savepoint.checkpoint)
        );
        assert!(
            (read_all(&log, "counts").len() as u64) < total,
            "stopped part-way"
        );
        append_lines(&log, next_part);
    }
    configured(1, true, &last).execute("rescaled").unwrap();
    assert_exactly_once(&read_all(&log, "counts"), &reference);
    assert!(log.transactions("").unwrap().is_empty());
    assert!(
        !dir.join("state").exists(),
        "the fjall working copy is gone with its job"
    );
}

#[test]
fn a_job_started_from_an_older_savepoint_goes_on_from_exactly_there() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..4_000)
        .map(|i| format!("line{} w{}", i % 101, i % 13))
        .collect();
    let (log, reference) = log_with_lines(&dir.path().join("log"), 2, &lines);
    let total: u64 = reference.values().sum();
    let configured = |bounded: bool| {
        let mut config = ExecutionConfig::default();
        config.runtime.flow.batch_size = 16;
        let env = StreamEnv::with_config(config);
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(20));
        env.set_checkpoint_dir(dir.path().join("checkpoints"));
        word_count_job_with(&env, &log, bounded, |_| {
            std::thread::sleep(Duration::from_micros(100));
        });
        env
    };
    // Two runs, each stopped with a savepoint: the first a quarter of the way, the second half.
    let mut savepoints = Vec::new();
    for progress in [total / 4, total / 2] {
        let job = configured(false).execute_async("replayed").unwrap();
        wait_for_committed(&log, progress as usize);
        let savepoint = job.stop_with_savepoint().wait().unwrap().checkpoint;
        // Once the job has ended, its sinks have committed everything the savepoint covers.
        job.wait().unwrap();
        savepoints.push((savepoint, read_all(&log, "counts").len() as u64));
    }
    let (first, committed_at_first) = savepoints[0];

    let missing = configured(true);
    missing.start_from_checkpoint(9_999);
    let error = missing.execute("replayed").unwrap_err().to_string();
    assert!(error.contains("no completed checkpoint 9999"), "{error}");

    // From the first savepoint, the sink would commit again what it committed since: refused,
    // naming both points, and nothing is written.
    let before = read_all(&log, "counts").len() as u64;
    let refused = configured(true);
    refused.start_from_checkpoint(first.0);
    let error = refused.execute("replayed").unwrap_err().to_string();
    let (second, _) = savepoints[1];
    assert!(
        error.contains(&format!("committed the output of checkpoint {}", second.0))
            && error.contains(&format!("starts from checkpoint {}", first.0)),
        "{error}"
    );
    assert_eq!(read_all(&log, "counts").len() as u64, before);

    // Allowed: its counts and its offsets, so the run writes exactly what came after it,
    // again.
    let replay = configured(true);
    replay.start_from_checkpoint(first.0).allow_rewind();
    let report = replay.execute("replayed").unwrap();
    let written = read_all(&log, "counts").len() as u64 - before;
    assert_eq!(written, total - committed_at_first);
    assert!(
        report.latest_checkpoint.unwrap().checkpoint > savepoints[1].0,
        "the replay numbers its checkpoints past every earlier one"
    );
    let by_word = counts_by_word(&read_all(&log, "counts"));
    for (word, counts) in by_word {
        assert_eq!(counts.last(), Some(&reference[&word]), "{word}");
    }
}

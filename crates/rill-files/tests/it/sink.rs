//! The file sink in real jobs: a checkpointed job writes every record once across its part
//! files (rolled by size), and the file source reads them back; a job that fails mid-run
//! leaves no record twice and no in-progress or pending file; a job without checkpoints
//! commits at its end; a fresh start behind what the sink committed is refused unless allowed;
//! at-least-once files; text lines and CSV.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rill::prelude::*;
use rill_files::{FileSink, FileSource, FilesExt, FilesSinkExt};

use crate::{Event, fails_once_at, small_batches, write_parts};

/// The visible files of `dir` (names not starting with `.`), sorted.
pub fn visible_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The part files still in progress or pending in `dir`.
pub fn hidden_parts(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(".part-"))
        .collect()
}

/// The lines of the visible files of `dir`, sorted.
pub fn visible_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for name in visible_files(dir) {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        lines.extend(text.lines().map(str::to_owned));
    }
    lines.sort();
    lines
}

/// The ids of the events in the visible files of `dir`, sorted.
fn committed_ids(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = visible_lines(dir)
        .iter()
        .map(|line| serde_json::from_str::<Event>(line).unwrap().id)
        .collect();
    ids.sort_unstable();
    ids
}

/// Copies the events of `input` into `sink`, passing each to `inspect`.
fn copy_job(
    env: &StreamEnv,
    input: &Path,
    sink: FileSink<Event>,
    inspect: impl Fn(&Event) + Send + Sync + 'static,
) {
    env.from_files(FileSource::json_lines(input).unwrap())
        .uid("events")
        .map(move |event| {
            inspect(&event);
            event
        })
        .sink_to_files(sink)
        .uid("copy");
}

#[test]
fn a_checkpointed_job_writes_every_record_once_across_part_files_that_the_source_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("input"), dir.path().join("out/events"));
    std::fs::create_dir(&input).unwrap();
    let total = write_parts(&input, 4, 1_000);
    let env = small_batches(2);
    env.enable_checkpointing(Duration::from_millis(5));
    let sink = FileSink::json_lines(&output)
        .expect("the missing output directory is created")
        .roll_at_bytes(4_096);
    copy_job(&env, &input, sink, |_| {
        std::thread::sleep(Duration::from_micros(20));
    });
    let report = env.execute("copy").unwrap();
    assert!(report.checkpoints_completed > 1);
    assert_eq!(committed_ids(&output), (0..total).collect::<Vec<_>>());
    assert!(
        hidden_parts(&output).is_empty(),
        "{:?}",
        hidden_parts(&output)
    );
    let files = visible_files(&output);
    assert!(
        files.len() > 2 * 4 && files.iter().all(|name| name.starts_with("part-copy-copy-")),
        "several checkpoints and rolls, each a file: {files:?}"
    );
    for name in &files {
        let bytes = std::fs::metadata(output.join(name)).unwrap().len();
        assert!(bytes <= 4_096, "{name} is {bytes} bytes");
    }

    let env = StreamEnv::new();
    let read = env
        .from_files(FileSource::<Event>::json_lines(&output).unwrap())
        .collect();
    env.execute("read back").unwrap();
    let mut read: Vec<u64> = read.take().iter().map(|event| event.id).collect();
    read.sort_unstable();
    assert_eq!(read, (0..total).collect::<Vec<_>>());
}

#[test]
fn a_job_that_fails_mid_run_restores_and_leaves_no_record_twice_and_no_hidden_file() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("input"), dir.path().join("output"));
    std::fs::create_dir(&input).unwrap();
    let total = write_parts(&input, 5, 1_200);
    // The 4000th event, counted over every attempt, fails its subtask once: the sinks have
    // pending and in-progress parts then.
    let (env, seen, inspect) = fails_once_at(4_000);
    let sink = FileSink::json_lines(&output).unwrap().roll_at_bytes(2_048);
    copy_job(&env, &input, sink, inspect);
    let report = env.execute("copy").unwrap();
    assert_eq!(report.restarts, 1);
    assert!(report.checkpoints_completed > 0);
    assert_eq!(committed_ids(&output), (0..total).collect::<Vec<_>>());
    assert!(
        hidden_parts(&output).is_empty(),
        "{:?}",
        hidden_parts(&output)
    );
    assert!(
        seen.load(Ordering::Relaxed) > total,
        "the failed attempt's output since its last checkpoint was written again"
    );
}

#[test]
fn a_job_without_checkpoints_commits_its_output_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("input"), dir.path().join("output"));
    std::fs::create_dir(&input).unwrap();
    let total = write_parts(&input, 3, 500);
    let env = small_batches(2);
    copy_job(&env, &input, FileSink::json_lines(&output).unwrap(), |_| {});
    env.execute("copy").unwrap();
    assert_eq!(committed_ids(&output), (0..total).collect::<Vec<_>>());
    assert!(
        visible_files(&output)
            .iter()
            .all(|name| !name.contains("-cp")),
        "no checkpoint in the names: {:?}",
        visible_files(&output)
    );
}

#[test]
fn a_fresh_start_behind_the_committed_output_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("input"), dir.path().join("output"));
    std::fs::create_dir(&input).unwrap();
    let total = write_parts(&input, 2, 300);
    let run = |allow_rewind: bool| {
        let env = small_batches(2);
        env.enable_checkpointing(Duration::from_millis(5));
        env.set_checkpoint_dir(dir.path().join("checkpoints"));
        if allow_rewind {
            env.allow_rewind();
        }
        copy_job(&env, &input, FileSink::json_lines(&output).unwrap(), |_| {});
        env.execute("copy")
    };
    run(false).unwrap();
    assert_eq!(committed_ids(&output), (0..total).collect::<Vec<_>>());
    // The checkpoints are lost: the output is not.
    std::fs::remove_dir_all(dir.path().join("checkpoints")).unwrap();
    let error = run(false).unwrap_err().to_string();
    assert!(
        error.contains("has committed the output of checkpoint")
            && error.contains("starts from no checkpoint")
            && error.contains(&output.display().to_string()),
        "{error}"
    );
    assert_eq!(
        committed_ids(&output).len() as u64,
        total,
        "nothing written"
    );
    // The refused run may have made a new, empty store.
    let _ = std::fs::remove_dir_all(dir.path().join("checkpoints"));
    run(true).expect("a rewind the job allows");
    assert_eq!(
        committed_ids(&output).len() as u64,
        2 * total,
        "the output written again, as the rewind accepted"
    );
}

#[test]
fn an_at_least_once_sink_writes_visible_files_directly() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("input"), dir.path().join("output"));
    std::fs::create_dir(&input).unwrap();
    let total = write_parts(&input, 3, 500);
    let env = small_batches(2);
    env.enable_checkpointing(Duration::from_millis(5));
    let sink = FileSink::json_lines(&output).unwrap().at_least_once();
    copy_job(&env, &input, sink, |_| {});
    env.execute("copy").unwrap();
    assert_eq!(committed_ids(&output), (0..total).collect::<Vec<_>>());
    let files = visible_files(&output);
    assert!(
        files.iter().all(|name| name.contains("-a"))
            && std::fs::read_dir(&output).unwrap().count() == files.len(),
        "visible files only, no marks: {files:?}"
    );
}

#[test]
fn text_lines_and_csv_are_written_as_the_source_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    let words = ["to", "be", "or", "not"].map(str::to_owned);
    env.from_iter(words.to_vec())
        .sink_to_files(FileSink::lines(dir.path().join("words")).unwrap());
    let rows = vec![
        (1_u32, "tea, \"green\"\nloose".to_owned()),
        (2, "milk".to_owned()),
    ];
    env.from_iter(rows.clone())
        .sink_to_files(FileSink::csv(dir.path().join("rows")).unwrap());
    env.execute("text and csv").unwrap();
    let mut expected = words.to_vec();
    expected.sort();
    assert_eq!(visible_lines(&dir.path().join("words")), expected);

    let env = StreamEnv::new();
    let read = env
        .from_files(FileSource::<(u32, String)>::csv(dir.path().join("rows")).unwrap())
        .collect();
    env.execute("read back").unwrap();
    let mut read = read.take();
    read.sort();
    assert_eq!(read, rows);

    let env = StreamEnv::new();
    env.from_iter(vec!["two\nlines".to_owned()])
        .sink_to_files(FileSink::lines(dir.path().join("broken")).unwrap());
    let error = env.execute("a line break").unwrap_err().to_string();
    assert!(error.contains("holds a line break"), "{error}");
}

//! The file target against the two-phase-commit contract, on a real temporary directory:
//! what each step leaves in the directory, idempotent commits and aborts, the listing of open
//! transactions, rolling, the commit marks and their rewind, and at-least-once files.

#![allow(clippy::unwrap_used)]

use super::*;

const WRITER: &str = "job/sink/";

fn target(dir: &Path, subtask: u32, roll_at_bytes: u64) -> FileTarget {
    let settings = Settings {
        dir: dir.to_owned(),
        extension: "txt".to_owned(),
        roll_at_bytes,
    };
    FileTarget::new(Arc::new(settings), WRITER.to_owned(), subtask)
}

fn records(lines: &[&str]) -> Vec<Encoded> {
    lines
        .iter()
        .map(|line| Ok(line.as_bytes().to_vec()))
        .collect()
}

fn mark(checkpoint: u64) -> Option<CommitMark<'static>> {
    Some(CommitMark {
        writer: WRITER,
        checkpoint,
    })
}

/// The directory's names, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Every line of the visible files, sorted.
fn visible_lines(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = listing(dir)
        .iter()
        .filter(|name| !name.starts_with('.'))
        .flat_map(|name| {
            let text = fs::read_to_string(dir.join(name)).unwrap();
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_transaction_goes_from_in_progress_to_pending_to_visible() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = target(dir.path(), 0, DEFAULT_ROLL);
    files.stage("job/sink/0/0", records(&["a", "b"])).unwrap();
    files.stage("job/sink/0/0", records(&["c"])).unwrap();
    assert_eq!(listing(dir.path()), [".part-job-sink-0-0-0.inprogress"]);
    files.prepare("job/sink/0/0", mark(3)).unwrap();
    assert_eq!(listing(dir.path()), [".part-job-sink-0-0-0-cp3.pending"]);
    assert!(
        visible_lines(dir.path()).is_empty(),
        "nothing visible before the commit"
    );
    files.commit("job/sink/0/0", mark(3)).unwrap();
    assert_eq!(
        listing(dir.path()),
        [".rill-mark-job-sink-0", "part-job-sink-0-0-0-cp3.txt"]
    );
    assert_eq!(visible_lines(dir.path()), ["a", "b", "c"]);
    assert_eq!(files.committed_checkpoint(WRITER).unwrap(), Some(3));
}

const DEFAULT_ROLL: u64 = crate::DEFAULT_ROLL_AT_BYTES;

#[test]
fn commits_and_aborts_are_idempotent_and_a_new_process_finds_what_to_commit_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = target(dir.path(), 0, DEFAULT_ROLL);
    files.stage("job/sink/0/0", records(&["a"])).unwrap();
    files.prepare("job/sink/0/0", mark(1)).unwrap();
    // The process dies here; a new one commits what the checkpoint had prepared, twice.
    drop(files);
    let mut restored = target(dir.path(), 0, DEFAULT_ROLL);
    restored.commit("job/sink/0/0", mark(1)).unwrap();
    restored.commit("job/sink/0/0", mark(1)).unwrap();
    assert_eq!(visible_lines(dir.path()), ["a"]);
    // Committing or aborting what was never prepared does nothing.
    restored.commit("job/sink/0/9", mark(2)).unwrap();
    restored.abort("job/sink/0/9").unwrap();
    restored.abort("job/sink/0/0").unwrap();
    assert_eq!(
        visible_lines(dir.path()),
        ["a"],
        "an abort never takes back a commit"
    );
    assert_eq!(restored.committed_checkpoint(WRITER).unwrap(), Some(2));
}

#[test]
fn open_transactions_are_the_pending_and_in_progress_ones_and_abort_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = target(dir.path(), 0, DEFAULT_ROLL);
    first.stage("job/sink/0/0", records(&["a"])).unwrap();
    first.prepare("job/sink/0/0", mark(1)).unwrap();
    first.stage("job/sink/0/1", records(&["b"])).unwrap();
    let mut second = target(dir.path(), 1, DEFAULT_ROLL);
    second.stage("job/sink/1/0", records(&["c"])).unwrap();
    second.prepare("job/sink/1/0", mark(1)).unwrap();
    let mut other = target(dir.path(), 0, DEFAULT_ROLL);
    other.stage("other/sink/0/0", records(&["d"])).unwrap();
    drop((first, second));

    let mut restored = target(dir.path(), 0, DEFAULT_ROLL);
    assert_eq!(
        restored.open_transactions(WRITER).unwrap(),
        ["job/sink/0/0", "job/sink/0/1", "job/sink/1/0"]
    );
    assert_eq!(
        restored.open_transactions("job/sink/1/").unwrap(),
        ["job/sink/1/0"]
    );
    restored.abort("job/sink/0/0").unwrap();
    restored.abort("job/sink/0/1").unwrap();
    assert_eq!(
        restored.open_transactions(WRITER).unwrap(),
        ["job/sink/1/0"]
    );
    assert!(visible_lines(dir.path()).is_empty());
    assert_eq!(
        listing(dir.path()),
        [
            ".part-job-sink-1-0-0-cp1.pending",
            ".part-other-sink-0-0-0.inprogress"
        ]
    );
}

#[test]
fn a_transaction_rolls_by_size_and_its_parts_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    // Lines of 4 bytes with their line break; a part holds two.
    let mut files = target(dir.path(), 0, 8);
    let lines: Vec<String> = (100..105).map(|n| n.to_string()).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    files.stage("job/sink/0/0", records(&lines)).unwrap();
    files
        .stage("job/sink/0/0", records(&["a-record-longer-than-a-part"]))
        .unwrap();
    assert_eq!(listing(dir.path()).len(), 4, "{:?}", listing(dir.path()));
    files.prepare("job/sink/0/0", mark(1)).unwrap();
    assert!(visible_lines(dir.path()).is_empty());
    files.commit("job/sink/0/0", mark(1)).unwrap();
    assert_eq!(
        listing(dir.path()),
        [
            ".rill-mark-job-sink-0",
            "part-job-sink-0-0-0-cp1.txt",
            "part-job-sink-0-0-1-cp1.txt",
            "part-job-sink-0-0-2-cp1.txt",
            "part-job-sink-0-0-3-cp1.txt",
        ]
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("part-job-sink-0-0-0-cp1.txt")).unwrap(),
        "100\n101\n"
    );
    let mut expected: Vec<&str> = lines.clone();
    expected.push("a-record-longer-than-a-part");
    expected.sort_unstable();
    assert_eq!(visible_lines(dir.path()), expected);
}

#[test]
fn a_commit_cut_short_between_parts_is_finished_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = target(dir.path(), 0, 4);
    files
        .stage("job/sink/0/0", records(&["abc", "def", "ghi"]))
        .unwrap();
    files.prepare("job/sink/0/0", mark(5)).unwrap();
    // As if the process died after renaming the first part into view.
    fs::rename(
        dir.path().join(".part-job-sink-0-0-0-cp5.pending"),
        dir.path().join("part-job-sink-0-0-0-cp5.txt"),
    )
    .unwrap();
    let mut restored = target(dir.path(), 0, 4);
    assert_eq!(
        restored.open_transactions(WRITER).unwrap(),
        ["job/sink/0/0"]
    );
    restored.commit("job/sink/0/0", mark(5)).unwrap();
    assert_eq!(visible_lines(dir.path()), ["abc", "def", "ghi"]);
    assert!(restored.open_transactions(WRITER).unwrap().is_empty());
}

#[test]
fn the_mark_is_the_newest_of_every_subtask_and_survives_moving_the_files_away() {
    let dir = tempfile::tempdir().unwrap();
    for (subtask, checkpoint) in [(0, 4), (1, 6), (0, 5)] {
        let mut files = target(dir.path(), subtask, DEFAULT_ROLL);
        let id = format!("job/sink/{subtask}/{checkpoint}");
        files.stage(&id, records(&["x"])).unwrap();
        files.prepare(&id, mark(checkpoint)).unwrap();
        files.commit(&id, mark(checkpoint)).unwrap();
    }
    let mut files = target(dir.path(), 0, DEFAULT_ROLL);
    assert_eq!(files.committed_checkpoint(WRITER).unwrap(), Some(6));
    assert_eq!(files.committed_checkpoint("job/other/").unwrap(), None);
    for name in listing(dir.path()) {
        if name.starts_with("part-") {
            fs::remove_file(dir.path().join(name)).unwrap();
        }
    }
    assert_eq!(files.committed_checkpoint(WRITER).unwrap(), Some(6));
}

#[test]
fn a_rewind_moves_every_mark_back_and_later_commits_raise_it_again() {
    let dir = tempfile::tempdir().unwrap();
    for (subtask, checkpoint) in [(0, 4), (1, 6)] {
        let mut files = target(dir.path(), subtask, DEFAULT_ROLL);
        files.commit("job/sink/x/0", mark(checkpoint)).unwrap();
    }
    let mut files = target(dir.path(), 0, DEFAULT_ROLL);
    files.rewind_commit_mark(WRITER, Some(5)).unwrap();
    assert_eq!(files.committed_checkpoint(WRITER).unwrap(), Some(5));
    files.rewind_commit_mark(WRITER, Some(2)).unwrap();
    assert_eq!(files.committed_checkpoint(WRITER).unwrap(), Some(2));
    files.commit("job/sink/0/3", mark(3)).unwrap();
    assert_eq!(files.committed_checkpoint(WRITER).unwrap(), Some(3));
    files.rewind_commit_mark(WRITER, None).unwrap();
    assert_eq!(files.committed_checkpoint(WRITER).unwrap(), None);
    // A fresh start numbers its checkpoints from 1 again: the marks follow.
    files.commit("job/sink/0/4", mark(1)).unwrap();
    assert_eq!(files.committed_checkpoint(WRITER).unwrap(), Some(1));
}

#[test]
fn a_damaged_mark_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(".rill-mark-job-sink-2"), "42\n").unwrap();
    let mut files = target(dir.path(), 0, DEFAULT_ROLL);
    let error = files.committed_checkpoint(WRITER).unwrap_err().to_string();
    assert!(error.contains(".rill-mark-job-sink-2"), "{error}");
}

#[test]
fn the_protocol_is_checked_and_io_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = target(dir.path(), 0, DEFAULT_ROLL);
    files.stage("job/sink/0/0", records(&["a"])).unwrap();
    let error = files.stage("job/sink/0/1", records(&["b"])).unwrap_err();
    assert!(
        error.to_string().contains("while 'job/sink/0/0' is open"),
        "{error}"
    );
    let error = files.prepare("job/sink/0/7", mark(1)).unwrap_err();
    assert!(
        error.to_string().contains("without being staged"),
        "{error}"
    );
    let encode = EncodeError {
        format: "CSV",
        reason: "a map".to_owned(),
    };
    let error = files.stage("job/sink/0/0", vec![Err(encode)]).unwrap_err();
    assert!(
        error.to_string().contains("cannot be encoded as CSV"),
        "{error}"
    );

    let gone = dir.path().join("gone");
    let mut missing = target(&gone, 0, DEFAULT_ROLL);
    let error = missing.stage("job/sink/0/0", records(&["a"])).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("cannot create the part file")
            && message.contains(".part-job-sink-0-0-0.inprogress"),
        "{message}"
    );
}

#[test]
fn at_least_once_files_are_visible_at_once_and_end_at_each_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = target(dir.path(), 2, DEFAULT_ROLL);
    files.append(records(&["a", "b"])).unwrap();
    files.flush().unwrap();
    files.append(records(&["c"])).unwrap();
    files.flush().unwrap();
    files.flush().unwrap();
    assert_eq!(
        listing(dir.path()),
        ["part-job-sink-2-a0.txt", "part-job-sink-2-a1.txt"]
    );
    // A later run of the subtask numbers its files after these.
    let mut again = target(dir.path(), 2, DEFAULT_ROLL);
    again.append(records(&["d"])).unwrap();
    again.flush().unwrap();
    assert!(dir.path().join("part-job-sink-2-a2.txt").exists());
    assert_eq!(visible_lines(dir.path()), ["a", "b", "c", "d"]);
    assert!(again.open_transactions(WRITER).unwrap().is_empty());
    assert_eq!(again.committed_checkpoint(WRITER).unwrap(), None);
}

#[test]
fn a_commit_never_replaces_the_committed_output_of_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    // A job without checkpoints, run three times: the same transaction ids each run.
    for run in ["first", "second", "third"] {
        let mut files = target(dir.path(), 0, DEFAULT_ROLL);
        files.stage("job/sink/0/0", records(&[run])).unwrap();
        files.prepare("job/sink/0/0", None).unwrap();
        files.commit("job/sink/0/0", None).unwrap();
    }
    assert_eq!(
        listing(dir.path()),
        [
            "part-job-sink-0-0-0-r1.txt",
            "part-job-sink-0-0-0-r2.txt",
            "part-job-sink-0-0-0.txt"
        ]
    );
    assert_eq!(visible_lines(dir.path()), ["first", "second", "third"]);
}

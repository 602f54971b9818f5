//! The `rill` binary end to end: create, produce, consume, describe, list, and its errors; and
//! README's shell blocks, run in order (`readme`).

#![allow(clippy::unwrap_used)]

mod damage;
mod readme;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn rill(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn failed(output: Output) -> String {
    assert!(
        !output.status.success(),
        "should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn produce_then_consume_round_trips_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rill(&data, &["log", "create", "lines"], ""));
    let input: Vec<String> = (0..2_500)
        .map(|i| format!("line {i} with ünïcode"))
        .collect();
    ok(rill(
        &data,
        &["log", "produce", "lines"],
        &(input.join("\n") + "\n"),
    ));
    let consumed = ok(rill(&data, &["log", "consume", "lines"], ""));
    assert_eq!(consumed.lines().collect::<Vec<_>>(), input);
    let partial = ok(rill(
        &data,
        &["log", "consume", "lines", "--from", "10", "--max", "3"],
        "",
    ));
    assert_eq!(
        partial,
        "line 10 with ünïcode\nline 11 with ünïcode\nline 12 with ünïcode\n"
    );
    let described = ok(rill(&data, &["log", "describe", "lines"], ""));
    assert!(described.contains("1 partition(s)"), "{described}");
    assert!(
        described
            .lines()
            .any(|l| l.split_whitespace().eq(["0", "2500"])),
        "{described}"
    );
    let listed = ok(rill(&data, &["log", "list"], ""));
    assert_eq!(listed, "lines\t1 partition(s)\n");
}

#[test]
fn key_fields_route_a_key_to_one_partition() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rill(
        &data,
        &["log", "create", "clicks", "--partitions", "4"],
        "",
    ));
    let input: String = (0..40)
        .map(|i| format!("{{\"user\":\"u{}\",\"n\":{i}}}\n", i % 3))
        .collect();
    ok(rill(
        &data,
        &["log", "produce", "clicks", "--key-field", "user"],
        &input,
    ));
    for user in ["u0", "u1", "u2"] {
        let mut partitions_with_user = 0;
        for partition in 0..4 {
            let records = ok(rill(
                &data,
                &[
                    "log",
                    "consume",
                    "clicks",
                    "--partition",
                    &partition.to_string(),
                    "--with-key",
                ],
                "",
            ));
            if records
                .lines()
                .any(|line| line.starts_with(&format!("{user}\t")))
            {
                partitions_with_user += 1;
            }
        }
        assert_eq!(
            partitions_with_user, 1,
            "all records of {user} share one partition"
        );
    }
}

#[test]
fn a_bad_line_stops_produce_but_keeps_the_lines_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rill(&data, &["log", "create", "events"], ""));
    let input = "{\"id\":\"a\"}\n{\"id\":\"b\"}\nnot json\n{\"id\":\"c\"}\n";
    let error = failed(rill(
        &data,
        &["log", "produce", "events", "--key-field", "id"],
        input,
    ));
    assert!(error.contains("line 3 is not JSON"), "{error}");
    assert!(error.contains("stopped after 2 record(s)"), "{error}");
    let kept = ok(rill(&data, &["log", "consume", "events", "--with-key"], ""));
    assert_eq!(kept, "a\t{\"id\":\"a\"}\nb\t{\"id\":\"b\"}\n");
    let error = failed(rill(
        &data,
        &["log", "produce", "events", "--key-field", "missing"],
        "{\"id\":1}\n",
    ));
    assert!(error.contains("line 1 has no field 'missing'"), "{error}");
}

#[test]
fn errors_name_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let error = failed(rill(&data, &["log", "consume", "lines"], ""));
    assert!(
        error.contains("no Rill log at") && error.contains("does not exist"),
        "{error}"
    );
    assert!(!data.exists(), "consume does not create a log");
    ok(rill(
        &data,
        &["log", "create", "lines", "--partitions", "2"],
        "",
    ));
    let error = failed(rill(&data, &["log", "consume", "nope"], ""));
    assert!(error.contains("unknown topic 'nope'"), "{error}");
    let error = failed(rill(
        &data,
        &["log", "consume", "lines", "--partition", "5"],
        "",
    ));
    assert!(error.contains("has no partition 5"), "{error}");
    let error = failed(rill(&data, &["log", "create", "lines"], ""));
    assert!(error.contains("topic 'lines' exists already"), "{error}");
    let error = failed(rill(dir.path(), &["log", "list"], ""));
    assert!(error.contains("is not a Rill log"), "{error}");
}

#[test]
fn constant_keys_and_explicit_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rill(
        &data,
        &["log", "create", "t", "--partitions", "3"],
        "",
    ));
    ok(rill(
        &data,
        &["log", "produce", "t", "--partition", "2"],
        "a\r\nb\n",
    ));
    ok(rill(&data, &["log", "produce", "t", "--key", "k"], "c\nd"));
    let error = failed(rill(
        &data,
        &["log", "produce", "t", "--partition", "3"],
        "e\n",
    ));
    assert!(
        error.contains("topic 't' has no partition 3 (it has 3)"),
        "{error}"
    );
    let described = ok(rill(&data, &["log", "describe", "t"], ""));
    let ends: Vec<Vec<&str>> = described
        .lines()
        .skip(2)
        .map(|line| line.split_whitespace().collect())
        .collect();
    let keyed = rill_log::partition_for_key(b"k", 3) as usize;
    let mut expected = [0u64; 3];
    expected[2] += 2;
    expected[keyed] += 2;
    for (partition, end) in expected.iter().enumerate() {
        assert_eq!(
            ends[partition],
            [partition.to_string(), end.to_string()],
            "{described}"
        );
    }
    assert_eq!(ends[3], ["total", "4"], "{described}");
    let only_two = ok(rill(
        &data,
        &["log", "consume", "t", "--partition", "2"],
        "",
    ));
    if keyed == 2 {
        assert_eq!(only_two, "a\nb\nc\nd\n", "CR LF line ends are taken off");
    } else {
        assert_eq!(only_two, "a\nb\n", "CR LF line ends are taken off");
    }
    let keys = ok(rill(
        &data,
        &[
            "log",
            "consume",
            "t",
            "--partition",
            &keyed.to_string(),
            "--with-key",
        ],
        "",
    ));
    assert!(keys.contains("k\tc\nk\td\n"), "{keys}");
}

#[test]
fn errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let error = failed(rill(
        &dir.path().join("nothing"),
        &["log", "describe", "t"],
        "",
    ));
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.starts_with("error: no Rill log at "), "{error}");
}

#[test]
fn a_log_another_process_holds_is_refused_naming_the_process_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rill(&data, &["log", "create", "lines"], ""));
    // This test's process holds the log, as a running job would.
    let held = rill_log::EventLog::open(&data).unwrap();
    let error = failed(rill(&data, &["log", "produce", "lines"], "one line\n"));
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.contains(&format!("is open in process {} (", std::process::id()))
            && error.contains("stop that process first"),
        "{error}"
    );
    drop(held);
    ok(rill(&data, &["log", "produce", "lines"], "one line\n"));
}

#[test]
fn a_reader_closing_the_pipe_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rill(&data, &["log", "create", "big"], ""));
    let input: String = (0..50_000)
        .map(|i| format!("record number {i}\n"))
        .collect();
    ok(rill(&data, &["log", "produce", "big"], &input));
    let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
        .arg("--data-dir")
        .arg(&data)
        .args(["log", "consume", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first, "record number 0\n");
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn stored_checkpoints_can_be_listed_and_inspected() {
    use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
    use rill_core::coordinator::CheckpointMetadata;
    use rill_core::layout::{JobLayout, SubtaskLayout};
    use rill_core::operator::OperatorSnapshot;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let error = failed(rill(&data, &["checkpoints", "list", "--job", "wc"], ""));
    assert!(error.contains("there is no checkpoint store at"), "{error}");
    assert!(!data.exists(), "a read-only command creates nothing");
    let unrelated = dir.path().join("unrelated");
    std::fs::create_dir_all(&unrelated).unwrap();
    std::fs::write(unrelated.join("notes.txt"), "mine").unwrap();
    let unrelated_dir = unrelated.display().to_string();
    let error = failed(rill(
        &data,
        &[
            "checkpoints",
            "list",
            "--job",
            "wc",
            "--checkpoint-dir",
            &unrelated_dir,
        ],
        "",
    ));
    assert!(error.contains("is not a Rill checkpoint store"), "{error}");
    assert_eq!(
        std::fs::read_dir(&unrelated).unwrap().count(),
        1,
        "nothing written"
    );
    {
        let store = rill_store::CheckpointStore::open(data.join("checkpoints")).unwrap();
        for subtask in 0..2 {
            let snapshot = SubtaskSnapshot {
                source_positions: vec![vec![0; 5]],
                operators: vec![OperatorSnapshot {
                    operator: vec![vec![0; 7]],
                    ..OperatorSnapshot::default()
                }],
            };
            store
                .write_snapshot("wc", CheckpointId(4), subtask, &snapshot)
                .unwrap();
        }
        let metadata = CheckpointMetadata {
            checkpoint: CheckpointId(4),
            savepoint: false,
            triggered_at_ms: 1_700_000_000_000,
            acknowledged_at_ms: 1_700_000_000_025,
            subtasks: 2,
            state_bytes: 24,
            layout: JobLayout {
                max_parallelism: 128,
                subtasks: (0..2)
                    .map(|index| SubtaskLayout {
                        index,
                        parallelism: 2,
                        source: Some("lines".to_owned()),
                        operators: vec!["count".to_owned()],
                    })
                    .collect(),
            },
        };
        store.write_metadata("wc", &metadata).unwrap();
    }
    let listed = ok(rill(&data, &["checkpoints", "list", "--job", "wc"], ""));
    let row: Vec<&str> = listed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        ["4", "no", "1700000000.025", "25", "2", "24"],
        "{listed}"
    );
    let inspected = ok(rill(&data, &["checkpoints", "inspect", "--job", "wc"], ""));
    assert!(inspected.contains("job wc, checkpoint 4"), "{inspected}");
    let rows: Vec<Vec<&str>> = inspected
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    for expected in [
        &["10", "2", "lines"][..],
        &["14", "2", "count"],
        &[
            "subtask", "1:", "12", "bytes", "lines", "->", "count", "[1]",
        ],
    ] {
        assert!(rows.iter().any(|row| row == expected), "{inspected}");
    }
    let error = failed(rill(
        &data,
        &["checkpoints", "inspect", "--job", "wc", "--checkpoint", "9"],
        "",
    ));
    assert!(error.contains("no such completed checkpoint"), "{error}");
}

#[test]
fn consume_reads_committed_records_unless_asked_for_uncommitted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rill(&data, &["log", "create", "out"], ""));
    ok(rill(&data, &["log", "produce", "out"], "committed\n"));
    {
        let log = rill_log::EventLog::open(&data).unwrap();
        let staged = [rill_log::ProducerRecord::new("pending").with_key("k")];
        log.stage("job/sink/0/3", "out", &staged).unwrap();
        log.prepare("job/sink/0/3").unwrap();
    }
    let committed = ok(rill(&data, &["log", "consume", "out"], ""));
    assert_eq!(committed, "committed\n");
    let everything = ok(rill(
        &data,
        &["log", "consume", "out", "--read-uncommitted", "--with-key"],
        "",
    ));
    assert_eq!(everything, "\tcommitted\nk\tpending\n");
    let described = ok(rill(&data, &["log", "describe", "out"], ""));
    assert!(
        described.contains("open transactions: 1")
            && described.contains("job/sink/0/3  prepared  1 record(s)"),
        "{described}"
    );
}

#[test]
fn checkpoints_are_pruned_to_the_newest_and_deleted_one_by_one_savepoints_kept() {
    use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
    use rill_core::coordinator::CheckpointMetadata;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = rill_store::CheckpointStore::open(data.join("checkpoints")).unwrap();
        for checkpoint in 1..=5 {
            let id = CheckpointId(checkpoint);
            store
                .write_snapshot("wc", id, 0, &SubtaskSnapshot::default())
                .unwrap();
            let metadata = CheckpointMetadata {
                checkpoint: id,
                savepoint: checkpoint == 2,
                triggered_at_ms: checkpoint,
                acknowledged_at_ms: checkpoint,
                subtasks: 1,
                state_bytes: 0,
                layout: Default::default(),
            };
            store.write_metadata("wc", &metadata).unwrap();
        }
    }
    let listed = |data: &Path| -> Vec<String> {
        ok(rill(data, &["checkpoints", "list", "--job", "wc"], ""))
            .lines()
            .skip(1)
            .map(|row| row.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    let pruned = ok(rill(
        &data,
        &["checkpoints", "prune", "--job", "wc", "--keep", "2"],
        "",
    ));
    assert!(pruned.contains("deleted 2 checkpoints"), "{pruned}");
    assert_eq!(listed(&data), ["2 yes", "4 no", "5 no"]);
    let deleted = ok(rill(
        &data,
        &["checkpoints", "delete", "--job", "wc", "--checkpoint", "2"],
        "",
    ));
    assert!(deleted.contains("deleted checkpoint 2"), "{deleted}");
    assert_eq!(listed(&data), ["4 no", "5 no"]);
    let error = failed(rill(
        &data,
        &["checkpoints", "delete", "--job", "wc", "--checkpoint", "2"],
        "",
    ));
    assert!(error.contains("has no completed checkpoint 2"), "{error}");
    let error = failed(rill(
        &data,
        &["checkpoints", "prune", "--job", "wc", "--keep", "0"],
        "",
    ));
    assert!(error.contains("keep"), "{error}");
}

#[test]
fn control_characters_in_names_are_escaped_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rill(&data, &["log", "create", "t"], ""));
    let error = failed(rill(&data, &["log", "describe", "red\x1b[31mtopic"], ""));
    assert!(!error.contains('\x1b'), "{error:?}");
    assert!(error.contains(r"red\u{1b}[31mtopic"), "{error}");
}

#[test]
fn produce_reports_its_progress_and_resumes_with_skip_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rill(&data, &["log", "create", "lines"], ""));
    let input: String = (0..150_000).map(|i| format!("line {i}\n")).collect();
    let output = rill(&data, &["log", "produce", "lines"], &input);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "appended 100000 record(s) to topic 'lines' so far, durably: input lines \
             1..=100000 are in the log"
        ),
        "{stderr}"
    );
    // A run stopped after 150 000 records, resumed over the whole input plus two lines.
    let more = format!("{input}line 150000\nline 150001\n");
    let output = rill(
        &data,
        &["log", "produce", "lines", "--skip-lines", "150000"],
        &more,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("appended 2 record(s)"), "{stderr}");
    // Skipped lines count in how far into the input the log is; a bad line stops the run
    // and says where to resume.
    let bad = format!(
        "{more}line 150002
{{\n"
    );
    let output = rill(
        &data,
        &[
            "log",
            "produce",
            "lines",
            "--skip-lines",
            "150002",
            "--key-field",
            "user",
        ],
        &bad,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("resume with --skip-lines 150002"),
        "{stderr}"
    );
    let last = ok(rill(
        &data,
        &["log", "consume", "lines", "--from", "149999"],
        "",
    ));
    assert_eq!(last, "line 149999\nline 150000\nline 150001\n");
}

#[test]
fn logs_written_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rill"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["log", "create", "lines"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let logged = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{logged}");
    assert!(logged.contains("created a topic"), "{logged}");
    assert!(
        !logged.contains('\u{1b}'),
        "colour codes in a pipe: {logged:?}"
    );
}

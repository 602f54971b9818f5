//! The file reader driven poll by poll, as a subtask drives it: splits, positions and restores,
//! bounded and watching, formats and decode errors, bounds on a poll.

use std::path::Path;
use std::time::Duration;

use rill_core::source::{AnySource, Emitted};
use rill_formats::OnDecodeError;
use serde::Deserialize;

use super::*;
use crate::FileSource;

fn reader<T: Data>(source: FileSource<T>, subtask: u32, parallelism: u32) -> FileReader<T> {
    FileReader::new(Arc::new(source.settings), subtask, parallelism)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// One poll for up to `max` records at processing time `now`: the values and the status.
fn poll<T: Data>(reader: &mut FileReader<T>, max: usize, now: i64) -> (Vec<T>, SourcePoll) {
    let polled = AnySource::poll(reader, max, Timestamp(now), 0).unwrap();
    let mut values = Vec::new();
    for emitted in polled.emitted {
        if let Emitted::Records(records) = emitted {
            values.extend(
                records
                    .downcast::<T>()
                    .unwrap()
                    .into_iter()
                    .map(|r| r.value),
            );
        }
    }
    (values, polled.status)
}

/// Polls a bounded reader until it finishes.
fn read_all<T: Data>(reader: &mut FileReader<T>, max: usize) -> Vec<T> {
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let (values, status) = poll(reader, max, 0);
        all.extend(values);
        if status == SourcePoll::Finished {
            return all;
        }
    }
    panic!("the reader did not finish");
}

/// `files` files of `lines` lines each, `f<file>-l<line>`.
fn numbered(dir: &Path, files: usize, lines: usize) -> Vec<String> {
    let mut all = Vec::new();
    for file in 0..files {
        let text: Vec<String> = (0..lines).map(|line| format!("f{file}-l{line}")).collect();
        write(
            dir,
            &format!("part-{file:02}.txt"),
            &(text.join("\n") + "\n"),
        );
        all.extend(text);
    }
    all
}

fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values
}

fn snapshot<T: Data>(reader: &mut FileReader<T>) -> Vec<u8> {
    Source::snapshot_position(reader).unwrap().unwrap()
}

#[test]
fn each_file_is_read_by_one_subtask_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let all = numbered(dir.path(), 7, 5);
    let mut read = Vec::new();
    for subtask in 0..3 {
        let mut reader = reader(FileSource::lines(dir.path()).unwrap(), subtask, 3);
        let lines = read_all(&mut reader, 4);
        // Within a subtask, files in name order and each file's lines in order.
        assert_eq!(lines, sorted(lines.clone()), "subtask {subtask}");
        read.extend(lines);
    }
    assert_eq!(sorted(read), sorted(all));
}

#[test]
fn a_restored_reader_reads_on_from_the_byte_after_the_last_record_it_emitted() {
    let dir = tempfile::tempdir().unwrap();
    let all = numbered(dir.path(), 3, 10);
    for stop_after in [1, 7, 10, 11, 29, 30] {
        let mut first = reader(FileSource::lines(dir.path()).unwrap(), 0, 1);
        let mut read = Vec::new();
        while read.len() < stop_after {
            read.extend(poll(&mut first, 1, 0).0);
        }
        let position = snapshot(&mut first);
        let mut restored = reader(FileSource::lines(dir.path()).unwrap(), 0, 1);
        Source::restore_position(&mut restored, &position).unwrap();
        read.extend(read_all(&mut restored, 3));
        assert_eq!(read, all, "stopped after {stop_after} lines");
    }
}

#[test]
fn a_rescaled_source_keeps_the_files_each_new_subtask_owns() {
    let dir = tempfile::tempdir().unwrap();
    let all = numbered(dir.path(), 9, 4);
    let mut read = Vec::new();
    let mut positions = Vec::new();
    for subtask in 0..2 {
        let mut reader = reader(FileSource::lines(dir.path()).unwrap(), subtask, 2);
        read.extend(poll(&mut reader, 6, 0).0);
        positions.push(snapshot(&mut reader));
    }
    // A file that appears after the checkpoint is not read: bounded, the files are the job's
    // first start's.
    write(dir.path(), "part-99.txt", "late\n");
    for subtask in 0..3 {
        let mut reader = reader(FileSource::lines(dir.path()).unwrap(), subtask, 3);
        for position in &positions {
            Source::restore_position(&mut reader, position).unwrap();
        }
        read.extend(read_all(&mut reader, 5));
    }
    assert_eq!(sorted(read), sorted(all));
}

#[test]
fn a_file_gone_or_shorter_than_its_checkpoint_is_an_error_naming_it_and_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    numbered(dir.path(), 2, 3);
    let mut first = reader(FileSource::lines(dir.path()).unwrap(), 0, 1);
    poll(&mut first, 4, 0);
    // part-00 is read to its end, part-01 to byte 7 ("f1-l0\n" and no more).
    let position = snapshot(&mut first);
    let restore = |dir: &Path| {
        let mut restored = reader(FileSource::lines(dir).unwrap(), 0, 1);
        Source::restore_position(&mut restored, &position).map(|()| restored)
    };

    write(dir.path(), "part-01.txt", "f1\n");
    let error = restore(dir.path()).err().unwrap().to_string();
    let file = dir.path().join("part-01.txt");
    assert!(
        error.starts_with(&format!(
            "file '{}' is 3 bytes now, shorter than the 6 bytes the checkpoint had read",
            file.display()
        )),
        "{error}"
    );

    std::fs::remove_file(&file).unwrap();
    let error = restore(dir.path()).err().unwrap().to_string();
    assert!(
        error.starts_with(&format!(
            "file '{}' is gone (0 bytes now), but the source had read 6 bytes",
            file.display()
        )),
        "{error}"
    );

    write(dir.path(), "part-01.txt", "f1-l0\nf1-l1\n");
    std::fs::remove_file(dir.path().join("part-00.txt")).unwrap();
    let mut restored = restore(dir.path()).expect("a file read to its end may go");
    assert_eq!(read_all(&mut restored, 10), ["f1-l1"]);
}

#[test]
fn a_missing_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let error = FileSource::lines(&missing).err().unwrap().to_string();
    assert!(
        error.starts_with(&format!(
            "the file source's directory '{}' cannot be read",
            missing.display()
        )),
        "{error}"
    );
    let source = FileSource::lines(dir.path()).unwrap().watch(Duration::ZERO);
    let mut reader = reader(source, 0, 1);
    std::fs::remove_dir(dir.path()).unwrap();
    let error = AnySource::poll(&mut reader, 10, Timestamp(0), 0)
        .err()
        .unwrap();
    assert!(error.to_string().contains("cannot be read"), "{error}");
}

#[test]
fn watching_reads_new_files_at_the_next_listing_and_never_a_file_twice() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", "a1\na2\n");
    write(dir.path(), ".b.txt.tmp", "being written\n");
    write(dir.path(), "_SUCCESS", "");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let source = FileSource::lines(dir.path())
        .unwrap()
        .watch(Duration::from_millis(100));
    let mut reader = reader(source, 0, 1);
    assert_eq!(
        poll(&mut reader, 10, 0),
        (vec!["a1".into(), "a2".into()], SourcePoll::Ready)
    );
    std::fs::rename(dir.path().join(".b.txt.tmp"), dir.path().join("b.txt")).unwrap();
    std::fs::write(dir.path().join("a.txt"), "a1\na2\nappended\n").unwrap();
    assert_eq!(
        poll(&mut reader, 10, 99),
        (vec![], SourcePoll::Idle),
        "not listed yet"
    );
    assert_eq!(
        poll(&mut reader, 10, 100),
        (vec!["being written".into()], SourcePoll::Ready),
        "the renamed file; a file read to its end is not read again"
    );
    let position = snapshot(&mut reader);
    write(dir.path(), "c.txt", "c1\n");
    let source = FileSource::lines(dir.path())
        .unwrap()
        .watch(Duration::from_millis(100));
    let mut restored = super::tests::reader(source, 0, 1);
    Source::restore_position(&mut restored, &position).unwrap();
    assert_eq!(
        poll(&mut restored, 10, 0),
        (vec!["c1".into()], SourcePoll::Ready),
        "only the file the checkpoint had not seen"
    );
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
struct Reading {
    sensor: String,
    value: f64,
}

fn reading(sensor: &str, value: f64) -> Reading {
    Reading {
        sensor: sensor.to_owned(),
        value,
    }
}

#[test]
fn csv_with_a_header_is_read_by_name_and_a_restored_reader_reads_the_header_again() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "r.csv",
        "\nvalue,sensor\n1.5,\"a\nb\"\n\n2,c\r\n3,d",
    );
    let source = || FileSource::<Reading>::csv_with_header(dir.path()).unwrap();
    let mut first = reader(source(), 0, 1);
    assert_eq!(poll(&mut first, 1, 0).0, [reading("a\nb", 1.5)]);
    let position = snapshot(&mut first);
    let mut restored = reader(source(), 0, 1);
    Source::restore_position(&mut restored, &position).unwrap();
    assert_eq!(
        read_all(&mut restored, 10),
        [reading("c", 2.0), reading("d", 3.0)],
        "blank lines are no records (before the header either), and the last may lack its line \
         break"
    );
}

#[test]
fn a_record_that_does_not_decode_fails_naming_the_file_and_byte_or_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        "{\"sensor\":\"a\",\"value\":1}\n{\"sensor\":\"b\"\n{\"sensor\":\"c\",\"value\":3}\n";
    write(dir.path(), "r.jsonl", text);
    let mut failing = reader(FileSource::<Reading>::json_lines(dir.path()).unwrap(), 0, 1);
    let error = AnySource::poll(&mut failing, 10, Timestamp(0), 0)
        .err()
        .unwrap();
    let file = dir.path().join("r.jsonl");
    assert!(
        error.to_string().contains(&format!(
            "a JSON record does not decode at byte 25 of file '{}': EOF while parsing",
            file.display()
        )),
        "{error}"
    );

    let source = FileSource::<Reading>::json_lines(dir.path())
        .unwrap()
        .on_decode_error(OnDecodeError::Skip);
    let mut skipping = reader(source, 0, 1);
    assert_eq!(
        read_all(&mut skipping, 10),
        [reading("a", 1.0), reading("c", 3.0)]
    );
    assert_eq!(skipping.skipped(), 1);
}

#[test]
fn a_line_over_the_limit_is_a_record_that_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.txt",
        &format!("short\n{}\nafter\n", "x".repeat(5_000)),
    );
    let source = FileSource::lines(dir.path())
        .unwrap()
        .max_record_bytes(1_000)
        .on_decode_error(OnDecodeError::Skip);
    let mut reader = reader(source, 0, 1);
    assert_eq!(read_all(&mut reader, 10), ["short", "after"]);
    assert_eq!(reader.skipped(), 1);
    let mut failing = super::tests::reader(
        FileSource::lines(dir.path())
            .unwrap()
            .max_record_bytes(1_000),
        0,
        1,
    );
    let error = AnySource::poll(&mut failing, 10, Timestamp(0), 0)
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("at byte 6 of file")
            && error.to_string().contains("more than 1000 bytes"),
        "{error}"
    );
}

#[test]
fn a_poll_stops_after_a_mebibyte_of_records() {
    let dir = tempfile::tempdir().unwrap();
    let line = "y".repeat(100 << 10);
    write(dir.path(), "big.txt", &format!("{line}\n").repeat(25));
    let mut reader = reader(FileSource::lines(dir.path()).unwrap(), 0, 1);
    let counts: Vec<usize> = (0..3)
        .map(|_| poll(&mut reader, 1_000, 0).0.len())
        .collect();
    assert_eq!(counts, [11, 11, 3], "11 lines of 100 KiB reach 1 MiB");
}

#[test]
fn a_position_that_is_not_a_file_sources_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut reader = reader(FileSource::lines(dir.path()).unwrap(), 0, 1);
    let error = Source::restore_position(&mut reader, &[200, 1, 2]).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("a file source position that cannot be read"),
        "{error}"
    );
}

#[test]
fn a_csv_header_that_does_not_decode_fails_whatever_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.csv"), b"\nvalue,\xff\n1,a\n").unwrap();
    let source = FileSource::<Reading>::csv_with_header(dir.path())
        .unwrap()
        .on_decode_error(OnDecodeError::Skip);
    let mut reader = reader(source, 0, 1);
    let error = AnySource::poll(&mut reader, 10, Timestamp(0), 0)
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("a CSV record does not decode at byte 1 of file"),
        "a blank line before the header is skipped, and the header is not: {error}"
    );
}

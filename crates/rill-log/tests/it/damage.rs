//! Damage on disk: a flipped byte in a journal (in a value, in its framing), a journal cut
//! short, a damaged block of a table file, damaged values. Errors name the topic, partition,
//! offsets and file; a read-only open reads around the damage
//! without changing anything; a check reports what is intact and what is not; a salvage copies
//! what is intact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rill_log::{EventLog, LogError, ProducerRecord};
use rill_store::JournalDamage;

/// Every file under `dir` with its content.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    found
}

fn append(log: &EventLog, topic: &str, partition: u32, values: std::ops::Range<u32>) {
    let records = values
        .map(|i| {
            ProducerRecord::new(format!("{topic}-value-{i}"))
                .with_key(format!("k{i}"))
                .with_timestamp(i64::from(i))
                .with_partition(partition)
        })
        .collect();
    log.append_batch(topic, records).unwrap();
}

/// A log whose journal holds, one append each: `a` offsets 0..5, `b` 0..5, `b` 5..10 (the
/// batch to damage: its values read `b-value-5` to `b-value-9`), `b` 10..15, `a` 5..10.
fn log_with_journal() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    {
        let log = EventLog::open_or_create(&path).unwrap();
        log.create_topic("a", 1).unwrap();
        log.create_topic("b", 1).unwrap();
        append(&log, "a", 0, 0..5);
        append(&log, "b", 0, 0..5);
        append(&log, "b", 0, 5..10);
        append(&log, "b", 0, 10..15);
        append(&log, "a", 0, 5..10);
        log.flush().unwrap();
    }
    let journal = files(&path)
        .into_iter()
        .find(|(path, bytes)| {
            path.extension().is_some_and(|ext| ext == "jnl")
                && bytes.windows(9).any(|window| window == b"b-value-7")
        })
        .unwrap()
        .0;
    (dir, path, journal)
}

/// Flips a byte of the value `b-value-7` in the journal.
fn flip_a_byte(journal: &Path) {
    let mut bytes = std::fs::read(journal).unwrap();
    let at = bytes
        .windows(9)
        .position(|window| window == b"b-value-7")
        .unwrap();
    bytes[at + 8] ^= 0x01;
    std::fs::write(journal, &bytes).unwrap();
}

#[test]
fn a_flipped_byte_in_a_journal_is_refused_by_name_then_checked_and_salvaged_around() {
    let (dir, path, journal) = log_with_journal();
    flip_a_byte(&journal);
    let refused = EventLog::open(&path).unwrap_err().to_string();
    assert!(
        refused.contains(&journal.display().to_string()) && refused.contains("damaged batch"),
        "{refused}"
    );
    check_and_salvage_around_the_batch_of_b_5_to_9(&dir, &path, &journal, JournalDamage::Checksum);
}

#[test]
fn a_broken_journal_frame_is_checked_and_salvaged_around_not_cut_with_what_follows() {
    let (dir, path, journal) = log_with_journal();
    let mut bytes = std::fs::read(&journal).unwrap();
    let value = bytes
        .windows(9)
        .position(|window| window == b"b-value-7")
        .unwrap();
    // The record entry's envelope starts with RILL; before it, its key (14 bytes for topic
    // `b`) and the end of fjall's item header: the key's length (2 bytes) and the value's two
    // lengths (4 bytes each).
    let envelope = bytes[..value]
        .windows(4)
        .rposition(|window| window == b"RILL")
        .unwrap();
    let key_length = envelope - 14 - 8 - 2;
    assert_eq!(bytes[key_length..key_length + 2], [14, 0]);
    bytes[key_length] = 0xff;
    std::fs::write(&journal, &bytes).unwrap();
    check_and_salvage_around_the_batch_of_b_5_to_9(&dir, &path, &journal, JournalDamage::Framing);
    // Opened for writing, fjall cuts the journal at the break, dropping what followed: said.
    let opened = EventLog::open(&path).unwrap();
    assert_eq!(opened.journal_repairs().len(), 1);
    assert_eq!(opened.end_offsets("a").unwrap(), vec![5]);
}

/// Opens the log of [`log_with_journal`] read-only, with the batch of `b`'s offsets 5 to 9
/// damaged in `journal`; checks that it is read around, reported, and salvaged around, and that
/// nothing in the log changes.
fn check_and_salvage_around_the_batch_of_b_5_to_9(
    dir: &tempfile::TempDir,
    path: &Path,
    journal: &Path,
    cause: JournalDamage,
) {
    let before = files(path);
    let log = EventLog::open_read_only(path).unwrap();
    assert_eq!(
        log.skipped_batches().len(),
        1,
        "{:?}",
        log.skipped_batches()
    );
    assert_eq!(log.skipped_batches()[0].journal, journal);
    assert_eq!(log.skipped_batches()[0].cause, cause);
    assert!(log.is_damaged());
    let check = log.check();
    assert!(check.found_damage());
    let by_topic: BTreeMap<&str, _> = check
        .partitions
        .iter()
        .map(|partition| (partition.topic.as_str(), partition))
        .collect();
    assert_eq!(
        by_topic["a"].intact,
        vec![0..10],
        "the other topic is intact"
    );
    assert!(by_topic["a"].damaged.is_empty());
    let b = by_topic["b"];
    assert_eq!(
        b.intact,
        vec![0..5, 10..15],
        "the batches after it are read"
    );
    assert_eq!(b.damaged.len(), 1);
    assert_eq!(b.damaged[0].0, 5..10);
    let missing = b.damaged[0].1.to_string();
    assert!(
        missing.contains("'b'") && missing.contains("partition 0") && missing.contains("5 to 9"),
        "{missing}"
    );

    let salvaged = EventLog::open_or_create(dir.path().join("salvaged")).unwrap();
    let report = log.salvage_into(&salvaged).unwrap();
    assert_eq!(report.partitions.len(), 2);
    assert_eq!(salvaged.end_offsets("a").unwrap(), vec![10]);
    assert_eq!(salvaged.end_offsets("b").unwrap(), vec![10]);
    let b_records = salvaged.read("b", 0, 0, 10).unwrap();
    let values: Vec<String> = b_records
        .iter()
        .map(|record| String::from_utf8(record.value.clone()).unwrap())
        .collect();
    let expected: Vec<String> = (0..5)
        .chain(10..15)
        .map(|i| format!("b-value-{i}"))
        .collect();
    assert_eq!(values, expected, "offsets after the damage move down");
    assert_eq!(b_records[5].key.as_deref(), Some(&b"k10"[..]), "keys kept");
    assert_eq!(b_records[5].timestamp, 10, "timestamps kept");
    drop(log);
    assert!(files(path) == before, "read-only means read-only");
}

#[test]
fn a_journal_cut_short_is_reported_read_only_without_being_cut() {
    let (_dir, path, journal) = log_with_journal();
    let bytes = std::fs::read(&journal).unwrap();
    let data_end = bytes.iter().rposition(|&byte| byte != 0).unwrap() + 1;
    std::fs::write(&journal, &bytes[..data_end - 5]).unwrap();
    let before = files(&path);

    let log = EventLog::open_read_only(&path).unwrap();
    assert_eq!(
        log.journal_repairs().len(),
        1,
        "{:?}",
        log.journal_repairs()
    );
    assert_eq!(log.journal_repairs()[0].journal, journal);
    assert!(log.is_damaged());
    assert_eq!(
        log.end_offsets("a").unwrap(),
        vec![5],
        "the last append was cut"
    );
    assert!(
        !log.check().found_damage(),
        "what is left reads back intact"
    );
    drop(log);
    assert!(
        files(&path) == before,
        "the damage is reported, not repaired"
    );

    let opened = EventLog::open(&path).unwrap();
    assert_eq!(
        opened.journal_repairs().len(),
        1,
        "opening for writing cuts it, and says so"
    );
}

#[test]
fn damaged_values_are_named_by_check_and_passed_over_by_salvage() {
    let (dir, log, storage) = super::damageable();
    log.create_topic("events", 2).unwrap();
    log.create_topic("other", 1).unwrap();
    // Three entries of partition 1: offset 0, offsets 1 and 2 (to damage), offset 3.
    append(&log, "events", 1, 0..1);
    append(&log, "events", 1, 1..3);
    append(&log, "events", 1, 3..4);
    append(&log, "other", 0, 0..2);
    let staged = [ProducerRecord::new("staged").with_partition(1)];
    log.stage("job/sink/0/1", "events", &staged).unwrap();
    let mark = rill_core::transactional::CommitMark {
        writer: "job/sink/",
        checkpoint: 7,
    };
    log.commit_marked("job/sink/0/1", Some(mark)).unwrap();
    log.stage("job/sink/0/2", "events", &staged).unwrap();
    let mut entry_key = b"events\0".to_vec();
    entry_key.extend_from_slice(&1u32.to_be_bytes());
    entry_key.extend_from_slice(&2u64.to_be_bytes());
    super::flip_value(&storage, "rill.records", entry_key);
    super::flip_value(&storage, "rill.topics", b"other".to_vec());
    super::flip_value(&storage, "rill.transactions", b"job/sink/0/2".to_vec());
    super::flip_value(&storage, "rill.commit-marks", b"job/sink/".to_vec());
    drop((log, storage));
    std::fs::write(
        dir.path().join("RILL_LOG"),
        format!("{}\n", rill_log::FORMAT),
    )
    .unwrap();

    let refused = EventLog::open(dir.path()).unwrap_err().to_string();
    assert!(
        refused.contains("'other'") && refused.contains("rill.topics"),
        "{refused}"
    );
    let log = EventLog::open_read_only(dir.path()).unwrap();
    let unreadable: Vec<&str> = log
        .unreadable_topics()
        .iter()
        .map(|(topic, _)| topic.as_str())
        .collect();
    assert_eq!(unreadable, ["other"]);
    let check = log.check();
    let partition = &check.partitions[1];
    assert_eq!(
        (partition.topic.as_str(), partition.partition),
        ("events", 1)
    );
    assert_eq!(partition.intact, vec![0..1, 3..5], "offset 4: the commit");
    assert_eq!(partition.damaged.len(), 1);
    assert_eq!(partition.damaged[0].0, 1..3);
    let entry = partition.damaged[0].1.to_string();
    assert!(
        entry.contains("'events'")
            && entry.contains("partition 1")
            && entry.contains("offsets 1 to 2"),
        "{entry}"
    );
    let damaged: Vec<String> = check.damaged.iter().map(ToString::to_string).collect();
    assert_eq!(damaged.len(), 2, "{damaged:?}");
    assert!(damaged[0].contains("'job/sink/0/2'"), "{damaged:?}");
    assert!(
        damaged[1].contains("'job/sink/'") && damaged[1].contains("rill.commit-marks"),
        "{damaged:?}"
    );

    let salvaged = EventLog::open_or_create(dir.path().join("salvaged")).unwrap();
    log.salvage_into(&salvaged).unwrap();
    assert_eq!(
        salvaged.topics().len(),
        1,
        "the unreadable topic is not copied"
    );
    let values: Vec<Vec<u8>> = salvaged
        .read("events", 1, 0, 10)
        .unwrap()
        .into_iter()
        .map(|record| record.value)
        .collect();
    assert_eq!(
        values,
        [&b"events-value-0"[..], b"events-value-3", b"staged"]
    );
}

#[test]
fn a_damaged_table_block_loses_only_the_entries_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    {
        let log = EventLog::open_or_create(&path).unwrap();
        log.create_topic("a", 1).unwrap();
        log.create_topic("b", 1).unwrap();
        for round in 0..20 {
            append(&log, "a", 0, round * 50..round * 50 + 50);
            append(&log, "b", 0, round * 50..round * 50 + 50);
        }
        log.flush().unwrap();
    }
    {
        // Flush the records from the journal into a table (fjall's sorted file of blocks).
        let db = fjall::Database::builder(path.join("db")).open().unwrap();
        let records = db
            .keyspace("rill.records", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        records.rotate_memtable_and_wait().unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let (table, mut bytes) = files(&path)
        .into_iter()
        .find(|(file, bytes)| {
            file.parent().is_some_and(|dir| dir.ends_with("tables"))
                && bytes.windows(11).any(|window| window == b"b-value-500")
        })
        .unwrap();
    let at = bytes
        .windows(11)
        .position(|window| window == b"b-value-500")
        .unwrap();
    bytes[at + 5] ^= 0x01;
    std::fs::write(&table, &bytes).unwrap();

    let log = EventLog::open(&path).unwrap();
    let error = log.read("b", 0, 0, 1000).unwrap_err().to_string();
    assert!(
        error.contains("reading topic 'b' partition 0 from offset"),
        "{error}"
    );
    drop(log);

    let log = EventLog::open_read_only(&path).unwrap();
    let check = log.check();
    let (a, b) = (&check.partitions[0], &check.partitions[1]);
    assert!(a.damaged.is_empty(), "the other topic is intact");
    assert_eq!(a.intact_records(), 1000);
    assert_eq!(b.damaged.len(), 1, "{:?}", b.damaged);
    let lost = b.damaged[0].0.clone();
    assert!(
        lost.contains(&500) && lost.end - lost.start < 500,
        "only the block's entries are lost: {lost:?}"
    );
    assert_eq!(
        b.intact,
        vec![0..lost.start, lost.end..1000],
        "the entries before and after the block are read"
    );
    assert!(
        matches!(b.damaged[0].1, LogError::Storage { .. }),
        "{}",
        b.damaged[0].1
    );
}

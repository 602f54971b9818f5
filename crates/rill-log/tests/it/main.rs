//! The event log against a real directory: round trips, offsets, partitioning, errors, and
//! durability across reopening.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use rill_log::{EventLog, LogError, ProducerRecord, partition_for_key};

fn fresh() -> (tempfile::TempDir, EventLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open_or_create(dir.path().join("log")).unwrap();
    (dir, log)
}

fn values(log: &EventLog, topic: &str, partition: u32) -> Vec<String> {
    let end = log.end_offsets(topic).unwrap()[partition as usize];
    log.read(topic, partition, 0, end as usize)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.value).unwrap())
        .collect()
}

#[test]
fn appends_read_back_with_dense_offsets() {
    let (_dir, log) = fresh();
    log.create_topic("events", 1).unwrap();
    let positions = log
        .append_batch(
            "events",
            (0..5)
                .map(|i| ProducerRecord::new(format!("e{i}")))
                .collect(),
        )
        .unwrap();
    assert_eq!(
        positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let single = log
        .append("events", ProducerRecord::new("e5").with_timestamp(42))
        .unwrap();
    assert_eq!((single.partition, single.offset), (0, 5));
    let records = log.read("events", 0, 3, 10).unwrap();
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(records[2].timestamp, 42);
    assert!(
        records[0].timestamp > 1_600_000_000_000,
        "append time in ms since the epoch"
    );
    assert_eq!(
        log.read("events", 0, 6, 10).unwrap(),
        vec![],
        "reading at the end is empty"
    );
    assert_eq!(
        log.read("events", 0, 1, 2).unwrap().len(),
        2,
        "max_records is respected"
    );
}

#[test]
fn a_bounded_read_stops_at_the_record_that_reaches_its_bytes() {
    let (_dir, log) = fresh();
    log.create_topic("t", 1).unwrap();
    let records = (0..10)
        .map(|i| ProducerRecord::new(vec![i as u8; 100]).with_key("k"))
        .collect();
    log.append_batch("t", records).unwrap();
    let read = |from: u64, max_bytes: usize| {
        log.read_bounded("t", 0, from, (100, max_bytes))
            .unwrap()
            .iter()
            .map(|record| record.offset)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        read(0, 250),
        [0, 1, 2],
        "101 bytes each: the third reaches 250"
    );
    assert_eq!(read(3, 0), [3], "at least one record");
    assert_eq!(read(8, usize::MAX), [8, 9]);
}

#[test]
fn keys_choose_partitions_stably_and_explicit_partitions_win() {
    let (_dir, log) = fresh();
    log.create_topic("users", 4).unwrap();
    for i in 0..20 {
        let user = format!("user{}", i % 5);
        let position = log
            .append(
                "users",
                ProducerRecord::new(format!("{i}")).with_key(user.clone()),
            )
            .unwrap();
        assert_eq!(position.partition, partition_for_key(user.as_bytes(), 4));
    }
    let pinned = log
        .append(
            "users",
            ProducerRecord::new("x").with_key("user0").with_partition(3),
        )
        .unwrap();
    assert_eq!(pinned.partition, 3);
    let error = log
        .append("users", ProducerRecord::new("x").with_partition(4))
        .unwrap_err();
    assert!(
        matches!(
            error,
            LogError::UnknownPartition {
                partition: 4,
                partitions: 4,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn records_without_key_spread_round_robin() {
    let (_dir, log) = fresh();
    log.create_topic("spread", 3).unwrap();
    log.append_batch(
        "spread",
        (0..9)
            .map(|i| ProducerRecord::new(format!("{i}")))
            .collect(),
    )
    .unwrap();
    assert_eq!(log.end_offsets("spread").unwrap(), vec![3, 3, 3]);
}

#[test]
fn bad_requests_get_errors_that_name_the_culprit() {
    let (_dir, log) = fresh();
    log.create_topic("t", 2).unwrap();
    let cases: Vec<(LogError, &str)> = vec![
        (
            log.read("nope", 0, 0, 1).unwrap_err(),
            "unknown topic 'nope'",
        ),
        (
            log.read("t", 7, 0, 1).unwrap_err(),
            "topic 't' has no partition 7 (it has 2)",
        ),
        (
            log.read("t", 0, 5, 1).unwrap_err(),
            "offset 5 is past the end of topic 't' partition 0 (end offset 0)",
        ),
        (
            log.create_topic("t", 1).unwrap_err(),
            "topic 't' exists already",
        ),
        (
            log.create_topic("bad name!", 1).unwrap_err(),
            "invalid topic name 'bad name!'",
        ),
        (
            log.create_topic("zero", 0).unwrap_err(),
            "invalid partition count 0 for topic 'zero'",
        ),
        (
            log.append("missing", ProducerRecord::new("x")).unwrap_err(),
            "unknown topic 'missing'",
        ),
    ];
    for (error, expected) in cases {
        assert!(
            error.to_string().contains(expected),
            "'{error}' should say '{expected}'"
        );
    }
}

#[test]
fn a_directory_that_is_not_a_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(matches!(EventLog::open(&missing), Err(LogError::NotFound(path)) if path == missing));
    std::fs::write(dir.path().join("notes.txt"), "my files").unwrap();
    let error = EventLog::open_or_create(dir.path()).err().unwrap();
    assert!(matches!(error, LogError::NotARillLog(_)), "{error}");
    assert!(
        dir.path().join("notes.txt").exists(),
        "nothing in it was touched"
    );
    let log_dir = dir.path().join("log");
    drop(EventLog::open_or_create(&log_dir).unwrap());
    std::fs::write(log_dir.join("RILL_LOG"), "rill-log 99\n").unwrap();
    let error = EventLog::open(&log_dir).err().unwrap();
    assert!(
        error.to_string().contains("format 'rill-log 99'"),
        "{error}"
    );
}

#[test]
fn open_refuses_what_is_not_a_rill_log() {
    let dir = tempfile::tempdir().unwrap();
    // A plain non-empty directory.
    std::fs::write(dir.path().join("notes.txt"), "my files").unwrap();
    let error = EventLog::open(dir.path()).err().unwrap();
    assert!(
        matches!(&error, LogError::NotARillLog(path) if path == dir.path()),
        "{error}"
    );
    // An empty directory is not a log yet, but open_or_create makes it one.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        EventLog::open(&empty),
        Err(LogError::NotARillLog(_))
    ));
    drop(EventLog::open_or_create(&empty).unwrap());
    drop(EventLog::open(&empty).unwrap());
    // A file.
    let file = dir.path().join("notes.txt");
    assert!(matches!(
        EventLog::open(&file),
        Err(LogError::NotARillLog(_))
    ));
    assert!(matches!(
        EventLog::open_or_create(&file),
        Err(LogError::NotARillLog(_))
    ));
    // Some other fjall database.
    let other = dir.path().join("other-db");
    {
        let db = fjall::Database::builder(&other).open().unwrap();
        let keyspace = db
            .keyspace("data", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        keyspace.insert("k", "v").unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    for error in [
        EventLog::open(&other).err().unwrap(),
        EventLog::open_or_create(&other).err().unwrap(),
    ] {
        assert!(matches!(error, LogError::NotARillLog(_)), "{error}");
        assert!(error.to_string().contains("other-db"), "{error}");
    }
}

#[test]
fn an_unfinished_marker_does_not_block_creation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("RILL_LOG.tmp"), "rill-").unwrap();
    let log = EventLog::open_or_create(dir.path()).unwrap();
    log.create_topic("t", 1).unwrap();
}

#[test]
fn readers_see_a_dense_prefix_while_writers_append() {
    let (_dir, log) = fresh();
    log.create_topic("live", 1).unwrap();
    let total = 20_000u64;
    std::thread::scope(|scope| {
        let writer = log.clone();
        scope.spawn(move || {
            for batch in 0..total / 100 {
                let records = (0..100)
                    .map(|i| ProducerRecord::new((batch * 100 + i).to_string()))
                    .collect();
                writer.append_batch("live", records).unwrap();
            }
        });
        let mut next = 0u64;
        while next < total {
            let end = log.end_offsets("live").unwrap()[0];
            assert!(end >= next, "end offsets never go back");
            for record in log.read("live", 0, next, 1000).unwrap() {
                assert_eq!(record.offset, next);
                assert_eq!(String::from_utf8(record.value).unwrap(), next.to_string());
                next += 1;
            }
        }
    });
}

#[test]
fn a_failed_batch_appends_nothing() {
    let (_dir, log) = fresh();
    log.create_topic("t", 2).unwrap();
    log.append_batch(
        "t",
        vec![ProducerRecord::new("a"), ProducerRecord::new("b")],
    )
    .unwrap();
    let error = log
        .append_batch(
            "t",
            vec![
                ProducerRecord::new("c"),
                ProducerRecord::new("d").with_partition(9),
            ],
        )
        .unwrap_err();
    assert!(error.to_string().contains("no partition 9"), "{error}");
    assert_eq!(log.end_offsets("t").unwrap(), vec![1, 1]);
    assert_eq!(log.append_batch("t", Vec::new()).unwrap(), vec![]);
    let next = log.append("t", ProducerRecord::new("e")).unwrap();
    assert_eq!(
        (next.partition, next.offset),
        (0, 1),
        "round-robin goes on where it was"
    );
}

#[test]
fn a_second_handle_on_an_open_log_is_refused() {
    let (dir, _log) = fresh();
    let error = EventLog::open(dir.path().join("log")).err().unwrap();
    assert!(matches!(error, LogError::Locked { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("is open in process {} (", std::process::id())),
        "the holder is named: {error}"
    );
}

#[test]
fn data_survives_reopening_again_and_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 3];
    for round in 0..5 {
        let log = EventLog::open_or_create(&path).unwrap();
        if round == 0 {
            log.create_topic("durable", 3).unwrap();
        }
        assert_eq!(
            log.end_offsets("durable").unwrap(),
            expected.iter().map(|v| v.len() as u64).collect::<Vec<_>>(),
            "end offsets recovered in round {round}"
        );
        for partition in 0..3 {
            assert_eq!(
                values(&log, "durable", partition),
                expected[partition as usize]
            );
        }
        for i in 0..10 {
            let value = format!("r{round}-{i}");
            let partition = (round + i) % 3;
            log.append(
                "durable",
                ProducerRecord::new(value.clone()).with_partition(partition),
            )
            .unwrap();
            expected[partition as usize].push(value);
        }
        log.flush().unwrap();
    }
    let log = EventLog::open(&path).unwrap();
    assert_eq!(log.topics().len(), 1);
    assert_eq!(log.topic("durable").unwrap().partitions, 3);
}

#[test]
fn concurrent_appends_lose_nothing() {
    let (_dir, log) = fresh();
    log.create_topic("busy", 2).unwrap();
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let log = log.clone();
            scope.spawn(move || {
                for i in 0..250 {
                    let record = ProducerRecord::new(format!("{writer}:{i}")).with_partition(i % 2);
                    log.append("busy", record).unwrap();
                }
            });
        }
    });
    assert_eq!(log.end_offsets("busy").unwrap(), vec![500, 500]);
    for partition in 0..2 {
        let mut last_seen: BTreeMap<String, u32> = BTreeMap::new();
        for value in values(&log, "busy", partition) {
            let (writer, i) = value.split_once(':').unwrap();
            let i: u32 = i.parse().unwrap();
            if let Some(previous) = last_seen.insert(writer.to_owned(), i) {
                assert!(i > previous, "each writer's records keep their order");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_appends_read_back_per_partition(
        batches in prop::collection::vec(
            prop::collection::vec((0u32..3, prop::collection::vec(any::<u8>(), 0..20)), 1..150),
            1..6,
        ),
        read_size in 1usize..70,
    ) {
        let (_dir, log) = fresh();
        log.create_topic("p", 3).unwrap();
        let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
        for batch in batches {
            let records = batch
                .iter()
                .map(|(partition, value)| ProducerRecord::new(value.clone()).with_partition(*partition))
                .collect();
            log.append_batch("p", records).unwrap();
            for (partition, value) in batch {
                expected[partition as usize].push(value);
            }
        }
        for partition in 0..3u32 {
            let read: Vec<Vec<u8>> = log
                .read("p", partition, 0, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|r| r.value)
                .collect();
            prop_assert_eq!(&read, &expected[partition as usize]);
            // From any offset, across entries' boundaries.
            for from in 0..read.len() {
                let records = log.read("p", partition, from as u64, read_size).unwrap();
                let wanted = &read[from..read.len().min(from + read_size)];
                prop_assert_eq!(records.len(), wanted.len());
                for ((record, value), offset) in records.iter().zip(wanted).zip(from as u64..) {
                    prop_assert_eq!((record.offset, &record.value), (offset, value));
                }
            }
        }
    }
}

#[test]
fn an_append_is_stored_in_entries_of_bounded_size() {
    use rill_core::storage::Storage;
    let (_dir, log, storage) = damageable();
    log.create_topic("big", 2).unwrap();
    let small = (0..200).map(|i| ProducerRecord::new(format!("{i}")).with_partition(0));
    let large = (0..3).map(|i| ProducerRecord::new(vec![i; 40 * 1024]).with_partition(1));
    log.append_batch("big", small.chain(large).collect())
        .unwrap();
    let last_offsets = |partition: u32| -> Vec<u64> {
        let mut prefix = b"big\0".to_vec();
        prefix.extend_from_slice(&partition.to_be_bytes());
        storage
            .keys("rill.records", &prefix, &[], usize::MAX)
            .unwrap()
            .iter()
            .map(|key| u64::from_be_bytes(key[prefix.len()..].try_into().unwrap()))
            .collect()
    };
    assert_eq!(last_offsets(0), [63, 127, 191, 199], "64 records at most");
    assert_eq!(
        last_offsets(1),
        [0, 1, 2],
        "64 KiB at most, unless one record is larger"
    );
    assert_eq!(values(&log, "big", 0).len(), 200);
    let large = log.read("big", 1, 1, 5).unwrap();
    assert_eq!(large.len(), 2);
    assert!(large[1].value.iter().all(|&byte| byte == 2));
}

/// Set in the child process of [`a_crash_of_the_process_loses_nothing_appended`].
const CRASH_DIR_VAR: &str = "RILL_LOG_TEST_CRASH_DIR";

#[test]
fn a_crash_of_the_process_loses_nothing_appended() {
    if let Some(path) = std::env::var_os(CRASH_DIR_VAR) {
        // The child: append without flushing, then die without running any destructor.
        let log = EventLog::open_or_create(&path).unwrap();
        log.create_topic("crash", 2).unwrap();
        for i in 0..1_000 {
            log.append(
                "crash",
                ProducerRecord::new(format!("{i}")).with_key(format!("{}", i % 7)),
            )
            .unwrap();
        }
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_crash_of_the_process_loses_nothing_appended",
            "--exact",
            "--nocapture",
        ])
        .env(CRASH_DIR_VAR, &path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let log = EventLog::open(&path).unwrap();
    let ends = log.end_offsets("crash").unwrap();
    assert_eq!(ends.iter().sum::<u64>(), 1_000);
    let mut seen: Vec<u32> = (0..2)
        .flat_map(|partition| values(&log, "crash", partition))
        .map(|value| value.parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..1_000).collect::<Vec<_>>());
}

mod damage;
mod golden;
mod transactions;

/// The key spaces of a log.
const SPACES: [&str; 5] = [
    "rill.topics",
    "rill.records",
    "rill.transactions",
    "rill.staged",
    "rill.commit-marks",
];

/// The fjall storage of a log kept under `dir`.
fn fjall_in(dir: &std::path::Path) -> rill_store::FjallStorage {
    rill_store::FjallStorage::open(&dir.join("db"), &SPACES).unwrap()
}

/// Flips a bit of the last byte of the value of `key` in `space`, through the storage.
fn flip_value(storage: &rill_store::FjallStorage, space: &'static str, key: Vec<u8>) {
    use rill_core::storage::{Durability, Storage, WriteOp};
    let mut value = storage.get(space, &key).unwrap().unwrap();
    let last = value.len() - 1;
    value[last] ^= 0x40;
    let put = WriteOp::Put { space, key, value };
    storage.write(vec![put], Durability::Synced).unwrap();
}

/// A log on fjall with a second handle on the same storage, to damage values under it.
fn damageable() -> (tempfile::TempDir, EventLog, rill_store::FjallStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = fjall_in(dir.path());
    let log = EventLog::on(
        std::sync::Arc::new(storage.clone()),
        dir.path().to_path_buf(),
    )
    .unwrap();
    (dir, log, storage)
}

#[test]
fn a_damaged_entry_is_reported_with_its_topic_partition_and_offsets() {
    let (_dir, log, storage) = damageable();
    log.create_topic("events", 2).unwrap();
    // Two appends, two entries of partition 1: offset 0, and offsets 1 and 2.
    for values in [&["e0"][..], &["e1", "e2"]] {
        log.append_batch(
            "events",
            values
                .iter()
                .map(|value| ProducerRecord::new(*value).with_partition(1))
                .collect(),
        )
        .unwrap();
    }
    // The second entry, keyed by its last offset.
    let mut key = b"events\0".to_vec();
    key.extend_from_slice(&1u32.to_be_bytes());
    key.extend_from_slice(&2u64.to_be_bytes());
    flip_value(&storage, "rill.records", key);
    assert_eq!(
        log.read("events", 1, 0, 1).unwrap().len(),
        1,
        "offset 0 is intact"
    );
    let error = log.read("events", 1, 0, 3).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, LogError::Corrupt { ref topic, .. } if topic == "events")
            && message.contains("partition 1")
            && message.contains("offset 1, in the entry that ends at offset 2")
            && message.contains("checksum"),
        "{message}"
    );
}

#[test]
fn logs_of_earlier_formats_are_refused_by_name() {
    for format in ["rill-log 1", "rill-log 2"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("RILL_LOG"), format!("{format}\n")).unwrap();
        let error = EventLog::open(dir.path()).unwrap_err();
        assert!(
            matches!(error, LogError::UnsupportedFormat { ref found, .. } if found == format),
            "{error}"
        );
        assert!(
            error.to_string().contains("it reads 'rill-log 3'"),
            "{error}"
        );
    }
}

//! Golden files: what the log stores — every key and value of a small log — is pinned per
//! format, so a change to it without a new [`rill_log::FORMAT`] fails here.
//!
//! `tests/golden/<format>.bin` (`rill-log-3.bin`) holds the key spaces of the log that
//! [`build`] makes. This build must write exactly those bytes and read them back as what
//! [`build`] wrote. Older formats are refused by the log's marker, so only the current one has
//! a file. When what the log stores changes: bump `FORMAT`, bump the kind of each changed value
//! in `rill_core::codec`, and write the new file with
//! `RILL_BLESS_GOLDEN=1 cargo nextest run -p rill-log golden`.

use std::path::PathBuf;
use std::sync::Arc;

use rill_core::storage::{Durability, Storage, WriteOp};
use rill_core::transactional::CommitMark;
use rill_log::{EventLog, ProducerRecord, StagedRecord};
use rill_store::FjallStorage;

use super::SPACES;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{}.bin", rill_log::FORMAT.replace(' ', "-")))
}

fn record(value: &str, timestamp: i64) -> ProducerRecord {
    ProducerRecord::new(value).with_timestamp(timestamp)
}

/// A log with a record of every shape, entries of several records, a committed transaction
/// with its writer's commit mark, and an open one.
fn build(log: &EventLog) {
    log.create_topic("events", 2).unwrap();
    log.append_batch(
        "events",
        vec![
            record("keyed", 1_000).with_key("k"),
            record("explicit", 1_001).with_partition(1),
            record("round-robin", -5),
        ],
    )
    .unwrap();
    log.append_batch(
        "events",
        (0..70)
            .map(|i| record(&format!("many {i}"), 2_000 + i).with_partition(0))
            .collect(),
    )
    .unwrap();
    log.stage(
        "job/sink/0/1",
        "events",
        &[
            record("staged", 3_000),
            record("staged keyed", 3_001).with_key("k"),
        ],
    )
    .unwrap();
    log.stage("job/sink/0/1", "events", &[record("staged later", 3_002)])
        .unwrap();
    log.prepare("job/sink/0/1").unwrap();
    let mark = CommitMark {
        writer: "job/sink/",
        checkpoint: 7,
    };
    log.commit_marked("job/sink/0/1", Some(mark)).unwrap();
    log.stage(
        "job/sink/0/2",
        "events",
        &[record("open", 4_000).with_partition(1)],
    )
    .unwrap();
    log.prepare("job/sink/0/2").unwrap();
}

/// Every entry of every key space: the space's, key's and value's lengths (u32, little
/// endian) and bytes.
fn dump(storage: &FjallStorage) -> Vec<u8> {
    let mut bytes = Vec::new();
    for space in SPACES {
        for (key, value) in storage.scan(space, &[], &[], usize::MAX).unwrap() {
            for part in [space.as_bytes(), &key, &value] {
                bytes.extend_from_slice(&u32::try_from(part.len()).unwrap().to_le_bytes());
                bytes.extend_from_slice(part);
            }
        }
    }
    bytes
}

/// The writes that restore a [`dump`].
fn undump(mut bytes: &[u8]) -> Vec<WriteOp> {
    fn part(bytes: &mut &[u8]) -> Vec<u8> {
        let (len, rest) = bytes.split_first_chunk::<4>().unwrap();
        let (part, rest) = rest.split_at(u32::from_le_bytes(*len) as usize);
        *bytes = rest;
        part.to_vec()
    }
    let mut ops = Vec::new();
    while !bytes.is_empty() {
        let space = part(&mut bytes);
        let space = SPACES
            .into_iter()
            .find(|known| known.as_bytes() == space)
            .unwrap();
        ops.push(WriteOp::Put {
            space,
            key: part(&mut bytes),
            value: part(&mut bytes),
        });
    }
    ops
}

fn storage(dir: &tempfile::TempDir) -> FjallStorage {
    super::fjall_in(dir.path())
}

fn open(storage: &FjallStorage, dir: &tempfile::TempDir) -> EventLog {
    EventLog::on(Arc::new(storage.clone()), dir.path().to_path_buf()).unwrap()
}

fn values(log: &EventLog, partition: u32) -> Vec<(String, i64)> {
    let end = log.end_offsets("events").unwrap()[partition as usize];
    log.read("events", partition, 0, end as usize)
        .unwrap()
        .into_iter()
        .map(|r| (String::from_utf8(r.value).unwrap(), r.timestamp))
        .collect()
}

#[test]
fn the_stored_form_of_this_format_is_pinned_and_reads_back() {
    let written = tempfile::tempdir().unwrap();
    let storage_written = storage(&written);
    let log = open(&storage_written, &written);
    build(&log);
    let dumped = dump(&storage_written);
    let path = golden_path();
    if std::env::var_os("RILL_BLESS_GOLDEN").is_some() {
        std::fs::write(&path, &dumped).unwrap();
    }
    let golden = std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error} (a new format needs its golden file)",
            path.display()
        )
    });
    assert!(
        golden == dumped,
        "what the log stores changed: if readers of this format cannot read it, bump \
         rill_log::FORMAT (and the version of each changed kind in rill_core::codec); then \
         bless {}",
        path.display()
    );

    let read = tempfile::tempdir().unwrap();
    let storage_read = storage(&read);
    storage_read
        .write(undump(&golden), Durability::Synced)
        .unwrap();
    let log = open(&storage_read, &read);
    let mut expected: [Vec<(String, i64)>; 2] = Default::default();
    // Round-robin starts at partition 0; keyed records go where the key hashes.
    let keyed = rill_log::partition_for_key(b"k", 2) as usize;
    expected[keyed].push(("keyed".to_owned(), 1_000));
    expected[1].push(("explicit".to_owned(), 1_001));
    expected[0].push(("round-robin".to_owned(), -5));
    expected[0].extend((0..70).map(|i| (format!("many {i}"), 2_000 + i)));
    expected[1].push(("staged".to_owned(), 3_000));
    expected[keyed].push(("staged keyed".to_owned(), 3_001));
    expected[0].push(("staged later".to_owned(), 3_002));
    assert_eq!([values(&log, 0), values(&log, 1)], expected);
    assert_eq!(log.committed_checkpoint("job/sink/").unwrap(), Some(7));
    let open = log.transactions("").unwrap();
    assert_eq!(open.len(), 1);
    assert!(open[0].id == "job/sink/0/2" && open[0].prepared && open[0].records == 1);
    assert_eq!(
        log.staged("job/sink/0/2").unwrap(),
        [StagedRecord {
            partition: Some(1),
            key: None,
            value: b"open".to_vec(),
            timestamp: 4_000,
        }]
    );
}

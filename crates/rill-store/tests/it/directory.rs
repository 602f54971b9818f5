//! What a checkpoint store's directory may be, and opening one to read it: nothing is written
//! into a directory that is not a store, and reading never changes the store, not even the
//! damage opening would repair.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rill_store::{CheckpointStore, StoreError};

use crate::write_checkpoint;

/// Every file under `dir` with its size and content hash.
fn files(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
            found.insert(path, (bytes.len() as u64, hash));
        }
    }
    found
}

#[test]
fn a_directory_that_is_not_a_store_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let before = files(dir.path());
    for refused in [
        CheckpointStore::open(dir.path()).err(),
        CheckpointStore::open_read_only(dir.path()).err(),
    ] {
        assert!(
            matches!(&refused, Some(StoreError::NotACheckpointStore(path)) if path == dir.path()),
            "{refused:?}"
        );
    }
    assert_eq!(files(dir.path()), before, "nothing written");
    let missing = dir.path().join("missing");
    assert!(matches!(
        CheckpointStore::open_read_only(&missing),
        Err(StoreError::NoCheckpointStore(_))
    ));
    assert!(!missing.exists(), "reading does not create");
}

#[test]
fn reading_a_store_changes_nothing_and_a_store_from_before_the_marker_is_recognized() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = CheckpointStore::open(dir.path()).unwrap();
        write_checkpoint(&store, "job", 1, true);
    }
    std::fs::remove_file(dir.path().join("RILL_CHECKPOINTS")).unwrap();
    let before = files(dir.path());
    let store = CheckpointStore::open_read_only(dir.path()).unwrap();
    assert_eq!(store.list("job").unwrap().len(), 1);
    assert!(
        store.journal_repairs().is_empty(),
        "{:?}",
        store.journal_repairs()
    );
    drop(store);
    assert_eq!(files(dir.path()), before, "read-only means read-only");
    CheckpointStore::open(dir.path()).unwrap();
    assert!(dir.path().join("RILL_CHECKPOINTS").is_file());
}

/// A store with three checkpoints, and its newest journal's path and where its data ends
/// (journals are preallocated with zeros: after the last non-zero byte).
fn store_with_journal() -> (tempfile::TempDir, PathBuf, usize) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = CheckpointStore::open(dir.path()).unwrap();
        for checkpoint in 1..=3 {
            write_checkpoint(&store, "job", checkpoint, true);
        }
    }
    let journal = files(dir.path())
        .into_keys()
        .filter(|path| path.extension().is_some_and(|ext| ext == "jnl"))
        .max_by_key(|path| std::fs::metadata(path).unwrap().len())
        .unwrap();
    let bytes = std::fs::read(&journal).unwrap();
    let data_end = bytes.iter().rposition(|&byte| byte != 0).unwrap() + 1;
    (dir, journal, data_end)
}

#[test]
fn a_journal_cut_mid_write_is_reported_read_only_without_being_repaired_then_when_opened() {
    let (dir, journal, data_end) = store_with_journal();
    let bytes = std::fs::read(&journal).unwrap();
    std::fs::write(&journal, &bytes[..data_end - 20]).unwrap();
    let before = files(dir.path());

    let reader = CheckpointStore::open_read_only(dir.path()).unwrap();
    let repairs = reader.journal_repairs().to_vec();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    assert_eq!(repairs[0].journal, journal);
    assert_eq!(repairs[0].bytes_before, (data_end - 20) as u64);
    assert!(repairs[0].to_string().contains("damaged or unfinished"));
    assert_eq!(
        reader.list("job").unwrap().len(),
        2,
        "the cut checkpoint is not read"
    );
    drop(reader);
    assert_eq!(
        files(dir.path()),
        before,
        "the damage is reported, not repaired"
    );

    let store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.journal_repairs(), &repairs[..]);
}

#[test]
fn a_flipped_byte_in_a_journal_is_read_around_read_only_and_refused_naming_the_journal() {
    let (dir, journal, data_end) = store_with_journal();
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[data_end - 20] ^= 0xff;
    std::fs::write(&journal, &bytes).unwrap();
    let before = files(dir.path());

    let reader = CheckpointStore::open_read_only(dir.path()).unwrap();
    let skipped = reader.skipped_journal_batches().to_vec();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].journal, journal);
    assert_eq!(
        skipped[0].bytes.end, data_end as u64,
        "the last batch is damaged"
    );
    assert_eq!(
        reader.list("job").unwrap().len(),
        2,
        "the checkpoints before the damaged batch are read"
    );
    drop(reader);
    assert_eq!(files(dir.path()), before, "read-only means read-only");

    let error = CheckpointStore::open(dir.path()).err().expect("damaged");
    let message = error.to_string();
    assert!(
        matches!(&error, StoreError::DamagedJournal { batches, .. } if batches == &skipped),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string())
            && message.contains(&journal.display().to_string()),
        "{message}"
    );
}

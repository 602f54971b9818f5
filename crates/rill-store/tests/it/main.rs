//! The checkpoint store against a real directory: what completes, what does not, reopening,
//! discarding.

#![allow(clippy::unwrap_used)]

use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_core::coordinator::CheckpointMetadata;
use std::sync::Arc;

use rill_core::storage::{Durability, Storage, WriteOp};
use rill_store::{CheckpointStore, FjallStorage, StoreError, StoredValue};

mod directory;
mod golden;
mod state;

fn snapshot(position: u8) -> SubtaskSnapshot {
    SubtaskSnapshot {
        source_positions: vec![vec![position; 3]],
        operators: Vec::new(),
    }
}

fn metadata(checkpoint: u64, subtasks: usize) -> CheckpointMetadata {
    CheckpointMetadata {
        checkpoint: CheckpointId(checkpoint),
        savepoint: false,
        triggered_at_ms: checkpoint * 10,
        acknowledged_at_ms: checkpoint * 10 + 3,
        subtasks,
        state_bytes: 6,
        layout: Default::default(),
    }
}

fn write_checkpoint(store: &CheckpointStore, job: &str, checkpoint: u64, with_metadata: bool) {
    for subtask in 0..2 {
        store
            .write_snapshot(
                job,
                CheckpointId(checkpoint),
                subtask,
                &snapshot(checkpoint as u8 + subtask as u8),
            )
            .unwrap();
    }
    if with_metadata {
        store.write_metadata(job, &metadata(checkpoint, 2)).unwrap();
    }
}

#[test]
fn only_checkpoints_with_metadata_exist_and_they_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(store.latest("job").unwrap(), None);
        write_checkpoint(&store, "job", 1, true);
        write_checkpoint(&store, "job", 2, false);
        write_checkpoint(&store, "other", 7, true);
        let latest = store.latest("job").unwrap().unwrap().checkpoint;
        assert_eq!(
            latest.metadata.checkpoint,
            CheckpointId(1),
            "checkpoint 2 has no metadata"
        );
        assert_eq!(latest.snapshots[&1], snapshot(2));
    }
    let store = CheckpointStore::open(dir.path()).unwrap();
    let listed: Vec<u64> = store
        .list("job")
        .unwrap()
        .iter()
        .map(|m| m.checkpoint.0)
        .collect();
    assert_eq!(listed, vec![1]);
    assert_eq!(
        store.latest("other").unwrap().unwrap().checkpoint.id(),
        CheckpointId(7)
    );
    assert_eq!(
        store.latest("jo").unwrap(),
        None,
        "job names do not match by prefix"
    );
}

#[test]
fn discarding_removes_a_checkpoint_and_metadata_before_its_snapshots_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    write_checkpoint(&store, "job", 1, true);
    write_checkpoint(&store, "job", 2, true);
    store.discard("job", CheckpointId(2)).unwrap();
    assert_eq!(
        store.latest("job").unwrap().unwrap().checkpoint.id(),
        CheckpointId(1)
    );
    let error = store.write_metadata("job", &metadata(3, 2)).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::MetadataBeforeSnapshots {
                checkpoint: CheckpointId(3),
                subtask: 0,
                ..
            }
        ),
        "{error}"
    );
}

/// A store on fjall, with a second handle on the same storage to damage values under it.
fn damageable(dir: &std::path::Path) -> (CheckpointStore, FjallStorage) {
    let raw = FjallStorage::open(dir, &["snapshots", "metadata"]).unwrap();
    let store = CheckpointStore::on(Arc::new(raw.clone()), dir.display().to_string());
    (store, raw)
}

fn key(job: &str, checkpoint: u64, subtask: Option<u32>) -> Vec<u8> {
    let mut key = format!("{job}\0").into_bytes();
    key.extend_from_slice(&checkpoint.to_be_bytes());
    if let Some(subtask) = subtask {
        key.extend_from_slice(&subtask.to_be_bytes());
    }
    key
}

/// Changes a stored value with `damage`.
fn damage(raw: &FjallStorage, space: &'static str, key: Vec<u8>, damage: impl Fn(&mut Vec<u8>)) {
    let mut value = raw.get(space, &key).unwrap().unwrap();
    damage(&mut value);
    raw.write(vec![WriteOp::Put { space, key, value }], Durability::Synced)
        .unwrap();
}

#[test]
fn a_damaged_checkpoint_is_named_and_passed_over_for_the_newest_intact_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, raw) = damageable(dir.path());
    for checkpoint in 1..=3 {
        write_checkpoint(&store, "job", checkpoint, true);
    }
    damage(&raw, "snapshots", key("job", 3, Some(1)), |v| {
        let last = v.len() - 1;
        v[last] ^= 0x10;
    });
    damage(&raw, "metadata", key("job", 2, None), |v| v[30] ^= 1);
    let intact = store.latest("job").unwrap().unwrap();
    assert_eq!(intact.checkpoint.id(), CheckpointId(1));
    let skipped: Vec<String> = intact.skipped.iter().map(ToString::to_string).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].starts_with(
            "the snapshot of subtask 1 of checkpoint 3 of job 'job' is damaged: checksum mismatch"
        ),
        "{skipped:?}"
    );
    assert!(
        skipped[1].starts_with("the metadata of checkpoint 2 of job 'job' is damaged"),
        "{skipped:?}"
    );
    let error = store.get("job", CheckpointId(3)).unwrap_err();
    assert!(matches!(error, StoreError::Damaged(_)), "{error}");
    assert!(store.list("job").is_err(), "listing names the damage too");

    damage(&raw, "metadata", key("job", 1, None), |v| v[0] = b'X');
    let error = store.latest("job").unwrap_err();
    assert!(
        matches!(&error, StoreError::NoIntactCheckpoint { damaged, .. } if damaged.len() == 3),
        "{error}"
    );
    assert!(
        error.to_string().contains("no Rill magic number"),
        "{error}"
    );
    assert_eq!(
        store.discard_leftovers("job").unwrap(),
        0,
        "damage is kept for inspection, not deleted"
    );
}

#[test]
fn metadata_cut_short_is_an_unfinished_checkpoint_and_a_leftover() {
    let dir = tempfile::tempdir().unwrap();
    let (store, raw) = damageable(dir.path());
    write_checkpoint(&store, "job", 1, true);
    write_checkpoint(&store, "job", 2, true);
    damage(&raw, "metadata", key("job", 2, None), |v| {
        v.truncate(v.len() / 2)
    });
    let intact = store.latest("job").unwrap().unwrap();
    assert_eq!(intact.checkpoint.id(), CheckpointId(1));
    assert!(intact.skipped[0].is_unfinished_metadata());
    assert_eq!(store.list("job").unwrap().len(), 1);
    assert_eq!(store.discard_leftovers("job").unwrap(), 1);
    assert!(store.latest("job").unwrap().unwrap().skipped.is_empty());
}

#[test]
fn metadata_longer_than_its_header_says_is_damage_not_a_write_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let (store, raw) = damageable(dir.path());
    write_checkpoint(&store, "job", 1, true);
    write_checkpoint(&store, "job", 2, true);
    let (space, key) = CheckpointStore::stored_at("job", CheckpointId(2), StoredValue::Metadata);
    assert_eq!((space, &key), ("metadata", &self::key("job", 2, None)));
    // The length field (bytes 7..15, little-endian) says one byte fewer than there are.
    damage(&raw, space, key, |v| {
        let declared = u64::from_le_bytes(v[7..15].try_into().unwrap());
        v[7..15].copy_from_slice(&(declared - 1).to_le_bytes());
    });
    let intact = store.latest("job").unwrap().unwrap();
    assert_eq!(intact.checkpoint.id(), CheckpointId(1));
    assert!(
        !intact.skipped[0].is_unfinished_metadata(),
        "{}",
        intact.skipped[0]
    );
    assert_eq!(
        store.discard_leftovers("job").unwrap(),
        0,
        "kept for inspection"
    );
}

#[test]
fn leftovers_of_unfinished_checkpoints_are_discarded_and_new_ids_pass_every_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.next_id("job").unwrap(), CheckpointId(1));
    write_checkpoint(&store, "job", 1, true);
    write_checkpoint(&store, "job", 2, false);
    write_checkpoint(&store, "job", 3, true);
    write_checkpoint(&store, "job", 4, false);
    write_checkpoint(&store, "other", 9, false);
    assert_eq!(store.next_id("job").unwrap(), CheckpointId(5));

    assert_eq!(store.discard_leftovers("job").unwrap(), 2);
    assert_eq!(store.discard_leftovers("job").unwrap(), 0);
    let kept: Vec<u64> = store
        .list("job")
        .unwrap()
        .iter()
        .map(|m| m.checkpoint.0)
        .collect();
    assert_eq!(kept, [1, 3]);
    assert_eq!(
        store
            .get("job", CheckpointId(1))
            .unwrap()
            .unwrap()
            .snapshots
            .len(),
        2
    );
    assert_eq!(store.next_id("job").unwrap(), CheckpointId(4));
    assert_eq!(
        store.next_id("other").unwrap(),
        CheckpointId(10),
        "another job's leftovers are its own"
    );
    // Leftovers of a parallelism-2 run no longer spoil a checkpoint of that id at
    // parallelism 1.
    store
        .write_snapshot("job", CheckpointId(4), 0, &snapshot(4))
        .unwrap();
    store.write_metadata("job", &metadata(4, 1)).unwrap();
    assert_eq!(
        store
            .latest("job")
            .unwrap()
            .unwrap()
            .checkpoint
            .snapshots
            .len(),
        1
    );
}

#[test]
fn a_second_handle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = CheckpointStore::open(dir.path()).unwrap();
    assert!(matches!(
        CheckpointStore::open(dir.path()),
        Err(StoreError::Locked(_))
    ));
}

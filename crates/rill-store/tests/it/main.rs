//! The checkpoint store against a real directory: what completes, what does not, reopening,
//! discarding.

#![allow(clippy::unwrap_used)]

use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_core::coordinator::CheckpointMetadata;
use rill_store::{CheckpointStore, StoreError};

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
        let latest = store.latest("job").unwrap().unwrap();
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
        store.latest("other").unwrap().unwrap().metadata.checkpoint,
        CheckpointId(7)
    );
    assert_eq!(
        store.latest("jo").unwrap(),
        None,
        "job names do not match by prefix"
    );
}

#[test]
fn discarding_removes_a_checkpoint_and_an_incomplete_one_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    write_checkpoint(&store, "job", 1, true);
    write_checkpoint(&store, "job", 2, true);
    store.discard("job", CheckpointId(2)).unwrap();
    assert_eq!(
        store.latest("job").unwrap().unwrap().metadata.checkpoint,
        CheckpointId(1)
    );
    store.write_metadata("job", &metadata(3, 2)).unwrap();
    let error = store.latest("job").unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Incomplete {
                checkpoint: 3,
                found: 0,
                expected: 2,
                ..
            }
        ),
        "{error}"
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
    assert_eq!(store.latest("job").unwrap().unwrap().snapshots.len(), 1);
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

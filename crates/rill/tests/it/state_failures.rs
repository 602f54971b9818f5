//! Keyed state that fails under a running job — its backend's I/O, its working copy lost, a
//! restored chunk that does not decode — fails the job with a typed state error naming the
//! operator, the state and the key group, never with a panic.

use std::sync::Arc;
use std::time::Duration;

use rill::core::state::{FrozenTables, StateBackend, StateError, StateTables};
use rill::prelude::*;
use rill::runtime::{JobError, Runtime, RuntimeConfig};
use rill::store::CheckpointStore;

use crate::support::Counter;

/// Keyed state tables whose disk fills up after `writes` puts; they keep nothing.
struct FillingDisk {
    writes: u32,
}

impl StateTables for FillingDisk {
    fn get(&mut self, _: &str, _: u32, _: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(None)
    }

    fn put(&mut self, table: &str, group: u32, _: &[u8], _: &[u8]) -> Result<(), StateError> {
        match self.writes.checked_sub(1) {
            Some(left) => {
                self.writes = left;
                Ok(())
            }
            None => Err(StateError::Backend {
                table: table.to_owned(),
                key_group: Some(group),
                reason: "no space left on device".to_owned(),
            }),
        }
    }

    fn delete(&mut self, _: &str, _: u32, _: &[u8]) -> Result<(), StateError> {
        Ok(())
    }

    fn freeze(&mut self) -> Result<Box<dyn FrozenTables>, StateError> {
        Err(StateError::Open {
            reason: "never frozen: the job takes no checkpoint".to_owned(),
        })
    }
}

/// Counts words (every number of `0..1 000` as a word) with a keyed process function.
fn counting(env: &StreamEnv) {
    env.from_sequence(0..1_000)
        .map(|n| n.to_string())
        .key_by(|word: &String| word.clone())
        .process(Counter::new())
        .collect();
}

/// The task error a failed job ended with.
fn task_error(error: &JobError) -> &rill::core::TaskError {
    match error {
        JobError::TaskFailed { error, .. } => error,
        other => panic!("expected a task failure, got {other}"),
    }
}

#[test]
fn a_state_backend_failing_under_a_running_operator_fails_the_job_with_a_state_error() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    counting(&env);
    let mut graph = env.job_graph("disk full").unwrap();
    graph.state_backend =
        StateBackend::External(Arc::new(|_| Ok(Box::new(FillingDisk { writes: 10 }))));
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let error = runtime.submit(graph).unwrap().wait().unwrap_err();
    let task = task_error(&error);
    assert_eq!(task.operator, "process", "{error}");
    assert!(
        matches!(
            task.error.state(),
            Some(StateError::Backend { table, key_group: Some(_), reason })
                if table == "count" && reason == "no space left on device"
        ),
        "{error:?}"
    );
}

#[test]
fn a_fjall_working_copy_removed_before_the_job_deploys_fails_it_with_a_state_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let env = StreamEnv::new();
    env.set_state_backend(StateBackendConfig::Fjall { dir: state.clone() });
    counting(&env);
    let graph = env.job_graph("lost working copy").unwrap();
    // The backend is open; its directory goes, and a file takes its place.
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(&state, b"not a directory").unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let error = runtime.submit(graph).unwrap().wait().unwrap_err();
    let task = task_error(&error);
    assert_eq!(task.operator, "process", "{error}");
    assert!(
        matches!(task.error.state(), Some(StateError::Open { .. })),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("cannot open the keyed state tables"),
        "{error}"
    );
}

/// Sums `0..1 000` per remainder of 10, checkpointing into `dir`.
fn summing(dir: &std::path::Path) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(10));
    env.set_checkpoint_dir(dir);
    env.from_sequence(0..1_000)
        .key_by(|n: &u64| n % 10)
        .reduce(|a, b| a + b)
        .collect();
    env
}

#[test]
fn a_garbled_keyed_state_chunk_fails_the_restore_naming_operator_state_and_key_group() {
    let dir = tempfile::tempdir().unwrap();
    summing(dir.path()).execute("garbled").unwrap();

    // The newest checkpoint again, under a newer id, with one chunk of the reduce's state
    // replaced by bytes that are not its entries (the envelope around it is intact).
    let store = CheckpointStore::open(dir.path()).unwrap();
    let latest = store.latest("garbled").unwrap().unwrap().checkpoint;
    let id = store.next_id("garbled").unwrap();
    // (the snapshot's position in the plan, the key group)
    let mut garbled = None;
    for (&subtask, snapshot) in latest.snapshots.iter() {
        let mut snapshot = snapshot.clone();
        for operator in &mut snapshot.operators {
            if let Some(groups) = operator.keyed.tables.get_mut("reduce")
                && garbled.is_none()
                && let Some((&group, chunk)) = groups.iter_mut().next()
            {
                *chunk = vec![0xde, 0xad, 0xbe, 0xef];
                garbled = Some((subtask, group));
            }
        }
        store
            .write_snapshot("garbled", id, subtask, &snapshot)
            .unwrap();
    }
    let (_, group) = garbled.expect("the reduce has state");
    let mut metadata = latest.metadata.clone();
    metadata.checkpoint = id;
    store.write_metadata("garbled", &metadata).unwrap();
    drop(store);

    let error = summing(dir.path()).execute("garbled").unwrap_err();
    let error = error.job_error().expect("the job failed");
    let task = task_error(error);
    assert_eq!(task.operator, "reduce", "{error}");
    assert!(
        matches!(
            task.error.state(),
            Some(StateError::Decode { table, key_group, .. })
                if table == "reduce" && *key_group == group
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("(reduce -> collect)")
            && message.contains(&format!("state 'reduce' (key group {group})")),
        "{message}"
    );
}

//! Checkpoints taken while jobs run: barriers flow through keyed exchanges and unions, every
//! subtask acknowledges, the results are the same as without checkpoints, and a job that fails
//! restarts from its latest checkpoint with its state intact.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rill::prelude::*;

/// Emits `0..end` a few numbers per poll, pausing briefly, so that the job lives long enough for
/// several checkpoints.
struct Trickle {
    next: u64,
    end: u64,
}

impl Source for Trickle {
    type Out = u64;

    fn poll_next(&mut self, out: &mut SourceOutput<u64>) -> Result<SourcePoll, BoxError> {
        std::thread::sleep(Duration::from_micros(500));
        for _ in 0..20 {
            if self.next == self.end {
                return Ok(SourcePoll::Finished);
            }
            out.collect(self.next);
            self.next += 1;
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        rill::core::source::encode_position(&self.next).map(Some)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        self.next = rill::core::source::decode_position(position)?;
        Ok(())
    }
}

/// Three trickling sources (0..10 000) merged, keyed by `n % 7`, summed.
fn summing_job(
    env: &StreamEnv,
    poison: impl Fn(u64) + Send + Sync + 'static,
) -> Collected<(u64, u64)> {
    let left = env.from_source("left", true, |index, parallelism| Trickle {
        next: u64::from(index) * 6_000 / u64::from(parallelism),
        end: u64::from(index + 1) * 6_000 / u64::from(parallelism),
    });
    let right = env.from_source("right", false, |_, _| Trickle {
        next: 6_000,
        end: 10_000,
    });
    left.union([right])
        .map(move |n| {
            poison(n);
            (n % 7, n)
        })
        .key_by(|(key, _): &(u64, u64)| *key)
        .reduce(|(key, a), (_, b)| (key, a + b))
        .collect()
}

fn final_sums(updates: Vec<(u64, u64)>) -> BTreeMap<u64, u64> {
    let mut last = BTreeMap::new();
    for (key, sum) in updates {
        last.insert(key, sum);
    }
    last
}

fn expected_sums() -> BTreeMap<u64, u64> {
    (0..7)
        .map(|key| (key, (0..10_000u64).filter(|n| n % 7 == key).sum()))
        .collect()
}

#[test]
fn checkpoints_complete_while_a_keyed_job_runs_and_change_no_result() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(10));
    let sums = summing_job(&env, |_| {});
    let report = env.execute("checkpointed").unwrap();
    assert!(report.checkpoints_completed >= 1, "{report:?}");
    let latest = report.latest_checkpoint.unwrap();
    assert_eq!(
        latest.subtasks, report.subtasks,
        "every subtask acknowledged"
    );
    assert!(
        latest.state_bytes > 0,
        "the reduce state and the source positions are in it"
    );
    let updates = sums.take();
    assert_eq!(
        updates.len(),
        10_000,
        "one update per record: nothing lost or doubled"
    );
    assert_eq!(final_sums(updates), expected_sums());
}

#[test]
fn a_failed_job_restarts_from_its_latest_checkpoint_with_its_state() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(10));
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 10,
    });
    let armed = Arc::new(AtomicBool::new(true));
    let trigger = armed.clone();
    let sums = summing_job(&env, move |n| {
        if n == 5_000 && trigger.swap(false, Ordering::SeqCst) {
            panic!("injected failure at {n}");
        }
    });
    let report = env.execute("recovering").unwrap();
    assert_eq!(report.restarts, 1);
    assert!(!armed.load(Ordering::SeqCst), "the failure happened");
    let updates = sums.take();
    // The reduce state came back from the checkpoint: every key's final sum is exact although
    // the records after the checkpoint were processed twice (the collect sink is not
    // transactional, so their updates show twice).
    assert_eq!(final_sums(updates.clone()), expected_sums());
    assert!(
        updates.len() > 10_000,
        "records after the checkpoint were replayed"
    );
    assert!(
        updates.len() < 15_000,
        "the sources resumed from the checkpoint, not from the start ({} updates)",
        updates.len()
    );
}

#[test]
fn without_a_restart_strategy_a_failure_ends_the_job() {
    let env = StreamEnv::new();
    env.enable_checkpointing(Duration::from_millis(10));
    summing_job(&env, |n| assert!(n != 100, "fails at {n}"));
    let error = env.execute("fragile").unwrap_err();
    assert!(error.to_string().contains("fails at 100"), "{error}");
}

#[test]
fn a_job_executed_again_resumes_from_its_stored_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let configured = || {
        let env = StreamEnv::new();
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(10));
        env.set_checkpoint_dir(dir.path());
        env
    };
    let first = configured();
    let crashed = summing_job(&first, |n| assert!(n != 5_000, "crash at {n}"));
    assert!(first.execute("durable").is_err());
    assert!(!crashed.take().is_empty());

    let store = rill::store::CheckpointStore::open(dir.path()).unwrap();
    let stored = store
        .latest("durable")
        .unwrap()
        .expect("a checkpoint was stored");
    drop(store);

    let second = configured();
    let resumed = summing_job(&second, |_| {});
    let report = second.execute("durable").unwrap();
    let updates = resumed.take();
    assert_eq!(
        final_sums(updates.clone()),
        expected_sums(),
        "state came back from the store"
    );
    assert!(
        updates.len() < 10_000,
        "the sources resumed from checkpoint {} ({} updates)",
        stored.checkpoint.metadata.checkpoint.0,
        updates.len()
    );
    if let Some(latest) = report.latest_checkpoint {
        assert!(
            latest.checkpoint > stored.checkpoint.metadata.checkpoint,
            "ids go on from the stored one"
        );
    }
}

#[test]
fn state_that_does_not_fit_the_job_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.enable_checkpointing(Duration::from_millis(10));
    env.set_checkpoint_dir(dir.path());
    let _ = summing_job(&env, |_| {});
    env.execute("reshaped").unwrap();

    // The reduce now has a uid the checkpoint does not know; its state would be lost.
    let renamed = StreamEnv::new();
    renamed.set_checkpoint_dir(dir.path());
    renamed
        .from_sequence(0..10)
        .key_by(|n: &u64| n % 7)
        .reduce(|a, b| a + b)
        .uid("another reduce")
        .collect();
    let error = renamed.execute("reshaped").unwrap_err().to_string();
    assert!(
        error.contains("holds state of operator") && error.contains("which the job does not have"),
        "{error}"
    );

    let regrouped = StreamEnv::with_config(ExecutionConfig {
        max_parallelism: 64,
        ..ExecutionConfig::default()
    });
    regrouped.set_checkpoint_dir(dir.path());
    let _ = summing_job(&regrouped, |_| {});
    let error = regrouped.execute("reshaped").unwrap_err().to_string();
    assert!(
        error.contains("max parallelism 128, the job has 64"),
        "{error}"
    );
}

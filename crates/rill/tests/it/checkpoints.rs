//! Checkpoints taken while jobs run: barriers flow through keyed exchanges and unions, every
//! subtask acknowledges, the results are the same as without checkpoints, and a job that fails
//! restarts from its latest checkpoint with its state intact.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rill::core::checkpoint::CheckpointId;
use rill::prelude::*;

/// Opens once a checkpoint that covers records has completed, as the [`OpensGate`] sink hears
/// of it: what a test waits for, instead of pausing and hoping that a checkpoint was taken.
#[derive(Clone)]
struct Gate {
    open: Arc<AtomicBool>,
    /// A source that waits for the gate longer than this fails the job.
    deadline: Instant,
}

impl Gate {
    fn new() -> Self {
        Gate {
            open: Arc::default(),
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }
}

/// A sink that drops the sums it gets and opens the gate when a checkpoint completes whose
/// barrier came after some of them.
struct OpensGate {
    gate: Gate,
    written: u64,
    /// The newest checkpoint whose barrier passed, and how many sums came before it.
    barrier: Option<(CheckpointId, u64)>,
}

impl Sink for OpensGate {
    type In = (u64, u64);

    fn write_batch(&mut self, records: Vec<Record<(u64, u64)>>) -> Result<(), BoxError> {
        self.written += records.len() as u64;
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>, BoxError> {
        self.barrier = Some((checkpoint, self.written));
        Ok(None)
    }

    fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), BoxError> {
        if self
            .barrier
            .is_some_and(|(taken, before)| taken == checkpoint && before > 0)
        {
            self.gate.open.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Emits its range a few numbers per poll. Given a closed gate, it stops half-way until the
/// gate opens: the job is still running, with records to come, once a checkpoint completed.
struct Trickle {
    next: u64,
    end: u64,
    /// Where it waits for the gate.
    hold: Option<(u64, Gate)>,
}

impl Trickle {
    fn new(range: Range<u64>, gate: Option<&Gate>) -> Self {
        let half_way = range.start + (range.end - range.start) / 2;
        Trickle {
            next: range.start,
            end: range.end,
            hold: gate.map(|gate| (half_way, gate.clone())),
        }
    }
}

impl Source for Trickle {
    type Out = u64;

    fn poll_next(&mut self, out: &mut SourceOutput<u64>) -> Result<SourcePoll, BoxError> {
        let until = match &self.hold {
            Some((half_way, gate)) if !gate.is_open() => {
                if self.next == *half_way {
                    if Instant::now() > gate.deadline {
                        return Err("no checkpoint covering records completed in a minute".into());
                    }
                    return Ok(SourcePoll::Idle);
                }
                *half_way
            }
            _ => self.end,
        };
        for _ in 0..20 {
            if self.next == until {
                break;
            }
            out.collect(self.next);
            self.next += 1;
        }
        Ok(if self.next == self.end {
            SourcePoll::Finished
        } else {
            SourcePoll::Ready
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        rill::core::source::encode_position(&self.next).map(Some)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        self.next = rill::core::source::decode_position(position)?;
        Ok(())
    }
}

/// Three trickling sources (0..10 000) merged, keyed by `n % 7`, summed. With a gate, the sums
/// also go to the sink that opens it, and the sources wait for it half-way.
fn summing_job(
    env: &StreamEnv,
    gate: Option<&Gate>,
    poison: impl Fn(u64) + Send + Sync + 'static,
) -> Collected<(u64, u64)> {
    let (left_gate, right_gate) = (gate.cloned(), gate.cloned());
    let left = env.from_source("left", true, move |index, parallelism| {
        let share = |index: u32| u64::from(index) * 6_000 / u64::from(parallelism);
        Trickle::new(share(index)..share(index + 1), left_gate.as_ref())
    });
    let right = env.from_source("right", false, move |_, _| {
        Trickle::new(6_000..10_000, right_gate.as_ref())
    });
    let sums = left
        .union([right])
        .map(move |n| {
            poison(n);
            (n % 7, n)
        })
        .key_by(|(key, _): &(u64, u64)| *key)
        .reduce(|(key, a), (_, b)| (key, a + b));
    if let Some(gate) = gate.cloned() {
        sums.clone().sink_with("gate", move |_| OpensGate {
            gate: gate.clone(),
            written: 0,
            barrier: None,
        });
    }
    sums.collect()
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
    let sums = summing_job(&env, Some(&Gate::new()), |_| {});
    let report = env.execute("checkpointed").unwrap();
    assert!(
        report.checkpoints_completed >= 2,
        "one while the sources waited half-way, and the final one: {report:?}"
    );
    let times = report.checkpoint_times.unwrap();
    assert_eq!(
        times.completed, report.checkpoints_completed,
        "every completed checkpoint timed: {times:?}"
    );
    assert!(
        times.median <= times.p99
            && times.p99 <= times.max
            && times.first_completed_after > Duration::ZERO,
        "{times:?}"
    );
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
    restarts_from_its_latest_checkpoint(StreamEnv::new());
}

#[test]
fn a_failed_job_with_a_store_reads_its_latest_checkpoint_back_to_restart() {
    // The coordinator lets go of each snapshot once the store has it: the restart reads them
    // back from there.
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_checkpoint_dir(dir.path());
    restarts_from_its_latest_checkpoint(env);
}

/// Runs a summing job on `env` whose map fails once, half-way through the input, and checks
/// that it restarted from its latest checkpoint, with its state.
fn restarts_from_its_latest_checkpoint(env: StreamEnv) {
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(10));
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 10,
    });
    let gate = Gate::new();
    let armed = Arc::new(AtomicBool::new(true));
    // Which numbers went through the map before the failure, and which after it.
    let numbers = || {
        Arc::new(
            (0..10_000)
                .map(|_| AtomicBool::new(false))
                .collect::<Vec<_>>(),
        )
    };
    let (before, after) = (numbers(), numbers());
    let (trigger, open, mapped_before, mapped_after) =
        (armed.clone(), gate.clone(), before.clone(), after.clone());
    // The first number mapped once a checkpoint covering records has completed fails its
    // subtask, half-way through the input.
    let sums = summing_job(&env, Some(&gate), move |n| {
        let mapped = if trigger.load(Ordering::SeqCst) {
            &mapped_before
        } else {
            &mapped_after
        };
        mapped[n as usize].store(true, Ordering::SeqCst);
        if open.is_open() && trigger.swap(false, Ordering::SeqCst) {
            panic!("injected failure at {n}");
        }
    });
    let report = env.execute("recovering").unwrap();
    assert_eq!(report.restarts, 1);
    assert!(!armed.load(Ordering::SeqCst), "the failure happened");
    let mapped = |numbers: &[AtomicBool], n: usize| numbers[n].load(Ordering::SeqCst);
    assert!(
        (0..10_000).any(|n| mapped(&before, n) && mapped(&after, n)),
        "records after the checkpoint were replayed"
    );
    assert!(
        (0..10_000).any(|n| mapped(&before, n) && !mapped(&after, n)),
        "the sources resumed from the checkpoint, not from the start"
    );
    // The reduce state came back from the checkpoint: every key's final sum is exact although
    // the records before the checkpoint were not summed again.
    assert_eq!(final_sums(sums.take()), expected_sums());
}

#[test]
fn without_a_restart_strategy_a_failure_ends_the_job() {
    let env = StreamEnv::new();
    env.enable_checkpointing(Duration::from_millis(10));
    summing_job(&env, None, |n| assert!(n != 100, "fails at {n}"));
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
    // The first run crashes at the first number it maps once a checkpoint covering records has
    // completed; both runs have the gate's sink, so that they are the same job.
    let gate = Gate::new();
    let first = configured();
    let open = gate.clone();
    let crashed = summing_job(&first, Some(&gate), move |n| {
        assert!(!open.is_open(), "crash at {n}");
    });
    assert!(first.execute("durable").is_err());
    assert!(!crashed.take().is_empty());

    let store = rill::store::CheckpointStore::open(dir.path()).unwrap();
    let stored = store
        .latest("durable")
        .unwrap()
        .expect("a checkpoint was stored")
        .checkpoint;
    drop(store);

    let second = configured();
    let resumed = summing_job(&second, Some(&gate), |_| {});
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
        stored.metadata.checkpoint.0,
        updates.len()
    );
    if let Some(latest) = report.latest_checkpoint {
        assert!(
            latest.checkpoint > stored.metadata.checkpoint,
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
    let _ = summing_job(&env, None, |_| {});
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
    let _ = summing_job(&regrouped, None, |_| {});
    let error = regrouped.execute("reshaped").unwrap_err().to_string();
    assert!(
        error.contains("max parallelism 128, the job has 64"),
        "{error}"
    );
}

//! The coordinator's decisions and the order of its writes, driven by hand.

use super::*;

fn config(interval_ms: u64) -> CheckpointConfig {
    CheckpointConfig {
        interval_ms: Some(interval_ms),
        timeout_ms: 1_000,
        ..CheckpointConfig::default()
    }
}

/// A layout of `subtasks` subtasks of one operator.
fn layout(subtasks: u32) -> JobLayout {
    JobLayout {
        max_parallelism: 128,
        subtasks: (0..subtasks)
            .map(|index| crate::layout::SubtaskLayout {
                index,
                parallelism: subtasks,
                source: None,
                operators: vec!["op".to_owned()],
            })
            .collect(),
    }
}

/// What comes out, without reporting any write: at most one write, last.
fn actions(core: &mut CoordinatorCore) -> Vec<CoordinatorAction> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

/// What comes out, reporting every write as returned at once (a snapshot took `bytes`).
fn drive(core: &mut CoordinatorCore, bytes: u64, now_ms: u64) -> Vec<CoordinatorAction> {
    let mut seen = Vec::new();
    while let Some(action) = core.poll_action() {
        if let CoordinatorAction::Write(write) = &action {
            let written = match write {
                StoreWrite::Snapshot { .. } => bytes,
                StoreWrite::Metadata(_) | StoreWrite::Discard(_) => 0,
            };
            core.handle_written(write.target(), Ok(written), now_ms);
        }
        seen.push(action);
    }
    seen
}

/// The writes among `seen`, by target.
fn targets(seen: &[CoordinatorAction]) -> Vec<WriteTarget> {
    seen.iter()
        .filter_map(|action| match action {
            CoordinatorAction::Write(write) => Some(write.target()),
            _ => None,
        })
        .collect()
}

fn discard(id: u64) -> WriteTarget {
    WriteTarget::Discard(CheckpointId(id))
}

fn snapshot(id: u64, subtask: usize) -> WriteTarget {
    WriteTarget::Snapshot {
        checkpoint: CheckpointId(id),
        subtask,
    }
}

fn metadata(id: u64) -> WriteTarget {
    WriteTarget::Metadata(CheckpointId(id))
}

/// The discards among `seen`, by checkpoint.
fn discards(seen: &[CoordinatorAction]) -> Vec<u64> {
    targets(seen)
        .into_iter()
        .filter_map(|target| match target {
            WriteTarget::Discard(id) => Some(id.0),
            _ => None,
        })
        .collect()
}

/// Subtask `subtask` acknowledges `checkpoint`; every write that follows is reported at once.
fn ack(
    core: &mut CoordinatorCore,
    checkpoint: u64,
    subtask: usize,
    now_ms: u64,
) -> Vec<CoordinatorAction> {
    core.handle_ack(
        CheckpointId(checkpoint),
        subtask,
        SubtaskSnapshot::default(),
    );
    drive(core, 10, now_ms)
}

fn trigger(id: u64) -> CoordinatorAction {
    CoordinatorAction::Trigger {
        checkpoint: CheckpointId(id),
        savepoint: false,
    }
}

/// Acknowledges `checkpoint` from every subtask, reporting every write (10 bytes a snapshot):
/// it completes.
fn complete(
    core: &mut CoordinatorCore,
    checkpoint: u64,
    subtasks: usize,
    now_ms: u64,
) -> Vec<CoordinatorAction> {
    let mut seen = Vec::new();
    for subtask in 0..subtasks {
        seen.extend(ack(core, checkpoint, subtask, now_ms));
    }
    assert!(
        seen.iter().any(|action| matches!(action, CoordinatorAction::Write(StoreWrite::Metadata(m)) if m.checkpoint.0 == checkpoint && m.state_bytes == 10 * subtasks as u64)),
        "{seen:?}"
    );
    seen
}

/// A coordinator of one subtask with checkpoints 1 and 2 in progress.
fn two_in_progress() -> CoordinatorCore {
    let two = CheckpointConfig {
        max_concurrent: 2,
        ..config(10)
    };
    let mut core = CoordinatorCore::new(two, layout(1), CheckpointId(1));
    core.handle_tick(0);
    core.handle_tick(10);
    assert_eq!(actions(&mut core), vec![trigger(1), trigger(2)]);
    core
}

#[test]
fn checkpoints_start_on_the_interval_and_complete_after_every_ack_and_the_metadata() {
    let mut core = CoordinatorCore::new(config(100), layout(3), CheckpointId(1));
    core.handle_tick(0);
    assert_eq!(actions(&mut core), vec![trigger(1)]);
    core.handle_tick(150);
    assert!(actions(&mut core).is_empty(), "one at a time by default");
    ack(&mut core, 1, 0, 160);
    assert!(
        ack(&mut core, 1, 0, 160).is_empty(),
        "a duplicate ack does not count twice"
    );
    ack(&mut core, 1, 1, 160);
    assert!(core.latest_completed().is_none());
    let seen = ack(&mut core, 1, 2, 170);
    assert_eq!(targets(&seen), vec![snapshot(1, 2), metadata(1)]);
    assert_eq!(
        seen[seen.len() - 2],
        CoordinatorAction::NotifyComplete {
            checkpoint: CheckpointId(1),
            last: false
        }
    );
    assert!(matches!(seen.last(), Some(CoordinatorAction::Completed(c)) if c.id().0 == 1));
    assert_eq!(
        core.latest_completed().map(|m| m.checkpoint),
        Some(CheckpointId(1))
    );
    core.handle_tick(170);
    assert_eq!(
        actions(&mut core),
        vec![trigger(2)],
        "the interval since the last trigger has passed"
    );
}

#[test]
fn writes_come_out_one_at_a_time_in_the_order_decided() {
    let mut core = CoordinatorCore::new(config(10), layout(2), CheckpointId(1));
    core.handle_tick(0);
    actions(&mut core);
    core.handle_ack(CheckpointId(1), 1, SubtaskSnapshot::default());
    core.handle_ack(CheckpointId(1), 0, SubtaskSnapshot::default());
    assert_eq!(targets(&actions(&mut core)), vec![snapshot(1, 1)]);
    assert!(
        actions(&mut core).is_empty(),
        "subtask 0's waits until subtask 1's was reported"
    );
    core.handle_written(snapshot(1, 1), Ok(5), 1);
    assert_eq!(targets(&actions(&mut core)), vec![snapshot(1, 0)]);
    core.handle_written(snapshot(1, 0), Ok(5), 2);
    let seen = actions(&mut core);
    assert!(
        matches!(&seen[..], [CoordinatorAction::Write(StoreWrite::Metadata(m))] if m.state_bytes == 10),
        "the metadata comes out once every snapshot was written: {seen:?}"
    );
    core.handle_written(metadata(1), Ok(0), 3);
    let seen = actions(&mut core);
    assert!(
        matches!(
            &seen[..],
            [
                CoordinatorAction::NotifyComplete { last: false, .. },
                CoordinatorAction::Completed(completed)
            ] if matches!(completed, RetainedCheckpoint::InMemory(c) if c.snapshots.len() == 2)
        ),
        "the master hears of it after the notice: {seen:?}"
    );
    assert_eq!(
        core.take_latest_completed().map(|c| c.id()),
        Some(CheckpointId(1))
    );
}

#[test]
fn with_a_store_written_snapshots_are_let_go_of_and_the_checkpoint_completes_as_stored() {
    let mut core = CoordinatorCore::new(config(10), layout(2), CheckpointId(1));
    core.release_written_snapshots();
    core.handle_tick(0);
    actions(&mut core);
    core.handle_ack(CheckpointId(1), 0, SubtaskSnapshot::default());
    let Some(CoordinatorAction::Write(write)) = core.poll_action() else {
        panic!("the snapshot's write comes out");
    };
    let StoreWrite::Snapshot { snapshot, .. } = &write else {
        panic!("{write:?}");
    };
    let written = Arc::clone(snapshot);
    core.handle_written(write.target(), Ok(3), 1);
    drop(write);
    assert_eq!(
        Arc::strong_count(&written),
        1,
        "the core no longer holds the written snapshot"
    );
    assert!(
        ack(&mut core, 1, 0, 2).is_empty(),
        "a duplicate ack of a released snapshot still does not count"
    );
    let seen = ack(&mut core, 1, 1, 3);
    assert!(
        seen.iter().any(|action| matches!(
            action,
            CoordinatorAction::Completed(RetainedCheckpoint::Stored(m)) if m.checkpoint == CheckpointId(1) && m.state_bytes == 13
        )),
        "{seen:?}"
    );
}

#[test]
fn metadata_of_a_checkpoint_subsumed_before_its_write_started_is_not_written() {
    let mut core = two_in_progress();
    core.handle_ack(CheckpointId(2), 0, SubtaskSnapshot::default());
    core.handle_ack(CheckpointId(1), 0, SubtaskSnapshot::default());
    assert_eq!(targets(&actions(&mut core)), vec![snapshot(2, 0)]);
    core.handle_written(snapshot(2, 0), Ok(1), 20);
    assert_eq!(targets(&actions(&mut core)), vec![snapshot(1, 0)]);
    core.handle_written(snapshot(1, 0), Ok(1), 21);
    // Both metadata writes are decided, 2's first.
    assert_eq!(targets(&actions(&mut core)), vec![metadata(2)]);
    core.handle_written(metadata(2), Ok(0), 30);
    let seen = drive(&mut core, 1, 31);
    assert_eq!(
        targets(&seen),
        vec![discard(1)],
        "1 was subsumed: its metadata is never written, what it wrote is discarded"
    );
    assert_eq!(
        core.latest_completed().map(|m| m.checkpoint),
        Some(CheckpointId(2))
    );
}

#[test]
fn queued_snapshots_of_an_aborted_checkpoint_are_not_written() {
    let tolerant = CheckpointConfig {
        tolerable_failures: 1,
        ..config(100)
    };
    let mut core = CoordinatorCore::new(tolerant, layout(3), CheckpointId(1));
    core.handle_tick(0);
    actions(&mut core);
    for subtask in 0..2 {
        core.handle_ack(CheckpointId(1), subtask, SubtaskSnapshot::default());
    }
    assert_eq!(targets(&actions(&mut core)), vec![snapshot(1, 0)]);
    core.handle_tick(1_000);
    assert!(
        actions(&mut core).is_empty(),
        "timed out, but its discard waits for the write under way"
    );
    core.handle_written(snapshot(1, 0), Ok(1), 1_001);
    assert_eq!(
        targets(&actions(&mut core)),
        vec![discard(1)],
        "subtask 1's snapshot is dropped, not written"
    );
}

#[test]
fn no_checkpoint_starts_while_writes_wait() {
    let mut core = CoordinatorCore::new(
        CheckpointConfig {
            tolerable_failures: 5,
            ..config(100)
        },
        layout(2),
        CheckpointId(1),
    );
    core.handle_tick(0);
    actions(&mut core);
    core.handle_ack(CheckpointId(1), 0, SubtaskSnapshot::default());
    core.handle_ack(CheckpointId(1), 1, SubtaskSnapshot::default());
    // The store is slow: subtask 0's write is still running when the checkpoint times out.
    assert_eq!(targets(&actions(&mut core)), vec![snapshot(1, 0)]);
    core.handle_tick(1_000);
    core.handle_tick(1_100);
    assert!(
        actions(&mut core).is_empty(),
        "its discard waits behind the running write: checkpoint 2 waits too"
    );
    core.handle_written(snapshot(1, 0), Ok(1), 1_150);
    assert_eq!(targets(&actions(&mut core)), vec![discard(1)]);
    core.handle_tick(1_200);
    assert_eq!(
        actions(&mut core),
        vec![trigger(2)],
        "only the running discard is left: the store has caught up"
    );
}

#[test]
fn a_stopped_coordinator_finishes_the_writes_it_decided_and_takes_nothing_new() {
    let mut core = two_in_progress();
    core.handle_ack(CheckpointId(1), 0, SubtaskSnapshot::default());
    assert_eq!(targets(&actions(&mut core)), vec![snapshot(1, 0)]);
    core.stop();
    assert!(!core.has_stopped(), "a write is running");
    core.handle_ack(CheckpointId(2), 0, SubtaskSnapshot::default());
    core.handle_tick(10_000);
    core.request_savepoint(10_000);
    core.handle_written(snapshot(1, 0), Ok(1), 11);
    let seen = drive(&mut core, 1, 12);
    assert_eq!(
        targets(&seen),
        vec![discard(2), metadata(1)],
        "2 waited for an acknowledgement that no longer counts; every subtask had acknowledged 1: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|action| matches!(action, CoordinatorAction::Completed(c) if c.id().0 == 1)),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|action| matches!(action, CoordinatorAction::Trigger { .. })),
        "{seen:?}"
    );
    assert!(core.has_stopped());
    assert_eq!(
        core.take_latest_completed().map(|c| c.id()),
        Some(CheckpointId(1))
    );
}

#[test]
fn a_checkpoint_without_persisted_metadata_is_not_complete() {
    let mut core = CoordinatorCore::new(config(100), layout(1), CheckpointId(7));
    core.handle_tick(0);
    actions(&mut core);
    core.handle_ack(CheckpointId(7), 0, SubtaskSnapshot::default());
    actions(&mut core);
    core.handle_written(snapshot(7, 0), Ok(1), 5);
    assert_eq!(targets(&actions(&mut core)), vec![metadata(7)]);
    core.handle_tick(5_000);
    assert!(core.latest_completed().is_none());
    assert!(
        actions(&mut core).is_empty(),
        "persisting checkpoints do not time out"
    );
}

#[test]
fn timeouts_abort_and_too_many_failures_fail_the_job() {
    let mut core = CoordinatorCore::new(
        CheckpointConfig {
            tolerable_failures: 1,
            ..config(100)
        },
        layout(2),
        CheckpointId(1),
    );
    core.handle_tick(0);
    actions(&mut core);
    ack(&mut core, 1, 0, 10);
    core.handle_tick(1_000);
    let seen = drive(&mut core, 1, 1_000);
    assert_eq!(discards(&seen), vec![1]);
    assert!(
        !seen
            .iter()
            .any(|action| matches!(action, CoordinatorAction::Trigger { .. })),
        "the discard was waiting when the tick came"
    );
    core.handle_tick(1_001);
    assert_eq!(actions(&mut core), vec![trigger(2)]);
    assert!(
        ack(&mut core, 1, 1, 1_001).is_empty(),
        "a late ack is dropped: nothing of it was written"
    );
    core.handle_decline(CheckpointId(2), DeclineReason::Overtaken);
    let seen = drive(&mut core, 1, 1_002);
    assert!(
        matches!(&seen[0], CoordinatorAction::FailJob(reason) if reason.contains("2 checkpoint(s) failed in a row") && reason.contains("overtook")),
        "{seen:?}"
    );
    assert_eq!(discards(&seen), vec![2]);
    core.handle_tick(10_000);
    assert!(
        actions(&mut core).is_empty(),
        "a failed coordinator triggers nothing"
    );
}

#[test]
fn a_snapshot_that_cannot_be_stored_fails_the_checkpoint() {
    let mut core = CoordinatorCore::new(config(10), layout(2), CheckpointId(1));
    core.handle_tick(0);
    actions(&mut core);
    core.handle_ack(CheckpointId(1), 0, SubtaskSnapshot::default());
    actions(&mut core);
    core.handle_written(snapshot(1, 0), Err("disk full".to_owned()), 1);
    let seen = actions(&mut core);
    assert!(
        matches!(&seen[0], CoordinatorAction::FailJob(reason) if reason.contains("disk full")),
        "{seen:?}"
    );
    assert_eq!(targets(&seen), vec![discard(1)]);
}

#[test]
fn a_metadata_write_that_fails_aborts_the_checkpoint() {
    let mut core = CoordinatorCore::new(config(10), layout(1), CheckpointId(1));
    core.handle_tick(0);
    actions(&mut core);
    core.handle_ack(CheckpointId(1), 0, SubtaskSnapshot::default());
    actions(&mut core);
    core.handle_written(snapshot(1, 0), Ok(1), 1);
    assert_eq!(targets(&actions(&mut core)), vec![metadata(1)]);
    core.handle_written(metadata(1), Err("disk full".to_owned()), 2);
    let seen = actions(&mut core);
    assert!(
        matches!(&seen[0], CoordinatorAction::FailJob(reason) if reason.contains("disk full")),
        "{seen:?}"
    );
    assert_eq!(targets(&seen), vec![discard(1)]);
    assert!(core.latest_completed().is_none());
}

#[test]
fn a_finished_subtask_declining_is_not_a_failure() {
    let mut core = CoordinatorCore::new(config(10), layout(2), CheckpointId(1));
    let mut seen = Vec::new();
    for round in 0..5u64 {
        core.handle_tick(round * 10);
        core.handle_decline(CheckpointId(round + 1), DeclineReason::Finished);
        seen.extend(drive(&mut core, 1, round * 10));
    }
    assert!(
        !seen
            .iter()
            .any(|a| matches!(a, CoordinatorAction::FailJob(_))),
        "{seen:?}"
    );
    assert_eq!(discards(&seen), vec![1, 2, 3, 4, 5]);
}

#[test]
fn only_the_retained_checkpoints_are_kept_and_savepoints_stay() {
    let mut core = CoordinatorCore::new(
        CheckpointConfig {
            retained: 2,
            ..config(10)
        },
        layout(1),
        CheckpointId(1),
    );
    let mut discarded = Vec::new();
    for round in 0..4u64 {
        core.handle_tick(round * 10);
        actions(&mut core);
        discarded.extend(discards(&complete(&mut core, round + 1, 1, round * 10 + 1)));
    }
    assert_eq!(discarded, vec![1, 2]);
    core.request_savepoint(100);
    assert_eq!(
        actions(&mut core),
        vec![CoordinatorAction::Trigger {
            checkpoint: CheckpointId(5),
            savepoint: true
        }]
    );
    let seen = complete(&mut core, 5, 1, 101);
    assert!(
        discards(&seen).is_empty(),
        "a savepoint pushes no checkpoint out"
    );
    assert!(core.latest_completed().is_some_and(|m| m.savepoint));
}

#[test]
fn checkpoints_stored_before_count_towards_retention() {
    let mut core = CoordinatorCore::new(
        CheckpointConfig {
            retained: 2,
            ..config(10)
        },
        layout(1),
        CheckpointId(8),
    );
    // Earlier runs left 2, 5 and 7 (savepoints are not listed: they are kept).
    core.retain_stored([2, 5, 7].map(CheckpointId));
    assert_eq!(
        actions(&mut core),
        vec![],
        "nothing is discarded before a checkpoint of this run completes: the job may still \
         restore the one it started from"
    );
    core.handle_tick(0);
    actions(&mut core);
    assert_eq!(
        discards(&complete(&mut core, 8, 1, 1)),
        vec![2, 5],
        "retention holds for the store, whatever run wrote it"
    );
}

#[test]
fn min_pause_delays_the_next_checkpoint_and_newer_completions_subsume_older() {
    let mut core = CoordinatorCore::new(
        CheckpointConfig {
            min_pause_ms: 500,
            max_concurrent: 2,
            ..config(100)
        },
        layout(1),
        CheckpointId(1),
    );
    core.handle_tick(0);
    core.handle_tick(100);
    assert_eq!(actions(&mut core), vec![trigger(1), trigger(2)]);
    let seen = complete(&mut core, 2, 1, 150);
    assert_eq!(discards(&seen), vec![1]);
    assert_eq!(core.in_progress(), 0);
    core.handle_tick(400);
    assert!(actions(&mut core).is_empty(), "paused until 650");
    core.handle_tick(650);
    assert_eq!(actions(&mut core), vec![trigger(3)]);
}

#[test]
fn the_final_checkpoint_starts_once_every_subtask_ended_and_is_retried_until_it_completes() {
    let tolerant = CheckpointConfig {
        tolerable_failures: 1,
        ..config(10_000)
    };
    let mut core = CoordinatorCore::new(tolerant, layout(2), CheckpointId(1));
    core.handle_tick(0);
    assert_eq!(actions(&mut core), vec![trigger(1)]);
    core.handle_subtask_ended(0, 10);
    assert!(actions(&mut core).is_empty(), "subtask 1 has not ended");
    let seen = complete(&mut core, 1, 2, 20);
    assert!(seen.contains(&CoordinatorAction::NotifyComplete {
        checkpoint: CheckpointId(1),
        last: false
    }));
    core.handle_subtask_ended(1, 30);
    assert_eq!(
        actions(&mut core),
        vec![trigger(2)],
        "the final checkpoint does not wait for the interval"
    );
    core.handle_tick(1_030);
    let seen = drive(&mut core, 1, 1_030);
    assert_eq!(discards(&seen), vec![2], "it timed out");
    core.handle_tick(1_031);
    assert_eq!(
        actions(&mut core),
        vec![trigger(3)],
        "and is tried again on the next tick"
    );
    let seen = complete(&mut core, 3, 2, 1_040);
    assert!(seen.contains(&CoordinatorAction::NotifyComplete {
        checkpoint: CheckpointId(3),
        last: true
    }));
    core.handle_tick(50_000);
    assert!(
        actions(&mut core).is_empty(),
        "nothing is triggered after the final checkpoint"
    );
}

#[test]
fn an_aborted_savepoint_is_reported_to_whoever_asked() {
    let tolerant = CheckpointConfig {
        tolerable_failures: 5,
        ..config(10_000)
    };
    let mut core = CoordinatorCore::new(tolerant, layout(1), CheckpointId(1));
    core.handle_tick(0);
    assert_eq!(actions(&mut core), vec![trigger(1)]);
    complete(&mut core, 1, 1, 2);
    core.request_savepoint(3);
    assert_eq!(
        actions(&mut core),
        vec![CoordinatorAction::Trigger {
            checkpoint: CheckpointId(2),
            savepoint: true
        }]
    );
    core.handle_decline(CheckpointId(2), DeclineReason::SnapshotFailed);
    let seen = actions(&mut core);
    assert!(
        matches!(&seen[..], [CoordinatorAction::SavepointFailed(reason), CoordinatorAction::Write(StoreWrite::Discard(CheckpointId(2)))] if reason.contains("could not be snapshotted")),
        "{seen:?}"
    );
}

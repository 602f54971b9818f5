//! The job master's lifecycle: deploy, fail over, adopt late completions, savepoints, end.

use super::*;
use crate::checkpoint::CheckpointId;
use crate::layout::JobLayout;

type Master = JobMasterCore<&'static str, u32>;
type Action = MasterAction<&'static str, u32>;

fn completed(id: u64, savepoint: bool) -> RetainedCheckpoint {
    RetainedCheckpoint::Stored(CheckpointMetadata {
        checkpoint: CheckpointId(id),
        savepoint,
        triggered_at_ms: 0,
        acknowledged_at_ms: 0,
        subtasks: 2,
        state_bytes: 0,
        layout: JobLayout::default(),
    })
}

fn actions(master: &mut Master) -> Vec<Action> {
    std::iter::from_fn(|| master.poll_action()).collect()
}

fn restarting(attempts: u32) -> Master {
    JobMasterCore::new(
        RestartStrategy::FixedDelay {
            attempts,
            delay_ms: 50,
        },
        2,
        None,
    )
}

fn deployed_from(action: &Action) -> Option<(u32, Option<u64>)> {
    match action {
        MasterAction::Deploy { attempt, from } => Some((*attempt, from.as_ref().map(|c| c.id().0))),
        _ => None,
    }
}

#[test]
fn the_job_ends_when_every_subtask_of_the_current_attempt_finished() {
    let mut master = restarting(0);
    master.start();
    assert_eq!(deployed_from(&actions(&mut master)[0]), Some((0, None)));
    master.handle_subtask_finished(0, 1);
    master.handle_subtask_finished(0, 1);
    assert!(
        actions(&mut master).is_empty(),
        "subtask 0 has not finished"
    );
    master.handle_subtask_finished(0, 0);
    assert!(matches!(
        actions(&mut master)[..],
        [MasterAction::End(JobEnd::Finished)]
    ));
}

#[test]
fn a_failure_stops_the_attempt_then_restores_the_newest_checkpoint_its_coordinator_completed() {
    let mut master = restarting(3);
    master.start();
    actions(&mut master);
    master.handle_checkpoint_completed(0, completed(1, false));
    master.handle_failure(0, "boom");
    assert!(matches!(
        actions(&mut master)[..],
        [MasterAction::StopAttempt { attempt: 0 }]
    ));
    // What the failed attempt says now is stale, but its coordinator completed 2 on the way
    // out and sinks may have committed it.
    master.handle_subtask_finished(0, 0);
    master.handle_failure(0, "again");
    master.handle_checkpoint_completed(0, completed(2, false));
    assert!(actions(&mut master).is_empty());
    assert_eq!(master.latest().map(|c| c.id()), Some(CheckpointId(1)));
    master.handle_attempt_stopped(Some(completed(2, false)), true);
    assert!(matches!(
        actions(&mut master)[..],
        [MasterAction::ScheduleRestart { delay_ms: 50 }]
    ));
    master.handle_restart_due();
    assert_eq!(deployed_from(&actions(&mut master)[0]), Some((1, Some(2))));
    assert_eq!(master.restarts(), 1);
}

#[test]
fn an_older_checkpoint_never_replaces_a_newer_one() {
    let mut master = restarting(3);
    master.start();
    master.handle_checkpoint_completed(0, completed(5, false));
    master.handle_failure(0, "boom");
    master.handle_attempt_stopped(Some(completed(4, false)), true);
    master.handle_restart_due();
    let deployed: Vec<_> = actions(&mut master)
        .iter()
        .filter_map(deployed_from)
        .collect();
    assert_eq!(deployed, vec![(0, None), (1, Some(5))]);
    assert_eq!(master.checkpoints_completed(), 1);
}

#[test]
fn the_restart_strategy_ends_the_job_and_an_attempt_that_does_not_stop_ends_it_too() {
    let mut master = restarting(1);
    master.start();
    master.handle_failure(0, "first");
    master.handle_attempt_stopped(None, true);
    master.handle_restart_due();
    master.handle_failure(1, "second");
    assert!(matches!(
        actions(&mut master).last(),
        Some(MasterAction::End(JobEnd::Failed("second")))
    ));

    let mut stuck = restarting(5);
    stuck.start();
    stuck.handle_failure(0, "boom");
    stuck.handle_attempt_stopped(None, false);
    assert!(matches!(
        actions(&mut stuck).last(),
        Some(MasterAction::End(JobEnd::AttemptDidNotStop("boom")))
    ));
    stuck.handle_restart_due();
    assert!(
        actions(&mut stuck).is_empty(),
        "an ended job deploys nothing"
    );
}

#[test]
fn savepoint_waiters_hear_of_it_and_a_stop_ends_the_job() {
    let mut master = restarting(1);
    master.start();
    actions(&mut master);
    master.request_savepoint(7, false);
    master.request_savepoint(8, true);
    assert!(matches!(
        actions(&mut master)[..],
        [MasterAction::TriggerSavepoint]
    ));
    master.handle_checkpoint_completed(0, completed(3, false));
    assert!(actions(&mut master).is_empty(), "not a savepoint");
    master.handle_checkpoint_completed(0, completed(4, true));
    let seen = actions(&mut master);
    assert!(
        matches!(
            &seen[..],
            [
                MasterAction::AnswerSavepoint { waiter: 7, result: Ok(a) },
                MasterAction::AnswerSavepoint { waiter: 8, result: Ok(b) },
                MasterAction::End(JobEnd::StoppedWithSavepoint(c)),
            ] if a.checkpoint.0 == 4 && b == a && c == a
        ),
        "{seen:?}"
    );
    master.request_savepoint(9, false);
    assert!(matches!(
        actions(&mut master)[..],
        [MasterAction::AnswerSavepoint {
            waiter: 9,
            result: Err(_)
        }]
    ));
}

#[test]
fn a_savepoint_asked_for_during_a_restart_is_taken_by_the_next_attempt() {
    let mut master = restarting(1);
    master.start();
    master.handle_failure(0, "boom");
    actions(&mut master);
    master.request_savepoint(1, true);
    assert!(actions(&mut master).is_empty(), "no attempt runs");
    // The failed attempt's coordinator completed the savepoint before it stopped.
    master.handle_attempt_stopped(Some(completed(2, true)), true);
    assert!(matches!(
        actions(&mut master)[..],
        [
            MasterAction::AnswerSavepoint {
                waiter: 1,
                result: Ok(_)
            },
            MasterAction::End(JobEnd::StoppedWithSavepoint(_))
        ]
    ));
    master.handle_restart_due();
    assert!(actions(&mut master).is_empty(), "it ended: no restart");

    let mut later = restarting(1);
    later.start();
    later.handle_failure(0, "boom");
    later.request_savepoint(1, false);
    later.handle_attempt_stopped(None, true);
    later.handle_restart_due();
    let seen = actions(&mut later);
    assert!(
        matches!(
            &seen[seen.len() - 2..],
            [
                MasterAction::Deploy { attempt: 1, .. },
                MasterAction::TriggerSavepoint
            ]
        ),
        "{seen:?}"
    );
    later.handle_savepoint_failed(1, "declined");
    assert!(matches!(
        actions(&mut later)[..],
        [MasterAction::AnswerSavepoint {
            waiter: 1,
            result: Err(_)
        }]
    ));
}

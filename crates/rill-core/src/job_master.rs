//! The job master state machine: one job's lifecycle, from its first deployment to its end.
//!
//! It owns the attempts (a deployment of every subtask; one more per restart), the restart
//! strategy, the newest completed checkpoint (what an attempt restores from), who waits for a
//! savepoint, and how the job ends. A driver — the runtime's job master actor, or the
//! simulator — hands it what happened and carries out what comes out of
//! [`JobMasterCore::poll_action`]:
//!
//! 1. [`MasterAction::Deploy`]: deploy that attempt, restored from the checkpoint given (see
//!    [`crate::layout::start_attempt`]); if that fails, call `handle_deploy_failed`;
//! 2. pass each subtask's end to `handle_subtask_finished`, each task failure (or a failure
//!    of checkpointing) to `handle_failure`, and each [`CoordinatorAction::Completed`] of the
//!    attempt's coordinator to `handle_checkpoint_completed`;
//! 3. [`MasterAction::StopAttempt`]: stop every actor of that attempt and **wait** until each
//!    has stopped (or a deadline passes), then call `handle_attempt_stopped` with the newest
//!    checkpoint its coordinator completed ([`CoordinatorCore::take_latest_completed`]);
//! 4. [`MasterAction::ScheduleRestart`]: after the delay, call `handle_restart_due`;
//! 5. [`MasterAction::TriggerSavepoint`]: ask the running attempt's coordinator for one;
//!    [`MasterAction::AnswerSavepoint`]: hand the answer to that waiter;
//! 6. [`MasterAction::End`]: stop every actor and report the outcome once they have stopped:
//!    what they were told before (a savepoint's completion notice, whose commits a stop with a
//!    savepoint promises) is then done.
//!
//! Why the stop waits, and why the coordinator hands its newest checkpoint back: the master
//! hears of a completed checkpoint after the subtasks (so that sinks commit before a stop that
//! follows a savepoint), and an attempt that fails may complete one more checkpoint before it
//! stops — whose records its sinks may have committed. Restoring anything older would commit
//! them twice; starting the next attempt beside a sink still running could let the old sink
//! write into the transactions the new one reuses. If the attempt does not stop in time (an
//! actor stuck in user code), the job ends rather than restart beside it.
//!
//! [`CoordinatorAction::Completed`]: crate::coordinator::CoordinatorAction::Completed
//! [`CoordinatorCore::take_latest_completed`]: crate::coordinator::CoordinatorCore::take_latest_completed

use std::collections::VecDeque;

use crate::coordinator::{CheckpointMetadata, RetainedCheckpoint};
#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::restart::RestartStrategy;

/// What the master wants done. `E` is the driver's error type, `W` how it answers a savepoint
/// request.
#[derive(Debug)]
pub enum MasterAction<E, W> {
    /// Deploy attempt `attempt`, restored from `from` if there is one.
    Deploy {
        /// The attempt: 0 for the first deployment, one more per restart.
        attempt: u32,
        /// The newest completed checkpoint; if [`RetainedCheckpoint::Stored`], its snapshots
        /// are read back from the checkpoint store.
        from: Option<RetainedCheckpoint>,
    },
    /// Ask the running attempt's coordinator for a savepoint.
    TriggerSavepoint,
    /// Stop every actor of `attempt`, wait until all have stopped, and call
    /// [`JobMasterCore::handle_attempt_stopped`].
    StopAttempt {
        /// The attempt that failed.
        attempt: u32,
    },
    /// Call [`JobMasterCore::handle_restart_due`] after `delay_ms`.
    ScheduleRestart {
        /// The restart strategy's wait.
        delay_ms: u64,
    },
    /// The answer to a savepoint request.
    AnswerSavepoint {
        /// Who asked.
        waiter: W,
        /// The savepoint, or why there is none.
        result: Result<CheckpointMetadata, String>,
    },
    /// The job is over: stop every actor and, once they have stopped, report the outcome.
    End(JobEnd<E>),
}

/// How a job ended.
#[derive(Debug, PartialEq)]
pub enum JobEnd<E> {
    /// Every subtask finished.
    Finished,
    /// A savepoint asked for with a stop completed; the job stopped after it.
    StoppedWithSavepoint(CheckpointMetadata),
    /// A failure the restart strategy did not restart from (or a deployment that failed).
    Failed(E),
    /// After a failure, an actor of the attempt did not stop in time; the job ends instead of
    /// restarting beside it.
    AttemptDidNotStop(E),
    /// Cancelled on request.
    Cancelled,
}

#[derive(Debug)]
enum Phase<E> {
    /// Not deployed yet.
    Created,
    /// An attempt runs.
    Running,
    /// The attempt before the current one failed with `error`; waiting for it to stop.
    Stopping { error: E, delay_ms: u64 },
    /// It stopped; waiting for the restart delay.
    Restarting,
    /// The job is over.
    Ended,
}

struct SavepointWaiter<W> {
    stop: bool,
    waiter: W,
}

/// The lifecycle of one job.
pub struct JobMasterCore<E, W> {
    restart: RestartStrategy,
    subtasks: usize,
    /// 0 for the first deployment, one more per restart.
    attempt: u32,
    phase: Phase<E>,
    finished: Vec<bool>,
    unfinished: usize,
    latest: Option<RetainedCheckpoint>,
    checkpoints_completed: u64,
    savepoint_waiters: Vec<SavepointWaiter<W>>,
    actions: VecDeque<MasterAction<E, W>>,
    #[cfg(feature = "defects")]
    defect: Option<Defect>,
}

impl<E, W> JobMasterCore<E, W> {
    /// The master of a job of `subtasks` subtasks restarting under `restart`, which resumes
    /// from `resume_from` (a checkpoint of an earlier run) if given. Nothing happens before
    /// [`JobMasterCore::start`].
    pub fn new(
        restart: RestartStrategy,
        subtasks: usize,
        resume_from: Option<RetainedCheckpoint>,
    ) -> Self {
        JobMasterCore {
            restart,
            subtasks,
            attempt: 0,
            phase: Phase::Created,
            finished: vec![false; subtasks],
            unfinished: subtasks,
            latest: resume_from,
            checkpoints_completed: 0,
            savepoint_waiters: Vec::new(),
            actions: VecDeque::new(),
            #[cfg(feature = "defects")]
            defect: None,
        }
    }

    /// Breaks the master on purpose, for the simulator to catch.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        self.defect = Some(defect);
    }

    /// The current attempt: messages of any other are stale.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many restarts there were.
    pub fn restarts(&self) -> u32 {
        self.attempt
    }

    /// The newest completed checkpoint the master knows.
    pub fn latest(&self) -> Option<&RetainedCheckpoint> {
        self.latest.as_ref()
    }

    /// How many checkpoints completed in this run of the job.
    pub fn checkpoints_completed(&self) -> u64 {
        self.checkpoints_completed
    }

    /// Whether the job is over.
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<MasterAction<E, W>> {
        self.actions.pop_front()
    }

    /// Deploys the first attempt.
    pub fn start(&mut self) {
        if matches!(self.phase, Phase::Created) {
            self.deploy();
        }
    }

    fn deploy(&mut self) {
        self.phase = Phase::Running;
        self.finished = vec![false; self.subtasks];
        self.unfinished = self.subtasks;
        self.actions.push_back(MasterAction::Deploy {
            attempt: self.attempt,
            from: self.latest.clone(),
        });
        if !self.savepoint_waiters.is_empty() {
            // Asked for before a restart: the new attempt takes it.
            self.actions.push_back(MasterAction::TriggerSavepoint);
        }
    }

    /// The current attempt could not be deployed (its state cannot be restored, user code
    /// building an operator panicked): the job ends.
    pub fn handle_deploy_failed(&mut self, error: E) {
        self.end(JobEnd::Failed(error));
    }

    /// Subtask `subtask` (its index in the plan) of `attempt` finished; once every subtask
    /// of the current attempt has, the job is done.
    pub fn handle_subtask_finished(&mut self, attempt: u32, subtask: usize) {
        if attempt != self.attempt || !matches!(self.phase, Phase::Running) {
            return;
        }
        let Some(finished) = self.finished.get_mut(subtask) else {
            debug_assert!(false, "subtask {subtask} of {}", self.subtasks);
            return;
        };
        if std::mem::replace(finished, true) {
            return;
        }
        self.unfinished -= 1;
        if self.unfinished == 0 {
            self.end(JobEnd::Finished);
        }
    }

    /// `attempt` failed with `error`: the restart strategy decides whether the job restarts
    /// (once the attempt has stopped) or ends.
    pub fn handle_failure(&mut self, attempt: u32, error: E) {
        if attempt != self.attempt || !matches!(self.phase, Phase::Running) {
            return;
        }
        let restart = self.attempt + 1;
        let Some(delay_ms) = self.restart.delay_before(restart) else {
            self.end(JobEnd::Failed(error));
            return;
        };
        self.actions
            .push_back(MasterAction::StopAttempt { attempt });
        self.attempt = restart;
        self.phase = Phase::Stopping { error, delay_ms };
    }

    /// The failed attempt has stopped (`all_stopped`), or the wait for it ran out; `latest` is
    /// the newest checkpoint its coordinator completed.
    pub fn handle_attempt_stopped(
        &mut self,
        latest: Option<RetainedCheckpoint>,
        all_stopped: bool,
    ) {
        if !matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        #[cfg(feature = "defects")]
        let latest = latest.filter(|_| self.defect != Some(Defect::MasterIgnoresLateCompletions));
        if let Some(completed) = latest {
            self.adopt(completed);
        }
        // Unless the adopted checkpoint was a savepoint someone wanted to stop at.
        let Phase::Stopping { error, delay_ms } =
            std::mem::replace(&mut self.phase, Phase::Restarting)
        else {
            self.phase = Phase::Ended;
            return;
        };
        if !all_stopped {
            self.end(JobEnd::AttemptDidNotStop(error));
            return;
        }
        self.actions
            .push_back(MasterAction::ScheduleRestart { delay_ms });
    }

    /// The restart delay has passed: the next attempt deploys.
    pub fn handle_restart_due(&mut self) {
        if matches!(self.phase, Phase::Restarting) {
            self.deploy();
        }
    }

    /// `attempt`'s coordinator completed `completed` (after telling every subtask).
    pub fn handle_checkpoint_completed(&mut self, attempt: u32, completed: RetainedCheckpoint) {
        // A failed attempt's coordinator hands its newest back when it stops.
        if attempt == self.attempt && matches!(self.phase, Phase::Running) {
            self.adopt(completed);
        }
    }

    /// The next attempt restores from `completed` (unless it knows a newer one), and who waits
    /// for a savepoint hears of it.
    fn adopt(&mut self, completed: RetainedCheckpoint) {
        if self
            .latest
            .as_ref()
            .is_some_and(|latest| latest.id() >= completed.id())
        {
            return;
        }
        self.checkpoints_completed += 1;
        let metadata = completed.metadata().clone();
        self.latest = Some(completed);
        if !metadata.savepoint {
            return;
        }
        let mut stop = false;
        for SavepointWaiter {
            stop: then_stop,
            waiter,
        } in self.savepoint_waiters.drain(..)
        {
            stop |= then_stop;
            self.actions.push_back(MasterAction::AnswerSavepoint {
                waiter,
                result: Ok(metadata.clone()),
            });
        }
        if stop {
            self.end(JobEnd::StoppedWithSavepoint(metadata));
        }
    }

    /// Someone asks for a savepoint (and to stop the job after it, if `stop`).
    pub fn request_savepoint(&mut self, waiter: W, stop: bool) {
        if self.is_ended() {
            self.actions.push_back(MasterAction::AnswerSavepoint {
                waiter,
                result: Err("the job has ended".to_owned()),
            });
            return;
        }
        if self.savepoint_waiters.is_empty() && matches!(self.phase, Phase::Running) {
            self.actions.push_back(MasterAction::TriggerSavepoint);
        }
        self.savepoint_waiters
            .push(SavepointWaiter { stop, waiter });
    }

    /// `attempt`'s savepoint was aborted: whoever waits for it hears why.
    pub fn handle_savepoint_failed(&mut self, attempt: u32, reason: &str) {
        if attempt != self.attempt {
            return;
        }
        for SavepointWaiter { waiter, .. } in self.savepoint_waiters.drain(..) {
            self.actions.push_back(MasterAction::AnswerSavepoint {
                waiter,
                result: Err(reason.to_owned()),
            });
        }
    }

    /// The job is cancelled.
    pub fn cancel(&mut self) {
        self.end(JobEnd::Cancelled);
    }

    fn end(&mut self, end: JobEnd<E>) {
        if self.is_ended() {
            return;
        }
        self.phase = Phase::Ended;
        for SavepointWaiter { waiter, .. } in self.savepoint_waiters.drain(..) {
            self.actions.push_back(MasterAction::AnswerSavepoint {
                waiter,
                result: Err("the job ended before the savepoint completed".to_owned()),
            });
        }
        self.actions.push_back(MasterAction::End(end));
    }
}

#[cfg(test)]
mod tests;

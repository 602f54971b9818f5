//! The checkpoint coordinator actor: drives one [`CoordinatorCore`] with ticks of the job's
//! clock and the subtasks' acknowledgements, and carries out its actions in the order it emits
//! them: trigger the sources, write each snapshot, write the metadata last and durably, notify
//! the subtasks, hand the completed checkpoint to the job master, discard.
//!
//! With a [`CheckpointStore`] the writes go to it; without one, checkpoints live in memory
//! only (the core keeps the completed one's snapshots for the master either way).
//!
//! # Storage off the shared thread
//! The coordinator lives on the runtime's system arbiter, beside every job's master and every
//! other job's coordinator, so it never writes to the store itself: a synced metadata write,
//! or a slow disk, would stall all of them. Each [`CoordinatorAction::Write`] runs on tokio's
//! blocking pool; when it returns, the actor reports it to the core
//! ([`CoordinatorCore::handle_written`]) and carries out what that brings. The core hands out
//! one write at a time, in the order the store needs (see [`rill_core::coordinator`]), so the
//! actor keeps no queue of its own; meanwhile it goes on taking acknowledgements, ticks and
//! savepoint requests.
//!
//! Stopping waits for the writes: asked to stop by the master after a failure
//! ([`StopCoordinator`]) or at the job's end ([`Shutdown`]), the actor stops the core, carries
//! out what comes out until [`CoordinatorCore::has_stopped`] (a checkpoint may still
//! complete), and only then hands the master the newest completed checkpoint — so no metadata
//! reaches the store after the master chose the checkpoint to restore from.
//!
//! Snapshots are shared with the core, not copied, and with a store the core lets go of each
//! once written: the job's state is not held a second time in memory, and the master reads a
//! checkpoint's snapshots back from the store when an attempt restores from it. Without a
//! store, a write holds the core's `Arc` only until it returns, so the completed checkpoint
//! takes the snapshots back without a copy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, WrapFuture,
};
use rill_core::checkpoint::CheckpointId;
use rill_core::coordinator::{
    CheckpointConfig, CoordinatorAction, CoordinatorCore, RetainedCheckpoint, StoreWrite,
    WriteTarget,
};
use rill_core::layout::JobLayout;
use rill_store::CheckpointStore;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::master::JobMaster;
use crate::messages::{
    Acknowledge, CheckpointCompleted, CheckpointingFailed, Decline, NotifyCheckpointComplete,
    SavepointFailed, Shutdown, StopCoordinator, SubtaskEnded, TriggerCheckpoint, TriggerSavepoint,
};
use crate::subtask::SubtaskActor;

/// Who waits for the actor to stop.
enum Stopping {
    /// The master stops a failed attempt and waits for the newest completed checkpoint.
    Reply(oneshot::Sender<Option<RetainedCheckpoint>>),
    /// The job ended.
    Quietly,
}

pub(crate) struct CoordinatorActor {
    attempt: u32,
    job: String,
    /// Where snapshots and metadata go durably, if the job has a checkpoint store.
    store: Option<CheckpointStore>,
    core: CoordinatorCore,
    config: CheckpointConfig,
    /// Every subtask, in the plan's order.
    subtasks: Vec<Addr<SubtaskActor>>,
    sources: Vec<Addr<SubtaskActor>>,
    master: Addr<JobMaster>,
    /// Set once asked to stop: the core's writes finish, then the actor stops.
    stopping: Option<Stopping>,
}

impl CoordinatorActor {
    /// A coordinator for attempt `attempt` whose first checkpoint is `first_id`, with the
    /// checkpoints the store holds that count towards retention (see
    /// [`CoordinatorCore::retain_stored`]).
    pub(crate) fn new(
        (attempt, first_id, stored): (u32, CheckpointId, Vec<CheckpointId>),
        (job, store): (String, Option<CheckpointStore>),
        (config, layout): (CheckpointConfig, JobLayout),
        subtasks: Vec<Addr<SubtaskActor>>,
        sources: Vec<Addr<SubtaskActor>>,
        master: Addr<JobMaster>,
    ) -> Self {
        debug_assert_eq!(subtasks.len(), layout.subtasks.len());
        let mut core = CoordinatorCore::new(config, layout, first_id);
        core.retain_stored(stored);
        if store.is_some() {
            core.release_written_snapshots();
        }
        CoordinatorActor {
            attempt,
            job,
            store,
            core,
            config,
            subtasks,
            sources,
            master,
            stopping: None,
        }
    }

    /// Wall-clock milliseconds since the Unix epoch: checkpoint metadata carries real times.
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64)
    }

    /// Carries out what the core asks, in order: a write starts on the blocking pool (or,
    /// without a store, is reported at once). Once the core has stopped, so does the actor.
    fn perform_actions(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.core.poll_action() {
            match action {
                CoordinatorAction::Trigger { checkpoint, .. } => {
                    debug!(%checkpoint, "triggering");
                    for source in &self.sources {
                        source.do_send(TriggerCheckpoint(checkpoint));
                    }
                }
                CoordinatorAction::Write(write) => match self.store.clone() {
                    Some(store) => self.start_write(store, write, ctx),
                    None => {
                        let now = self.now_ms();
                        let bytes = write.bytes_in_memory();
                        self.core.handle_written(write.target(), Ok(bytes), now);
                    }
                },
                CoordinatorAction::NotifyComplete { checkpoint, last } => {
                    debug!(%checkpoint, last, "complete");
                    for subtask in &self.subtasks {
                        subtask.do_send(NotifyCheckpointComplete { checkpoint, last });
                    }
                }
                CoordinatorAction::Completed(checkpoint) => {
                    // After the notices: whatever the master sends the subtasks because of it
                    // (a stop after a savepoint) reaches them after the notice, so sinks
                    // commit first.
                    self.master.do_send(CheckpointCompleted {
                        attempt: self.attempt,
                        checkpoint,
                    });
                }
                CoordinatorAction::SavepointFailed(reason) => {
                    warn!(%reason, "a savepoint failed");
                    self.master.do_send(SavepointFailed {
                        attempt: self.attempt,
                        reason,
                    });
                }
                CoordinatorAction::FailJob(reason) => {
                    warn!(%reason, "checkpointing failed");
                    self.master.do_send(CheckpointingFailed {
                        attempt: self.attempt,
                        reason,
                    });
                }
            }
        }
        if self.core.has_stopped()
            && let Some(stopping) = self.stopping.take()
        {
            self.stop(stopping, ctx);
        }
    }

    /// Runs `write` on the blocking pool and reports it to the core when it returns.
    fn start_write(&mut self, store: CheckpointStore, write: StoreWrite, ctx: &mut Context<Self>) {
        let target = write.target();
        let job = self.job.clone();
        let running = tokio::task::spawn_blocking(move || {
            store.write(&job, &write).map_err(|error| error.to_string())
        });
        ctx.spawn(running.into_actor(self).map(move |outcome, actor, ctx| {
            // A store that panicked failed the write.
            let outcome = outcome
                .unwrap_or_else(|panic| Err(format!("the checkpoint store panicked: {panic}")));
            if let Err(reason) = &outcome {
                warn_failed(target, reason);
            }
            let now = actor.now_ms();
            actor.core.handle_written(target, outcome, now);
            actor.perform_actions(ctx);
        }));
    }

    /// Asked to stop: the core takes nothing new from now on, and the actor stops once the
    /// core's writes are done.
    fn begin_stop(&mut self, stopping: Stopping, ctx: &mut Context<Self>) {
        // A waiting master is answered, whatever came first.
        if !matches!(self.stopping, Some(Stopping::Reply(_))) {
            self.stopping = Some(stopping);
        }
        self.core.stop();
        self.perform_actions(ctx);
    }

    fn stop(&mut self, stopping: Stopping, ctx: &mut Context<Self>) {
        ctx.stop();
        if let Stopping::Reply(reply) = stopping {
            // The master may have ended meanwhile: then nobody waits.
            let _ = reply.send(self.core.take_latest_completed());
        }
    }
}

/// Logs a write to the checkpoint store that failed. Left-over data of a discard that failed
/// is garbage, never restored: only checkpoints with metadata are, and the metadata goes
/// first.
fn warn_failed(target: WriteTarget, reason: &str) {
    match target {
        WriteTarget::Snapshot { .. } | WriteTarget::Metadata(_) => {
            warn!(%reason, "cannot store {target}; the checkpoint fails");
        }
        WriteTarget::Discard(checkpoint) => {
            warn!(%reason, %checkpoint, "cannot discard a checkpoint; its data stays as garbage");
        }
    }
}

impl Actor for CoordinatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let tick_ms = self.config.tick_interval_ms();
        ctx.run_interval(Duration::from_millis(tick_ms), |actor, ctx| {
            let now = actor.now_ms();
            actor.core.handle_tick(now);
            actor.perform_actions(ctx);
        });
    }
}

impl Handler<Acknowledge> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, ack: Acknowledge, ctx: &mut Context<Self>) {
        self.core
            .handle_ack(ack.checkpoint, ack.subtask, ack.snapshot);
        self.perform_actions(ctx);
    }
}

impl Handler<Decline> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, decline: Decline, ctx: &mut Context<Self>) {
        self.core.handle_decline(decline.checkpoint, decline.reason);
        self.perform_actions(ctx);
    }
}

impl Handler<SubtaskEnded> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, ended: SubtaskEnded, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        self.core.handle_subtask_ended(ended.subtask, now);
        self.perform_actions(ctx);
    }
}

impl Handler<TriggerSavepoint> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _: TriggerSavepoint, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        self.core.request_savepoint(now);
        self.perform_actions(ctx);
    }
}

impl Handler<StopCoordinator> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, stop: StopCoordinator, ctx: &mut Context<Self>) {
        self.begin_stop(Stopping::Reply(stop.reply), ctx);
    }
}

impl Handler<Shutdown> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.begin_stop(Stopping::Quietly, ctx);
    }
}

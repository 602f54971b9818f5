//! The checkpoint coordinator actor: drives one [`CoordinatorCore`] with ticks of the job's
//! clock and the subtasks' acknowledgements, and carries out its actions in the order it emits
//! them: trigger the sources, write each snapshot, write the metadata last and durably, notify
//! the subtasks, hand the completed checkpoint to the job master, discard.
//!
//! With a [`CheckpointStore`] the writes go to it; without one, checkpoints live in memory
//! only (the core keeps the completed one's snapshots for the master either way).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler};
use rill_core::checkpoint::CheckpointId;
use rill_core::coordinator::{CheckpointConfig, CoordinatorAction, CoordinatorCore};
use rill_core::layout::JobLayout;
use rill_store::CheckpointStore;
use tracing::{debug, warn};

use crate::master::JobMaster;
use crate::messages::{
    Acknowledge, CheckpointCompleted, CheckpointingFailed, Decline, NotifyCheckpointComplete,
    SavepointFailed, Shutdown, StopCoordinator, SubtaskEnded, TriggerCheckpoint, TriggerSavepoint,
};
use crate::subtask::SubtaskActor;

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
}

impl CoordinatorActor {
    /// A coordinator for attempt `attempt` whose first checkpoint is `first_id`.
    pub(crate) fn new(
        (attempt, first_id): (u32, CheckpointId),
        (job, store): (String, Option<CheckpointStore>),
        (config, layout): (CheckpointConfig, JobLayout),
        subtasks: Vec<Addr<SubtaskActor>>,
        sources: Vec<Addr<SubtaskActor>>,
        master: Addr<JobMaster>,
    ) -> Self {
        debug_assert_eq!(subtasks.len(), layout.subtasks.len());
        CoordinatorActor {
            attempt,
            job,
            store,
            core: CoordinatorCore::new(config, layout, first_id),
            config,
            subtasks,
            sources,
            master,
        }
    }

    /// Wall-clock milliseconds since the Unix epoch: checkpoint metadata carries real times.
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64)
    }

    fn perform_actions(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                CoordinatorAction::Trigger { checkpoint, .. } => {
                    debug!(%checkpoint, "triggering");
                    for source in &self.sources {
                        source.do_send(TriggerCheckpoint(checkpoint));
                    }
                }
                CoordinatorAction::PersistSnapshot {
                    checkpoint,
                    subtask,
                } => self.persist_snapshot(checkpoint, subtask),
                CoordinatorAction::PersistMetadata(metadata) => {
                    if let Some(store) = &self.store
                        && let Err(error) = store.write_metadata(&self.job, &metadata)
                    {
                        warn!(%error, checkpoint = %metadata.checkpoint, "cannot store checkpoint metadata");
                        self.core
                            .handle_metadata_failed(metadata.checkpoint, &error.to_string());
                        continue;
                    }
                    let now = self.now_ms();
                    self.core
                        .handle_metadata_persisted(metadata.checkpoint, now);
                }
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
                CoordinatorAction::Discard(checkpoint) => {
                    if let Some(store) = &self.store
                        && let Err(error) = store.discard(&self.job, checkpoint)
                    {
                        // Left-over data of a discarded checkpoint is garbage, never restored:
                        // only checkpoints with metadata are, and the metadata goes first.
                        warn!(%error, %checkpoint, "cannot discard a checkpoint");
                    }
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
    }

    /// Writes an acknowledged snapshot to the store (if the job has one) and tells the core.
    fn persist_snapshot(&mut self, checkpoint: CheckpointId, subtask: usize) {
        let Some(snapshot) = self.core.pending_snapshot(checkpoint, subtask) else {
            return;
        };
        let written = match &self.store {
            Some(store) => store.write_snapshot(&self.job, checkpoint, subtask, snapshot),
            None => Ok(snapshot.state_bytes()),
        };
        match written {
            Ok(bytes) => {
                let now = self.now_ms();
                self.core
                    .handle_snapshot_persisted(checkpoint, subtask, bytes, now);
            }
            Err(error) => {
                warn!(%error, %checkpoint, subtask, "cannot store a snapshot");
                self.core
                    .handle_snapshot_failed(checkpoint, &error.to_string());
            }
        }
    }
}

impl Actor for CoordinatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let tick_ms = self.config.tick_interval_ms();
        ctx.run_interval(Duration::from_millis(tick_ms), |act, _| {
            let now = act.now_ms();
            act.core.handle_tick(now);
            act.perform_actions();
        });
    }
}

impl Handler<Acknowledge> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, ack: Acknowledge, _ctx: &mut Context<Self>) {
        self.core
            .handle_ack(ack.checkpoint, ack.subtask, ack.snapshot);
        self.perform_actions();
    }
}

impl Handler<Decline> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, decline: Decline, _ctx: &mut Context<Self>) {
        self.core.handle_decline(decline.checkpoint, decline.reason);
        self.perform_actions();
    }
}

impl Handler<SubtaskEnded> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, ended: SubtaskEnded, _ctx: &mut Context<Self>) {
        let now = self.now_ms();
        self.core.handle_subtask_ended(ended.subtask, now);
        self.perform_actions();
    }
}

impl Handler<TriggerSavepoint> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _: TriggerSavepoint, _ctx: &mut Context<Self>) {
        let now = self.now_ms();
        self.core.request_savepoint(now);
        self.perform_actions();
    }
}

impl Handler<StopCoordinator> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, stop: StopCoordinator, ctx: &mut Context<Self>) {
        ctx.stop();
        // The master may have ended meanwhile: then nobody waits.
        let _ = stop.reply.send(self.core.take_latest_completed());
    }
}

impl Handler<Shutdown> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

//! The checkpoint coordinator actor: drives one [`CoordinatorCore`] with ticks of the job's
//! clock, triggers the source subtasks, collects acknowledgements, and keeps the snapshots of
//! the retained checkpoints.
//!
//! With a [`CheckpointStore`], every snapshot is written as it is acknowledged and the metadata
//! last and durably; without one, checkpoints live in memory only. Either way the job master
//! receives the latest completed checkpoint's snapshots, to restart from after a failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler};
use rill_core::checkpoint::{CheckpointId, DeclineReason, SubtaskSnapshot};
use rill_core::coordinator::{
    CheckpointConfig, CheckpointMetadata, CoordinatorAction, CoordinatorCore,
};
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
    /// The snapshots of checkpoints in progress, by subtask index; a completed checkpoint's
    /// go to the job master.
    snapshots: BTreeMap<CheckpointId, BTreeMap<usize, SubtaskSnapshot>>,
    /// A completed checkpoint the master is told of once the subtasks are.
    completed: Option<CheckpointCompleted>,
    /// The newest completed checkpoint: what a stop hands back to the master.
    latest: Option<(CheckpointMetadata, Arc<BTreeMap<usize, SubtaskSnapshot>>)>,
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
            snapshots: BTreeMap::new(),
            completed: None,
            latest: None,
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
                CoordinatorAction::PersistMetadata(metadata) => {
                    let now = self.now_ms();
                    if let Some(store) = &self.store
                        && let Err(error) = store.write_metadata(&self.job, &metadata)
                    {
                        warn!(%error, checkpoint = %metadata.checkpoint, "cannot store checkpoint metadata");
                        self.core
                            .handle_metadata_failed(metadata.checkpoint, &error.to_string());
                        continue;
                    }
                    let snapshots = Arc::new(
                        self.snapshots
                            .remove(&metadata.checkpoint)
                            .unwrap_or_default(),
                    );
                    self.core
                        .handle_metadata_persisted(metadata.checkpoint, now);
                    // The master hears of it after the subtasks (see `NotifyComplete`).
                    self.latest = Some((metadata.clone(), snapshots.clone()));
                    self.completed = Some(CheckpointCompleted {
                        attempt: self.attempt,
                        metadata,
                        snapshots,
                    });
                }
                CoordinatorAction::NotifyComplete { checkpoint, last } => {
                    debug!(%checkpoint, last, "complete");
                    for subtask in &self.subtasks {
                        subtask.do_send(NotifyCheckpointComplete { checkpoint, last });
                    }
                    // Sent after the notices: whatever the master sends the subtasks because
                    // of it (a stop after a savepoint) reaches them after the notice, so
                    // sinks commit first.
                    if let Some(completed) = self.completed.take() {
                        self.master.do_send(completed);
                    }
                }
                CoordinatorAction::SavepointFailed(reason) => {
                    warn!(%reason, "a savepoint failed");
                    self.master.do_send(SavepointFailed {
                        attempt: self.attempt,
                        reason,
                    });
                }
                CoordinatorAction::Discard(checkpoint) => {
                    self.snapshots.remove(&checkpoint);
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
        let bytes = match &self.store {
            Some(store) => {
                match store.write_snapshot(&self.job, ack.checkpoint, ack.subtask, &ack.snapshot) {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        warn!(%error, checkpoint = %ack.checkpoint, "cannot store a snapshot");
                        self.core
                            .handle_decline(ack.checkpoint, DeclineReason::StorageFailed);
                        self.perform_actions();
                        return;
                    }
                }
            }
            None => ack.snapshot.state_bytes(),
        };
        self.snapshots
            .entry(ack.checkpoint)
            .or_default()
            .insert(ack.subtask, ack.snapshot);
        let now = self.now_ms();
        self.core
            .handle_ack(ack.checkpoint, ack.subtask, bytes, now);
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
        let latest = self
            .latest
            .take()
            .map(|(metadata, snapshots)| CheckpointCompleted {
                attempt: self.attempt,
                metadata,
                snapshots,
            });
        // The master may have ended meanwhile: then nobody waits.
        let _ = stop.reply.send(latest);
    }
}

impl Handler<Shutdown> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

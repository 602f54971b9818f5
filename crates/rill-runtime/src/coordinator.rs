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
//! or a slow disk, would stall all of them. Its storage actions (persist a snapshot, persist
//! the metadata, discard) go to a FIFO queue, and the queue's head is written on tokio's
//! blocking pool, **one write at a time**; when a write returns, the actor hands the result to
//! the core (`handle_snapshot_persisted`, `handle_metadata_persisted`, or their `_failed`),
//! carries out what that brings, and starts the next write. Meanwhile it goes on taking
//! acknowledgements, ticks and savepoint requests.
//!
//! The order the core requires still holds:
//! - every snapshot of a checkpoint is written before its metadata: the core asks for the
//!   metadata only once `handle_snapshot_persisted` has been called for every subtask, which
//!   happens only after each write returned;
//! - the metadata is synced before the completion notices: the core emits them from
//!   `handle_metadata_persisted`, called once the synced write returned;
//! - a discard comes after the writes of its checkpoint: the queue is FIFO and one write runs
//!   at a time, so a discard never overtakes a write queued before it, and the core asks for
//!   no write of a checkpoint after discarding it (it drops late acknowledgements). A metadata
//!   write that returns for a checkpoint a newer one subsumed meanwhile is ignored by the core;
//!   its discard, queued behind it, deletes it.
//!
//! Stopping waits for the queue: asked to stop by the master after a failure
//! ([`StopCoordinator`]) the actor takes no new acknowledgement, tick or request, lets every
//! queued write finish (and what they bring: a checkpoint may complete), and only then hands
//! the master the newest completed checkpoint — so no metadata reaches the store after the
//! master chose the checkpoint to restore from. [`Shutdown`] drains the queue the same way, for
//! the retention discards that follow a job's final checkpoint.
//!
//! Snapshots are shared with the core, not copied: a write holds the core's `Arc` only until it
//! returns, so the completed checkpoint takes the snapshots back without a copy.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, WrapFuture,
};
use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_core::coordinator::{
    CheckpointConfig, CheckpointMetadata, CompletedCheckpoint, CoordinatorAction, CoordinatorCore,
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

/// A storage action of the core, queued to be written off the actor's thread.
enum StoreWrite {
    Snapshot {
        checkpoint: CheckpointId,
        subtask: usize,
        snapshot: Arc<SubtaskSnapshot>,
    },
    Metadata(CheckpointMetadata),
    Discard(CheckpointId),
}

/// Which write returned, without what it wrote.
#[derive(Clone, Copy, Debug)]
enum Written {
    Snapshot {
        checkpoint: CheckpointId,
        subtask: usize,
    },
    Metadata(CheckpointId),
    Discard(CheckpointId),
}

impl StoreWrite {
    fn written(&self) -> Written {
        match self {
            StoreWrite::Snapshot {
                checkpoint,
                subtask,
                ..
            } => Written::Snapshot {
                checkpoint: *checkpoint,
                subtask: *subtask,
            },
            StoreWrite::Metadata(metadata) => Written::Metadata(metadata.checkpoint),
            StoreWrite::Discard(checkpoint) => Written::Discard(*checkpoint),
        }
    }

    /// Writes it (blocking): the bytes of a snapshot, or why it failed.
    fn run(self, store: &CheckpointStore, job: &str) -> Result<u64, String> {
        let written = match self {
            StoreWrite::Snapshot {
                checkpoint,
                subtask,
                snapshot,
            } => store.write_snapshot(job, checkpoint, subtask, &snapshot),
            StoreWrite::Metadata(metadata) => store.write_metadata(job, &metadata).map(|()| 0),
            StoreWrite::Discard(checkpoint) => store.discard(job, checkpoint).map(|()| 0),
        };
        written.map_err(|error| error.to_string())
    }
}

/// Why the actor is stopping, once its queued writes are done.
enum Stopping {
    /// The master stops a failed attempt and waits for the newest completed checkpoint.
    Reply(oneshot::Sender<Option<CompletedCheckpoint>>),
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
    /// Storage actions not yet started, in the order the core emitted them.
    queue: VecDeque<StoreWrite>,
    /// A write is running on the blocking pool.
    writing: bool,
    /// Set once asked to stop: nothing new is taken, the queue drains, then the actor stops.
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
        CoordinatorActor {
            attempt,
            job,
            store,
            core,
            config,
            subtasks,
            sources,
            master,
            queue: VecDeque::new(),
            writing: false,
            stopping: None,
        }
    }

    /// Wall-clock milliseconds since the Unix epoch: checkpoint metadata carries real times.
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64)
    }

    /// Carries out what the core asks, in order; storage actions are queued (or, without a
    /// store, done at once), then the next queued write starts if none runs.
    fn perform_actions(&mut self, ctx: &mut Context<Self>) {
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
                } => {
                    let Some(snapshot) = self.core.pending_snapshot_shared(checkpoint, subtask)
                    else {
                        continue;
                    };
                    if self.store.is_some() {
                        let snapshot = Arc::clone(snapshot);
                        self.queue.push_back(StoreWrite::Snapshot {
                            checkpoint,
                            subtask,
                            snapshot,
                        });
                    } else {
                        let bytes = snapshot.state_bytes();
                        let now = self.now_ms();
                        self.core
                            .handle_snapshot_persisted(checkpoint, subtask, bytes, now);
                    }
                }
                CoordinatorAction::PersistMetadata(metadata) => {
                    if self.store.is_some() {
                        self.queue.push_back(StoreWrite::Metadata(metadata));
                    } else {
                        let now = self.now_ms();
                        self.core
                            .handle_metadata_persisted(metadata.checkpoint, now);
                    }
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
                    if self.store.is_some() {
                        self.queue.push_back(StoreWrite::Discard(checkpoint));
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
        self.write_next(ctx);
    }

    /// Starts the queue's head on the blocking pool, unless a write runs; once the queue is
    /// empty and nothing runs, a stopping actor stops.
    fn write_next(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            return;
        }
        let (Some(store), Some(write)) = (self.store.clone(), self.queue.pop_front()) else {
            if let Some(stopping) = self.stopping.take() {
                self.stop(stopping, ctx);
            }
            return;
        };
        self.writing = true;
        let written = write.written();
        let job = self.job.clone();
        let running = tokio::task::spawn_blocking(move || write.run(&store, &job));
        ctx.spawn(running.into_actor(self).map(move |outcome, actor, ctx| {
            actor.writing = false;
            // A store that panicked failed the write.
            let outcome = outcome
                .unwrap_or_else(|panic| Err(format!("the checkpoint store panicked: {panic}")));
            actor.handle_written(written, outcome);
            actor.perform_actions(ctx);
        }));
    }

    /// Tells the core that a write returned.
    fn handle_written(&mut self, written: Written, outcome: Result<u64, String>) {
        let now = self.now_ms();
        match (written, outcome) {
            (
                Written::Snapshot {
                    checkpoint,
                    subtask,
                },
                Ok(bytes),
            ) => self
                .core
                .handle_snapshot_persisted(checkpoint, subtask, bytes, now),
            (
                Written::Snapshot {
                    checkpoint,
                    subtask,
                },
                Err(reason),
            ) => {
                warn!(%reason, %checkpoint, subtask, "cannot store a snapshot");
                self.core.handle_snapshot_failed(checkpoint, &reason);
            }
            (Written::Metadata(checkpoint), Ok(_)) => {
                self.core.handle_metadata_persisted(checkpoint, now);
            }
            (Written::Metadata(checkpoint), Err(reason)) => {
                warn!(%reason, %checkpoint, "cannot store checkpoint metadata");
                self.core.handle_metadata_failed(checkpoint, &reason);
            }
            (Written::Discard(_), Ok(_)) => {}
            (Written::Discard(checkpoint), Err(reason)) => {
                // Left-over data of a discarded checkpoint is garbage, never restored: only
                // checkpoints with metadata are, and the metadata goes first.
                warn!(%reason, %checkpoint, "cannot discard a checkpoint");
            }
        }
    }

    /// Asked to stop: takes nothing new from now on, and stops once the queue has drained.
    fn begin_stop(&mut self, stopping: Stopping, ctx: &mut Context<Self>) {
        // A waiting master is answered, whatever came first.
        if !matches!(self.stopping, Some(Stopping::Reply(_))) {
            self.stopping = Some(stopping);
        }
        self.write_next(ctx);
    }

    fn stop(&mut self, stopping: Stopping, ctx: &mut Context<Self>) {
        ctx.stop();
        if let Stopping::Reply(reply) = stopping {
            // The master may have ended meanwhile: then nobody waits.
            let _ = reply.send(self.core.take_latest_completed());
        }
    }
}

impl Actor for CoordinatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let tick_ms = self.config.tick_interval_ms();
        ctx.run_interval(Duration::from_millis(tick_ms), |actor, ctx| {
            if actor.stopping.is_some() {
                return;
            }
            let now = actor.now_ms();
            actor.core.handle_tick(now);
            actor.perform_actions(ctx);
        });
    }
}

impl Handler<Acknowledge> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, ack: Acknowledge, ctx: &mut Context<Self>) {
        if self.stopping.is_some() {
            return;
        }
        self.core
            .handle_ack(ack.checkpoint, ack.subtask, ack.snapshot);
        self.perform_actions(ctx);
    }
}

impl Handler<Decline> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, decline: Decline, ctx: &mut Context<Self>) {
        if self.stopping.is_some() {
            return;
        }
        self.core.handle_decline(decline.checkpoint, decline.reason);
        self.perform_actions(ctx);
    }
}

impl Handler<SubtaskEnded> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, ended: SubtaskEnded, ctx: &mut Context<Self>) {
        if self.stopping.is_some() {
            return;
        }
        let now = self.now_ms();
        self.core.handle_subtask_ended(ended.subtask, now);
        self.perform_actions(ctx);
    }
}

impl Handler<TriggerSavepoint> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _: TriggerSavepoint, ctx: &mut Context<Self>) {
        if self.stopping.is_some() {
            return;
        }
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

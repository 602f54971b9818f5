//! The checkpoint coordinator state machine.
//!
//! It decides when checkpoints start, tracks every subtask's acknowledgement, orders the
//! writes to the checkpoint store, and completes, aborts or fails. Time is passed in
//! (`now_ms`); what it wants done comes out of [`CoordinatorCore::poll_action`]. The driver's
//! part, in order:
//!
//! 1. call `handle_tick(now_ms)` periodically; on [`CoordinatorAction::Trigger`], ask every
//!    source subtask to start the checkpoint;
//! 2. pass each subtask's acknowledgement, with its snapshot, to `handle_ack`, and each
//!    refusal to `handle_decline`;
//! 3. on [`CoordinatorAction::Write`], carry out the [`StoreWrite`] — write a snapshot
//!    buffered, write a checkpoint's metadata **durably**, or discard a checkpoint — on any
//!    thread, and once it returned call `handle_written` with its [`WriteTarget`] and what
//!    it returned (the bytes a snapshot took, or why it failed). Without a store, report each
//!    write at once with [`StoreWrite::bytes_in_memory`];
//! 4. on [`CoordinatorAction::NotifyComplete`], tell every subtask (two-phase-commit sinks
//!    commit then); on [`CoordinatorAction::Completed`], which comes after the notices, hand
//!    the checkpoint to the job master ([`crate::job_master`]); on
//!    [`CoordinatorAction::FailJob`], fail the job;
//! 5. pass each subtask's end of input to `handle_subtask_ended`. Once every subtask has
//!    ended, the coordinator triggers the **final checkpoint** at once (whatever the
//!    interval); its completion notice says it is the last, and the subtasks finish then. A
//!    final checkpoint that fails is tried again on the next tick;
//! 6. to stop (the attempt failed, or the job ended), call `stop` and go on carrying out what
//!    comes out until `has_stopped`: the writes already decided finish first, so nothing
//!    reaches the store after the driver took the newest completed checkpoint with
//!    `take_latest_completed`.
//!
//! # The order of writes
//! The store's contract holds by construction: writes come out **one at a time**, in the
//! order they were decided, the next only once the previous was reported. The metadata of a
//! checkpoint is decided only once every snapshot's write was reported, the notices only once
//! the metadata's was, and a discard comes after every write of its checkpoint decided before
//! it. A checkpoint whose metadata was not written does not exist, so a crash before that
//! point simply loses it.
//!
//! Writes of a checkpoint no longer in progress (aborted, or subsumed by a newer one) that
//! have not started are dropped; its discard deletes what was written. While writes wait
//! behind the running one, no checkpoint starts: a store slower than the interval would
//! otherwise queue ever more writes, and every checkpoint would time out waiting for the
//! writes of those before it.

mod store_writes;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointId, CheckpointMode, DeclineReason, SubtaskSnapshot};
#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::layout::JobLayout;
use store_writes::{Queued, StoreWrites};
pub use store_writes::{StoreWrite, WriteTarget};

/// When and how checkpoints are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Time between the starts of two checkpoints; `None` takes checkpoints only on request
    /// (savepoints).
    pub interval_ms: Option<u64>,
    /// A checkpoint not complete after this long is aborted.
    pub timeout_ms: u64,
    /// The least time between the end of one checkpoint and the start of the next.
    pub min_pause_ms: u64,
    /// How many checkpoints may be in progress at once.
    pub max_concurrent: usize,
    /// How many checkpoints in a row may fail before the job fails.
    pub tolerable_failures: u32,
    /// How many completed checkpoints are kept; older ones are discarded (savepoints are kept).
    pub retained: usize,
    /// Whether barriers are aligned.
    pub mode: CheckpointMode,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval_ms: None,
            timeout_ms: 60_000,
            min_pause_ms: 0,
            max_concurrent: 1,
            tolerable_failures: 0,
            retained: 3,
            mode: CheckpointMode::ExactlyOnce,
        }
    }
}

impl CheckpointConfig {
    /// How often a driver ticks the coordinator: a tenth of the interval (100 ms without
    /// one), between 1 and 100 ms — often enough to start checkpoints and notice timeouts
    /// (of savepoints too) on time.
    pub fn tick_interval_ms(&self) -> u64 {
        self.interval_ms
            .map_or(100, |interval| interval / 10)
            .clamp(1, 100)
    }
}

/// What is known of a completed checkpoint; written durably, last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// Whether it was taken on request and is kept until deleted by hand.
    pub savepoint: bool,
    /// When it was triggered, in ms of the driver's clock (the runtime's: since the Unix
    /// epoch).
    pub triggered_at_ms: u64,
    /// When the last acknowledgement arrived.
    pub acknowledged_at_ms: u64,
    /// How many subtasks acknowledged it (all of them).
    pub subtasks: usize,
    /// The size of all snapshots together.
    pub state_bytes: u64,
    /// Which operators each subtask ran: what restoring the checkpoint into a job of another
    /// shape needs (see [`crate::layout`]).
    pub layout: JobLayout,
}

/// A completed checkpoint: its metadata and every subtask's snapshot, by the subtask's index
/// in the plan — what a job restores from.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletedCheckpoint {
    /// The checkpoint's metadata.
    pub metadata: CheckpointMetadata,
    /// Every subtask's snapshot, by index; shared, as the coordinator, the master and a
    /// restoring attempt all hold it.
    pub snapshots: Arc<BTreeMap<usize, SubtaskSnapshot>>,
}

impl CompletedCheckpoint {
    /// The checkpoint's id.
    pub fn id(&self) -> CheckpointId {
        self.metadata.checkpoint
    }
}

/// A completed checkpoint as the coordinator hands it on and the job master keeps it, to
/// restore from after a failure.
#[derive(Clone, Debug, PartialEq)]
pub enum RetainedCheckpoint {
    /// With every snapshot: a job without a checkpoint store keeps them in memory.
    InMemory(CompletedCheckpoint),
    /// Its metadata only: each snapshot was let go of once written to the checkpoint store
    /// (see [`CoordinatorCore::release_written_snapshots`]), and a restore reads them back.
    Stored(CheckpointMetadata),
}

impl RetainedCheckpoint {
    /// The checkpoint's id.
    pub fn id(&self) -> CheckpointId {
        self.metadata().checkpoint
    }

    /// The checkpoint's metadata.
    pub fn metadata(&self) -> &CheckpointMetadata {
        match self {
            RetainedCheckpoint::InMemory(completed) => &completed.metadata,
            RetainedCheckpoint::Stored(metadata) => metadata,
        }
    }
}

/// What the coordinator wants done.
#[derive(Clone, Debug, PartialEq)]
pub enum CoordinatorAction {
    /// Start a checkpoint at every source subtask.
    Trigger {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// Whether it is a savepoint.
        savepoint: bool,
    },
    /// Write to the checkpoint store, then call [`CoordinatorCore::handle_written`]; no other
    /// write comes out until then.
    Write(StoreWrite),
    /// The checkpoint is complete: tell every subtask.
    NotifyComplete {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// It is the job's final checkpoint: every subtask had ended when it was triggered,
        /// and finishes now.
        last: bool,
    },
    /// The checkpoint is complete and every subtask has been told: the job master restores
    /// from it after a failure, and who waits for a savepoint hears of it.
    Completed(RetainedCheckpoint),
    /// A savepoint was aborted: tell whoever asked for it.
    SavepointFailed(String),
    /// Too many checkpoints failed in a row.
    FailJob(String),
}

#[derive(Debug)]
struct Pending {
    savepoint: bool,
    /// Every subtask had ended when it was triggered.
    last: bool,
    triggered_at_ms: u64,
    /// The snapshots acknowledged so far, by subtask, until written — and after, unless
    /// written snapshots are released: shared with a driver that writes them elsewhere than
    /// where it drives the core.
    snapshots: BTreeMap<usize, Arc<SubtaskSnapshot>>,
    /// The subtasks whose snapshot is persisted.
    persisted: BTreeSet<usize>,
    state_bytes: u64,
    /// All persisted; the metadata is being written.
    persisting: Option<CheckpointMetadata>,
}

impl Pending {
    /// Whether `subtask` has acknowledged (its snapshot may be written and released since).
    fn acknowledged_by(&self, subtask: usize) -> bool {
        self.snapshots.contains_key(&subtask) || self.persisted.contains(&subtask)
    }

    /// How many subtasks have acknowledged.
    fn acknowledgements(&self) -> usize {
        let unwritten = self
            .snapshots
            .keys()
            .filter(|s| !self.persisted.contains(s));
        self.persisted.len() + unwritten.count()
    }
}

/// The checkpoint coordinator of one job.
#[derive(Debug)]
pub struct CoordinatorCore {
    config: CheckpointConfig,
    layout: JobLayout,
    subtasks: usize,
    next_id: u64,
    pending: BTreeMap<CheckpointId, Pending>,
    /// Completed checkpoints that count towards `retained` (not savepoints), oldest first.
    retained: VecDeque<CheckpointId>,
    latest: Option<RetainedCheckpoint>,
    /// Snapshots are let go of once written: the store holds them.
    release_written: bool,
    last_trigger_ms: Option<u64>,
    last_completion_ms: Option<u64>,
    consecutive_failures: u32,
    savepoint_requested: bool,
    /// The subtasks whose input ended.
    ended: BTreeSet<usize>,
    /// Every subtask has ended and no final checkpoint is in progress: trigger one now.
    final_due: bool,
    /// The final checkpoint completed: nothing more to trigger.
    final_complete: bool,
    failed: bool,
    /// Asked to stop: nothing new is taken, the decided writes finish.
    stopping: bool,
    actions: VecDeque<CoordinatorAction>,
    writes: StoreWrites,
    #[cfg(feature = "defects")]
    defect: Option<Defect>,
}

impl CoordinatorCore {
    /// A coordinator for a job laid out as `layout` whose next checkpoint is `first_id` (one
    /// past the newest checkpoint a restored job has seen).
    pub fn new(config: CheckpointConfig, layout: JobLayout, first_id: CheckpointId) -> Self {
        CoordinatorCore {
            config,
            subtasks: layout.subtasks.len(),
            layout,
            next_id: first_id.0,
            pending: BTreeMap::new(),
            retained: VecDeque::new(),
            latest: None,
            release_written: false,
            last_trigger_ms: None,
            last_completion_ms: None,
            consecutive_failures: 0,
            savepoint_requested: false,
            ended: BTreeSet::new(),
            final_due: false,
            final_complete: false,
            failed: false,
            stopping: false,
            actions: VecDeque::new(),
            writes: StoreWrites::default(),
            #[cfg(feature = "defects")]
            defect: None,
        }
    }

    /// Breaks the coordinator on purpose, for the simulator to catch.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        self.defect = Some(defect);
    }

    /// The driver writes to a checkpoint store: each snapshot is let go of once its write was
    /// reported, so that a job's state is not held a second time in memory; completed
    /// checkpoints come out as [`RetainedCheckpoint::Stored`], and a restore reads their
    /// snapshots back from the store. Without it they are [`RetainedCheckpoint::InMemory`].
    pub fn release_written_snapshots(&mut self) {
        self.release_written = true;
    }

    /// The newest completed checkpoint.
    pub fn latest_completed(&self) -> Option<&CheckpointMetadata> {
        self.latest.as_ref().map(RetainedCheckpoint::metadata)
    }

    /// The newest completed checkpoint: what a coordinator that stops hands back to the job
    /// master, which may not have heard of it yet (the notice travels after the subtasks'
    /// completion notices) although sinks may have committed it.
    pub fn take_latest_completed(&mut self) -> Option<RetainedCheckpoint> {
        self.latest.take()
    }

    /// How many checkpoints are in progress.
    pub fn in_progress(&self) -> usize {
        self.pending.len()
    }

    /// The next thing to do, if any: a write only when no other runs.
    pub fn poll_action(&mut self) -> Option<CoordinatorAction> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        let pending = &self.pending;
        self.writes
            .start_next(|queued| match queued {
                Queued::Snapshot {
                    checkpoint,
                    subtask,
                } => {
                    let snapshot = pending.get(&checkpoint)?.snapshots.get(&subtask)?;
                    Some(StoreWrite::Snapshot {
                        checkpoint,
                        subtask,
                        snapshot: Arc::clone(snapshot),
                    })
                }
                Queued::Metadata(metadata) => pending
                    .get(&metadata.checkpoint)
                    .is_some_and(|p| p.persisting.is_some())
                    .then_some(StoreWrite::Metadata(metadata)),
                Queued::Discard(checkpoint) => Some(StoreWrite::Discard(checkpoint)),
            })
            .map(CoordinatorAction::Write)
    }

    /// The write of `target` returned `written`: the bytes a snapshot took, or why the write
    /// failed. A failed snapshot or metadata write aborts its checkpoint; a failed discard
    /// leaves garbage that is never restored (only checkpoints with metadata are), and changes
    /// nothing.
    pub fn handle_written(
        &mut self,
        target: WriteTarget,
        written: Result<u64, String>,
        now_ms: u64,
    ) {
        if !self.writes.finish(target) {
            debug_assert!(false, "{target} was reported but is not being written");
            return;
        }
        match (target, written) {
            (
                WriteTarget::Snapshot {
                    checkpoint,
                    subtask,
                },
                Ok(bytes),
            ) => self.snapshot_persisted(checkpoint, subtask, bytes, now_ms),
            (WriteTarget::Snapshot { checkpoint, .. }, Err(reason)) => {
                self.snapshot_failed(checkpoint, &reason);
            }
            (WriteTarget::Metadata(checkpoint), Ok(_)) => {
                self.metadata_persisted(checkpoint, now_ms);
            }
            (WriteTarget::Metadata(checkpoint), Err(reason)) => {
                self.metadata_failed(checkpoint, &reason);
            }
            (WriteTarget::Discard(_), _) => {}
        }
    }

    /// Stops taking part: acknowledgements, refusals, ends, ticks and savepoint requests are
    /// ignored from now on, and checkpoints still waiting for acknowledgements are dropped
    /// (they can no longer complete; their discards are queued). The writes already decided go
    /// on coming out, with what they bring: a checkpoint whose metadata is queued may still
    /// complete. Carry out the actions until [`CoordinatorCore::has_stopped`].
    pub fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let subtasks = self.subtasks;
        let waiting: Vec<CheckpointId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.acknowledgements() < subtasks)
            .map(|(&id, _)| id)
            .collect();
        for checkpoint in waiting {
            self.pending.remove(&checkpoint);
            self.discard(checkpoint);
        }
    }

    /// Whether it was asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Asked to stop, every write it decided has been reported and every action taken:
    /// nothing more will come out, and [`CoordinatorCore::take_latest_completed`] is final.
    pub fn has_stopped(&self) -> bool {
        #[cfg(feature = "defects")]
        if self.defect == Some(Defect::CoordinatorStopsBeforeWrites) {
            // Broken on purpose: a write still running does not hold the stop back.
            return self.stopping && self.actions.is_empty();
        }
        self.stopping && self.writes.is_idle() && self.actions.is_empty()
    }

    fn discard(&mut self, checkpoint: CheckpointId) {
        self.writes.push(Queued::Discard(checkpoint));
    }

    /// Time passed: abort what timed out, and start a checkpoint if one is due.
    pub fn handle_tick(&mut self, now_ms: u64) {
        if self.failed || self.stopping {
            return;
        }
        let timed_out: Vec<CheckpointId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.persisting.is_none())
            .filter(|(_, p)| now_ms.saturating_sub(p.triggered_at_ms) >= self.config.timeout_ms)
            .map(|(&id, _)| id)
            .collect();
        for checkpoint in timed_out {
            self.abort(checkpoint, &format!("{checkpoint} timed out"), true);
        }
        self.maybe_trigger(now_ms);
    }

    /// Asks for a savepoint; it starts as soon as no more than the allowed checkpoints run.
    pub fn request_savepoint(&mut self, now_ms: u64) {
        if self.stopping {
            return;
        }
        self.savepoint_requested = true;
        self.maybe_trigger(now_ms);
    }

    /// Subtask `subtask` (in `0..subtasks`) has ended its input; once all have, the final
    /// checkpoint starts.
    pub fn handle_subtask_ended(&mut self, subtask: usize, now_ms: u64) {
        debug_assert!(
            subtask < self.subtasks,
            "subtask {subtask} of {}",
            self.subtasks
        );
        if !self.stopping && self.ended.insert(subtask) && self.all_ended() {
            self.final_due = true;
            self.maybe_trigger(now_ms);
        }
    }

    fn all_ended(&self) -> bool {
        self.ended.len() == self.subtasks
    }

    fn maybe_trigger(&mut self, now_ms: u64) {
        if self.failed
            || self.stopping
            || self.final_complete
            || self.writes.backlogged()
            || self.pending.len() >= self.config.max_concurrent.max(1)
        {
            return;
        }
        let paused = self
            .last_completion_ms
            .is_some_and(|last| now_ms.saturating_sub(last) < self.config.min_pause_ms);
        let due = match (self.config.interval_ms, self.last_trigger_ms) {
            (Some(_), None) => true,
            (Some(interval), Some(last)) => now_ms.saturating_sub(last) >= interval,
            (None, _) => false,
        };
        let savepoint = self.savepoint_requested;
        if !savepoint && !self.final_due && (paused || !due) {
            return;
        }
        self.savepoint_requested = false;
        self.final_due = false;
        let checkpoint = CheckpointId(self.next_id);
        self.next_id += 1;
        self.last_trigger_ms = Some(now_ms);
        self.pending.insert(
            checkpoint,
            Pending {
                savepoint,
                last: self.all_ended(),
                triggered_at_ms: now_ms,
                snapshots: BTreeMap::new(),
                persisted: BTreeSet::new(),
                state_bytes: 0,
                persisting: None,
            },
        );
        self.actions.push_back(CoordinatorAction::Trigger {
            checkpoint,
            savepoint,
        });
    }

    /// Subtask `subtask` (in `0..subtasks`) acknowledged `checkpoint` with its snapshot: it is
    /// to be written ([`StoreWrite::Snapshot`]). A late acknowledgement of a checkpoint no
    /// longer in progress is dropped: nothing of it was written.
    pub fn handle_ack(
        &mut self,
        checkpoint: CheckpointId,
        subtask: usize,
        snapshot: SubtaskSnapshot,
    ) {
        debug_assert!(
            subtask < self.subtasks,
            "subtask {subtask} of {}",
            self.subtasks
        );
        let Some(pending) = self.pending.get_mut(&checkpoint).filter(|_| !self.stopping) else {
            return;
        };
        if pending.persisting.is_some() || pending.acknowledged_by(subtask) {
            return;
        }
        pending.snapshots.insert(subtask, Arc::new(snapshot));
        self.writes.push(Queued::Snapshot {
            checkpoint,
            subtask,
        });
    }

    /// The snapshot of `subtask` for `checkpoint` is written (`state_bytes` of it); once every
    /// subtask's is, the metadata is to be written.
    fn snapshot_persisted(
        &mut self,
        checkpoint: CheckpointId,
        subtask: usize,
        state_bytes: u64,
        now_ms: u64,
    ) {
        let Some(pending) = self.pending.get_mut(&checkpoint) else {
            return;
        };
        if pending.persisting.is_some()
            || !pending.snapshots.contains_key(&subtask)
            || !pending.persisted.insert(subtask)
        {
            return;
        }
        if self.release_written {
            pending.snapshots.remove(&subtask);
        }
        pending.state_bytes += state_bytes;
        #[cfg(feature = "defects")]
        if self.defect == Some(Defect::CoordinatorCompletesEarly) {
            // Broken on purpose: the first snapshot stands in for every other.
            pending.persisted.extend(0..self.subtasks);
        }
        if pending.persisted.len() == self.subtasks {
            let metadata = CheckpointMetadata {
                checkpoint,
                savepoint: pending.savepoint,
                triggered_at_ms: pending.triggered_at_ms,
                acknowledged_at_ms: now_ms,
                subtasks: self.subtasks,
                state_bytes: pending.state_bytes,
                layout: self.layout.clone(),
            };
            pending.persisting = Some(metadata.clone());
            self.writes.push(Queued::Metadata(metadata));
        }
    }

    /// The snapshot of a subtask could not be written: the checkpoint fails.
    fn snapshot_failed(&mut self, checkpoint: CheckpointId, reason: &str) {
        if self
            .pending
            .get(&checkpoint)
            .is_some_and(|p| p.persisting.is_none())
        {
            self.abort(
                checkpoint,
                &format!("{checkpoint}: a snapshot could not be stored: {reason}"),
                true,
            );
        }
    }

    /// A subtask cannot take part in `checkpoint`.
    pub fn handle_decline(&mut self, checkpoint: CheckpointId, reason: DeclineReason) {
        if !self.stopping
            && self
                .pending
                .get(&checkpoint)
                .is_some_and(|p| p.persisting.is_none())
        {
            let failure = reason != DeclineReason::Finished;
            self.abort(
                checkpoint,
                &format!("{checkpoint} was declined: {reason}"),
                failure,
            );
        }
    }

    /// The metadata of `checkpoint` could not be written: the checkpoint does not exist.
    fn metadata_failed(&mut self, checkpoint: CheckpointId, reason: &str) {
        if self
            .pending
            .get(&checkpoint)
            .is_some_and(|p| p.persisting.is_some())
        {
            self.abort(checkpoint, &format!("{checkpoint}: {reason}"), true);
        }
    }

    /// The metadata of `checkpoint` is durable: the checkpoint is complete.
    fn metadata_persisted(&mut self, checkpoint: CheckpointId, now_ms: u64) {
        // Only the metadata of a checkpoint still persisting is written (see `poll_action`),
        // and nothing else changes it while the write runs.
        if self
            .pending
            .get(&checkpoint)
            .is_none_or(|p| p.persisting.is_none())
        {
            return;
        }
        let Some(Pending {
            persisting: Some(metadata),
            last,
            snapshots,
            ..
        }) = self.pending.remove(&checkpoint)
        else {
            return;
        };
        let completed = if self.release_written {
            RetainedCheckpoint::Stored(metadata.clone())
        } else {
            RetainedCheckpoint::InMemory(CompletedCheckpoint {
                metadata: metadata.clone(),
                // Unshared by now: every write of them returned before the metadata was
                // written.
                snapshots: Arc::new(
                    snapshots
                        .into_iter()
                        .map(|(subtask, snapshot)| (subtask, Arc::unwrap_or_clone(snapshot)))
                        .collect(),
                ),
            })
        };
        // Older checkpoints still in progress are subsumed by this one.
        let older: Vec<CheckpointId> = self
            .pending
            .range(..checkpoint)
            .map(|(&id, _)| id)
            .collect();
        for id in older {
            self.pending.remove(&id);
            self.discard(id);
        }
        self.consecutive_failures = 0;
        self.last_completion_ms = Some(now_ms);
        if !metadata.savepoint {
            self.retained.push_back(checkpoint);
        }
        self.latest = Some(completed.clone());
        self.final_complete |= last;
        self.actions
            .push_back(CoordinatorAction::NotifyComplete { checkpoint, last });
        self.actions
            .push_back(CoordinatorAction::Completed(completed));
        self.discard_beyond_retention();
    }

    /// Takes over the completed checkpoints stored before this coordinator started — by
    /// earlier attempts or earlier runs of the job — that count towards retention (not
    /// savepoints), oldest first: retention keeps the newest `retained` of them and of its own
    /// together. Those beyond it are discarded when this coordinator completes a checkpoint,
    /// as in Flink, not before: until then the job may still need the one it restored from
    /// (a crash before the first completion restores it again).
    pub fn retain_stored(&mut self, stored: impl IntoIterator<Item = CheckpointId>) {
        let mut earlier: VecDeque<CheckpointId> = stored
            .into_iter()
            .filter(|id| !self.retained.contains(id))
            .collect();
        earlier.append(&mut self.retained);
        self.retained = earlier;
    }

    fn discard_beyond_retention(&mut self) {
        while self.retained.len() > self.config.retained.max(1) {
            if let Some(oldest) = self.retained.pop_front() {
                self.discard(oldest);
            }
        }
    }

    fn abort(&mut self, checkpoint: CheckpointId, reason: &str, failure: bool) {
        let Some(aborted) = self.pending.remove(&checkpoint) else {
            return;
        };
        // A final checkpoint that failed is tried again.
        self.final_due |= aborted.last;
        if aborted.savepoint {
            self.actions
                .push_back(CoordinatorAction::SavepointFailed(reason.to_owned()));
        }
        self.discard(checkpoint);
        if !failure {
            return;
        }
        self.consecutive_failures += 1;
        if self.consecutive_failures > self.config.tolerable_failures {
            self.failed = true;
            self.actions.push_back(CoordinatorAction::FailJob(format!(
                "{} checkpoint(s) failed in a row (tolerated: {}); the last: {reason}",
                self.consecutive_failures, self.config.tolerable_failures
            )));
        }
    }
}

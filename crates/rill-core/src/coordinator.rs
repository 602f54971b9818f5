//! The checkpoint coordinator state machine.
//!
//! It decides when checkpoints start, tracks every subtask's acknowledgement, and completes,
//! aborts or fails. Time is passed in (`now_ms`); what it wants done comes out of
//! [`CoordinatorCore::poll_action`]. The driver's part, in order:
//!
//! 1. call `handle_tick(now_ms)` periodically; on [`CoordinatorAction::Trigger`], ask every
//!    source subtask to start the checkpoint;
//! 2. pass each subtask's acknowledgement, with its snapshot, to `handle_ack`, and each
//!    refusal to `handle_decline`;
//! 3. on [`CoordinatorAction::PersistSnapshot`], write that snapshot
//!    ([`CoordinatorCore::pending_snapshot`]) to the checkpoint store, buffered, then call
//!    `handle_snapshot_persisted` (or `handle_snapshot_failed`); without a store, call it at
//!    once;
//! 4. on [`CoordinatorAction::PersistMetadata`], once every snapshot is persisted, write the
//!    metadata **durably and last**, then call `handle_metadata_persisted`: a checkpoint whose
//!    metadata was not written does not exist, so a crash before that point simply loses the
//!    checkpoint;
//! 5. on [`CoordinatorAction::NotifyComplete`], tell every subtask (two-phase-commit sinks
//!    commit then); on [`CoordinatorAction::Completed`], which comes after the notices, hand
//!    the checkpoint to the job master ([`crate::job_master`]); on
//!    [`CoordinatorAction::Discard`], delete that checkpoint's data; on
//!    [`CoordinatorAction::FailJob`], fail the job;
//! 6. pass each subtask's end of input to `handle_subtask_ended`. Once every subtask has
//!    ended, the coordinator triggers the **final checkpoint** at once (whatever the
//!    interval); its completion notice says it is the last, and the subtasks finish then. A
//!    final checkpoint that fails is tried again on the next tick.
//!
//! The actions come out in the order storage needs: every snapshot of a checkpoint before its
//! metadata, the metadata before the notices, the notices before the master hears of it. A
//! driver that performs them in order, and each storage write before the next action, keeps
//! the store's contract. So does one that writes asynchronously (off the thread that drives
//! the core), provided it performs the storage actions — persist snapshot, persist metadata,
//! discard — one after the other in the order they came out, and calls
//! `handle_snapshot_persisted` / `handle_metadata_persisted` (or their `_failed`) only once
//! the write returned: the metadata comes out only after every snapshot's write was reported,
//! the notices only after the metadata's, and a discard after every write of its checkpoint
//! that came out before it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointId, CheckpointMode, DeclineReason, SubtaskSnapshot};
#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::layout::JobLayout;

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
    /// A subtask acknowledged: write its snapshot
    /// ([`CoordinatorCore::pending_snapshot`]), then call
    /// [`CoordinatorCore::handle_snapshot_persisted`].
    PersistSnapshot {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// The subtask's index.
        subtask: usize,
    },
    /// Every subtask's snapshot is persisted: write this durably, then call
    /// [`CoordinatorCore::handle_metadata_persisted`].
    PersistMetadata(CheckpointMetadata),
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
    Completed(CompletedCheckpoint),
    /// Delete the checkpoint's data: it was aborted, or it is older than the retained ones.
    Discard(CheckpointId),
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
    /// The snapshots acknowledged so far, by subtask, persisted or being persisted: shared
    /// with a driver that writes them elsewhere than where it drives the core.
    snapshots: BTreeMap<usize, Arc<SubtaskSnapshot>>,
    /// The subtasks whose snapshot is persisted.
    persisted: BTreeSet<usize>,
    state_bytes: u64,
    /// All persisted; the metadata is being written.
    persisting: Option<CheckpointMetadata>,
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
    latest: Option<CompletedCheckpoint>,
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
    actions: VecDeque<CoordinatorAction>,
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
            last_trigger_ms: None,
            last_completion_ms: None,
            consecutive_failures: 0,
            savepoint_requested: false,
            ended: BTreeSet::new(),
            final_due: false,
            final_complete: false,
            failed: false,
            actions: VecDeque::new(),
            #[cfg(feature = "defects")]
            defect: None,
        }
    }

    /// Breaks the coordinator on purpose, for the simulator to catch.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        self.defect = Some(defect);
    }

    /// The newest completed checkpoint.
    pub fn latest_completed(&self) -> Option<&CheckpointMetadata> {
        self.latest.as_ref().map(|latest| &latest.metadata)
    }

    /// The newest completed checkpoint with its snapshots: what a coordinator that stops hands
    /// back to the job master, which may not have heard of it yet (the notice travels after the
    /// subtasks' completion notices) although sinks may have committed it.
    pub fn take_latest_completed(&mut self) -> Option<CompletedCheckpoint> {
        self.latest.take()
    }

    /// The snapshot of a checkpoint in progress that [`CoordinatorAction::PersistSnapshot`]
    /// asks to write.
    pub fn pending_snapshot(
        &self,
        checkpoint: CheckpointId,
        subtask: usize,
    ) -> Option<&SubtaskSnapshot> {
        self.pending_snapshot_shared(checkpoint, subtask)
            .map(Arc::as_ref)
    }

    /// The same snapshot, shared: for a driver that writes it on another thread. It should
    /// let go of it once written, so that completing the checkpoint need not copy it.
    pub fn pending_snapshot_shared(
        &self,
        checkpoint: CheckpointId,
        subtask: usize,
    ) -> Option<&Arc<SubtaskSnapshot>> {
        self.pending.get(&checkpoint)?.snapshots.get(&subtask)
    }

    /// How many checkpoints are in progress.
    pub fn in_progress(&self) -> usize {
        self.pending.len()
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<CoordinatorAction> {
        self.actions.pop_front()
    }

    /// Time passed: abort what timed out, and start a checkpoint if one is due.
    pub fn handle_tick(&mut self, now_ms: u64) {
        if self.failed {
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
        if self.ended.insert(subtask) && self.all_ended() {
            self.final_due = true;
            self.maybe_trigger(now_ms);
        }
    }

    fn all_ended(&self) -> bool {
        self.ended.len() == self.subtasks
    }

    fn maybe_trigger(&mut self, now_ms: u64) {
        if self.failed
            || self.final_complete
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
    /// to be persisted ([`CoordinatorAction::PersistSnapshot`]). A late acknowledgement of a
    /// checkpoint no longer in progress is dropped: nothing of it was written.
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
        let Some(pending) = self.pending.get_mut(&checkpoint) else {
            return;
        };
        if pending.persisting.is_some() || pending.snapshots.contains_key(&subtask) {
            return;
        }
        pending.snapshots.insert(subtask, Arc::new(snapshot));
        self.actions.push_back(CoordinatorAction::PersistSnapshot {
            checkpoint,
            subtask,
        });
    }

    /// The snapshot of `subtask` for `checkpoint` is written (`state_bytes` of it); once every
    /// subtask's is, the metadata is to be persisted.
    pub fn handle_snapshot_persisted(
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
            self.actions
                .push_back(CoordinatorAction::PersistMetadata(metadata));
        }
    }

    /// The snapshot of a subtask could not be written: the checkpoint fails.
    pub fn handle_snapshot_failed(&mut self, checkpoint: CheckpointId, reason: &str) {
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
        if self
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
    pub fn handle_metadata_failed(&mut self, checkpoint: CheckpointId, reason: &str) {
        if self
            .pending
            .get(&checkpoint)
            .is_some_and(|p| p.persisting.is_some())
        {
            self.abort(checkpoint, &format!("{checkpoint}: {reason}"), true);
        }
    }

    /// The metadata of `checkpoint` is durable: the checkpoint is complete. A checkpoint no
    /// longer in progress is left alone: with several in progress and a driver that writes
    /// asynchronously, a newer one may complete (and subsume it) while its metadata is being
    /// written; its [`CoordinatorAction::Discard`] came out after the write, so a driver that
    /// performs storage actions in order deletes what the write left.
    pub fn handle_metadata_persisted(&mut self, checkpoint: CheckpointId, now_ms: u64) {
        let Some(pending) = self.pending.get(&checkpoint) else {
            return;
        };
        if pending.persisting.is_none() {
            debug_assert!(
                false,
                "metadata persisted for {checkpoint}, which was not persisting"
            );
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
        let completed = CompletedCheckpoint {
            metadata: metadata.clone(),
            // Unshared by now: every write of them returned before the metadata was written.
            snapshots: Arc::new(
                snapshots
                    .into_iter()
                    .map(|(subtask, snapshot)| (subtask, Arc::unwrap_or_clone(snapshot)))
                    .collect(),
            ),
        };
        // Older checkpoints still in progress are subsumed by this one.
        let older: Vec<CheckpointId> = self
            .pending
            .range(..checkpoint)
            .map(|(&id, _)| id)
            .collect();
        for id in older {
            self.pending.remove(&id);
            self.actions.push_back(CoordinatorAction::Discard(id));
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
                self.actions.push_back(CoordinatorAction::Discard(oldest));
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
        self.actions
            .push_back(CoordinatorAction::Discard(checkpoint));
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

#[cfg(test)]
mod tests {
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

    fn actions(core: &mut CoordinatorCore) -> Vec<CoordinatorAction> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    /// Subtask `subtask` acknowledges `checkpoint`, and the driver persists its snapshot
    /// (`bytes` of it) as asked.
    fn ack(core: &mut CoordinatorCore, checkpoint: u64, subtask: usize, bytes: u64, now_ms: u64) {
        let checkpoint = CheckpointId(checkpoint);
        core.handle_ack(checkpoint, subtask, SubtaskSnapshot::default());
        if core.actions.back()
            == Some(&CoordinatorAction::PersistSnapshot {
                checkpoint,
                subtask,
            })
        {
            core.actions.pop_back();
            assert!(core.pending_snapshot(checkpoint, subtask).is_some());
            core.handle_snapshot_persisted(checkpoint, subtask, bytes, now_ms);
        }
    }

    fn trigger(id: u64) -> CoordinatorAction {
        CoordinatorAction::Trigger {
            checkpoint: CheckpointId(id),
            savepoint: false,
        }
    }

    /// Acknowledges `checkpoint` from every subtask and persists its metadata.
    fn complete(
        core: &mut CoordinatorCore,
        checkpoint: u64,
        subtasks: usize,
        now_ms: u64,
    ) -> Vec<CoordinatorAction> {
        for subtask in 0..subtasks {
            ack(core, checkpoint, subtask, 10, now_ms);
        }
        let mut seen = actions(core);
        assert!(
            matches!(seen.last(), Some(CoordinatorAction::PersistMetadata(m)) if m.checkpoint.0 == checkpoint && m.state_bytes == 10 * subtasks as u64)
        );
        core.handle_metadata_persisted(CheckpointId(checkpoint), now_ms);
        seen.extend(actions(core));
        seen
    }

    #[test]
    fn checkpoints_start_on_the_interval_and_complete_after_every_ack_and_the_metadata() {
        let mut core = CoordinatorCore::new(config(100), layout(3), CheckpointId(1));
        core.handle_tick(0);
        assert_eq!(actions(&mut core), vec![trigger(1)]);
        core.handle_tick(150);
        assert!(actions(&mut core).is_empty(), "one at a time by default");
        ack(&mut core, 1, 0, 10, 160);
        ack(&mut core, 1, 0, 10, 160);
        ack(&mut core, 1, 1, 10, 160);
        assert!(
            actions(&mut core).is_empty(),
            "a duplicate ack does not count twice"
        );
        assert!(core.latest_completed().is_none());
        let seen = complete(&mut core, 1, 3, 170);
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
    fn metadata_written_for_a_checkpoint_subsumed_meanwhile_changes_nothing_and_is_discarded() {
        let mut core = CoordinatorCore::new(
            CheckpointConfig {
                max_concurrent: 2,
                ..config(10)
            },
            layout(1),
            CheckpointId(1),
        );
        core.handle_tick(0);
        core.handle_tick(10);
        assert_eq!(actions(&mut core), vec![trigger(1), trigger(2)]);
        // An asynchronous driver: checkpoint 2's metadata is asked for first, then 1's; both
        // writes are queued, in that order.
        ack(&mut core, 2, 0, 1, 20);
        ack(&mut core, 1, 0, 1, 21);
        let asked = actions(&mut core);
        assert!(matches!(
            &asked[..],
            [CoordinatorAction::PersistMetadata(two), CoordinatorAction::PersistMetadata(one)]
                if two.checkpoint == CheckpointId(2) && one.checkpoint == CheckpointId(1)
        ));
        core.handle_metadata_persisted(CheckpointId(2), 30);
        let completed = actions(&mut core);
        assert_eq!(completed[0], CoordinatorAction::Discard(CheckpointId(1)));
        // Checkpoint 1's write returns after it was subsumed: ignored, its discard comes after
        // the write in the queue.
        core.handle_metadata_persisted(CheckpointId(1), 31);
        assert!(actions(&mut core).is_empty());
        assert_eq!(
            core.latest_completed().map(|m| m.checkpoint),
            Some(CheckpointId(2))
        );
    }

    #[test]
    fn a_checkpoint_without_persisted_metadata_is_not_complete() {
        let mut core = CoordinatorCore::new(config(100), layout(1), CheckpointId(7));
        core.handle_tick(0);
        actions(&mut core);
        ack(&mut core, 7, 0, 1, 5);
        assert!(matches!(
            actions(&mut core)[..],
            [CoordinatorAction::PersistMetadata(_)]
        ));
        core.handle_tick(5_000);
        assert!(core.latest_completed().is_none());
        assert!(
            !actions(&mut core).contains(&CoordinatorAction::Discard(CheckpointId(7))),
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
        ack(&mut core, 1, 0, 1, 10);
        actions(&mut core);
        core.handle_tick(1_000);
        assert_eq!(
            actions(&mut core),
            vec![CoordinatorAction::Discard(CheckpointId(1)), trigger(2)]
        );
        ack(&mut core, 1, 1, 1, 1_001);
        assert!(
            actions(&mut core).is_empty(),
            "a late ack is dropped: nothing of it was written"
        );
        core.handle_decline(CheckpointId(2), DeclineReason::Overtaken);
        let seen = actions(&mut core);
        assert_eq!(seen[0], CoordinatorAction::Discard(CheckpointId(2)));
        assert!(
            matches!(&seen[1], CoordinatorAction::FailJob(reason) if reason.contains("2 checkpoint(s) failed in a row") && reason.contains("overtook")),
            "{seen:?}"
        );
        core.handle_tick(10_000);
        assert!(
            actions(&mut core).is_empty(),
            "a failed coordinator triggers nothing"
        );
    }

    #[test]
    fn metadata_is_persisted_only_after_every_snapshot_and_the_master_hears_after_the_notice() {
        let mut core = CoordinatorCore::new(config(10), layout(2), CheckpointId(1));
        core.handle_tick(0);
        actions(&mut core);
        core.handle_ack(CheckpointId(1), 0, SubtaskSnapshot::default());
        core.handle_ack(CheckpointId(1), 1, SubtaskSnapshot::default());
        let persist = |subtask| CoordinatorAction::PersistSnapshot {
            checkpoint: CheckpointId(1),
            subtask,
        };
        assert_eq!(actions(&mut core), vec![persist(0), persist(1)]);
        core.handle_snapshot_persisted(CheckpointId(1), 1, 5, 2);
        assert!(
            actions(&mut core).is_empty(),
            "subtask 0's is not written yet"
        );
        core.handle_snapshot_persisted(CheckpointId(1), 0, 5, 3);
        assert!(matches!(
            actions(&mut core)[..],
            [CoordinatorAction::PersistMetadata(ref m)] if m.state_bytes == 10
        ));
        core.handle_metadata_persisted(CheckpointId(1), 4);
        let seen = actions(&mut core);
        assert!(
            matches!(
                &seen[..],
                [
                    CoordinatorAction::NotifyComplete { last: false, .. },
                    CoordinatorAction::Completed(completed)
                ] if completed.snapshots.len() == 2
            ),
            "{seen:?}"
        );
        assert_eq!(
            core.take_latest_completed().map(|c| c.id()),
            Some(CheckpointId(1))
        );
    }

    #[test]
    fn a_snapshot_that_cannot_be_stored_fails_the_checkpoint() {
        let mut core = CoordinatorCore::new(config(10), layout(2), CheckpointId(1));
        core.handle_tick(0);
        actions(&mut core);
        core.handle_ack(CheckpointId(1), 0, SubtaskSnapshot::default());
        actions(&mut core);
        core.handle_snapshot_failed(CheckpointId(1), "disk full");
        let seen = actions(&mut core);
        assert_eq!(seen[0], CoordinatorAction::Discard(CheckpointId(1)));
        assert!(
            matches!(&seen[1], CoordinatorAction::FailJob(reason) if reason.contains("disk full"))
        );
    }

    #[test]
    fn a_metadata_write_that_fails_aborts_the_checkpoint() {
        let mut core = CoordinatorCore::new(config(10), layout(1), CheckpointId(1));
        core.handle_tick(0);
        ack(&mut core, 1, 0, 1, 1);
        actions(&mut core);
        core.handle_metadata_failed(CheckpointId(1), "disk full");
        let seen = actions(&mut core);
        assert_eq!(seen[0], CoordinatorAction::Discard(CheckpointId(1)));
        assert!(
            matches!(&seen[1], CoordinatorAction::FailJob(reason) if reason.contains("disk full"))
        );
        assert!(core.latest_completed().is_none());
    }

    #[test]
    fn a_finished_subtask_declining_is_not_a_failure() {
        let mut core = CoordinatorCore::new(config(10), layout(2), CheckpointId(1));
        for round in 0..5u64 {
            core.handle_tick(round * 10);
            core.handle_decline(CheckpointId(round + 1), DeclineReason::Finished);
        }
        let seen = actions(&mut core);
        assert!(
            !seen
                .iter()
                .any(|a| matches!(a, CoordinatorAction::FailJob(_))),
            "{seen:?}"
        );
        assert_eq!(
            seen.iter()
                .filter(|a| matches!(a, CoordinatorAction::Discard(_)))
                .count(),
            5
        );
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
            discarded.extend(
                complete(&mut core, round + 1, 1, round * 10 + 1)
                    .into_iter()
                    .filter_map(|a| match a {
                        CoordinatorAction::Discard(id) => Some(id.0),
                        _ => None,
                    }),
            );
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
            !seen
                .iter()
                .any(|a| matches!(a, CoordinatorAction::Discard(_))),
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
        let discarded: Vec<CoordinatorAction> = complete(&mut core, 8, 1, 1)
            .into_iter()
            .filter(|a| matches!(a, CoordinatorAction::Discard(_)))
            .collect();
        assert_eq!(
            discarded,
            vec![
                CoordinatorAction::Discard(CheckpointId(2)),
                CoordinatorAction::Discard(CheckpointId(5))
            ],
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
        assert!(
            seen.contains(&CoordinatorAction::Discard(CheckpointId(1))),
            "{seen:?}"
        );
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
        assert_eq!(
            actions(&mut core),
            vec![CoordinatorAction::Discard(CheckpointId(2)), trigger(3)],
            "it timed out, and is tried again at once"
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
        let _ = complete(&mut core, 1, 1, 2);
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
            matches!(&seen[..], [CoordinatorAction::SavepointFailed(reason), CoordinatorAction::Discard(CheckpointId(2))] if reason.contains("could not be snapshotted")),
            "{seen:?}"
        );
    }
}

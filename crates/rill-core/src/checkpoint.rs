//! Checkpoints as the data path sees them: ids, barriers, what a subtask snapshots, and barrier
//! alignment.
//!
//! A checkpoint starts at the sources: each records its position and emits barrier `n` after
//! the records that precede it. A subtask with several input channels **aligns**: a channel
//! that delivered barrier `n` is held (exactly-once mode) until every other open channel has
//! delivered it too; then the subtask snapshots its operators, forwards barrier `n`, and
//! releases the channels. In at-least-once mode nothing is held: the snapshot is taken when the
//! last barrier arrives, so records after a barrier may already be in it (and will be replayed
//! on recovery: duplicates, never losses).

use serde::{Deserialize, Serialize};

use crate::operator::OperatorSnapshot;

/// Identifies a checkpoint; ids grow with every checkpoint of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckpointId(pub u64);

impl CheckpointId {
    /// The end of input of a job without checkpoints: the one point where its two-phase-commit
    /// sinks pre-commit and commit.
    pub const END_OF_INPUT: CheckpointId = CheckpointId(u64::MAX);
}

impl std::fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "checkpoint {}", self.0)
    }
}

/// Whether subtasks hold channels while aligning barriers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointMode {
    /// Align barriers: every record counts exactly once in a restored state.
    #[default]
    ExactlyOnce,
    /// Do not hold channels: lower latency while checkpointing, duplicates after recovery.
    AtLeastOnce,
}

/// Why a subtask declines a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclineReason {
    /// The subtask has finished: it has nothing left to checkpoint. Not a failure.
    Finished,
    /// A newer checkpoint's barrier overtook this one's alignment.
    Overtaken,
    /// The subtask's state could not be read into its snapshot.
    SnapshotFailed,
}

impl std::fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeclineReason::Finished => "a subtask had finished",
            DeclineReason::Overtaken => "a newer checkpoint overtook it",
            DeclineReason::SnapshotFailed => "a subtask's state could not be snapshotted",
        })
    }
}

/// What one subtask contributes to a checkpoint, and what it is given back to restore.
///
/// Taken, it holds the subtask's own source position (if any) and each operator's state. To
/// restore, the job's layout assigns state to subtasks (see [`crate::layout`]): the same when
/// the parallelism is unchanged; after a rescale each subtask gets its key groups' keyed state
/// and the positions and operator states of *every* old subtask, to take what is theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskSnapshot {
    /// Source positions: taken, at most the subtask's own; restored, those it may resume from.
    pub source_positions: Vec<Vec<u8>>,
    /// Each chained operator's state, in chain order.
    pub operators: Vec<OperatorSnapshot>,
}

impl SubtaskSnapshot {
    /// Whether some operator's keyed state is frozen and not yet read
    /// ([`SubtaskSnapshot::complete`]).
    pub fn is_deferred(&self) -> bool {
        self.operators
            .iter()
            .any(|operator| operator.deferred.is_some())
    }

    /// Reads every operator's frozen keyed state into the snapshot: what a driver does, off
    /// the data path, before acknowledging it. Does nothing when nothing is frozen.
    pub fn complete(&mut self) -> Result<(), crate::state::StateError> {
        self.operators
            .iter_mut()
            .try_for_each(OperatorSnapshot::complete)
    }

    /// The size of its source positions.
    pub fn position_bytes(&self) -> u64 {
        self.source_positions.iter().map(Vec::len).sum::<usize>() as u64
    }

    /// The size of everything it holds.
    pub fn state_bytes(&self) -> u64 {
        self.position_bytes()
            + self
                .operators
                .iter()
                .map(OperatorSnapshot::state_bytes)
                .sum::<u64>()
    }
}

/// What the aligner says about a barrier or an ended channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alignment {
    /// Nothing to do yet.
    Waiting,
    /// Every open channel has delivered the barrier: snapshot and forward it.
    Complete(CheckpointId),
    /// A newer barrier overtook an unfinished alignment: that checkpoint cannot complete here.
    Abandoned(CheckpointId),
}

/// Tracks which input channels delivered the barrier of the checkpoint being aligned.
#[derive(Debug)]
pub(crate) struct BarrierAligner {
    mode: CheckpointMode,
    current: Option<(CheckpointId, Vec<bool>)>,
    /// The newest checkpoint this subtask has completed or abandoned: older barriers are stale.
    last_seen: Option<CheckpointId>,
}

impl BarrierAligner {
    pub(crate) fn new(mode: CheckpointMode) -> Self {
        BarrierAligner {
            mode,
            current: None,
            last_seen: None,
        }
    }

    /// Whether batches from `channel` must wait (it delivered the barrier being aligned).
    pub(crate) fn holds(&self, channel: usize) -> bool {
        self.mode == CheckpointMode::ExactlyOnce
            && self
                .current
                .as_ref()
                .is_some_and(|(_, arrived)| arrived[channel])
    }

    /// Whether a checkpoint's barriers are being aligned.
    pub(crate) fn is_aligning(&self) -> bool {
        self.current.is_some()
    }

    /// Channel `channel` delivered barrier `id`; `ended` says which channels have ended.
    pub(crate) fn on_barrier(
        &mut self,
        channel: usize,
        id: CheckpointId,
        ended: &[bool],
    ) -> Alignment {
        if self.last_seen.is_some_and(|last| id <= last) {
            return Alignment::Waiting;
        }
        let mut outcome = Alignment::Waiting;
        match &mut self.current {
            Some((current, _)) if id < *current => return Alignment::Waiting,
            Some((current, _)) if id > *current => {
                outcome = Alignment::Abandoned(*current);
                self.current = Some((id, vec![false; ended.len()]));
            }
            Some(_) => {}
            None => self.current = Some((id, vec![false; ended.len()])),
        }
        if let Some((_, arrived)) = &mut self.current {
            arrived[channel] = true;
        }
        match self.check_complete(ended) {
            Alignment::Waiting => outcome,
            complete => complete,
        }
    }

    /// A channel ended: it no longer holds an alignment back.
    pub(crate) fn on_channel_ended(&mut self, ended: &[bool]) -> Alignment {
        self.check_complete(ended)
    }

    fn check_complete(&mut self, ended: &[bool]) -> Alignment {
        let Some((id, arrived)) = &self.current else {
            return Alignment::Waiting;
        };
        if arrived
            .iter()
            .zip(ended)
            .all(|(&arrived, &ended)| arrived || ended)
        {
            let id = *id;
            self.current = None;
            self.last_seen = Some(id);
            Alignment::Complete(id)
        } else {
            Alignment::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: [bool; 3] = [false; 3];

    #[test]
    fn exactly_once_holds_channels_until_all_barriers_arrive() {
        let mut aligner = BarrierAligner::new(CheckpointMode::ExactlyOnce);
        let one = CheckpointId(1);
        assert_eq!(aligner.on_barrier(1, one, &OPEN), Alignment::Waiting);
        assert!(aligner.holds(1) && !aligner.holds(0));
        assert_eq!(aligner.on_barrier(0, one, &OPEN), Alignment::Waiting);
        assert_eq!(aligner.on_barrier(2, one, &OPEN), Alignment::Complete(one));
        assert!(
            !aligner.holds(0) && !aligner.holds(1),
            "completion releases every channel"
        );
        assert_eq!(
            aligner.on_barrier(2, one, &OPEN),
            Alignment::Waiting,
            "a repeated barrier is stale"
        );
    }

    #[test]
    fn at_least_once_holds_nothing() {
        let mut aligner = BarrierAligner::new(CheckpointMode::AtLeastOnce);
        assert_eq!(
            aligner.on_barrier(0, CheckpointId(4), &[false, false]),
            Alignment::Waiting
        );
        assert!(!aligner.holds(0));
        assert_eq!(
            aligner.on_barrier(1, CheckpointId(4), &[false, false]),
            Alignment::Complete(CheckpointId(4))
        );
    }

    #[test]
    fn ended_channels_do_not_hold_an_alignment_back() {
        let mut aligner = BarrierAligner::new(CheckpointMode::ExactlyOnce);
        assert_eq!(
            aligner.on_barrier(0, CheckpointId(2), &[false, false]),
            Alignment::Waiting
        );
        assert_eq!(
            aligner.on_channel_ended(&[false, true]),
            Alignment::Complete(CheckpointId(2))
        );
        assert_eq!(
            aligner.on_barrier(0, CheckpointId(3), &[false, true]),
            Alignment::Complete(CheckpointId(3))
        );
    }

    #[test]
    fn a_newer_barrier_abandons_the_older_alignment() {
        let mut aligner = BarrierAligner::new(CheckpointMode::ExactlyOnce);
        aligner.on_barrier(0, CheckpointId(5), &[false, false]);
        assert_eq!(
            aligner.on_barrier(1, CheckpointId(6), &[false, false]),
            Alignment::Abandoned(CheckpointId(5))
        );
        assert!(aligner.holds(1) && !aligner.holds(0));
        assert_eq!(
            aligner.on_barrier(0, CheckpointId(5), &[false, false]),
            Alignment::Waiting,
            "stale"
        );
        assert_eq!(
            aligner.on_barrier(0, CheckpointId(6), &[false, false]),
            Alignment::Complete(CheckpointId(6))
        );
    }
}

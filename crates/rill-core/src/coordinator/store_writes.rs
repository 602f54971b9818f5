//! The coordinator's writes to the checkpoint store, and the order they go out in.
//!
//! The store's contract needs its writes in the order the coordinator decided them: every
//! snapshot of a checkpoint before its metadata, a discard after every write of its checkpoint.
//! A driver that writes off the thread that drives the core would have to queue them and run
//! one at a time to keep that order; so the core does it for every driver. [`StoreWrites`]
//! queues what the coordinator decides and hands out the head only when no write is running:
//! [`CoordinatorAction::Write`](super::CoordinatorAction::Write) comes out once, and the next
//! only after the driver reported the first with
//! [`CoordinatorCore::handle_written`](super::CoordinatorCore::handle_written).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::checkpoint::{CheckpointId, SubtaskSnapshot};

use super::CheckpointMetadata;

/// A write the coordinator asks of the checkpoint store.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreWrite {
    /// Write a subtask's snapshot, buffered; report the bytes written.
    Snapshot {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// The subtask's index.
        subtask: usize,
        /// The snapshot, shared with the core: let go of it once written, so that completing
        /// the checkpoint need not copy it.
        snapshot: Arc<SubtaskSnapshot>,
    },
    /// Every snapshot of the checkpoint is written: write this **durably**, last.
    Metadata(CheckpointMetadata),
    /// Delete the checkpoint's data: it was aborted, or is older than the retained ones.
    Discard(CheckpointId),
}

impl StoreWrite {
    /// Which write it is, without what it writes: what the driver reports back.
    pub fn target(&self) -> WriteTarget {
        match self {
            StoreWrite::Snapshot {
                checkpoint,
                subtask,
                ..
            } => WriteTarget::Snapshot {
                checkpoint: *checkpoint,
                subtask: *subtask,
            },
            StoreWrite::Metadata(metadata) => WriteTarget::Metadata(metadata.checkpoint),
            StoreWrite::Discard(checkpoint) => WriteTarget::Discard(*checkpoint),
        }
    }

    /// What a driver without a checkpoint store reports as written, keeping checkpoints in
    /// memory only: the snapshot's state size, and nothing for the rest.
    pub fn bytes_in_memory(&self) -> u64 {
        match self {
            StoreWrite::Snapshot { snapshot, .. } => snapshot.state_bytes(),
            StoreWrite::Metadata(_) | StoreWrite::Discard(_) => 0,
        }
    }
}

/// Which write of the checkpoint store returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteTarget {
    /// A subtask's snapshot.
    Snapshot {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// The subtask's index.
        subtask: usize,
    },
    /// A checkpoint's metadata.
    Metadata(CheckpointId),
    /// A checkpoint's discard.
    Discard(CheckpointId),
}

impl fmt::Display for WriteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteTarget::Snapshot {
                checkpoint,
                subtask,
            } => write!(f, "the snapshot of {checkpoint} by subtask {subtask}"),
            WriteTarget::Metadata(checkpoint) => write!(f, "the metadata of {checkpoint}"),
            WriteTarget::Discard(checkpoint) => write!(f, "the discard of {checkpoint}"),
        }
    }
}

/// A write decided but not started. A snapshot is looked up when it starts, so that one of a
/// checkpoint aborted meanwhile is never written.
#[derive(Debug)]
pub(super) enum Queued {
    Snapshot {
        checkpoint: CheckpointId,
        subtask: usize,
    },
    Metadata(CheckpointMetadata),
    Discard(CheckpointId),
}

/// The writes decided and not yet reported, in the order they were decided; one runs at a
/// time.
#[derive(Debug, Default)]
pub(super) struct StoreWrites {
    queued: VecDeque<Queued>,
    running: Option<WriteTarget>,
}

impl StoreWrites {
    pub(super) fn push(&mut self, write: Queued) {
        self.queued.push_back(write);
    }

    /// Starts the next write that `start` turns into one (it drops those no longer needed),
    /// unless one runs.
    pub(super) fn start_next(
        &mut self,
        mut start: impl FnMut(Queued) -> Option<StoreWrite>,
    ) -> Option<StoreWrite> {
        if self.running.is_some() {
            return None;
        }
        while let Some(queued) = self.queued.pop_front() {
            if let Some(write) = start(queued) {
                self.running = Some(write.target());
                return Some(write);
            }
        }
        None
    }

    /// The running write returned; false if `target` is not the one running (a report that
    /// does not belong to this coordinator, ignored).
    pub(super) fn finish(&mut self, target: WriteTarget) -> bool {
        if self.running != Some(target) {
            return false;
        }
        self.running = None;
        true
    }

    /// Writes are waiting behind the running one (or behind none): the store is behind.
    pub(super) fn backlogged(&self) -> bool {
        !self.queued.is_empty()
    }

    /// No write runs or waits.
    pub(super) fn is_idle(&self) -> bool {
        self.running.is_none() && self.queued.is_empty()
    }
}

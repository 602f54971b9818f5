//! The errors of the checkpoint store; each names the job, checkpoint or path at fault.

use std::path::PathBuf;

/// Why an operation on the checkpoint store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed.
    #[error("checkpoint store at {path}: {source}")]
    Storage {
        /// The store's directory.
        path: PathBuf,
        /// The engine's error.
        source: fjall::Error,
    },
    /// Another handle (likely another process) has the store open.
    #[error("the checkpoint store at {0} is in use by another process")]
    Locked(PathBuf),
    /// A stored snapshot or metadata does not decode.
    #[error("corrupt checkpoint data of job '{job}': {reason}")]
    Corrupt {
        /// The job.
        job: String,
        /// What could not be decoded.
        reason: String,
    },
    /// A completed checkpoint misses a subtask's snapshot.
    #[error(
        "checkpoint {checkpoint} of job '{job}' has {found} of its {expected} subtask snapshots"
    )]
    Incomplete {
        /// The job.
        job: String,
        /// The checkpoint.
        checkpoint: u64,
        /// The snapshots found.
        found: usize,
        /// The snapshots its metadata counts.
        expected: usize,
    },
}

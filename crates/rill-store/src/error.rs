//! The errors of the checkpoint store and the state backend; each names the job, checkpoint or
//! path at fault.

use std::path::PathBuf;

/// Why an operation on the checkpoint store or the state backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed.
    #[error("storage at {path}: {source}")]
    Storage {
        /// The directory.
        path: PathBuf,
        /// The engine's error.
        source: fjall::Error,
    },
    /// Another handle (likely another process) has the directory open.
    #[error("{0} is already open, likely by another process")]
    Locked(PathBuf),
    /// A directory given to the fjall state backend holds something else: it is not wiped.
    #[error(
        "{0} is not empty and not a state working copy: give the fjall state backend a directory of its own"
    )]
    NotAWorkingCopy(PathBuf),
    /// A snapshot still holds frozen state that was never encoded: storing it would lose it.
    #[error(
        "the snapshot of subtask {subtask} for checkpoint {checkpoint} of job '{job}' holds state not yet encoded"
    )]
    Unencoded {
        /// The job.
        job: String,
        /// The checkpoint.
        checkpoint: u64,
        /// The subtask's index.
        subtask: usize,
    },
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

impl StoreError {
    /// The error of an engine failure on the store in `path`: [`StoreError::Locked`] when
    /// another handle holds the directory.
    pub(crate) fn of_engine(path: &std::path::Path, source: fjall::Error) -> Self {
        match source {
            fjall::Error::Locked => StoreError::Locked(path.to_path_buf()),
            source => StoreError::Storage {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

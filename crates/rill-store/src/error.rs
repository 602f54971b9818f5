//! The errors of the checkpoint store and the state backend; each names the job, checkpoint or
//! path at fault.

use std::path::PathBuf;

use rill_core::checkpoint::CheckpointId;
use rill_core::codec::CodecError;
use rill_core::storage::StorageError;

use crate::checkpoints::Damage;

/// Why an operation on the checkpoint store or the state backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed.
    #[error("storage at {location}: {source}")]
    Storage {
        /// Where the store is (its directory).
        location: String,
        /// The engine's error.
        source: StorageError,
    },
    /// fjall failed opening a directory.
    #[error("storage at {path}: {source}")]
    Engine {
        /// The directory.
        path: PathBuf,
        /// fjall's error.
        source: fjall::Error,
    },
    /// fjall refuses to open the database: a journal holds a complete batch that is damaged.
    #[error(
        "storage at {path} cannot be opened: fjall's journal replay fails ({recovery}){}; a \
         read-only open reads around the damage",
        batches.iter().map(|batch| format!("; {batch}")).collect::<String>()
    )]
    DamagedJournal {
        /// The directory.
        path: PathBuf,
        /// The damaged batches found (empty if fjall's complaint was about something else).
        batches: Vec<crate::journal::SkippedBatch>,
        /// fjall's complaint.
        recovery: String,
    },
    /// Another handle (likely another process) has the directory open.
    #[error("{0} is already open, likely by another process")]
    Locked(PathBuf),
    /// A directory given to the fjall state backend holds something else: it is not wiped.
    #[error(
        "{0} is not empty and not a state working copy: give the fjall state backend a directory of its own"
    )]
    NotAWorkingCopy(PathBuf),
    /// A directory given as a checkpoint store holds something else: nothing is written there.
    #[error(
        "{0} is not a Rill checkpoint store (it has no RILL_CHECKPOINTS marker); refusing to touch it"
    )]
    NotACheckpointStore(PathBuf),
    /// A checkpoint store to read does not exist.
    #[error("there is no checkpoint store at {0}")]
    NoCheckpointStore(PathBuf),
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
    /// A value could not be encoded (a bug in a type's serialization).
    #[error("cannot encode {checkpoint} of job '{job}': {error}")]
    Encode {
        /// The job.
        job: String,
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// Why.
        error: CodecError,
    },
    /// A key in the store is not of the store's shape.
    #[error("a key of job '{job}' in the checkpoint store has {len} bytes, not a checkpoint's")]
    MalformedKey {
        /// The job.
        job: String,
        /// The key's length.
        len: usize,
    },
    /// A stored value is damaged.
    #[error("{0}")]
    Damaged(Damage),
    /// A job has checkpoints, but every one is damaged.
    #[error("job '{job}' has no intact checkpoint to restore: {}", damaged.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    NoIntactCheckpoint {
        /// The job.
        job: String,
        /// What is damaged, newest first.
        damaged: Vec<Damage>,
    },
    /// Metadata was about to be written before a snapshot it counts: the writer broke the
    /// store's order.
    #[error(
        "the metadata of {checkpoint} of job '{job}' was written before the snapshot of subtask {subtask}"
    )]
    MetadataBeforeSnapshots {
        /// The job.
        job: String,
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// The subtask whose snapshot is missing.
        subtask: usize,
    },
}

impl StoreError {
    /// The error of an engine failure on the store in `path`: [`StoreError::Locked`] when
    /// another handle holds the directory.
    pub(crate) fn of_engine(path: &std::path::Path, source: fjall::Error) -> Self {
        match source {
            fjall::Error::Locked => StoreError::Locked(path.to_path_buf()),
            source => StoreError::Engine {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

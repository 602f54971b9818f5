//! The file connectors' errors: each names the directory or file at fault — for a file that
//! no longer matches a checkpoint, both what the checkpoint had read and what the file holds;
//! for the sink, what it was doing with the file.

use std::io;
use std::path::PathBuf;

/// Why a file source cannot read on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileSourceError {
    /// The directory is missing, or not a directory, or cannot be listed.
    #[error("the file source's directory '{}' cannot be read: {source}", dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file cannot be opened or read.
    #[error("the file source cannot read file '{}': {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file the source had not read to its end is gone.
    #[error(
        "file '{}' is gone (0 bytes now), but the source had read {checkpointed} bytes of it \
         and not to its end: its remaining lines would be lost. Put the file back, or start \
         the job without this checkpoint",
        file.display()
    )]
    Vanished {
        /// The file.
        file: PathBuf,
        /// The bytes the checkpoint had read of it.
        checkpointed: u64,
    },
    /// A file is shorter than what a checkpoint had read of it.
    #[error(
        "file '{}' is {size} bytes now, shorter than the {checkpointed} bytes the checkpoint had \
         read of it: it was truncated or replaced, and reading on would skip or repeat lines. \
         Restore the file, or start the job without this checkpoint",
        file.display()
    )]
    Shrunk {
        /// The file.
        file: PathBuf,
        /// The bytes the checkpoint had read of it.
        checkpointed: u64,
        /// Its size now.
        size: u64,
    },
}

/// Why the file sink cannot write on. Each names the file or directory at fault and what the
/// sink was doing with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileSinkError {
    /// A file or directory operation failed.
    #[error("the file sink cannot {doing} '{}': {source}", path.display())]
    Io {
        /// What the sink was doing: "create the in-progress part file", "sync the directory".
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A value cannot be written in the sink's format.
    #[error("the file sink of '{}' cannot write a value: {source}", dir.display())]
    Encode {
        /// The sink's directory.
        dir: PathBuf,
        /// Why.
        source: rill_formats::EncodeError,
    },
    /// A commit mark file does not hold what the sink writes there.
    #[error(
        "the file sink's commit mark '{}' is damaged ({reason}): it records which checkpoint's \
         output the sink committed. Restore it from a backup, or delete it and start the job \
         without checkpoints (its output will then be written again)",
        path.display()
    )]
    Mark {
        /// The mark file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The two-phase-commit protocol was not followed (a bug in the caller).
    #[error("the file sink of '{}': {reason}", dir.display())]
    Protocol {
        /// The sink's directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl FileSinkError {
    /// An I/O error of `doing` something with `path`, as a closure for `map_err`.
    pub(crate) fn io(
        doing: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_owned();
        move |source| FileSinkError::Io {
            doing,
            path,
            source,
        }
    }
}

//! The file source's errors: each names the directory or file at fault, and for a file that
//! no longer matches a checkpoint, both what the checkpoint had read and what the file holds.

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

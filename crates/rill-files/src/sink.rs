//! Files as the sink of a Rill job: [`FileSink`] writes a stream into a directory of part
//! files, exactly-once, and [`FilesSinkExt`] adds `sink_to_files` to `rill-api`'s streams.
//!
//! The protocol is `rill-core`'s two-phase-commit writer
//! ([`TransactionalWriter`](rill_core::transactional::TransactionalWriter)), the one the event
//! log's and PostgreSQL's sinks use and the simulator checks under crashes (against its model
//! of a directory with atomic renames); [`target`] adds only the files: each checkpoint's
//! records go to hidden in-progress part files, are synced and renamed to pending ones at the
//! checkpoint's barrier, and renamed into view when the checkpoint completes. A restored job
//! commits what its checkpoint had prepared and deletes every other part its subtasks left.
//! Readers that skip hidden names (starting with `.`) see every record exactly once.

mod marks;
mod names;
pub mod target;

use std::path::Path;
use std::sync::Arc;

use rill_api::{DataStream, SinkHandle};
use rill_core::Data;
use rill_core::operator::OperatorInfo;
use rill_core::transactional::{Encode, TransactionalWriter};
use rill_formats::{EncodeError, Format};
use serde::Serialize;

use crate::error::FileSinkError;
use target::{Encoded, FileTarget, Settings};

/// A part file's size at which the sink rolls to the next by default: 128 MiB.
pub const DEFAULT_ROLL_AT_BYTES: u64 = 128 << 20;

/// A directory written by a stream, one record a line: built with [`FileSink::lines`],
/// [`FileSink::json_lines`] or [`FileSink::csv`], and written with
/// [`FilesSinkExt::sink_to_files`]. See [`target`] for the part files and their names.
pub struct FileSink<T> {
    settings: Settings,
    encode: Encode<FileTarget, T>,
    exactly_once: bool,
}

/// A value of a text sink as a line: refused if it holds a line break, which would make it
/// two lines for any reader.
fn line(value: &String) -> Encoded {
    if value.contains(['\n', '\r']) {
        return Err(EncodeError {
            format: "text",
            reason: format!("{value:?} holds a line break"),
        });
    }
    Ok(value.as_bytes().to_vec())
}

impl FileSink<String> {
    /// Each value as a line of text, in files ending `.txt`. A value holding a line break
    /// fails the job.
    pub fn lines(dir: impl AsRef<Path>) -> Result<Self, FileSinkError> {
        Self::new(dir.as_ref(), "txt", Arc::new(line))
    }
}

impl<T: Data + Serialize> FileSink<T> {
    /// Each value as a line of JSON (JSON lines), in files ending `.jsonl`.
    pub fn json_lines(dir: impl AsRef<Path>) -> Result<Self, FileSinkError> {
        Self::formatted(dir.as_ref(), "jsonl", Format::json())
    }

    /// Each value as a CSV record, without a header (its fields in declaration order, as
    /// [`FileSource::csv`](crate::FileSource::csv) reads them back), in files ending `.csv`.
    pub fn csv(dir: impl AsRef<Path>) -> Result<Self, FileSinkError> {
        Self::formatted(dir.as_ref(), "csv", Format::csv())
    }

    fn formatted(dir: &Path, extension: &str, format: Format<T>) -> Result<Self, FileSinkError> {
        Self::new(
            dir,
            extension,
            Arc::new(move |value: &T| format.encode(value)),
        )
    }
}

impl<T: Data> FileSink<T> {
    /// Creates `dir` if it does not exist (with its parents, as Flink's file sink does).
    fn new(
        dir: &Path,
        extension: &str,
        encode: Encode<FileTarget, T>,
    ) -> Result<Self, FileSinkError> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .map_err(FileSinkError::io("create the output directory", dir))?;
            // The new directory's name is durable only once its parent is synced.
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                target::sync_dir(parent)?;
            }
        }
        Ok(FileSink {
            settings: Settings {
                dir: dir.to_owned(),
                extension: extension.to_owned(),
                roll_at_bytes: DEFAULT_ROLL_AT_BYTES,
            },
            encode,
            exactly_once: true,
        })
    }

    /// Rolls a transaction to a new part file before one grows past `bytes` (by default
    /// [`DEFAULT_ROLL_AT_BYTES`]; a single larger record gets a file of its own). All parts of
    /// a checkpoint's transaction are prepared and committed together. There is no rolling
    /// by time: every checkpoint starts new files already, so the checkpoint interval is the
    /// rolling interval.
    pub fn roll_at_bytes(mut self, bytes: u64) -> Self {
        self.settings.roll_at_bytes = bytes.max(1);
        self
    }

    /// Writes visible files directly instead of committing per checkpoint: lower latency, but
    /// a job that fails and restarts writes again what it wrote since its last checkpoint, and
    /// readers may see the newest file grow. Each subtask starts a new file at every
    /// checkpoint (and rolls by size), named `part-<job>-<uid>-<subtask>-a<k>.<ext>`.
    pub fn at_least_once(mut self) -> Self {
        self.exactly_once = false;
        self
    }

    /// The directory written.
    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }

    /// The writer of the sink subtask `info` describes: what [`FilesSinkExt::sink_to_files`]
    /// runs, for a driver or test of one's own.
    pub fn writer(&self, info: &OperatorInfo) -> TransactionalWriter<FileTarget, T> {
        let target = FileTarget::new(
            Arc::new(self.settings.clone()),
            format!("{}/{}/", info.job, info.uid),
            info.subtask,
        );
        TransactionalWriter::new(target, info, self.encode.clone(), self.exactly_once)
    }
}

/// Writes a stream to files.
pub trait FilesSinkExt<T> {
    /// Writes the stream into a directory: exactly-once by default (a checkpoint's records
    /// become visible when it completes, or at the end of a job without checkpoints), or
    /// at-least-once (see [`FileSink::at_least_once`]).
    fn sink_to_files(self, sink: FileSink<T>) -> SinkHandle;
}

impl<T: Data> FilesSinkExt<T> for DataStream<T> {
    fn sink_to_files(self, sink: FileSink<T>) -> SinkHandle {
        let name = format!("file sink '{}'", sink.settings.dir.display());
        self.sink_with(&name, move |info| sink.writer(info))
    }
}

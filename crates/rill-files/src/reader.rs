//! [`FileReader`]: one source subtask's reading of a directory, the [`Source`] that
//! [`crate::FilesExt::from_files`] builds for each subtask.
//!
//! **Splits.** Each file is a split, owned by the subtask its name hashes to (a stable hash,
//! `rill_core::key::stable_hash`, modulo the parallelism): every subtask lists the directory
//! itself — there is no coordinator handing out splits — so the owner must follow from the name
//! alone, whatever other files exist and whenever each subtask lists them. Numbering files in
//! name order, as log partitions are numbered, would move a file to another subtask each time
//! a file sorting before it appears. A subtask reads its files one at a time, in name order,
//! each to its end, with one file open at a time.
//!
//! **Position.** A checkpoint holds, for every file the subtask knows, its name, the byte
//! offset of the next record and whether it was read to its end (`FilesPosition`, a
//! versioned enum in the snapshot encoding). A poll emits whole records, so the offset is
//! always at a record's start: a restored subtask opens each file at its offset and reads on,
//! no line twice and none skipped. Before it does, it checks every file it had not read to its
//! end: a file gone, or shorter than its offset, is an error naming it and both sizes. A file
//! read to its end is not opened again, and may be moved away.
//!
//! **Bounded** (the default), the files are those present when the job first starts: a
//! restored subtask reads the files of its checkpoint, and none that appeared since. **Watching**,
//! it lists the directory again every interval of processing time and reads the files it has
//! not seen, as Flink's `FileSource` does in continuous mode: new files only, not lines
//! appended to files already read (a file must be put in place whole — written under a hidden
//! name and renamed). Names starting with `.` or `_` are not read (Flink's default filter, for
//! files being written), nor are subdirectories; a name that is not UTF-8 is skipped with a
//! warning. A watching source remembers the name of every file it read, in memory and in its
//! checkpoints, so that it never reads a file twice.
//!
//! **Memory.** A file is read through a buffer of [`BUFFER_BYTES`]; a record is read into
//! memory once and at most [`crate::FileSource::max_record_bytes`] of it (a longer one is read
//! past and handled as a record that does not decode); a poll stops after
//! [`READ_BYTES_PER_POLL`] bytes of records (at least one record).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use rill_core::Data;
use rill_core::element::Timestamp;
use rill_core::error::BoxError;
use rill_core::key::stable_hash;
use rill_core::source::{Source, SourceOutput, SourcePoll, decode_position, encode_position};
use rill_formats::{DecodeError, DecodeErrors, Format, FormatKind};
use serde::{Deserialize, Serialize};

use crate::error::FileSourceError;
use crate::framing::{Framed, Framing, read_record};
use crate::{Records, Settings};

/// The bytes of records a poll reads at most (the record that reaches it included).
pub const READ_BYTES_PER_POLL: usize = 1 << 20;

/// The capacity of the buffer a file is read through.
pub const BUFFER_BYTES: usize = 64 << 10;

/// A file source subtask's checkpointed position, versioned: a newer version adds a variant
/// and keeps reading the old ones.
#[derive(Debug, Serialize, Deserialize)]
enum FilesPosition {
    V1(Vec<FilePosition>),
}

/// Where a subtask stands in one file.
#[derive(Debug, Serialize, Deserialize)]
struct FilePosition {
    /// The file's name in the directory.
    name: String,
    /// The byte offset of the next record.
    offset: u64,
    /// Read to its end.
    finished: bool,
}

/// Where the subtask stands in a file it owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    offset: u64,
    finished: bool,
}

/// The file being read.
struct OpenFile<T> {
    name: String,
    reader: BufReader<File>,
    /// The format of its records, once its CSV header, if any, was read.
    format: Option<Format<T>>,
}

/// One source subtask's reader of a directory (see the module docs).
pub struct FileReader<T> {
    settings: Arc<Settings<T>>,
    subtask: u32,
    parallelism: u32,
    /// The files this subtask owns, by name: the order it reads them in.
    files: BTreeMap<String, Progress>,
    open: Option<OpenFile<T>>,
    errors: DecodeErrors,
    /// Watching: the processing time of the next listing; `None` before the first poll.
    next_listing: Option<Timestamp>,
    /// Whether a checkpoint's position replaced the first listing.
    restored: bool,
    /// Why the reader could not start, reported at its first poll.
    start_error: Option<FileSourceError>,
    /// The record being read, reused.
    record: Vec<u8>,
}

impl<T: Data> FileReader<T> {
    /// The reader of subtask `subtask` of `parallelism`: it lists the directory now.
    pub(crate) fn new(settings: Arc<Settings<T>>, subtask: u32, parallelism: u32) -> Self {
        let errors = DecodeErrors::new(settings.on_decode_error);
        let mut reader = FileReader {
            settings,
            subtask,
            parallelism: parallelism.max(1),
            files: BTreeMap::new(),
            open: None,
            errors,
            next_listing: None,
            restored: false,
            start_error: None,
            record: Vec::new(),
        };
        if let Err(error) = reader.list() {
            reader.start_error = Some(error);
        }
        reader
    }

    /// How many records that did not decode were skipped.
    #[cfg(test)]
    fn skipped(&self) -> u64 {
        self.errors.skipped()
    }

    fn owns(&self, name: &str) -> bool {
        stable_hash(name) % u64::from(self.parallelism) == u64::from(self.subtask)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.settings.dir.join(name)
    }

    /// Adds the files of the directory this subtask owns and does not know yet.
    fn list(&mut self) -> Result<(), FileSourceError> {
        let dir = &self.settings.dir;
        let directory = |source| FileSourceError::Directory {
            dir: dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(directory)? {
            let entry = entry.map_err(directory)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(
                    file = %entry.path().display(),
                    "the file source skips a file whose name is not UTF-8"
                );
                continue;
            };
            if name.starts_with('.') || name.starts_with('_') || self.files.contains_key(&name) {
                continue;
            }
            if !self.owns(&name) {
                continue;
            }
            // Following links: a link to a file is read, a directory is not.
            let metadata =
                std::fs::metadata(entry.path()).map_err(|source| FileSourceError::Read {
                    file: entry.path(),
                    source,
                })?;
            if metadata.is_file() {
                self.files.insert(
                    name,
                    Progress {
                        offset: 0,
                        finished: false,
                    },
                );
            }
        }
        Ok(())
    }

    /// Opens the first file not read to its end, at its offset; `None` if there is none.
    fn open_next(&mut self) -> Result<Option<OpenFile<T>>, BoxError> {
        let Some((name, progress)) = self.files.iter().find(|(_, p)| !p.finished) else {
            return Ok(None);
        };
        let path = self.path(name);
        let read_error = |source| FileSourceError::Read {
            file: path.clone(),
            source,
        };
        let mut reader =
            BufReader::with_capacity(BUFFER_BYTES, File::open(&path).map_err(read_error)?);
        let mut format = match &self.settings.records {
            Records::Lines(_) => None,
            Records::Formatted(format, _) => Some(format.clone()),
        };
        if progress.offset > 0 {
            // The header, read again: the records after it are decoded by its names.
            if let Some(awaiting) = format.as_ref().filter(|f| f.awaits_header()) {
                let header_reader =
                    BufReader::with_capacity(BUFFER_BYTES, File::open(&path).map_err(read_error)?);
                format = Some(self.read_header(awaiting, name, header_reader)?);
            }
            reader
                .seek(SeekFrom::Start(progress.offset))
                .map_err(read_error)?;
        }
        Ok(Some(OpenFile {
            name: name.clone(),
            reader,
            format,
        }))
    }

    /// Reads the first record of a file that is not blank as a CSV header.
    fn read_header(
        &self,
        format: &Format<T>,
        name: &str,
        mut reader: BufReader<File>,
    ) -> Result<Format<T>, BoxError> {
        let mut record = Vec::new();
        let mut at = 0;
        loop {
            let framed =
                read_record(&mut reader, self.framing(), &mut record).map_err(|source| {
                    FileSourceError::Read {
                        file: self.path(name),
                        source,
                    }
                })?;
            match framed {
                Framed::Record { consumed } if record.trim_ascii().is_empty() => at += consumed,
                Framed::Record { .. } => {
                    return Ok(format
                        .read_header(&record)
                        .map_err(|error| self.locate(error, name, at))?);
                }
                Framed::TooLong { .. } | Framed::End => {
                    let error = DecodeError::new(FormatKind::Csv.name(), &record, "no CSV header");
                    return Err(self.locate(error, name, at).into());
                }
            }
        }
    }

    fn framing(&self) -> Framing {
        Framing {
            quoted: matches!(&self.settings.records, Records::Formatted(f, _) if f.kind() == FormatKind::Csv),
            max_record_bytes: self.settings.max_record_bytes,
        }
    }

    fn locate(&self, error: DecodeError, name: &str, offset: u64) -> DecodeError {
        error.at_byte(format!("file '{}'", self.path(name).display()), offset)
    }

    /// Reads the next record of the open file into the output (or skips it by the policy);
    /// returns the bytes it consumed, 0 at the file's end (which closes it).
    fn read_next(&mut self, out: &mut SourceOutput<T>) -> Result<u64, BoxError> {
        let framing = self.framing();
        let Some(open) = &mut self.open else {
            return Ok(0);
        };
        let name = open.name.clone();
        let framed =
            read_record(&mut open.reader, framing, &mut self.record).map_err(|source| {
                FileSourceError::Read {
                    file: self.settings.dir.join(&name),
                    source,
                }
            })?;
        let Some(progress) = self.files.get_mut(&name) else {
            return Err(format!("the file source lost track of file '{name}'").into());
        };
        let at = progress.offset;
        let consumed = match framed {
            Framed::End => {
                progress.finished = true;
                self.open = None;
                return Ok(0);
            }
            Framed::Record { consumed } | Framed::TooLong { consumed } => consumed,
        };
        progress.offset += consumed;
        let header = open.format.as_ref().is_some_and(Format::awaits_header);
        let decoded = match (framed, &self.settings.records, &mut open.format) {
            (Framed::TooLong { .. }, records, _) => Err(DecodeError::new(
                records.format_name(),
                &self.record,
                format!(
                    "a record of more than {} bytes (see FileSource::max_record_bytes)",
                    self.settings.max_record_bytes
                ),
            )),
            (_, Records::Lines(decode), _) => decode(&self.record).map(Some),
            // Blank lines carry no JSON value or CSV record.
            (_, Records::Formatted(..), _) if self.record.trim_ascii().is_empty() => Ok(None),
            (_, Records::Formatted(_, decode), Some(format)) => {
                if format.awaits_header() {
                    format
                        .read_header(&self.record)
                        .map(|header| *format = header)
                        .map(|()| None)
                } else {
                    decode(format, &self.record).map(Some)
                }
            }
            (_, Records::Formatted(..), None) => {
                return Err(format!("file '{name}' was opened without its format").into());
            }
        };
        match decoded {
            Ok(Some(value)) => out.collect(value),
            Ok(None) => {}
            // Without its header, no record of the file decodes: never skipped.
            Err(error) if header => return Err(self.locate(error, &name, at).into()),
            Err(error) => {
                let error = self.locate(error, &name, at);
                self.errors.handle(error)?;
            }
        }
        Ok(consumed)
    }
}

impl<T: Data> Source for FileReader<T> {
    type Out = T;

    fn poll_next(&mut self, out: &mut SourceOutput<T>) -> Result<SourcePoll, BoxError> {
        if let Some(error) = self.start_error.take() {
            return Err(error.into());
        }
        if let Some(interval) = self.settings.watch {
            let now = out.processing_time();
            if self.next_listing.is_none_or(|at| now >= at) {
                self.list()?;
                let interval = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
                self.next_listing = Some(Timestamp(now.0.saturating_add(interval.max(1))));
            }
        }
        let mut bytes_left = READ_BYTES_PER_POLL as u64;
        while out.remaining() > 0 && bytes_left > 0 {
            if self.open.is_none() {
                self.open = self.open_next()?;
                if self.open.is_none() {
                    // Every file is read to its end.
                    return Ok(if self.settings.watch.is_none() {
                        SourcePoll::Finished
                    } else if out.is_empty() {
                        SourcePoll::Idle
                    } else {
                        SourcePoll::Ready
                    });
                }
            }
            bytes_left = bytes_left.saturating_sub(self.read_next(out)?);
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        let files = self
            .files
            .iter()
            .map(|(name, progress)| FilePosition {
                name: name.clone(),
                offset: progress.offset,
                finished: progress.finished,
            })
            .collect();
        encode_position(&FilesPosition::V1(files)).map(Some)
    }

    /// Called once per subtask of the job that took the checkpoint when the parallelism
    /// changed, each time with that subtask's files: it keeps those it owns now.
    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        let FilesPosition::V1(files) = decode_position(position)
            .map_err(|error| format!("a file source position that cannot be read: {error}"))?;
        if !self.restored {
            // The checkpoint's files replace the listing at start.
            self.restored = true;
            self.files.clear();
            self.open = None;
        }
        for file in files {
            if !self.owns(&file.name) {
                continue;
            }
            if !file.finished {
                let path = self.path(&file.name);
                match std::fs::metadata(&path) {
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        return Err(FileSourceError::Vanished {
                            file: path,
                            checkpointed: file.offset,
                        }
                        .into());
                    }
                    Err(source) => return Err(FileSourceError::Read { file: path, source }.into()),
                    Ok(metadata) if metadata.len() < file.offset => {
                        return Err(FileSourceError::Shrunk {
                            file: path,
                            checkpointed: file.offset,
                            size: metadata.len(),
                        }
                        .into());
                    }
                    Ok(_) => {}
                }
            }
            self.files.insert(
                file.name,
                Progress {
                    offset: file.offset,
                    finished: file.finished,
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

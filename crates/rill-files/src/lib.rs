//! Files as a source and a sink of a Rill job: [`FileSource`] reads a directory of text lines,
//! JSON lines or CSV, one split per file, with each file's byte offset in checkpoints, either
//! the files present at start (bounded: the job ends) or watching for new files; [`FileSink`]
//! writes a directory of part files exactly-once (see [`sink`]).
//!
//! ```
//! use rill::prelude::*;
//! use rill_files::{FileSource, FilesExt};
//!
//! # let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("a.txt"), "hello\nworld\n")?;
//! let env = StreamEnv::new();
//! let lines = env.from_files(FileSource::lines(dir.path())?).collect();
//! env.execute("lines")?;
//! assert_eq!(lines.take(), ["hello", "world"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Records are decoded by `rill-formats`; a record that does not decode fails the job, naming
//! the file and byte offset, or is skipped, counted and logged
//! ([`FileSource::on_decode_error`]). Event time comes from the records
//! ([`FileSource::with_timestamps`]).
//!
//! The environment is `rill-api`'s, which knows nothing of files: [`FilesExt`] adds
//! `from_files` to it, and [`FilesSinkExt`] adds `sink_to_files` to its streams, so that only
//! applications that use files depend on this crate.
//!
//! ```
//! use rill::prelude::*;
//! use rill_files::{FileSink, FilesSinkExt};
//!
//! # let dir = tempfile::tempdir()?;
//! let env = StreamEnv::new();
//! env.from_iter(vec!["hello".to_owned(), "world".to_owned()])
//!     .sink_to_files(FileSink::lines(dir.path().join("out"))?);
//! env.execute("lines")?;
//! // One committed part file (the job took no checkpoint: it committed at its end).
//! let names: Vec<_> = std::fs::read_dir(dir.path().join("out"))?.collect();
//! assert_eq!(names.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - this file: the source's builder and `from_files`;
//! - [`reader`]: [`FileReader`], one subtask's reading: splits, positions, bounded and watching;
//! - `framing`: where a record ends (a line break; for CSV, one outside quotes), in bounded memory;
//! - [`sink`]: [`FileSink`] and `sink_to_files`; its [`target`](sink::target) ([`FileTarget`]:
//!   part files through the two-phase-commit contract), the part files' names (`names`) and
//!   the commit marks (`marks`);
//! - [`error`]: the source's and the sink's errors, [`FileSourceError`] and [`FileSinkError`].

pub mod error;
mod framing;
pub mod reader;
pub mod sink;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rill_api::{DataStream, StreamEnv};
use rill_core::Data;
use rill_core::element::Timestamp;
use rill_core::source::WithWatermarks;
use rill_core::time::WatermarkStrategy;
use rill_formats::Format;
use serde::de::DeserializeOwned;

pub use error::{FileSinkError, FileSourceError};
pub use reader::FileReader;
/// The decode policy and its error, so that a user of files needs no other crate for them.
pub use rill_formats::{DecodeError, OnDecodeError};
pub use sink::target::FileTarget;
pub use sink::{DEFAULT_ROLL_AT_BYTES, FileSink, FilesSinkExt};

/// The longest record a file source reads by default (its line break not counted).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;

/// How a file's records become values.
pub(crate) enum Records<T> {
    /// Each line, as UTF-8 text.
    Lines(fn(&[u8]) -> Result<T, DecodeError>),
    /// Each line (for CSV, each record) in a format, decoded by the function given.
    Formatted(Format<T>, fn(&Format<T>, &[u8]) -> Result<T, DecodeError>),
}

impl<T> Records<T> {
    fn format_name(&self) -> &'static str {
        match self {
            Records::Lines(_) => "text",
            Records::Formatted(format, _) => format.kind().name(),
        }
    }
}

/// What every subtask's reader shares.
pub(crate) struct Settings<T> {
    pub(crate) dir: PathBuf,
    pub(crate) records: Records<T>,
    /// Watching: the interval between listings; `None`: bounded.
    pub(crate) watch: Option<Duration>,
    pub(crate) on_decode_error: OnDecodeError,
    pub(crate) max_record_bytes: usize,
}

/// A stamp of a record's event time, from its value.
type TimestampOf<T> = Arc<dyn Fn(&T) -> Timestamp + Send + Sync>;

/// A directory of files, read as a stream: built with [`FileSource::lines`],
/// [`FileSource::json_lines`], [`FileSource::csv`] or [`FileSource::csv_with_header`], and
/// read with [`FilesExt::from_files`]. See [`reader`] for how files are split over subtasks,
/// checkpointed, and watched.
pub struct FileSource<T> {
    settings: Settings<T>,
    timestamps: Option<(TimestampOf<T>, WatermarkStrategy)>,
}

/// A line as UTF-8 text.
fn text(bytes: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|error| DecodeError::new("text", bytes, error))
}

impl FileSource<String> {
    /// Each line of each file, as text (without its line break). A line that is not UTF-8 is a
    /// record that does not decode.
    pub fn lines(dir: impl AsRef<Path>) -> Result<Self, FileSourceError> {
        Self::new(dir.as_ref(), Records::Lines(text))
    }
}

impl<T: Data + DeserializeOwned> FileSource<T> {
    /// Each line of each file as a JSON value (JSON lines); blank lines are skipped.
    pub fn json_lines(dir: impl AsRef<Path>) -> Result<Self, FileSourceError> {
        Self::formatted(dir.as_ref(), Format::json())
    }

    /// Each record of each file as CSV, its fields mapped to the value's by position; a line
    /// break inside a quoted field belongs to the record, and blank lines are skipped.
    pub fn csv(dir: impl AsRef<Path>) -> Result<Self, FileSourceError> {
        Self::formatted(dir.as_ref(), Format::csv())
    }

    /// Like [`FileSource::csv`], with a header: the first record of each file names the
    /// fields, which map to a struct's by those names.
    pub fn csv_with_header(dir: impl AsRef<Path>) -> Result<Self, FileSourceError> {
        Self::formatted(dir.as_ref(), Format::csv_with_header())
    }

    fn formatted(dir: &Path, format: Format<T>) -> Result<Self, FileSourceError> {
        Self::new(dir, Records::Formatted(format, Format::decode))
    }
}

impl<T: Data> FileSource<T> {
    /// Fails if `dir` cannot be listed (missing, or not a directory).
    fn new(dir: &Path, records: Records<T>) -> Result<Self, FileSourceError> {
        std::fs::read_dir(dir).map_err(|source| FileSourceError::Directory {
            dir: dir.to_owned(),
            source,
        })?;
        Ok(FileSource {
            settings: Settings {
                dir: dir.to_owned(),
                records,
                watch: None,
                on_decode_error: OnDecodeError::Fail,
                max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            },
            timestamps: None,
        })
    }

    /// Reads the files present when the job first starts, each to its end, and then ends (the
    /// default).
    pub fn bounded(mut self) -> Self {
        self.settings.watch = None;
        self
    }

    /// Keeps watching the directory: lists it every `interval` and reads the files that
    /// appeared (new files only, not lines appended to files already read). The source never
    /// ends.
    pub fn watch(mut self, interval: Duration) -> Self {
        self.settings.watch = Some(interval);
        self
    }

    /// What to do with a record that does not decode (by default, fail the job).
    pub fn on_decode_error(mut self, policy: OnDecodeError) -> Self {
        self.settings.on_decode_error = policy;
        self
    }

    /// The longest record read (its line break not counted; by default
    /// [`DEFAULT_MAX_RECORD_BYTES`]): a longer one is read past without being held in memory,
    /// and is a record that does not decode.
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_record_bytes = bytes;
        self
    }

    /// Stamps each record with the event time `timestamp_of` reads from it, and emits
    /// watermarks by `strategy`. Each subtask reads its files one after another, so its
    /// watermark follows them in name order; it counts as one input, idle by the strategy's
    /// idleness when no record comes (a subtask that owns no file, say).
    pub fn with_timestamps(
        mut self,
        timestamp_of: impl Fn(&T) -> Timestamp + Send + Sync + 'static,
        strategy: WatermarkStrategy,
    ) -> Self {
        self.timestamps = Some((Arc::new(timestamp_of), strategy));
        self
    }
}

/// Files for [`StreamEnv`]: `env.from_files(source)`.
pub trait FilesExt {
    // Named as the environment's own sources are (`from_source`, `from_log`): it reads from
    // files, it is no conversion of the environment.
    #[allow(clippy::wrong_self_convention)]
    /// A stream read from the files of a directory, by every subtask of the source in
    /// parallel.
    fn from_files<T: Data>(&self, source: FileSource<T>) -> DataStream<T>;
}

impl FilesExt for StreamEnv {
    fn from_files<T: Data>(&self, source: FileSource<T>) -> DataStream<T> {
        let name = format!("file source '{}'", source.settings.dir.display());
        let settings = Arc::new(source.settings);
        match source.timestamps {
            None => self.from_source(&name, true, move |subtask, parallelism| {
                FileReader::new(settings.clone(), subtask, parallelism)
            }),
            Some((timestamp_of, strategy)) => {
                self.from_source(&name, true, move |subtask, parallelism| {
                    let timestamp_of = timestamp_of.clone();
                    WithWatermarks::with_timestamps(
                        FileReader::new(settings.clone(), subtask, parallelism),
                        move |value: &T| timestamp_of(value),
                        strategy.clone(),
                    )
                })
            }
        }
    }
}

//! [`FileTarget`]: a directory as the target of `rill-core`'s two-phase-commit writer
//! ([`TransactionalWriter`](rill_core::transactional::TransactionalWriter)), with part files
//! as Flink's `FileSink` writes them.
//!
//! - `stage` writes a transaction's records, one a line, into a hidden in-progress part file;
//!   past [`roll_at_bytes`](crate::FileSink::roll_at_bytes) it rolls to the next part (the
//!   full one is synced then, so that `prepare` has only the last to sync).
//! - `prepare` syncs the last part, renames every part to its hidden pending name (which
//!   carries the checkpoint) and syncs the directory: from then on the transaction survives a
//!   crash of the process or the machine.
//! - `commit` writes the subtask's commit mark (see [`super::marks`]), renames every pending
//!   part of the transaction to its visible name and syncs the directory. It finds them by
//!   name, so it is idempotent: with nothing pending (committed already, or never prepared)
//!   it renames nothing. A crash between two renames leaves the rest pending, and the restored
//!   job's commit moves them.
//! - `abort` deletes the transaction's in-progress and pending parts, and syncs the directory,
//!   so that a deletion is never undone by a crash under a transaction that reuses the id.
//! - `open_transactions` lists the transactions with pending or in-progress parts. In-progress
//!   parts on disk were left by a process that crashed (or failed) before preparing them:
//!   listed as open, the restored writer aborts them, as the log's staged transactions.
//! - `flush` has nothing to do for transactions (every prepare, commit and abort syncs); at
//!   least once, it syncs and closes the file being appended to.
//!
//! At least once, `append` writes visible files `part-<job>-<uid>-<subtask>-a<k>.<ext>`
//! directly, rolling by size too; each file ends at the next `flush` (each checkpoint's
//! barrier, and the end of input), so there is one file per checkpoint interval and subtask,
//! and readers may see the newest one grow.
//!
//! There is no rolling by time inside a checkpoint interval: a transaction's records become
//! visible when its checkpoint completes, so the checkpoint interval is the rolling interval.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rill_core::transactional::{CommitMark, TransactionalTarget};
use rill_formats::EncodeError;

use super::marks;
use super::names::{self, Part, Stage};
use crate::error::FileSinkError;

/// A record as the sink's format encoded it (without its line break), or why it could not be.
pub type Encoded = Result<Vec<u8>, EncodeError>;

/// The bytes a part file's writer buffers before writing to the file.
const WRITE_BUFFER_BYTES: usize = 256 << 10;

/// What every subtask of a file sink shares.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The output directory.
    pub(crate) dir: PathBuf,
    /// The committed files' extension, without the dot.
    pub(crate) extension: String,
    /// A part file rolls to the next before it would grow past this (unless one record is
    /// larger).
    pub(crate) roll_at_bytes: u64,
}

/// One file being written.
struct PartWriter {
    path: PathBuf,
    file: BufWriter<File>,
    bytes: u64,
}

impl PartWriter {
    /// Creates `path`, which must not exist.
    fn create(path: PathBuf) -> Result<Self, FileSinkError> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(FileSinkError::io("create the part file", &path))?;
        Ok(PartWriter {
            path,
            file: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            bytes: 0,
        })
    }

    fn write_line(&mut self, record: &[u8]) -> Result<(), FileSinkError> {
        self.file
            .write_all(record)
            .and_then(|()| self.file.write_all(b"\n"))
            .map_err(FileSinkError::io("write the part file", &self.path))?;
        self.bytes += record.len() as u64 + 1;
        Ok(())
    }

    /// Writes out the buffer and syncs the file.
    fn finish(mut self) -> Result<(), FileSinkError> {
        self.file
            .flush()
            .map_err(FileSinkError::io("write the part file", &self.path))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(FileSinkError::io("sync the part file", &self.path))
    }
}

/// Files written one after another, each rolled to the next before it grows past a size.
#[derive(Default)]
struct Rolling {
    current: Option<PartWriter>,
    /// Files created so far.
    created: u32,
}

impl Rolling {
    /// Writes each of `records` as a line, into a new file of `settings`' directory named
    /// `name_of(index)` if there is none or the current one would grow past the size to roll
    /// at.
    fn write_lines(
        &mut self,
        records: Vec<Encoded>,
        settings: &Settings,
        name_of: impl Fn(u32) -> String,
    ) -> Result<(), FileSinkError> {
        for record in records {
            let record = record.map_err(|source| FileSinkError::Encode {
                dir: settings.dir.clone(),
                source,
            })?;
            let line_bytes = record.len() as u64 + 1;
            if let Some(current) = &self.current
                && current.bytes > 0
                && current.bytes + line_bytes > settings.roll_at_bytes
                && let Some(full) = self.current.take()
            {
                full.finish()?;
            }
            let current = match &mut self.current {
                Some(current) => current,
                None => {
                    let path = settings.dir.join(name_of(self.created));
                    self.created += 1;
                    self.current.insert(PartWriter::create(path)?)
                }
            };
            current.write_line(&record)?;
        }
        Ok(())
    }

    /// Syncs and closes the current file; returns how many files were created in all.
    fn finish(&mut self) -> Result<u32, FileSinkError> {
        if let Some(current) = self.current.take() {
            current.finish()?;
        }
        Ok(self.created)
    }
}

/// The transaction being staged.
struct Staged {
    id: String,
    escaped_id: String,
    parts: Rolling,
}

/// The at-least-once files of a subtask.
struct Appending {
    files: Rolling,
    /// The number of the first file `files` names.
    first: u64,
}

/// One sink subtask's writer of a directory.
pub struct FileTarget {
    settings: Arc<Settings>,
    /// `<job>/<uid>/`: the writer, as the transaction ids and commit marks name it.
    writer: String,
    subtask: u32,
    staged: Option<Staged>,
    /// The pending parts of the transactions this instance prepared, by id, so that their
    /// commit needs no listing of the directory.
    prepared: BTreeMap<String, Vec<Part>>,
    /// This subtask's commit mark, once read.
    mark: Option<Option<u64>>,
    appending: Option<Appending>,
}

impl FileTarget {
    /// The writer of subtask `subtask` of the sink `writer` (`<job>/<uid>/`).
    pub(crate) fn new(settings: Arc<Settings>, writer: String, subtask: u32) -> Self {
        FileTarget {
            settings,
            writer,
            subtask,
            staged: None,
            prepared: BTreeMap::new(),
            mark: None,
            appending: None,
        }
    }

    fn dir(&self) -> &Path {
        &self.settings.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.settings.dir.join(name)
    }

    fn protocol(&self, reason: String) -> FileSinkError {
        FileSinkError::Protocol {
            dir: self.dir().to_owned(),
            reason,
        }
    }

    /// The names in the directory (those that are not UTF-8 are no sink's).
    fn names(&self) -> Result<Vec<String>, FileSinkError> {
        let listing = fs::read_dir(self.dir()).map_err(FileSinkError::io("list", self.dir()))?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(FileSinkError::io("list", self.dir()))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The hidden parts of transaction `escaped_id` in the directory, at `stage` (or any).
    fn parts_of(
        &self,
        escaped_id: &str,
        stage: Option<Stage>,
    ) -> Result<Vec<(Part, Stage)>, FileSinkError> {
        Ok(self
            .names()?
            .iter()
            .filter_map(|name| Part::parse_hidden(name))
            .filter(|(part, found)| {
                part.escaped_id == escaped_id && stage.is_none_or(|stage| stage == *found)
            })
            .collect())
    }

    fn sync_dir(&self) -> Result<(), FileSinkError> {
        sync_dir(self.dir())
    }

    /// Raises this subtask's commit mark of `writer` to `checkpoint`, durably.
    fn raise_mark(&mut self, writer: &str, checkpoint: u64) -> Result<(), FileSinkError> {
        let path = self.path(&names::mark_name(writer, self.subtask));
        let current = match self.mark {
            Some(mark) if writer == self.writer => mark,
            _ => marks::read(&path)?,
        };
        if current.is_some_and(|current| current >= checkpoint) {
            return Ok(());
        }
        let temporary = self.path(&format!("{}.tmp", names::mark_name(writer, self.subtask)));
        marks::write(&path, &temporary, checkpoint)?;
        self.sync_dir()?;
        if writer == self.writer {
            self.mark = Some(Some(checkpoint));
        }
        Ok(())
    }

    /// The committed name of `part`, marked `checkpoint` if it was not at prepare: its own, or,
    /// if an earlier run holds that (a job without checkpoints run again, or a rewind the job
    /// was allowed, numbers its transactions and checkpoints from the start again), the first
    /// free one with `-r<k>` added, so that no commit ever replaces committed output.
    fn committed_path(
        &self,
        part: &Part,
        checkpoint: Option<u64>,
    ) -> Result<PathBuf, FileSinkError> {
        let part = Part {
            checkpoint: part.checkpoint.or(checkpoint),
            ..part.clone()
        };
        let extension = &self.settings.extension;
        let own = self.path(&part.committed_name(extension));
        if !own.exists() {
            return Ok(own);
        }
        (1..=RERUNS_MAX)
            .map(|rerun| self.path(&part.rerun_name(rerun, extension)))
            .find(|path| !path.exists())
            .ok_or_else(|| {
                self.protocol(format!(
                    "'{}' and {RERUNS_MAX} names after it exist: no name to commit it under",
                    own.display()
                ))
            })
    }
}

/// How many runs' outputs may share one part's name (each after the first with `-r<k>`).
const RERUNS_MAX: u32 = 10_000;

/// The result of `doing` something with `path`, where the file being gone already is no
/// error: what was to be done to it was done before.
pub(crate) fn unless_gone(
    result: std::io::Result<()>,
    doing: &'static str,
    path: &Path,
) -> Result<(), FileSinkError> {
    match result {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(FileSinkError::io(doing, path)(error))
        }
        _ => Ok(()),
    }
}

/// Syncs directory `dir`, so that what was created, renamed or deleted in it survives a crash
/// of the machine.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), FileSinkError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(FileSinkError::io("sync the directory", dir))
}

impl TransactionalTarget for FileTarget {
    type Produced = Encoded;
    type Error = FileSinkError;

    fn describe(&self) -> String {
        format!("directory '{}'", self.dir().display())
    }

    fn append(&mut self, records: Vec<Encoded>) -> Result<(), FileSinkError> {
        if self.appending.is_none() {
            // Numbered past every file an earlier run of this subtask appended.
            let first = self
                .names()?
                .iter()
                .filter_map(|name| names::parse_appended(name, &self.writer, self.subtask))
                .max()
                .map_or(0, |newest| newest + 1);
            self.appending = Some(Appending {
                files: Rolling::default(),
                first,
            });
        }
        let (settings, writer, subtask) = (&self.settings, &self.writer, self.subtask);
        let Some(appending) = &mut self.appending else {
            return Ok(());
        };
        let first = appending.first;
        appending.files.write_lines(records, settings, |index| {
            let number = first + u64::from(index);
            names::appended_name(writer, subtask, number, &settings.extension)
        })
    }

    fn stage(&mut self, id: &str, records: Vec<Encoded>) -> Result<(), FileSinkError> {
        match &self.staged {
            Some(staged) if staged.id == id => {}
            Some(staged) => {
                let open = staged.id.clone();
                return Err(
                    self.protocol(format!("transaction '{id}' staged while '{open}' is open"))
                );
            }
            None => {
                self.staged = Some(Staged {
                    id: id.to_owned(),
                    escaped_id: names::escape(id),
                    parts: Rolling::default(),
                });
            }
        }
        let Some(staged) = &mut self.staged else {
            return Ok(());
        };
        let escaped_id = &staged.escaped_id;
        staged.parts.write_lines(records, &self.settings, |number| {
            let part = Part {
                escaped_id: escaped_id.clone(),
                number,
                checkpoint: None,
            };
            part.hidden_name(Stage::InProgress)
        })
    }

    fn prepare(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), FileSinkError> {
        let Some(mut staged) = self.staged.take_if(|staged| staged.id == id) else {
            return Err(self.protocol(format!("transaction '{id}' prepared without being staged")));
        };
        let created = staged.parts.finish()?;
        let checkpoint = mark.map(|mark| mark.checkpoint);
        let mut pending = Vec::new();
        for number in 0..created {
            let in_progress = Part {
                escaped_id: staged.escaped_id.clone(),
                number,
                checkpoint: None,
            };
            let prepared = Part {
                checkpoint,
                ..in_progress.clone()
            };
            let from = self.path(&in_progress.hidden_name(Stage::InProgress));
            let to = self.path(&prepared.hidden_name(Stage::Pending));
            fs::rename(&from, &to).map_err(FileSinkError::io("prepare the part file", &from))?;
            pending.push(prepared);
        }
        if created > 0 {
            self.sync_dir()?;
        }
        self.prepared.insert(id.to_owned(), pending);
        Ok(())
    }

    fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), FileSinkError> {
        let pending = match self.prepared.remove(id) {
            Some(pending) => pending,
            None => self
                .parts_of(&names::escape(id), Some(Stage::Pending))?
                .into_iter()
                .map(|(part, _)| part)
                .collect(),
        };
        // The mark first: whatever is visible, the mark covers (see `marks`).
        let checkpoint = pending
            .iter()
            .filter_map(|part| part.checkpoint)
            .chain(mark.map(|mark| mark.checkpoint))
            .max();
        if let Some(checkpoint) = checkpoint {
            let writer = mark.map_or_else(|| self.writer.clone(), |mark| mark.writer.to_owned());
            self.raise_mark(&writer, checkpoint)?;
        }
        let mark_checkpoint = mark.map(|mark| mark.checkpoint);
        for part in &pending {
            let from = self.path(&part.hidden_name(Stage::Pending));
            let to = self.committed_path(part, mark_checkpoint)?;
            // Gone since it was listed: someone else committed or deleted it.
            unless_gone(fs::rename(&from, &to), "commit the part file", &from)?;
        }
        if !pending.is_empty() {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn abort(&mut self, id: &str) -> Result<(), FileSinkError> {
        // Its open file closed first, then deleted with the rest of its parts.
        drop(self.staged.take_if(|staged| staged.id == id));
        self.prepared.remove(id);
        let parts = self.parts_of(&names::escape(id), None)?;
        for (part, stage) in &parts {
            let path = self.path(&part.hidden_name(*stage));
            unless_gone(fs::remove_file(&path), "delete the part file", &path)?;
        }
        if !parts.is_empty() {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, FileSinkError> {
        let ids: BTreeSet<String> = self
            .names()?
            .iter()
            .filter_map(|name| Part::parse_hidden(name))
            .filter_map(|(part, _)| names::unescape(&part.escaped_id))
            .filter(|id| id.starts_with(prefix))
            .collect();
        Ok(ids.into_iter().collect())
    }

    fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, FileSinkError> {
        let mut newest = None;
        for name in self.names()? {
            if names::is_mark_of(&name, writer) {
                newest = newest.max(marks::read(&self.path(&name))?);
            }
        }
        Ok(newest)
    }

    fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), FileSinkError> {
        for name in self.names()? {
            if !names::is_mark_of(&name, writer) {
                continue;
            }
            let path = self.path(&name);
            let Some(checkpoint) = marks::read(&path)? else {
                continue;
            };
            match to {
                None => marks::remove(&path)?,
                Some(to) if checkpoint > to => {
                    // Every subtask of a restored sink may rewind the same marks at once, to
                    // the same point: each through a temporary file of its own. (None commits
                    // above the point before all have restored: a commit needs a checkpoint
                    // that every subtask acknowledged.)
                    let temporary = self.path(&format!("{name}.tmp-{}", self.subtask));
                    marks::write(&path, &temporary, to)?;
                }
                Some(_) => {}
            }
        }
        self.sync_dir()?;
        if writer == self.writer {
            self.mark = None;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), FileSinkError> {
        if let Some(mut appending) = self.appending.take() {
            let created = appending.files.finish()?;
            if created > 0 {
                self.sync_dir()?;
            }
            // The next append starts a new file, numbered after these.
            appending.first += u64::from(created);
            appending.files = Rolling::default();
            self.appending = Some(appending);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

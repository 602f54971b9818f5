//! A model of a directory of part files with atomic renames — what `rill-files`' target
//! builds its two-phase commit on — as the target of simulated sinks, so that scenarios run
//! the shared two-phase-commit writer against files as they behave. It is in memory: the
//! simulator does no file I/O.
//!
//! The directory is on the job's machine, beside it: a [`FilesSession`] is one sink subtask's
//! writer of it. A transaction's records go to an in-progress file, which `prepare` renames to
//! a pending one and `commit` renames into view; each rename is atomic, and `commit` and
//! `abort` find the files by name, so repeating them does nothing. In-progress files stay
//! where a crashed process left them, as real ones do: they are unprepared, and listed as
//! open with the pending ones, so that the restored writer must abort them (a new transaction
//! under the name of one still there is refused, as the real target's `create_new` refuses
//! it). Every prepare, commit and abort is durable when it returns (the real target syncs the
//! files and the directory in each), so a crash of the machine loses nothing the model holds;
//! the data of an in-progress file that a crash might cut short is never committed anyway.
//! The commit mark of a writer is raised before its commit's records become visible and moved
//! back only by a rewind, as the real target's mark files are.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rill_core::transactional::{CommitMark, TransactionalTarget};

use crate::log::LogRecord;

/// A contract broken by the writer: refused, as the file system would refuse it.
#[derive(Debug, thiserror::Error)]
#[error("the directory refuses: {0}")]
pub struct FilesError(String);

/// A pending (prepared) part file.
#[derive(Debug)]
struct Pending {
    records: Vec<LogRecord>,
    /// The checkpoint its name carries, if the job checkpoints.
    checkpoint: Option<u64>,
}

#[derive(Debug, Default)]
struct Directory {
    /// In-progress files by transaction id.
    in_progress: BTreeMap<String, Vec<LogRecord>>,
    /// Pending files by transaction id.
    pending: BTreeMap<String, Pending>,
    /// The committed files' records, in commit order.
    committed: Vec<LogRecord>,
    /// By writer, the newest checkpoint whose output it committed.
    marks: BTreeMap<String, u64>,
}

/// The simulated output directory, shared by every attempt of a run.
#[derive(Clone, Debug, Default)]
pub struct SimDirectory {
    directory: Arc<Mutex<Directory>>,
}

impl SimDirectory {
    fn directory(&self) -> MutexGuard<'_, Directory> {
        self.directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A sink subtask's writer.
    pub fn session(&self) -> FilesSession {
        FilesSession {
            directory: self.clone(),
            staging: None,
        }
    }

    /// Runs `read` over the committed files' records.
    pub fn with_committed<R>(&self, read: impl FnOnce(&[LogRecord]) -> R) -> R {
        read(&self.directory().committed)
    }

    /// The transactions with in-progress or pending files.
    pub fn open(&self) -> Vec<String> {
        let directory = self.directory();
        let in_progress = directory.in_progress.keys();
        let mut open: Vec<String> = in_progress
            .chain(directory.pending.keys())
            .cloned()
            .collect();
        open.sort();
        open.dedup();
        open
    }
}

/// One sink subtask's writer of the directory.
pub struct FilesSession {
    directory: SimDirectory,
    /// The transaction whose in-progress file this session writes.
    staging: Option<String>,
}

impl FilesSession {
    fn raise_mark(directory: &mut Directory, writer: &str, checkpoint: u64) {
        let mark = directory.marks.entry(writer.to_owned()).or_default();
        *mark = (*mark).max(checkpoint);
    }
}

impl TransactionalTarget for FilesSession {
    type Produced = LogRecord;
    type Error = FilesError;

    fn describe(&self) -> String {
        "the simulated directory".to_owned()
    }

    fn append(&mut self, records: Vec<LogRecord>) -> Result<(), FilesError> {
        self.directory.directory().committed.extend(records);
        Ok(())
    }

    fn stage(&mut self, id: &str, records: Vec<LogRecord>) -> Result<(), FilesError> {
        let mut directory = self.directory.directory();
        match &self.staging {
            Some(staging) if staging == id => {}
            Some(staging) => {
                return Err(FilesError(format!(
                    "transaction '{id}' staged while '{staging}' is open"
                )));
            }
            None => {
                if directory.in_progress.contains_key(id) || directory.pending.contains_key(id) {
                    return Err(FilesError(format!(
                        "the part file of transaction '{id}' exists already"
                    )));
                }
                self.staging = Some(id.to_owned());
            }
        }
        directory
            .in_progress
            .entry(id.to_owned())
            .or_default()
            .extend(records);
        Ok(())
    }

    fn prepare(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), FilesError> {
        if self.staging.take_if(|staging| staging == id).is_none() {
            return Err(FilesError(format!(
                "transaction '{id}' prepared without being staged"
            )));
        }
        let mut directory = self.directory.directory();
        let Some(records) = directory.in_progress.remove(id) else {
            return Err(FilesError(format!(
                "the in-progress file of transaction '{id}' is gone"
            )));
        };
        let checkpoint = mark.map(|mark| mark.checkpoint);
        let pending = Pending {
            records,
            checkpoint,
        };
        directory.pending.insert(id.to_owned(), pending);
        Ok(())
    }

    fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), FilesError> {
        let mut directory = self.directory.directory();
        let pending = directory.pending.remove(id);
        let prepared_for = pending.as_ref().and_then(|pending| pending.checkpoint);
        // The mark first, as the real target writes it: whatever is visible, it covers.
        if let Some(checkpoint) = prepared_for.max(mark.map(|mark| mark.checkpoint)) {
            let writer = mark.map_or_else(|| writer_of(id), |mark| mark.writer.to_owned());
            Self::raise_mark(&mut directory, &writer, checkpoint);
        }
        if let Some(pending) = pending {
            directory.committed.extend(pending.records);
        }
        Ok(())
    }

    fn abort(&mut self, id: &str) -> Result<(), FilesError> {
        self.staging.take_if(|staging| staging == id);
        let mut directory = self.directory.directory();
        directory.in_progress.remove(id);
        directory.pending.remove(id);
        Ok(())
    }

    fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, FilesError> {
        let mut open = self.directory.open();
        open.retain(|id| id.starts_with(prefix));
        Ok(open)
    }

    fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, FilesError> {
        Ok(self.directory.directory().marks.get(writer).copied())
    }

    fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), FilesError> {
        let mut directory = self.directory.directory();
        match to {
            Some(to) => {
                let mark = directory.marks.entry(writer.to_owned()).or_default();
                *mark = (*mark).min(to);
            }
            None => {
                directory.marks.remove(writer);
            }
        }
        Ok(())
    }

    /// Every prepare, commit and abort is durable when it returns.
    fn flush(&mut self) -> Result<(), FilesError> {
        Ok(())
    }
}

/// The writer (`<job>/<uid>/`) of transaction `<job>/<uid>/<subtask>/<sequence>`.
fn writer_of(id: &str) -> String {
    let mut parts: Vec<&str> = id.rsplitn(3, '/').collect();
    match parts.pop() {
        Some(writer) if parts.len() == 2 => format!("{writer}/"),
        _ => id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_is_open_until_committed_or_aborted_and_commits_once() {
        let directory = SimDirectory::default();
        let mut session = directory.session();
        let record = |value: &str| LogRecord {
            value: value.as_bytes().to_vec().into(),
            timestamp: 0,
        };
        let mark = Some(CommitMark {
            writer: "j/u/",
            checkpoint: 4,
        });
        session.stage("j/u/0/0", vec![record("a")]).unwrap();
        assert_eq!(directory.open(), ["j/u/0/0"]);
        session.prepare("j/u/0/0", mark).unwrap();
        // A new process: the session is gone, the pending file is not.
        let mut restored = directory.session();
        assert!(restored.stage("j/u/0/0", vec![record("b")]).is_err());
        restored.commit("j/u/0/0", mark).unwrap();
        restored.commit("j/u/0/0", mark).unwrap();
        assert_eq!(directory.with_committed(<[LogRecord]>::len), 1);
        assert_eq!(restored.committed_checkpoint("j/u/").unwrap(), Some(4));
        session.stage("j/u/0/1", vec![record("c")]).unwrap();
        drop(session);
        assert_eq!(restored.open_transactions("j/u/0/").unwrap(), ["j/u/0/1"]);
        restored.abort("j/u/0/1").unwrap();
        assert!(directory.open().is_empty());
        assert_eq!(writer_of("j/u/0/1"), "j/u/");
    }
}

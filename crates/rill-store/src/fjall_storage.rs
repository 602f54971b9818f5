//! fjall as `rill-core`'s [`Storage`]: one fjall database in a directory, one fjall keyspace
//! per key space, a batch as a fjall write batch (atomic: one journal entry), a synced write
//! as a batch followed by `PersistMode::SyncAll`.
//!
//! fjall writes to OS buffers unless asked to persist: durability is decided by the store above
//! (the checkpoint store syncs with each checkpoint's metadata), as the contract says.
//!
//! Opening a fjall database replays its journals (`*.jnl`) and cuts a journal short where it
//! finds a damaged or unfinished batch — for good, and silently. So opening measures the
//! journals before and after: a journal is preallocated with zeros, so one cut short of its
//! last non-zero byte lost data, a [`JournalRepair`], logged as a warning and kept for the
//! caller. A read-only open ([`FjallStorage::open_read_only`], for
//! tools that only look) opens a copy in a temporary directory (`tempfile`): the original is
//! never touched, and what fjall would cut is reported as damage instead.
//!
//! A complete batch whose checksum fails (a flipped byte) makes fjall refuse the whole
//! database: opening it fails with [`StoreError::DamagedJournal`], naming the journal and the
//! batch's bytes. A read-only open leaves such batches out of its copy ([`crate::journal`])
//! and reports them ([`FjallStorage::skipped_batches`]), so that everything else can be read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rill_core::storage::{Durability, Entry, Storage, StorageError, WriteOp, scan_start};

use crate::error::StoreError;
use crate::journal::{self, OnDamage, SkippedBatch};

/// A journal that opening the database cut short: the end fjall found damaged or unfinished.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "journal {} was cut at byte {bytes_after} when the database opened, though it held data up \
     to byte {bytes_before}: its last {} bytes were damaged or unfinished",
    journal.display(), bytes_before - bytes_after
)]
pub struct JournalRepair {
    /// The journal file (in the original directory, also when a copy was opened).
    pub journal: PathBuf,
    /// Where its data ended before the database opened (its preallocated zeros aside).
    pub bytes_before: u64,
    /// Its size after.
    pub bytes_after: u64,
}

/// A fjall database holding a fixed set of key spaces.
#[derive(Clone)]
pub struct FjallStorage {
    path: PathBuf,
    db: Database,
    spaces: BTreeMap<&'static str, Keyspace>,
    repairs: Vec<JournalRepair>,
    /// For a read-only open: the damaged batches left out of the copy.
    skipped: Vec<SkippedBatch>,
    /// For a read-only open: the copy that was opened, removed when the last clone goes.
    copy: Option<Arc<tempfile::TempDir>>,
}

/// Where the data of the file at `path` ends: after its last non-zero byte.
fn data_end(path: &Path) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: u64 = 64 * 1024;
    let mut file = std::fs::File::open(path)?;
    let mut end = file.metadata()?.len();
    let mut buffer = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buffer[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(last) = chunk.iter().rposition(|&byte| byte != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Where the data of every journal in `dir` ends (see [`data_end`]), by file name.
fn journal_ends(dir: &Path) -> std::io::Result<BTreeMap<std::ffi::OsString, u64>> {
    let mut ends = journal_sizes(dir)?;
    for (name, end) in &mut ends {
        *end = data_end(&dir.join(name))?;
    }
    Ok(ends)
}

/// The size of every journal in `dir`, by file name.
fn journal_sizes(dir: &Path) -> std::io::Result<BTreeMap<std::ffi::OsString, u64>> {
    let mut sizes = BTreeMap::new();
    for path in journal::journals(dir)? {
        if let Some(name) = path.file_name() {
            sizes.insert(name.to_owned(), std::fs::metadata(&path)?.len());
        }
    }
    Ok(sizes)
}

/// Copies the files of `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

impl FjallStorage {
    /// Opens (or creates) the database in `dir` with the key spaces `spaces`.
    pub fn open(dir: &Path, spaces: &[&'static str]) -> Result<Self, StoreError> {
        Self::open_at(dir, dir, spaces, None)
    }

    /// Opens a copy of the database in `dir`, which must exist, leaving `dir` untouched:
    /// writes are refused, what opening would have cut from a journal is reported in
    /// [`FjallStorage::repairs`] without being cut, and a damaged batch that would make fjall
    /// refuse the database is left out of the copy and reported in
    /// [`FjallStorage::skipped_batches`].
    pub fn open_read_only(dir: &Path, spaces: &[&'static str]) -> Result<Self, StoreError> {
        let io = |error: std::io::Error| StoreError::of_engine(dir, fjall::Error::Io(error));
        let copy = tempfile::Builder::new()
            .prefix("rill-read-only-")
            .tempdir()
            .map_err(io)?;
        copy_tree(dir, copy.path()).map_err(io)?;
        let skipped = journal::damaged_in(copy.path(), dir, OnDamage::LeaveOut).map_err(io)?;
        let opened = copy.path().to_path_buf();
        let mut storage = Self::open_at(dir, &opened, spaces, Some(Arc::new(copy)))?;
        for batch in &skipped {
            tracing::warn!(%batch, "damaged storage, read around");
        }
        storage.skipped = skipped;
        Ok(storage)
    }

    fn open_at(
        dir: &Path,
        opened: &Path,
        spaces: &[&'static str],
        copy: Option<Arc<tempfile::TempDir>>,
    ) -> Result<Self, StoreError> {
        let path = dir.to_path_buf();
        let storage = |source| StoreError::of_engine(&path, source);
        let io = |error: std::io::Error| StoreError::of_engine(dir, fjall::Error::Io(error));
        let before = journal_ends(opened).map_err(io)?;
        let db = match Database::builder(opened).open() {
            Ok(db) => db,
            Err(fjall::Error::JournalRecovery(recovery)) => {
                let batches = journal::damaged_in(opened, dir, OnDamage::Report).map_err(io)?;
                return Err(StoreError::DamagedJournal {
                    path: dir.to_path_buf(),
                    batches,
                    recovery: format!("{recovery:?}"),
                });
            }
            Err(error) => return Err(storage(error)),
        };
        let after = journal_sizes(opened).map_err(io)?;
        let repairs: Vec<JournalRepair> = before
            .into_iter()
            .filter_map(|(name, bytes_before)| {
                let bytes_after = *after.get(&name)?;
                (bytes_after < bytes_before).then(|| JournalRepair {
                    journal: dir.join(name),
                    bytes_before,
                    bytes_after,
                })
            })
            .collect();
        for repair in &repairs {
            tracing::warn!(%repair, read_only = copy.is_some(), "damaged storage");
        }
        let spaces = spaces
            .iter()
            .map(|&name| {
                db.keyspace(name, KeyspaceCreateOptions::default)
                    .map(|keyspace| (name, keyspace))
                    .map_err(storage)
            })
            .collect::<Result<_, _>>()?;
        Ok(FjallStorage {
            path,
            db,
            spaces,
            repairs,
            skipped: Vec::new(),
            copy,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journals opening cut short (or, opened read-only, would have).
    pub fn repairs(&self) -> &[JournalRepair] {
        &self.repairs
    }

    /// The damaged batches a read-only open left out of its copy (see
    /// [`FjallStorage::open_read_only`]); always empty for a writable open, which refuses them.
    pub fn skipped_batches(&self) -> &[SkippedBatch] {
        &self.skipped
    }

    fn space(&self, name: &'static str) -> Result<&Keyspace, StorageError> {
        self.spaces.get(name).ok_or_else(|| {
            StorageError::new(format!(
                "{}: no key space '{name}' was opened",
                self.path.display()
            ))
        })
    }

    fn engine(&self, error: fjall::Error) -> StorageError {
        StorageError::new(format!("{}: {error}", self.path.display()))
    }
}

impl Storage for FjallStorage {
    fn write(&self, ops: Vec<WriteOp>, durability: Durability) -> Result<(), StorageError> {
        if self.copy.is_some() {
            return Err(StorageError::new(format!(
                "{}: opened read-only",
                self.path.display()
            )));
        }
        let mut batch = self.db.batch();
        for op in ops {
            match op {
                WriteOp::Put { space, key, value } => batch.insert(self.space(space)?, key, value),
                WriteOp::Delete { space, key } => batch.remove(self.space(space)?, key),
            }
        }
        batch.commit().map_err(|error| self.engine(error))?;
        if durability == Durability::Synced {
            self.db
                .persist(PersistMode::SyncAll)
                .map_err(|error| self.engine(error))?;
        }
        Ok(())
    }

    fn get(&self, space: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self
            .space(space)?
            .get(key)
            .map_err(|error| self.engine(error))?;
        Ok(value.map(|value| value.to_vec()))
    }

    fn contains(&self, space: &'static str, key: &[u8]) -> Result<bool, StorageError> {
        self.space(space)?
            .contains_key(key)
            .map_err(|error| self.engine(error))
    }

    fn scan(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = scan_start(prefix, from);
        let mut entries = Vec::new();
        for guard in self.space(space)?.range(start..) {
            if entries.len() >= limit {
                break;
            }
            let (key, value) = guard.into_inner().map_err(|error| self.engine(error))?;
            if !key.starts_with(prefix) {
                break;
            }
            entries.push((key.to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    fn keys(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let start = scan_start(prefix, from);
        let mut keys = Vec::new();
        for guard in self.space(space)?.range(start..) {
            if keys.len() >= limit {
                break;
            }
            let key = guard.key().map_err(|error| self.engine(error))?;
            if !key.starts_with(prefix) {
                break;
            }
            keys.push(key.to_vec());
        }
        Ok(keys)
    }

    fn last_key(
        &self,
        space: &'static str,
        prefix: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        match self.space(space)?.prefix(prefix).next_back() {
            Some(guard) => {
                let key = guard.key().map_err(|error| self.engine(error))?;
                Ok(Some(key.to_vec()))
            }
            None => Ok(None),
        }
    }
}

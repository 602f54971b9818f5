//! The fjall keyed-state backend: operators' working state on local disk, so it need not fit in
//! memory (a checkpoint's encoded state still passes through memory on its way to the store).
//!
//! [`FjallStateBackend`] is a **working copy**, not a durable record: the durable state of a
//! job is its checkpoints, which snapshot these tables per key group like the in-memory
//! backend does. So the backend's directory is wiped when it opens and removed when its last
//! clone is dropped, its journal is never synced, and each operator instance gets a keyspace of
//! its own (`state-<n>`) that is deleted when the instance is dropped — after a failover the
//! new instances start from a checkpoint, never from what the failed ones left behind.
//!
//! An entry's key is `table \0 key group (u32 BE) form encoded-key`, so a scan yields entries
//! ordered by table, then key group: the order snapshots are cut in. fjall takes keys of up to
//! 65 535 bytes, and a state key can be longer (the memory backend takes any): the form byte is
//! 0 for a key stored as it is, 1 for a long key stored as its 128-bit xxh3 hash, the key itself
//! then leading the value (`length (u32 BE) key value`) so that a read checks it and a scan
//! gives it back. A checkpoint freezes the
//! tables as a fjall snapshot (a sequence number) at the barrier and reads them later, off the
//! data path, while the operator writes on.
//!
//! Nothing here panics on I/O: opening the backend is a [`StoreError`], opening an instance's
//! tables a [`StateError::Open`], and every read, write and scan a [`StateError::Backend`]
//! naming the state and the key group, which the keyed state store records and its operator
//! fails with (see `rill_core::state`, "Failures").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};
use rill_core::operator::OperatorInfo;
use rill_core::state::{EntryVisitor, FrozenTables, StateBackend, StateError, StateTables};

use crate::error::StoreError;

/// Keyed state on fjall, one keyspace per operator instance. Cheap to clone.
#[derive(Clone)]
pub struct FjallStateBackend {
    shared: Arc<Shared>,
}

/// The file that marks a directory as a working copy, locked while a backend has it open.
const WORKING_COPY_MARKER: &str = "RILL_STATE_WORKING_COPY";

/// Fields drop in declaration order: the engine first, so that nothing of it is left to touch
/// the files, then the working copy.
struct Shared {
    db: Database,
    next_keyspace: AtomicU64,
    working_copy: WorkingCopy,
}

/// The backend's directory, removed on drop.
struct WorkingCopy {
    path: PathBuf,
    /// The working copy's marker, locked until the directory is removed.
    _lock: std::fs::File,
}

impl Drop for WorkingCopy {
    fn drop(&mut self) {
        // A failure to remove it loses nothing: opening the backend again wipes it.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl FjallStateBackend {
    /// Opens a backend in `dir`, deleting whatever an earlier run left there. `dir` must be
    /// missing, empty, or a working copy an earlier backend left: any other directory is
    /// refused, never wiped ([`StoreError::NotAWorkingCopy`]), and so is a working copy a live
    /// backend holds ([`StoreError::Locked`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = dir.as_ref().to_path_buf();
        let io = |error: std::io::Error| StoreError::of_engine(&path, fjall::Error::Io(error));
        let marker = path.join(WORKING_COPY_MARKER);
        let empty = match std::fs::read_dir(&path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => true,
            Err(error) => return Err(io(error)),
        };
        if !empty {
            if !marker.is_file() {
                return Err(StoreError::NotAWorkingCopy(path));
            }
            // Held by a live backend (this process or another) while it is open.
            let held = std::fs::File::open(&marker).map_err(io)?;
            if let Err(std::fs::TryLockError::WouldBlock) = held.try_lock() {
                return Err(StoreError::Locked(path));
            }
            drop(held);
            std::fs::remove_dir_all(&path).map_err(io)?;
        }
        std::fs::create_dir_all(&path).map_err(io)?;
        let lock = std::fs::File::create(&marker).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(path)),
            Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
        }
        let db = Database::builder(path.join("db"))
            .manual_journal_persist(true)
            .open()
            .map_err(|source| StoreError::of_engine(&path, source))?;
        Ok(FjallStateBackend {
            shared: Arc::new(Shared {
                db,
                next_keyspace: AtomicU64::new(0),
                working_copy: WorkingCopy { path, _lock: lock },
            }),
        })
    }

    /// The backend's directory.
    pub fn path(&self) -> &Path {
        &self.shared.working_copy.path
    }

    /// New, empty tables for one operator instance; [`StateError::Open`] if fjall cannot
    /// create their keyspace.
    pub fn tables(&self) -> Result<FjallStateTables, StateError> {
        let name = format!(
            "state-{}",
            self.shared.next_keyspace.fetch_add(1, Ordering::Relaxed)
        );
        let keyspace = self
            .shared
            .db
            .keyspace(&name, || {
                // The working copy is never recovered from its journal: no need to hand each
                // write to the operating system.
                KeyspaceCreateOptions::default().manual_journal_persist(true)
            })
            .map_err(|error| StateError::Open {
                reason: format!("keyspace '{name}' in {}: {error}", self.path().display()),
            })?;
        Ok(FjallStateTables {
            keyspace,
            shared: Arc::clone(&self.shared),
        })
    }

    /// The backend as a job's [`StateBackend`]: every keyed operator instance keeps its state
    /// in tables of its own here.
    pub fn backend(&self) -> StateBackend {
        let backend = self.clone();
        StateBackend::External(Arc::new(move |_: &OperatorInfo| {
            Ok(Box::new(backend.tables()?) as Box<dyn StateTables>)
        }))
    }
}

fn backend_error(table: &str, key_group: Option<u32>, error: &fjall::Error) -> StateError {
    StateError::Backend {
        table: table.to_owned(),
        key_group,
        reason: error.to_string(),
    }
}

/// The tables of one operator instance: a keyspace, deleted on drop. The keyspace is declared
/// first so that it is dropped before the backend it belongs to.
pub struct FjallStateTables {
    keyspace: Keyspace,
    shared: Arc<Shared>,
}

/// The longest key fjall stores.
const ENTRY_KEY_LEN_MAX: usize = u16::MAX as usize;
/// The longest table name: room is left for the key group, the form and a hashed key.
const TABLE_NAME_LEN_MAX: usize = 1024;
/// The form byte of a key stored as it is.
const KEY_AS_IS: u8 = 0;
/// The form byte of a key stored as its hash, with the key leading the value.
const KEY_HASHED: u8 = 1;

/// How an entry's key is stored.
enum EntryKey<'a> {
    /// The key itself is in the entry key.
    AsIs(Vec<u8>),
    /// The entry key holds the key's hash; the key leads the value.
    Hashed { entry: Vec<u8>, key: &'a [u8] },
}

impl EntryKey<'_> {
    fn entry(&self) -> &[u8] {
        match self {
            EntryKey::AsIs(entry) | EntryKey::Hashed { entry, .. } => entry,
        }
    }
}

/// The key of an entry: `table \0 key group (u32 BE) form key-or-hash`. A table name with a
/// NUL in it could not be told from its key, so it is refused, as is an absurdly long one.
fn entry_key<'a>(table: &str, key_group: u32, key: &'a [u8]) -> Result<EntryKey<'a>, StateError> {
    let refuse = |reason: &str| StateError::Backend {
        table: table.escape_debug().to_string(),
        key_group: Some(key_group),
        reason: reason.to_owned(),
    };
    if table.contains('\0') {
        return Err(refuse(
            "a state name kept in fjall cannot contain a NUL character",
        ));
    }
    if table.len() > TABLE_NAME_LEN_MAX {
        return Err(refuse(
            "a state name kept in fjall is at most 1024 bytes long",
        ));
    }
    let head = table.len() + 6;
    let mut entry = Vec::with_capacity(head + key.len().min(ENTRY_KEY_LEN_MAX));
    entry.extend_from_slice(table.as_bytes());
    entry.push(0);
    entry.extend_from_slice(&key_group.to_be_bytes());
    if head + key.len() <= ENTRY_KEY_LEN_MAX {
        entry.push(KEY_AS_IS);
        entry.extend_from_slice(key);
        return Ok(EntryKey::AsIs(entry));
    }
    entry.push(KEY_HASHED);
    entry.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(key).to_be_bytes());
    Ok(EntryKey::Hashed { entry, key })
}

/// Splits an entry key into table, key group, form and key (or hash).
fn split_entry_key(entry: &[u8]) -> Option<(&str, u32, u8, &[u8])> {
    let end = entry.iter().position(|&byte| byte == 0)?;
    let table = std::str::from_utf8(&entry[..end]).ok()?;
    let group = entry.get(end + 1..end + 5)?;
    let group = u32::from_be_bytes(group.try_into().ok()?);
    let form = *entry.get(end + 5)?;
    Some((table, group, form, &entry[end + 6..]))
}

/// A hashed entry's value: `length (u32 BE) key value`.
fn hashed_value(key: &[u8], value: &[u8]) -> Result<Vec<u8>, String> {
    let length = u32::try_from(key.len()).map_err(|_| format!("a key of {} bytes", key.len()))?;
    let mut stored = Vec::with_capacity(4 + key.len() + value.len());
    stored.extend_from_slice(&length.to_be_bytes());
    stored.extend_from_slice(key);
    stored.extend_from_slice(value);
    Ok(stored)
}

/// Splits a hashed entry's value into the key and the value.
fn split_hashed_value(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    let (length, rest) = stored.split_first_chunk::<4>()?;
    let length = u32::from_be_bytes(*length) as usize;
    (rest.len() >= length).then(|| rest.split_at(length))
}

impl StateTables for FjallStateTables {
    fn get(
        &mut self,
        table: &str,
        key_group: u32,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        let entry = entry_key(table, key_group, key)?;
        let Some(stored) = self
            .keyspace
            .get(entry.entry())
            .map_err(|error| backend_error(table, Some(key_group), &error))?
        else {
            return Ok(None);
        };
        match entry {
            EntryKey::AsIs(_) => Ok(Some(stored.to_vec())),
            EntryKey::Hashed { key, .. } => match split_hashed_value(&stored) {
                Some((stored_key, value)) if stored_key == key => Ok(Some(value.to_vec())),
                Some(_) => Err(StateError::Backend {
                    table: table.to_owned(),
                    key_group: Some(key_group),
                    reason: format!(
                        "two keys of more than 64 KiB ({} bytes here) share a 128-bit hash",
                        key.len()
                    ),
                }),
                None => Err(StateError::Backend {
                    table: table.to_owned(),
                    key_group: Some(key_group),
                    reason: "a long key's entry is cut short".to_owned(),
                }),
            },
        }
    }

    fn put(
        &mut self,
        table: &str,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        let inserted = match entry_key(table, key_group, key)? {
            EntryKey::AsIs(entry) => self.keyspace.insert(entry, value),
            EntryKey::Hashed { entry, key } => {
                let stored = hashed_value(key, value).map_err(|reason| StateError::Backend {
                    table: table.to_owned(),
                    key_group: Some(key_group),
                    reason,
                })?;
                self.keyspace.insert(entry, stored)
            }
        };
        inserted.map_err(|error| backend_error(table, Some(key_group), &error))
    }

    fn delete(&mut self, table: &str, key_group: u32, key: &[u8]) -> Result<(), StateError> {
        self.keyspace
            .remove(entry_key(table, key_group, key)?.entry())
            .map_err(|error| backend_error(table, Some(key_group), &error))
    }

    fn freeze(&mut self) -> Result<Box<dyn FrozenTables>, StateError> {
        Ok(Box::new(FrozenFjallTables {
            snapshot: self.shared.db.snapshot(),
            keyspace: self.keyspace.clone(),
        }))
    }
}

/// One operator instance's keyspace as it was when frozen: a fjall snapshot (a sequence
/// number), so the instance writes on while a checkpoint reads.
struct FrozenFjallTables {
    snapshot: fjall::Snapshot,
    keyspace: Keyspace,
}

impl FrozenTables for FrozenFjallTables {
    fn scan(&mut self, visit: &mut EntryVisitor<'_>) -> Result<(), StateError> {
        for entry in self.snapshot.iter(&self.keyspace) {
            let (key, value) = entry
                .into_inner()
                .map_err(|error| backend_error("*", None, &error))?;
            let malformed = |reason: String| StateError::Backend {
                table: "*".to_owned(),
                key_group: None,
                reason,
            };
            let (table, group, form, key) = split_entry_key(&key).ok_or_else(|| {
                malformed(format!(
                    "an entry key of {} bytes has no table name",
                    key.len()
                ))
            })?;
            match form {
                KEY_AS_IS => visit(table, group, key, &value),
                KEY_HASHED => {
                    let (key, value) = split_hashed_value(&value)
                        .ok_or_else(|| malformed("a long key's entry is cut short".to_owned()))?;
                    visit(table, group, key, value);
                }
                other => return Err(malformed(format!("an entry key of unknown form {other}"))),
            }
        }
        Ok(())
    }
}

impl Drop for FjallStateTables {
    fn drop(&mut self) {
        // Deleting only frees disk space early: the whole directory goes when the backend is
        // dropped or opened again, so a failure here loses nothing. A handle's clone marks the
        // keyspace deleted; fjall removes it once this handle is gone too.
        let _ = self.shared.db.delete_keyspace(self.keyspace.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_split_back_into_table_group_and_key() {
        let entry = entry_key("counts", 77, b"\x00word").unwrap();
        assert_eq!(
            split_entry_key(entry.entry()),
            Some(("counts", 77, KEY_AS_IS, &b"\x00word"[..]))
        );
        assert_eq!(split_entry_key(b"no-separator"), None);
        assert!(entry_key("a\0b", 1, b"k").is_err());
        let long = vec![7u8; 70_000];
        let entry = entry_key("counts", 77, &long).unwrap();
        assert!(
            entry.entry().len() < 100,
            "a long key is stored as its hash"
        );
        let stored = hashed_value(&long, b"v").unwrap();
        assert_eq!(split_hashed_value(&stored), Some((&long[..], &b"v"[..])));
    }
}

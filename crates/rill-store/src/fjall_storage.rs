//! fjall as `rill-core`'s [`Storage`]: one fjall database in a directory, one fjall keyspace
//! per key space, a batch as a fjall write batch (atomic: one journal entry), a synced write
//! as a batch followed by `PersistMode::SyncAll`.
//!
//! fjall writes to OS buffers unless asked to persist: durability is decided by the store above
//! (the checkpoint store syncs with each checkpoint's metadata), as the contract says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rill_core::storage::{Durability, Entry, Storage, StorageError, WriteOp, scan_start};

use crate::error::StoreError;

/// A fjall database holding a fixed set of key spaces.
#[derive(Clone)]
pub struct FjallStorage {
    path: PathBuf,
    db: Database,
    spaces: BTreeMap<&'static str, Keyspace>,
}

impl FjallStorage {
    /// Opens (or creates) the database in `dir` with the key spaces `spaces`.
    pub fn open(dir: &Path, spaces: &[&'static str]) -> Result<Self, StoreError> {
        let path = dir.to_path_buf();
        let storage = |source| StoreError::of_engine(&path, source);
        let db = Database::builder(&path).open().map_err(storage)?;
        let spaces = spaces
            .iter()
            .map(|&name| {
                db.keyspace(name, KeyspaceCreateOptions::default)
                    .map(|keyspace| (name, keyspace))
                    .map_err(storage)
            })
            .collect::<Result<_, _>>()?;
        Ok(FjallStorage { path, db, spaces })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
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

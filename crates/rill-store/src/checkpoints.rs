//! The checkpoint store: snapshots and metadata per job, on fjall.
//!
//! Keyspace `snapshots` maps `job \0 checkpoint (u64 BE) subtask (u32 BE)` to a bincode
//! [`SubtaskSnapshot`]; keyspace `metadata` maps `job \0 checkpoint (u64 BE)` to a bincode
//! [`CheckpointMetadata`]. Snapshots are written without a sync; writing metadata syncs the
//! journal (`PersistMode::SyncAll`), which makes the snapshots written before it durable too.
//! Discarding deletes the metadata first, so a checkpoint is never half there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_core::coordinator::{CheckpointMetadata, CompletedCheckpoint};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;

/// Durable checkpoints of any number of jobs. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct CheckpointStore {
    path: PathBuf,
    db: Database,
    snapshots: Keyspace,
    metadata: Keyspace,
}

fn job_prefix(job: &str) -> Vec<u8> {
    let mut key = job.as_bytes().to_vec();
    key.push(0);
    key
}

fn checkpoint_key(job: &str, checkpoint: CheckpointId) -> Vec<u8> {
    let mut key = job_prefix(job);
    key.extend_from_slice(&checkpoint.0.to_be_bytes());
    key
}

fn snapshot_key(job: &str, checkpoint: CheckpointId, subtask: usize) -> Vec<u8> {
    let mut key = checkpoint_key(job, checkpoint);
    key.extend_from_slice(&(subtask as u32).to_be_bytes());
    key
}

/// The checkpoint a snapshot or metadata key of `job` belongs to.
fn checkpoint_of(job: &str, key: &[u8]) -> Result<CheckpointId, StoreError> {
    key.get(job.len() + 1..job.len() + 9)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(|bytes| CheckpointId(u64::from_be_bytes(bytes)))
        .ok_or_else(|| StoreError::Corrupt {
            job: job.to_owned(),
            reason: format!("a checkpoint key of {} bytes", key.len()),
        })
}

fn encode<T: Serialize>(job: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|error| {
        StoreError::Corrupt {
            job: job.to_owned(),
            reason: format!("cannot encode: {error}"),
        }
    })
}

fn decode<T: DeserializeOwned>(job: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        job: job.to_owned(),
        reason,
    };
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|error| corrupt(error.to_string()))?;
    if read != bytes.len() {
        return Err(corrupt(format!("{} bytes left over", bytes.len() - read)));
    }
    Ok(value)
}

impl CheckpointStore {
    /// Opens the store in `dir`, creating it if needed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = dir.as_ref().to_path_buf();
        let storage = |source| StoreError::of_engine(&path, source);
        let db = Database::builder(&path).open().map_err(storage)?;
        let snapshots = db
            .keyspace("snapshots", KeyspaceCreateOptions::default)
            .map_err(storage)?;
        let metadata = db
            .keyspace("metadata", KeyspaceCreateOptions::default)
            .map_err(storage)?;
        Ok(CheckpointStore {
            path,
            db,
            snapshots,
            metadata,
        })
    }

    fn storage(&self, source: fjall::Error) -> StoreError {
        StoreError::Storage {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes one subtask's snapshot; returns its size in bytes. Not durable until the
    /// checkpoint's metadata is written.
    pub fn write_snapshot(
        &self,
        job: &str,
        checkpoint: CheckpointId,
        subtask: usize,
        snapshot: &SubtaskSnapshot,
    ) -> Result<u64, StoreError> {
        // Frozen state is not serialized: storing it unencoded would lose it.
        if snapshot.is_deferred() {
            return Err(StoreError::Unencoded {
                job: job.to_owned(),
                checkpoint: checkpoint.0,
                subtask,
            });
        }
        let bytes = encode(job, snapshot)?;
        let size = bytes.len() as u64;
        self.snapshots
            .insert(snapshot_key(job, checkpoint, subtask), bytes)
            .map_err(|e| self.storage(e))?;
        Ok(size)
    }

    /// Writes a checkpoint's metadata and syncs: from here on the checkpoint exists.
    pub fn write_metadata(
        &self,
        job: &str,
        metadata: &CheckpointMetadata,
    ) -> Result<(), StoreError> {
        let bytes = encode(job, metadata)?;
        self.metadata
            .insert(checkpoint_key(job, metadata.checkpoint), bytes)
            .map_err(|e| self.storage(e))?;
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.storage(e))
    }

    /// Every completed checkpoint of a job, oldest first.
    pub fn list(&self, job: &str) -> Result<Vec<CheckpointMetadata>, StoreError> {
        self.metadata
            .prefix(job_prefix(job))
            .map(|entry| {
                let value = entry.value().map_err(|e| self.storage(e))?;
                decode(job, &value)
            })
            .collect()
    }

    /// The newest completed checkpoint of a job with all its snapshots, if it has one.
    pub fn latest(&self, job: &str) -> Result<Option<CompletedCheckpoint>, StoreError> {
        match self.list(job)?.pop() {
            Some(metadata) => self.restore_point(job, metadata).map(Some),
            None => Ok(None),
        }
    }

    /// A completed checkpoint of a job with all its snapshots, if it exists.
    pub fn get(
        &self,
        job: &str,
        checkpoint: CheckpointId,
    ) -> Result<Option<CompletedCheckpoint>, StoreError> {
        match self
            .metadata
            .get(checkpoint_key(job, checkpoint))
            .map_err(|e| self.storage(e))?
        {
            Some(bytes) => self.restore_point(job, decode(job, &bytes)?).map(Some),
            None => Ok(None),
        }
    }

    fn restore_point(
        &self,
        job: &str,
        metadata: CheckpointMetadata,
    ) -> Result<CompletedCheckpoint, StoreError> {
        let mut snapshots = BTreeMap::new();
        for entry in self
            .snapshots
            .prefix(checkpoint_key(job, metadata.checkpoint))
        {
            let (key, value) = entry.into_inner().map_err(|e| self.storage(e))?;
            let index = key
                .get(key.len().saturating_sub(4)..)
                .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt {
                    job: job.to_owned(),
                    reason: format!("a snapshot key of {} bytes", key.len()),
                })?;
            snapshots.insert(index as usize, decode(job, &value)?);
        }
        if snapshots.len() != metadata.subtasks {
            return Err(StoreError::Incomplete {
                job: job.to_owned(),
                checkpoint: metadata.checkpoint.0,
                found: snapshots.len(),
                expected: metadata.subtasks,
            });
        }
        Ok(CompletedCheckpoint {
            metadata,
            snapshots: Arc::new(snapshots),
        })
    }

    /// The id after every checkpoint of the job the store has seen, complete or not: where a
    /// new run of the job numbers its checkpoints from, so that it never writes into an old
    /// checkpoint's keys (a restore from an older savepoint, or leftovers of a crash).
    pub fn next_id(&self, job: &str) -> Result<CheckpointId, StoreError> {
        let prefix = job_prefix(job);
        let mut next = 1;
        for keyspace in [&self.snapshots, &self.metadata] {
            if let Some(entry) = keyspace.prefix(&prefix).next_back() {
                let key = entry.key().map_err(|e| self.storage(e))?;
                next = next.max(checkpoint_of(job, &key)?.0.saturating_add(1));
            }
        }
        Ok(CheckpointId(next))
    }

    /// Deletes the snapshots of checkpoints that never completed (a crash while they were
    /// taken left them without metadata); returns how many checkpoints they belonged to.
    pub fn discard_leftovers(&self, job: &str) -> Result<usize, StoreError> {
        let complete: std::collections::BTreeSet<CheckpointId> = self
            .list(job)?
            .into_iter()
            .map(|metadata| metadata.checkpoint)
            .collect();
        let mut discarded = 0;
        let prefix = job_prefix(job);
        let mut from = prefix.clone();
        // One entry read per checkpoint: each seek skips the rest of a checkpoint's snapshots.
        while let Some(entry) = self.snapshots.range(from.clone()..).next() {
            let key = entry.key().map_err(|e| self.storage(e))?;
            if !key.starts_with(&prefix) {
                break;
            }
            let checkpoint = checkpoint_of(job, &key)?;
            if !complete.contains(&checkpoint) {
                self.discard(job, checkpoint)?;
                discarded += 1;
            }
            let Some(next) = checkpoint.0.checked_add(1) else {
                break;
            };
            from = checkpoint_key(job, CheckpointId(next));
        }
        Ok(discarded)
    }

    /// Deletes a checkpoint: its metadata first, then its snapshots.
    pub fn discard(&self, job: &str, checkpoint: CheckpointId) -> Result<(), StoreError> {
        self.metadata
            .remove(checkpoint_key(job, checkpoint))
            .map_err(|e| self.storage(e))?;
        let keys = self
            .snapshots
            .prefix(checkpoint_key(job, checkpoint))
            .map(|entry| entry.key().map_err(|e| self.storage(e)))
            .collect::<Result<Vec<_>, _>>()?;
        for key in keys {
            self.snapshots.remove(key).map_err(|e| self.storage(e))?;
        }
        Ok(())
    }
}

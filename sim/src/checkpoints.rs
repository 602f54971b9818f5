//! The simulated checkpoint store: snapshots and metadata of one job on a [`Journaled`] disk.
//!
//! It keeps the contract of `rill-store`'s checkpoint store: snapshots are written buffered
//! as they are acknowledged; the metadata is written **last** and synced, which makes the
//! snapshots before it durable too; discarding deletes the metadata first. Every value is
//! framed with its length and an xxh3 checksum, so a write torn by a crash is recognised when
//! read back instead of being restored: a checkpoint whose metadata is torn does not exist,
//! and one whose metadata is intact but a snapshot is not is reported as a violation of the
//! store's contract.

use std::collections::BTreeMap;

use rand::Rng;
use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_core::coordinator::{CheckpointMetadata, CompletedCheckpoint};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::disk::{CrashDamage, Durable, Journaled, UnsyncedFate};

/// Where a value lives in the store: ordered by checkpoint, and within one checkpoint the
/// metadata first, then the snapshots by subtask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoreKey {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// The subtask whose snapshot it is; `None` for the metadata.
    pub subtask: Option<usize>,
}

impl StoreKey {
    /// Where a checkpoint's metadata lives.
    pub fn metadata(checkpoint: CheckpointId) -> Self {
        StoreKey {
            checkpoint,
            subtask: None,
        }
    }

    /// Where a subtask's snapshot lives.
    pub fn snapshot(checkpoint: CheckpointId, subtask: usize) -> Self {
        StoreKey {
            checkpoint,
            subtask: Some(subtask),
        }
    }
}

/// One change to the store.
#[derive(Clone, Debug)]
pub enum StoreOp {
    /// Writes a framed value.
    Put(StoreKey, Vec<u8>),
    /// Deletes a value.
    Delete(StoreKey),
}

/// Everything the store holds.
#[derive(Clone, Debug, Default)]
pub struct StoreState {
    values: BTreeMap<StoreKey, Vec<u8>>,
}

impl Durable for StoreState {
    type Op = StoreOp;

    fn apply(&mut self, op: StoreOp) {
        match op {
            StoreOp::Put(key, value) => {
                self.values.insert(key, value);
            }
            StoreOp::Delete(key) => {
                self.values.remove(&key);
            }
        }
    }

    fn torn(op: &StoreOp, rng: &mut impl Rng) -> Option<StoreOp> {
        match op {
            StoreOp::Put(key, value) if !value.is_empty() => {
                let kept = rng.random_range(0..value.len());
                Some(StoreOp::Put(*key, value[..kept].to_vec()))
            }
            StoreOp::Put(..) | StoreOp::Delete(_) => None,
        }
    }
}

/// What the store cannot do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A value could not be encoded.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
    /// Metadata was about to be written before every snapshot of its checkpoint.
    #[error("{checkpoint}: metadata written before the snapshot of subtask {subtask}")]
    MetadataBeforeSnapshots {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// The subtask whose snapshot is missing.
        subtask: usize,
    },
    /// A checkpoint with intact metadata lacks an intact snapshot.
    #[error("{checkpoint} has metadata but the snapshot of subtask {subtask} is {damage}")]
    Inconsistent {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// The subtask.
        subtask: usize,
        /// "missing" or "torn".
        damage: &'static str,
    },
}

const FRAME_HEADER_BYTES: usize = 16;

/// Frames a payload with its length and checksum.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    framed.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    framed.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    framed.extend_from_slice(payload);
    framed
}

/// The payload of an intact frame; `None` for a torn one.
fn unframe(framed: &[u8]) -> Option<&[u8]> {
    let (header, payload) = framed.split_at_checked(FRAME_HEADER_BYTES)?;
    let (length, checksum) = header.split_at(8);
    let length = u64::from_le_bytes(length.try_into().ok()?);
    let checksum = u64::from_le_bytes(checksum.try_into().ok()?);
    (payload.len() as u64 == length && xxhash_rust::xxh3::xxh3_64(payload) == checksum)
        .then_some(payload)
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map(|bytes| frame(&bytes))
        .map_err(|error| StoreError::Encode {
            what: what.to_owned(),
            reason: error.to_string(),
        })
}

fn decode<T: DeserializeOwned>(framed: &[u8]) -> Option<T> {
    let payload = unframe(framed)?;
    bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .ok()
        .map(|(value, _)| value)
}

/// The checkpoint store of the simulated job.
#[derive(Debug)]
pub struct SimCheckpointStore {
    disk: Journaled<StoreState>,
}

impl Default for SimCheckpointStore {
    fn default() -> Self {
        SimCheckpointStore {
            disk: Journaled::new(StoreState::default()),
        }
    }
}

impl SimCheckpointStore {
    /// The write of a subtask's snapshot; the caller writes it buffered with
    /// [`SimCheckpointStore::write`].
    pub fn snapshot_write(
        &self,
        checkpoint: CheckpointId,
        subtask: usize,
        snapshot: &SubtaskSnapshot,
    ) -> Result<StoreOp, StoreError> {
        debug_assert!(!snapshot.is_deferred(), "snapshots are completed first");
        let framed = encode(&format!("{checkpoint} subtask {subtask}"), snapshot)?;
        Ok(StoreOp::Put(
            StoreKey::snapshot(checkpoint, subtask),
            framed,
        ))
    }

    /// The write of `metadata`, after checking that every snapshot it needs is there; the
    /// caller writes it synced with [`SimCheckpointStore::write_synced`].
    pub fn metadata_write(&self, metadata: &CheckpointMetadata) -> Result<StoreOp, StoreError> {
        for subtask in 0..metadata.subtasks {
            let key = StoreKey::snapshot(metadata.checkpoint, subtask);
            if !self.disk.live().values.contains_key(&key) {
                return Err(StoreError::MetadataBeforeSnapshots {
                    checkpoint: metadata.checkpoint,
                    subtask,
                });
            }
        }
        let framed = encode(&format!("{} metadata", metadata.checkpoint), metadata)?;
        Ok(StoreOp::Put(
            StoreKey::metadata(metadata.checkpoint),
            framed,
        ))
    }

    /// Writes, buffered; returns the bytes written.
    pub fn write(&mut self, op: StoreOp) -> u64 {
        let bytes = match &op {
            StoreOp::Put(_, value) => value.len() as u64,
            StoreOp::Delete(_) => 0,
        };
        self.disk.write(op);
        bytes
    }

    /// Writes and syncs: with the metadata, the checkpoint exists from now on.
    pub fn write_synced(&mut self, op: StoreOp) {
        self.disk.write(op);
        self.disk.sync();
    }

    /// Deletes a checkpoint: metadata first, so it is never half there.
    pub fn discard(&mut self, checkpoint: CheckpointId) {
        let keys: Vec<StoreKey> = self.keys_of(checkpoint);
        for key in keys {
            self.disk.write(StoreOp::Delete(key));
        }
    }

    /// The keys of a checkpoint, metadata first.
    fn keys_of(&self, checkpoint: CheckpointId) -> Vec<StoreKey> {
        self.disk
            .live()
            .values
            .range(StoreKey::metadata(checkpoint)..=StoreKey::snapshot(checkpoint, usize::MAX))
            .map(|(&key, _)| key)
            .collect()
    }

    /// One past the newest checkpoint id the store holds anything of.
    pub fn next_id(&self) -> CheckpointId {
        let newest = self
            .disk
            .live()
            .values
            .keys()
            .map(|key| key.checkpoint.0)
            .max()
            .unwrap_or(0);
        CheckpointId(newest + 1)
    }

    fn intact_metadata(&self, checkpoint: CheckpointId) -> Option<CheckpointMetadata> {
        let framed = self
            .disk
            .live()
            .values
            .get(&StoreKey::metadata(checkpoint))?;
        decode::<CheckpointMetadata>(framed).filter(|metadata| metadata.checkpoint == checkpoint)
    }

    /// Deletes what a crash left of checkpoints that never completed (no intact metadata);
    /// returns how many it deleted.
    pub fn discard_leftovers(&mut self) -> usize {
        let checkpoints: Vec<CheckpointId> = self
            .disk
            .live()
            .values
            .keys()
            .map(|key| key.checkpoint)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let leftovers: Vec<CheckpointId> = checkpoints
            .into_iter()
            .filter(|&checkpoint| self.intact_metadata(checkpoint).is_none())
            .collect();
        for &checkpoint in &leftovers {
            self.discard(checkpoint);
        }
        leftovers.len()
    }

    /// The newest checkpoint with intact metadata, with its snapshots.
    pub fn latest(&self) -> Result<Option<CompletedCheckpoint>, StoreError> {
        let newest = self
            .disk
            .live()
            .values
            .keys()
            .rev()
            .filter(|key| key.subtask.is_none())
            .filter_map(|key| self.intact_metadata(key.checkpoint))
            .next();
        let Some(metadata) = newest else {
            return Ok(None);
        };
        let mut snapshots = BTreeMap::new();
        for subtask in 0..metadata.subtasks {
            let key = StoreKey::snapshot(metadata.checkpoint, subtask);
            let framed = self
                .disk
                .live()
                .values
                .get(&key)
                .ok_or(StoreError::Inconsistent {
                    checkpoint: metadata.checkpoint,
                    subtask,
                    damage: "missing",
                })?;
            let snapshot = decode::<SubtaskSnapshot>(framed).ok_or(StoreError::Inconsistent {
                checkpoint: metadata.checkpoint,
                subtask,
                damage: "torn",
            })?;
            snapshots.insert(subtask, snapshot);
        }
        Ok(Some(CompletedCheckpoint {
            metadata,
            snapshots: std::sync::Arc::new(snapshots),
        }))
    }

    /// A crash of the machine or the process.
    pub fn crash(&mut self, fate: UnsyncedFate, rng: &mut impl Rng) -> CrashDamage {
        self.disk.crash(fate, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rill_core::layout::JobLayout;

    fn metadata(checkpoint: u64) -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint: CheckpointId(checkpoint),
            savepoint: false,
            triggered_at_ms: 0,
            acknowledged_at_ms: 0,
            subtasks: 1,
            state_bytes: 0,
            layout: JobLayout::default(),
        }
    }

    fn write_snapshot(store: &mut SimCheckpointStore, checkpoint: u64) {
        let op = store
            .snapshot_write(CheckpointId(checkpoint), 0, &SubtaskSnapshot::default())
            .unwrap();
        store.write(op);
    }

    fn complete(store: &mut SimCheckpointStore, checkpoint: u64) {
        write_snapshot(store, checkpoint);
        let op = store.metadata_write(&metadata(checkpoint)).unwrap();
        store.write_synced(op);
    }

    #[test]
    fn frames_detect_every_truncation() {
        let framed = frame(b"checkpoint");
        assert_eq!(unframe(&framed), Some(&b"checkpoint"[..]));
        for cut in 0..framed.len() {
            assert_eq!(unframe(&framed[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn metadata_needs_its_snapshots_first() {
        let store = SimCheckpointStore::default();
        assert!(matches!(
            store.metadata_write(&metadata(1)),
            Err(StoreError::MetadataBeforeSnapshots { .. })
        ));
    }

    #[test]
    fn a_torn_metadata_write_leaves_the_previous_checkpoint_latest() {
        for seed in 0..10 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut store = SimCheckpointStore::default();
            complete(&mut store, 1);
            write_snapshot(&mut store, 2);
            let op = store.metadata_write(&metadata(2)).unwrap();
            store.write(op);
            store.crash(UnsyncedFate::Torn, &mut rng);
            let latest = store.latest().unwrap().unwrap();
            assert_eq!(latest.id(), CheckpointId(1));
            assert!(store.next_id() >= CheckpointId(2));
            store.discard_leftovers();
            assert_eq!(store.next_id(), CheckpointId(2));
        }
    }
}

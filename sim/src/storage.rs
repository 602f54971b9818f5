//! The simulated disk as `rill-core`'s storage contract, so that `rill-store`'s checkpoint
//! store runs unchanged on it: key spaces in a [`Journaled`] state, one journal entry per
//! batch, synced writes made durable at once.
//!
//! A crash keeps the synced writes and, as the fault says, none, all or a prefix of the rest;
//! a torn write leaves a single value cut short (stricter than fjall, whose journal entries are
//! checksummed and vanish whole: the store must recognise a value cut short by its envelope).
//! The machine can also be made to die *during* the next write: that write is appended but not
//! synced, and the call fails, as the caller would never see it return.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;
use rill_core::storage::{Durability, Entry, Storage, StorageError, WriteOp};

use crate::disk::{CrashDamage, Durable, Journaled, UnsyncedFate};

/// Every key space's entries, by (space, key).
#[derive(Clone, Debug, Default)]
pub struct KeySpaces {
    entries: BTreeMap<(&'static str, Vec<u8>), Vec<u8>>,
}

impl Durable for KeySpaces {
    /// A batch: applied whole.
    type Op = Vec<WriteOp>;

    fn apply(&mut self, batch: Vec<WriteOp>) {
        for op in batch {
            match op {
                WriteOp::Put { space, key, value } => {
                    self.entries.insert((space, key), value);
                }
                WriteOp::Delete { space, key } => {
                    self.entries.remove(&(space, key));
                }
            }
        }
    }

    fn torn(batch: &Vec<WriteOp>, rng: &mut impl Rng) -> Option<Vec<WriteOp>> {
        match batch.as_slice() {
            [WriteOp::Put { space, key, value }] if !value.is_empty() => {
                let kept = rng.random_range(0..value.len());
                Some(vec![WriteOp::Put {
                    space,
                    key: key.clone(),
                    value: value[..kept].to_vec(),
                }])
            }
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Disk {
    journal: Journaled<KeySpaces>,
    /// The machine dies during the next write.
    crash_during_next_write: bool,
    /// It did: the process is gone until the simulator restarts it.
    crashed: bool,
}

/// A simulated disk; clones share it.
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Arc<Mutex<Disk>>);

impl Default for Journaled<KeySpaces> {
    fn default() -> Self {
        Journaled::new(KeySpaces::default())
    }
}

impl SimDisk {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        // One thread runs a world: the lock is never contended, and a panic ends the run.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The machine dies during the next write.
    pub fn crash_during_next_write(&self) {
        self.disk().crash_during_next_write = true;
    }

    /// Whether the machine died during a write since the last crash.
    pub fn crashed_during_write(&self) -> bool {
        self.disk().crashed
    }

    /// A crash of the machine or the process: the disk keeps what `fate` says.
    pub fn crash(&self, fate: UnsyncedFate, rng: &mut impl Rng) -> CrashDamage {
        let mut disk = self.disk();
        disk.crashed = false;
        disk.crash_during_next_write = false;
        disk.journal.crash(fate, rng)
    }

    fn live_range(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Vec<Entry> {
        let start = if from > prefix { from } else { prefix };
        self.disk()
            .journal
            .live()
            .entries
            .range((space, start.to_vec())..)
            .take_while(|((s, key), _)| *s == space && key.starts_with(prefix))
            .take(limit)
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect()
    }
}

impl Storage for SimDisk {
    fn write(&self, ops: Vec<WriteOp>, durability: Durability) -> Result<(), StorageError> {
        let mut disk = self.disk();
        if disk.crashed {
            return Err(StorageError::new("the machine is down"));
        }
        disk.journal.write(ops);
        if std::mem::take(&mut disk.crash_during_next_write) {
            disk.crashed = true;
            return Err(StorageError::new("the machine crashed during this write"));
        }
        if durability == Durability::Synced {
            disk.journal.sync();
        }
        Ok(())
    }

    fn get(&self, space: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .disk()
            .journal
            .live()
            .entries
            .get(&(space, key.to_vec()))
            .cloned())
    }

    fn contains(&self, space: &'static str, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self
            .disk()
            .journal
            .live()
            .entries
            .contains_key(&(space, key.to_vec())))
    }

    fn scan(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.live_range(space, prefix, from, limit))
    }

    fn keys(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        Ok(self
            .live_range(space, prefix, from, limit)
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    fn last_key(
        &self,
        space: &'static str,
        prefix: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .disk()
            .journal
            .live()
            .entries
            .range((space, prefix.to_vec())..)
            .take_while(|((s, key), _)| *s == space && key.starts_with(prefix))
            .last()
            .map(|((_, key), _)| key.clone()))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
    use rill_core::coordinator::CheckpointMetadata;
    use rill_store::CheckpointStore;

    use super::*;

    fn metadata(checkpoint: u64) -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint: CheckpointId(checkpoint),
            savepoint: false,
            triggered_at_ms: 0,
            acknowledged_at_ms: 0,
            subtasks: 1,
            state_bytes: 0,
            layout: rill_core::layout::JobLayout::default(),
        }
    }

    fn complete(store: &CheckpointStore, checkpoint: u64) {
        store
            .write_snapshot(
                "job",
                CheckpointId(checkpoint),
                0,
                &SubtaskSnapshot::default(),
            )
            .expect("snapshot");
        store
            .write_metadata("job", &metadata(checkpoint))
            .expect("metadata");
    }

    #[test]
    fn a_crash_during_the_metadata_write_leaves_the_previous_checkpoint_latest() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let disk = SimDisk::default();
            let store = CheckpointStore::on(Arc::new(disk.clone()), "the simulated disk");
            complete(&store, 1);
            store
                .write_snapshot("job", CheckpointId(2), 0, &SubtaskSnapshot::default())
                .expect("snapshot");
            disk.crash_during_next_write();
            assert!(store.write_metadata("job", &metadata(2)).is_err());
            assert!(disk.crashed_during_write());
            disk.crash(UnsyncedFate::Torn, &mut rng);
            let latest = store.latest("job").expect("readable").expect("one intact");
            assert_eq!(latest.checkpoint.id(), CheckpointId(1));
            assert!(latest.skipped.iter().all(|d| d.is_unfinished_metadata()));
            assert!(store.next_id("job").expect("next") >= CheckpointId(2));
            store.discard_leftovers("job").expect("discard");
            assert_eq!(store.next_id("job").expect("next"), CheckpointId(2));
        }
    }
}

//! The simulated disk as `rill-core`'s storage contract, so that `rill-store`'s checkpoint
//! store runs unchanged on it: key spaces in a [`Journaled`] state, one journal entry per
//! batch, synced writes made durable at once.
//!
//! A crash keeps the synced writes and, as the fault says, none, all or a prefix of the rest.
//! On a disk that tears values ([`SimDisk::tearing`], the checkpoint store's), a torn write
//! leaves a single value cut short — stricter than fjall, whose journal entries are checksummed
//! and vanish whole, so the store must recognise a value cut short by its envelope; on the
//! others ([`SimDisk::atomic`], the event log's) a torn write vanishes whole, as in fjall.
//! The machine can also be made to die *during* the next write: that write is appended but not
//! synced, and the call fails, as the caller would never see it return.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;
use rill_core::storage::{Durability, Entry, Storage, StorageError, WriteOp, scan_start};

use crate::disk::{CrashDamage, Durable, Journaled, UnsyncedFate};

/// A key or value, shared by the live and the durable copy of the disk and by its journal
/// (taken over from the writer's `Vec`, not copied).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(Arc<Vec<u8>>);

impl std::borrow::Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes(Arc::new(bytes))
    }
}

/// One change of a batch, as the journal keeps it.
#[derive(Clone, Debug)]
pub enum SimOp {
    /// Sets a key.
    Put(&'static str, Bytes, Bytes),
    /// Removes a key.
    Delete(&'static str, Bytes),
}

/// Every key space's entries. Keys and values are shared (`Arc`), so that the state and the
/// journal's writes and undos hold one copy of each.
#[derive(Clone, Debug, Default)]
pub struct KeySpaces {
    spaces: BTreeMap<&'static str, BTreeMap<Bytes, Bytes>>,
}

impl KeySpaces {
    fn space(&self, space: &'static str) -> Option<&BTreeMap<Bytes, Bytes>> {
        self.spaces.get(space)
    }

    /// Up to `limit` entries of `space` from `start` on while their keys start with `prefix`.
    fn range(
        &self,
        space: &'static str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.space(space)
            .into_iter()
            .flat_map(move |entries| {
                entries.range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
            })
            .take_while(move |(key, _)| key.starts_with(prefix))
            .take(limit)
    }
}

impl Durable for KeySpaces {
    /// A batch: applied whole.
    type Op = Vec<SimOp>;

    fn apply(&mut self, batch: Vec<SimOp>) -> Vec<SimOp> {
        let mut undo = Vec::with_capacity(batch.len());
        for op in batch {
            let (space, key, before) = match op {
                SimOp::Put(space, key, value) => {
                    let before = self
                        .spaces
                        .entry(space)
                        .or_default()
                        .insert(key.clone(), value);
                    (space, key, before)
                }
                SimOp::Delete(space, key) => {
                    let before = self
                        .spaces
                        .get_mut(space)
                        .and_then(|entries| entries.remove(&key));
                    (space, key, before)
                }
            };
            undo.push(match before {
                Some(value) => SimOp::Put(space, key, value),
                None => SimOp::Delete(space, key),
            });
        }
        undo.reverse();
        undo
    }

    fn torn(batch: &Vec<SimOp>, rng: &mut impl Rng) -> Option<Vec<SimOp>> {
        match batch.as_slice() {
            [SimOp::Put(space, key, value)] if !value.is_empty() => {
                let kept = rng.random_range(0..value.len());
                Some(vec![SimOp::Put(
                    space,
                    key.clone(),
                    value[..kept].to_vec().into(),
                )])
            }
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Disk {
    journal: Journaled<KeySpaces>,
    /// A torn write leaves a value cut short (else nothing).
    tears_values: bool,
    /// The machine dies during the write after this many more.
    crash_in_writes: Option<u32>,
    /// It did: the process is gone until the simulator restarts it.
    crashed: bool,
}

/// A simulated disk; clones share it.
#[derive(Clone, Debug)]
pub struct SimDisk(Arc<Mutex<Disk>>);

impl Default for Journaled<KeySpaces> {
    fn default() -> Self {
        Journaled::new(KeySpaces::default())
    }
}

impl SimDisk {
    /// A disk on which a torn write leaves a value cut short.
    pub fn tearing() -> Self {
        SimDisk::with(Disk {
            tears_values: true,
            ..Disk::default()
        })
    }

    /// A disk on which every write is all or nothing, as fjall's journal makes it.
    pub fn atomic() -> Self {
        SimDisk::with(Disk::default())
    }

    fn with(disk: Disk) -> Self {
        SimDisk(Arc::new(Mutex::new(disk)))
    }

    /// A new disk holding what this one holds durably: what a crash of the machine now would
    /// leave.
    pub fn durable_copy(&self) -> Self {
        let durable = self.disk().journal.durable();
        SimDisk::with(Disk {
            journal: Journaled::new(durable),
            ..Disk::default()
        })
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        // One thread runs a world: the lock is never contended, and a panic ends the run.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The machine dies during the next write.
    pub fn crash_during_next_write(&self) {
        self.crash_during_write(0);
    }

    /// The machine dies during the write after `writes_before` more.
    pub fn crash_during_write(&self, writes_before: u32) {
        self.disk().crash_in_writes = Some(writes_before);
    }

    /// The machine no longer dies during a coming write.
    pub fn disarm_crash(&self) {
        self.disk().crash_in_writes = None;
    }

    /// The machine dies now, in the middle of something that is not a write to this disk
    /// (a commit to another system): later writes fail until the crash.
    pub fn crash_now(&self) {
        let mut disk = self.disk();
        disk.crash_in_writes = None;
        disk.crashed = true;
    }

    /// Whether the machine died during a write since the last crash.
    pub fn crashed_during_write(&self) -> bool {
        self.disk().crashed
    }

    /// Bit rot: flips bits of one random byte of the value stored under `key` in `space`,
    /// where it lies on disk — what the process reads and what survives a crash alike.
    /// Returns the byte's index; `None` (changing nothing) if there is no such value, or if
    /// writes are waiting for a sync (right after a crash there are none), which making the
    /// damage durable would make durable too.
    pub fn flip_bits(&self, space: &'static str, key: &[u8], rng: &mut impl Rng) -> Option<usize> {
        let mut disk = self.disk();
        if !disk.journal.is_synced() {
            return None;
        }
        let stored = disk.journal.live().space(space)?.get(key)?;
        if stored.is_empty() {
            return None;
        }
        let mut damaged = stored.to_vec();
        let at = rng.random_range(0..damaged.len());
        damaged[at] ^= rng.random_range(1..=u8::MAX);
        disk.journal
            .write(vec![SimOp::Put(space, key.to_vec().into(), damaged.into())]);
        disk.journal.sync();
        Some(at)
    }

    /// A crash of the machine or the process: the disk keeps what `fate` says.
    pub fn crash(&self, fate: UnsyncedFate, rng: &mut impl Rng) -> CrashDamage {
        let mut disk = self.disk();
        disk.crashed = false;
        disk.crash_in_writes = None;
        let fate = match fate {
            UnsyncedFate::Torn if !disk.tears_values => UnsyncedFate::RandomPrefix,
            fate => fate,
        };
        disk.journal.crash(fate, rng)
    }
}

impl Storage for SimDisk {
    fn write(&self, ops: Vec<WriteOp>, durability: Durability) -> Result<(), StorageError> {
        let batch = ops
            .into_iter()
            .map(|op| match op {
                WriteOp::Put { space, key, value } => SimOp::Put(space, key.into(), value.into()),
                WriteOp::Delete { space, key } => SimOp::Delete(space, key.into()),
            })
            .collect();
        let mut disk = self.disk();
        if disk.crashed {
            return Err(StorageError::new("the machine is down"));
        }
        disk.journal.write(batch);
        match disk.crash_in_writes {
            Some(0) => {
                disk.crash_in_writes = None;
                disk.crashed = true;
                return Err(StorageError::new("the machine crashed during this write"));
            }
            Some(more) => disk.crash_in_writes = Some(more - 1),
            None => {}
        }
        if durability == Durability::Synced {
            disk.journal.sync();
        }
        Ok(())
    }

    fn get(&self, space: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let disk = self.disk();
        let value = disk
            .journal
            .live()
            .space(space)
            .and_then(|entries| entries.get(key));
        Ok(value.map(|value| value.to_vec()))
    }

    fn contains(&self, space: &'static str, key: &[u8]) -> Result<bool, StorageError> {
        let disk = self.disk();
        let entries = disk.journal.live().space(space);
        Ok(entries.is_some_and(|entries| entries.contains_key(key)))
    }

    fn scan(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = scan_start(prefix, from);
        let disk = self.disk();
        Ok(disk
            .journal
            .live()
            .range(space, prefix, start, limit)
            .map(|(key, value)| (key.to_vec(), value.to_vec()))
            .collect())
    }

    fn keys(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let start = scan_start(prefix, from);
        let disk = self.disk();
        Ok(disk
            .journal
            .live()
            .range(space, prefix, start, limit)
            .map(|(key, _)| key.to_vec())
            .collect())
    }

    fn last_key(
        &self,
        space: &'static str,
        prefix: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let disk = self.disk();
        let Some(entries) = disk.journal.live().space(space) else {
            return Ok(None);
        };
        // The last key below the first key past every key with the prefix.
        let last = match prefix_end(prefix) {
            Some(end) => entries
                .range::<[u8], _>((Bound::Included(prefix), Bound::Excluded(end.as_slice())))
                .next_back(),
            None => entries
                .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
                .next_back(),
        };
        Ok(last.map(|(key, _)| key.to_vec()))
    }
}

/// The smallest key greater than every key that starts with `prefix`; `None` if there is none
/// (the prefix is all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
    use rill_core::coordinator::CheckpointMetadata;
    use rill_store::{CheckpointStore, StoredValue};

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

    fn store_on_a_tearing_disk() -> (SimDisk, CheckpointStore) {
        let disk = SimDisk::tearing();
        let store = CheckpointStore::on(Arc::new(disk.clone()), "the simulated disk");
        (disk, store)
    }

    #[test]
    fn flipped_bits_are_durable_and_the_store_falls_back_past_them() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (disk, store) = store_on_a_tearing_disk();
            complete(&store, 1);
            complete(&store, 2);
            let value = if seed % 2 == 0 {
                StoredValue::Metadata
            } else {
                StoredValue::Snapshot(0)
            };
            let (space, key) = CheckpointStore::stored_at("job", CheckpointId(2), value);
            assert!(disk.flip_bits(space, &key, &mut rng).is_some());
            disk.crash(UnsyncedFate::Lost, &mut rng);
            let latest = store.latest("job").expect("readable").expect("one intact");
            assert_eq!(latest.checkpoint.id(), CheckpointId(1));
            let skipped: Vec<_> = latest
                .skipped
                .iter()
                .map(|d| (d.checkpoint, d.value))
                .collect();
            assert_eq!(skipped, vec![(CheckpointId(2), value)]);
        }
    }

    #[test]
    fn bits_are_not_flipped_under_writes_waiting_for_a_sync() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (disk, store) = store_on_a_tearing_disk();
        complete(&store, 1);
        store
            .write_snapshot("job", CheckpointId(2), 0, &SubtaskSnapshot::default())
            .expect("snapshot");
        let (space, key) =
            CheckpointStore::stored_at("job", CheckpointId(1), StoredValue::Metadata);
        assert_eq!(disk.flip_bits(space, &key, &mut rng), None);
        assert!(
            store
                .latest("job")
                .expect("readable")
                .expect("intact")
                .skipped
                .is_empty()
        );
    }

    #[test]
    fn a_crash_during_the_metadata_write_leaves_the_previous_checkpoint_latest() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (disk, store) = store_on_a_tearing_disk();
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

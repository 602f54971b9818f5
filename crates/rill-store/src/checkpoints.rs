//! The checkpoint store: snapshots and metadata per job, over any [`Storage`] — fjall in
//! production ([`CheckpointStore::open`]), the simulator's journaled disk under crashes.
//!
//! Key space `snapshots` maps `job \0 checkpoint (u64 BE) subtask (u32 BE)` to a
//! [`SubtaskSnapshot`]; key space `metadata` maps `job \0 checkpoint (u64 BE)` to a
//! [`CheckpointMetadata`]. Every value is sealed in a versioned, checksummed
//! [`Envelope`](rill_core::codec::Envelope). Snapshots are written buffered; the metadata is
//! written only once every snapshot it counts is there, and synced, which makes the snapshots
//! before it durable too. Discarding a checkpoint is one atomic batch.
//!
//! Reading back, damage is named — the job, the checkpoint, which value, what is wrong — and
//! never decoded into state. A metadata value cut short is an unfinished write (a crash while
//! the checkpoint completed): that checkpoint never completed, and it is a leftover to delete.
//! Any other damage is kept for inspection: the newest *intact* checkpoint is restored, and
//! what was skipped is reported to the caller, who warns; if no checkpoint is intact, restoring
//! fails.
//!
//! On disk, a store is a directory holding the fjall database and the marker file
//! `RILL_CHECKPOINTS`: a directory without it is refused, never written into (a store written
//! before the marker existed is recognized by fjall's own `version` file and gets one).
//! [`CheckpointStore::open_read_only`] opens a copy, for tools that only look.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_core::codec::{CodecError, Envelope, Kind};
use rill_core::coordinator::{
    CheckpointMetadata, CompletedCheckpoint, RetainedCheckpoint, StoreWrite,
};
use rill_core::storage::{Durability, Storage, StorageError, WriteOp};

use crate::error::StoreError;
use crate::fjall_storage::{FjallStorage, JournalRepair};
use crate::journal::SkippedBatch;

/// The file that marks a directory as a checkpoint store, and its content.
const MARKER_FILE: &str = "RILL_CHECKPOINTS";
const MARKER: &str = "rill-checkpoints 1\n";
/// The file fjall keeps in a database's directory: a store from before the marker has it.
const FJALL_VERSION_FILE: &str = "version";

/// What a directory given as a checkpoint store holds.
enum StoreDir {
    /// Nothing (or it does not exist).
    Empty,
    /// A store.
    Store,
    /// A store written before the marker existed.
    Unmarked,
    /// Something else.
    Foreign,
}

fn inspect_dir(dir: &Path) -> Result<StoreDir, StoreError> {
    let io = |error: std::io::Error| StoreError::of_engine(dir, fjall::Error::Io(error));
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => true,
        Err(error) => return Err(io(error)),
    };
    if empty {
        return Ok(StoreDir::Empty);
    }
    match std::fs::read_to_string(dir.join(MARKER_FILE)) {
        Ok(marker) if marker == MARKER => Ok(StoreDir::Store),
        Ok(_) => Ok(StoreDir::Foreign),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let fjall = std::fs::read(dir.join(FJALL_VERSION_FILE))
                .is_ok_and(|version| version.starts_with(b"FJL"));
            Ok(if fjall && dir.join("keyspaces").is_dir() {
                StoreDir::Unmarked
            } else {
                StoreDir::Foreign
            })
        }
        Err(error) => Err(io(error)),
    }
}

fn write_marker(dir: &Path) -> Result<(), StoreError> {
    let io = |error: std::io::Error| StoreError::of_engine(dir, fjall::Error::Io(error));
    std::fs::create_dir_all(dir).map_err(io)?;
    crate::durable_file::write_durably(dir, MARKER_FILE, MARKER.as_bytes()).map_err(io)
}
#[cfg(feature = "defects")]
use rill_core::defects::Defect;

const SNAPSHOTS: &str = "snapshots";
const METADATA: &str = "metadata";

/// A stored value that cannot be read back as what it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The job.
    pub job: String,
    /// The checkpoint it belongs to.
    pub checkpoint: CheckpointId,
    /// Which value: the metadata, or a subtask's snapshot.
    pub value: StoredValue,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// It is not there, though the metadata counts it.
    Missing,
    /// Its bytes are not the value: torn, damaged, or of a format this build does not read.
    Unreadable(CodecError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("it is missing"),
            Problem::Unreadable(error) => write!(f, "{error}"),
        }
    }
}

/// Which value of a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredValue {
    /// The checkpoint's metadata.
    Metadata,
    /// The snapshot of the subtask of this index.
    Snapshot(usize),
}

impl Damage {
    /// Whether it is a metadata write cut short: the checkpoint never completed. A value
    /// longer than its header says is no write cut short but damage (a flipped length).
    pub fn is_unfinished_metadata(&self) -> bool {
        self.value == StoredValue::Metadata
            && match &self.problem {
                Problem::Unreadable(CodecError::TooShort { .. }) => true,
                Problem::Unreadable(CodecError::LengthMismatch { declared, actual }) => {
                    actual < declared
                }
                Problem::Unreadable(_) | Problem::Missing => false,
            }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = match self.value {
            StoredValue::Metadata => "the metadata".to_owned(),
            StoredValue::Snapshot(subtask) => format!("the snapshot of subtask {subtask}"),
        };
        write!(
            f,
            "{value} of {} of job '{}' is damaged: {}",
            self.checkpoint, self.job, self.problem
        )
    }
}

/// The newest intact checkpoint of a job, and the damaged ones newer than it that were
/// skipped (a caller warns of them).
#[derive(Clone, Debug, PartialEq)]
pub struct IntactCheckpoint {
    /// The checkpoint to restore.
    pub checkpoint: CompletedCheckpoint,
    /// Newer checkpoints passed over, and why.
    pub skipped: Vec<Damage>,
}

/// A metadata value as read back: the checkpoint its key names, and the metadata or what is
/// wrong with it.
type StoredMetadata = (CheckpointId, Result<CheckpointMetadata, Damage>);

/// Durable checkpoints of any number of jobs. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct CheckpointStore {
    storage: Arc<dyn Storage>,
    /// Where the store is, for errors: its directory.
    location: String,
    /// The journals opening the store cut short (or, read-only, would have).
    repairs: Vec<JournalRepair>,
    /// The damaged journal batches a read-only open read around.
    skipped: Vec<SkippedBatch>,
    /// Planted on purpose (feature `defects`, for the simulator): `StoreLatestSkipsNewest`
    /// or `StoreDiscardOverreaches`.
    #[cfg(feature = "defects")]
    defect: Option<Defect>,
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

/// The checkpoint (and, for a snapshot key, the subtask) a key of `job` names.
fn parse_key(job: &str, key: &[u8]) -> Result<(CheckpointId, Option<usize>), StoreError> {
    let rest = key.get(job.len() + 1..).unwrap_or_default();
    let malformed = || StoreError::MalformedKey {
        job: job.to_owned(),
        len: key.len(),
    };
    let (checkpoint, subtask) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
    let checkpoint = CheckpointId(u64::from_be_bytes(*checkpoint));
    match subtask.len() {
        0 => Ok((checkpoint, None)),
        4 => {
            let index = u32::from_be_bytes(subtask.try_into().map_err(|_| malformed())?);
            Ok((checkpoint, Some(index as usize)))
        }
        _ => Err(malformed()),
    }
}

/// The metadata stored under `checkpoint`'s key, or what is wrong with it (its bytes, or a
/// checkpoint id other than its key's).
fn decode_metadata(
    job: &str,
    checkpoint: CheckpointId,
    value: &[u8],
) -> Result<CheckpointMetadata, Damage> {
    let damage = |error| Damage {
        job: job.to_owned(),
        checkpoint,
        value: StoredValue::Metadata,
        problem: Problem::Unreadable(error),
    };
    let metadata: CheckpointMetadata =
        Envelope::open(Kind::CheckpointMetadata, value).map_err(damage)?;
    if metadata.checkpoint != checkpoint {
        return Err(damage(CodecError::Payload(format!(
            "stored under {checkpoint} but names {}",
            metadata.checkpoint
        ))));
    }
    Ok(metadata)
}

impl CheckpointStore {
    /// Opens the store in the directory `dir` (fjall), creating it if `dir` is missing or
    /// empty; a directory that holds anything but a store is refused
    /// ([`StoreError::NotACheckpointStore`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        match inspect_dir(dir)? {
            StoreDir::Foreign => return Err(StoreError::NotACheckpointStore(dir.to_path_buf())),
            StoreDir::Empty | StoreDir::Unmarked => write_marker(dir)?,
            StoreDir::Store => {}
        }
        Self::on_fjall(FjallStorage::open(dir, &[SNAPSHOTS, METADATA])?)
    }

    /// Opens the store in `dir` to read it, changing nothing there: a copy is opened, and
    /// what opening would repair is reported ([`CheckpointStore::journal_repairs`]). A missing
    /// directory is [`StoreError::NoCheckpointStore`], anything but a store
    /// [`StoreError::NotACheckpointStore`].
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        match inspect_dir(dir)? {
            StoreDir::Empty if !dir.exists() => {
                Err(StoreError::NoCheckpointStore(dir.to_path_buf()))
            }
            StoreDir::Empty | StoreDir::Foreign => {
                Err(StoreError::NotACheckpointStore(dir.to_path_buf()))
            }
            StoreDir::Store | StoreDir::Unmarked => {
                Self::on_fjall(FjallStorage::open_read_only(dir, &[SNAPSHOTS, METADATA])?)
            }
        }
    }

    fn on_fjall(storage: FjallStorage) -> Result<Self, StoreError> {
        let location = storage.path().display().to_string();
        let repairs = storage.repairs().to_vec();
        let skipped = storage.skipped_batches().to_vec();
        let mut store = CheckpointStore::on(Arc::new(storage), location);
        store.repairs = repairs;
        store.skipped = skipped;
        Ok(store)
    }

    /// The journals opening the store cut short, dropping what they held (or, opened
    /// read-only, would have): damage to report. Checkpoints written since the damage are
    /// lost; the newest intact one is what [`CheckpointStore::latest`] returns.
    pub fn journal_repairs(&self) -> &[JournalRepair] {
        &self.repairs
    }

    /// The damaged journal batches a read-only open left out, reading the rest: damage to
    /// report (opening the store for writing refuses it).
    pub fn skipped_journal_batches(&self) -> &[SkippedBatch] {
        &self.skipped
    }

    /// The store on `storage`; `location` names it in errors.
    pub fn on(storage: Arc<dyn Storage>, location: impl Into<String>) -> Self {
        CheckpointStore {
            storage,
            location: location.into(),
            repairs: Vec::new(),
            skipped: Vec::new(),
            #[cfg(feature = "defects")]
            defect: None,
        }
    }

    /// Breaks the store on purpose, for the simulator to catch.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        if matches!(
            defect,
            Defect::StoreLatestSkipsNewest | Defect::StoreDiscardOverreaches
        ) {
            self.defect = Some(defect);
        }
    }

    /// How many of the newest checkpoints `latest` passes over without looking: none, unless
    /// a planted defect skips the newest of two or more.
    #[cfg(feature = "defects")]
    fn newest_skipped(&self, checkpoints: usize) -> usize {
        usize::from(self.defect == Some(Defect::StoreLatestSkipsNewest) && checkpoints >= 2)
    }

    #[cfg(not(feature = "defects"))]
    fn newest_skipped(&self, _checkpoints: usize) -> usize {
        0
    }

    /// Where the snapshots a discard deletes are: the checkpoint's own (`prefix`, from the
    /// start of it) — unless a planted defect scans the whole job from the checkpoint on,
    /// taking every newer checkpoint's snapshots too.
    #[cfg(feature = "defects")]
    fn discarded_snapshots(&self, job: &str, checkpoint_key: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        if self.defect == Some(Defect::StoreDiscardOverreaches) {
            return (job_prefix(job), checkpoint_key);
        }
        (checkpoint_key, Vec::new())
    }

    #[cfg(not(feature = "defects"))]
    fn discarded_snapshots(&self, _job: &str, checkpoint_key: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        (checkpoint_key, Vec::new())
    }

    fn storage_error(&self, source: StorageError) -> StoreError {
        StoreError::Storage {
            location: self.location.clone(),
            source,
        }
    }

    /// Carries out a write the checkpoint coordinator asked for; returns the bytes a snapshot
    /// took (0 for the rest).
    pub fn write(&self, job: &str, write: &StoreWrite) -> Result<u64, StoreError> {
        match write {
            StoreWrite::Snapshot {
                checkpoint,
                subtask,
                snapshot,
            } => self.write_snapshot(job, *checkpoint, *subtask, snapshot),
            StoreWrite::Metadata(metadata) => self.write_metadata(job, metadata).map(|()| 0),
            StoreWrite::Discard(checkpoint) => self.discard(job, *checkpoint).map(|()| 0),
        }
    }

    /// Writes one subtask's snapshot, buffered; returns its size in bytes. Durable once the
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
        let value = Envelope::seal(Kind::SubtaskSnapshot, snapshot).map_err(|error| {
            StoreError::Encode {
                job: job.to_owned(),
                checkpoint,
                error,
            }
        })?;
        let size = value.len() as u64;
        let put = WriteOp::Put {
            space: SNAPSHOTS,
            key: snapshot_key(job, checkpoint, subtask),
            value,
        };
        self.storage
            .write(vec![put], Durability::Buffered)
            .map_err(|e| self.storage_error(e))?;
        Ok(size)
    }

    /// Writes a checkpoint's metadata and syncs: from here on the checkpoint exists. Refused
    /// unless every snapshot the metadata counts was written before it.
    pub fn write_metadata(
        &self,
        job: &str,
        metadata: &CheckpointMetadata,
    ) -> Result<(), StoreError> {
        for subtask in 0..metadata.subtasks {
            let key = snapshot_key(job, metadata.checkpoint, subtask);
            if !self
                .storage
                .contains(SNAPSHOTS, &key)
                .map_err(|e| self.storage_error(e))?
            {
                return Err(StoreError::MetadataBeforeSnapshots {
                    job: job.to_owned(),
                    checkpoint: metadata.checkpoint,
                    subtask,
                });
            }
        }
        let value = Envelope::seal(Kind::CheckpointMetadata, metadata).map_err(|error| {
            StoreError::Encode {
                job: job.to_owned(),
                checkpoint: metadata.checkpoint,
                error,
            }
        })?;
        let put = WriteOp::Put {
            space: METADATA,
            key: checkpoint_key(job, metadata.checkpoint),
            value,
        };
        self.storage
            .write(vec![put], Durability::Synced)
            .map_err(|e| self.storage_error(e))
    }

    /// Where a value of a checkpoint is kept in the storage beneath the store: its key space
    /// and key. For tools that look beneath the store, and for the simulator, which damages
    /// stored values to see that a restore notices.
    pub fn stored_at(
        job: &str,
        checkpoint: CheckpointId,
        value: StoredValue,
    ) -> (&'static str, Vec<u8>) {
        match value {
            StoredValue::Metadata => (METADATA, checkpoint_key(job, checkpoint)),
            StoredValue::Snapshot(subtask) => (SNAPSHOTS, snapshot_key(job, checkpoint, subtask)),
        }
    }

    /// Every metadata value of a job, oldest first, decoded or damaged.
    fn metadata_of(&self, job: &str) -> Result<Vec<StoredMetadata>, StoreError> {
        let entries = self
            .storage
            .scan(METADATA, &job_prefix(job), &[], usize::MAX)
            .map_err(|e| self.storage_error(e))?;
        entries
            .into_iter()
            .map(|(key, value)| {
                let (checkpoint, _) = parse_key(job, &key)?;
                let decoded = decode_metadata(job, checkpoint, &value);
                Ok((checkpoint, decoded))
            })
            .collect()
    }

    /// The job's intact completed checkpoints that count towards retention (not savepoints),
    /// oldest first. Damaged ones are left out: they are kept for inspection.
    pub fn retained(&self, job: &str) -> Result<Vec<CheckpointId>, StoreError> {
        Ok(self
            .metadata_of(job)?
            .into_iter()
            .filter_map(|(checkpoint, metadata)| {
                metadata
                    .ok()
                    .is_some_and(|metadata| !metadata.savepoint)
                    .then_some(checkpoint)
            })
            .collect())
    }

    /// Every completed checkpoint of a job, oldest first; an error names the first damaged
    /// one (a metadata write cut short is an unfinished checkpoint, not listed).
    pub fn list(&self, job: &str) -> Result<Vec<CheckpointMetadata>, StoreError> {
        let mut listed = Vec::new();
        for (_, metadata) in self.metadata_of(job)? {
            match metadata {
                Ok(metadata) => listed.push(metadata),
                Err(damage) if damage.is_unfinished_metadata() => {}
                Err(damage) => return Err(StoreError::Damaged(damage)),
            }
        }
        Ok(listed)
    }

    /// The newest completed checkpoint of a job whose metadata and snapshots are all intact,
    /// and the damaged ones passed over; `None` if the job has no checkpoint at all. Fails if
    /// checkpoints are there but none is intact.
    pub fn latest(&self, job: &str) -> Result<Option<IntactCheckpoint>, StoreError> {
        let mut skipped = Vec::new();
        let stored = self.metadata_of(job)?;
        let passed_over = self.newest_skipped(stored.len());
        for (_, metadata) in stored.into_iter().rev().skip(passed_over) {
            let metadata = match metadata {
                Ok(metadata) => metadata,
                Err(damage) => {
                    skipped.push(damage);
                    continue;
                }
            };
            match self.snapshots_of(job, &metadata)? {
                Ok(snapshots) => {
                    return Ok(Some(IntactCheckpoint {
                        checkpoint: CompletedCheckpoint {
                            metadata,
                            snapshots: Arc::new(snapshots),
                        },
                        skipped,
                    }));
                }
                Err(damage) => skipped.push(damage),
            }
        }
        if skipped.iter().all(Damage::is_unfinished_metadata) {
            return Ok(None);
        }
        Err(StoreError::NoIntactCheckpoint {
            job: job.to_owned(),
            damaged: skipped,
        })
    }

    /// A completed checkpoint of a job with all its snapshots, if it exists; an error if it
    /// is damaged.
    pub fn get(
        &self,
        job: &str,
        checkpoint: CheckpointId,
    ) -> Result<Option<CompletedCheckpoint>, StoreError> {
        let Some(value) = self
            .storage
            .get(METADATA, &checkpoint_key(job, checkpoint))
            .map_err(|e| self.storage_error(e))?
        else {
            return Ok(None);
        };
        let metadata = decode_metadata(job, checkpoint, &value).map_err(StoreError::Damaged)?;
        let snapshots = self
            .snapshots_of(job, &metadata)?
            .map_err(StoreError::Damaged)?;
        Ok(Some(CompletedCheckpoint {
            metadata,
            snapshots: Arc::new(snapshots),
        }))
    }

    /// A checkpoint the job master kept, with its snapshots: read back from the store if it
    /// kept the metadata only ([`RetainedCheckpoint::Stored`]) — an error if one is damaged or
    /// missing —, as it is if it kept them in memory.
    pub fn read_back(
        &self,
        job: &str,
        retained: RetainedCheckpoint,
    ) -> Result<CompletedCheckpoint, StoreError> {
        match retained {
            RetainedCheckpoint::InMemory(completed) => Ok(completed),
            RetainedCheckpoint::Stored(metadata) => {
                let snapshots = self
                    .snapshots_of(job, &metadata)?
                    .map_err(StoreError::Damaged)?;
                Ok(CompletedCheckpoint {
                    metadata,
                    snapshots: Arc::new(snapshots),
                })
            }
        }
    }

    /// Every snapshot a checkpoint's metadata counts, decoded: the outer error is the
    /// storage's, the inner one the first damaged (or missing) snapshot.
    fn snapshots_of(
        &self,
        job: &str,
        metadata: &CheckpointMetadata,
    ) -> Result<Result<BTreeMap<usize, SubtaskSnapshot>, Damage>, StoreError> {
        let checkpoint = metadata.checkpoint;
        let entries = self
            .storage
            .scan(SNAPSHOTS, &checkpoint_key(job, checkpoint), &[], usize::MAX)
            .map_err(|e| self.storage_error(e))?;
        let mut snapshots = BTreeMap::new();
        for (key, value) in entries {
            let (_, Some(subtask)) = parse_key(job, &key)? else {
                continue;
            };
            match Envelope::open::<SubtaskSnapshot>(Kind::SubtaskSnapshot, &value) {
                Ok(snapshot) => {
                    snapshots.insert(subtask, snapshot);
                }
                Err(error) => {
                    return Ok(Err(Damage {
                        job: job.to_owned(),
                        checkpoint,
                        value: StoredValue::Snapshot(subtask),
                        problem: Problem::Unreadable(error),
                    }));
                }
            }
        }
        if let Some(missing) = (0..metadata.subtasks).find(|s| !snapshots.contains_key(s)) {
            return Ok(Err(Damage {
                job: job.to_owned(),
                checkpoint,
                value: StoredValue::Snapshot(missing),
                problem: Problem::Missing,
            }));
        }
        Ok(Ok(snapshots))
    }

    /// The id after every checkpoint of the job the store has seen, complete or not: where a
    /// new run of the job numbers its checkpoints from, so that it never writes into an old
    /// checkpoint's keys (a restore from an older savepoint, or leftovers of a crash).
    pub fn next_id(&self, job: &str) -> Result<CheckpointId, StoreError> {
        let prefix = job_prefix(job);
        let mut next = 1;
        for space in [SNAPSHOTS, METADATA] {
            if let Some(key) = self
                .storage
                .last_key(space, &prefix)
                .map_err(|e| self.storage_error(e))?
            {
                next = next.max(parse_key(job, &key)?.0.0.saturating_add(1));
            }
        }
        Ok(CheckpointId(next))
    }

    /// Deletes what checkpoints that never completed left behind: snapshots without metadata,
    /// and metadata whose write was cut short (a crash while they were taken); returns how
    /// many checkpoints they belonged to. Damaged checkpoints are kept, for inspection.
    pub fn discard_leftovers(&self, job: &str) -> Result<usize, StoreError> {
        let mut complete = BTreeSet::new();
        let mut unfinished = BTreeSet::new();
        for (checkpoint, metadata) in self.metadata_of(job)? {
            match metadata {
                Err(damage) if damage.is_unfinished_metadata() => {
                    unfinished.insert(checkpoint);
                }
                _ => {
                    complete.insert(checkpoint);
                }
            }
        }
        let prefix = job_prefix(job);
        let mut from = prefix.clone();
        // One key read per checkpoint: each seek skips the rest of a checkpoint's snapshots.
        while let Some(key) = self
            .storage
            .keys(SNAPSHOTS, &prefix, &from, 1)
            .map_err(|e| self.storage_error(e))?
            .pop()
        {
            let (checkpoint, _) = parse_key(job, &key)?;
            if !complete.contains(&checkpoint) {
                unfinished.insert(checkpoint);
            }
            let Some(next) = checkpoint.0.checked_add(1) else {
                break;
            };
            from = checkpoint_key(job, CheckpointId(next));
        }
        for &checkpoint in &unfinished {
            self.discard(job, checkpoint)?;
        }
        Ok(unfinished.len())
    }

    /// Deletes a checkpoint, its metadata and snapshots in one atomic batch.
    pub fn discard(&self, job: &str, checkpoint: CheckpointId) -> Result<(), StoreError> {
        let key = checkpoint_key(job, checkpoint);
        let (prefix, from) = self.discarded_snapshots(job, key.clone());
        let snapshots = self
            .storage
            .keys(SNAPSHOTS, &prefix, &from, usize::MAX)
            .map_err(|e| self.storage_error(e))?;
        let mut ops = vec![WriteOp::Delete {
            space: METADATA,
            key,
        }];
        ops.extend(snapshots.into_iter().map(|key| WriteOp::Delete {
            space: SNAPSHOTS,
            key,
        }));
        self.storage
            .write(ops, Durability::Buffered)
            .map_err(|e| self.storage_error(e))
    }
}

//! The event log: opening a log directory, topics, appending, reading, durability.
//!
//! # On disk
//! A log directory holds a format marker file (`RILL_LOG`, content [`FORMAT`]: `rill-log 3`)
//! and a fjall database in `db/`, reached through `rill-core`'s storage contract (so that the
//! simulator runs this code on its simulated disk). Records live in the key space
//! `rill.records` in **entries** of up to 64 consecutive records of one partition (and 64 KiB,
//! unless one record is larger): an append writes one entry per partition it reaches (more if
//! it is larger), not one per record. An entry is keyed by the topic's name, a zero byte, the
//! partition (u32, big-endian) and the offset of its *last* record (u64, big-endian), so that a
//! range scan from an offset's key starts at the entry that holds it and reads on in offset
//! order; its value is the records' stored forms in one envelope of log records, whose count
//! gives the entry's first offset. Topic metadata lives in `rill.topics`. Every value is
//! sealed in `rill-core`'s versioned, checksummed envelope, so a damaged entry is reported with
//! its topic, partition and offsets, never read as data. (Format 1 kept one fjall keyspace per
//! topic and no envelopes, format 2 one entry per record; this version reads neither.)
//!
//! # Offsets and concurrency
//! End offsets are recovered at open from the last key of each partition, then kept in memory.
//! An append encodes its records without any lock, then takes the topic's lock to assign
//! offsets, commits one atomic fjall batch, and only then *publishes* the new end offsets
//! (atomics that readers load without the lock). So offsets are dense, a failed append leaves no
//! gap, and a reader never sees an offset that was not written, nor waits for a writer.
//!
//! # Durability
//! Every append hands its batch to the OS before returning (a buffered write), so
//! a crash of the process loses nothing appended; [`EventLog::flush`] fsyncs, so a crash of the
//! machine loses nothing flushed. Fsync per append would cost milliseconds per batch; callers
//! choose when it matters (a sink at a checkpoint, the CLI at the end of its input).
//!
//! # One process at a time
//! fjall locks its database directory: while one [`EventLog`] (and its clones) has a log open,
//! opening it again, from this process or another, fails with [`LogError::Locked`] (after
//! fjall's retries, about 200 ms).
//!
//! # Damage
//! [`EventLog::open`] refuses a log fjall cannot open (a journal batch whose checksum fails:
//! the error names the journal and its bytes) and a topic whose metadata does not decode, and
//! reports a journal fjall cut short ([`EventLog::journal_repairs`]: what followed the cut is
//! lost). [`EventLog::open_read_only`] opens a copy and takes no lock: it changes nothing,
//! reads around what it can (damaged journal stretches, unreadable topics) and reports it, so
//! that [`crate::check`] can say what is intact and [`crate::salvage`] copy it.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rill_core::codec::{Envelope, Kind};
use rill_core::storage::{Durability, Storage, StorageError, WriteOp};
use rill_store::{FjallStorage, JournalRepair, SkippedBatch, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::record::{
    EncodedRecords, LogRecord, ProducerRecord, RecordPosition, Records, open_records,
    partition_for_key, seal_records,
};
use crate::transaction::Transactions;
use crate::wire::RECORD_OVERHEAD_MAX;

/// The format of the logs this build reads and writes, as its marker file names it. Change it
/// whenever what the log stores changes (a key's layout, a value's encoding); the golden file
/// of each format (`tests/golden/`) fails the tests until then.
pub const FORMAT: &str = "rill-log 3";
/// The file that marks a directory as a Rill log: the format and a newline.
const MARKER_FILE: &str = "RILL_LOG";
/// The marker is written here first and renamed (`rill_store::durable_file`), so it is never
/// seen half-written.
const MARKER_TMP_FILE: &str = "RILL_LOG.tmp";
/// The fjall database's folder inside the log directory.
const DATABASE_DIR: &str = "db";
/// Topic metadata, by the topic's name.
const TOPICS: &str = "rill.topics";
/// Records, by topic, partition and offset.
pub(crate) const RECORDS: &str = "rill.records";
/// Transactions' metadata and their staged records (see [`crate::transaction`]).
pub(crate) const TRANSACTIONS: &str = "rill.transactions";
pub(crate) const STAGED: &str = "rill.staged";
/// The newest checkpoint each writer committed (see [`crate::transaction`]).
pub(crate) const COMMIT_MARKS: &str = "rill.commit-marks";
const SPACES: [&str; 5] = [TOPICS, RECORDS, TRANSACTIONS, STAGED, COMMIT_MARKS];
/// Records per entry of `rill.records`, at most: a read decodes the whole entry its first
/// offset is in.
const ENTRY_RECORDS_MAX: usize = 64;
/// Bytes of stored records per entry of `rill.records`, at most, unless one record is larger.
const ENTRY_BYTES_MAX: usize = 64 * 1024;
/// Entries of `rill.records` a read asks the storage for at first; it doubles that while it
/// needs more.
const READ_ENTRIES_FIRST: usize = 2;
const TOPIC_NAME_LEN_MAX: usize = 128;
const PARTITIONS_MAX: u32 = 1024;

/// A topic's name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// How many partitions it has.
    pub partitions: u32,
}

/// A topic's metadata as stored in `rill.topics` (enveloped), keyed by the topic's name.
#[derive(Serialize, Deserialize)]
struct TopicMeta {
    partitions: u32,
}

pub(crate) struct Topic {
    pub(crate) info: TopicInfo,
    /// The topic's name and a zero byte: what its record keys start with.
    pub(crate) key_prefix: Vec<u8>,
    /// Offset assignment; held from assigning offsets until the end offsets are published.
    appends: Mutex<AppendState>,
    /// The end offset of each partition as committed: what readers see.
    committed_ends: Box<[AtomicU64]>,
}

struct AppendState {
    /// The next offset to assign, per partition; equal to `committed_ends` outside an append.
    next_offsets: Vec<u64>,
    next_round_robin: u32,
}

impl Topic {
    fn new(info: TopicInfo, end_offsets: Vec<u64>) -> Self {
        debug_assert_eq!(end_offsets.len(), info.partitions as usize);
        let committed_ends = end_offsets.iter().copied().map(AtomicU64::new).collect();
        Topic {
            key_prefix: topic_prefix(&info.name),
            info,
            appends: Mutex::new(AppendState {
                next_offsets: end_offsets,
                next_round_robin: 0,
            }),
            committed_ends,
        }
    }

    pub(crate) fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        self.committed_ends
            .get(partition as usize)
            .map(|end| end.load(Ordering::Acquire))
            .ok_or_else(|| LogError::UnknownPartition {
                topic: self.info.name.clone(),
                partition,
                partitions: self.info.partitions,
            })
    }
}

pub(crate) struct Inner {
    path: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Open transactions and their staged records (see [`crate::transaction`]).
    pub(crate) transactions: Transactions,
    /// Planted on purpose (feature `defects`, for the simulator): `LogPrepareSkipsSync` or
    /// `LogCommitMovesInTwoWrites`.
    #[cfg(feature = "defects")]
    pub(crate) defect: std::sync::OnceLock<rill_core::defects::Defect>,
    /// What opening found damaged.
    damage: StorageDamage,
}

/// What opening a log found damaged in its storage.
#[derive(Default)]
struct StorageDamage {
    repairs: Vec<JournalRepair>,
    skipped: Vec<SkippedBatch>,
    unreadable_topics: Vec<(String, LogError)>,
}

/// An open event log. Cheap to clone; clones share the log and may be used from any thread.
#[derive(Clone)]
pub struct EventLog {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn topic_prefix(topic: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(topic.len() + 13);
    prefix.extend_from_slice(topic.as_bytes());
    prefix.push(0);
    prefix
}

/// What the keys of one partition's records start with.
pub(crate) fn partition_prefix(topic_prefix: &[u8], partition: u32) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(topic_prefix.len() + 12);
    prefix.extend_from_slice(topic_prefix);
    prefix.extend_from_slice(&partition.to_be_bytes());
    prefix
}

/// The key of the entry whose last record is at `offset` (and where a scan for `offset` starts).
pub(crate) fn record_key(topic_prefix: &[u8], partition: u32, offset: u64) -> Vec<u8> {
    let mut key = partition_prefix(topic_prefix, partition);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// The offset in an entry's key (its last record's); `None` if the key is not an entry key of
/// the partition whose keys start with `partition_prefix`.
fn offset_of_key(key: &[u8], partition_prefix: &[u8]) -> Option<u64> {
    let offset: [u8; 8] = key.strip_prefix(partition_prefix)?.try_into().ok()?;
    Some(u64::from_be_bytes(offset))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

fn valid_topic_name(name: &str) -> bool {
    (1..=TOPIC_NAME_LEN_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state is rolled back on every error path, so a panic elsewhere while it was
    // held cannot have left it half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the format marker so that it is either absent or complete, even across a crash.
fn write_marker(dir: &Path) -> Result<(), LogError> {
    rill_store::durable_file::write_durably(dir, MARKER_FILE, format!("{FORMAT}\n").as_bytes())
        .map_err(io_error(&dir.join(MARKER_FILE)))
}

/// Whether `dir` is missing or holds nothing but a marker that was never finished.
fn is_missing_or_empty(dir: &Path) -> Result<bool, LogError> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        // A file: `open` refuses it.
        Ok(_) => return Ok(false),
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(true),
        Err(error) => return Err(io_error(dir)(error)),
    }
    let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        if entry.file_name() != MARKER_TMP_FILE {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `dir` if it is a Rill log directory of this format (see [`EventLog::open`]).
fn checked_log_dir(dir: &Path) -> Result<PathBuf, LogError> {
    let path = dir.to_path_buf();
    match std::fs::metadata(&path) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => return Err(LogError::NotARillLog(path)),
        Err(error) if error.kind() == ErrorKind::NotFound => {
            return Err(LogError::NotFound(path));
        }
        Err(error) => return Err(io_error(&path)(error)),
    }
    let marker_path = path.join(MARKER_FILE);
    let marker = match std::fs::read(&marker_path) {
        Ok(marker) => marker,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            return Err(LogError::NotARillLog(path));
        }
        Err(error) => return Err(io_error(&marker_path)(error)),
    };
    if marker.strip_suffix(b"\n") != Some(FORMAT.as_bytes()) {
        let found = String::from_utf8_lossy(&marker);
        return Err(LogError::UnsupportedFormat {
            path,
            found: found.trim().chars().take(64).collect(),
        });
    }
    Ok(path)
}

/// The error of opening the database of the log at `path`.
fn open_error(path: &Path) -> impl FnOnce(StoreError) -> LogError + '_ {
    move |error| match error {
        StoreError::Locked(_) => LogError::Locked {
            path: path.to_path_buf(),
            holder: crate::holder::describe(path),
        },
        source => LogError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        },
    }
}

/// Topics recovered by name, and those that could not be, by name, with why.
type RecoveredTopics = (BTreeMap<String, Arc<Topic>>, Vec<(String, LogError)>);

/// The topics `storage` holds, with their end offsets; and those that cannot be recovered, by
/// name, with why. Fails only if the topics cannot be listed at all.
fn recover_topics(storage: &dyn Storage, path: &Path) -> Result<RecoveredTopics, LogError> {
    let stored = storage
        .scan(TOPICS, &[], &[], usize::MAX)
        .map_err(|source| LogError::Storage {
            path: path.to_path_buf(),
            doing: format!("listing the topics ({TOPICS})"),
            source,
        })?;
    let mut topics = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (name, value) in stored {
        let name = String::from_utf8_lossy(&name).into_owned();
        match recover_topic(storage, path, &name, &value) {
            Ok(topic) => {
                topics.insert(name, Arc::new(topic));
            }
            Err(error) => unreadable.push((name, error)),
        }
    }
    Ok((topics, unreadable))
}

/// The topic `name` whose metadata is `value`, with its end offsets.
fn recover_topic(
    storage: &dyn Storage,
    path: &Path,
    name: &str,
    value: &[u8],
) -> Result<Topic, LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        topic: name.to_owned(),
        reason: format!("its metadata ({TOPICS}): {reason}"),
    };
    if !valid_topic_name(name) {
        return Err(corrupt("the topic's name is invalid".to_owned()));
    }
    let topic_meta: TopicMeta =
        Envelope::open(Kind::LogTopic, value).map_err(|error| corrupt(error.to_string()))?;
    if topic_meta.partitions == 0 || topic_meta.partitions > PARTITIONS_MAX {
        return Err(corrupt(format!("{} partitions", topic_meta.partitions)));
    }
    let prefix = topic_prefix(name);
    let end_offsets = (0..topic_meta.partitions)
        .map(|partition| recover_end_offset(storage, path, &prefix, (name, partition)))
        .collect::<Result<Vec<_>, _>>()?;
    tracing::debug!(topic = %name, ?end_offsets, "recovered a topic");
    let info = TopicInfo {
        name: name.to_owned(),
        partitions: topic_meta.partitions,
    };
    Ok(Topic::new(info, end_offsets))
}

impl EventLog {
    /// Opens an existing Rill log directory.
    ///
    /// Fails with [`LogError::NotFound`] if `dir` does not exist, [`LogError::NotARillLog`] if
    /// it is not a Rill log (no format marker: an unrelated directory, a file, another fjall
    /// database), [`LogError::UnsupportedFormat`] if its marker names a format this version
    /// does not know, and [`LogError::Locked`] if it is open elsewhere. Damage fails it too:
    /// a journal batch whose checksum fails ([`LogError::Open`], naming the journal), a topic's
    /// metadata that does not decode. A journal that fjall cut short on opening (an unfinished
    /// write, or damage that broke its framing: everything after it is lost) is logged and
    /// reported by [`EventLog::journal_repairs`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        let path = checked_log_dir(dir.as_ref())?;
        let storage =
            FjallStorage::open(&path.join(DATABASE_DIR), &SPACES).map_err(open_error(&path))?;
        crate::holder::record(&path);
        let damage = StorageDamage {
            repairs: storage.repairs().to_vec(),
            ..StorageDamage::default()
        };
        Self::recover(Arc::new(storage), path, damage)
    }

    /// Opens an existing Rill log directory to read it, changing nothing there: a copy of its
    /// database is opened (in a temporary directory, removed when the log is dropped), and
    /// writes fail. Damage is read around and reported instead of failing the open: what
    /// opening would cut from a journal ([`EventLog::journal_repairs`]), journal batches whose
    /// checksum fails, left out of the copy ([`EventLog::skipped_batches`]), topics whose
    /// metadata does not decode ([`EventLog::unreadable_topics`]). This is what
    /// `rill log check` and `rill log salvage` read a damaged log with. Refuses what
    /// [`EventLog::open`] refuses but a lock: another process may have the log open.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        let path = checked_log_dir(dir.as_ref())?;
        let storage = FjallStorage::open_read_only(&path.join(DATABASE_DIR), &SPACES)
            .map_err(open_error(&path))?;
        let damage = StorageDamage {
            repairs: storage.repairs().to_vec(),
            skipped: storage.skipped_batches().to_vec(),
            ..StorageDamage::default()
        };
        let storage: Arc<dyn Storage> = Arc::new(storage);
        let (topics, unreadable) = recover_topics(storage.as_ref(), &path)?;
        Ok(Self::assemble(
            storage,
            path,
            topics,
            StorageDamage {
                unreadable_topics: unreadable,
                ..damage
            },
        ))
    }

    /// Opens a Rill log directory, creating it (and writing the format marker) if it does not
    /// exist or is empty. Any other directory is refused as by [`EventLog::open`].
    pub fn open_or_create(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        let path = dir.as_ref();
        if is_missing_or_empty(path)? {
            std::fs::create_dir_all(path).map_err(io_error(path))?;
            write_marker(path)?;
            tracing::info!(path = %path.display(), "created a Rill log");
        }
        Self::open(path)
    }

    /// The log kept in `storage` (any implementation of the storage contract: the simulator's
    /// disk, say); `path` names it in errors. Topics and their end offsets are recovered from
    /// what the storage holds.
    pub fn on(storage: Arc<dyn Storage>, path: PathBuf) -> Result<Self, LogError> {
        Self::recover(storage, path, StorageDamage::default())
    }

    /// The log in `storage`, which fails if a topic cannot be recovered.
    fn recover(
        storage: Arc<dyn Storage>,
        path: PathBuf,
        damage: StorageDamage,
    ) -> Result<Self, LogError> {
        let (topics, unreadable) = recover_topics(storage.as_ref(), &path)?;
        if let Some((_, error)) = unreadable.into_iter().next() {
            return Err(error);
        }
        Ok(Self::assemble(storage, path, topics, damage))
    }

    fn assemble(
        storage: Arc<dyn Storage>,
        path: PathBuf,
        topics: BTreeMap<String, Arc<Topic>>,
        damage: StorageDamage,
    ) -> Self {
        EventLog {
            inner: Arc::new(Inner {
                path,
                storage,
                topics: RwLock::new(topics),
                transactions: Transactions::default(),
                #[cfg(feature = "defects")]
                defect: std::sync::OnceLock::new(),
                damage,
            }),
        }
    }

    /// The journals that opening the log cut short (or, opened read-only, would have): fjall
    /// found an unfinished write or damage there, and whatever the journal held after it is
    /// lost — appends, topics, commits. Logged as a warning when the log opens.
    pub fn journal_repairs(&self) -> &[JournalRepair] {
        &self.inner.damage.repairs
    }

    /// The damaged journal batches a read-only open left out (see
    /// [`EventLog::open_read_only`]): the writes in them are lost, the rest is read.
    pub fn skipped_batches(&self) -> &[SkippedBatch] {
        &self.inner.damage.skipped
    }

    /// The topics a read-only open could not recover (their metadata or keys are damaged), by
    /// name, with what is wrong; they are not among [`EventLog::topics`].
    pub fn unreadable_topics(&self) -> &[(String, LogError)] {
        &self.inner.damage.unreadable_topics
    }

    /// The log's directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The error of a storage failure while the log was `doing` something (the topic,
    /// partition and offsets, transaction or key space it was at).
    pub(crate) fn storage_error(&self, source: StorageError, doing: String) -> LogError {
        LogError::Storage {
            path: self.inner.path.clone(),
            doing,
            source,
        }
    }

    pub(crate) fn topic_handle(&self, topic: &str) -> Result<Arc<Topic>, LogError> {
        let topics = self
            .inner
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        topics
            .get(topic)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))
    }

    /// Creates a topic with `partitions` partitions (1 to 1024); durable when this returns.
    ///
    /// A name has 1 to 128 characters from `A-Z a-z 0-9 . _ -`.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        if !valid_topic_name(topic) {
            return Err(LogError::InvalidTopicName(topic.to_owned()));
        }
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(LogError::InvalidPartitionCount(
                partitions,
                topic.to_owned(),
            ));
        }
        let mut topics = self
            .inner
            .topics
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if topics.contains_key(topic) {
            return Err(LogError::TopicExists(topic.to_owned()));
        }
        let meta = Envelope::seal(Kind::LogTopic, &TopicMeta { partitions }).map_err(|error| {
            LogError::Encode {
                topic: topic.to_owned(),
                reason: format!("topic metadata: {error}"),
            }
        })?;
        // A topic is metadata users rely on at once (producers in another process next): make
        // it durable now rather than at the next flush.
        let put = WriteOp::Put {
            space: TOPICS,
            key: topic.as_bytes().to_vec(),
            value: meta,
        };
        self.inner
            .storage
            .write(vec![put], Durability::Synced)
            .map_err(|e| self.storage_error(e, format!("creating topic '{topic}'")))?;
        tracing::info!(topic, partitions, "created a topic");
        let info = TopicInfo {
            name: topic.to_owned(),
            partitions,
        };
        let end_offsets = vec![0; partitions as usize];
        topics.insert(topic.to_owned(), Arc::new(Topic::new(info, end_offsets)));
        Ok(())
    }

    /// A topic's name and partition count.
    pub fn topic(&self, topic: &str) -> Result<TopicInfo, LogError> {
        Ok(self.topic_handle(topic)?.info.clone())
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<TopicInfo> {
        let topics = self
            .inner
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        topics.values().map(|topic| topic.info.clone()).collect()
    }

    /// Appends one record. For many records, [`EventLog::append_batch`] is much cheaper.
    pub fn append(&self, topic: &str, record: ProducerRecord) -> Result<RecordPosition, LogError> {
        let mut positions = self.append_batch(topic, vec![record])?;
        debug_assert_eq!(positions.len(), 1);
        positions.pop().ok_or_else(|| LogError::Corrupt {
            topic: topic.to_owned(),
            reason: "an append of one record returned no position".to_owned(),
        })
    }

    /// Appends records atomically (all or none) and returns their positions, in order.
    ///
    /// A record goes to its explicit partition (an error if out of range, and then nothing is
    /// appended), else to [`partition_for_key`] of its key, else round-robin. Records without
    /// a timestamp get the append time. The records are in the OS's buffers when this returns:
    /// they survive a crash of this process, and a crash of the machine once
    /// [`EventLog::flush`] has returned.
    pub fn append_batch(
        &self,
        topic: &str,
        records: Vec<ProducerRecord>,
    ) -> Result<Vec<RecordPosition>, LogError> {
        let handle = self.topic_handle(topic)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = encode_records(&handle.info, &records)?;
        drop(records);
        self.commit_encoded(&handle, &encoded, |_| {})
    }

    /// Assigns offsets to encoded records and writes them, as entries of consecutive records
    /// per partition, in one atomic batch together with whatever `also` adds to it; then
    /// publishes the new end offsets.
    ///
    /// The batch goes to the OS at commit (one write), so that a crash of the process loses
    /// nothing that returned; fsync waits for [`EventLog::flush`].
    pub(crate) fn commit_encoded(
        &self,
        handle: &Topic,
        encoded: &EncodedRecords,
        also: impl FnOnce(&mut Vec<WriteOp>),
    ) -> Result<Vec<RecordPosition>, LogError> {
        let partitions = handle.info.partitions;
        let mut state = lock(&handle.appends);
        let round_robin_before = state.next_round_robin;
        let mut positions = Vec::with_capacity(encoded.len());
        // Each partition's records, in order: they get consecutive offsets from its end.
        let mut by_partition: BTreeMap<u32, (u64, Vec<&[u8]>)> = BTreeMap::new();
        for (partition, stored) in encoded.iter() {
            let partition = partition.unwrap_or_else(|| {
                let partition = state.next_round_robin % partitions;
                state.next_round_robin = state.next_round_robin.wrapping_add(1);
                partition
            });
            let next = &mut state.next_offsets[partition as usize];
            let offset = *next;
            *next += 1;
            by_partition
                .entry(partition)
                .or_insert_with(|| (offset, Vec::new()))
                .1
                .push(stored);
            positions.push(RecordPosition { partition, offset });
        }
        let mut batch: Vec<WriteOp> = by_partition
            .iter()
            .flat_map(|(&partition, (first, records))| {
                entries(&handle.key_prefix, partition, *first, records)
            })
            .collect();
        also(&mut batch);
        let written = self
            .inner
            .storage
            .write(batch, Durability::Buffered)
            .map_err(|error| {
                let doing = format!(
                    "appending {} record(s) to topic '{}' partition(s) {:?}",
                    positions.len(),
                    handle.info.name,
                    by_partition.keys().collect::<Vec<_>>()
                );
                self.storage_error(error, doing)
            });
        if let Err(error) = written {
            // Nothing was written: give the offsets back, so that the partitions stay dense.
            for position in positions.iter().rev() {
                state.next_offsets[position.partition as usize] -= 1;
            }
            state.next_round_robin = round_robin_before;
            return Err(error);
        }
        // Publish while still holding the lock, so that end offsets only ever grow.
        for position in &positions {
            handle.committed_ends[position.partition as usize]
                .store(position.offset + 1, Ordering::Release);
        }
        debug_assert!(
            state
                .next_offsets
                .iter()
                .zip(handle.committed_ends.iter())
                .all(|(next, end)| *next == end.load(Ordering::Relaxed))
        );
        Ok(positions)
    }

    /// Up to `max_records` records of one partition from `from_offset` on, in offset order.
    ///
    /// Reading at the end offset gives no records; past it is [`LogError::OffsetOutOfRange`].
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.read_bounded(topic, partition, from_offset, (max_records, usize::MAX))
    }

    /// Like [`EventLog::read`], and stops once the records read hold `max_bytes` of keys and
    /// values (the record that reaches it included: at least one record, when there is one).
    pub fn read_bounded(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        (max_records, max_bytes): (usize, usize),
    ) -> Result<Vec<LogRecord>, LogError> {
        let handle = self.topic_handle(topic)?;
        let end = handle.end_offset(partition)?;
        if from_offset > end {
            return Err(LogError::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition,
                offset: from_offset,
                end,
            });
        }
        let stop = end.min(from_offset.saturating_add(max_records as u64));
        let count = usize::try_from(stop - from_offset).unwrap_or(usize::MAX);
        let mut records = Vec::with_capacity(count);
        let corrupt = |reason: String| LogError::Corrupt {
            topic: topic.to_owned(),
            reason: format!("partition {partition}: {reason}"),
        };
        let prefix = partition_prefix(&handle.key_prefix, partition);
        let mut next = from_offset;
        let mut limit = READ_ENTRIES_FIRST;
        let mut bytes = 0usize;
        while next < stop && (bytes < max_bytes || records.is_empty()) {
            // Every entry holds at least one record still wanted: never more entries than that.
            let wanted = usize::try_from(stop - next).unwrap_or(usize::MAX);
            let entries = self
                .inner
                .storage
                .scan(
                    RECORDS,
                    &prefix,
                    &record_key(&handle.key_prefix, partition, next),
                    limit.min(wanted),
                )
                .map_err(|e| {
                    let doing =
                        format!("reading topic '{topic}' partition {partition} from offset {next}");
                    self.storage_error(e, doing)
                })?;
            // Offsets below the end offset are all written: a gap means the storage lost records.
            if entries.is_empty() {
                return Err(corrupt(format!(
                    "offset {next} is missing (the partition ends at offset {end})"
                )));
            }
            for (key, value) in entries {
                if next == stop || (bytes >= max_bytes && !records.is_empty()) {
                    break;
                }
                let (first, last, stored) =
                    open_entry(&key, &value, &prefix).map_err(|damage| {
                        corrupt(match damage {
                            EntryDamage::Key { len } => {
                                format!("an entry key of {len} bytes after offset {next}")
                            }
                            EntryDamage::Value { last, reason } => format!(
                                "offset {next}, in the entry that ends at offset {last}: {reason}"
                            ),
                        })
                    })?;
                let damaged = |offset: u64, reason: String| {
                    corrupt(format!(
                        "offset {offset}, in the entry that ends at offset {last}: {reason}"
                    ))
                };
                // Only the first entry read may start before the offset wanted.
                if first > next || (first < next && next != from_offset) {
                    return Err(corrupt(format!(
                        "offset {next} is missing (the next entry holds offsets {first} to {last})"
                    )));
                }
                let mut offset = first;
                for record in stored {
                    // Decoded even when skipped: damage is an error, never passed over.
                    let (_, record, _) = record.map_err(|reason| damaged(offset, reason))?;
                    offset += 1;
                    if offset <= next {
                        continue;
                    }
                    if next == stop || (bytes >= max_bytes && !records.is_empty()) {
                        break;
                    }
                    bytes = bytes
                        .saturating_add(record.value.len())
                        .saturating_add(record.key.map_or(0, <[u8]>::len));
                    records.push(LogRecord {
                        partition,
                        offset: next,
                        key: record.key.map(<[u8]>::to_vec),
                        value: record.value.to_vec(),
                        timestamp: record.timestamp,
                    });
                    next += 1;
                }
            }
            limit = limit.saturating_mul(2);
        }
        debug_assert!(records.len() == count || bytes >= max_bytes);
        Ok(records)
    }

    /// The next offset to be written, for each partition (indexed by partition).
    ///
    /// Each value is an end offset some append committed; a concurrent append may have
    /// published some partitions' new ends and not yet others'.
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, LogError> {
        let handle = self.topic_handle(topic)?;
        Ok(handle
            .committed_ends
            .iter()
            .map(|end| end.load(Ordering::Acquire))
            .collect())
    }

    /// Makes everything appended so far durable: it survives a crash of the machine.
    pub fn flush(&self) -> Result<(), LogError> {
        // SyncAll (fsync) rather than SyncData (fdatasync): the journal file grows with every
        // append, and fdatasync only promises the new length where the file system treats it as
        // needed for reading the data back; fsync writes it everywhere. Flushes come once per
        // batch of records or checkpoint, so the extra cost is small next to losing data.
        self.inner
            .storage
            .write(Vec::new(), Durability::Synced)
            .map_err(|e| self.storage_error(e, "making appends durable (fsync)".to_owned()))
    }
}

/// Where a record goes if that needs no shared state (`None`: round-robin, decided when
/// offsets are assigned), and its timestamp (`now` if it has none); an explicit partition out
/// of range is an error.
pub(crate) fn placement(
    topic: &TopicInfo,
    record: &ProducerRecord,
    now: i64,
) -> Result<(Option<u32>, i64), LogError> {
    let partitions = topic.partitions;
    let partition = match (record.partition, &record.key) {
        (Some(partition), _) if partition >= partitions => {
            return Err(LogError::UnknownPartition {
                topic: topic.name.clone(),
                partition,
                partitions,
            });
        }
        (Some(partition), _) => Some(partition),
        (None, Some(key)) => Some(partition_for_key(key, partitions)),
        (None, None) => None,
    };
    Ok((partition, record.timestamp.unwrap_or(now)))
}

/// Room the stored forms of `records` take at most.
pub(crate) fn stored_bytes_max(records: &[ProducerRecord]) -> usize {
    records
        .iter()
        .map(|record| {
            record.key.as_ref().map_or(0, Vec::len) + record.value.len() + RECORD_OVERHEAD_MAX
        })
        .sum()
}

/// Places and encodes the records (see [`placement`]).
fn encode_records(
    topic: &TopicInfo,
    records: &[ProducerRecord],
) -> Result<EncodedRecords, LogError> {
    let now = now_ms();
    let mut encoded = EncodedRecords::with_capacity(records.len(), stored_bytes_max(records));
    for record in records {
        let (partition, timestamp) = placement(topic, record, now)?;
        encoded.push(partition, record.key.as_deref(), &record.value, timestamp);
    }
    Ok(encoded)
}

/// The entries of one partition's records, the first at offset `first`: runs of at most
/// [`ENTRY_RECORDS_MAX`] records and [`ENTRY_BYTES_MAX`] bytes, each keyed by its last offset.
fn entries(topic_prefix: &[u8], partition: u32, first: u64, records: &[&[u8]]) -> Vec<WriteOp> {
    let mut ops = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, stored) in records.iter().enumerate() {
        let full = index - start == ENTRY_RECORDS_MAX
            || (index > start && bytes + stored.len() > ENTRY_BYTES_MAX);
        if full {
            ops.push(entry(
                topic_prefix,
                partition,
                first,
                start,
                &records[start..index],
            ));
            (start, bytes) = (index, 0);
        }
        bytes += stored.len();
    }
    if start < records.len() {
        ops.push(entry(
            topic_prefix,
            partition,
            first,
            start,
            &records[start..],
        ));
    }
    ops
}

/// One entry: `records`, the first of which is the partition's record `first + start`.
fn entry(
    topic_prefix: &[u8],
    partition: u32,
    first: u64,
    start: usize,
    records: &[&[u8]],
) -> WriteOp {
    let last = first + (start + records.len()) as u64 - 1;
    WriteOp::Put {
        space: RECORDS,
        key: record_key(topic_prefix, partition, last),
        value: seal_records(records),
    }
}

/// Why an entry of a partition's records cannot be read.
pub(crate) enum EntryDamage {
    /// Its key is not an entry key of the partition.
    Key {
        /// The key's length.
        len: usize,
    },
    /// Its value (an envelope of records) does not open, or holds a count of records that
    /// cannot end at the key's offset.
    Value {
        /// The offset its key names: its last record's.
        last: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Opens the entry stored under `key`, of the partition whose keys start with
/// `partition_prefix`: its first and last offsets and its records, decoded as they are taken.
pub(crate) fn open_entry<'a>(
    key: &[u8],
    value: &'a [u8],
    partition_prefix: &[u8],
) -> Result<(u64, u64, Records<'a, false>), EntryDamage> {
    let last = offset_of_key(key, partition_prefix).ok_or(EntryDamage::Key { len: key.len() })?;
    let stored = open_records(value).map_err(|reason| EntryDamage::Value { last, reason })?;
    let first = last
        .checked_add(1)
        .and_then(|end| end.checked_sub(stored.len()))
        .filter(|_| stored.len() > 0)
        .ok_or_else(|| EntryDamage::Value {
            last,
            reason: format!("it holds {} records", stored.len()),
        })?;
    Ok((first, last, stored))
}

/// The end offset of a partition as stored: one past its last record's offset.
fn recover_end_offset(
    storage: &dyn Storage,
    path: &Path,
    topic_prefix: &[u8],
    (topic, partition): (&str, u32),
) -> Result<u64, LogError> {
    let prefix = partition_prefix(topic_prefix, partition);
    let last = storage
        .last_key(RECORDS, &prefix)
        .map_err(|source| LogError::Storage {
            path: path.to_path_buf(),
            doing: format!("finding the end offset of topic '{topic}' partition {partition}"),
            source,
        })?;
    let Some(key) = last else {
        return Ok(0);
    };
    let offset = offset_of_key(&key, &prefix).ok_or_else(|| LogError::Corrupt {
        topic: topic.to_owned(),
        reason: format!("partition {partition}: a record key of {} bytes", key.len()),
    })?;
    offset.checked_add(1).ok_or_else(|| LogError::Corrupt {
        topic: topic.to_owned(),
        reason: format!("partition {partition}: a record key holds the offset {offset}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_sort_by_topic_then_partition_then_offset() {
        let (a, b) = (topic_prefix("a"), topic_prefix("a.b"));
        let keys = [
            record_key(&a, 0, 0),
            record_key(&a, 0, 1),
            record_key(&a, 0, 255),
            record_key(&a, 0, 256),
            record_key(&a, 0, u64::MAX),
            record_key(&a, 1, 0),
            record_key(&a, 256, 0),
            record_key(&b, 0, 0),
        ];
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        let seven = partition_prefix(&a, 7);
        assert_eq!(offset_of_key(&record_key(&a, 7, 42), &seven), Some(42));
        assert_eq!(
            offset_of_key(&record_key(&a, 7, 42), &partition_prefix(&a, 8)),
            None
        );
        assert_eq!(offset_of_key(&[0; 11], &seven), None);
    }

    #[test]
    fn the_topic_metadata_format_is_pinned() {
        // Format version 1 of a log topic's metadata: the partition count as a varint. A
        // change here needs a version bump of `Kind::LogTopic`, reading the old one.
        let sealed = Envelope::seal(Kind::LogTopic, &TopicMeta { partitions: 3 }).unwrap();
        assert_eq!(&sealed[..7], &[b'R', b'I', b'L', b'L', 5, 1, 0]);
        assert_eq!(&sealed[rill_core::codec::HEADER_BYTES..], &[3]);
        let opened: TopicMeta = Envelope::open(Kind::LogTopic, &sealed).unwrap();
        assert_eq!(opened.partitions, 3);
    }

    #[test]
    fn topic_names_are_checked() {
        assert!(valid_topic_name("a.b_c-D9"));
        assert!(valid_topic_name(&"x".repeat(128)));
        assert!(!valid_topic_name(&"x".repeat(129)));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/b"));
        assert!(!valid_topic_name("ünï"));
    }
}

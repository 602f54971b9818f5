//! The event log: opening a log directory, topics, appending, reading, durability.
//!
//! Records of topic `t` live in the fjall keyspace `topic.t`, keyed by the partition (u32,
//! big-endian) followed by the offset (u64, big-endian), so that a range scan reads one
//! partition in offset order. Topic metadata lives in the keyspace `rill.topics`. End offsets are
//! recovered at open from the last key of each partition and then kept in memory; an append
//! takes the topic's lock, commits one atomic fjall batch, and only then advances the end
//! offsets, so a reader never sees an offset that was not written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::record::{LogRecord, ProducerRecord, RecordPosition, StoredRecord, partition_for_key};

/// The file that marks a directory as a Rill log, and its content for this format.
const MARKER_FILE: &str = "RILL_LOG";
const MARKER: &str = "rill-log 1\n";
/// The fjall database's folder inside the log directory.
const DATABASE_DIR: &str = "db";
const TOPICS_KEYSPACE: &str = "rill.topics";
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

#[derive(Serialize, Deserialize)]
struct TopicMeta {
    partitions: u32,
}

struct Topic {
    info: TopicInfo,
    records: Keyspace,
    appends: Mutex<AppendState>,
}

struct AppendState {
    end_offsets: Vec<u64>,
    next_round_robin: u32,
}

struct Inner {
    path: PathBuf,
    db: Database,
    meta: Keyspace,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
}

/// An open event log. Cheap to clone; clones share the log and may be used from any thread.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn record_key(partition: u32, offset: u64) -> [u8; 12] {
    let mut key = [0; 12];
    key[..4].copy_from_slice(&partition.to_be_bytes());
    key[4..].copy_from_slice(&offset.to_be_bytes());
    key
}

fn offset_of_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(4..12)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn valid_topic_name(name: &str) -> bool {
    (1..=TOPIC_NAME_LEN_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state is only changed after a successful commit, so a panic elsewhere while
    // it was held cannot have left it half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EventLog {
    /// Opens an existing Rill log directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        let path = dir.as_ref().to_path_buf();
        if !path.is_dir() {
            return Err(LogError::NotFound(path));
        }
        let marker_path = path.join(MARKER_FILE);
        let marker = match std::fs::read_to_string(&marker_path) {
            Ok(marker) => marker,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(LogError::NotARillLog(path));
            }
            Err(source) => {
                return Err(LogError::Io {
                    path: marker_path,
                    source,
                });
            }
        };
        if marker != MARKER {
            return Err(LogError::UnsupportedFormat {
                path,
                found: marker.trim().to_owned(),
            });
        }
        Self::open_database(path)
    }

    /// Opens a Rill log directory, creating it if it does not exist or is empty.
    pub fn open_or_create(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        let path = dir.as_ref().to_path_buf();
        let io_error = |source| LogError::Io {
            path: path.clone(),
            source,
        };
        let is_empty = match std::fs::read_dir(&path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => true,
            Err(error) => return Err(io_error(error)),
        };
        if is_empty {
            std::fs::create_dir_all(&path).map_err(io_error)?;
            let marker_path = path.join(MARKER_FILE);
            let write_marker = || -> std::io::Result<()> {
                let mut file = std::fs::File::create(&marker_path)?;
                std::io::Write::write_all(&mut file, MARKER.as_bytes())?;
                file.sync_all()
            };
            write_marker().map_err(|source| LogError::Io {
                path: marker_path.clone(),
                source,
            })?;
        }
        Self::open(path)
    }

    fn open_database(path: PathBuf) -> Result<Self, LogError> {
        let storage = |source: fjall::Error| match source {
            fjall::Error::Locked => LogError::Locked(path.clone()),
            source => LogError::Storage {
                path: path.clone(),
                source,
            },
        };
        let db = Database::builder(path.join(DATABASE_DIR))
            .open()
            .map_err(storage)?;
        let meta = db
            .keyspace(TOPICS_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(storage)?;
        let mut topics = BTreeMap::new();
        for entry in meta.iter() {
            let (name, value) = entry.into_inner().map_err(storage)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let (topic_meta, _): (TopicMeta, _) =
                bincode::serde::decode_from_slice(&value, bincode_config()).map_err(|error| {
                    LogError::Corrupt {
                        topic: name.clone(),
                        reason: format!("topic metadata: {error}"),
                    }
                })?;
            let records = db
                .keyspace(&format!("topic.{name}"), KeyspaceCreateOptions::default)
                .map_err(storage)?;
            let end_offsets = (0..topic_meta.partitions)
                .map(|partition| recover_end_offset(&records, partition).map_err(storage))
                .collect::<Result<Vec<_>, _>>()?;
            let info = TopicInfo {
                name: name.clone(),
                partitions: topic_meta.partitions,
            };
            topics.insert(
                name,
                Arc::new(Topic {
                    info,
                    records,
                    appends: Mutex::new(AppendState {
                        end_offsets,
                        next_round_robin: 0,
                    }),
                }),
            );
        }
        Ok(EventLog {
            inner: Arc::new(Inner {
                path,
                db,
                meta,
                topics: RwLock::new(topics),
            }),
        })
    }

    /// The log's directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn storage_error(&self, source: fjall::Error) -> LogError {
        LogError::Storage {
            path: self.inner.path.clone(),
            source,
        }
    }

    fn topic_handle(&self, topic: &str) -> Result<Arc<Topic>, LogError> {
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

    /// Creates a topic with `partitions` partitions; durable when this returns.
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
        let records = self
            .inner
            .db
            .keyspace(&format!("topic.{topic}"), KeyspaceCreateOptions::default)
            .map_err(|e| self.storage_error(e))?;
        let meta = bincode::serde::encode_to_vec(TopicMeta { partitions }, bincode_config())
            .map_err(|error| LogError::Corrupt {
                topic: topic.to_owned(),
                reason: format!("cannot encode topic metadata: {error}"),
            })?;
        self.inner
            .meta
            .insert(topic, meta)
            .map_err(|e| self.storage_error(e))?;
        // A topic is metadata users rely on at once (producers in other processes): make it
        // durable now rather than at the next flush.
        self.inner
            .db
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.storage_error(e))?;
        topics.insert(
            topic.to_owned(),
            Arc::new(Topic {
                info: TopicInfo {
                    name: topic.to_owned(),
                    partitions,
                },
                records,
                appends: Mutex::new(AppendState {
                    end_offsets: vec![0; partitions as usize],
                    next_round_robin: 0,
                }),
            }),
        );
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

    /// Appends one record.
    pub fn append(&self, topic: &str, record: ProducerRecord) -> Result<RecordPosition, LogError> {
        let mut positions = self.append_batch(topic, vec![record])?;
        positions.pop().ok_or_else(|| LogError::Corrupt {
            topic: topic.to_owned(),
            reason: "an append of one record returned no position".to_owned(),
        })
    }

    /// Appends records atomically (all or none) and returns their positions, in order.
    ///
    /// The records are in the OS's buffers when this returns: they survive a crash of this
    /// process, and a crash of the machine once [`EventLog::flush`] has returned.
    pub fn append_batch(
        &self,
        topic: &str,
        records: Vec<ProducerRecord>,
    ) -> Result<Vec<RecordPosition>, LogError> {
        let handle = self.topic_handle(topic)?;
        let partitions = handle.info.partitions;
        let now = now_ms();
        let mut state = lock(&handle.appends);
        let mut end_offsets = state.end_offsets.clone();
        let mut round_robin = state.next_round_robin;
        let mut batch = self.inner.db.batch();
        let mut positions = Vec::with_capacity(records.len());
        for record in records {
            let partition = match (record.partition, &record.key) {
                (Some(partition), _) if partition >= partitions => {
                    return Err(LogError::UnknownPartition {
                        topic: topic.to_owned(),
                        partition,
                        partitions,
                    });
                }
                (Some(partition), _) => partition,
                (None, Some(key)) => partition_for_key(key, partitions),
                (None, None) => {
                    let partition = round_robin % partitions;
                    round_robin = round_robin.wrapping_add(1);
                    partition
                }
            };
            let offset = end_offsets[partition as usize];
            let stored = StoredRecord {
                key: record.key,
                value: record.value,
                timestamp: record.timestamp.unwrap_or(now),
            };
            let value =
                bincode::serde::encode_to_vec(&stored, bincode_config()).map_err(|error| {
                    LogError::Corrupt {
                        topic: topic.to_owned(),
                        reason: format!("cannot encode a record: {error}"),
                    }
                })?;
            batch.insert(&handle.records, record_key(partition, offset), value);
            end_offsets[partition as usize] = offset + 1;
            positions.push(RecordPosition { partition, offset });
        }
        batch.commit().map_err(|e| self.storage_error(e))?;
        state.end_offsets = end_offsets;
        state.next_round_robin = round_robin;
        Ok(positions)
    }

    fn partition_end(&self, handle: &Topic, partition: u32) -> Result<u64, LogError> {
        let state = lock(&handle.appends);
        state
            .end_offsets
            .get(partition as usize)
            .copied()
            .ok_or_else(|| LogError::UnknownPartition {
                topic: handle.info.name.clone(),
                partition,
                partitions: handle.info.partitions,
            })
    }

    /// Up to `max_records` records of one partition from `from_offset` on, in offset order.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        let handle = self.topic_handle(topic)?;
        let end = self.partition_end(&handle, partition)?;
        if from_offset > end {
            return Err(LogError::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition,
                offset: from_offset,
                end,
            });
        }
        let stop = end.min(from_offset.saturating_add(max_records as u64));
        let mut records = Vec::with_capacity((stop - from_offset) as usize);
        if stop == from_offset {
            return Ok(records);
        }
        for entry in handle
            .records
            .range(record_key(partition, from_offset)..record_key(partition, stop))
        {
            let (key, value) = entry.into_inner().map_err(|e| self.storage_error(e))?;
            let corrupt = |reason: String| LogError::Corrupt {
                topic: topic.to_owned(),
                reason,
            };
            let offset = offset_of_key(&key)
                .ok_or_else(|| corrupt(format!("a record key of {} bytes", key.len())))?;
            let (stored, _): (StoredRecord, _) =
                bincode::serde::decode_from_slice(&value, bincode_config()).map_err(|error| {
                    corrupt(format!("partition {partition} offset {offset}: {error}"))
                })?;
            records.push(LogRecord {
                partition,
                offset,
                key: stored.key,
                value: stored.value,
                timestamp: stored.timestamp,
            });
        }
        // Offsets below the end offset are all written: a gap means the storage lost records.
        if records.len() as u64 != stop - from_offset {
            return Err(LogError::Corrupt {
                topic: topic.to_owned(),
                reason: format!(
                    "partition {partition} holds {} records in offsets {from_offset}..{stop}",
                    records.len()
                ),
            });
        }
        Ok(records)
    }

    /// The next offset to be written, for each partition (indexed by partition).
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, LogError> {
        let handle = self.topic_handle(topic)?;
        let state = lock(&handle.appends);
        Ok(state.end_offsets.clone())
    }

    /// Makes everything appended so far durable.
    pub fn flush(&self) -> Result<(), LogError> {
        // SyncAll (fsync) rather than SyncData: journal files grow, and their new length is
        // metadata that fdatasync may not write on every file system.
        self.inner
            .db
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.storage_error(e))
    }
}

/// The end offset of a partition as stored: one past its last record's offset.
fn recover_end_offset(records: &Keyspace, partition: u32) -> Result<u64, fjall::Error> {
    let range = record_key(partition, 0)..=record_key(partition, u64::MAX);
    match records.range(range).next_back() {
        Some(entry) => {
            let key = entry.key()?;
            Ok(offset_of_key(&key).map_or(0, |offset| offset + 1))
        }
        None => Ok(0),
    }
}

//! The simulated event log: topics of partitions of records, and transactions, on a
//! [`Journaled`] disk.
//!
//! It keeps the contract of `rill-log` that sources and two-phase-commit sinks rely on:
//! appends and staged records are buffered (a machine crash may lose them); `prepare` and
//! `flush` sync; a commit appends a transaction's records atomically and is idempotent (a
//! transaction that is not staged commits nothing); readers see committed records only.
//! Every operation is atomic: a torn write leaves nothing, as fjall's checksummed journal
//! entries do.
//!
//! Besides the stored state, the log counts how far sources have read each input partition
//! (the high-water mark): faults are placed at a fraction of the input read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;

use crate::disk::{CrashDamage, Durable, Journaled, UnsyncedFate};

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its bytes, shared between the live and the durable copy of the log.
    pub value: Arc<[u8]>,
    /// Its event timestamp.
    pub timestamp: i64,
}

/// An open transaction.
#[derive(Clone, Debug, Default)]
struct Transaction {
    topic: String,
    records: Vec<LogRecord>,
    prepared: bool,
}

/// Everything the log stores.
#[derive(Clone, Debug, Default)]
pub struct LogState {
    topics: BTreeMap<String, Vec<Vec<LogRecord>>>,
    transactions: BTreeMap<String, Transaction>,
}

/// One change to the log.
#[derive(Clone, Debug)]
pub enum LogOp {
    /// Creates a topic.
    CreateTopic {
        /// Its name.
        topic: String,
        /// Its partition count.
        partitions: u32,
    },
    /// Appends records to a partition.
    Append {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The records.
        records: Vec<LogRecord>,
    },
    /// Stages records under a transaction (opening it).
    Stage {
        /// The transaction.
        id: String,
        /// Its topic.
        topic: String,
        /// The records.
        records: Vec<LogRecord>,
    },
    /// Marks a transaction prepared.
    Prepare(String),
    /// Appends a transaction's records to partition 0 of its topic and closes it.
    Commit(String),
    /// Drops a transaction.
    Abort(String),
}

impl Durable for LogState {
    type Op = LogOp;

    fn apply(&mut self, op: LogOp) {
        match op {
            LogOp::CreateTopic { topic, partitions } => {
                self.topics
                    .entry(topic)
                    .or_insert_with(|| vec![Vec::new(); partitions as usize]);
            }
            LogOp::Append {
                topic,
                partition,
                records,
            } => {
                if let Some(partition) = self
                    .topics
                    .get_mut(&topic)
                    .and_then(|partitions| partitions.get_mut(partition as usize))
                {
                    partition.extend(records);
                }
            }
            LogOp::Stage { id, topic, records } => {
                let transaction = self.transactions.entry(id).or_default();
                transaction.topic = topic;
                transaction.records.extend(records);
            }
            LogOp::Prepare(id) => {
                if let Some(transaction) = self.transactions.get_mut(&id) {
                    transaction.prepared = true;
                }
            }
            LogOp::Commit(id) => {
                if let Some(transaction) = self.transactions.remove(&id)
                    && let Some(partition) = self
                        .topics
                        .get_mut(&transaction.topic)
                        .and_then(|partitions| partitions.first_mut())
                {
                    partition.extend(transaction.records);
                }
            }
            LogOp::Abort(id) => {
                self.transactions.remove(&id);
            }
        }
    }

    fn torn(_op: &LogOp, _rng: &mut impl Rng) -> Option<LogOp> {
        None
    }
}

/// What the log refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimLogError {
    /// No such topic.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// No such partition.
    #[error("topic '{topic}' has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// Preparing a transaction that is not open.
    #[error("transaction '{0}' is not open")]
    UnknownTransaction(String),
}

#[derive(Debug)]
struct Inner {
    disk: Journaled<LogState>,
    /// The furthest offset read in each (topic, partition): how far the input has been read.
    read_high_water: BTreeMap<(String, u32), u64>,
    /// Where each input partition will end once the producer is done: where sources stop.
    planned_ends: BTreeMap<String, Vec<u64>>,
}

/// A handle on the simulated log; clones share it.
#[derive(Clone, Debug)]
pub struct SimLog {
    inner: Arc<Mutex<Inner>>,
}

impl Default for SimLog {
    fn default() -> Self {
        SimLog {
            inner: Arc::new(Mutex::new(Inner {
                disk: Journaled::new(LogState::default()),
                read_high_water: BTreeMap::new(),
                planned_ends: BTreeMap::new(),
            })),
        }
    }
}

impl SimLog {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The simulator runs one thread per world: a poisoned lock means a panic already
        // failed the run, and the state is still what it was.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a topic, durably.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let mut inner = self.lock();
        inner.disk.write(LogOp::CreateTopic {
            topic: topic.to_owned(),
            partitions,
        });
        inner.disk.sync();
    }

    /// Appends records to a partition (buffered).
    pub fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<LogRecord>,
    ) -> Result<(), SimLogError> {
        let mut inner = self.lock();
        let partitions = inner.partitions(topic)?;
        if partition >= partitions {
            return Err(SimLogError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            });
        }
        inner.disk.write(LogOp::Append {
            topic: topic.to_owned(),
            partition,
            records,
        });
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) {
        self.lock().disk.sync();
    }

    /// The end offset of each partition of `topic`.
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, SimLogError> {
        let inner = self.lock();
        inner
            .disk
            .live()
            .topics
            .get(topic)
            .map(|partitions| partitions.iter().map(|p| p.len() as u64).collect())
            .ok_or_else(|| SimLogError::UnknownTopic(topic.to_owned()))
    }

    /// Says where each partition of an input topic will end, once its producer is done.
    pub fn plan_ends(&self, topic: &str, ends: Vec<u64>) {
        self.lock().planned_ends.insert(topic.to_owned(), ends);
    }

    /// Where a bounded source of `topic` stops: the planned ends, or the current ones.
    pub fn stop_offsets(&self, topic: &str) -> Result<Vec<u64>, SimLogError> {
        let planned = self.lock().planned_ends.get(topic).cloned();
        match planned {
            Some(ends) => Ok(ends),
            None => self.end_offsets(topic),
        }
    }

    /// Up to `max` committed records of a partition from offset `from`.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, SimLogError> {
        let mut inner = self.lock();
        let records: Vec<LogRecord> = inner
            .disk
            .live()
            .topics
            .get(topic)
            .ok_or_else(|| SimLogError::UnknownTopic(topic.to_owned()))?
            .get(partition as usize)
            .ok_or_else(|| SimLogError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })?
            .iter()
            .skip(from as usize)
            .take(max)
            .cloned()
            .collect();
        let reached = from + records.len() as u64;
        let mark = inner
            .read_high_water
            .entry((topic.to_owned(), partition))
            .or_default();
        *mark = (*mark).max(reached);
        Ok(records)
    }

    /// Calls `read` with the committed records of a topic, partition by partition, as the
    /// disk holds them: what a crash of the machine now would leave.
    pub fn with_durable_committed<R>(
        &self,
        topic: &str,
        read: impl FnOnce(&[Vec<LogRecord>]) -> R,
    ) -> R {
        let inner = self.lock();
        let partitions = inner.disk.durable().topics.get(topic);
        read(partitions.map_or(&[], Vec::as_slice))
    }

    /// Stages records under transaction `id` (buffered), opening it if needed.
    pub fn stage(&self, id: &str, topic: &str, records: Vec<LogRecord>) -> Result<(), SimLogError> {
        let mut inner = self.lock();
        inner.partitions(topic)?;
        inner.disk.write(LogOp::Stage {
            id: id.to_owned(),
            topic: topic.to_owned(),
            records,
        });
        Ok(())
    }

    /// Prepares transaction `id` and syncs: its records survive any crash from now on.
    pub fn prepare(&self, id: &str) -> Result<(), SimLogError> {
        let mut inner = self.lock();
        if !inner.disk.live().transactions.contains_key(id) {
            return Err(SimLogError::UnknownTransaction(id.to_owned()));
        }
        inner.disk.write(LogOp::Prepare(id.to_owned()));
        inner.disk.sync();
        Ok(())
    }

    /// Commits transaction `id` (buffered); commits nothing if it is not open.
    pub fn commit(&self, id: &str) {
        let mut inner = self.lock();
        if inner.disk.live().transactions.contains_key(id) {
            inner.disk.write(LogOp::Commit(id.to_owned()));
        }
    }

    /// Aborts transaction `id` (buffered).
    pub fn abort(&self, id: &str) {
        let mut inner = self.lock();
        if inner.disk.live().transactions.contains_key(id) {
            inner.disk.write(LogOp::Abort(id.to_owned()));
        }
    }

    /// The open transactions whose id starts with `prefix`, in id order.
    pub fn open_transactions(&self, prefix: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .disk
            .live()
            .transactions
            .range(prefix.to_owned()..)
            .take_while(|(id, _)| id.starts_with(prefix))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many records of `topic` the sources have read, at most, over the whole run.
    pub fn records_read(&self, topic: &str) -> u64 {
        let inner = self.lock();
        inner
            .read_high_water
            .iter()
            .filter(|((read, _), _)| read == topic)
            .map(|(_, &offset)| offset)
            .sum()
    }

    /// A crash: the log keeps what its disk kept.
    pub fn crash(&self, fate: UnsyncedFate, rng: &mut impl Rng) -> CrashDamage {
        self.lock().disk.crash(fate, rng)
    }
}

impl Inner {
    fn partitions(&self, topic: &str) -> Result<u32, SimLogError> {
        self.disk
            .live()
            .topics
            .get(topic)
            .map(|partitions| partitions.len() as u32)
            .ok_or_else(|| SimLogError::UnknownTopic(topic.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn record(value: u8) -> LogRecord {
        LogRecord {
            value: vec![value].into(),
            timestamp: 0,
        }
    }

    #[test]
    fn committed_transactions_are_visible_once_and_prepared_ones_survive_a_crash() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let log = SimLog::default();
        log.create_topic("out", 1);
        log.stage("t/0", "out", vec![record(1)]).unwrap();
        log.prepare("t/0").unwrap();
        log.stage("t/1", "out", vec![record(2)]).unwrap();
        log.crash(UnsyncedFate::Lost, &mut rng);
        assert_eq!(log.open_transactions("t/"), vec!["t/0".to_owned()]);
        log.commit("t/0");
        log.commit("t/0");
        assert_eq!(log.with_durable_committed("out", <[_]>::concat), vec![]);
        log.flush();
        assert_eq!(
            log.with_durable_committed("out", <[_]>::concat),
            vec![record(1)]
        );
    }

    #[test]
    fn appends_are_lost_unless_flushed() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let log = SimLog::default();
        log.create_topic("out", 1);
        log.append("out", 0, vec![record(1)]).unwrap();
        log.flush();
        log.append("out", 0, vec![record(2)]).unwrap();
        log.crash(UnsyncedFate::Lost, &mut rng);
        assert_eq!(
            log.with_durable_committed("out", <[_]>::concat),
            vec![record(1)]
        );
    }

    #[test]
    fn reads_move_the_high_water_mark_only_forward() {
        let log = SimLog::default();
        log.create_topic("in", 2);
        log.append("in", 1, vec![record(1), record(2), record(3)])
            .unwrap();
        assert_eq!(log.read("in", 1, 0, 2).unwrap().len(), 2);
        assert_eq!(log.read("in", 1, 0, 1).unwrap().len(), 1);
        assert_eq!(log.records_read("in"), 2);
        assert!(matches!(
            log.read("in", 5, 0, 1),
            Err(SimLogError::UnknownPartition { .. })
        ));
    }
}

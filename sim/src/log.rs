//! The event log of a simulated run: `rill-log`'s own [`EventLog`] — topics, appends, reads,
//! transactions — on a simulated disk ([`SimDisk::atomic`]), so that the log's code, and the
//! order in which it syncs, is what the simulator checks.
//!
//! Around it, what only a simulation needs: records in the simulator's shape (a value shared
//! by its copies, and an event timestamp), how far sources have read each input partition (the
//! high-water mark: faults are placed at a fraction of the input read), where each input
//! partition will end once the simulated producer is done, and the committed output as the
//! disk durably holds it. A crash of the process loses the open log with everything else: it
//! is opened again, recovering its topics and end offsets from what the disk kept.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;
use rill_core::defects::Defect;
use rill_core::transactional::CommitMark;
use rill_log::{EventLog, LogError, ProducerRecord};

use crate::disk::{CrashDamage, UnsyncedFate};
use crate::storage::SimDisk;

/// A record as the simulated jobs write and read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its bytes.
    pub value: Arc<[u8]>,
    /// Its event timestamp.
    pub timestamp: i64,
}

/// What the simulated log cannot do.
#[derive(Debug, thiserror::Error)]
pub enum SimLogError {
    /// The event log refused or failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log could not be opened again after a crash.
    #[error("the log could not be opened again after a crash: {0}")]
    NotReopened(String),
}

#[derive(Debug)]
struct Inner {
    disk: SimDisk,
    /// The open log; `Err` if it could not be opened again after a crash.
    log: Result<EventLog, String>,
    /// The furthest offset read in each (topic, partition): how far the input has been read.
    read_high_water: BTreeMap<(String, u32), u64>,
    /// Where each input partition will end once the producer is done: where sources stop.
    planned_ends: BTreeMap<String, Vec<u64>>,
    /// The broken component planted in the log, kept to plant it again when it reopens.
    defect: Option<Defect>,
    /// The machine dies during the next commit, after this many of its writes.
    crash_during_next_commit: Option<u32>,
    /// How many staged entries a commit moves in one atomic write.
    piece_entries: NonZeroUsize,
}

/// A handle on the simulated log; clones share it.
#[derive(Clone, Debug)]
pub struct SimLog {
    inner: Arc<Mutex<Inner>>,
}

fn location() -> PathBuf {
    PathBuf::from("<simulated log>")
}

/// How many staged entries `rill-log` commits in one atomic write by default.
pub const COMMIT_PIECE_ENTRIES: NonZeroUsize = NonZeroUsize::new(64).expect("64 is not 0");

fn open(disk: &SimDisk, piece_entries: NonZeroUsize) -> Result<EventLog, String> {
    let log = EventLog::on(Arc::new(disk.clone()), location()).map_err(|e| e.to_string())?;
    log.set_commit_piece_entries(piece_entries);
    Ok(log)
}

impl Default for SimLog {
    fn default() -> Self {
        SimLog::new(COMMIT_PIECE_ENTRIES)
    }
}

impl SimLog {
    /// An empty log on a new disk, whose commits move `piece_entries` staged entries per
    /// atomic write.
    pub fn new(piece_entries: NonZeroUsize) -> Self {
        let disk = SimDisk::atomic();
        SimLog {
            inner: Arc::new(Mutex::new(Inner {
                log: open(&disk, piece_entries),
                piece_entries,
                disk,
                read_high_water: BTreeMap::new(),
                planned_ends: BTreeMap::new(),
                defect: None,
                crash_during_next_commit: None,
            })),
        }
    }
}

fn producer_record(record: LogRecord, partition: Option<u32>) -> ProducerRecord {
    ProducerRecord {
        key: None,
        value: record.value.to_vec(),
        timestamp: Some(record.timestamp),
        partition,
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

    /// The open log.
    fn log(&self) -> Result<EventLog, SimLogError> {
        self.lock().log.clone().map_err(SimLogError::NotReopened)
    }

    /// Creates a topic, durably.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), SimLogError> {
        Ok(self.log()?.create_topic(topic, partitions)?)
    }

    /// Appends records to a partition (buffered).
    pub fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<LogRecord>,
    ) -> Result<(), SimLogError> {
        let records = records
            .into_iter()
            .map(|record| producer_record(record, Some(partition)))
            .collect();
        self.log()?.append_batch(topic, records)?;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), SimLogError> {
        Ok(self.log()?.flush()?)
    }

    /// The end offset of each partition of `topic`.
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, SimLogError> {
        Ok(self.log()?.end_offsets(topic)?)
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
        max: (usize, usize),
    ) -> Result<Vec<LogRecord>, SimLogError> {
        let records: Vec<LogRecord> = self
            .log()?
            .read_bounded(topic, partition, from, max)?
            .into_iter()
            .map(|record| LogRecord {
                value: record.value.into(),
                timestamp: record.timestamp,
            })
            .collect();
        let reached = from + records.len() as u64;
        let mut inner = self.lock();
        let mark = inner
            .read_high_water
            .entry((topic.to_owned(), partition))
            .or_default();
        *mark = (*mark).max(reached);
        Ok(records)
    }

    /// Calls `read` with the committed records of a topic, partition by partition, as the
    /// disk holds them: what a crash of the machine now would leave (the log opened again on
    /// a copy of what is durable).
    pub fn with_durable_committed<R>(
        &self,
        topic: &str,
        read: impl FnOnce(&[Vec<LogRecord>]) -> R,
    ) -> Result<R, SimLogError> {
        let (durable, piece_entries) = {
            let inner = self.lock();
            (inner.disk.durable_copy(), inner.piece_entries)
        };
        let log = open(&durable, piece_entries).map_err(SimLogError::NotReopened)?;
        let ends = match log.end_offsets(topic) {
            Ok(ends) => ends,
            Err(LogError::UnknownTopic(_)) => return Ok(read(&[])),
            Err(error) => return Err(error.into()),
        };
        let mut partitions = Vec::with_capacity(ends.len());
        for (partition, &end) in (0u32..).zip(&ends) {
            let records = log.read(
                topic,
                partition,
                0,
                usize::try_from(end).unwrap_or(usize::MAX),
            )?;
            partitions.push(
                records
                    .into_iter()
                    .map(|record| LogRecord {
                        value: record.value.into(),
                        timestamp: record.timestamp,
                    })
                    .collect(),
            );
        }
        Ok(read(&partitions))
    }

    /// Stages records under transaction `id` (buffered), opening it if needed.
    pub fn stage(&self, id: &str, topic: &str, records: Vec<LogRecord>) -> Result<(), SimLogError> {
        let records: Vec<ProducerRecord> = records
            .into_iter()
            .map(|record| producer_record(record, None))
            .collect();
        Ok(self.log()?.stage(id, topic, &records)?)
    }

    /// Prepares transaction `id`: its records survive any crash from now on.
    pub fn prepare(&self, id: &str) -> Result<(), SimLogError> {
        Ok(self.log()?.prepare(id)?)
    }

    /// Commits transaction `id` (buffered); commits nothing if it is not open. If a fault
    /// armed it, the machine dies during one of the commit's writes.
    pub fn commit(&self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), SimLogError> {
        let (crash, disk) = {
            let mut inner = self.lock();
            (inner.crash_during_next_commit.take(), inner.disk.clone())
        };
        if let Some(writes_before) = crash {
            disk.crash_during_write(writes_before);
        }
        let committed = self.log().and_then(|log| Ok(log.commit_marked(id, mark)?));
        // A commit of fewer writes leaves the machine alive.
        disk.disarm_crash();
        committed.map(|_| ())
    }

    /// The machine dies during the next commit of a transaction that stages anything, after
    /// `writes_before` of its writes.
    pub fn crash_during_next_commit(&self, writes_before: u32) {
        self.lock().crash_during_next_commit = Some(writes_before);
    }

    /// Takes the crash a fault armed for the next commit, if any: the number of writes (or
    /// publications, for another system's commit) before the machine dies.
    pub fn take_commit_crash(&self) -> Option<u32> {
        self.lock().crash_during_next_commit.take()
    }

    /// The machine dies now, during a commit to another system (a `crash-during-commit`
    /// fault that [`SimLog::take_commit_crash`] handed over).
    pub fn crash_machine_now(&self) {
        self.lock().disk.crash_now();
    }

    /// Whether the machine died during a write to the log.
    pub fn machine_crashed(&self) -> bool {
        self.lock().disk.crashed_during_write()
    }

    /// Moves `writer`'s mark back to `to` (removes it for none), synced.
    pub fn rewind_commit_mark(&self, writer: &str, to: Option<u64>) -> Result<(), SimLogError> {
        Ok(self.log()?.rewind_commit_mark(writer, to)?)
    }

    /// The newest checkpoint whose output `writer` committed.
    pub fn committed_checkpoint(&self, writer: &str) -> Result<Option<u64>, SimLogError> {
        Ok(self.log()?.committed_checkpoint(writer)?)
    }

    /// Aborts transaction `id` (buffered).
    pub fn abort(&self, id: &str) -> Result<(), SimLogError> {
        self.log()?.abort(id)?;
        Ok(())
    }

    /// The open transactions whose id starts with `prefix`, in id order.
    pub fn open_transactions(&self, prefix: &str) -> Result<Vec<String>, SimLogError> {
        Ok(self
            .log()?
            .transactions(prefix)?
            .into_iter()
            .map(|transaction| transaction.id)
            .collect())
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

    /// A crash: the disk keeps what `fate` says, and the log is opened again on it.
    pub fn crash(&self, fate: UnsyncedFate, rng: &mut impl Rng) -> CrashDamage {
        let mut inner = self.lock();
        let damage = inner.disk.crash(fate, rng);
        inner.log = open(&inner.disk, inner.piece_entries);
        if let (Ok(log), Some(defect)) = (&inner.log, inner.defect) {
            log.plant_defect(defect);
        }
        damage
    }

    /// Breaks `rill-log`'s log on purpose (if `defect` is one of its own), now and each time
    /// it is opened again.
    pub fn plant_defect(&self, defect: Defect) {
        let mut inner = self.lock();
        inner.defect = Some(defect);
        if let Ok(log) = &inner.log {
            log.plant_defect(defect);
        }
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

    fn committed(log: &SimLog) -> Vec<LogRecord> {
        log.with_durable_committed("out", <[_]>::concat)
            .expect("readable")
    }

    #[test]
    fn committed_transactions_are_visible_once_and_prepared_ones_survive_a_crash() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let log = SimLog::default();
        log.create_topic("out", 1).expect("created");
        log.stage("t/0", "out", vec![record(1)]).expect("staged");
        log.prepare("t/0").expect("prepared");
        log.stage("t/1", "out", vec![record(2)]).expect("staged");
        log.crash(UnsyncedFate::Lost, &mut rng);
        assert_eq!(
            log.open_transactions("t/").expect("listed"),
            vec!["t/0".to_owned()]
        );
        log.commit("t/0", None).expect("committed");
        log.commit("t/0", None).expect("committed again");
        assert_eq!(committed(&log), vec![]);
        log.flush().expect("flushed");
        assert_eq!(committed(&log), vec![record(1)]);
    }

    #[test]
    fn appends_are_lost_unless_flushed() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let log = SimLog::default();
        log.create_topic("out", 1).expect("created");
        log.append("out", 0, vec![record(1)]).expect("appended");
        log.flush().expect("flushed");
        log.append("out", 0, vec![record(2)]).expect("appended");
        log.crash(UnsyncedFate::Lost, &mut rng);
        assert_eq!(committed(&log), vec![record(1)]);
        assert_eq!(log.end_offsets("out").expect("known"), vec![1]);
    }

    #[test]
    fn reads_move_the_high_water_mark_only_forward() {
        let log = SimLog::default();
        log.create_topic("in", 2).expect("created");
        log.append("in", 1, vec![record(1), record(2), record(3)])
            .expect("appended");
        assert_eq!(
            log.read("in", 1, 0, (2, usize::MAX)).expect("read").len(),
            2
        );
        assert_eq!(
            log.read("in", 1, 0, (1, usize::MAX)).expect("read").len(),
            1
        );
        assert_eq!(log.records_read("in"), 2);
        assert!(matches!(
            log.read("in", 5, 0, (1, usize::MAX)),
            Err(SimLogError::Log(LogError::UnknownPartition { .. }))
        ));
    }
}

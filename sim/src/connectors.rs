//! The simulated log as a source and a two-phase-commit sink, through `rill-core`'s
//! [`Source`] and [`Sink`] traits — the same contract `rill`'s `LogSource` and `LogSink` keep —
//! and their deliberately broken variants, which the simulator must catch.
//!
//! The reader takes partition `p` in subtask `p % parallelism`, stops at the end offsets the
//! input will have (bounded input; until then it waits for the producer) and checkpoints the next offset of each partition. The
//! writer stages each batch under a transaction `<job>/<uid>/<subtask>/<sequence>`, prepares
//! it at the barrier, commits it when the checkpoint completes, and on restore commits what
//! the checkpoint prepared and aborts whatever else its subtask left open. At-least-once, it
//! appends each batch and flushes at the barrier.

use rill_core::checkpoint::CheckpointId;
use rill_core::operator::Sink;
use rill_core::source::{Source, SourceOutput, SourcePoll, decode_position, encode_position};
use rill_core::{BoxError, Data, Record, Timestamp};
use serde::{Deserialize, Serialize};

use crate::log::{LogRecord, SimLog};

/// How a value is read from a log record.
pub type Decode<T> = fn(&LogRecord) -> T;

/// How a value is written as a log record's bytes.
pub type Encode<T> = fn(&T) -> Vec<u8>;

struct Cursor {
    partition: u32,
    next: u64,
    stop: u64,
}

/// Reads the partitions of a topic a source subtask owns, up to their end at start.
pub struct LogReader<T> {
    log: SimLog,
    topic: String,
    cursors: Vec<Cursor>,
    turn: usize,
    decode: Decode<T>,
    /// Broken on purpose: a restore leaves the reader at the start of its partitions.
    forgets_offsets: bool,
    /// Why the reader could not start, reported at its first poll.
    start_error: Option<BoxError>,
}

impl<T> LogReader<T> {
    /// The reader of subtask `subtask` of `parallelism`.
    pub fn new(
        log: &SimLog,
        topic: &str,
        (subtask, parallelism): (u32, u32),
        decode: Decode<T>,
        forgets_offsets: bool,
    ) -> Self {
        let (ends, start_error) = match log.stop_offsets(topic) {
            Ok(ends) => (ends, None),
            Err(error) => (Vec::new(), Some(error.into())),
        };
        let cursors = (subtask..ends.len() as u32)
            .step_by(parallelism.max(1) as usize)
            .map(|partition| Cursor {
                partition,
                next: 0,
                stop: ends[partition as usize],
            })
            .collect();
        LogReader {
            log: log.clone(),
            topic: topic.to_owned(),
            cursors,
            turn: 0,
            decode,
            forgets_offsets,
            start_error,
        }
    }
}

impl<T: Data> Source for LogReader<T> {
    type Out = T;

    fn poll_next(&mut self, out: &mut SourceOutput<T>) -> Result<SourcePoll, BoxError> {
        if let Some(error) = self.start_error.take() {
            return Err(error);
        }
        let count = self.cursors.len();
        for offset in 0..count {
            let cursor = &mut self.cursors[(self.turn + offset) % count];
            let want = out
                .remaining()
                .min(cursor.stop.saturating_sub(cursor.next) as usize);
            if want == 0 {
                continue;
            }
            for record in self
                .log
                .read(&self.topic, cursor.partition, cursor.next, want)?
            {
                cursor.next += 1;
                out.collect_with_timestamp((self.decode)(&record), Timestamp(record.timestamp));
            }
        }
        self.turn = (self.turn + 1) % count.max(1);
        Ok(if self.cursors.iter().all(|c| c.next >= c.stop) {
            SourcePoll::Finished
        } else if out.is_empty() {
            SourcePoll::Idle
        } else {
            SourcePoll::Ready
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        let offsets: Vec<(u32, u64)> = self.cursors.iter().map(|c| (c.partition, c.next)).collect();
        encode_position(&offsets).map(Some)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        let offsets: Vec<(u32, u64)> = decode_position(position)?;
        if self.forgets_offsets {
            return Ok(());
        }
        for (partition, next) in offsets {
            if let Some(cursor) = self.cursors.iter_mut().find(|c| c.partition == partition) {
                cursor.next = next;
            }
        }
        Ok(())
    }
}

/// How the writer delivers, and how it is broken on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterMode {
    /// Two-phase commit through the log's transactions.
    Transactional,
    /// Broken: commits each transaction at pre-commit, before its checkpoint completes.
    CommitsAtPreCommit,
    /// Appends each batch; flushes at every barrier.
    AtLeastOnce,
    /// Broken: appends each batch and never flushes.
    SkipsFlush,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WriterState {
    subtask: u32,
    next_sequence: u64,
    /// (checkpoint, sequence) of the transactions prepared and not yet committed.
    prepared: Vec<(u64, u64)>,
}

/// Writes a topic of the simulated log.
pub struct LogWriter<T> {
    log: SimLog,
    topic: String,
    encode: Encode<T>,
    mode: WriterMode,
    /// `<job>/<uid>/`: what this sink's transaction ids start with.
    prefix: String,
    parallelism: u32,
    state: WriterState,
    open: bool,
}

impl<T> LogWriter<T> {
    /// The writer of subtask `subtask` of `parallelism`; `prefix` names the job and operator.
    pub fn new(
        log: &SimLog,
        topic: &str,
        (prefix, subtask, parallelism): (String, u32, u32),
        encode: Encode<T>,
        mode: WriterMode,
    ) -> Self {
        LogWriter {
            log: log.clone(),
            topic: topic.to_owned(),
            encode,
            mode,
            prefix,
            parallelism,
            state: WriterState {
                subtask,
                ..WriterState::default()
            },
            open: false,
        }
    }

    fn transaction_id(&self, subtask: u32, sequence: u64) -> String {
        format!("{}{subtask}/{sequence}", self.prefix)
    }

    fn transactional(&self) -> bool {
        matches!(
            self.mode,
            WriterMode::Transactional | WriterMode::CommitsAtPreCommit
        )
    }
}

impl<T: Data> Sink for LogWriter<T> {
    type In = T;

    fn write_batch(&mut self, records: Vec<Record<T>>) -> Result<(), BoxError> {
        let batch: Vec<LogRecord> = records
            .iter()
            .map(|record| LogRecord {
                value: (self.encode)(&record.value),
                timestamp: record.timestamp().map_or(0, |t| t.0),
            })
            .collect();
        if self.transactional() {
            let id = self.transaction_id(self.state.subtask, self.state.next_sequence);
            self.log.stage(&id, &self.topic, batch)?;
            self.open = true;
        } else {
            self.log.append(&self.topic, 0, batch)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        if self.mode == WriterMode::AtLeastOnce {
            self.log.flush();
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>, BoxError> {
        match self.mode {
            WriterMode::AtLeastOnce => {
                self.log.flush();
                return Ok(None);
            }
            WriterMode::SkipsFlush => return Ok(None),
            WriterMode::Transactional | WriterMode::CommitsAtPreCommit => {}
        }
        if self.open {
            let sequence = self.state.next_sequence;
            let id = self.transaction_id(self.state.subtask, sequence);
            self.log.prepare(&id)?;
            if self.mode == WriterMode::CommitsAtPreCommit {
                self.log.commit(&id);
            } else {
                self.state.prepared.push((checkpoint.0, sequence));
            }
            self.state.next_sequence += 1;
            self.open = false;
        }
        encode_position(&self.state).map(Some)
    }

    fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), BoxError> {
        let due = self
            .state
            .prepared
            .iter()
            .take_while(|(prepared_at, _)| *prepared_at <= checkpoint.0)
            .count();
        for (_, sequence) in self.state.prepared.drain(..due).collect::<Vec<_>>() {
            self.log
                .commit(&self.transaction_id(self.state.subtask, sequence));
        }
        // The next checkpoint's state no longer lists these transactions: were the commits
        // lost in a crash, a restore from it would abort them. So they must be durable now.
        if due > 0 {
            self.log.flush();
        }
        Ok(())
    }

    fn restore(&mut self, states: Vec<Vec<u8>>) -> Result<(), BoxError> {
        if !self.transactional() {
            return Ok(());
        }
        let restored = states
            .iter()
            .map(|bytes| decode_position::<WriterState>(bytes))
            .collect::<Result<Vec<_>, _>>()?;
        for state in &restored {
            for &(_, sequence) in &state.prepared {
                self.log
                    .commit(&self.transaction_id(state.subtask, sequence));
            }
        }
        // Durable before the restored job's checkpoints stop listing them (see `commit`).
        if restored.iter().any(|state| !state.prepared.is_empty()) {
            self.log.flush();
        }
        let own = self.state.subtask;
        let mut taken_over: Vec<u32> = restored
            .iter()
            .map(|state| state.subtask)
            .filter(|&old| old >= self.parallelism && old % self.parallelism == own)
            .collect();
        taken_over.push(own);
        for subtask in taken_over {
            for leftover in self
                .log
                .open_transactions(&format!("{}{subtask}/", self.prefix))
            {
                self.log.abort(&leftover);
            }
        }
        self.state.next_sequence = restored
            .iter()
            .find(|state| state.subtask == own)
            .map_or(0, |state| state.next_sequence);
        Ok(())
    }
}

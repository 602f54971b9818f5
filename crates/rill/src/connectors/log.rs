//! The embedded event log as a source and a sink.
//!
//! [`LogSource`] reads a topic: partition `p` goes to source subtask `p % parallelism`, and each
//! subtask reads its partitions in turn, in offset order. In **bounded** mode it stops at the
//! end offsets it sees when the job starts, so the job ends; otherwise it keeps polling for new
//! records. A record's log timestamp becomes its event timestamp. Its checkpointed position is
//! the next offset of each of its partitions, so a restored job reads on from there.
//!
//! [`LogSink`] writes a topic through the log's transactions (two-phase commit): each
//! checkpoint's records are committed when the checkpoint completes, so readers, who see
//! committed records only, see every record exactly once however often the job fails and
//! restarts. At-least-once, it appends each batch at once instead.

use std::sync::Arc;

use rill_core::checkpoint::CheckpointId;
use rill_core::operator::Sink;
use rill_core::source::{Source, SourceOutput, SourcePoll, decode_position, encode_position};
use rill_core::{BoxError, Data, Record, Timestamp};
use rill_log::{EventLog, LogError, LogRecord, ProducerRecord};
use serde::{Deserialize, Serialize};

use crate::env::StreamEnv;
use crate::stream::{DataStream, SinkHandle};

/// Decodes a log record into a stream value.
type Decode<T> = Arc<dyn Fn(LogRecord) -> T + Send + Sync>;

/// Encodes a stream value into a log record.
type Encode<T> = Arc<dyn Fn(&T) -> ProducerRecord + Send + Sync>;

/// A topic of the event log, read as a stream.
pub struct LogSource<T> {
    log: EventLog,
    topic: String,
    partitions: u32,
    bounded: bool,
    start_offset: u64,
    decode: Decode<T>,
}

impl LogSource<LogRecord> {
    /// Reads whole records (key, value, partition, offset, timestamp).
    pub fn records(log: &EventLog, topic: &str) -> Result<Self, LogError> {
        Self::with_decoder(log, topic, |record| record)
    }
}

impl LogSource<String> {
    /// Reads each record's value as UTF-8 text (invalid bytes become U+FFFD).
    pub fn text(log: &EventLog, topic: &str) -> Result<Self, LogError> {
        Self::with_decoder(log, topic, |record| match String::from_utf8(record.value) {
            Ok(text) => text,
            Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
        })
    }
}

impl<T: Data> LogSource<T> {
    /// Reads a topic, decoding each record with `decode`. Fails if the topic does not exist.
    pub fn with_decoder(
        log: &EventLog,
        topic: &str,
        decode: impl Fn(LogRecord) -> T + Send + Sync + 'static,
    ) -> Result<Self, LogError> {
        let partitions = log.topic(topic)?.partitions;
        Ok(LogSource {
            log: log.clone(),
            topic: topic.to_owned(),
            partitions,
            bounded: false,
            start_offset: 0,
            decode: Arc::new(decode),
        })
    }

    /// Stops at the end offsets seen when the job starts, so the job ends.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// Starts every partition at `offset` instead of 0 (partitions shorter than that start at
    /// their end).
    pub fn from_offset(mut self, offset: u64) -> Self {
        self.start_offset = offset;
        self
    }
}

struct PartitionCursor {
    partition: u32,
    next: u64,
    /// Where a bounded source stops.
    stop: Option<u64>,
}

/// One source subtask's reader over its share of the partitions.
struct LogReader<T> {
    log: EventLog,
    topic: String,
    cursors: Vec<PartitionCursor>,
    turn: usize,
    decode: Decode<T>,
    /// An error met when the subtask started, reported at its first poll.
    start_error: Option<LogError>,
}

impl<T: Data> LogReader<T> {
    fn new(source: &LogSource<T>, subtask: u32, parallelism: u32) -> Self {
        let mut reader = LogReader {
            log: source.log.clone(),
            topic: source.topic.clone(),
            cursors: Vec::new(),
            turn: 0,
            decode: source.decode.clone(),
            start_error: None,
        };
        match source.log.end_offsets(&source.topic) {
            Ok(ends) => {
                reader.cursors = (subtask..source.partitions)
                    .step_by(parallelism as usize)
                    .map(|partition| {
                        let end = ends.get(partition as usize).copied().unwrap_or(0);
                        PartitionCursor {
                            partition,
                            next: source.start_offset.min(end),
                            stop: source.bounded.then_some(end),
                        }
                    })
                    .collect();
            }
            Err(error) => reader.start_error = Some(error),
        }
        reader
    }

    fn exhausted(&self) -> bool {
        self.cursors
            .iter()
            .all(|c| c.stop.is_some_and(|stop| c.next >= stop))
    }
}

impl<T: Data> Source for LogReader<T> {
    type Out = T;

    fn poll_next(&mut self, out: &mut SourceOutput<T>) -> Result<SourcePoll, BoxError> {
        if let Some(error) = self.start_error.take() {
            return Err(error.into());
        }
        let count = self.cursors.len();
        for offset in 0..count {
            if out.remaining() == 0 {
                break;
            }
            let cursor = &mut self.cursors[(self.turn + offset) % count];
            let want = match cursor.stop {
                Some(stop) => out
                    .remaining()
                    .min(stop.saturating_sub(cursor.next) as usize),
                None => out.remaining(),
            };
            if want == 0 {
                continue;
            }
            for record in self
                .log
                .read(&self.topic, cursor.partition, cursor.next, want)?
            {
                cursor.next = record.offset + 1;
                let timestamp = Timestamp(record.timestamp);
                out.collect_with_timestamp((self.decode)(record), timestamp);
            }
        }
        self.turn = if count == 0 {
            0
        } else {
            (self.turn + 1) % count
        };
        Ok(if self.exhausted() {
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

    /// Takes the offsets of the partitions this subtask reads; after a rescale it is given
    /// every old subtask's position, and the other partitions' offsets are someone else's.
    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        let offsets: Vec<(u32, u64)> = decode_position(position)?;
        for (partition, next) in offsets {
            if let Some(cursor) = self.cursors.iter_mut().find(|c| c.partition == partition) {
                cursor.next = next;
            }
        }
        Ok(())
    }
}

impl StreamEnv {
    /// A stream read from a topic of the event log.
    pub fn from_log<T: Data>(&self, source: LogSource<T>) -> DataStream<T> {
        let name = format!("log source '{}'", source.topic);
        self.from_source(&name, true, move |subtask, parallelism| {
            LogReader::new(&source, subtask, parallelism)
        })
    }
}

/// A topic of the event log, written by a stream.
pub struct LogSink<T> {
    log: EventLog,
    topic: String,
    encode: Encode<T>,
    exactly_once: bool,
}

impl LogSink<String> {
    /// Writes each value as a record's UTF-8 value, without a key.
    pub fn text(log: &EventLog, topic: &str) -> Result<Self, LogError> {
        Self::with_encoder(log, topic, |text: &String| {
            ProducerRecord::new(text.clone().into_bytes())
        })
    }
}

impl<T: Data> LogSink<T> {
    /// Writes each value as the record `encode` makes of it. Fails if the topic does not exist.
    pub fn with_encoder(
        log: &EventLog,
        topic: &str,
        encode: impl Fn(&T) -> ProducerRecord + Send + Sync + 'static,
    ) -> Result<Self, LogError> {
        log.topic(topic)?;
        Ok(LogSink {
            log: log.clone(),
            topic: topic.to_owned(),
            encode: Arc::new(encode),
            exactly_once: true,
        })
    }

    /// Appends each batch at once instead of committing per checkpoint: lower latency, but a
    /// job that fails and restarts appends again what it wrote since its last checkpoint.
    pub fn at_least_once(mut self) -> Self {
        self.exactly_once = false;
        self
    }
}

/// What a transactional writer keeps in a checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WriterState {
    /// The writer's subtask index: its transactions' ids have it.
    subtask: u32,
    /// The sequence number of the next transaction.
    next_sequence: u64,
    /// The prepared transactions waiting for their checkpoint to complete: (checkpoint,
    /// sequence number), oldest first.
    prepared: Vec<(u64, u64)>,
}

/// One sink subtask's writer. Exactly-once, it writes the records of each checkpoint into a
/// transaction of the log: `<job>/<sink uid>/<subtask>/<sequence>`. The transaction is
/// prepared when the checkpoint's barrier passes and committed when the checkpoint completes.
/// Restored from a checkpoint, the writer commits what that checkpoint prepared (after a
/// rescale every writer commits every old writer's: commits are idempotent) and then aborts
/// whatever else is open under its own index and under the old indices it takes over (those
/// beyond the new parallelism, `old % parallelism == own`). At-least-once, it appends every
/// batch at once.
struct LogWriter<T> {
    log: EventLog,
    topic: String,
    encode: Encode<T>,
    exactly_once: bool,
    /// Every transaction id of the sink starts with this: `<job>/<sink uid>/`.
    prefix: String,
    parallelism: u32,
    state: WriterState,
    /// Whether the transaction `state.next_sequence` holds records.
    open: bool,
}

impl<T: Data> LogWriter<T> {
    fn transaction_id(&self, subtask: u32, sequence: u64) -> String {
        format!("{}{subtask}/{sequence}", self.prefix)
    }
}

impl<T: Data> Sink for LogWriter<T> {
    type In = T;

    fn write_batch(&mut self, records: Vec<Record<T>>) -> Result<(), BoxError> {
        let batch: Vec<ProducerRecord> = records
            .iter()
            .map(|record| (self.encode)(&record.value))
            .collect();
        if self.exactly_once {
            let id = self.transaction_id(self.state.subtask, self.state.next_sequence);
            self.log.stage(&id, &self.topic, &batch)?;
            self.open = true;
        } else {
            self.log.append_batch(&self.topic, batch)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        if !self.exactly_once {
            self.log.flush()?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>, BoxError> {
        if !self.exactly_once {
            // What was appended must survive a crash of the machine once the checkpoint does.
            self.log.flush()?;
            return Ok(None);
        }
        if self.open {
            let sequence = self.state.next_sequence;
            self.log
                .prepare(&self.transaction_id(self.state.subtask, sequence))?;
            self.state.prepared.push((checkpoint.0, sequence));
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
                .commit(&self.transaction_id(self.state.subtask, sequence))?;
        }
        // The next checkpoint's state no longer lists these transactions: were the commits
        // lost in a crash of the machine, a restore from it would abort them (found by the
        // simulator's `idle-sink-machine-crashes`). So they must be durable now.
        if due > 0 {
            self.log.flush()?;
        }
        Ok(())
    }

    fn restore(&mut self, states: Vec<Vec<u8>>) -> Result<(), BoxError> {
        if !self.exactly_once {
            return Ok(());
        }
        let restored = states
            .iter()
            .map(|bytes| decode_position::<WriterState>(bytes))
            .collect::<Result<Vec<_>, _>>()?;
        for state in &restored {
            for &(_, sequence) in &state.prepared {
                self.log
                    .commit(&self.transaction_id(state.subtask, sequence))?;
            }
        }
        // Durable before the restored job's checkpoints stop listing them (see `commit`).
        if restored.iter().any(|state| !state.prepared.is_empty()) {
            self.log.flush()?;
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
                .transactions(&format!("{}{subtask}/", self.prefix))?
            {
                let records = self.log.abort(&leftover.id)?;
                tracing::info!(transaction = %leftover.id, records, "aborted a transaction a failed run left open");
            }
        }
        self.state.next_sequence = restored
            .iter()
            .find(|state| state.subtask == own)
            .map_or(0, |state| state.next_sequence);
        Ok(())
    }
}

impl<T: Data> DataStream<T> {
    /// Writes the stream to a topic of the event log: exactly-once by default (records become
    /// visible to readers when the checkpoint after them completes, or at the end of a job
    /// without checkpoints), or at-least-once (see [`LogSink::at_least_once`]).
    pub fn sink_to_log(self, sink: LogSink<T>) -> SinkHandle {
        let name = format!("log sink '{}'", sink.topic);
        self.sink_with(&name, move |info| LogWriter {
            log: sink.log.clone(),
            topic: sink.topic.clone(),
            encode: sink.encode.clone(),
            exactly_once: sink.exactly_once,
            prefix: format!("{}/{}/", info.job, info.uid),
            parallelism: info.parallelism,
            state: WriterState {
                subtask: info.subtask,
                ..WriterState::default()
            },
            open: false,
        })
    }
}

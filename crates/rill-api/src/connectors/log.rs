//! The embedded event log as a source and a sink: the builders users configure. The reading
//! and the two-phase-commit writing are `rill-core`'s [`rill_core::log_connector`] — the same
//! code the simulator checks under crashes.
//!
//! [`LogSource`] reads a topic: partition `p` goes to source subtask `p % parallelism`, and each
//! subtask reads its partitions in turn, in offset order. In **bounded** mode it stops at the
//! end offsets it sees when the job starts, so the job ends; otherwise it keeps polling for new
//! records. A record's log timestamp becomes its event timestamp. Its checkpointed position is
//! the next offset of each of its partitions, so a restored job reads on from there. With
//! [`LogSource::with_watermarks`] it emits watermarks too, generated per partition.
//!
//! [`LogSink`] writes a topic through the log's transactions (two-phase commit): each
//! checkpoint's records are committed when the checkpoint completes, so readers, who see
//! committed records only, see every record exactly once however often the job fails and
//! restarts. At-least-once, it appends each batch at once instead.

use std::sync::Arc;

use rill_core::Data;
use rill_core::log_connector::{Decode, LogReader, LogTarget, LogWriter};
use rill_core::time::WatermarkStrategy;
use rill_core::transactional::Encode;
use rill_log::{EventLog, LogError, LogRecord, ProducerRecord};

use crate::env::StreamEnv;
use crate::stream::{DataStream, SinkHandle};

/// A topic of the event log, read as a stream.
pub struct LogSource<T> {
    log: EventLog,
    topic: String,
    bounded: bool,
    start_offset: u64,
    decode: Decode<EventLog, T>,
    watermarks: Option<WatermarkStrategy>,
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
        log.topic(topic)?;
        Ok(LogSource {
            log: log.clone(),
            topic: topic.to_owned(),
            bounded: false,
            start_offset: 0,
            decode: Arc::new(decode),
            watermarks: None,
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

    /// Emits watermarks by `strategy` from the records' log timestamps (a producer sets them
    /// with [`ProducerRecord::with_timestamp`]). Each source subtask keeps one generator per
    /// partition it reads and emits the minimum, so a partition that lags behind in event time
    /// holds the watermark back instead of having its records arrive late. A bounded partition
    /// read to its end no longer counts; with [`WatermarkStrategy::with_idleness`], neither
    /// does a partition that had no record for the timeout — an empty partition, say, which
    /// would otherwise hold the watermark back for good.
    pub fn with_watermarks(mut self, strategy: WatermarkStrategy) -> Self {
        self.watermarks = Some(strategy);
        self
    }
}

impl StreamEnv {
    /// A stream read from a topic of the event log.
    pub fn from_log<T: Data>(&self, source: LogSource<T>) -> DataStream<T> {
        let name = format!("log source '{}'", source.topic);
        self.from_source(&name, true, move |subtask, parallelism| {
            let reader = LogReader::new(
                &source.log,
                &source.topic,
                (subtask, parallelism),
                (source.bounded, source.start_offset),
                source.decode.clone(),
            );
            match &source.watermarks {
                Some(strategy) => reader.with_watermarks(strategy.clone()),
                None => reader,
            }
        })
    }
}

/// A topic of the event log, written by a stream.
pub struct LogSink<T> {
    log: EventLog,
    topic: String,
    encode: Encode<LogTarget<EventLog>, T>,
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

impl<T: Data> DataStream<T> {
    /// Writes the stream to a topic of the event log: exactly-once by default (records become
    /// visible to readers when the checkpoint after them completes, or at the end of a job
    /// without checkpoints), or at-least-once (see [`LogSink::at_least_once`]).
    pub fn sink_to_log(self, sink: LogSink<T>) -> SinkHandle {
        let name = format!("log sink '{}'", sink.topic);
        self.sink_with(&name, move |info| {
            LogWriter::new(
                LogTarget::new(&sink.log, &sink.topic),
                info,
                sink.encode.clone(),
                sink.exactly_once,
            )
        })
    }
}

//! NATS JetStream for Rill: an exactly-once sink, and a source of a stream's subjects.
//!
//! [`NatsSink`] publishes a checkpoint's messages only once the checkpoint completes, each with
//! a deterministic message id (job, operator, subtask, transaction, checkpoint, index), so that
//! JetStream's duplicate window drops what a recovery publishes again: event-driven
//! applications downstream see each message once. The protocol is `rill-core`'s
//! two-phase-commit writer ([`TransactionalWriter`]), the one the event log's, PostgreSQL's and
//! Redis's sinks use and the simulator checks; [`target`] adds JetStream's side. At-least-once,
//! it publishes at once instead.
//!
//! ```no_run
//! use std::time::Duration;
//! use rill::prelude::*;
//! use rill_nats::{NatsMessage, NatsSink, NatsSinkExt};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let env = StreamEnv::new();
//! // The stream ALERTS captures `alerts.>`; its duplicate window must exceed the bound.
//! let sink = NatsSink::new(
//!     "nats://127.0.0.1:14222",
//!     "ALERTS",
//!     Duration::from_secs(60),
//!     |alert: &String| NatsMessage::new("alerts.fraud", alert.clone().into_bytes()),
//! )?;
//! env.from_iter(vec!["card 42: 9 payments in a minute".to_owned()])
//!     .sink_to_nats(sink);
//! env.execute("alerts")?;
//! # Ok(())
//! # }
//! ```
//!
//! [`NatsSource`] reads a stream's subjects as partitions, by stream sequence, with each
//! partition's next sequence in checkpoints, bounded or not, with watermarks per partition
//! ([`source`]).
//!
//! The client is `async-nats`, the NATS maintainers' own, run on a small runtime per
//! connection ([`client`]) since sources and sinks are synchronous. No TLS.

pub mod client;
pub mod source;
pub mod target;

use std::sync::Arc;
use std::time::Duration;

use rill_api::{DataStream, SinkHandle, StreamEnv};
use rill_core::Data;
use rill_core::operator::OperatorInfo;
use rill_core::time::WatermarkStrategy;
use rill_core::transactional::{Encode, TransactionalWriter};

use client::NatsClient;
use source::{DecodeMessage, NatsReader, NatsRecord, TimestampOf};
use target::NatsTarget;

/// A message to publish: its subject and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsMessage {
    /// The subject, which the sink's stream must capture.
    pub subject: String,
    /// The payload.
    pub payload: Vec<u8>,
}

impl NatsMessage {
    /// A message of `payload` to `subject`.
    pub fn new(subject: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        NatsMessage {
            subject: subject.into(),
            payload: payload.into(),
        }
    }
}

/// What can go wrong with NATS.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at '{url}': {reason}")]
    Connect {
        /// The server's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A request failed.
    #[error("NATS failed {doing}: {reason}")]
    Request {
        /// What was being done.
        doing: String,
        /// Why.
        reason: String,
    },
    /// The stream's duplicate window is too short for exactly-once.
    #[error(
        "stream '{stream}' drops duplicate message ids for {window:?}, but a recovery may take \
         up to {bound:?} to publish again what a crash cut short: raise the stream's \
         duplicate_window (`nats stream edit {stream} --dupe-window`) above the bound, or \
         lower the bound"
    )]
    DuplicateWindowTooShort {
        /// The stream.
        stream: String,
        /// Its duplicate window.
        window: Duration,
        /// The recovery bound the sink was given.
        bound: Duration,
    },
    /// The client's runtime failed.
    #[error("the NATS client's runtime: {0}")]
    Runtime(String),
}

/// A JetStream stream, written by a stream of Rill.
pub struct NatsSink<T> {
    url: String,
    stream: String,
    encode: Encode<NatsTarget, T>,
    exactly_once: bool,
}

impl<T: Data> NatsSink<T> {
    /// Publishes what `to_message` makes of each value into `stream` on the server at `url`.
    /// `recovery_bound` is the longest a recovery may take, from a crash to the restored job's
    /// commits: the stream's duplicate window must be longer, which is checked here. Creates
    /// the streams the protocol keeps its state in (`RILL_STAGING`, `RILL_MARKS`) if missing.
    pub fn new(
        url: &str,
        stream: &str,
        recovery_bound: Duration,
        to_message: impl Fn(&T) -> NatsMessage + Send + Sync + 'static,
    ) -> Result<Self, NatsError> {
        let window = NatsTarget::new(url, stream).duplicate_window()?;
        if window <= recovery_bound {
            return Err(NatsError::DuplicateWindowTooShort {
                stream: stream.to_owned(),
                window,
                bound: recovery_bound,
            });
        }
        Ok(NatsSink {
            url: url.to_owned(),
            stream: stream.to_owned(),
            encode: Arc::new(to_message),
            exactly_once: true,
        })
    }

    /// Publishes each batch at once, without message ids: a job that fails and restarts
    /// publishes again what it published since its last checkpoint.
    pub fn at_least_once(mut self) -> Self {
        self.exactly_once = false;
        self
    }

    /// The writer of the sink subtask `info` describes: what [`NatsSinkExt::sink_to_nats`]
    /// runs, for a driver or test of one's own.
    pub fn writer(&self, info: &OperatorInfo) -> TransactionalWriter<NatsTarget, T> {
        TransactionalWriter::new(
            NatsTarget::new(&self.url, &self.stream),
            info,
            self.encode.clone(),
            self.exactly_once,
        )
    }
}

/// Publishes a stream to JetStream.
pub trait NatsSinkExt<T> {
    /// Publishes the stream's values: exactly-once by default (a checkpoint's messages are
    /// published when it completes, or at the end of a job without checkpoints), or
    /// at-least-once (see [`NatsSink::at_least_once`]).
    fn sink_to_nats(self, sink: NatsSink<T>) -> SinkHandle;
}

impl<T: Data> NatsSinkExt<T> for DataStream<T> {
    fn sink_to_nats(self, sink: NatsSink<T>) -> SinkHandle {
        let name = format!("nats sink '{}'", sink.stream);
        self.sink_with(&name, move |info| sink.writer(info))
    }
}

/// A JetStream stream, read as a stream of Rill.
pub struct NatsSource<T> {
    url: String,
    stream: String,
    partitions: Vec<String>,
    bounded: bool,
    decode: DecodeMessage<T>,
    timestamp_of: Option<TimestampOf<T>>,
    watermarks: Option<WatermarkStrategy>,
}

impl NatsSource<NatsRecord> {
    /// Reads whole messages (subject, sequence, timestamp, payload).
    pub fn records(url: &str, stream: &str) -> Result<Self, NatsError> {
        Self::with_decoder(url, stream, |record| record)
    }
}

impl<T: Data> NatsSource<T> {
    /// Reads `stream` at `url`, decoding each message with `decode`: one partition per
    /// subject that holds messages now, in name order (see [`NatsSource::partitions`] for
    /// another mapping). Fails if the stream does not exist.
    pub fn with_decoder(
        url: &str,
        stream: &str,
        decode: impl Fn(NatsRecord) -> T + Send + Sync + 'static,
    ) -> Result<Self, NatsError> {
        let client = NatsClient::connect(url)?;
        let name = stream.to_owned();
        let mut subjects: Vec<String> = client.call(
            &format!("listing the subjects of stream '{name}'"),
            |jetstream| async move {
                let stream = jetstream.get_stream(name).await?;
                let mut listed = stream.info_with_subjects(">").await?;
                let mut subjects = Vec::new();
                while let Some(subject) = futures_util::StreamExt::next(&mut listed).await {
                    subjects.push(subject?.0);
                }
                Ok::<_, async_nats::Error>(subjects)
            },
        )?;
        subjects.sort();
        Ok(NatsSource {
            url: url.to_owned(),
            stream: stream.to_owned(),
            partitions: subjects,
            bounded: false,
            decode: Arc::new(decode),
            timestamp_of: None,
            watermarks: None,
        })
    }

    /// Reads these partitions instead, each a subject or a wildcard filter
    /// (`payments.eu.>`) that maps a group of subjects to one partition. A partition is read
    /// by the source subtask a stable hash of its filter picks ([`source::owner`]); a checkpoint
    /// keeps each one's position by its filter.
    pub fn partitions(mut self, filters: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.partitions = filters.into_iter().map(Into::into).collect();
        self
    }

    /// Stops at the stream's last sequence when the job starts, so the job ends.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// Takes each value's event time from the value, by `timestamp_of`, instead of when
    /// JetStream stored the message.
    pub fn with_timestamps(
        mut self,
        timestamp_of: impl Fn(&T) -> rill_core::Timestamp + Send + Sync + 'static,
    ) -> Self {
        self.timestamp_of = Some(Arc::new(timestamp_of));
        self
    }

    /// Emits watermarks by `strategy` from the values' event times (when JetStream stored
    /// them, unless [`NatsSource::with_timestamps`] says otherwise), one generator per
    /// partition.
    pub fn with_watermarks(mut self, strategy: WatermarkStrategy) -> Self {
        self.watermarks = Some(strategy);
        self
    }
}

/// Reads JetStream streams.
pub trait NatsSourceExt {
    // Named as `StreamEnv::from_log` and `from_source` are: it adds a source to the job's
    // graph, it converts nothing.
    #[allow(clippy::wrong_self_convention)]
    /// A stream read from a JetStream stream.
    fn from_nats<T: Data>(&self, source: NatsSource<T>) -> DataStream<T>;
}

impl NatsSourceExt for StreamEnv {
    fn from_nats<T: Data>(&self, source: NatsSource<T>) -> DataStream<T> {
        let name = format!("nats source '{}'", source.stream);
        self.from_source(&name, true, move |subtask, parallelism| {
            let reader = NatsReader::new(
                (&source.url, &source.stream),
                &source.partitions,
                (subtask, parallelism),
                source.bounded,
                source.decode.clone(),
            );
            let reader = match &source.timestamp_of {
                Some(timestamp_of) => reader.with_timestamps(timestamp_of.clone()),
                None => reader,
            };
            match &source.watermarks {
                Some(strategy) => reader.with_watermarks(strategy),
                None => reader,
            }
        })
    }
}

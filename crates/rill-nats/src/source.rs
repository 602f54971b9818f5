//! [`NatsReader`]: one source subtask's reading of a JetStream stream.
//!
//! A stream is read as partitions, each a subject filter (one subject, or a wildcard that maps
//! a group of subjects to one partition); a partition goes to the subtask its filter's stable
//! hash picks ([`owner`]), so it keeps its reader when other subjects appear or go between
//! runs. Each partition is read in stream-sequence order through an ephemeral
//! pull consumer that starts at the partition's next sequence, with requests that return at
//! once with what is there (`no_wait`), at most as many messages as the poll has room for: nothing is buffered
//! in the client beyond one poll, so a slow job slows its reads and the server keeps the rest.
//! A checkpoint holds each partition's next sequence, and a restored job reads on from there.
//! Bounded, the reader stops at the stream's last sequence when the subtask starts; a
//! partition is finished once its consumer has nothing pending below that. A message's
//! timestamp is when JetStream stored it, or what the value says ([`NatsReader::with_timestamps`]);
//! watermarks, if asked for, are generated per partition, as the log source does.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures_util::StreamExt;
use rill_core::element::{Data, Timestamp};
use rill_core::error::BoxError;
use rill_core::source::{Source, SourceOutput, SourcePoll, decode_position, encode_position};
use rill_core::time::WatermarkStrategy;
use rill_core::time::{PartitionWatermarks, collect_record};
use serde::{Deserialize, Serialize};

use crate::NatsError;
use crate::client::NatsClient;

/// The most bytes of messages one poll reads.
const READ_BYTES_PER_POLL: usize = 1 << 20;

/// How long an ephemeral consumer outlives a reader that crashed.
const CONSUMER_INACTIVE: Duration = Duration::from_secs(30);

/// A message read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsRecord {
    /// Its subject.
    pub subject: String,
    /// Its sequence in the stream.
    pub sequence: u64,
    /// When JetStream stored it, in ms since the epoch.
    pub timestamp: i64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Turns a message into a stream value.
pub type DecodeMessage<T> = std::sync::Arc<dyn Fn(NatsRecord) -> T + Send + Sync>;

/// Reads a value's event time.
pub type TimestampOf<T> = std::sync::Arc<dyn Fn(&T) -> Timestamp + Send + Sync>;

/// A checkpointed position: each partition's filter and next sequence.
#[derive(Debug, Serialize, Deserialize)]
enum Position {
    V1(Vec<(String, u64)>),
}

struct Partition {
    filter: String,
    /// The next sequence to read.
    next: u64,
    consumer: Option<PullConsumer>,
    finished: bool,
}

/// The subtask of `parallelism` that reads partition `filter`: by a stable hash of the filter,
/// so that a partition keeps its reader (and the position it checkpointed) when others appear
/// or disappear between runs.
pub fn owner(filter: &str, parallelism: u32) -> u32 {
    (rill_core::key::stable_hash(filter) % u64::from(parallelism.max(1))) as u32
}

/// One source subtask's reader of a stream.
pub struct NatsReader<T> {
    url: String,
    stream: String,
    bounded: bool,
    partitions: Vec<Partition>,
    turn: usize,
    decode: DecodeMessage<T>,
    /// Where a value's event time comes from, if not from when JetStream stored it.
    timestamp_of: Option<TimestampOf<T>>,
    watermarks: Option<PartitionWatermarks>,
    client: Option<NatsClient>,
    /// Bounded: the stream's last sequence when the reader started.
    stop: Option<u64>,
}

impl<T> NatsReader<T> {
    /// The reader of subtask `subtask` of `parallelism` over the partitions `filters` of
    /// `stream` at `url`; `bounded` stops at the stream's last sequence of now.
    pub fn new(
        (url, stream): (&str, &str),
        filters: &[String],
        (subtask, parallelism): (u32, u32),
        bounded: bool,
        decode: DecodeMessage<T>,
    ) -> Self {
        let partitions = filters
            .iter()
            .filter(|filter| owner(filter, parallelism) == subtask)
            .map(|filter| Partition {
                filter: filter.clone(),
                next: 1,
                consumer: None,
                finished: false,
            })
            .collect();
        NatsReader {
            url: url.to_owned(),
            stream: stream.to_owned(),
            bounded,
            partitions,
            turn: 0,
            decode,
            timestamp_of: None,
            watermarks: None,
            client: None,
            stop: None,
        }
    }

    /// Takes each value's event time from the value, by `timestamp_of`.
    pub fn with_timestamps(mut self, timestamp_of: TimestampOf<T>) -> Self {
        self.timestamp_of = Some(timestamp_of);
        self
    }

    /// Emits watermarks by `strategy`, one generator per partition the reader reads.
    pub fn with_watermarks(mut self, strategy: &WatermarkStrategy) -> Self {
        self.watermarks = Some(PartitionWatermarks::new(strategy, self.partitions.len()));
        self
    }

    fn client(&mut self) -> Result<&NatsClient, NatsError> {
        if self.client.is_none() {
            self.client = Some(NatsClient::connect(&self.url)?);
        }
        self.client
            .as_ref()
            .ok_or_else(|| NatsError::Runtime("no client".to_owned()))
    }

    /// The stream's last sequence now.
    fn last_sequence(&mut self) -> Result<u64, NatsError> {
        let name = self.stream.clone();
        self.client()?.call(
            &format!("reading stream '{name}'"),
            |jetstream| async move {
                let mut stream = jetstream.get_stream(name).await?;
                Ok::<_, async_nats::Error>(stream.info().await?.state.last_sequence)
            },
        )
    }

    /// Reads up to `max` messages of partition `index`. (No byte limit: JetStream ends a pull
    /// whose next message would pass one with an error status, which would fail the poll.)
    fn fetch(&mut self, index: usize, max: usize) -> Result<Vec<NatsRecord>, NatsError> {
        let stream_name = self.stream.clone();
        let partition = &self.partitions[index];
        let (filter, next, consumer) = (
            partition.filter.clone(),
            partition.next,
            partition.consumer.clone(),
        );
        let client = self.client()?;
        let fetched = client.call(
            &format!("reading '{filter}' of stream '{stream_name}'"),
            |jetstream| async move {
                let mut consumer = match consumer {
                    Some(consumer) => consumer,
                    None => {
                        let stream = jetstream.get_stream(stream_name).await?;
                        stream
                            .create_consumer(pull::Config {
                                filter_subject: filter,
                                deliver_policy: DeliverPolicy::ByStartSequence {
                                    start_sequence: next,
                                },
                                ack_policy: AckPolicy::None,
                                inactive_threshold: CONSUMER_INACTIVE,
                                ..Default::default()
                            })
                            .await?
                    }
                };
                let mut batch = consumer.fetch().max_messages(max).messages().await?;
                let mut records = Vec::new();
                while let Some(message) = batch.next().await {
                    let message = message?;
                    let info = message.info()?;
                    let (sequence, published) = (info.stream_sequence, info.published);
                    records.push(NatsRecord {
                        subject: message.subject.to_string(),
                        sequence,
                        timestamp: (published.unix_timestamp_nanos() / 1_000_000) as i64,
                        payload: message.payload.to_vec(),
                    });
                }
                let pending = if records.is_empty() {
                    consumer.info().await?.num_pending
                } else {
                    u64::MAX
                };
                Ok::<_, async_nats::Error>((consumer, records, pending))
            },
        );
        // A consumer that failed (gone after inactivity, say) is made again at `next`.
        let (consumer, records, pending) = fetched.inspect_err(|_| {
            self.partitions[index].consumer = None;
        })?;
        let partition = &mut self.partitions[index];
        partition.consumer = Some(consumer);
        if records.is_empty() && pending == 0 && self.stop.is_some() {
            partition.finished = true;
        }
        Ok(records)
    }
}

impl<T: Data> Source for NatsReader<T> {
    type Out = T;

    fn poll_next(&mut self, out: &mut SourceOutput<T>) -> Result<SourcePoll, BoxError> {
        if self.bounded && self.stop.is_none() {
            self.stop = Some(self.last_sequence()?);
        }
        let count = self.partitions.len();
        let mut bytes_left = READ_BYTES_PER_POLL;
        for step in 0..count {
            if out.remaining() == 0 || bytes_left == 0 {
                break;
            }
            let index = (self.turn + step) % count;
            if self.partitions[index].finished {
                continue;
            }
            for record in self.fetch(index, out.remaining())? {
                let partition = &mut self.partitions[index];
                if self.stop.is_some_and(|stop| record.sequence > stop) {
                    // Past the end of a bounded read: the consumer stays where it is.
                    partition.finished = true;
                    partition.consumer = None;
                    break;
                }
                partition.next = record.sequence + 1;
                bytes_left = bytes_left.saturating_sub(record.payload.len());
                let stored = Timestamp(record.timestamp);
                let value = (self.decode)(record);
                let timestamp = self
                    .timestamp_of
                    .as_ref()
                    .map_or(stored, |timestamp_of| timestamp_of(&value));
                collect_record(self.watermarks.as_mut(), out, index, value, timestamp);
            }
        }
        self.turn = (self.turn + 1) % count.max(1);
        if let Some(watermarks) = &mut self.watermarks {
            watermarks.end_poll(self.partitions.iter().map(|p| p.finished), out);
        }
        Ok(if self.partitions.iter().all(|p| p.finished) {
            SourcePoll::Finished
        } else if out.is_empty() {
            SourcePoll::Idle
        } else {
            SourcePoll::Ready
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        let next = self
            .partitions
            .iter()
            .map(|partition| (partition.filter.clone(), partition.next))
            .collect();
        encode_position(&Position::V1(next)).map(Some)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        let Position::V1(restored) = decode_position(position)?;
        let last = self.last_sequence()?;
        for (filter, next) in restored {
            if next > last + 1 {
                return Err(format!(
                    "stream '{}' is behind the checkpoint: it ends at sequence {last}, but the \
                     checkpoint had read '{filter}' up to sequence {}. The stream lost messages \
                     (purged, or recreated?); start the job without its checkpoints to read \
                     what the stream holds",
                    self.stream,
                    next - 1
                )
                .into());
            }
            if let Some(partition) = self.partitions.iter_mut().find(|p| p.filter == filter) {
                partition.next = next;
                partition.consumer = None;
            }
        }
        Ok(())
    }
}

//! The elements that flow between subtasks: records with an optional event timestamp, watermarks,
//! watermark status changes, barriers and end-of-input, grouped into batches.
//!
//! Records travel as Rust values inside the process. A batch's records are type-erased
//! ([`Records`]) so that one channel type serves every edge of a job; operators downcast them back
//! to `Vec<Record<T>>` once per batch, never per record.

use std::any::Any;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointId;
use crate::time::WatermarkStatus;

/// The bounds every value flowing through a job must meet: owned, sendable between the threads
/// of the runtime, and clonable (broadcast and fan-out hand one record to several consumers).
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// Event time in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The earliest time: the watermark of a channel that has said nothing yet.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The latest time: the watermark of a channel that has ended.
    pub const MAX: Timestamp = Timestamp(i64::MAX);
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Timestamp::MIN => f.write_str("-inf"),
            Timestamp::MAX => f.write_str("+inf"),
            Timestamp(ms) => write!(f, "{ms}ms"),
        }
    }
}

/// One value with the event time it carries, if any.
///
/// A record without event time stores `Timestamp::MIN` (the "minus infinity" of watermarks,
/// never an event's time) rather than an `Option`: that keeps a record of a 16-byte value at
/// 24 bytes instead of 32, and records are copied on every exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<T> {
    /// The user's value.
    pub value: T,
    timestamp: Timestamp,
}

impl<T> Record<T> {
    /// A record without an event timestamp.
    #[inline]
    pub fn new(value: T) -> Self {
        Record {
            value,
            timestamp: Timestamp::MIN,
        }
    }

    /// A record with an event timestamp (`Timestamp::MIN` means none).
    #[inline]
    pub fn with_timestamp(value: T, timestamp: Timestamp) -> Self {
        Record { value, timestamp }
    }

    /// A record with an event timestamp if one is given.
    #[inline]
    pub fn with_optional_timestamp(value: T, timestamp: Option<Timestamp>) -> Self {
        Record {
            value,
            timestamp: timestamp.unwrap_or(Timestamp::MIN),
        }
    }

    /// The event timestamp assigned at the source, if the stream has event time.
    #[inline]
    pub fn timestamp(&self) -> Option<Timestamp> {
        (self.timestamp != Timestamp::MIN).then_some(self.timestamp)
    }

    /// Stamps the record with an event timestamp (`Timestamp::MIN` means none).
    #[inline]
    pub fn set_timestamp(&mut self, timestamp: Timestamp) {
        self.timestamp = timestamp;
    }

    /// The same timestamp on another value: what a one-to-one transformation emits.
    #[inline]
    pub fn replace<U>(&self, value: U) -> Record<U> {
        Record {
            value,
            timestamp: self.timestamp,
        }
    }

    /// Applies `f` to the value, keeping the timestamp.
    #[inline]
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Record<U> {
        Record {
            value: f(self.value),
            timestamp: self.timestamp,
        }
    }
}

/// Object-safe view of a `Vec<Record<T>>` for any `T: Data`.
trait AnyRecords: Send {
    fn len(&self) -> usize;
    fn split_off(&mut self, at: usize) -> Box<dyn AnyRecords>;
    fn clone_boxed(&self) -> Box<dyn AnyRecords>;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    fn type_name(&self) -> &'static str;
}

impl<T: Data> AnyRecords for Vec<Record<T>> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn split_off(&mut self, at: usize) -> Box<dyn AnyRecords> {
        Box::new(Vec::split_off(self, at))
    }

    fn clone_boxed(&self) -> Box<dyn AnyRecords> {
        Box::new(self.clone())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

/// A type-erased, non-empty-or-empty `Vec<Record<T>>`.
pub struct Records(Box<dyn AnyRecords>);

/// A batch was downcast to the wrong record type: a wiring bug between two operators.
#[derive(Debug, thiserror::Error)]
#[error("records of type {found} reached an operator expecting {expected}")]
pub struct RecordTypeMismatch {
    /// The type the operator expected.
    pub expected: &'static str,
    /// The type the batch held.
    pub found: &'static str,
}

impl Records {
    /// Erases the type of a vector of records.
    pub fn new<T: Data>(records: Vec<Record<T>>) -> Self {
        Records(Box::new(records))
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// The records in order, in runs of at most `max` (at least one record each; none for an
    /// empty batch). Each record moves once: the runs are cut from the end.
    pub fn into_runs(mut self, max: usize) -> Vec<Records> {
        let max = max.max(1);
        let mut runs = Vec::with_capacity(self.len().div_ceil(max));
        while self.len() > max {
            let last_start = (self.len() - 1) / max * max;
            runs.push(Records(self.0.split_off(last_start)));
        }
        if !self.is_empty() {
            runs.push(self);
        }
        runs.reverse();
        runs
    }

    /// Recovers the typed records.
    pub fn downcast<T: Data>(self) -> Result<Vec<Record<T>>, RecordTypeMismatch> {
        let found = self.0.type_name();
        self.0
            .into_any()
            .downcast::<Vec<Record<T>>>()
            .map(|boxed| *boxed)
            .map_err(|_| RecordTypeMismatch {
                expected: std::any::type_name::<T>(),
                found,
            })
    }
}

impl Clone for Records {
    fn clone(&self) -> Self {
        Records(self.0.clone_boxed())
    }
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Records<{}>[{}]", self.0.type_name(), self.0.len())
    }
}

/// One element of a batch, in channel order.
#[derive(Clone, Debug)]
pub enum Event {
    /// Records, in order.
    Records(Records),
    /// No record with a timestamp at or below this one will follow on this channel.
    Watermark(Timestamp),
    /// The sender's watermark status changed (sent only on a change). While a sender is idle —
    /// a source with nothing to read for a while, or a subtask whose every open input is idle
    /// — its watermark does not hold back the subtask it feeds. A source is active again
    /// before its next record.
    WatermarkStatus(WatermarkStatus),
    /// Checkpoint barrier: everything before it on the channel belongs to the checkpoint.
    Barrier(CheckpointId),
    /// The channel's last element.
    EndOfInput,
}

/// The unit that travels on a channel and costs one credit of flow control.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// The batch's elements, in channel order.
    pub events: Vec<Event>,
}

impl Batch {
    /// How many records the batch carries in all.
    pub fn record_count(&self) -> usize {
        self.events
            .iter()
            .map(|event| match event {
                Event::Records(records) => records.len(),
                _ => 0,
            })
            .sum()
    }

    /// Whether the batch has no element.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_erasure() {
        let records = Records::new(vec![Record::new(1u32), Record::new(2)]);
        assert_eq!(records.len(), 2);
        let copy = records.clone();
        assert_eq!(
            records.downcast::<u32>().unwrap(),
            vec![Record::new(1), Record::new(2)]
        );
        let err = copy.downcast::<String>().unwrap_err();
        assert_eq!(err.expected, "alloc::string::String");
        assert_eq!(err.found, "u32");
    }

    #[test]
    fn records_cut_into_runs_keep_their_order() {
        let values = |runs: Vec<Records>| -> Vec<Vec<u32>> {
            runs.into_iter()
                .map(|run| {
                    let run = run.downcast::<u32>().unwrap();
                    run.into_iter().map(|record| record.value).collect()
                })
                .collect()
        };
        let numbers = |n: u32| Records::new((0..n).map(Record::new).collect());
        assert_eq!(
            values(numbers(7).into_runs(3)),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]
        );
        assert_eq!(
            values(numbers(6).into_runs(3)),
            vec![vec![0, 1, 2], vec![3, 4, 5]]
        );
        assert_eq!(values(numbers(2).into_runs(3)), vec![vec![0, 1]]);
        assert_eq!(values(numbers(2).into_runs(0)), vec![vec![0], vec![1]]);
        assert!(numbers(0).into_runs(3).is_empty());
    }

    #[test]
    fn a_record_keeps_its_timestamp_or_none() {
        assert_eq!(Record::new(1u8).timestamp(), None);
        assert_eq!(
            Record::with_timestamp(1u8, Timestamp(-5)).timestamp(),
            Some(Timestamp(-5))
        );
        assert_eq!(
            Record::with_timestamp(1u8, Timestamp(7))
                .map(|v| v + 1)
                .timestamp(),
            Some(Timestamp(7))
        );
        assert_eq!(std::mem::size_of::<Record<(u64, u64)>>(), 24);
    }

    #[test]
    fn batch_counts_records_across_events() {
        let batch = Batch {
            events: vec![
                Event::Records(Records::new(vec![Record::new('a')])),
                Event::Watermark(Timestamp(5)),
                Event::Records(Records::new(vec![Record::new('b'), Record::new('c')])),
                Event::EndOfInput,
            ],
        };
        assert_eq!(batch.record_count(), 3);
    }
}

//! Records as producers hand them to the log and as readers get them back.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// A record to append.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The key, if any: it chooses the partition unless one is given.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub value: Vec<u8>,
    /// Milliseconds since the Unix epoch; `None` takes the append time.
    pub timestamp: Option<i64>,
    /// The partition to append to; `None` chooses by key hash, or round-robin without a key.
    pub partition: Option<u32>,
}

impl ProducerRecord {
    /// A record with only a value.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        ProducerRecord {
            value: value.into(),
            ..Self::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPosition {
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
}

/// A record read from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub value: Vec<u8>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// The stored form of a record: what the partition and offset (the fjall key) do not say.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: i64,
}

/// The partition of a keyed record: xxh3 of the key bytes, modulo the partition count.
///
/// xxh3 is a specified, portable function, so a key lands in the same partition on every run
/// and every machine.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    (xxh3_64(key) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_partitioning_is_pinned() {
        // If this changes, keyed records of existing logs would be split over two partitions.
        assert_eq!(
            partition_for_key(b"rill", 1_000_003),
            (xxh3_64(b"rill") % 1_000_003) as u32
        );
        assert_eq!(partition_for_key(b"any", 1), 0);
    }
}

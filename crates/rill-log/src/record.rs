//! Records as producers hand them to the log and as readers get them back.

use rill_core::codec::{self, CodecError, Envelope, Kind};
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

/// The stored form of a record, for writing: what the fjall key (partition, offset) does not say.
///
/// The byte fields go through `serialize_bytes`, which bincode writes as a varint length and the
/// raw bytes in one copy. That is byte-for-byte what serde's element-by-element encoding of a
/// `Vec<u8>` gives (bincode writes a `u8` as one raw byte), only faster; a unit test pins it.
#[derive(Serialize)]
struct StoredRecordOut<'a> {
    key: Option<Bytes<'a>>,
    value: Bytes<'a>,
    timestamp: i64,
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// The stored form of a record, as read: borrows from the stored bytes, so decoding copies the
/// key and value once, into the [`LogRecord`].
#[derive(Deserialize)]
pub(crate) struct StoredRecord<'a> {
    #[serde(borrow)]
    pub key: Option<&'a [u8]>,
    #[serde(borrow)]
    pub value: &'a [u8],
    pub timestamp: i64,
}

/// Room a stored record takes beyond its key and value: the varint lengths and timestamp (at
/// most 9 bytes each) and the option tag.
const RECORD_OVERHEAD_MAX: usize = 32;
/// Room kept after a record's envelope, for a transaction's partition tag.
pub(crate) const TAG_BYTES: usize = 4;

/// A record's stored form in its envelope (as the log keeps it), in one allocation with room
/// for a partition tag after it.
pub(crate) fn encode_record(
    key: Option<&[u8]>,
    value: &[u8],
    timestamp: i64,
) -> Result<Vec<u8>, CodecError> {
    let stored = StoredRecordOut {
        key: key.map(Bytes),
        value: Bytes(value),
        timestamp,
    };
    let capacity = key.map_or(0, <[u8]>::len) + value.len() + RECORD_OVERHEAD_MAX + TAG_BYTES;
    Envelope::build(
        Kind::LogRecord,
        Kind::LogRecord.current_version(),
        capacity,
        |out| codec::encode_into(&stored, out),
    )
}

/// Decodes a record's stored form (the envelope's payload), refusing trailing bytes.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<StoredRecord<'_>, String> {
    codec::decode_borrowed(bytes).map_err(|error| error.to_string())
}

/// Opens a record's envelope and decodes it.
pub(crate) fn open_record(bytes: &[u8]) -> Result<StoredRecord<'_>, String> {
    let (_, payload) =
        Envelope::unwrap(Kind::LogRecord, bytes).map_err(|error| error.to_string())?;
    decode_record(payload)
}

/// The partition of a keyed record: `xxh3_64(key) % partitions`, with seed 0.
///
/// xxh3 is a specified, portable function (it does not depend on the CPU's endianness or on
/// the process, unlike `std`'s randomly seeded `HashMap` hasher), so a key lands in the same
/// partition on every run and every machine. This is part of the log's format: records of a
/// key already written stay in the partition this function chose for them, so it must never
/// change. `partitions` is at least 1 for any topic; 0 is treated as 1.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    (xxh3_64(key) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn key_partitioning_is_pinned() {
        // If this changes, keyed records of existing logs would be split over two partitions.
        // XXH3_64bits of no bytes, seed 0: the reference implementation's test vector.
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(partition_for_key(b"", 1024), 194);
        assert_eq!(partition_for_key(b"rill", 1024), 220);
        assert_eq!(
            partition_for_key(b"rill", 1_000_003),
            (xxh3_64(b"rill") % 1_000_003) as u32
        );
        assert_eq!(partition_for_key(b"any", 1), 0);
    }

    /// The stored form as first written (owned `Vec<u8>` fields, serde's default encoding).
    #[derive(Serialize)]
    struct OwnedStoredRecord {
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        timestamp: i64,
    }

    #[test]
    fn the_stored_format_is_pinned() {
        let encoded = encode_record(Some(b"k"), b"value", 1_700_000_000_000).unwrap();
        // In an envelope of a log record, format version 1: Some(1 byte "k"), 5 bytes
        // "value", then the timestamp zigzagged (2 * ts) as a u64 varint: tag 253 and 8
        // little-endian bytes.
        let zigzagged = 3_400_000_000_000u64.to_le_bytes();
        let mut expected = vec![1, 1, b'k', 5, b'v', b'a', b'l', b'u', b'e', 253];
        expected.extend_from_slice(&zigzagged);
        assert_eq!(&encoded[..4], b"RILL");
        assert_eq!(encoded[4], Kind::LogRecord as u8);
        assert_eq!(&encoded[codec::HEADER_BYTES..], &expected[..]);
        let decoded = open_record(&encoded).unwrap();
        assert_eq!(
            (decoded.key, decoded.value, decoded.timestamp),
            (Some(&b"k"[..]), &b"value"[..], 1_700_000_000_000)
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let encoded = encode_record(None, b"v", 0).unwrap();
        let mut payload = encoded[codec::HEADER_BYTES..].to_vec();
        payload.push(0);
        let error = decode_record(&payload).err().unwrap();
        assert!(error.contains("1 bytes left over"), "{error}");
        let mut damaged = encoded.clone();
        damaged[codec::HEADER_BYTES] ^= 1;
        let error = open_record(&damaged).err().unwrap();
        assert!(error.contains("checksum"), "{error}");
    }

    proptest! {
        #[test]
        fn stored_records_round_trip_and_match_serde_defaults(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            value in proptest::collection::vec(any::<u8>(), 0..300),
            timestamp in any::<i64>(),
        ) {
            let encoded = encode_record(key.as_deref(), &value, timestamp).unwrap();
            let owned = OwnedStoredRecord { key: key.clone(), value: value.clone(), timestamp };
            let by_serde =
                bincode::serde::encode_to_vec(&owned, bincode::config::standard()).unwrap();
            prop_assert_eq!(&encoded[codec::HEADER_BYTES..], &by_serde[..]);
            let decoded = open_record(&encoded).unwrap();
            prop_assert_eq!(decoded.key, key.as_deref());
            prop_assert_eq!(decoded.value, &value[..]);
            prop_assert_eq!(decoded.timestamp, timestamp);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_record(&bytes);
            let _ = open_record(&bytes);
        }
    }
}

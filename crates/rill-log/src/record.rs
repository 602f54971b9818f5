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

/// The stored form of a record, for writing: what the storage key (topic, partition, offset)
/// does not say.
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
#[derive(Debug, Deserialize)]
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
/// Room a partition (an option tag and a varint) or a count (a varint) takes at most.
const VARINT_ROOM_MAX: usize = 10;

/// Records in their stored form, one after another, each with the partition it goes to if
/// that is decided before offsets are assigned (`None`: round-robin, decided when they are).
///
/// This is what an append or a commit writes into a topic, and what a stage keeps: the log
/// groups the records into entries (see [`crate::log`]) without encoding them again.
#[derive(Default)]
pub(crate) struct EncodedRecords {
    /// The stored records, one after another.
    bytes: Vec<u8>,
    /// Each record's partition and where its stored form ends in `bytes`.
    records: Vec<(Option<u32>, usize)>,
}

impl EncodedRecords {
    /// Room for `records` records of about `bytes` bytes of keys and values.
    pub(crate) fn with_capacity(records: usize, bytes: usize) -> Self {
        EncodedRecords {
            bytes: Vec::with_capacity(bytes + records * RECORD_OVERHEAD_MAX),
            records: Vec::with_capacity(records),
        }
    }

    /// Adds a record.
    pub(crate) fn push(
        &mut self,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp: i64,
    ) -> Result<(), CodecError> {
        let stored = StoredRecordOut {
            key: key.map(Bytes),
            value: Bytes(value),
            timestamp,
        };
        codec::encode_into(&stored, &mut self.bytes)?;
        self.records.push((partition, self.bytes.len()));
        Ok(())
    }

    /// How many records there are.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Each record's partition (if decided) and stored form, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Option<u32>, &[u8])> {
        let starts = std::iter::once(0).chain(self.records.iter().map(|&(_, end)| end));
        self.records
            .iter()
            .zip(starts)
            .map(|(&(partition, end), start)| (partition, &self.bytes[start..end]))
    }

    /// The records in an envelope of staged records ([`Kind::LogStaged`]): each with its
    /// partition.
    pub(crate) fn seal_staged(&self) -> Result<Vec<u8>, CodecError> {
        let capacity = self.bytes.len() + (self.records.len() + 1) * VARINT_ROOM_MAX;
        Envelope::build(
            Kind::LogStaged,
            Kind::LogStaged.current_version(),
            capacity,
            |out| {
                // What bincode writes for a sequence of (partition, record) pairs.
                codec::encode_into(&(self.len() as u64), out)?;
                for (partition, stored) in self.iter() {
                    codec::encode_into(&partition, out)?;
                    out.extend_from_slice(stored);
                }
                Ok(())
            },
        )
    }
}

/// Stored records in an envelope of log records ([`Kind::LogRecord`]): the records of one entry,
/// consecutive in one partition.
pub(crate) fn seal_records(records: &[&[u8]]) -> Result<Vec<u8>, CodecError> {
    let capacity = records.iter().map(|stored| stored.len()).sum::<usize>() + VARINT_ROOM_MAX;
    Envelope::build(
        Kind::LogRecord,
        Kind::LogRecord.current_version(),
        capacity,
        |out| {
            // What bincode writes for a sequence of records.
            codec::encode_into(&(records.len() as u64), out)?;
            for stored in records {
                out.extend_from_slice(stored);
            }
            Ok(())
        },
    )
}

/// The records of an entry, decoded one at a time: a read from the middle of an entry decodes
/// what it skips and what it returns, not the rest.
pub(crate) struct Records<'a> {
    /// The records not decoded yet.
    rest: &'a [u8],
    /// How many they are.
    left: u64,
}

impl<'a> Records<'a> {
    /// How many records are left.
    pub(crate) fn len(&self) -> u64 {
        self.left
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<StoredRecord<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            // Every byte belongs to a record: anything after the last is an encoding bug.
            return (!self.rest.is_empty()).then(|| {
                let extra = std::mem::take(&mut self.rest).len();
                Err(format!("{extra} bytes left over after the records"))
            });
        }
        self.left -= 1;
        match codec::decode_borrowed_prefix(self.rest) {
            Ok((record, read)) => {
                self.rest = &self.rest[read..];
                Some(Ok(record))
            }
            Err(error) => {
                (self.rest, self.left) = (&[], 0);
                Some(Err(error.to_string()))
            }
        }
    }
}

/// Opens an entry's envelope of log records (checking all of it) and its record count; the
/// records decode as they are taken.
pub(crate) fn open_records(bytes: &[u8]) -> Result<Records<'_>, String> {
    let (_, payload) =
        Envelope::unwrap(Kind::LogRecord, bytes).map_err(|error| error.to_string())?;
    let (left, read) =
        codec::decode_borrowed_prefix::<u64>(payload).map_err(|error| error.to_string())?;
    Ok(Records {
        rest: &payload[read..],
        left,
    })
}

/// Opens an envelope of staged records and decodes them with their partitions.
pub(crate) fn open_staged(bytes: &[u8]) -> Result<Vec<(Option<u32>, StoredRecord<'_>)>, String> {
    let (_, payload) =
        Envelope::unwrap(Kind::LogStaged, bytes).map_err(|error| error.to_string())?;
    codec::decode_borrowed(payload).map_err(|error| error.to_string())
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

    /// A record to encode: partition, key, value, timestamp.
    type Plain<'a> = (Option<u32>, Option<&'a [u8]>, &'a [u8], i64);

    fn encoded(records: &[Plain<'_>]) -> EncodedRecords {
        let mut encoded = EncodedRecords::default();
        for &(partition, key, value, timestamp) in records {
            encoded.push(partition, key, value, timestamp).unwrap();
        }
        encoded
    }

    /// Every record of an entry, or the first error.
    fn decode_all(bytes: &[u8]) -> Result<Vec<StoredRecord<'_>>, String> {
        open_records(bytes)?.collect()
    }

    fn seal_all(encoded: &EncodedRecords) -> Vec<u8> {
        let stored: Vec<&[u8]> = encoded.iter().map(|(_, stored)| stored).collect();
        seal_records(&stored).unwrap()
    }

    #[test]
    fn the_stored_format_is_pinned() {
        let sealed = seal_all(&encoded(&[(None, Some(b"k"), b"value", 1_700_000_000_000)]));
        // In an envelope of log records, format version 2: one record, Some(1 byte "k"), 5
        // bytes "value", then the timestamp zigzagged (2 * ts) as a u64 varint: tag 253 and
        // 8 little-endian bytes.
        let zigzagged = 3_400_000_000_000u64.to_le_bytes();
        let mut expected = vec![1, 1, 1, b'k', 5, b'v', b'a', b'l', b'u', b'e', 253];
        expected.extend_from_slice(&zigzagged);
        assert_eq!(&sealed[..7], &[b'R', b'I', b'L', b'L', 3, 2, 0]);
        assert_eq!(&sealed[codec::HEADER_BYTES..], &expected[..]);
        let decoded = decode_all(&sealed).unwrap();
        assert_eq!(
            (decoded[0].key, decoded[0].value, decoded[0].timestamp),
            (Some(&b"k"[..]), &b"value"[..], 1_700_000_000_000)
        );
    }

    #[test]
    fn staged_records_keep_their_partitions() {
        let encoded = encoded(&[(Some(3), None, b"a", 1), (None, Some(b"k"), b"b", 2)]);
        let sealed = encoded.seal_staged().unwrap();
        assert_eq!(&sealed[..7], &[b'R', b'I', b'L', b'L', 6, 1, 0]);
        let staged = open_staged(&sealed).unwrap();
        let summary: Vec<_> = staged
            .iter()
            .map(|(partition, record)| (*partition, record.key, record.value, record.timestamp))
            .collect();
        assert_eq!(
            summary,
            [
                (Some(3), None, &b"a"[..], 1),
                (None, Some(&b"k"[..]), &b"b"[..], 2)
            ]
        );
        assert!(
            decode_all(&sealed).is_err(),
            "staged records are not a topic's"
        );
    }

    #[test]
    fn trailing_bytes_and_damage_are_refused() {
        let sealed = seal_all(&encoded(&[(None, None, b"v", 0)]));
        let mut payload = sealed[codec::HEADER_BYTES..].to_vec();
        payload.push(0);
        let longer = Envelope::wrap(Kind::LogRecord, 2, &payload);
        let error = decode_all(&longer).unwrap_err();
        assert!(error.contains("1 bytes left over"), "{error}");
        let mut damaged = sealed.clone();
        damaged[codec::HEADER_BYTES] ^= 1;
        let error = decode_all(&damaged).unwrap_err();
        assert!(error.contains("checksum"), "{error}");
        let first_format = Envelope::wrap(Kind::LogRecord, 1, &payload);
        let error = decode_all(&first_format).unwrap_err();
        assert!(error.contains("an older Rill"), "{error}");
    }

    proptest! {
        #[test]
        fn stored_records_round_trip_and_match_serde_defaults(
            records in proptest::collection::vec(
                (
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)),
                    proptest::collection::vec(any::<u8>(), 0..100),
                    any::<i64>(),
                ),
                0..8,
            ),
        ) {
            let mut encoded = EncodedRecords::default();
            for (key, value, timestamp) in &records {
                encoded.push(None, key.as_deref(), value, *timestamp).unwrap();
            }
            let sealed = seal_all(&encoded);
            let owned: Vec<OwnedStoredRecord> = records
                .iter()
                .map(|(key, value, timestamp)| OwnedStoredRecord {
                    key: key.clone(),
                    value: value.clone(),
                    timestamp: *timestamp,
                })
                .collect();
            let by_serde =
                bincode::serde::encode_to_vec(&owned, bincode::config::standard()).unwrap();
            prop_assert_eq!(&sealed[codec::HEADER_BYTES..], &by_serde[..]);
            prop_assert_eq!(open_records(&sealed).unwrap().len(), records.len() as u64);
            let decoded = decode_all(&sealed).unwrap();
            for (decoded, (key, value, timestamp)) in decoded.iter().zip(&records) {
                prop_assert_eq!(decoded.key, key.as_deref());
                prop_assert_eq!(decoded.value, &value[..]);
                prop_assert_eq!(decoded.timestamp, *timestamp);
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_all(&Envelope::wrap(Kind::LogRecord, 2, &bytes));
            let _ = open_staged(&Envelope::wrap(Kind::LogStaged, 1, &bytes));
            let _ = decode_all(&bytes);
            let _ = open_staged(&bytes);
        }
    }
}

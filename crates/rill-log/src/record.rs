//! Records as producers hand them to the log and as readers get them back.

use rill_core::codec::{Envelope, Kind};
use xxhash_rust::xxh3::xxh3_64;

use crate::wire::{self, StoredRecord};

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

/// Records in their stored form ([`crate::wire`]), one after another, each with the partition
/// it goes to if that is decided before offsets are assigned (`None`: round-robin, decided when
/// they are).
///
/// This is what an append or a commit writes into a topic: the log groups the records into
/// entries (see [`crate::log`]) without encoding them again.
#[derive(Default)]
pub(crate) struct EncodedRecords {
    /// The stored records, one after another.
    bytes: Vec<u8>,
    /// Each record's partition and where its stored form ends in `bytes`.
    records: Vec<(Option<u32>, usize)>,
}

impl EncodedRecords {
    /// Room for `records` records of `bytes` bytes of stored forms.
    pub(crate) fn with_capacity(records: usize, bytes: usize) -> Self {
        EncodedRecords {
            bytes: Vec::with_capacity(bytes),
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
    ) {
        wire::put_record(&mut self.bytes, key, value, timestamp);
        self.records.push((partition, self.bytes.len()));
    }

    /// Adds a record in its stored form.
    pub(crate) fn push_stored(&mut self, partition: Option<u32>, stored: &[u8]) {
        self.bytes.extend_from_slice(stored);
        self.records.push((partition, self.bytes.len()));
    }

    /// How many records there are.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Each record's partition (if decided) and stored form, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Option<u32>, &[u8])> {
        let starts = std::iter::once(0).chain(self.records.iter().map(|&(_, end)| end));
        self.records
            .iter()
            .zip(starts)
            .map(|(&(partition, end), start)| (partition, &self.bytes[start..end]))
    }
}

/// An envelope whose payload `write` appends; nothing it writes can fail.
fn seal(kind: Kind, capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let built: Result<Vec<u8>, std::convert::Infallible> =
        Envelope::build(kind, kind.current_version(), capacity, |out| {
            write(out);
            Ok(())
        });
    built.unwrap_or_else(|never| match never {})
}

/// Stored records in an envelope of log records ([`Kind::LogRecord`]): the records of one
/// entry, consecutive in one partition.
pub(crate) fn seal_records(records: &[&[u8]]) -> Vec<u8> {
    let capacity = records.iter().map(|stored| stored.len()).sum::<usize>();
    seal(Kind::LogRecord, capacity + wire::VARINT_BYTES_MAX, |out| {
        wire::put_varint(out, records.len() as u64);
        for stored in records {
            out.extend_from_slice(stored);
        }
    })
}

/// Records in an envelope of staged records ([`Kind::LogStaged`]), each with the partition and
/// timestamp `place` gives it; the first error of `place` is returned instead.
pub(crate) fn seal_staged<E>(
    records: &[ProducerRecord],
    mut place: impl FnMut(&ProducerRecord) -> Result<(Option<u32>, i64), E>,
) -> Result<Vec<u8>, E> {
    let capacity = records
        .iter()
        .map(|record| {
            record.key.as_ref().map_or(0, Vec::len)
                + record.value.len()
                + wire::RECORD_OVERHEAD_MAX
                + wire::PARTITION_BYTES_MAX
        })
        .sum::<usize>();
    Envelope::build(
        Kind::LogStaged,
        Kind::LogStaged.current_version(),
        capacity + wire::VARINT_BYTES_MAX,
        |out| {
            wire::put_varint(out, records.len() as u64);
            for record in records {
                let (partition, timestamp) = place(record)?;
                wire::put_partition(out, partition);
                wire::put_record(out, record.key.as_deref(), &record.value, timestamp);
            }
            Ok(())
        },
    )
}

/// The records of an entry, decoded one at a time: a read from the middle of an entry decodes
/// what it skips and what it returns, not the rest. With `STAGED`, an entry of staged records,
/// each with its partition.
pub(crate) struct Records<'a, const STAGED: bool> {
    /// The records not decoded yet.
    reader: wire::Reader<'a>,
    /// How many they are.
    left: u64,
}

impl<const STAGED: bool> Records<'_, STAGED> {
    /// How many records are left.
    pub(crate) fn len(&self) -> u64 {
        self.left
    }
}

/// A record decoded from an entry: its partition (staged records only), its stored form read,
/// and the bytes of that stored form.
pub(crate) type Decoded<'a> = (Option<u32>, StoredRecord<'a>, &'a [u8]);

impl<'a, const STAGED: bool> Iterator for Records<'a, STAGED> {
    type Item = Result<Decoded<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            // Every byte belongs to a record: anything after the last is an encoding bug.
            let extra = self.reader.remaining();
            return (extra > 0).then(|| {
                self.reader = wire::Reader::new(&[]);
                Err(format!("{extra} bytes left over after the records"))
            });
        }
        self.left -= 1;
        let decoded = (if STAGED {
            self.reader.partition()
        } else {
            Ok(None)
        })
        .and_then(|partition| {
            let (record, stored) = self.reader.record()?;
            Ok((partition, record, stored))
        });
        if decoded.is_err() {
            (self.reader, self.left) = (wire::Reader::new(&[]), 0);
        }
        Some(decoded)
    }
}

fn open<const STAGED: bool>(kind: Kind, bytes: &[u8]) -> Result<Records<'_, STAGED>, String> {
    let (_, payload) = Envelope::unwrap(kind, bytes).map_err(|error| error.to_string())?;
    let mut reader = wire::Reader::new(payload);
    let left = reader.varint()?;
    Ok(Records { reader, left })
}

/// Opens an entry's envelope of log records (checking all of it) and its record count; the
/// records decode as they are taken.
pub(crate) fn open_records(bytes: &[u8]) -> Result<Records<'_, false>, String> {
    open(Kind::LogRecord, bytes)
}

/// Opens an envelope of staged records (checking all of it); the records decode, with their
/// partitions, as they are taken.
pub(crate) fn open_staged(bytes: &[u8]) -> Result<Records<'_, true>, String> {
    open(Kind::LogStaged, bytes)
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

    /// What an entry's records are to bincode.
    #[derive(Debug, PartialEq, serde::Serialize)]
    struct SerdeRecord {
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        timestamp: i64,
    }

    /// A record to encode: partition, key, value, timestamp.
    type Plain<'a> = (Option<u32>, Option<&'a [u8]>, &'a [u8], i64);

    fn seal_all(records: &[Plain<'_>]) -> Vec<u8> {
        let mut encoded = EncodedRecords::default();
        for &(partition, key, value, timestamp) in records {
            encoded.push(partition, key, value, timestamp);
        }
        let stored: Vec<&[u8]> = encoded.iter().map(|(_, stored)| stored).collect();
        seal_records(&stored)
    }

    /// Every record of an entry with its partition, or the first error.
    fn decode_all<const STAGED: bool>(
        records: Result<Records<'_, STAGED>, String>,
    ) -> Result<Vec<(Option<u32>, StoredRecord<'_>)>, String> {
        records?
            .map(|decoded| decoded.map(|(partition, record, _)| (partition, record)))
            .collect()
    }

    #[test]
    fn the_entry_format_is_pinned() {
        let sealed = seal_all(&[(None, Some(b"k"), b"value", 1_700_000_000_000)]);
        // In an envelope of log records, format version 2: one record, then the record as
        // `wire` writes it.
        let mut expected = vec![1];
        wire::put_record(&mut expected, Some(b"k"), b"value", 1_700_000_000_000);
        assert_eq!(&sealed[..7], &[b'R', b'I', b'L', b'L', 3, 2, 0]);
        assert_eq!(&sealed[rill_core::codec::HEADER_BYTES..], &expected[..]);
        let decoded = decode_all(open_records(&sealed)).unwrap();
        assert_eq!(
            decoded,
            [(
                None,
                StoredRecord {
                    key: Some(b"k"),
                    value: b"value",
                    timestamp: 1_700_000_000_000
                }
            )]
        );
    }

    #[test]
    fn staged_records_keep_their_partitions() {
        let records = [
            ProducerRecord::new("a").with_partition(3),
            ProducerRecord::new("b").with_key("k"),
        ];
        let place =
            |record: &ProducerRecord| Ok::<_, ()>((record.partition, record.value.len() as i64));
        let sealed = seal_staged(&records, place).unwrap();
        assert_eq!(&sealed[..7], &[b'R', b'I', b'L', b'L', 6, 1, 0]);
        let staged = decode_all(open_staged(&sealed)).unwrap();
        let summary: Vec<Plain<'_>> = staged
            .iter()
            .map(|(partition, record)| (*partition, record.key, record.value, record.timestamp))
            .collect();
        let expected: [Plain<'_>; 2] = [(Some(3), None, b"a", 1), (None, Some(b"k"), b"b", 1)];
        assert_eq!(summary, expected);
        assert!(
            decode_all(open_records(&sealed)).is_err(),
            "staged records are not a topic's"
        );
        assert_eq!(seal_staged(&records, |_| Err("refused")), Err("refused"));
    }

    #[test]
    fn trailing_bytes_damage_and_the_first_format_are_refused() {
        let sealed = seal_all(&[(None, None, b"v", 0)]);
        let mut payload = sealed[rill_core::codec::HEADER_BYTES..].to_vec();
        payload.push(0);
        let longer = Envelope::wrap(Kind::LogRecord, 2, &payload);
        let error = decode_all(open_records(&longer)).unwrap_err();
        assert!(error.contains("1 bytes left over"), "{error}");
        let mut damaged = sealed.clone();
        damaged[rill_core::codec::HEADER_BYTES] ^= 1;
        let error = decode_all(open_records(&damaged)).unwrap_err();
        assert!(error.contains("checksum"), "{error}");
        let first_format = Envelope::wrap(Kind::LogRecord, 1, &payload);
        let error = decode_all(open_records(&first_format)).unwrap_err();
        assert!(error.contains("an older Rill"), "{error}");
    }

    proptest! {
        #[test]
        fn entries_are_bincodes_sequences_of_records_and_read_back(
            records in proptest::collection::vec(
                (
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)),
                    proptest::collection::vec(any::<u8>(), 0..100),
                    any::<i64>(),
                ),
                0..8,
            ),
        ) {
            let plain: Vec<Plain<'_>> = records
                .iter()
                .map(|(key, value, timestamp)| (None, key.as_deref(), &value[..], *timestamp))
                .collect();
            let sealed = seal_all(&plain);
            let by_serde: Vec<SerdeRecord> = records
                .iter()
                .map(|(key, value, timestamp)| SerdeRecord {
                    key: key.clone(),
                    value: value.clone(),
                    timestamp: *timestamp,
                })
                .collect();
            let by_serde =
                bincode::serde::encode_to_vec(&by_serde, bincode::config::standard()).unwrap();
            prop_assert_eq!(&sealed[rill_core::codec::HEADER_BYTES..], &by_serde[..]);
            prop_assert_eq!(open_records(&sealed).unwrap().len(), records.len() as u64);
            let decoded = decode_all(open_records(&sealed)).unwrap();
            let decoded: Vec<Plain<'_>> = decoded
                .iter()
                .map(|(partition, record)| (*partition, record.key, record.value, record.timestamp))
                .collect();
            prop_assert_eq!(decoded, plain);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_all(open_records(&Envelope::wrap(Kind::LogRecord, 2, &bytes)));
            let _ = decode_all(open_staged(&Envelope::wrap(Kind::LogStaged, 1, &bytes)));
            let _ = decode_all(open_records(&bytes));
            let _ = decode_all(open_staged(&bytes));
        }
    }
}

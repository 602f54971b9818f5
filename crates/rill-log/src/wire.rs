//! The stored form of records: bincode's standard encoding, written and read by hand.
//!
//! A record is stored as bincode (2.x, standard configuration) encodes the tuple
//! `(Option<key bytes>, value bytes, i64 timestamp)`: an option tag (0 or 1), each byte string
//! as a varint length and its bytes, the timestamp zigzagged into a varint. An entry of a topic
//! is a varint count and its records; an entry of staged records a count and
//! `(Option<u32> partition, record)` pairs. A varint is one byte below 251, else a tag (251,
//! 252, 253 for 2, 4, 8 bytes) and that many little-endian bytes.
//!
//! These few shapes are written and read here rather than through serde because every record
//! of every append, stage, commit and read takes this path, and bincode's serde path costs tens
//! of nanoseconds a record in setup alone. The tests hold this code to bincode's: the same
//! bytes for any record, and for any bytes the same value, or both refuse them.

/// A record's stored form, as read: borrows from the stored bytes, so decoding copies the key
/// and value once, into what the reader returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoredRecord<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: &'a [u8],
    pub(crate) timestamp: i64,
}

/// The largest value a varint holds in one byte.
const SINGLE_BYTE_MAX: u8 = 250;
const U16_TAG: u8 = 251;
const U32_TAG: u8 = 252;
const U64_TAG: u8 = 253;
/// Room a varint takes at most.
pub(crate) const VARINT_BYTES_MAX: usize = 9;
/// Room a stored record takes beyond its key's and value's bytes, at most: the option tag and
/// three varints.
pub(crate) const RECORD_OVERHEAD_MAX: usize = 1 + 3 * VARINT_BYTES_MAX;
/// Room a partition (an option tag and a varint) takes at most.
pub(crate) const PARTITION_BYTES_MAX: usize = 1 + VARINT_BYTES_MAX;

/// Appends `value` as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, value: u64) {
    if let Ok(byte) = u8::try_from(value)
        && byte <= SINGLE_BYTE_MAX
    {
        out.push(byte);
    } else if let Ok(short) = u16::try_from(value) {
        out.push(U16_TAG);
        out.extend_from_slice(&short.to_le_bytes());
    } else if let Ok(word) = u32::try_from(value) {
        out.push(U32_TAG);
        out.extend_from_slice(&word.to_le_bytes());
    } else {
        out.push(U64_TAG);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a record's stored form.
pub(crate) fn put_record(out: &mut Vec<u8>, key: Option<&[u8]>, value: &[u8], timestamp: i64) {
    match key {
        None => out.push(0),
        Some(key) => {
            out.push(1);
            put_bytes(out, key);
        }
    }
    put_bytes(out, value);
    // Zigzag: small magnitudes, of either sign, take few bytes.
    put_varint(out, ((timestamp << 1) ^ (timestamp >> 63)) as u64);
}

/// Appends a staged record's partition.
pub(crate) fn put_partition(out: &mut Vec<u8>, partition: Option<u32>) {
    match partition {
        None => out.push(0),
        Some(partition) => {
            out.push(1);
            put_varint(out, u64::from(partition));
        }
    }
}

/// Reads stored forms from the front of some bytes.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let Some((taken, rest)) = self.rest.split_at_checked(len) else {
            return Err(format!(
                "cannot decode: {len} bytes wanted where {} are left",
                self.rest.len()
            ));
        };
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn option_tag(&mut self) -> Result<bool, String> {
        match self.array::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            [tag] => Err(format!("cannot decode: option tag {tag}")),
        }
    }

    /// A varint of at most `bytes_max` bytes after its tag.
    fn varint_of(&mut self, bytes_max: usize) -> Result<u64, String> {
        let [tag] = self.array::<1>()?;
        let value = match tag {
            0..=SINGLE_BYTE_MAX => u64::from(tag),
            U16_TAG => u64::from(u16::from_le_bytes(self.array()?)),
            U32_TAG if bytes_max >= 4 => u64::from(u32::from_le_bytes(self.array()?)),
            U64_TAG if bytes_max >= 8 => u64::from_le_bytes(self.array()?),
            tag => return Err(format!("cannot decode: varint tag {tag}")),
        };
        Ok(value)
    }

    /// A varint.
    pub(crate) fn varint(&mut self) -> Result<u64, String> {
        self.varint_of(8)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| format!("cannot decode: a length of {len}"))?;
        self.take(len)
    }

    /// A record's stored form, and the bytes it was read from.
    pub(crate) fn record(&mut self) -> Result<(StoredRecord<'a>, &'a [u8]), String> {
        let start = self.rest;
        let key = if self.option_tag()? {
            Some(self.bytes()?)
        } else {
            None
        };
        let value = self.bytes()?;
        let zigzag = self.varint()?;
        let timestamp = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        let stored = &start[..start.len() - self.rest.len()];
        Ok((
            StoredRecord {
                key,
                value,
                timestamp,
            },
            stored,
        ))
    }

    /// A staged record's partition.
    pub(crate) fn partition(&mut self) -> Result<Option<u32>, String> {
        if !self.option_tag()? {
            return Ok(None);
        }
        let partition = self.varint_of(4)?;
        u32::try_from(partition)
            .map(Some)
            .map_err(|_| format!("cannot decode: partition {partition}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    /// What bincode encodes and decodes: the stored form's serde twin.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct SerdeRecord {
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        timestamp: i64,
    }

    fn by_bincode<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    fn from_bincode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<(T, usize)> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).ok()
    }

    fn owned(record: StoredRecord<'_>) -> SerdeRecord {
        SerdeRecord {
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.to_vec(),
            timestamp: record.timestamp,
        }
    }

    /// Values at every varint width's edges.
    fn edgy_u64() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..300,
            Just(250),
            Just(251),
            Just(u64::from(u16::MAX)),
            Just(u64::from(u16::MAX) + 1),
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
            any::<u64>(),
        ]
    }

    #[test]
    fn a_record_is_written_as_bincode_writes_it() {
        let mut out = Vec::new();
        put_record(&mut out, Some(b"k"), b"value", 1_700_000_000_000);
        // Some(1 byte "k"), 5 bytes "value", then the timestamp zigzagged (2 * ts) as a u64
        // varint: tag 253 and 8 little-endian bytes.
        let mut expected = vec![1, 1, b'k', 5, b'v', b'a', b'l', b'u', b'e', 253];
        expected.extend_from_slice(&3_400_000_000_000u64.to_le_bytes());
        assert_eq!(out, expected);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn varints_are_bincodes(value in edgy_u64()) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            prop_assert_eq!(&out, &by_bincode(&value));
            prop_assert!(out.len() <= VARINT_BYTES_MAX);
            let mut reader = Reader::new(&out);
            prop_assert_eq!(reader.varint().unwrap(), value);
            prop_assert_eq!(reader.remaining(), 0);
        }

        #[test]
        fn records_and_partitions_are_bincodes(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            value in proptest::collection::vec(any::<u8>(), 0..300),
            timestamp in prop_oneof![any::<i64>(), -300i64..300, Just(i64::MIN), Just(i64::MAX)],
            partition in proptest::option::of(prop_oneof![any::<u32>(), 0u32..300]),
        ) {
            let mut out = Vec::new();
            put_partition(&mut out, partition);
            let partition_len = out.len();
            put_record(&mut out, key.as_deref(), &value, timestamp);
            let record = SerdeRecord { key, value, timestamp };
            prop_assert_eq!(&out, &by_bincode(&(partition, &record)));
            prop_assert!(
                out.len()
                    <= PARTITION_BYTES_MAX
                        + RECORD_OVERHEAD_MAX
                        + record.key.as_ref().map_or(0, Vec::len)
                        + record.value.len()
            );
            let mut reader = Reader::new(&out);
            prop_assert_eq!(reader.partition().unwrap(), partition);
            let (read, stored) = reader.record().unwrap();
            prop_assert_eq!(owned(read), record);
            prop_assert_eq!(stored, &out[partition_len..]);
            prop_assert_eq!(reader.remaining(), 0);
        }

        /// Any bytes: this reader and bincode agree on the value and its length, or both
        /// refuse (damaged bytes never decode here where bincode would refuse them).
        #[test]
        fn any_bytes_read_as_bincode_reads_them(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                proptest::collection::vec(prop_oneof![0u8..3, 249u8..=255], 0..40),
            ],
        ) {
            let ours = Reader::new(&bytes).record().ok();
            let theirs = from_bincode::<SerdeRecord>(&bytes);
            prop_assert_eq!(
                ours.map(|(record, stored)| (owned(record), stored.len())),
                theirs
            );
            let mut reader = Reader::new(&bytes);
            let ours = reader.partition().ok().map(|p| (p, bytes.len() - reader.remaining()));
            prop_assert_eq!(ours, from_bincode::<Option<u32>>(&bytes));
            let mut reader = Reader::new(&bytes);
            let ours = reader.varint().ok().map(|v| (v, bytes.len() - reader.remaining()));
            prop_assert_eq!(ours, from_bincode::<u64>(&bytes));
        }
    }
}

//! How Rill turns values into persisted bytes and back: bincode inside a versioned,
//! checksummed envelope.
//!
//! Every structure Rill persists is written as an [`Envelope`]: a magic number, the kind of
//! structure, its format version, the payload's length and an xxh3 checksum over all of it,
//! then the payload — the value encoded with bincode (2.x, standard configuration, through
//! serde). A reader learns from the envelope alone whether the bytes are Rill's, whether they
//! are the structure it expects, whether it knows the format, and whether they are intact:
//! a torn write, a flipped bit or a file from a newer Rill is an error that says which, never a
//! value decoded from garbage. Callers wrap it with the key, file or checkpoint at fault.
//!
//! bincode is used here only ([`encode`], [`decode`]); keyed state and source positions inside
//! a snapshot use the same two functions, and the snapshot as a whole is enveloped.
//!
//! ```text
//! offset  size  field
//!      0     4  magic  b"RILL"
//!      4     1  kind   (Kind as u8)
//!      5     2  format version, little endian
//!      7     8  payload length, little endian
//!     15     8  xxh3-64 of bytes 0..15 and the payload, little endian
//!     23     …  payload
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first four bytes of every persisted structure.
pub const MAGIC: [u8; 4] = *b"RILL";
/// The size of an envelope's header.
pub const HEADER_BYTES: usize = 23;

/// Which structure an envelope holds, and the format versions a reader of this build knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A checkpoint's metadata (`CheckpointMetadata`).
    CheckpointMetadata = 1,
    /// One subtask's part of a checkpoint (`SubtaskSnapshot`).
    SubtaskSnapshot = 2,
    /// Records of the event log: since version 2, a run of consecutive records of one
    /// partition (version 1 held one record).
    LogRecord = 3,
    /// A transaction marker of the event log.
    LogTransaction = 4,
    /// A topic's metadata in the event log.
    LogTopic = 5,
    /// Records staged in a transaction of the event log, with their target partitions.
    LogStaged = 6,
    /// A log sink's checkpointed state (its transactions, and what it committed).
    TransactionalSinkState = 7,
    /// The event log's record of the newest checkpoint a sink committed.
    LogCommitMark = 8,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::CheckpointMetadata,
        Kind::SubtaskSnapshot,
        Kind::LogRecord,
        Kind::LogTransaction,
        Kind::LogTopic,
        Kind::LogStaged,
        Kind::TransactionalSinkState,
        Kind::LogCommitMark,
    ];

    /// The versions this build reads, oldest first, and writes (the last). Change the written
    /// one whenever the encoding of the structure changes, keep reading the old one, and add a
    /// golden file for the new one. Only a structure whose container refuses the old format as
    /// a whole drops a version: log records of version 1 lived in `rill-log 2` directories,
    /// which `rill-log` refuses by their marker.
    fn versions(self) -> std::ops::RangeInclusive<u16> {
        match self {
            Kind::LogRecord => 2..=2,
            Kind::CheckpointMetadata
            | Kind::SubtaskSnapshot
            | Kind::LogTransaction
            | Kind::LogTopic
            | Kind::LogStaged
            | Kind::TransactionalSinkState
            | Kind::LogCommitMark => 1..=1,
        }
    }

    /// The version this build writes.
    pub fn current_version(self) -> u16 {
        *self.versions().end()
    }

    /// The oldest version this build reads.
    pub fn oldest_version(self) -> u16 {
        *self.versions().start()
    }

    /// Whether this build reads `version` of the structure.
    pub fn reads(self, version: u16) -> bool {
        self.versions().contains(&version)
    }

    fn from_byte(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }

    /// The structure's name in errors.
    pub fn name(self) -> &'static str {
        match self {
            Kind::CheckpointMetadata => "checkpoint metadata",
            Kind::SubtaskSnapshot => "subtask snapshot",
            Kind::LogRecord => "log records",
            Kind::LogTransaction => "log transaction marker",
            Kind::LogTopic => "log topic metadata",
            Kind::LogStaged => "log staged records",
            Kind::TransactionalSinkState => "two-phase-commit sink state",
            Kind::LogCommitMark => "log commit mark",
        }
    }
}

/// Why bytes are not the value asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than a header: a torn or truncated write.
    #[error("{len} bytes, fewer than an envelope's {HEADER_BYTES}-byte header (torn or truncated)")]
    TooShort {
        /// How many bytes there were.
        len: usize,
    },
    /// Not Rill's data.
    #[error("no Rill magic number (found {found:02x?}): not written by Rill, or overwritten")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// Another structure than the one expected.
    #[error("holds {found} where {expected} was expected")]
    WrongKind {
        /// What the reader expected.
        expected: &'static str,
        /// What the envelope says (or the unknown kind byte).
        found: String,
    },
    /// A format this build does not read: written by a newer Rill, or by an older one whose
    /// format this build no longer reads.
    #[error(
        "{kind} in format version {found}, which this build does not read (it reads {oldest} to {supported}): written by {}",
        written_by(*.found, *.supported)
    )]
    UnknownVersion {
        /// The structure.
        kind: &'static str,
        /// The version found.
        found: u16,
        /// The oldest version this build reads.
        oldest: u16,
        /// The newest version this build reads.
        supported: u16,
    },
    /// The payload is not as long as the header says: a torn or truncated write.
    #[error("the payload has {actual} bytes where the header says {declared} (torn or truncated)")]
    LengthMismatch {
        /// The length in the header.
        declared: u64,
        /// The bytes there are.
        actual: u64,
    },
    /// The checksum does not match: the bytes were damaged.
    #[error(
        "checksum mismatch (stored {stored:016x}, computed {computed:016x}): the bytes are damaged"
    )]
    BadChecksum {
        /// The checksum in the header.
        stored: u64,
        /// The checksum of what is there.
        computed: u64,
    },
    /// The payload is intact but does not decode as the structure: a bug, or a format change
    /// without a version bump.
    #[error("{0}")]
    Payload(String),
}

/// Who wrote a version this build does not read, newest first.
fn written_by(found: u16, supported: u16) -> &'static str {
    if found > supported {
        "a newer Rill?"
    } else {
        "an older Rill, whose format this build no longer reads"
    }
}

/// The most bytes one decoded value may claim. bincode allocates what a length prefix claims
/// before reading it, so damaged bytes could otherwise ask for more than the address space (a
/// panic) or the machine; with a limit, such a claim is an error. Four GiB is far above any
/// snapshot or record Rill writes as one value.
const DECODE_LIMIT_BYTES: usize = 1 << 32;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

/// Encodes a value with bincode (no envelope: for parts of an enveloped structure).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config())
        .map_err(|error| CodecError::Payload(format!("cannot encode: {error}")))
}

/// Appends a value's encoding to `out` (no envelope).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(drop)
        .map_err(|error| CodecError::Payload(format!("cannot encode: {error}")))
}

/// Decodes a value [`encode`] wrote; every byte must belong to it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|error| CodecError::Payload(format!("cannot decode: {error}")))?;
    whole(bytes, read)?;
    Ok(value)
}

fn whole(bytes: &[u8], read: usize) -> Result<(), CodecError> {
    if read == bytes.len() {
        Ok(())
    } else {
        Err(CodecError::Payload(format!(
            "{} bytes left over after the value",
            bytes.len() - read
        )))
    }
}

/// Sealing and opening envelopes.
pub struct Envelope;

impl Envelope {
    /// The value in an envelope of `kind`, at the kind's current version.
    pub fn seal<T: Serialize + ?Sized>(kind: Kind, value: &T) -> Result<Vec<u8>, CodecError> {
        Envelope::build(kind, kind.current_version(), 0, |out| {
            encode_into(value, out)
        })
    }

    /// `payload` in an envelope of `kind` and `version`.
    pub fn wrap(kind: Kind, version: u16, payload: &[u8]) -> Vec<u8> {
        let built: Result<Vec<u8>, std::convert::Infallible> =
            Envelope::build(kind, version, payload.len(), |out| {
                out.extend_from_slice(payload);
                Ok(())
            });
        built.unwrap_or_else(|never| match never {})
    }

    /// An envelope of `kind` and `version` whose payload `write` appends: header and payload in
    /// one allocation of at least `capacity` bytes beyond the header (room for what the caller
    /// appends after the envelope, too).
    pub fn build<E>(
        kind: Kind,
        version: u16,
        capacity: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<u8>, E> {
        let mut bytes = Vec::with_capacity(HEADER_BYTES + capacity);
        bytes.extend_from_slice(&MAGIC);
        bytes.push(kind as u8);
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&[0; 16]);
        write(&mut bytes)?;
        let length = (bytes.len() - HEADER_BYTES) as u64;
        bytes[7..15].copy_from_slice(&length.to_le_bytes());
        let (header, payload) = bytes.split_at(HEADER_BYTES);
        let checksum = checksum(&header[..15], payload);
        bytes[15..23].copy_from_slice(&checksum.to_le_bytes());
        Ok(bytes)
    }

    /// The value in an envelope of `kind`, checked: magic, kind, version, length, checksum.
    pub fn open<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> Result<T, CodecError> {
        let (_, payload) = Envelope::unwrap(kind, bytes)?;
        decode(payload)
    }

    /// The version and payload of an envelope of `kind`, checked.
    pub fn unwrap(kind: Kind, bytes: &[u8]) -> Result<(u16, &[u8]), CodecError> {
        let (header, payload) = bytes
            .split_first_chunk::<HEADER_BYTES>()
            .ok_or(CodecError::TooShort { len: bytes.len() })?;
        let field = |at: usize, len: usize| &header[at..at + len];
        let magic: [u8; 4] = header[0..4].try_into().unwrap_or_default();
        if magic != MAGIC {
            return Err(CodecError::BadMagic { found: magic });
        }
        let found = Kind::from_byte(header[4]);
        if found != Some(kind) {
            return Err(CodecError::WrongKind {
                expected: kind.name(),
                found: found.map_or_else(
                    || format!("unknown kind {}", header[4]),
                    |k| k.name().to_owned(),
                ),
            });
        }
        let version = u16::from_le_bytes([header[5], header[6]]);
        let declared = u64::from_le_bytes(field(7, 8).try_into().unwrap_or_default());
        let stored = u64::from_le_bytes(field(15, 8).try_into().unwrap_or_default());
        if declared != payload.len() as u64 {
            return Err(CodecError::LengthMismatch {
                declared,
                actual: payload.len() as u64,
            });
        }
        let computed = checksum(&header[..15], payload);
        if computed != stored {
            return Err(CodecError::BadChecksum { stored, computed });
        }
        if !kind.reads(version) {
            return Err(CodecError::UnknownVersion {
                kind: kind.name(),
                found: version,
                oldest: kind.oldest_version(),
                supported: kind.current_version(),
            });
        }
        Ok((version, payload))
    }
}

fn checksum(header: &[u8], payload: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(header);
    hasher.update(payload);
    hasher.digest()
}

#[cfg(test)]
mod tests;

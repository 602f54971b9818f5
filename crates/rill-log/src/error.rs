//! The errors of the event log; each names the path, topic, partition or offset at fault.

use std::path::PathBuf;

/// Why an operation on the event log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The directory does not exist.
    #[error("no Rill log at {0}: the directory does not exist")]
    NotFound(PathBuf),
    /// The directory exists but is not a Rill log.
    #[error("{0} is not a Rill log (it has no RILL_LOG marker); refusing to touch it")]
    NotARillLog(PathBuf),
    /// The log was written by an unknown version of Rill.
    #[error(
        "the Rill log at {path} has format '{found}', which this version cannot read (it reads '{}')",
        crate::log::FORMAT
    )]
    UnsupportedFormat {
        /// The log's directory.
        path: PathBuf,
        /// The marker's content.
        found: String,
    },
    /// Another handle (likely another process) has the log open.
    #[error(
        "the Rill log at {} is open in {}, and one process at a time may open it: stop that \
         process first (a job started again resumes from its checkpoint), or share the data \
         through a broker both can reach (NATS JetStream: rill-nats)",
        .path.display(),
        .holder.as_deref().unwrap_or("another process")
    )]
    Locked {
        /// The log's directory.
        path: PathBuf,
        /// Who holds it, as it recorded itself (`process 1234 (wordcount)`), if it did.
        holder: Option<String>,
    },
    /// The topic does not exist.
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// A topic of that name exists already.
    #[error("topic '{0}' exists already")]
    TopicExists(String),
    /// The topic name is not allowed.
    #[error("invalid topic name '{0}': use 1 to 128 characters from A-Z a-z 0-9 . _ -")]
    InvalidTopicName(String),
    /// The partition count is not allowed.
    #[error("invalid partition count {0} for topic '{1}': it must be between 1 and 1024")]
    InvalidPartitionCount(u32, String),
    /// The partition does not exist.
    #[error("topic '{topic}' has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// The offset is past the end of the partition.
    #[error(
        "offset {offset} is past the end of topic '{topic}' partition {partition} (end offset {end})"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The partition's end offset.
        end: u64,
    },
    /// The storage engine failed.
    #[error("storage error in the Rill log at {path} while {doing}: {source}")]
    Storage {
        /// The log's directory.
        path: PathBuf,
        /// What the log was doing: the topic, partition and offsets it was reading, the
        /// transaction or writer, or the key space.
        doing: String,
        /// The engine's error.
        source: rill_core::storage::StorageError,
    },
    /// The log's database could not be opened.
    #[error("cannot open the Rill log at {path}: {source}")]
    Open {
        /// The log's directory.
        path: PathBuf,
        /// What the storage reported.
        source: Box<rill_store::StoreError>,
    },
    /// A file of the log could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record or topic metadata could not be encoded.
    #[error("cannot encode {reason} for topic '{topic}'")]
    Encode {
        /// The topic.
        topic: String,
        /// What could not be encoded, and why.
        reason: String,
    },
    /// A stored record or topic could not be decoded.
    #[error("corrupt data in topic '{topic}': {reason}")]
    Corrupt {
        /// The topic (or `<meta>` for topic metadata).
        topic: String,
        /// What could not be decoded.
        reason: String,
    },
    /// The transaction id is not allowed.
    #[error("invalid transaction id '{0}': use 1 to 512 bytes of text without control characters")]
    InvalidTransactionId(String),
    /// No open transaction has that id.
    #[error("no open transaction '{0}'")]
    UnknownTransaction(String),
    /// The transaction cannot take the request in its state.
    #[error("transaction '{id}' cannot take this: {reason}")]
    TransactionConflict {
        /// The transaction.
        id: String,
        /// Why not.
        reason: String,
    },
    /// A transaction's stored data could not be decoded.
    #[error("corrupt transaction '{id}' (key spaces rill.transactions, rill.staged): {reason}")]
    CorruptTransaction {
        /// The transaction.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A writer's commit mark could not be decoded.
    #[error("corrupt commit mark of writer '{writer}' (key space rill.commit-marks): {reason}")]
    CorruptCommitMark {
        /// The writer.
        writer: String,
        /// What is wrong.
        reason: String,
    },
}

//! Rill's embedded event log: durable, append-only, partitioned topics on fjall.
//!
//! A log lives in a directory: a format marker file (`RILL_LOG`) and a fjall database, reached
//! through `rill-core`'s storage contract ([`EventLog::on`] takes any implementation of it:
//! the simulator runs this very code on its simulated disk). Every stored value is in a
//! versioned, checksummed envelope, so damage is reported, not read as records. Each
//! topic has a fixed number of partitions; records appended to a partition get dense offsets
//! from 0, and readers read a partition from any offset in offset order. A record's partition
//! is given, or chosen by a stable hash of its key ([`partition_for_key`]), or round-robin.
//! An append is in the OS's buffers when it returns, so it survives a crash of the process;
//! [`EventLog::flush`] fsyncs, so that everything appended so far survives a crash of the
//! machine. One process at a time has a log open (fjall locks the directory); a read-only open
//! ([`EventLog::open_read_only`]) reads a copy, changing nothing, and reports damage instead of
//! failing on it.
//!
//! # Layout
//! - [`log`]: [`EventLog`], opening, topics, append, read, end offsets, flush;
//! - [`record`]: the records going in ([`ProducerRecord`]) and coming out ([`LogRecord`]);
//! - [`transaction`]: records staged, then committed (in atomic pieces) or aborted (two-phase
//!   commit); readers see committed records only;
//! - [`check`]: reading everything a log holds, past damage, to report what is intact and
//!   what is not ([`LogCheck`]);
//! - [`salvage`]: copying the intact records of a damaged log into a new one;
//! - [`error`]: [`LogError`], every variant naming what was at fault;
//! - `holder`: which process holds a log open, recorded for the error that refuses another;
//! - [`connector`]: the log as `rill-core`'s `ConnectorLog`, which the log source and sink read
//!   and write through;
//! - `wire`: the stored form of records (bincode's standard encoding, written and read by
//!   hand).

pub mod check;
pub mod connector;
pub mod error;
mod holder;
pub mod log;
pub mod record;
pub mod salvage;
pub mod transaction;
mod wire;

pub use check::{LogCheck, PartitionCheck};
pub use error::LogError;
pub use log::{EventLog, FORMAT, TopicInfo};
pub use record::{LogRecord, ProducerRecord, RecordPosition, partition_for_key};
pub use transaction::{StagedRecord, TransactionInfo};

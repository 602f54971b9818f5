//! Rill's embedded event log: durable, append-only, partitioned topics on fjall.
//!
//! A log lives in a directory: a format marker file (`RILL_LOG`) and a fjall database. Each
//! topic has a fixed number of partitions; records appended to a partition get dense offsets
//! from 0, and readers read a partition from any offset in offset order. A record's partition
//! is given, or chosen by a stable hash of its key ([`partition_for_key`]), or round-robin.
//! Appends are buffered by the OS until [`EventLog::flush`], which makes everything appended so
//! far survive a crash of the process or the machine.
//!
//! # Layout
//! - [`log`]: [`EventLog`], opening, topics, append, read, end offsets, flush;
//! - [`record`]: the records going in ([`ProducerRecord`]) and coming out ([`LogRecord`]);
//! - [`error`]: [`LogError`], every variant naming what was at fault.

pub mod error;
pub mod log;
pub mod record;

pub use error::LogError;
pub use log::{EventLog, TopicInfo};
pub use record::{LogRecord, ProducerRecord, RecordPosition, partition_for_key};

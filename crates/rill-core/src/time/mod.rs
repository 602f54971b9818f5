//! Event time at the sources: timestamp assigners, watermark generators and strategies, and
//! the per-partition watermarks a source subtask combines them into.
//!
//! # The rule, as in Flink
//! A source stamps each record with its event time — the time the record already carries (a
//! log record's timestamp), or what a [`TimestampAssigner`] reads from its value — and hands
//! that time to a [`WatermarkGenerator`]. A generator emits watermarks two ways:
//!
//! - **periodically**: [`WatermarkGenerator::on_periodic_emit`] is called once every
//!   *watermark interval* of processing time (200 ms unless the job sets another,
//!   [`DEFAULT_WATERMARK_INTERVAL_MS`]). The built-in generators work this way:
//!   [`BoundedOutOfOrderness`] emits the largest timestamp seen, less the allowed
//!   out-of-orderness, less 1 ms (so that a record at exactly the largest timestamp seen is not
//!   late); with no out-of-orderness it is the generator for monotonous timestamps. An interval
//!   of 0 turns periodic emission off, as in Flink: only what generators emit from
//!   [`WatermarkGenerator::on_event`] moves the watermark, and the end of the input.
//! - **punctuated**: [`WatermarkGenerator::on_event`] may emit a watermark at any record
//!   ([`Punctuated`] is such a generator). It takes effect right after that record: the
//!   records before it and the watermark go downstream in that order, even within one batch.
//!
//! A [`WatermarkStrategy`] says which generator a source runs — a fresh one per partition —
//! and, optionally, after how much processing time without a record a partition stops holding
//! the watermark back (**idleness**).
//!
//! # Per partition
//! A source subtask often reads several partitions (of a log topic, say) whose event times
//! advance at different paces. One generator for all of them would let the fastest partition
//! push the watermark past records a slower one has still to deliver. So [`PartitionWatermarks`]
//! runs one generator per partition, and the subtask's watermark is the minimum of what they
//! emitted over the partitions that are neither idle nor ended; it is emitted as soon as it
//! advances, and never goes back. See [`PartitionWatermarks`] for idleness and ended
//! partitions.
//!
//! # Where the batch still shows
//! Processing time is what the driver passes to each poll of the source
//! ([`crate::source::SourceOutput::processing_time`]): nothing here reads a clock (the runtime
//! passes the wall clock, the simulator its virtual clock). Every record of one poll (up to a
//! batch of them) is read at that poll's time, so a periodic watermark falls between two polls,
//! never inside one: it is emitted after the records of the first poll at or past its due
//! time. A generator's periodic watermark therefore covers whole polls, and a small input read
//! in one poll fires its windows only at its end — as in Flink, where a whole small input read
//! before the first interval passes gets no watermark but the last. Punctuated watermarks are
//! not limited so: they fall between the records of a poll.

mod generator;
mod partitions;

pub use generator::{
    BoundedOutOfOrderness, DEFAULT_WATERMARK_INTERVAL_MS, Punctuated, TimestampAssigner,
    WatermarkGenerator, WatermarkOutput, WatermarkStrategy,
};
pub use partitions::{PartitionWatermarks, WatermarkUpdate, collect_record};

/// Whether a stream holds back the watermarks of the operators it feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatermarkStatus {
    /// Records and watermarks may come: the stream's watermark counts.
    Active,
    /// Nothing is expected for a while: the stream's watermark does not count until it is
    /// active again.
    Idle,
}

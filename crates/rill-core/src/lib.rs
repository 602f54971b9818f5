//! Rill's protocol core: everything that decides what happens in a job, with no I/O.
//!
//! No actix, no threads, no clocks and no disk live here. The actix runtime (`rill-runtime`)
//! and the deterministic simulator drive the same state machines:
//!
//! - [`element`]: records, watermarks, end-of-input, batches;
//! - [`key`]: the stable key hash and key groups;
//! - [`graph`] and [`plan`]: the logical job graph and its expansion into chained subtasks and
//!   channels; [`topology`]: that expansion as every driver wires it;
//! - [`exchange`]: forward, rebalance, key-hash and broadcast routing;
//! - [`operator`], [`source`], [`keyed`], [`state`]: what runs inside a subtask;
//! - [`transactional`]: exactly-once output by two-phase commit, written once over a small
//!   contract that the log, PostgreSQL and the simulator's models keep;
//! - [`log_connector`]: an event log as a source and a two-phase-commit sink, over any log that
//!   keeps its contract (the embedded log, or the simulator's);
//! - [`flow`]: credit-based flow control;
//! - [`subtask`] and [`partitioner`]: the two state machines a job is made of;
//! - [`codec`]: bincode inside the versioned, checksummed envelope of every persisted byte;
//! - [`storage`]: the storage contract the checkpoint store and the log are written over;
//! - [`checkpoint`] and [`coordinator`]: barriers, alignment, and the checkpoint coordinator;
//! - [`layout`]: which operators each subtask runs, and assigning a checkpoint's state to a
//!   job of another shape (rescaling);
//! - [`job_master`]: a job's lifecycle: attempts, fail-over, savepoint waiters, its end;
//! - [`restart`]: restart strategies;
//! - [`runtime_config`]: how a driver runs a job's subtasks (threads, flow control, pauses),
//!   described with the job and read by the actor runtime;
//! - [`time`]: watermark strategies, per-partition watermark generation and idleness;
//! - [`timers`]: event-time and processing-time timers of keyed operators, kept in keyed state;
//! - [`process`]: process functions on streams that are not keyed (timestamp, watermark,
//!   side outputs);
//! - [`side_output`]: side outputs, typed by a tag;
//! - [`window`]: windows on keyed streams (tumbling, sliding, session, global with a count
//!   trigger), their functions, allowed lateness and late data, and the window join;
//! - [`two_input`]: two-input operators: keyed co-process functions and the interval join;
//! - `defects` (with the `defects` feature, for the simulator): components broken on purpose.

pub mod checkpoint;
pub mod codec;
pub mod coordinator;
#[cfg(feature = "defects")]
pub mod defects;
pub mod element;
pub mod error;
pub mod exchange;
pub mod flow;
pub mod graph;
pub mod job_master;
pub mod key;
pub mod keyed;
pub mod layout;
pub mod log_connector;
pub mod operator;
pub mod partitioner;
pub mod plan;
pub mod process;
pub mod restart;
pub mod runtime_config;
pub mod side_output;
pub mod source;
pub mod state;
pub mod storage;
pub mod subtask;
pub mod time;
pub mod timers;
pub mod topology;
pub mod transactional;
pub mod two_input;
pub mod window;

pub use element::{Batch, Data, Event, Record, Records, Timestamp};
pub use error::{BoxError, OperatorError, TaskError};
pub use key::Key;

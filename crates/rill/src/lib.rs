//! Rill: a stateful stream processor.
//!
//! Describe a job with [`StreamEnv`] and [`DataStream`], run it on the actor runtime with
//! [`StreamEnv::execute`] (blocking) or [`StreamEnv::execute_async`] (a handle you can await or
//! cancel), and read and write the embedded event log with [`connectors::log`].
//!
//! ```
//! use rill::prelude::*;
//!
//! let env = StreamEnv::new();
//! let counts = env
//!     .from_iter(["a b", "b c", "b"].map(String::from))
//!     .flat_map(|line: String| line.split(' ').map(String::from).collect::<Vec<_>>())
//!     .map(|word| (word, 1u64))
//!     .key_by(|(word, _): &(String, u64)| word.clone())
//!     .reduce(|(word, a), (_, b)| (word, a + b))
//!     .collect();
//! env.execute("word count")?;
//! let mut counts = counts.take();
//! counts.sort();
//! assert_eq!(counts.last(), Some(&("c".to_string(), 1)));
//! assert!(counts.contains(&("b".to_string(), 3)));
//! # Ok::<(), rill::RillError>(())
//! ```
//!
//! # Layout
//! - [`env`](mod@env): the environment a job is described in, its configuration, and execution;
//! - [`stream`]: `DataStream` and `KeyedStream`, the operations on them, and side outputs;
//! - [`windowed`]: windows on keyed streams and what they compute;
//! - [`connected`]: two keyed streams processed together (co-process, window and interval
//!   joins);
//! - [`connectors`]: sources and sinks (iterators and sequences are on the environment; the
//!   event log, stdout, and collecting into a `Vec` here).

#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod connected;
pub mod connectors;
pub mod env;
pub mod error;
pub mod stream;
pub mod windowed;

pub use connected::ConnectedStreams;
pub use env::{ExecutionConfig, RunningJob, StateBackendConfig, StreamEnv};
pub use error::RillError;
pub use stream::{DataStream, KeyedStream};
pub use windowed::WindowedStream;

pub use rill_core as core;
pub use rill_log as log;
pub use rill_runtime as runtime;
pub use rill_store as store;

/// The names most jobs use.
pub mod prelude {
    pub use crate::connected::ConnectedStreams;
    pub use crate::connectors::collect::Collected;
    pub use crate::connectors::log::{LogSink, LogSource};
    pub use crate::env::{ExecutionConfig, StateBackendConfig, StreamEnv};
    pub use crate::error::RillError;
    pub use crate::stream::{DataStream, KeyedStream};
    pub use crate::windowed::{LATE_DATA, WindowedStream};
    pub use rill_core::keyed::{KeyedContext, KeyedProcessFunction};
    pub use rill_core::operator::Sink;
    pub use rill_core::restart::RestartStrategy;
    pub use rill_core::side_output::OutputTag;
    pub use rill_core::source::{Source, SourceOutput, SourcePoll};
    pub use rill_core::state::{
        AggregateFunction, AggregatingState, InNamespace, ListState, MapState, ReducingState,
        ValueState,
    };
    pub use rill_core::time::WatermarkStrategy;
    pub use rill_core::timers::TimeDomain;
    pub use rill_core::two_input::{Either, KeyedCoProcessFunction};
    pub use rill_core::window::{ProcessWindowFunction, TimeWindow, WindowAssigner, WindowContext};
    pub use rill_core::{BoxError, Record, Timestamp};
    pub use rill_log::{EventLog, LogRecord, ProducerRecord};
}

//! Rill's DataStream API: how a job is described, without anything that runs it.
//!
//! Describe a job with [`StreamEnv`] and [`DataStream`]; [`StreamEnv::job_graph`] builds the
//! logical `JobGraph` of `rill-core` that every executor takes: `rill` (which re-exports this
//! crate) runs it on the actor runtime with its `Execute` trait, and the simulator
//! (`rill-sim`) runs it under a seeded scheduler and injected faults. So this crate depends on
//! `rill-core`, `rill-store` (the fjall state backend a job may ask for) and `rill-log` (the
//! event log's connectors), and never on actix or tokio.
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
//!     .uid("counts")
//!     .collect();
//! let graph = env.job_graph("word count")?;
//! assert_eq!(graph.operators.len(), 5);
//! env.execute("word count")?; // `rill::Execute`: on the actor runtime
//! assert_eq!(counts.len(), 5);
//! # Ok::<(), rill::RillError>(())
//! ```
//!
//! # Layout
//! - [`env`](mod@env): the environment a job is described in, its configuration, and the
//!   [`JobSpec`] an executor takes;
//! - [`stream`]: `DataStream` and `KeyedStream`, the operations on them, and side outputs;
//! - [`windowed`]: windows on keyed streams and what they compute;
//! - [`connected`]: two keyed streams processed together (co-process, window and interval
//!   joins);
//! - [`connectors`]: sources and sinks (iterators and sequences are on the environment; the
//!   event log, stdout, and collecting into a `Vec` here); a custom one is a
//!   [`StreamEnv::from_source`] or a [`DataStream::sink_with`] away;
//! - [`error`]: the mistakes building a job finds.

mod defects;

pub mod connected;
pub mod connectors;
pub mod env;
pub mod error;
pub mod stream;
pub mod windowed;

pub use connected::ConnectedStreams;
pub use env::{ExecutionConfig, JobSpec, RuntimeConfig, StateBackendConfig, StreamEnv};
pub use error::{BuildError, DescriptionError};
pub use stream::{DataStream, KeyedStream, SinkHandle};
pub use windowed::WindowedStream;

/// The names most job descriptions use (`rill::prelude` adds execution).
pub mod prelude {
    pub use crate::connected::ConnectedStreams;
    pub use crate::connectors::collect::Collected;
    pub use crate::connectors::log::{LogSink, LogSource};
    pub use crate::env::{ExecutionConfig, StateBackendConfig, StreamEnv};
    pub use crate::stream::{DataStream, KeyedStream};
    pub use crate::windowed::{LATE_DATA, WindowedStream};
    pub use rill_core::keyed::{KeyedContext, KeyedProcessFunction};
    pub use rill_core::operator::Sink;
    pub use rill_core::process::{ProcessContext, ProcessFunction};
    pub use rill_core::restart::RestartStrategy;
    pub use rill_core::side_output::OutputTag;
    pub use rill_core::source::{Source, SourceOutput, SourcePoll};
    pub use rill_core::state::{
        AggregateFunction, AggregatingState, InNamespace, ListState, MapState, ReducingState,
        ValueState,
    };
    pub use rill_core::time::{
        TimestampAssigner, WatermarkGenerator, WatermarkOutput, WatermarkStrategy,
    };
    pub use rill_core::timers::TimeDomain;
    pub use rill_core::two_input::{Either, KeyedCoProcessFunction};
    pub use rill_core::window::{ProcessWindowFunction, TimeWindow, WindowAssigner, WindowContext};
    pub use rill_core::{BoxError, Record, Timestamp};
    pub use rill_log::{EventLog, LogRecord, ProducerRecord};
}

//! Rill: a stateful stream processor.
//!
//! Describe a job with [`StreamEnv`] and [`DataStream`], run it on the actor runtime with
//! [`Execute::execute`] (blocking) or [`Execute::execute_async`] (a handle you can await or
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
//! The description of a job is the crate `rill-api`, re-exported here whole, so that the
//! simulator and anything else that only builds job graphs need no runtime:
//! - [`env`](mod@env): the environment a job is described in, and its configuration;
//! - [`stream`]: `DataStream` and `KeyedStream`, the operations on them, and side outputs;
//! - [`windowed`]: windows on keyed streams and what they compute;
//! - [`connected`]: two keyed streams processed together (co-process, window and interval
//!   joins);
//! - [`connectors`]: sources and sinks (iterators and sequences are on the environment; the
//!   event log, stdout, and collecting into a `Vec` here).
//!
//! Execution is this crate's own:
//! - [`execute`]: [`Execute`], which runs a described job on a runtime of its own, and the
//!   [`RunningJob`] it starts;
//! - [`signals`]: running a job until Ctrl-C or `SIGTERM` stops it with a savepoint;
//! - [`error`]: [`RillError`], a description's error or the runtime's.

#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod error;
pub mod execute;
pub mod signals;

pub use rill_api::{
    ConnectedStreams, DataStream, ExecutionConfig, JobSpec, KeyedStream, SinkHandle,
    StateBackendConfig, StreamEnv, WindowedStream,
};
pub use rill_api::{connected, connectors, env, stream, windowed};

pub use error::RillError;
pub use execute::{Execute, RunningJob};
pub use signals::{SignalledEnd, StopSignal};

pub use rill_api as api;
pub use rill_core as core;
pub use rill_log as log;
pub use rill_runtime as runtime;
pub use rill_store as store;

/// The names most jobs use: `rill-api`'s, with execution and its error.
pub mod prelude {
    pub use crate::error::RillError;
    pub use crate::execute::Execute;
    pub use rill_api::prelude::*;
}

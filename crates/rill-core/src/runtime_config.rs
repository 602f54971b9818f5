//! How a driver runs a job's subtasks: worker threads, flow control, how long an idle source
//! pauses, how long a failed attempt may take to stop, and the resolution of processing time.
//!
//! Plain data, and here rather than in `rill-runtime`, because two crates that must not know
//! each other need it: the actix-free job description (`rill-api`'s `ExecutionConfig`, which a
//! user fills in while describing a job) and the actor runtime that reads it. Nothing in this
//! crate acts on it; the simulator has settings of its own (a scenario's flow control and
//! virtual clock).
//!
//! The default asks the standard library how many cores the process may use
//! ([`std::thread::available_parallelism`]): a fact about the host, read when a default
//! configuration is made, never by a state machine.

use std::time::Duration;

use crate::flow::FlowConfig;

/// How the runtime runs jobs.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeConfig {
    /// Worker threads (arbiters) that subtasks are spread over.
    pub workers: usize,
    /// Batch size and channel credits.
    pub flow: FlowConfig,
    /// How long a source that has nothing to emit waits before it is polled again.
    pub source_idle_pause: Duration,
    /// How long the actors of a failed attempt may take to stop before the job ends instead of
    /// restarting (an actor stuck in user code would otherwise write beside the new attempt).
    pub attempt_stop_timeout: Duration,
    /// How often each subtask reads the wall clock and advances its processing time: the
    /// resolution of processing-time timers. Sources also see the time at every poll, so the
    /// idleness of a source partition does not depend on it. Must be above zero.
    pub processing_time_interval: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            flow: FlowConfig::default(),
            source_idle_pause: Duration::from_millis(10),
            attempt_stop_timeout: Duration::from_secs(10),
            processing_time_interval: Duration::from_millis(10),
        }
    }
}

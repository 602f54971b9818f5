//! The DataStream API end to end on the actor runtime.

#![allow(clippy::unwrap_used)]

mod api;
mod bounded_reruns;
mod checkpoints;
mod connector_kill_recovery;
mod example_process;
mod kill_recovery;
mod log_jobs;
mod rewinds;
mod signals;
mod source_watermarks;
mod state_failures;
mod support;
mod windows;

//! The DataStream API end to end on the actor runtime.

#![allow(clippy::unwrap_used)]

mod api;
mod checkpoints;
mod source_watermarks;
mod kill_recovery;
mod log_jobs;
mod windows;
mod support;

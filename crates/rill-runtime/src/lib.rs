//! Rill's actix runtime: the driver that runs `rill-core`'s state machines as actors on real
//! threads.
//!
//! # Layout
//! - [`runtime`]: [`Runtime`], a dedicated actix system with a pool of arbiters (threads), and
//!   job submission;
//! - [`job`]: [`JobHandle`] to await or cancel a job, and its outcome types;
//! - `master`: the job master actor, which deploys a physical plan, watches its actors and ends
//!   the job;
//! - `subtask` and `partitioner`: one actor per subtask and per (subtask, output edge); each
//!   handler hands the message to its core state machine and sends what comes out;
//! - `coordinator`: the checkpoint coordinator actor, ticking the coordinator state machine,
//!   triggering sources and collecting their snapshots;
//! - `checkpoint_times`: how long checkpoints took, for the job's report;
//! - `panic_context`: a panic hook that names the job and subtask a panic happened in.
//!
//! The runtime owns its threads, so it works the same whether the application calling it runs
//! plain threads, tokio or actix: a job's outcome is awaited through a runtime-agnostic
//! channel.

mod checkpoint_times;
mod coordinator;
mod master;
mod messages;
mod panic_context;
mod partitioner;
mod subtask;

pub mod job;
pub mod runtime;

pub use checkpoint_times::CheckpointTimes;
pub use job::{JobCanceller, JobError, JobHandle, JobReport, PendingSavepoint};
pub use runtime::{Runtime, RuntimeConfig, RuntimeError};

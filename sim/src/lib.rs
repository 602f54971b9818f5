//! Rill's deterministic simulator.
//!
//! It runs a job's `rill-core` state machines — subtasks, partitioners, the checkpoint
//! coordinator, log sources and two-phase-commit sinks — the way the actix runtime does, but
//! under one seeded RNG, a virtual clock and injected faults, so a run is a pure function of
//! its seed and can be replayed step by step. It then checks the committed output against a
//! reference model: exactly-once, at-least-once, liveness. `cargo xtask sim` runs the
//! scenarios in `scenarios/` with it.
//!
//! # Layout
//! - [`disk`]: storage that knows written from synced, and what a crash keeps;
//! - [`storage`]: that disk as `rill-core`'s storage contract, under `rill-store`'s real
//!   checkpoint store;
//! - [`log`]: `rill-log`'s event log on such a disk;
//! - [`database`], [`files`] and [`broker`]: models of the systems other sinks write — a
//!   database with prepared transactions, a directory of part files with atomic renames, a
//!   broker with a duplicate window whose commits a crash can cut short;
//! - [`connectors`]: the log as a source and a two-phase-commit sink (writing the log or one of
//!   those models), handed to a job as a user's custom connectors;
//! - [`jobs`]: the catalog of jobs (described with `rill-api`), their inputs and reference
//!   outputs;
//! - [`user`]: simulating a user's own job, written with `rill-api`: [`UserJob`];
//! - [`faults`]: the faults and broken components, and a run's fault schedule;
//! - [`scenario`]: scenario files;
//! - [`world`]: the scheduler that drives the cores and injects the faults;
//! - [`check`]: the properties;
//! - [`accounting`]: every source position and keyed chunk of a checkpoint, restored once;
//! - [`trace`]: the trace hash and the step-by-step trace;
//! - [`runner`]: running seeds, shrinking fault schedules, summarising.
//!
//! It depends on `rill-core`, `rill-store` and `rill-log` (whose checkpoint store and event log
//! it runs on its disks) and `rill-api` (which its jobs are written with, as users write
//! theirs): never on actix, threads or the wall clock.

pub mod accounting;
pub mod broker;
pub mod check;
pub mod connectors;
pub mod database;
pub mod disk;
pub mod faults;
pub mod files;
pub mod jobs;
pub mod log;
pub mod runner;
pub mod scenario;
pub mod storage;
pub mod trace;
pub mod user;
pub mod world;

pub use user::{Input, SimulationReport, UserJob};

//! Rill's durable storage on fjall.
//!
//! [`CheckpointStore`] keeps, per job, every subtask's snapshot of each checkpoint and the
//! checkpoint's metadata. The coordinator writes the snapshots as they are acknowledged and the
//! metadata **last and durably**: [`CheckpointStore::latest`] only ever returns checkpoints
//! whose metadata was written, so a crash in the middle of a checkpoint loses that checkpoint
//! and nothing else.
//!
//! # Layout
//! - [`checkpoints`]: the store itself;
//! - [`error`]: the store's error type, [`StoreError`].

pub mod checkpoints;
pub mod error;

pub use checkpoints::{CheckpointStore, RestorePoint};
pub use error::StoreError;

//! Rill's durable storage on fjall.
//!
//! [`CheckpointStore`] keeps, per job, every subtask's snapshot of each checkpoint and the
//! checkpoint's metadata. The coordinator writes the snapshots as they are acknowledged and the
//! metadata **last and durably**: [`CheckpointStore::latest`] only ever returns checkpoints
//! whose metadata was written, so a crash in the middle of a checkpoint loses that checkpoint
//! and nothing else. It is written over `rill-core`'s storage contract, which
//! [`FjallStorage`] implements with fjall and the simulator with its journaled disk.
//!
//! [`FjallStateBackend`] keeps operators' keyed state on local disk, for state larger than
//! memory; it is a working copy that checkpoints snapshot, not a durable record of its own.
//!
//! # Layout
//! - [`checkpoints`]: the checkpoint store;
//! - [`fjall_storage`]: fjall as the storage contract;
//! - [`durable_file`]: a small file written whole or not at all (directory markers);
//! - [`journal`]: fjall's journal files, read to find the damaged batches fjall refuses;
//! - [`state`]: the fjall keyed-state backend;
//! - [`error`]: the store's error type, [`StoreError`].

pub mod checkpoints;
pub mod durable_file;
pub mod error;
pub mod fjall_storage;
pub mod journal;
pub mod state;

pub use checkpoints::{CheckpointStore, Damage, IntactCheckpoint, Problem, StoredValue};
pub use error::StoreError;
pub use fjall_storage::{FjallStorage, JournalRepair};
pub use journal::{JournalDamage, SkippedBatch};
pub use state::FjallStateBackend;

//! The storage contract: what Rill's durable stores (the checkpoint store, the event log) need
//! of a disk, and nothing more.
//!
//! A [`Storage`] holds named key spaces of ordered byte keys and byte values. Writes come in
//! batches applied atomically; a batch written [`Durability::Synced`] is durable — with every
//! write before it — when `write` returns, one written [`Durability::Buffered`] only once a
//! later synced write returns (a crash may lose it, or the buffered writes after the last sync
//! from some point on). Reads see every write that returned.
//!
//! fjall implements it in production (`rill-store`'s `FjallStorage`); the simulator's
//! journaled disk implements it under crashes that lose, keep or tear unsynced writes. The
//! stores above it are written once and run unchanged on both, so the simulator checks the
//! code that ships.

use crate::BoxError;

/// One change in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Sets `key` in `space` to `value`.
    Put {
        /// The key space.
        space: &'static str,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key` from `space` (nothing if it is not there).
    Delete {
        /// The key space.
        space: &'static str,
        /// The key.
        key: Vec<u8>,
    },
}

/// Whether a write must be durable when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Durable once a later synced write returns.
    Buffered,
    /// Durable, with every earlier write, when the write returns.
    Synced,
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Where a scan of keys that start with `prefix` and are at least `from` begins: the larger of
/// the two.
pub fn scan_start<'a>(prefix: &'a [u8], from: &'a [u8]) -> &'a [u8] {
    from.max(prefix)
}

/// A storage engine failed; the message says how.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub BoxError);

impl StorageError {
    /// An error from the engine's own error value.
    pub fn new(error: impl Into<BoxError>) -> Self {
        StorageError(error.into())
    }
}

/// Ordered key spaces with atomic batches, sync, point reads and prefix scans.
pub trait Storage: Send + Sync {
    /// Applies `ops` atomically, in order; with [`Durability::Synced`] they, and every write
    /// before them, are durable when it returns.
    fn write(&self, ops: Vec<WriteOp>, durability: Durability) -> Result<(), StorageError>;

    /// The value of `key` in `space`.
    fn get(&self, space: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Whether `space` holds `key` (without reading its value).
    fn contains(&self, space: &'static str, key: &[u8]) -> Result<bool, StorageError>;

    /// Up to `limit` entries of `space` whose keys start with `prefix` and are at least
    /// `from`, in key order.
    fn scan(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError>;

    /// Up to `limit` keys of `space` that start with `prefix` and are at least `from`, in
    /// key order, without their values.
    fn keys(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError>;

    /// The last key of `space` that starts with `prefix`.
    fn last_key(&self, space: &'static str, prefix: &[u8])
    -> Result<Option<Vec<u8>>, StorageError>;
}

//! The external backend's contract: keyed state kept outside the process's memory as encoded
//! values under (table, key group, encoded key), and how such tables are snapshotted.
//!
//! `rill-store` implements [`StateTables`] on fjall. The tables only keep bytes; what the
//! bytes mean is decided by the state handles.

use std::sync::Arc;

use super::{KeyedStateSnapshot, StateError, encode};
use crate::operator::OperatorInfo;

/// Keyed state kept outside the process's memory: tables of encoded values under (table,
/// key group, encoded key). They only keep bytes; the state handles decide what they mean.
pub trait StateTables: Send {
    /// The value under `key` in `table`, if any.
    fn get(
        &mut self,
        table: &str,
        key_group: u32,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError>;
    /// Puts `value` under `key` in `table`.
    fn put(
        &mut self,
        table: &str,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError>;
    /// Removes `key` from `table`.
    fn delete(&mut self, table: &str, key_group: u32, key: &[u8]) -> Result<(), StateError>;
    /// A read-only view of every table as it is now, which stays the same while these tables
    /// change and can be read on another thread: what a checkpoint snapshots, off the data
    /// path.
    fn freeze(&mut self) -> Result<Box<dyn FrozenTables>, StateError>;
}

/// A consistent view of external tables at one moment ([`StateTables::freeze`]).
pub trait FrozenTables: Send {
    /// Calls `visit(table, key_group, key, value)` for every entry, ordered by table, then key
    /// group, then key.
    fn scan(&mut self, visit: &mut EntryVisitor<'_>) -> Result<(), StateError>;
}

/// Receives the entries of [`FrozenTables::scan`]: table, key group, key, value.
pub type EntryVisitor<'a> = dyn FnMut(&str, u32, &[u8], &[u8]) + 'a;

/// Makes the external tables of one operator instance.
pub type StateTablesFactory =
    Arc<dyn Fn(&OperatorInfo) -> Result<Box<dyn StateTables>, StateError> + Send + Sync>;

/// Where a job's keyed state lives.
#[derive(Clone, Default)]
pub enum StateBackend {
    /// In memory: fastest, bounded by memory.
    #[default]
    Memory,
    /// In external tables, one set per operator instance: for working state larger than
    /// memory.
    External(StateTablesFactory),
}

impl std::fmt::Debug for StateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StateBackend::Memory => "Memory",
            StateBackend::External(_) => "External",
        })
    }
}

/// Adds the chunks of external tables to `snapshot`: per (table, key group), the entry count
/// as bincode encodes a `Vec`'s length, then each entry's encoded key and value — exactly the
/// encoding of a `Vec<(table key, value)>`, the chunk format of in-memory tables.
pub(super) fn snapshot_external(
    tables: &mut dyn FrozenTables,
    snapshot: &mut KeyedStateSnapshot,
) -> Result<(), StateError> {
    // The scan comes ordered by table and key group: one chunk is filled at a time.
    let mut current: Option<Chunk> = None;
    let mut finished = Vec::new();
    tables.scan(&mut |table, group, key, value| {
        let same = current
            .as_ref()
            .is_some_and(|chunk| chunk.group == group && chunk.table == table);
        if !same {
            finished.extend(current.replace(Chunk {
                table: table.to_owned(),
                group,
                entries: 0,
                bytes: Vec::new(),
            }));
        }
        if let Some(chunk) = current.as_mut() {
            chunk.entries += 1;
            chunk.bytes.extend_from_slice(key);
            chunk.bytes.extend_from_slice(value);
        }
    })?;
    for chunk in finished.into_iter().chain(current) {
        let mut encoded = encode(&chunk.table, &chunk.entries)?;
        encoded.extend_from_slice(&chunk.bytes);
        snapshot
            .tables
            .entry(chunk.table)
            .or_default()
            .insert(chunk.group, encoded);
    }
    Ok(())
}

/// The entries of one table's key group, as a scan collects them.
struct Chunk {
    table: String,
    group: u32,
    entries: u64,
    bytes: Vec<u8>,
}

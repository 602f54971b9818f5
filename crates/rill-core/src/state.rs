//! Keyed state, scoped to the key of the record being processed: in memory, or in external
//! tables (on disk) for state larger than memory.
//!
//! A keyed operator owns one [`KeyedStateStore`]. User functions declare state with handles
//! ([`ValueState`], [`MapState`]) named when the function is built; a handle finds its table in
//! the store by name on first use and remembers the table's slot afterwards, so the per-record
//! cost is one type check and one hash lookup. Tables are `FxHashMap`s: a fixed hash function,
//! so iteration order depends only on the operations applied, never on the run.
//!
//! A store snapshots **per key group** ([`KeyedStateSnapshot`]): each table's entries are
//! grouped by their key's key group and encoded with bincode, so that a snapshot taken at one
//! parallelism can be split and merged to restore at another. Restoring is lazy: the chunks of
//! a table wait, still encoded, until a handle first touches that table and so names its types.
//!
//! # Backends
//! [`StateBackend::Memory`] keeps tables as hash maps. [`StateBackend::External`] keeps them in
//! [`StateTables`] — `rill-store` implements them on fjall — as encoded values under
//! (table, key group, encoded key); a handle encodes and decodes on every access. Both
//! snapshot to the same per-key-group chunks (a chunk is the encoding of a `Vec<(K, V)>`), so
//! a checkpoint taken with one restores with the other, at any parallelism.

use std::any::Any;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::key::{Key, KeyGroupRange, key_group_of, key_group_of_hash, stable_hash};
use crate::operator::OperatorInfo;

/// The bounds a value kept in state must meet: clonable, sendable, and serializable for
/// snapshots.
pub trait StateValue: Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<V: Clone + Send + Serialize + DeserializeOwned + 'static> StateValue for V {}

/// A snapshot could not be taken or restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A table's entries could not be encoded.
    #[error("cannot encode state '{table}': {reason}")]
    Encode {
        /// The state's name.
        table: String,
        /// The encoder's message.
        reason: String,
    },
    /// The external tables failed.
    #[error("the state backend failed on state '{table}': {reason}")]
    Backend {
        /// The state's name (or `*` for all).
        table: String,
        /// What went wrong.
        reason: String,
    },
    /// A snapshot's chunk does not decode as the state's current types.
    #[error("state '{table}' (key group {key_group}) does not fit its declared types: {reason}")]
    Decode {
        /// The state's name.
        table: String,
        /// The key group of the chunk.
        key_group: u32,
        /// The decoder's message.
        reason: String,
    },
}

/// The keyed state of one operator instance as bytes: for each state (by name), for each key
/// group, the bincode encoding of that group's `(key, value)` entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedStateSnapshot {
    /// State name → key group → encoded entries.
    pub tables: BTreeMap<String, BTreeMap<u32, Vec<u8>>>,
}

impl KeyedStateSnapshot {
    /// The part of the snapshot in `range`: what one subtask restores after a rescale.
    pub fn select(&self, range: KeyGroupRange) -> Self {
        let tables = self
            .tables
            .iter()
            .map(|(name, groups)| {
                let kept = groups
                    .range(range.start..=range.end)
                    .map(|(group, bytes)| (*group, bytes.clone()))
                    .collect::<BTreeMap<_, _>>();
                (name.clone(), kept)
            })
            .filter(|(_, groups)| !groups.is_empty())
            .collect();
        KeyedStateSnapshot { tables }
    }

    /// Adds another subtask's snapshot; key groups of one operator belong to one subtask, so
    /// the two do not overlap.
    pub fn merge(&mut self, other: KeyedStateSnapshot) {
        for (name, groups) in other.tables {
            let target = self.tables.entry(name).or_default();
            for (group, bytes) in groups {
                debug_assert!(
                    !target.contains_key(&group),
                    "key group {group} snapshotted twice"
                );
                target.insert(group, bytes);
            }
        }
    }
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode<T: Serialize + ?Sized>(table: &str, value: &T) -> Result<Vec<u8>, StateError> {
    bincode::serde::encode_to_vec(value, bincode_config()).map_err(|error| StateError::Encode {
        table: table.to_owned(),
        reason: error.to_string(),
    })
}

fn decode<T: DeserializeOwned>(table: &str, key_group: u32, bytes: &[u8]) -> Result<T, StateError> {
    let decode_error = |reason: String| StateError::Decode {
        table: table.to_owned(),
        key_group,
        reason,
    };
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode_config())
        .map_err(|error| decode_error(error.to_string()))?;
    if read != bytes.len() {
        return Err(decode_error(format!(
            "{} of {} bytes are left over",
            bytes.len() - read,
            bytes.len()
        )));
    }
    Ok(value)
}

/// Adds the chunks of external tables to `snapshot`: per (table, key group), the entry count
/// as bincode encodes a `Vec`'s length, then each entry's encoded key and value — exactly the
/// encoding of a `Vec<(K, V)>`, the chunk format of in-memory tables.
fn snapshot_external(
    tables: &mut dyn StateTables,
    snapshot: &mut KeyedStateSnapshot,
) -> Result<(), StateError> {
    let mut chunks: BTreeMap<String, BTreeMap<u32, (u64, Vec<u8>)>> = BTreeMap::new();
    tables.scan(&mut |table, group, key, value| {
        let (count, bytes) = chunks
            .entry(table.to_owned())
            .or_default()
            .entry(group)
            .or_default();
        *count += 1;
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
    })?;
    for (table, groups) in chunks {
        let encoded = snapshot.tables.entry(table.clone()).or_default();
        for (group, (count, bytes)) in groups {
            let mut chunk = encode(&table, &count)?;
            chunk.extend_from_slice(&bytes);
            encoded.insert(group, chunk);
        }
    }
    Ok(())
}

/// A state table behind type erasure: the store snapshots and restores it without knowing
/// its types.
trait ErasedTable: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn snapshot(
        &self,
        name: &str,
        max_parallelism: u32,
    ) -> Result<BTreeMap<u32, Vec<u8>>, StateError>;
    fn restore(&mut self, name: &str, key_group: u32, chunk: &[u8]) -> Result<(), StateError>;
}

impl<K: Key, V: StateValue> ErasedTable for FxHashMap<K, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn snapshot(
        &self,
        name: &str,
        max_parallelism: u32,
    ) -> Result<BTreeMap<u32, Vec<u8>>, StateError> {
        let encode_error = |error: bincode::error::EncodeError| StateError::Encode {
            table: name.to_owned(),
            reason: error.to_string(),
        };
        // Entries are ordered by their key's stable hash (and so by key group), and keys of
        // equal hash by their encoding: equal state gives equal bytes whatever order the hash
        // map iterates in.
        let mut entries: Vec<(u64, &K, &V)> = self
            .iter()
            .map(|(key, value)| (stable_hash(key), key, value))
            .collect();
        let encoded = |key: &K| bincode::serde::encode_to_vec(key, bincode_config()).ok();
        entries
            .sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| encoded(a.1).cmp(&encoded(b.1))));
        let mut groups = BTreeMap::new();
        for chunk in entries.chunk_by(|a, b| {
            key_group_of_hash(a.0, max_parallelism) == key_group_of_hash(b.0, max_parallelism)
        }) {
            let group = key_group_of_hash(chunk[0].0, max_parallelism);
            let pairs: Vec<(&K, &V)> = chunk.iter().map(|&(_, key, value)| (key, value)).collect();
            let bytes =
                bincode::serde::encode_to_vec(&pairs, bincode_config()).map_err(encode_error)?;
            groups.insert(group, bytes);
        }
        Ok(groups)
    }

    fn restore(&mut self, name: &str, key_group: u32, chunk: &[u8]) -> Result<(), StateError> {
        let decode_error = |reason: String| StateError::Decode {
            table: name.to_owned(),
            key_group,
            reason,
        };
        let (entries, read): (Vec<(K, V)>, usize) =
            bincode::serde::decode_from_slice(chunk, bincode_config())
                .map_err(|error| decode_error(error.to_string()))?;
        // bincode is not self-describing: bytes left over are the surest sign of other types.
        if read != chunk.len() {
            return Err(decode_error(format!(
                "{} of {} bytes are left over",
                chunk.len() - read,
                chunk.len()
            )));
        }
        self.extend(entries);
        Ok(())
    }
}

/// Keyed state kept outside the process's memory: tables of encoded values under (table,
/// key group, encoded key). They only keep bytes; what the bytes mean is decided here.
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
    /// Calls `visit(table, key_group, key, value)` for every entry, ordered by table, then key
    /// group, then key.
    fn scan(&mut self, visit: &mut EntryVisitor<'_>) -> Result<(), StateError>;
}

/// Receives the entries of [`StateTables::scan`]: table, key group, key, value.
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
    /// In external tables, one set per operator instance: for state larger than memory.
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

/// The keyed state of one operator instance.
pub struct KeyedStateStore<K> {
    max_parallelism: u32,
    tables: Vec<StateTable>,
    /// Restored chunks of tables no handle has touched yet.
    pending: BTreeMap<String, BTreeMap<u32, Vec<u8>>>,
    /// Set for the external backend: then `tables` stays empty.
    external: Option<Box<dyn StateTables>>,
    key: PhantomData<fn() -> K>,
}

struct StateTable {
    name: &'static str,
    data: Box<dyn ErasedTable>,
}

impl<K: Key> KeyedStateStore<K> {
    /// An empty in-memory store over `max_parallelism` key groups.
    pub fn new(max_parallelism: u32) -> Self {
        KeyedStateStore {
            max_parallelism,
            tables: Vec::new(),
            pending: BTreeMap::new(),
            external: None,
            key: PhantomData,
        }
    }

    /// An empty store over `max_parallelism` key groups kept in `tables`.
    pub fn external(max_parallelism: u32, tables: Box<dyn StateTables>) -> Self {
        KeyedStateStore {
            external: Some(tables),
            ..Self::new(max_parallelism)
        }
    }

    /// The store of the operator instance `info` describes, in the job's backend.
    pub fn for_operator(info: &OperatorInfo) -> Result<Self, StateError> {
        Ok(match &info.state_backend {
            StateBackend::Memory => Self::new(info.max_parallelism),
            StateBackend::External(factory) => Self::external(info.max_parallelism, factory(info)?),
        })
    }

    /// Encodes every table per key group.
    pub fn snapshot(&mut self) -> Result<KeyedStateSnapshot, StateError> {
        let mut snapshot = KeyedStateSnapshot {
            tables: self.pending.clone(),
        };
        if let Some(external) = &mut self.external {
            snapshot_external(external.as_mut(), &mut snapshot)?;
            return Ok(snapshot);
        }
        for table in &self.tables {
            let groups = table.data.snapshot(table.name, self.max_parallelism)?;
            if !groups.is_empty() {
                snapshot.tables.insert(table.name.to_owned(), groups);
            }
        }
        Ok(snapshot)
    }

    /// Replaces the store's content by a snapshot (already narrowed to this instance's key
    /// groups). Tables are decoded when a handle first touches them. External tables are
    /// restored only into a fresh store, as every operator instance is before it runs.
    pub fn restore(&mut self, snapshot: KeyedStateSnapshot) {
        self.tables.clear();
        self.pending = snapshot.tables;
    }

    /// Whether the state lives in external tables.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// The external tables, with the restored chunks of `table` moved in first (decoding them
    /// as `(K, V)`); `None` for an in-memory store.
    ///
    /// # Panics
    /// As [`KeyedStateStore::table`] does for chunks that do not decode, and if the tables
    /// fail: the operator fails, naming the state.
    fn external_tables<V: StateValue>(
        &mut self,
        table: &'static str,
    ) -> Option<&mut dyn StateTables> {
        let external = self.external.as_mut()?;
        if let Some(groups) = self.pending.remove(table) {
            for (group, chunk) in groups {
                let mut entries = FxHashMap::<K, V>::default();
                if let Err(error) = entries.restore(table, group, &chunk) {
                    panic!("{error}");
                }
                for (key, value) in &entries {
                    let put = encode(table, key)
                        .and_then(|key| Ok((key, encode(table, value)?)))
                        .and_then(|(key, value)| external.put(table, group, &key, &value));
                    if let Err(error) = put {
                        panic!("{error}");
                    }
                }
            }
        }
        Some(external.as_mut())
    }

    /// The current key's value in external table `table`.
    fn external_get<V: StateValue>(&mut self, table: &'static str, key: &K) -> Option<V> {
        let group = key_group_of(key, self.max_parallelism);
        let tables = self.external_tables::<V>(table)?;
        let found = encode(table, key).and_then(|key| tables.get(table, group, &key));
        match found {
            Ok(Some(bytes)) => match decode(table, group, &bytes) {
                Ok(value) => Some(value),
                Err(error) => panic!("{error}"),
            },
            Ok(None) => None,
            Err(error) => panic!("{error}"),
        }
    }

    /// Puts the current key's value in external table `table`.
    fn external_put<V: StateValue>(&mut self, table: &'static str, key: &K, value: &V) {
        let group = key_group_of(key, self.max_parallelism);
        let Some(tables) = self.external_tables::<V>(table) else {
            return;
        };
        let put = encode(table, key)
            .and_then(|key| Ok((key, encode(table, value)?)))
            .and_then(|(key, value)| tables.put(table, group, &key, &value));
        if let Err(error) = put {
            panic!("{error}");
        }
    }

    /// Removes the current key from external table `table`.
    fn external_delete<V: StateValue>(&mut self, table: &'static str, key: &K) {
        let group = key_group_of(key, self.max_parallelism);
        let Some(tables) = self.external_tables::<V>(table) else {
            return;
        };
        if let Err(error) = encode(table, key).and_then(|key| tables.delete(table, group, &key)) {
            panic!("{error}");
        }
    }

    /// The table named `name`, created on first use (from restored chunks, if any).
    ///
    /// # Panics
    /// If two handles of one operator use the same name with different types, or restored
    /// state does not decode as the handle's types: a bug in the operator's code or a snapshot
    /// that does not fit the job, reported as the operator's failure with the state's name.
    fn table<T: ErasedTable + Default + 'static>(
        &mut self,
        name: &'static str,
        slot: &Cell<Option<usize>>,
    ) -> &mut T {
        // A cached slot is trusted only while it still names this table: a restore empties
        // the table list, and tables may come back in another order.
        let cached = slot.get().filter(|&index| {
            self.tables
                .get(index)
                .is_some_and(|table| table.name == name)
        });
        let index = match cached {
            Some(index) => index,
            None => {
                let index = match self.tables.iter().position(|table| table.name == name) {
                    Some(index) => index,
                    None => {
                        let mut data = T::default();
                        for (group, chunk) in self.pending.remove(name).unwrap_or_default() {
                            if let Err(error) = data.restore(name, group, &chunk) {
                                panic!("{error}");
                            }
                        }
                        self.tables.push(StateTable {
                            name,
                            data: Box::new(data),
                        });
                        self.tables.len() - 1
                    }
                };
                slot.set(Some(index));
                index
            }
        };
        let table = &mut self.tables[index];
        match table.data.as_any_mut().downcast_mut::<T>() {
            Some(data) => data,
            None => panic!(
                "state '{}' is declared twice with different types ({} now)",
                table.name,
                std::any::type_name::<T>()
            ),
        }
    }
}

/// Gives a state handle the current key and the store it is scoped in.
pub trait KeyedStateAccess<K: Key> {
    /// The key of the record being processed, and the operator's state store.
    fn key_and_store(&mut self) -> (&K, &mut KeyedStateStore<K>);
}

/// Inserts or overwrites without cloning the key when it is already present.
fn upsert<K: Key, V>(table: &mut FxHashMap<K, V>, key: &K, value: V) {
    match table.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            table.insert(key.clone(), value);
        }
    }
}

/// One value per key.
pub struct ValueState<V> {
    name: &'static str,
    slot: Cell<Option<usize>>,
    value: PhantomData<fn() -> V>,
}

impl<V> Clone for ValueState<V> {
    fn clone(&self) -> Self {
        ValueState {
            name: self.name,
            slot: Cell::new(None),
            value: PhantomData,
        }
    }
}

impl<V: StateValue> ValueState<V> {
    /// A handle on the value state called `name`; names are unique within an operator.
    pub fn new(name: &'static str) -> Self {
        ValueState {
            name,
            slot: Cell::new(None),
            value: PhantomData,
        }
    }

    /// The current key's value, if it has one.
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Option<V> {
        let (key, store) = ctx.key_and_store();
        if store.is_external() {
            return store.external_get(self.name, key);
        }
        store
            .table::<FxHashMap<K, V>>(self.name, &self.slot)
            .get(key)
            .cloned()
    }

    /// Sets the current key's value.
    pub fn set<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, value: V) {
        let (key, store) = ctx.key_and_store();
        if store.is_external() {
            return store.external_put(self.name, key, &value);
        }
        upsert(store.table(self.name, &self.slot), key, value);
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) {
        let (key, store) = ctx.key_and_store();
        if store.is_external() {
            return store.external_delete::<V>(self.name, key);
        }
        store
            .table::<FxHashMap<K, V>>(self.name, &self.slot)
            .remove(key);
    }
}

/// A sorted map per key.
pub struct MapState<MK, MV> {
    name: &'static str,
    slot: Cell<Option<usize>>,
    entries: PhantomData<fn() -> (MK, MV)>,
}

impl<MK, MV> Clone for MapState<MK, MV> {
    fn clone(&self) -> Self {
        MapState {
            name: self.name,
            slot: Cell::new(None),
            entries: PhantomData,
        }
    }
}

type MapTable<K, MK, MV> = FxHashMap<K, BTreeMap<MK, MV>>;

impl<MK: Ord + StateValue, MV: StateValue> MapState<MK, MV> {
    /// A handle on the map state called `name`; names are unique within an operator.
    pub fn new(name: &'static str) -> Self {
        MapState {
            name,
            slot: Cell::new(None),
            entries: PhantomData,
        }
    }

    /// Reads the current key's map: borrowed from memory, or decoded from external tables.
    fn read<K: Key, R>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        read: impl FnOnce(Option<&BTreeMap<MK, MV>>) -> R,
    ) -> R {
        let (key, store) = ctx.key_and_store();
        if store.is_external() {
            return read(
                store
                    .external_get::<BTreeMap<MK, MV>>(self.name, key)
                    .as_ref(),
            );
        }
        read(
            store
                .table::<MapTable<K, MK, MV>>(self.name, &self.slot)
                .get(key),
        )
    }

    /// Changes the current key's map in external tables (removing it once empty); `None` for
    /// an in-memory store.
    fn update_external<K: Key, R>(
        &self,
        key: &K,
        store: &mut KeyedStateStore<K>,
        update: impl FnOnce(&mut BTreeMap<MK, MV>) -> R,
    ) -> Option<R> {
        if !store.is_external() {
            return None;
        }
        let mut map = store
            .external_get::<BTreeMap<MK, MV>>(self.name, key)
            .unwrap_or_default();
        let result = update(&mut map);
        if map.is_empty() {
            store.external_delete::<BTreeMap<MK, MV>>(self.name, key);
        } else {
            store.external_put(self.name, key, &map);
        }
        Some(result)
    }

    /// The value under `map_key` for the current key.
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, map_key: &MK) -> Option<MV> {
        self.read(ctx, |map| map?.get(map_key).cloned())
    }

    /// Puts a value under `map_key` for the current key; returns the value it replaced.
    pub fn insert<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        map_key: MK,
        value: MV,
    ) -> Option<MV> {
        let (key, store) = ctx.key_and_store();
        if store.is_external() {
            return self
                .update_external(key, store, |map| map.insert(map_key, value))
                .flatten();
        }
        let table = store.table::<MapTable<K, MK, MV>>(self.name, &self.slot);
        match table.get_mut(key) {
            Some(map) => map.insert(map_key, value),
            None => {
                table.insert(key.clone(), BTreeMap::from([(map_key, value)]));
                None
            }
        }
    }

    /// Removes `map_key` from the current key's map; returns its value.
    pub fn remove<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, map_key: &MK) -> Option<MV> {
        let (key, store) = ctx.key_and_store();
        if store.is_external() {
            return self
                .update_external(key, store, |map| map.remove(map_key))
                .flatten();
        }
        let table = store.table::<MapTable<K, MK, MV>>(self.name, &self.slot);
        let map = table.get_mut(key)?;
        let removed = map.remove(map_key);
        if map.is_empty() {
            table.remove(key);
        }
        removed
    }

    /// The current key's entries, in key order.
    pub fn entries<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Vec<(MK, MV)> {
        self.read(ctx, |map| {
            map.map(|map| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        })
    }

    /// Whether the current key's map is empty.
    pub fn is_empty<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> bool {
        self.read(ctx, |map| map.is_none_or(BTreeMap::is_empty))
    }

    /// Removes every entry of the current key.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) {
        let (key, store) = ctx.key_and_store();
        if store.is_external() {
            return store.external_delete::<BTreeMap<MK, MV>>(self.name, key);
        }
        store
            .table::<MapTable<K, MK, MV>>(self.name, &self.slot)
            .remove(key);
    }
}

impl<K: Key> KeyedStateStore<K> {
    /// The in-memory value table of `state`, for operators that process a whole batch against
    /// one table; `None` when the state lives in external tables.
    pub fn values<V: StateValue>(&mut self, state: &ValueState<V>) -> Option<&mut FxHashMap<K, V>> {
        if self.is_external() {
            return None;
        }
        Some(self.table(state.name, &state.slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scope<'a> {
        key: String,
        store: &'a mut KeyedStateStore<String>,
    }

    impl KeyedStateAccess<String> for Scope<'_> {
        fn key_and_store(&mut self) -> (&String, &mut KeyedStateStore<String>) {
            (&self.key, self.store)
        }
    }

    #[test]
    fn value_state_is_scoped_to_the_key() {
        let mut store = KeyedStateStore::new(128);
        let count = ValueState::<u64>::new("count");
        let mut a = Scope {
            key: "a".into(),
            store: &mut store,
        };
        assert_eq!(count.get(&mut a), None);
        count.set(&mut a, 1);
        count.set(&mut a, 2);
        let mut b = Scope {
            key: "b".into(),
            store: &mut store,
        };
        assert_eq!(count.get(&mut b), None);
        count.set(&mut b, 7);
        let mut a = Scope {
            key: "a".into(),
            store: &mut store,
        };
        assert_eq!(count.get(&mut a), Some(2));
        count.clear(&mut a);
        assert_eq!(count.get(&mut a), None);
    }

    #[test]
    fn map_state_is_sorted_and_scoped() {
        let mut store = KeyedStateStore::new(128);
        let seen = MapState::<u32, String>::new("seen");
        let mut a = Scope {
            key: "a".into(),
            store: &mut store,
        };
        assert!(seen.is_empty(&mut a));
        seen.insert(&mut a, 3, "three".to_owned());
        seen.insert(&mut a, 1, "one".to_owned());
        assert_eq!(
            seen.entries(&mut a),
            vec![(1, "one".to_owned()), (3, "three".to_owned())]
        );
        assert_eq!(seen.remove(&mut a, &1), Some("one".to_owned()));
        let mut b = Scope {
            key: "b".into(),
            store: &mut store,
        };
        assert_eq!(seen.get(&mut b, &3), None);
        let mut a = Scope {
            key: "a".into(),
            store: &mut store,
        };
        assert_eq!(seen.get(&mut a, &3), Some("three".to_owned()));
        seen.clear(&mut a);
        assert!(seen.is_empty(&mut a));
    }

    #[test]
    #[should_panic(expected = "declared twice")]
    fn one_name_with_two_types_is_reported() {
        let mut store = KeyedStateStore::new(128);
        let mut scope = Scope {
            key: "a".into(),
            store: &mut store,
        };
        ValueState::<u64>::new("x").set(&mut scope, 1);
        ValueState::<String>::new("x").set(&mut scope, "y".into());
    }

    fn scope<'s>(store: &'s mut KeyedStateStore<String>, key: &str) -> Scope<'s> {
        Scope {
            key: key.to_owned(),
            store,
        }
    }

    #[test]
    fn a_snapshot_restores_every_table() {
        let count = ValueState::<u64>::new("count");
        let seen = MapState::<u32, String>::new("seen");
        let mut store = KeyedStateStore::new(128);
        for (i, key) in ["a", "b", "c", "a"].into_iter().enumerate() {
            let mut s = scope(&mut store, key);
            let n = count.get(&mut s).unwrap_or(0) + 1;
            count.set(&mut s, n);
            seen.insert(&mut s, i as u32, format!("{key}{i}"));
        }
        let snapshot = store.snapshot().unwrap();
        assert_eq!(
            snapshot.tables.keys().collect::<Vec<_>>(),
            ["count", "seen"]
        );

        let mut restored = KeyedStateStore::new(128);
        restored.restore(snapshot.clone());
        assert_eq!(
            restored.snapshot().unwrap(),
            snapshot,
            "untouched tables stay encoded"
        );
        let mut a = scope(&mut restored, "a");
        assert_eq!(count.get(&mut a), Some(2));
        assert_eq!(
            seen.entries(&mut a),
            vec![(0, "a0".to_owned()), (3, "a3".to_owned())]
        );
        assert_eq!(count.get(&mut scope(&mut restored, "c")), Some(1));
        assert_eq!(
            restored.snapshot().unwrap(),
            snapshot,
            "decoding changes nothing"
        );
    }

    #[test]
    fn handles_find_their_tables_again_after_a_restore() {
        let first = ValueState::<u64>::new("first");
        let second = ValueState::<u64>::new("second");
        let mut store = KeyedStateStore::new(128);
        first.set(&mut scope(&mut store, "k"), 1);
        second.set(&mut scope(&mut store, "k"), 2);
        let snapshot = store.snapshot().unwrap();
        store.restore(snapshot);
        // Touch the tables in the other order: cached slots must not mix them up.
        assert_eq!(second.get(&mut scope(&mut store, "k")), Some(2));
        assert_eq!(first.get(&mut scope(&mut store, "k")), Some(1));
    }

    #[test]
    fn rescaling_splits_and_merges_by_key_group() {
        let count = ValueState::<u64>::new("count");
        let keys: Vec<String> = (0..500).map(|i| format!("key{i}")).collect();
        let mut one = KeyedStateStore::new(128);
        for (i, key) in keys.iter().enumerate() {
            count.set(&mut scope(&mut one, key), i as u64);
        }
        let whole = one.snapshot().unwrap();
        // 1 -> 3: each subtask restores its key-group range and finds exactly its keys.
        let mut three: Vec<KeyedStateStore<String>> =
            (0..3).map(|_| KeyedStateStore::new(128)).collect();
        for (index, store) in three.iter_mut().enumerate() {
            store.restore(whole.select(KeyGroupRange::for_subtask(index as u32, 3, 128)));
        }
        for (i, key) in keys.iter().enumerate() {
            let owner =
                crate::key::subtask_for_key_group(crate::key::key_group_of(key, 128), 3, 128)
                    as usize;
            for (index, store) in three.iter_mut().enumerate() {
                let found = count.get(&mut scope(store, key));
                assert_eq!(
                    found,
                    (index == owner).then_some(i as u64),
                    "{key} in subtask {index}"
                );
            }
        }
        // 3 -> 1: merging the three snapshots gives back the whole.
        let mut merged = KeyedStateSnapshot::default();
        for store in &mut three {
            merged.merge(store.snapshot().unwrap());
        }
        assert_eq!(merged, whole);
    }

    #[test]
    #[should_panic(expected = "state 'count' (key group")]
    fn restoring_state_of_another_type_names_the_state() {
        let mut store = KeyedStateStore::new(128);
        ValueState::<String>::new("count").set(&mut scope(&mut store, "k"), "many".to_owned());
        let snapshot = store.snapshot().unwrap();
        let mut restored = KeyedStateStore::new(128);
        restored.restore(snapshot);
        ValueState::<u64>::new("count").get(&mut scope(&mut restored, "k"));
    }

    /// External tables in a sorted map: what a disk backend keeps, without the disk.
    #[derive(Default)]
    struct SortedTables(BTreeMap<(String, u32, Vec<u8>), Vec<u8>>);

    impl StateTables for SortedTables {
        fn get(
            &mut self,
            table: &str,
            key_group: u32,
            key: &[u8],
        ) -> Result<Option<Vec<u8>>, StateError> {
            Ok(self
                .0
                .get(&(table.to_owned(), key_group, key.to_vec()))
                .cloned())
        }

        fn put(
            &mut self,
            table: &str,
            key_group: u32,
            key: &[u8],
            value: &[u8],
        ) -> Result<(), StateError> {
            self.0
                .insert((table.to_owned(), key_group, key.to_vec()), value.to_vec());
            Ok(())
        }

        fn delete(&mut self, table: &str, key_group: u32, key: &[u8]) -> Result<(), StateError> {
            self.0.remove(&(table.to_owned(), key_group, key.to_vec()));
            Ok(())
        }

        fn scan(&mut self, visit: &mut EntryVisitor<'_>) -> Result<(), StateError> {
            for ((table, group, key), value) in &self.0 {
                visit(table, *group, key, value);
            }
            Ok(())
        }
    }

    /// Writes counts and map entries for 200 keys, deleting some.
    fn fill(store: &mut KeyedStateStore<String>) {
        let count = ValueState::<u64>::new("count");
        let seen = MapState::<u32, String>::new("seen");
        for n in 0..200u32 {
            let mut scope = Scope {
                key: format!("key{}", n % 50),
                store,
            };
            let next = count.get(&mut scope).unwrap_or(0) + 1;
            count.set(&mut scope, next);
            seen.insert(&mut scope, n, format!("v{n}"));
            if n % 7 == 0 {
                seen.remove(&mut scope, &n);
            }
        }
        let mut gone = Scope {
            key: "key3".into(),
            store,
        };
        count.clear(&mut gone);
        seen.clear(&mut gone);
    }

    /// A key, its count and its map entries.
    type KeyContents = (String, Option<u64>, Vec<(u32, String)>);

    /// What the store holds for every key, read through the handles.
    fn contents(store: &mut KeyedStateStore<String>) -> Vec<KeyContents> {
        let count = ValueState::<u64>::new("count");
        let seen = MapState::<u32, String>::new("seen");
        (0..50)
            .map(|k| {
                let mut scope = Scope {
                    key: format!("key{k}"),
                    store,
                };
                (
                    format!("key{k}"),
                    count.get(&mut scope),
                    seen.entries(&mut scope),
                )
            })
            .collect()
    }

    #[test]
    fn external_tables_hold_the_same_state_and_snapshots_move_between_backends() {
        let mut memory = KeyedStateStore::new(16);
        fill(&mut memory);
        let mut external = KeyedStateStore::external(16, Box::new(SortedTables::default()));
        fill(&mut external);
        let expected = contents(&mut memory);
        assert_eq!(contents(&mut external), expected);
        assert_eq!(expected[3], ("key3".to_owned(), None, Vec::new()));

        let mut from_external = KeyedStateStore::new(16);
        from_external.restore(external.snapshot().unwrap());
        assert_eq!(contents(&mut from_external), expected, "external -> memory");
        let mut to_external = KeyedStateStore::external(16, Box::new(SortedTables::default()));
        to_external.restore(memory.snapshot().unwrap());
        assert_eq!(contents(&mut to_external), expected, "memory -> external");
        let resnapshot = to_external.snapshot().unwrap();
        assert_eq!(
            resnapshot,
            external.snapshot().unwrap(),
            "an external store's snapshot depends on its content only"
        );
    }
}

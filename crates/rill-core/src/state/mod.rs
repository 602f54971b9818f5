//! Keyed state, scoped to the key of the record being processed (and, for windows, to a
//! namespace within the key): in memory, or in external tables (on disk) for state larger than
//! memory.
//!
//! A keyed operator owns one [`KeyedStateStore`]. User functions declare state with handles
//! named when the function is built: [`ValueState`], [`ListState`], [`MapState`],
//! [`ReducingState`] and [`AggregatingState`]. A handle finds its table in the store by name on
//! first use and remembers the table's slot afterwards, so reading or setting a value costs one
//! type check and one hash lookup, and changing a list, map or reduced value in place about the
//! same (namespaced state looks the namespace up in a second, per-key map). Tables are
//! `FxHashMap`s: a fixed hash function, so iteration order depends only on the operations
//! applied, never on the run.
//!
//! Used through [`InNamespace`], a handle keeps one value per key **and namespace** (a window,
//! say) instead of one per key; a state is either always or never used in a namespace.
//!
//! A store snapshots **per key group** ([`KeyedStateSnapshot`]): each table's entries are
//! grouped by their key's key group and encoded with bincode, so that a snapshot taken at one
//! parallelism can be split and merged to restore at another. Restoring is lazy: the chunks of
//! a table wait, still encoded, until a handle first touches that table and so names its types.
//!
//! # Backends
//! [`StateBackend::Memory`] keeps tables as hash maps (module `memory`). [`StateBackend::External`]
//! keeps them in [`StateTables`] — `rill-store` implements them on fjall — as encoded values
//! under (table, key group, encoded key); a handle encodes and decodes on every access. Both
//! snapshot to the same per-key-group chunks (a chunk is the encoding of a
//! `Vec<(table key, value)>`), so a checkpoint taken with one restores with the other, at any
//! parallelism.
//!
//! # Failures
//! State can fail: the external tables report an I/O error, restored bytes do not decode as
//! the handle's types, or two handles give one name different types. Handles do not return a
//! `Result` for it. Flink's handles throw a checked exception that user code passes on; the
//! Rust form of that, a `Result` on every `get` and `set`, would burden every state access —
//! nearly all of them in memory, where only a bug can fail — with a `?` and an error path that
//! never runs. Instead the store **records** the first failure and stops touching its tables:
//! every handle then reads as empty and writes nothing, and the keyed operator running the user
//! function returns the failure as its error once the current record (or timer) is done —
//! [`OperatorError::State`](crate::error::OperatorError::State), naming the operator, the
//! state and, where known, the key group — even if the user function went on to fail or panic
//! over the empty values it read. The subtask fails with it and the job fails over from its
//! last checkpoint: what the failed record emitted is dropped with the rest of the failed
//! attempt. A user function that must not go on after a failed access (before a side effect
//! outside the job, say) asks [`KeyedStateAccess::check_state`], which returns the failure.
//!
//! A store whose tables could not even be opened ([`KeyedStateStore::for_operator`]) starts
//! failed, and its operator fails when the subtask opens it, before any record. Restored chunks
//! are decoded when a handle first names their types: the operators that know their states
//! (reduce, windows) do it when they open, so a chunk that does not decode fails the restored
//! subtask before it processes anything; a process function's own states fail at their first
//! access. Decoding is bounded (1 GiB per chunk as decoded): bytes that are not the state's
//! types cannot make it allocate a length they happen to spell.
//!
//! # Layout
//! - [`handles`]: the state handles user functions declare;
//! - `memory`: the in-memory tables;
//! - [`external`]: the external tables' contract and the backend choice.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::key::{Key, KeyGroupRange, key_group_of};
use crate::operator::OperatorInfo;

pub mod external;
pub mod handles;
mod memory;
#[cfg(test)]
mod tests;

pub use external::{EntryVisitor, FrozenTables, StateBackend, StateTables, StateTablesFactory};
pub use handles::{
    AggregateFunction, AggregatingState, ListState, MapState, ReducingState, ValueState,
};

use external::snapshot_external;
use memory::{ErasedTable, NamespacedTable, restore_entries};

/// The bounds a value kept in state must meet: clonable, sendable, and serializable for
/// snapshots.
pub trait StateValue: Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<V: Clone + Send + Serialize + DeserializeOwned + 'static> StateValue for V {}

/// Keyed state could not be read, written, snapshotted or restored.
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
    #[error("the state backend failed on state '{table}'{}: {reason}", in_key_group(*key_group))]
    Backend {
        /// The state's name (or `*` for all).
        table: String,
        /// The key group accessed, when one was.
        key_group: Option<u32>,
        /// What went wrong.
        reason: String,
    },
    /// The operator instance's external tables could not be opened.
    #[error("cannot open the keyed state tables: {reason}")]
    Open {
        /// What went wrong.
        reason: String,
    },
    /// Two handles of one operator give one state different types, or one state is used both
    /// in and out of namespaces: a bug in the operator's code.
    #[error(
        "state '{table}' is declared twice with different types, or used both in and out of \
         namespaces ({used} now)"
    )]
    Mismatch {
        /// The state's name.
        table: String,
        /// The table type the handle used last.
        used: String,
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

/// ` (key group n)`, or nothing when the key group is unknown.
fn in_key_group(key_group: Option<u32>) -> String {
    key_group.map_or_else(String::new, |group| format!(" (key group {group})"))
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

/// The most one decoded value — a chunk of one state's key group, say — may take, as bincode
/// counts it while decoding (the bytes of every string and byte vector, the size of every
/// number): 1 GiB. bincode allocates a string's or a byte vector's length before it reads the
/// bytes, so without a limit a length read from bytes of another type (a snapshot of a job
/// whose state changed type, a bug) would allocate that much — and a failed allocation aborts
/// the process. With it, such a length is a [`StateError::Decode`].
const DECODED_BYTES_MAX: usize = 1 << 30;

/// How state is decoded: the encoding's configuration, with [`DECODED_BYTES_MAX`].
fn decode_config() -> impl bincode::config::Config {
    bincode_config().with_limit::<DECODED_BYTES_MAX>()
}

pub(crate) fn encode<T: Serialize + ?Sized>(table: &str, value: &T) -> Result<Vec<u8>, StateError> {
    bincode::serde::encode_to_vec(value, bincode_config()).map_err(|error| StateError::Encode {
        table: table.to_owned(),
        reason: error.to_string(),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(
    table: &str,
    key_group: u32,
    bytes: &[u8],
) -> Result<T, StateError> {
    let decode_error = |reason: String| StateError::Decode {
        table: table.to_owned(),
        key_group,
        reason,
    };
    let (value, read) = bincode::serde::decode_from_slice(bytes, decode_config())
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

/// Keyed state frozen at a checkpoint's barrier — copies of the in-memory tables, or a view of
/// external tables — still to be encoded into the checkpoint's snapshot. Clones share it: the
/// state is encoded once, by whichever clone completes first, and every clone gets the result.
#[derive(Clone)]
pub struct DeferredScan(Arc<Mutex<Frozen>>);

type EncodeFrozen = Box<dyn FnOnce(&mut KeyedStateSnapshot) -> Result<(), StateError> + Send>;

enum Frozen {
    Pending(EncodeFrozen),
    Encoded(Result<KeyedStateSnapshot, StateError>),
}

impl DeferredScan {
    fn new(
        encode: impl FnOnce(&mut KeyedStateSnapshot) -> Result<(), StateError> + Send + 'static,
    ) -> Self {
        DeferredScan(Arc::new(Mutex::new(Frozen::Pending(Box::new(encode)))))
    }

    /// Encodes the frozen state (if no clone has yet) and adds it to `snapshot`.
    pub fn complete(&self, snapshot: &mut KeyedStateSnapshot) -> Result<(), StateError> {
        // A poisoned lock only means an encoding panicked: it is reported as a failure below.
        let mut frozen = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let placeholder = Frozen::Encoded(Err(StateError::Backend {
            table: "*".to_owned(),
            key_group: None,
            reason: "encoding the frozen state panicked".to_owned(),
        }));
        let encoded = match std::mem::replace(&mut *frozen, placeholder) {
            Frozen::Pending(encode) => {
                let mut encoded = KeyedStateSnapshot::default();
                encode(&mut encoded).map(|()| encoded)
            }
            Frozen::Encoded(encoded) => encoded,
        };
        // The only holder takes the encoded state; clones share a copy.
        let sole = Arc::strong_count(&self.0) == 1;
        let (outcome, kept) = match encoded {
            Ok(encoded) if sole => {
                snapshot.merge(encoded);
                let taken = StateError::Backend {
                    table: "*".to_owned(),
                    key_group: None,
                    reason: "the encoded state was taken already".to_owned(),
                };
                (Ok(()), Err(taken))
            }
            Ok(encoded) => {
                snapshot.merge(encoded.clone());
                (Ok(()), Ok(encoded))
            }
            Err(error) => (Err(error.clone()), Err(error)),
        };
        *frozen = Frozen::Encoded(kept);
        outcome
    }
}

impl std::fmt::Debug for DeferredScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeferredScan")
    }
}

impl PartialEq for DeferredScan {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for DeferredScan {}

/// The keyed state of one operator instance.
pub struct KeyedStateStore<K> {
    max_parallelism: u32,
    tables: Vec<StateTable>,
    /// Restored chunks of tables no handle has touched yet.
    pending: BTreeMap<String, BTreeMap<u32, Vec<u8>>>,
    /// Set for the external backend: then `tables` stays empty.
    external: Option<Box<dyn StateTables>>,
    /// The first failure; from then on the tables are left alone (see "Failures" above).
    failure: Option<StateError>,
    key: PhantomData<fn() -> K>,
}

struct StateTable {
    name: &'static str,
    data: Box<dyn ErasedTable>,
}

/// A handle's table: its name, and the slot the handle last found it in.
#[derive(Clone, Copy)]
struct TableRef<'h> {
    name: &'static str,
    slot: &'h Cell<Option<usize>>,
}

/// Where a handle's value is: under the current key, in a namespace or not.
struct Place<'a, K> {
    key: &'a K,
    namespace: Option<&'a [u8]>,
}

impl<K> Clone for Place<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Place<'_, K> {}

impl<K: Key> KeyedStateStore<K> {
    /// An empty in-memory store over `max_parallelism` key groups.
    pub fn new(max_parallelism: u32) -> Self {
        KeyedStateStore {
            max_parallelism,
            tables: Vec::new(),
            pending: BTreeMap::new(),
            external: None,
            failure: None,
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

    /// The store of the operator instance `info` describes, in the job's backend. If the
    /// backend cannot open the instance's tables, the store starts failed with the backend's
    /// error (a [`StateError::Open`]), which its operator reports when the subtask opens it.
    pub fn for_operator(info: &OperatorInfo) -> Self {
        match &info.state_backend {
            StateBackend::Memory => Self::new(info.max_parallelism),
            StateBackend::External(factory) => match factory(info) {
                Ok(tables) => Self::external(info.max_parallelism, tables),
                Err(error) => KeyedStateStore {
                    failure: Some(error),
                    ..Self::new(info.max_parallelism)
                },
            },
        }
    }

    /// The store's first failure, if it failed: since then, handles read nothing and write
    /// nothing.
    pub fn failure(&self) -> Option<&StateError> {
        self.failure.as_ref()
    }

    /// `Err` with the store's first failure, if it failed.
    pub fn check(&self) -> Result<(), StateError> {
        match &self.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    /// Records `error`, unless the store failed already: the first failure is the cause.
    fn record(&mut self, error: StateError) {
        if self.failure.is_none() {
            self.failure = Some(error);
        }
    }

    /// The value of `result`; `None` with its error recorded.
    fn settle<T>(&mut self, result: Result<T, StateError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.record(error);
                None
            }
        }
    }

    /// Encodes every table per key group.
    pub fn snapshot(&mut self) -> Result<KeyedStateSnapshot, StateError> {
        let (mut snapshot, deferred) = self.snapshot_deferred()?;
        if let Some(deferred) = deferred {
            deferred.complete(&mut snapshot)?;
        }
        Ok(snapshot)
    }

    /// Freezes the state and returns what is encoded already (restored chunks no handle has
    /// touched): in-memory tables are copied, external tables frozen as they are, and
    /// [`DeferredScan::complete`] encodes them — on another thread if the driver wishes, while
    /// the store changes. A failed store has no snapshot: its failure is the error.
    pub fn snapshot_deferred(
        &mut self,
    ) -> Result<(KeyedStateSnapshot, Option<DeferredScan>), StateError> {
        self.check()?;
        let snapshot = KeyedStateSnapshot {
            tables: self.pending.clone(),
        };
        if let Some(external) = &mut self.external {
            let mut frozen = external.freeze()?;
            let deferred =
                DeferredScan::new(move |snapshot| snapshot_external(frozen.as_mut(), snapshot));
            return Ok((snapshot, Some(deferred)));
        }
        if self.tables.is_empty() {
            return Ok((snapshot, None));
        }
        let max_parallelism = self.max_parallelism;
        let copies: Vec<(&'static str, Box<dyn ErasedTable>)> = self
            .tables
            .iter()
            .map(|table| (table.name, table.data.copy()))
            .collect();
        let deferred = DeferredScan::new(move |snapshot| {
            for (name, table) in copies {
                let groups = table.snapshot(name, max_parallelism)?;
                if !groups.is_empty() {
                    snapshot.tables.insert(name.to_owned(), groups);
                }
            }
            Ok(())
        });
        Ok((snapshot, Some(deferred)))
    }

    /// Replaces the store's content by a snapshot (already narrowed to this instance's key
    /// groups). Tables are decoded when a handle first touches them (or
    /// [`KeyedStateStore::preload`] names them). External tables are restored only into a
    /// fresh store, as every operator instance is before it runs. A failed store stays failed.
    pub fn restore(&mut self, snapshot: KeyedStateSnapshot) {
        self.tables.clear();
        self.pending = snapshot.tables;
    }

    /// Decodes the restored chunks of `state` now rather than at its first access, so that an
    /// operator restored with state that does not fit fails before it processes anything.
    pub fn preload<V: StateValue>(&mut self, state: &ValueState<V>) -> Result<(), StateError> {
        self.check()?;
        let loaded = if self.is_external() {
            self.external_tables::<V>(state.table().name, false)
                .map(|_| ())
        } else {
            self.table::<FxHashMap<K, V>>(state.table()).map(|_| ())
        };
        if let Err(error) = &loaded {
            self.record(error.clone());
        }
        loaded
    }

    /// The number of key groups the store's keys are spread over.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Whether the state lives in external tables.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// The value at `place` in `table`, as `read` sees it (nothing, once the store failed).
    fn read<S: StateValue, R>(
        &mut self,
        table: TableRef<'_>,
        place: Place<'_, K>,
        read: impl FnOnce(Option<&S>) -> R,
    ) -> R {
        if self.failure.is_some() {
            return read(None);
        }
        if self.is_external() {
            let value = self.external_get::<S>(table.name, place);
            return read(self.settle(value).flatten().as_ref());
        }
        let found = match place.namespace {
            None => self
                .table::<FxHashMap<K, S>>(table)
                .map(|values| values.get(place.key)),
            Some(namespace) => self
                .table::<NamespacedTable<K, S>>(table)
                .map(|values| values.get(place.key, namespace)),
        };
        match found {
            Ok(value) => read(value),
            Err(error) => {
                self.record(error);
                read(None)
            }
        }
    }

    /// Sets (`Some`) or removes (`None`) the value at `place` in `table`.
    fn write<S: StateValue>(&mut self, table: TableRef<'_>, place: Place<'_, K>, value: Option<S>) {
        if self.failure.is_some() {
            return;
        }
        let written = if self.is_external() {
            self.external_write(table.name, place, value.as_ref())
        } else {
            match (place.namespace, value) {
                (None, Some(value)) => self
                    .table(table)
                    .map(|values| upsert(values, place.key, value)),
                (None, None) => self.table::<FxHashMap<K, S>>(table).map(|values| {
                    values.remove(place.key);
                }),
                (Some(namespace), Some(value)) => self
                    .table::<NamespacedTable<K, S>>(table)
                    .map(|values| values.insert(place.key, namespace, value)),
                (Some(namespace), None) => {
                    self.table::<NamespacedTable<K, S>>(table).map(|values| {
                        values.remove(place.key, namespace);
                    })
                }
            }
        };
        self.settle(written);
    }

    /// Changes the value at `place` in `table` with `update`, which may create or remove it
    /// (once the store failed, `update` sees no value and what it leaves is dropped).
    fn update<S: StateValue, R>(
        &mut self,
        table: TableRef<'_>,
        place: Place<'_, K>,
        update: impl FnOnce(&mut Option<S>) -> R,
    ) -> R {
        if self.failure.is_some() {
            return update(&mut None);
        }
        if self.is_external() {
            let found = self.external_get(table.name, place);
            let Some(mut value) = self.settle(found) else {
                return update(&mut None);
            };
            let existed = value.is_some();
            let result = update(&mut value);
            if existed || value.is_some() {
                self.write(table, place, value);
            }
            return result;
        }
        match place.namespace {
            None => match self.table::<FxHashMap<K, S>>(table) {
                Ok(values) => {
                    // Take the entry out with its key, and put both back, with no copy.
                    let (key, mut value) = match values.remove_entry(place.key) {
                        Some((key, value)) => (key, Some(value)),
                        None => (place.key.clone(), None),
                    };
                    let result = update(&mut value);
                    if let Some(value) = value {
                        values.insert(key, value);
                    }
                    result
                }
                Err(error) => {
                    self.record(error);
                    update(&mut None)
                }
            },
            Some(namespace) => match self.table::<NamespacedTable<K, S>>(table) {
                Ok(values) => values.update(place.key, namespace, update),
                Err(error) => {
                    self.record(error);
                    update(&mut None)
                }
            },
        }
    }

    /// Changes a collection at `place` in `table` in place (an empty one if there is none);
    /// the collection is kept only while `keep` holds. In memory and outside namespaces — the
    /// common case — this is one lookup, with no copy of the key or the collection.
    fn modify<S: StateValue + Default, R>(
        &mut self,
        table: TableRef<'_>,
        place: Place<'_, K>,
        keep: impl Fn(&S) -> bool,
        modify: impl FnOnce(&mut S) -> R,
    ) -> R {
        if self.is_external() || place.namespace.is_some() || self.failure.is_some() {
            return self.update(table, place, |value: &mut Option<S>| {
                let result = modify(value.get_or_insert_default());
                if value.as_ref().is_some_and(|value| !keep(value)) {
                    *value = None;
                }
                result
            });
        }
        let values = match self.table::<FxHashMap<K, S>>(table) {
            Ok(values) => values,
            Err(error) => {
                self.record(error);
                return modify(&mut S::default());
            }
        };
        match values.get_mut(place.key) {
            Some(value) => {
                let result = modify(value);
                if !keep(value) {
                    values.remove(place.key);
                }
                result
            }
            None => {
                let mut value = S::default();
                let result = modify(&mut value);
                if keep(&value) {
                    values.insert(place.key.clone(), value);
                }
                result
            }
        }
    }

    /// The encoded key of `place` in external tables: the key, or the key and namespace.
    fn external_key(table: &str, place: Place<'_, K>) -> Result<Vec<u8>, StateError> {
        match place.namespace {
            None => encode(table, place.key),
            // A `&[u8]` encodes exactly as the `Vec<u8>` memory tables keep.
            Some(namespace) => encode(table, &(place.key, namespace)),
        }
    }

    /// The external tables, with the restored chunks of `table` moved in first (decoding them
    /// as entries of `S` under the key, or under the key and namespace if `namespaced`);
    /// `None` for an in-memory store. Chunks that fail to move stay pending.
    fn external_tables<S: StateValue>(
        &mut self,
        table: &'static str,
        namespaced: bool,
    ) -> Result<Option<&mut dyn StateTables>, StateError> {
        let Some(external) = self.external.as_mut() else {
            return Ok(None);
        };
        if let Some(groups) = self.pending.get(table) {
            for (&group, chunk) in groups {
                let entries: Vec<(Vec<u8>, S)> = if namespaced {
                    restore_entries::<(K, Vec<u8>), S>(table, group, chunk)?
                        .into_iter()
                        .map(|(scoped, value)| Ok((encode(table, &scoped)?, value)))
                        .collect::<Result<_, StateError>>()?
                } else {
                    restore_entries::<K, S>(table, group, chunk)?
                        .into_iter()
                        .map(|(key, value)| Ok((encode(table, &key)?, value)))
                        .collect::<Result<_, StateError>>()?
                };
                for (key, value) in entries {
                    external.put(table, group, &key, &encode(table, &value)?)?;
                }
            }
            self.pending.remove(table);
        }
        Ok(Some(external.as_mut()))
    }

    /// The value at `place` in external table `table`.
    fn external_get<S: StateValue>(
        &mut self,
        table: &'static str,
        place: Place<'_, K>,
    ) -> Result<Option<S>, StateError> {
        let group = key_group_of(place.key, self.max_parallelism);
        let key = Self::external_key(table, place)?;
        let Some(tables) = self.external_tables::<S>(table, place.namespace.is_some())? else {
            return Ok(None);
        };
        match tables.get(table, group, &key)? {
            Some(bytes) => decode(table, group, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Puts (`Some`) or deletes (`None`) the value at `place` in external table `table`.
    fn external_write<S: StateValue>(
        &mut self,
        table: &'static str,
        place: Place<'_, K>,
        value: Option<&S>,
    ) -> Result<(), StateError> {
        let group = key_group_of(place.key, self.max_parallelism);
        let key = Self::external_key(table, place)?;
        let Some(tables) = self.external_tables::<S>(table, place.namespace.is_some())? else {
            return Ok(());
        };
        match value {
            Some(value) => tables.put(table, group, &key, &encode(table, value)?),
            None => tables.delete(table, group, &key),
        }
    }

    /// The memory table a handle names, created on first use (from restored chunks, if any).
    ///
    /// Fails with [`StateError::Mismatch`] if two handles of one operator use the same name
    /// with different types (or one state is used both in and out of namespaces), and with
    /// [`StateError::Decode`] if restored state does not decode as the handle's types (its
    /// chunks then stay pending): a bug in the operator's code, or a snapshot that does not fit
    /// the job.
    fn table<T: ErasedTable + Default + 'static>(
        &mut self,
        table: TableRef<'_>,
    ) -> Result<&mut T, StateError> {
        let name = table.name;
        // A cached slot is trusted only while it still names this table: a restore empties
        // the table list, and tables may come back in another order.
        let cached = table.slot.get().filter(|&index| {
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
                        for (&group, chunk) in self.pending.get(name).into_iter().flatten() {
                            data.restore(name, group, chunk)?;
                        }
                        self.pending.remove(name);
                        self.tables.push(StateTable {
                            name,
                            data: Box::new(data),
                        });
                        self.tables.len() - 1
                    }
                };
                table.slot.set(Some(index));
                index
            }
        };
        self.tables[index]
            .data
            .as_any_mut()
            .downcast_mut::<T>()
            .ok_or_else(|| StateError::Mismatch {
                table: name.to_owned(),
                used: std::any::type_name::<T>().to_owned(),
            })
    }

    /// The in-memory value table of `state`, for operators that process a whole batch against
    /// one table; `Ok(None)` when the state lives in external tables. A failure is recorded
    /// too, as a handle's would be.
    pub fn try_values<V: StateValue>(
        &mut self,
        state: &ValueState<V>,
    ) -> Result<Option<&mut FxHashMap<K, V>>, StateError> {
        self.check()?;
        if self.is_external() {
            return Ok(None);
        }
        // Found (or decoded) once to record a failure, then found again by its slot to lend.
        if let Err(error) = self.table::<FxHashMap<K, V>>(state.table()).map(|_| ()) {
            self.record(error.clone());
            return Err(error);
        }
        self.table(state.table()).map(Some)
    }

    /// Like [`KeyedStateStore::try_values`], but `None` as well when the store failed
    /// ([`KeyedStateStore::failure`] says why).
    pub fn values<V: StateValue>(&mut self, state: &ValueState<V>) -> Option<&mut FxHashMap<K, V>> {
        self.try_values(state).ok().flatten()
    }
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

/// Gives a state handle the current key and the store it is scoped in.
pub trait KeyedStateAccess<K: Key> {
    /// The key of the record being processed, and the operator's state store.
    fn key_and_store(&mut self) -> (&K, &mut KeyedStateStore<K>);

    /// The key, the encoded namespace the state is scoped to (none unless set through
    /// [`InNamespace`]), and the store.
    fn scope(&mut self) -> (&K, Option<&[u8]>, &mut KeyedStateStore<K>) {
        let (key, store) = self.key_and_store();
        (key, None, store)
    }

    /// `Err` with the failure of the operator's keyed state, if it failed: since then its
    /// handles read nothing and write nothing, and the operator fails with the error once the
    /// current record is done. Ask it before an effect that must not follow a failed access.
    fn check_state(&mut self) -> Result<(), StateError> {
        self.key_and_store().1.check()
    }
}

/// State access scoped to a namespace within the current key: every handle used through it
/// keeps one value per key and namespace. Windows use the window as the namespace.
pub struct InNamespace<'a, C> {
    access: &'a mut C,
    namespace: Vec<u8>,
}

impl<'a, C> InNamespace<'a, C> {
    /// Scopes `access` to `namespace` (any serializable value; equal values, equal scopes).
    pub fn new<N: Serialize>(access: &'a mut C, namespace: &N) -> Result<Self, StateError> {
        Ok(InNamespace {
            access,
            namespace: encode("namespace", namespace)?,
        })
    }
}

impl<K: Key, C: KeyedStateAccess<K>> KeyedStateAccess<K> for InNamespace<'_, C> {
    fn key_and_store(&mut self) -> (&K, &mut KeyedStateStore<K>) {
        self.access.key_and_store()
    }

    fn scope(&mut self) -> (&K, Option<&[u8]>, &mut KeyedStateStore<K>) {
        let (key, store) = self.access.key_and_store();
        (key, Some(&self.namespace), store)
    }
}

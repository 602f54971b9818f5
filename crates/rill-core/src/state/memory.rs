//! The in-memory backend's tables: hash maps behind type erasure, so the store snapshots and
//! restores them per key group without knowing their types.
//!
//! A table of key-scoped state maps the key to the stored value; a table of namespaced state
//! ([`NamespacedTable`]) maps (key, encoded namespace) to it. Both snapshot to chunks that are
//! the bincode encoding of a `Vec<(table key, value)>`, grouped by the key group of the key
//! alone — the format the external backend cuts too.

use std::any::Any;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{StateError, StateValue, bincode_config, decode};
use crate::key::{Key, key_group_of_hash, stable_hash};

/// A state table behind type erasure.
pub(super) trait ErasedTable: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// A copy of the table, to snapshot while the original changes.
    fn copy(&self) -> Box<dyn ErasedTable>;
    /// The table's entries per key group, encoded.
    fn snapshot(
        &self,
        name: &str,
        max_parallelism: u32,
    ) -> Result<BTreeMap<u32, Vec<u8>>, StateError>;
    /// Adds the entries of one key group's chunk.
    fn restore(&mut self, name: &str, key_group: u32, chunk: &[u8]) -> Result<(), StateError>;
}

/// The values of namespaced state, by key, then by encoded namespace: looked up by reference,
/// with no copy of either.
pub(super) struct NamespacedTable<K, V>(FxHashMap<K, FxHashMap<Vec<u8>, V>>);

impl<K, V> Default for NamespacedTable<K, V> {
    fn default() -> Self {
        NamespacedTable(FxHashMap::default())
    }
}

impl<K: Key, V> NamespacedTable<K, V> {
    pub(super) fn get(&self, key: &K, namespace: &[u8]) -> Option<&V> {
        self.0.get(key)?.get(namespace)
    }

    pub(super) fn insert(&mut self, key: &K, namespace: &[u8], value: V) {
        let namespaces = match self.0.get_mut(key) {
            Some(namespaces) => namespaces,
            None => self.0.entry(key.clone()).or_default(),
        };
        match namespaces.get_mut(namespace) {
            Some(slot) => *slot = value,
            None => {
                namespaces.insert(namespace.to_vec(), value);
            }
        }
    }

    /// Changes the value at (`key`, `namespace`) in place; `None` is no value. An existing
    /// entry is updated without copying its key or namespace.
    pub(super) fn update<R>(
        &mut self,
        key: &K,
        namespace: &[u8],
        update: impl FnOnce(&mut Option<V>) -> R,
    ) -> R {
        let namespaces = match self.0.get_mut(key) {
            Some(namespaces) => namespaces,
            None => self.0.entry(key.clone()).or_default(),
        };
        let (slot, mut value) = match namespaces.remove_entry(namespace) {
            Some((slot, value)) => (slot, Some(value)),
            None => (namespace.to_vec(), None),
        };
        let result = update(&mut value);
        match value {
            Some(value) => {
                namespaces.insert(slot, value);
            }
            None if namespaces.is_empty() => {
                self.0.remove(key);
            }
            None => {}
        }
        result
    }

    pub(super) fn remove(&mut self, key: &K, namespace: &[u8]) -> Option<V> {
        let namespaces = self.0.get_mut(key)?;
        let removed = namespaces.remove(namespace);
        if namespaces.is_empty() {
            self.0.remove(key);
        }
        removed
    }
}

/// Encodes `entries` per key group. `hash` is the stable hash of the entry's key (not of its
/// namespace). Entries are ordered by that hash, and entries of equal hash by their encoding:
/// equal state gives equal bytes whatever order a hash map iterates in.
fn snapshot_entries<'a, TK: Serialize, V: Serialize + 'a>(
    name: &str,
    max_parallelism: u32,
    entries: impl Iterator<Item = (u64, TK, &'a V)>,
) -> Result<BTreeMap<u32, Vec<u8>>, StateError> {
    let encode_error = |error: bincode::error::EncodeError| StateError::Encode {
        table: name.to_owned(),
        reason: error.to_string(),
    };
    let mut entries: Vec<(u64, TK, &V)> = entries.collect();
    let encoded = |key: &TK| bincode::serde::encode_to_vec(key, bincode_config()).ok();
    entries.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| encoded(&a.1).cmp(&encoded(&b.1)))
    });
    let mut groups = BTreeMap::new();
    for chunk in entries.chunk_by(|a, b| {
        key_group_of_hash(a.0, max_parallelism) == key_group_of_hash(b.0, max_parallelism)
    }) {
        let group = key_group_of_hash(chunk[0].0, max_parallelism);
        let pairs: Vec<(&TK, &V)> = chunk.iter().map(|(_, key, value)| (key, *value)).collect();
        let bytes =
            bincode::serde::encode_to_vec(&pairs, bincode_config()).map_err(encode_error)?;
        groups.insert(group, bytes);
    }
    Ok(groups)
}

/// Decodes one key group's chunk as `(table key, value)` entries.
pub(super) fn restore_entries<TK: DeserializeOwned, V: DeserializeOwned>(
    name: &str,
    key_group: u32,
    chunk: &[u8],
) -> Result<Vec<(TK, V)>, StateError> {
    // `decode` refuses bytes left over: with bincode, which is not self-describing, they are
    // the surest sign of other types.
    decode(name, key_group, chunk)
}

impl<K: Key, V: StateValue> ErasedTable for FxHashMap<K, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn copy(&self) -> Box<dyn ErasedTable> {
        Box::new(self.clone())
    }

    fn snapshot(
        &self,
        name: &str,
        max_parallelism: u32,
    ) -> Result<BTreeMap<u32, Vec<u8>>, StateError> {
        snapshot_entries(
            name,
            max_parallelism,
            self.iter()
                .map(|(key, value)| (stable_hash(key), key, value)),
        )
    }

    fn restore(&mut self, name: &str, key_group: u32, chunk: &[u8]) -> Result<(), StateError> {
        self.extend(restore_entries::<K, V>(name, key_group, chunk)?);
        Ok(())
    }
}

impl<K: Key, V: StateValue> ErasedTable for NamespacedTable<K, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn copy(&self) -> Box<dyn ErasedTable> {
        Box::new(NamespacedTable(self.0.clone()))
    }

    fn snapshot(
        &self,
        name: &str,
        max_parallelism: u32,
    ) -> Result<BTreeMap<u32, Vec<u8>>, StateError> {
        snapshot_entries(
            name,
            max_parallelism,
            self.0.iter().flat_map(|(key, namespaces)| {
                let hash = stable_hash(key);
                // Encodes as the `(K, Vec<u8>)` the chunk format names.
                namespaces
                    .iter()
                    .map(move |(namespace, value)| (hash, (key, namespace), value))
            }),
        )
    }

    fn restore(&mut self, name: &str, key_group: u32, chunk: &[u8]) -> Result<(), StateError> {
        for ((key, namespace), value) in restore_entries::<(K, Vec<u8>), V>(name, key_group, chunk)?
        {
            self.0.entry(key).or_default().insert(namespace, value);
        }
        Ok(())
    }
}

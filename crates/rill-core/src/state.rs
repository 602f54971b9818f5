//! Keyed state kept in memory, scoped to the key of the record being processed.
//!
//! A keyed operator owns one [`KeyedStateStore`]. User functions declare state with handles
//! ([`ValueState`], [`MapState`]) named when the function is built; a handle finds its table in
//! the store by name on first use and remembers the table's slot afterwards, so the per-record
//! cost is one type check and one hash lookup. Tables are `FxHashMap`s: a fixed hash function,
//! so iteration order depends only on the operations applied, never on the run.

use std::any::Any;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use rustc_hash::FxHashMap;

use crate::key::Key;

/// The keyed state of one operator instance.
pub struct KeyedStateStore<K> {
    tables: Vec<StateTable>,
    key: PhantomData<fn() -> K>,
}

struct StateTable {
    name: &'static str,
    data: Box<dyn Any + Send>,
}

impl<K: Key> Default for KeyedStateStore<K> {
    fn default() -> Self {
        KeyedStateStore {
            tables: Vec::new(),
            key: PhantomData,
        }
    }
}

impl<K: Key> KeyedStateStore<K> {
    /// The table named `name`, created empty on first use.
    ///
    /// # Panics
    /// If two handles of one operator use the same name with different types: a bug in the
    /// operator's code, reported as the operator's failure.
    fn table<T: Default + Send + 'static>(
        &mut self,
        name: &'static str,
        slot: &Cell<Option<usize>>,
    ) -> &mut T {
        let index = match slot.get() {
            Some(index) => index,
            None => {
                let index = match self.tables.iter().position(|table| table.name == name) {
                    Some(index) => index,
                    None => {
                        self.tables.push(StateTable {
                            name,
                            data: Box::new(T::default()),
                        });
                        self.tables.len() - 1
                    }
                };
                slot.set(Some(index));
                index
            }
        };
        let table = &mut self.tables[index];
        match table.data.downcast_mut::<T>() {
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

impl<V: Clone + Send + 'static> ValueState<V> {
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
        store
            .table::<FxHashMap<K, V>>(self.name, &self.slot)
            .get(key)
            .cloned()
    }

    /// Sets the current key's value.
    pub fn set<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, value: V) {
        let (key, store) = ctx.key_and_store();
        upsert(store.table(self.name, &self.slot), key, value);
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) {
        let (key, store) = ctx.key_and_store();
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

impl<MK: Ord + Clone + Send + 'static, MV: Clone + Send + 'static> MapState<MK, MV> {
    /// A handle on the map state called `name`; names are unique within an operator.
    pub fn new(name: &'static str) -> Self {
        MapState {
            name,
            slot: Cell::new(None),
            entries: PhantomData,
        }
    }

    fn map<'s, K: Key>(
        &self,
        ctx: &'s mut impl KeyedStateAccess<K>,
    ) -> Option<&'s mut BTreeMap<MK, MV>> {
        let (key, store) = ctx.key_and_store();
        store
            .table::<MapTable<K, MK, MV>>(self.name, &self.slot)
            .get_mut(key)
    }

    /// The value under `map_key` for the current key.
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, map_key: &MK) -> Option<MV> {
        self.map(ctx)?.get(map_key).cloned()
    }

    /// Puts a value under `map_key` for the current key; returns the value it replaced.
    pub fn insert<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        map_key: MK,
        value: MV,
    ) -> Option<MV> {
        let (key, store) = ctx.key_and_store();
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
        self.map(ctx)
            .map(|map| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Whether the current key's map is empty.
    pub fn is_empty<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> bool {
        self.map(ctx).is_none_or(|map| map.is_empty())
    }

    /// Removes every entry of the current key.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) {
        let (key, store) = ctx.key_and_store();
        store
            .table::<MapTable<K, MK, MV>>(self.name, &self.slot)
            .remove(key);
    }
}

impl<K: Key> KeyedStateStore<K> {
    /// The value table of `state`, for operators that process a whole batch against one table.
    pub fn values<V: Clone + Send + 'static>(
        &mut self,
        state: &ValueState<V>,
    ) -> &mut FxHashMap<K, V> {
        self.table(state.name, &state.slot)
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
        let mut store = KeyedStateStore::default();
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
        let mut store = KeyedStateStore::default();
        let seen = MapState::<u32, &'static str>::new("seen");
        let mut a = Scope {
            key: "a".into(),
            store: &mut store,
        };
        assert!(seen.is_empty(&mut a));
        seen.insert(&mut a, 3, "three");
        seen.insert(&mut a, 1, "one");
        assert_eq!(seen.entries(&mut a), vec![(1, "one"), (3, "three")]);
        assert_eq!(seen.remove(&mut a, &1), Some("one"));
        let mut b = Scope {
            key: "b".into(),
            store: &mut store,
        };
        assert_eq!(seen.get(&mut b, &3), None);
        let mut a = Scope {
            key: "a".into(),
            store: &mut store,
        };
        assert_eq!(seen.get(&mut a, &3), Some("three"));
        seen.clear(&mut a);
        assert!(seen.is_empty(&mut a));
    }

    #[test]
    #[should_panic(expected = "declared twice")]
    fn one_name_with_two_types_is_reported() {
        let mut store = KeyedStateStore::default();
        let mut scope = Scope {
            key: "a".into(),
            store: &mut store,
        };
        ValueState::<u64>::new("x").set(&mut scope, 1);
        ValueState::<String>::new("x").set(&mut scope, "y".into());
    }
}

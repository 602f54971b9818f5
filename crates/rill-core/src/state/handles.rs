//! The state handles user functions declare, each scoped to the current key (and namespace,
//! through [`InNamespace`](super::InNamespace)):
//!
//! - [`ValueState`]: one value;
//! - [`ListState`]: a list values are added to;
//! - [`MapState`]: a sorted map;
//! - [`ReducingState`]: one value that every added value is reduced into;
//! - [`AggregatingState`]: an accumulator that added values are aggregated into, read as a
//!   result ([`AggregateFunction`]).
//!
//! A handle is a name and a cached table slot; the value lives in the operator's store, so a
//! handle is cheap to clone and holds nothing a checkpoint would miss.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use super::{KeyedStateAccess, Place, StateValue, TableRef};
use crate::key::Key;

/// A state's name and the slot its table was last found in.
struct Handle {
    name: &'static str,
    slot: Cell<Option<usize>>,
}

impl Handle {
    fn new(name: &'static str) -> Self {
        Handle {
            name,
            slot: Cell::new(None),
        }
    }

    fn table(&self) -> TableRef<'_> {
        TableRef {
            name: self.name,
            slot: &self.slot,
        }
    }

    /// Reads the stored value of the current key (and namespace).
    fn read<K: Key, S: StateValue, R>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        read: impl FnOnce(Option<&S>) -> R,
    ) -> R {
        let (key, namespace, store) = ctx.scope();
        store.read(self.table(), Place { key, namespace }, read)
    }

    /// Sets (`Some`) or removes (`None`) the stored value of the current key (and namespace).
    fn write<K: Key, S: StateValue>(&self, ctx: &mut impl KeyedStateAccess<K>, value: Option<S>) {
        let (key, namespace, store) = ctx.scope();
        store.write(self.table(), Place { key, namespace }, value);
    }

    /// Changes the stored collection of the current key (and namespace) in place; it is kept
    /// while `keep` holds.
    fn modify<K: Key, S: StateValue + Default, R>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        keep: impl Fn(&S) -> bool,
        modify: impl FnOnce(&mut S) -> R,
    ) -> R {
        let (key, namespace, store) = ctx.scope();
        store.modify(self.table(), Place { key, namespace }, keep, modify)
    }

    /// Changes the stored value of the current key (and namespace); `None` is no value.
    fn update<K: Key, S: StateValue, R>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        update: impl FnOnce(&mut Option<S>) -> R,
    ) -> R {
        let (key, namespace, store) = ctx.scope();
        store.update(self.table(), Place { key, namespace }, update)
    }
}

impl Clone for Handle {
    fn clone(&self) -> Self {
        Handle::new(self.name)
    }
}

/// One value per key.
#[derive(Clone)]
pub struct ValueState<V> {
    handle: Handle,
    value: PhantomData<fn() -> V>,
}

impl<V: StateValue> ValueState<V> {
    /// A handle on the value state called `name`; names are unique within an operator.
    pub fn new(name: &'static str) -> Self {
        ValueState {
            handle: Handle::new(name),
            value: PhantomData,
        }
    }

    pub(super) fn table(&self) -> TableRef<'_> {
        self.handle.table()
    }

    /// The current key's value, if it has one.
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Option<V> {
        self.handle.read(ctx, |value: Option<&V>| value.cloned())
    }

    /// Sets the current key's value.
    pub fn set<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, value: V) {
        self.handle.write(ctx, Some(value));
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) {
        self.handle.write::<K, V>(ctx, None);
    }

    /// Reads the current key's value without copying it (with in-memory state).
    pub fn with<K: Key, R>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        read: impl FnOnce(Option<&V>) -> R,
    ) -> R {
        self.handle.read(ctx, read)
    }

    /// Changes the current key's value in place, starting from the default if it has none;
    /// the value is kept while `keep` holds. With in-memory state, one lookup and no copy.
    pub(crate) fn modify<K: Key, R>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        keep: impl Fn(&V) -> bool,
        modify: impl FnOnce(&mut V) -> R,
    ) -> R
    where
        V: Default,
    {
        self.handle.modify(ctx, keep, modify)
    }

    /// Changes the current key's value in place (`None` is no value): with in-memory state,
    /// without copying it.
    pub fn update<K: Key, R>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        update: impl FnOnce(&mut Option<V>) -> R,
    ) -> R {
        self.handle.update(ctx, update)
    }
}

/// A list per key, in the order values were added.
#[derive(Clone)]
pub struct ListState<V> {
    handle: Handle,
    value: PhantomData<fn() -> V>,
}

impl<V: StateValue> ListState<V> {
    /// A handle on the list state called `name`; names are unique within an operator.
    pub fn new(name: &'static str) -> Self {
        ListState {
            handle: Handle::new(name),
            value: PhantomData,
        }
    }

    /// The current key's list (empty if it has none).
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Vec<V> {
        self.handle.read(ctx, |list: Option<&Vec<V>>| {
            list.cloned().unwrap_or_default()
        })
    }

    /// Appends `value` to the current key's list.
    pub fn add<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, value: V) {
        self.handle.modify(
            ctx,
            |list: &Vec<V>| !list.is_empty(),
            |list| list.push(value),
        );
    }

    /// Appends `values` to the current key's list.
    pub fn add_all<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, values: Vec<V>) {
        if values.is_empty() {
            return;
        }
        self.handle.modify(
            ctx,
            |list: &Vec<V>| !list.is_empty(),
            |list| list.extend(values),
        );
    }

    /// Replaces the current key's list by `values`.
    pub fn update<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, values: Vec<V>) {
        self.handle
            .write(ctx, (!values.is_empty()).then_some(values));
    }

    /// Removes the current key's list.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) {
        self.handle.write::<K, Vec<V>>(ctx, None);
    }
}

/// A sorted map per key.
#[derive(Clone)]
pub struct MapState<MK, MV> {
    handle: Handle,
    entries: PhantomData<fn() -> (MK, MV)>,
}

impl<MK: Ord + StateValue, MV: StateValue> MapState<MK, MV> {
    /// A handle on the map state called `name`; names are unique within an operator.
    pub fn new(name: &'static str) -> Self {
        MapState {
            handle: Handle::new(name),
            entries: PhantomData,
        }
    }

    fn read<K: Key, R>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        read: impl FnOnce(Option<&BTreeMap<MK, MV>>) -> R,
    ) -> R {
        self.handle.read(ctx, read)
    }

    /// Changes the current key's map, removing it once empty.
    fn update<K: Key, R>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        update: impl FnOnce(&mut BTreeMap<MK, MV>) -> R,
    ) -> R {
        self.handle
            .modify(ctx, |map: &BTreeMap<MK, MV>| !map.is_empty(), update)
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
        self.update(ctx, |map| map.insert(map_key, value))
    }

    /// Removes `map_key` from the current key's map; returns its value.
    pub fn remove<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, map_key: &MK) -> Option<MV> {
        self.update(ctx, |map| map.remove(map_key))
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
        self.handle.write::<K, BTreeMap<MK, MV>>(ctx, None);
    }
}

/// One value per key that every added value is reduced into.
#[derive(Clone)]
pub struct ReducingState<V> {
    handle: Handle,
    reduce: Arc<dyn Fn(V, V) -> V + Send + Sync>,
}

impl<V: StateValue> ReducingState<V> {
    /// A handle on the reducing state called `name`, combining the current value and an added
    /// one with `reduce`.
    pub fn new(name: &'static str, reduce: impl Fn(V, V) -> V + Send + Sync + 'static) -> Self {
        ReducingState {
            handle: Handle::new(name),
            reduce: Arc::new(reduce),
        }
    }

    /// The current key's reduced value, if anything was added.
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Option<V> {
        self.handle.read(ctx, |value: Option<&V>| value.cloned())
    }

    /// Reduces `value` into the current key's value.
    pub fn add<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, value: V) {
        self.handle.update(ctx, |current: &mut Option<V>| {
            *current = Some(match current.take() {
                Some(current) => (self.reduce)(current, value),
                None => value,
            });
        });
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) {
        self.handle.write::<K, V>(ctx, None);
    }
}

/// An incremental aggregation: values are added to an accumulator, which gives the result.
pub trait AggregateFunction: Send + Sync + 'static {
    /// The values added.
    type In;
    /// What is kept in state between additions.
    type Acc: StateValue;
    /// The result read from an accumulator.
    type Out;

    /// A new, empty accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds `value` to `accumulator`.
    fn add(&self, value: Self::In, accumulator: &mut Self::Acc);
    /// The result of `accumulator`.
    fn result(&self, accumulator: &Self::Acc) -> Self::Out;
    /// Two accumulators as one (merging windows need it).
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// An accumulator per key that added values are aggregated into.
pub struct AggregatingState<A> {
    handle: Handle,
    aggregate: Arc<A>,
}

impl<A> Clone for AggregatingState<A> {
    fn clone(&self) -> Self {
        AggregatingState {
            handle: self.handle.clone(),
            aggregate: Arc::clone(&self.aggregate),
        }
    }
}

impl<A: AggregateFunction> AggregatingState<A> {
    /// A handle on the aggregating state called `name`, aggregating with `aggregate`.
    pub fn new(name: &'static str, aggregate: A) -> Self {
        AggregatingState {
            handle: Handle::new(name),
            aggregate: Arc::new(aggregate),
        }
    }

    /// The result for the current key, if anything was added.
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Option<A::Out> {
        self.handle.read(ctx, |accumulator: Option<&A::Acc>| {
            accumulator.map(|accumulator| self.aggregate.result(accumulator))
        })
    }

    /// Adds `value` to the current key's accumulator (created on the first addition).
    pub fn add<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>, value: A::In) {
        self.handle.update(ctx, |accumulator: &mut Option<A::Acc>| {
            let accumulator =
                accumulator.get_or_insert_with(|| self.aggregate.create_accumulator());
            self.aggregate.add(value, accumulator);
        });
    }

    /// Removes the current key's accumulator.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) {
        self.handle.write::<K, A::Acc>(ctx, None);
    }
}

//! Keyed operators: reduce and process functions whose state is scoped to the record's key.
//!
//! Both take the same key selector as the key-hash exchange in front of them, so a key's records
//! all reach one subtask and find their state there.

use std::sync::Arc;

use crate::checkpoint::CheckpointId;
use crate::element::{Data, Record, Timestamp};
use crate::error::BoxError;
use crate::key::Key;
use crate::operator::{OneInputOperator, OperatorSnapshot};
use crate::state::{KeyedStateAccess, KeyedStateStore, StateValue, ValueState};

/// Extracts the key of a record's value.
pub type KeySelector<T, K> = Arc<dyn Fn(&T) -> K + Send + Sync>;

/// What a keyed process function sees while it processes one record.
pub struct KeyedContext<'a, K, O> {
    key: &'a K,
    timestamp: Option<Timestamp>,
    store: &'a mut KeyedStateStore<K>,
    out: &'a mut Vec<Record<O>>,
}

impl<K: Key, O> KeyedContext<'_, K, O> {
    /// The key of the record being processed.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The record's event timestamp, if it has one.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }

    /// Emits a value with the input record's timestamp.
    pub fn emit(&mut self, value: O) {
        self.out
            .push(Record::with_optional_timestamp(value, self.timestamp));
    }

    /// Emits a value with the given timestamp.
    pub fn emit_with_timestamp(&mut self, value: O, timestamp: Timestamp) {
        self.out.push(Record::with_timestamp(value, timestamp));
    }
}

impl<K: Key, O> KeyedStateAccess<K> for KeyedContext<'_, K, O> {
    fn key_and_store(&mut self) -> (&K, &mut KeyedStateStore<K>) {
        (self.key, self.store)
    }
}

/// A function called for every record of a keyed stream, with state scoped to its key.
///
/// Each subtask gets its own clone of the function; state lives in handles such as
/// [`ValueState`] declared as fields, never in plain fields (those are not checkpointed).
pub trait KeyedProcessFunction: Clone + Send + 'static {
    /// The key type.
    type Key: Key;
    /// The type of the records it consumes.
    type In: Data;
    /// The type of the records it emits.
    type Out: Data;

    /// Processes one record.
    fn process(
        &mut self,
        value: Self::In,
        ctx: &mut KeyedContext<'_, Self::Key, Self::Out>,
    ) -> Result<(), BoxError>;
}

/// A keyed operator's snapshot: its store, per key group (external tables frozen, to be read
/// off the data path).
fn snapshot_of<K: Key>(store: &mut KeyedStateStore<K>) -> Result<OperatorSnapshot, BoxError> {
    let (keyed, deferred) = store.snapshot_deferred()?;
    Ok(OperatorSnapshot {
        keyed,
        operator: Vec::new(),
        deferred,
    })
}

/// Runs a [`KeyedProcessFunction`].
pub struct KeyedProcess<P: KeyedProcessFunction> {
    function: P,
    key_of: KeySelector<P::In, P::Key>,
    store: KeyedStateStore<P::Key>,
}

impl<P: KeyedProcessFunction> KeyedProcess<P> {
    /// An operator instance running `function` on the keys `key_of` extracts, with its state
    /// in `store`.
    pub fn new(
        function: P,
        key_of: KeySelector<P::In, P::Key>,
        store: KeyedStateStore<P::Key>,
    ) -> Self {
        KeyedProcess {
            function,
            key_of,
            store,
        }
    }
}

impl<P: KeyedProcessFunction> OneInputOperator for KeyedProcess<P> {
    type In = P::In;
    type Out = P::Out;

    fn process_batch(
        &mut self,
        input: Vec<Record<P::In>>,
        out: &mut Vec<Record<P::Out>>,
    ) -> Result<(), BoxError> {
        for record in input {
            let key = (self.key_of)(&record.value);
            let mut ctx = KeyedContext {
                key: &key,
                timestamp: record.timestamp(),
                store: &mut self.store,
                out,
            };
            self.function.process(record.value, &mut ctx)?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, _checkpoint: CheckpointId) -> Result<OperatorSnapshot, BoxError> {
        snapshot_of(&mut self.store)
    }

    fn restore_state(&mut self, mut snapshot: OperatorSnapshot) -> Result<(), BoxError> {
        snapshot.complete()?;
        self.store.restore(snapshot.keyed);
        Ok(())
    }
}

/// One key's view of a store, outside a user function.
struct KeyScope<'a, K: Key> {
    key: &'a K,
    store: &'a mut KeyedStateStore<K>,
}

impl<K: Key> KeyedStateAccess<K> for KeyScope<'_, K> {
    fn key_and_store(&mut self) -> (&K, &mut KeyedStateStore<K>) {
        (self.key, self.store)
    }
}

/// Combines each record with the previous result for its key and emits the new result.
pub struct KeyedReduce<T, K, F> {
    reduce: Arc<F>,
    key_of: KeySelector<T, K>,
    store: KeyedStateStore<K>,
    accumulated: ValueState<T>,
}

impl<T: Data + StateValue, K: Key, F> KeyedReduce<T, K, F> {
    /// An operator instance reducing with `reduce` per key that `key_of` extracts, with its
    /// state in `store`.
    pub fn new(reduce: Arc<F>, key_of: KeySelector<T, K>, store: KeyedStateStore<K>) -> Self {
        KeyedReduce {
            reduce,
            key_of,
            store,
            accumulated: ValueState::new("reduce"),
        }
    }
}

impl<T, K, F> OneInputOperator for KeyedReduce<T, K, F>
where
    T: Data + StateValue,
    K: Key,
    F: Fn(T, T) -> T + Send + Sync + 'static,
{
    type In = T;
    type Out = T;

    fn process_batch(
        &mut self,
        input: Vec<Record<T>>,
        out: &mut Vec<Record<T>>,
    ) -> Result<(), BoxError> {
        let reduce = &*self.reduce;
        out.reserve(input.len());
        let Some(table) = self.store.values(&self.accumulated) else {
            // External tables: one read and one write per record.
            for record in input {
                let key = (self.key_of)(&record.value);
                let mut scope = KeyScope {
                    key: &key,
                    store: &mut self.store,
                };
                let previous = self.accumulated.get(&mut scope);
                let record = record.map(|value| match previous {
                    Some(accumulated) => reduce(accumulated, value),
                    None => value,
                });
                self.accumulated.set(&mut scope, record.value.clone());
                out.push(record);
            }
            return Ok(());
        };
        for record in input {
            let key = (self.key_of)(&record.value);
            out.push(record.map(|value| match table.get_mut(&key) {
                Some(accumulated) => {
                    *accumulated = reduce(accumulated.clone(), value);
                    accumulated.clone()
                }
                None => {
                    table.insert(key, value.clone());
                    value
                }
            }));
        }
        Ok(())
    }

    fn snapshot_state(&mut self, _checkpoint: CheckpointId) -> Result<OperatorSnapshot, BoxError> {
        snapshot_of(&mut self.store)
    }

    fn restore_state(&mut self, mut snapshot: OperatorSnapshot) -> Result<(), BoxError> {
        snapshot.complete()?;
        self.store.restore(snapshot.keyed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MapState;

    fn values<T: Clone>(records: &[Record<T>]) -> Vec<T> {
        records.iter().map(|r| r.value.clone()).collect()
    }

    #[test]
    fn reduce_emits_running_result_per_key() {
        let key_of: KeySelector<(char, u32), char> = Arc::new(|(k, _)| *k);
        let mut reduce = KeyedReduce::new(
            Arc::new(|a: (char, u32), b: (char, u32)| (a.0, a.1 + b.1)),
            key_of,
            KeyedStateStore::new(128),
        );
        let input = [('a', 1), ('b', 10), ('a', 2), ('a', 3), ('b', 20)];
        let mut out = Vec::new();
        reduce
            .process_batch(input.into_iter().map(Record::new).collect(), &mut out)
            .unwrap();
        assert_eq!(
            values(&out),
            vec![('a', 1), ('b', 10), ('a', 3), ('a', 6), ('b', 30)]
        );
    }

    /// Emits a word the first time it is seen per key, and counts repeats.
    #[derive(Clone)]
    struct FirstSeen {
        seen: MapState<String, u32>,
        total: ValueState<u32>,
    }

    impl KeyedProcessFunction for FirstSeen {
        type Key = u8;
        type In = (u8, String);
        type Out = (u8, String, u32);

        fn process(
            &mut self,
            (k, word): (u8, String),
            ctx: &mut KeyedContext<'_, u8, Self::Out>,
        ) -> Result<(), BoxError> {
            let total = self.total.get(ctx).unwrap_or(0) + 1;
            self.total.set(ctx, total);
            if self.seen.insert(ctx, word.clone(), total).is_none() {
                ctx.emit((k, word, total));
            }
            Ok(())
        }
    }

    #[test]
    fn process_function_state_is_per_key() {
        let function = FirstSeen {
            seen: MapState::new("seen"),
            total: ValueState::new("total"),
        };
        let mut op = KeyedProcess::new(
            function,
            Arc::new(|(k, _): &(u8, String)| *k),
            KeyedStateStore::new(128),
        );
        let input = [(1, "x"), (2, "x"), (1, "x"), (1, "y"), (2, "y")];
        let mut out = Vec::new();
        op.process_batch(
            input
                .into_iter()
                .map(|(k, w)| Record::new((k, w.to_owned())))
                .collect(),
            &mut out,
        )
        .unwrap();
        let expected = [(1, "x", 1), (2, "x", 1), (1, "y", 3), (2, "y", 2)];
        assert_eq!(
            values(&out),
            expected.map(|(k, w, n)| (k, w.to_owned(), n)).to_vec()
        );
    }

    type Pair = (u16, u64);

    fn summing_reduce() -> KeyedReduce<Pair, u16, impl Fn(Pair, Pair) -> Pair> {
        KeyedReduce::new(
            Arc::new(|a: Pair, b: Pair| (a.0, a.1 + b.1)),
            Arc::new(|(k, _): &(u16, u64)| *k),
            KeyedStateStore::new(128),
        )
    }

    fn run(
        op: &mut impl OneInputOperator<In = (u16, u64), Out = (u16, u64)>,
        input: &[(u16, u64)],
    ) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        op.process_batch(input.iter().copied().map(Record::new).collect(), &mut out)
            .unwrap();
        values(&out)
    }

    proptest::proptest! {
        #[test]
        fn restoring_a_snapshot_is_like_never_stopping(
            input in proptest::collection::vec((0u16..20, 0u64..1_000), 0..200),
            cut in 0usize..200,
        ) {
            let cut = cut.min(input.len());
            let expected = run(&mut summing_reduce(), &input);

            let mut before = summing_reduce();
            let mut outputs = run(&mut before, &input[..cut]);
            let mut snapshot = before.snapshot_state(CheckpointId(1)).unwrap();
            // What a driver does before it acknowledges: encode the frozen state.
            snapshot.complete().unwrap();
            let mut after = summing_reduce();
            after.restore_state(snapshot.clone()).unwrap();
            outputs.extend(run(&mut after, &input[cut..]));
            proptest::prop_assert_eq!(&outputs, &expected);

            // Rescaled to two instances, each key continues on the instance owning its group.
            let mut halves: Vec<_> = (0..2)
                .map(|index| {
                    let mut op = summing_reduce();
                    let range = crate::key::KeyGroupRange::for_subtask(index, 2, 128);
                    op.restore_state(OperatorSnapshot { keyed: snapshot.keyed.select(range), ..Default::default() }).unwrap();
                    (range, op)
                })
                .collect();
            for (position, record) in input[cut..].iter().enumerate() {
                let group = crate::key::key_group_of(&record.0, 128);
                let (_, op) = halves.iter_mut().find(|(range, _)| range.contains(group)).unwrap();
                proptest::prop_assert_eq!(run(op, &[*record]), vec![expected[cut + position]]);
            }
        }
    }
}

//! Keyed operators: reduce and process functions whose state is scoped to the record's key;
//! process functions also have timers and side outputs.
//!
//! Both take the same key selector as the key-hash exchange in front of them, so a key's records
//! all reach one subtask and find their state there.
//!
//! A failure of the keyed state (see [`crate::state`], "Failures") is recorded by the store
//! and returned by the operator once the record or timer that met it is done: the user
//! function's own error, or its panic, over the empty values a failed handle returned, is
//! only a consequence.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::checkpoint::CheckpointId;
#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::element::{Data, Record, Timestamp};
use crate::error::BoxError;
use crate::key::Key;
use crate::operator::{OneInputOperator, OperatorSnapshot};
use crate::side_output::{Emitter, OutputTag, Tagged};
use crate::state::{KeyedStateAccess, KeyedStateStore, StateValue, ValueState};
use crate::timers::{TimeDomain, TimerService};

/// Extracts the key of a record's value.
pub type KeySelector<T, K> = Arc<dyn Fn(&T) -> K + Send + Sync>;

/// What a keyed process function sees while it processes one record or one timer.
pub struct KeyedContext<'a, K, O> {
    key: &'a K,
    store: &'a mut KeyedStateStore<K>,
    timers: &'a mut TimerService<K, ()>,
    emitter: Emitter<'a, O>,
    fired: Option<TimeDomain>,
}

impl<K: Key, O: Data> KeyedContext<'_, K, O> {
    /// The record's event timestamp, if it has one; in an event-time timer, the timer's time.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.emitter.timestamp()
    }

    /// Emits a value with the input record's timestamp (an event-time timer's time).
    pub fn emit(&mut self, value: O) {
        self.emitter.emit(value);
    }

    /// Emits a value with the given timestamp.
    pub fn emit_with_timestamp(&mut self, value: O, timestamp: Timestamp) {
        self.emitter.emit_with_timestamp(value, timestamp);
    }

    /// Emits a value to the side output `tag` names, with the input record's timestamp.
    pub fn output<S: Data>(&mut self, tag: &OutputTag<S>, value: S) {
        self.emitter.output(tag, value);
    }

    /// The key of the record (or timer) being processed.
    pub fn key(&self) -> &K {
        self.key
    }

    /// In [`KeyedProcessFunction::on_timer`], which clock fired the timer; `None` while a
    /// record is processed.
    pub fn timer_domain(&self) -> Option<TimeDomain> {
        self.fired
    }

    /// The operator's input watermark: no record with an earlier timestamp is expected.
    pub fn current_watermark(&self) -> Timestamp {
        self.timers.current_watermark()
    }

    /// Processing time as the driver last reported it (the simulator's is virtual).
    pub fn current_processing_time(&self) -> Timestamp {
        self.timers.current_processing_time()
    }

    /// Calls [`KeyedProcessFunction::on_timer`] for this key once the watermark reaches
    /// `time`. Registering the same time twice registers one timer.
    pub fn register_event_time_timer(&mut self, time: Timestamp) {
        self.timers
            .register(TimeDomain::EventTime, self.key.clone(), (), time);
    }

    /// Calls [`KeyedProcessFunction::on_timer`] for this key once processing time reaches
    /// `time`. Processing-time timers still pending when the input ends do not fire (event-time
    /// timers do: the end of input moves the watermark to the end of time).
    pub fn register_processing_time_timer(&mut self, time: Timestamp) {
        self.timers
            .register(TimeDomain::ProcessingTime, self.key.clone(), (), time);
    }

    /// Deletes this key's event-time timer at `time`, if there is one.
    pub fn delete_event_time_timer(&mut self, time: Timestamp) {
        self.timers
            .delete(TimeDomain::EventTime, self.key, &(), time);
    }

    /// Deletes this key's processing-time timer at `time`, if there is one.
    pub fn delete_processing_time_timer(&mut self, time: Timestamp) {
        self.timers
            .delete(TimeDomain::ProcessingTime, self.key, &(), time);
    }
}

impl<K: Key, O> KeyedStateAccess<K> for KeyedContext<'_, K, O> {
    fn key_and_store(&mut self) -> (&K, &mut KeyedStateStore<K>) {
        (self.key, self.store)
    }
}

/// A function called for every record of a keyed stream, with state scoped to its key, and
/// for every timer it registered.
///
/// Each subtask gets its own clone of the function; state lives in handles such as
/// [`ValueState`] declared as fields, never in plain fields (those are not checkpointed).
/// Timers are checkpointed with the state: one registered before a failure fires after
/// recovery, once.
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

    /// A timer this function registered for `ctx.key()` fired at `timestamp`
    /// (`ctx.timer_domain()` says which clock). Timers fire in timestamp order.
    fn on_timer(
        &mut self,
        _timestamp: Timestamp,
        _ctx: &mut KeyedContext<'_, Self::Key, Self::Out>,
    ) -> Result<(), BoxError> {
        Ok(())
    }
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

/// The snapshot of a keyed operator with timers: its store, its timers beside it, and its
/// watermark as operator state.
pub(crate) fn snapshot_keyed<K: Key, N: Key>(
    store: &mut KeyedStateStore<K>,
    timers: &TimerService<K, N>,
) -> Result<OperatorSnapshot, BoxError> {
    let mut snapshot = snapshot_of(store)?;
    timers.snapshot_into(&mut snapshot.keyed)?;
    snapshot.operator = vec![timers.snapshot_watermark()?];
    Ok(snapshot)
}

/// The outcome of one call into a user function that had `store` at hand: the store's failure,
/// if one was recorded — the cause, even when the function then failed or panicked over the
/// empty values the failed handles returned — or else what the function gave (its panic goes
/// on unwinding, to the subtask's guard).
fn after_user_call<K: Key>(
    store: &KeyedStateStore<K>,
    outcome: std::thread::Result<Result<(), BoxError>>,
) -> Result<(), BoxError> {
    store.check()?;
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Restores a keyed operator's timers, watermark and store from its snapshot.
pub(crate) fn restore_keyed<K: Key, N: Key>(
    store: &mut KeyedStateStore<K>,
    timers: &mut TimerService<K, N>,
    mut snapshot: OperatorSnapshot,
) -> Result<(), BoxError> {
    snapshot.complete()?;
    timers.restore_from(&mut snapshot.keyed)?;
    timers.restore_watermark(&snapshot.operator)?;
    store.restore(snapshot.keyed);
    Ok(())
}

/// Runs a [`KeyedProcessFunction`]; emits its main and side outputs as [`Tagged`] values.
pub struct KeyedProcess<P: KeyedProcessFunction> {
    function: P,
    key_of: KeySelector<P::In, P::Key>,
    store: KeyedStateStore<P::Key>,
    timers: TimerService<P::Key, ()>,
}

impl<P: KeyedProcessFunction> KeyedProcess<P> {
    /// An operator instance running `function` on the keys `key_of` extracts, with its state
    /// in `store`.
    pub fn new(
        function: P,
        key_of: KeySelector<P::In, P::Key>,
        store: KeyedStateStore<P::Key>,
    ) -> Self {
        let timers = TimerService::new(store.max_parallelism());
        KeyedProcess {
            function,
            key_of,
            store,
            timers,
        }
    }

    /// Fires the due timers of `domain`, in timestamp order.
    fn fire(
        &mut self,
        domain: TimeDomain,
        out: &mut Vec<Record<Tagged<P::Out>>>,
    ) -> Result<(), BoxError> {
        while let Some((time, key, ())) = self.timers.pop_due(domain) {
            let timestamp = (domain == TimeDomain::EventTime).then_some(time);
            let mut ctx = KeyedContext {
                key: &key,
                store: &mut self.store,
                timers: &mut self.timers,
                emitter: Emitter::new(out, timestamp),
                fired: Some(domain),
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| self.function.on_timer(time, &mut ctx)));
            after_user_call(&self.store, outcome)?;
        }
        Ok(())
    }

    /// Breaks the operator on purpose, for the simulator to catch: with `ProcessDropsTimers`,
    /// restored, it drops its pending timers (so do the interval join and every co-process
    /// function, which it runs).
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        match defect {
            Defect::ProcessDropsTimers => self.timers.drop_restored_timers(),
            Defect::EventTimersFireEarly => self.timers.fire_event_timers_early(),
            _ => {}
        }
    }
}

impl<P: KeyedProcessFunction> OneInputOperator for KeyedProcess<P> {
    type In = P::In;
    type Out = Tagged<P::Out>;

    fn open(&mut self) -> Result<(), BoxError> {
        Ok(self.store.check()?)
    }

    fn process_batch(
        &mut self,
        input: Vec<Record<P::In>>,
        out: &mut Vec<Record<Tagged<P::Out>>>,
    ) -> Result<(), BoxError> {
        for record in input {
            let key = (self.key_of)(&record.value);
            let mut ctx = KeyedContext {
                key: &key,
                store: &mut self.store,
                timers: &mut self.timers,
                emitter: Emitter::new(out, record.timestamp()),
                fired: None,
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                self.function.process(record.value, &mut ctx)
            }));
            after_user_call(&self.store, outcome)?;
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Vec<Record<Tagged<P::Out>>>,
    ) -> Result<(), BoxError> {
        self.timers.advance_watermark(watermark);
        self.fire(TimeDomain::EventTime, out)
    }

    fn on_processing_time(
        &mut self,
        now: Timestamp,
        out: &mut Vec<Record<Tagged<P::Out>>>,
    ) -> Result<(), BoxError> {
        self.timers.advance_processing_time(now);
        self.fire(TimeDomain::ProcessingTime, out)
    }

    fn snapshot_state(&mut self, _checkpoint: CheckpointId) -> Result<OperatorSnapshot, BoxError> {
        snapshot_keyed(&mut self.store, &self.timers)
    }

    fn restore_state(&mut self, snapshot: OperatorSnapshot) -> Result<(), BoxError> {
        restore_keyed(&mut self.store, &mut self.timers, snapshot)
    }
}

/// One key's view of a store, outside a user function.
pub(crate) struct KeyScope<'a, K: Key> {
    pub(crate) key: &'a K,
    pub(crate) store: &'a mut KeyedStateStore<K>,
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

    fn open(&mut self) -> Result<(), BoxError> {
        // Restored chunks are decoded now: state that does not fit fails the restore.
        Ok(self.store.preload(&self.accumulated)?)
    }

    fn process_batch(
        &mut self,
        input: Vec<Record<T>>,
        out: &mut Vec<Record<T>>,
    ) -> Result<(), BoxError> {
        let reduce = &*self.reduce;
        out.reserve(input.len());
        let Some(table) = self.store.try_values(&self.accumulated)? else {
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
                self.store.check()?;
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
    use crate::state::{MapState, StateError, StateTables};

    fn values<T: Clone>(records: &[Record<T>]) -> Vec<T> {
        records.iter().map(|r| r.value.clone()).collect()
    }

    fn mains<T: Clone>(records: &[Record<Tagged<T>>]) -> Vec<T> {
        records
            .iter()
            .filter_map(|r| match &r.value {
                Tagged::Main(value) => Some(value.clone()),
                Tagged::Side(_) => None,
            })
            .collect()
    }

    /// Expects every key to report within 100 ms of event time: counts a key's records and,
    /// when its event-time timer fires, emits the count; a processing-time timer sends keys
    /// that stayed silent for a second of processing time to the "silent" side output.
    #[derive(Clone)]
    struct Deadline {
        count: ValueState<u32>,
        deadline: ValueState<i64>,
    }

    const SILENT: &str = "silent";

    impl KeyedProcessFunction for Deadline {
        type Key = u8;
        type In = u8;
        type Out = (u8, u32, i64);

        fn process(
            &mut self,
            _value: u8,
            ctx: &mut KeyedContext<'_, u8, Self::Out>,
        ) -> Result<(), BoxError> {
            let count = self.count.get(ctx).unwrap_or(0) + 1;
            self.count.set(ctx, count);
            if let Some(previous) = self.deadline.get(ctx) {
                ctx.delete_event_time_timer(Timestamp(previous));
            }
            let deadline = ctx.timestamp().ok_or("no timestamp")?.0 + 100;
            self.deadline.set(ctx, deadline);
            ctx.register_event_time_timer(Timestamp(deadline));
            let silent_at = Timestamp(ctx.current_processing_time().0 + 1_000);
            ctx.register_processing_time_timer(silent_at);
            Ok(())
        }

        fn on_timer(
            &mut self,
            timestamp: Timestamp,
            ctx: &mut KeyedContext<'_, u8, Self::Out>,
        ) -> Result<(), BoxError> {
            match ctx.timer_domain() {
                Some(TimeDomain::EventTime) => {
                    let count = self.count.get(ctx).unwrap_or(0);
                    ctx.emit((*ctx.key(), count, timestamp.0));
                }
                _ => {
                    let key = *ctx.key();
                    ctx.output(&OutputTag::<u8>::new(SILENT), key);
                }
            }
            Ok(())
        }
    }

    fn deadline_operator() -> KeyedProcess<Deadline> {
        KeyedProcess::new(
            Deadline {
                count: ValueState::new("count"),
                deadline: ValueState::new("deadline"),
            },
            Arc::new(|key: &u8| *key),
            KeyedStateStore::new(128),
        )
    }

    fn feed(
        op: &mut KeyedProcess<Deadline>,
        records: &[(u8, i64)],
    ) -> Vec<Record<Tagged<(u8, u32, i64)>>> {
        let mut out = Vec::new();
        let input = records
            .iter()
            .map(|&(key, time)| Record::with_timestamp(key, Timestamp(time)))
            .collect();
        op.process_batch(input, &mut out).unwrap();
        out
    }

    fn watermark(op: &mut KeyedProcess<Deadline>, time: i64) -> Vec<(u8, u32, i64)> {
        let mut out = Vec::new();
        op.on_watermark(Timestamp(time), &mut out).unwrap();
        assert!(
            out.iter().all(|r| r.timestamp().is_some()),
            "event-time firings carry the timer's time"
        );
        mains(&out)
    }

    #[test]
    fn event_time_timers_fire_in_order_and_deleted_ones_do_not() {
        let mut op = deadline_operator();
        feed(&mut op, &[(1, 10), (2, 20), (1, 50)]);
        assert_eq!(watermark(&mut op, 119), vec![], "no deadline reached yet");
        assert_eq!(
            watermark(&mut op, 150),
            vec![(2, 1, 120), (1, 2, 150)],
            "key 1's first deadline (110) was deleted"
        );
        assert_eq!(watermark(&mut op, 1_000), vec![]);
    }

    #[test]
    fn processing_time_timers_fire_when_the_clock_reaches_them_into_a_side_output() {
        let mut op = deadline_operator();
        let mut out = Vec::new();
        op.on_processing_time(Timestamp(5_000), &mut out).unwrap();
        feed(&mut op, &[(3, 10), (4, 10)]);
        op.on_processing_time(Timestamp(5_999), &mut out).unwrap();
        assert!(out.is_empty());
        op.on_processing_time(Timestamp(6_000), &mut out).unwrap();
        let silent: Vec<String> = out
            .iter()
            .map(|r| match &r.value {
                Tagged::Side(side) => side.tag().to_owned(),
                Tagged::Main(_) => "main".to_owned(),
            })
            .collect();
        assert_eq!(silent, vec![SILENT, SILENT]);
        assert!(
            out.iter().all(|r| r.timestamp().is_none()),
            "processing-time firings carry no event time"
        );
    }

    #[test]
    fn a_timer_registered_before_a_snapshot_fires_once_after_restore() {
        let mut op = deadline_operator();
        feed(&mut op, &[(1, 10), (2, 500)]);
        assert_eq!(watermark(&mut op, 200), vec![(1, 1, 110)]);
        let mut snapshot = op.snapshot_state(CheckpointId(1)).unwrap();
        snapshot.complete().unwrap();
        // The original runs on; the restored copy must do exactly what it does.
        let expected = watermark(&mut op, 1_000);
        assert_eq!(expected, vec![(2, 1, 600)]);
        let mut restored = deadline_operator();
        restored.restore_state(snapshot).unwrap();
        assert_eq!(watermark(&mut restored, 1_000), expected);
        assert_eq!(watermark(&mut restored, 2_000), vec![], "fired once");
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
            mains(&out),
            expected.map(|(k, w, n)| (k, w.to_owned(), n)).to_vec()
        );
    }

    /// External tables on a disk that is gone: every access fails.
    struct GoneDisk;

    impl GoneDisk {
        fn fail<T>(table: &str, key_group: u32) -> Result<T, StateError> {
            Err(StateError::Backend {
                table: table.to_owned(),
                key_group: Some(key_group),
                reason: "no such device".to_owned(),
            })
        }
    }

    impl StateTables for GoneDisk {
        fn get(
            &mut self,
            table: &str,
            group: u32,
            _: &[u8],
        ) -> Result<Option<Vec<u8>>, StateError> {
            Self::fail(table, group)
        }

        fn put(&mut self, table: &str, group: u32, _: &[u8], _: &[u8]) -> Result<(), StateError> {
            Self::fail(table, group)
        }

        fn delete(&mut self, table: &str, group: u32, _: &[u8]) -> Result<(), StateError> {
            Self::fail(table, group)
        }

        fn freeze(&mut self) -> Result<Box<dyn crate::state::FrozenTables>, StateError> {
            Self::fail("*", 0)
        }
    }

    /// Counts per key, insisting that a key it counted has a count: it panics over the empty
    /// value a failed read gives, and fails with its own error over a missing one.
    #[derive(Clone)]
    struct Insistent {
        count: ValueState<u32>,
        panics: bool,
    }

    impl KeyedProcessFunction for Insistent {
        type Key = u8;
        type In = u8;
        type Out = u32;

        fn process(
            &mut self,
            _value: u8,
            ctx: &mut KeyedContext<'_, u8, u32>,
        ) -> Result<(), BoxError> {
            let count = self.count.get(ctx);
            if self.panics {
                assert!(count.is_some(), "no count");
            }
            let count = count.ok_or("no count")? + 1;
            self.count.set(ctx, count);
            ctx.emit(count);
            Ok(())
        }
    }

    #[test]
    fn a_failing_backend_fails_the_operator_with_the_state_error_not_the_functions() {
        let group = crate::key::key_group_of(&5u8, 128);
        for panics in [false, true] {
            let function = Insistent {
                count: ValueState::new("count"),
                panics,
            };
            let store = KeyedStateStore::external(128, Box::new(GoneDisk));
            let mut op = KeyedProcess::new(function, Arc::new(|key: &u8| *key), store);
            let mut out = Vec::new();
            let error = op
                .process_batch(vec![Record::new(5u8), Record::new(6u8)], &mut out)
                .unwrap_err();
            let error = crate::error::OperatorError::from_user(error);
            assert!(
                matches!(
                    error.state(),
                    Some(StateError::Backend { table, key_group: Some(g), .. })
                        if table == "count" && *g == group
                ),
                "{error:?}"
            );
        }
    }

    #[test]
    fn an_operator_whose_state_could_not_open_fails_when_it_opens() {
        let opened = StateError::Open {
            reason: "keyspace 'state-0': read-only file system".to_owned(),
        };
        let failing = opened.clone();
        let info = crate::operator::OperatorInfo {
            job: "job".to_owned(),
            name: "count".to_owned(),
            uid: "count".to_owned(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            key_groups: crate::key::KeyGroupRange::for_subtask(0, 1, 128),
            checkpointing: false,
            state_backend: crate::state::StateBackend::External(Arc::new(move |_| {
                Err(failing.clone())
            })),
            allow_rewind: false,
        };
        let mut op = summing_reduce_in(KeyedStateStore::for_operator(&info));
        let error = op.open().unwrap_err();
        assert_eq!(error.downcast_ref::<StateError>(), Some(&opened));
    }

    #[test]
    fn a_reduce_restored_with_garbage_fails_when_it_opens_naming_the_state_and_key_group() {
        let mut keyed = crate::state::KeyedStateSnapshot::default();
        keyed
            .tables
            .entry("reduce".to_owned())
            .or_default()
            .insert(3, b"not a chunk".to_vec());
        let mut op = summing_reduce();
        op.restore_state(OperatorSnapshot {
            keyed,
            ..Default::default()
        })
        .unwrap();
        let error = op.open().unwrap_err();
        let error = error.downcast_ref::<StateError>();
        assert!(
            matches!(error, Some(StateError::Decode { table, key_group: 3, .. }) if table == "reduce"),
            "{error:?}"
        );
    }

    type Pair = (u16, u64);

    fn summing_reduce() -> KeyedReduce<Pair, u16, impl Fn(Pair, Pair) -> Pair> {
        summing_reduce_in(KeyedStateStore::new(128))
    }

    fn summing_reduce_in(
        store: KeyedStateStore<u16>,
    ) -> KeyedReduce<Pair, u16, impl Fn(Pair, Pair) -> Pair> {
        KeyedReduce::new(
            Arc::new(|a: Pair, b: Pair| (a.0, a.1 + b.1)),
            Arc::new(|(k, _): &(u16, u64)| *k),
            store,
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

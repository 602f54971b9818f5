//! Two jobs of keyed process functions, with their inputs and reference models: one keeps its
//! state in namespaces, the other races processing-time timers against event-time ones.
//!
//! - `bucket-sums`: `(key, value)` events, each key in one partition (so a key's events arrive
//!   in log order) → key by key → a process function that keeps, per key, a running total
//!   (plain keyed state) and, in a namespace per bucket (`value mod` [`BUCKETS`]), the sum and
//!   the list of the bucket's values (namespaced value and list state). Each event emits `(key,
//!   bucket, bucket sum, bucket count, total)`; a bucket that reaches [`BUCKET_SIZE`] values is
//!   cleared. Final state: each key's total and its buckets' contents, read back through the
//!   namespaces, as the operator does.
//! - `processing-timers`: readings `(key, id)` in event time (out of order, never late, as the
//!   event-time jobs' input) → key by key → a process function that keeps each id pending and
//!   registers two timers for it: one in processing time, [`PROCESSING_DELAY_MS`] after it
//!   arrives, and one in event time, [`EVENT_DELAY_MS`] after its timestamp. Whichever fires
//!   first emits `(key, id)` and deletes the other (unless another pending id still needs it).
//!   Event-time timers all fire by the end of the input, so **the output does not depend on
//!   when processing-time timers fire**: every id exactly once. A timer that fires with
//!   nothing pending at its time — one that should have been deleted, or fires twice after a
//!   restore — emits a stray `(key, STRAY)`, which no reference holds. Final state: nothing
//!   pending, no timer left.

use std::collections::BTreeMap;

use rand::Rng;
use rill_api::StreamEnv;
use rill_core::BoxError;
use rill_core::coordinator::CompletedCheckpoint;
use rill_core::element::Timestamp;
use rill_core::keyed::{KeyedContext, KeyedProcessFunction};
use rill_core::state::{
    InNamespace, KeyedStateAccess, KeyedStateStore, ListState, MapState, ValueState,
};
use rill_core::timers::TimeDomain;

use super::event_time::{Timeline, leftover_state, strategy, timed};
use super::{
    FinalState, GeneratedInput, InputSpec, Multiset, TopicInput, decode, encode, keyed_to_sink,
    record,
};
use crate::connectors::SimConnectors;
use crate::log::LogRecord;

/// The buckets of `bucket-sums`: a value's bucket is `value mod BUCKETS`.
pub const BUCKETS: i64 = 3;
/// How many values a bucket holds before it is cleared.
pub const BUCKET_SIZE: u32 = 4;
/// How long after it arrives (in processing time) a `processing-timers` id is emitted ...
pub const PROCESSING_DELAY_MS: i64 = 2;
/// ... unless its event-time timer, this long after its timestamp, fires first.
pub const EVENT_DELAY_MS: i64 = 120;
/// The id a stray timer emits.
pub const STRAY: u32 = u32::MAX;

/// An event of `bucket-sums`: `(key, value)`.
type Event = (u32, i64);
/// What `bucket-sums` emits: key, bucket, the bucket's sum and count, the key's total.
pub type BucketResult = (u32, u8, i64, u32, i64);
/// A reading of `processing-timers`: `(key, id)`.
type Reading = (u32, u32);

fn bucket_of(value: i64) -> u8 {
    value.rem_euclid(BUCKETS) as u8
}

/// `bucket-sums`' input (each key in one partition) and reference.
pub(super) fn bucket_sums(input: &InputSpec, rng: &mut impl Rng) -> GeneratedInput {
    let partitions = input.partitions.max(1);
    let mut by_partition = vec![Vec::new(); partitions as usize];
    let mut expected = Multiset::default();
    // Per key: the total, and each bucket's values since it was last cleared.
    let mut keys: BTreeMap<u32, (i64, BTreeMap<u8, Vec<i64>>)> = BTreeMap::new();
    for index in 0..input.records {
        let key = rng.random_range(0..input.keys.max(1));
        let value = rng.random_range(-50i64..=100);
        let (total, buckets) = keys.entry(key).or_default();
        *total += value;
        let bucket = bucket_of(value);
        let values = buckets.entry(bucket).or_default();
        values.push(value);
        let result: BucketResult = (
            key,
            bucket,
            values.iter().sum(),
            values.len() as u32,
            *total,
        );
        *expected.entry(encode(&result)).or_default() += 1;
        if values.len() as u32 == BUCKET_SIZE {
            buckets.remove(&bucket);
        }
        by_partition[(key % partitions) as usize].push(record(encode(&(key, value)), index));
    }
    let final_state = keys
        .into_iter()
        .map(|(key, (total, buckets))| (key.to_string(), render_buckets(total, &buckets)))
        .collect();
    GeneratedInput {
        topics: vec![TopicInput {
            topic: "events",
            partitions: by_partition,
        }],
        expected,
        final_state,
    }
}

/// A key's final state as text: its total and the values in each bucket not cleared.
fn render_buckets(total: i64, buckets: &BTreeMap<u8, Vec<i64>>) -> String {
    let mut text = format!("total {total}");
    for (bucket, values) in buckets {
        let sum: i64 = values.iter().sum();
        text.push_str(&format!("; bucket {bucket}: sum {sum} of {values:?}"));
    }
    text
}

/// `processing-timers`' input (readings in random partitions, out of order, never late) and
/// reference: every id once.
pub(super) fn processing_timers(input: &InputSpec, rng: &mut impl Rng) -> GeneratedInput {
    let mut by_partition = vec![Vec::new(); input.partitions.max(1) as usize];
    let mut timeline = Timeline::new(by_partition.len());
    let mut expected = Multiset::default();
    for index in 0..input.records {
        let key = rng.random_range(0..input.keys.max(1));
        let id = index as u32;
        let partition = rng.random_range(0..by_partition.len());
        let time = timeline.next(index, partition, rng);
        *expected.entry(encode(&(key, id))).or_default() += 1;
        by_partition[partition].push(timed(encode(&(key, id)), time));
    }
    GeneratedInput {
        topics: vec![TopicInput {
            topic: "readings",
            partitions: by_partition,
        }],
        expected,
        final_state: FinalState::new(),
    }
}

/// Keeps a running total per key and, per bucket namespace, the bucket's sum and values.
#[derive(Clone)]
struct BucketSums {
    total: ValueState<i64>,
    sum: ValueState<i64>,
    values: ListState<i64>,
}

impl BucketSums {
    fn new() -> Self {
        BucketSums {
            total: ValueState::new("total"),
            sum: ValueState::new("bucket-sum"),
            values: ListState::new("bucket-values"),
        }
    }
}

impl KeyedProcessFunction for BucketSums {
    type Key = u32;
    type In = Event;
    type Out = BucketResult;

    fn process(
        &mut self,
        (key, value): Event,
        ctx: &mut KeyedContext<'_, u32, BucketResult>,
    ) -> Result<(), BoxError> {
        let total = self.total.get(ctx).unwrap_or(0) + value;
        self.total.set(ctx, total);
        let bucket = bucket_of(value);
        let (sum, count) = {
            let mut scoped = InNamespace::new(ctx, &bucket)?;
            let sum = self.sum.get(&mut scoped).unwrap_or(0) + value;
            self.values.add(&mut scoped, value);
            let count = self.values.get(&mut scoped).len() as u32;
            if count == BUCKET_SIZE {
                self.sum.clear(&mut scoped);
                self.values.clear(&mut scoped);
            } else {
                self.sum.set(&mut scoped, sum);
            }
            (sum, count)
        };
        ctx.emit((key, bucket, sum, count, total));
        Ok(())
    }
}

/// A pending id's timers: its processing-time one and its event-time one.
type Timers = (i64, i64);

/// Emits each id when its processing-time or its event-time timer fires, whichever first.
#[derive(Clone)]
struct EarlyOrOnTime {
    /// Each pending id's processing-time and event-time timers.
    pending: MapState<u32, Timers>,
}

impl KeyedProcessFunction for EarlyOrOnTime {
    type Key = u32;
    type In = Reading;
    type Out = Reading;

    fn process(
        &mut self,
        (_, id): Reading,
        ctx: &mut KeyedContext<'_, u32, Reading>,
    ) -> Result<(), BoxError> {
        let time = ctx.timestamp().ok_or("a reading without an event time")?.0;
        let early = ctx
            .current_processing_time()
            .0
            .saturating_add(PROCESSING_DELAY_MS);
        let on_time = time + EVENT_DELAY_MS;
        self.pending.insert(ctx, id, (early, on_time));
        ctx.register_processing_time_timer(Timestamp(early));
        ctx.register_event_time_timer(Timestamp(on_time));
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: Timestamp,
        ctx: &mut KeyedContext<'_, u32, Reading>,
    ) -> Result<(), BoxError> {
        let domain = ctx.timer_domain().ok_or("a timer without a clock")?;
        let at = |&(early, on_time): &Timers| match domain {
            TimeDomain::ProcessingTime => early,
            TimeDomain::EventTime => on_time,
        };
        let (due, rest): (Vec<(u32, Timers)>, Vec<_>) = self
            .pending
            .entries(ctx)
            .into_iter()
            .partition(|(_, timers)| at(timers) == timestamp.0);
        let key = *ctx.key();
        if due.is_empty() {
            ctx.emit((key, STRAY));
        }
        for &(id, (early, on_time)) in &due {
            self.pending.remove(ctx, &id);
            ctx.emit((key, id));
            // The other clock's timer, unless another pending id still waits on it.
            match domain {
                TimeDomain::ProcessingTime => {
                    if !rest.iter().any(|(_, (_, other))| *other == on_time) {
                        ctx.delete_event_time_timer(Timestamp(on_time));
                    }
                }
                TimeDomain::EventTime => {
                    if !rest.iter().any(|(_, (other, _))| *other == early) {
                        ctx.delete_processing_time_timer(Timestamp(early));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `bucket-sums`: the namespaced-state process function over events keyed by key.
pub(super) fn bucket_sums_job(
    env: &StreamEnv,
    io: &SimConnectors,
    parallelism: &dyn Fn(&str) -> u32,
) {
    let results = io
        .source(env, "source", "events", decode::<Event>)
        .set_parallelism(parallelism("source"))
        .key_by(|event: &Event| event.0)
        .process(BucketSums::new());
    let role = ("buckets", parallelism("buckets"));
    keyed_to_sink(io, results, role, encode::<BucketResult>);
}

/// `processing-timers`: the process function racing its two timers, over readings in event
/// time keyed by key.
pub(super) fn processing_timers_job(
    env: &StreamEnv,
    io: &SimConnectors,
    parallelism: &dyn Fn(&str) -> u32,
) {
    let results = env
        .from_source(
            "source",
            true,
            io.timed_reader("readings", decode::<Reading>, strategy()),
        )
        .set_parallelism(parallelism("source"))
        .key_by(|reading: &Reading| reading.0)
        .process(EarlyOrOnTime {
            pending: MapState::new("pending"),
        });
    let role = ("timers", parallelism("timers"));
    keyed_to_sink(io, results, role, encode::<Reading>);
}

/// One key's view of a restored store, to read its state through the handles.
struct Probe<'a> {
    key: u32,
    store: &'a mut KeyedStateStore<u32>,
}

impl KeyedStateAccess<u32> for Probe<'_> {
    fn key_and_store(&mut self) -> (&u32, &mut KeyedStateStore<u32>) {
        (&self.key, self.store)
    }
}

/// `bucket-sums`' state in a checkpoint: each key's total and buckets, read through the
/// namespaces from a store restored from each subtask's snapshot; any other table is reported.
fn bucket_state(
    CompletedCheckpoint {
        metadata,
        snapshots,
    }: &CompletedCheckpoint,
) -> Result<FinalState, String> {
    let function = BucketSums::new();
    let mut state = FinalState::new();
    for (position, layout) in metadata.layout.subtasks.iter().enumerate() {
        let Some(index) = layout.operators.iter().position(|uid| uid == "buckets") else {
            continue;
        };
        let operator = snapshots
            .get(&position)
            .and_then(|snapshot| snapshot.operators.get(index))
            .ok_or_else(|| format!("{} lacks subtask {position}", metadata.checkpoint))?;
        for table in operator.keyed.tables.keys() {
            if !["total", "bucket-sum", "bucket-values"].contains(&table.as_str()) {
                state.insert(format!("table {table}"), "left behind".to_owned());
            }
        }
        let mut store = KeyedStateStore::<u32>::new(metadata.layout.max_parallelism);
        store.restore(operator.keyed.clone());
        let totals: Vec<(u32, i64)> = store
            .values(&function.total)
            .ok_or("the state is not in memory")?
            .iter()
            .map(|(key, total)| (*key, *total))
            .collect();
        for (key, total) in totals {
            let mut buckets = BTreeMap::new();
            for bucket in 0..BUCKETS as u8 {
                let mut probe = Probe {
                    key,
                    store: &mut store,
                };
                let mut scoped =
                    InNamespace::new(&mut probe, &bucket).map_err(|error| error.to_string())?;
                let values = function.values.get(&mut scoped);
                let sum = function.sum.get(&mut scoped);
                if sum != (!values.is_empty()).then(|| values.iter().sum()) {
                    return Err(format!(
                        "key {key}, bucket {bucket}: sum {sum:?} of values {values:?}"
                    ));
                }
                if !values.is_empty() {
                    buckets.insert(bucket, values);
                }
            }
            state.insert(key.to_string(), render_buckets(total, &buckets));
        }
    }
    Ok(state)
}

/// The final state of the jobs of this module.
pub(super) fn final_state(
    kind: super::JobKind,
    checkpoint: &CompletedCheckpoint,
) -> Result<FinalState, String> {
    match kind {
        super::JobKind::BucketSums => bucket_state(checkpoint),
        super::JobKind::ProcessingTimers => leftover_state(checkpoint, &["timers"], &[]),
        _ => Err(format!("'{}' is not a job of this module", kind.name())),
    }
}

/// An output record as `(key, value)` text, for reports.
pub(super) fn render(kind: super::JobKind, record: &LogRecord) -> (String, String) {
    match kind {
        super::JobKind::BucketSums => {
            let (key, bucket, sum, count, total): BucketResult = decode(record);
            (
                key.to_string(),
                format!("bucket {bucket}: sum {sum} of {count}, total {total}"),
            )
        }
        super::JobKind::ProcessingTimers => {
            let (key, id): Reading = decode(record);
            let id = if id == STRAY {
                "a stray timer".to_owned()
            } else {
                format!("id {id}")
            };
            (key.to_string(), id)
        }
        _ => (String::new(), String::new()),
    }
}

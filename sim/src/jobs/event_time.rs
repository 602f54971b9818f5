//! The event-time jobs of the catalog: windows, timers, sessions and joins over input whose
//! event timestamps arrive out of order, with their input generators and reference models.
//!
//! Every job reads its topics with a watermark strategy that allows [`OUT_OF_ORDERNESS_MS`] of
//! out-of-orderness per partition, and its input is generated so that **no record is ever
//! late, and many are as late as can be**: record `i` of a topic has event time
//! `START_MS + i * STEP_MS` less a random delay of up to [`JITTER_MS`] (more than the
//! out-of-orderness), but never further than [`OUT_OF_ORDERNESS_MS`] behind the largest time
//! before it in its partition: where the delay would take it further, it sits **exactly on
//! that bound** ([`Timeline`]). The partition's watermark is one ms below the bound, so the
//! record is not late — and every watermark downstream, a minimum over partitions, is at most
//! that. A window or timer that fires one ms early misses such a record (the tumbling windows
//! are offset by [`TUMBLING_OFFSET_MS`] so that their last ms is even, as bound records are).
//! With no late record, what a window, a timer or a join emits depends on the input only, not
//! on how the run interleaved the partitions, nor on where it crashed and what it replayed:
//! the committed output of every run must equal the reference, computed directly from the
//! input (never with `rill-core`'s own window code). Timestamps are even and the session gap
//! is odd, so no two records are exactly a gap apart: whether a record touches a session
//! could otherwise depend on whether that session had already fired.
//!
//! - `window-aggregate`: `(key, value)` readings → key by key → a tumbling window
//!   ([`TUMBLING_MS`]) and a sliding window ([`SLIDING_MS`] every [`SLIDE_MS`], kept
//!   [`SLIDING_LATENESS_MS`] after it fires), each summing and counting per key and window →
//!   sink. Output `(kind, key, start, end, sum, count)` for every key and window that holds a
//!   record.
//! - `event-timers`: `(key, value)` readings → key by key → a keyed process function that
//!   counts each key's records per timestamp and registers an event-time timer at
//!   `timestamp + TIMER_DELAY_MS`; the timer emits `(key, timestamp, records at it, records of
//!   the key up to it)` from state → sink. Final state: each key's record count.
//! - `session-windows`: `(key, value)` readings, each key in one partition, with keys dense
//!   enough that records bridge sessions read before them → key by key → session windows
//!   (gap [`SESSION_GAP_MS`]) summing and counting → sink. Output per key and merged session.
//! - `join`: two topics of `(key, id)` → key by key → an interval join (`right` within [`INTERVAL_LOWER_MS`, `INTERVAL_UPPER_MS`] of
//!   `left`) and a tumbling window join ([`JOIN_WINDOW_MS`]) → sink. Output `(kind, key, left
//!   id, right id)` for every matching pair.
//!
//! No record is late, so none goes to the windows' and joins' late-data side outputs, which
//! are never read: a late record would show as a missing result.
//!
//! The window and join jobs expect no keyed state at all in their final checkpoint (every
//! window fired and was cleaned up, every waiting join record expired, no timer pending);
//! the timer job expects each key's count and nothing else.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rill_api::{KeyedStream, StreamEnv};
use rill_core::BoxError;
use rill_core::coordinator::CompletedCheckpoint;
use rill_core::element::Timestamp;
use rill_core::keyed::{KeyedContext, KeyedProcessFunction};
use rill_core::state::{AggregateFunction, MapState, ValueState};
use rill_core::time::WatermarkStrategy;
use rill_core::window::{ProcessWindowFunction, WindowAssigner, WindowContext};

use super::{
    FinalState, GeneratedInput, InputSpec, Multiset, TopicInput, decode, encode, keyed_to_sink,
    sink_both,
};
use crate::connectors::SimConnectors;
use crate::log::LogRecord;

/// The out-of-orderness the sources' watermark strategy allows, per partition.
pub const OUT_OF_ORDERNESS_MS: i64 = 100;
/// How far behind its place in the log a record's event time may be drawn: more than the
/// out-of-orderness, so that many records are held exactly on it (see [`Timeline`]).
pub const JITTER_MS: i64 = 120;
/// Event time between consecutive records of a topic (before the jitter); even, as every
/// timestamp is.
pub const STEP_MS: i64 = 2;
/// The event time of the first record (before the jitter).
pub const START_MS: i64 = 1_000;
/// The tumbling windows of `window-aggregate`.
pub const TUMBLING_MS: i64 = 20;
/// ... offset by 1 ms: `[20k + 1, 20k + 21)`, whose last ms is even, so that a record on the
/// out-of-orderness bound can be a window's last and arrive when the watermark is one ms short
/// of firing it.
pub const TUMBLING_OFFSET_MS: i64 = 1;
/// The sliding windows of `window-aggregate`: their length ...
pub const SLIDING_MS: i64 = 60;
/// ... the distance between their starts ...
pub const SLIDE_MS: i64 = 20;
/// ... and how long they are kept after they fired. No record is late, so none fires again:
/// this only keeps fired windows in the checkpoints, with their cleanup timers.
pub const SLIDING_LATENESS_MS: i64 = 40;
/// The session gap of `session-windows`: odd, while timestamps are even.
pub const SESSION_GAP_MS: i64 = 31;
/// How long after a record's time the `event-timers` timer fires.
pub const TIMER_DELAY_MS: i64 = 150;
/// The interval join pairs `right` records from this far before a `left` record ...
pub const INTERVAL_LOWER_MS: i64 = -20;
/// ... to this far after it.
pub const INTERVAL_UPPER_MS: i64 = 30;
/// The tumbling windows of the window join.
pub const JOIN_WINDOW_MS: i64 = 40;

const _: () = assert!(
    JITTER_MS > OUT_OF_ORDERNESS_MS,
    "records would never sit on the bound"
);
const _: () = assert!(STEP_MS % 2 == 0 && START_MS % 2 == 0 && SESSION_GAP_MS % 2 == 1);

/// What each window result says: which windows, the key, `[start, end)`, sum and count.
pub type WindowResult = (u8, u32, i64, i64, i64, u32);

/// What each join result says: which join, the key, and the left and right ids.
pub type JoinResult = (u8, u32, u32, u32);

/// What an `event-timers` timer emits: the key, the timestamp it was registered for, the key's
/// records at that time, and the key's records up to it.
pub type TimerResult = (u32, i64, u32, u64);

const TUMBLING: u8 = 0;
const SLIDING: u8 = 1;
const SESSION: u8 = 2;
const INTERVAL_JOIN: u8 = 0;
const WINDOW_JOIN: u8 = 1;

/// A reading: `(key, value)`.
type Reading = (u32, i64);
/// A record of either join input: `(key, id)`.
type Side = (u32, u32);

/// The watermark strategy every event-time source runs.
pub fn strategy() -> WatermarkStrategy {
    WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(
        OUT_OF_ORDERNESS_MS.unsigned_abs(),
    ))
}

/// The event times of one topic's records, partition by partition: the `index`-th lies at its
/// place in time less an even random delay of up to [`JITTER_MS`], but never more than
/// [`OUT_OF_ORDERNESS_MS`] behind the largest time before it in its partition — where the
/// delay would take it further, exactly that far. So no record is late, and many are on the
/// bound: one ms above their partition's watermark.
pub(super) struct Timeline {
    /// The largest time so far, by partition.
    largest: Vec<i64>,
}

impl Timeline {
    pub(super) fn new(partitions: usize) -> Self {
        Timeline {
            largest: vec![i64::MIN; partitions],
        }
    }

    /// The time of record `index` of the topic, which goes to `partition`.
    pub(super) fn next(&mut self, index: usize, partition: usize, rng: &mut impl Rng) -> i64 {
        let drawn = START_MS + index as i64 * STEP_MS - 2 * rng.random_range(0..=JITTER_MS / 2);
        let largest = &mut self.largest[partition];
        let time = drawn.max(largest.saturating_sub(OUT_OF_ORDERNESS_MS));
        *largest = (*largest).max(time);
        time
    }
}

pub(super) fn timed(value: Vec<u8>, timestamp: i64) -> LogRecord {
    debug_assert_eq!(timestamp % 2, 0, "timestamps are even");
    LogRecord {
        value: value.into(),
        timestamp,
    }
}

/// The start of the window of length `size` (starting at multiples of it) holding `time`.
fn floor_to(time: i64, size: i64) -> i64 {
    time - time.rem_euclid(size)
}

/// The reference's windows: `(kind, key, start, end)` → `(sum, count)`.
type WindowSums = BTreeMap<(u8, u32, i64, i64), (i64, u32)>;

fn add_reading(sums: &mut WindowSums, window: (u8, u32, i64, i64), value: i64) {
    let (sum, count) = sums.entry(window).or_default();
    *sum += value;
    *count += 1;
}

fn window_results(sums: WindowSums) -> Multiset {
    let mut expected = Multiset::default();
    for ((kind, key, start, end), (sum, count)) in sums {
        *expected
            .entry(encode(&(kind, key, start, end, sum, count)))
            .or_default() += 1;
    }
    expected
}

/// `window-aggregate`: readings in random partitions; every tumbling and sliding window of
/// each key, summed.
pub(super) fn window_aggregate(input: &InputSpec, rng: &mut impl Rng) -> GeneratedInput {
    let mut by_partition = vec![Vec::new(); input.partitions.max(1) as usize];
    let mut timeline = Timeline::new(by_partition.len());
    let mut sums = WindowSums::new();
    for index in 0..input.records {
        let key = rng.random_range(0..input.keys.max(1));
        let value = rng.random_range(-50i64..=100);
        let partition = rng.random_range(0..by_partition.len());
        let time = timeline.next(index, partition, rng);
        let start = floor_to(time - TUMBLING_OFFSET_MS, TUMBLING_MS) + TUMBLING_OFFSET_MS;
        add_reading(
            &mut sums,
            (TUMBLING, key, start, start + TUMBLING_MS),
            value,
        );
        // Every sliding window holding `time`: those starting after `time - SLIDING_MS`.
        let mut start = floor_to(time, SLIDE_MS);
        while start > time - SLIDING_MS {
            add_reading(&mut sums, (SLIDING, key, start, start + SLIDING_MS), value);
            start -= SLIDE_MS;
        }
        by_partition[partition].push(timed(encode(&(key, value)), time));
    }
    GeneratedInput {
        topics: vec![TopicInput {
            topic: "readings",
            partitions: by_partition,
        }],
        expected: window_results(sums),
        final_state: FinalState::new(),
    }
}

/// `session-windows`: readings with each key in one partition (so a key's records arrive in
/// log order, and one that fills a gap arrives after the sessions it bridges); each key's
/// sessions merged.
pub(super) fn session_windows(input: &InputSpec, rng: &mut impl Rng) -> GeneratedInput {
    let partitions = input.partitions.max(1);
    let mut by_partition = vec![Vec::new(); partitions as usize];
    let mut timeline = Timeline::new(by_partition.len());
    let mut by_key: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
    for index in 0..input.records {
        let key = rng.random_range(0..input.keys.max(1));
        let value = rng.random_range(-50i64..=100);
        let partition = (key % partitions) as usize;
        let time = timeline.next(index, partition, rng);
        by_key.entry(key).or_default().push((time, value));
        by_partition[partition].push(timed(encode(&(key, value)), time));
    }
    let mut sums = WindowSums::new();
    for (key, mut readings) in by_key {
        readings.sort_unstable();
        let mut session: Option<(i64, i64, i64, u32)> = None;
        for (time, value) in readings {
            session = match session {
                // Closer than the gap to the session's last record: the same session.
                Some((start, last, sum, count)) if time - last < SESSION_GAP_MS => {
                    Some((start, time, sum + value, count + 1))
                }
                previous => {
                    if let Some((start, last, sum, count)) = previous {
                        sums.insert((SESSION, key, start, last + SESSION_GAP_MS), (sum, count));
                    }
                    Some((time, time, value, 1))
                }
            };
        }
        if let Some((start, last, sum, count)) = session {
            sums.insert((SESSION, key, start, last + SESSION_GAP_MS), (sum, count));
        }
    }
    GeneratedInput {
        topics: vec![TopicInput {
            topic: "readings",
            partitions: by_partition,
        }],
        expected: window_results(sums),
        final_state: FinalState::new(),
    }
}

/// `event-timers`: readings in random partitions; one result per key and distinct timestamp.
pub(super) fn event_timers(input: &InputSpec, rng: &mut impl Rng) -> GeneratedInput {
    let mut by_partition = vec![Vec::new(); input.partitions.max(1) as usize];
    let mut timeline = Timeline::new(by_partition.len());
    let mut by_key: BTreeMap<u32, BTreeMap<i64, u32>> = BTreeMap::new();
    for index in 0..input.records {
        let key = rng.random_range(0..input.keys.max(1));
        let value = rng.random_range(-50i64..=100);
        let partition = rng.random_range(0..by_partition.len());
        let time = timeline.next(index, partition, rng);
        *by_key.entry(key).or_default().entry(time).or_default() += 1;
        by_partition[partition].push(timed(encode(&(key, value)), time));
    }
    let mut expected = Multiset::default();
    let mut final_state = FinalState::new();
    for (key, times) in by_key {
        let mut so_far = 0u64;
        for (time, count) in times {
            so_far += u64::from(count);
            let result: TimerResult = (key, time, count, so_far);
            *expected.entry(encode(&result)).or_default() += 1;
        }
        final_state.insert(key.to_string(), so_far.to_string());
    }
    GeneratedInput {
        topics: vec![TopicInput {
            topic: "readings",
            partitions: by_partition,
        }],
        expected,
        final_state,
    }
}

/// `join`: half the records on each side, on the same timeline; every pair within the
/// interval, and every pair in the same window.
pub(super) fn join(input: &InputSpec, rng: &mut impl Rng) -> GeneratedInput {
    let per_side = (input.records / 2).max(1);
    let mut topics = Vec::new();
    let mut sides: Vec<BTreeMap<u32, Vec<(i64, u32)>>> = Vec::new();
    for topic in ["left", "right"] {
        let mut by_partition = vec![Vec::new(); input.partitions.max(1) as usize];
        let mut timeline = Timeline::new(by_partition.len());
        let mut by_key: BTreeMap<u32, Vec<(i64, u32)>> = BTreeMap::new();
        for index in 0..per_side {
            let key = rng.random_range(0..input.keys.max(1));
            let id = index as u32;
            let partition = rng.random_range(0..by_partition.len());
            let time = timeline.next(index, partition, rng);
            by_key.entry(key).or_default().push((time, id));
            by_partition[partition].push(timed(encode(&(key, id)), time));
        }
        topics.push(TopicInput {
            topic,
            partitions: by_partition,
        });
        sides.push(by_key);
    }
    let mut expected = Multiset::default();
    let (lefts, rights) = (&sides[0], &sides[1]);
    for (key, left) in lefts {
        let Some(right) = rights.get(key) else {
            continue;
        };
        for &(a_time, a) in left {
            for &(b_time, b) in right {
                if (INTERVAL_LOWER_MS..=INTERVAL_UPPER_MS).contains(&(b_time - a_time)) {
                    let pair: JoinResult = (INTERVAL_JOIN, *key, a, b);
                    *expected.entry(encode(&pair)).or_default() += 1;
                }
                if floor_to(a_time, JOIN_WINDOW_MS) == floor_to(b_time, JOIN_WINDOW_MS) {
                    let pair: JoinResult = (WINDOW_JOIN, *key, a, b);
                    *expected.entry(encode(&pair)).or_default() += 1;
                }
            }
        }
    }
    GeneratedInput {
        topics,
        expected,
        final_state: FinalState::new(),
    }
}

/// Sums and counts readings: the accumulator of every window job.
struct SumCount;

impl AggregateFunction for SumCount {
    type In = Reading;
    type Acc = (i64, u32);
    type Out = (i64, u32);

    fn create_accumulator(&self) -> (i64, u32) {
        (0, 0)
    }

    fn add(&self, (_, value): Reading, (sum, count): &mut (i64, u32)) {
        *sum += value;
        *count += 1;
    }

    fn result(&self, accumulator: &(i64, u32)) -> (i64, u32) {
        *accumulator
    }

    fn merge(&self, a: (i64, u32), b: (i64, u32)) -> (i64, u32) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// Turns a window's sum and count into a [`WindowResult`] naming the window.
#[derive(Clone)]
struct NameWindow {
    kind: u8,
}

impl ProcessWindowFunction for NameWindow {
    type Key = u32;
    type In = (i64, u32);
    type Out = WindowResult;

    fn process(
        &mut self,
        ctx: &WindowContext<'_, u32>,
        elements: &[(i64, u32)],
        out: &mut Vec<WindowResult>,
    ) -> Result<(), BoxError> {
        let window = ctx.window();
        for &(sum, count) in elements {
            out.push((
                self.kind,
                *ctx.key(),
                window.start.0,
                window.end.0,
                sum,
                count,
            ));
        }
        Ok(())
    }
}

/// Counts each key's records per timestamp; a timer at `timestamp + TIMER_DELAY_MS` emits the
/// count, and the key's running total, from state.
#[derive(Clone)]
struct CountAtTimer {
    at: MapState<i64, u32>,
    fired: ValueState<u64>,
}

/// The value state in which `event-timers` keeps each key's records counted by fired timers.
const FIRED: &str = "fired";

impl CountAtTimer {
    fn new() -> Self {
        CountAtTimer {
            at: MapState::new("at"),
            fired: ValueState::new(FIRED),
        }
    }
}

impl KeyedProcessFunction for CountAtTimer {
    type Key = u32;
    type In = Reading;
    type Out = TimerResult;

    fn process(
        &mut self,
        _reading: Reading,
        ctx: &mut KeyedContext<'_, u32, TimerResult>,
    ) -> Result<(), BoxError> {
        let time = ctx.timestamp().ok_or("a reading without an event time")?.0;
        let count = self.at.get(ctx, &time).unwrap_or(0) + 1;
        self.at.insert(ctx, time, count);
        ctx.register_event_time_timer(Timestamp(time + TIMER_DELAY_MS));
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: Timestamp,
        ctx: &mut KeyedContext<'_, u32, TimerResult>,
    ) -> Result<(), BoxError> {
        let time = timestamp.0 - TIMER_DELAY_MS;
        let count = self
            .at
            .remove(ctx, &time)
            .ok_or_else(|| format!("a timer at {} with no record at {time}", timestamp.0))?;
        let fired = self.fired.get(ctx).unwrap_or(0) + u64::from(count);
        self.fired.set(ctx, fired);
        let key = *ctx.key();
        ctx.emit((key, time, count, fired));
        Ok(())
    }
}

/// `(key, value)` readings with watermarks, keyed by key.
fn readings(
    env: &StreamEnv,
    io: &SimConnectors,
    parallelism: &dyn Fn(&str) -> u32,
) -> KeyedStream<Reading, u32> {
    env.from_source(
        "source",
        true,
        io.timed_reader("readings", decode::<Reading>, strategy()),
    )
    .set_parallelism(parallelism("source"))
    .key_by(|reading: &Reading| reading.0)
}

/// `window-aggregate`: tumbling and sliding windows of the same readings.
pub(super) fn window_aggregate_job(
    env: &StreamEnv,
    io: &SimConnectors,
    parallelism: &dyn Fn(&str) -> u32,
) {
    let windows = parallelism("window");
    let readings = readings(env, io, parallelism);
    let tumbling = readings
        .clone()
        .window(WindowAssigner::Tumbling {
            size: TUMBLING_MS,
            offset: TUMBLING_OFFSET_MS,
        })
        .aggregate_process(SumCount, NameWindow { kind: TUMBLING })
        .name("tumbling")
        .uid("tumbling")
        .set_parallelism(windows);
    let sliding = readings
        .window(WindowAssigner::Sliding {
            size: SLIDING_MS,
            slide: SLIDE_MS,
            offset: 0,
        })
        .allowed_lateness(Duration::from_millis(SLIDING_LATENESS_MS.unsigned_abs()))
        .aggregate_process(SumCount, NameWindow { kind: SLIDING })
        .name("sliding")
        .uid("sliding")
        .set_parallelism(windows);
    sink_both(io, (tumbling, sliding), windows, encode::<WindowResult>);
}

/// `session-windows`: session windows of the readings.
pub(super) fn session_windows_job(
    env: &StreamEnv,
    io: &SimConnectors,
    parallelism: &dyn Fn(&str) -> u32,
) {
    let results = readings(env, io, parallelism)
        .window(WindowAssigner::Session {
            gap: SESSION_GAP_MS,
        })
        .aggregate_process(SumCount, NameWindow { kind: SESSION });
    let role = ("sessions", parallelism("sessions"));
    keyed_to_sink(io, results, role, encode::<WindowResult>);
}

/// `event-timers`: a keyed process function's event-time timers over the readings.
pub(super) fn event_timers_job(
    env: &StreamEnv,
    io: &SimConnectors,
    parallelism: &dyn Fn(&str) -> u32,
) {
    let results = readings(env, io, parallelism).process(CountAtTimer::new());
    let role = ("timers", parallelism("timers"));
    keyed_to_sink(io, results, role, encode::<TimerResult>);
}

/// `join`: an interval join and a window join of the same two topics.
pub(super) fn join_job(env: &StreamEnv, io: &SimConnectors, parallelism: &dyn Fn(&str) -> u32) {
    let side = |topic: &str| {
        env.from_source(
            topic,
            true,
            io.timed_reader(topic, decode::<Side>, strategy()),
        )
        .set_parallelism(parallelism("source"))
        .key_by(|side: &Side| side.0)
    };
    let (left, right) = (side("left"), side("right"));
    let joins = parallelism("join");
    let interval = left
        .clone()
        .interval_join(
            right.clone(),
            INTERVAL_LOWER_MS,
            INTERVAL_UPPER_MS,
            |a: &Side, b: &Side| -> JoinResult { (INTERVAL_JOIN, a.0, a.1, b.1) },
        )
        .name("interval-join")
        .uid("interval-join")
        .set_parallelism(joins);
    let window = left
        .window_join(
            right,
            WindowAssigner::Tumbling {
                size: JOIN_WINDOW_MS,
                offset: 0,
            },
            |a: &Side, b: &Side| -> JoinResult { (WINDOW_JOIN, a.0, a.1, b.1) },
        )
        .name("window-join")
        .uid("window-join")
        .set_parallelism(joins);
    sink_both(io, (interval, window), joins, encode::<JoinResult>);
}

/// The keyed state left in the operators `uids` in a checkpoint: for each state table that
/// still holds something, how many key groups it has. A job that ended cleanly leaves none.
pub(super) fn leftover_state(
    CompletedCheckpoint {
        metadata,
        snapshots,
    }: &CompletedCheckpoint,
    uids: &[&str],
    skip: &[&str],
) -> Result<FinalState, String> {
    let mut leftover: BTreeMap<String, usize> = BTreeMap::new();
    for (position, layout) in metadata.layout.subtasks.iter().enumerate() {
        for (index, uid) in layout.operators.iter().enumerate() {
            if !uids.contains(&uid.as_str()) {
                continue;
            }
            let operator = snapshots
                .get(&position)
                .and_then(|snapshot| snapshot.operators.get(index))
                .ok_or_else(|| {
                    format!(
                        "{} lacks the state of '{uid}' in subtask {position}",
                        metadata.checkpoint
                    )
                })?;
            for (table, groups) in &operator.keyed.tables {
                if !groups.is_empty() && !skip.contains(&table.as_str()) {
                    *leftover.entry(format!("{uid}: {table}")).or_default() += groups.len();
                }
            }
        }
    }
    Ok(leftover
        .into_iter()
        .map(|(table, groups)| (table, format!("left in {groups} key groups")))
        .collect())
}

/// The final state of an event-time job: what its keyed operators left behind (nothing,
/// unless timers kept a count per key).
pub(super) fn final_state(
    kind: super::JobKind,
    checkpoint: &CompletedCheckpoint,
) -> Result<FinalState, String> {
    use super::JobKind;
    match kind {
        JobKind::WindowAggregate => leftover_state(checkpoint, &["tumbling", "sliding"], &[]),
        JobKind::SessionWindows => leftover_state(checkpoint, &["sessions"], &[]),
        JobKind::Join => leftover_state(checkpoint, &["interval-join", "window-join"], &[]),
        JobKind::EventTimers => {
            let mut state =
                super::value_state::<u32, u64>(checkpoint, "timers", FIRED, |key, fired| {
                    (key.to_string(), fired.to_string())
                })?;
            state.extend(leftover_state(checkpoint, &["timers"], &[FIRED])?);
            Ok(state)
        }
        JobKind::Wordcount
        | JobKind::RunningSum
        | JobKind::UnionBroadcast
        | JobKind::LogPipeline
        | JobKind::BucketSums
        | JobKind::ProcessingTimers => Err(format!("'{}' is not an event-time job", kind.name())),
    }
}

/// An output record of an event-time job as `(key, value)` text, for reports.
pub(super) fn render(kind: super::JobKind, record: &LogRecord) -> (String, String) {
    use super::JobKind;
    match kind {
        JobKind::WindowAggregate | JobKind::SessionWindows => {
            let (kind, key, start, end, sum, count): WindowResult = decode(record);
            let name = ["tumbling", "sliding", "session"]
                .get(usize::from(kind))
                .copied()
                .unwrap_or("unknown");
            (
                key.to_string(),
                format!("{name} [{start}, {end}): sum {sum}, count {count}"),
            )
        }
        JobKind::EventTimers => {
            let (key, time, count, so_far): TimerResult = decode(record);
            (
                key.to_string(),
                format!("timer for {time}: {count} at it, {so_far} up to it"),
            )
        }
        JobKind::Join => {
            let (kind, key, left, right): JoinResult = decode(record);
            let name = if kind == INTERVAL_JOIN {
                "interval"
            } else {
                "window"
            };
            (
                key.to_string(),
                format!("{name} join of left {left} and right {right}"),
            )
        }
        JobKind::Wordcount
        | JobKind::RunningSum
        | JobKind::UnionBroadcast
        | JobKind::LogPipeline
        | JobKind::BucketSums
        | JobKind::ProcessingTimers => (String::new(), String::new()),
    }
}

#[cfg(test)]
mod tests;

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
//! - `join`: two topics of `(key, id)` → each tagged as its side of an [`Either`] → key by
//!   key → an interval join (`right` within [`INTERVAL_LOWER_MS`, `INTERVAL_UPPER_MS`] of
//!   `left`) and a tumbling window join ([`JOIN_WINDOW_MS`]) → sink. Output `(kind, key, left
//!   id, right id)` for every matching pair.
//!
//! The window and join jobs expect no keyed state at all in their final checkpoint (every
//! window fired and was cleaned up, every waiting join record expired, no timer pending);
//! the timer job expects each key's count and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rill_core::BoxError;
use rill_core::coordinator::CompletedCheckpoint;
use rill_core::element::Timestamp;
use rill_core::graph::OperatorId;
use rill_core::keyed::{KeySelector, KeyedContext, KeyedProcess, KeyedProcessFunction};
use rill_core::operator::{Map, OneInputOperator, OperatorInfo};
use rill_core::side_output::{OutputTag, SelectMain, Tagged};
use rill_core::state::{AggregateFunction, KeyedStateStore, MapState, ValueState};
use rill_core::time::WatermarkStrategy;
use rill_core::two_input::{CoProcess, Either, IntervalJoin};
use rill_core::window::{
    AggregateProcessWindow, ProcessWindowFunction, WindowAssigner, WindowContext, WindowFunction,
    WindowJoin, WindowOperator,
};

use super::{
    FinalState, GeneratedInput, GraphBuilder, InputSpec, Multiset, TopicInput, decode, encode,
};
use crate::log::{LogRecord, SimLog};

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

/// The side output late records would go to: none do, so it is never read, and a late
/// record would show as a missing result.
const LATE: &str = "late";

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
/// A join input's record, tagged with its side.
type Joined = Either<Side, Side>;

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

/// Which windows a window operator keeps, and for how long after their end.
#[derive(Clone, Copy)]
struct Windowing {
    assigner: WindowAssigner,
    allowed_lateness_ms: i64,
}

impl Windowing {
    /// Windows dropped as soon as they fire.
    fn on_time(assigner: WindowAssigner) -> Self {
        Windowing {
            assigner,
            allowed_lateness_ms: 0,
        }
    }
}

fn reading_key() -> KeySelector<Reading, u32> {
    Arc::new(|reading: &Reading| reading.0)
}

fn joined_key() -> KeySelector<Joined, u32> {
    Arc::new(|joined: &Joined| match joined {
        Either::Left((key, _)) | Either::Right((key, _)) => *key,
    })
}

impl GraphBuilder {
    /// A window operator `name`, fed from `from` by key, and the selector of its main output
    /// chained behind it; returns the selector. The scenario's defect is planted in the window
    /// operator.
    fn window<W>(
        &mut self,
        name: &str,
        parallelism: u32,
        from: &[OperatorId],
        key_of: KeySelector<W::In, u32>,
        make: impl Fn() -> W + Send + Sync + 'static,
        windowing: Windowing,
    ) -> OperatorId
    where
        W: WindowFunction<Key = u32>,
    {
        let (operator_key, defect) = (key_of.clone(), self.defect);
        let build = move |info: &OperatorInfo| {
            let mut operator = WindowOperator::new(
                make(),
                windowing.assigner,
                windowing.allowed_lateness_ms,
                OutputTag::new(LATE),
                operator_key.clone(),
                KeyedStateStore::new(info.max_parallelism),
            );
            if let Some(defect) = defect {
                operator.plant_defect(defect);
            }
            operator
        };
        self.keyed_with_timers((name, parallelism), from, key_of, build)
    }

    /// A keyed process function `name`, fed from `from` by key, and the selector of its main
    /// output chained behind it; returns the selector. The scenario's defect is planted in the
    /// operator.
    pub(super) fn keyed_process<P>(
        &mut self,
        name: &str,
        parallelism: u32,
        from: &[OperatorId],
        key_of: KeySelector<P::In, u32>,
        make: impl Fn() -> P + Send + Sync + 'static,
    ) -> OperatorId
    where
        P: KeyedProcessFunction<Key = u32>,
    {
        let (operator_key, defect) = (key_of.clone(), self.defect);
        let build = move |info: &OperatorInfo| {
            let mut operator = KeyedProcess::new(
                make(),
                operator_key.clone(),
                KeyedStateStore::new(info.max_parallelism),
            );
            if let Some(defect) = defect {
                operator.plant_defect(defect);
            }
            operator
        };
        self.keyed_with_timers((name, parallelism), from, key_of, build)
    }

    /// A keyed operator with timers and side outputs `name`, fed from `from` by key, and the
    /// selector of its main output chained behind it; returns the selector.
    fn keyed_with_timers<O, T>(
        &mut self,
        (name, parallelism): (&str, u32),
        from: &[OperatorId],
        key_of: KeySelector<O::In, u32>,
        build: impl Fn(&OperatorInfo) -> O + Send + Sync + 'static,
    ) -> OperatorId
    where
        O: OneInputOperator<Out = Tagged<T>>,
        T: rill_core::Data,
    {
        let operator = self.operator(name, parallelism, build);
        for &from in from {
            self.key_by(from, operator, key_of.clone());
        }
        self.select_main::<T>(operator, name, parallelism)
    }

    /// The main output of the tagged operator `tagged`, chained behind it.
    fn select_main<T: rill_core::Data>(
        &mut self,
        tagged: OperatorId,
        name: &str,
        parallelism: u32,
    ) -> OperatorId {
        let main = self.operator(&format!("{name} (main output)"), parallelism, |_| {
            SelectMain::<T>::default()
        });
        self.forward(tagged, main);
        main
    }

    /// A source of `(key, value)` readings with watermarks.
    fn readings(&mut self, parallelism: u32, log: &SimLog) -> OperatorId {
        self.timed_source(
            "source",
            parallelism,
            log,
            "readings",
            decode::<Reading>,
            strategy(),
        )
    }
}

/// `window-aggregate`'s graph.
pub(super) fn window_aggregate_graph(
    job: &mut GraphBuilder,
    log: &SimLog,
    parallelism: &dyn Fn(&str) -> u32,
) {
    let source = job.readings(parallelism("source"), log);
    let windows = parallelism("window");
    let sum_count = Arc::new(SumCount);
    let tumbling = {
        let sum_count = sum_count.clone();
        job.window(
            "tumbling",
            windows,
            &[source],
            reading_key(),
            move || AggregateProcessWindow::new(sum_count.clone(), NameWindow { kind: TUMBLING }),
            Windowing::on_time(WindowAssigner::Tumbling {
                size: TUMBLING_MS,
                offset: TUMBLING_OFFSET_MS,
            }),
        )
    };
    let sliding = job.window(
        "sliding",
        windows,
        &[source],
        reading_key(),
        move || AggregateProcessWindow::new(sum_count.clone(), NameWindow { kind: SLIDING }),
        Windowing {
            assigner: WindowAssigner::Sliding {
                size: SLIDING_MS,
                slide: SLIDE_MS,
                offset: 0,
            },
            allowed_lateness_ms: SLIDING_LATENESS_MS,
        },
    );
    let sink = job.sink("sink", windows, log, |v: &WindowResult| encode(v));
    job.rebalance::<WindowResult>(tumbling, sink);
    job.rebalance::<WindowResult>(sliding, sink);
}

/// `session-windows`' graph.
pub(super) fn session_windows_graph(
    job: &mut GraphBuilder,
    log: &SimLog,
    parallelism: &dyn Fn(&str) -> u32,
) {
    let source = job.readings(parallelism("source"), log);
    let sessions = parallelism("sessions");
    let sum_count = Arc::new(SumCount);
    let main = job.window(
        "sessions",
        sessions,
        &[source],
        reading_key(),
        move || AggregateProcessWindow::new(sum_count.clone(), NameWindow { kind: SESSION }),
        Windowing::on_time(WindowAssigner::Session {
            gap: SESSION_GAP_MS,
        }),
    );
    let sink = job.sink("sink", sessions, log, |v: &WindowResult| encode(v));
    job.forward(main, sink);
}

/// `event-timers`' graph.
pub(super) fn event_timers_graph(
    job: &mut GraphBuilder,
    log: &SimLog,
    parallelism: &dyn Fn(&str) -> u32,
) {
    let source = job.readings(parallelism("source"), log);
    let timers = parallelism("timers");
    let main = job.keyed_process("timers", timers, &[source], reading_key(), || {
        CountAtTimer::new()
    });
    let sink = job.sink("sink", timers, log, |v: &TimerResult| encode(v));
    job.forward(main, sink);
}

/// `join`'s graph.
pub(super) fn join_graph(job: &mut GraphBuilder, log: &SimLog, parallelism: &dyn Fn(&str) -> u32) {
    let sources = parallelism("source");
    let mut tagged = Vec::new();
    for (topic, left) in [("left", true), ("right", false)] {
        let source = job.timed_source(topic, sources, log, topic, decode::<Side>, strategy());
        let tag = job.operator(&format!("{topic} as either"), sources, move |_| {
            Map::new(Arc::new(move |side: Side| -> Joined {
                if left {
                    Either::Left(side)
                } else {
                    Either::Right(side)
                }
            }))
        });
        job.forward(source, tag);
        tagged.push(tag);
    }
    let joins = parallelism("join");
    let interval = job.keyed_process("interval-join", joins, &tagged, joined_key(), || {
        CoProcess(IntervalJoin::new(
            INTERVAL_LOWER_MS,
            INTERVAL_UPPER_MS,
            Arc::new(|a: &Side, b: &Side| -> JoinResult { (INTERVAL_JOIN, a.0, a.1, b.1) }),
            OutputTag::new(LATE),
        ))
    });
    let window = job.window(
        "window-join",
        joins,
        &tagged,
        joined_key(),
        || {
            WindowJoin::new(Arc::new(|a: &Side, b: &Side| -> JoinResult {
                (WINDOW_JOIN, a.0, a.1, b.1)
            }))
        },
        Windowing::on_time(WindowAssigner::Tumbling {
            size: JOIN_WINDOW_MS,
            offset: 0,
        }),
    );
    let sink = job.sink("sink", joins, log, |v: &JoinResult| encode(v));
    job.rebalance::<JoinResult>(interval, sink);
    job.rebalance::<JoinResult>(window, sink);
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
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rill_core::checkpoint::CheckpointId;
    use rill_core::operator::OperatorSnapshot;

    use super::*;

    fn spec(records: usize, partitions: u32, keys: u32) -> InputSpec {
        InputSpec {
            records,
            partitions,
            keys,
            arrival_ms: 0,
        }
    }

    fn times(input: &GeneratedInput) -> Vec<Vec<i64>> {
        input
            .topics
            .iter()
            .flat_map(|topic| &topic.partitions)
            .map(|records| records.iter().map(|r| r.timestamp).collect())
            .collect()
    }

    #[test]
    fn no_record_is_late_in_its_partition_yet_many_sit_on_the_bound() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let input = window_aggregate(&spec(2_000, 3, 20), &mut rng);
        let (mut out_of_order, mut on_the_bound) = (0, 0);
        for partition in times(&input) {
            let mut largest = i64::MIN;
            for time in partition {
                // The partition's watermark is `largest - OUT_OF_ORDERNESS_MS - 1`.
                assert!(time > largest.saturating_sub(OUT_OF_ORDERNESS_MS + 1));
                out_of_order += usize::from(time < largest);
                on_the_bound += usize::from(time == largest.saturating_sub(OUT_OF_ORDERNESS_MS));
                largest = largest.max(time);
            }
        }
        assert!(out_of_order > 500, "{out_of_order} records out of order");
        assert!(
            on_the_bound >= 20,
            "{on_the_bound} records exactly on the out-of-orderness bound"
        );
    }

    #[test]
    fn the_window_reference_counts_each_record_once_per_window_it_is_in() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let input = window_aggregate(&spec(500, 2, 10), &mut rng);
        let mut counted = [0u32; 2];
        for bytes in input.expected.keys() {
            let record = timed(bytes.clone(), 0);
            let (kind, _, start, end, _, count): WindowResult = decode(&record);
            let size = [TUMBLING_MS, SLIDING_MS][usize::from(kind)];
            let offset = [TUMBLING_OFFSET_MS, 0][usize::from(kind)];
            assert_eq!(
                (end - start, (start - offset).rem_euclid(SLIDE_MS)),
                (size, 0)
            );
            counted[usize::from(kind)] += count;
        }
        let per_record = (SLIDING_MS / SLIDE_MS) as u32;
        assert_eq!(counted, [500, 500 * per_record]);
    }

    /// Replays each key's records in log order through a model of session merging, and counts
    /// the records that bridge two sessions or more already open.
    fn bridging_records(input: &GeneratedInput) -> usize {
        let mut bridging = 0;
        for partition in &input.topics[0].partitions {
            let mut sessions: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
            for record in partition {
                let (key, _): Reading = decode(record);
                let own = (record.timestamp, record.timestamp + SESSION_GAP_MS);
                let open = sessions.entry(key).or_default();
                let (touched, mut kept): (Vec<_>, Vec<_>) = open
                    .drain(..)
                    .partition(|&(start, end)| start <= own.1 && own.0 <= end);
                bridging += usize::from(touched.len() >= 2);
                let merged = touched
                    .iter()
                    .fold(own, |(s, e), &(start, end)| (s.min(start), e.max(end)));
                kept.push(merged);
                *open = kept;
            }
        }
        bridging
    }

    #[test]
    fn session_input_has_records_that_bridge_sessions_read_before_them() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let input = session_windows(&spec(1_000, 2, 12), &mut rng);
        let bridging = bridging_records(&input);
        assert!(bridging >= 20, "only {bridging} bridging records");
        let sessions = input.expected.len();
        assert!(
            (50..900).contains(&sessions),
            "{sessions} sessions of 1000 records: they should merge, but not all into one"
        );
    }

    #[test]
    fn the_timer_reference_counts_every_record_once() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let input = event_timers(&spec(300, 2, 7), &mut rng);
        let total: u64 = input
            .final_state
            .values()
            .map(|count| count.parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 300);
        let counted: u32 = input
            .expected
            .keys()
            .map(|bytes| decode::<TimerResult>(&timed(bytes.clone(), 0)).2)
            .sum();
        assert_eq!(counted, 300);
    }

    #[test]
    fn state_left_in_the_final_checkpoint_is_reported_by_table() {
        use rill_core::checkpoint::SubtaskSnapshot;
        use rill_core::coordinator::CheckpointMetadata;
        use rill_core::layout::{JobLayout, SubtaskLayout};

        let subtask = |operators: &[&str]| SubtaskLayout {
            index: 0,
            parallelism: 1,
            source: None,
            operators: operators.iter().map(|name| (*name).to_owned()).collect(),
        };
        let mut window = OperatorSnapshot::default();
        for table in ["window-contents", "__timers/event-time"] {
            let groups = [(3, vec![1]), (7, vec![2])].into_iter().collect();
            window.keyed.tables.insert(table.to_owned(), groups);
        }
        let metadata = CheckpointMetadata {
            checkpoint: CheckpointId(9),
            savepoint: false,
            triggered_at_ms: 0,
            acknowledged_at_ms: 0,
            subtasks: 2,
            state_bytes: 0,
            layout: JobLayout {
                max_parallelism: 128,
                subtasks: vec![
                    subtask(&["tumbling", "tumbling (main output)"]),
                    subtask(&["sliding", "sliding (main output)"]),
                ],
            },
        };
        let snapshots = [
            SubtaskSnapshot {
                source_positions: Vec::new(),
                operators: vec![window, OperatorSnapshot::default()],
            },
            SubtaskSnapshot {
                source_positions: Vec::new(),
                operators: vec![OperatorSnapshot::default(); 2],
            },
        ];
        let checkpoint = CompletedCheckpoint {
            metadata,
            snapshots: Arc::new(snapshots.into_iter().enumerate().collect()),
        };
        let state = final_state(super::super::JobKind::WindowAggregate, &checkpoint);
        let expected: FinalState = [
            ("tumbling: __timers/event-time", "left in 2 key groups"),
            ("tumbling: window-contents", "left in 2 key groups"),
        ]
        .into_iter()
        .map(|(table, left)| (table.to_owned(), left.to_owned()))
        .collect();
        assert_eq!(state, Ok(expected));
    }

    #[test]
    fn the_join_reference_has_pairs_of_both_joins() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let input = join(&spec(600, 2, 10), &mut rng);
        let mut by_kind = [0i64; 2];
        for (bytes, count) in &input.expected {
            let (kind, ..): JoinResult = decode(&timed(bytes.clone(), 0));
            by_kind[usize::from(kind)] += count;
        }
        assert!(by_kind.iter().all(|&pairs| pairs > 100), "{by_kind:?}");
    }
}

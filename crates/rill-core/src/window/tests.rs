//! Window operator tests: assignment and firing, lateness, merging sessions, count windows, the
//! function shapes, and surviving a snapshot.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::checkpoint::CheckpointId;
use crate::element::{Data, Record};
use crate::error::BoxError;
use crate::operator::OneInputOperator;
use crate::side_output::{OutputTag, Tagged};
use crate::state::{AggregateFunction, KeyedStateStore};
use crate::two_input::Either;

/// (key, event time)
type Event = (char, i64);

/// Counts records.
struct Count;

impl AggregateFunction for Count {
    type In = Event;
    type Acc = u64;
    type Out = u64;

    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _value: Event, accumulator: &mut u64) {
        *accumulator += 1;
    }
    fn result(&self, accumulator: &u64) -> u64 {
        *accumulator
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// Emits (key, window start, window end, count) for a count.
#[derive(Clone)]
struct Describe;

impl ProcessWindowFunction for Describe {
    type Key = char;
    type In = u64;
    type Out = (char, i64, i64, u64);

    fn process(
        &mut self,
        ctx: &WindowContext<'_, char>,
        elements: &[u64],
        out: &mut Vec<Self::Out>,
    ) -> Result<(), BoxError> {
        let window = ctx.window();
        out.push((*ctx.key(), window.start.0, window.end.0, elements[0]));
        Ok(())
    }
}

const LATE: &str = "late";

fn key_of<T: Data>(key: fn(&T) -> char) -> crate::keyed::KeySelector<T, char> {
    Arc::new(key)
}

fn operator<W: WindowFunction<Key = char>>(
    function: W,
    assigner: WindowAssigner,
    lateness: i64,
    key: fn(&W::In) -> char,
) -> WindowOperator<W> {
    WindowOperator::new(
        function,
        assigner,
        lateness,
        OutputTag::new(LATE),
        key_of(key),
        KeyedStateStore::new(128),
    )
}

type Counting = WindowOperator<AggregateProcessWindow<char, Count, Describe>>;

fn counting(assigner: WindowAssigner, lateness: i64) -> Counting {
    let function = AggregateProcessWindow::new(Arc::new(Count), Describe);
    operator(function, assigner, lateness, |(key, _)| *key)
}

fn tumbling(millis: u64) -> WindowAssigner {
    WindowAssigner::tumbling(Duration::from_millis(millis)).unwrap()
}

/// What one call emitted: results with their timestamps, and late records.
#[derive(Debug, PartialEq)]
struct Emitted<T, I> {
    results: Vec<(T, i64)>,
    late: Vec<I>,
}

fn split<T, I: Data>(records: Vec<Record<Tagged<T>>>) -> Emitted<T, I> {
    let mut emitted = Emitted {
        results: Vec::new(),
        late: Vec::new(),
    };
    for record in records {
        let timestamp = record.timestamp().map_or(i64::MIN, |t| t.0);
        match record.value {
            Tagged::Main(value) => emitted.results.push((value, timestamp)),
            Tagged::Side(side) => {
                assert_eq!(side.tag(), LATE);
                emitted.late.push(side.downcast::<I>().unwrap());
            }
        }
    }
    emitted
}

fn run<W: WindowFunction>(
    op: &mut WindowOperator<W>,
    input: Vec<Record<W::In>>,
) -> Emitted<W::Out, W::In> {
    let mut out = Vec::new();
    op.process_batch(input, &mut out).unwrap();
    split(out)
}

fn push<W: WindowFunction<In = Event>>(
    op: &mut WindowOperator<W>,
    events: &[Event],
) -> Emitted<W::Out, Event> {
    let input = events
        .iter()
        .map(|&event| Record::with_timestamp(event, Timestamp(event.1)))
        .collect();
    run(op, input)
}

fn watermark<W: WindowFunction>(op: &mut WindowOperator<W>, time: i64) -> Vec<(W::Out, i64)> {
    let mut out = Vec::new();
    op.on_watermark(Timestamp(time), &mut out).unwrap();
    split::<W::Out, W::In>(out).results
}

/// Snapshots `op` as a checkpoint would, and restores the snapshot into `fresh`.
fn restore_into<W: WindowFunction>(
    op: &mut WindowOperator<W>,
    mut fresh: WindowOperator<W>,
) -> WindowOperator<W> {
    let mut snapshot = op.snapshot_state(CheckpointId(1)).unwrap();
    snapshot.complete().unwrap();
    fresh.restore_state(snapshot).unwrap();
    fresh
}

#[test]
fn tumbling_windows_fire_when_the_watermark_passes_their_end() {
    let mut op = counting(tumbling(10), 0);
    let pushed = push(
        &mut op,
        &[('a', 3), ('b', 12), ('a', 9), ('a', 11), ('a', 1)],
    );
    assert_eq!(pushed.results, vec![]);
    assert_eq!(watermark(&mut op, 8), vec![]);
    assert_eq!(
        watermark(&mut op, 9),
        vec![(('a', 0, 10, 3), 9)],
        "window [0, 10) fires at watermark 9, its last timestamp, which its result carries"
    );
    assert_eq!(
        watermark(&mut op, 100),
        vec![(('b', 10, 20, 1), 19), (('a', 10, 20, 1), 19)]
    );
    assert_eq!(watermark(&mut op, 200), vec![], "fired windows are gone");
}

#[test]
fn late_records_update_within_allowed_lateness_and_go_to_the_side_output_beyond() {
    let mut op = counting(tumbling(10), 5);
    push(&mut op, &[('a', 2), ('a', 4)]);
    assert_eq!(watermark(&mut op, 10), vec![(('a', 0, 10, 2), 9)]);
    let late_firing = push(&mut op, &[('a', 7)]);
    assert_eq!(
        late_firing.results,
        vec![(('a', 0, 10, 3), 9)],
        "within the lateness the window fires again at once, updated"
    );
    assert_eq!(late_firing.late, vec![]);
    // Cleanup at 9 + 5 = 14: from there on the window is gone.
    assert_eq!(watermark(&mut op, 14), vec![]);
    let beyond = push(&mut op, &[('a', 8), ('a', 15)]);
    assert_eq!(beyond.results, vec![]);
    assert_eq!(
        beyond.late,
        vec![('a', 8)],
        "late data, not dropped silently"
    );
    assert_eq!(op.late_records(), 1, "and counted, read or not");
    assert_eq!(watermark(&mut op, 19), vec![(('a', 10, 20, 1), 19)]);
}

#[test]
fn a_run_started_again_from_a_bounded_runs_final_snapshot_takes_new_records_in_time() {
    let mut first_run = counting(tumbling(10), 0);
    push(&mut first_run, &[('a', 3), ('a', 14)]);
    assert_eq!(watermark(&mut first_run, 12), vec![(('a', 0, 10, 1), 9)]);
    let mut end_of_input = Vec::new();
    first_run
        .on_watermark(Timestamp::MAX, &mut end_of_input)
        .unwrap();
    assert_eq!(
        split::<_, Event>(end_of_input).results,
        vec![(('a', 10, 20, 1), 19)],
        "the end of input fires every window"
    );
    let mut second_run = restore_into(&mut first_run, counting(tumbling(10), 0));
    let appended = push(&mut second_run, &[('a', 16), ('a', 25), ('a', 8)]);
    assert_eq!(
        appended.late,
        vec![('a', 8)],
        "late only for the watermark the first run's records reached (12), not the end of time"
    );
    assert_eq!(
        watermark(&mut second_run, 30),
        vec![(('a', 10, 20, 1), 19), (('a', 20, 30, 1), 29)],
        "a window the end of input fired early fires again with the new records"
    );
}

#[test]
fn sliding_windows_count_each_record_in_every_window_it_is_in() {
    let sliding = WindowAssigner::sliding(Duration::from_millis(10), Duration::from_millis(5));
    let mut op = counting(sliding.unwrap(), 0);
    push(&mut op, &[('a', 1), ('a', 6), ('a', 12)]);
    let fired: Vec<_> = watermark(&mut op, i64::MAX)
        .into_iter()
        .map(|(result, _)| result)
        .collect();
    assert_eq!(
        fired,
        vec![
            ('a', -5, 5, 1),
            ('a', 0, 10, 2),
            ('a', 5, 15, 2),
            ('a', 10, 20, 1)
        ]
    );
}

fn sessions() -> Counting {
    counting(
        WindowAssigner::session(Duration::from_millis(10)).unwrap(),
        0,
    )
}

#[test]
fn sessions_are_per_key_and_fire_at_their_end() {
    let mut op = sessions();
    push(&mut op, &[('a', 0), ('a', 30), ('b', 5)]);
    assert_eq!(watermark(&mut op, 9), vec![(('a', 0, 10, 1), 9)]);
    assert_eq!(watermark(&mut op, 14), vec![(('b', 5, 15, 1), 14)]);
    assert_eq!(watermark(&mut op, 39), vec![(('a', 30, 40, 1), 39)]);
}

#[test]
fn sessions_merge_when_a_record_fills_the_gap_also_across_a_snapshot() {
    let mut op = sessions();
    push(&mut op, &[('a', 0), ('a', 18), ('a', 30)]);
    // [0, 10), [18, 28) and [30, 40) are three sessions; 9's [9, 19) touches the first two.
    let mut restored = restore_into(&mut op, sessions());
    for op in [&mut op, &mut restored] {
        push(op, &[('a', 9)]);
        assert_eq!(watermark(op, 26), vec![]);
        assert_eq!(watermark(op, 27), vec![(('a', 0, 28, 3), 27)]);
        assert_eq!(watermark(op, 39), vec![(('a', 30, 40, 1), 39)]);
    }
}

#[test]
fn a_record_behind_the_watermark_joins_a_session_it_touches_as_in_flink() {
    // Flink's WindowOperator merges a record's own session window into the sessions it
    // touches first, and judges lateness on the merged window.
    let mut op = counting(
        WindowAssigner::session(Duration::from_millis(3_000)).unwrap(),
        0,
    );
    push(&mut op, &[('s', 10_000), ('s', 11_000)]);
    assert_eq!(watermark(&mut op, 12_000), vec![]);
    let pushed = push(&mut op, &[('s', 7_000)]);
    assert_eq!(
        pushed.late,
        vec![],
        "[7000, 10000) touches the open session"
    );
    assert_eq!(
        watermark(&mut op, 13_999),
        vec![(('s', 7_000, 14_000, 3), 13_999)]
    );
    let pushed = push(&mut op, &[('s', 9_000), ('t', 9_000)]);
    assert_eq!(
        pushed.late,
        vec![('s', 9_000), ('t', 9_000)],
        "behind the watermark and touching no open session: late"
    );
    assert_eq!(op.late_records(), 2);
}

#[test]
fn count_window_results_carry_the_end_of_time_as_in_flink() {
    // Flink's GlobalWindow.maxTimestamp() is Long.MAX_VALUE.
    let mut op = counting(WindowAssigner::global_count(2).unwrap(), 0);
    let fired = push(&mut op, &[('a', 1), ('a', 2)]).results;
    assert_eq!(fired, vec![(('a', i64::MIN, i64::MAX, 2), i64::MAX)]);
}

#[test]
fn a_global_window_fires_and_empties_every_count_records() {
    let mut op = counting(WindowAssigner::global_count(3).unwrap(), 0);
    let events: Vec<Event> = (0..7)
        .map(|t| ('a', t))
        .chain([('b', 1), ('b', 2)])
        .collect();
    let fired: Vec<_> = push(&mut op, &events)
        .results
        .into_iter()
        .map(|((key, _, _, count), _)| (key, count))
        .collect();
    assert_eq!(fired, vec![('a', 3), ('a', 3)]);
    assert_eq!(
        watermark(&mut op, i64::MAX),
        vec![],
        "incomplete count windows do not fire at the end"
    );
}

#[test]
fn pending_windows_fire_after_a_restore_exactly_as_without_it() {
    let mut op = counting(tumbling(10), 0);
    push(&mut op, &[('a', 1), ('b', 2), ('a', 15)]);
    let mut restored = restore_into(&mut op, counting(tumbling(10), 0));
    let expected = watermark(&mut op, 100);
    assert_eq!(expected.len(), 3);
    assert_eq!(watermark(&mut restored, 100), expected);
}

/// Lists a window's elements' times.
#[derive(Clone)]
struct ListTimes;

impl ProcessWindowFunction for ListTimes {
    type Key = char;
    type In = Event;
    type Out = (char, Vec<i64>, Timestamp);

    fn process(
        &mut self,
        ctx: &WindowContext<'_, char>,
        elements: &[Event],
        out: &mut Vec<Self::Out>,
    ) -> Result<(), BoxError> {
        let times = elements.iter().map(|(_, time)| *time).collect();
        out.push((*ctx.key(), times, ctx.current_watermark()));
        Ok(())
    }
}

#[test]
fn process_and_reduce_windows() {
    let mut process = operator(ProcessWindow::new(ListTimes), tumbling(10), 0, |e| e.0);
    push(&mut process, &[('a', 5), ('a', 1), ('a', 12)]);
    assert_eq!(
        watermark(&mut process, 10),
        vec![(('a', vec![5, 1], Timestamp(10)), 9)],
        "all elements, in arrival order, with the window's metadata"
    );

    let latest = |a: Event, b: Event| if b.1 > a.1 { b } else { a };
    let mut reduce = operator(ReduceWindow::new(Arc::new(latest)), tumbling(10), 0, |e| {
        e.0
    });
    push(&mut reduce, &[('a', 5), ('a', 8), ('a', 2), ('b', 3)]);
    assert_eq!(
        watermark(&mut reduce, 9),
        vec![(('a', 8), 9), (('b', 3), 9)]
    );
}

#[test]
fn a_window_join_pairs_both_inputs_per_key_and_window() {
    type Input = Either<(char, u32), (char, char)>;
    let join = WindowJoin::new(Arc::new(|a: &(char, u32), b: &(char, char)| {
        (a.0, a.1, b.1)
    }));
    let key = |input: &Input| match input {
        Either::Left((key, _)) | Either::Right((key, _)) => *key,
    };
    let mut op = operator(join, tumbling(10), 0, key);
    let input: Vec<Record<Input>> = [
        (Either::Left(('a', 1)), 1),
        (Either::Right(('a', 'x')), 2),
        (Either::Left(('a', 2)), 3),
        (Either::Right(('b', 'y')), 4),
        (Either::Right(('a', 'z')), 12),
        (Either::Left(('a', 3)), 13),
    ]
    .into_iter()
    .map(|(value, time)| Record::with_timestamp(value, Timestamp(time)))
    .collect();
    run(&mut op, input);
    let pairs: Vec<_> = watermark(&mut op, 100)
        .into_iter()
        .map(|(pair, _)| pair)
        .collect();
    assert_eq!(
        pairs,
        vec![('a', 1, 'x'), ('a', 2, 'x'), ('a', 3, 'z')],
        "b has no partner; pairs never cross windows"
    );
}

#[test]
fn a_record_without_event_time_is_an_error_for_time_windows() {
    let mut op = counting(tumbling(10), 0);
    let error = op
        .process_batch(vec![Record::new(('a', 1))], &mut Vec::new())
        .unwrap_err();
    assert!(error.to_string().contains("watermark strategy"), "{error}");
}

/// What an operator emits for a run of input: records (key, time) and watermarks, in order.
#[derive(Clone, Debug)]
enum Step {
    Record(char, i64),
    Watermark(i64),
}

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    // Times move forward with jitter; watermarks trail them, so some records come late.
    proptest::collection::vec((0u8..3, 0i64..40, proptest::bool::weighted(0.2)), 0..120).prop_map(
        |draws| {
            let mut time = 0;
            draws
                .into_iter()
                .map(|(key, jitter, watermark)| {
                    time += jitter / 4;
                    if watermark {
                        Step::Watermark(time - 20)
                    } else {
                        Step::Record(char::from(b'a' + key), time - jitter)
                    }
                })
                .collect()
        },
    )
}

fn play(op: &mut Counting, steps: &[Step]) -> Vec<String> {
    let mut emitted = Vec::new();
    for step in steps {
        let mut out = Vec::new();
        match *step {
            Step::Record(key, time) => op
                .process_batch(
                    vec![Record::with_timestamp((key, time), Timestamp(time))],
                    &mut out,
                )
                .unwrap(),
            Step::Watermark(time) => op.on_watermark(Timestamp(time), &mut out).unwrap(),
        }
        let split = split::<(char, i64, i64, u64), Event>(out);
        emitted.extend(
            split
                .results
                .into_iter()
                .map(|(result, at)| format!("{result:?}@{at}")),
        );
        emitted.extend(split.late.into_iter().map(|late| format!("late {late:?}")));
    }
    emitted
}

proptest::proptest! {
    /// Restoring a snapshot taken at any point, into a fresh operator, changes nothing: window
    /// contents, sessions and pending timers all come back.
    #[test]
    fn windows_restored_from_a_snapshot_at_any_point_emit_what_they_would_have(
        steps in steps(),
        cut in 0usize..120,
        kind in 0u8..4,
    ) {
        let assigner = match kind {
            0 => tumbling(10),
            1 => WindowAssigner::sliding(Duration::from_millis(10), Duration::from_millis(3)).unwrap(),
            2 => WindowAssigner::session(Duration::from_millis(5)).unwrap(),
            _ => WindowAssigner::global_count(3).unwrap(),
        };
        let lateness = i64::from(kind) * 2;
        let cut = cut.min(steps.len());
        let mut all = steps.clone();
        all.push(Step::Watermark(i64::MAX));
        let expected = play(&mut counting(assigner, lateness), &all);

        let mut before = counting(assigner, lateness);
        let mut emitted = play(&mut before, &all[..cut]);
        let mut after = restore_into(&mut before, counting(assigner, lateness));
        emitted.extend(play(&mut after, &all[cut..]));
        proptest::prop_assert_eq!(emitted, expected);
    }
}

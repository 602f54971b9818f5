//! What the properties catch beyond one restore of one instance — state lost on a second
//! restore, operator state that does not survive instances merging, wrong side-output values —
//! each shrunk to its two necessary records; how an operator's error fails a property; and
//! Rill's operators with processing-time timers and side outputs, compared value by value,
//! under all three properties.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::arbitrary::any;
use proptest::sample::Index;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestRunner};
use rill_core::checkpoint::CheckpointId;
use rill_core::element::{Record, Timestamp};
use rill_core::error::BoxError;
use rill_core::key::KeyGroupRange;
use rill_core::keyed::{KeyedContext, KeyedProcess, KeyedProcessFunction};
use rill_core::operator::{OneInputOperator, OperatorSnapshot};
use rill_core::side_output::OutputTag;
use rill_core::state::ValueState;
use rill_core::timers::TimeDomain;
use rill_core::two_input::{CoProcess, Either, IntervalJoin};
use rill_core::window::WindowOperator;
use rill_core::window::{ProcessWindow, ProcessWindowFunction, WindowAssigner, WindowContext};
use rill_testing::Input;
use rill_testing::properties::{
    assert_checkpoint_transparent, assert_key_order_independent, assert_rescale_invariant,
    check_checkpoint_transparency_at, check_rescales,
};
use rill_testing::side_outputs::ShowSideOutputs;
use rill_testing::strategies::{EventStream, KeyedEvent, cut_at, keyed_events};

use crate::support::{either_key, key_of, store, two_inputs};

/// The message `assert` panics with: a property's failure, its first differing output and
/// its minimized input.
fn failure_of(assert: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(assert).expect_err("the property must fail");
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(_) => panic!("the failure is a message"),
    }
}

/// How many records a failure's minimized input has.
fn records_in(message: &str) -> usize {
    message.matches(": Record(").count()
}

/// Counts each key's records in a map it snapshots whole into operator state, and on restore
/// keeps the first state it is given: right while one instance restores its own state, wrong
/// once instances merge (the others' keys are forgotten).
#[derive(Default)]
struct CountsInOperatorState {
    counts: BTreeMap<u32, u32>,
}

impl OneInputOperator for CountsInOperatorState {
    type In = KeyedEvent;
    type Out = (u32, u32);

    fn process_batch(
        &mut self,
        input: Vec<Record<KeyedEvent>>,
        out: &mut Vec<Record<(u32, u32)>>,
    ) -> Result<(), BoxError> {
        for record in input {
            let count = self.counts.entry(record.value.key).or_default();
            *count += 1;
            out.push(record.replace((record.value.key, *count)));
        }
        Ok(())
    }

    fn snapshot_state(&mut self, _: CheckpointId) -> Result<OperatorSnapshot, BoxError> {
        let counts = bincode::serde::encode_to_vec(&self.counts, bincode::config::standard())?;
        Ok(OperatorSnapshot {
            operator: vec![counts],
            ..OperatorSnapshot::default()
        })
    }

    fn restore_state(&mut self, snapshot: OperatorSnapshot) -> Result<(), BoxError> {
        if let Some(first) = snapshot.operator.first() {
            self.counts = bincode::serde::decode_from_slice(first, bincode::config::standard())?.0;
        }
        Ok(())
    }
}

#[test]
fn rescale_invariance_catches_operator_state_that_does_not_survive_instances_merging() {
    let events = || keyed_events(EventStream::default());
    // One instance restoring its own state: nothing wrong to see.
    assert_checkpoint_transparent(CountsInOperatorState::default, events());
    let message = failure_of(|| {
        let make = |_: KeyGroupRange| CountsInOperatorState::default();
        assert_rescale_invariant(make, key_of, events(), 3);
    });
    assert!(
        message.contains("rescale invariance does not hold: run by"),
        "{message}"
    );
    assert!(message.contains("differ first at output #"), "{message}");
    // Minimal: a key's record, instances merging, the key's next record.
    assert_eq!(records_in(&message), 2, "{message}");
}

/// Counts each key's records, but snapshots only the counts that changed since it was
/// restored: a first restore is right, a second forgets what the first brought back.
#[derive(Default)]
struct SnapshotsOnlyChanges {
    restored: BTreeMap<u32, u32>,
    changed: BTreeMap<u32, u32>,
}

impl OneInputOperator for SnapshotsOnlyChanges {
    type In = KeyedEvent;
    type Out = (u32, u32);

    fn process_batch(
        &mut self,
        input: Vec<Record<KeyedEvent>>,
        out: &mut Vec<Record<(u32, u32)>>,
    ) -> Result<(), BoxError> {
        for record in input {
            let key = record.value.key;
            let before = self.changed.get(&key).or(self.restored.get(&key));
            let count = before.copied().unwrap_or(0) + 1;
            self.changed.insert(key, count);
            out.push(record.replace((key, count)));
        }
        Ok(())
    }

    fn snapshot_state(&mut self, _: CheckpointId) -> Result<OperatorSnapshot, BoxError> {
        let changed = bincode::serde::encode_to_vec(&self.changed, bincode::config::standard())?;
        Ok(OperatorSnapshot {
            operator: vec![changed],
            ..OperatorSnapshot::default()
        })
    }

    fn restore_state(&mut self, snapshot: OperatorSnapshot) -> Result<(), BoxError> {
        for state in &snapshot.operator {
            let counts: BTreeMap<u32, u32> =
                bincode::serde::decode_from_slice(state, bincode::config::standard())?.0;
            self.restored.extend(counts);
        }
        Ok(())
    }
}

#[test]
fn checkpoint_transparency_catches_state_lost_on_a_second_restore() {
    let events = keyed_events(EventStream::default());
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(&events, any::<Index>()), |(inputs, cut)| {
            let cut = cut_at(&cut, inputs.len());
            check_checkpoint_transparency_at(SnapshotsOnlyChanges::default, &inputs, &[cut])
        })
        .expect("one restore brings every count back");
    let message =
        failure_of(|| assert_checkpoint_transparent(SnapshotsOnlyChanges::default, events));
    assert!(
        message.contains("restored from snapshots taken before steps"),
        "{message}"
    );
    assert!(message.contains("differ first at output #"), "{message}");
    // Minimal: a key's record, two restores, the key's next record.
    assert_eq!(records_in(&message), 2, "{message}");
}

/// Sends each key's running count to the side output "counts" — from a plain field, which a
/// restore forgets; its main output is right.
#[derive(Clone)]
struct CountsOnTheSide {
    plain_count: u32,
    seen: ValueState<bool>,
}

const COUNTS: &str = "counts";

impl KeyedProcessFunction for CountsOnTheSide {
    type Key = u32;
    type In = KeyedEvent;
    type Out = u32;

    fn process(
        &mut self,
        event: KeyedEvent,
        ctx: &mut KeyedContext<'_, u32, u32>,
    ) -> Result<(), BoxError> {
        self.plain_count += 1;
        self.seen.set(ctx, true);
        ctx.emit(event.key);
        ctx.output(&OutputTag::<u32>::new(COUNTS), self.plain_count);
        Ok(())
    }
}

fn counts_on_the_side() -> KeyedProcess<CountsOnTheSide> {
    let function = CountsOnTheSide {
        plain_count: 0,
        seen: ValueState::new("seen"),
    };
    KeyedProcess::new(function, Arc::new(key_of), store())
}

#[test]
fn side_output_values_are_compared_once_shown() {
    let events = || keyed_events(EventStream::default());
    // Side values render as their tag and type: the wrong counts go unseen.
    assert_checkpoint_transparent(counts_on_the_side, events());
    let message = failure_of(|| {
        let counts = OutputTag::<u32>::new(COUNTS);
        let shown = || ShowSideOutputs::new(counts_on_the_side()).show(&counts);
        assert_checkpoint_transparent(shown, events());
    });
    assert!(message.contains("side output 'counts'"), "{message}");
    assert_eq!(records_in(&message), 2, "{message}");
}

/// Expects a key's next record within 15 ms of event time of the latest one it has seen, and
/// within 8 ms of processing time: an event-time timer emits `(key, count, time)` when the
/// deadline passes, a processing-time timer sends the key to the side output "silent".
/// Deadlines only move forward: a timer is deleted only for a later one.
#[derive(Clone)]
struct Deadlines {
    count: ValueState<u32>,
    event_deadline: ValueState<i64>,
    clock_deadline: ValueState<i64>,
}

const SILENT: &str = "silent";

impl KeyedProcessFunction for Deadlines {
    type Key = u32;
    type In = KeyedEvent;
    type Out = (u32, u32, i64);

    fn process(
        &mut self,
        _event: KeyedEvent,
        ctx: &mut KeyedContext<'_, u32, Self::Out>,
    ) -> Result<(), BoxError> {
        let count = self.count.get(ctx).unwrap_or(0) + 1;
        self.count.set(ctx, count);
        let deadline = ctx.timestamp().ok_or("no event time")?.0 + 15;
        let previous = self.event_deadline.get(ctx);
        if previous.is_none_or(|previous| previous < deadline) {
            if let Some(previous) = previous {
                ctx.delete_event_time_timer(Timestamp(previous));
            }
            self.event_deadline.set(ctx, deadline);
            ctx.register_event_time_timer(Timestamp(deadline));
        }
        let silent_at = ctx.current_processing_time().0.max(0) + 8;
        let previous = self.clock_deadline.get(ctx);
        if previous.is_none_or(|previous| previous < silent_at) {
            if let Some(previous) = previous {
                ctx.delete_processing_time_timer(Timestamp(previous));
            }
            self.clock_deadline.set(ctx, silent_at);
            ctx.register_processing_time_timer(Timestamp(silent_at));
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: Timestamp,
        ctx: &mut KeyedContext<'_, u32, Self::Out>,
    ) -> Result<(), BoxError> {
        let key = *ctx.key();
        match ctx.timer_domain() {
            Some(TimeDomain::EventTime) => {
                let count = self.count.get(ctx).unwrap_or(0);
                self.event_deadline.clear(ctx);
                ctx.emit((key, count, timestamp.0));
            }
            _ => {
                self.clock_deadline.clear(ctx);
                ctx.output(&OutputTag::<u32>::new(SILENT), key);
            }
        }
        Ok(())
    }
}

fn deadlines() -> ShowSideOutputs<KeyedProcess<Deadlines>> {
    let function = Deadlines {
        count: ValueState::new("count"),
        event_deadline: ValueState::new("event-deadline"),
        clock_deadline: ValueState::new("clock-deadline"),
    };
    let operator = KeyedProcess::new(function, Arc::new(key_of), store());
    ShowSideOutputs::new(operator).show(&OutputTag::<u32>::new(SILENT))
}

#[test]
fn a_process_function_with_event_and_processing_time_timers_passes_every_property() {
    let events = || {
        keyed_events(EventStream {
            processing_time_percent: 30,
            late_percent: 10,
            ..EventStream::default()
        })
    };
    assert_checkpoint_transparent(deadlines, events());
    assert_rescale_invariant(|_| deadlines(), key_of, events(), 3);
    assert_key_order_independent(deadlines, key_of, events());
}

const LATE: &str = "late";

/// Lists a window's values in arrival order, with its key and bounds.
#[derive(Clone)]
struct ListValues;

impl ProcessWindowFunction for ListValues {
    type Key = u32;
    type In = KeyedEvent;
    type Out = (u32, i64, i64, Vec<u32>);

    fn process(
        &mut self,
        ctx: &WindowContext<'_, u32>,
        events: &[KeyedEvent],
        out: &mut Vec<Self::Out>,
    ) -> Result<(), BoxError> {
        let window = ctx.window();
        let values = events.iter().map(|event| event.value).collect();
        out.push((*ctx.key(), window.start.0, window.end.0, values));
        Ok(())
    }
}

type Listing = ShowSideOutputs<WindowOperator<ProcessWindow<ListValues>>>;

/// A window listing its values, with late records shown.
fn listing(assigner: WindowAssigner, lateness: i64) -> impl Fn() -> Listing + Clone {
    move || {
        let late = OutputTag::<KeyedEvent>::new(LATE);
        let operator = WindowOperator::new(
            ProcessWindow::new(ListValues),
            assigner,
            lateness,
            late.clone(),
            Arc::new(key_of),
            store(),
        );
        ShowSideOutputs::new(operator).show(&late)
    }
}

#[test]
fn windows_emit_the_same_values_and_late_records_under_every_property() {
    let events = || {
        keyed_events(EventStream {
            late_percent: 20,
            ..EventStream::default()
        })
    };
    let millis = Duration::from_millis;
    let assigners = [
        (WindowAssigner::tumbling(millis(10)).unwrap(), 0),
        (WindowAssigner::sliding(millis(12), millis(5)).unwrap(), 4),
        (WindowAssigner::session(millis(6)).unwrap(), 2),
    ];
    for (assigner, lateness) in assigners {
        let make = listing(assigner, lateness);
        assert_checkpoint_transparent(&make, events());
        assert_rescale_invariant(|_| make(), key_of, events(), 3);
        assert_key_order_independent(&make, key_of, events());
    }
}

type Pair = fn(&KeyedEvent, &KeyedEvent) -> (u32, u32);
type Join = IntervalJoin<u32, KeyedEvent, KeyedEvent, (u32, u32), Pair>;

/// An interval join, with its late records shown.
fn interval_join() -> ShowSideOutputs<KeyedProcess<CoProcess<Join>>> {
    let late = OutputTag::<Either<KeyedEvent, KeyedEvent>>::new(LATE);
    let pair: Pair = |a, b| (a.value, b.value);
    let join = IntervalJoin::new(-6, 9, Arc::new(pair), late.clone());
    ShowSideOutputs::new(KeyedProcess::new(
        CoProcess(join),
        Arc::new(either_key),
        store(),
    ))
    .show(&late)
}

#[test]
fn an_interval_join_emits_the_same_pairs_and_late_records_under_every_property() {
    let events = || {
        keyed_events(EventStream {
            late_percent: 15,
            ..EventStream::default()
        })
        .prop_map(two_inputs)
    };
    assert_checkpoint_transparent(interval_join, events());
    assert_rescale_invariant(|_| interval_join(), either_key, events(), 3);
    assert_key_order_independent(interval_join, either_key, events());
}

/// Fails on a record whose value is 13.
struct Unlucky;

impl OneInputOperator for Unlucky {
    type In = KeyedEvent;
    type Out = u32;

    fn process_batch(
        &mut self,
        input: Vec<Record<KeyedEvent>>,
        out: &mut Vec<Record<u32>>,
    ) -> Result<(), BoxError> {
        for record in input {
            if record.value.value == 13 {
                return Err("13 is unlucky".into());
            }
            out.push(record.replace(record.value.value));
        }
        Ok(())
    }
}

#[test]
fn an_operator_error_or_an_impossible_rescale_fails_the_property_with_its_message() {
    let event = |value| Input::Record(KeyedEvent { key: 1, value }, Timestamp(value.into()));
    let inputs = [event(1), event(13)];
    let error = check_checkpoint_transparency_at(|| Unlucky, &inputs, &[1]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the operator failed: 13 is unlucky"),
        "{error}"
    );
    let error = check_rescales(|_| Unlucky, key_of, &inputs[..1], 1, &[(1, 129)]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("parallelism 129 must be between 1 and the max parallelism 128"),
        "{error}"
    );
}

/// Keeps one reminder per key, 15 ms of event time after the key's latest record: a record
/// deletes the key's reminder and registers another, at the same time or not.
#[derive(Clone)]
struct Reminder {
    at: ValueState<i64>,
}

impl KeyedProcessFunction for Reminder {
    type Key = u32;
    type In = KeyedEvent;
    type Out = u32;

    fn process(
        &mut self,
        _event: KeyedEvent,
        ctx: &mut KeyedContext<'_, u32, u32>,
    ) -> Result<(), BoxError> {
        if let Some(previous) = self.at.get(ctx) {
            ctx.delete_event_time_timer(Timestamp(previous));
        }
        let at = ctx.timestamp().ok_or("no event time")?.0 + 15;
        self.at.set(ctx, at);
        ctx.register_event_time_timer(Timestamp(at));
        Ok(())
    }

    fn on_timer(
        &mut self,
        _at: Timestamp,
        ctx: &mut KeyedContext<'_, u32, u32>,
    ) -> Result<(), BoxError> {
        let key = *ctx.key();
        ctx.emit(key);
        Ok(())
    }
}

/// A regression test for a bug checkpoint transparency found in rill-core's timers: key 2's
/// timer at 15 is deleted, key 0 registers one at 15, then key 2 registers its timer at 15
/// again. The queue used to revive the deleted timer's old place (key 2 fired first), while a
/// restore from a snapshot taken between the deletion and the new registration fired them in
/// registration order (key 0 first). Each registration now has its own number, so both fire
/// key 0 first.
#[test]
fn timers_registered_again_after_a_delete_fire_in_the_same_order_across_a_restore() {
    let reminder = || {
        let function = Reminder {
            at: ValueState::new("reminder"),
        };
        KeyedProcess::new(function, Arc::new(key_of), store())
    };
    let event = |key, time| Input::Record(KeyedEvent { key, value: 0 }, Timestamp(time));
    let inputs = [event(2, 0), event(2, -21), event(0, 0), event(2, 0)];
    let outcome = check_checkpoint_transparency_at(reminder, &inputs, &[3]);
    assert!(outcome.is_ok(), "{outcome:?}");
}

//! Rill's own operators under the ready-made properties: reduce, a process function with state
//! and timers, and the window operators; and broken operators that the properties catch. (The
//! interval join, a two-input operator, is in `catches`, with its late records compared.)

use std::sync::Arc;
use std::time::Duration;

use rill_core::element::{Record, Timestamp};
use rill_core::error::BoxError;
use rill_core::key::KeyGroupRange;
use rill_core::keyed::{KeyedContext, KeyedProcess, KeyedProcessFunction, KeyedReduce};
use rill_core::operator::OneInputOperator;
use rill_core::process::{ProcessContext, ProcessFunction, ProcessOperator};
use rill_core::side_output::OutputTag;
use rill_core::state::{AggregateFunction, ValueState};
use rill_core::window::{AggregateWindow, WindowAssigner, WindowOperator};
use rill_testing::harness::OperatorHarness;
use rill_testing::properties::{
    assert_checkpoint_transparent, assert_key_order_independent, assert_rescale_invariant,
};
use rill_testing::strategies::{EventStream, KeyedEvent, keyed_events};

use crate::support::{key_of, store};

fn sums() -> KeyedReduce<KeyedEvent, u32, impl Fn(KeyedEvent, KeyedEvent) -> KeyedEvent> {
    let add = |a: KeyedEvent, b: KeyedEvent| KeyedEvent {
        key: a.key,
        value: a.value.wrapping_add(b.value),
    };
    KeyedReduce::new(Arc::new(add), Arc::new(key_of), store())
}

#[test]
fn reduce_is_checkpoint_transparent_rescale_invariant_and_key_order_independent() {
    let events = || keyed_events(EventStream::default());
    assert_checkpoint_transparent(sums, events());
    assert_rescale_invariant(|_: KeyGroupRange| sums(), key_of, events(), 3);
    assert_key_order_independent(sums, key_of, events());
}

/// Counts each key's records and, 10 ms of event time after each, emits the count then.
#[derive(Clone)]
struct CountLater {
    count: ValueState<u32>,
}

impl KeyedProcessFunction for CountLater {
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
        let time = ctx.timestamp().ok_or("no event time")?;
        ctx.register_event_time_timer(Timestamp(time.0 + 10));
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: Timestamp,
        ctx: &mut KeyedContext<'_, u32, Self::Out>,
    ) -> Result<(), BoxError> {
        let count = self.count.get(ctx).unwrap_or(0);
        ctx.emit((*ctx.key(), count, timestamp.0));
        Ok(())
    }
}

fn count_later() -> KeyedProcess<CountLater> {
    let function = CountLater {
        count: ValueState::new("count"),
    };
    KeyedProcess::new(function, Arc::new(key_of), store())
}

#[test]
fn a_process_function_with_state_and_timers_survives_checkpoints_and_rescales() {
    let events = || {
        keyed_events(EventStream {
            late_percent: 10,
            ..EventStream::default()
        })
    };
    assert_checkpoint_transparent(count_later, events());
    assert_rescale_invariant(|_: KeyGroupRange| count_later(), key_of, events(), 2);
}

/// Sums the values of a window.
struct Sum;

impl AggregateFunction for Sum {
    type In = KeyedEvent;
    type Acc = u64;
    type Out = u64;

    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, event: KeyedEvent, sum: &mut u64) {
        *sum += u64::from(event.value);
    }
    fn result(&self, sum: &u64) -> u64 {
        *sum
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

type Summing = WindowOperator<AggregateWindow<u32, Sum>>;

fn windows(assigner: WindowAssigner, lateness: i64) -> impl Fn() -> Summing {
    move || {
        WindowOperator::new(
            AggregateWindow::new(Arc::new(Sum)),
            assigner,
            lateness,
            OutputTag::new("late"),
            Arc::new(key_of),
            store(),
        )
    }
}

#[test]
fn window_operators_survive_checkpoints_and_rescales_with_late_data() {
    let events = || {
        keyed_events(EventStream {
            late_percent: 15,
            ..EventStream::default()
        })
    };
    let millis = Duration::from_millis;
    let assigners = [
        (WindowAssigner::tumbling(millis(10)).unwrap(), 0),
        (WindowAssigner::sliding(millis(12), millis(4)).unwrap(), 5),
        (WindowAssigner::session(millis(7)).unwrap(), 3),
        (WindowAssigner::global_count(3).unwrap(), 0),
    ];
    for (assigner, lateness) in assigners {
        let make = windows(assigner, lateness);
        assert_checkpoint_transparent(&make, events());
        assert_rescale_invariant(|_: KeyGroupRange| make(), key_of, events(), 3);
        assert_key_order_independent(&make, key_of, events());
    }
}

/// Numbers each key's records — but keeps the counter in a plain field, outside keyed state,
/// so a restore forgets it.
struct ForgetfulCounter {
    seen: u32,
}

impl OneInputOperator for ForgetfulCounter {
    type In = KeyedEvent;
    type Out = (u32, u32);

    fn process_batch(
        &mut self,
        input: Vec<Record<KeyedEvent>>,
        out: &mut Vec<Record<(u32, u32)>>,
    ) -> Result<(), BoxError> {
        for record in input {
            self.seen += 1;
            out.push(record.replace((record.value.key, self.seen)));
        }
        Ok(())
    }
}

#[test]
fn checkpoint_transparency_catches_state_kept_outside_keyed_state_with_a_shrunk_input() {
    let failure = std::panic::catch_unwind(|| {
        assert_checkpoint_transparent(
            || ForgetfulCounter { seen: 0 },
            keyed_events(EventStream::default()),
        );
    })
    .expect_err("the broken operator must fail the property");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("checkpoint transparency does not hold"),
        "{message}"
    );
    assert!(message.contains("differ first at output #"), "{message}");
    // Shrunk: a handful of records, not the up to 60 drawn.
    let records = message.matches("Record(").count();
    assert!((2..=6).contains(&records), "{records} records: {message}");
}

#[test]
fn key_order_independence_catches_output_that_depends_on_other_keys() {
    let failure = std::panic::catch_unwind(|| {
        assert_key_order_independent(
            || ForgetfulCounter { seen: 0 },
            key_of,
            keyed_events(EventStream::default()),
        );
    })
    .expect_err("numbering records across keys depends on their order");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("key-order independence does not hold"),
        "{message}"
    );
}

/// Passes records on time through, with the watermark they met; those behind it go to a side
/// output.
#[derive(Clone)]
struct Triage(OutputTag<u32>);

impl ProcessFunction for Triage {
    type In = u32;
    type Out = (u32, Timestamp);

    fn process(
        &mut self,
        value: u32,
        ctx: &mut ProcessContext<'_, Self::Out>,
    ) -> Result<(), BoxError> {
        match ctx.timestamp() {
            Some(time) if time < ctx.current_watermark() => ctx.output(&self.0, value),
            _ => {
                let watermark = ctx.current_watermark();
                ctx.emit((value, watermark));
            }
        }
        Ok(())
    }
}

#[test]
fn a_process_function_on_a_stream_that_is_not_keyed_sees_timestamps_and_the_watermark() {
    let behind = OutputTag::<u32>::new("behind");
    let mut harness = OperatorHarness::new(ProcessOperator::new(Triage(behind.clone())));
    harness.push_at(1, Timestamp(100)).unwrap();
    harness.advance_watermark(Timestamp(200)).unwrap();
    harness.push_at(2, Timestamp(150)).unwrap();
    harness.push_at(3, Timestamp(200)).unwrap();
    let main: Vec<((u32, Timestamp), Option<Timestamp>)> = harness
        .take_main()
        .into_iter()
        .map(|record| {
            let timestamp = record.timestamp();
            (record.value, timestamp)
        })
        .collect();
    assert_eq!(
        main,
        vec![
            ((1, Timestamp::MIN), Some(Timestamp(100))),
            ((3, Timestamp(200)), Some(Timestamp(200))),
        ],
        "a record at the watermark is not behind it"
    );
    let side: Vec<u32> = harness
        .take_side(&behind)
        .unwrap()
        .into_iter()
        .map(|record| record.value)
        .collect();
    assert_eq!(side, vec![2]);
}

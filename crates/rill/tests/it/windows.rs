//! Stream analytics end to end on the actor runtime: windows over out-of-order input against a
//! reference, lateness and late data, timers and side outputs of process functions, connected
//! streams and joins, mistakes in describing a job, and a windowed job that fails and recovers
//! exactly-once into a log topic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rill::error::{BuildError, DescriptionError};
use rill::prelude::*;

/// (key, event time in ms)
type Event = (u32, i64);

/// `count` events over `keys` keys, one every 10 ms of event time, each shifted back by up to
/// `disorder` ms: out of order, but never by more than `disorder`.
fn out_of_order_events(count: i64, keys: u32, disorder: i64) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let key = (i * 7919 % i64::from(keys)) as u32;
            let shift = (i * 104_729) % (disorder + 1);
            (key, 10_000 + i * 10 - shift)
        })
        .collect()
}

/// Counts records.
struct Count;

impl AggregateFunction for Count {
    type In = Event;
    type Acc = u64;
    type Out = u64;

    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _: Event, accumulator: &mut u64) {
        *accumulator += 1;
    }
    fn result(&self, accumulator: &u64) -> u64 {
        *accumulator
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// Emits (key, window start, count).
#[derive(Clone)]
struct Label;

impl ProcessWindowFunction for Label {
    type Key = u32;
    type In = u64;
    type Out = (u32, i64, u64);

    fn process(
        &mut self,
        ctx: &WindowContext<'_, u32>,
        counts: &[u64],
        out: &mut Vec<(u32, i64, u64)>,
    ) -> Result<(), BoxError> {
        out.push((*ctx.key(), ctx.window().start.0, counts[0]));
        Ok(())
    }
}

/// The counts per (key, window start) of sliding windows of `size` every `slide` ms.
fn reference_counts(events: &[Event], size: i64, slide: i64) -> BTreeMap<(u32, i64), u64> {
    let mut counts = BTreeMap::new();
    for &(key, time) in events {
        let mut start = time - time.rem_euclid(slide);
        while start > time - size {
            *counts.entry((key, start)).or_insert(0) += 1;
            start -= slide;
        }
    }
    counts
}

fn as_map(results: Vec<(u32, i64, u64)>) -> BTreeMap<(u32, i64), u64> {
    let mut map = BTreeMap::new();
    for (key, start, count) in results {
        assert!(
            map.insert((key, start), count).is_none(),
            "window ({key}, {start}) fired twice"
        );
    }
    map
}

#[test]
fn sliding_windows_over_out_of_order_input_equal_a_reference_at_parallelism_two() {
    let events = out_of_order_events(20_000, 50, 300);
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(300));
    let counts = env
        .from_iter_with_timestamps(events.clone(), |e: &Event| Timestamp(e.1), strategy)
        .key_by(|e: &Event| e.0)
        .window(WindowAssigner::sliding(Duration::from_secs(10), Duration::from_secs(2)).unwrap())
        .aggregate_process(Count, Label)
        .collect();
    env.execute("sliding counts").unwrap();
    assert_eq!(
        as_map(counts.take()),
        reference_counts(&events, 10_000, 2_000)
    );
}

/// Monotonous watermarks emitted at every record (punctuated): each record is followed by the
/// watermark it moves, however the source batches its records and however fast it reads them.
fn watermark_at_every_record() -> WatermarkStrategy {
    WatermarkStrategy::punctuated(|t: Timestamp| Some(Timestamp(t.0 - 1)))
}

#[test]
fn lateness_updates_fired_windows_and_later_records_go_to_the_late_data_output() {
    let env = StreamEnv::new();
    let late_tag = OutputTag::<Event>::new("too-late");
    // Watermarks trail the largest time by 1 ms (monotonous): 12 000 fires [0, 10 000).
    let events: Vec<Event> = vec![
        (1, 1_000),
        (1, 5_000),
        (1, 12_000),
        (1, 3_000),
        (1, 30_000),
        (1, 4_000),
    ];
    let counts = env
        .from_iter_with_timestamps(
            events,
            |e: &Event| Timestamp(e.1),
            watermark_at_every_record(),
        )
        .key_by(|e: &Event| e.0)
        .window(WindowAssigner::tumbling(Duration::from_secs(10)).unwrap())
        .allowed_lateness(Duration::from_secs(5))
        .side_output_late_data(&late_tag)
        .aggregate_process(Count, Label);
    let late = counts.side_output(&late_tag).collect();
    let counts = counts.collect();
    env.execute("lateness").unwrap();
    assert_eq!(
        counts.take(),
        vec![(1, 0, 2), (1, 0, 3), (1, 10_000, 1), (1, 30_000, 1)],
        "3 000 arrived within the lateness and fired [0, 10 000) again, updated"
    );
    assert_eq!(
        late.take(),
        vec![(1, 4_000)],
        "4 000 came after the watermark passed 9 999 + 5 000: late data, not dropped silently"
    );
}

/// Alerts when a key's "open" is not followed by a "close" within 100 ms of event time; a close
/// that comes after the alert goes to the "late-close" side output.
#[derive(Clone)]
struct Deadline {
    deadline: ValueState<i64>,
}

const LATE_CLOSE: &str = "late-close";

impl KeyedProcessFunction for Deadline {
    type Key = u32;
    type In = (u32, bool, i64);
    type Out = (u32, i64);

    fn process(
        &mut self,
        (key, open, _): (u32, bool, i64),
        ctx: &mut KeyedContext<'_, u32, (u32, i64)>,
    ) -> Result<(), BoxError> {
        let now = ctx.timestamp().ok_or("no event time")?;
        match (open, self.deadline.get(ctx)) {
            (true, _) => {
                let deadline = now.0 + 100;
                self.deadline.set(ctx, deadline);
                ctx.register_event_time_timer(Timestamp(deadline));
            }
            (false, Some(deadline)) => {
                self.deadline.clear(ctx);
                ctx.delete_event_time_timer(Timestamp(deadline));
            }
            (false, None) => ctx.output(&OutputTag::<u32>::new(LATE_CLOSE), key),
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: Timestamp,
        ctx: &mut KeyedContext<'_, u32, (u32, i64)>,
    ) -> Result<(), BoxError> {
        self.deadline.clear(ctx);
        ctx.emit((*ctx.key(), timestamp.0));
        Ok(())
    }
}

#[test]
fn process_function_timers_fire_alerts_and_side_outputs_carry_the_rest() {
    let env = StreamEnv::new();
    let events = vec![
        (1, true, 0),
        (2, true, 10),
        (1, false, 50), // in time: no alert
        (3, true, 60),
        (5, true, 150), // moves the watermark past 2's deadline (110): the alert fires
        (2, false, 200), // so this close comes late
        (4, false, 210), // a close without open: late too
    ];
    let alerts = env
        .from_iter_with_timestamps(events, |e| Timestamp(e.2), watermark_at_every_record())
        .key_by(|e: &(u32, bool, i64)| e.0)
        .process(Deadline {
            deadline: ValueState::new("deadline"),
        });
    let late = alerts
        .side_output(&OutputTag::<u32>::new(LATE_CLOSE))
        .collect();
    let alerts = alerts.collect();
    env.execute("deadlines").unwrap();
    let mut alerts = alerts.take();
    alerts.sort();
    assert_eq!(
        alerts,
        vec![(2, 110), (3, 160), (5, 250)],
        "3's and 5's timers fire at the end of input"
    );
    let mut late = late.take();
    late.sort();
    assert_eq!(late, vec![2, 4]);
}

#[test]
fn asking_a_side_output_of_a_stream_without_one_is_a_mistake_named_when_building() {
    let env = StreamEnv::new();
    let doubled = env.from_iter(vec![1u32, 2]).map(|x| x * 2).name("double");
    doubled
        .side_output(&OutputTag::<u32>::new("nothing"))
        .collect();
    let error = env.job_graph("mistaken").err().unwrap();
    assert!(
        matches!(
            &error,
            BuildError::Description(DescriptionError::NoSideOutputs { operator, tag })
                if operator == "double" && tag == "nothing"
        ),
        "{error}"
    );
}

/// Orders (first input) and payments (second input) per customer: emits how much of each
/// order the payments so far cover, from one keyed state shared by both inputs.
#[derive(Clone)]
struct Balance {
    owed: ValueState<i64>,
}

impl KeyedCoProcessFunction for Balance {
    type Key = u32;
    type In1 = (u32, i64);
    type In2 = (u32, i64);
    type Out = (u32, i64);

    fn process1(
        &mut self,
        (customer, amount): (u32, i64),
        ctx: &mut KeyedContext<'_, u32, (u32, i64)>,
    ) -> Result<(), BoxError> {
        let owed = self.owed.get(ctx).unwrap_or(0) + amount;
        self.owed.set(ctx, owed);
        ctx.emit((customer, owed));
        Ok(())
    }

    fn process2(
        &mut self,
        (customer, paid): (u32, i64),
        ctx: &mut KeyedContext<'_, u32, (u32, i64)>,
    ) -> Result<(), BoxError> {
        let owed = self.owed.get(ctx).unwrap_or(0) - paid;
        self.owed.set(ctx, owed);
        ctx.emit((customer, owed));
        Ok(())
    }
}

#[test]
fn connected_streams_share_keyed_state_across_both_inputs() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let orders = env.from_iter((0..1_000u32).map(|i| (i % 10, 5)).collect::<Vec<_>>());
    let payments = env.from_iter((0..500u32).map(|i| (i % 10, 3)).collect::<Vec<_>>());
    let balances = orders
        .key_by(|o: &(u32, i64)| o.0)
        .connect(payments.key_by(|p: &(u32, i64)| p.0))
        .process(Balance {
            owed: ValueState::new("owed"),
        })
        .collect();
    env.execute("balances").unwrap();
    let balances = balances.take();
    assert_eq!(balances.len(), 1_500);
    let mut last = BTreeMap::new();
    for (customer, owed) in balances {
        last.insert(customer, owed);
    }
    assert_eq!(last, (0..10).map(|c| (c, 100 * 5 - 50 * 3)).collect());
}

fn timed(events: Vec<(u32, i64)>, env: &StreamEnv) -> KeyedStream<(u32, i64), u32> {
    env.from_iter_with_timestamps(
        events,
        |e: &(u32, i64)| Timestamp(e.1),
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(50)),
    )
    .key_by(|e: &(u32, i64)| e.0)
}

/// Every (left time, right time) pair with equal keys that `matches`.
fn reference_pairs(
    left: &[(u32, i64)],
    right: &[(u32, i64)],
    matches: impl Fn(i64, i64) -> bool + Copy,
) -> Vec<(u32, i64, i64)> {
    let mut pairs: Vec<_> = left
        .iter()
        .flat_map(|&(key, a)| {
            right
                .iter()
                .filter(move |&&(other, b)| other == key && matches(a, b))
                .map(move |&(_, b)| (key, a, b))
        })
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn window_and_interval_joins_pair_exactly_the_matching_records() {
    let left: Vec<(u32, i64)> = (0..300)
        .map(|i| (i % 5, i64::from(i) * 37 % 3_000))
        .collect();
    let right: Vec<(u32, i64)> = (0..200)
        .map(|i| (i % 5, i64::from(i) * 53 % 3_000))
        .collect();
    let mut left_sorted = left.clone();
    left_sorted.sort_by_key(|e| e.1);
    let mut right_sorted = right.clone();
    right_sorted.sort_by_key(|e| e.1);

    let env = StreamEnv::new();
    env.set_parallelism(2);
    let pair = |a: &(u32, i64), b: &(u32, i64)| (a.0, a.1, b.1);
    let windowed = timed(left_sorted.clone(), &env)
        .window_join(
            timed(right_sorted.clone(), &env),
            WindowAssigner::tumbling(Duration::from_millis(500)).unwrap(),
            pair,
        )
        .collect();
    let interval = timed(left_sorted.clone(), &env)
        .interval_join(timed(right_sorted.clone(), &env), -20, 30, pair)
        .collect();
    env.execute("joins").unwrap();

    let mut windowed = windowed.take();
    windowed.sort();
    assert_eq!(
        windowed,
        reference_pairs(&left, &right, |a, b| a.div_euclid(500) == b.div_euclid(500))
    );
    let mut interval = interval.take();
    interval.sort();
    assert_eq!(
        interval,
        reference_pairs(&left, &right, |a, b| (a - 20..=a + 30).contains(&b))
    );
    assert!(!interval.is_empty());
}

#[test]
fn an_interval_join_with_bounds_the_wrong_way_round_is_a_mistake() {
    let env = StreamEnv::new();
    let one = || {
        env.from_iter(vec![(1u32, 1i64)])
            .key_by(|e: &(u32, i64)| e.0)
    };
    one()
        .interval_join(one(), 10, -10, |a: &(u32, i64), _: &(u32, i64)| a.0)
        .collect();
    let error = env.job_graph("bad interval").err().unwrap();
    assert!(
        error
            .to_string()
            .contains("lower bound (10 ms) is above its upper bound (-10 ms)"),
        "{error}"
    );
}

fn read_committed(log: &EventLog, topic: &str) -> Vec<String> {
    let ends = log.end_offsets(topic).unwrap();
    let mut values = Vec::new();
    for (partition, end) in ends.into_iter().enumerate() {
        for record in log.read(topic, partition as u32, 0, end as usize).unwrap() {
            values.push(String::from_utf8(record.value).unwrap());
        }
    }
    values.sort();
    values
}

#[test]
fn a_windowed_job_that_fails_recovers_and_commits_every_window_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open_or_create(dir.path()).unwrap();
    log.create_topic("events", 3).unwrap();
    log.create_topic("counts", 1).unwrap();
    let events = out_of_order_events(30_000, 40, 200);
    for (position, &(key, time)) in events.iter().enumerate() {
        let record = ProducerRecord::new(key.to_string().into_bytes())
            .with_partition((position % 3) as u32)
            .with_timestamp(time);
        log.append("events", record).unwrap();
    }

    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(5));
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 10,
    });
    let source = LogSource::with_decoder(&log, "events", |record| {
        let key: u32 = String::from_utf8_lossy(&record.value)
            .parse()
            .unwrap_or(u32::MAX);
        (key, record.timestamp)
    })
    .unwrap()
    .bounded()
    .with_watermarks(WatermarkStrategy::bounded_out_of_orderness(
        Duration::from_millis(200),
    ));
    let sink = LogSink::with_encoder(&log, "counts", |(key, start, count): &(u32, i64, u64)| {
        ProducerRecord::new(format!("{key}\t{start}\t{count}").into_bytes())
    })
    .unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    let trigger = armed.clone();
    env.from_log(source)
        .map(move |event: Event| {
            if event.1 > 200_000 && trigger.swap(false, Ordering::SeqCst) {
                panic!("injected failure at event time {}", event.1);
            }
            event
        })
        .key_by(|e: &Event| e.0)
        .window(WindowAssigner::tumbling(Duration::from_secs(1)).unwrap())
        .aggregate_process(Count, Label)
        .uid("window-counts")
        .sink_to_log(sink);
    let report = env.execute("windowed recovery").unwrap();
    assert_eq!(report.restarts, 1, "{report:?}");
    assert!(!armed.load(Ordering::SeqCst));

    let mut expected: Vec<String> = reference_counts(&events, 1_000, 1_000)
        .into_iter()
        .map(|((key, start), count)| format!("{key}\t{start}\t{count}"))
        .collect();
    expected.sort();
    assert_eq!(read_committed(&log, "counts"), expected);
}

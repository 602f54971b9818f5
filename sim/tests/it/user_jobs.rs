//! A user's own jobs, written only with the public API (`rill-api` and `rill_sim::user`), run
//! under simulated crashes and checked exactly-once: a keyed windowed sum passes; a running
//! sum that keeps its sums in a field instead of keyed state passes without faults and is
//! caught once subtasks crash, and so is a correct job whose sink is broken on purpose.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, RngCore};
use rill_api::prelude::*;
use rill_sim::user::{Input, SimConnectors, UserJob, decode, encode};

/// An event: a key, its event time (ms) and an amount.
type Event = (u32, i64, i64);

/// Window length (ms) of the windowed sums.
const WINDOW_MS: i64 = 10;

/// Partitions of the input topic.
const PARTITIONS: u32 = 3;
/// Events in each partition.
const EVENTS_PER_PARTITION: usize = 150;

/// Events over three partitions, each in event-time order (so that none is late), and each
/// key in one partition (as a keyed producer writes them, so that a key's events keep their
/// order).
fn events(rng: &mut dyn RngCore) -> Input {
    let partitions = (0..PARTITIONS).map(|partition| {
        let mut time = 0i64;
        (0..EVENTS_PER_PARTITION)
            .map(|_| {
                time += rng.random_range(0..4);
                let key = partition + PARTITIONS * rng.random_range(0..2);
                let event: Event = (key, time, rng.random_range(-10..=20));
                (event, time)
            })
            .collect::<Vec<_>>()
    });
    Input::new().timed_topic("events", partitions)
}

/// The windowed sums a correct run commits: per key and window, the sum of its amounts.
fn window_sums(input: &Input) -> Vec<(u32, i64, i64)> {
    let mut sums: BTreeMap<(u32, i64), i64> = BTreeMap::new();
    for (key, time, amount) in input.values::<Event>("events").into_iter().flatten() {
        *sums.entry((key, time - time % WINDOW_MS)).or_default() += amount;
    }
    sums.into_iter()
        .map(|((key, start), sum)| (key, start, sum))
        .collect()
}

/// Per key and tumbling window of event time, the sum of the amounts.
fn windowed_sums(env: &StreamEnv, io: &SimConnectors) {
    let sums = env
        .from_source(
            "events",
            true,
            io.timed_reader(
                "events",
                decode::<Event>,
                WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO),
            ),
        )
        .set_parallelism(2)
        .map(|(key, time, amount): Event| (key, time - time % WINDOW_MS, amount))
        .set_parallelism(2)
        .key_by(|event: &Event| event.0)
        .window(WindowAssigner::Tumbling {
            size: WINDOW_MS,
            offset: 0,
        })
        .reduce(|a, b| (a.0, a.1, a.2 + b.2))
        .name("sums")
        .uid("sums")
        .set_parallelism(3);
    io.sink(sums, "sink", encode::<Event>).set_parallelism(3);
}

#[test]
fn a_users_windowed_sum_is_exactly_once_under_crashes() {
    let report = UserJob::new("windowed sums", windowed_sums)
        .input_per_seed(events)
        .reference(window_sums)
        .simulate(0..8)
        .expect("the job builds");
    assert!(report.held(), "{report}");
    let summary = &report.summary;
    assert_eq!(summary.seeds, 8);
    assert!(
        summary.faults >= 16 && summary.recoveries >= 16 && summary.checkpoints > 0,
        "the seeds crashed and recovered: {report}"
    );
}

/// A running sum per key that keeps each key's sum in keyed state, as it must.
#[derive(Clone)]
struct RunningSum {
    sum: ValueState<i64>,
}

impl KeyedProcessFunction for RunningSum {
    type Key = u32;
    type In = Event;
    type Out = (u32, i64);

    fn process(
        &mut self,
        (key, _, amount): Event,
        ctx: &mut KeyedContext<'_, u32, (u32, i64)>,
    ) -> Result<(), BoxError> {
        let sum = self.sum.get(ctx).unwrap_or(0) + amount;
        self.sum.set(ctx, sum);
        ctx.emit((key, sum));
        Ok(())
    }
}

/// The same running sum with the user's bug: each key's sum in a field of the function,
/// which no checkpoint holds, so a restored subtask counts from zero again.
#[derive(Clone, Default)]
struct ForgetfulSum {
    sums: BTreeMap<u32, i64>,
}

impl KeyedProcessFunction for ForgetfulSum {
    type Key = u32;
    type In = Event;
    type Out = (u32, i64);

    fn process(
        &mut self,
        (key, _, amount): Event,
        ctx: &mut KeyedContext<'_, u32, (u32, i64)>,
    ) -> Result<(), BoxError> {
        let sum = self.sums.entry(key).or_default();
        *sum += amount;
        ctx.emit((key, *sum));
        Ok(())
    }
}

/// A running sum job with the process function `make` gives.
fn running_sum<P>(make: fn() -> P) -> UserJob
where
    P: KeyedProcessFunction<Key = u32, In = Event, Out = (u32, i64)>,
{
    UserJob::new("running sums", move |env, io| {
        let sums = io
            .source(env, "events", "events", decode::<Event>)
            .set_parallelism(2)
            .key_by(|event: &Event| event.0)
            .process(make())
            .name("sums")
            .uid("sums")
            .set_parallelism(2);
        io.sink(sums, "sink", encode::<(u32, i64)>)
            .set_parallelism(2);
    })
    .input_per_seed(events)
    .reference(|input| {
        // Every key is in one partition: its sums follow its events in partition order.
        let mut sums: BTreeMap<u32, i64> = BTreeMap::new();
        let mut out = Vec::new();
        for (key, _, amount) in input.values::<Event>("events").into_iter().flatten() {
            let sum = sums.entry(key).or_default();
            *sum += amount;
            out.push((key, *sum));
        }
        out
    })
}

#[test]
fn a_running_sum_in_keyed_state_is_exactly_once_under_crashes() {
    let job = running_sum(|| RunningSum {
        sum: ValueState::new("sum"),
    });
    let report = job.simulate(0..8).expect("the job builds");
    assert!(report.held(), "{report}");
    assert!(report.summary.recoveries >= 16, "{report}");
}

#[test]
fn a_running_sum_kept_in_a_field_passes_without_faults_and_is_caught_under_crashes() {
    let no_faults = running_sum(ForgetfulSum::default)
        .simulate_with("", 0..4)
        .expect("the job builds");
    assert!(
        no_faults.held(),
        "without a crash the bug does not show: {no_faults}"
    );
    let report = running_sum(ForgetfulSum::default)
        .simulate(0..8)
        .expect("the job builds");
    let (seed, violation) = report.violations().next().expect("a seed catches the bug");
    assert_eq!(violation.property, "exactly-once", "seed {seed}: {report}");
    assert!(
        violation.detail.contains("missing: (") && violation.detail.contains("extra: ("),
        "the records involved are shown: {}",
        violation.detail
    );
}

#[test]
fn a_users_job_with_a_broken_sink_is_caught_and_bad_settings_are_refused() {
    let broken = r#"
broken = "sink-commits-at-pre-commit"

[[fault]]
kind = "crash-coordinator"
point = "after-acks"
count = 3
"#;
    let report = UserJob::new("windowed sums", windowed_sums)
        .input_per_seed(events)
        .reference(window_sums)
        .simulate_with(broken, 0..10)
        .expect("the job builds");
    assert!(
        !report.held(),
        "the sink that commits early is caught: {report}"
    );
    let error = UserJob::new("windowed sums", windowed_sums)
        .simulate_with("[[fault]]\nkind = \"crash-everything\"\n", 0..1)
        .expect_err("an unknown fault is refused");
    assert!(error.contains("crash-everything"), "{error}");
    let error = UserJob::new("windowed sums", windowed_sums)
        .simulate_with("[parallelism]\nsums = 2\n", 0..1)
        .expect_err("the job sets its own parallelism");
    assert!(error.contains("parallelism"), "{error}");
}

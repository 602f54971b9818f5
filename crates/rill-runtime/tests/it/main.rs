//! The actix runtime end to end, on job graphs built by hand from `rill-core` parts: results,
//! termination, failures named by operator and subtask, cancellation, and use from inside an
//! application's own async runtime.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rill_core::exchange::{ExchangeKind, ForwardRouter, KeyHashRouter, RebalanceRouter};
use rill_core::graph::{Edge, JobGraph, OperatorId, OperatorKind, OperatorNode};
use rill_core::keyed::{KeySelector, KeyedReduce};
use rill_core::operator::{Erased, Map, OneInputOperator, Sink, SinkOperator};
use rill_core::source::{SequenceSource, Source, SourceOutput, SourcePoll};
use rill_core::{BoxError, Record, Timestamp};
use rill_runtime::{JobError, Runtime, RuntimeConfig};

mod slow_store;

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<(u64, u64)>>>);

impl Sink for Shared {
    type In = (u64, u64);

    fn write_batch(&mut self, records: Vec<Record<(u64, u64)>>) -> Result<(), BoxError> {
        self.0
            .lock()
            .unwrap()
            .extend(records.into_iter().map(|r| r.value));
        Ok(())
    }
}

/// Polls `condition` every millisecond until it holds: how a test waits for the state it needs
/// rather than for a fixed time. Panics naming `what` if it does not hold within a minute.
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "gave up after a minute: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn node(name: &str, parallelism: u32, kind: OperatorKind) -> OperatorNode {
    OperatorNode {
        name: name.into(),
        uid: None,
        parallelism,
        kind,
    }
}

fn forward(from: OperatorId, to: OperatorId) -> Edge {
    Edge {
        from,
        to,
        exchange: ExchangeKind::Forward,
        router: Arc::new(|_| Box::new(ForwardRouter)),
    }
}

/// sequence(0..n) -> map(i -> (i % keys, 1)) -> key_by(key) -> reduce(sum) -> sink
fn counting_job(
    n: u64,
    keys: u64,
    parallelism: u32,
    panic_at: Option<u64>,
    sink: Shared,
) -> JobGraph {
    let mut graph = JobGraph::new("count");
    let source = graph.add_operator(node(
        "sequence",
        parallelism,
        OperatorKind::Source(Arc::new(move |info| {
            Box::new(SequenceSource::slice(0..n, info.subtask, info.parallelism))
        })),
    ));
    let to_pair = Arc::new(move |i: u64| {
        assert!(Some(i) != panic_at, "poisoned value {i}");
        (i % keys, 1u64)
    });
    let map = graph.add_operator(node(
        "to_pair",
        parallelism,
        OperatorKind::Transform(Arc::new(move |_| {
            Box::new(Erased(Map::new(to_pair.clone())))
        })),
    ));
    let key_of: KeySelector<(u64, u64), u64> = Arc::new(|pair| pair.0);
    let sum = Arc::new(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1));
    let reduce_key = key_of.clone();
    let reduce = graph.add_operator(node(
        "sum",
        parallelism,
        OperatorKind::Transform(Arc::new(move |info| {
            Box::new(Erased(KeyedReduce::new(
                sum.clone(),
                reduce_key.clone(),
                rill_core::state::KeyedStateStore::new(info.max_parallelism),
            )))
        })),
    ));
    let sink_node = graph.add_operator(node(
        "sink",
        parallelism,
        OperatorKind::Transform(Arc::new(move |info| {
            Box::new(Erased(SinkOperator::new(sink.clone(), info)))
        })),
    ));
    graph.add_edge(forward(source, map));
    graph.add_edge(Edge {
        from: map,
        to: reduce,
        exchange: ExchangeKind::KeyHash,
        router: Arc::new(move |context| {
            Box::new(KeyHashRouter::new(key_of.clone(), context.max_parallelism))
        }),
    });
    graph.add_edge(forward(reduce, sink_node));
    graph
}

fn runtime(workers: usize) -> Runtime {
    Runtime::new(RuntimeConfig {
        workers,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[test]
fn keyed_counts_are_exact_at_several_parallelisms() {
    let runtime = runtime(2);
    for parallelism in [1, 2, 3] {
        let sink = Shared::default();
        let graph = counting_job(10_000, 7, parallelism, None, sink.clone());
        let report = runtime.submit(graph).unwrap().wait().unwrap();
        assert_eq!(report.subtasks, 2 * parallelism as usize);
        let emitted = sink.0.lock().unwrap().clone();
        assert_eq!(
            emitted.len(),
            10_000,
            "one update per input at parallelism {parallelism}"
        );
        for key in 0..7 {
            let updates: Vec<u64> = emitted
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, c)| *c)
                .collect();
            let expected: Vec<u64> =
                (1..=(0..10_000u64).filter(|i| i % 7 == key).count() as u64).collect();
            assert_eq!(updates, expected, "key {key} at parallelism {parallelism}");
        }
    }
}

#[test]
fn a_panicking_function_fails_the_job_naming_operator_and_subtask() {
    let runtime = runtime(2);
    let graph = counting_job(10_000, 7, 2, Some(7_777), Shared::default());
    let error = runtime.submit(graph).unwrap().wait().unwrap_err();
    let JobError::TaskFailed {
        subtask,
        parallelism,
        ref error,
        ..
    } = error
    else {
        panic!("expected a task failure, got {error}");
    };
    assert_eq!(error.operator, "to_pair");
    // 0..10_000 is split in two slices: 7_777 is in the second.
    assert_eq!((subtask, parallelism), (1, 2));
    let message = error.to_string();
    assert!(message.contains("poisoned value 7777"), "{message}");
}

/// A source that never ends.
struct Endless;

impl Source for Endless {
    type Out = (u64, u64);

    fn poll_next(&mut self, out: &mut SourceOutput<(u64, u64)>) -> Result<SourcePoll, BoxError> {
        out.collect((1, 1));
        Ok(SourcePoll::Idle)
    }
}

/// `Endless` into `sink` (at parallelism 2).
fn endless_job(sink: Shared) -> JobGraph {
    let mut graph = JobGraph::new("endless");
    let source = graph.add_operator(node(
        "endless",
        1,
        OperatorKind::Source(Arc::new(|_| Box::new(Endless))),
    ));
    let sink = graph.add_operator(node(
        "sink",
        2,
        OperatorKind::Transform(Arc::new(move |info| {
            Box::new(Erased(SinkOperator::new(sink.clone(), info)))
        })),
    ));
    graph.add_edge(Edge {
        from: source,
        to: sink,
        exchange: ExchangeKind::Rebalance,
        router: Arc::new(|_| Box::new(RebalanceRouter::<(u64, u64)>::starting_at(0))),
    });
    graph
}

#[test]
fn cancel_ends_an_unbounded_job() {
    let runtime = runtime(2);
    let sink = Shared::default();
    let handle = runtime.submit(endless_job(sink.clone())).unwrap();
    // Cancel the job once it runs: records have reached its sink.
    wait_until("records reach the sink", || {
        !sink.0.lock().unwrap().is_empty()
    });
    handle.cancel();
    assert!(matches!(handle.wait(), Err(JobError::Cancelled(name)) if name == "endless"));
}

#[test]
fn dropping_the_runtime_ends_its_jobs() {
    let runtime = runtime(1);
    let handle = runtime.submit(endless_job(Shared::default())).unwrap();
    drop(runtime);
    assert!(matches!(handle.wait(), Err(JobError::RuntimeStopped(_))));
}

#[test]
fn jobs_run_from_inside_an_applications_tokio_runtime() {
    let app = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    app.block_on(async {
        let runtime = runtime(2);
        let sink = Shared::default();
        let report = runtime
            .submit(counting_job(1_000, 3, 2, None, sink.clone()))
            .unwrap()
            .join()
            .await
            .unwrap();
        assert_eq!(report.job, "count");
        assert_eq!(sink.0.lock().unwrap().len(), 1_000);
    });
}

#[test]
fn invalid_graphs_are_refused_before_running() {
    let runtime = runtime(1);
    let mut graph = counting_job(10, 2, 2, None, Shared::default());
    graph.operators[1].parallelism = 3;
    let error = runtime
        .submit(graph)
        .err()
        .expect("a forward edge across parallelism 2 -> 3 is refused");
    assert!(
        error
            .to_string()
            .contains("forward edge 'sequence' -> 'to_pair'"),
        "{error}"
    );
}

#[test]
fn jobs_run_from_inside_an_applications_actix_system() {
    actix::System::new().block_on(async {
        let runtime = runtime(2);
        let sink = Shared::default();
        let handle = runtime
            .submit(counting_job(1_000, 3, 1, None, sink.clone()))
            .unwrap();
        handle.join().await.unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 1_000);
    });
}

/// A job whose subtask 1 gets stuck in user code at its first record, until `released` is set,
/// and whose subtask 0 fails at its first record once subtask 1 is stuck.
fn failing_beside_a_stuck_subtask(released: Arc<AtomicBool>) -> JobGraph {
    let stuck = Arc::new(AtomicBool::new(false));
    let mut graph = JobGraph::new("stuck");
    graph.restart = rill_core::restart::RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 0,
    };
    let source = graph.add_operator(node(
        "sequence",
        2,
        OperatorKind::Source(Arc::new(|info| {
            Box::new(SequenceSource::slice(
                0..1_000,
                info.subtask,
                info.parallelism,
            ))
        })),
    ));
    let map = graph.add_operator(node(
        "stuck_or_failing",
        2,
        OperatorKind::Transform(Arc::new(move |info| {
            let (subtask, stuck, released) = (info.subtask, stuck.clone(), released.clone());
            Box::new(Erased(Map::new(Arc::new(move |i: u64| {
                if subtask == 0 {
                    wait_until("subtask 1 is stuck", || stuck.load(Ordering::SeqCst));
                    panic!("subtask 0 fails");
                }
                if !stuck.swap(true, Ordering::SeqCst) {
                    wait_until("the test releases subtask 1", || {
                        released.load(Ordering::SeqCst)
                    });
                }
                (i, 1u64)
            }))))
        })),
    ));
    let sink = graph.add_operator(node(
        "sink",
        2,
        OperatorKind::Transform(Arc::new(|info| {
            Box::new(Erased(SinkOperator::new(Shared::default(), info)))
        })),
    ));
    graph.add_edge(forward(source, map));
    graph.add_edge(forward(map, sink));
    graph
}

#[test]
fn a_failed_attempt_that_does_not_stop_ends_the_job_instead_of_restarting_beside_it() {
    let runtime = Runtime::new(RuntimeConfig {
        workers: 2,
        attempt_stop_timeout: Duration::from_millis(100),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let released = Arc::new(AtomicBool::new(false));
    let graph = failing_beside_a_stuck_subtask(released.clone());
    let outcome = runtime.submit(graph).unwrap().wait();
    released.store(true, Ordering::SeqCst);
    let error = outcome.unwrap_err();
    match &error {
        JobError::AttemptDidNotStop { error: cause, .. } => {
            assert!(matches!(**cause, JobError::TaskFailed { .. }), "{error}");
        }
        other => panic!("expected AttemptDidNotStop, got {other}"),
    }
}

#[test]
fn settings_that_would_stop_every_job_are_refused() {
    let mut config = RuntimeConfig::default();
    config.flow.channel_credits = 0;
    let error = Runtime::new(config)
        .err()
        .expect("zero credits are refused");
    assert!(
        error
            .to_string()
            .contains("channel credits must be at least 1"),
        "{error}"
    );
    let no_workers = RuntimeConfig {
        workers: 0,
        ..RuntimeConfig::default()
    };
    assert!(matches!(
        Runtime::new(no_workers),
        Err(rill_runtime::RuntimeError::NoWorkers)
    ));
    let no_interval = RuntimeConfig {
        processing_time_interval: Duration::ZERO,
        ..RuntimeConfig::default()
    };
    let error = Runtime::new(no_interval)
        .err()
        .expect("a zero interval is refused");
    assert!(
        error.to_string().contains("processing time interval"),
        "{error}"
    );
}

/// Polls with nothing to emit until the operator downstream has been told the processing time
/// `ticks` times (in `told`), then finishes; remembers the processing time of every poll. Fails
/// if that takes more than a minute.
struct WaitForTicks {
    ticks: usize,
    told: Arc<Mutex<Vec<Timestamp>>>,
    deadline: Instant,
    polled_at: Arc<Mutex<Vec<Timestamp>>>,
}

impl Source for WaitForTicks {
    type Out = u64;

    fn poll_next(&mut self, out: &mut SourceOutput<u64>) -> Result<SourcePoll, BoxError> {
        self.polled_at.lock().unwrap().push(out.processing_time());
        let told = self.told.lock().unwrap().len();
        if told >= self.ticks {
            Ok(SourcePoll::Finished)
        } else if Instant::now() < self.deadline {
            Ok(SourcePoll::Idle)
        } else {
            Err(format!("the operator was told the time {told} times in a minute").into())
        }
    }
}

/// Remembers every processing time it is told of.
struct ClockLog(Arc<Mutex<Vec<Timestamp>>>);

impl OneInputOperator for ClockLog {
    type In = u64;
    type Out = u64;

    fn process_batch(
        &mut self,
        input: Vec<Record<u64>>,
        out: &mut Vec<Record<u64>>,
    ) -> Result<(), BoxError> {
        out.extend(input);
        Ok(())
    }

    fn on_processing_time(
        &mut self,
        now: Timestamp,
        _out: &mut Vec<Record<u64>>,
    ) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(now);
        Ok(())
    }
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn processing_time_is_the_wall_clock_seen_by_sources_and_operators() {
    let polled_at = Arc::new(Mutex::new(Vec::new()));
    let told = Arc::new(Mutex::new(Vec::new()));
    let mut graph = JobGraph::new("clock");
    let (polls, ticks) = (polled_at.clone(), told.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let source = graph.add_operator(node(
        "wait",
        1,
        OperatorKind::Source(Arc::new(move |_| {
            Box::new(WaitForTicks {
                ticks: 3,
                told: ticks.clone(),
                deadline,
                polled_at: polls.clone(),
            })
        })),
    ));
    let log = told.clone();
    let clock = graph.add_operator(node(
        "clock",
        1,
        OperatorKind::Transform(Arc::new(move |_| Box::new(Erased(ClockLog(log.clone()))))),
    ));
    graph.add_edge(forward(source, clock));
    let before = Timestamp(wall_clock_ms());
    runtime(1).submit(graph).unwrap().wait().unwrap();
    let after = Timestamp(wall_clock_ms());

    let polled_at = polled_at.lock().unwrap().clone();
    assert!(
        polled_at.iter().all(|t| (before..=after).contains(t)),
        "every poll, the first included, saw the wall clock: {polled_at:?} not in {before}..={after}"
    );
    let told = told.lock().unwrap().clone();
    assert!(
        told.len() >= 3,
        "the source ran until the operator was told the time three times: {told:?}"
    );
    assert!(told.windows(2).all(|pair| pair[0] < pair[1]), "{told:?}");
    assert!(
        told.iter().all(|t| (before..=after).contains(t)),
        "{told:?} not in {before}..={after}"
    );
}

//! Failures: a panicking or failing user function fails the run with a `TaskError` naming the
//! operator (or the partitioner, for a key selector) and carrying the panic's message.

use std::sync::Arc;

use rill_core::graph::JobGraph;
use rill_core::keyed::KeyedReduce;
use rill_core::operator::{Map, Sink, SinkOperator};
use rill_core::source::{Source, SourceOutput, SourcePoll};
use rill_core::state::{FrozenTables, KeyedStateStore, StateBackend, StateError, StateTables};
use rill_core::{BoxError, OperatorError, Record, TaskError};

use crate::driver::Driver;
use crate::support::{flow, forward, items, key_by, rebalance, sink, source, transform};

fn unlucky(x: u64) -> u64 {
    assert!(x != 13, "unlucky {x}");
    x
}

fn run_to_failure(graph: &JobGraph) -> TaskError {
    Driver::new(graph, flow(4, 2), 1)
        .run()
        .expect_err("the run fails")
}

fn assert_panicked(error: &TaskError, operator: &str, message: &str) {
    assert_eq!(error.operator, operator, "{error}");
    match &error.error {
        OperatorError::Panicked(m) => assert_eq!(m, message),
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[test]
fn a_panicking_map_in_a_chain_fails_the_step_with_its_name_and_message() {
    let mut graph = JobGraph::new("chained");
    let (src, _) = items(&mut graph, "numbers", 1, (0..100).collect::<Vec<u64>>());
    let map = transform(&mut graph, "unlucky map", 1, |_| {
        Map::new(Arc::new(unlucky))
    });
    let (out, collected) = sink::<u64>(&mut graph, "sink", 1);
    forward(&mut graph, src, map);
    forward(&mut graph, map, out);
    assert_panicked(&run_to_failure(&graph), "unlucky map", "unlucky 13");
    assert!(
        collected.lock().unwrap().iter().all(|(_, v)| *v < 12),
        "the batch holding 13 never reached the sink"
    );
}

#[test]
fn a_panicking_map_behind_an_exchange_fails_its_own_subtask() {
    let mut graph = JobGraph::new("downstream");
    let (src, _) = items(&mut graph, "numbers", 2, (0..100).collect::<Vec<u64>>());
    let map = transform(&mut graph, "unlucky map", 3, |_| {
        Map::new(Arc::new(unlucky))
    });
    rebalance::<u64>(&mut graph, src, map);
    for seed in 0..5 {
        let error = Driver::new(&graph, flow(4, 2), seed).run().unwrap_err();
        assert_panicked(&error, "unlucky map", "unlucky 13");
    }
}

#[test]
fn a_panicking_key_selector_fails_the_partitioner_with_its_name() {
    let mut graph = JobGraph::new("bad key");
    let (src, _) = items(&mut graph, "numbers", 2, (0..100).collect::<Vec<u64>>());
    let (out, _) = sink::<u64>(&mut graph, "counter", 2);
    key_by(&mut graph, src, out, |x: &u64| unlucky(*x));
    let error = run_to_failure(&graph);
    assert!(
        error.operator.contains("numbers") && error.operator.contains("counter"),
        "the partitioner of numbers -> counter is named: {error}"
    );
    assert!(
        matches!(&error.error, OperatorError::Panicked(m) if m == "unlucky 13"),
        "{error}"
    );
}

/// A sink that refuses a value with an error, not a panic.
struct Refuse;

impl Sink for Refuse {
    type In = u64;

    fn write_batch(&mut self, records: Vec<Record<u64>>) -> Result<(), BoxError> {
        match records.iter().find(|r| r.value == 42) {
            Some(_) => Err("disk full at 42".into()),
            None => Ok(()),
        }
    }
}

#[test]
fn an_error_returned_by_a_sink_names_the_sink_and_keeps_the_error() {
    let mut graph = JobGraph::new("refusing sink");
    let (src, _) = items(&mut graph, "numbers", 1, (0..100).collect::<Vec<u64>>());
    let out = transform(&mut graph, "refusing sink", 2, |info| {
        SinkOperator::new(Refuse, info)
    });
    rebalance::<u64>(&mut graph, src, out);
    let error = run_to_failure(&graph);
    assert_eq!(error.operator, "refusing sink");
    assert!(
        matches!(&error.error, OperatorError::Failed(e) if e.to_string() == "disk full at 42"),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "operator 'refusing sink' failed: disk full at 42"
    );
}

/// A source that fails on its second poll.
struct Flaky(u32);

impl Source for Flaky {
    type Out = u64;

    fn poll_next(&mut self, out: &mut SourceOutput<u64>) -> Result<SourcePoll, BoxError> {
        self.0 += 1;
        if self.0 == 2 {
            return Err("connection reset".into());
        }
        out.collect(1);
        Ok(SourcePoll::Ready)
    }
}

#[test]
fn a_failing_source_names_the_source() {
    let mut graph = JobGraph::new("flaky");
    let src = source(&mut graph, "flaky source", 1, |_| Flaky(0));
    let (out, _) = sink::<u64>(&mut graph, "sink", 1);
    forward(&mut graph, src, out);
    let error = run_to_failure(&graph);
    assert_eq!(error.operator, "flaky source");
    assert!(
        matches!(&error.error, OperatorError::Failed(e) if e.to_string() == "connection reset")
    );
}

#[test]
fn records_of_the_wrong_type_are_a_type_mismatch_not_a_panic() {
    // The sink expects strings but the source emits numbers: chained, the sink's downcast fails.
    let mut graph = JobGraph::new("miswired");
    let (src, _) = items(&mut graph, "numbers", 1, vec![1u64, 2, 3]);
    let (out, _) = sink::<String>(&mut graph, "text sink", 1);
    forward(&mut graph, src, out);
    let error = run_to_failure(&graph);
    assert_eq!(error.operator, "text sink");
    assert!(
        matches!(error.error, OperatorError::TypeMismatch(_)),
        "{error}"
    );

    // Across a rebalance of the wrong type, the partitioner's router is the one to notice.
    let mut graph = JobGraph::new("miswired exchange");
    let (src, _) = items(&mut graph, "numbers", 1, vec![1u64, 2, 3]);
    let (out, _) = sink::<u64>(&mut graph, "sink", 2);
    rebalance::<u32>(&mut graph, src, out);
    let error = run_to_failure(&graph);
    assert!(
        error.operator.contains("numbers") && error.operator.contains("sink"),
        "{error}"
    );
    assert!(
        matches!(error.error, OperatorError::TypeMismatch(_)),
        "{error}"
    );
}

/// Keyed state tables on a disk that fails after `healthy` writes.
struct WornDisk {
    healthy: u32,
    tables: std::collections::BTreeMap<(String, u32, Vec<u8>), Vec<u8>>,
}

impl StateTables for WornDisk {
    fn get(&mut self, table: &str, group: u32, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .tables
            .get(&(table.to_owned(), group, key.to_vec()))
            .cloned())
    }

    fn put(&mut self, table: &str, group: u32, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        if self.healthy == 0 {
            return Err(StateError::Backend {
                table: table.to_owned(),
                key_group: Some(group),
                reason: "no space left on device".to_owned(),
            });
        }
        self.healthy -= 1;
        self.tables
            .insert((table.to_owned(), group, key.to_vec()), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, table: &str, group: u32, key: &[u8]) -> Result<(), StateError> {
        self.tables.remove(&(table.to_owned(), group, key.to_vec()));
        Ok(())
    }

    fn freeze(&mut self) -> Result<Box<dyn FrozenTables>, StateError> {
        Err(StateError::Backend {
            table: "*".to_owned(),
            key_group: None,
            reason: "not snapshotted in these tests".to_owned(),
        })
    }
}

/// Numbers keyed by themselves modulo 5 and summed, with `backend` for keyed state.
fn summing_graph(backend: StateBackend) -> JobGraph {
    let mut graph = JobGraph::new("summing");
    graph.state_backend = backend;
    let (src, _) = items(&mut graph, "numbers", 1, (0..100).collect::<Vec<u64>>());
    let sum = transform(&mut graph, "sum", 2, |info| {
        KeyedReduce::new(
            Arc::new(|a: u64, b: u64| a + b),
            Arc::new(|n: &u64| n % 5),
            KeyedStateStore::for_operator(info),
        )
    });
    let (out, _) = sink::<u64>(&mut graph, "sink", 2);
    key_by(&mut graph, src, sum, |n: &u64| n % 5);
    forward(&mut graph, sum, out);
    graph
}

#[test]
fn a_failing_state_backend_fails_the_run_with_a_state_error_naming_operator_and_key_group() {
    let graph = summing_graph(StateBackend::External(Arc::new(|_| {
        Ok(Box::new(WornDisk {
            healthy: 3,
            tables: Default::default(),
        }))
    })));
    let error = run_to_failure(&graph);
    assert_eq!(error.operator, "sum", "{error}");
    let Some(StateError::Backend {
        table, key_group, ..
    }) = error.error.state()
    else {
        panic!("expected a state backend error, got {error:?}");
    };
    assert_eq!(table, "reduce");
    assert!(key_group.is_some_and(|group| group < 128), "{error}");
    assert!(
        error.to_string().starts_with(
            "operator 'sum' failed: keyed state failed: the state backend failed on state 'reduce' (key group"
        ),
        "{error}"
    );
}

#[test]
fn state_tables_that_cannot_be_opened_fail_the_run_before_any_record() {
    let graph = summing_graph(StateBackend::External(Arc::new(|info| {
        Err(StateError::Open {
            reason: format!("no directory for subtask {}", info.subtask),
        })
    })));
    let error = run_to_failure(&graph);
    assert_eq!(error.operator, "sum");
    assert!(
        matches!(error.error.state(), Some(StateError::Open { reason }) if reason.starts_with("no directory")),
        "{error:?}"
    );
}

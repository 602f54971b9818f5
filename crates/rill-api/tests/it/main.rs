//! Jobs described and built into graphs without any runtime: the names, parallelism and
//! exchanges an executor sees, the operators the API adds on the user's behalf, and what a job
//! spec carries for its executor.

use rill_api::prelude::*;
use rill_api::{BuildError, JobSpec};
use rill_core::checkpoint::CheckpointId;
use rill_core::exchange::ExchangeKind;
use rill_core::graph::JobGraph;

/// Each operator's name and parallelism, in the order they were described.
fn operators(graph: &JobGraph) -> Vec<(&str, u32)> {
    graph
        .operators
        .iter()
        .map(|node| (node.name.as_str(), node.parallelism))
        .collect()
}

/// Each edge as the names of its ends and its exchange.
fn edges(graph: &JobGraph) -> Vec<(&str, &str, ExchangeKind)> {
    graph
        .edges
        .iter()
        .map(|edge| {
            (
                graph.operator(edge.from).name.as_str(),
                graph.operator(edge.to).name.as_str(),
                edge.exchange,
            )
        })
        .collect()
}

#[test]
fn a_job_is_built_into_a_graph_without_a_runtime() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.from_sequence(0..100)
        .name("numbers")
        .map(|n| (n % 7, 1u64))
        .name("pair")
        .key_by(|(key, _): &(u64, u64)| *key)
        .reduce(|(key, a), (_, b)| (key, a + b))
        .name("count")
        .uid("counts")
        .set_parallelism(3)
        .map(|(key, count)| format!("{key}: {count}"))
        .name("show")
        .print()
        .name("out");
    let graph = env.job_graph("counts").expect("a valid job");
    assert_eq!(
        operators(&graph),
        [
            ("numbers", 2),
            ("pair", 2),
            ("count", 3),
            ("show", 2),
            ("out", 2)
        ]
    );
    assert_eq!(
        edges(&graph),
        [
            ("numbers", "pair", ExchangeKind::Forward),
            ("pair", "count", ExchangeKind::KeyHash),
            ("count", "show", ExchangeKind::Rebalance),
            ("show", "out", ExchangeKind::Forward),
        ]
    );
    assert_eq!(graph.uids()[2], "counts");
}

#[test]
fn the_inputs_of_joins_are_wrapped_once_at_the_parallelism_of_their_streams() {
    let env = StreamEnv::new();
    let side = |name: &str| {
        env.from_sequence(0..10)
            .name(name)
            .set_parallelism(3)
            .key_by(|n: &u64| n % 4)
    };
    let (left, right) = (side("left"), side("right"));
    left.clone()
        .interval_join(right.clone(), -5, 5, |a: &u64, b: &u64| (*a, *b))
        .name("interval")
        .set_parallelism(2)
        .collect();
    left.window_join(
        right,
        WindowAssigner::GlobalCount { count: 1 },
        |a: &u64, b: &u64| a + b,
    )
    .name("window")
    .collect();
    let graph = env.job_graph("joins").expect("a valid job");
    for (from, to, exchange) in edges(&graph) {
        if from == "left" || from == "right" {
            assert_eq!(
                (to, exchange),
                ("map", ExchangeKind::Forward),
                "from {from}"
            );
        }
    }
    let wrapped: Vec<u32> = graph
        .operators
        .iter()
        .filter(|node| node.name == "map")
        .map(|node| node.parallelism)
        .collect();
    assert_eq!(
        wrapped,
        [3, 3],
        "both joins share the wrapping of each input"
    );
}

#[test]
fn a_job_spec_says_where_checkpoints_go_and_needs_a_directory_to_start_from_one() {
    let env = StreamEnv::new();
    env.from_iter(vec![1, 2]).collect();
    env.start_from_checkpoint(4);
    let error = env
        .job_spec("resumed")
        .err()
        .expect("no checkpoint directory");
    assert!(
        matches!(error, BuildError::NoCheckpointDir { checkpoint: 4 }),
        "{error}"
    );
    env.set_checkpoint_dir("checkpoints").set_workers(3);
    let JobSpec {
        graph,
        runtime,
        checkpoint_dir,
        start_from,
    } = env.job_spec("resumed").expect("a valid job");
    assert_eq!(graph.name, "resumed");
    assert_eq!(runtime.workers, 3);
    assert_eq!(checkpoint_dir, Some("checkpoints".into()));
    assert_eq!(start_from, Some(CheckpointId(4)));
}

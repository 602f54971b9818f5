//! The physical plan: which operators chain, how many input channels each subtask gets, where
//! partitioners deliver, what each instance is told about itself, and which graphs are refused.

use std::sync::{Arc, Mutex};

use rill_core::exchange::ExchangeKind;
use rill_core::graph::{GraphError, JobGraph, OperatorId};
use rill_core::key::KeyGroupRange;
use rill_core::operator::{Filter, Map};
use rill_core::plan::{ChainId, PhysicalPlan, SubtaskId};
use rill_core::topology::Topology;

use crate::support::{broadcast, forward, items, key_by, passthrough, rebalance, sink, transform};

fn numbers(graph: &mut JobGraph, name: &str, parallelism: u32) -> OperatorId {
    items(graph, name, parallelism, (0..10u64).collect()).0
}

fn double(graph: &mut JobGraph, name: &str, parallelism: u32) -> OperatorId {
    transform(graph, name, parallelism, |_| {
        Map::new(Arc::new(|x: u64| x * 2))
    })
}

fn subtask(plan: &PhysicalPlan, operator: OperatorId, index: u32) -> SubtaskId {
    SubtaskId {
        chain: plan.chain_of(operator),
        index,
    }
}

fn chain_names(plan: &PhysicalPlan) -> Vec<&str> {
    plan.chains.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn a_forward_pipeline_of_equal_parallelism_is_one_chain() {
    let mut graph = JobGraph::new("linear");
    let src = numbers(&mut graph, "src", 3);
    let map = double(&mut graph, "map", 3);
    let filter = transform(&mut graph, "filter", 3, |_| {
        Filter::new(Arc::new(|x: &u64| !x.is_multiple_of(3)))
    });
    let (out, _) = sink::<u64>(&mut graph, "sink", 3);
    forward(&mut graph, src, map);
    forward(&mut graph, map, filter);
    forward(&mut graph, filter, out);
    let plan = PhysicalPlan::new(&graph).unwrap();
    assert_eq!(chain_names(&plan), ["src -> map -> filter -> sink"]);
    let chain = &plan.chains[0];
    assert_eq!(chain.operators, [src, map, filter, out]);
    assert!(chain.inputs.is_empty() && chain.outputs.is_empty());
    assert_eq!(plan.subtasks().count(), 3);
    for op in [src, map, filter, out] {
        assert_eq!(plan.chain_of(op), ChainId(0));
    }
}

#[test]
fn a_key_by_breaks_the_chain() {
    let mut graph = JobGraph::new("keyed");
    let src = numbers(&mut graph, "src", 2);
    let map = double(&mut graph, "map", 2);
    let count = double(&mut graph, "count", 2);
    let (out, _) = sink::<u64>(&mut graph, "sink", 2);
    forward(&mut graph, src, map);
    key_by(&mut graph, map, count, |x: &u64| *x);
    forward(&mut graph, count, out);
    let plan = PhysicalPlan::new(&graph).unwrap();
    assert_eq!(chain_names(&plan), ["src -> map", "count -> sink"]);
    let keyed_edge = plan.chains[0].outputs.clone();
    assert_eq!(keyed_edge.len(), 1);
    assert_eq!(plan.chains[1].inputs, keyed_edge);
    assert_eq!(plan.subtasks().count(), 4);
}

#[test]
fn an_operator_with_two_outputs_is_not_chained_to_either() {
    let mut graph = JobGraph::new("fan-out");
    let src = numbers(&mut graph, "src", 2);
    let left = double(&mut graph, "left", 2);
    let right = double(&mut graph, "right", 2);
    forward(&mut graph, src, left);
    forward(&mut graph, src, right);
    let plan = PhysicalPlan::new(&graph).unwrap();
    let mut names = chain_names(&plan);
    names.sort();
    assert_eq!(
        names,
        ["left", "right", "src"],
        "chains are topologically, not name, ordered"
    );
    assert_eq!(plan.chain(plan.chain_of(src)).outputs.len(), 2);
    for op in [left, right] {
        let downstream = subtask(&plan, op, 1);
        assert_eq!(plan.input_channels(downstream).len(), 1);
    }
}

#[test]
fn a_union_of_two_inputs_is_not_chained_to_either() {
    let mut graph = JobGraph::new("union");
    let a = numbers(&mut graph, "a", 2);
    let b = numbers(&mut graph, "b", 2);
    let union = passthrough(&mut graph, "union", 2);
    let (out, _) = sink::<u64>(&mut graph, "sink", 2);
    forward(&mut graph, a, union);
    forward(&mut graph, b, union);
    forward(&mut graph, union, out);
    let plan = PhysicalPlan::new(&graph).unwrap();
    assert_eq!(chain_names(&plan), ["a", "b", "union -> sink"]);
    let channels = plan.input_channels(subtask(&plan, union, 1));
    assert_eq!(channels.len(), 2, "one forward channel from each input");
    assert_eq!(channels[0].upstream, subtask(&plan, a, 1));
    assert_eq!(channels[1].upstream, subtask(&plan, b, 1));
}

#[test]
fn input_channels_are_one_for_forward_and_the_upstream_parallelism_otherwise() {
    // One downstream operator fed by four edges, one of each exchange, from sources of
    // parallelism 2 (forward, which needs equal parallelism), 3, 4 and 5.
    let mut graph = JobGraph::new("channels");
    let fwd = numbers(&mut graph, "fwd", 2);
    let reb = numbers(&mut graph, "reb", 3);
    let key = numbers(&mut graph, "key", 4);
    let all = numbers(&mut graph, "all", 5);
    let down = passthrough(&mut graph, "down", 2);
    forward(&mut graph, fwd, down);
    rebalance::<u64>(&mut graph, reb, down);
    key_by(&mut graph, key, down, |x: &u64| *x);
    broadcast(&mut graph, all, down);
    let plan = PhysicalPlan::new(&graph).unwrap();
    for index in 0..2 {
        let channels = plan.input_channels(subtask(&plan, down, index));
        assert_eq!(channels.len(), 1 + 3 + 4 + 5);
        let upstream: Vec<(OperatorId, u32)> = channels
            .iter()
            .map(|c| (plan.chain(c.upstream.chain).operators[0], c.upstream.index))
            .collect();
        let mut expected = vec![(fwd, index)];
        expected.extend((0..3).map(|i| (reb, i)));
        expected.extend((0..4).map(|i| (key, i)));
        expected.extend((0..5).map(|i| (all, i)));
        assert_eq!(upstream, expected);
    }
}

/// Sources `a` (3) and `b` (2) into `fwd` (3; forward from `a`, rebalanced from `b`),
/// broadcast to `spread` (4).
fn fan_in_fan_out() -> (JobGraph, [OperatorId; 4]) {
    let mut graph = JobGraph::new("targets");
    let a = numbers(&mut graph, "a", 3);
    let b = numbers(&mut graph, "b", 2);
    let fwd = passthrough(&mut graph, "fwd", 3);
    let spread = passthrough(&mut graph, "spread", 4);
    forward(&mut graph, a, fwd);
    rebalance::<u64>(&mut graph, b, fwd);
    broadcast(&mut graph, fwd, spread);
    (graph, [a, b, fwd, spread])
}

#[test]
fn partitioner_targets_match_the_channels_they_feed() {
    let (graph, [a, b, fwd, _]) = fan_in_fan_out();
    let plan = PhysicalPlan::new(&graph).unwrap();
    // A forward partitioner has one target: the same index, on the edge's first channel.
    for index in 0..3 {
        let upstream = subtask(&plan, a, index);
        let edge = plan.chain(upstream.chain).outputs[0];
        let targets = plan.targets(upstream, edge);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].subtask, subtask(&plan, fwd, index));
        assert_eq!(targets[0].channel, 0);
    }
    // Other partitioners reach every downstream subtask, on the channel of their own index.
    let upstream = subtask(&plan, b, 1);
    let edge = plan.chain(upstream.chain).outputs[0];
    let targets = plan.targets(upstream, edge);
    let reached: Vec<(SubtaskId, usize)> = targets.iter().map(|t| (t.subtask, t.channel)).collect();
    let expected: Vec<(SubtaskId, usize)> =
        (0..3).map(|i| (subtask(&plan, fwd, i), 1 + 1)).collect();
    assert_eq!(
        reached, expected,
        "after the forward channel, b[1] feeds channel 2"
    );
    // Positions number the subtasks in the plan's order.
    for (expected, subtask) in plan.subtasks().enumerate() {
        assert_eq!(plan.position(subtask), expected);
    }
    // Each target's channel names the partitioner as its sender.
    for upstream in plan.subtasks() {
        for (output, &edge) in plan.chain(upstream.chain).outputs.iter().enumerate() {
            for (target, t) in plan.targets(upstream, edge).iter().enumerate() {
                let sender = plan.channel_senders(t.subtask)[t.channel];
                assert_eq!(
                    (sender.upstream, sender.output, sender.target),
                    (upstream, output, target)
                );
                assert_eq!(plan.input_channels(t.subtask)[t.channel].upstream, upstream);
            }
        }
    }
}

#[test]
fn the_topology_is_the_plan_as_drivers_wire_it() {
    let (graph, _) = fan_in_fan_out();
    let plan = PhysicalPlan::new(&graph).unwrap();
    let topology = Topology::new(&plan, &graph);
    assert_eq!(topology.len(), plan.subtasks().count());
    // Every channel an output feeds names that output as its source, and every input channel
    // is fed by exactly one output.
    let mut fed = 0;
    for (upstream, wiring) in topology.subtasks.iter().enumerate() {
        assert_eq!(plan.position(wiring.id), upstream);
        for (output, targets) in wiring.outputs.iter().enumerate() {
            for (target, &(downstream, channel)) in targets.iter().enumerate() {
                let source = topology.subtask(downstream).inputs[channel];
                assert_eq!(
                    (source.upstream, source.output, source.target),
                    (upstream, output, target)
                );
                fed += 1;
            }
        }
    }
    let inputs: usize = topology.subtasks.iter().map(|s| s.inputs.len()).sum();
    assert_eq!(fed, inputs);
    // Roles come from the graph's shape: sources head their chain, terminal subtasks have no
    // output edge.
    let sources = topology.subtasks.iter().filter(|s| s.is_source).count();
    let terminal: Vec<&str> = topology
        .subtasks
        .iter()
        .filter(|s| s.is_terminal)
        .map(|s| s.operators[0].as_str())
        .collect();
    assert_eq!(sources, 3 + 2);
    assert_eq!(terminal, vec!["spread"; 4]);
    assert_eq!(topology.subtask(0).name, "'a' #0");
}

#[test]
fn each_instance_is_told_its_index_parallelism_and_key_groups() {
    let mut graph = JobGraph::new("info");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let src = numbers(&mut graph, "src", 1);
    let log = seen.clone();
    let count = transform(&mut graph, "count", 3, move |info| {
        log.lock().unwrap().push(info.clone());
        Map::new(Arc::new(|x: u64| x))
    });
    key_by(&mut graph, src, count, |x: &u64| *x);
    let plan = PhysicalPlan::new(&graph).unwrap();
    for id in plan.subtasks() {
        plan.build_subtask(&graph, id, Default::default());
    }
    let mut infos = seen.lock().unwrap().clone();
    infos.sort_by_key(|info| info.subtask);
    assert_eq!(
        infos.iter().map(|i| i.subtask).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let mut groups = Vec::new();
    for info in &infos {
        assert_eq!(
            (info.name.as_str(), info.parallelism, info.max_parallelism),
            ("count", 3, 128)
        );
        assert_eq!(
            info.key_groups,
            KeyGroupRange::for_subtask(info.subtask, 3, 128)
        );
        groups.extend(info.key_groups.iter());
    }
    assert_eq!(
        groups,
        (0..128).collect::<Vec<_>>(),
        "the ranges tile the key groups in order"
    );
}

#[test]
fn graphs_that_cannot_run_are_refused_with_the_reason() {
    let refuse = |graph: &JobGraph| PhysicalPlan::new(graph).unwrap_err();

    let mut graph = JobGraph::new("mismatch");
    let src = numbers(&mut graph, "src", 2);
    let map = double(&mut graph, "map", 3);
    forward(&mut graph, src, map);
    assert_eq!(
        refuse(&graph),
        GraphError::ForwardParallelismMismatch {
            from: "src".into(),
            to: "map".into(),
            from_parallelism: 2,
            to_parallelism: 3,
        }
    );

    let mut graph = JobGraph::new("cycle");
    let src = numbers(&mut graph, "src", 1);
    let a = double(&mut graph, "a", 1);
    let b = double(&mut graph, "b", 1);
    forward(&mut graph, src, a);
    forward(&mut graph, a, b);
    forward(&mut graph, b, a);
    assert!(matches!(refuse(&graph), GraphError::Cycle(name) if name == "a" || name == "b"));

    let mut graph = JobGraph::new("sourceless");
    let a = double(&mut graph, "a", 1);
    let b = double(&mut graph, "b", 1);
    forward(&mut graph, a, b);
    forward(&mut graph, b, a);
    assert_eq!(refuse(&graph), GraphError::NoSource("sourceless".into()));
    assert_eq!(
        refuse(&JobGraph::new("empty")),
        GraphError::NoSource("empty".into())
    );

    for parallelism in [0, 129] {
        let mut graph = JobGraph::new("parallelism");
        let src = numbers(&mut graph, "src", 1);
        let map = double(&mut graph, "map", parallelism);
        rebalance::<u64>(&mut graph, src, map);
        assert_eq!(
            refuse(&graph),
            GraphError::BadParallelism {
                operator: "map".into(),
                parallelism,
                max: 128,
            }
        );
    }

    for max in [0, 32_769] {
        let mut graph = JobGraph::new("max");
        numbers(&mut graph, "src", 1);
        graph.max_parallelism = max;
        assert_eq!(refuse(&graph), GraphError::BadMaxParallelism(max));
    }

    let mut graph = JobGraph::new("checkpoints");
    numbers(&mut graph, "src", 1);
    graph.checkpoint.interval_ms = Some(0);
    let refused = refuse(&graph);
    assert!(
        matches!(
            refused,
            GraphError::BadCheckpointConfig {
                setting: "interval_ms",
                value: 0,
                ..
            }
        ),
        "{refused}"
    );
    graph.checkpoint.interval_ms = Some(1);
    graph.checkpoint.retained = 0;
    assert!(refuse(&graph).to_string().contains("retained = 0"));

    let mut graph = JobGraph::new("into a source");
    let a = numbers(&mut graph, "a", 1);
    let b = numbers(&mut graph, "b", 1);
    forward(&mut graph, a, b);
    assert!(matches!(refuse(&graph), GraphError::BadEdge(0, _)));

    let mut graph = JobGraph::new("orphan");
    numbers(&mut graph, "src", 1);
    double(&mut graph, "orphan", 1);
    assert_eq!(refuse(&graph), GraphError::NoInput("orphan".into()));
}

#[test]
fn every_exchange_kind_other_than_forward_leaves_chaining_alone() {
    for (kind, expected_chains) in [
        (ExchangeKind::Forward, 1),
        (ExchangeKind::Rebalance, 2),
        (ExchangeKind::KeyHash, 2),
        (ExchangeKind::Broadcast, 2),
    ] {
        let mut graph = JobGraph::new("kinds");
        let src = numbers(&mut graph, "src", 2);
        let map = double(&mut graph, "map", 2);
        forward(&mut graph, src, map);
        graph.edges[0].exchange = kind;
        let plan = PhysicalPlan::new(&graph).unwrap();
        assert_eq!(plan.chains.len(), expected_chains, "{kind:?}");
    }
}

//! Jobs run end to end through the driver: a keyed word count at several parallelisms, each
//! exchange delivering what it promises, a union, and bounded jobs terminating (and running
//! reproducibly) under any interleaving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use rill_core::graph::{JobGraph, OperatorId};
use rill_core::key::{KeyGroupRange, key_group_of, subtask_for_key_group};
use rill_core::keyed::KeyedReduce;
use rill_core::operator::{FlatMap, Map, Sink, SinkOperator};
use rill_core::{BoxError, Record};

use crate::driver::Driver;
use crate::support::{
    Collected, broadcast, flow, forward, items, key_by, lock, passthrough, rebalance, sink,
    sorted_values, transform,
};

const TEXT: &str = "the quick brown fox jumps over the lazy dog \
    the dog barks and the fox runs over the hill \
    a quick dog is a happy dog and a lazy fox is a sleepy fox";

fn lines() -> Vec<String> {
    // Many short lines, so that several batches and all source subtasks take part.
    TEXT.split(' ')
        .collect::<Vec<_>>()
        .chunks(3)
        .cycle()
        .take(60)
        .map(|words| words.join(" "))
        .collect()
}

/// source(lines) -> split -> key_by(word) -> running count -> sink: returns the sink's
/// collection and the counter's id.
fn word_count(source_parallelism: u32, counters: u32) -> (JobGraph, Collected<(String, u64)>) {
    let mut graph = JobGraph::new("word count");
    let (src, _) = items(&mut graph, "lines", source_parallelism, lines());
    let split = transform(&mut graph, "split", source_parallelism, |_| {
        FlatMap::new(Arc::new(|line: String| {
            line.split_whitespace()
                .map(|w| (w.to_owned(), 1u64))
                .collect::<Vec<_>>()
        }))
    });
    let count = transform(&mut graph, "count", counters, |info| {
        KeyedReduce::new(
            Arc::new(|a: (String, u64), b: (String, u64)| (a.0, a.1 + b.1)),
            Arc::new(|(word, _): &(String, u64)| word.clone()),
            rill_core::state::KeyedStateStore::new(info.max_parallelism),
        )
    });
    let (out, collected) = sink::<(String, u64)>(&mut graph, "sink", counters);
    forward(&mut graph, src, split);
    key_by(&mut graph, split, count, |(word, _): &(String, u64)| {
        word.clone()
    });
    forward(&mut graph, count, out);
    (graph, collected)
}

#[test]
fn word_count_matches_a_reference_at_every_parallelism() {
    let mut reference: BTreeMap<String, u64> = BTreeMap::new();
    for word in lines().iter().flat_map(|l| l.split_whitespace()) {
        *reference.entry(word.to_owned()).or_default() += 1;
    }
    for source_parallelism in 1..=4 {
        for counters in 1..=4 {
            for seed in 0..3 {
                let (graph, collected) = word_count(source_parallelism, counters);
                let mut driver = Driver::new(&graph, flow(4, 2), seed);
                let outcome = driver.run().unwrap();
                let case =
                    format!("sources {source_parallelism}, counters {counters}, seed {seed}");
                assert!(outcome.finished, "{case}");
                let mut emitted: BTreeMap<String, Vec<u64>> = BTreeMap::new();
                for (subtask, (word, count)) in lock(&collected).iter() {
                    let owner = subtask_for_key_group(key_group_of(word, 128), counters, 128);
                    assert_eq!(
                        *subtask, owner,
                        "{case}: '{word}' counted on a subtask not owning it"
                    );
                    emitted.entry(word.clone()).or_default().push(*count);
                }
                let finals: BTreeMap<String, u64> = emitted
                    .iter()
                    .map(|(w, counts)| (w.clone(), *counts.last().unwrap()))
                    .collect();
                assert_eq!(finals, reference, "{case}");
                for (word, counts) in &emitted {
                    assert_eq!(
                        *counts,
                        (1..=reference[word]).collect::<Vec<_>>(),
                        "{case}: '{word}'"
                    );
                }
            }
        }
    }
}

fn numbers_into(
    connect: fn(&mut JobGraph, OperatorId, OperatorId),
    sources: u32,
    sinks: u32,
    n: u64,
) -> (JobGraph, Collected<u64>) {
    let mut graph = JobGraph::new("numbers");
    let (src, _) = items(&mut graph, "numbers", sources, (0..n).collect());
    let (out, collected) = sink::<u64>(&mut graph, "sink", sinks);
    connect(&mut graph, src, out);
    (graph, collected)
}

#[test]
fn rebalance_delivers_every_record_once_and_spreads_them_evenly() {
    for seed in 0..5 {
        let (graph, collected) = numbers_into(rebalance::<u64>, 2, 3, 1000);
        assert!(
            Driver::new(&graph, flow(16, 2), seed)
                .run()
                .unwrap()
                .finished
        );
        assert_eq!(sorted_values(&collected), (0..1000).collect::<Vec<_>>());
        let mut per_sink = [0usize; 3];
        for (subtask, _) in lock(&collected).iter() {
            per_sink[*subtask as usize] += 1;
        }
        let (min, max) = (
            per_sink.iter().min().unwrap(),
            per_sink.iter().max().unwrap(),
        );
        assert!(
            max - min <= 2,
            "each of two partitioners deals within one: {per_sink:?}"
        );
    }
}

#[test]
fn broadcast_gives_every_downstream_subtask_every_record() {
    for seed in 0..5 {
        let (graph, collected) = numbers_into(broadcast, 2, 3, 300);
        assert!(
            Driver::new(&graph, flow(16, 2), seed)
                .run()
                .unwrap()
                .finished
        );
        let collected = lock(&collected);
        for subtask in 0..3 {
            let mut seen: Vec<u64> = collected
                .iter()
                .filter(|(s, _)| *s == subtask)
                .map(|(_, v)| *v)
                .collect();
            seen.sort();
            assert_eq!(seen, (0..300).collect::<Vec<_>>(), "sink {subtask}");
        }
    }
}

#[test]
fn a_key_by_sends_each_key_to_the_subtask_owning_its_key_group() {
    // The router and the plan must agree: a record reaches the subtask whose key-group range
    // (what its keyed state is told it owns, and restores) holds the record's key group.
    let (graph, collected) = numbers_into(|g, a, b| key_by(g, a, b, |x: &u64| x % 17), 3, 4, 500);
    assert!(Driver::new(&graph, flow(16, 2), 7).run().unwrap().finished);
    assert_eq!(sorted_values(&collected), (0..500).collect::<Vec<_>>());
    let mut subtasks_reached = BTreeSet::new();
    for (subtask, value) in lock(&collected).iter() {
        let group = key_group_of(&(value % 17), 128);
        assert!(
            KeyGroupRange::for_subtask(*subtask, 4, 128).contains(group),
            "{value} (key group {group}) reached subtask {subtask}"
        );
        subtasks_reached.insert(*subtask);
    }
    assert!(
        subtasks_reached.len() > 1,
        "17 keys spread over several subtasks"
    );
}

#[test]
fn a_union_of_two_sources_sees_all_records_of_both() {
    for seed in 0..5 {
        let mut graph = JobGraph::new("union");
        let (evens, _) = items(
            &mut graph,
            "evens",
            2,
            (0..200).map(|x| x * 2).collect::<Vec<u64>>(),
        );
        let (odds, _) = items(
            &mut graph,
            "odds",
            3,
            (0..100).map(|x| x * 2 + 1).collect::<Vec<u64>>(),
        );
        let union = passthrough(&mut graph, "union", 2);
        let (out, collected) = sink::<u64>(&mut graph, "sink", 2);
        forward(&mut graph, evens, union);
        rebalance::<u64>(&mut graph, odds, union);
        forward(&mut graph, union, out);
        let mut driver = Driver::new(&graph, flow(8, 2), seed);
        assert!(
            driver.run().unwrap().finished,
            "the union ends once both inputs have ended"
        );
        let mut expected: Vec<u64> = (0..200)
            .map(|x| x * 2)
            .chain((0..100).map(|x| x * 2 + 1))
            .collect();
        expected.sort();
        assert_eq!(sorted_values(&collected), expected);
    }
}

/// source -> map -> rebalance -> map -> broadcast -> sink, with the given parallelisms.
fn three_stage(parallelism: [u32; 3], n: u64) -> (JobGraph, Collected<u64>) {
    let mut graph = JobGraph::new("three stages");
    let (src, _) = items(&mut graph, "numbers", parallelism[0], (0..n).collect());
    let inc = transform(&mut graph, "inc", parallelism[0], |_| {
        Map::new(Arc::new(|x: u64| x + 1))
    });
    let dbl = transform(&mut graph, "double", parallelism[1], |_| {
        Map::new(Arc::new(|x: u64| x * 2))
    });
    let (out, collected) = sink::<u64>(&mut graph, "sink", parallelism[2]);
    forward(&mut graph, src, inc);
    rebalance::<u64>(&mut graph, inc, dbl);
    broadcast(&mut graph, dbl, out);
    (graph, collected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_bounded_job_terminates_with_every_record_under_any_interleaving(
        seed in any::<u64>(),
        parallelism in [1u32..4, 1u32..4, 1u32..4],
        batch_size in 1usize..20,
        credits in 1u32..4,
        n in 0u64..300,
    ) {
        let (graph, collected) = three_stage(parallelism, n);
        let mut driver = Driver::new(&graph, flow(batch_size, credits), seed);
        let outcome = driver.run().unwrap();
        prop_assert!(outcome.finished);
        prop_assert!(driver.partitioners_idle());
        prop_assert!(driver.max_channel_load() <= credits);
        prop_assert!(driver.max_output_load() <= credits);
        let mut expected: Vec<u64> = (0..n)
            .flat_map(|x| std::iter::repeat_n((x + 1) * 2, parallelism[2] as usize))
            .collect();
        expected.sort();
        prop_assert_eq!(sorted_values(&collected), expected);
    }
}

#[test]
fn a_seed_decides_the_run() {
    let run = |seed| {
        let (graph, collected) = three_stage([2, 3, 2], 200);
        let mut driver = Driver::new(&graph, flow(4, 2), seed);
        driver.run().unwrap();
        let order = lock(&collected).clone();
        (driver.trace(), order)
    };
    assert_eq!(run(42), run(42), "the same seed replays the same run");
    let traces: std::collections::BTreeSet<u64> = (0..8).map(|seed| run(seed).0).collect();
    assert!(
        traces.len() > 1,
        "different seeds explore different interleavings"
    );
}

#[test]
fn a_fan_out_and_a_diamond_feed_every_branch() {
    // numbers -> (forward) inc -> (forward) join
    //         -> (rebalance) dbl -> (broadcast) join -> sink
    // `numbers` has two outputs and `join` two inputs, so nothing chains across them.
    for seed in 0..5 {
        let mut graph = JobGraph::new("diamond");
        let (src, _) = items(&mut graph, "numbers", 2, (0..100).collect::<Vec<u64>>());
        let inc = transform(&mut graph, "inc", 2, |_| {
            Map::new(Arc::new(|x: u64| x + 1000))
        });
        let dbl = transform(&mut graph, "double", 3, |_| {
            Map::new(Arc::new(|x: u64| x * 2))
        });
        let join = passthrough(&mut graph, "join", 2);
        let (out, collected) = sink::<u64>(&mut graph, "sink", 2);
        forward(&mut graph, src, inc);
        rebalance::<u64>(&mut graph, src, dbl);
        forward(&mut graph, inc, join);
        broadcast(&mut graph, dbl, join);
        forward(&mut graph, join, out);
        assert!(
            Driver::new(&graph, flow(8, 2), seed)
                .run()
                .unwrap()
                .finished
        );
        let mut expected: Vec<u64> = (0..100)
            .map(|x| x + 1000)
            .chain((0..100).flat_map(|x| [x * 2, x * 2]))
            .collect();
        expected.sort();
        assert_eq!(sorted_values(&collected), expected, "seed {seed}");
    }
}

#[test]
fn two_edges_between_the_same_operators_are_two_streams() {
    let mut graph = JobGraph::new("twice");
    let (src, _) = items(&mut graph, "numbers", 2, (0..50).collect::<Vec<u64>>());
    let (out, collected) = sink::<u64>(&mut graph, "sink", 2);
    forward(&mut graph, src, out);
    rebalance::<u64>(&mut graph, src, out);
    assert!(Driver::new(&graph, flow(4, 2), 3).run().unwrap().finished);
    let expected: Vec<u64> = (0..50).flat_map(|x| [x, x]).collect();
    assert_eq!(sorted_values(&collected), expected);
}

/// A sink that logs what it writes and when it is told to finish.
struct Logging {
    subtask: u32,
    log: Collected<Option<u64>>,
}

impl Sink for Logging {
    type In = u64;

    fn write_batch(&mut self, records: Vec<Record<u64>>) -> Result<(), BoxError> {
        lock(&self.log).extend(records.iter().map(|r| (self.subtask, Some(r.value))));
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        lock(&self.log).push((self.subtask, None));
        Ok(())
    }
}

#[test]
fn every_sink_subtask_finishes_once_after_its_last_record() {
    let log: Collected<Option<u64>> = Arc::default();
    let mut graph = JobGraph::new("finish");
    let (src, _) = items(&mut graph, "numbers", 3, (0..200).collect::<Vec<u64>>());
    let into = log.clone();
    let out = transform(&mut graph, "sink", 2, move |info| {
        SinkOperator::new(
            Logging {
                subtask: info.subtask,
                log: into.clone(),
            },
            info,
        )
    });
    rebalance::<u64>(&mut graph, src, out);
    assert!(Driver::new(&graph, flow(8, 2), 11).run().unwrap().finished);
    let log = lock(&log);
    for subtask in 0..2 {
        let mine: Vec<Option<u64>> = log
            .iter()
            .filter(|(s, _)| *s == subtask)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(
            mine.iter().filter(|v| v.is_none()).count(),
            1,
            "sink {subtask}"
        );
        assert_eq!(mine.last(), Some(&None), "sink {subtask} finished last");
    }
    assert_eq!(log.len(), 200 + 2);
}

//! Credit-based flow control: with a consumer that is delivered to late, no channel holds more
//! batches than its credits, the source stops polling, and everything arrives once delivery
//! resumes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rill_core::graph::JobGraph;
use rill_core::operator::Map;
use rill_core::subtask::Step;

use crate::driver::Driver;
use crate::support::{flow, items, rebalance, sink, sorted_values, transform};

const CREDITS: u32 = 2;
const RECORDS: u64 = 10_000;

#[test]
fn a_late_consumer_bounds_every_channel_and_stops_the_source() {
    for seed in 0..10 {
        let mut graph = JobGraph::new("late sink");
        let (src, polls) = items(&mut graph, "numbers", 1, (0..RECORDS).collect());
        let (out, collected) = sink::<u64>(&mut graph, "sink", 2);
        rebalance::<u64>(&mut graph, src, out);
        let mut driver = Driver::new(&graph, flow(8, CREDITS), seed);
        driver.hold(out, 1);
        assert!(!driver.run().unwrap().finished);
        assert_eq!(
            driver.max_channel_load(),
            CREDITS,
            "seed {seed}: the held channel fills up to its credits and no further"
        );
        assert!(
            driver.max_channel_load() <= CREDITS,
            "seed {seed}: {}",
            driver.max_channel_load()
        );
        assert!(
            driver.max_output_load() <= CREDITS,
            "seed {seed}: {}",
            driver.max_output_load()
        );
        // Sink 1's channel holds `CREDITS` batches, its partitioner `CREDITS` more, and the
        // source subtask one it built but may not send.
        let polled = polls.load(Ordering::Relaxed);
        assert!(
            polled <= 2 * CREDITS as usize + 1,
            "seed {seed}: {polled} polls"
        );
        for _ in 0..10 {
            assert_eq!(driver.force_step(src, 0).unwrap(), Step::Blocked);
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            polled,
            "seed {seed}: no poll while blocked"
        );

        driver.release_all();
        assert!(driver.run().unwrap().finished, "seed {seed}");
        assert!(driver.max_channel_load() <= CREDITS);
        assert!(driver.max_output_load() <= CREDITS);
        assert_eq!(sorted_values(&collected), (0..RECORDS).collect::<Vec<_>>());
    }
}

#[test]
fn backpressure_travels_through_every_stage_to_the_source() {
    for seed in 0..5 {
        let mut graph = JobGraph::new("two hops");
        let (src, polls) = items(&mut graph, "numbers", 2, (0..RECORDS).collect());
        let map = transform(&mut graph, "inc", 3, |_| Map::new(Arc::new(|x: u64| x + 1)));
        let (out, collected) = sink::<u64>(&mut graph, "sink", 1);
        rebalance::<u64>(&mut graph, src, map);
        rebalance::<u64>(&mut graph, map, out);
        let mut driver = Driver::new(&graph, flow(8, CREDITS), seed);
        driver.hold(out, 0);
        assert!(!driver.run().unwrap().finished);
        let polled = polls.load(Ordering::Relaxed);
        assert!(
            polled < 60,
            "seed {seed}: {polled} polls of {} possible",
            RECORDS / 8
        );
        assert!(driver.max_channel_load() <= CREDITS);
        driver.release_all();
        assert!(driver.run().unwrap().finished);
        assert!(driver.max_channel_load() <= CREDITS && driver.max_output_load() <= CREDITS);
        assert_eq!(sorted_values(&collected), (1..=RECORDS).collect::<Vec<_>>());
    }
}

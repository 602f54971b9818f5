//! Watermarks through a job: the minimum rule across input channels (an operator's watermark
//! never passes what any source has emitted), watermarks strictly increase, no record arrives
//! behind its watermark, `Timestamp::MAX` comes before end of input, and a source that stops
//! advancing holds everyone back.

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use rill_core::graph::JobGraph;
use rill_core::operator::OneInputOperator;
use rill_core::source::{Source, SourceOutput, SourcePoll};
use rill_core::{BoxError, Record, Timestamp};

use crate::driver::Driver;
use crate::support::{flow, forward, lock, rebalance, source, transform};

/// One thing that happened, in the order the single-threaded driver made it happen.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    /// Source `source` (a global number) emitted this watermark.
    Emitted { source: usize, watermark: Timestamp },
    /// Operator subtask `subtask` was told this watermark.
    Watermark { subtask: u32, watermark: Timestamp },
    /// Operator subtask `subtask` processed a record with this timestamp.
    Record { subtask: u32, timestamp: Timestamp },
    /// Operator subtask `subtask` saw its input end.
    End { subtask: u32 },
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Emits `count` records whose value is their timestamp, `step` apart, with a watermark at the
/// last timestamp after every poll; then finishes, or, if `stall`, stays idle forever.
struct Timed {
    source: usize,
    time: i64,
    step: i64,
    left: u32,
    stall: bool,
    log: Log,
}

impl Source for Timed {
    type Out = i64;

    fn poll_next(&mut self, out: &mut SourceOutput<i64>) -> Result<SourcePoll, BoxError> {
        if self.left == 0 && self.stall {
            return Ok(SourcePoll::Idle);
        }
        while out.remaining() > 0 && self.left > 0 {
            self.time += self.step;
            self.left -= 1;
            out.collect_with_timestamp(self.time, Timestamp(self.time));
        }
        out.emit_watermark(Timestamp(self.time));
        let mut log = lock(&self.log);
        log.push(Seen::Emitted {
            source: self.source,
            watermark: Timestamp(self.time),
        });
        if self.left > 0 || self.stall {
            return Ok(SourcePoll::Ready);
        }
        log.push(Seen::Emitted {
            source: self.source,
            watermark: Timestamp::MAX,
        });
        Ok(SourcePoll::Finished)
    }
}

/// Passes records on and logs every record, watermark and end of input it sees.
struct WatermarkLog {
    subtask: u32,
    log: Log,
}

impl OneInputOperator for WatermarkLog {
    type In = i64;
    type Out = i64;

    fn process_batch(
        &mut self,
        input: Vec<Record<i64>>,
        out: &mut Vec<Record<i64>>,
    ) -> Result<(), BoxError> {
        let mut log = lock(&self.log);
        for record in &input {
            let timestamp = record
                .timestamp()
                .expect("every test record has a timestamp");
            log.push(Seen::Record {
                subtask: self.subtask,
                timestamp,
            });
        }
        out.extend(input);
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: Timestamp,
        _out: &mut Vec<Record<i64>>,
    ) -> Result<(), BoxError> {
        lock(&self.log).push(Seen::Watermark {
            subtask: self.subtask,
            watermark,
        });
        Ok(())
    }

    fn end_of_input(&mut self, _out: &mut Vec<Record<i64>>) -> Result<(), BoxError> {
        lock(&self.log).push(Seen::End {
            subtask: self.subtask,
        });
        Ok(())
    }
}

/// Adds a timed source whose subtask `i` is global source `first + i`, `step(i)` apart.
fn timed(
    graph: &mut JobGraph,
    name: &str,
    parallelism: u32,
    first: usize,
    count: u32,
    stall: bool,
    log: &Log,
) -> rill_core::graph::OperatorId {
    let log = log.clone();
    source(graph, name, parallelism, move |info| Timed {
        source: first + info.subtask as usize,
        time: 0,
        step: 3 + 4 * i64::from(info.subtask) + first as i64,
        left: count,
        stall,
        log: log.clone(),
    })
}

fn watermark_log(
    graph: &mut JobGraph,
    parallelism: u32,
    log: &Log,
) -> rill_core::graph::OperatorId {
    let log = log.clone();
    transform(graph, "log", parallelism, move |info| WatermarkLog {
        subtask: info.subtask,
        log: log.clone(),
    })
}

/// Checks the log of a finished run with `sources` source subtasks and `operators` operator
/// subtasks.
fn check(log: &[Seen], sources: usize, operators: u32) {
    let mut emitted = vec![Timestamp::MIN; sources];
    let mut watermark = vec![Timestamp::MIN; operators as usize];
    let mut ended = vec![false; operators as usize];
    for (at, seen) in log.iter().enumerate() {
        match *seen {
            Seen::Emitted { source, watermark } => emitted[source] = emitted[source].max(watermark),
            Seen::Watermark {
                subtask,
                watermark: w,
            } => {
                let slowest = emitted.iter().min().expect("there are sources");
                assert!(
                    w <= *slowest,
                    "#{at}: subtask {subtask} saw {w} before every source passed it ({emitted:?})"
                );
                let previous = &mut watermark[subtask as usize];
                assert!(
                    w > *previous,
                    "#{at}: subtask {subtask} saw {w} after {previous}"
                );
                *previous = w;
            }
            Seen::Record { subtask, timestamp } => {
                let w = watermark[subtask as usize];
                assert!(
                    timestamp > w,
                    "#{at}: subtask {subtask} got a record at {timestamp} behind its watermark {w}"
                );
            }
            Seen::End { subtask } => {
                assert_eq!(
                    watermark[subtask as usize],
                    Timestamp::MAX,
                    "#{at}: end of input before the last watermark"
                );
                assert!(!ended[subtask as usize], "#{at}: input ended twice");
                ended[subtask as usize] = true;
            }
        }
    }
    assert!(
        ended.iter().all(|&e| e),
        "every operator subtask saw its input end"
    );
}

/// Whether every operator subtask saw a watermark before `Timestamp::MAX`: each channel carries
/// several batches, so the last channel to end always moves the minimum on its own.
fn every_subtask_saw_a_finite_watermark(log: &[Seen], operators: u32) -> bool {
    (0..operators).all(|j| {
        log.iter().any(|s| {
            matches!(s, Seen::Watermark { subtask, watermark } if *subtask == j && *watermark < Timestamp::MAX)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn an_operator_watermark_is_the_minimum_over_its_inputs(
        seed in any::<u64>(),
        first in 1u32..4,
        second in 1u32..3,
        operators in 1u32..4,
        batch_size in 1usize..6,
    ) {
        // Two source operators (a union), one of them rebalanced, so that every operator subtask
        // has several input channels whose sources advance at different rates.
        let log = Log::default();
        let mut graph = JobGraph::new("watermarks");
        let a = timed(&mut graph, "a", first, 0, 20, false, &log);
        let b = timed(&mut graph, "b", second, first as usize, 15, false, &log);
        let op = watermark_log(&mut graph, operators, &log);
        rebalance::<i64>(&mut graph, a, op);
        rebalance::<i64>(&mut graph, b, op);
        let mut driver = Driver::new(&graph, flow(batch_size, 2), seed);
        prop_assert!(driver.run().unwrap().finished);
        let log = log.lock().unwrap();
        check(&log, (first + second) as usize, operators);
        prop_assert!(every_subtask_saw_a_finite_watermark(&log, operators), "{:?}", log);
        let records = log.iter().filter(|s| matches!(s, Seen::Record { .. })).count();
        prop_assert_eq!(records, (20 * first + 15 * second) as usize);
    }
}

#[test]
fn a_source_that_stops_advancing_holds_the_watermark_back() {
    for seed in 0..5 {
        let log = Log::default();
        let mut graph = JobGraph::new("stalled");
        // Source 0 advances by 3 to 30 and finishes; source 1 by 4 to 20, then idles forever.
        let done = timed(&mut graph, "done", 1, 0, 10, false, &log);
        let stuck = timed(&mut graph, "stuck", 1, 1, 5, true, &log);
        let op = watermark_log(&mut graph, 1, &log);
        forward(&mut graph, done, op);
        forward(&mut graph, stuck, op);
        let mut driver = Driver::new(&graph, flow(2, 2), seed);
        assert!(
            !driver.run().unwrap().finished,
            "an idle source keeps the job running"
        );
        let log = log.lock().unwrap();
        let seen: Vec<Timestamp> = log
            .iter()
            .filter_map(|s| match s {
                Seen::Watermark { watermark, .. } => Some(*watermark),
                _ => None,
            })
            .collect();
        assert_eq!(seen.last(), Some(&Timestamp(20)), "seed {seed}: {seen:?}");
        assert!(!log.contains(&Seen::End { subtask: 0 }));
        let records = log
            .iter()
            .filter(|s| matches!(s, Seen::Record { .. }))
            .count();
        assert_eq!(
            records, 15,
            "the records arrive even though the watermark waits"
        );
    }
}

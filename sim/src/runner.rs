//! Running a scenario: one seed at a time (on as many threads as asked), shrinking the fault
//! schedule of a failing seed, and summing up what the seeds did.
//!
//! A seed decides everything through three independent streams of one ChaCha8 generator: the
//! input, the fault schedule, and the world's scheduling. So a schedule can be replayed with
//! faults dropped (shrinking) while the input stays the same.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rill_core::coordinator::CompletedCheckpoint;
use xxhash_rust::xxh3::Xxh3;

use crate::accounting;
use crate::check::{Checked, STATE_ACCOUNTING, Violation, check};
use crate::connectors::{OUTPUT_TOPIC, SinkOutput};
use crate::faults::{ScheduledFault, draw_schedule};
use crate::jobs::TopicInput;
use crate::log::{LogRecord, SimLog};
use crate::scenario::{Expect, Property, Scenario};
use crate::trace::Trace;
use crate::world::{Arrival, Outcome, RebuildGraph, RunStats, World, WorldSetup};
use rill_core::log_connector::ConnectorLog;

const INPUT_STREAM: u64 = 1;
const FAULT_STREAM: u64 = 2;
const WORLD_STREAM: u64 = 3;

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// The property check.
    pub checked: Checked,
    /// What the run did.
    pub stats: RunStats,
    /// The hash of the run's trace.
    pub trace_hash: u64,
    /// The faults it was given.
    pub schedule: Vec<ScheduledFault>,
}

/// The fault schedule a seed draws.
pub fn schedule_of(scenario: &Scenario, seed: u64) -> Vec<ScheduledFault> {
    draw_schedule(&scenario.spec.faults, &mut rng(seed, FAULT_STREAM))
}

/// Runs one seed with its own schedule, or with `schedule` in its place; prints the trace if
/// `trace`.
pub fn run_seed(
    scenario: &Scenario,
    seed: u64,
    schedule: Option<Vec<ScheduledFault>>,
    trace: bool,
) -> SeedReport {
    let schedule = schedule.unwrap_or_else(|| schedule_of(scenario, seed));
    let run = catch_unwind(AssertUnwindSafe(|| {
        run_world(scenario, seed, schedule.clone(), trace)
    }));
    let (checked, stats, trace_hash) = run.unwrap_or_else(|payload| {
        let violation = Violation {
            property: "invariant",
            detail: format!(
                "the simulator {}",
                rill_core::OperatorError::from_panic(payload)
            ),
        };
        (
            Checked {
                violation: Some(violation),
                duplicates: 0,
                keys_checked: 0,
            },
            RunStats::default(),
            0,
        )
    });
    SeedReport {
        seed,
        checked,
        stats,
        trace_hash,
        schedule,
    }
}

fn run_world(
    scenario: &Scenario,
    seed: u64,
    schedule: Vec<ScheduledFault>,
    trace: bool,
) -> (Checked, RunStats, u64) {
    let spec = &scenario.spec;
    let job = &spec.job;
    let parallelism = |role: &str| scenario.parallelism(role);
    let log = SimLog::new(spec.log.commit_piece_entries);
    let mut input_rng = rng(seed, INPUT_STREAM);
    let generated = job.generate_input(&spec.input, &parallelism, &mut input_rng);
    let failed_setup = |detail: String| {
        let violation = Violation {
            property: "setup",
            detail,
        };
        let checked = Checked {
            violation: Some(violation),
            duplicates: 0,
            keys_checked: 0,
        };
        (checked, RunStats::default(), 0)
    };
    if let Err(error) = log.create_topic(OUTPUT_TOPIC, 1) {
        return failed_setup(error.to_string());
    }
    let mut input_topics = Vec::new();
    for topic in &generated.topics {
        if let Err(error) = log.create_topic(topic.topic, topic.partitions.len() as u32) {
            return failed_setup(error.to_string());
        }
        let ends: Vec<u64> = topic.partitions.iter().map(|p| p.len() as u64).collect();
        input_topics.push((topic.topic, ends.iter().sum()));
        log.plan_ends(topic.topic, ends);
    }
    let arrivals = plan_arrivals(generated.topics, spec.input.arrival_ms, &mut input_rng);
    let output = scenario.sink_output(&log);
    let graph = match scenario.job_graph(&log, &output, &BTreeMap::new()) {
        Ok(graph) => graph,
        Err(reason) => return failed_setup(reason),
    };
    let rebuild: RebuildGraph = {
        let (scenario, log, output) = (scenario.clone(), log.clone(), output.clone());
        Box::new(move |rescaled| scenario.job_graph(&log, &output, rescaled))
    };
    let setup = WorldSetup {
        graph,
        rebuild,
        log,
        input_topics,
        arrivals,
        flow: scenario.flow(),
        defect: spec.broken,
        schedule,
        limits: spec.limits,
        store_write_us: spec.checkpoint.write_ms.saturating_mul(1_000),
    };
    let world = match World::new(setup, rng(seed, WORLD_STREAM), Trace::new(trace)) {
        Ok(world) => world,
        Err(reason) => return failed_setup(reason),
    };
    let mut result = world.run();
    // The final checkpoint, too, holds each position and chunk once, where it belongs.
    if result.outcome == Outcome::Finished
        && let Some(Err(reason)) = result.latest.as_ref().map(accounting::check_checkpoint)
    {
        result.outcome = Outcome::Misrestored(format!("in the final checkpoint: {reason}"));
    }
    let final_state = result
        .latest
        .as_ref()
        .and_then(|checkpoint| job.final_state_in(checkpoint));
    let open = open_transactions(&result.log, &output);
    // What counts is what the disk holds: the machine may go down right after the job ended.
    // It is read once, for the check and for the run's hash.
    let mut contents = Xxh3::new();
    contents.update(&result.trace_hash.to_le_bytes());
    let check_committed = |committed: &[Vec<LogRecord>]| {
        hash_committed(&mut contents, committed);
        check(
            spec.property,
            job,
            &result.outcome,
            (&generated.expected, &generated.final_state),
            (committed, final_state, &open),
        )
    };
    let checked = match output.committed() {
        Some(records) => Ok(check_committed(&[records])),
        None => result
            .log
            .with_durable_committed(OUTPUT_TOPIC, check_committed),
    };
    let checked = checked.unwrap_or_else(|error| {
        contents.update(error.to_string().as_bytes());
        Checked {
            violation: Some(Violation {
                property: "storage",
                detail: format!("the committed output cannot be read back: {error}"),
            }),
            duplicates: 0,
            keys_checked: 0,
        }
    });
    let trace_hash = with_contents(contents, &open, result.latest.as_ref());
    (checked, result.stats, trace_hash)
}

/// The transactions a run left open: in the log, and in the model its sink wrote, if any (a
/// database's prepared transactions, a directory's pending and in-progress files).
fn open_transactions(log: &SimLog, output: &SinkOutput) -> Vec<String> {
    let mut open = ConnectorLog::open_transactions(log, "")
        .unwrap_or_else(|error| vec![format!("(the log cannot list them: {error})")]);
    open.extend(output.open_transactions());
    open
}

/// Adds the committed output to a run's hash, record by record (the trace itself sees how many
/// records each batch carried, not what they say).
fn hash_committed(hasher: &mut Xxh3, partitions: &[Vec<LogRecord>]) {
    for records in partitions {
        hasher.update(&(records.len() as u64).to_le_bytes());
        for record in records {
            hasher.update(&(record.value.len() as u64).to_le_bytes());
            hasher.update(&record.value);
            hasher.update(&record.timestamp.to_le_bytes());
        }
    }
}

/// A run's hash — the trace hash and the committed output ([`hash_committed`]) — extended with
/// the rest of what the run left: the transactions left open, and the final checkpoint — its
/// metadata and every snapshot, which equal state encodes to equal bytes. Two runs of a seed
/// that agree step by step but commit other records, or end in other state, differ here.
fn with_contents(mut hasher: Xxh3, open: &[String], latest: Option<&CompletedCheckpoint>) -> u64 {
    for id in open {
        hasher.update(id.as_bytes());
    }
    if let Some(latest) = latest {
        hasher.update(&rill_core::codec::encode(&latest.metadata).unwrap_or_default());
        for (subtask, snapshot) in latest.snapshots.iter() {
            hasher.update(&(*subtask as u64).to_le_bytes());
            hasher.update(&rill_core::codec::encode(snapshot).unwrap_or_default());
        }
    }
    hasher.digest()
}

/// Records a producer appends per arrival.
const ARRIVAL_RECORDS_MAX: usize = 4;

/// When each chunk of the input arrives: all at the start, or spread evenly over
/// `arrival_ms` (with jitter), in chunks of a few records per partition.
fn plan_arrivals(topics: Vec<TopicInput>, arrival_ms: u64, rng: &mut ChaCha8Rng) -> Vec<Arrival> {
    let mut arrivals = Vec::new();
    for topic in topics {
        for (partition, records) in topic.partitions.into_iter().enumerate() {
            let chunks: Vec<Vec<LogRecord>> = if arrival_ms == 0 {
                vec![records]
            } else {
                records
                    .chunks(ARRIVAL_RECORDS_MAX)
                    .map(<[LogRecord]>::to_vec)
                    .collect()
            };
            let count = chunks.len() as u64;
            for (index, records) in chunks.into_iter().enumerate() {
                let spacing_us = arrival_ms * 1_000 / count.max(1);
                let at_us = index as u64 * spacing_us + rng.random_range(0..=spacing_us / 2);
                arrivals.push(Arrival {
                    at_us,
                    topic: topic.topic,
                    partition: partition as u32,
                    records,
                });
            }
        }
    }
    arrivals.sort_by_key(|arrival| arrival.at_us);
    arrivals
}

/// Drops faults from a failing seed's schedule one by one, keeping each drop after which the
/// seed still fails; returns the smallest schedule found.
pub fn shrink(scenario: &Scenario, seed: u64, schedule: &[ScheduledFault]) -> Vec<ScheduledFault> {
    select_faults(schedule, &shrink_to_indices(scenario, seed, schedule))
}

/// [`shrink`], as the indices in `schedule` of the faults kept: what `--faults` replays.
pub fn shrink_to_indices(
    scenario: &Scenario,
    seed: u64,
    schedule: &[ScheduledFault],
) -> Vec<usize> {
    let mut kept: Vec<usize> = (0..schedule.len()).collect();
    let mut position = 0;
    while position < kept.len() {
        let mut candidate = kept.clone();
        candidate.remove(position);
        let report = run_seed(
            scenario,
            seed,
            Some(select_faults(schedule, &candidate)),
            false,
        );
        if report.checked.violation.is_some() {
            kept = candidate;
        } else {
            position += 1;
        }
    }
    kept
}

/// The faults of `schedule` at `indices` (those out of range are left out), in order.
pub fn select_faults(schedule: &[ScheduledFault], indices: &[usize]) -> Vec<ScheduledFault> {
    schedule
        .iter()
        .enumerate()
        .filter(|(index, _)| indices.contains(index))
        .map(|(_, fault)| fault.clone())
        .collect()
}

/// Whether a violation catches a broken component of a scenario checking `property`: a
/// violation of that property, of liveness (a checked property needs the job to finish), of
/// the storage contract or of state accounting — not a panic of the simulator.
fn catches(violation: &Violation, property: Property) -> bool {
    [
        property.name(),
        Property::Liveness.name(),
        "storage contract",
        STATE_ACCOUNTING,
    ]
    .contains(&violation.property)
}

/// What the seeds of one scenario did.
#[derive(Clone, Debug, Default)]
pub struct ScenarioSummary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds that held the property.
    pub passed: u64,
    /// Seeds that violated it.
    pub failed: u64,
    /// Faults injected over all seeds.
    pub faults: u64,
    /// Checkpoints completed over all seeds.
    pub checkpoints: u64,
    /// Recoveries over all seeds.
    pub recoveries: u64,
    /// Duplicate output records over all seeds (at-least-once).
    pub duplicates: u64,
    /// Seeds whose two runs differed (`--check-determinism`).
    pub nondeterministic: Vec<u64>,
    /// The failing seeds' reports, by seed.
    pub failures: Vec<SeedReport>,
}

impl ScenarioSummary {
    /// Whether the scenario met its expectation: every seed passed, or — for a broken
    /// component — some seed was caught.
    pub fn met(&self, expect: Expect, property: Property) -> bool {
        self.nondeterministic.is_empty()
            && match expect {
                Expect::Pass => self.failed == 0,
                Expect::Violation => self.failures.iter().any(|report| {
                    report
                        .checked
                        .violation
                        .as_ref()
                        .is_some_and(|violation| catches(violation, property))
                }),
            }
    }

    fn add(&mut self, report: SeedReport) {
        self.seeds += 1;
        self.faults += report.stats.faults_injected;
        self.checkpoints += report.stats.checkpoints_completed;
        self.recoveries += report.stats.recoveries;
        self.duplicates += report.checked.duplicates;
        if report.checked.violation.is_some() {
            self.failed += 1;
            self.failures.push(report);
        } else {
            self.passed += 1;
        }
    }
}

/// Runs `seeds` of a scenario on `threads` threads; `on_seed` is called after each.
pub fn run_scenario(
    scenario: &Scenario,
    seeds: &[u64],
    threads: usize,
    check_determinism: bool,
    on_seed: &(dyn Fn() + Sync),
) -> ScenarioSummary {
    let next = AtomicUsize::new(0);
    let summary = Mutex::new(ScenarioSummary::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(index) else {
                        break;
                    };
                    let report = run_seed(scenario, seed, None, false);
                    let differs = check_determinism
                        && run_seed(scenario, seed, None, false).trace_hash != report.trace_hash;
                    {
                        let mut summary = summary.lock().unwrap_or_else(|p| p.into_inner());
                        if differs {
                            summary.nondeterministic.push(seed);
                        }
                        summary.add(report);
                    }
                    on_seed();
                }
            });
        }
    });
    let mut summary = summary.into_inner().unwrap_or_else(|p| p.into_inner());
    summary.failures.sort_by_key(|report| report.seed);
    summary.nondeterministic.sort_unstable();
    summary
}

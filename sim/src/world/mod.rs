//! The simulated world: one job's subtasks, partitioners and checkpoint coordinator — the
//! `rill-core` state machines the actix runtime drives — run by a seeded scheduler on a
//! virtual clock, over FIFO links, with the simulated log and checkpoint store as disks, and
//! faults injected as the schedule says.
//!
//! # Scheduling
//! Every message travels on a link: one FIFO queue per (sender, receiver) pair, as actix keeps
//! messages between two actors in order. A message becomes deliverable after a small random
//! latency (more on a slowed link). At each step the scheduler collects what can happen now —
//! deliver the head of a link, step a subtask that has work, tick the coordinator, restart the
//! job — and lets the RNG pick one; when nothing can, the clock jumps to the next due time.
//! So the order of delivery *across* links is the RNG's, never within one. Each step costs a
//! little virtual time, so checkpoints and timeouts interleave with processing.
//!
//! The virtual clock is the job's processing time, as the wall clock is the runtime's: each
//! time it reaches a new millisecond, every live subtask's core is told before anything else
//! happens (and a new attempt's before its first step). So processing-time timers and the
//! idleness of source partitions are as deterministic as the rest.
//!
//! # What the driver does, and what it does not
//! It hands each message to its core and carries what the core emits, exactly as the actors
//! do: a subtask's snapshot is completed inline and acknowledged, the coordinator writes each
//! acknowledged snapshot to the store and the metadata last (synced), then sends the completion
//! notices. The core hands out its writes one at a time; they return at once, or after a
//! random virtual time if the scenario says writes take time. On a task failure the job fails
//! over (every subtask restarts from the latest
//! completed checkpoint, under the restart strategy); after a crash of the process it is
//! submitted again, restoring from what the checkpoint store holds. Every decision — barriers,
//! alignment, credits, when checkpoints start and complete, which state goes where — is the
//! cores'.
//!
//! # Layout
//! This file holds the world's types, the scheduler loop and the stepping of subtasks;
//! `attempts` deploys, fails over and crashes the job; `faults` arms and fires the fault
//! schedule; `delivery` hands messages to the cores and carries their replies.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use rill_core::Timestamp;
use rill_core::checkpoint::{CheckpointId, DeclineReason, SubtaskSnapshot};
use rill_core::coordinator::{
    CompletedCheckpoint, CoordinatorAction, CoordinatorCore, StoreWrite, WriteTarget,
};
use rill_core::element::Batch;
use rill_core::flow::FlowConfig;
use rill_core::graph::JobGraph;
use rill_core::job_master::JobMasterCore;
use rill_core::layout::JobLayout;
use rill_core::partitioner::{PartitionerCore, PartitionerTransmit};
use rill_core::plan::PhysicalPlan;
use rill_core::subtask::{Step, SubtaskCore, SubtaskTransmit};
use rill_core::topology::Topology;
use rill_store::{CheckpointStore, StoredValue};

use crate::accounting::Restores;
use crate::disk::UnsyncedFate;
use crate::faults::{CheckpointValue, CoordinatorPoint, Defect, Fault, ScheduledFault};
use crate::log::{LogRecord, SimLog};
use crate::scenario::Limits;
use crate::storage::SimDisk;
use crate::trace::Trace;

mod attempts;
mod delivery;
mod faults;

/// Virtual microseconds a message takes at least, and at most without a slowed link.
const LATENCY_US: std::ops::RangeInclusive<u64> = 5..=100;
/// Virtual microseconds one subtask step costs.
const STEP_COST_US: std::ops::RangeInclusive<u64> = 10..=50;
/// Virtual microseconds the scheduler's own step may take.
const SCHEDULER_QUANTUM_US: std::ops::RangeInclusive<u64> = 0..=10;
/// How long an idle source waits before polling again.
const SOURCE_IDLE_PAUSE_US: u64 = 1_000;
/// A crash during recovery comes within this many steps of the new attempt.
const RECOVERY_CRASH_WITHIN_STEPS: u64 = 60;
/// A failed attempt's actors go on for at most this many scheduler steps before they stop.
const STOP_STEPS_MAX: u64 = 40;
/// A crash during a commit comes after fewer than this many of its writes (one per piece).
const COMMIT_CRASH_WITHIN_WRITES: u32 = 4;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every subtask finished.
    Finished,
    /// The job ended with an error (restarts exhausted, or state that cannot be restored).
    Failed(String),
    /// The job neither finished nor failed within the limits.
    Stuck(String),
    /// A store found its contract broken.
    StorageViolated(String),
    /// A restore lost, doubled or misplaced state (see [`crate::accounting`]).
    Misrestored(String),
    /// The job refused to go on, as it must once a fault damaged the checkpoints it needed:
    /// none is intact, or the newest intact one is older than what a sink committed (a
    /// rewind, which would write that output again).
    Refused(String),
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Scheduler steps.
    pub steps: u64,
    /// Faults that fired.
    pub faults_injected: u64,
    /// Checkpoints completed.
    pub checkpoints_completed: u64,
    /// Times the job was deployed again (fail-overs and resubmissions).
    pub recoveries: u64,
    /// Submissions that fell back past checkpoints a fault had damaged.
    pub fallbacks: u64,
    /// Whether the job ended refusing to go on (1) or not (0).
    pub refusals: u64,
}

/// What a run left.
pub struct RunResult {
    /// How it ended.
    pub outcome: Outcome,
    /// What it did.
    pub stats: RunStats,
    /// The hash of its trace.
    pub trace_hash: u64,
    /// The log, with the committed output.
    pub log: SimLog,
    /// The latest completed checkpoint the job master knew at the end (the final one, if the
    /// job finished).
    pub latest: Option<CompletedCheckpoint>,
}

/// Everything a world is built from.
pub struct WorldSetup {
    /// The job.
    pub graph: JobGraph,
    /// Builds the job again with other parallelism (for rescaling faults).
    pub rebuild: RebuildGraph,
    /// The log, with the input written.
    pub log: SimLog,
    /// Topics the sources read, and their total size: faults are placed by progress in them.
    pub input_topics: Vec<(&'static str, u64)>,
    /// The input, as a producer appends it, by time.
    pub arrivals: Vec<Arrival>,
    /// Flow control.
    pub flow: FlowConfig,
    /// The broken component, if any.
    pub defect: Option<Defect>,
    /// The faults.
    pub schedule: Vec<ScheduledFault>,
    /// Limits.
    pub limits: Limits,
    /// Virtual µs each write to the checkpoint store takes (0: at once).
    pub store_write_us: u64,
}

/// Records a producer appends to an input partition at a virtual time (durably: a producer
/// is acknowledged once its records are synced).
pub struct Arrival {
    /// When.
    pub at_us: u64,
    /// The topic.
    pub topic: &'static str,
    /// The partition.
    pub partition: u32,
    /// The records.
    pub records: Vec<LogRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Subtask(usize),
    Partitioner(usize),
    Coordinator,
}

enum Message {
    Batch {
        channel: usize,
        batch: Batch,
    },
    OutputCredit {
        output: usize,
        credits: u32,
    },
    TargetCredit {
        target: usize,
        credits: u32,
    },
    Trigger(CheckpointId),
    Notify {
        checkpoint: CheckpointId,
        last: bool,
    },
    Ack {
        checkpoint: CheckpointId,
        subtask: usize,
        snapshot: SubtaskSnapshot,
    },
    Decline {
        checkpoint: CheckpointId,
        reason: DeclineReason,
    },
    Ended {
        subtask: usize,
    },
}

impl Message {
    /// What the trace hash takes of the message's contents.
    fn digest(&self) -> u64 {
        match self {
            Message::Batch { channel, batch } => {
                ((*channel as u64) << 32)
                    ^ batch.record_count() as u64
                    ^ ((batch.events.len() as u64) << 48)
            }
            Message::OutputCredit { credits, .. } | Message::TargetCredit { credits, .. } => {
                u64::from(*credits)
            }
            Message::Trigger(checkpoint) | Message::Notify { checkpoint, .. } => checkpoint.0,
            Message::Ack {
                checkpoint,
                snapshot,
                ..
            } => checkpoint.0 ^ (snapshot.state_bytes() << 16),
            Message::Decline { checkpoint, .. } => checkpoint.0,
            Message::Ended { subtask } => *subtask as u64,
        }
    }

    fn kind(&self) -> (u8, &'static str) {
        match self {
            Message::Batch { .. } => (1, "batch"),
            Message::OutputCredit { .. } => (2, "output credit"),
            Message::TargetCredit { .. } => (3, "target credit"),
            Message::Trigger(_) => (4, "trigger"),
            Message::Notify { .. } => (5, "complete notice"),
            Message::Ack { .. } => (6, "ack"),
            Message::Decline { .. } => (7, "decline"),
            Message::Ended { .. } => (8, "ended"),
        }
    }
}

struct Link {
    to: Endpoint,
    /// Whether messages arrive in the order sent. One link is not: acknowledgements of
    /// snapshots encoded off the subtask's thread (as the runtime does on a blocking thread)
    /// reach the coordinator in any order, also among themselves.
    ordered: bool,
    queue: VecDeque<(u64, Message)>,
    last_ready_us: u64,
    slow_extra_us: u64,
    slow_until_us: u64,
}

impl Link {
    /// When the next message can be delivered.
    fn next_ready(&self) -> Option<u64> {
        if self.ordered {
            self.queue.front().map(|&(at, _)| at)
        } else {
            self.queue.iter().map(|&(at, _)| at).min()
        }
    }
}

struct SimSubtask {
    core: SubtaskCore,
    wants_step: bool,
    ready_at_us: u64,
    /// For each input channel: the link its credits go back on, and the target index there.
    credit_links: Vec<(usize, usize)>,
    /// For each output: the link to its partitioner.
    output_links: Vec<usize>,
    to_coordinator: usize,
    /// Acknowledgements of snapshots that were encoded off the subtask's thread.
    encoded_acks: usize,
    from_coordinator: usize,
    slow_factor: u64,
    slow_until_us: u64,
}

struct SimPartitioner {
    core: PartitionerCore,
    upstream: usize,
    output: usize,
    credit_link: usize,
    /// For each target: the link, and the input channel at the target.
    target_links: Vec<(usize, usize)>,
}

/// A failed attempt on its way out.
#[derive(Clone, Copy)]
struct Stopping {
    /// From this step on, the coordinator takes no message and no tick.
    coordinator_stops_at: u64,
    /// At this step, every actor of the attempt has stopped.
    stopped_at: u64,
}

struct Attempt {
    /// Its number, as the job master counts them.
    number: u32,
    subtasks: Vec<SimSubtask>,
    partitioners: Vec<SimPartitioner>,
    links: Vec<Link>,
    /// When each link's next message can be delivered (`u64::MAX`: none is queued), kept
    /// beside the links so that the scheduler's scan of every link each step stays cheap.
    links_ready_us: Vec<u64>,
    coordinator: CoordinatorCore,
    next_tick_us: u64,
    /// The virtual millisecond its subtasks were last told as processing time.
    processing_time_ms: Option<u64>,
    /// The subtask that crashed or failed: it does nothing more.
    dead: Option<usize>,
    /// A crash comes once the scheduler reaches this step (a crash during recovery).
    crash_at_step: Option<u64>,
    /// The attempt failed and is stopping.
    stopping: Option<Stopping>,
    /// The coordinator's write to the checkpoint store under way (when writes take time), and
    /// when it returns.
    write: Option<(StoreWrite, u64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Redeploy {
    /// The job master's restart delay has passed.
    RestartDue,
    /// A submission after a crash of the process: restore from the store.
    Resubmit,
}

#[derive(Clone, Copy)]
enum Action {
    /// The coordinator's write to the checkpoint store returns.
    Write,
    Deliver(usize),
    Step(usize),
    Tick,
    Redeploy,
    Produce,
    /// The failed attempt has nothing left to do: it stops now.
    Stopped,
}

/// The job's graph and everything derived from it: what a rescale replaces.
struct Shape {
    graph: JobGraph,
    plan: PhysicalPlan,
    layout: JobLayout,
    /// The subtasks by position, their roles and channels: what the runtime wires too.
    topology: Topology,
}

impl Shape {
    fn new(graph: JobGraph) -> Result<Self, String> {
        let plan = PhysicalPlan::new(&graph).map_err(|error| error.to_string())?;
        let layout = plan.layout(&graph);
        let topology = Topology::new(&plan, &graph);
        Ok(Shape {
            graph,
            plan,
            layout,
            topology,
        })
    }

    /// How many subtasks the job has.
    fn subtasks(&self) -> usize {
        self.topology.len()
    }
}

/// Builds the job's graph, given the roles whose parallelism differs from the scenario's (or
/// says why it cannot).
pub type RebuildGraph = Box<dyn Fn(&BTreeMap<String, u32>) -> Result<JobGraph, String>>;

/// One simulated run.
pub struct World {
    rng: ChaCha8Rng,
    now_us: u64,
    shape: Shape,
    /// Builds the job's graph with the parallelism of some roles changed.
    rebuild: RebuildGraph,
    /// The roles a fault rescaled, with their parallelism now.
    rescaled: BTreeMap<String, u32>,
    flow: FlowConfig,
    log: SimLog,
    /// Virtual µs each write to the checkpoint store takes (0: at once).
    store_write_us: u64,
    /// The disk under the checkpoint store, which faults crash and tear.
    disk: SimDisk,
    /// `rill-store`'s checkpoint store, on the simulated disk.
    store: CheckpointStore,
    /// The restores so far, accounted for.
    restores: Restores,
    /// The values of checkpoints that faults damaged on the store's disk.
    damaged: Vec<(CheckpointId, StoredValue)>,
    /// Where the running process's job started: a checkpoint, or none.
    starts_from: Option<CheckpointId>,
    /// Whether it started there falling back past checkpoints a fault damaged: its sinks may
    /// have committed more, and must then refuse to start.
    fell_back: bool,
    /// The refusal a sink owed, once one refused: the job's failure is its right end.
    refusal: Option<String>,
    /// The job master of the running process; gone with a crash of the process.
    master: Option<JobMasterCore<String, ()>>,
    attempt: Option<Attempt>,
    /// Attempts deployed so far, by every master of the run.
    deployments: u32,
    /// Times the process was started again after a crash.
    resubmissions: u32,
    redeploy: Option<(u64, Redeploy)>,
    outcome: Option<Outcome>,
    schedule: Vec<ScheduledFault>,
    armed: Vec<Fault>,
    recovery_crashes_left: u32,
    defect: Option<Defect>,
    input_topics: Vec<(&'static str, u64)>,
    arrivals: VecDeque<Arrival>,
    progress: f64,
    limits: Limits,
    ready: Vec<Action>,
    trace: Trace,
    stats: RunStats,
    /// Records delivered to subtasks and partitioners so far: part of what shows progress.
    records_delivered: u64,
}

/// What moves when a run makes progress; a run whose marks stay put too long is stuck.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ProgressMarks {
    records_delivered: u64,
    checkpoints_completed: u64,
    recoveries: u64,
    faults_injected: u64,
    arrivals_left: usize,
}

/// A run that made no progress for this long (virtual µs, beyond twice the checkpoint
/// timeout) is stuck, unless its scenario says otherwise.
const STALL_BEYOND_TIMEOUTS_US: u64 = 1_000_000;

impl World {
    /// A world about to deploy the job for the first time.
    pub fn new(setup: WorldSetup, rng: ChaCha8Rng, trace: Trace) -> Result<Self, String> {
        let shape = Shape::new(setup.graph)?;
        let disk = SimDisk::tearing();
        let mut store = CheckpointStore::on(Arc::new(disk.clone()), "the simulated disk");
        if let Some(defect) = setup.defect {
            store.plant_defect(defect);
            setup.log.plant_defect(defect);
        }
        Ok(World {
            rng,
            now_us: 0,
            shape,
            rebuild: setup.rebuild,
            rescaled: BTreeMap::new(),
            flow: setup.flow,
            log: setup.log,
            store,
            disk,
            restores: Restores::default(),
            damaged: Vec::new(),
            starts_from: None,
            fell_back: false,
            refusal: None,
            master: None,
            attempt: None,
            deployments: 0,
            resubmissions: 0,
            redeploy: Some((0, Redeploy::Resubmit)),
            outcome: None,
            schedule: setup.schedule,
            armed: Vec::new(),
            recovery_crashes_left: 0,
            defect: setup.defect,
            input_topics: setup.input_topics,
            arrivals: setup.arrivals.into(),
            progress: 0.0,
            limits: setup.limits,
            store_write_us: setup.store_write_us,
            ready: Vec::new(),
            trace,
            stats: RunStats::default(),
            records_delivered: 0,
        })
    }

    /// Runs until the job finishes, fails, stops making progress, or exceeds the limits.
    pub fn run(mut self) -> RunResult {
        let stall_us = match self.limits.stall_ms {
            Some(stall_ms) => stall_ms.saturating_mul(1_000),
            None => (self.shape.graph.checkpoint.timeout_ms.saturating_mul(2_000))
                .saturating_add(STALL_BEYOND_TIMEOUTS_US),
        };
        let mut marks = self.progress_marks();
        let mut progressed_at_us = self.now_us;
        while self.outcome.is_none() {
            if self.stats.steps >= self.limits.max_steps
                || self.now_us >= self.limits.max_virtual_ms.saturating_mul(1_000)
            {
                self.outcome = Some(Outcome::Stuck(self.stuck_reason()));
                break;
            }
            let now_marks = self.progress_marks();
            if now_marks != marks {
                (marks, progressed_at_us) = (now_marks, self.now_us);
            } else if self.now_us.saturating_sub(progressed_at_us) > stall_us {
                self.outcome = Some(Outcome::Stuck(format!(
                    "no progress (no record delivered, checkpoint completed, attempt deployed, fault fired or input appended) for {} virtual ms: {}",
                    stall_us / 1_000,
                    self.stuck_reason()
                )));
                break;
            }
            self.arm_due_faults();
            if self.outcome.is_some() {
                break;
            }
            let Some(action) = self.pick_action() else {
                self.outcome = Some(Outcome::Stuck(format!(
                    "nothing can happen any more: {}",
                    self.stuck_reason()
                )));
                break;
            };
            self.stats.steps += 1;
            self.perform(action);
            self.now_us += self.rng.random_range(SCHEDULER_QUANTUM_US);
            self.advance_processing_time();
        }
        let mut outcome = self.outcome.take().unwrap_or(Outcome::Finished);
        self.stats.refusals = u64::from(matches!(outcome, Outcome::Refused(_)));
        // The job master kept the newest checkpoint's metadata; its snapshots are in the store.
        let latest = match self.master.as_ref().and_then(|m| m.latest().cloned()) {
            Some(retained) => match self.store.read_back(&self.shape.graph.name, retained) {
                Ok(latest) => Some(latest),
                Err(error) => {
                    if outcome == Outcome::Finished {
                        outcome = Outcome::StorageViolated(format!(
                            "the final checkpoint cannot be read back: {error}"
                        ));
                    }
                    None
                }
            },
            None => None,
        };
        RunResult {
            outcome,
            stats: self.stats,
            trace_hash: self.trace.hash(),
            log: self.log,
            latest,
        }
    }

    fn progress_marks(&self) -> ProgressMarks {
        ProgressMarks {
            records_delivered: self.records_delivered,
            checkpoints_completed: self.stats.checkpoints_completed,
            recoveries: self.stats.recoveries,
            faults_injected: self.stats.faults_injected,
            arrivals_left: self.arrivals.len(),
        }
    }

    fn stuck_reason(&self) -> String {
        match &self.attempt {
            Some(attempt) => {
                let waiting: Vec<String> = attempt
                    .subtasks
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !s.core.is_finished())
                    .map(|(index, _)| self.subtask_name(index))
                    .collect();
                format!(
                    "after {} steps and {:.1} virtual ms, {} of {} subtasks have not finished ({}); {} checkpoints in progress",
                    self.stats.steps,
                    self.now_us as f64 / 1000.0,
                    waiting.len(),
                    attempt.subtasks.len(),
                    waiting.join(", "),
                    attempt.coordinator.in_progress()
                )
            }
            None => format!("after {} steps no attempt is running", self.stats.steps),
        }
    }

    fn subtask_name(&self, index: usize) -> String {
        self.shape.topology.subtask(index).name.clone()
    }

    // ---- scheduling ----

    fn pick_action(&mut self) -> Option<Action> {
        // Reused from step to step: the scheduler allocates nothing in its loop.
        let mut ready = std::mem::take(&mut self.ready);
        let picked = self.pick_from(&mut ready);
        self.ready = ready;
        picked
    }

    fn pick_from(&mut self, ready: &mut Vec<Action>) -> Option<Action> {
        loop {
            ready.clear();
            let mut next_due = u64::MAX;
            if let Some(arrival) = self.arrivals.front() {
                if arrival.at_us <= self.now_us {
                    ready.push(Action::Produce);
                } else {
                    next_due = next_due.min(arrival.at_us);
                }
            }
            if let Some((at, _)) = self.redeploy {
                if at <= self.now_us {
                    ready.push(Action::Redeploy);
                } else {
                    next_due = next_due.min(at);
                }
            }
            if let Some(attempt) = &self.attempt {
                let steps = self.stats.steps;
                let stopping = attempt.stopping;
                let dead = attempt.dead;
                let coordinator_stopped =
                    stopping.is_some_and(|stopping| steps >= stopping.coordinator_stops_at);
                for (index, &at) in attempt.links_ready_us.iter().enumerate() {
                    if at == u64::MAX {
                        continue;
                    }
                    let stopped = match attempt.links[index].to {
                        Endpoint::Subtask(to) => dead == Some(to),
                        Endpoint::Coordinator => coordinator_stopped,
                        Endpoint::Partitioner(_) => false,
                    };
                    if stopped {
                        continue;
                    }
                    if at <= self.now_us {
                        ready.push(Action::Deliver(index));
                    } else {
                        next_due = next_due.min(at);
                    }
                }
                for (index, subtask) in attempt.subtasks.iter().enumerate() {
                    if subtask.wants_step && !subtask.core.is_finished() && dead != Some(index) {
                        if subtask.ready_at_us <= self.now_us {
                            ready.push(Action::Step(index));
                        } else {
                            next_due = next_due.min(subtask.ready_at_us);
                        }
                    }
                }
                if !coordinator_stopped {
                    if attempt.next_tick_us <= self.now_us {
                        ready.push(Action::Tick);
                    } else {
                        next_due = next_due.min(attempt.next_tick_us);
                    }
                }
                if let Some((_, done_us)) = attempt.write {
                    if done_us <= self.now_us {
                        ready.push(Action::Write);
                    } else {
                        next_due = next_due.min(done_us);
                    }
                }
                // A stopping coordinator lets its write under way finish first.
                if stopping.is_some() && ready.is_empty() && attempt.write.is_none() {
                    // Nothing more the stopping attempt can do now: it has stopped.
                    return Some(Action::Stopped);
                }
            }
            if let Some(&action) = ready.choose(&mut self.rng) {
                return Some(action);
            }
            if next_due == u64::MAX {
                return None;
            }
            self.now_us = next_due;
            self.advance_processing_time();
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Redeploy => match self.redeploy.take() {
                Some((_, Redeploy::Resubmit)) => self.submit(),
                Some((_, Redeploy::RestartDue)) => {
                    if let Some(master) = &mut self.master {
                        master.handle_restart_due();
                    }
                    self.perform_master_actions();
                }
                None => {}
            },
            Action::Deliver(link) => self.deliver(link),
            Action::Step(subtask) => self.step_subtask(subtask),
            Action::Tick => self.tick(),
            Action::Produce => self.produce(),
            Action::Write => self.complete_write(),
            Action::Stopped => {
                let steps = self.stats.steps;
                if let Some(stopping) = self.attempt.as_mut().and_then(|a| a.stopping.as_mut()) {
                    stopping.stopped_at = steps;
                    stopping.coordinator_stops_at = stopping.coordinator_stops_at.min(steps);
                }
            }
        }
        let steps = self.stats.steps;
        if let Some(attempt) = &mut self.attempt
            && attempt.crash_at_step.is_some_and(|step| steps >= step)
        {
            attempt.crash_at_step = None;
            let target = self.rng.random_range(0..self.shape.subtasks());
            let name = self.subtask_name(target);
            self.trace_fault(&format!("crash of {name} during recovery"));
            self.fail_over(format!("{name} crashed during recovery"), Some(target));
        }
        self.finish_stopping();
    }

    fn trace(&mut self, kind: u8, ids: [u64; 3], text: impl FnOnce() -> String) {
        self.trace.step(self.now_us, kind, ids, text);
    }

    fn trace_fault(&mut self, what: &str) {
        self.stats.faults_injected += 1;
        self.trace(100, [self.stats.faults_injected, 0, 0], || {
            format!("FAULT: {what}")
        });
    }

    fn send(&mut self, index: usize, message: Message) {
        let latency = self.rng.random_range(LATENCY_US);
        let now = self.now_us;
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let link = &mut attempt.links[index];
        let extra = if link.slow_until_us > now {
            link.slow_extra_us
        } else {
            0
        };
        let mut ready = now + latency + extra;
        if link.ordered {
            ready = ready.max(link.last_ready_us);
            link.last_ready_us = ready;
        } else {
            // Encoding takes a while, more for more state.
            ready += self.rng.random_range(LATENCY_US);
        }
        link.queue.push_back((ready, message));
        attempt.links_ready_us[index] = link.next_ready().unwrap_or(u64::MAX);
    }

    // ---- stepping ----

    fn step_subtask(&mut self, index: usize) {
        let cost = self.rng.random_range(STEP_COST_US);
        let now = self.now_us;
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let subtask = &mut attempt.subtasks[index];
        let step = subtask.core.step();
        let factor = if subtask.slow_until_us > now {
            subtask.slow_factor
        } else {
            1
        };
        match step {
            Ok(Step::Progress) => subtask.ready_at_us = now + cost * factor,
            Ok(Step::Blocked) => subtask.wants_step = false,
            Ok(Step::Idle) => subtask.ready_at_us = now + SOURCE_IDLE_PAUSE_US,
            Ok(Step::Finished) => subtask.wants_step = false,
            Err(error) => {
                let name = self.subtask_name(index);
                self.trace(31, [index as u64, 0, 0], || {
                    format!("{name} failed: {error}")
                });
                self.note_refusal(&error);
                self.fail_over(format!("{name} failed: {error}"), Some(index));
                return;
            }
        }
        let label = match step {
            Ok(Step::Progress) => 0,
            Ok(Step::Blocked) => 1,
            Ok(Step::Idle) => 2,
            _ => 3,
        };
        if self.trace.is_printing() {
            let name = self.subtask_name(index);
            self.trace(30, [index as u64, label, 0], || {
                format!("step {name}: {step:?}")
            });
        } else {
            self.trace(30, [index as u64, label, 0], String::new);
        }
        self.carry_subtask_transmits(index);
        if self.shape.topology.subtask(index).is_source {
            self.update_progress();
        }
        if let Ok(Step::Finished) = step
            && let (Some(master), Some(attempt)) = (&mut self.master, &self.attempt)
        {
            master.handle_subtask_finished(attempt.number, index);
            self.perform_master_actions();
            if self.outcome == Some(Outcome::Finished) {
                self.trace(40, [0, 0, 0], || {
                    "every subtask finished: the job is done".to_owned()
                });
            }
        }
    }

    /// Tells every live subtask of the attempt the virtual clock's millisecond as processing
    /// time, if it has not heard it yet, and carries what its operators emit.
    fn advance_processing_time(&mut self) {
        let now_ms = self.now_us / 1_000;
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        if attempt.processing_time_ms == Some(now_ms) {
            return;
        }
        attempt.processing_time_ms = Some(now_ms);
        let dead = attempt.dead;
        let now = Timestamp(i64::try_from(now_ms).unwrap_or(i64::MAX));
        for index in 0..attempt.subtasks.len() {
            let Some(attempt) = &mut self.attempt else {
                return;
            };
            let core = &mut attempt.subtasks[index].core;
            if dead == Some(index) || core.is_finished() {
                continue;
            }
            if let Err(error) = core.advance_processing_time(now) {
                let name = self.subtask_name(index);
                self.trace(32, [index as u64, 0, 0], || {
                    format!("{name} failed at processing time {now}: {error}")
                });
                self.fail_over(format!("{name} failed: {error}"), Some(index));
                return;
            }
            self.carry_subtask_transmits(index);
        }
    }

    fn update_progress(&mut self) {
        let (read, total) = self
            .input_topics
            .iter()
            .fold((0, 0), |(read, total), &(topic, size)| {
                (read + self.log.records_read(topic), total + size)
            });
        self.progress = if total == 0 {
            1.0
        } else {
            read as f64 / total as f64
        };
    }

    fn produce(&mut self) {
        let Some(arrival) = self.arrivals.pop_front() else {
            return;
        };
        let (topic, partition, count) = (arrival.topic, arrival.partition, arrival.records.len());
        self.trace(50, [u64::from(partition), count as u64, 0], || {
            format!("the producer appends {count} records to '{topic}' partition {partition}")
        });
        // The topics were created with these partitions before the run: the log refusing the
        // producer is a broken contract.
        let appended = self
            .log
            .append(topic, partition, arrival.records)
            .and_then(|()| self.log.flush());
        if let Err(error) = appended {
            self.outcome = Some(Outcome::StorageViolated(format!(
                "the producer's append to '{topic}' partition {partition}: {error}"
            )));
        }
    }

    fn tick(&mut self) {
        let now_ms = self.now_us / 1_000;
        let tick_us = self.shape.graph.checkpoint.tick_interval_ms() * 1_000;
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        attempt.next_tick_us = self.now_us + tick_us;
        attempt.coordinator.handle_tick(now_ms);
        self.perform_coordinator_actions();
    }
}

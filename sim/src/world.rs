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
//! # What the driver does, and what it does not
//! It hands each message to its core and carries what the core emits, exactly as the actors
//! do: a subtask's snapshot is completed inline and acknowledged, the coordinator writes each
//! acknowledged snapshot to the store and the metadata last (synced), then sends the completion
//! notices. On a task failure the job fails over (every subtask restarts from the latest
//! completed checkpoint, under the restart strategy); after a crash of the process it is
//! submitted again, restoring from what the checkpoint store holds. Every decision — barriers,
//! alignment, credits, when checkpoints start and complete, which state goes where — is the
//! cores'.

use std::collections::{BTreeMap, VecDeque};

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use rill_core::checkpoint::{CheckpointId, CheckpointMode, DeclineReason, SubtaskSnapshot};
use rill_core::coordinator::{CoordinatorAction, CoordinatorCore};
use rill_core::element::Batch;
use rill_core::flow::FlowConfig;
use rill_core::graph::{JobGraph, OperatorKind};
use rill_core::layout::{JobLayout, start_attempt};
use rill_core::partitioner::{PartitionerCore, PartitionerTransmit};
use rill_core::plan::{PhysicalPlan, SubtaskId};
use rill_core::subtask::{Step, SubtaskCore, SubtaskTransmit};

use crate::checkpoints::{SimCheckpointStore, StoreError, StoreOp, StoredCheckpoint};
use crate::disk::UnsyncedFate;
use crate::faults::{CoordinatorPoint, Defect, Fault, ScheduledFault, TornWrite};
use crate::log::{LogRecord, SimLog};
use crate::scenario::Limits;
use crate::trace::Trace;

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
/// With the credit-leaking partitioner, every this-many-th upstream credit is lost.
const LEAKED_CREDIT_EVERY: u64 = 7;

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
    pub latest: Option<StoredCheckpoint>,
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
    credits_returned: u64,
}

/// A failed attempt on its way out.
#[derive(Clone, Copy)]
struct Stopping {
    /// The subtask that crashed or failed: it does nothing more.
    dead: Option<usize>,
    /// From this step on, the coordinator takes no message and no tick.
    coordinator_stops_at: u64,
    /// At this step, every actor of the attempt has stopped.
    stopped_at: u64,
    /// The restart strategy's delay before the next attempt.
    restart_delay_us: u64,
}

struct Attempt {
    subtasks: Vec<SimSubtask>,
    partitioners: Vec<SimPartitioner>,
    links: Vec<Link>,
    coordinator: CoordinatorCore,
    /// Acknowledged snapshots of checkpoints in progress.
    acks: BTreeMap<CheckpointId, BTreeMap<usize, SubtaskSnapshot>>,
    next_tick_us: u64,
    unfinished: usize,
    /// A crash comes once the scheduler reaches this step (a crash during recovery).
    crash_at_step: Option<u64>,
    /// The attempt failed and is stopping.
    stopping: Option<Stopping>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Redeploy {
    /// A fail-over: the job master still knows the latest checkpoint.
    FailOver,
    /// A submission after a crash of the process: restore from the store.
    Resubmit,
}

#[derive(Clone, Copy)]
enum Action {
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
    /// The graph the broken subtask is built from (barriers not aligned).
    unaligned_graph: Option<JobGraph>,
    plan: PhysicalPlan,
    layout: JobLayout,
    ids: Vec<SubtaskId>,
    is_source: Vec<bool>,
    has_sink: Vec<bool>,
    operators_of: Vec<Vec<String>>,
}

impl Shape {
    fn new(graph: JobGraph, defect: Option<Defect>) -> Result<Self, String> {
        let plan = PhysicalPlan::new(&graph).map_err(|error| error.to_string())?;
        let layout = plan.layout(&graph);
        let ids: Vec<SubtaskId> = plan.subtasks().collect();
        let is_source = ids
            .iter()
            .map(|id| {
                let head = plan.chain(id.chain).operators[0];
                matches!(graph.operator(head).kind, OperatorKind::Source(_))
            })
            .collect();
        let operators_of: Vec<Vec<String>> = ids
            .iter()
            .map(|id| {
                plan.chain(id.chain)
                    .operators
                    .iter()
                    .map(|&op| graph.operator(op).name.clone())
                    .collect()
            })
            .collect();
        let has_sink = operators_of
            .iter()
            .map(|names| names.iter().any(|name| name == "sink"))
            .collect();
        let unaligned_graph = (defect == Some(Defect::SubtaskSkipsAlignment)).then(|| {
            let mut graph = graph.clone();
            graph.checkpoint.mode = CheckpointMode::AtLeastOnce;
            graph
        });
        Ok(Shape {
            graph,
            unaligned_graph,
            plan,
            layout,
            ids,
            is_source,
            has_sink,
            operators_of,
        })
    }
}

/// Builds the job's graph, given the roles whose parallelism differs from the scenario's.
pub type RebuildGraph = Box<dyn Fn(&BTreeMap<String, u32>) -> JobGraph>;

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
    store: SimCheckpointStore,
    attempt: Option<Attempt>,
    latest: Option<StoredCheckpoint>,
    restarts: u32,
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
}

impl World {
    /// A world about to deploy the job for the first time.
    pub fn new(setup: WorldSetup, rng: ChaCha8Rng, trace: Trace) -> Result<Self, String> {
        let shape = Shape::new(setup.graph, setup.defect)?;
        Ok(World {
            rng,
            now_us: 0,
            shape,
            rebuild: setup.rebuild,
            rescaled: BTreeMap::new(),
            flow: setup.flow,
            log: setup.log,
            store: SimCheckpointStore::default(),
            attempt: None,
            latest: None,
            restarts: 0,
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
            ready: Vec::new(),
            trace,
            stats: RunStats::default(),
        })
    }

    /// Runs until the job finishes, fails, or exceeds the limits.
    pub fn run(mut self) -> RunResult {
        while self.outcome.is_none() {
            if self.stats.steps >= self.limits.max_steps
                || self.now_us >= self.limits.max_virtual_ms.saturating_mul(1_000)
            {
                self.outcome = Some(Outcome::Stuck(self.stuck_reason()));
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
        }
        RunResult {
            outcome: self.outcome.take().unwrap_or(Outcome::Finished),
            stats: self.stats,
            trace_hash: self.trace.hash(),
            log: self.log,
            latest: self.latest,
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
        let id = self.shape.ids[index];
        format!("'{}' #{}", self.shape.plan.chain(id.chain).name, id.index)
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
                let dead = stopping.and_then(|stopping| stopping.dead);
                let coordinator_stopped =
                    stopping.is_some_and(|stopping| steps >= stopping.coordinator_stops_at);
                for (index, link) in attempt.links.iter().enumerate() {
                    let stopped = match link.to {
                        Endpoint::Subtask(to) => dead == Some(to),
                        Endpoint::Coordinator => coordinator_stopped,
                        Endpoint::Partitioner(_) => false,
                    };
                    if stopped {
                        continue;
                    }
                    if let Some(at) = link.next_ready() {
                        if at <= self.now_us {
                            ready.push(Action::Deliver(index));
                        } else {
                            next_due = next_due.min(at);
                        }
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
                if stopping.is_some() && ready.is_empty() {
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
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Redeploy => {
                if let Some((_, kind)) = self.redeploy.take() {
                    self.deploy(kind);
                }
            }
            Action::Deliver(link) => self.deliver(link),
            Action::Step(subtask) => self.step_subtask(subtask),
            Action::Tick => self.tick(),
            Action::Produce => self.produce(),
            Action::Stopped => {
                let steps = self.stats.steps;
                if let Some(stopping) = self.attempt.as_mut().and_then(|a| a.stopping.as_mut()) {
                    stopping.stopped_at = steps;
                }
            }
        }
        let steps = self.stats.steps;
        if let Some(attempt) = &mut self.attempt
            && attempt.crash_at_step.is_some_and(|step| steps >= step)
        {
            attempt.crash_at_step = None;
            let target = self.rng.random_range(0..self.shape.ids.len());
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

    fn send(&mut self, link: usize, message: Message) {
        let latency = self.rng.random_range(LATENCY_US);
        let now = self.now_us;
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let link = &mut attempt.links[link];
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
    }

    // ---- deployment ----

    fn deploy(&mut self, kind: Redeploy) {
        if kind == Redeploy::Resubmit {
            self.latest = match self.store.latest() {
                Ok(latest) => latest,
                Err(error) => {
                    self.outcome = Some(Outcome::StorageViolated(error.to_string()));
                    return;
                }
            };
            self.store.discard_leftovers();
        }
        let latest = self
            .latest
            .as_ref()
            .map(|(metadata, snapshots)| (metadata, snapshots));
        let from = latest.map(|(metadata, _)| metadata.checkpoint);
        let start = match start_attempt(latest, &self.shape.layout, Some(self.store.next_id())) {
            Ok(start) => start,
            Err(error) => {
                self.outcome = Some(Outcome::Failed(format!(
                    "cannot restore {}: {error}",
                    from.unwrap_or(CheckpointId(0))
                )));
                return;
            }
        };
        self.trace(10, [from.map_or(0, |c| c.0), 0, 0], || match from {
            Some(checkpoint) => format!("deploy the job, restored from {checkpoint}"),
            None => "deploy the job from the start of its input".to_owned(),
        });
        let mut links: Vec<Link> = Vec::new();
        let mut new_link = |to: Endpoint, ordered: bool| {
            links.push(Link {
                to,
                ordered,
                queue: VecDeque::new(),
                last_ready_us: 0,
                slow_extra_us: 0,
                slow_until_us: 0,
            });
            links.len() - 1
        };
        let mut subtasks = Vec::with_capacity(self.shape.ids.len());
        let mut partitioners = Vec::new();
        let mut partitioner_of: Vec<Vec<usize>> = Vec::new();
        for (position, (&id, snapshot)) in self.shape.ids.iter().zip(start.restored).enumerate() {
            let graph = match &self.shape.unaligned_graph {
                Some(unaligned) if !self.shape.is_source[position] => unaligned,
                _ => &self.shape.graph,
            };
            let mut core = self.shape.plan.build_subtask(graph, id, self.flow);
            if let Some(snapshot) = snapshot
                && let Err(error) = core.restore(snapshot)
            {
                self.outcome = Some(Outcome::Failed(format!(
                    "cannot restore {}: {error}",
                    self.subtask_name(position)
                )));
                return;
            }
            let outputs = self.shape.plan.chain(id.chain).outputs.len();
            let mut output_links = Vec::with_capacity(outputs);
            let mut own = Vec::with_capacity(outputs);
            for output in 0..outputs {
                let (core, targets) =
                    self.shape
                        .plan
                        .build_partitioner(&self.shape.graph, id, output, self.flow);
                let index = partitioners.len();
                output_links.push(new_link(Endpoint::Partitioner(index), true));
                let credit_link = new_link(Endpoint::Subtask(position), true);
                let target_links = targets
                    .iter()
                    .map(|target| {
                        (
                            new_link(
                                Endpoint::Subtask(self.shape.plan.position(target.subtask)),
                                true,
                            ),
                            target.channel,
                        )
                    })
                    .collect();
                partitioners.push(SimPartitioner {
                    core,
                    upstream: position,
                    output,
                    credit_link,
                    target_links,
                    credits_returned: 0,
                });
                own.push(index);
            }
            partitioner_of.push(own);
            subtasks.push(SimSubtask {
                core,
                wants_step: true,
                ready_at_us: self.now_us,
                credit_links: Vec::new(),
                output_links,
                to_coordinator: new_link(Endpoint::Coordinator, true),
                encoded_acks: new_link(Endpoint::Coordinator, false),
                from_coordinator: new_link(Endpoint::Subtask(position), true),
                slow_factor: 1,
                slow_until_us: 0,
            });
        }
        for (position, &id) in self.shape.ids.iter().enumerate() {
            subtasks[position].credit_links = self
                .shape
                .plan
                .channel_senders(id)
                .into_iter()
                .map(|sender| {
                    let partitioner =
                        partitioner_of[self.shape.plan.position(sender.upstream)][sender.output];
                    (
                        new_link(Endpoint::Partitioner(partitioner), true),
                        sender.target,
                    )
                })
                .collect();
        }
        let is_recovery = self.restarts > 0;
        let crash_at_step = (is_recovery && self.recovery_crashes_left > 0).then(|| {
            self.recovery_crashes_left -= 1;
            self.stats.steps + self.rng.random_range(1..=RECOVERY_CRASH_WITHIN_STEPS)
        });
        if is_recovery {
            self.stats.recoveries += 1;
        }
        self.attempt = Some(Attempt {
            unfinished: subtasks.len(),
            subtasks,
            partitioners,
            links,
            coordinator: CoordinatorCore::new(
                self.shape.graph.checkpoint,
                self.shape.layout.clone(),
                start.first_checkpoint,
            ),
            acks: BTreeMap::new(),
            next_tick_us: self.now_us,
            crash_at_step,
            stopping: None,
        });
    }

    /// A task failed (`dead`, if a subtask crashed or failed): the job fails over, if the
    /// restart strategy allows. As in the runtime, the failed attempt stops before the next
    /// one starts, and not at once: its coordinator handles what reached it before its stop
    /// (possibly completing a checkpoint and sending its notices), and the other subtasks and
    /// partitioners handle what reached them before theirs — a random number of steps. Then
    /// every subtask restarts from the newest checkpoint the coordinator completed.
    fn fail_over(&mut self, reason: String, dead: Option<usize>) {
        let steps = self.stats.steps;
        let drain_steps = self.rng.random_range(0..=STOP_STEPS_MAX);
        let coordinator_steps = self.rng.random_range(0..=drain_steps);
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        if attempt.stopping.is_some() {
            return;
        }
        self.restarts += 1;
        let Some(delay_ms) = self.shape.graph.restart.delay_before(self.restarts) else {
            self.attempt = None;
            self.outcome = Some(Outcome::Failed(format!(
                "the restart strategy gave up after {} restarts; last failure: {reason}",
                self.restarts - 1
            )));
            return;
        };
        attempt.stopping = Some(Stopping {
            dead,
            coordinator_stops_at: steps + coordinator_steps,
            stopped_at: steps + drain_steps,
            restart_delay_us: delay_ms.saturating_mul(1_000),
        });
        let restarts = self.restarts;
        self.trace(11, [u64::from(restarts), drain_steps, 0], || {
            format!("fail over (restart {restarts}): {reason}; the attempt stops within {drain_steps} steps")
        });
    }

    /// Ends a stopping attempt once its last step is done, and schedules the next one.
    fn finish_stopping(&mut self) {
        let Some(stopping) = self.attempt.as_ref().and_then(|a| a.stopping) else {
            return;
        };
        if self.stats.steps < stopping.stopped_at {
            return;
        }
        self.attempt = None;
        let from = self
            .latest
            .as_ref()
            .map(|(metadata, _)| metadata.checkpoint);
        self.trace(12, [from.map_or(0, |c| c.0), 0, 0], || {
            format!("the failed attempt has stopped; the next restores from {from:?}")
        });
        self.redeploy = Some((self.now_us + stopping.restart_delay_us, Redeploy::FailOver));
    }

    /// The job's process crashed (and, unless `fate` keeps them, its unsynced writes): all
    /// memory is gone; the job is submitted again.
    fn crash_process(&mut self, fate: UnsyncedFate, what: &str) {
        let log_damage = self.log.crash(fate, &mut self.rng);
        let store_damage = self.store.crash(fate, &mut self.rng);
        let torn = if store_damage.torn {
            ", one of them torn"
        } else {
            ""
        };
        self.trace_fault(&format!(
            "{what}; the log lost {} unsynced writes, the checkpoint store {}{torn}",
            log_damage.lost, store_damage.lost
        ));
        self.attempt = None;
        self.latest = None;
        self.restarts += 1;
        match self.shape.graph.restart.delay_before(self.restarts) {
            Some(delay_ms) => {
                self.redeploy = Some((
                    self.now_us + delay_ms.saturating_mul(1_000),
                    Redeploy::Resubmit,
                ));
            }
            None => {
                self.outcome = Some(Outcome::Failed(format!(
                    "not submitted again after {} restarts",
                    self.restarts - 1
                )));
            }
        }
    }

    // ---- faults ----

    fn is_stopping(&self) -> bool {
        self.attempt.as_ref().is_some_and(|a| a.stopping.is_some())
    }

    fn arm_due_faults(&mut self) {
        if self.attempt.is_none() || self.is_stopping() {
            return;
        }
        while let Some(index) = self
            .schedule
            .iter()
            .position(|fault| fault.is_due(self.progress, self.now_us))
        {
            let due = self.schedule.remove(index);
            if due.fault.is_immediate() {
                self.fire(due.fault);
                if self.attempt.is_none() || self.is_stopping() {
                    return;
                }
            } else {
                self.trace(101, [0, 0, 0], || format!("armed: {}", due.fault));
                self.armed.push(due.fault);
            }
        }
    }

    /// Takes the first armed fault `matches` accepts (none while an attempt is stopping).
    fn take_armed(&mut self, matches: impl Fn(&Fault) -> bool) -> Option<Fault> {
        if self.is_stopping() {
            return None;
        }
        let index = self.armed.iter().position(matches)?;
        Some(self.armed.remove(index))
    }

    fn fire(&mut self, fault: Fault) {
        match fault {
            Fault::CrashSubtask { target } => {
                let candidates: Vec<usize> = (0..self.shape.ids.len())
                    .filter(|&index| {
                        target
                            .as_ref()
                            .is_none_or(|name| self.shape.operators_of[index].contains(name))
                    })
                    .collect();
                if let Some(&index) = candidates.choose(&mut self.rng) {
                    let name = self.subtask_name(index);
                    self.trace_fault(&format!("crash of subtask {name}"));
                    self.fail_over(format!("subtask {name} crashed"), Some(index));
                }
            }
            Fault::CrashJob { unsynced } => {
                self.crash_process(unsynced.fate(), "crash of the whole job");
            }
            Fault::Rescale { role, parallelism } => {
                self.crash_process(
                    UnsyncedFate::Kept,
                    &format!(
                        "the job is stopped, to be submitted again with '{role}' at parallelism {parallelism}"
                    ),
                );
                self.rescaled.insert(role, parallelism);
                let graph = (self.rebuild)(&self.rescaled);
                match Shape::new(graph, self.defect) {
                    Ok(shape) => self.shape = shape,
                    Err(reason) => self.outcome = Some(Outcome::Failed(reason)),
                }
            }
            Fault::CrashDuringRecovery { repeats } => {
                self.recovery_crashes_left += repeats;
                let index = self.rng.random_range(0..self.shape.ids.len());
                let name = self.subtask_name(index);
                self.trace_fault(&format!(
                    "crash of subtask {name}, to crash again during recovery {repeats} times"
                ));
                self.fail_over(format!("subtask {name} crashed"), Some(index));
            }
            Fault::SlowChannel {
                delay_ms,
                duration_ms,
            } => self.slow_channel(delay_ms, duration_ms),
            Fault::SlowSubtask {
                factor,
                duration_ms,
            } => {
                let index = self.rng.random_range(0..self.shape.ids.len());
                let until = self.now_us + duration_ms.saturating_mul(1_000);
                if let Some(attempt) = &mut self.attempt {
                    attempt.subtasks[index].slow_factor = factor.max(1);
                    attempt.subtasks[index].slow_until_us = until;
                }
                let name = self.subtask_name(index);
                self.trace_fault(&format!(
                    "subtask {name} runs {factor}x slower for {duration_ms} ms"
                ));
            }
            Fault::CrashCoordinator { .. }
            | Fault::CrashSinkBeforeCommit
            | Fault::TearWrite { .. } => {
                self.armed.push(fault);
            }
        }
    }

    /// Slows one channel into a subtask with several input channels (alignment waits on it),
    /// or any data channel if none has several.
    fn slow_channel(&mut self, delay_ms: u64, duration_ms: u64) {
        let Some(attempt) = &self.attempt else {
            return;
        };
        let data_links: Vec<(usize, usize)> = attempt
            .partitioners
            .iter()
            .flat_map(|p| p.target_links.iter().copied())
            .collect();
        let multi_input: Vec<(usize, usize)> = data_links
            .iter()
            .copied()
            .filter(|&(link, _)| match attempt.links[link].to {
                Endpoint::Subtask(index) => attempt.subtasks[index].credit_links.len() > 1,
                Endpoint::Partitioner(_) | Endpoint::Coordinator => false,
            })
            .collect();
        let pool = if multi_input.is_empty() {
            data_links
        } else {
            multi_input
        };
        let Some(&(link, channel)) = pool.choose(&mut self.rng) else {
            return;
        };
        let until = self.now_us + duration_ms.saturating_mul(1_000);
        let to = match &mut self.attempt {
            Some(attempt) => {
                attempt.links[link].slow_extra_us = delay_ms.saturating_mul(1_000);
                attempt.links[link].slow_until_us = until;
                attempt.links[link].to
            }
            None => return,
        };
        let name = match to {
            Endpoint::Subtask(index) => self.subtask_name(index),
            Endpoint::Partitioner(_) | Endpoint::Coordinator => "?".to_owned(),
        };
        self.trace_fault(&format!(
            "input channel {channel} of {name} delivers {delay_ms} ms late for {duration_ms} ms"
        ));
    }

    // ---- delivery ----

    fn deliver(&mut self, link: usize) {
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let now = self.now_us;
        let queue = &attempt.links[link].queue;
        let position = if attempt.links[link].ordered {
            0
        } else {
            let ready: Vec<usize> = (0..queue.len()).filter(|&i| queue[i].0 <= now).collect();
            ready.choose(&mut self.rng).copied().unwrap_or(0)
        };
        let to = attempt.links[link].to;
        let Some((_, message)) = attempt.links[link].queue.remove(position) else {
            return;
        };
        let (kind, name) = message.kind();
        let digest = message.digest();
        let to_index = match to {
            Endpoint::Subtask(index) | Endpoint::Partitioner(index) => index as u64,
            Endpoint::Coordinator => u64::MAX,
        };
        if self.trace.is_printing() {
            let target = match to {
                Endpoint::Subtask(index) => self.subtask_name(index),
                Endpoint::Partitioner(index) => format!("partitioner {index}"),
                Endpoint::Coordinator => "the coordinator".to_owned(),
            };
            let detail = describe(&message);
            self.trace(kind, [link as u64, to_index, digest], || {
                format!("deliver {name} to {target}{detail}")
            });
        } else {
            self.trace(kind, [link as u64, to_index, digest], String::new);
        }
        match to {
            Endpoint::Subtask(index) => self.deliver_to_subtask(index, message),
            Endpoint::Partitioner(index) => self.deliver_to_partitioner(index, message),
            Endpoint::Coordinator => self.deliver_to_coordinator(message),
        }
    }

    fn deliver_to_subtask(&mut self, index: usize, message: Message) {
        if let Message::Notify { checkpoint, .. } = &message {
            let checkpoint = *checkpoint;
            if self.shape.has_sink[index]
                && self
                    .take_armed(|fault| matches!(fault, Fault::CrashSinkBeforeCommit))
                    .is_some()
            {
                let name = self.subtask_name(index);
                self.trace_fault(&format!(
                    "crash of sink subtask {name} after pre-committing {checkpoint}, before committing it"
                ));
                self.fail_over(format!("sink subtask {name} crashed"), Some(index));
                return;
            }
        }
        let notified = match &message {
            Message::Notify { checkpoint, .. } => Some(*checkpoint),
            _ => None,
        };
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let subtask = &mut attempt.subtasks[index];
        let result = match message {
            Message::Batch { channel, batch } => {
                subtask.core.handle_batch(channel, batch);
                Ok(())
            }
            Message::OutputCredit { output, credits } => {
                subtask.core.handle_credit(output, credits);
                Ok(())
            }
            Message::Trigger(checkpoint) => subtask.core.trigger_checkpoint(checkpoint),
            Message::Notify { checkpoint, last } => {
                subtask.core.notify_checkpoint_complete(checkpoint, last)
            }
            Message::TargetCredit { .. }
            | Message::Ack { .. }
            | Message::Decline { .. }
            | Message::Ended { .. } => Ok(()),
        };
        subtask.wants_step = true;
        if let Err(error) = result {
            let name = self.subtask_name(index);
            self.fail_over(format!("{name} failed: {error}"), Some(index));
            return;
        }
        self.carry_subtask_transmits(index);
        if let Some(checkpoint) = notified
            && let Some(attempt) = &self.attempt
            && attempt.links.iter().any(|link| {
                link.queue.iter().any(|(_, message)| {
                    matches!(message, Message::Notify { checkpoint: other, .. } if *other == checkpoint)
                })
            })
            && self
                .take_armed(|f| {
                    matches!(
                        f,
                        Fault::CrashCoordinator {
                            point: CoordinatorPoint::MidNotify
                        }
                    )
                })
                .is_some()
        {
            self.crash_process(
                UnsyncedFate::Kept,
                &format!(
                    "crash of the coordinator after some completion notices of {checkpoint} were delivered"
                ),
            );
        }
    }

    fn carry_subtask_transmits(&mut self, index: usize) {
        loop {
            let Some(attempt) = &mut self.attempt else {
                return;
            };
            let subtask = &mut attempt.subtasks[index];
            let Some(transmit) = subtask.core.poll_transmit() else {
                return;
            };
            match transmit {
                SubtaskTransmit::Batch { output, batch } => {
                    let link = subtask.output_links[output];
                    self.send(link, Message::Batch { channel: 0, batch });
                }
                SubtaskTransmit::Credit { input, credits } => {
                    let (link, target) = subtask.credit_links[input];
                    self.send(link, Message::TargetCredit { target, credits });
                }
                SubtaskTransmit::Snapshot {
                    checkpoint,
                    mut snapshot,
                } => {
                    let link = if snapshot.is_deferred() {
                        subtask.encoded_acks
                    } else {
                        subtask.to_coordinator
                    };
                    let message = match snapshot.complete() {
                        Ok(()) => Message::Ack {
                            checkpoint,
                            subtask: index,
                            snapshot,
                        },
                        Err(_) => Message::Decline {
                            checkpoint,
                            reason: DeclineReason::SnapshotFailed,
                        },
                    };
                    self.send(link, message);
                }
                SubtaskTransmit::Declined { checkpoint, reason } => {
                    let link = subtask.to_coordinator;
                    self.send(link, Message::Decline { checkpoint, reason });
                }
                SubtaskTransmit::Ended => {
                    let link = subtask.to_coordinator;
                    self.send(link, Message::Ended { subtask: index });
                }
            }
        }
    }

    fn deliver_to_partitioner(&mut self, index: usize, message: Message) {
        let leaks = self.defect == Some(Defect::PartitionerLeaksCredits);
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let partitioner = &mut attempt.partitioners[index];
        match message {
            Message::Batch { batch, .. } => {
                if let Err(error) = partitioner.core.handle_batch(batch) {
                    let upstream = partitioner.upstream;
                    let name = self.subtask_name(upstream);
                    self.fail_over(format!("the partitioner of {name} failed: {error}"), None);
                    return;
                }
            }
            Message::TargetCredit { target, credits } => {
                partitioner.core.handle_credit(target, credits);
            }
            Message::OutputCredit { .. }
            | Message::Trigger(_)
            | Message::Notify { .. }
            | Message::Ack { .. }
            | Message::Decline { .. }
            | Message::Ended { .. } => {}
        }
        loop {
            let Some(attempt) = &mut self.attempt else {
                return;
            };
            let partitioner = &mut attempt.partitioners[index];
            let Some(transmit) = partitioner.core.poll_transmit() else {
                return;
            };
            match transmit {
                PartitionerTransmit::Batch { target, batch } => {
                    let (link, channel) = partitioner.target_links[target];
                    self.send(link, Message::Batch { channel, batch });
                }
                PartitionerTransmit::UpstreamCredit(credits) => {
                    partitioner.credits_returned += 1;
                    if leaks
                        && partitioner
                            .credits_returned
                            .is_multiple_of(LEAKED_CREDIT_EVERY)
                    {
                        continue;
                    }
                    let (link, output) = (partitioner.credit_link, partitioner.output);
                    self.send(link, Message::OutputCredit { output, credits });
                }
            }
        }
    }

    fn deliver_to_coordinator(&mut self, message: Message) {
        let now_ms = self.now_us / 1_000;
        match message {
            Message::Ack {
                checkpoint,
                subtask,
                snapshot,
            } => self.acknowledge(checkpoint, subtask, snapshot),
            Message::Decline { checkpoint, reason } => {
                if let Some(attempt) = &mut self.attempt {
                    attempt.coordinator.handle_decline(checkpoint, reason);
                }
            }
            Message::Ended { subtask } => {
                if let Some(attempt) = &mut self.attempt {
                    attempt.coordinator.handle_subtask_ended(subtask, now_ms);
                }
            }
            Message::Batch { .. }
            | Message::OutputCredit { .. }
            | Message::TargetCredit { .. }
            | Message::Trigger(_)
            | Message::Notify { .. } => {}
        }
        self.perform_coordinator_actions();
    }

    /// The store write `write` to perform, unless the store refused it (a violation of its
    /// contract) or an armed fault tears it: then the machine crashes in the middle of it.
    fn unless_torn(
        &mut self,
        write: Result<StoreOp, StoreError>,
        torn: TornWrite,
        what: impl FnOnce() -> String,
    ) -> Option<StoreOp> {
        let op = match write {
            Ok(op) => op,
            Err(error) => {
                self.outcome = Some(Outcome::StorageViolated(error.to_string()));
                return None;
            }
        };
        if self
            .take_armed(|f| matches!(f, Fault::TearWrite { what } if *what == torn))
            .is_none()
        {
            return Some(op);
        }
        self.store.write(op);
        self.crash_process(
            UnsyncedFate::Torn,
            &format!("crash of the machine while writing {}", what()),
        );
        None
    }

    /// A subtask's snapshot reached the coordinator: store it, then count the acknowledgement.
    fn acknowledge(&mut self, checkpoint: CheckpointId, subtask: usize, snapshot: SubtaskSnapshot) {
        let now_ms = self.now_us / 1_000;
        let write = self.store.snapshot_write(checkpoint, subtask, &snapshot);
        let what = || format!("the snapshot of {checkpoint} by subtask {subtask}");
        let Some(op) = self.unless_torn(write, TornWrite::Snapshot, what) else {
            return;
        };
        let bytes = self.store.write(op);
        let subtasks = self.shape.ids.len();
        let early = self.defect == Some(Defect::CoordinatorCompletesEarly);
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let acks = attempt.acks.entry(checkpoint).or_default();
        acks.insert(subtask, snapshot);
        let acknowledged = acks.len();
        attempt
            .coordinator
            .handle_ack(checkpoint, subtask, bytes, now_ms);
        if early {
            // Broken on purpose: the first acknowledgement stands in for every other.
            for other in 0..subtasks {
                attempt.coordinator.handle_ack(checkpoint, other, 0, now_ms);
            }
        }
        // Past a coin toss per acknowledgement, so that the crash comes after any number of
        // them, not always after the first.
        if acknowledged < subtasks
            && self.armed.iter().any(|f| {
                matches!(
                    f,
                    Fault::CrashCoordinator {
                        point: CoordinatorPoint::AfterAcks
                    }
                )
            })
            && self.rng.random_bool(0.5)
            && self
                .take_armed(|f| {
                    matches!(
                        f,
                        Fault::CrashCoordinator {
                            point: CoordinatorPoint::AfterAcks
                        }
                    )
                })
                .is_some()
        {
            self.crash_process(
                UnsyncedFate::Kept,
                &format!("crash of the coordinator after {acknowledged} of {subtasks} acknowledgements of {checkpoint}"),
            );
        }
    }

    fn perform_coordinator_actions(&mut self) {
        loop {
            let Some(attempt) = &mut self.attempt else {
                return;
            };
            let Some(action) = attempt.coordinator.poll_action() else {
                return;
            };
            match action {
                CoordinatorAction::Trigger { checkpoint, .. } => {
                    self.trace(20, [checkpoint.0, 0, 0], || {
                        format!("coordinator triggers {checkpoint}")
                    });
                    for index in 0..self.shape.ids.len() {
                        if self.shape.is_source[index]
                            && let Some(attempt) = &self.attempt
                        {
                            let link = attempt.subtasks[index].from_coordinator;
                            self.send(link, Message::Trigger(checkpoint));
                        }
                    }
                }
                CoordinatorAction::PersistMetadata(metadata) => {
                    let checkpoint = metadata.checkpoint;
                    let write = self.store.metadata_write(&metadata);
                    let what = || format!("the metadata of {checkpoint}");
                    let Some(op) = self.unless_torn(write, TornWrite::Metadata, what) else {
                        return;
                    };
                    self.store.write_synced(op);
                    let now_ms = self.now_us / 1_000;
                    let Some(attempt) = &mut self.attempt else {
                        return;
                    };
                    attempt
                        .coordinator
                        .handle_metadata_persisted(checkpoint, now_ms);
                    let snapshots = attempt.acks.remove(&checkpoint).unwrap_or_default();
                    // Broken on purpose: the master restores a failed attempt from what it had
                    // heard of when the failure came, not from what the coordinator completed
                    // while the attempt stopped.
                    let ignored = attempt.stopping.is_some()
                        && self.defect == Some(Defect::MasterIgnoresLateCompletions);
                    if !ignored {
                        self.latest = Some((metadata, snapshots));
                    }
                    self.stats.checkpoints_completed += 1;
                    self.trace(21, [checkpoint.0, 0, 0], || {
                        format!("{checkpoint} is complete (metadata synced)")
                    });
                    if self
                        .take_armed(|f| {
                            matches!(
                                f,
                                Fault::CrashCoordinator {
                                    point: CoordinatorPoint::AfterMetadata
                                }
                            )
                        })
                        .is_some()
                    {
                        self.crash_process(
                            UnsyncedFate::Kept,
                            &format!("crash of the coordinator after the metadata of {checkpoint}, before its completion notices"),
                        );
                        return;
                    }
                }
                CoordinatorAction::NotifyComplete { checkpoint, last } => {
                    for index in 0..self.shape.ids.len() {
                        if let Some(attempt) = &self.attempt {
                            let link = attempt.subtasks[index].from_coordinator;
                            self.send(link, Message::Notify { checkpoint, last });
                        }
                    }
                }
                CoordinatorAction::Discard(checkpoint) => {
                    attempt.acks.remove(&checkpoint);
                    self.store.discard(checkpoint);
                    self.trace(22, [checkpoint.0, 0, 0], || format!("discard {checkpoint}"));
                }
                CoordinatorAction::SavepointFailed(_) => {}
                CoordinatorAction::FailJob(reason) => {
                    self.fail_over(format!("checkpointing failed: {reason}"), None);
                    return;
                }
            }
        }
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
            Ok(Step::Finished) => {
                subtask.wants_step = false;
                attempt.unfinished -= 1;
            }
            Err(error) => {
                let name = self.subtask_name(index);
                self.trace(31, [index as u64, 0, 0], || {
                    format!("{name} failed: {error}")
                });
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
        if self.shape.is_source[index] {
            self.update_progress();
        }
        if let Some(attempt) = &self.attempt
            && attempt.unfinished == 0
            && attempt.stopping.is_none()
        {
            self.trace(40, [0, 0, 0], || {
                "every subtask finished: the job is done".to_owned()
            });
            self.outcome = Some(Outcome::Finished);
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
        // The topics were created with these partitions before the run.
        let appended = self.log.append(topic, partition, arrival.records);
        debug_assert!(appended.is_ok(), "{appended:?}");
        self.log.flush();
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

fn describe(message: &Message) -> String {
    match message {
        Message::Batch { channel, batch } => {
            format!(
                " on channel {channel}: {} events, {} records",
                batch.events.len(),
                batch.record_count()
            )
        }
        Message::OutputCredit { output, credits } => format!(" for output {output}: {credits}"),
        Message::TargetCredit { target, credits } => format!(" for target {target}: {credits}"),
        Message::Trigger(checkpoint) => format!(" of {checkpoint}"),
        Message::Notify { checkpoint, last } => {
            format!(" of {checkpoint}{}", if *last { " (the last)" } else { "" })
        }
        Message::Ack {
            checkpoint,
            subtask,
            snapshot,
        } => format!(
            " of {checkpoint} from subtask {subtask} ({} bytes)",
            snapshot.state_bytes()
        ),
        Message::Decline { checkpoint, reason } => format!(" of {checkpoint}: {reason}"),
        Message::Ended { subtask } => format!(" from subtask {subtask}"),
    }
}

//! What can go wrong in a run: the faults a scenario injects, the broken components it may
//! swap in, and drawing a run's fault schedule from its seed.
//!
//! A fault fires when the sources have read a given fraction of the input (`at`, drawn from
//! the seed when the scenario leaves it out), or at a virtual time drawn from the first
//! `within_ms` ms (to hit the quiet moments between records too). Some faults fire at once (a crash of a subtask
//! or of the job, a slow channel); the others wait, armed, for the protocol to reach their
//! point (the coordinator after some acknowledgements, a sink between pre-commit and commit,
//! a snapshot or metadata write to tear, a checkpoint just completed to damage).

use std::fmt;

use rand::Rng;
use serde::Deserialize;

use crate::disk::UnsyncedFate;

/// Where in a checkpoint the coordinator crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoordinatorPoint {
    /// After some subtasks acknowledged, before all did.
    AfterAcks,
    /// After the metadata is durable, before any completion notice is sent.
    AfterMetadata,
    /// After the first completion notice reached a subtask, before the others did.
    MidNotify,
}

/// Which value of a checkpoint a fault tears or damages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointValue {
    /// A subtask's snapshot.
    Snapshot,
    /// A checkpoint's metadata.
    Metadata,
}

/// What a machine crash does to writes not yet synced, as scenarios name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unsynced {
    /// All are lost.
    #[default]
    Lost,
    /// A random prefix survives.
    RandomPrefix,
    /// All survive (a crash of the process only).
    Kept,
}

impl Unsynced {
    /// The disk model's fate.
    pub fn fate(self) -> UnsyncedFate {
        match self {
            Unsynced::Lost => UnsyncedFate::Lost,
            Unsynced::RandomPrefix => UnsyncedFate::RandomPrefix,
            Unsynced::Kept => UnsyncedFate::Kept,
        }
    }
}

fn process_crash() -> Unsynced {
    Unsynced::Kept
}

fn default_slow_delay_ms() -> u64 {
    5
}

fn default_slow_duration_ms() -> u64 {
    50
}

fn default_slow_factor() -> u64 {
    20
}

/// A fault.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// One subtask crashes; the job fails over from its latest completed checkpoint.
    CrashSubtask {
        /// The operator whose subtask crashes (any subtask running it); any subtask if left out.
        #[serde(default)]
        target: Option<String>,
    },
    /// The whole job's process and machine crash: memory is lost, and the disks keep what was
    /// synced (and of the rest, what `unsynced` says). The job is submitted again.
    CrashJob {
        /// What happens to unsynced writes.
        #[serde(default)]
        unsynced: Unsynced,
    },
    /// The coordinator's process crashes at a point of a checkpoint; the job is submitted
    /// again and restores from what the checkpoint store holds.
    CrashCoordinator {
        /// Where.
        point: CoordinatorPoint,
        /// What happens to unsynced writes: kept by default (the process crashed, not the
        /// machine).
        #[serde(default = "process_crash")]
        unsynced: Unsynced,
    },
    /// A sink's subtask crashes after pre-committing a checkpoint and before committing it.
    CrashSinkBeforeCommit,
    /// The machine crashes in the middle of the next commit of a sink's transaction, after a
    /// random number of its writes (one per piece of the commit): of the writes not yet
    /// synced, a random prefix survives.
    CrashDuringCommit,
    /// The machine crashes in the middle of a write, tearing it.
    TearWrite {
        /// Which write.
        what: CheckpointValue,
    },
    /// The process crashes, and a value of a completed checkpoint is found damaged on disk
    /// (bits of one byte flipped): the job, submitted again, must fall back to the newest
    /// intact checkpoint — or refuse to start, if its sinks committed the damaged one's output.
    CorruptCheckpoint {
        /// Which value: the metadata, or a random subtask's snapshot.
        what: CheckpointValue,
        /// Whether it waits for the next checkpoint to complete and damages it before any
        /// sink commits it (before its completion notices); else it damages the newest
        /// completed checkpoint when it is due (or, if none has completed, the first to).
        #[serde(default)]
        before_commit: bool,
    },
    /// One channel into a subtask with several inputs delivers late for a while.
    SlowChannel {
        /// Added to each delivery.
        #[serde(default = "default_slow_delay_ms")]
        delay_ms: u64,
        /// For how long.
        #[serde(default = "default_slow_duration_ms")]
        duration_ms: u64,
    },
    /// One subtask works slower for a while.
    SlowSubtask {
        /// How many times slower.
        #[serde(default = "default_slow_factor")]
        factor: u64,
        /// For how long.
        #[serde(default = "default_slow_duration_ms")]
        duration_ms: u64,
    },
    /// The job is stopped (as a crash of its process) and submitted again with another
    /// parallelism for one operator role: it restores from the latest checkpoint, its keyed
    /// state redistributed by key group and its sinks taking over the transactions of
    /// subtasks that no longer exist.
    Rescale {
        /// The role.
        role: String,
        /// Its new parallelism.
        parallelism: u32,
    },
    /// A subtask crashes, then again soon after each of the next `repeats` recoveries.
    CrashDuringRecovery {
        /// How many more crashes, each during the recovery from the one before.
        repeats: u32,
    },
}

impl Fault {
    /// Whether the fault fires as soon as it is due (or waits for its protocol point).
    pub fn is_immediate(&self) -> bool {
        matches!(
            self,
            Fault::CrashSubtask { .. }
                | Fault::CrashJob { .. }
                | Fault::SlowChannel { .. }
                | Fault::SlowSubtask { .. }
                | Fault::Rescale { .. }
                | Fault::CrashDuringRecovery { .. }
                | Fault::CrashDuringCommit
                | Fault::CorruptCheckpoint {
                    before_commit: false,
                    ..
                }
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::CrashSubtask {
                target: Some(target),
            } => write!(f, "crash-subtask of '{target}'"),
            Fault::CrashSubtask { target: None } => write!(f, "crash-subtask"),
            Fault::CrashJob { unsynced } => write!(f, "crash-job (unsynced writes: {unsynced:?})"),
            Fault::CrashCoordinator {
                point,
                unsynced: Unsynced::Kept,
            } => write!(f, "crash-coordinator {point:?}"),
            Fault::CrashCoordinator { point, unsynced } => write!(
                f,
                "crash-coordinator {point:?} with the machine (unsynced writes: {unsynced:?})"
            ),
            Fault::CrashSinkBeforeCommit => write!(f, "crash-sink-before-commit"),
            Fault::CrashDuringCommit => write!(f, "crash-during-commit"),
            Fault::TearWrite { what } => write!(f, "tear-write of a {what:?}"),
            Fault::CorruptCheckpoint {
                what,
                before_commit,
            } => {
                let when = if *before_commit {
                    ", before its commit"
                } else {
                    ""
                };
                write!(f, "corrupt-checkpoint of a {what:?}{when}")
            }
            Fault::SlowChannel {
                delay_ms,
                duration_ms,
            } => {
                write!(f, "slow-channel +{delay_ms} ms for {duration_ms} ms")
            }
            Fault::SlowSubtask {
                factor,
                duration_ms,
            } => {
                write!(f, "slow-subtask x{factor} for {duration_ms} ms")
            }
            Fault::Rescale { role, parallelism } => {
                write!(f, "rescale '{role}' to parallelism {parallelism}")
            }
            Fault::CrashDuringRecovery { repeats } => {
                write!(f, "crash-during-recovery ({repeats} repeats)")
            }
        }
    }
}

fn default_count() -> u32 {
    1
}

/// A fault as a scenario file gives it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FaultSpec {
    /// The fault.
    #[serde(flatten)]
    pub fault: Fault,
    /// How many times to inject it.
    #[serde(default = "default_count")]
    pub count: u32,
    /// At which fraction of the input read (0.0 to 1.0); random per seed if left out.
    #[serde(default)]
    pub at: Option<f64>,
    /// Instead of `at`: at a random virtual time within the first this many ms.
    #[serde(default)]
    pub within_ms: Option<u64>,
}

/// When a scheduled fault becomes due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Due {
    /// Once this fraction of the input has been read.
    Progress(f64),
    /// At this virtual time, in µs.
    TimeUs(u64),
}

/// One fault of a run's schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledFault {
    /// When it becomes due.
    pub due: Due,
    /// The fault.
    pub fault: Fault,
}

impl ScheduledFault {
    /// Whether it is due with `progress` of the input read at virtual time `now_us`.
    pub fn is_due(&self, progress: f64, now_us: u64) -> bool {
        match self.due {
            Due::Progress(at) => at <= progress,
            Due::TimeUs(at_us) => at_us <= now_us,
        }
    }
}

impl fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.due {
            Due::Progress(at) => write!(f, "{} at {:.1}% of the input", self.fault, at * 100.0),
            Due::TimeUs(at_us) => write!(f, "{} at {:.3} ms", self.fault, at_us as f64 / 1000.0),
        }
    }
}

/// The faults of one run, in the order they become due.
pub fn draw_schedule(specs: &[FaultSpec], rng: &mut impl Rng) -> Vec<ScheduledFault> {
    let mut schedule: Vec<ScheduledFault> = specs
        .iter()
        .flat_map(|spec| (0..spec.count).map(move |_| spec))
        .map(|spec| ScheduledFault {
            due: match (spec.within_ms, spec.at) {
                (Some(within_ms), _) => Due::TimeUs(rng.random_range(0..within_ms.max(1) * 1_000)),
                (None, Some(at)) => Due::Progress(at.clamp(0.0, 1.0)),
                (None, None) => Due::Progress(rng.random::<f64>()),
            },
            fault: spec.fault.clone(),
        })
        .collect();
    schedule.sort_by(|a, b| match (a.due, b.due) {
        (Due::Progress(a), Due::Progress(b)) => a.total_cmp(&b),
        (Due::TimeUs(a), Due::TimeUs(b)) => a.cmp(&b),
        (Due::Progress(_), Due::TimeUs(_)) => std::cmp::Ordering::Less,
        (Due::TimeUs(_), Due::Progress(_)) => std::cmp::Ordering::Greater,
    });
    schedule
}

/// The broken components a scenario can plant: they live in the shipped code, behind the
/// `defects` feature of `rill-core`.
pub use rill_core::defects::Defect;

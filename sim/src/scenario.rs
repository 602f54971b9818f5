//! Scenarios: what one simulated run is, read from a TOML file in `scenarios/`.
//!
//! A scenario names a job of the catalog, the size of its generated input, the parallelism of
//! each operator role, checkpoint, flow-control and restart settings, the faults to inject, a
//! component to break on purpose (if any), the property to check, whether the run must pass
//! or must be caught violating it, and how many seeds to run by default. Everything left out
//! has a default; anything misspelt or out of range is refused with the file and the field.
//! A user's own job runs as a scenario too, made in code ([`Scenario::new`], see
//! [`crate::user`]): its settings are a scenario file's, less what the job brings.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rill_api::{ExecutionConfig, StreamEnv};
use rill_core::checkpoint::CheckpointMode;
use rill_core::coordinator::CheckpointConfig;
use rill_core::flow::FlowConfig;
use rill_core::graph::JobGraph;
use rill_core::restart::RestartStrategy;
use serde::Deserialize;

use crate::broker::SimBroker;
use crate::connectors::{SimConnectors, SinkOutput};
use crate::database::SimDatabase;
use crate::faults::{Defect, Fault, FaultSpec};
use crate::files::SimDirectory;
use crate::jobs::{InputSpec, Job, JobKind};
use crate::log::SimLog;

/// What a run must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Property {
    /// Every input contributes to the committed output exactly once, and the job finishes.
    ExactlyOnce,
    /// Nothing is lost (duplicates are counted), and the job finishes.
    AtLeastOnce,
    /// After the last fault the job finishes.
    Liveness,
}

impl Property {
    /// The property's name in scenario files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Property::ExactlyOnce => "exactly-once",
            Property::AtLeastOnce => "at-least-once",
            Property::Liveness => "liveness",
        }
    }
}

/// What the scenario expects of every seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// Every seed holds the property.
    #[default]
    Pass,
    /// A broken component: some seed must be caught violating the property.
    Violation,
}

/// Barrier alignment, as scenarios name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Aligned barriers, transactional sink.
    #[default]
    ExactlyOnce,
    /// No alignment, appending sink.
    AtLeastOnce,
}

/// Checkpoint settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSpec {
    /// Virtual ms between checkpoints.
    pub interval_ms: u64,
    /// Virtual ms before a checkpoint is aborted.
    pub timeout_ms: u64,
    /// Checkpoints in progress at once.
    pub max_concurrent: usize,
    /// Alignment.
    pub mode: Mode,
    /// Completed checkpoints kept.
    pub retained: usize,
    /// Virtual ms each write to the checkpoint store takes (a snapshot, the metadata, a
    /// discard), one at a time in the order the coordinator asked, as the runtime's
    /// coordinator writes them; 0: at once.
    pub write_ms: u64,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            interval_ms: 5,
            timeout_ms: 2_000,
            max_concurrent: 1,
            mode: Mode::ExactlyOnce,
            retained: 2,
            write_ms: 0,
        }
    }
}

/// Flow-control settings: small batches and few credits make for many interleavings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowSpec {
    /// Records per batch.
    pub batch_size: usize,
    /// Batches in flight per channel.
    pub channel_credits: u32,
    /// How far (in event time, ms) an input channel may run ahead of the slowest before its
    /// batches wait; `None`: the runtime's default.
    pub watermark_drift_ms: Option<u64>,
    /// How often (virtual ms) sources emit periodic watermarks; 0 turns it off. A run lasts
    /// tens of virtual ms, so the default is 1 ms rather than the runtime's 200 ms, which would
    /// leave every window to the end of the input.
    pub watermark_interval_ms: u64,
}

impl Default for FlowSpec {
    fn default() -> Self {
        FlowSpec {
            batch_size: 8,
            channel_credits: 2,
            watermark_drift_ms: None,
            watermark_interval_ms: 1,
        }
    }
}

/// The event log's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSpec {
    /// How many staged entries a commit moves in one atomic write (`rill-log`'s
    /// `set_commit_piece_entries`); a few make commits of several pieces, so that a crash
    /// during a commit falls between them.
    pub commit_piece_entries: NonZeroUsize,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec {
            commit_piece_entries: crate::log::COMMIT_PIECE_ENTRIES,
        }
    }
}

/// What the job's sink writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkTarget {
    /// The log's output topic, through the log's transactions.
    #[default]
    Log,
    /// The model of a database with prepared transactions (PostgreSQL's two-phase commit).
    Database,
    /// The model of a directory of part files with atomic renames (`rill-files`' sink).
    Files,
    /// The model of a broker with a duplicate window (NATS JetStream's), whose commits a
    /// crash can cut short.
    Broker,
}

/// The job's sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSpec {
    /// What it writes.
    pub target: SinkTarget,
    /// With the broker: whether it drops a publication whose message id it has stored (a
    /// duplicate window longer than any recovery); `false` breaks the broker on purpose.
    pub duplicate_window: bool,
}

impl Default for SinkSpec {
    fn default() -> Self {
        SinkSpec {
            target: SinkTarget::default(),
            duplicate_window: true,
        }
    }
}

/// The restart strategy: a fixed delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartSpec {
    /// Restarts allowed.
    pub attempts: u32,
    /// Virtual ms before each.
    pub delay_ms: u64,
}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            attempts: 100,
            delay_ms: 5,
        }
    }
}

/// How long a run may take before it counts as stuck.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Virtual ms.
    pub max_virtual_ms: u64,
    /// Scheduler steps.
    pub max_steps: u64,
    /// Virtual ms without progress (no record delivered, checkpoint completed, attempt
    /// deployed, fault fired or input appended) after which a run is stuck; `None`: twice the
    /// checkpoint timeout plus a second.
    pub stall_ms: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_virtual_ms: 60_000,
            max_steps: 5_000_000,
            stall_ms: None,
        }
    }
}

fn default_seeds() -> u64 {
    20
}

/// A scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// One line saying what it tests.
    pub description: String,
    /// The job.
    pub job: Job,
    /// Seeds run by default.
    #[serde(default = "default_seeds")]
    pub seeds: u64,
    /// The property checked.
    pub property: Property,
    /// A component broken on purpose.
    #[serde(default)]
    pub broken: Option<Defect>,
    /// Pass, or be caught.
    #[serde(default)]
    pub expect: Expect,
    /// The generated input.
    #[serde(default)]
    pub input: InputSpec,
    /// Parallelism by operator role (1 where left out).
    #[serde(default)]
    pub parallelism: BTreeMap<String, u32>,
    /// Checkpoints.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// Flow control.
    #[serde(default)]
    pub flow: FlowSpec,
    /// Restarts.
    #[serde(default)]
    pub restart: RestartSpec,
    /// The event log.
    #[serde(default)]
    pub log: LogSpec,
    /// The job's sink.
    #[serde(default)]
    pub sink: SinkSpec,
    /// Faults.
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultSpec>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
}

/// A scenario: its name (the file's stem) and contents.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The name.
    pub name: String,
    /// The contents.
    pub spec: ScenarioFile,
}

/// A scenario that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file or directory cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{path}: {reason}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

const PARALLELISM_MAX: u32 = 16;

fn at_most(what: &str, value: u64, max: u64) -> Result<(), String> {
    if value > max {
        return Err(format!("{what} = {value} is more than {max}"));
    }
    Ok(())
}

impl Scenario {
    /// Reads and checks one scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_owned(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        Scenario::parse(&name, &text).map_err(|reason| ScenarioError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses and checks a scenario's TOML text; the error says what is wrong.
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let spec: ScenarioFile = toml::from_str(text).map_err(|error| error.to_string())?;
        Scenario::new(name, spec)
    }

    /// Checks a scenario made in code (a user's job's, say) as a file is checked.
    pub fn new(name: &str, spec: ScenarioFile) -> Result<Self, String> {
        let scenario = Scenario {
            name: name.to_owned(),
            spec,
        };
        scenario.check()?;
        Ok(scenario)
    }

    /// Reads every `*.toml` in `dir`, by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, ScenarioError> {
        let io = |source| ScenarioError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.retain(|path| path.extension().is_some_and(|ext| ext == "toml"));
        paths.sort();
        paths.iter().map(|path| Scenario::load(path)).collect()
    }

    fn check(&self) -> Result<(), String> {
        let spec = &self.spec;
        let roles = spec.job.roles();
        for (role, &parallelism) in &spec.parallelism {
            if !roles.contains(&role.as_str()) {
                return Err(format!(
                    "parallelism: job '{}' has no operator role '{role}' (it has {})",
                    spec.job.name(),
                    roles.join(", ")
                ));
            }
            if !(1..=PARALLELISM_MAX).contains(&parallelism) {
                return Err(format!(
                    "parallelism: '{role}' = {parallelism} is outside 1..={PARALLELISM_MAX}"
                ));
            }
        }
        if let Some(defect) = spec.broken
            && !spec.job.can_break(defect)
        {
            return Err(format!(
                "broken: job '{}' has no component that '{}' breaks",
                spec.job.name(),
                defect.name()
            ));
        }
        self.flow()
            .validate()
            .map_err(|error| format!("flow: {error}"))?;
        if spec.checkpoint.interval_ms == 0 || spec.checkpoint.timeout_ms == 0 {
            return Err("checkpoint: interval_ms and timeout_ms must be at least 1".to_owned());
        }
        if spec.input.records == 0 || spec.input.partitions == 0 || spec.input.keys == 0 {
            return Err("input: records, partitions and keys must be at least 1".to_owned());
        }
        let hour_ms = 3_600_000;
        for (what, value, max) in [
            ("input.records", spec.input.records as u64, 1_000_000),
            ("input.partitions", u64::from(spec.input.partitions), 64),
            ("input.keys", u64::from(spec.input.keys), 1_000_000),
            ("input.arrival_ms", spec.input.arrival_ms, hour_ms),
            (
                "checkpoint.interval_ms",
                spec.checkpoint.interval_ms,
                hour_ms,
            ),
            ("checkpoint.timeout_ms", spec.checkpoint.timeout_ms, hour_ms),
            (
                "checkpoint.max_concurrent",
                spec.checkpoint.max_concurrent as u64,
                16,
            ),
            ("checkpoint.retained", spec.checkpoint.retained as u64, 100),
            ("flow.batch_size", spec.flow.batch_size as u64, 10_000),
            (
                "log.commit_piece_entries",
                spec.log.commit_piece_entries.get() as u64,
                10_000,
            ),
            (
                "flow.channel_credits",
                u64::from(spec.flow.channel_credits),
                1_000,
            ),
            (
                "flow.watermark_drift_ms",
                spec.flow.watermark_drift_ms.unwrap_or(0),
                hour_ms,
            ),
            (
                "flow.watermark_interval_ms",
                spec.flow.watermark_interval_ms,
                hour_ms,
            ),
            ("restart.attempts", u64::from(spec.restart.attempts), 10_000),
            ("restart.delay_ms", spec.restart.delay_ms, hour_ms),
            (
                "limits.max_virtual_ms",
                spec.limits.max_virtual_ms,
                24 * hour_ms,
            ),
            ("limits.max_steps", spec.limits.max_steps, 1_000_000_000),
            (
                "limits.stall_ms",
                spec.limits.stall_ms.unwrap_or(0),
                24 * hour_ms,
            ),
        ] {
            at_most(what, value, max)?;
        }
        let names = self.operator_names()?;
        for fault in &spec.faults {
            at_most("fault count", u64::from(fault.count), 1_000)?;
            at_most("fault within_ms", fault.within_ms.unwrap_or(0), hour_ms)?;
            match fault.fault {
                Fault::SlowChannel {
                    delay_ms,
                    duration_ms,
                } => {
                    at_most("slow-channel delay_ms", delay_ms, hour_ms)?;
                    at_most("slow-channel duration_ms", duration_ms, hour_ms)?;
                }
                Fault::SlowSubtask {
                    factor,
                    duration_ms,
                } => {
                    at_most("slow-subtask factor", factor, 10_000)?;
                    at_most("slow-subtask duration_ms", duration_ms, hour_ms)?;
                }
                Fault::CrashDuringRecovery { repeats } => {
                    at_most("crash-during-recovery repeats", u64::from(repeats), 100)?;
                }
                Fault::Rescale {
                    ref role,
                    parallelism,
                } => self.check_rescale(role, parallelism)?,
                _ => {}
            }
            if fault.at.is_some() && fault.within_ms.is_some() {
                return Err(format!(
                    "fault {}: give `at` or `within_ms`, not both",
                    fault.fault
                ));
            }
            if let Some(at) = fault.at
                && !(0.0..=1.0).contains(&at)
            {
                return Err(format!(
                    "fault {}: at = {at} is outside 0.0..=1.0",
                    fault.fault
                ));
            }
            if let Fault::CrashSubtask {
                target: Some(target),
            } = &fault.fault
                && !names.contains(target)
            {
                return Err(format!(
                    "fault {}: job '{}' has no operator '{target}' (it has {})",
                    fault.fault,
                    spec.job.name(),
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn check_rescale(&self, role: &str, parallelism: u32) -> Result<(), String> {
        let job = &self.spec.job;
        if !job.roles().contains(&role) {
            return Err(format!(
                "fault rescale: job '{}' has no operator role '{role}' (it has {})",
                job.name(),
                job.roles().join(", ")
            ));
        }
        if matches!(job, Job::Catalog(JobKind::UnionBroadcast)) && role == "tag" {
            return Err(
                "fault rescale: the reference output of union-broadcast depends on the parallelism of 'tag'"
                    .to_owned(),
            );
        }
        if !(1..=PARALLELISM_MAX).contains(&parallelism) {
            return Err(format!(
                "fault rescale: parallelism {parallelism} is outside 1..={PARALLELISM_MAX}"
            ));
        }
        Ok(())
    }

    /// The names of the job's operators, which faults may target.
    pub fn operator_names(&self) -> Result<Vec<String>, String> {
        let graph = self.job_graph(&SimLog::default(), &SinkOutput::Log, &BTreeMap::new())?;
        Ok(graph
            .operators
            .iter()
            .map(|node| node.name.clone())
            .collect())
    }

    /// Where a run's sink writes: the log, or a new model of the system the scenario names
    /// (beside `log`, on whose machine the job runs).
    pub fn sink_output(&self, log: &SimLog) -> SinkOutput {
        match self.spec.sink.target {
            SinkTarget::Broker => {
                SinkOutput::Broker(SimBroker::new(self.spec.sink.duplicate_window, log))
            }
            SinkTarget::Log => SinkOutput::Log,
            SinkTarget::Database => SinkOutput::Database(SimDatabase::default()),
            SinkTarget::Files => SinkOutput::Files(SimDirectory::default()),
        }
    }

    /// The scenario's job as a graph over `log` (its sink writing `output`), with the parallelism of the `rescaled` roles changed: described with the API on an
    /// environment with the scenario's checkpoint and restart settings, with its broken
    /// component planted in the connectors and in the keyed operators with timers.
    pub fn job_graph(
        &self,
        log: &SimLog,
        output: &SinkOutput,
        rescaled: &BTreeMap<String, u32>,
    ) -> Result<JobGraph, String> {
        let parallelism = |role: &str| {
            rescaled
                .get(role)
                .copied()
                .unwrap_or_else(|| self.parallelism(role))
        };
        let checkpoint = self.checkpoint_config();
        let env = StreamEnv::with_config(ExecutionConfig {
            checkpoint,
            restart: self.restart(),
            auto_watermark_interval: Duration::from_millis(self.spec.flow.watermark_interval_ms),
            ..ExecutionConfig::default()
        });
        let broken = self.spec.broken;
        if let Some(defect) = broken {
            env.plant_defect(defect);
        }
        let exactly_once = checkpoint.mode == CheckpointMode::ExactlyOnce;
        let io = SimConnectors::new(log, output, exactly_once, broken);
        let job = &self.spec.job;
        job.describe(&env, &io, &parallelism);
        env.job_graph(job.name())
            .map_err(|error| format!("job '{}' cannot be built: {error}", job.name()))
    }

    /// The parallelism of an operator role.
    pub fn parallelism(&self, role: &str) -> u32 {
        self.spec.parallelism.get(role).copied().unwrap_or(1)
    }

    /// The flow-control configuration.
    pub fn flow(&self) -> FlowConfig {
        let default = FlowConfig::default();
        FlowConfig {
            batch_size: self.spec.flow.batch_size,
            channel_credits: self.spec.flow.channel_credits,
            watermark_drift_ms: self
                .spec
                .flow
                .watermark_drift_ms
                .or(default.watermark_drift_ms),
        }
    }

    /// The checkpoint configuration.
    pub fn checkpoint_config(&self) -> CheckpointConfig {
        let spec = &self.spec.checkpoint;
        CheckpointConfig {
            interval_ms: Some(spec.interval_ms),
            timeout_ms: spec.timeout_ms,
            min_pause_ms: 0,
            max_concurrent: spec.max_concurrent.max(1),
            tolerable_failures: u32::MAX,
            retained: spec.retained.max(1),
            mode: match spec.mode {
                Mode::ExactlyOnce => CheckpointMode::ExactlyOnce,
                Mode::AtLeastOnce => CheckpointMode::AtLeastOnce,
            },
        }
    }

    /// The restart strategy.
    pub fn restart(&self) -> RestartStrategy {
        RestartStrategy::FixedDelay {
            attempts: self.spec.restart.attempts,
            delay_ms: self.spec.restart.delay_ms,
        }
    }
}

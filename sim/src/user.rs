//! Simulating a user's own job: the first step towards users checking their jobs as the
//! simulator checks its catalog.
//!
//! A [`UserJob`] is a job written with `rill-api` (`StreamEnv`, `DataStream`, windows,
//! connected streams) by a closure that is given the environment and the simulated log's
//! connectors ([`SimConnectors`]: readers of the input topics, the writer of the output topic),
//! together with its input ([`Input`]: records by topic and partition, fixed or drawn per
//! seed) and its reference (the output a correct run commits, as a multiset computed from
//! the input). [`UserJob::simulate`] runs it under the scenario machinery — the same world,
//! faults, oracle and broken components as the catalog's scenarios — for a range of seeds and
//! returns a [`SimulationReport`]: which seeds held the property, and for those that did not,
//! the violation, the records involved and the fault schedule.
//!
//! ```
//! use rill_api::prelude::*;
//! use rill_sim::user::{Input, UserJob, decode, encode};
//!
//! // A running sum per key, written only with the public API.
//! let job = UserJob::new("sums", |env, io| {
//!     let sums = io
//!         .source(env, "source", "events", decode::<(u32, i64)>)
//!         .set_parallelism(2)
//!         .key_by(|event: &(u32, i64)| event.0)
//!         .reduce(|a, b| (a.0, a.1 + b.1))
//!         .uid("sums")
//!         .set_parallelism(2);
//!     io.sink(sums, "sink", encode::<(u32, i64)>).set_parallelism(2);
//! })
//! .input(Input::new().topic("events", [vec![(1u32, 5i64), (1, 2)], vec![(2, 3)]]))
//! .reference(|_| vec![(1u32, 5i64), (1, 7), (2, 3)]);
//! let report = job.simulate(0..3)?;
//! assert!(report.held(), "{report}");
//! # Ok::<(), String>(())
//! ```
//!
//! What is not checked for a user's job: its keyed state in the final checkpoint (the
//! catalog's jobs read it with knowledge of their operators), and rescaling (its operators
//! have no roles to rescale).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use rand::RngCore;
use rill_api::StreamEnv;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::check::Violation;
use crate::faults::{Defect, FaultSpec};
use crate::jobs::{FinalState, GeneratedInput, InputSpec, Job, Multiset, TopicInput};
use crate::log::LogRecord;
use crate::runner::{ScenarioSummary, run_scenario};
use crate::scenario::{
    CheckpointSpec, Expect, FlowSpec, Limits, LogSpec, Property, RestartSpec, Scenario,
    ScenarioFile, SinkSpec,
};

pub use crate::connectors::SimConnectors;
pub use crate::jobs::{decode, encode};

/// The faults a user's job runs under unless told otherwise: two subtask crashes and a crash
/// of the whole machine (losing what was not synced), each at a random point of the input.
pub const DEFAULT_SETTINGS: &str = r#"
[[fault]]
kind = "crash-subtask"
count = 2

[[fault]]
kind = "crash-job"
"#;

type Build = dyn Fn(&StreamEnv, &SimConnectors) + Send + Sync;
type Generate = dyn Fn(&mut dyn RngCore) -> Input + Send + Sync;
type Reference = dyn Fn(&Input) -> Multiset + Send + Sync;
type Render = dyn Fn(&[u8]) -> String + Send + Sync;

/// A user's job, its input and its reference, ready to simulate.
pub struct UserJob {
    name: String,
    build: Arc<Build>,
    input: Arc<Generate>,
    reference: Arc<Reference>,
    render: Arc<Render>,
}

impl fmt::Debug for UserJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserJob")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl UserJob {
    /// The job `name`, described by `build` on the environment it is given (with the run's
    /// checkpoint and restart settings), reading its input topics and writing the output
    /// topic through the connectors it is given. Until [`UserJob::input`] and
    /// [`UserJob::reference`] say otherwise, it has no input and must commit nothing.
    pub fn new(
        name: &str,
        build: impl Fn(&StreamEnv, &SimConnectors) + Send + Sync + 'static,
    ) -> Self {
        UserJob {
            name: name.to_owned(),
            build: Arc::new(build),
            input: Arc::new(|_| Input::new()),
            reference: Arc::new(|_| Multiset::default()),
            render: Arc::new(|bytes| format!("{} bytes", bytes.len())),
        }
    }

    /// The same input for every seed.
    pub fn input(self, input: Input) -> Self {
        self.input_per_seed(move |_| input.clone())
    }

    /// A new input for every seed, drawn with the seed's random numbers.
    pub fn input_per_seed(
        mut self,
        generate: impl Fn(&mut dyn RngCore) -> Input + Send + Sync + 'static,
    ) -> Self {
        self.input = Arc::new(generate);
        self
    }

    /// The output a correct run commits, given the input: each value as often as it must be
    /// committed (a multiset; order does not count), as the sink writes it with [`encode`].
    /// Violations show the records involved with `Debug`.
    pub fn reference<O, F>(mut self, reference: F) -> Self
    where
        O: Serialize + DeserializeOwned + fmt::Debug,
        F: Fn(&Input) -> Vec<O> + Send + Sync + 'static,
    {
        self.reference = Arc::new(move |input| {
            let mut expected = Multiset::default();
            for value in reference(input) {
                *expected.entry(encode(&value)).or_default() += 1;
            }
            expected
        });
        self.render = Arc::new(|bytes| {
            match bincode::serde::decode_from_slice::<O, _>(bytes, bincode::config::standard()) {
                Ok((value, _)) => format!("{value:?}"),
                Err(_) => format!(
                    "{} bytes that are no {}",
                    bytes.len(),
                    std::any::type_name::<O>()
                ),
            }
        });
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `seeds` under [`DEFAULT_SETTINGS`] and checks every run exactly-once.
    pub fn simulate(self, seeds: Range<u64>) -> Result<SimulationReport, String> {
        self.simulate_with(DEFAULT_SETTINGS, seeds)
    }

    /// Runs `seeds` under `settings`: a scenario file's TOML (`scenarios/README.md`) without
    /// what the job brings — its description, job, input and parallelism: the property
    /// (exactly-once unless given), a component to break (`broken`), `[checkpoint]`, `[flow]`,
    /// `[restart]`, `[limits]` and the `[[fault]]`s. Fails, naming what is wrong, if the
    /// settings do not parse or the job cannot be built.
    pub fn simulate_with(
        self,
        settings: &str,
        seeds: Range<u64>,
    ) -> Result<SimulationReport, String> {
        let name = self.name.clone();
        let scenario = scenario(self, settings)?;
        let seeds: Vec<u64> = seeds.collect();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let summary = run_scenario(&scenario, &seeds, threads, false, &|| {});
        Ok(SimulationReport { job: name, summary })
    }

    pub(crate) fn generate_input(&self, rng: &mut dyn RngCore) -> GeneratedInput {
        let input = (self.input)(rng);
        GeneratedInput {
            expected: (self.reference)(&input),
            topics: input.topics,
            final_state: FinalState::new(),
        }
    }

    pub(crate) fn describe(&self, env: &StreamEnv, io: &SimConnectors) {
        (self.build)(env, io);
    }

    pub(crate) fn render(&self, bytes: &[u8]) -> String {
        (self.render)(bytes)
    }
}

/// The settings of a user's simulation: a scenario file less what the job brings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "exactly_once")]
    property: Property,
    #[serde(default)]
    broken: Option<Defect>,
    #[serde(default)]
    checkpoint: CheckpointSpec,
    #[serde(default)]
    flow: FlowSpec,
    #[serde(default)]
    restart: RestartSpec,
    #[serde(default)]
    log: LogSpec,
    #[serde(default)]
    sink: SinkSpec,
    #[serde(default, rename = "fault")]
    faults: Vec<FaultSpec>,
    #[serde(default)]
    limits: Limits,
}

fn exactly_once() -> Property {
    Property::ExactlyOnce
}

/// The scenario that runs `job` under `settings`, checked as a scenario file is.
fn scenario(job: UserJob, settings: &str) -> Result<Scenario, String> {
    let settings: Settings =
        toml::from_str(settings).map_err(|error| format!("the settings do not parse: {error}"))?;
    let name = job.name.clone();
    let spec = ScenarioFile {
        description: format!("the user's job '{name}'"),
        job: Job::User(Arc::new(job)),
        seeds: 0,
        property: settings.property,
        broken: settings.broken,
        expect: Expect::Pass,
        input: InputSpec::default(),
        parallelism: Default::default(),
        checkpoint: settings.checkpoint,
        flow: settings.flow,
        restart: settings.restart,
        log: settings.log,
        sink: settings.sink,
        faults: settings.faults,
        limits: settings.limits,
    };
    Scenario::new(&name, spec)
}

/// A job's input: records by topic and partition, each a value (encoded with [`encode`]) and
/// a timestamp.
#[derive(Clone, Debug, Default)]
pub struct Input {
    topics: Vec<TopicInput>,
}

impl Input {
    /// No topic yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `topic`, its partitions holding `partitions`' values in order, each stamped with
    /// its index in its partition as its time.
    pub fn topic<T, P>(self, topic: &'static str, partitions: impl IntoIterator<Item = P>) -> Self
    where
        T: Serialize,
        P: IntoIterator<Item = T>,
    {
        self.timed_topic(
            topic,
            partitions.into_iter().map(|values| {
                values
                    .into_iter()
                    .enumerate()
                    .map(|(index, value)| (value, index as i64))
            }),
        )
    }

    /// Adds `topic`, its partitions holding `partitions`' values in order, each with the
    /// event time (ms) beside it: what a reader with watermarks sees.
    pub fn timed_topic<T, P>(
        mut self,
        topic: &'static str,
        partitions: impl IntoIterator<Item = P>,
    ) -> Self
    where
        T: Serialize,
        P: IntoIterator<Item = (T, i64)>,
    {
        let partitions = partitions
            .into_iter()
            .map(|values| {
                values
                    .into_iter()
                    .map(|(value, timestamp)| LogRecord {
                        value: encode(&value).into(),
                        timestamp,
                    })
                    .collect()
            })
            .collect();
        self.topics.push(TopicInput { topic, partitions });
        self
    }

    /// The values of `topic`, partition by partition, in order (none if there is no such
    /// topic).
    pub fn values<T: DeserializeOwned + Default>(&self, topic: &str) -> Vec<Vec<T>> {
        self.topics
            .iter()
            .filter(|input| input.topic == topic)
            .flat_map(|input| &input.partitions)
            .map(|records| records.iter().map(decode).collect())
            .collect()
    }
}

/// What the seeds of a user's job did.
#[derive(Clone, Debug)]
pub struct SimulationReport {
    /// The job's name.
    pub job: String,
    /// Seeds run, passed and failed, faults, checkpoints and recoveries, and each failing
    /// seed's report (its violation and fault schedule).
    pub summary: ScenarioSummary,
}

impl SimulationReport {
    /// Whether every seed held the property.
    pub fn held(&self) -> bool {
        self.summary.failed == 0
    }

    /// Each failing seed with the property it violated.
    pub fn violations(&self) -> impl Iterator<Item = (u64, &Violation)> {
        self.summary.failures.iter().filter_map(|report| {
            report
                .checked
                .violation
                .as_ref()
                .map(|violation| (report.seed, violation))
        })
    }
}

impl fmt::Display for SimulationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = &self.summary;
        write!(
            f,
            "job '{}': {} seeds, {} passed, {} failed ({} faults, {} checkpoints, {} recoveries)",
            self.job,
            summary.seeds,
            summary.passed,
            summary.failed,
            summary.faults,
            summary.checkpoints,
            summary.recoveries
        )?;
        for report in &summary.failures {
            if let Some(violation) = &report.checked.violation {
                write!(
                    f,
                    "\nseed {}: {} violated: {}",
                    report.seed, violation.property, violation.detail
                )?;
            }
            for (index, fault) in report.schedule.iter().enumerate() {
                write!(f, "\n    fault {index}: {fault}")?;
            }
        }
        Ok(())
    }
}

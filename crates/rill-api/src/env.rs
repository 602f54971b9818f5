//! The stream environment: where a job is described and configured, and built into the
//! [`JobSpec`] an executor runs (`rill`'s `Execute` runs it on the actor runtime; the
//! simulator runs its graph under faults).
//!
//! Runtime settings (worker threads, flow control) are part of [`ExecutionConfig`] as
//! `rill-core`'s plain-data [`RuntimeConfig`]: a user sets them where the job is described, as
//! before, while this crate stays free of the runtime that reads them.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rill_core::checkpoint::CheckpointId;
use rill_core::coordinator::CheckpointConfig;
use rill_core::exchange::{ExchangeKind, ForwardRouter, RouterFactory};
use rill_core::graph::{Edge, JobGraph, OperatorKind, OperatorNode};
use rill_core::key::DEFAULT_MAX_PARALLELISM;
use rill_core::restart::RestartStrategy;
use rill_core::source::{IterSource, SequenceSource, Source, WithWatermarks};
use rill_core::time::{DEFAULT_WATERMARK_INTERVAL_MS, WatermarkStrategy};
use rill_core::{Data, Timestamp};
use rill_store::FjallStateBackend;

use crate::defects::Planted;
use crate::error::{BuildError, DescriptionError};
use crate::stream::DataStream;

pub use rill_core::runtime_config::RuntimeConfig;

/// How jobs of an environment run.
#[derive(Clone, Copy, Debug)]
pub struct ExecutionConfig {
    /// The parallelism of operators that do not set their own.
    pub parallelism: u32,
    /// The number of key groups: the largest parallelism a keyed operator may ever have.
    pub max_parallelism: u32,
    /// Threads, batch size, credits.
    pub runtime: RuntimeConfig,
    /// When and how jobs checkpoint (off unless an interval is set).
    pub checkpoint: CheckpointConfig,
    /// Whether and when a failed job restarts from its latest completed checkpoint.
    pub restart: RestartStrategy,
    /// How often sources emit the watermarks of periodic generators, in processing time
    /// (Flink's auto-watermark interval; 200 ms by default). Zero turns periodic emission off:
    /// only punctuated watermarks and the end of the input move event time. See
    /// [`StreamEnv::set_auto_watermark_interval`].
    pub auto_watermark_interval: Duration,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            parallelism: 1,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            runtime: RuntimeConfig::default(),
            checkpoint: CheckpointConfig::default(),
            restart: RestartStrategy::None,
            auto_watermark_interval: Duration::from_millis(DEFAULT_WATERMARK_INTERVAL_MS),
        }
    }
}

/// Where keyed operators keep their state (value, map, ... state, and reduce's running values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StateBackendConfig {
    /// In memory: the fastest, for state that fits in memory.
    #[default]
    Memory,
    /// On local disk, in fjall: for working state larger than memory. `dir` must be a
    /// directory of its own (anything else is refused, never wiped); it is a scratch working copy,
    /// wiped when the job starts and removed when it ends; checkpoints (in the checkpoint
    /// directory) are what survive the process.
    Fjall {
        /// The working copy's directory.
        dir: PathBuf,
    },
}

/// A watermark interval in whole milliseconds: a nonzero one below a millisecond is 1 ms, so
/// that only zero turns periodic emission off.
fn interval_ms(interval: Duration) -> u64 {
    if interval.is_zero() {
        return 0;
    }
    u64::try_from(interval.as_millis()).map_or(u64::MAX, |ms| ms.max(1))
}

/// An operator as described, before parallelism is resolved.
pub(crate) struct NodeDraft {
    pub name: String,
    pub uid: Option<String>,
    pub parallelism: Option<u32>,
    /// An earlier operator whose parallelism this one takes unless its own is set: for
    /// operators the API adds on the user's behalf, which the user has no handle on (the
    /// wrapping of a join's inputs).
    pub parallelism_of: Option<usize>,
    /// Set for sources that cannot run in parallel.
    pub parallel: bool,
    pub kind: OperatorKind,
}

/// How an edge exchanges records.
pub(crate) enum EdgeExchange {
    /// Forward when both sides have the same parallelism, otherwise rebalance (with this router).
    Default { rebalance: RouterFactory },
    /// The exchange the user or the operation asked for.
    Explicit(ExchangeKind, RouterFactory),
}

pub(crate) struct EdgeDraft {
    pub from: usize,
    pub to: usize,
    pub exchange: EdgeExchange,
}

#[derive(Default)]
pub(crate) struct Draft {
    pub config: ExecutionConfig,
    /// Where checkpoints go durably, if anywhere.
    pub checkpoint_dir: Option<PathBuf>,
    /// The checkpoint to start from instead of the newest.
    pub start_from: Option<u64>,
    /// Whether the job may start behind what its sinks committed.
    pub allow_rewind: bool,
    pub state_backend: StateBackendConfig,
    pub nodes: Vec<NodeDraft>,
    pub edges: Vec<EdgeDraft>,
    /// Mistakes made while describing the job, reported by [`StreamEnv::job_graph`].
    pub mistakes: Vec<DescriptionError>,
    /// The broken component keyed operators are built with (none unless the simulator plants
    /// one).
    pub planted: Planted,
    /// The operators wrapping a stream as one side of a two-input operator's input, by the
    /// stream's operator, the wrapped type and the side: shared by every such operator.
    pub wrapped: BTreeMap<(usize, TypeId, &'static str), usize>,
}

/// A described job, ready for an executor: its graph, how it runs, and where its checkpoints
/// go.
pub struct JobSpec {
    /// The job's graph.
    pub graph: JobGraph,
    /// Threads, batch size, credits.
    pub runtime: RuntimeConfig,
    /// Where checkpoints go durably, if anywhere.
    pub checkpoint_dir: Option<PathBuf>,
    /// The checkpoint to start from instead of the newest (set only with a checkpoint
    /// directory).
    pub start_from: Option<CheckpointId>,
}

/// Where a job is described: sources come from here, operations hang off the streams.
///
/// Cloning an environment gives another handle on the same job description.
#[derive(Clone, Default)]
pub struct StreamEnv {
    draft: Arc<Mutex<Draft>>,
}

impl StreamEnv {
    /// An environment with the default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// An environment with the given configuration.
    pub fn with_config(config: ExecutionConfig) -> Self {
        let env = Self::default();
        env.draft().config = config;
        env
    }

    /// The configuration jobs run with.
    pub fn config(&self) -> ExecutionConfig {
        self.draft().config
    }

    /// Sets the parallelism of operators that do not set their own.
    pub fn set_parallelism(&self, parallelism: u32) -> &Self {
        self.draft().config.parallelism = parallelism;
        self
    }

    /// Takes a checkpoint every `interval` (with the other checkpoint settings as configured).
    pub fn enable_checkpointing(&self, interval: std::time::Duration) -> &Self {
        self.draft().config.checkpoint.interval_ms = Some(interval.as_millis() as u64);
        self
    }

    /// Keeps checkpoints durably in a checkpoint store in `dir` (created if needed). A job
    /// executed with the same name and directory resumes from the newest checkpoint there.
    pub fn set_checkpoint_dir(&self, dir: impl Into<PathBuf>) -> &Self {
        self.draft().checkpoint_dir = Some(dir.into());
        self
    }

    /// Starts the job from its checkpoint or savepoint `checkpoint` in the checkpoint directory
    /// instead of the newest one (`rill checkpoints list` shows them). The job may have another
    /// parallelism than the one that took it; operators are matched by uid.
    pub fn start_from_checkpoint(&self, checkpoint: u64) -> &Self {
        self.draft().start_from = Some(checkpoint);
        self
    }

    /// Lets the job start from a point behind what its exactly-once log sinks already
    /// committed — an older checkpoint or savepoint, or none when the checkpoint store was
    /// lost — accepting that the output since that point is written again. Without it, such a
    /// start fails with an error naming both checkpoints.
    pub fn allow_rewind(&self) -> &Self {
        self.draft().allow_rewind = true;
        self
    }

    /// Keeps keyed state where `backend` says. Checkpoints taken with one backend restore
    /// with the other.
    pub fn set_state_backend(&self, backend: StateBackendConfig) -> &Self {
        self.draft().state_backend = backend;
        self
    }

    /// Restarts a failed job from its latest completed checkpoint as `strategy` allows.
    pub fn set_restart_strategy(&self, strategy: RestartStrategy) -> &Self {
        self.draft().config.restart = strategy;
        self
    }

    /// Sets how often sources emit the watermarks of periodic generators (such as
    /// [`WatermarkStrategy::bounded_out_of_orderness`]'s), in processing time, at millisecond
    /// resolution: Flink's `setAutoWatermarkInterval`, 200 ms unless set. A source emits its
    /// watermark after the first poll at or past each due time, so a watermark covers whole
    /// polls (up to a batch of records each). `Duration::ZERO` turns periodic emission off, as
    /// in Flink: periodic generators then move no watermark before the end of the input, and
    /// only punctuated ones (emitting from `on_event`) do.
    pub fn set_auto_watermark_interval(&self, interval: Duration) -> &Self {
        self.draft().config.auto_watermark_interval = interval;
        self
    }

    /// Sets the number of worker threads the job's subtasks are spread over.
    pub fn set_workers(&self, workers: usize) -> &Self {
        self.draft().config.runtime.workers = workers;
        self
    }

    pub(crate) fn draft(&self) -> MutexGuard<'_, Draft> {
        // A panic while describing a job cannot leave the draft half-changed in a way that
        // matters more than the panic itself.
        self.draft
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn add_node(&self, node: NodeDraft) -> usize {
        let mut draft = self.draft();
        draft.nodes.push(node);
        draft.nodes.len() - 1
    }

    pub(crate) fn add_edge(&self, edge: EdgeDraft) {
        self.draft().edges.push(edge);
    }

    /// A stream from a source; `parallel` says whether it may run with parallelism above 1
    /// (each subtask builds its own instance with `make`, told its index and the parallelism).
    pub fn from_source<S, F>(&self, name: &str, parallel: bool, make: F) -> DataStream<S::Out>
    where
        S: Source,
        F: Fn(u32, u32) -> S + Send + Sync + 'static,
    {
        let node = self.add_node(NodeDraft {
            name: name.to_owned(),
            uid: None,
            parallelism: (!parallel).then_some(1),
            parallelism_of: None,
            parallel,
            kind: OperatorKind::Source(Arc::new(move |info| {
                Box::new(make(info.subtask, info.parallelism))
            })),
        });
        DataStream::new(self.clone(), node)
    }

    /// Like [`StreamEnv::from_source`], with event time: the source's records carry their
    /// timestamps (see `SourceOutput::collect_with_timestamp`), and each subtask derives
    /// watermarks from them by `strategy`, its whole input counting as one partition. A source
    /// whose records carry no timestamp can be wrapped in
    /// [`WithWatermarks::with_timestamps`] and given to [`StreamEnv::from_source`] instead;
    /// the event log's source keeps one watermark generator per partition
    /// ([`LogSource::with_watermarks`](crate::connectors::log::LogSource::with_watermarks)).
    pub fn from_source_with_watermarks<S, F>(
        &self,
        name: &str,
        parallel: bool,
        make: F,
        strategy: WatermarkStrategy,
    ) -> DataStream<S::Out>
    where
        S: Source,
        F: Fn(u32, u32) -> S + Send + Sync + 'static,
    {
        self.from_source(name, parallel, move |subtask, parallelism| {
            WithWatermarks::new(make(subtask, parallelism), strategy.clone())
        })
    }

    /// A stream of the items of a collection, in order (parallelism 1). The collection is
    /// cloned for each run, so the job can be executed again.
    pub fn from_iter<I>(&self, items: I) -> DataStream<I::Item>
    where
        I: IntoIterator + Clone + Send + Sync + 'static,
        I::IntoIter: Send + 'static,
        I::Item: Data,
    {
        self.from_source("from_iter", false, move |_, _| {
            IterSource::new(items.clone())
        })
    }

    /// Like [`StreamEnv::from_iter`], with event time: each item is stamped with
    /// `timestamp_of(&item)` (milliseconds since the Unix epoch), and watermarks follow by
    /// `strategy`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rill::prelude::*;
    ///
    /// let env = StreamEnv::new();
    /// let readings = env.from_iter_with_timestamps(
    ///     vec![(1_000, 20.5), (3_000, 21.0), (2_000, 20.8)],
    ///     |(at_ms, _): &(i64, f64)| Timestamp(*at_ms),
    ///     WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(1)),
    /// );
    /// # let _ = readings;
    /// ```
    pub fn from_iter_with_timestamps<I, F>(
        &self,
        items: I,
        timestamp_of: F,
        strategy: WatermarkStrategy,
    ) -> DataStream<I::Item>
    where
        I: IntoIterator + Clone + Send + Sync + 'static,
        I::IntoIter: Send + 'static,
        I::Item: Data,
        F: Fn(&I::Item) -> Timestamp + Send + Sync + 'static,
    {
        let timestamp_of = Arc::new(timestamp_of);
        self.from_source("from_iter", false, move |_, _| {
            let timestamp_of = Arc::clone(&timestamp_of);
            WithWatermarks::with_timestamps(
                IterSource::new(items.clone()),
                move |item: &I::Item| timestamp_of(item),
                strategy.clone(),
            )
        })
    }

    /// A stream of the numbers of `range`; each parallel subtask emits one contiguous slice.
    pub fn from_sequence(&self, range: std::ops::Range<u64>) -> DataStream<u64> {
        self.from_source("sequence", true, move |index, parallelism| {
            SequenceSource::slice(range.clone(), index, parallelism)
        })
    }

    /// The job as a graph ready to submit to a runtime: parallelism resolved, and each
    /// default edge made forward (same parallelism) or rebalance (different parallelism). With
    /// the fjall state backend, this opens (and wipes) its directory: the graph holds it.
    pub fn job_graph(&self, name: &str) -> Result<JobGraph, BuildError> {
        let draft = self.draft();
        if let Some(mistake) = draft.mistakes.first() {
            return Err(mistake.clone().into());
        }
        let mut graph = JobGraph::new(name);
        graph.max_parallelism = draft.config.max_parallelism;
        graph.checkpoint = draft.config.checkpoint;
        graph.restart = draft.config.restart;
        graph.allow_rewind = draft.allow_rewind;
        graph.watermark_interval_ms = interval_ms(draft.config.auto_watermark_interval);
        if let StateBackendConfig::Fjall { dir } = &draft.state_backend {
            graph.state_backend = FjallStateBackend::open(dir)?.backend();
        }
        for (node, parallelism) in draft.nodes.iter().zip(draft.parallelisms()) {
            if !node.parallel && parallelism != 1 {
                return Err(BuildError::NonParallelSource {
                    operator: node.name.clone(),
                    parallelism,
                });
            }
            graph.add_operator(OperatorNode {
                name: node.name.clone(),
                uid: node.uid.clone(),
                parallelism,
                kind: node.kind.clone(),
            });
        }
        for edge in &draft.edges {
            let (from, to) = (
                rill_core::graph::OperatorId(edge.from),
                rill_core::graph::OperatorId(edge.to),
            );
            let (exchange, router) = match &edge.exchange {
                EdgeExchange::Default { rebalance } => {
                    if graph.operator(from).parallelism == graph.operator(to).parallelism {
                        let forward: RouterFactory = Arc::new(|_| Box::new(ForwardRouter));
                        (ExchangeKind::Forward, forward)
                    } else {
                        (ExchangeKind::Rebalance, rebalance.clone())
                    }
                }
                EdgeExchange::Explicit(kind, router) => (*kind, router.clone()),
            };
            graph.add_edge(Edge {
                from,
                to,
                exchange,
                router,
            });
        }
        graph.validate()?;
        Ok(graph)
    }

    /// The job as an executor runs it: its graph (see [`StreamEnv::job_graph`]), the runtime
    /// settings, and the checkpoint directory and checkpoint to start from, if set.
    pub fn job_spec(&self, name: &str) -> Result<JobSpec, BuildError> {
        let graph = self.job_graph(name)?;
        let draft = self.draft();
        let start_from = match (&draft.checkpoint_dir, draft.start_from) {
            (None, Some(checkpoint)) => return Err(BuildError::NoCheckpointDir { checkpoint }),
            (_, start_from) => start_from.map(CheckpointId),
        };
        Ok(JobSpec {
            graph,
            runtime: draft.config.runtime,
            checkpoint_dir: draft.checkpoint_dir.clone(),
            start_from,
        })
    }

    /// Builds every keyed operator with timers described from now on (windows, process and
    /// co-process functions, joins) with `defect` planted, for the simulator to catch (see
    /// `rill_core::defects`).
    #[cfg(feature = "defects")]
    pub fn plant_defect(&self, defect: rill_core::defects::Defect) -> &Self {
        self.draft().planted = Planted::with(defect);
        self
    }

    /// The broken component keyed operators are built with, if any.
    pub(crate) fn planted(&self) -> Planted {
        self.draft().planted
    }
}

impl Draft {
    /// Each operator's parallelism: its own, else the one it takes from an earlier operator,
    /// else the default.
    fn parallelisms(&self) -> Vec<u32> {
        let mut resolved: Vec<u32> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let inherited = node
                .parallelism_of
                .and_then(|earlier| resolved.get(earlier).copied());
            resolved.push(
                node.parallelism
                    .or(inherited)
                    .unwrap_or(self.config.parallelism),
            );
        }
        resolved
    }
}

//! The stream environment: where a job is described, configured and executed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rill_core::checkpoint::CheckpointId;
use rill_core::coordinator::CheckpointConfig;
use rill_core::exchange::{ExchangeKind, ForwardRouter, RouterFactory};
use rill_core::graph::{Edge, JobGraph, OperatorKind, OperatorNode};
use rill_core::key::DEFAULT_MAX_PARALLELISM;
use rill_core::restart::RestartStrategy;
use rill_core::source::{IterSource, SequenceSource, Source, WithWatermarks};
use rill_core::time::WatermarkStrategy;
use rill_core::{Data, Timestamp};
use rill_runtime::{JobCanceller, JobHandle, JobReport, PendingSavepoint, Runtime, RuntimeConfig};
use rill_store::{CheckpointStore, FjallStateBackend};

use crate::error::{DescriptionError, RillError};
use crate::stream::DataStream;

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
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            parallelism: 1,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            runtime: RuntimeConfig::default(),
            checkpoint: CheckpointConfig::default(),
            restart: RestartStrategy::None,
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

/// An operator as described, before parallelism is resolved.
pub(crate) struct NodeDraft {
    pub name: String,
    pub uid: Option<String>,
    pub parallelism: Option<u32>,
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
            WithWatermarks::new(make(subtask, parallelism), strategy)
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
                strategy,
            )
        })
    }

    /// A stream of the numbers of `range`; each parallel subtask emits one contiguous slice.
    pub fn from_sequence(&self, range: std::ops::Range<u64>) -> DataStream<u64> {
        self.from_source("sequence", true, move |index, parallelism| {
            SequenceSource::slice(range.clone(), index, parallelism)
        })
    }

    /// The job as a graph ready to submit to a [`Runtime`]: parallelism resolved, and each
    /// default edge made forward (same parallelism) or rebalance (different parallelism). With
    /// the fjall state backend, this opens (and wipes) its directory: the graph holds it.
    pub fn job_graph(&self, name: &str) -> Result<JobGraph, RillError> {
        let draft = self.draft();
        if let Some(mistake) = draft.mistakes.first() {
            return Err(mistake.clone().into());
        }
        let default = draft.config.parallelism;
        let mut graph = JobGraph::new(name);
        graph.max_parallelism = draft.config.max_parallelism;
        graph.checkpoint = draft.config.checkpoint;
        graph.restart = draft.config.restart;
        graph.allow_rewind = draft.allow_rewind;
        if let StateBackendConfig::Fjall { dir } = &draft.state_backend {
            graph.state_backend = FjallStateBackend::open(dir)?.backend();
        }
        for node in &draft.nodes {
            let parallelism = node.parallelism.unwrap_or(default);
            if !node.parallel && parallelism != 1 {
                return Err(RillError::NonParallelSource {
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

    /// Runs the job on a runtime of its own and blocks until it ends.
    ///
    /// From inside an async runtime, use [`StreamEnv::execute_async`] and await the job instead.
    pub fn execute(&self, name: &str) -> Result<JobReport, RillError> {
        self.execute_async(name)?.wait()
    }

    /// Starts the job on a runtime of its own and returns at once.
    pub fn execute_async(&self, name: &str) -> Result<RunningJob, RillError> {
        let graph = self.job_graph(name)?;
        let (checkpoint_dir, start_from) = {
            let draft = self.draft();
            (draft.checkpoint_dir.clone(), draft.start_from)
        };
        let store = checkpoint_dir.map(CheckpointStore::open).transpose()?;
        let runtime = Runtime::new(self.config().runtime)?;
        let handle = match (store, start_from) {
            (Some(store), Some(checkpoint)) => {
                runtime.submit_from_checkpoint(graph, store, CheckpointId(checkpoint))?
            }
            (Some(store), None) => runtime.submit_with_store(graph, store)?,
            (None, Some(checkpoint)) => {
                return Err(RillError::NoCheckpointDir { checkpoint });
            }
            (None, None) => runtime.submit(graph)?,
        };
        Ok(RunningJob { handle, runtime })
    }
}

/// A job running on a runtime of its own; the runtime stops when the job's outcome is taken.
pub struct RunningJob {
    handle: JobHandle,
    // Declared after the handle: dropped last, so it outlives every use of the handle.
    runtime: Runtime,
}

impl RunningJob {
    /// Waits for the job to end, from any async context.
    pub async fn join(self) -> Result<JobReport, RillError> {
        let RunningJob { handle, runtime } = self;
        let outcome = handle.join().await;
        drop(runtime);
        Ok(outcome?)
    }

    /// Blocks until the job ends.
    ///
    /// # Panics
    /// When called from inside an async runtime's thread: use [`RunningJob::join`] there.
    pub fn wait(self) -> Result<JobReport, RillError> {
        let RunningJob { handle, runtime } = self;
        let outcome = handle.wait();
        drop(runtime);
        Ok(outcome?)
    }

    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.handle.cancel();
    }

    /// A handle that cancels the job from another thread or task.
    pub fn canceller(&self) -> JobCanceller {
        self.handle.canceller()
    }

    /// Asks for a savepoint (see [`JobCanceller::savepoint`]).
    pub fn savepoint(&self) -> PendingSavepoint {
        self.handle.savepoint()
    }

    /// Asks for a savepoint and stops the job once it is complete (see
    /// [`JobCanceller::stop_with_savepoint`]).
    pub fn stop_with_savepoint(&self) -> PendingSavepoint {
        self.handle.stop_with_savepoint()
    }
}

//! The runtime: a dedicated actix system on its own thread, a pool of arbiters (one thread
//! each) that subtasks are spread over, and job submission.

use std::thread::JoinHandle;

use actix::dev::ArbiterHandle;
use actix::{Actor, Arbiter, System};
use rill_core::checkpoint::CheckpointId;
use rill_core::coordinator::CompletedCheckpoint;
use rill_core::flow::FlowConfigError;
use rill_core::graph::JobGraph;
use rill_core::plan::PhysicalPlan;
use rill_store::CheckpointStore;
use tokio::sync::oneshot;

use crate::job::{JobError, JobHandle};
use crate::master::JobMaster;

// Plain data that the job description (`rill-api`) fills in too, so it lives in `rill-core`.
pub use rill_core::runtime_config::RuntimeConfig;

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A thread or its async runtime could not be created.
    #[error("could not start the runtime's threads: {0}")]
    Start(#[from] std::io::Error),
    /// The configuration asks for no worker.
    #[error("the runtime needs at least one worker thread")]
    NoWorkers,
    /// The batch size or the credits would stop every job.
    #[error("invalid flow control settings: {0}")]
    InvalidFlow(#[from] FlowConfigError),
    /// Subtasks would read the clock without pause.
    #[error("the processing time interval must be above zero")]
    NoProcessingTimeInterval,
    /// The runtime's thread ended while starting.
    #[error("the runtime's thread ended while starting")]
    Gone,
}

/// A running actix system with its worker arbiters. Dropping it stops every job on it.
pub struct Runtime {
    system: System,
    workers: Vec<ArbiterHandle>,
    config: RuntimeConfig,
    thread: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Starts the runtime's threads.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        if config.workers == 0 {
            return Err(RuntimeError::NoWorkers);
        }
        config.flow.validate()?;
        if config.processing_time_interval.is_zero() {
            return Err(RuntimeError::NoProcessingTimeInterval);
        }
        crate::panic_context::install_hook();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rill-runtime".into())
            .spawn(move || run_system(config.workers, ready_tx))?;
        let (system, workers) = match ready_rx.recv() {
            Ok(started) => started?,
            Err(_) => return Err(RuntimeError::Gone),
        };
        Ok(Runtime {
            system,
            workers,
            config,
            thread: Some(thread),
        })
    }

    /// The configuration the runtime runs jobs with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Validates, plans and deploys a job; returns at once with its handle. Its checkpoints
    /// stay in memory.
    pub fn submit(&self, graph: JobGraph) -> Result<JobHandle, JobError> {
        self.deploy(graph, None, None)
    }

    /// Like [`Runtime::submit`], but checkpoints go durably to `store`, and if the store holds
    /// a completed checkpoint of a job of the same name, the job resumes from the newest one.
    /// Snapshots of checkpoints that never completed (a crash while they were taken) are
    /// deleted first.
    pub fn submit_with_store(
        &self,
        graph: JobGraph,
        store: CheckpointStore,
    ) -> Result<JobHandle, JobError> {
        self.submit_stored(graph, store, None)
    }

    /// Like [`Runtime::submit_with_store`], but the job starts from `checkpoint` (a savepoint,
    /// say) of the job of the same name in `store`, not from the newest.
    pub fn submit_from_checkpoint(
        &self,
        graph: JobGraph,
        store: CheckpointStore,
        checkpoint: CheckpointId,
    ) -> Result<JobHandle, JobError> {
        self.submit_stored(graph, store, Some(checkpoint))
    }

    /// Deploys a job checkpointing into `store`, from `checkpoint` or else the newest.
    fn submit_stored(
        &self,
        graph: JobGraph,
        store: CheckpointStore,
        checkpoint: Option<CheckpointId>,
    ) -> Result<JobHandle, JobError> {
        let store_error = |error| JobError::CheckpointStore {
            job: graph.name.clone(),
            error,
        };
        // The newest intact checkpoint is found before the leftovers go, so that the warning
        // names a checkpoint whose metadata reads as cut short too: a crash while it was
        // written, or damage to its length that no reader can tell from one.
        let start_from = match checkpoint {
            None => match store.latest(&graph.name).map_err(store_error)? {
                Some(intact) => {
                    for damage in &intact.skipped {
                        if damage.is_unfinished_metadata() {
                            tracing::warn!(%damage, restoring = %intact.checkpoint.id(), "a newer checkpoint never completed (its metadata is cut short) and is deleted");
                        } else {
                            tracing::warn!(%damage, restoring = %intact.checkpoint.id(), "a newer checkpoint is damaged and skipped");
                        }
                    }
                    Some(intact.checkpoint)
                }
                None => None,
            },
            Some(checkpoint) => match store.get(&graph.name, checkpoint).map_err(store_error)? {
                Some(point) => Some(point),
                None => {
                    return Err(JobError::NoSuchCheckpoint {
                        job: graph.name.clone(),
                        checkpoint,
                    });
                }
            },
        };
        store.discard_leftovers(&graph.name).map_err(store_error)?;
        self.deploy(graph, Some(store), start_from)
    }

    fn deploy(
        &self,
        graph: JobGraph,
        store: Option<CheckpointStore>,
        resume_from: Option<CompletedCheckpoint>,
    ) -> Result<JobHandle, JobError> {
        let plan = PhysicalPlan::new(&graph)?;
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let job = graph.name.clone();
        let workers = self.workers.clone();
        let config = self.config;
        let master = JobMaster::start_in_arbiter(self.system.arbiter(), move |_| {
            JobMaster::new(
                (graph, plan),
                (workers, config),
                (store, resume_from),
                outcome_tx,
            )
        });
        Ok(JobHandle {
            job,
            outcome: outcome_rx,
            master,
        })
    }
}

type Started = Result<(System, Vec<ArbiterHandle>), RuntimeError>;

/// The runtime thread: builds the system and its arbiters, runs until stopped, then stops and
/// joins the arbiters.
fn run_system(workers: usize, ready: std::sync::mpsc::Sender<Started>) {
    let tokio_runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(error.into()));
            return;
        }
    };
    let runner = System::with_tokio_rt(|| tokio_runtime);
    let arbiters: Result<Vec<Arbiter>, _> = (0..workers).map(|_| Arbiter::try_new()).collect();
    let arbiters = match arbiters {
        Ok(arbiters) => arbiters,
        Err(error) => {
            let _ = ready.send(Err(error.into()));
            return;
        }
    };
    let handles = arbiters.iter().map(Arbiter::handle).collect();
    if ready.send(Ok((System::current(), handles))).is_err() {
        return;
    }
    if let Err(error) = runner.run() {
        tracing::warn!(%error, "the runtime's system stopped with an error");
    }
    for arbiter in arbiters {
        arbiter.stop();
        if arbiter.join().is_err() {
            tracing::warn!("a worker thread panicked");
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the runtime thread panicked");
        }
    }
}

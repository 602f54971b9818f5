//! A submitted job: the handle an application keeps, and how a job ends.

use std::time::Duration;

use actix::Addr;
use rill_core::TaskError;
use rill_core::coordinator::CheckpointMetadata;
use rill_core::graph::GraphError;
use tokio::sync::oneshot;

use crate::checkpoint_times::CheckpointTimes;
use crate::master::JobMaster;
use crate::messages::{Cancel, RequestSavepoint};

/// What a job that ran to the end reports.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// The job's name.
    pub job: String,
    /// How many subtasks ran.
    pub subtasks: usize,
    /// Wall time from submission to the last subtask finishing, restarts included.
    pub elapsed: Duration,
    /// How many checkpoints completed while the job ran.
    pub checkpoints_completed: u64,
    /// The newest of them.
    pub latest_checkpoint: Option<CheckpointMetadata>,
    /// How many times the job restarted after a failure.
    pub restarts: u32,
    /// How long its checkpoints took, if any completed.
    pub checkpoint_times: Option<CheckpointTimes>,
}

/// Why a job did not run to the end. Its `Debug` form is its message and causes, so that `main`
/// returning it prints something readable.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The job graph cannot run.
    #[error("job cannot run: {0}")]
    Graph(#[from] GraphError),
    /// A subtask failed; the job was stopped.
    #[error("job '{job}' failed in subtask {subtask} of {parallelism} ({chain}): {error}")]
    TaskFailed {
        /// The job's name.
        job: String,
        /// The chain of operators the subtask runs.
        chain: String,
        /// The subtask's index.
        subtask: u32,
        /// The chain's parallelism.
        parallelism: u32,
        /// What failed, naming the operator.
        #[source]
        error: TaskError,
    },
    /// An actor stopped without being asked to: a bug in the runtime.
    #[error("job '{job}' lost the {what} of subtask {subtask} of chain '{chain}'")]
    ActorLost {
        /// The job's name.
        job: String,
        /// The chain of the subtask.
        chain: String,
        /// The subtask's index.
        subtask: u32,
        /// Which actor stopped.
        what: &'static str,
    },
    /// The job could not be deployed.
    #[error("job '{job}' could not be deployed: {reason}")]
    Deploy {
        /// The job's name.
        job: String,
        /// What went wrong.
        reason: String,
    },
    /// A checkpoint's state does not fit the job.
    #[error("job '{job}' cannot restore {checkpoint}: {error}")]
    Restore {
        /// The job's name.
        job: String,
        /// The checkpoint.
        checkpoint: rill_core::checkpoint::CheckpointId,
        /// Why its state does not fit.
        error: rill_core::layout::RestoreError,
    },
    /// A savepoint could not be taken.
    #[error("job '{job}' could not take a savepoint: {reason}")]
    Savepoint {
        /// The job's name.
        job: String,
        /// Why.
        reason: String,
    },
    /// An actor of a failed attempt did not stop in time, so the job did not restart: a sink
    /// of the old attempt could still have written beside the new one.
    #[error(
        "job '{job}' was not restarted: an actor of the failed attempt did not stop within {waited_ms} ms (stuck in user code?); the failure was: {error}"
    )]
    AttemptDidNotStop {
        /// The job's name.
        job: String,
        /// How long the master waited.
        waited_ms: u64,
        /// The failure that ended the attempt.
        error: Box<JobError>,
    },
    /// The checkpoint store could not be read.
    #[error("job '{job}' cannot read its checkpoints: {error}")]
    CheckpointStore {
        /// The job's name.
        job: String,
        /// What the store reported.
        #[source]
        error: rill_store::StoreError,
    },
    /// The checkpoint to start from is not in the store.
    #[error(
        "job '{job}' has no completed {checkpoint} to start from (rill checkpoints list shows those there are)"
    )]
    NoSuchCheckpoint {
        /// The job's name.
        job: String,
        /// The checkpoint asked for.
        checkpoint: rill_core::checkpoint::CheckpointId,
    },
    /// Too many checkpoints failed in a row.
    #[error("job '{job}' failed: {reason}")]
    Checkpointing {
        /// The job's name.
        job: String,
        /// What the coordinator reported.
        reason: String,
    },
    /// The application cancelled the job.
    #[error("job '{0}' was cancelled")]
    Cancelled(String),
    /// The runtime shut down before the job ended.
    #[error("the runtime stopped before job '{0}' ended")]
    RuntimeStopped(String),
}

impl std::fmt::Debug for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        rill_core::error::fmt_message_and_causes(self, f)
    }
}

/// The handle on a running job: await its outcome or cancel it.
pub struct JobHandle {
    pub(crate) job: String,
    pub(crate) outcome: oneshot::Receiver<Result<JobReport, JobError>>,
    pub(crate) master: Addr<JobMaster>,
}

impl JobHandle {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.job
    }

    /// Waits for the job to end, from any async context (tokio, actix or another executor).
    pub async fn join(self) -> Result<JobReport, JobError> {
        self.outcome
            .await
            .unwrap_or_else(|_| Err(JobError::RuntimeStopped(self.job)))
    }

    /// Blocks the calling thread until the job ends.
    ///
    /// # Panics
    /// When called from inside an async runtime's thread: use [`JobHandle::join`] there.
    pub fn wait(self) -> Result<JobReport, JobError> {
        self.outcome
            .blocking_recv()
            .unwrap_or_else(|_| Err(JobError::RuntimeStopped(self.job)))
    }

    /// Asks the job to stop; its outcome becomes [`JobError::Cancelled`] unless it already ended.
    pub fn cancel(&self) {
        self.master.do_send(Cancel);
    }

    /// A handle that can cancel the job from elsewhere (another thread, a signal handler task).
    pub fn canceller(&self) -> JobCanceller {
        JobCanceller {
            job: self.job.clone(),
            master: self.master.clone(),
        }
    }

    /// Asks for a savepoint: see [`JobCanceller::savepoint`].
    pub fn savepoint(&self) -> PendingSavepoint {
        self.canceller().savepoint()
    }

    /// Asks for a savepoint, then a stop: see [`JobCanceller::stop_with_savepoint`].
    pub fn stop_with_savepoint(&self) -> PendingSavepoint {
        self.canceller().stop_with_savepoint()
    }
}

/// Cancels a job; cheap to clone and send to other threads.
#[derive(Clone)]
pub struct JobCanceller {
    job: String,
    master: Addr<JobMaster>,
}

impl JobCanceller {
    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.master.do_send(Cancel);
    }

    /// Asks for a savepoint: a checkpoint taken now and kept until deleted by hand (the
    /// retention of periodic checkpoints never discards it). A job started again with the same
    /// name and checkpoint store resumes from it if it is the newest.
    pub fn savepoint(&self) -> PendingSavepoint {
        self.request(false)
    }

    /// Asks for a savepoint and stops the job once it is complete: its sinks commit up to the
    /// savepoint, and the job ends successfully ([`JobHandle::join`] gets its report). Started
    /// again, the job goes on from exactly there.
    pub fn stop_with_savepoint(&self) -> PendingSavepoint {
        self.request(true)
    }

    fn request(&self, stop: bool) -> PendingSavepoint {
        let (reply, receiver) = oneshot::channel();
        self.master.do_send(RequestSavepoint { stop, reply });
        PendingSavepoint {
            job: self.job.clone(),
            receiver,
        }
    }
}

/// A savepoint asked for: await it, or block on it.
pub struct PendingSavepoint {
    job: String,
    receiver: oneshot::Receiver<Result<CheckpointMetadata, JobError>>,
}

impl PendingSavepoint {
    fn ended(job: String) -> JobError {
        JobError::Savepoint {
            job,
            reason: "the job ended before the savepoint completed".to_owned(),
        }
    }

    /// Waits for the savepoint, from any async context.
    pub async fn join(self) -> Result<CheckpointMetadata, JobError> {
        self.receiver
            .await
            .unwrap_or_else(|_| Err(Self::ended(self.job)))
    }

    /// Blocks the calling thread until the savepoint is complete.
    ///
    /// # Panics
    /// When called from inside an async runtime's thread: use [`PendingSavepoint::join`] there.
    pub fn wait(self) -> Result<CheckpointMetadata, JobError> {
        self.receiver
            .blocking_recv()
            .unwrap_or_else(|_| Err(Self::ended(self.job)))
    }
}

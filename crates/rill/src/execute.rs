//! Running a described job on the actor runtime: [`Execute`] for [`StreamEnv`], and the
//! [`RunningJob`] it starts.
//!
//! The environment lives in `rill-api`, which knows no runtime, so execution is an extension
//! trait (in [`crate::prelude`]): `env.execute(name)` reads as it always did, and the API crate
//! stays actix-free for the simulator and for anyone who only builds job graphs.

use rill_api::{JobSpec, StreamEnv};
use rill_runtime::{JobCanceller, JobHandle, JobReport, PendingSavepoint, Runtime};
use rill_store::CheckpointStore;

use crate::error::RillError;

/// Runs a described job on a runtime of its own.
pub trait Execute {
    /// Runs the job and blocks until it ends.
    ///
    /// From inside an async runtime, use [`Execute::execute_async`] and await the job instead.
    fn execute(&self, name: &str) -> Result<JobReport, RillError>;

    /// Starts the job and returns at once.
    fn execute_async(&self, name: &str) -> Result<RunningJob, RillError>;
}

impl Execute for StreamEnv {
    fn execute(&self, name: &str) -> Result<JobReport, RillError> {
        self.execute_async(name)?.wait()
    }

    fn execute_async(&self, name: &str) -> Result<RunningJob, RillError> {
        let JobSpec {
            graph,
            runtime,
            checkpoint_dir,
            start_from,
        } = self.job_spec(name)?;
        let store = checkpoint_dir.map(CheckpointStore::open).transpose()?;
        let name = graph.name.clone();
        let savepoints = store.is_some();
        let runtime = Runtime::new(runtime)?;
        let handle = match (store, start_from) {
            (Some(store), Some(checkpoint)) => {
                runtime.submit_from_checkpoint(graph, store, checkpoint)?
            }
            (Some(store), None) => runtime.submit_with_store(graph, store)?,
            // `job_spec` refuses a checkpoint to start from without a directory.
            (None, _) => runtime.submit(graph)?,
        };
        Ok(RunningJob {
            handle,
            name,
            savepoints,
            runtime,
        })
    }
}

/// A job running on a runtime of its own; the runtime stops when the job's outcome is taken.
pub struct RunningJob {
    handle: JobHandle,
    name: String,
    /// Whether the job has a checkpoint store, where a savepoint can go.
    savepoints: bool,
    // Declared after the handle: dropped last, so it outlives every use of the handle.
    runtime: Runtime,
}

impl RunningJob {
    /// Waits for the job to end, from any async context.
    pub async fn join(self) -> Result<JobReport, RillError> {
        let RunningJob {
            handle, runtime, ..
        } = self;
        let outcome = handle.join().await;
        drop(runtime);
        Ok(outcome?)
    }

    /// Blocks until the job ends.
    ///
    /// # Panics
    /// When called from inside an async runtime's thread: use [`RunningJob::join`] there.
    pub fn wait(self) -> Result<JobReport, RillError> {
        let RunningJob {
            handle, runtime, ..
        } = self;
        let outcome = handle.wait();
        drop(runtime);
        Ok(outcome?)
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the job can take savepoints: it has a checkpoint store.
    pub fn takes_savepoints(&self) -> bool {
        self.savepoints
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

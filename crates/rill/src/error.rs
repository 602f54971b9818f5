//! The errors describing and running a job can end with: the description's ([`BuildError`],
//! from `rill-api`) and the runtime's.

use rill_log::LogError;
use rill_runtime::{JobError, RuntimeError};
use rill_store::StoreError;

pub use rill_api::error::{BuildError, DescriptionError};

/// Why a job could not be built or did not run to the end.
///
/// Its `Debug` form is its message and causes, not the enum's fields: `main` returning
/// `Result<(), RillError>` prints `Error: job 'sums' failed in subtask 1 of 2 (map): …`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum RillError {
    /// The job could not be built from its description.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The job failed or was cancelled (boxed: a failure carries the operator's error).
    #[error(transparent)]
    Job(Box<JobError>),
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The event log refused an operation.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The checkpoint store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Ctrl-C or `SIGTERM` could not be listened for.
    #[error("cannot listen for Ctrl-C or SIGTERM: {0}")]
    Signals(std::io::Error),
}

impl std::fmt::Debug for RillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        rill_core::error::fmt_message_and_causes(self, f)
    }
}

impl From<JobError> for RillError {
    fn from(error: JobError) -> Self {
        RillError::Job(Box::new(error))
    }
}

impl RillError {
    /// The job's error, if the job failed or was cancelled.
    pub fn job_error(&self) -> Option<&JobError> {
        match self {
            RillError::Job(error) => Some(error),
            _ => None,
        }
    }

    /// The description's error, if the job could not be built.
    pub fn build_error(&self) -> Option<&BuildError> {
        match self {
            RillError::Build(error) => Some(error),
            _ => None,
        }
    }
}

//! The errors describing a job can end with: found when its graph is built, before anything
//! runs.

use rill_core::graph::GraphError;
use rill_store::StoreError;

/// Why a described job could not be built into a graph an executor can run. Its `Debug` form is
/// its message and causes, so that `main` returning it prints something readable.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The job's graph cannot run.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A source that is not parallel was given a parallelism above 1.
    #[error("source '{operator}' is not parallel; it cannot run with parallelism {parallelism}")]
    NonParallelSource {
        /// The source's name.
        operator: String,
        /// The parallelism asked for.
        parallelism: u32,
    },
    /// The job was described wrongly.
    #[error(transparent)]
    Description(#[from] DescriptionError),
    /// A checkpoint to start from was given, but no checkpoint directory to find it in.
    #[error("cannot start from checkpoint {checkpoint}: no checkpoint directory is set")]
    NoCheckpointDir {
        /// The checkpoint asked for.
        checkpoint: u64,
    },
    /// The fjall state backend's directory could not be opened.
    #[error(transparent)]
    StateBackend(#[from] StoreError),
}

impl std::fmt::Debug for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        rill_core::error::fmt_message_and_causes(self, f)
    }
}

/// A mistake in describing a job, found when the job is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptionError {
    /// A side output was asked of a stream whose operator has none.
    #[error(
        "side output '{tag}' was asked of the output of '{operator}', which has no side outputs; \
         ask the stream a process function or a window returns"
    )]
    NoSideOutputs {
        /// The operator the stream comes from.
        operator: String,
        /// The side output's id.
        tag: String,
    },
    /// An interval join's bounds are the wrong way round.
    #[error(transparent)]
    BadInterval(#[from] rill_core::two_input::BadInterval),
}

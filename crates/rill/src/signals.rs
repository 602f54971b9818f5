//! Running a job until it ends or the process is asked to stop (Ctrl-C, `SIGTERM`), and
//! stopping it the way whoever stops it expects: a job that checkpoints stops with a savepoint
//! (its output is committed up to it, and the next run goes on from there); one that does not is
//! cancelled, and says that its exactly-once output of this run was not committed.
//!
//! The signals are tokio's (`tokio::signal`): the runtime already runs on tokio, and its
//! handlers are installed once per process and shared, so waiting for them here takes nothing
//! from an application that listens too.

use std::fmt;
use std::future::Future;

use rill_core::coordinator::CheckpointMetadata;
use rill_runtime::{JobError, JobReport};

use crate::error::RillError;
use crate::execute::RunningJob;

/// The signal a job was stopped on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// `SIGINT`: Ctrl-C at a terminal.
    Interrupt,
    /// `SIGTERM`: a service manager, `kill`, or a container runtime stopping the process.
    Terminate,
    /// The application asked ([`RunningJob::join_until`]).
    Requested,
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Interrupt => "Ctrl-C",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Requested => "request",
        })
    }
}

/// How a job run with [`RunningJob::join_until_signal`] ended. Its `Display` says what happened
/// to the job's output, for printing as it is.
#[derive(Debug)]
pub enum SignalledEnd {
    /// The job ended by itself: its input ended.
    Finished(JobReport),
    /// A signal stopped the job with a savepoint.
    Savepoint {
        /// The signal.
        signal: StopSignal,
        /// The savepoint the job stopped with.
        savepoint: CheckpointMetadata,
        /// The job's report.
        report: JobReport,
    },
    /// A signal cancelled the job: it takes no checkpoints, or a second signal came before its
    /// savepoint completed.
    Cancelled {
        /// The signal.
        signal: StopSignal,
        /// The job's name.
        job: String,
        /// Whether the job checkpoints: its output is then committed up to its newest
        /// completed checkpoint, where its next run goes on.
        checkpoints: bool,
    },
}

impl fmt::Display for SignalledEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalledEnd::Finished(report) => write!(
                f,
                "job '{}' finished in {:.3} s",
                report.job,
                report.elapsed.as_secs_f64()
            ),
            SignalledEnd::Savepoint {
                signal,
                savepoint,
                report,
            } => write!(
                f,
                "stopped job '{}' on {signal} with savepoint {}: its output is committed up to \
                 it, and the next run goes on from there",
                report.job, savepoint.checkpoint.0
            ),
            SignalledEnd::Cancelled {
                signal,
                job,
                checkpoints: false,
            } => write!(
                f,
                "cancelled job '{job}' on {signal}: it takes no checkpoints, so what its \
                 exactly-once sinks wrote in this run was not committed (they commit at \
                 checkpoints, or at the end of a bounded input)"
            ),
            SignalledEnd::Cancelled {
                signal,
                job,
                checkpoints: true,
            } => write!(
                f,
                "cancelled job '{job}' on {signal} before its savepoint completed: its output \
                 is committed up to its newest completed checkpoint, and the next run goes on \
                 from there"
            ),
        }
    }
}

impl RunningJob {
    /// Waits for the job to end, or for Ctrl-C or `SIGTERM`; on a signal, stops the job with a
    /// savepoint if it has a checkpoint store and cancels it otherwise, then waits for it to
    /// end. A second signal while the savepoint is taken cancels the job instead.
    pub async fn join_until_signal(self) -> Result<SignalledEnd, RillError> {
        self.stop_when(stop_signal(), stop_signal).await
    }

    /// [`RunningJob::join_until_signal`], blocking the calling thread.
    ///
    /// # Panics
    /// When called from inside an async runtime's thread: use the async form there.
    pub fn wait_until_signal(self) -> Result<SignalledEnd, RillError> {
        let signals = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RillError::Signals)?;
        signals.block_on(self.join_until_signal())
    }

    /// Like [`RunningJob::join_until_signal`], with the application's own stop instead of a
    /// signal (a shutdown request, a test): once `stop` completes, the job stops with a
    /// savepoint if it has a checkpoint store and is cancelled otherwise.
    pub async fn join_until(
        self,
        stop: impl Future<Output = ()>,
    ) -> Result<SignalledEnd, RillError> {
        let requested = async {
            stop.await;
            Ok(StopSignal::Requested)
        };
        self.stop_when(requested, std::future::pending).await
    }

    /// Waits for the job's end or `first`; after `first`, stops the job (a savepoint, or a
    /// cancel) unless `second` comes first, which cancels it.
    async fn stop_when<S>(
        self,
        first: impl Future<Output = Result<StopSignal, RillError>>,
        second: impl FnOnce() -> S,
    ) -> Result<SignalledEnd, RillError>
    where
        S: Future<Output = Result<StopSignal, RillError>>,
    {
        let control = self.canceller();
        let savepoints = self.takes_savepoints();
        let job = self.name().to_owned();
        let outcome = self.join();
        tokio::pin!(outcome);
        let signal = tokio::select! {
            outcome = &mut outcome => return outcome.map(SignalledEnd::Finished),
            signal = first => signal?,
        };
        let cancelled = |outcome: Result<JobReport, RillError>| match outcome {
            Ok(report) => Ok(SignalledEnd::Finished(report)),
            Err(error) if matches!(error.job_error(), Some(JobError::Cancelled(_))) => {
                Ok(SignalledEnd::Cancelled {
                    signal,
                    job: job.clone(),
                    checkpoints: savepoints,
                })
            }
            Err(error) => Err(error),
        };
        if !savepoints {
            control.cancel();
            return cancelled(outcome.await);
        }
        let savepoint = tokio::select! {
            savepoint = control.stop_with_savepoint().join() => savepoint,
            // A second signal; a failure to listen for one leaves the savepoint to finish.
            Ok(_) = second() => {
                control.cancel();
                return cancelled(outcome.await);
            }
        };
        match savepoint {
            Ok(savepoint) => Ok(SignalledEnd::Savepoint {
                signal,
                savepoint,
                report: outcome.await?,
            }),
            // The job ended before the savepoint (its outcome says how), or the savepoint
            // failed: the job is cancelled, and the savepoint's failure is the error.
            Err(failed) => {
                control.cancel();
                match cancelled(outcome.await)? {
                    SignalledEnd::Cancelled { .. } => Err(failed.into()),
                    ended => Ok(ended),
                }
            }
        }
    }
}

/// The first of Ctrl-C and `SIGTERM` (Ctrl-C alone where there is no `SIGTERM`).
async fn stop_signal() -> Result<StopSignal, RillError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).map_err(RillError::Signals)?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted
                .map(|()| StopSignal::Interrupt)
                .map_err(RillError::Signals),
            _ = terminate.recv() => Ok(StopSignal::Terminate),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map(|()| StopSignal::Interrupt)
            .map_err(RillError::Signals)
    }
}

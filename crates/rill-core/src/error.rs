//! The errors a subtask can fail with, each naming the operator at fault.

use crate::element::RecordTypeMismatch;
use crate::state::StateError;

/// The error type user functions return: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an operator call failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The user's function returned an error.
    #[error(transparent)]
    Failed(BoxError),
    /// The user's function panicked; the message is the panic's payload.
    #[error("panicked: {0}")]
    Panicked(String),
    /// A batch of the wrong type reached the operator: a graph wiring bug.
    #[error(transparent)]
    TypeMismatch(#[from] RecordTypeMismatch),
    /// The operator's keyed state failed: its backend's I/O, restored state that does not
    /// decode, or handles that disagree on a state's types. The error names the state and,
    /// where known, the key group; the [`TaskError`] names the operator. Boxed: it is rare,
    /// and every task error would carry its size.
    #[error("keyed state failed: {0}")]
    State(Box<StateError>),
}

impl From<StateError> for OperatorError {
    fn from(error: StateError) -> Self {
        OperatorError::State(Box::new(error))
    }
}

/// An event-time operator got a record without an event timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{operator} got a record without an event timestamp: give its sources a watermark strategy \
     (and a timestamp assigner)"
)]
pub struct MissingEventTime {
    /// What kind of operator needed it ("an event-time window", "an interval join").
    pub operator: &'static str,
}

impl MissingEventTime {
    /// The record's event time, or this error naming `operator`.
    pub fn require(
        timestamp: Option<crate::element::Timestamp>,
        operator: &'static str,
    ) -> Result<crate::element::Timestamp, MissingEventTime> {
        timestamp.ok_or(MissingEventTime { operator })
    }
}

/// A subtask failed; the job fails with it.
#[derive(Debug, thiserror::Error)]
#[error("operator '{operator}' failed: {error}")]
pub struct TaskError {
    /// The name of the operator (or source) whose call failed.
    pub operator: String,
    /// What went wrong (also the error's `source`, so that its own causes can be followed).
    #[source]
    pub error: OperatorError,
}

impl OperatorError {
    /// The state failure, if the operator failed over its keyed state.
    pub fn state(&self) -> Option<&StateError> {
        match self {
            OperatorError::State(error) => Some(error),
            _ => None,
        }
    }

    /// The error of a user function or an operator: [`OperatorError::State`] when it is a
    /// state failure passed on (with `?`, say), [`OperatorError::Failed`] otherwise.
    pub fn from_user(error: BoxError) -> Self {
        match error.downcast::<StateError>() {
            Ok(state) => OperatorError::State(state),
            Err(other) => OperatorError::Failed(other),
        }
    }

    /// Turns a caught panic's payload into an error.
    pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a panic with a non-string payload".to_owned()
        };
        OperatorError::Panicked(message)
    }
}

/// Writes `error` as its message, then each of its causes (`source`) that the message does not
/// already include, one per line. Rill's public errors use it as their `Debug` form: `main`
/// returning an error prints it with `Debug`, and a reader wants the message and its causes
/// there, not the enum's fields.
pub fn fmt_message_and_causes(
    error: &(dyn std::error::Error + 'static),
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    let mut shown = error.to_string();
    f.write_str(&shown)?;
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !shown.contains(&text) {
            write!(f, "\ncaused by: {text}")?;
            shown.push_str(&text);
        }
        cause = current.source();
    }
    Ok(())
}

/// Runs one call into the user code of operator `operator`, turning a panic or an error into a
/// [`TaskError`] that names it.
pub(crate) fn guarded<R>(
    operator: &str,
    call: impl FnOnce() -> Result<R, OperatorError>,
) -> Result<R, TaskError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
        .unwrap_or_else(|payload| Err(OperatorError::from_panic(payload)))
        .map_err(|error| TaskError {
            operator: operator.to_owned(),
            error,
        })
}

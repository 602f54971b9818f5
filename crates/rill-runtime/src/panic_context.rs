//! Says which job and subtask a panic happened in, before Rust's own panic message.
//!
//! A panic in a user function is caught and fails the job with an error naming the operator,
//! but the panic hook prints first, and its `thread '…' panicked` names a worker thread that
//! many subtasks share. While a subtask actor runs its operators it marks the thread with its
//! label; the hook the runtime installs (once, in front of the hook that was there) prints that
//! label on a line of its own, then hands over to the previous hook.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Once};

thread_local! {
    /// The label of the subtask whose operators this thread is running, if any.
    static CURRENT: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Marks the thread as running a subtask's operators until dropped.
pub(crate) struct InSubtask {
    previous: Option<Arc<str>>,
}

impl InSubtask {
    /// Marks the thread with `label` (`job 'j', subtask 0 of 2 (source -> map), attempt 1`).
    pub(crate) fn enter(label: &Arc<str>) -> Self {
        let previous = CURRENT.with(|current| current.replace(Some(Arc::clone(label))));
        InSubtask { previous }
    }
}

impl Drop for InSubtask {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

/// Installs the hook, once per process, in front of whatever hook is there now.
pub(crate) fn install_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // `try_with`: a panic while the thread's locals are being torn down has no label.
            let label = CURRENT
                .try_with(|current| current.try_borrow().ok().and_then(|label| label.clone()))
                .ok()
                .flatten();
            if let Some(label) = label {
                // Ignored: a panic hook has nowhere to report that stderr is closed.
                let _ = writeln!(
                    std::io::stderr(),
                    "rill: a panic in {label}; the job fails with an error naming the operator"
                );
            }
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Option<Arc<str>> {
        CURRENT.with(|current| current.borrow().clone())
    }

    #[test]
    fn a_mark_lasts_until_dropped_and_restores_the_one_before() {
        let outer: Arc<str> = Arc::from("job 'a', subtask 0 of 1 (map), attempt 1");
        let inner: Arc<str> = Arc::from("job 'b', subtask 1 of 2 (filter), attempt 2");
        assert_eq!(current(), None);
        {
            let _outer = InSubtask::enter(&outer);
            {
                let _inner = InSubtask::enter(&inner);
                assert_eq!(current(), Some(inner.clone()));
            }
            assert_eq!(current(), Some(outer.clone()));
        }
        assert_eq!(current(), None);
    }
}

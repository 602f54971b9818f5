//! A sink that collects a stream's values into memory, for tests and small jobs.

use std::sync::{Arc, Mutex, MutexGuard};

use rill_core::operator::Sink;
use rill_core::{BoxError, Data, Record};

/// The values a `collect()` sink received; read them once the job has ended.
///
/// Values from one sink subtask keep their order; values of parallel subtasks interleave.
pub struct Collected<T> {
    values: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Collected {
            values: self.values.clone(),
        }
    }
}

impl<T> Default for Collected<T> {
    fn default() -> Self {
        Collected {
            values: Arc::default(),
        }
    }
}

impl<T> Collected<T> {
    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        // A sink that panicked mid-push leaves a valid Vec; the job itself reports the panic.
        self.values
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the values collected so far.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.lock())
    }

    /// How many values were collected so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no value was collected so far.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// The sink behind [`crate::DataStream::collect`].
pub(crate) struct CollectSink<T> {
    target: Collected<T>,
}

impl<T> CollectSink<T> {
    pub(crate) fn new(target: Collected<T>) -> Self {
        CollectSink { target }
    }
}

impl<T: Data> Sink for CollectSink<T> {
    type In = T;

    fn write_batch(&mut self, records: Vec<Record<T>>) -> Result<(), BoxError> {
        self.target
            .lock()
            .extend(records.into_iter().map(|record| record.value));
        Ok(())
    }
}

//! Windows on a keyed stream: [`KeyedStream::window`] picks the windows, a
//! [`WindowedStream`] method picks what each window computes.
//!
//! ```
//! use std::time::Duration;
//! use rill::prelude::*;
//!
//! let env = StreamEnv::new();
//! // (sensor, reading, time in ms): 1 s, 2 s, 11 s fall in two 10-second windows.
//! let readings = [(7, 3, 1_000), (7, 4, 2_000), (7, 5, 11_000)];
//! let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(1));
//! let sums = env
//!     .from_iter_with_timestamps(readings, |r| Timestamp(r.2), strategy)
//!     .key_by(|r: &(u32, i32, i64)| r.0)
//!     .window(WindowAssigner::tumbling(Duration::from_secs(10))?)
//!     .reduce(|a, b| (a.0, a.1 + b.1, a.2.max(b.2)))
//!     .map(|(sensor, sum, _)| (sensor, sum))
//!     .collect();
//! env.execute("windowed sums")?;
//! assert_eq!(sums.take(), vec![(7, 7), (7, 5)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use rill_core::side_output::OutputTag;
use rill_core::state::{AggregateFunction, StateValue};
use rill_core::window::{
    AggregateProcessWindow, AggregateWindow, ProcessWindow, ProcessWindowFunction, ReduceWindow,
    WindowAssigner, WindowFunction, WindowOperator,
};
use rill_core::{Data, Key};

use crate::stream::{DataStream, KeyedStream, keyed_store, operator_factory, prototype};

/// The id of the side output a window sends records later than its allowed lateness to, unless
/// [`WindowedStream::side_output_late_data`] names another.
pub const LATE_DATA: &str = "late-data";

/// A keyed stream cut into windows, waiting for the function each window computes.
pub struct WindowedStream<T, K> {
    keyed: KeyedStream<T, K>,
    assigner: WindowAssigner,
    allowed_lateness: i64,
    late_data: OutputTag<T>,
}

impl<T: Data, K: Key> KeyedStream<T, K> {
    /// Cuts each key's records into the windows `assigner` gives (event-time windows need a
    /// source with a watermark strategy).
    pub fn window(self, assigner: WindowAssigner) -> WindowedStream<T, K> {
        WindowedStream {
            keyed: self,
            assigner,
            allowed_lateness: 0,
            late_data: OutputTag::new(LATE_DATA),
        }
    }
}

impl<T: Data, K: Key> WindowedStream<T, K> {
    /// Keeps windows for `lateness` after the watermark passed their end: a record arriving in
    /// that time updates its window, which fires again with the new result. Records later than
    /// that go to the late-data side output.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Sends records too late for their windows to the side output `tag` names (read it with
    /// [`DataStream::side_output`] on the window's result). Without this call they go to the
    /// side output [`LATE_DATA`].
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late_data = tag.clone();
        self
    }

    /// Runs the window function `make` builds for each subtask.
    fn apply<W, F>(self, name: &str, make: F) -> DataStream<W::Out>
    where
        W: WindowFunction<Key = K, In = T>,
        F: Fn() -> W + Send + Sync + 'static,
    {
        let edge = self.keyed.keyed_edge();
        let WindowedStream {
            keyed,
            assigner,
            allowed_lateness,
            late_data,
        } = self;
        let (key_of, planted) = (keyed.key_of, keyed.stream.env().planted());
        keyed.stream.then_tagged(
            name,
            Some(edge),
            operator_factory(move |info| {
                planted.in_window(WindowOperator::new(
                    make(),
                    assigner,
                    allowed_lateness,
                    late_data.clone(),
                    key_of.clone(),
                    keyed_store(info),
                ))
            }),
        )
    }

    /// Reduces each window's records with `reduce`; emits the result when the window fires.
    pub fn reduce<F>(self, reduce: F) -> DataStream<T>
    where
        T: StateValue,
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        let reduce = Arc::new(reduce);
        self.apply("window reduce", move || ReduceWindow::new(reduce.clone()))
    }

    /// Aggregates each window's records incrementally (one accumulator per window); emits the
    /// aggregate's result when the window fires.
    pub fn aggregate<A>(self, aggregate: A) -> DataStream<A::Out>
    where
        A: AggregateFunction<In = T>,
        A::Out: Data,
    {
        let aggregate = Arc::new(aggregate);
        self.apply("window aggregate", move || {
            AggregateWindow::new(aggregate.clone())
        })
    }

    /// Keeps each window's records and hands them all to `function`, with the window, when it
    /// fires.
    pub fn process<P>(self, function: P) -> DataStream<P::Out>
    where
        T: StateValue,
        P: ProcessWindowFunction<Key = K, In = T>,
    {
        let function = prototype(function);
        self.apply("window process", move || ProcessWindow::new(function()))
    }

    /// Aggregates each window's records incrementally, and hands the result to `function`,
    /// with the window, when it fires: small state, and the window's metadata.
    pub fn aggregate_process<A, P>(self, aggregate: A, function: P) -> DataStream<P::Out>
    where
        A: AggregateFunction<In = T>,
        A::Out: Data,
        P: ProcessWindowFunction<Key = K, In = A::Out>,
    {
        let aggregate = Arc::new(aggregate);
        let function = prototype(function);
        self.apply("window aggregate", move || {
            AggregateProcessWindow::new(aggregate.clone(), function())
        })
    }
}

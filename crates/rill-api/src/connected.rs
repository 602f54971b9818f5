//! Two keyed streams processed together: [`KeyedStream::connect`] with a keyed co-process
//! function, [`KeyedStream::window_join`] and [`KeyedStream::interval_join`].
//!
//! Both streams must be keyed by the same key type; a key's records of both inputs reach one
//! subtask, with one keyed state. The operator reads both inputs' channels, so barriers align
//! and the watermark is the minimum across both.

use std::sync::Arc;

use rill_core::exchange::{ExchangeKind, KeyHashRouter, RouterFactory};
use rill_core::graph::OperatorFactory;
use rill_core::keyed::{KeySelector, KeyedProcess};
use rill_core::side_output::OutputTag;
use rill_core::state::StateValue;
use rill_core::two_input::{
    CoProcess, Either, IntervalJoin, KeyedCoProcessFunction, check_interval,
};
use rill_core::window::{WindowAssigner, WindowJoin, WindowOperator};
use rill_core::{Data, Key};

use crate::error::DescriptionError;
use crate::stream::{DataStream, KeyedStream, keyed_store, operator_factory, prototype};
use crate::windowed::LATE_DATA;

/// Two keyed streams connected by their key, waiting for the function that processes both.
pub struct ConnectedStreams<A, B, K> {
    first: KeyedStream<A, K>,
    second: KeyedStream<B, K>,
}

/// Adds a two-input operator over `first` and `second`: each input's records are wrapped as
/// [`Either`] and routed by their key to the operator `make_operator` builds, which gets the key
/// selector of the wrapped records.
fn two_input<A, B, K, O>(
    first: KeyedStream<A, K>,
    second: KeyedStream<B, K>,
    name: &str,
    make_operator: impl FnOnce(KeySelector<Either<A, B>, K>) -> OperatorFactory,
) -> DataStream<O>
where
    A: Data,
    B: Data,
    K: Key,
    O: Data,
{
    let (first_key, second_key) = (first.key_of, second.key_of);
    let key_of = Arc::new(move |value: &Either<A, B>| match value {
        Either::Left(a) => first_key(a),
        Either::Right(b) => second_key(b),
    });
    let router_key_of = key_of.clone();
    let router: RouterFactory = Arc::new(move |context| {
        Box::new(KeyHashRouter::new(
            router_key_of.clone(),
            context.max_parallelism,
        ))
    });
    let edge = (ExchangeKind::KeyHash, router);
    let left = first.stream.wrapped("left", Either::<A, B>::Left);
    let right = second.stream.wrapped("right", Either::<A, B>::Right);
    let factory = make_operator(key_of);
    let joined = left.then_tagged(name, Some(edge.clone()), factory);
    right.connect_to(joined.operator_node(), Some(edge));
    joined
}

impl<A: Data, K: Key> KeyedStream<A, K> {
    /// Connects this stream with another keyed by the same key, to process both with one
    /// keyed co-process function.
    pub fn connect<B: Data>(self, other: KeyedStream<B, K>) -> ConnectedStreams<A, B, K> {
        ConnectedStreams {
            first: self,
            second: other,
        }
    }

    /// Joins this stream with another within windows: for each key and window, emits
    /// `join(a, b)` for every pair of this stream's `a` and the other's `b` when the window
    /// fires.
    pub fn window_join<B, O, F>(
        self,
        other: KeyedStream<B, K>,
        assigner: WindowAssigner,
        join: F,
    ) -> DataStream<O>
    where
        A: StateValue,
        B: Data + StateValue,
        O: Data,
        F: Fn(&A, &B) -> O + Send + Sync + 'static,
    {
        let (join, planted) = (Arc::new(join), self.stream.env().planted());
        two_input(self, other, "window join", move |key_of| {
            operator_factory(move |info| {
                planted.in_window(WindowOperator::new(
                    WindowJoin::new(join.clone()),
                    assigner,
                    0,
                    OutputTag::new(LATE_DATA),
                    key_of.clone(),
                    keyed_store(info),
                ))
            })
        })
    }

    /// Joins this stream with another on time intervals: emits `join(a, b)` for every `a` of
    /// this stream and `b` of the other with the same key whose time lies in
    /// `[a's time + lower_ms, a's time + upper_ms]` (either bound may be negative), with the
    /// later of the two timestamps. Records below the watermark when they arrive go to the
    /// side output [`LATE_DATA`] (as `Either<A, B>`); as in Flink, one exactly at it is joined.
    pub fn interval_join<B, O, F>(
        self,
        other: KeyedStream<B, K>,
        lower_ms: i64,
        upper_ms: i64,
        join: F,
    ) -> DataStream<O>
    where
        A: StateValue,
        B: Data + StateValue,
        O: Data,
        F: Fn(&A, &B) -> O + Send + Sync + 'static,
    {
        if let Err(error) = check_interval(lower_ms, upper_ms) {
            self.stream
                .env()
                .draft()
                .mistakes
                .push(DescriptionError::BadInterval(error));
        }
        let function = IntervalJoin::<K, A, B, O, F>::new(
            lower_ms,
            upper_ms,
            Arc::new(join),
            OutputTag::new(LATE_DATA),
        );
        self.connect(other).process_with("interval join", function)
    }
}

impl<A: Data, B: Data, K: Key> ConnectedStreams<A, B, K> {
    /// Processes both streams with `function`; each subtask gets a clone of it. What it sends
    /// to side outputs is read with [`DataStream::side_output`] on the returned stream.
    pub fn process<F>(self, function: F) -> DataStream<F::Out>
    where
        F: KeyedCoProcessFunction<Key = K, In1 = A, In2 = B>,
    {
        self.process_with("co-process", function)
    }

    fn process_with<F>(self, name: &str, function: F) -> DataStream<F::Out>
    where
        F: KeyedCoProcessFunction<Key = K, In1 = A, In2 = B>,
    {
        let function = prototype(CoProcess(function));
        let planted = self.first.stream.env().planted();
        two_input(self.first, self.second, name, move |key_of| {
            operator_factory(move |info| {
                planted.in_process(KeyedProcess::new(
                    function(),
                    key_of.clone(),
                    keyed_store(info),
                ))
            })
        })
    }
}

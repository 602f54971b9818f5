//! What a window computes: a [`WindowFunction`] keeps an accumulator per key and window,
//! adds records to it, merges two of them (when sessions merge) and emits results from it
//! when the window fires.
//!
//! The shapes users pick — reduce, aggregate, process, aggregate then process, and the window
//! join — are all window functions, so one window operator runs them all:
//! [`ReduceWindow`] keeps the reduced value, [`AggregateWindow`] an [`AggregateFunction`]'s
//! accumulator, [`ProcessWindow`] every element, [`AggregateProcessWindow`] an accumulator whose
//! result a [`ProcessWindowFunction`] turns into output, and [`WindowJoin`] both inputs'
//! elements, paired when the window fires.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::element::{Data, Timestamp};
use crate::error::BoxError;
use crate::key::Key;
use crate::state::{AggregateFunction, StateValue};
use crate::two_input::Either;

use super::TimeWindow;

/// What a window function knows about the window that fires.
pub struct WindowContext<'a, K> {
    key: &'a K,
    window: TimeWindow,
    watermark: Timestamp,
}

impl<'a, K> WindowContext<'a, K> {
    pub(super) fn new(key: &'a K, window: TimeWindow, watermark: Timestamp) -> Self {
        WindowContext {
            key,
            window,
            watermark,
        }
    }

    /// The key whose window fires.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The window that fires.
    pub fn window(&self) -> TimeWindow {
        self.window
    }

    /// The operator's watermark when the window fires: past the window's end for a late firing.
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }
}

/// The logic of a window operator: an accumulator per key and window.
pub trait WindowFunction: Send + 'static {
    /// The key type.
    type Key: Key;
    /// The records windowed.
    type In: Data;
    /// What each key and window keeps.
    type Acc: StateValue;
    /// What a firing emits.
    type Out: Data;

    /// An empty accumulator.
    fn create(&self) -> Self::Acc;
    /// Adds a record to an accumulator.
    fn add(&self, accumulator: &mut Self::Acc, value: Self::In);
    /// Adds `other`'s contents to `into` (merging session windows).
    fn merge(&self, into: &mut Self::Acc, other: Self::Acc);
    /// The window fired: pushes its results onto `out`.
    fn emit(
        &mut self,
        ctx: &WindowContext<'_, Self::Key>,
        accumulator: &Self::Acc,
        out: &mut Vec<Self::Out>,
    ) -> Result<(), BoxError>;
}

/// A function over all the elements of a window, with the window's metadata.
pub trait ProcessWindowFunction: Clone + Send + 'static {
    /// The key type.
    type Key: Key;
    /// The elements it gets (the records, or an aggregate's result).
    type In;
    /// What it emits.
    type Out: Data;

    /// The window fired with `elements`, in arrival order: push results onto `out` (each gets
    /// the window's last timestamp).
    fn process(
        &mut self,
        ctx: &WindowContext<'_, Self::Key>,
        elements: &[Self::In],
        out: &mut Vec<Self::Out>,
    ) -> Result<(), BoxError>;
}

/// Reduces a window's records with a function; emits the reduced value.
pub struct ReduceWindow<K, T, F> {
    reduce: Arc<F>,
    types: PhantomData<fn(K, T)>,
}

impl<K, T, F> ReduceWindow<K, T, F> {
    /// Reduces with `reduce`.
    pub fn new(reduce: Arc<F>) -> Self {
        ReduceWindow {
            reduce,
            types: PhantomData,
        }
    }
}

impl<K, T, F> WindowFunction for ReduceWindow<K, T, F>
where
    K: Key,
    T: Data + StateValue,
    F: Fn(T, T) -> T + Send + Sync + 'static,
{
    type Key = K;
    type In = T;
    type Acc = Option<T>;
    type Out = T;

    fn create(&self) -> Option<T> {
        None
    }

    fn add(&self, accumulator: &mut Option<T>, value: T) {
        *accumulator = Some(match accumulator.take() {
            Some(reduced) => (self.reduce)(reduced, value),
            None => value,
        });
    }

    fn merge(&self, into: &mut Option<T>, other: Option<T>) {
        if let Some(other) = other {
            self.add(into, other);
        }
    }

    fn emit(
        &mut self,
        _ctx: &WindowContext<'_, K>,
        accumulator: &Option<T>,
        out: &mut Vec<T>,
    ) -> Result<(), BoxError> {
        out.extend(accumulator.iter().cloned());
        Ok(())
    }
}

/// Aggregates a window's records into an [`AggregateFunction`]'s accumulator; emits its result.
pub struct AggregateWindow<K, A> {
    aggregate: Arc<A>,
    key: PhantomData<fn(K)>,
}

impl<K, A> AggregateWindow<K, A> {
    /// Aggregates with `aggregate`.
    pub fn new(aggregate: Arc<A>) -> Self {
        AggregateWindow {
            aggregate,
            key: PhantomData,
        }
    }
}

impl<K, A> WindowFunction for AggregateWindow<K, A>
where
    K: Key,
    A: AggregateFunction,
    A::In: Data,
    A::Out: Data,
{
    type Key = K;
    type In = A::In;
    type Acc = A::Acc;
    type Out = A::Out;

    fn create(&self) -> A::Acc {
        self.aggregate.create_accumulator()
    }

    fn add(&self, accumulator: &mut A::Acc, value: A::In) {
        self.aggregate.add(value, accumulator);
    }

    fn merge(&self, into: &mut A::Acc, other: A::Acc) {
        let merged = self.aggregate.merge(
            std::mem::replace(into, self.aggregate.create_accumulator()),
            other,
        );
        *into = merged;
    }

    fn emit(
        &mut self,
        _ctx: &WindowContext<'_, K>,
        accumulator: &A::Acc,
        out: &mut Vec<A::Out>,
    ) -> Result<(), BoxError> {
        out.push(self.aggregate.result(accumulator));
        Ok(())
    }
}

/// Keeps every record of a window and hands them all to a [`ProcessWindowFunction`].
pub struct ProcessWindow<P> {
    function: P,
}

impl<P> ProcessWindow<P> {
    /// Runs `function` on each firing window's records.
    pub fn new(function: P) -> Self {
        ProcessWindow { function }
    }
}

impl<P> WindowFunction for ProcessWindow<P>
where
    P: ProcessWindowFunction,
    P::In: Data + StateValue,
{
    type Key = P::Key;
    type In = P::In;
    type Acc = Vec<P::In>;
    type Out = P::Out;

    fn create(&self) -> Vec<P::In> {
        Vec::new()
    }

    fn add(&self, accumulator: &mut Vec<P::In>, value: P::In) {
        accumulator.push(value);
    }

    fn merge(&self, into: &mut Vec<P::In>, mut other: Vec<P::In>) {
        into.append(&mut other);
    }

    fn emit(
        &mut self,
        ctx: &WindowContext<'_, P::Key>,
        accumulator: &Vec<P::In>,
        out: &mut Vec<P::Out>,
    ) -> Result<(), BoxError> {
        self.function.process(ctx, accumulator, out)
    }
}

/// Aggregates a window's records incrementally, and hands the result (one element) to a
/// [`ProcessWindowFunction`] when it fires: the small state of an aggregate with the window
/// metadata of a process function.
pub struct AggregateProcessWindow<K, A, P> {
    aggregate: AggregateWindow<K, A>,
    function: P,
}

impl<K, A, P> AggregateProcessWindow<K, A, P> {
    /// Aggregates with `aggregate`, then runs `function` on the result.
    pub fn new(aggregate: Arc<A>, function: P) -> Self {
        AggregateProcessWindow {
            aggregate: AggregateWindow::new(aggregate),
            function,
        }
    }
}

impl<K, A, P> WindowFunction for AggregateProcessWindow<K, A, P>
where
    K: Key,
    A: AggregateFunction,
    A::In: Data,
    A::Out: Data,
    P: ProcessWindowFunction<Key = K, In = A::Out>,
{
    type Key = K;
    type In = A::In;
    type Acc = A::Acc;
    type Out = P::Out;

    fn create(&self) -> A::Acc {
        self.aggregate.create()
    }

    fn add(&self, accumulator: &mut A::Acc, value: A::In) {
        self.aggregate.add(accumulator, value);
    }

    fn merge(&self, into: &mut A::Acc, other: A::Acc) {
        self.aggregate.merge(into, other);
    }

    fn emit(
        &mut self,
        ctx: &WindowContext<'_, P::Key>,
        accumulator: &A::Acc,
        out: &mut Vec<P::Out>,
    ) -> Result<(), BoxError> {
        let result = self.aggregate.aggregate.result(accumulator);
        self.function
            .process(ctx, std::slice::from_ref(&result), out)
    }
}

/// Joins two streams within windows: keeps each input's records of a key and window, and
/// when the window fires emits `join(a, b)` for every pair.
pub struct WindowJoin<K, A, B, O, F> {
    join: Arc<F>,
    types: PhantomData<fn(K, A, B) -> O>,
}

impl<K, A, B, O, F> WindowJoin<K, A, B, O, F> {
    /// Pairs with `join`.
    pub fn new(join: Arc<F>) -> Self {
        WindowJoin {
            join,
            types: PhantomData,
        }
    }
}

impl<K, A, B, O, F> WindowFunction for WindowJoin<K, A, B, O, F>
where
    K: Key,
    A: Data + StateValue,
    B: Data + StateValue,
    O: Data,
    F: Fn(&A, &B) -> O + Send + Sync + 'static,
{
    type Key = K;
    type In = Either<A, B>;
    type Acc = (Vec<A>, Vec<B>);
    type Out = O;

    fn create(&self) -> (Vec<A>, Vec<B>) {
        (Vec::new(), Vec::new())
    }

    fn add(&self, (left, right): &mut (Vec<A>, Vec<B>), value: Either<A, B>) {
        match value {
            Either::Left(a) => left.push(a),
            Either::Right(b) => right.push(b),
        }
    }

    fn merge(&self, (left, right): &mut (Vec<A>, Vec<B>), (mut a, mut b): (Vec<A>, Vec<B>)) {
        left.append(&mut a);
        right.append(&mut b);
    }

    fn emit(
        &mut self,
        _ctx: &WindowContext<'_, K>,
        (left, right): &(Vec<A>, Vec<B>),
        out: &mut Vec<O>,
    ) -> Result<(), BoxError> {
        out.reserve(left.len() * right.len());
        for a in left {
            for b in right {
                out.push((self.join)(a, b));
            }
        }
        Ok(())
    }
}

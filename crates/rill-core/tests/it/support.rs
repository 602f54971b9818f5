//! Helpers shared by the tests: graph building, a collecting sink, and test sources.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rill_core::exchange::{
    BroadcastRouter, ExchangeKind, ForwardRouter, KeyHashRouter, RebalanceRouter, Router,
    RouterContext,
};
use rill_core::flow::FlowConfig;
use rill_core::graph::{Edge, JobGraph, OperatorId, OperatorKind, OperatorNode};
use rill_core::key::Key;
use rill_core::operator::{
    Erased, OneInputOperator, OperatorInfo, Passthrough, Sink, SinkOperator,
};
use rill_core::source::{Source, SourceOutput, SourcePoll};
use rill_core::{BoxError, Data, Record};

/// Adds a source operator built by `make` for each subtask.
pub fn source<S: Source>(
    graph: &mut JobGraph,
    name: &str,
    parallelism: u32,
    make: impl Fn(&OperatorInfo) -> S + Send + Sync + 'static,
) -> OperatorId {
    graph.add_operator(OperatorNode {
        name: name.into(),
        uid: None,
        parallelism,
        kind: OperatorKind::Source(Arc::new(move |info| Box::new(make(info)))),
    })
}

/// Adds a one-input operator built by `make` for each subtask.
pub fn transform<O: OneInputOperator>(
    graph: &mut JobGraph,
    name: &str,
    parallelism: u32,
    make: impl Fn(&OperatorInfo) -> O + Send + Sync + 'static,
) -> OperatorId {
    graph.add_operator(OperatorNode {
        name: name.into(),
        uid: None,
        parallelism,
        kind: OperatorKind::Transform(Arc::new(move |info| Box::new(Erased(make(info))))),
    })
}

/// Adds an operator that hands records on untouched: what a union is.
pub fn passthrough(graph: &mut JobGraph, name: &str, parallelism: u32) -> OperatorId {
    graph.add_operator(OperatorNode {
        name: name.into(),
        uid: None,
        parallelism,
        kind: OperatorKind::Transform(Arc::new(|_| Box::new(Passthrough))),
    })
}

fn connect(
    graph: &mut JobGraph,
    from: OperatorId,
    to: OperatorId,
    exchange: ExchangeKind,
    router: impl Fn(&RouterContext) -> Box<dyn Router> + Send + Sync + 'static,
) {
    graph.add_edge(Edge {
        from,
        to,
        exchange,
        router: Arc::new(router),
    });
}

pub fn forward(graph: &mut JobGraph, from: OperatorId, to: OperatorId) {
    connect(graph, from, to, ExchangeKind::Forward, |_| {
        Box::new(ForwardRouter)
    });
}

pub fn rebalance<T: Data>(graph: &mut JobGraph, from: OperatorId, to: OperatorId) {
    connect(graph, from, to, ExchangeKind::Rebalance, |context| {
        Box::new(RebalanceRouter::<T>::starting_at(
            context.upstream_subtask as usize,
        ))
    });
}

pub fn broadcast(graph: &mut JobGraph, from: OperatorId, to: OperatorId) {
    connect(graph, from, to, ExchangeKind::Broadcast, |_| {
        Box::new(BroadcastRouter)
    });
}

pub fn key_by<T: Data, K: Key>(
    graph: &mut JobGraph,
    from: OperatorId,
    to: OperatorId,
    key_of: impl Fn(&T) -> K + Send + Sync + 'static,
) {
    let key_of: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(key_of);
    connect(graph, from, to, ExchangeKind::KeyHash, move |context| {
        Box::new(KeyHashRouter::<T, K>::new(
            key_of.clone(),
            context.max_parallelism,
        ))
    });
}

pub fn flow(batch_size: usize, channel_credits: u32) -> FlowConfig {
    FlowConfig {
        batch_size,
        channel_credits,
        ..FlowConfig::default()
    }
}

/// Locks a mutex the tests share; a poisoned one means a test already panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("no test panicked holding the lock")
}

/// What a collecting sink received: (sink subtask, value), in arrival order.
pub type Collected<T> = Arc<Mutex<Vec<(u32, T)>>>;

/// A sink that appends every value it writes, tagged with its subtask index.
pub struct Collect<T> {
    subtask: u32,
    into: Collected<T>,
}

impl<T: Data> Sink for Collect<T> {
    type In = T;

    fn write_batch(&mut self, records: Vec<Record<T>>) -> Result<(), BoxError> {
        let mut into = lock(&self.into);
        into.extend(records.into_iter().map(|r| (self.subtask, r.value)));
        Ok(())
    }
}

/// Adds a collecting sink; returns it and where it collects.
pub fn sink<T: Data>(
    graph: &mut JobGraph,
    name: &str,
    parallelism: u32,
) -> (OperatorId, Collected<T>) {
    let collected: Collected<T> = Arc::default();
    let into = collected.clone();
    let id = transform(graph, name, parallelism, move |info| {
        SinkOperator::new(
            Collect {
                subtask: info.subtask,
                into: into.clone(),
            },
            info,
        )
    });
    (id, collected)
}

/// The values collected, without subtask tags, sorted.
pub fn sorted_values<T: Data + Ord>(collected: &Collected<T>) -> Vec<T> {
    let mut values: Vec<T> = lock(collected).iter().map(|(_, v)| v.clone()).collect();
    values.sort();
    values
}

/// Emits `items` (subtask `i` of `p` takes every `p`-th item from `i`) and counts its polls.
pub struct Items<T> {
    items: std::vec::IntoIter<T>,
    polls: Arc<AtomicUsize>,
}

impl<T: Data> Items<T> {
    pub fn slice(all: &[T], info: &OperatorInfo, polls: Arc<AtomicUsize>) -> Self {
        let mine: Vec<T> = all
            .iter()
            .skip(info.subtask as usize)
            .step_by(info.parallelism as usize)
            .cloned()
            .collect();
        Items {
            items: mine.into_iter(),
            polls,
        }
    }
}

impl<T: Data> Source for Items<T> {
    type Out = T;

    fn poll_next(&mut self, out: &mut SourceOutput<T>) -> Result<SourcePoll, BoxError> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        while out.remaining() > 0 {
            match self.items.next() {
                Some(item) => out.collect(item),
                None => return Ok(SourcePoll::Finished),
            }
        }
        Ok(SourcePoll::Ready)
    }
}

/// Adds a source emitting `items`, split among its subtasks; returns it and its poll counter.
pub fn items<T: Data + Sync>(
    graph: &mut JobGraph,
    name: &str,
    parallelism: u32,
    all: Vec<T>,
) -> (OperatorId, Arc<AtomicUsize>) {
    let polls = Arc::new(AtomicUsize::new(0));
    let counter = polls.clone();
    let id = source(graph, name, parallelism, move |info| {
        Items::slice(&all, info, counter.clone())
    });
    (id, polls)
}

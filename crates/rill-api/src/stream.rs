//! Streams and the operations on them.
//!
//! Every operation adds an operator to the environment's job and returns the stream of its
//! output. Consecutive operations with the same parallelism and no exchange in between are
//! chained into one subtask when the job runs.

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::Arc;

use rill_core::exchange::{
    BroadcastRouter, ExchangeKind, KeyHashRouter, RebalanceRouter, RouterFactory,
};
use rill_core::graph::{OperatorFactory, OperatorKind};
use rill_core::keyed::{KeySelector, KeyedProcess, KeyedProcessFunction, KeyedReduce};
use rill_core::operator::{
    Erased, Filter, FlatMap, Map, OneInputOperator, OperatorInfo, Passthrough, Sink, SinkOperator,
};
use rill_core::process::{ProcessFunction, ProcessOperator};
use rill_core::side_output::{OutputTag, SelectMain, SelectSide, Tagged};
use rill_core::state::{KeyedStateStore, StateValue};
use rill_core::{Data, Key};

use crate::connectors::collect::{CollectSink, Collected};
use crate::connectors::stdout::StdoutSink;
use crate::env::{EdgeDraft, EdgeExchange, NodeDraft, StreamEnv};
use crate::error::DescriptionError;

/// A stream of values of type `T`.
pub struct DataStream<T> {
    env: StreamEnv,
    node: usize,
    /// The operator whose main output this stream selects, if it has side outputs (a process
    /// function or a window): it emits [`Tagged`] values, and `node` keeps the main ones.
    tagged: Option<usize>,
    /// The exchange the next operation's input edge uses, if the user chose one.
    exchange: Option<(ExchangeKind, RouterFactory)>,
    values: PhantomData<fn() -> T>,
}

/// A clone is another handle on the same stream: each operation on a clone adds one more
/// consumer, so one stream can feed several operators.
impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            env: self.env.clone(),
            node: self.node,
            tagged: self.tagged,
            exchange: self.exchange.clone(),
            values: PhantomData,
        }
    }
}

/// A stream partitioned by a key: its operations see each key's records on one subtask, with
/// state scoped to the key.
pub struct KeyedStream<T, K> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key_of: KeySelector<T, K>,
    /// Routes by the concrete key selector, so that it is inlined on the per-record path.
    router: RouterFactory,
}

/// A clone is another handle on the same keyed stream: one stream can feed several keyed
/// operations (a window join and an interval join of the same inputs, say).
impl<T, K> Clone for KeyedStream<T, K> {
    fn clone(&self) -> Self {
        KeyedStream {
            stream: self.stream.clone(),
            key_of: self.key_of.clone(),
            router: self.router.clone(),
        }
    }
}

/// The keyed state store of an operator instance, in the job's state backend. If the backend
/// cannot open it, the store starts failed, and the subtask fails with that error, naming the
/// operator, when it opens its operators.
pub(crate) fn keyed_store<K: Key>(info: &OperatorInfo) -> KeyedStateStore<K> {
    KeyedStateStore::for_operator(info)
}

/// Builds each subtask's instance of a one-input operator with `make`, told where it runs.
pub(crate) fn operator_factory<O, F>(make: F) -> OperatorFactory
where
    O: OneInputOperator,
    F: Fn(&OperatorInfo) -> O + Send + Sync + 'static,
{
    Arc::new(move |info| Box::new(Erased(make(info))))
}

impl<T: Data> DataStream<T> {
    pub(crate) fn new(env: StreamEnv, node: usize) -> Self {
        DataStream {
            env,
            node,
            tagged: None,
            exchange: None,
            values: PhantomData,
        }
    }

    /// The environment the stream belongs to.
    pub fn env(&self) -> &StreamEnv {
        &self.env
    }

    /// Adds an operator fed by this stream.
    pub(crate) fn then<U: Data>(
        self,
        name: &str,
        edge: Option<(ExchangeKind, RouterFactory)>,
        factory: OperatorFactory,
    ) -> DataStream<U> {
        let node = self.env.add_node(NodeDraft {
            name: name.to_owned(),
            uid: None,
            parallelism: None,
            parallelism_of: None,
            parallel: true,
            kind: OperatorKind::Transform(factory),
        });
        self.connect_to(node, edge);
        DataStream::new(self.env, node)
    }

    /// Adds an operator with side outputs fed by this stream: the operator emits [`Tagged`]
    /// values, and a selector chained behind it keeps the main ones for the returned stream.
    pub(crate) fn then_tagged<U: Data>(
        self,
        name: &str,
        edge: Option<(ExchangeKind, RouterFactory)>,
        factory: OperatorFactory,
    ) -> DataStream<U> {
        let tagged = self.then::<Tagged<U>>(name, edge, factory);
        let mut main = tagged.clone().then::<U>(
            &format!("{name} (main output)"),
            None,
            operator_factory(|_| SelectMain::<U>::default()),
        );
        main.tagged = Some(tagged.node);
        main
    }

    /// The operator that produces this stream: the one with side outputs, if it has them.
    pub(crate) fn operator_node(&self) -> usize {
        self.tagged.unwrap_or(self.node)
    }

    /// The operators a naming or parallelism call on this stream applies to: its own, and the
    /// operator with side outputs it selects from.
    fn own_nodes(&self) -> impl Iterator<Item = usize> + use<T> {
        self.tagged.into_iter().chain([self.node])
    }

    /// This stream's values wrapped by `wrap` for a two-input operator (`Either::Left` or
    /// `Either::Right`, named by `side`): at this stream's parallelism, so that the wrapping
    /// chains behind the stream's operator, and once per stream and side, so that a stream
    /// feeding several two-input operators (a window join and an interval join, say) stays one
    /// chain instead of fanning out into unchained wrappings.
    pub(crate) fn wrapped<O: Data>(&self, side: &'static str, wrap: fn(T) -> O) -> DataStream<O> {
        let key = (self.node, TypeId::of::<O>(), side);
        // A stream with an exchange of its own feeds the wrapping through it: not shared.
        let shared = self.exchange.is_none();
        if shared && let Some(&node) = self.env.draft().wrapped.get(&key) {
            return DataStream::new(self.env.clone(), node);
        }
        let wrapped = self.clone().map(wrap);
        {
            let mut draft = self.env.draft();
            draft.nodes[wrapped.node].parallelism_of = Some(self.node);
            if shared {
                draft.wrapped.insert(key, wrapped.node);
            }
        }
        wrapped
    }

    /// Adds the edge from this stream into `node`.
    pub(crate) fn connect_to(&self, node: usize, edge: Option<(ExchangeKind, RouterFactory)>) {
        let exchange = match edge.or_else(|| self.exchange.clone()) {
            Some((kind, router)) => EdgeExchange::Explicit(kind, router),
            None => EdgeExchange::Default {
                rebalance: Arc::new(|context| {
                    Box::new(RebalanceRouter::<T>::starting_at(
                        context.upstream_subtask as usize,
                    ))
                }),
            },
        };
        self.env.add_edge(EdgeDraft {
            from: self.node,
            to: node,
            exchange,
        });
    }

    /// Names the operator that produces this stream (names appear in errors and logs).
    pub fn name(self, name: &str) -> Self {
        let mut draft = self.env.draft();
        match self.tagged {
            Some(tagged) => {
                draft.nodes[tagged].name = name.to_owned();
                draft.nodes[self.node].name = format!("{name} (main output)");
            }
            None => draft.nodes[self.node].name = name.to_owned(),
        }
        drop(draft);
        self
    }

    /// Sets the parallelism of the operator that produces this stream.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        let mut draft = self.env.draft();
        for node in self.own_nodes() {
            draft.nodes[node].parallelism = Some(parallelism);
        }
        drop(draft);
        self
    }

    /// Gives the operator that produces this stream a stable id, under which checkpoints and
    /// savepoints keep its state: set it on every stateful operator of a job you will change
    /// and restore from a savepoint. Without one, the operator's name stands in.
    pub fn uid(self, uid: &str) -> Self {
        let node = self.operator_node();
        self.env.draft().nodes[node].uid = Some(uid.to_owned());
        self
    }

    /// The side output `tag` names of the process function or window that produces this
    /// stream. Asking it of any other stream is a mistake [`StreamEnv::job_graph`] reports.
    pub fn side_output<S: Data>(&self, tag: &OutputTag<S>) -> DataStream<S> {
        let Some(tagged) = self.tagged else {
            let operator = self.env.draft().nodes[self.node].name.clone();
            self.env
                .draft()
                .mistakes
                .push(DescriptionError::NoSideOutputs {
                    operator,
                    tag: tag.id().to_owned(),
                });
            return DataStream::new(self.env.clone(), self.node);
        };
        let tag = tag.clone();
        DataStream::<Tagged<T>>::new(self.env.clone(), tagged).then(
            &format!("side output '{}'", tag.id()),
            None,
            operator_factory(move |_| SelectSide::<T, S>::new(tag.clone())),
        )
    }

    /// Applies `f` to every value.
    pub fn map<U: Data, F>(self, f: F) -> DataStream<U>
    where
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.then("map", None, operator_factory(move |_| Map::new(f.clone())))
    }

    /// Keeps the values for which `predicate` holds.
    pub fn filter<F>(self, predicate: F) -> DataStream<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let predicate = Arc::new(predicate);
        self.then(
            "filter",
            None,
            operator_factory(move |_| Filter::new(predicate.clone())),
        )
    }

    /// Replaces every value by the values `f` returns for it.
    pub fn flat_map<U: Data, I, F>(self, f: F) -> DataStream<U>
    where
        I: IntoIterator<Item = U> + 'static,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.then(
            "flat_map",
            None,
            operator_factory(move |_| FlatMap::new(f.clone())),
        )
    }

    /// Runs a custom one-input operator; `make` builds one instance per subtask.
    pub fn transform<O, F>(self, name: &str, make: F) -> DataStream<O::Out>
    where
        O: OneInputOperator<In = T>,
        F: Fn() -> O + Send + Sync + 'static,
    {
        self.transform_with(name, move |_| make())
    }

    /// Like [`DataStream::transform`], with each instance told where it runs (its index, the
    /// parallelism, the job's and the operator's names).
    pub fn transform_with<O, F>(self, name: &str, make: F) -> DataStream<O::Out>
    where
        O: OneInputOperator<In = T>,
        F: Fn(&OperatorInfo) -> O + Send + Sync + 'static,
    {
        self.then(name, None, operator_factory(make))
    }

    /// Runs a process function on every record, with its timestamp, the current watermark and
    /// side outputs (Flink's `ProcessFunction`); each subtask gets a clone of `function`. What
    /// it sends to side outputs is read with [`DataStream::side_output`] on the returned
    /// stream. Keyed state and timers need a keyed stream ([`KeyedStream::process`]).
    pub fn process<P>(self, function: P) -> DataStream<P::Out>
    where
        P: ProcessFunction<In = T>,
    {
        let function = prototype(function);
        self.then_tagged(
            "process",
            None,
            operator_factory(move |_| ProcessOperator::new(function())),
        )
    }

    /// Partitions the stream by the key `key_of` extracts.
    pub fn key_by<K: Key, F>(self, key_of: F) -> KeyedStream<T, K>
    where
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        let key_of = Arc::new(key_of);
        let router_key_of = key_of.clone();
        let router: RouterFactory = Arc::new(move |context| {
            Box::new(KeyHashRouter::<T, K, F>::new(
                router_key_of.clone(),
                context.max_parallelism,
            ))
        });
        KeyedStream {
            stream: self,
            key_of,
            router,
        }
    }

    /// Merges this stream with others of the same type.
    pub fn union(self, others: impl IntoIterator<Item = DataStream<T>>) -> DataStream<T> {
        let union = self.then::<T>("union", None, Arc::new(|_| Box::new(Passthrough)));
        for other in others {
            other.connect_to(union.node, None);
        }
        union
    }

    /// Spreads the next operation's input round-robin over all its subtasks.
    pub fn rebalance(mut self) -> Self {
        self.exchange = Some((
            ExchangeKind::Rebalance,
            Arc::new(|context| {
                Box::new(RebalanceRouter::<T>::starting_at(
                    context.upstream_subtask as usize,
                ))
            }),
        ));
        self
    }

    /// Sends every value to every subtask of the next operation.
    pub fn broadcast(mut self) -> Self {
        self.exchange = Some((
            ExchangeKind::Broadcast,
            Arc::new(|_| Box::new(BroadcastRouter)),
        ));
        self
    }

    /// Writes the stream to a sink; `make` builds one instance per subtask, told where it runs
    /// (its index, the parallelism, the job's and the operator's names).
    pub fn sink_with<S, F>(self, name: &str, make: F) -> SinkHandle
    where
        S: Sink<In = T>,
        F: Fn(&OperatorInfo) -> S + Send + Sync + 'static,
    {
        let node = self.then::<()>(
            name,
            None,
            Arc::new(move |info| Box::new(Erased(SinkOperator::new(make(info), info)))),
        );
        SinkHandle { stream: node }
    }

    /// Collects the stream's values into memory; read them after the job ended.
    pub fn collect(self) -> Collected<T> {
        let collected = Collected::default();
        let target = collected.clone();
        self.sink_with("collect", move |_| CollectSink::new(target.clone()));
        collected
    }
}

impl<T: Data + std::fmt::Display> DataStream<T> {
    /// Prints every value to stdout, one per line (prefixed by the subtask's index when the
    /// sink runs in parallel).
    pub fn print(self) -> SinkHandle {
        self.sink_with("print", |info| {
            StdoutSink::new(info.subtask, info.parallelism)
        })
    }
}

/// The sink operator of a stream; lets you name it or set its parallelism.
pub struct SinkHandle {
    stream: DataStream<()>,
}

impl SinkHandle {
    /// Names the sink.
    pub fn name(self, name: &str) -> Self {
        SinkHandle {
            stream: self.stream.name(name),
        }
    }

    /// Sets the sink's parallelism.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        SinkHandle {
            stream: self.stream.set_parallelism(parallelism),
        }
    }

    /// Gives the sink a stable id (see [`DataStream::uid`]).
    pub fn uid(self, uid: &str) -> Self {
        SinkHandle {
            stream: self.stream.uid(uid),
        }
    }
}

/// Makes a clone of `value` for every subtask. State handles are `Send` but not `Sync`, so the
/// prototype sits behind a lock; it is only ever cloned.
pub(crate) fn prototype<P: Clone + Send + 'static>(value: P) -> impl Fn() -> P + Send + Sync {
    let prototype = std::sync::Mutex::new(value);
    move || {
        prototype
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl<T: Data, K: Key> KeyedStream<T, K> {
    pub(crate) fn keyed_edge(&self) -> (ExchangeKind, RouterFactory) {
        (ExchangeKind::KeyHash, self.router.clone())
    }

    /// Combines each value with the previous result for its key, emitting every new result.
    /// The result is keyed state, so it must be serializable.
    pub fn reduce<F>(self, reduce: F) -> DataStream<T>
    where
        T: StateValue,
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        let edge = self.keyed_edge();
        let (reduce, key_of) = (Arc::new(reduce), self.key_of);
        self.stream.then(
            "reduce",
            Some(edge),
            operator_factory(move |info| {
                KeyedReduce::new(reduce.clone(), key_of.clone(), keyed_store(info))
            }),
        )
    }

    /// Runs a keyed process function; each subtask gets a clone of `function`. What it sends
    /// to side outputs is read with [`DataStream::side_output`] on the returned stream.
    pub fn process<P>(self, function: P) -> DataStream<P::Out>
    where
        P: KeyedProcessFunction<Key = K, In = T>,
    {
        let edge = self.keyed_edge();
        let (key_of, planted) = (self.key_of, self.stream.env.planted());
        let function = prototype(function);
        self.stream.then_tagged(
            "process",
            Some(edge),
            operator_factory(move |info| {
                planted.in_process(KeyedProcess::new(
                    function(),
                    key_of.clone(),
                    keyed_store(info),
                ))
            }),
        )
    }
}

//! The catalog of jobs a scenario can run, each with its input generator and its reference
//! model: the multiset of records a correct run commits to the output topic.
//!
//! Every job reads topics of the simulated log and writes the topic `out` through the
//! two-phase-commit `LogWriter` of `rill-core`; its operators are `rill-core`'s own (flat map, keyed
//! reduce, map, filter, union, sink adapter), wired with the same exchanges the `rill` API
//! builds. Operators are named by their *role*, which scenarios use to set parallelism and
//! to aim faults.
//!
//! - `wordcount`: lines → split → key by word → running count → sink. Output `(word, n)`:
//!   every count from 1 to the word's total, once.
//! - `running-sum`: `(key, value)` events over several partitions, each key in one partition
//!   (as a keyed producer writes them) → key by key → running sum → sink. Output every prefix
//!   sum of each key's values, in partition order.
//! - `union-broadcast`: two topics → rebalance into a union → broadcast to every `tag`
//!   subtask, which tags each value with its index → sink. Output `(tag, value)` for every
//!   value and tag.
//! - `log-pipeline`: a log-to-log pipeline: orders → filter → map → rebalance → sink.
//!
//! The event-time jobs — `window-aggregate`, `event-timers`, `session-windows` and `join` —
//! read their input with watermarks, out of order but never late; they, their input and their
//! reference models are in the submodule `event_time`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::Rng;
use rill_core::checkpoint::CheckpointMode;
use rill_core::coordinator::CompletedCheckpoint;
use rill_core::exchange::{
    BroadcastRouter, ExchangeKind, ForwardRouter, KeyHashRouter, RebalanceRouter, RouterFactory,
};
use rill_core::graph::{Edge, JobGraph, OperatorId, OperatorKind, OperatorNode};
use rill_core::keyed::{KeySelector, KeyedReduce};
use rill_core::operator::{
    Erased, Filter, FlatMap, Map, OneInputOperator, OperatorInfo, Passthrough, SinkOperator,
};
use rill_core::state::{KeyedStateStore, StateValue, ValueState};
use rill_core::time::WatermarkStrategy;
use rill_core::{Data, Key};
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use rill_core::log_connector::{LogReader, LogWriter};

use crate::log::{LogRecord, SimLog};
use rill_core::defects::Defect;

mod event_time;
mod process;

/// The topic every job writes.
pub const OUTPUT_TOPIC: &str = "out";

/// A job of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// Word count over lines of text.
    Wordcount,
    /// A keyed running sum over several source partitions.
    RunningSum,
    /// Two sources unioned, then broadcast.
    UnionBroadcast,
    /// A stateless log-to-log pipeline.
    LogPipeline,
    /// Tumbling and sliding event-time windows over out-of-order readings.
    WindowAggregate,
    /// Event-time timers of a keyed process function.
    EventTimers,
    /// Session windows that merge as out-of-order records bridge them.
    SessionWindows,
    /// An interval join and a window join of two topics.
    Join,
    /// A keyed process function with state in namespaces.
    BucketSums,
    /// Processing-time timers racing event-time ones; the output does not depend on which wins.
    ProcessingTimers,
}

/// How big the generated input is, and when it arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputSpec {
    /// How many input records (lines, events, orders) in all.
    pub records: usize,
    /// Partitions per input topic.
    pub partitions: u32,
    /// Distinct keys (words, event keys).
    pub keys: u32,
    /// Over how many virtual ms a producer appends the input (0: all there at the start).
    /// Sources catch up and wait, sinks sit idle across checkpoints.
    pub arrival_ms: u64,
}

impl Default for InputSpec {
    fn default() -> Self {
        InputSpec {
            records: 2_000,
            partitions: 2,
            keys: 50,
            arrival_ms: 0,
        }
    }
}

/// One input topic's generated records, by partition.
pub struct TopicInput {
    /// The topic.
    pub topic: &'static str,
    /// Its records, by partition.
    pub partitions: Vec<Vec<LogRecord>>,
}

/// A job's generated input and the output a correct run commits.
pub struct GeneratedInput {
    /// The input topics.
    pub topics: Vec<TopicInput>,
    /// The reference output.
    pub expected: Multiset,
    /// The reference final state of the keyed operator, by key (empty for jobs without one).
    pub final_state: FinalState,
}

/// A keyed operator's state at the end of the job: each key's value, as text.
pub type FinalState = BTreeMap<String, String>;

/// How often each output record should be committed.
pub type Multiset = FxHashMap<Vec<u8>, i64>;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
}

fn decode<T: DeserializeOwned + Default>(record: &LogRecord) -> T {
    bincode::serde::decode_from_slice(&record.value, bincode::config::standard())
        .map(|(value, _)| value)
        .unwrap_or_default()
}

fn decode_text(record: &LogRecord) -> String {
    String::from_utf8_lossy(&record.value).into_owned()
}

fn record(value: Vec<u8>, timestamp: usize) -> LogRecord {
    LogRecord {
        value: value.into(),
        timestamp: timestamp as i64,
    }
}

impl JobKind {
    /// Every job, for `--list`.
    pub const ALL: [JobKind; 10] = [
        JobKind::Wordcount,
        JobKind::RunningSum,
        JobKind::UnionBroadcast,
        JobKind::LogPipeline,
        JobKind::WindowAggregate,
        JobKind::EventTimers,
        JobKind::SessionWindows,
        JobKind::Join,
        JobKind::BucketSums,
        JobKind::ProcessingTimers,
    ];

    /// The job's name in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Wordcount => "wordcount",
            JobKind::RunningSum => "running-sum",
            JobKind::UnionBroadcast => "union-broadcast",
            JobKind::LogPipeline => "log-pipeline",
            JobKind::WindowAggregate => "window-aggregate",
            JobKind::EventTimers => "event-timers",
            JobKind::SessionWindows => "session-windows",
            JobKind::Join => "join",
            JobKind::BucketSums => "bucket-sums",
            JobKind::ProcessingTimers => "processing-timers",
        }
    }

    /// The operator roles a scenario may give a parallelism.
    pub fn roles(self) -> &'static [&'static str] {
        match self {
            JobKind::Wordcount => &["source", "count"],
            JobKind::RunningSum => &["source", "sum"],
            JobKind::UnionBroadcast => &["source", "union", "tag"],
            JobKind::LogPipeline => &["source", "sink"],
            JobKind::WindowAggregate => &["source", "window"],
            JobKind::EventTimers => &["source", "timers"],
            JobKind::SessionWindows => &["source", "sessions"],
            JobKind::Join => &["source", "join"],
            JobKind::BucketSums => &["source", "buckets"],
            JobKind::ProcessingTimers => &["source", "timers"],
        }
    }

    /// Whether the job has the component `defect` breaks: every job has sources, sinks,
    /// subtasks, partitioners, a coordinator and a master; only some have windows, or keyed
    /// process functions with timers.
    pub fn can_break(self, defect: Defect) -> bool {
        match defect {
            Defect::WindowDropsTimers => matches!(
                self,
                JobKind::WindowAggregate | JobKind::SessionWindows | JobKind::Join
            ),
            Defect::EventTimersFireEarly => matches!(
                self,
                JobKind::WindowAggregate
                    | JobKind::EventTimers
                    | JobKind::SessionWindows
                    | JobKind::Join
                    | JobKind::ProcessingTimers
            ),
            Defect::ProcessDropsTimers => matches!(
                self,
                JobKind::EventTimers | JobKind::Join | JobKind::ProcessingTimers
            ),
            Defect::SourceForgetsOffsets
            | Defect::SourceRestoresOneAhead
            | Defect::SourceRestoresOneBehind
            | Defect::SinkCommitsAtPreCommit
            | Defect::SinkSkipsFlush
            | Defect::SinkAbortsCommittedOnRestore
            | Defect::SinkCommitsLeftoversOnRestore
            | Defect::SinkLeavesTakenOverOpen
            | Defect::CoordinatorCompletesEarly
            | Defect::StoreLatestSkipsNewest
            | Defect::StoreDiscardOverreaches
            | Defect::SubtaskSkipsAlignment
            | Defect::DriftHoldsAligningChannels
            | Defect::PartitionerLeaksCredits
            | Defect::MasterIgnoresLateCompletions
            | Defect::KeyGroupRangeOffByOne => true,
        }
    }

    /// Generates the input and the reference output.
    pub fn generate_input(self, input: &InputSpec, rng: &mut impl Rng) -> GeneratedInput {
        match self {
            JobKind::WindowAggregate => return event_time::window_aggregate(input, rng),
            JobKind::EventTimers => return event_time::event_timers(input, rng),
            JobKind::SessionWindows => return event_time::session_windows(input, rng),
            JobKind::Join => return event_time::join(input, rng),
            JobKind::BucketSums => return process::bucket_sums(input, rng),
            JobKind::ProcessingTimers => return process::processing_timers(input, rng),
            JobKind::Wordcount
            | JobKind::RunningSum
            | JobKind::UnionBroadcast
            | JobKind::LogPipeline => {}
        }
        let partitions = input.partitions.max(1);
        let keys = input.keys.max(1);
        // Jobs commit about one record per input record, or per word (a few per line).
        let mut expected =
            Multiset::with_capacity_and_hasher(input.records * 4, Default::default());
        let mut final_state = FinalState::new();
        let mut topics = Vec::new();
        match self {
            JobKind::Wordcount => {
                let vocabulary: Vec<String> = (0..keys).map(|key| format!("w{key}")).collect();
                let mut counts = vec![0u64; vocabulary.len()];
                let mut by_partition = vec![Vec::new(); partitions as usize];
                for line_number in 0..input.records {
                    let words: Vec<usize> = (0..rng.random_range(1..=6))
                        .map(|_| rng.random_range(0..vocabulary.len()))
                        .collect();
                    for &word in &words {
                        counts[word] += 1;
                        *expected
                            .entry(encode(&(&vocabulary[word], counts[word])))
                            .or_default() += 1;
                    }
                    let words: Vec<&str> = words
                        .iter()
                        .map(|&word| vocabulary[word].as_str())
                        .collect();
                    let partition = rng.random_range(0..partitions) as usize;
                    by_partition[partition].push(record(words.join(" ").into_bytes(), line_number));
                }
                final_state.extend(
                    vocabulary
                        .into_iter()
                        .zip(counts)
                        .filter(|&(_, count)| count > 0)
                        .map(|(word, count)| (word, count.to_string())),
                );
                topics.push(TopicInput {
                    topic: "lines",
                    partitions: by_partition,
                });
            }
            JobKind::RunningSum => {
                let mut sums: FxHashMap<u32, i64> = FxHashMap::default();
                let mut by_partition = vec![Vec::new(); partitions as usize];
                for index in 0..input.records {
                    let key = rng.random_range(0..keys);
                    let value = rng.random_range(-50i64..=100);
                    let sum = sums.entry(key).or_default();
                    *sum += value;
                    *expected.entry(encode(&(key, *sum))).or_default() += 1;
                    by_partition[(key % partitions) as usize]
                        .push(record(encode(&(key, value)), index));
                }
                final_state.extend(
                    sums.into_iter()
                        .map(|(key, sum)| (key.to_string(), sum.to_string())),
                );
                topics.push(TopicInput {
                    topic: "events",
                    partitions: by_partition,
                });
            }
            JobKind::UnionBroadcast => {
                // Filled in by `graph`, which knows the tag parallelism: the values only here.
                for (topic, parity) in [("left", 0u64), ("right", 1)] {
                    let mut by_partition = vec![Vec::new(); partitions as usize];
                    for index in 0..input.records / 2 {
                        let value = 2 * index as u64 + parity;
                        *expected.entry(encode(&value)).or_default() += 1;
                        let partition = rng.random_range(0..partitions) as usize;
                        by_partition[partition].push(record(encode(&value), index));
                    }
                    topics.push(TopicInput {
                        topic,
                        partitions: by_partition,
                    });
                }
            }
            JobKind::LogPipeline => {
                let mut by_partition = vec![Vec::new(); partitions as usize];
                for index in 0..input.records as u64 {
                    if let Some(out) = pipeline_step(index) {
                        *expected.entry(encode(&out)).or_default() += 1;
                    }
                    let partition = rng.random_range(0..partitions) as usize;
                    by_partition[partition].push(record(encode(&index), index as usize));
                }
                topics.push(TopicInput {
                    topic: "orders",
                    partitions: by_partition,
                });
            }
            JobKind::WindowAggregate
            | JobKind::EventTimers
            | JobKind::SessionWindows
            | JobKind::Join
            | JobKind::BucketSums
            | JobKind::ProcessingTimers => unreachable!("generated above"),
        }
        GeneratedInput {
            topics,
            expected,
            final_state,
        }
    }

    /// The reference output once the job's shape is known: a broadcast multiplies each value
    /// by the number of `tag` subtasks.
    pub fn finish_reference(
        self,
        expected: Multiset,
        parallelism: &dyn Fn(&str) -> u32,
    ) -> Multiset {
        match self {
            JobKind::UnionBroadcast => {
                let tags = parallelism("tag");
                let mut tagged = Multiset::default();
                for (bytes, count) in expected {
                    let value: u64 = decode(&record(bytes, 0));
                    for tag in 0..tags {
                        *tagged.entry(encode(&(tag, value))).or_default() += count;
                    }
                }
                tagged
            }
            JobKind::Wordcount
            | JobKind::RunningSum
            | JobKind::LogPipeline
            | JobKind::WindowAggregate
            | JobKind::EventTimers
            | JobKind::SessionWindows
            | JobKind::Join
            | JobKind::BucketSums
            | JobKind::ProcessingTimers => expected,
        }
    }

    /// The state of the job's keyed operators in a checkpoint, as text: the keyed reduce's
    /// value by key, the event-time jobs' state (see the submodule `event_time`); `None` for jobs without
    /// keyed state.
    pub fn final_state_in(
        self,
        checkpoint: &CompletedCheckpoint,
    ) -> Option<Result<FinalState, String>> {
        match self {
            JobKind::Wordcount => Some(reduce_state::<String, (String, u64)>(
                checkpoint,
                "count",
                |word, pair| (word.clone(), pair.1.to_string()),
            )),
            JobKind::RunningSum => Some(reduce_state::<u32, (u32, i64)>(
                checkpoint,
                "sum",
                |key, pair| (key.to_string(), pair.1.to_string()),
            )),
            JobKind::UnionBroadcast | JobKind::LogPipeline => None,
            JobKind::WindowAggregate
            | JobKind::EventTimers
            | JobKind::SessionWindows
            | JobKind::Join => Some(event_time::final_state(self, checkpoint)),
            JobKind::BucketSums | JobKind::ProcessingTimers => {
                Some(process::final_state(self, checkpoint))
            }
        }
    }

    /// An output record as `(key, value)` text, for reports.
    pub fn render(self, bytes: &[u8]) -> (String, String) {
        let record = LogRecord {
            value: bytes.into(),
            timestamp: 0,
        };
        match self {
            JobKind::Wordcount => {
                let (word, count): (String, u64) = decode(&record);
                (word, count.to_string())
            }
            JobKind::RunningSum => {
                let (key, sum): (u32, i64) = decode(&record);
                (key.to_string(), sum.to_string())
            }
            JobKind::UnionBroadcast => {
                let (tag, value): (u32, u64) = decode(&record);
                (value.to_string(), format!("tag {tag}"))
            }
            JobKind::LogPipeline => {
                let value: u64 = decode(&record);
                (value.to_string(), value.to_string())
            }
            JobKind::WindowAggregate
            | JobKind::EventTimers
            | JobKind::SessionWindows
            | JobKind::Join => event_time::render(self, &record),
            JobKind::BucketSums | JobKind::ProcessingTimers => process::render(self, &record),
        }
    }

    /// The job's graph.
    pub fn graph(
        self,
        log: &SimLog,
        parallelism: &dyn Fn(&str) -> u32,
        mode: CheckpointMode,
        defect: Option<Defect>,
    ) -> JobGraph {
        let mut job = GraphBuilder {
            graph: JobGraph::new(self.name()),
            exactly_once: mode == CheckpointMode::ExactlyOnce,
            defect,
        };
        match self {
            JobKind::Wordcount => {
                let source = job.source("source", parallelism("source"), log, "lines", decode_text);
                let split = job.operator("split", parallelism("source"), |_| {
                    FlatMap::new(Arc::new(|line: String| {
                        line.split(' ')
                            .map(|word| (word.to_owned(), 1u64))
                            .collect::<Vec<_>>()
                    }))
                });
                job.forward(source, split);
                let count = job.running_sum("count", parallelism("count"), split, word_key());
                let sink = job.sink("sink", parallelism("count"), log, |v: &(String, u64)| {
                    encode(v)
                });
                job.forward(count, sink);
            }
            JobKind::RunningSum => {
                let source = job.source(
                    "source",
                    parallelism("source"),
                    log,
                    "events",
                    decode::<(u32, i64)>,
                );
                let sum = job.running_sum("sum", parallelism("sum"), source, event_key());
                let sink = job.sink("sink", parallelism("sum"), log, |v: &(u32, i64)| encode(v));
                job.forward(sum, sink);
            }
            JobKind::UnionBroadcast => {
                let left = job.source("left", parallelism("source"), log, "left", decode::<u64>);
                let right = job.source("right", parallelism("source"), log, "right", decode::<u64>);
                let union = job.add(
                    "union",
                    parallelism("union"),
                    OperatorKind::Transform(Arc::new(|_| Box::new(Passthrough))),
                );
                job.rebalance::<u64>(left, union);
                job.rebalance::<u64>(right, union);
                let tag = job.operator("tag", parallelism("tag"), |info| {
                    let index = info.subtask;
                    Map::new(Arc::new(move |value: u64| (index, value)))
                });
                job.edge(
                    union,
                    tag,
                    ExchangeKind::Broadcast,
                    Arc::new(|_| Box::new(BroadcastRouter)),
                );
                let sink = job.sink("sink", parallelism("tag"), log, |v: &(u32, u64)| encode(v));
                job.forward(tag, sink);
            }
            JobKind::LogPipeline => {
                let source = job.source(
                    "source",
                    parallelism("source"),
                    log,
                    "orders",
                    decode::<u64>,
                );
                let filter = job.operator("filter", parallelism("source"), |_| {
                    Filter::new(Arc::new(|order: &u64| pipeline_step(*order).is_some()))
                });
                job.forward(source, filter);
                let map = job.operator("enrich", parallelism("source"), |_| {
                    Map::new(Arc::new(|order: u64| {
                        pipeline_step(order).unwrap_or_default()
                    }))
                });
                job.forward(filter, map);
                let sink = job.sink("sink", parallelism("sink"), log, |v: &u64| encode(v));
                job.rebalance::<u64>(map, sink);
            }
            JobKind::WindowAggregate => {
                event_time::window_aggregate_graph(&mut job, log, parallelism);
            }
            JobKind::EventTimers => event_time::event_timers_graph(&mut job, log, parallelism),
            JobKind::SessionWindows => {
                event_time::session_windows_graph(&mut job, log, parallelism);
            }
            JobKind::Join => event_time::join_graph(&mut job, log, parallelism),
            JobKind::BucketSums => process::bucket_sums_graph(&mut job, log, parallelism),
            JobKind::ProcessingTimers => {
                process::processing_timers_graph(&mut job, log, parallelism);
            }
        }
        job.graph
    }
}

/// Reads the keyed state of the reduce operator `uid` from every subtask's snapshot.
fn reduce_state<K: Key, T: StateValue>(
    checkpoint: &CompletedCheckpoint,
    uid: &str,
    render: fn(&K, &T) -> (String, String),
) -> Result<FinalState, String> {
    // `KeyedReduce` keeps its accumulator in the value state of this name.
    value_state(checkpoint, uid, "reduce", render)
}

/// Reads the value state `name` of the keyed operator `uid` from every subtask's snapshot: a
/// store restored from each, as the operator itself restores, and its value table.
fn value_state<K: Key, T: StateValue>(
    CompletedCheckpoint {
        metadata,
        snapshots,
    }: &CompletedCheckpoint,
    uid: &str,
    name: &'static str,
    render: fn(&K, &T) -> (String, String),
) -> Result<FinalState, String> {
    let accumulated = ValueState::<T>::new(name);
    let mut state = FinalState::new();
    for (position, layout) in metadata.layout.subtasks.iter().enumerate() {
        let Some(index) = layout.operators.iter().position(|operator| operator == uid) else {
            continue;
        };
        let operator = snapshots
            .get(&position)
            .and_then(|snapshot| snapshot.operators.get(index))
            .ok_or_else(|| {
                format!(
                    "{} lacks the state of '{uid}' in subtask {position}",
                    metadata.checkpoint
                )
            })?;
        let mut store = KeyedStateStore::<K>::new(metadata.layout.max_parallelism);
        store.restore(operator.keyed.clone());
        let values = store
            .values(&accumulated)
            .ok_or_else(|| "the state is not in memory".to_owned())?;
        state.extend(values.iter().map(|(key, value)| render(key, value)));
    }
    Ok(state)
}

/// The log pipeline's transformation: drop every fifth order, enrich the rest.
fn pipeline_step(order: u64) -> Option<u64> {
    (!order.is_multiple_of(5)).then(|| order * 10 + 1)
}

fn word_key() -> KeySelector<(String, u64), String> {
    Arc::new(|pair: &(String, u64)| pair.0.clone())
}

fn event_key() -> KeySelector<(u32, i64), u32> {
    Arc::new(|event: &(u32, i64)| event.0)
}

/// Builds a [`JobGraph`] from `rill-core` operators, as the `rill` API does, with the
/// scenario's defect, if any, planted in every connector and keyed operator with timers (each
/// ignores a defect that is not its own).
struct GraphBuilder {
    graph: JobGraph,
    /// Whether the sink writes through transactions (or appends).
    exactly_once: bool,
    defect: Option<Defect>,
}

impl GraphBuilder {
    fn add(&mut self, name: &str, parallelism: u32, kind: OperatorKind) -> OperatorId {
        self.graph.add_operator(OperatorNode {
            name: name.to_owned(),
            uid: None,
            parallelism: parallelism.max(1),
            kind,
        })
    }

    fn source<T: Data>(
        &mut self,
        name: &str,
        parallelism: u32,
        log: &SimLog,
        topic: &'static str,
        decode: fn(&LogRecord) -> T,
    ) -> OperatorId {
        self.source_with(name, parallelism, log, topic, decode, None)
    }

    /// A source whose records carry their log timestamps as event time, with watermarks by
    /// `strategy`.
    fn timed_source<T: Data>(
        &mut self,
        name: &str,
        parallelism: u32,
        log: &SimLog,
        topic: &'static str,
        decode: fn(&LogRecord) -> T,
        strategy: WatermarkStrategy,
    ) -> OperatorId {
        self.source_with(name, parallelism, log, topic, decode, Some(strategy))
    }

    fn source_with<T: Data>(
        &mut self,
        name: &str,
        parallelism: u32,
        log: &SimLog,
        topic: &'static str,
        decode: fn(&LogRecord) -> T,
        watermarks: Option<WatermarkStrategy>,
    ) -> OperatorId {
        let log = log.clone();
        let defect = self.defect;
        self.add(
            name,
            parallelism,
            OperatorKind::Source(Arc::new(move |info: &OperatorInfo| {
                let mut reader = LogReader::new(
                    &log,
                    topic,
                    (info.subtask, info.parallelism),
                    (true, 0),
                    Arc::new(move |record: LogRecord| decode(&record)),
                );
                if let Some(strategy) = watermarks {
                    reader = reader.with_watermarks(strategy);
                }
                if let Some(defect) = defect {
                    reader.plant_defect(defect);
                }
                Box::new(reader)
            })),
        )
    }

    fn operator<O: OneInputOperator>(
        &mut self,
        name: &str,
        parallelism: u32,
        make: impl Fn(&OperatorInfo) -> O + Send + Sync + 'static,
    ) -> OperatorId {
        self.add(
            name,
            parallelism,
            OperatorKind::Transform(Arc::new(move |info| Box::new(Erased(make(info))))),
        )
    }

    /// A keyed running sum of `(key, amount)` pairs, fed from `from` by key.
    fn running_sum<K: Key, N>(
        &mut self,
        name: &str,
        parallelism: u32,
        from: OperatorId,
        key_of: KeySelector<(K, N), K>,
    ) -> OperatorId
    where
        (K, N): Data + StateValue,
        N: std::ops::Add<Output = N> + Send + Sync + 'static,
    {
        let reduce_key = key_of.clone();
        let sum = self.operator(name, parallelism, move |info| {
            KeyedReduce::new(
                Arc::new(|a: (K, N), b: (K, N)| (a.0, a.1 + b.1)),
                reduce_key.clone(),
                KeyedStateStore::new(info.max_parallelism),
            )
        });
        self.key_by(from, sum, key_of);
        sum
    }

    fn sink<T: Data>(
        &mut self,
        name: &str,
        parallelism: u32,
        log: &SimLog,
        encode: fn(&T) -> Vec<u8>,
    ) -> OperatorId {
        let log = log.clone();
        let (exactly_once, defect) = (self.exactly_once, self.defect);
        let operator = OperatorKind::Transform(Arc::new(move |info: &OperatorInfo| {
            let encode = Arc::new(move |value: &T| LogRecord {
                value: encode(value).into(),
                timestamp: 0,
            });
            let mut writer = LogWriter::new(&log, OUTPUT_TOPIC, info, encode, exactly_once);
            if let Some(defect) = defect {
                writer.plant_defect(defect);
            }
            Box::new(Erased(SinkOperator::new(writer, info)))
        }));
        self.add(name, parallelism, operator)
    }

    fn edge(
        &mut self,
        from: OperatorId,
        to: OperatorId,
        exchange: ExchangeKind,
        router: RouterFactory,
    ) {
        self.graph.add_edge(Edge {
            from,
            to,
            exchange,
            router,
        });
    }

    fn forward(&mut self, from: OperatorId, to: OperatorId) {
        self.edge(
            from,
            to,
            ExchangeKind::Forward,
            Arc::new(|_| Box::new(ForwardRouter)),
        );
    }

    fn rebalance<T: Data>(&mut self, from: OperatorId, to: OperatorId) {
        self.edge(
            from,
            to,
            ExchangeKind::Rebalance,
            Arc::new(|context| {
                Box::new(RebalanceRouter::<T>::starting_at(
                    context.upstream_subtask as usize,
                ))
            }),
        );
    }

    fn key_by<T: Data, K: Key>(
        &mut self,
        from: OperatorId,
        to: OperatorId,
        key_of: KeySelector<T, K>,
    ) {
        self.edge(
            from,
            to,
            ExchangeKind::KeyHash,
            Arc::new(move |context| {
                Box::new(KeyHashRouter::<T, K>::new(
                    key_of.clone(),
                    context.max_parallelism,
                ))
            }),
        );
    }
}

//! The jobs a scenario can run: the catalog's, each with its input generator and its
//! reference model — the multiset of records a correct run commits to the output topic — or a
//! user's own ([`crate::user::UserJob`]), which brings its input and reference itself.
//!
//! Every catalog job is described with `rill-api`, as a user describes theirs
//! ([`JobKind::describe`]): it reads topics of the simulated log and writes the output topic
//! through the connectors of [`SimConnectors`] (`rill-core`'s log source and two-phase-commit
//! sink, made custom connectors of the job). Operators are named by their *role*, which
//! scenarios use to set parallelism and to aim faults.
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

use rand::{Rng, RngCore};
use rill_api::{DataStream, StreamEnv};
use rill_core::coordinator::CompletedCheckpoint;
use rill_core::defects::Defect;
use rill_core::operator::Map;
use rill_core::state::{KeyedStateStore, StateValue, ValueState};
use rill_core::{Data, Key};
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connectors::SimConnectors;
use crate::log::LogRecord;
use crate::user::UserJob;

mod event_time;
mod process;

/// What a scenario runs: a job of the catalog, or a user's own.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(from = "JobKind")]
pub enum Job {
    /// A job of the catalog, named in scenario files.
    Catalog(JobKind),
    /// A user's job, written with the API (see [`crate::user`]).
    User(Arc<UserJob>),
}

impl From<JobKind> for Job {
    fn from(kind: JobKind) -> Self {
        Job::Catalog(kind)
    }
}

impl Job {
    /// The job's name: the catalog's, or the one its user gave it.
    pub fn name(&self) -> &str {
        match self {
            Job::Catalog(kind) => kind.name(),
            Job::User(job) => job.name(),
        }
    }

    /// The operator roles a scenario may give a parallelism (a user's job sets its own).
    pub fn roles(&self) -> &'static [&'static str] {
        match self {
            Job::Catalog(kind) => kind.roles(),
            Job::User(_) => &[],
        }
    }

    /// Whether the job has the component `defect` breaks (a user's job: as far as the
    /// simulator knows).
    pub fn can_break(&self, defect: Defect) -> bool {
        match self {
            Job::Catalog(kind) => kind.can_break(defect),
            Job::User(_) => true,
        }
    }

    /// The input and the reference output, for the roles at `parallelism`.
    pub fn generate_input(
        &self,
        input: &InputSpec,
        parallelism: &dyn Fn(&str) -> u32,
        rng: &mut impl RngCore,
    ) -> GeneratedInput {
        match self {
            Job::Catalog(kind) => {
                let mut generated = kind.generate_input(input, rng);
                generated.expected = kind.finish_reference(generated.expected, parallelism);
                generated
            }
            Job::User(job) => job.generate_input(rng),
        }
    }

    /// The state of the job's keyed operators in a checkpoint, as text (`None`: not checked).
    pub fn final_state_in(
        &self,
        checkpoint: &CompletedCheckpoint,
    ) -> Option<Result<FinalState, String>> {
        match self {
            Job::Catalog(kind) => kind.final_state_in(checkpoint),
            Job::User(_) => None,
        }
    }

    /// An output record as `(key, value)` text, for reports (a user's job shows the whole
    /// value as the key).
    pub fn render(&self, bytes: &[u8]) -> (String, String) {
        match self {
            Job::Catalog(kind) => kind.render(bytes),
            Job::User(job) => (job.render(bytes), String::new()),
        }
    }

    /// Describes the job on `env` over the connectors `io`, with the roles at `parallelism`.
    pub fn describe(&self, env: &StreamEnv, io: &SimConnectors, parallelism: &dyn Fn(&str) -> u32) {
        match self {
            Job::Catalog(kind) => kind.describe(env, io, parallelism),
            Job::User(job) => job.describe(env, io),
        }
    }
}

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

/// One input topic's records, by partition.
#[derive(Clone, Debug)]
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

/// A value as the simulated jobs write it to the log: bincode (a value that does not encode
/// is written empty, and shows as a wrong record).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
}

/// A record's value as the simulated jobs read it: bincode, or the type's default where the
/// bytes do not decode (the log checksums what it keeps, so only a job that wrote another
/// type reads that).
pub fn decode<T: DeserializeOwned + Default>(record: &LogRecord) -> T {
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
            | Defect::SinkIgnoresCommitMark
            | Defect::LogPrepareSkipsSync
            | Defect::LogCommitMovesInTwoWrites
            | Defect::CoordinatorCompletesEarly
            | Defect::CoordinatorStopsBeforeWrites
            | Defect::StoreLatestSkipsNewest
            | Defect::StoreDiscardOverreaches
            | Defect::SubtaskSkipsAlignment
            | Defect::DriftHoldsAligningChannels
            | Defect::WatermarkSkipsSilentChannels
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

    /// Describes the job on `env`, as a user describes theirs: with the API's streams and
    /// operators, reading and writing the simulated log through `io`, each operator named by
    /// its role (which scenarios aim faults at) and at the parallelism `parallelism` gives
    /// the role; keyed operators' uids are the names the final state is read under.
    pub fn describe(self, env: &StreamEnv, io: &SimConnectors, parallelism: &dyn Fn(&str) -> u32) {
        let sources = parallelism("source");
        match self {
            JobKind::Wordcount => {
                let counts = io
                    .source(env, "source", "lines", decode_text)
                    .set_parallelism(sources)
                    .flat_map(|line: String| {
                        line.split(' ')
                            .map(|word| (word.to_owned(), 1u64))
                            .collect::<Vec<_>>()
                    })
                    .name("split")
                    .set_parallelism(sources)
                    .key_by(|pair: &(String, u64)| pair.0.clone())
                    .reduce(|a, b| (a.0, a.1 + b.1));
                let role = ("count", parallelism("count"));
                keyed_to_sink(io, counts, role, encode::<(String, u64)>);
            }
            JobKind::RunningSum => {
                let sums = io
                    .source(env, "source", "events", decode::<(u32, i64)>)
                    .set_parallelism(sources)
                    .key_by(|event: &(u32, i64)| event.0)
                    .reduce(|a, b| (a.0, a.1 + b.1));
                let role = ("sum", parallelism("sum"));
                keyed_to_sink(io, sums, role, encode::<(u32, i64)>);
            }
            JobKind::UnionBroadcast => {
                let side = |topic| {
                    io.source(env, topic, topic, decode::<u64>)
                        .set_parallelism(sources)
                        .rebalance()
                };
                let tag = parallelism("tag");
                let tagged = side("left")
                    .union([side("right")])
                    .name("union")
                    .set_parallelism(parallelism("union"))
                    .broadcast()
                    .transform_with("tag", |info| {
                        let index = info.subtask;
                        Map::new(Arc::new(move |value: u64| (index, value)))
                    })
                    .set_parallelism(tag);
                io.sink(tagged, "sink", encode::<(u32, u64)>)
                    .set_parallelism(tag);
            }
            JobKind::LogPipeline => {
                let enriched = io
                    .source(env, "source", "orders", decode::<u64>)
                    .set_parallelism(sources)
                    .filter(|order| pipeline_step(*order).is_some())
                    .name("filter")
                    .set_parallelism(sources)
                    .map(|order| pipeline_step(order).unwrap_or_default())
                    .name("enrich")
                    .set_parallelism(sources)
                    .rebalance();
                io.sink(enriched, "sink", encode::<u64>)
                    .set_parallelism(parallelism("sink"));
            }
            JobKind::WindowAggregate => event_time::window_aggregate_job(env, io, parallelism),
            JobKind::EventTimers => event_time::event_timers_job(env, io, parallelism),
            JobKind::SessionWindows => event_time::session_windows_job(env, io, parallelism),
            JobKind::Join => event_time::join_job(env, io, parallelism),
            JobKind::BucketSums => process::bucket_sums_job(env, io, parallelism),
            JobKind::ProcessingTimers => process::processing_timers_job(env, io, parallelism),
        }
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

/// Writes two streams to the output topic through one sink at `parallelism`, each spread
/// round-robin over the sink's subtasks.
fn sink_both<T: Data>(
    io: &SimConnectors,
    (first, second): (DataStream<T>, DataStream<T>),
    parallelism: u32,
    encode: fn(&T) -> Vec<u8>,
) {
    let both = first
        .rebalance()
        .union([second.rebalance()])
        .name("union")
        .set_parallelism(parallelism);
    io.sink(both, "sink", encode).set_parallelism(parallelism);
}

/// Names the keyed operator that produces `stream` after its role, which is its uid too (the
/// final state is read under it), runs it at the role's parallelism, and writes its output
/// through a sink chained behind it.
fn keyed_to_sink<T: Data>(
    io: &SimConnectors,
    stream: DataStream<T>,
    (role, parallelism): (&str, u32),
    encode: fn(&T) -> Vec<u8>,
) {
    let stream = stream.name(role).uid(role).set_parallelism(parallelism);
    io.sink(stream, "sink", encode).set_parallelism(parallelism);
}

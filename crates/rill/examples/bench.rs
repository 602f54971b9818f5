//! The standard benchmark workloads, one run per process (so peak memory is the run's own).
//!
//! `cargo xtask bench` runs this for each workload and parallelism and prints a table; run it
//! directly for one figure:
//!
//! ```text
//! cargo run --release -p rill --example bench -- --workload keyed --parallelism 1 --events 20000000
//! ```
//!
//! Every workload reads the same generated events so results compare with other engines:
//! event `i` is `z = splitmix64(i)`, `key = (z >> 1) % keys` (100 000 keys unless `--keys`
//! says otherwise), `value = z >> 48`; parallel sources each produce one contiguous slice of
//! `0..events`. With `--checkpoint-ms`, the job checkpoints on that interval and the line
//! reports the checkpoints completed, how long after the start the first completed, the median
//! and longest time from a checkpoint's trigger to its completion, and the size of the last one;
//! `--state-backend fjall` keeps the keyed state on disk (in a temporary directory). The
//! `recovery` workload is the keyed one failing once half-way, checkpointing every second into a
//! checkpoint store: it reports the time from the failure until the first record reaches the
//! sink again. The `sliding` workload gives event `i` the event time `i / 100` ms (100 000 events
//! per second of event time) less up to 500 ms of disorder (`z % 500`), with a watermark 500 ms
//! behind; parallel sources interleave (subtask `s` of `p` emits the events `i ≡ s mod p`), so
//! event time advances evenly across them; it counts and sums each key's values per sliding
//! window of 10 s every 2 s. It prints one JSON line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rill::prelude::*;
use rill::runtime::CheckpointTimes;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workload {
    /// Key by key, a running wrapping sum per key emitted for every event.
    Keyed,
    /// map value*2, filter value%3 != 0.
    Stateless,
    /// The keyed workload with a sink that takes 1 ms per batch: backpressure bounds memory.
    SlowSink,
    /// The keyed workload as a hand-written single-threaded loop: the limit to measure against.
    BaselineKeyed,
    /// The stateless workload as a hand-written single-threaded loop.
    BaselineStateless,
    /// The keyed workload failing once half-way and recovering from its latest checkpoint.
    Recovery,
    /// Event time: per key, counts and sums over sliding windows of 10 s every 2 s, over events
    /// in event-time order with up to 500 ms of disorder.
    Sliding,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    Memory,
    Fjall,
}

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum)]
    workload: Workload,
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    #[arg(long, default_value_t = 1)]
    parallelism: u32,
    /// Distinct keys of the keyed workloads: 100000 or 1000000.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Checkpoint interval in milliseconds; no checkpoints without it (`recovery`: 1000).
    #[arg(long)]
    checkpoint_ms: Option<u64>,
    /// Where keyed state lives.
    #[arg(long, value_enum, default_value_t = Backend::Memory)]
    state_backend: Backend,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Event {
    key: u64,
    value: u64,
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Event `i` over `KEYS` keys. The key count is a constant of each instance, so that `% KEYS`
/// compiles to a multiplication, as it would in a hand-written loop.
fn event<const KEYS: u64>(i: u64) -> Event {
    let z = splitmix64(i);
    Event {
        key: (z >> 1) % KEYS,
        value: z >> 48,
    }
}

/// Event time of event `i` in the sliding workload: 100 000 events per second, up to 500 ms
/// out of order.
fn event_time(i: u64) -> Timestamp {
    Timestamp((i / 100) as i64 - (splitmix64(i) % 500) as i64)
}

/// The events `i ≡ subtask (mod parallelism)` of `0..end`, with their event times.
struct TimedEvents<const KEYS: u64> {
    next: u64,
    step: u64,
    end: u64,
}

impl<const KEYS: u64> Source for TimedEvents<KEYS> {
    type Out = Event;

    fn poll_next(&mut self, out: &mut SourceOutput<Event>) -> Result<SourcePoll, BoxError> {
        while out.remaining() > 0 {
            if self.next >= self.end {
                return Ok(SourcePoll::Finished);
            }
            out.collect_with_timestamp(event::<KEYS>(self.next), event_time(self.next));
            self.next += self.step;
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        rill::core::source::encode_position(&self.next).map(Some)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        self.next = rill::core::source::decode_position(position)?;
        Ok(())
    }
}

/// Counts and sums the values of a window.
struct CountAndSum;

impl AggregateFunction for CountAndSum {
    type In = Event;
    type Acc = (u64, u64);
    type Out = (u64, u64);

    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, event: Event, (count, sum): &mut (u64, u64)) {
        *count += 1;
        *sum = sum.wrapping_add(event.value);
    }
    fn result(&self, accumulator: &(u64, u64)) -> (u64, u64) {
        *accumulator
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1.wrapping_add(b.1))
    }
}

/// Counts records and keeps a wrapping sum of their values, across parallel sink subtasks.
#[derive(Clone, Default)]
struct Tally {
    records: Arc<AtomicU64>,
    checksum: Arc<AtomicU64>,
    recovery: Recovery,
}

/// When the recovery workload failed, and how long until a record reached the sink again.
#[derive(Clone, Default)]
struct Recovery {
    failed_at: Arc<Mutex<Option<Instant>>>,
    took: Arc<Mutex<Option<Duration>>>,
}

impl Recovery {
    /// Fails the subtask (once per run) at event `fail_at`.
    fn fail_once(&self, fail_at: u64, i: u64, failed: &AtomicBool) {
        if i == fail_at && !failed.swap(true, Ordering::Relaxed) {
            *lock(&self.failed_at) = Some(Instant::now());
            panic!("the recovery workload's failure at event {i}");
        }
    }

    /// Whether the failure happened: sinks made after it belong to the restarted job.
    fn failed(&self) -> bool {
        lock(&self.failed_at).is_some()
    }

    /// Notes records reaching a sink of the restarted job: the first ends the recovery.
    fn record_arrived(&self) {
        let failed_at = *lock(&self.failed_at);
        if let Some(failed_at) = failed_at {
            lock(&self.took).get_or_insert_with(|| failed_at.elapsed());
        }
    }
}

/// A poisoned lock only means a failed subtask held it: the figures inside are still right.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct CountingSink {
    tally: Tally,
    /// Made by the restart after the recovery workload's failure.
    restarted: bool,
    pause_per_batch: Option<Duration>,
}

impl Sink for CountingSink {
    type In = Event;

    fn write_batch(&mut self, records: Vec<Record<Event>>) -> Result<(), BoxError> {
        let sum = records
            .iter()
            .fold(0u64, |sum, r| sum.wrapping_add(r.value.value));
        self.tally
            .records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.tally.checksum.fetch_add(sum, Ordering::Relaxed);
        if self.restarted {
            self.tally.recovery.record_arrived();
        }
        if let Some(pause) = self.pause_per_batch {
            std::thread::sleep(pause);
        }
        Ok(())
    }
}

/// What a run reports besides its records and checksum.
#[derive(Default)]
struct CheckpointFigures {
    completed: u64,
    times: Option<CheckpointTimes>,
    last_bytes: Option<u64>,
    recovery_ms: Option<f64>,
}

fn run_job<const KEYS: u64>(args: &Args) -> anyhow::Result<(u64, u64, CheckpointFigures)> {
    let scratch = tempfile::tempdir()?;
    let env = StreamEnv::new();
    env.set_parallelism(args.parallelism);
    let recovering = matches!(args.workload, Workload::Recovery);
    let interval = args.checkpoint_ms.or(recovering.then_some(1_000));
    if let Some(interval) = interval {
        env.enable_checkpointing(Duration::from_millis(interval));
    }
    if let Backend::Fjall = args.state_backend {
        env.set_state_backend(StateBackendConfig::Fjall {
            dir: scratch.path().join("state"),
        });
    }
    let tally = Tally::default();
    let stream = if let Workload::Sliding = args.workload {
        sliding_windows::<KEYS>(&env, args)?
    } else {
        keyed_or_stateless::<KEYS>(&env, args, &tally, scratch.path())
    };
    let sink_tally = tally.clone();
    let pause_per_batch =
        matches!(args.workload, Workload::SlowSink).then(|| Duration::from_millis(1));
    stream.sink_with("count", move |_| CountingSink {
        restarted: sink_tally.recovery.failed(),
        tally: sink_tally.clone(),
        pause_per_batch,
    });
    let report = env.execute(&format!("bench-{:?}", args.workload))?;
    let checkpoints = CheckpointFigures {
        completed: report.checkpoints_completed,
        times: report.checkpoint_times,
        last_bytes: report.latest_checkpoint.as_ref().map(|c| c.state_bytes),
        recovery_ms: lock(&tally.recovery.took).map(|took| took.as_secs_f64() * 1e3),
    };
    if recovering && report.restarts != 1 {
        anyhow::bail!("the recovery workload restarted {} times", report.restarts);
    }
    Ok((
        tally.records.load(Ordering::Relaxed),
        tally.checksum.load(Ordering::Relaxed),
        checkpoints,
    ))
}

/// The keyed, stateless and recovery workloads' job up to its sink.
fn keyed_or_stateless<const KEYS: u64>(
    env: &StreamEnv,
    args: &Args,
    tally: &Tally,
    scratch: &std::path::Path,
) -> DataStream<Event> {
    let recovering = matches!(args.workload, Workload::Recovery);
    let events = if recovering {
        env.set_checkpoint_dir(scratch.join("checkpoints"));
        env.set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 1,
            delay_ms: 0,
        });
        let (recovery, failed, fail_at) = (
            tally.recovery.clone(),
            AtomicBool::new(false),
            args.events / 2,
        );
        env.from_sequence(0..args.events).map(move |i| {
            recovery.fail_once(fail_at, i, &failed);
            event::<KEYS>(i)
        })
    } else {
        env.from_sequence(0..args.events).map(event::<KEYS>)
    };
    match args.workload {
        Workload::Stateless => events
            .map(|e| Event {
                value: e.value * 2,
                ..e
            })
            .filter(|e| !e.value.is_multiple_of(3)),
        _ => events.key_by(|e: &Event| e.key).reduce(|acc, e| Event {
            key: acc.key,
            value: acc.value.wrapping_add(e.value),
        }),
    }
}

/// The sliding workload's job up to its sink: one record per key and window, whose value is
/// the window's sum.
fn sliding_windows<const KEYS: u64>(
    env: &StreamEnv,
    args: &Args,
) -> anyhow::Result<DataStream<Event>> {
    let end = args.events;
    let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(500));
    let windows = WindowAssigner::sliding(Duration::from_secs(10), Duration::from_secs(2))?;
    Ok(env
        .from_source_with_watermarks(
            "timed events",
            true,
            move |subtask, parallelism| TimedEvents::<KEYS> {
                next: u64::from(subtask),
                step: u64::from(parallelism),
                end,
            },
            strategy,
        )
        .key_by(|e: &Event| e.key)
        .window(windows)
        .aggregate(CountAndSum)
        .map(|(count, sum)| Event {
            key: count,
            value: sum,
        }))
}

fn run_baseline<const KEYS: u64>(args: &Args) -> (u64, u64) {
    let (mut records, mut checksum) = (0u64, 0u64);
    match args.workload {
        Workload::BaselineKeyed => {
            let mut sums: FxHashMap<u64, u64> = FxHashMap::default();
            for i in 0..args.events {
                let e = event::<KEYS>(i);
                let sum = sums.entry(e.key).or_insert(0);
                *sum = sum.wrapping_add(e.value);
                records += 1;
                checksum = checksum.wrapping_add(*sum);
            }
        }
        _ => {
            for i in 0..args.events {
                let value = event::<KEYS>(i).value * 2;
                if !value.is_multiple_of(3) {
                    records += 1;
                    checksum = checksum.wrapping_add(value);
                }
            }
        }
    }
    (records, checksum)
}

fn with_no_checkpoints((records, checksum): (u64, u64)) -> (u64, u64, CheckpointFigures) {
    (records, checksum, CheckpointFigures::default())
}

/// The process's peak resident memory in MiB (Linux; 0 where unknown).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let baseline = matches!(
        args.workload,
        Workload::BaselineKeyed | Workload::BaselineStateless
    );
    let (records, checksum, checkpoints) = match (args.keys, baseline) {
        (100_000, true) => with_no_checkpoints(run_baseline::<100_000>(&args)),
        (1_000_000, true) => with_no_checkpoints(run_baseline::<1_000_000>(&args)),
        (100_000, false) => run_job::<100_000>(&args)?,
        (1_000_000, false) => run_job::<1_000_000>(&args)?,
        (other, _) => anyhow::bail!("--keys {other} is not offered: use 100000 or 1000000"),
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "workload": format!("{:?}", args.workload),
            "parallelism": args.parallelism,
            "events": args.events,
            "records": records,
            "checksum": checksum,
            "seconds": seconds,
            "events_per_sec": args.events as f64 / seconds,
            "peak_rss_mib": peak_rss_mib(),
            "keys": args.keys,
            "checkpoints": checkpoints.completed,
            "first_checkpoint_ms": checkpoints.times.map(|t| t.first_completed_after.as_millis() as u64),
            "median_checkpoint_ms": checkpoints.times.map(|t| t.median.as_millis() as u64),
            "max_checkpoint_ms": checkpoints.times.map(|t| t.max.as_millis() as u64),
            "last_checkpoint_bytes": checkpoints.last_bytes,
            "recovery_ms": checkpoints.recovery_ms,
            "state_backend": format!("{:?}", args.state_backend),
        })
    );
    Ok(())
}

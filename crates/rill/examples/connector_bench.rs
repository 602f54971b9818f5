//! The connectors' benchmark (`cargo xtask bench --workload connectors`), against the servers
//! `cargo xtask services` starts: records/s and MiB/s of each source and sink on loopback at
//! parallelism 1 and 2, with 100-byte records, beside what the server's own client reaches in
//! the same run, and the exactly-once sinks' end-to-end latency at a checkpoint interval of
//! 1 s (from the source handing a record to the job to the record being visible in the target).
//!
//! ```text
//! cargo run --release -p rill --example connector_bench -- --records 200000
//! ```
//!
//! Throughput runs write exactly-once with a checkpoint every second, and the time includes
//! the final commit: everything counted is visible when the clock stops. The native rows are
//! the clients used plainly: a JetStream publish loop keeping 256 acknowledgements in flight and
//! an ordered consumer, one binary `COPY` into PostgreSQL, one Redis pipeline of `SET`s.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::Histogram;
use postgres::{Client, NoTls};
use redis::Commands;
use rill::core::element::Timestamp;
use rill::core::source::{Source, SourceOutput, SourcePoll};
use rill::prelude::*;
use rill_nats::client::NatsClient;
use rill_nats::{NatsMessage, NatsSink, NatsSinkExt, NatsSource, NatsSourceExt};
use rill_postgres::{PostgresSink, PostgresSinkExt, row};
use rill_redis::{RedisSink, RedisSinkExt, RedisWrite};

#[derive(Parser)]
struct Args {
    /// Records per throughput run.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Records per second of the latency runs (each lasts 10 s).
    #[arg(long, default_value_t = 5_000)]
    latency_rate: u64,
}

const NATS: &str = "nats://127.0.0.1:14222";
const POSTGRES: &str = "host=127.0.0.1 port=15432 user=rill dbname=rill";
const REDIS: &str = "redis://127.0.0.1:16379";
/// The size of every record's payload.
const RECORD_BYTES: usize = 100;

/// Record `i`: its number, padded to 100 bytes.
fn payload(i: u64) -> String {
    format!("{i:0width$}", width = RECORD_BYTES)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Prints one row: what, parallelism, records, seconds.
fn row(what: &str, parallelism: &str, records: u64, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let rate = records as f64 / seconds;
    let mib = rate * RECORD_BYTES as f64 / (1024.0 * 1024.0);
    println!("{what:<38} {parallelism:>2} {records:>9} {seconds:>8.2} {rate:>12.0} {mib:>8.1}");
}

fn job_env(parallelism: u32, checkpoint: Duration) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.enable_checkpointing(checkpoint);
    env
}

/// A fresh JetStream stream `name` capturing `<name>.>`, with a duplicate window of 2 minutes.
fn fresh_stream(nats: &NatsClient, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let owned = name.to_owned();
    nats.call("deleting a stream", |jetstream| async move {
        let _ = jetstream.delete_stream(owned).await;
        Ok::<(), async_nats::Error>(())
    })?;
    let subjects = format!("{}.>", name.to_lowercase());
    nats.ensure_stream(name, &[&subjects], Duration::from_secs(120))?;
    Ok(())
}

fn nats_rows(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let nats = NatsClient::connect(NATS)?;
    let n = args.records;
    fresh_stream(&nats, "BENCHIN")?;
    let messages = (0..n)
        .map(|i| NatsMessage::new(format!("benchin.{}", i % 4), payload(i)))
        .collect();
    let started = Instant::now();
    nats.publish(messages)?;
    row("NATS publish (async-nats)", "", n, started.elapsed());

    let started = Instant::now();
    let consumed = nats.call("consuming", |jetstream| async move {
        use futures_util::StreamExt;
        let stream = jetstream.get_stream("BENCHIN").await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await?;
        let mut messages = consumer.messages().await?.take(n as usize);
        let mut count = 0_u64;
        while let Some(message) = messages.next().await {
            message?;
            count += 1;
        }
        Ok::<_, async_nats::Error>(count)
    })?;
    row("NATS consume (async-nats)", "", consumed, started.elapsed());

    for parallelism in [1, 2] {
        let env = job_env(parallelism, Duration::from_secs(1));
        let source =
            NatsSource::with_decoder(NATS, "BENCHIN", |record| record.payload.len())?.bounded();
        let read = env.from_nats(source).collect();
        let started = Instant::now();
        env.execute("bench nats source")?;
        let elapsed = started.elapsed();
        row(
            "NATS source (bounded, to memory)",
            &parallelism.to_string(),
            read.take().len() as u64,
            elapsed,
        );
    }
    for parallelism in [1, 2] {
        fresh_stream(&nats, "BENCHOUT")?;
        let env = job_env(parallelism, Duration::from_secs(1));
        env.allow_rewind();
        let sink = NatsSink::new(
            NATS,
            "BENCHOUT",
            Duration::from_secs(60),
            |text: &String| NatsMessage::new("benchout.x", text.clone().into_bytes()),
        )?;
        env.from_iter((0..n).map(payload))
            .rebalance()
            .sink_to_nats(sink);
        let started = Instant::now();
        env.execute("bench nats sink")?;
        row(
            "NATS sink (exactly-once, cp 1 s)",
            &parallelism.to_string(),
            n,
            started.elapsed(),
        );
    }
    Ok(())
}

fn postgres_rows(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut db = Client::connect(POSTGRES, NoTls)?;
    let n = args.records;
    db.batch_execute("DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows (payload text)")?;
    let started = Instant::now();
    {
        use std::io::Write;
        let mut copy = db.copy_in("COPY bench_rows (payload) FROM STDIN")?;
        for i in 0..n {
            writeln!(copy, "{}", payload(i))?;
        }
        copy.finish()?;
    }
    row("PostgreSQL COPY (postgres)", "", n, started.elapsed());
    for parallelism in [1, 2] {
        db.batch_execute("TRUNCATE bench_rows")?;
        let env = job_env(parallelism, Duration::from_secs(1));
        env.allow_rewind();
        let sink = PostgresSink::new(POSTGRES, "bench_rows", &["payload"], |text: &String| {
            row![text.clone()]
        })?;
        env.from_iter((0..n).map(payload))
            .rebalance()
            .sink_to_postgres(sink);
        let started = Instant::now();
        env.execute("bench postgres sink")?;
        row(
            "PostgreSQL sink (exactly-once, cp 1 s)",
            &parallelism.to_string(),
            n,
            started.elapsed(),
        );
    }
    Ok(())
}

fn redis_rows(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut redis = redis::Client::open(REDIS)?.get_connection()?;
    let n = args.records;
    let started = Instant::now();
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.set(format!("bench:{i}"), payload(i)).ignore();
    }
    pipe.exec(&mut redis)?;
    row("Redis SET pipeline (redis)", "", n, started.elapsed());
    for parallelism in [1, 2] {
        let env = job_env(parallelism, Duration::from_secs(1));
        env.allow_rewind();
        let sink = RedisSink::new(REDIS, |text: &String| {
            RedisWrite::set(format!("bench:{}", &text[80..]), text.clone())
        })?;
        env.from_iter((0..n).map(payload))
            .rebalance()
            .sink_to_redis(sink);
        let started = Instant::now();
        env.execute("bench redis sink")?;
        row(
            "Redis sink (exactly-once, cp 1 s)",
            &parallelism.to_string(),
            n,
            started.elapsed(),
        );
    }
    let _: () = redis.del("bench:0")?;
    Ok(())
}

/// Emits `rate` records a second for `seconds`, each its emission time in ms.
struct Paced {
    rate: u64,
    total: u64,
    emitted: u64,
    started: Option<Instant>,
}

impl Source for Paced {
    type Out = i64;

    fn poll_next(&mut self, out: &mut SourceOutput<i64>) -> Result<SourcePoll, BoxError> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = (started.elapsed().as_secs_f64() * self.rate as f64) as u64;
        while self.emitted < due.min(self.total) && out.remaining() > 0 {
            out.collect_with_timestamp(now_ms(), Timestamp(0));
            self.emitted += 1;
        }
        if self.emitted == self.total {
            return Ok(SourcePoll::Finished);
        }
        std::thread::sleep(Duration::from_millis(1));
        Ok(if out.is_empty() {
            SourcePoll::Idle
        } else {
            SourcePoll::Ready
        })
    }
}

/// Runs a paced job writing to `sink`, and meanwhile `poll_visible` (every 5 ms) for the
/// emission times newly visible in the target; prints p50/p99/max of the delays.
fn latency_row<F>(
    what: &str,
    args: &Args,
    build: impl FnOnce(DataStream<i64>),
    mut poll_visible: F,
) -> Result<(), Box<dyn std::error::Error>>
where
    F: FnMut() -> Result<Vec<i64>, Box<dyn std::error::Error>>,
{
    let total = args.latency_rate * 10;
    let env = job_env(1, Duration::from_secs(1));
    env.allow_rewind();
    let rate = args.latency_rate;
    build(env.from_source("paced", false, move |_, _| Paced {
        rate,
        total,
        emitted: 0,
        started: None,
    }));
    let job = env.execute_async("bench latency")?;
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < total && Instant::now() < deadline {
        let now = now_ms();
        for emitted in poll_visible()? {
            histogram.record((now - emitted).max(0) as u64)?;
            seen += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    job.wait()?;
    println!(
        "{what:<38} latency ms: p50 {} p99 {} max {} ({seen} of {total} records seen)",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
    Ok(())
}

fn latency_rows(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut db = Client::connect(POSTGRES, NoTls)?;
    db.batch_execute("DROP TABLE IF EXISTS bench_latency; CREATE TABLE bench_latency (id bigserial, emitted bigint)")?;
    let sink = PostgresSink::new(POSTGRES, "bench_latency", &["emitted"], |emitted: &i64| {
        row![*emitted]
    })?;
    let mut last = 0_i64;
    latency_row(
        "PostgreSQL sink (exactly-once, cp 1 s)",
        args,
        |stream| {
            stream.sink_to_postgres(sink);
        },
        || {
            let rows = db.query(
                "SELECT id, emitted FROM bench_latency WHERE id > $1 ORDER BY id",
                &[&last],
            )?;
            if let Some(row) = rows.last() {
                last = row.get(0);
            }
            Ok(rows.iter().map(|row| row.get(1)).collect())
        },
    )?;

    let nats = NatsClient::connect(NATS)?;
    fresh_stream(&nats, "BENCHLAT")?;
    let sink = NatsSink::new(
        NATS,
        "BENCHLAT",
        Duration::from_secs(60),
        |emitted: &i64| NatsMessage::new("benchlat.x", emitted.to_string().into_bytes()),
    )?;
    let mut next = 1_u64;
    let reader = Arc::new(nats);
    latency_row(
        "NATS sink (exactly-once, cp 1 s)",
        args,
        |stream| {
            stream.sink_to_nats(sink);
        },
        || {
            let from = next;
            let emitted = reader.call("reading", move |jetstream| async move {
                let stream = jetstream.get_stream("BENCHLAT").await?;
                let mut values = Vec::new();
                let mut sequence = from;
                while let Ok(message) = stream.get_raw_message(sequence).await {
                    values.push(
                        String::from_utf8_lossy(&message.payload)
                            .parse()
                            .unwrap_or(0),
                    );
                    sequence += 1;
                }
                Ok::<_, async_nats::Error>((values, sequence))
            })?;
            next = emitted.1;
            Ok(emitted.0)
        },
    )?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    println!(
        "{:<38} {:>2} {:>9} {:>8} {:>12} {:>8}",
        "what", "p", "records", "s", "records/s", "MiB/s"
    );
    nats_rows(&args)?;
    postgres_rows(&args)?;
    redis_rows(&args)?;
    latency_rows(&args)?;
    Ok(())
}

//! A live dashboard over the event log (streaming analytics): page views are counted per page
//! and minute (tumbling windows), and every minute the top pages of the last ten minutes are
//! ranked (sliding windows, then a top-N per window). Both results go to output topics,
//! exactly-once.
//!
//! ```text
//! cargo run --release -p rill --example dashboard -- --generate 200000 --bounded
//! rill log consume page-counts | head
//! rill log consume top-pages | tail
//! ```
//!
//! A view is a record of the `views` topic whose value is the page and whose log timestamp is
//! when the view happened. Views arrive out of order (up to `--max-delay-ms` late); each
//! partition's watermark trails its largest timestamp by that much, so no view is dropped as
//! late and the windows fire as event time passes. `--generate N` first appends N synthetic
//! views over a day of event time. `page-counts` gets `page<TAB>minute start<TAB>views`;
//! `top-pages` gets `window end<TAB>rank<TAB>page<TAB>views` for each ten-minute window
//! ending on a minute. With `--checkpoint-interval-ms`, output commits at each checkpoint and a
//! restarted job resumes from the newest one: kill it at any moment and the committed counts
//! are still each window's exact count, once. Ctrl-C or SIGTERM stops it with a savepoint
//! (without checkpoints, they cancel it, and it says its output was not committed).
//!
//! With `--postgres CONFIG` the per-minute counts also go, exactly-once, into a PostgreSQL
//! table (`--postgres-table`, `page_counts` by default) that a dashboard can query; create it
//! first: `CREATE TABLE page_counts (page text, minute_start bigint, views bigint)`. With
//! `--redis URL` they go, exactly-once, into a Redis hash too (`--redis-hash`, `page-counts` by
//! default): field `page<TAB>minute start`, value the views.

use std::time::Duration;

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rill::SignalledEnd;
use rill::log::LogError;
use rill::prelude::*;
use rill_postgres::{PostgresSink, PostgresSinkExt, row};
use rill_redis::{RedisSink, RedisSinkExt, RedisWrite};
use shared::{JobArgs, ensure_topic, init_tracing};

mod shared;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// How late a view may arrive, in event time, behind the latest one of its partition.
    #[arg(long, default_value_t = 5_000)]
    max_delay_ms: u64,
    /// How many pages each top-N ranks.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Also write the per-minute counts into PostgreSQL, connecting with these parameters
    /// (`host=127.0.0.1 port=15432 user=rill dbname=rill`).
    #[arg(long)]
    postgres: Option<String>,
    /// The table the per-minute counts go to, with `--postgres`: (page text, minute_start
    /// bigint, views bigint).
    #[arg(long, default_value = "page_counts")]
    postgres_table: String,
    /// Also write the per-minute counts into Redis at this URL (`redis://127.0.0.1:16379`).
    #[arg(long)]
    redis: Option<String>,
    /// The hash the per-minute counts go to, with `--redis`.
    #[arg(long, default_value = "page-counts")]
    redis_hash: String,
}

/// Where the per-minute counts go besides the log: a PostgreSQL table (connection parameters
/// and name) and a Redis hash (URL and key), each if given.
#[derive(Default)]
struct Outputs<'a> {
    postgres: Option<(&'a str, &'a str)>,
    redis: Option<(&'a str, &'a str)>,
}

/// The dashboard's topics.
const VIEWS: &str = "views";
const PAGE_COUNTS: &str = "page-counts";
const TOP_PAGES: &str = "top-pages";

const MINUTE: i64 = 60_000;

/// Counts the views in a window.
struct CountViews;

impl AggregateFunction for CountViews {
    type In = String;
    type Acc = u64;
    type Out = u64;

    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _page: String, views: &mut u64) {
        *views += 1;
    }
    fn result(&self, views: &u64) -> u64 {
        *views
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// A window's count with its page and window: (page, window start, window end, views).
#[derive(Clone)]
struct LabelCount;

impl ProcessWindowFunction for LabelCount {
    type Key = String;
    type In = u64;
    type Out = (String, i64, i64, u64);

    fn process(
        &mut self,
        ctx: &WindowContext<'_, String>,
        views: &[u64],
        out: &mut Vec<Self::Out>,
    ) -> Result<(), BoxError> {
        let window = ctx.window();
        out.extend(
            views
                .iter()
                .map(|&views| (ctx.key().clone(), window.start.0, window.end.0, views)),
        );
        Ok(())
    }
}

/// Ranks the pages of one sliding window (all its counts share a window end):
/// (window end, rank, page, views) for the `n` most viewed, ties by page name.
#[derive(Clone)]
struct TopN {
    n: usize,
}

impl ProcessWindowFunction for TopN {
    type Key = i64;
    type In = (String, i64, i64, u64);
    type Out = (i64, usize, String, u64);

    fn process(
        &mut self,
        ctx: &WindowContext<'_, i64>,
        counts: &[(String, i64, i64, u64)],
        out: &mut Vec<Self::Out>,
    ) -> Result<(), BoxError> {
        let mut ranked: Vec<&(String, i64, i64, u64)> = counts.iter().collect();
        ranked.sort_by(|a, b| b.3.cmp(&a.3).then_with(|| a.0.cmp(&b.0)));
        out.extend(
            ranked
                .into_iter()
                .take(self.n)
                .enumerate()
                .map(|(rank, (page, _, _, views))| (*ctx.key(), rank + 1, page.clone(), *views)),
        );
        Ok(())
    }
}

/// Describes the dashboard job: views from `VIEWS`, counts to `PAGE_COUNTS` (and to the
/// other `outputs`), rankings to `TOP_PAGES`.
fn dashboard(
    env: &StreamEnv,
    log: &EventLog,
    (max_delay, top): (Duration, usize),
    bounded: bool,
    outputs: Outputs<'_>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut source = LogSource::with_decoder(log, VIEWS, |record| {
        String::from_utf8_lossy(&record.value).into_owned()
    })?
    .with_watermarks(WatermarkStrategy::bounded_out_of_orderness(max_delay));
    if bounded {
        source = source.bounded();
    }
    let counts_sink = LogSink::with_encoder(
        log,
        PAGE_COUNTS,
        |(page, start, _, views): &(String, i64, i64, u64)| {
            ProducerRecord::new(format!("{page}\t{start}\t{views}").into_bytes())
                .with_key(page.clone().into_bytes())
        },
    )?;
    let top_sink = LogSink::with_encoder(
        log,
        TOP_PAGES,
        |(end, rank, page, views): &(i64, usize, String, u64)| {
            ProducerRecord::new(format!("{end}\t{rank}\t{page}\t{views}").into_bytes())
        },
    )?;

    let views = env.from_log(source).name("views");
    let per_minute = views
        .clone()
        .key_by(|page: &String| page.clone())
        .window(WindowAssigner::tumbling(Duration::from_secs(60))?)
        .aggregate_process(CountViews, LabelCount)
        .name("views per minute")
        .uid("views-per-minute");
    if let Some((config, table)) = outputs.postgres {
        let table_sink = PostgresSink::new(
            config,
            table,
            &["page", "minute_start", "views"],
            |(page, start, _, views): &(String, i64, i64, u64)| {
                row![page.clone(), *start, *views as i64]
            },
        )?;
        per_minute
            .clone()
            .sink_to_postgres(table_sink)
            .name("page counts table")
            .uid("page-counts-table");
    }
    if let Some((url, hash)) = outputs.redis {
        let hash = hash.to_owned();
        let hash_sink = RedisSink::new(
            url,
            move |(page, start, _, views): &(String, i64, i64, u64)| {
                RedisWrite::hash_set(hash.as_str(), format!("{page}\t{start}"), views.to_string())
            },
        )?;
        per_minute
            .clone()
            .sink_to_redis(hash_sink)
            .name("page counts hash")
            .uid("page-counts-hash");
    }
    per_minute.sink_to_log(counts_sink).name("page counts");
    views
        .key_by(|page: &String| page.clone())
        .window(WindowAssigner::sliding(
            Duration::from_secs(600),
            Duration::from_secs(60),
        )?)
        .aggregate_process(CountViews, LabelCount)
        .name("views per ten minutes")
        .uid("views-per-ten-minutes")
        // Every count of one sliding window carries that window's last timestamp, so a
        // one-minute tumbling window ending with it holds exactly that window's counts.
        .key_by(|(_, _, end, _): &(String, i64, i64, u64)| *end)
        .window(WindowAssigner::tumbling(Duration::from_secs(60))?)
        .process(TopN { n: top })
        .name("top pages")
        .uid("top-pages")
        .sink_to_log(top_sink)
        .name("top pages");
    Ok(())
}

/// A page view: when it happened, when it reaches the log, and where.
struct View {
    time: i64,
    arrival: i64,
    partition: u32,
    page: String,
}

/// `count` views over a day of event time over `partitions` partitions, in arrival order: each
/// arrives up to `max_delay_ms` after it happened, so within a partition no view is more than
/// that behind an earlier one. A few pages are far more popular than the rest.
fn generate_views(count: u64, partitions: u32, max_delay_ms: u64, seed: u64) -> Vec<View> {
    let mut rng = StdRng::seed_from_u64(seed);
    let day = 24 * 60 * MINUTE;
    let mut views: Vec<View> = (0..count)
        .map(|i| {
            let time = (i128::from(i) * i128::from(day) / i128::from(count)) as i64;
            let popularity: f64 = rng.random();
            View {
                time,
                arrival: time + rng.random_range(0..=max_delay_ms as i64),
                partition: rng.random_range(0..partitions.max(1)),
                page: format!("/page/{}", (popularity * popularity * 40.0) as u32),
            }
        })
        .collect();
    views.sort_by_key(|view| view.arrival);
    views
}

/// Appends views to the `VIEWS` topic, each with its time as its log timestamp.
fn append_views(log: &EventLog, views: &[View]) -> Result<(), LogError> {
    let records = views.iter().map(|view| {
        ProducerRecord::new(view.page.clone().into_bytes())
            .with_partition(view.partition)
            .with_timestamp(view.time)
    });
    log.append_batch(VIEWS, records.collect())?;
    log.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_tracing();
    let args = Args::parse();
    let log = EventLog::open_or_create(&args.job.data_dir)?;
    ensure_topic(&log, VIEWS, 4)?;
    ensure_topic(&log, PAGE_COUNTS, 4)?;
    ensure_topic(&log, TOP_PAGES, 1)?;
    if let Some(count) = args.job.generate {
        let partitions = log.topic(VIEWS)?.partitions;
        append_views(
            &log,
            &generate_views(count, partitions, args.max_delay_ms, 7),
        )?;
        eprintln!("appended {count} views to '{VIEWS}'");
    }

    let env = args.job.env();
    let outputs = Outputs {
        postgres: args
            .postgres
            .as_deref()
            .map(|config| (config, args.postgres_table.as_str())),
        redis: args
            .redis
            .as_deref()
            .map(|url| (url, args.redis_hash.as_str())),
    };
    dashboard(
        &env,
        &log,
        (Duration::from_millis(args.max_delay_ms), args.top),
        args.job.bounded,
        outputs,
    )?;
    // Ctrl-C or SIGTERM stops the job with a savepoint when it checkpoints.
    let end = env.execute_async("dashboard")?.wait_until_signal()?;
    eprintln!("{end}");
    if !matches!(end, SignalledEnd::Cancelled { .. }) {
        eprintln!("'{PAGE_COUNTS}' and '{TOP_PAGES}' hold its results");
        if args.postgres.is_some() {
            eprintln!("so does the PostgreSQL table '{}'", args.postgres_table);
        }
        if args.redis.is_some() {
            eprintln!("so does the Redis hash '{}'", args.redis_hash);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::shared::committed;

    /// The views per page and window start, of windows of `size` every `slide`.
    fn window_counts(views: &[View], size: i64, slide: i64) -> BTreeMap<(String, i64), u64> {
        let mut counts = BTreeMap::new();
        for view in views {
            let mut start = view.time - view.time.rem_euclid(slide);
            while start > view.time - size {
                *counts.entry((view.page.clone(), start)).or_insert(0) += 1;
                start -= slide;
            }
        }
        counts
    }

    #[test]
    fn the_dashboard_commits_exactly_the_reference_counts_and_rankings() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open_or_create(dir.path()).unwrap();
        for (topic, partitions) in [(VIEWS, 3), (PAGE_COUNTS, 2), (TOP_PAGES, 1)] {
            log.create_topic(topic, partitions).unwrap();
        }
        let views = generate_views(20_000, 3, 2_000, 11);
        append_views(&log, &views).unwrap();

        let env = StreamEnv::new();
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(20));
        let outputs = Outputs::default();
        dashboard(&env, &log, (Duration::from_millis(2_000), 3), true, outputs).unwrap();
        env.execute("dashboard").unwrap();

        let mut expected_counts: Vec<String> = window_counts(&views, MINUTE, MINUTE)
            .into_iter()
            .map(|((page, start), views)| format!("{page}\t{start}\t{views}"))
            .collect();
        expected_counts.sort();
        assert_eq!(committed(&log, PAGE_COUNTS), expected_counts);

        let mut by_end: BTreeMap<i64, Vec<(u64, String)>> = BTreeMap::new();
        for ((page, start), views) in window_counts(&views, 10 * MINUTE, MINUTE) {
            by_end
                .entry(start + 10 * MINUTE)
                .or_default()
                .push((views, page));
        }
        let mut expected_top = Vec::new();
        for (end, mut pages) in by_end {
            pages.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            for (rank, (views, page)) in pages.into_iter().take(3).enumerate() {
                expected_top.push(format!("{end}\t{}\t{page}\t{views}", rank + 1));
            }
        }
        expected_top.sort();
        assert_eq!(committed(&log, TOP_PAGES), expected_top);
    }
}

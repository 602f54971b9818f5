//! The examples writing to real servers (`cargo xtask services`, or `RILL_POSTGRES_URL`,
//! `RILL_REDIS_URL` and `RILL_NATS_URL`), killed with SIGKILL at random moments and started
//! again each time, until they finish:
//! - `dashboard`, its per-minute counts into PostgreSQL and Redis: the table must end up
//!   holding each page's count per minute exactly once — no row missing, doubled or wrong —
//!   and the Redis hash each count;
//! - `alerts`, reading payments from NATS JetStream: each alert published once to the stream
//!   `ALERTS` and recorded once in PostgreSQL.
//!
//! Neither may leave a transaction open. Each job's name is fixed by its example, so a test
//! first forgets what an earlier run of it left in the servers (commit marks, transactions),
//! which a job starting afresh would rightly refuse to write behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use postgres::{Client, NoTls};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Commands;
use rill::core::transactional::TransactionalTarget;
use rill::prelude::*;
use rill_nats::NatsMessage;
use rill_nats::client::NatsClient;
use rill_nats::target::NatsTarget;

use crate::example_process::{example_binary, kill_and_restart, spawn};

const VIEWS: usize = 600_000;
const PAGES: u32 = 30;
const KILLS: usize = 4;
/// Payments the alerts example gets.
const PAYMENTS: usize = 40_000;
const MINUTE: i64 = 60_000;

fn postgres_config() -> String {
    std::env::var("RILL_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=15432 user=rill dbname=rill".to_owned())
}

fn redis_url() -> String {
    std::env::var("RILL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".to_owned())
}

fn redis_connection() -> redis::Connection {
    let url = redis_url();
    redis::Client::open(url.as_str())
        .and_then(|client| client.get_connection())
        .unwrap_or_else(|error| {
            panic!(
                "no Redis at '{url}' ({error}): start the test servers with `cargo xtask \
                 services`, or point RILL_REDIS_URL at one"
            )
        })
}

fn client() -> Client {
    let config = postgres_config();
    Client::connect(&config, NoTls).unwrap_or_else(|error| {
        panic!(
            "no PostgreSQL at '{config}' ({error}): start the test servers with \
             `cargo xtask services`, or point RILL_POSTGRES_URL at one"
        )
    })
}

/// Fills topic `views` with views a few seconds out of order; returns each (page, minute
/// start)'s true count.
fn fill_views(data: &Path, rng: &mut StdRng) -> BTreeMap<(String, i64), i64> {
    let log = EventLog::open_or_create(data).unwrap();
    for topic in ["views", "page-counts", "top-pages"] {
        log.create_topic(topic, 2).unwrap();
    }
    let mut expected = BTreeMap::new();
    let records: Vec<ProducerRecord> = (0..VIEWS)
        .map(|i| {
            let time = i as i64 * 10 + rng.random_range(0..2_000);
            let page = format!("/page/{}", rng.random_range(0..PAGES));
            *expected
                .entry((page.clone(), time - time.rem_euclid(MINUTE)))
                .or_insert(0) += 1;
            ProducerRecord::new(page.into_bytes())
                .with_partition(rng.random_range(0..2))
                .with_timestamp(time)
        })
        .collect();
    log.append_batch("views", records).unwrap();
    log.flush().unwrap();
    expected
}

fn start(binary: &Path, data: &Path, table: &str, hash: &str) -> Child {
    spawn(
        Command::new(binary)
            .arg("--data-dir")
            .arg(data)
            .args(["--parallelism", "2", "--bounded"])
            .args(["--checkpoint-interval-ms", "30"])
            .args(["--postgres", &postgres_config()])
            .args(["--postgres-table", table])
            .args(["--redis", &redis_url(), "--redis-hash", hash]),
    )
}

#[test]
fn the_dashboard_killed_again_and_again_writes_every_count_to_postgres_and_redis_once() {
    let mut rng = StdRng::seed_from_u64(17);
    let dir = tempfile::tempdir().unwrap();
    let expected = fill_views(dir.path(), &mut rng);
    let table = format!("page_counts_kill_{}", std::process::id());
    let mut db = client();
    forget_postgres_job(&mut db, "dashboard");
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (page text, minute_start bigint, views bigint)"
    ))
    .unwrap();
    let hash = format!("page-counts-kill-{}", std::process::id());
    let mut redis = redis_connection();
    forget_redis_job(&mut redis, "dashboard");
    let _: () = redis.del(&hash).unwrap();

    let binary = example_binary("dashboard");
    let start = || start(&binary, dir.path(), &table, &hash);
    let kills = kill_and_restart("dashboard", start, KILLS, 150..600, &mut rng);
    // A fast machine may finish the job before the last kills; two mid-run kills at least.
    assert!(kills >= 2, "the dashboard finished after {kills} kills");

    let mut committed: Vec<(String, i64, i64)> = db
        .query(
            &format!("SELECT page, minute_start, views FROM {table}"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    committed.sort();
    let expected: Vec<(String, i64, i64)> = expected
        .into_iter()
        .map(|((page, minute), views)| (page, minute, views))
        .collect();
    assert_eq!(
        committed.len(),
        expected.len(),
        "{kills} kills: rows in the table vs windows"
    );
    assert_eq!(committed, expected, "after {kills} kills");
    let in_redis: BTreeMap<String, String> = redis.hgetall(&hash).unwrap();
    let expected_in_redis: BTreeMap<String, String> = expected
        .iter()
        .map(|(page, minute, views)| (format!("{page}\t{minute}"), views.to_string()))
        .collect();
    assert_eq!(in_redis, expected_in_redis, "Redis, after {kills} kills");
    let open: Vec<String> = redis.smembers("rill:v1:open").unwrap();
    assert!(
        !open.iter().any(|id| id.starts_with("dashboard/")),
        "transactions left open in Redis: {open:?}"
    );
    assert_eq!(prepared(&mut db, "dashboard"), Vec::<String>::new());
}

/// The prepared transactions of `job` in PostgreSQL.
fn prepared(db: &mut Client, job: &str) -> Vec<String> {
    db.query(
        "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)",
        &[&format!("{job}/")],
    )
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// Rolls back `job`'s prepared transactions in PostgreSQL and deletes its commit marks.
fn forget_postgres_job(db: &mut Client, job: &str) {
    for gid in prepared(db, job) {
        db.batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
            .unwrap();
    }
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS rill_commit_marks (writer text NOT NULL, \
         transaction_id text NOT NULL, checkpoint bigint NOT NULL, \
         PRIMARY KEY (writer, transaction_id))",
    )
    .unwrap();
    db.execute(
        "DELETE FROM rill_commit_marks WHERE starts_with(writer, $1)",
        &[&format!("{job}/")],
    )
    .unwrap();
}

/// Drops `job`'s open transactions in Redis and its commit marks and versions.
fn forget_redis_job(redis: &mut redis::Connection, job: &str) {
    let prefix = format!("{job}/");
    let stale: Vec<String> = redis.smembers("rill:v1:open").unwrap();
    for id in stale.iter().filter(|id| id.starts_with(&prefix)) {
        let _: () = redis.srem("rill:v1:open", id).unwrap();
        let _: () = redis.del(format!("rill:v1:staged:{id}")).unwrap();
    }
    let marks: Vec<String> = redis.hkeys("rill:v1:marks").unwrap();
    for writer in marks.iter().filter(|writer| writer.starts_with(&prefix)) {
        let _: () = redis.hdel("rill:v1:marks", writer).unwrap();
        let _: () = redis.del(format!("rill:v1:versions:{writer}")).unwrap();
    }
}

fn nats_url() -> String {
    std::env::var("RILL_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:14222".to_owned())
}

/// Publishes payments to a new stream `PAYMENTS` as the `alerts` example reads them — per
/// partition subject, in arrival order, each event up to 2 s after it happened — and returns
/// the alerts due: each payment not captured within 30 s, with its deadline.
fn publish_payments(nats: &NatsClient, rng: &mut StdRng) -> BTreeSet<(String, i64)> {
    let mut events: Vec<(i64, u32, String)> = Vec::new();
    let mut due = BTreeSet::new();
    for i in 0..PAYMENTS {
        let payment = format!("pay-{i:06}");
        let subject = rng.random_range(0..4_u32);
        let authorized = i as i64 * 700;
        let captured = match rng.random_range(0..100) {
            0..5 => None,
            5..10 => Some(authorized + rng.random_range(30_001..120_000)),
            _ => Some(authorized + rng.random_range(1_000..=30_000)),
        };
        if captured.is_none_or(|captured| captured > authorized + 30_000) {
            due.insert((payment.clone(), authorized + 30_000));
        }
        let arrives = authorized + rng.random_range(0..=2_000);
        events.push((
            arrives,
            subject,
            format!("{payment}\tauthorized\t{authorized}"),
        ));
        if let Some(captured) = captured {
            let arrives_after = (captured + rng.random_range(0..=2_000)).max(arrives + 1);
            events.push((
                arrives_after,
                subject,
                format!("{payment}\tcaptured\t{captured}"),
            ));
        }
    }
    events.sort_by_key(|(arrives, _, _)| *arrives);
    let messages = events
        .into_iter()
        .map(|(_, subject, payload)| NatsMessage::new(format!("payments.{subject}"), payload))
        .collect();
    nats.publish(messages).unwrap();
    due
}

/// Every message of stream `name`, as text.
fn stream_texts(nats: &NatsClient, name: &str) -> Vec<String> {
    let name = name.to_owned();
    nats.call("reading a stream", |jetstream| async move {
        let stream = jetstream.get_stream(name).await?;
        let mut consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await?;
        let pending = consumer.info().await?.num_pending as usize;
        let mut texts = Vec::new();
        let mut messages = futures_util::StreamExt::take(consumer.messages().await?, pending);
        while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
            texts.push(String::from_utf8_lossy(&message?.payload).into_owned());
        }
        Ok::<_, async_nats::Error>(texts)
    })
    .unwrap()
}

#[test]
fn the_alerts_killed_again_and_again_publish_and_record_every_alert_once() {
    let mut rng = StdRng::seed_from_u64(23);
    let nats = NatsClient::connect(&nats_url()).unwrap_or_else(|error| {
        panic!("no NATS ({error}): start the test servers with `cargo xtask services`")
    });
    nats.call("deleting the example's streams", |jetstream| async move {
        for stream in ["PAYMENTS", "ALERTS"] {
            let _ = jetstream.delete_stream(stream).await;
        }
        Ok::<(), async_nats::Error>(())
    })
    .unwrap();
    let mut target = NatsTarget::new(&nats_url(), "ALERTS");
    for id in target.open_transactions("alerts/").unwrap() {
        target.abort(&id).unwrap();
    }
    target.rewind_commit_mark("alerts/alerts/", None).unwrap();
    nats.ensure_stream("PAYMENTS", &["payments.>"], Duration::from_secs(120))
        .unwrap();
    nats.ensure_stream("ALERTS", &["alerts.>"], Duration::from_secs(120))
        .unwrap();
    let due = publish_payments(&nats, &mut rng);
    let mut db = client();
    forget_postgres_job(&mut db, "alerts");
    db.batch_execute(
        "DROP TABLE IF EXISTS payment_alerts;
         CREATE TABLE payment_alerts (payment text, deadline bigint)",
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let binary = example_binary("alerts");
    let start = || {
        spawn(
            Command::new(&binary)
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--parallelism", "2", "--bounded"])
                .args(["--checkpoint-interval-ms", "30"])
                .args(["--nats", &nats_url(), "--postgres", &postgres_config()]),
        )
    };
    let kills = kill_and_restart("alerts", start, KILLS, 150..600, &mut rng);
    assert!(kills >= 2, "the alerts finished after {kills} kills");

    let mut published = stream_texts(&nats, "ALERTS");
    published.sort();
    let expected: Vec<String> = due
        .iter()
        .map(|(payment, deadline)| format!("{payment}\t{deadline}"))
        .collect();
    assert_eq!(published, expected, "ALERTS after {kills} kills");
    let mut recorded: Vec<(String, i64)> = db
        .query("SELECT payment, deadline FROM payment_alerts", &[])
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    recorded.sort();
    assert_eq!(
        recorded,
        due.into_iter().collect::<Vec<_>>(),
        "payment_alerts after {kills} kills"
    );
    assert_eq!(prepared(&mut db, "alerts"), Vec::<String>::new());
    assert_eq!(
        target.open_transactions("alerts/").unwrap(),
        Vec::<String>::new()
    );
}

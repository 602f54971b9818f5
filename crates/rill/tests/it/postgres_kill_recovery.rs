//! The `dashboard` example writing its per-minute counts into PostgreSQL (a real server:
//! `cargo xtask services`, or `RILL_POSTGRES_URL`), killed with SIGKILL at random moments and
//! started again each time: the table must end up holding each page's count per minute
//! exactly once — no row missing, doubled or wrong — and no prepared transaction may be left.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};

use postgres::{Client, NoTls};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rill::prelude::*;

use crate::example_process::{example_binary, kill_and_restart, spawn};

const VIEWS: usize = 600_000;
const PAGES: u32 = 30;
const KILLS: usize = 4;
const MINUTE: i64 = 60_000;

fn postgres_config() -> String {
    std::env::var("RILL_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=15432 user=rill dbname=rill".to_owned())
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

fn start(binary: &Path, data: &Path, table: &str) -> Child {
    spawn(
        Command::new(binary)
            .arg("--data-dir")
            .arg(data)
            .args(["--parallelism", "2", "--bounded"])
            .args(["--checkpoint-interval-ms", "30"])
            .args(["--postgres", &postgres_config()])
            .args(["--postgres-table", table]),
    )
}

#[test]
fn the_dashboard_killed_again_and_again_writes_every_count_to_postgres_once() {
    let mut rng = StdRng::seed_from_u64(17);
    let dir = tempfile::tempdir().unwrap();
    let expected = fill_views(dir.path(), &mut rng);
    let table = format!("page_counts_kill_{}", std::process::id());
    let mut db = client();
    // The job is called "dashboard" wherever it runs: a previous run of this test left its
    // commit marks and perhaps prepared transactions, which a job starting afresh would
    // rightly refuse to write behind.
    let leftovers: Vec<String> = db
        .query(
            "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, 'dashboard/')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for gid in leftovers {
        db.batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
            .unwrap();
    }
    db.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS rill_commit_marks (writer text NOT NULL, \
         transaction_id text NOT NULL, checkpoint bigint NOT NULL, \
         PRIMARY KEY (writer, transaction_id));
         DELETE FROM rill_commit_marks WHERE starts_with(writer, 'dashboard/');
         DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (page text, minute_start bigint, views bigint)"
    ))
    .unwrap();

    let binary = example_binary("dashboard");
    let start = || start(&binary, dir.path(), &table);
    let kills = kill_and_restart("the dashboard", start, KILLS, 150..600, &mut rng);
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
    let prepared = db
        .query(
            "SELECT count(*) FROM pg_prepared_xacts WHERE starts_with(gid, 'dashboard/')",
            &[],
        )
        .unwrap();
    assert_eq!(
        prepared[0].get::<_, i64>(0),
        0,
        "prepared transactions left"
    );
}

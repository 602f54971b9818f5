//! The `json_pipeline` example as a child process, killed with SIGKILL at random moments and
//! started again each time: the committed files of its output directory, and the PostgreSQL
//! table it writes too (a real server: `cargo xtask services`, or `RILL_POSTGRES_URL`), must
//! hold every invoice exactly once — none missing, none twice — and no in-progress or pending
//! part file, and no prepared transaction, may be left once it has finished.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::example_process::{example_binary, kill_and_restart, spawn};
use crate::sink::{hidden_parts, visible_lines};

const ORDERS: u64 = 200_000;
const ORDERS_PER_FILE: u64 = 5_000;
const KILLS: usize = 5;

/// Writes the orders, an amount of none for every seventh; returns the ids of those with an
/// amount, which the pipeline invoices.
fn write_orders(dir: &Path, rng: &mut StdRng) -> Vec<u64> {
    std::fs::create_dir_all(dir).unwrap();
    let mut invoiced = Vec::new();
    for file in 0..ORDERS / ORDERS_PER_FILE {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(dir.join(format!("orders-{file:03}.jsonl"))).unwrap(),
        );
        for id in file * ORDERS_PER_FILE..(file + 1) * ORDERS_PER_FILE {
            let amount: i64 = if id % 7 == 0 {
                0
            } else {
                rng.random_range(1..100_000)
            };
            if amount > 0 {
                invoiced.push(id);
            }
            let country = ["DE", "FR", "NL", "US"][rng.random_range(0..4)];
            writeln!(
                out,
                r#"{{"id":{id},"customer":"c-{}","country":"{country}","amount_cents":{amount}}}"#,
                id % 101
            )
            .unwrap();
        }
    }
    invoiced
}

fn postgres_config() -> String {
    std::env::var("RILL_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=15432 user=rill dbname=rill".to_owned())
}

/// A session with the server; the job is named `json_pipeline` wherever it runs, so what an
/// earlier run of this test left there (its table's rows, commit marks, prepared
/// transactions) is dropped first.
fn fresh_database() -> postgres::Client {
    let config = postgres_config();
    let mut db = postgres::Client::connect(&config, postgres::NoTls).unwrap_or_else(|error| {
        panic!("no PostgreSQL at '{config}' ({error}): start it with `cargo xtask services`")
    });
    let prepared: Vec<String> = db
        .query(
            "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, 'json_pipeline/')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for gid in prepared {
        db.batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
            .unwrap();
    }
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS rill_commit_marks (writer text NOT NULL, \
         transaction_id text NOT NULL, checkpoint bigint NOT NULL, \
         PRIMARY KEY (writer, transaction_id));
         DELETE FROM rill_commit_marks WHERE starts_with(writer, 'json_pipeline/');
         DROP TABLE IF EXISTS invoices;
         CREATE TABLE invoices (order_id bigint, customer text, net_cents bigint, \
         vat_cents bigint, gross_cents bigint)",
    )
    .unwrap();
    db
}

fn start(binary: &Path, dir: &Path) -> Child {
    spawn(
        Command::new(binary)
            .arg("--input")
            .arg(dir.join("orders"))
            .arg("--output")
            .arg(dir.join("invoices"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--parallelism", "2", "--bounded"])
            .args(["--checkpoint-interval-ms", "30"])
            .args(["--postgres", &postgres_config()]),
    )
}

#[test]
fn the_json_pipeline_killed_again_and_again_writes_every_invoice_once() {
    let mut rng = StdRng::seed_from_u64(23);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_orders(&dir.path().join("orders"), &mut rng);
    let mut db = fresh_database();
    let binary = example_binary("json_pipeline");
    let start = || start(&binary, dir.path());
    let kills = kill_and_restart("the pipeline", start, KILLS, 100..500, &mut rng);
    // A fast machine may finish the job before the last kills; two mid-run kills at least.
    assert!(kills >= 2, "the pipeline finished after {kills} kills");

    let output = dir.path().join("invoices");
    let mut invoiced: Vec<u64> = visible_lines(&output)
        .iter()
        .map(|line| {
            let invoice: serde_json::Value = serde_json::from_str(line).unwrap();
            let (net, vat) = (&invoice["net_cents"], &invoice["vat_cents"]);
            assert_eq!(
                invoice["gross_cents"].as_i64(),
                Some(net.as_i64().unwrap() + vat.as_i64().unwrap()),
                "{line}"
            );
            invoice["order"].as_u64().unwrap()
        })
        .collect();
    invoiced.sort_unstable();
    assert_eq!(
        invoiced.len(),
        expected.len(),
        "{kills} kills: invoices committed vs orders with an amount"
    );
    assert_eq!(invoiced, expected, "after {kills} kills");
    assert!(
        hidden_parts(&output).is_empty(),
        "part files left: {:?}",
        hidden_parts(&output)
    );
    let mut in_table: Vec<u64> = db
        .query("SELECT order_id FROM invoices", &[])
        .unwrap()
        .iter()
        .map(|row| row.get::<_, i64>(0) as u64)
        .collect();
    in_table.sort_unstable();
    assert_eq!(in_table, expected, "the table, after {kills} kills");
    let prepared: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_prepared_xacts WHERE starts_with(gid, 'json_pipeline/')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(prepared, 0, "prepared transactions left");
}

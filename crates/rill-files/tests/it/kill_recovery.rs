//! The `json_pipeline` example as a child process, killed with SIGKILL at random moments and
//! started again each time: the committed files of its output directory must hold every
//! invoice exactly once — none missing, none twice — and no in-progress or pending part file
//! may be left once it has finished.

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
            .args(["--checkpoint-interval-ms", "30"]),
    )
}

#[test]
fn the_json_pipeline_killed_again_and_again_writes_every_invoice_once() {
    let mut rng = StdRng::seed_from_u64(23);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_orders(&dir.path().join("orders"), &mut rng);
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
}

//! A pipeline from a directory of JSON lines to a directory of JSON lines — and, with
//! `--postgres CONFIG`, to a PostgreSQL table too — exactly-once: it reads orders, drops those
//! with no amount, and writes an invoice for each of the others (the VAT of its country
//! added). The table must exist: `CREATE TABLE invoices (order_id bigint, customer text,
//! net_cents bigint, vat_cents bigint, gross_cents bigint)`.
//!
//! ```text
//! cargo run --release -p rill-files --example json_pipeline -- \
//!   --input orders --output invoices --generate 100000 --bounded --checkpoint-interval-ms 1000
//! cat invoices/part-*.jsonl | head
//! ```
//!
//! With `--checkpoint-interval-ms` it checkpoints into `<data-dir>/checkpoints` and, started
//! again, resumes from its newest checkpoint: kill it at any moment and start it again, and the
//! output directory holds every invoice once. Each checkpoint's invoices become visible when it
//! completes, as `part-json_pipeline-invoices-<subtask>-<sequence>-<part>-cp<checkpoint>.jsonl`;
//! until then they are in hidden files (`.part-….inprogress`, then `.part-….pending`).
//! Without `--bounded` it keeps watching the input directory for new files (put each in place
//! whole: written under a name starting with `.`, then renamed) until Ctrl-C.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use rill::prelude::*;
use rill_files::{FileSink, FileSource, FilesExt, FilesSinkExt};
use rill_postgres::{PostgresSink, PostgresSinkExt, row};
use serde::{Deserialize, Serialize};

#[allow(dead_code)]
#[path = "../../rill/examples/shared/mod.rs"]
mod shared;

use shared::{JobArgs, init_tracing};

#[derive(Parser)]
struct Args {
    /// The directory of orders, as JSON lines.
    #[arg(long, default_value = "./orders")]
    input: std::path::PathBuf,
    /// The directory the invoices go to, as JSON lines (created if missing).
    #[arg(long, default_value = "./invoices")]
    output: std::path::PathBuf,
    /// Also write the invoices into the PostgreSQL table `invoices`, connecting with these
    /// parameters (`host=127.0.0.1 port=15432 user=rill dbname=rill`).
    #[arg(long)]
    postgres: Option<String>,
    #[command(flatten)]
    job: JobArgs,
}

/// An order, as the input holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    country: String,
    amount_cents: i64,
}

/// An invoice, as the output holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Invoice {
    order: u64,
    customer: String,
    net_cents: i64,
    vat_cents: i64,
    gross_cents: i64,
}

/// The VAT rate of a country, in percent.
fn vat_percent(country: &str) -> i64 {
    match country {
        "DE" => 19,
        "FR" => 20,
        "NL" => 21,
        _ => 0,
    }
}

fn invoice(order: Order) -> Invoice {
    let vat_cents = order.amount_cents * vat_percent(&order.country) / 100;
    Invoice {
        order: order.id,
        customer: order.customer,
        net_cents: order.amount_cents,
        vat_cents,
        gross_cents: order.amount_cents + vat_cents,
    }
}

/// Writes `count` synthetic orders into `dir`, in files of 10,000, each written under a hidden
/// name and renamed into place whole. Every tenth order has no amount.
fn generate(dir: &Path, count: u64) -> std::io::Result<()> {
    const PER_FILE: u64 = 10_000;
    const COUNTRIES: [&str; 4] = ["DE", "FR", "NL", "US"];
    std::fs::create_dir_all(dir)?;
    for file in 0..count.div_ceil(PER_FILE) {
        let name = format!("orders-{file:05}.jsonl");
        let hidden = dir.join(format!(".{name}"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&hidden)?);
        for id in file * PER_FILE..((file + 1) * PER_FILE).min(count) {
            let order = Order {
                id,
                customer: format!("customer-{}", id % 997),
                country: COUNTRIES[(id % 4) as usize].to_owned(),
                amount_cents: if id % 10 == 0 {
                    0
                } else {
                    (id % 500) as i64 * 100
                },
            };
            serde_json::to_writer(&mut out, &order)?;
            out.write_all(b"\n")?;
        }
        out.into_inner()?.sync_all()?;
        std::fs::rename(&hidden, dir.join(name))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    if let Some(count) = args.job.generate {
        generate(&args.input, count)?;
    }
    let env = args.job.env();
    let mut orders = FileSource::<Order>::json_lines(&args.input)?;
    if !args.job.bounded {
        orders = orders.watch(Duration::from_secs(1));
    }
    let invoices = env
        .from_files(orders)
        .uid("orders")
        .filter(|order| order.amount_cents > 0)
        .map(invoice);
    if let Some(config) = &args.postgres {
        let table = PostgresSink::new(
            config,
            "invoices",
            &[
                "order_id",
                "customer",
                "net_cents",
                "vat_cents",
                "gross_cents",
            ],
            |invoice: &Invoice| {
                row![
                    invoice.order as i64,
                    invoice.customer.clone(),
                    invoice.net_cents,
                    invoice.vat_cents,
                    invoice.gross_cents
                ]
            },
        )?;
        invoices
            .clone()
            .sink_to_postgres(table)
            .uid("invoices-table");
    }
    invoices
        .sink_to_files(FileSink::<Invoice>::json_lines(&args.output)?)
        .uid("invoices");
    let report = env.execute("json_pipeline")?;
    eprintln!(
        "json_pipeline: {} checkpoints completed, {} restarts",
        report.checkpoints_completed, report.restarts
    );
    Ok(())
}

//! `cargo xtask bench`: builds the `bench` example in release mode and runs each workload in a
//! process of its own (so peak memory is that run's), at parallelism 1 and 2.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use crate::build_release_example;

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Events per run of the keyed and stateless workloads.
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// Runs only this workload (keyed, stateless, slow-sink, baseline-keyed, baseline-stateless).
    #[arg(long)]
    workload: Option<String>,
    /// Runs of each configuration; the median is reported (peak memory: the largest).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Expected (records, checksum) at 20 000 000 events, from the workload's definition.
///
/// The keyed checksum sums every running sum emitted, so it depends on the order in which a
/// key's events arrive: it is defined for one source (parallelism 1) only. The stateless
/// checksum does not depend on order.
fn expected(workload: &str, parallelism: u32, events: u64) -> Option<(u64, u64)> {
    match (workload, parallelism, events) {
        ("keyed" | "baseline-keyed", 1, 20_000_000) => Some((20_000_000, 66_183_317_395_270)),
        ("stateless" | "baseline-stateless", _, 20_000_000) => Some((13_336_631, 873_953_967_600)),
        _ => None,
    }
}

/// Runs the bench binary once and parses the JSON line it prints.
fn run_once(binary: &Path, workload: &str, parallelism: u32, events: u64) -> anyhow::Result<Value> {
    let output = Command::new(binary)
        .args([
            "--workload",
            workload,
            "--parallelism",
            &parallelism.to_string(),
            "--events",
            &events.to_string(),
        ])
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "{workload} p={parallelism} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("bench printed {line:?}"))
}

pub(crate) fn run(root: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    let binary = build_release_example(root, "bench")?;
    // Slow-sink runs at two sizes: peak memory must not grow with the input.
    let slow_events = (args.events / 10).max(100_000);
    let runs: Vec<(&str, u32, u64)> = vec![
        ("baseline-keyed", 1, args.events),
        ("keyed", 1, args.events),
        ("keyed", 2, args.events),
        ("baseline-stateless", 1, args.events),
        ("stateless", 1, args.events),
        ("stateless", 2, args.events),
        ("slow-sink", 1, slow_events),
        ("slow-sink", 1, slow_events * 4),
    ];
    println!(
        "median of {} run(s) per row; peak memory is the largest of them",
        args.runs.max(1)
    );
    println!(
        "{:<20} {:>3} {:>12} {:>14} {:>9} {:>10} {:>12} {:>16}  check",
        "workload", "p", "events", "events/s", "wall s", "peak MiB", "records", "checksum"
    );
    let mut failed = Vec::new();
    for (workload, parallelism, events) in runs {
        if args
            .workload
            .as_deref()
            .is_some_and(|only| only != workload)
        {
            continue;
        }
        // Each configuration runs several times; the median run (by throughput) is reported,
        // since one run on a shared machine can be disturbed by its neighbours.
        let mut results = (0..args.runs.max(1))
            .map(|_| run_once(&binary, workload, parallelism, events))
            .collect::<anyhow::Result<Vec<Value>>>()?;
        results.sort_by(|a, b| {
            let rate = |v: &Value| v["events_per_sec"].as_f64().unwrap_or(0.0);
            rate(a).total_cmp(&rate(b))
        });
        let result = &results[results.len() / 2];
        let peak_mib_max = results
            .iter()
            .filter_map(|r| r["peak_rss_mib"].as_f64())
            .fold(0.0, f64::max);
        let number = |field: &str| result[field].as_f64().unwrap_or(f64::NAN);
        let integer = |field: &str| result[field].as_u64().unwrap_or(0);
        let (records, checksum) = (integer("records"), integer("checksum"));
        let check = match expected(workload, parallelism, events) {
            Some(want) if want == (records, checksum) => "ok",
            Some(_) => {
                failed.push(format!("{workload} p={parallelism}"));
                "WRONG"
            }
            None => "-",
        };
        println!(
            "{:<20} {:>3} {:>12} {:>14.0} {:>9.3} {:>10.1} {:>12} {:>16}  {check}",
            workload,
            parallelism,
            events,
            number("events_per_sec"),
            number("seconds"),
            peak_mib_max,
            records,
            checksum
        );
    }
    if !failed.is_empty() {
        bail!("wrong results from: {}", failed.join(", "));
    }
    Ok(())
}

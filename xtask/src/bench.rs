//! `cargo xtask bench`: builds the `bench` example in release mode and runs each workload in a
//! process of its own (so peak memory is that run's): the standard keyed and stateless
//! workloads at parallelism 1 and 2 beside their hand-written single-threaded loops, the keyed
//! workload with a slow sink at two sizes (memory must not grow), the keyed workload with and
//! without checkpoints every second, at 100 000 and 1 000 000 keys, in memory and (1 000 000
//! keys) on fjall, the keyed workload at parallelism 2 checkpointing every 100 ms (how soon the
//! first checkpoint completes, and how long checkpoints take), and the recovery workload (fail once, restart from the latest checkpoint) at
//! 1 000 000 keys on both backends, and the event-time sliding-window workload (10 s windows
//! every 2 s, 100 000 keys) at parallelism 1 and 2, without and with checkpoints every second.
//! Last, the simulator: seeds per second on one core of the
//! `wordcount-10k-lines` scenario (10 000 lines, 3 crashes). `--workload connectors` runs the
//! `connector_bench` example instead, against the servers `cargo xtask services` starts (it
//! starts them): each connector beside the server's own client, and the exactly-once sinks'
//! latency; it is not part of the default run, which needs no server.
//!
//! The machine is shared and noisy, so rows are compared as **ratios** to the hand-written
//! loop measured in the same invocation (`baseline-keyed` for every keyed-state workload,
//! `baseline-stateless` for the stateless one): `--save-baseline` writes each row's ratio and
//! peak memory to `xtask/bench-baseline.json` (committed; with `--workload`, only that
//! workload's rows are replaced), and `--compare` runs the same rows
//! and fails if a ratio fell, or peak memory rose, by more than a quarter.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use crate::{build_release_example, run_command, target_dir};

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Events per run of the keyed and stateless workloads (checkpoint runs use 5 times more).
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// Runs only this workload (keyed, stateless, slow-sink, baseline-keyed, baseline-stateless,
    /// recovery, sliding, sim, connectors: the last against the servers `cargo xtask services`
    /// starts).
    #[arg(long)]
    workload: Option<String>,
    /// Runs of each configuration; the median is reported (peak memory: the largest).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Writes each row's ratio to the hand-written loop to `xtask/bench-baseline.json`.
    #[arg(long, conflicts_with = "compare")]
    save_baseline: bool,
    /// Compares each row's ratio to the hand-written loop with `xtask/bench-baseline.json`;
    /// fails on a regression of more than a quarter.
    #[arg(long)]
    compare: bool,
}

/// Where the committed baseline lives, relative to the workspace root.
const BASELINE_FILE: &str = "xtask/bench-baseline.json";
/// A ratio that falls, or a peak memory that grows, by more than this share is a regression:
/// more than the noise between two runs on this machine.
const REGRESSION_SHARE: f64 = 0.25;

/// One configuration of the bench binary.
struct Run {
    workload: &'static str,
    parallelism: u32,
    events: u64,
    keys: u64,
    checkpoint_ms: Option<u64>,
    /// `memory` or `fjall`.
    state_backend: &'static str,
}

const STANDARD_KEYS: u64 = 100_000;

/// Expected (records, checksum) at 20 000 000 events over the standard keys, from the
/// workloads' definition.
///
/// The keyed checksum sums every running sum emitted, so it depends on the order in which a
/// key's events arrive: it is defined for one source (parallelism 1) only. The stateless
/// checksum does not depend on order.
fn expected(run: &Run) -> Option<(u64, u64)> {
    if run.keys != STANDARD_KEYS || run.events != 20_000_000 {
        return None;
    }
    match (run.workload, run.parallelism) {
        ("keyed" | "baseline-keyed", 1) => Some((20_000_000, 66_183_317_395_270)),
        ("stateless" | "baseline-stateless", _) => Some((13_336_631, 873_953_967_600)),
        _ => None,
    }
}

/// For a keyed run at parallelism 1 outside the standard size: the (records, checksum) the
/// hand-written loop computes over the same events, which every backend must match.
fn baseline_of(binary: &Path, run: &Run) -> anyhow::Result<Option<(u64, u64)>> {
    if run.workload != "keyed" || run.parallelism != 1 {
        return Ok(None);
    }
    let baseline = run_once(
        binary,
        &Run {
            workload: "baseline-keyed",
            state_backend: "memory",
            checkpoint_ms: None,
            ..*run
        },
    )?;
    let field = |name: &str| baseline[name].as_u64().unwrap_or(0);
    Ok(Some((field("records"), field("checksum"))))
}

/// Runs the bench binary once and parses the JSON line it prints.
fn run_once(binary: &Path, run: &Run) -> anyhow::Result<Value> {
    let mut command = Command::new(binary);
    command.args([
        "--workload",
        run.workload,
        "--parallelism",
        &run.parallelism.to_string(),
        "--events",
        &run.events.to_string(),
        "--keys",
        &run.keys.to_string(),
        "--state-backend",
        run.state_backend,
    ]);
    if let Some(interval) = run.checkpoint_ms {
        command.args(["--checkpoint-ms", &interval.to_string()]);
    }
    let output = command
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "{} p={} failed: {}",
            run.workload,
            run.parallelism,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("bench printed {line:?}"))
}

impl Run {
    /// The row's name in the baseline file (compare runs with the same `--events`).
    fn row_name(&self) -> String {
        format!(
            "{} {} p={} events={} keys={} cp={}",
            self.workload,
            self.state_backend,
            self.parallelism,
            self.events,
            self.keys,
            self.checkpoint_ms
                .map_or_else(|| "-".to_owned(), |ms| ms.to_string())
        )
    }

    /// The hand-written loop this row is measured against.
    fn reference(&self) -> &'static str {
        if self.workload == "stateless" || self.workload == "baseline-stateless" {
            "baseline-stateless"
        } else {
            "baseline-keyed"
        }
    }
}

fn runs(events: u64) -> Vec<Run> {
    let run = |workload, parallelism, events, keys, checkpoint_ms| Run {
        workload,
        parallelism,
        events,
        keys,
        checkpoint_ms,
        state_backend: "memory",
    };
    let on_fjall = |run: Run| Run {
        state_backend: "fjall",
        ..run
    };
    // Slow-sink runs at two sizes: peak memory must not grow with the input.
    let slow = (events / 10).max(100_000);
    // Checkpoint runs last several seconds, so that several checkpoints are taken.
    let long = events * 5;
    // fjall reads and writes every event's key on disk structures: fewer events.
    let on_disk = (events / 5).max(100_000);
    vec![
        run("baseline-keyed", 1, events, STANDARD_KEYS, None),
        run("keyed", 1, events, STANDARD_KEYS, None),
        run("keyed", 2, events, STANDARD_KEYS, None),
        run("baseline-stateless", 1, events, STANDARD_KEYS, None),
        run("stateless", 1, events, STANDARD_KEYS, None),
        run("stateless", 2, events, STANDARD_KEYS, None),
        run("slow-sink", 1, slow, STANDARD_KEYS, None),
        run("slow-sink", 1, slow * 4, STANDARD_KEYS, None),
        run("keyed", 1, long, STANDARD_KEYS, None),
        run("keyed", 1, long, STANDARD_KEYS, Some(1_000)),
        // A small job checkpointing often: how soon and how fast checkpoints complete.
        run("keyed", 2, events, STANDARD_KEYS, Some(100)),
        run("keyed", 1, long, 1_000_000, None),
        run("keyed", 1, long, 1_000_000, Some(1_000)),
        on_fjall(run("keyed", 1, on_disk, 1_000_000, None)),
        on_fjall(run("keyed", 1, on_disk, 1_000_000, Some(1_000))),
        run("recovery", 1, long, 1_000_000, Some(1_000)),
        on_fjall(run("recovery", 1, on_disk, 1_000_000, Some(1_000))),
        run("sliding", 1, events, STANDARD_KEYS, None),
        run("sliding", 2, events, STANDARD_KEYS, None),
        run("sliding", 1, events, STANDARD_KEYS, Some(1_000)),
        run("sliding", 2, events, STANDARD_KEYS, Some(1_000)),
    ]
}

/// The simulator scenario measured, and how many of its seeds per run.
const SIM_SCENARIO: &str = "wordcount-10k-lines";
const SIM_SEEDS: u64 = 100;

/// Seeds per second of one simulator thread on [`SIM_SCENARIO`], median of `runs`.
fn sim_row(root: &Path, runs: usize) -> anyhow::Result<()> {
    run_command(
        root,
        "cargo",
        &["build", "--profile", "sim", "-p", "rill-sim"],
    )?;
    let binary = target_dir(root).join("sim/rill-sim");
    let mut rates = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let output = Command::new(&binary)
            .args([
                "--scenario",
                SIM_SCENARIO,
                "--seeds",
                &SIM_SEEDS.to_string(),
                "--threads",
                "1",
            ])
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "the simulator failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        rates.push(SIM_SEEDS as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "simulator {SIM_SCENARIO} (10 000 lines, 3 crashes): {:.1} seeds/s on one core (median of {}, {SIM_SEEDS} seeds each)",
        rates[rates.len() / 2],
        rates.len()
    );
    Ok(())
}

pub(crate) fn run(root: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    if args.workload.as_deref() == Some("sim") {
        return sim_row(root, args.runs);
    }
    if args.workload.as_deref() == Some("connectors") {
        crate::services::start()?;
        let binary = build_release_example(root, "connector_bench")?;
        let binary = binary.to_string_lossy().into_owned();
        return run_command(root, &binary, &["--records", "200000"]);
    }
    let binary = build_release_example(root, "bench")?;
    println!(
        "median of {} run(s) per row; peak memory is the largest of them; cp = checkpoint",
        args.runs.max(1)
    );
    println!(
        "{:<18} {:>6} {:>2} {:>10} {:>8} {:>6} {:>12} {:>7} {:>8} {:>4} {:>7} {:>7} {:>7} {:>7} {:>8} {:>16}  check",
        "workload",
        "state",
        "p",
        "events",
        "keys",
        "cp ms",
        "events/s",
        "wall s",
        "peak MiB",
        "cps",
        "1st ms",
        "med ms",
        "max ms",
        "cp MiB",
        "recov ms",
        "checksum"
    );
    let mut failed = Vec::new();
    // events/s of the hand-written loops in this invocation, and each row's ratio to its own.
    let mut references: std::collections::BTreeMap<&str, f64> = Default::default();
    let mut rows = serde_json::Map::new();
    let comparing = args.compare || args.save_baseline;
    for run in runs(args.events) {
        let is_reference = run.workload.starts_with("baseline-");
        if args
            .workload
            .as_deref()
            .is_some_and(|only| only != run.workload)
            && !(comparing && is_reference)
        {
            continue;
        }
        // Each configuration runs several times; the median run (by throughput) is reported,
        // since one run on a shared machine can be disturbed by its neighbours.
        let mut results = (0..args.runs.max(1))
            .map(|_| run_once(&binary, &run))
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
        let optional = |field: &str, scale: f64| {
            result[field]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |v| format!("{:.1}", v / scale))
        };
        let (records, checksum) = (integer("records"), integer("checksum"));
        let check = match expected(&run)
            .map_or_else(|| baseline_of(&binary, &run), |want| Ok(Some(want)))?
        {
            Some(want) if want == (records, checksum) => "ok",
            Some(_) => {
                failed.push(format!("{} p={}", run.workload, run.parallelism));
                "WRONG"
            }
            None => "-",
        };
        println!(
            "{:<18} {:>6} {:>2} {:>10} {:>8} {:>6} {:>12.0} {:>7.2} {:>8.1} {:>4} {:>7} {:>7} {:>7} {:>7} {:>8} {:>16}  {check}",
            run.workload,
            run.state_backend,
            run.parallelism,
            run.events,
            run.keys,
            run.checkpoint_ms
                .map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
            number("events_per_sec"),
            number("seconds"),
            peak_mib_max,
            integer("checkpoints"),
            optional("first_checkpoint_ms", 1.0),
            optional("median_checkpoint_ms", 1.0),
            optional("max_checkpoint_ms", 1.0),
            optional("last_checkpoint_bytes", 1024.0 * 1024.0),
            optional("recovery_ms", 1.0),
            checksum
        );
        let rate = number("events_per_sec");
        if is_reference {
            references.insert(run.workload, rate);
        }
        if let Some(reference) = references.get(run.reference()) {
            rows.insert(
                run.row_name(),
                serde_json::json!({
                    "ratio": rate / reference,
                    "peak_mib": peak_mib_max,
                }),
            );
        }
    }
    if !failed.is_empty() {
        bail!("wrong results from: {}", failed.join(", "));
    }
    if args.save_baseline {
        let path = root.join(BASELINE_FILE);
        // A run of some workloads replaces their rows and keeps the others'.
        let mut saved = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|baseline| baseline["rows"].as_object().cloned())
            .unwrap_or_default();
        saved.extend(rows.clone());
        let baseline = serde_json::json!({
            "about": "cargo xtask bench rows as ratios of events/s to the hand-written loop of the same run, and peak memory; written by cargo xtask bench --save-baseline, read by --compare",
            "rows": saved,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&baseline)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("baseline written to {BASELINE_FILE}");
    }
    if args.compare {
        compare(root, &rows)?;
    }
    if args.workload.is_none() {
        sim_row(root, args.runs)?;
    }
    Ok(())
}

/// Compares this invocation's rows with the committed baseline; fails on a regression.
fn compare(root: &Path, rows: &serde_json::Map<String, Value>) -> anyhow::Result<()> {
    let path = root.join(BASELINE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (write one with --save-baseline)",
            path.display()
        )
    })?;
    let baseline: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    println!(
        "\n{:<56} {:>9} {:>9} {:>8} {:>9} {:>9}  verdict",
        "row (ratio = events/s over the hand-written loop's)",
        "ratio",
        "baseline",
        "change",
        "peak MiB",
        "baseline"
    );
    let mut regressions = Vec::new();
    for (name, now) in rows {
        let Some(then) = baseline["rows"].get(name) else {
            println!(
                "{name:<56} {:>9.3} {:>9} (not in the baseline)",
                now["ratio"].as_f64().unwrap_or(f64::NAN),
                "-"
            );
            continue;
        };
        let value = |row: &Value, field: &str| row[field].as_f64().unwrap_or(f64::NAN);
        let (ratio, was) = (value(now, "ratio"), value(then, "ratio"));
        let (peak, peak_was) = (value(now, "peak_mib"), value(then, "peak_mib"));
        let slower = ratio < was * (1.0 - REGRESSION_SHARE);
        let bigger = peak > peak_was * (1.0 + REGRESSION_SHARE) && peak - peak_was > 16.0;
        let verdict = match (slower, bigger) {
            (false, false) => "ok",
            (true, false) => "SLOWER",
            (false, true) => "MORE MEMORY",
            (true, true) => "SLOWER, MORE MEMORY",
        };
        if slower || bigger {
            regressions.push(format!("{name}: {verdict}"));
        }
        println!(
            "{name:<56} {ratio:>9.3} {was:>9.3} {:>7.0}% {peak:>9.1} {peak_was:>9.1}  {verdict}",
            (ratio / was - 1.0) * 100.0
        );
    }
    if !regressions.is_empty() {
        bail!(
            "regressions against {BASELINE_FILE} (more than {:.0}%): {}",
            REGRESSION_SHARE * 100.0,
            regressions.join("; ")
        );
    }
    Ok(())
}

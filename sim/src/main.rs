//! `rill-sim`: runs the failure scenarios of `scenarios/` under many seeds and says, for each,
//! whether its property held. `cargo xtask sim` builds and runs it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rill_sim::faults::Defect;
use rill_sim::jobs::JobKind;
use rill_sim::runner::{
    ScenarioSummary, run_scenario, run_seed, schedule_of, select_faults, shrink_to_indices,
};
use rill_sim::scenario::{Expect, Scenario};

// A run allocates and frees a small buffer per record many times over (log records, encoded
// output, batches): mimalloc's thread-local free lists make that about a third cheaper than
// the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Failing seeds shown in full per scenario.
const SHOWN_FAILURES_MAX: usize = 3;

#[derive(Parser)]
#[command(
    name = "rill-sim",
    about = "Runs Rill's failure scenarios in the deterministic simulator and checks exactly-once"
)]
struct Args {
    /// The directory of scenario files.
    #[arg(long, default_value_os_t = default_dir())]
    dir: PathBuf,
    /// Run only these scenarios (by file name without `.toml`).
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Run only this seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run seeds 0..N instead of each scenario's default.
    #[arg(long)]
    seeds: Option<u64>,
    /// Print the run step by step (one scenario, one seed).
    #[arg(long, requires = "seed")]
    trace: bool,
    /// With `--trace`: replay the seed with only these faults of its schedule, by index (as a
    /// failure's shrunk schedule lists them): `--faults 1,3`; `--faults none` for none.
    #[arg(long, requires = "trace", value_parser = parse_faults)]
    faults: Option<FaultIndices>,
    /// Run each seed twice and fail if the two traces differ.
    #[arg(long)]
    check_determinism: bool,
    /// List the scenarios and the jobs, then stop.
    #[arg(long)]
    list: bool,
    /// Threads to run seeds on (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// The fault indices `--faults` keeps.
#[derive(Clone, Debug)]
struct FaultIndices(Vec<usize>);

fn parse_faults(text: &str) -> Result<FaultIndices, String> {
    if text.is_empty() || text == "none" {
        return Ok(FaultIndices(Vec::new()));
    }
    text.split(',')
        .map(|index| {
            index
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("'{index}' is not a fault index"))
        })
        .collect::<Result<_, _>>()
        .map(FaultIndices)
}

fn default_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let mut scenarios = Scenario::load_dir(&args.dir)?;
    if !args.scenarios.is_empty() {
        for name in &args.scenarios {
            if !scenarios.iter().any(|s| &s.name == name) {
                let known: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "no scenario '{name}' in {} (there are: {})",
                    args.dir.display(),
                    known.join(", ")
                );
            }
        }
        scenarios.retain(|s| args.scenarios.contains(&s.name));
    }
    if args.list {
        list(&scenarios);
        return Ok(ExitCode::SUCCESS);
    }
    if args.trace {
        let [scenario] = scenarios.as_slice() else {
            bail!("--trace replays one run: name one scenario with --scenario");
        };
        let seed = args.seed.context("--trace needs --seed")?;
        let schedule = args
            .faults
            .as_ref()
            .map(|FaultIndices(kept)| select_faults(&schedule_of(scenario, seed), kept));
        let report = run_seed(scenario, seed, schedule, true);
        println!();
        for fault in &report.schedule {
            println!("scheduled fault: {fault}");
        }
        println!("trace hash {:016x}", report.trace_hash);
        return Ok(match &report.checked.violation {
            Some(violation) => {
                println!("VIOLATED {}: {}", violation.property, violation.detail);
                ExitCode::FAILURE
            }
            None => {
                println!("held: {}", scenario.spec.property.name());
                ExitCode::SUCCESS
            }
        });
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let seeds_of = |scenario: &Scenario| -> Vec<u64> {
        match (args.seed, args.seeds) {
            (Some(seed), _) => vec![seed],
            (None, Some(n)) => (0..n).collect(),
            (None, None) => (0..scenario.spec.seeds).collect(),
        }
    };
    let total: u64 = scenarios.iter().map(|s| seeds_of(s).len() as u64).sum();
    let progress = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} seeds  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut unmet = 0;
    for scenario in &scenarios {
        progress.set_message(scenario.name.clone());
        let seeds = seeds_of(scenario);
        let began = Instant::now();
        let summary = run_scenario(scenario, &seeds, threads, args.check_determinism, &|| {
            progress.inc(1)
        });
        let met = summary.met(scenario.spec.expect, scenario.spec.property);
        progress.suspend(|| {
            eprintln!(
                "{} {}: {} seeds in {:.1} s, {} passed, {} violated",
                if met { "ok  " } else { "FAIL" },
                scenario.name,
                summary.seeds,
                began.elapsed().as_secs_f64(),
                summary.passed,
                summary.failed
            );
            report_failures(scenario, &summary, met);
        });
        if !met {
            unmet += 1;
        }
        rows.push((scenario, summary, met));
    }
    progress.finish_and_clear();
    print_table(&rows);
    println!(
        "{} scenarios, {} seeds in {:.1} s on {threads} threads",
        rows.len(),
        total,
        started.elapsed().as_secs_f64()
    );
    if unmet > 0 {
        eprintln!("{unmet} scenario(s) did not meet their expectation");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn list(scenarios: &[Scenario]) {
    println!("scenarios:");
    for scenario in scenarios {
        let spec = &scenario.spec;
        let broken = spec
            .broken
            .map(|defect| format!(" [broken: {}, must be caught]", defect.name()))
            .unwrap_or_default();
        println!(
            "  {:<34} {} ({}, {}, {} seeds){broken}",
            scenario.name,
            spec.description,
            spec.job.name(),
            spec.property.name(),
            spec.seeds
        );
    }
    println!("jobs:");
    for job in JobKind::ALL {
        println!("  {:<16} roles: {}", job.name(), job.roles().join(", "));
    }
    println!("broken components:");
    for defect in Defect::ALL {
        let jobs: Vec<&str> = JobKind::ALL
            .iter()
            .filter(|job| job.can_break(defect))
            .map(|job| job.name())
            .collect();
        let jobs = if jobs.len() == JobKind::ALL.len() {
            "every job".to_owned()
        } else {
            jobs.join(", ")
        };
        println!("  {:<34} in {jobs}", defect.name());
    }
}

fn report_failures(scenario: &Scenario, summary: &ScenarioSummary, met: bool) {
    for seed in &summary.nondeterministic {
        eprintln!("    seed {seed}: two runs gave different traces (nondeterminism)");
    }
    match scenario.spec.expect {
        Expect::Violation if met => {
            if let Some(first) = summary.failures.first()
                && let Some(violation) = &first.checked.violation
            {
                let line = violation.detail.lines().next().unwrap_or_default();
                eprintln!(
                    "    caught in {}/{} seeds; first: seed {}: {} violated: {line}",
                    summary.failed, summary.seeds, first.seed, violation.property
                );
            }
        }
        Expect::Violation => {
            eprintln!(
                "    the broken component was not caught in any of {} seeds: the checker cannot fail here",
                summary.seeds
            );
        }
        Expect::Pass => {
            for report in summary.failures.iter().take(SHOWN_FAILURES_MAX) {
                let Some(violation) = &report.checked.violation else {
                    continue;
                };
                eprintln!(
                    "    seed {}: {} violated: {}",
                    report.seed, violation.property, violation.detail
                );
                eprintln!("    fault schedule ({} faults):", report.schedule.len());
                for (index, fault) in report.schedule.iter().enumerate() {
                    eprintln!("      [{index}] {fault}");
                }
                let kept = shrink_to_indices(scenario, report.seed, &report.schedule);
                eprintln!("    shrunk to {} faults:", kept.len());
                for (index, fault) in kept.iter().zip(select_faults(&report.schedule, &kept)) {
                    eprintln!("      [{index}] {fault}");
                }
                eprintln!(
                    "    replay: cargo xtask sim --scenario {} --seed {} --trace",
                    scenario.name, report.seed
                );
                let indices: Vec<String> = kept.iter().map(usize::to_string).collect();
                let indices = if indices.is_empty() {
                    "none".to_owned()
                } else {
                    indices.join(",")
                };
                eprintln!(
                    "    replay the shrunk schedule: cargo xtask sim --scenario {} --seed {} --faults {indices} --trace",
                    scenario.name, report.seed
                );
            }
        }
    }
}

fn print_table(rows: &[(&Scenario, ScenarioSummary, bool)]) {
    println!(
        "{:<34} {:>6} {:>7} {:>7} {:>7} {:>11} {:>10} {:>10}  verdict",
        "scenario",
        "seeds",
        "passed",
        "failed",
        "faults",
        "checkpoints",
        "recoveries",
        "duplicates"
    );
    for (scenario, summary, met) in rows {
        let verdict = match (scenario.spec.expect, met) {
            (Expect::Pass, true) => "ok".to_owned(),
            (Expect::Pass, false) => format!("VIOLATED {}", scenario.spec.property.name()),
            (Expect::Violation, true) => "ok (broken component caught)".to_owned(),
            (Expect::Violation, false) => "NOT CAUGHT".to_owned(),
        };
        println!(
            "{:<34} {:>6} {:>7} {:>7} {:>7} {:>11} {:>10} {:>10}  {verdict}",
            scenario.name,
            summary.seeds,
            summary.passed,
            summary.failed,
            summary.faults,
            summary.checkpoints,
            summary.recoveries,
            summary.duplicates
        );
    }
}

//! Rill's automation, run as `cargo xtask <command>`:
//!
//! - `ci`: what CI runs — the architecture invariants (`tidy`), formatting, lints, every test
//!   (unit, integration, doc) and the simulator;
//! - `tidy`: a fast check of the architecture invariants (dependency direction, no clock,
//!   thread or file in `rill-core`, no wall clock in the simulator, no `.unwrap()` in
//!   `rill-log`/`rill-store`, a module doc comment on every source file);
//! - `bench`: the standard workloads in release mode, with events/s, wall time, peak memory and
//!   the checksums that show the engine computed the right thing;
//! - `demo`: a fresh user's first real job — writes sample text to the event log, runs the
//!   `wordcount` example over it, and prints the counts;
//! - `services`: starts the servers the connectors' tests run against (NATS with JetStream,
//!   Redis, PostgreSQL) on loopback, from the machine's packages; `ci` starts them first;
//! - `sim`: the failure scenarios of `scenarios/` in the deterministic simulator (optimized
//!   build, assertions on); every argument goes to `rill-sim` (`cargo xtask sim --help`).

mod bench;
mod demo;
mod services;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Rill's automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// The architecture invariants, formatting, clippy, and every test, as CI runs them.
    Ci,
    /// Checks the architecture invariants (dependency direction, forbidden calls, module docs).
    Tidy,
    /// The standard benchmark workloads (release build).
    Bench(bench::BenchArgs),
    /// Writes sample text to a log, runs wordcount over it and prints the counts.
    Demo(demo::DemoArgs),
    /// Starts NATS (JetStream), Redis and PostgreSQL on loopback for the connectors' tests.
    Services,
    /// Runs the failure scenarios in the deterministic simulator (`--help` for its options).
    Sim {
        /// Passed to `rill-sim`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Task::Ci => ci(&root),
        Task::Tidy => tidy::run(&root),
        Task::Bench(args) => bench::run(&root, &args),
        Task::Demo(args) => demo::run(&root, &args),
        Task::Services => services::start(),
        Task::Sim { args } => sim(&root, &args),
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` (relative to the workspace root, where
/// xtask runs cargo) or the workspace's `target/`.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Runs a command in the workspace root, failing with the command line if it fails.
pub(crate) fn run_command(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds an example of the `rill` crate in release mode; returns the binary's path.
fn build_release_example(root: &Path, example: &str) -> anyhow::Result<PathBuf> {
    run_command(
        root,
        "cargo",
        &["build", "--release", "-p", "rill", "--example", example],
    )?;
    Ok(target_dir(root).join("release/examples").join(example))
}

/// Builds the simulator with the `sim` profile and runs it with `args`.
fn sim(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut command = vec!["run", "--profile", "sim", "-p", "rill-sim", "--"];
    command.extend(args.iter().map(String::as_str));
    run_command(root, "cargo", &command)
}

fn ci(root: &Path) -> anyhow::Result<()> {
    // First: it takes well under a second and says what is wrong in architectural terms.
    eprintln!("$ cargo xtask tidy");
    tidy::run(root)?;
    run_command(root, "cargo", &["fmt", "--all", "--", "--check"])?;
    // The connectors' tests run against real servers, and never skip one that is missing.
    eprintln!("$ cargo xtask services");
    services::start()?;
    run_command(
        root,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // Doc tests first: nextest's summary is then the run's closing line.
    run_command(root, "cargo", &["test", "--workspace", "--doc"])?;
    run_command(
        root,
        "cargo",
        &["nextest", "run", "--workspace", "--no-fail-fast"],
    )?;
    // Every scenario with its default (quick) number of seeds.
    sim(root, &[])
}

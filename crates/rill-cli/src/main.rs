//! `rill`: operate Rill's embedded event log and look at stored checkpoints from the shell.
//!
//! ```text
//! rill [--data-dir DIR] log create <topic> [--partitions N]
//! rill [--data-dir DIR] log produce <topic> [--key K | --key-field NAME] [--partition P] [--skip-lines N]
//! rill [--data-dir DIR] log consume <topic> [--from OFFSET] [--max N] [--partition P] [--with-key]
//! rill [--data-dir DIR] log describe <topic>
//! rill [--data-dir DIR] log list
//! rill [--data-dir DIR] log check
//! rill [--data-dir DIR] log salvage --to NEW_DIR
//! rill [--data-dir DIR] checkpoints list --job NAME [--checkpoint-dir DIR]
//! rill [--data-dir DIR] checkpoints inspect --job NAME [--checkpoint ID] [--checkpoint-dir DIR]
//! rill [--data-dir DIR] checkpoints prune --job NAME [--keep N] [--checkpoint-dir DIR]
//! rill [--data-dir DIR] checkpoints delete --job NAME --checkpoint ID [--checkpoint-dir DIR]
//! ```
//!
//! Errors print on one line of stderr, with control characters (from names given on the
//! command line or found in the data) escaped, so that they cannot garble the terminal.

mod checkpoints_cmd;
mod log_check;
mod log_cmd;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rill",
    version,
    about = "Operate Rill's embedded event log and stored checkpoints"
)]
struct Cli {
    /// The event log's directory.
    #[arg(long, global = true, default_value = "./rill-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Topics: create, produce to, consume from, describe, list; check for damage, salvage.
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// A job's stored checkpoints: list, inspect, prune, delete.
    #[command(subcommand)]
    Checkpoints(checkpoints_cmd::CheckpointsCommand),
}

fn main() -> ExitCode {
    // `RUST_LOG` chooses what is logged (e.g. `RUST_LOG=rill_log=debug`); warnings by default,
    // in colour only on a terminal (not in a file or a pipe).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Log(command) => log_cmd::run(&cli.data_dir, command),
        Command::Checkpoints(command) => checkpoints_cmd::run(&cli.data_dir, command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", escape_controls(&format!("{error:#}")));
            ExitCode::FAILURE
        }
    }
}

/// `text` with its control characters escaped (`\u{1b}`, `\n`, …).
fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

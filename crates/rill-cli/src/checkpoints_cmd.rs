//! `rill checkpoints …`: list and inspect the checkpoints a job stored.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_store::CheckpointStore;

#[derive(Subcommand)]
pub(crate) enum CheckpointsCommand {
    /// Lists a job's completed checkpoints, oldest first.
    List {
        /// The job's name.
        #[arg(long)]
        job: String,
        /// The checkpoint store (default: `<data-dir>/checkpoints`).
        #[arg(long)]
        checkpoint_dir: Option<PathBuf>,
    },
    /// Shows one checkpoint (the newest by default): its subtasks and their state sizes.
    Inspect {
        /// The job's name.
        #[arg(long)]
        job: String,
        /// The checkpoint's id.
        #[arg(long)]
        checkpoint: Option<u64>,
        /// The checkpoint store (default: `<data-dir>/checkpoints`).
        #[arg(long)]
        checkpoint_dir: Option<PathBuf>,
    },
}

/// Opens an existing store; a missing one is an error, not created.
fn open_store(data_dir: &Path, checkpoint_dir: Option<PathBuf>) -> anyhow::Result<CheckpointStore> {
    let dir = checkpoint_dir.unwrap_or_else(|| data_dir.join("checkpoints"));
    if !dir.is_dir() {
        bail!("no checkpoint store at {}", dir.display());
    }
    CheckpointStore::open(&dir)
        .with_context(|| format!("cannot open the checkpoint store at {}", dir.display()))
}

/// Milliseconds since the Unix epoch as `seconds.millis` UTC.
fn time(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The bytes one subtask's snapshot holds, in all and per chained operator.
fn sizes(snapshot: &SubtaskSnapshot) -> (usize, Vec<usize>) {
    let operators: Vec<usize> = snapshot
        .operators
        .iter()
        .map(|operator| {
            operator
                .keyed
                .tables
                .values()
                .flat_map(|groups| groups.values())
                .map(Vec::len)
                .sum()
        })
        .collect();
    let position = snapshot.source_position.as_ref().map_or(0, Vec::len);
    (position + operators.iter().sum::<usize>(), operators)
}

pub(crate) fn run(data_dir: &Path, command: CheckpointsCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        CheckpointsCommand::List {
            job,
            checkpoint_dir,
        } => {
            let store = open_store(data_dir, checkpoint_dir)?;
            let checkpoints = store.list(&job)?;
            if checkpoints.is_empty() {
                bail!("job '{job}' has no completed checkpoint");
            }
            writeln!(
                out,
                "{:>10}  {:>9}  {:>18}  {:>8}  {:>8}  {:>12}",
                "checkpoint",
                "savepoint",
                "completed (unix s)",
                "took ms",
                "subtasks",
                "state bytes"
            )?;
            for c in checkpoints {
                writeln!(
                    out,
                    "{:>10}  {:>9}  {:>18}  {:>8}  {:>8}  {:>12}",
                    c.checkpoint.0,
                    if c.savepoint { "yes" } else { "no" },
                    time(c.acknowledged_at_ms),
                    c.acknowledged_at_ms.saturating_sub(c.triggered_at_ms),
                    c.subtasks,
                    c.state_bytes
                )?;
            }
        }
        CheckpointsCommand::Inspect {
            job,
            checkpoint,
            checkpoint_dir,
        } => {
            let store = open_store(data_dir, checkpoint_dir)?;
            let point = match checkpoint {
                Some(id) => store.get(&job, CheckpointId(id))?,
                None => store.latest(&job)?,
            };
            let Some(point) = point else {
                bail!("job '{job}' has no such completed checkpoint");
            };
            let m = &point.metadata;
            writeln!(out, "job {job}, checkpoint {}", m.checkpoint.0)?;
            writeln!(out, "  savepoint: {}", m.savepoint)?;
            writeln!(
                out,
                "  triggered: {} (unix s), took {} ms",
                time(m.triggered_at_ms),
                m.acknowledged_at_ms.saturating_sub(m.triggered_at_ms)
            )?;
            writeln!(
                out,
                "  state: {} bytes in {} subtask snapshots",
                m.state_bytes, m.subtasks
            )?;
            for (index, snapshot) in &point.snapshots {
                let (total, operators) = sizes(snapshot);
                let position = snapshot
                    .source_position
                    .as_ref()
                    .map_or("-".to_owned(), |p| format!("{} bytes", p.len()));
                let per_operator: Vec<String> =
                    operators.iter().map(|bytes| bytes.to_string()).collect();
                writeln!(
                    out,
                    "  subtask {index:>3}: {total} bytes (source position: {position}; operators in chain order: [{}])",
                    per_operator.join(", ")
                )?;
            }
        }
    }
    Ok(())
}

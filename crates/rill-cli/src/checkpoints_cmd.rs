//! `rill checkpoints …`: list and inspect the checkpoints a job stored (reading a copy of the
//! store), and delete or prune them (stop the job first: one process has a store open).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use rill_core::checkpoint::CheckpointId;
use rill_core::coordinator::CompletedCheckpoint;
use rill_store::CheckpointStore;

use crate::log_cmd::quiet_if_closed;

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
    /// Deletes one checkpoint or savepoint of a job.
    Delete {
        /// The job's name.
        #[arg(long)]
        job: String,
        /// The checkpoint's id.
        #[arg(long)]
        checkpoint: u64,
        /// The checkpoint store (default: `<data-dir>/checkpoints`).
        #[arg(long)]
        checkpoint_dir: Option<PathBuf>,
    },
    /// Deletes a job's checkpoints but the newest `--keep` (savepoints are kept: delete them
    /// one by one).
    Prune {
        /// The job's name.
        #[arg(long)]
        job: String,
        /// How many of the newest checkpoints to keep (at least 1).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
        keep: u64,
        /// The checkpoint store (default: `<data-dir>/checkpoints`).
        #[arg(long)]
        checkpoint_dir: Option<PathBuf>,
    },
}

/// Opens an existing store to read it, changing nothing there; a missing one is an error, not
/// created. What opening it for writing would repair is printed as a warning.
fn open_store(data_dir: &Path, checkpoint_dir: Option<PathBuf>) -> anyhow::Result<CheckpointStore> {
    let dir = checkpoint_dir.unwrap_or_else(|| data_dir.join("checkpoints"));
    let store = CheckpointStore::open_read_only(&dir)
        .with_context(|| format!("cannot open the checkpoint store at {}", dir.display()))?;
    for repair in store.journal_repairs() {
        eprintln!("warning: the checkpoint store is damaged: {repair}");
    }
    for batch in store.skipped_journal_batches() {
        eprintln!("warning: the checkpoint store is damaged: {batch}");
    }
    Ok(store)
}

/// Opens an existing store to change it; a missing one is an error, not created.
fn open_store_to_write(
    data_dir: &Path,
    checkpoint_dir: Option<PathBuf>,
) -> anyhow::Result<CheckpointStore> {
    let dir = checkpoint_dir.unwrap_or_else(|| data_dir.join("checkpoints"));
    if !dir.is_dir() {
        bail!("there is no checkpoint store at {}", dir.display());
    }
    let store = CheckpointStore::open(&dir)
        .with_context(|| format!("cannot open the checkpoint store at {}", dir.display()))?;
    for repair in store.journal_repairs() {
        eprintln!("warning: the checkpoint store was damaged: {repair}");
    }
    Ok(store)
}

/// Milliseconds since the Unix epoch as `seconds.millis` UTC.
fn time(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Each operator's state size over all its subtasks, by uid (sources count their positions),
/// in the order the layout names them, with the operator's parallelism.
fn operator_sizes(point: &CompletedCheckpoint) -> Vec<(String, u32, u64)> {
    let mut sizes: Vec<(String, u32, u64)> = Vec::new();
    let mut add = |uid: &str, parallelism: u32, bytes: u64| match sizes
        .iter_mut()
        .find(|(known, _, _)| known == uid)
    {
        Some((_, _, total)) => *total += bytes,
        None => sizes.push((uid.to_owned(), parallelism, bytes)),
    };
    for (position, layout) in point.metadata.layout.subtasks.iter().enumerate() {
        let Some(snapshot) = point.snapshots.get(&position) else {
            continue;
        };
        if let Some(source) = &layout.source {
            add(source, layout.parallelism, snapshot.position_bytes());
        }
        for (uid, operator) in layout.operators.iter().zip(&snapshot.operators) {
            add(uid, layout.parallelism, operator.state_bytes());
        }
    }
    sizes
}

pub(crate) fn run(data_dir: &Path, command: CheckpointsCommand) -> anyhow::Result<()> {
    quiet_if_closed(run_command(data_dir, command))
}

fn run_command(data_dir: &Path, command: CheckpointsCommand) -> anyhow::Result<()> {
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
                None => match store.latest(&job)? {
                    Some(intact) => {
                        for damage in &intact.skipped {
                            writeln!(out, "skipped: {damage}")?;
                        }
                        Some(intact.checkpoint)
                    }
                    None => None,
                },
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
            writeln!(out, "  max parallelism: {}", m.layout.max_parallelism)?;
            writeln!(
                out,
                "  {:>12}  {:>11}  operator (uid)",
                "state bytes", "parallelism"
            )?;
            for (uid, parallelism, bytes) in operator_sizes(&point) {
                writeln!(out, "  {bytes:>12}  {parallelism:>11}  {uid}")?;
            }
            for (position, snapshot) in point.snapshots.iter() {
                let chain = m.layout.subtasks.get(*position).map_or_else(
                    || "?".to_owned(),
                    |layout| {
                        let uids: Vec<&str> = layout
                            .source
                            .iter()
                            .chain(&layout.operators)
                            .map(String::as_str)
                            .collect();
                        format!("{} [{}]", uids.join(" -> "), layout.index)
                    },
                );
                writeln!(
                    out,
                    "  subtask {position:>3}: {:>10} bytes  {chain}",
                    snapshot.state_bytes()
                )?;
            }
        }
        CheckpointsCommand::Delete {
            job,
            checkpoint,
            checkpoint_dir,
        } => {
            let store = open_store_to_write(data_dir, checkpoint_dir)?;
            if !store
                .list(&job)?
                .iter()
                .any(|m| m.checkpoint.0 == checkpoint)
            {
                bail!("job '{job}' has no completed checkpoint {checkpoint}");
            }
            store.discard(&job, CheckpointId(checkpoint))?;
            writeln!(out, "deleted checkpoint {checkpoint} of job '{job}'")?;
        }
        CheckpointsCommand::Prune {
            job,
            keep,
            checkpoint_dir,
        } => {
            let store = open_store_to_write(data_dir, checkpoint_dir)?;
            let retained = store.retained(&job)?;
            let beyond = retained.len().saturating_sub(keep as usize);
            for checkpoint in &retained[..beyond] {
                store.discard(&job, *checkpoint)?;
            }
            writeln!(
                out,
                "deleted {beyond} checkpoints of job '{job}', kept {} and its savepoints",
                retained.len() - beyond
            )?;
        }
    }
    Ok(())
}

//! `cargo xtask demo`: the wordcount example end to end on a fresh machine, with the `rill` CLI
//! preparing the topics and showing the output.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::Args;

use crate::{build_release_example, run_command, target_dir};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Where the demo's event log lives; it is created anew.
    #[arg(long, default_value = "target/demo-data")]
    data_dir: String,
    /// Subtasks per operator of the wordcount job.
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
}

const TEXT: &str = "\
the quick brown fox jumps over the lazy dog
the dog barks and the fox runs
a stream is a river of events and the river never stops
";

pub(crate) fn run(root: &Path, args: &DemoArgs) -> anyhow::Result<()> {
    run_command(root, "cargo", &["build", "--release", "-p", "rill-cli"])?;
    let wordcount = build_release_example(root, "wordcount")?;
    let data_dir = root.join(&args.data_dir);
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("cannot clear {}", data_dir.display()))?;
    }
    let data = data_dir.to_string_lossy().into_owned();
    let rill = target_dir(root).join("release/rill");
    let rill = rill.to_string_lossy();
    for topic in ["lines", "counts"] {
        run_command(
            root,
            &rill,
            &[
                "--data-dir",
                &data,
                "log",
                "create",
                topic,
                "--partitions",
                "2",
            ],
        )?;
    }
    eprintln!("$ {rill} --data-dir {data} log produce lines  < (3 lines of text)");
    let mut produce = Command::new(&*rill)
        .args(["--data-dir", &data, "log", "produce", "lines"])
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot run rill log produce")?;
    produce
        .stdin
        .take()
        .context("no stdin for rill log produce")?
        .write_all(TEXT.as_bytes())?;
    if !produce.wait()?.success() {
        bail!("rill log produce failed");
    }
    let parallelism = args.parallelism.to_string();
    run_command(
        root,
        &wordcount.to_string_lossy(),
        &[
            "--data-dir",
            &data,
            "--input",
            "lines",
            "--output",
            "counts",
            "--parallelism",
            &parallelism,
            "--bounded",
        ],
    )?;
    run_command(
        root,
        &rill,
        &["--data-dir", &data, "log", "consume", "counts"],
    )?;
    Ok(())
}

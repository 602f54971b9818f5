//! What the event-time examples over the log share (and `rill-files`' `json_pipeline` takes
//! the flags and logging from): their common flags and the environment those configure,
//! logging, their topics, and (in their tests) reading what a job committed.

use std::time::Duration;

use rill::log::LogError;
use rill::prelude::*;

/// The flags every log example takes.
#[derive(clap::Args)]
pub struct JobArgs {
    /// The job's data directory: its event log (for the examples over the log), and its
    /// checkpoints in `checkpoints`.
    #[arg(long, default_value = "./rill-data")]
    pub data_dir: std::path::PathBuf,
    /// Append this many synthetic events to the input topic first.
    #[arg(long)]
    pub generate: Option<u64>,
    /// Subtasks per operator.
    #[arg(long, default_value_t = 2)]
    pub parallelism: u32,
    /// Stop at the end of the input as it is when the job starts.
    #[arg(long)]
    pub bounded: bool,
    /// Take a checkpoint this often, into `<data-dir>/checkpoints`.
    #[arg(long)]
    pub checkpoint_interval_ms: Option<u64>,
    /// Allow starting behind the output already committed (an older checkpoint, or none
    /// after the checkpoints were lost): the output since then is written again.
    #[arg(long)]
    pub allow_rewind: bool,
}

impl JobArgs {
    /// An environment with the parallelism and checkpointing the flags ask for.
    pub fn env(&self) -> StreamEnv {
        let env = StreamEnv::new();
        env.set_parallelism(self.parallelism);
        if let Some(interval) = self.checkpoint_interval_ms {
            env.enable_checkpointing(Duration::from_millis(interval));
            env.set_checkpoint_dir(self.data_dir.join("checkpoints"));
        }
        if self.allow_rewind {
            env.allow_rewind();
        }
        env
    }
}

/// Logs warnings (or what `RUST_LOG` asks for) to stderr, in colour only on a terminal.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub fn ensure_topic(log: &EventLog, topic: &str, partitions: u32) -> Result<(), LogError> {
    match log.topic(topic) {
        Ok(_) => Ok(()),
        Err(_) => log.create_topic(topic, partitions),
    }
}

/// The committed values of `topic` as text, sorted.
#[cfg(test)]
pub fn committed(log: &EventLog, topic: &str) -> Vec<String> {
    let ends = log.end_offsets(topic).unwrap();
    let mut lines = Vec::new();
    for (partition, end) in ends.into_iter().enumerate() {
        for record in log.read(topic, partition as u32, 0, end as usize).unwrap() {
            lines.push(String::from_utf8(record.value).unwrap());
        }
    }
    lines.sort();
    lines
}

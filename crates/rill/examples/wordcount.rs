//! Word count over the event log: reads text lines from a topic, splits them into words, keeps a
//! running count per word, and appends `word<TAB>count` to an output topic for every update.
//!
//! ```text
//! rill log create lines --partitions 2
//! printf 'to be or not\nto be\n' | rill log produce lines
//! rill log create counts --partitions 2
//! cargo run --release -p rill --example wordcount -- --input lines --output counts --bounded
//! rill log consume counts
//! ```
//!
//! Without `--bounded` the job keeps reading new lines until Ctrl-C or SIGTERM, which stop it
//! with a savepoint when it checkpoints (and cancel it otherwise, saying that its output of the
//! run was not committed). With
//! `--checkpoint-interval-ms`, it checkpoints into `<data-dir>/checkpoints` and, started again,
//! resumes from its newest checkpoint (`rill checkpoints list --job wordcount` shows them).
//! `--state-backend fjall` keeps the counts on disk instead of in memory; checkpoints taken
//! with either backend restore with the other.
//!
//! The output topic is written exactly-once, through the log's transactions: each checkpoint's
//! updates become visible when the checkpoint completes (and a bounded job's last ones at its
//! final checkpoint, or at its end without checkpoints). Kill the job at any moment and start it
//! again: every word's committed counts are 1, 2, …, n, none missing and none twice.
//! `rill log consume counts --read-uncommitted` also shows the updates waiting for a checkpoint.
//! With `--print-checkpoints` it prints `checkpoint <n> complete` on stdout as each checkpoint
//! completes, for a script (or a test) to wait on.

use std::io::Write;

use clap::Parser;
use rill::core::checkpoint::CheckpointId;
use rill::prelude::*;

#[derive(Parser)]
struct Args {
    /// The event log's directory.
    #[arg(long, default_value = "./rill-data")]
    data_dir: std::path::PathBuf,
    /// The topic to read lines from.
    #[arg(long, default_value = "lines")]
    input: String,
    /// The topic to write counts to.
    #[arg(long, default_value = "counts")]
    output: String,
    /// Subtasks per operator.
    #[arg(long, default_value_t = 1)]
    parallelism: u32,
    /// Stop at the end of the input as it is when the job starts.
    #[arg(long)]
    bounded: bool,
    /// Take a checkpoint this often, into `<data-dir>/checkpoints`; started again, the job
    /// resumes from its newest checkpoint.
    #[arg(long)]
    checkpoint_interval_ms: Option<u64>,
    /// Start from this checkpoint or savepoint instead of the newest (with
    /// `--checkpoint-interval-ms`; `rill checkpoints list --job wordcount` shows them).
    #[arg(long)]
    from_checkpoint: Option<u64>,
    /// Allow starting behind the counts already committed (an older checkpoint, or none): the
    /// counts since then are written again.
    #[arg(long)]
    allow_rewind: bool,
    /// Where the counts live while the job runs: `memory`, or `fjall` (on disk, in
    /// `<data-dir>/state`, for more words than fit in memory).
    #[arg(long, value_enum, default_value_t = Backend::Memory)]
    state_backend: Backend,
    /// Print `checkpoint <n> complete` on stdout as each checkpoint completes. A sink of its own
    /// hears of them, so a run that restores a checkpoint taken with this flag needs it too.
    #[arg(long)]
    print_checkpoints: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Backend {
    Memory,
    Fjall,
}

/// Counts the occurrences of each word; the count lives in keyed state.
#[derive(Clone)]
struct WordCounter {
    count: ValueState<u64>,
}

impl KeyedProcessFunction for WordCounter {
    type Key = String;
    type In = String;
    type Out = (String, u64);

    fn process(
        &mut self,
        word: String,
        ctx: &mut KeyedContext<'_, String, (String, u64)>,
    ) -> Result<(), BoxError> {
        let count = self.count.get(ctx).unwrap_or(0) + 1;
        self.count.set(ctx, count);
        ctx.emit((word, count));
        Ok(())
    }
}

/// A sink that takes the counts only to be told of each checkpoint that completes, and prints
/// `checkpoint <n> complete` then (if it is the subtask that prints: one line per checkpoint).
struct CheckpointNotices {
    print: bool,
}

impl Sink for CheckpointNotices {
    type In = (String, u64);

    fn write_batch(&mut self, _counts: Vec<Record<(String, u64)>>) -> Result<(), BoxError> {
        Ok(())
    }

    fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), BoxError> {
        if self.print && checkpoint != CheckpointId::END_OF_INPUT {
            // Nobody reading stdout any more is no reason to fail the job.
            let _ = writeln!(std::io::stdout(), "checkpoint {} complete", checkpoint.0);
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let log = EventLog::open(&args.data_dir)?;
    let mut source = LogSource::text(&log, &args.input)?;
    if args.bounded {
        source = source.bounded();
    }
    let sink = LogSink::with_encoder(&log, &args.output, |(word, count): &(String, u64)| {
        ProducerRecord::new(format!("{word}\t{count}").into_bytes())
            .with_key(word.clone().into_bytes())
    })?;

    let env = StreamEnv::new();
    env.set_parallelism(args.parallelism);
    if let Backend::Fjall = args.state_backend {
        env.set_state_backend(StateBackendConfig::Fjall {
            dir: args.data_dir.join("state"),
        });
    }
    if let Some(interval) = args.checkpoint_interval_ms {
        env.enable_checkpointing(std::time::Duration::from_millis(interval));
        env.set_checkpoint_dir(args.data_dir.join("checkpoints"));
    }
    if let Some(checkpoint) = args.from_checkpoint {
        env.start_from_checkpoint(checkpoint);
    }
    if args.allow_rewind {
        env.allow_rewind();
    }
    let counts = env
        .from_log(source)
        .flat_map(|line: String| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .name("split")
        .key_by(|word: &String| word.clone())
        .process(WordCounter {
            count: ValueState::new("count"),
        })
        .name("count");
    counts.clone().sink_to_log(sink);
    if args.print_checkpoints {
        counts.sink_with("checkpoint notices", |info| CheckpointNotices {
            print: info.subtask == 0,
        });
    }

    let job = env.execute_async("wordcount")?;
    // Ctrl-C or SIGTERM stops the job with a savepoint when it checkpoints: everything counted
    // so far is committed, and the next run goes on from exactly there.
    eprintln!("{}", job.wait_until_signal()?);
    Ok(())
}

//! `rill log …`: create, produce, consume, describe and list topics.

use std::io::{BufRead, BufWriter, ErrorKind, Write};
use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use rill_log::{EventLog, ProducerRecord};

/// Lines appended per batch by `produce`.
const PRODUCE_BATCH_LINES: usize = 1000;
/// Records read per call by `consume`.
const CONSUME_BATCH_RECORDS: usize = 1000;

#[derive(Subcommand)]
pub(crate) enum LogCommand {
    /// Creates a topic (and the log directory if needed).
    Create {
        /// The topic's name.
        topic: String,
        /// How many partitions it has.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
    /// Appends one record per line of standard input.
    Produce {
        /// The topic.
        topic: String,
        /// A key for every record.
        #[arg(long, conflicts_with = "key_field")]
        key: Option<String>,
        /// Reads each line as a JSON object and keys it by this field.
        #[arg(long)]
        key_field: Option<String>,
        /// Appends every record to this partition.
        #[arg(long)]
        partition: Option<u32>,
    },
    /// Prints records, one per line, partition by partition in offset order.
    Consume {
        /// The topic.
        topic: String,
        /// The offset each partition starts at.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stops after this many records in all.
        #[arg(long)]
        max: Option<u64>,
        /// Reads only this partition.
        #[arg(long)]
        partition: Option<u32>,
        /// Prints `key<TAB>value`.
        #[arg(long)]
        with_key: bool,
    },
    /// Prints a topic's partitions and end offsets.
    Describe {
        /// The topic.
        topic: String,
    },
    /// Lists the topics.
    List,
}

pub(crate) fn run(data_dir: &Path, command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::Create { topic, partitions } => {
            let log = EventLog::open_or_create(data_dir)?;
            log.create_topic(&topic, partitions)?;
            eprintln!(
                "created topic '{topic}' with {partitions} partition(s) in {}",
                data_dir.display()
            );
            Ok(())
        }
        LogCommand::Produce {
            topic,
            key,
            key_field,
            partition,
        } => produce(
            &EventLog::open(data_dir)?,
            &topic,
            key,
            key_field,
            partition,
        ),
        LogCommand::Consume {
            topic,
            from,
            max,
            partition,
            with_key,
        } => consume(
            &EventLog::open(data_dir)?,
            &topic,
            from,
            max,
            partition,
            with_key,
        ),
        LogCommand::Describe { topic } => {
            let log = EventLog::open(data_dir)?;
            let ends = log.end_offsets(&topic)?;
            println!("topic {topic}: {} partition(s)", ends.len());
            println!("{:>9}  {:>12}", "partition", "end offset");
            for (partition, end) in ends.iter().enumerate() {
                println!("{partition:>9}  {end:>12}");
            }
            println!("{:>9}  {:>12}", "total", ends.iter().sum::<u64>());
            Ok(())
        }
        LogCommand::List => {
            let log = EventLog::open(data_dir)?;
            for topic in log.topics() {
                println!("{}\t{} partition(s)", topic.name, topic.partitions);
            }
            Ok(())
        }
    }
}

/// The key of one input line.
fn key_of(
    line: &str,
    number: usize,
    key: &Option<String>,
    key_field: &Option<String>,
) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(key) = key {
        return Ok(Some(key.clone().into_bytes()));
    }
    let Some(field) = key_field else {
        return Ok(None);
    };
    let object: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("line {number} is not JSON"))?;
    let Some(value) = object.get(field) else {
        bail!("line {number} has no field '{field}'");
    };
    Ok(Some(match value {
        serde_json::Value::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }))
}

fn produce(
    log: &EventLog,
    topic: &str,
    key: Option<String>,
    key_field: Option<String>,
    partition: Option<u32>,
) -> anyhow::Result<()> {
    log.topic(topic)?;
    let mut appended = 0usize;
    let mut batch = Vec::with_capacity(PRODUCE_BATCH_LINES);
    let mut failure = None;
    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let number = index + 1;
        let line = match line {
            Ok(line) => line,
            Err(error) => {
                failure = Some(
                    anyhow::Error::new(error)
                        .context(format!("cannot read line {number} of stdin")),
                );
                break;
            }
        };
        let key = match key_of(&line, number, &key, &key_field) {
            Ok(key) => key,
            Err(error) => {
                failure = Some(error);
                break;
            }
        };
        batch.push(ProducerRecord {
            key,
            value: line.into_bytes(),
            timestamp: None,
            partition,
        });
        if batch.len() == PRODUCE_BATCH_LINES {
            appended += batch.len();
            log.append_batch(topic, std::mem::take(&mut batch))?;
        }
    }
    // Lines accepted before a bad one are appended and made durable all the same.
    appended += batch.len();
    log.append_batch(topic, batch)?;
    log.flush()?;
    eprintln!("appended {appended} record(s) to topic '{topic}'");
    match failure {
        Some(error) => Err(error.context(format!("stopped after {appended} record(s)"))),
        None => Ok(()),
    }
}

fn consume(
    log: &EventLog,
    topic: &str,
    from: u64,
    max: Option<u64>,
    only: Option<u32>,
    with_key: bool,
) -> anyhow::Result<()> {
    let ends = log.end_offsets(topic)?;
    let partitions: Vec<u32> = match only {
        Some(partition) if partition as usize >= ends.len() => {
            bail!(
                "topic '{topic}' has no partition {partition} (it has {})",
                ends.len()
            )
        }
        Some(partition) => vec![partition],
        None => (0..ends.len() as u32).collect(),
    };
    let mut remaining = max.unwrap_or(u64::MAX);
    let mut out = BufWriter::new(std::io::stdout().lock());
    for partition in partitions {
        let end = ends[partition as usize];
        let mut next = from.min(end);
        while next < end && remaining > 0 {
            let want = (end - next)
                .min(remaining)
                .min(CONSUME_BATCH_RECORDS as u64) as usize;
            let records = log.read(topic, partition, next, want)?;
            for record in &records {
                let written = if with_key {
                    let key = record.key.as_deref().unwrap_or_default();
                    writeln!(
                        out,
                        "{}\t{}",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(&record.value)
                    )
                } else {
                    writeln!(out, "{}", String::from_utf8_lossy(&record.value))
                };
                if let Err(error) = written {
                    return quiet_if_closed(error);
                }
            }
            next += records.len() as u64;
            remaining -= records.len() as u64;
            if records.is_empty() {
                break;
            }
        }
    }
    out.flush().or_else(quiet_if_closed)
}

/// A reader that went away (`rill log consume | head`) is not an error.
fn quiet_if_closed(error: std::io::Error) -> anyhow::Result<()> {
    if error.kind() == ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(anyhow::Error::new(error).context("cannot write to stdout"))
    }
}

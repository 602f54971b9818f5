//! `rill log …`: create, produce to, consume from, describe and list topics; check a log for
//! damage and salvage what is intact.
//!
//! Every command but `create` opens an existing log and never creates one, so a mistyped
//! `--data-dir` is an error rather than a new empty log. Output goes to stdout for piping;
//! summaries and errors go to stderr. A reader that closes the pipe early (`| head`) ends the
//! command quietly and successfully. `check` and `salvage` read a copy of the log
//! (`EventLog::open_read_only`): they change nothing in it, not even what opening it for
//! writing would repair (see [`crate::log_check`]).

use std::io::{BufRead, BufWriter, ErrorKind, Write};
use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use rill_log::{EventLog, LogError, ProducerRecord, TransactionInfo};

/// Lines appended per batch by `produce`: one atomic append (and one write to the OS) each.
const PRODUCE_BATCH_LINES: usize = 1000;
/// `produce` reports its progress on stderr every this many records, so that a run stopped
/// part-way says how far it got (rerun it with `--skip-lines` that many).
const PRODUCE_PROGRESS_RECORDS: u64 = 100_000;
/// Records read per call by `consume`.
const CONSUME_BATCH_RECORDS: usize = 1000;

#[derive(Subcommand)]
pub(crate) enum LogCommand {
    /// Creates a topic (and the log directory if needed).
    Create {
        /// The topic's name: 1 to 128 characters from A-Z a-z 0-9 . _ -
        topic: String,
        /// How many partitions it has (1 to 1024).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
    /// Appends one record per line of standard input (without the line's end).
    Produce {
        /// The topic.
        topic: String,
        /// A key for every record.
        #[arg(long, conflicts_with = "key_field")]
        key: Option<String>,
        /// Reads each line as a JSON object and keys it by this field (a string as is, any
        /// other value as its JSON text).
        #[arg(long, value_name = "NAME")]
        key_field: Option<String>,
        /// Appends every record to this partition (by default: by key, else round-robin).
        #[arg(long)]
        partition: Option<u32>,
        /// Skips the first N lines of input: resume a run that was stopped after appending N
        /// records (it reports how many as it goes) without appending them twice.
        #[arg(long, value_name = "N", default_value_t = 0)]
        skip_lines: u64,
    },
    /// Prints the records present at the start, one per line, partition by partition in
    /// offset order, then exits. Only committed records, unless `--read-uncommitted`.
    Consume {
        /// The topic.
        topic: String,
        /// The offset each partition starts at (a partition that ends before prints nothing).
        #[arg(long, value_name = "OFFSET", default_value_t = 0)]
        from: u64,
        /// Stops after this many records in all.
        #[arg(long, value_name = "N")]
        max: Option<u64>,
        /// Reads only this partition.
        #[arg(long)]
        partition: Option<u32>,
        /// Prints `key<TAB>value` (an empty key for records without one).
        #[arg(long)]
        with_key: bool,
        /// Also prints the records of open transactions (a running job's exactly-once sink
        /// writes these; they are committed when its next checkpoint completes, or aborted),
        /// after the committed ones, transaction by transaction.
        #[arg(long)]
        read_uncommitted: bool,
    },
    /// Prints a topic's partitions, their end offsets, and its open transactions.
    Describe {
        /// The topic.
        topic: String,
    },
    /// Lists the topics and their partition counts.
    List,
    /// Reports what of the log is intact and what is damaged (exit status 1 if anything is).
    ///
    /// Reads every record, transaction and commit mark and prints, per topic and partition, the
    /// offsets that are intact and those that are damaged or missing, each with the error
    /// naming it; and journals that opening the log would cut short, or that hold damage it
    /// reads around. Changes nothing: it reads a copy of the log (in the temporary directory).
    Check,
    /// Copies every intact record of a damaged log into a new log.
    ///
    /// Topics, partitions, keys and timestamps are kept; a record that comes after damaged or
    /// missing offsets in its partition gets an offset lower by as many. Open transactions and
    /// commit marks are not copied, so a job restored from a checkpoint taken before the damage
    /// refuses the new log as behind what it committed: run it on the new log without its old
    /// checkpoints. Changes nothing in the damaged log (it reads a copy); prints what it copied
    /// and what it skipped.
    Salvage {
        /// The new log's directory: it must not exist, or be empty.
        #[arg(long, value_name = "NEW_DIR")]
        to: std::path::PathBuf,
    },
}

/// Opens an existing log for writing, with a warning for each journal that opening cut short
/// (what it held after the cut is lost: `rill log check` would have reported it untouched).
fn open(data_dir: &Path) -> anyhow::Result<EventLog> {
    let log = EventLog::open(data_dir).map_err(with_damage_hint)?;
    for repair in log.journal_repairs() {
        eprintln!("warning: the log was damaged: {repair}");
    }
    Ok(log)
}

/// `error`, with a pointer to `rill log check` and `rill log salvage` if it says the log is
/// damaged.
fn with_damage_hint(error: LogError) -> anyhow::Error {
    match error {
        LogError::Open { .. } | LogError::Storage { .. } | LogError::Corrupt { .. } => {
            anyhow::anyhow!(
                "{error} (`rill log check` reports what is intact, `rill log salvage` copies it \
                 to a new log)"
            )
        }
        error => error.into(),
    }
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
            skip_lines,
        } => {
            let keys = match (key, key_field) {
                (Some(key), _) => Keys::Constant(key.into_bytes()),
                (None, Some(field)) => Keys::Field(field),
                (None, None) => Keys::None,
            };
            produce(
                &open(data_dir)?,
                &topic,
                (&keys, partition, skip_lines),
                std::io::stdin().lock(),
            )
        }
        LogCommand::Consume {
            topic,
            from,
            max,
            partition,
            with_key,
            read_uncommitted,
        } => {
            let options = ConsumeOptions {
                from,
                max,
                only: partition,
                with_key,
                read_uncommitted,
            };
            let log = open(data_dir)?;
            quiet_if_closed(consume(&log, &topic, &options))
        }
        LogCommand::Describe { topic } => {
            let log = open(data_dir)?;
            let ends = log.end_offsets(&topic)?;
            let open = open_transactions(&log, &topic)?;
            quiet_if_closed(print_lines(|out| {
                writeln!(out, "topic {topic}: {} partition(s)", ends.len())?;
                writeln!(out, "{:>9}  {:>12}", "partition", "end offset")?;
                for (partition, end) in ends.iter().enumerate() {
                    writeln!(out, "{partition:>9}  {end:>12}")?;
                }
                writeln!(out, "{:>9}  {:>12}", "total", ends.iter().sum::<u64>())?;
                writeln!(out, "open transactions: {}", open.len())?;
                for transaction in &open {
                    let state = if transaction.prepared {
                        "prepared"
                    } else {
                        "open"
                    };
                    writeln!(
                        out,
                        "  {}  {state}  {} record(s)",
                        transaction.id, transaction.records
                    )?;
                }
                Ok(())
            }))
        }
        LogCommand::Check => crate::log_check::check(data_dir),
        LogCommand::Salvage { to } => crate::log_check::salvage(data_dir, &to),
        LogCommand::List => {
            let log = open(data_dir)?;
            let topics = log.topics();
            quiet_if_closed(print_lines(|out| {
                for topic in &topics {
                    writeln!(out, "{}\t{} partition(s)", topic.name, topic.partitions)?;
                }
                Ok(())
            }))
        }
    }
}

/// How `produce` keys its records.
enum Keys {
    None,
    Constant(Vec<u8>),
    /// The named field of each line, read as a JSON object.
    Field(String),
}

/// The key of one input line (`number` counts from 1).
fn key_of(line: &[u8], number: u64, keys: &Keys) -> anyhow::Result<Option<Vec<u8>>> {
    let field = match keys {
        Keys::None => return Ok(None),
        Keys::Constant(key) => return Ok(Some(key.clone())),
        Keys::Field(field) => field,
    };
    let json: serde_json::Value =
        serde_json::from_slice(line).with_context(|| format!("line {number} is not JSON"))?;
    let Some(object) = json.as_object() else {
        bail!("line {number} is not a JSON object");
    };
    let Some(value) = object.get(field) else {
        bail!("line {number} has no field '{field}'");
    };
    Ok(Some(match value {
        serde_json::Value::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }))
}

/// Appends one record per line of `input` but the first `skip` lines. On a bad line, the lines
/// before it are appended and flushed all the same, and then the error is returned.
fn produce(
    log: &EventLog,
    topic: &str,
    (keys, partition, skip): (&Keys, Option<u32>, u64),
    mut input: impl BufRead,
) -> anyhow::Result<()> {
    // Check the topic and partition before reading anything, so a typo fails at once.
    let info = log.topic(topic)?;
    if let Some(partition) = partition
        && partition >= info.partitions
    {
        bail!(
            "topic '{topic}' has no partition {partition} (it has {})",
            info.partitions
        );
    }
    let mut appended = 0u64;
    let mut batch = Vec::with_capacity(PRODUCE_BATCH_LINES);
    let mut line = Vec::new();
    let mut number = 0u64;
    let failure = loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break None,
            Ok(_) => {}
            Err(error) => {
                let error = anyhow::Error::new(error)
                    .context(format!("cannot read line {} of stdin", number + 1));
                break Some(error);
            }
        }
        number += 1;
        if number <= skip {
            continue;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let key = match key_of(&line, number, keys) {
            Ok(key) => key,
            Err(error) => break Some(error),
        };
        batch.push(ProducerRecord {
            key,
            value: line.clone(),
            timestamp: None,
            partition,
        });
        if batch.len() == PRODUCE_BATCH_LINES {
            let records = std::mem::replace(&mut batch, Vec::with_capacity(PRODUCE_BATCH_LINES));
            match append(log, topic, records, &mut appended) {
                Ok(()) => {}
                Err(error) => break Some(error),
            }
            if let Err(error) = report_progress(log, topic, skip.min(number), appended) {
                break Some(error);
            }
        }
    };
    // Lines accepted before a bad one are appended and made durable all the same.
    let rest = append(log, topic, batch, &mut appended);
    let outcome = match (failure, rest) {
        (Some(error), Err(rest_error)) => {
            tracing::error!("{rest_error:#}");
            Err(error)
        }
        (Some(error), Ok(())) => Err(error),
        (None, rest) => rest,
    };
    let flushed = log
        .flush()
        .context("cannot make the appended records durable");
    let outcome = match (outcome, flushed) {
        (Err(error), Err(flush_error)) => {
            // Both failed: report the first cause, but do not hide the second.
            tracing::error!("{flush_error:#}");
            Err(error)
        }
        (outcome, flushed) => outcome.and(flushed),
    };
    let through = skip.min(number) + appended;
    eprintln!("appended {appended} record(s) to topic '{topic}'");
    outcome.with_context(|| {
        format!(
            "stopped after {appended} record(s): input lines 1..={through} are in the log; \
             resume with --skip-lines {through}"
        )
    })
}

/// Every `PRODUCE_PROGRESS_RECORDS` records, makes what was appended durable and says how far
/// into the input that is: what `--skip-lines` resumes from.
fn report_progress(log: &EventLog, topic: &str, skipped: u64, appended: u64) -> anyhow::Result<()> {
    if !appended.is_multiple_of(PRODUCE_PROGRESS_RECORDS) {
        return Ok(());
    }
    log.flush()
        .context("cannot make the appended records durable")?;
    eprintln!(
        "appended {appended} record(s) to topic '{topic}' so far, durably: input lines \
         1..={} are in the log",
        skipped + appended
    );
    Ok(())
}

/// Appends a batch, counting what was appended.
fn append(
    log: &EventLog,
    topic: &str,
    records: Vec<ProducerRecord>,
    appended: &mut u64,
) -> anyhow::Result<()> {
    let count = records.len() as u64;
    log.append_batch(topic, records).with_context(|| {
        format!(
            "cannot append records {}..={} to topic '{topic}'",
            *appended + 1,
            *appended + count
        )
    })?;
    *appended += count;
    Ok(())
}

struct ConsumeOptions {
    from: u64,
    max: Option<u64>,
    only: Option<u32>,
    with_key: bool,
    read_uncommitted: bool,
}

/// The open transactions that write to `topic`.
fn open_transactions(log: &EventLog, topic: &str) -> anyhow::Result<Vec<TransactionInfo>> {
    let mut open = log.transactions("")?;
    open.retain(|transaction| transaction.topic == topic);
    Ok(open)
}

/// Prints one record's line: `value`, or `key<TAB>value`.
fn print_record(
    out: &mut impl Write,
    key: Option<&[u8]>,
    value: &[u8],
    with_key: bool,
) -> std::io::Result<()> {
    if with_key {
        out.write_all(String::from_utf8_lossy(key.unwrap_or_default()).as_bytes())?;
        out.write_all(b"\t")?;
    }
    out.write_all(String::from_utf8_lossy(value).as_bytes())?;
    out.write_all(b"\n")
}

fn consume(log: &EventLog, topic: &str, options: &ConsumeOptions) -> anyhow::Result<()> {
    // The end offsets at the start bound the whole read: records appended meanwhile are left
    // for the next run, so the command always ends.
    let ends = log.end_offsets(topic)?;
    let partitions: Vec<u32> = match options.only {
        Some(partition) if partition as usize >= ends.len() => {
            bail!(
                "topic '{topic}' has no partition {partition} (it has {})",
                ends.len()
            )
        }
        Some(partition) => vec![partition],
        None => (0..ends.len() as u32).collect(),
    };
    let mut remaining = options.max.unwrap_or(u64::MAX);
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    for partition in partitions {
        let end = ends[partition as usize];
        let mut next = options.from.min(end);
        while next < end && remaining > 0 {
            let want = (end - next)
                .min(remaining)
                .min(CONSUME_BATCH_RECORDS as u64) as usize;
            let records = log
                .read(topic, partition, next, want)
                .map_err(with_damage_hint)?;
            if records.is_empty() {
                break;
            }
            for record in &records {
                print_record(
                    &mut out,
                    record.key.as_deref(),
                    &record.value,
                    options.with_key,
                )?;
            }
            next += records.len() as u64;
            remaining -= records.len() as u64;
        }
    }
    if options.read_uncommitted {
        for transaction in open_transactions(log, topic)? {
            for record in log.staged(&transaction.id)? {
                if remaining == 0 {
                    break;
                }
                // A record whose partition the commit will choose matches no `--partition`.
                if options.only.is_some() && record.partition != options.only {
                    continue;
                }
                print_record(
                    &mut out,
                    record.key.as_deref(),
                    &record.value,
                    options.with_key,
                )?;
                remaining -= 1;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Writes to stdout through a buffer.
pub(crate) fn print_lines(
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    write(&mut out)?;
    out.flush()?;
    Ok(())
}

/// A reader that went away (`rill log consume | head`) is not an error.
pub(crate) fn quiet_if_closed(outcome: anyhow::Result<()>) -> anyhow::Result<()> {
    match outcome {
        Err(error) => match error.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == ErrorKind::BrokenPipe => Ok(()),
            Some(_) => Err(error.context("cannot write to stdout")),
            None => Err(error),
        },
        Ok(()) => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn key_fields_take_strings_as_is_and_other_values_as_json() {
        let keys = Keys::Field("k".to_owned());
        let key = |line: &str| key_of(line.as_bytes(), 7, &keys);
        assert_eq!(key(r#"{"k":"a b"}"#).unwrap(), Some(b"a b".to_vec()));
        assert_eq!(key(r#"{"k":12}"#).unwrap(), Some(b"12".to_vec()));
        assert_eq!(
            key(r#"{"k":{"x":[1,true]}}"#).unwrap(),
            Some(br#"{"x":[1,true]}"#.to_vec())
        );
        assert_eq!(key(r#"{"k":null}"#).unwrap(), Some(b"null".to_vec()));
        let error = |line: &str| format!("{:#}", key(line).unwrap_err());
        assert!(error("nope").starts_with("line 7 is not JSON"));
        assert_eq!(error("[1]"), "line 7 is not a JSON object");
        assert_eq!(error(r#"{"j":1}"#), "line 7 has no field 'k'");
        assert_eq!(key_of(b"x", 1, &Keys::None).unwrap(), None);
        assert_eq!(
            key_of(b"x", 1, &Keys::Constant(b"c".to_vec())).unwrap(),
            Some(b"c".to_vec())
        );
    }
}

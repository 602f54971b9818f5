//! `rill log check` and `rill log salvage`: what of a log is intact, and a copy of it.
//!
//! Both open the log read-only (`EventLog::open_read_only`: a copy, so that nothing in the log
//! changes, not even what opening it for writing would cut from a journal) and print one report:
//! what opening found (journals cut short, damaged journal batches read around, topics that
//! cannot be read), then per topic and partition the offsets intact and those damaged or
//! missing, with the error naming each, then the open transactions and commit marks. `check`
//! fails when anything is damaged; `salvage` copies the intact records into a new log
//! (`EventLog::salvage_into`) and says what it left behind.

use std::io::Write;
use std::ops::Range;
use std::path::Path;

use anyhow::{Context, bail};
use rill_log::{EventLog, LogCheck};

use crate::log_cmd::{print_lines, quiet_if_closed};

pub(crate) fn check(data_dir: &Path) -> anyhow::Result<()> {
    let log = open_read_only(data_dir)?;
    let check = log.check();
    quiet_if_closed(print_lines(|out| print_report(out, &log, &check)))?;
    let problems = problems(&log, &check);
    if problems > 0 {
        bail!(
            "the log at {} is damaged: {problems} problem(s), listed above; `rill log salvage \
             --to NEW_DIR` copies what is intact into a new log",
            data_dir.display()
        );
    }
    Ok(())
}

pub(crate) fn salvage(data_dir: &Path, to: &Path) -> anyhow::Result<()> {
    if std::fs::read_dir(to).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "{} is not empty: give salvage a new directory for the new log",
            to.display()
        );
    }
    let log = open_read_only(data_dir)?;
    let target = EventLog::open_or_create(to)
        .with_context(|| format!("cannot create the new log at {}", to.display()))?;
    let check = log
        .salvage_into(&target)
        .with_context(|| format!("cannot copy into the new log at {}", to.display()))?;
    quiet_if_closed(print_lines(|out| print_report(out, &log, &check)))?;
    let copied: u64 = check
        .partitions
        .iter()
        .map(rill_log::PartitionCheck::intact_records)
        .sum();
    eprintln!(
        "copied {copied} record(s) of {} topic(s) to {}; skipped {} problem(s) listed above; \
         not copied: {} open transaction(s), {} commit mark(s)",
        log.topics().len(),
        to.display(),
        problems(&log, &check),
        check.transactions.len(),
        check.commit_marks.len(),
    );
    Ok(())
}

fn open_read_only(data_dir: &Path) -> anyhow::Result<EventLog> {
    EventLog::open_read_only(data_dir)
        .with_context(|| format!("cannot read the log at {}", data_dir.display()))
}

/// How many things the report lists as damaged.
fn problems(log: &EventLog, check: &LogCheck) -> usize {
    log.journal_repairs().len()
        + log.skipped_batches().len()
        + log.unreadable_topics().len()
        + check
            .partitions
            .iter()
            .map(|partition| partition.damaged.len())
            .sum::<usize>()
        + check.damaged.len()
}

/// `from to last` for a range of offsets, or `no offset` for an empty one.
fn offsets(range: &Range<u64>) -> String {
    match range.end.checked_sub(1) {
        Some(last) if last >= range.start => format!("offsets {} to {last}", range.start),
        _ => "no offset".to_owned(),
    }
}

fn print_report(out: &mut dyn Write, log: &EventLog, check: &LogCheck) -> std::io::Result<()> {
    writeln!(out, "log {}", log.path().display())?;
    for repair in log.journal_repairs() {
        writeln!(out, "DAMAGED {repair}")?;
    }
    for batch in log.skipped_batches() {
        writeln!(out, "DAMAGED {batch}")?;
    }
    for (topic, error) in log.unreadable_topics() {
        writeln!(out, "DAMAGED topic '{topic}' cannot be read: {error}")?;
    }
    for partition in &check.partitions {
        let intact: Vec<String> = partition.intact.iter().map(offsets).collect();
        writeln!(
            out,
            "topic '{}' partition {}: end offset {}, {} record(s) intact{}{}",
            partition.topic,
            partition.partition,
            partition.end_offset,
            partition.intact_records(),
            if intact.is_empty() { "" } else { ": " },
            intact.join(", "),
        )?;
        for (range, error) in &partition.damaged {
            writeln!(out, "  DAMAGED {}: {error}", offsets(range))?;
        }
    }
    writeln!(
        out,
        "open transactions: {} intact; commit marks: {} intact",
        check.transactions.len(),
        check.commit_marks.len()
    )?;
    for error in &check.damaged {
        writeln!(out, "DAMAGED {error}")?;
    }
    Ok(())
}

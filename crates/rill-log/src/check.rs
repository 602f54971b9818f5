//! Reading everything a log holds, past any damage, to say what is intact and what is not.
//!
//! A read ([`EventLog::read`]) stops at the first damage: it never passes over a record.
//! [`EventLog::check`] reads on: every entry of every partition of every topic, every open
//! transaction and every commit mark, and reports per partition the offset ranges whose records
//! read back intact and those damaged or missing, each with the error naming it. Where the
//! storage cannot read some entries (a damaged block of a table file), it reads the entries
//! before them one at a time and finds the first it can read after them, so that one damaged
//! block costs only the entries in it. `rill log
//! check` prints it; [`crate::salvage`] copies the intact records into a new log. Both mean a
//! log opened with [`EventLog::open_read_only`], which also reads around damaged journals and
//! topics and reports them ([`EventLog::journal_repairs`], [`EventLog::skipped_batches`],
//! [`EventLog::unreadable_topics`]).

use std::convert::Infallible;
use std::ops::Range;

use crate::error::LogError;
use crate::log::{EntryDamage, EventLog, RECORDS, Topic, open_entry, partition_prefix, record_key};
use crate::record::LogRecord;
use crate::transaction::TransactionInfo;

/// Entries of `rill.records` a walk asks the storage for at a time.
const WALK_ENTRIES: usize = 64;

/// A run of a partition, as a walk finds it.
enum Piece {
    /// Consecutive records that read back intact (at least one).
    Intact(Vec<LogRecord>),
    /// Offsets that are damaged or missing (empty when the damage holds no offset: a key of
    /// the wrong shape), and the error naming them.
    Damaged(Range<u64>, LogError),
}

/// What one partition holds.
#[derive(Debug)]
pub struct PartitionCheck {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Its end offset: one past the last offset stored.
    pub end_offset: u64,
    /// The offset ranges whose records read back intact, in order.
    pub intact: Vec<Range<u64>>,
    /// The offset ranges that are damaged or missing, in order, each with the error naming it.
    pub damaged: Vec<(Range<u64>, LogError)>,
}

impl PartitionCheck {
    /// How many records read back intact.
    pub fn intact_records(&self) -> u64 {
        self.intact
            .iter()
            .map(|range| range.end - range.start)
            .sum()
    }
}

/// What a log holds: each partition's intact and damaged offsets, the open transactions and
/// commit marks, and the damage found reading them.
#[derive(Debug)]
pub struct LogCheck {
    /// Every partition of every readable topic, by topic and partition.
    pub partitions: Vec<PartitionCheck>,
    /// The open transactions that read back intact, by id.
    pub transactions: Vec<TransactionInfo>,
    /// The commit marks that read back intact: each writer's newest committed checkpoint.
    pub commit_marks: Vec<(String, u64)>,
    /// Transactions and commit marks that are damaged, or could not be listed.
    pub damaged: Vec<LogError>,
}

impl LogCheck {
    /// Whether anything the check read is damaged or missing (what opening found is on the
    /// log: see [`EventLog::is_damaged`]).
    pub fn found_damage(&self) -> bool {
        !self.damaged.is_empty()
            || self
                .partitions
                .iter()
                .any(|partition| !partition.damaged.is_empty())
    }
}

impl EventLog {
    /// Whether opening found damage: a journal cut short or a damaged batch left out (see
    /// [`EventLog::open_read_only`]), a topic it could not recover.
    pub fn is_damaged(&self) -> bool {
        !self.journal_repairs().is_empty()
            || !self.skipped_batches().is_empty()
            || !self.unreadable_topics().is_empty()
    }

    /// Reads everything the log holds and reports what is intact and what is damaged (see
    /// [the module](crate::check)). Reads only; fails on nothing but what it reports.
    pub fn check(&self) -> LogCheck {
        let mut partitions = Vec::new();
        for info in self.topics() {
            let Ok(handle) = self.topic_handle(&info.name) else {
                continue;
            };
            for partition in 0..info.partitions {
                let checked = self.check_partition(&handle, partition, |_| Ok::<_, Infallible>(()));
                partitions.push(checked.unwrap_or_else(|never| match never {}));
            }
        }
        self.check_the_rest(partitions)
    }

    /// What partition `partition` of `handle` holds; its intact records, run by run in offset
    /// order, go to `intact` as well. Stops at the first error of `intact`.
    pub(crate) fn check_partition<E>(
        &self,
        handle: &Topic,
        partition: u32,
        mut intact: impl FnMut(Vec<LogRecord>) -> Result<(), E>,
    ) -> Result<PartitionCheck, E> {
        let mut check = PartitionCheck {
            topic: handle.info.name.clone(),
            partition,
            end_offset: handle.end_offset(partition).unwrap_or(0),
            intact: Vec::new(),
            damaged: Vec::new(),
        };
        self.walk_partition(handle, partition, |piece| {
            match piece {
                Piece::Intact(records) => {
                    let range = records[0].offset..records[records.len() - 1].offset + 1;
                    match check.intact.last_mut() {
                        Some(last) if last.end == range.start => last.end = range.end,
                        _ => check.intact.push(range),
                    }
                    intact(records)?;
                }
                Piece::Damaged(range, error) => check.damaged.push((range, error)),
            }
            Ok(())
        })?;
        Ok(check)
    }

    /// The check of the log whose partitions are checked already: its transactions and commit
    /// marks are read now.
    pub(crate) fn check_the_rest(&self, partitions: Vec<PartitionCheck>) -> LogCheck {
        let mut damaged = Vec::new();
        let transactions = self.check_transactions(&mut damaged);
        let commit_marks = self.check_commit_marks(&mut damaged);
        LogCheck {
            partitions,
            transactions,
            commit_marks,
            damaged,
        }
    }

    /// Calls `each` with the runs of partition `partition` of `handle`, in offset order:
    /// records that read back intact, and offsets that are damaged or missing. Stops at the
    /// first error of `each`.
    fn walk_partition<E>(
        &self,
        handle: &Topic,
        partition: u32,
        mut each: impl FnMut(Piece) -> Result<(), E>,
    ) -> Result<(), E> {
        let topic = &handle.info.name;
        let end = handle.end_offset(partition).unwrap_or(0);
        let corrupt = |reason: String| LogError::Corrupt {
            topic: topic.clone(),
            reason: format!("partition {partition}: {reason}"),
        };
        let prefix = partition_prefix(&handle.key_prefix, partition);
        let mut from = prefix.clone();
        // The first offset not accounted for yet.
        let mut next = 0u64;
        loop {
            let scan = |limit| self.inner.storage.scan(RECORDS, &prefix, &from, limit);
            // Where the storage cannot read a run of entries, one at a time up to the damage.
            let (entries, limit) = match scan(WALK_ENTRIES) {
                Ok(entries) => (entries, WALK_ENTRIES),
                Err(error) => match scan(1) {
                    Ok(entries) => (entries, 1),
                    Err(_) => {
                        let doing = format!(
                            "reading topic '{topic}' partition {partition} from offset {next}"
                        );
                        let error = self.storage_error(error, doing);
                        match self.readable_after(handle, partition, next, end) {
                            Some((first, key)) if key > from => {
                                each(Piece::Damaged(next..first, error))?;
                                (next, from) = (first, key);
                                continue;
                            }
                            _ => return each(Piece::Damaged(next..end.max(next), error)),
                        }
                    }
                },
            };
            let Some((last_key, _)) = entries.last() else {
                return Ok(());
            };
            // The smallest key after the last one read.
            from = [last_key.as_slice(), &[0]].concat();
            let more = entries.len() == limit;
            for (key, value) in &entries {
                let (first, last, records) = match open_entry(key, value, &prefix) {
                    Ok(entry) => entry,
                    Err(EntryDamage::Key { len }) => {
                        let reason = format!("an entry key of {len} bytes after offset {next}");
                        each(Piece::Damaged(next..next, corrupt(reason)))?;
                        continue;
                    }
                    Err(EntryDamage::Value { last, reason }) => {
                        let range = next..(last + 1).max(next);
                        let reason = format!(
                            "offsets {next} to {last}, in the entry that ends at offset {last}: \
                             {reason}"
                        );
                        each(Piece::Damaged(range.clone(), corrupt(reason)))?;
                        next = range.end;
                        continue;
                    }
                };
                if first > next {
                    let reason = format!(
                        "offsets {next} to {} are missing (the next entry holds offsets {first} \
                         to {last})",
                        first - 1
                    );
                    each(Piece::Damaged(next..first, corrupt(reason)))?;
                    next = first;
                }
                let mut intact = Vec::with_capacity(records.len() as usize);
                let mut damage = None;
                for (offset, record) in (first..).zip(records) {
                    match record {
                        // Offsets before `next` were reported already (an entry overlapping
                        // the one before it).
                        Ok(_) if offset < next => {}
                        Ok((_, record, _)) => intact.push(LogRecord {
                            partition,
                            offset,
                            key: record.key.map(<[u8]>::to_vec),
                            value: record.value.to_vec(),
                            timestamp: record.timestamp,
                        }),
                        Err(reason) => {
                            let reason = format!(
                                "offsets {offset} to {last}, in the entry that ends at offset \
                                 {last}: {reason}"
                            );
                            damage = Some((offset.max(next)..last + 1, corrupt(reason)));
                            break;
                        }
                    }
                }
                if !intact.is_empty() {
                    each(Piece::Intact(intact))?;
                }
                if let Some((range, error)) = damage {
                    each(Piece::Damaged(range, error))?;
                }
                next = next.max(last + 1);
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// Where a walk of `partition` goes on past entries the storage cannot read from offset
    /// `next`: the first offset it can read after them and the key of the entry holding it;
    /// `None` if it reads nothing more before `end`. Probes offsets past `next` at doubling
    /// steps until a read succeeds, then halves back to the first that does.
    fn readable_after(
        &self,
        handle: &Topic,
        partition: u32,
        next: u64,
        end: u64,
    ) -> Option<(u64, Vec<u8>)> {
        let prefix = partition_prefix(&handle.key_prefix, partition);
        let probe = |offset: u64| -> Option<(u64, Vec<u8>)> {
            let key = record_key(&handle.key_prefix, partition, offset);
            let entries = self.inner.storage.scan(RECORDS, &prefix, &key, 1).ok()?;
            let (key, value) = entries.into_iter().next()?;
            let first = open_entry(&key, &value, &prefix).map_or(offset, |(first, ..)| first);
            Some((first.max(next), key))
        };
        let last = end.checked_sub(1).filter(|&last| last > next)?;
        let (mut unreadable, mut step) = (next, 1u64);
        let (mut readable, mut found) = loop {
            let offset = next.saturating_add(step).min(last);
            if let Some(found) = probe(offset) {
                break (offset, found);
            }
            if offset == last {
                return None;
            }
            (unreadable, step) = (offset, step.saturating_mul(2));
        };
        while readable - unreadable > 1 {
            let middle = unreadable + (readable - unreadable) / 2;
            match probe(middle) {
                Some(earlier) => (readable, found) = (middle, earlier),
                None => unreadable = middle,
            }
        }
        Some(found)
    }
}

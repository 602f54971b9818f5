//! Transactions: records staged outside a topic, then committed into it or aborted.
//!
//! This is what a two-phase-commit sink needs from the log. A writer **stages** records under
//! a transaction id of its choosing; **prepares** the transaction (the staged records become
//! durable: fsync) when its checkpoint's barrier passes; and **commits** it once the checkpoint
//! is complete, or **aborts** it. Readers of a topic see committed records only (read
//! committed): a committed transaction's records get their offsets when it commits, and no
//! reader waits for an open one. [`EventLog::staged`] shows what is staged, for tools that want
//! to read uncommitted data.
//!
//! # Commits in pieces
//! A commit moves the staged entries into the topic in **pieces** of up to
//! [`EventLog::set_commit_piece_entries`] entries (64 by default; an entry holds what one
//! `stage` call staged: a sink stages a batch at a time), each in one atomic batch that appends the piece's records and deletes
//! their staged copies — so the memory a commit takes is bounded by a piece, not by the
//! transaction. A commit of several pieces reads every staged entry once before the first,
//! checking it, so a damaged transaction is refused with nothing moved (one of a single piece
//! checks it as it encodes it, before its one write). The first piece carries the commit
//! mark: from there on the commit is **decided**. A crash between pieces leaves the
//! transaction partly committed (its remaining entries keep their sequence numbers, so the
//! log knows how many moved); committing it again moves the rest, and aborting it is refused.
//! A reader may meanwhile see the first pieces of a transaction before the rest, but never a
//! record of a transaction that is aborted.
//!
//! Committing is idempotent: a transaction that is not staged (never was, or was committed or
//! aborted already) commits nothing. A writer that restarts from a checkpoint commits the
//! transactions that checkpoint prepared again — whichever of those committed before the
//! crash commit nothing the second time, or only the rest — and aborts the others.
//!
//! # On disk
//! Key space `rill.transactions` maps a transaction id to its metadata (topic, prepared, record
//! count), enveloped; key space `rill.staged` holds the records of each stage, in one entry,
//! keyed by the id, a zero byte and the big-endian sequence number of the entry's first record
//! in the transaction (ids contain no zero byte, so one id's entries never interleave with
//! another's). An entry is an envelope of staged records: each record's stored form in the
//! topic with its target partition (`None` for round-robin), so that a commit groups them into
//! the topic's entries without encoding them again.
//!
//! Key space `rill.commit-marks` maps a writer (a sink of a job: `<job>/<uid>/`) to the newest
//! checkpoint whose output it committed, enveloped. A commit given a [`CommitMark`] updates it
//! in the atomic batch of its first piece, so the mark and the commit it speaks of are lost or
//! kept together (the rest of a transaction cut short stays staged until committed), and it
//! never goes back. A sink restored from an older checkpoint — or from
//! none — compares it with where it starts, and a sink that finds it older than its checkpoint
//! knows the log lost committed output.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rill_core::codec::{Envelope, Kind};
use rill_core::storage::{Durability, Entry, WriteOp};
use rill_core::transactional::CommitMark;
use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::log::{COMMIT_MARKS, EventLog, STAGED, TRANSACTIONS, lock, now_ms, placement};
use crate::record::{EncodedRecords, ProducerRecord, open_staged, seal_staged};
use crate::wire::StoredRecord;

const TRANSACTION_ID_LEN_MAX: usize = 512;

/// What the log knows of an open transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionInfo {
    /// The transaction's id.
    pub id: String,
    /// The topic its records go to.
    pub topic: String,
    /// Whether it was prepared (its records are durable and wait for commit or abort).
    pub prepared: bool,
    /// How many records it was given (one whose commit was cut short by a crash holds only
    /// the rest).
    pub records: u64,
}

/// A record staged in a transaction: it has no offset until the transaction commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedRecord {
    /// Its partition; `None` if the commit chooses it round-robin.
    pub partition: Option<u32>,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub value: Vec<u8>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A transaction's metadata as stored (enveloped), keyed by its id.
#[derive(Serialize, Deserialize)]
struct TransactionMeta {
    topic: String,
    prepared: bool,
    records: u64,
}

/// Values listed from storage, each as read or what is wrong with it; or why they could not be
/// listed.
type Listed<T> = Result<Vec<Result<T, LogError>>, LogError>;

/// A writer's newest committed checkpoint as stored (enveloped), keyed by the writer.
#[derive(Serialize, Deserialize)]
struct StoredMark {
    checkpoint: u64,
}

/// How many staged entries a commit moves in one atomic write by default.
const COMMIT_PIECE_ENTRIES: usize = 64;

/// The lock that orders changes to transactions, and how commits cut them.
pub(crate) struct Transactions {
    /// Held while a transaction's metadata is read and changed.
    changes: Mutex<()>,
    /// How many staged entries a commit moves in one atomic write.
    piece_entries: AtomicUsize,
}

impl Default for Transactions {
    fn default() -> Self {
        Transactions {
            changes: Mutex::new(()),
            piece_entries: AtomicUsize::new(COMMIT_PIECE_ENTRIES),
        }
    }
}

fn staged_prefix(id: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(id.len() + 1);
    prefix.extend_from_slice(id.as_bytes());
    prefix.push(0);
    prefix
}

fn staged_key(id: &str, sequence: u64) -> Vec<u8> {
    let mut key = staged_prefix(id);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// The sequence number of a staged entry's first record, from its key.
fn staged_sequence(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn check_id(id: &str) -> Result<(), LogError> {
    if id.is_empty() || id.len() > TRANSACTION_ID_LEN_MAX || id.chars().any(char::is_control) {
        return Err(LogError::InvalidTransactionId(id.to_owned()));
    }
    Ok(())
}

impl EventLog {
    fn transaction_meta(&self, id: &str) -> Result<Option<TransactionMeta>, LogError> {
        let Some(bytes) = self
            .inner
            .storage
            .get(TRANSACTIONS, id.as_bytes())
            .map_err(|e| self.storage_error(e, format!("reading transaction '{id}'")))?
        else {
            return Ok(None);
        };
        let meta = Envelope::open(Kind::LogTransaction, &bytes).map_err(|error| {
            LogError::CorruptTransaction {
                id: id.to_owned(),
                reason: error.to_string(),
            }
        })?;
        Ok(Some(meta))
    }

    fn meta_write(id: &str, meta: &TransactionMeta) -> Result<WriteOp, LogError> {
        let value = Envelope::seal(Kind::LogTransaction, meta).map_err(|error| {
            LogError::CorruptTransaction {
                id: id.to_owned(),
                reason: format!("cannot encode its metadata: {error}"),
            }
        })?;
        Ok(WriteOp::Put {
            space: TRANSACTIONS,
            key: id.as_bytes().to_vec(),
            value,
        })
    }

    /// Adds records to transaction `id` for `topic`, opening the transaction if it is not.
    ///
    /// Staged records survive a crash of the process; [`EventLog::prepare`] makes them survive
    /// a crash of the machine. Fails if the id is invalid, the topic unknown, a record's
    /// partition out of range, or the transaction is open for another topic or prepared
    /// already; then nothing is staged.
    pub fn stage(&self, id: &str, topic: &str, records: &[ProducerRecord]) -> Result<(), LogError> {
        check_id(id)?;
        let handle = self.topic_handle(topic)?;
        let now = now_ms();
        let staged = (!records.is_empty())
            .then(|| seal_staged(records, |record| placement(&handle.info, record, now)))
            .transpose()?;
        let transactions = &self.inner.transactions;
        let _changes = lock(&transactions.changes);
        let mut meta = match self.transaction_meta(id)? {
            Some(meta) if meta.topic != topic => {
                return Err(LogError::TransactionConflict {
                    id: id.to_owned(),
                    reason: format!("it is open for topic '{}'", meta.topic),
                });
            }
            Some(meta) if meta.prepared => {
                return Err(LogError::TransactionConflict {
                    id: id.to_owned(),
                    reason: "it is prepared already".to_owned(),
                });
            }
            Some(meta) => meta,
            None => TransactionMeta {
                topic: topic.to_owned(),
                prepared: false,
                records: 0,
            },
        };
        let mut batch = Vec::with_capacity(2);
        if let Some(value) = staged {
            batch.push(WriteOp::Put {
                space: STAGED,
                key: staged_key(id, meta.records),
                value,
            });
            meta.records += records.len() as u64;
        }
        batch.push(Self::meta_write(id, &meta)?);
        self.inner
            .storage
            .write(batch, Durability::Buffered)
            .map_err(|e| {
                let doing = format!("staging records of transaction '{id}' for topic '{topic}'");
                self.storage_error(e, doing)
            })
    }

    /// Prepares transaction `id`: it takes no more records, and what it holds is durable (it
    /// survives a crash of the machine) when this returns. Preparing twice is harmless.
    pub fn prepare(&self, id: &str) -> Result<(), LogError> {
        check_id(id)?;
        let transactions = &self.inner.transactions;
        {
            let _changes = lock(&transactions.changes);
            let Some(mut meta) = self.transaction_meta(id)? else {
                return Err(LogError::UnknownTransaction(id.to_owned()));
            };
            if !meta.prepared {
                meta.prepared = true;
                self.inner
                    .storage
                    .write(vec![Self::meta_write(id, &meta)?], Durability::Buffered)
                    .map_err(|e| self.storage_error(e, format!("preparing transaction '{id}'")))?;
            }
        }
        if self.prepare_skips_sync() {
            return Ok(());
        }
        self.flush()
    }

    /// Breaks the log on purpose, for the simulator to catch (once per log: the first
    /// defect planted stays).
    #[cfg(feature = "defects")]
    pub fn plant_defect(&self, defect: rill_core::defects::Defect) {
        use rill_core::defects::Defect;
        if matches!(
            defect,
            Defect::LogPrepareSkipsSync | Defect::LogCommitMovesInTwoWrites
        ) {
            let _planted = self.inner.defect.set(defect);
        }
    }

    /// Whether a planted defect moves each piece of a commit in two writes.
    #[cfg(feature = "defects")]
    fn commit_moves_in_two_writes(&self) -> bool {
        self.inner.defect.get() == Some(&rill_core::defects::Defect::LogCommitMovesInTwoWrites)
    }

    #[cfg(not(feature = "defects"))]
    fn commit_moves_in_two_writes(&self) -> bool {
        false
    }

    /// Whether a planted defect leaves prepares unsynced.
    #[cfg(feature = "defects")]
    fn prepare_skips_sync(&self) -> bool {
        self.inner.defect.get() == Some(&rill_core::defects::Defect::LogPrepareSkipsSync)
    }

    #[cfg(not(feature = "defects"))]
    fn prepare_skips_sync(&self) -> bool {
        false
    }

    /// Sets how many staged entries (one per `stage` call) a commit moves in one atomic write
    /// (64 by default). Fewer bound a commit's memory further, at the cost of more writes; the
    /// simulator's `crash-during-commit` scenarios take a few, so that their crashes fall
    /// between the pieces of a transaction.
    pub fn set_commit_piece_entries(&self, entries: NonZeroUsize) {
        self.inner
            .transactions
            .piece_entries
            .store(entries.get(), Ordering::Relaxed);
    }

    /// Up to `limit` entries of staged records of transaction `id` from key `from` on, in
    /// staging order: keys and values.
    fn staged_entries(&self, id: &str, from: &[u8], limit: usize) -> Result<Vec<Entry>, LogError> {
        self.inner
            .storage
            .scan(STAGED, &staged_prefix(id), from, limit)
            .map_err(|e| {
                self.storage_error(
                    e,
                    format!("reading the staged records of transaction '{id}'"),
                )
            })
    }

    /// Where transaction `id`'s staged entries start: the sequence number of the first record
    /// left (more than 0 once a commit moved pieces of it), `None` if none is left.
    fn first_staged(&self, id: &str) -> Result<Option<u64>, LogError> {
        let first = self
            .inner
            .storage
            .keys(STAGED, &staged_prefix(id), &[], 1)
            .map_err(|e| {
                self.storage_error(e, format!("reading where transaction '{id}' starts"))
            })?;
        first
            .first()
            .map(|key| {
                staged_sequence(key).ok_or_else(|| LogError::CorruptTransaction {
                    id: id.to_owned(),
                    reason: format!("a staged entry has a key of {} bytes", key.len()),
                })
            })
            .transpose()
    }

    /// Calls `each` with every record staged in transaction `id` that `entries` hold, in
    /// staging order: its partition (`None`: round-robin at commit), the record, and its
    /// stored form. Returns how many there were.
    fn for_each_staged(
        &self,
        id: &str,
        entries: &[Entry],
        mut each: impl FnMut(Option<u32>, StoredRecord<'_>, &[u8]) -> Result<(), LogError>,
    ) -> Result<u64, LogError> {
        let mut count = 0;
        for (key, value) in entries {
            let corrupt = |count: u64, reason: String| LogError::CorruptTransaction {
                id: id.to_owned(),
                reason: format!(
                    "staged record {}: {reason}",
                    staged_sequence(key).unwrap_or(0).saturating_add(count)
                ),
            };
            let records = open_staged(value).map_err(|reason| corrupt(0, reason))?;
            for (index, decoded) in (0..).zip(records) {
                let (partition, record, stored) =
                    decoded.map_err(|reason| corrupt(index, reason))?;
                each(partition, record, stored)?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Calls `each` with every record staged in transaction `id`, piece by piece (so that the
    /// whole transaction is never in memory at once); returns how many there were.
    fn walk_staged(
        &self,
        id: &str,
        mut each: impl FnMut(Option<u32>, StoredRecord<'_>, &[u8]) -> Result<(), LogError>,
    ) -> Result<u64, LogError> {
        let piece = self.piece_entries();
        let mut from = Vec::new();
        let mut count = 0;
        loop {
            let mut entries = self.staged_entries(id, &from, piece + 1)?;
            let next = (entries.len() > piece).then(|| entries.pop());
            count += self.for_each_staged(id, &entries, &mut each)?;
            match next.flatten() {
                Some((key, _)) => from = key,
                None => return Ok(count),
            }
        }
    }

    fn piece_entries(&self) -> usize {
        self.inner
            .transactions
            .piece_entries
            .load(Ordering::Relaxed)
            .max(1)
    }

    /// Checks that the records staged in transaction `id` (those left, after `first`) read
    /// back and are as many as its metadata counts; returns how many are left.
    fn check_staged(
        &self,
        id: &str,
        meta: &TransactionMeta,
        first: Option<u64>,
        mut each: impl FnMut(Option<u32>, StoredRecord<'_>, &[u8]) -> Result<(), LogError>,
    ) -> Result<u64, LogError> {
        let left = self.walk_staged(id, &mut each)?;
        check_left(id, meta, first, left)?;
        Ok(left)
    }

    /// Commits transaction `id`: its records are appended to its topic and its staged copies
    /// deleted, piece by piece (see the module doc); nothing moves unless every staged record
    /// reads back. Returns how many records were appended: 0 if the transaction is not staged
    /// (never was, or was committed or aborted before), which makes commits idempotent; the
    /// rest only, if a crash cut an earlier commit short.
    pub fn commit(&self, id: &str) -> Result<u64, LogError> {
        self.commit_marked(id, None)
    }

    /// The newest checkpoint whose output `writer` committed, by its commit marks.
    pub fn committed_checkpoint(&self, writer: &str) -> Result<Option<u64>, LogError> {
        let Some(bytes) = self
            .inner
            .storage
            .get(COMMIT_MARKS, writer.as_bytes())
            .map_err(|e| self.storage_error(e, format!("reading the commit mark of '{writer}'")))?
        else {
            return Ok(None);
        };
        let mark: StoredMark = Envelope::open(Kind::LogCommitMark, &bytes).map_err(|error| {
            LogError::CorruptCommitMark {
                writer: writer.to_owned(),
                reason: error.to_string(),
            }
        })?;
        Ok(Some(mark.checkpoint))
    }

    /// Every writer's newest committed checkpoint, by writer.
    pub fn commit_marks(&self) -> Result<Vec<(String, u64)>, LogError> {
        self.each_commit_mark()?.into_iter().collect()
    }

    /// Every writer's commit mark, by writer, or what is wrong with it.
    fn each_commit_mark(&self) -> Listed<(String, u64)> {
        let keys = self
            .inner
            .storage
            .keys(COMMIT_MARKS, &[], &[], usize::MAX)
            .map_err(|e| {
                self.storage_error(e, format!("listing the commit marks ({COMMIT_MARKS})"))
            })?;
        let mut marks = Vec::with_capacity(keys.len());
        for key in keys {
            let writer = String::from_utf8_lossy(&key).into_owned();
            match self.committed_checkpoint(&writer) {
                Ok(Some(checkpoint)) => marks.push(Ok((writer, checkpoint))),
                Ok(None) => {}
                Err(error) => marks.push(Err(error)),
            }
        }
        Ok(marks)
    }

    /// The commit marks that read back intact; what is damaged goes to `damaged`.
    pub(crate) fn check_commit_marks(&self, damaged: &mut Vec<LogError>) -> Vec<(String, u64)> {
        split_damage(self.each_commit_mark(), damaged)
    }

    /// Moves `writer`'s mark back to checkpoint `to` (removes it for none), durably: the job
    /// was allowed to start behind what the writer committed, and from there on its marks
    /// count from its new start — a new checkpoint store numbers its checkpoints from 1 again.
    pub fn rewind_commit_mark(&self, writer: &str, to: Option<u64>) -> Result<(), LogError> {
        let key = writer.as_bytes().to_vec();
        let write = match to {
            Some(checkpoint) => WriteOp::Put {
                space: COMMIT_MARKS,
                key,
                value: Envelope::seal(Kind::LogCommitMark, &StoredMark { checkpoint }).map_err(
                    |error| LogError::CorruptCommitMark {
                        writer: writer.to_owned(),
                        reason: format!("cannot encode it: {error}"),
                    },
                )?,
            },
            None => WriteOp::Delete {
                space: COMMIT_MARKS,
                key,
            },
        };
        self.inner
            .storage
            .write(vec![write], Durability::Synced)
            .map_err(|e| {
                self.storage_error(e, format!("moving back the commit mark of '{writer}'"))
            })
    }

    /// The write that moves `mark`'s writer to its checkpoint, unless it is there already.
    fn mark_write(&self, mark: CommitMark<'_>) -> Result<Option<WriteOp>, LogError> {
        if self
            .committed_checkpoint(mark.writer)?
            .is_some_and(|newest| newest >= mark.checkpoint)
        {
            return Ok(None);
        }
        let value = Envelope::seal(
            Kind::LogCommitMark,
            &StoredMark {
                checkpoint: mark.checkpoint,
            },
        )
        .map_err(|error| LogError::CorruptCommitMark {
            writer: mark.writer.to_owned(),
            reason: format!("cannot encode it: {error}"),
        })?;
        Ok(Some(WriteOp::Put {
            space: COMMIT_MARKS,
            key: mark.writer.as_bytes().to_vec(),
            value,
        }))
    }

    /// Like [`EventLog::commit`], and records `mark` in the atomic write of the first piece:
    /// the newest checkpoint whose output its writer committed.
    pub fn commit_marked(&self, id: &str, mark: Option<CommitMark<'_>>) -> Result<u64, LogError> {
        check_id(id)?;
        let transactions = &self.inner.transactions;
        let _changes = lock(&transactions.changes);
        let Some(meta) = self.transaction_meta(id)? else {
            return Ok(0);
        };
        let handle = self.topic_handle(&meta.topic)?;
        let partitions = handle.info.partitions;
        let known_partition =
            |partition: Option<u32>| match partition.filter(|&partition| partition >= partitions) {
                Some(partition) => Err(LogError::UnknownPartition {
                    topic: meta.topic.clone(),
                    partition,
                    partitions,
                }),
                None => Ok(()),
            };
        let first = self.first_staged(id)?;
        let piece = self.piece_entries();
        let mut entries = self.staged_entries(id, &[], piece + 1)?;
        let mut next = (entries.len() > piece).then(|| entries.pop()).flatten();
        // Nothing moves unless everything left reads back: a commit of several pieces checks
        // it all first; one of a single piece, as it encodes it, before its one write.
        let several = next.is_some();
        if several {
            self.check_staged(id, &meta, first, |partition, _, _| {
                known_partition(partition)
            })?;
        }
        let mut mark = mark
            .map(|mark| self.mark_write(mark))
            .transpose()?
            .flatten();
        let mut moved = 0;
        loop {
            let stored_bytes = entries.iter().map(|(_, value)| value.len()).sum();
            // At least a record per entry; the bytes are known.
            let mut encoded = EncodedRecords::with_capacity(entries.len(), stored_bytes);
            let count = self.for_each_staged(id, &entries, |partition, _, stored| {
                known_partition(partition)?;
                // The stored form is the topic's: it moves as it is.
                encoded.push_stored(partition, stored);
                Ok(())
            })?;
            if !several {
                check_left(id, &meta, first, count)?;
            }
            moved += count;
            let mut done: Vec<WriteOp> = entries
                .into_iter()
                .map(|(key, _)| WriteOp::Delete { space: STAGED, key })
                .collect();
            if next.is_none() {
                done.push(WriteOp::Delete {
                    space: TRANSACTIONS,
                    key: id.as_bytes().to_vec(),
                });
            }
            if self.commit_moves_in_two_writes() {
                // Broken on purpose: the staged copies go in a write of their own, after the
                // records, so that a crash between the two moves them again.
                self.commit_encoded(&handle, &encoded, |batch| batch.extend(mark.take()))?;
                self.inner
                    .storage
                    .write(done, Durability::Buffered)
                    .map_err(|e| self.storage_error(e, format!("committing '{id}'")))?;
            } else {
                self.commit_encoded(&handle, &encoded, |batch| {
                    batch.extend(mark.take());
                    batch.append(&mut done);
                })?;
            }
            let Some((from, _)) = next else {
                return Ok(moved);
            };
            entries = self.staged_entries(id, &from, piece + 1)?;
            next = (entries.len() > piece).then(|| entries.pop()).flatten();
        }
    }

    /// Aborts transaction `id`: its staged records are deleted. Returns how many there were (0
    /// if it is not staged).
    pub fn abort(&self, id: &str) -> Result<u64, LogError> {
        check_id(id)?;
        let transactions = &self.inner.transactions;
        let _changes = lock(&transactions.changes);
        let Some(meta) = self.transaction_meta(id)? else {
            return Ok(0);
        };
        if let Some(moved) = self.first_staged(id)?.filter(|&moved| moved > 0) {
            return Err(LogError::TransactionConflict {
                id: id.to_owned(),
                reason: format!(
                    "its commit was cut short with {moved} of its {} records in the topic; \
                     commit it again to move the rest",
                    meta.records
                ),
            });
        }
        let mut batch: Vec<WriteOp> = self
            .inner
            .storage
            .keys(STAGED, &staged_prefix(id), &[], usize::MAX)
            .map_err(|e| self.storage_error(e, format!("aborting transaction '{id}'")))?
            .into_iter()
            .map(|key| WriteOp::Delete { space: STAGED, key })
            .collect();
        batch.push(WriteOp::Delete {
            space: TRANSACTIONS,
            key: id.as_bytes().to_vec(),
        });
        self.inner
            .storage
            .write(batch, Durability::Buffered)
            .map_err(|e| self.storage_error(e, format!("aborting transaction '{id}'")))?;
        Ok(meta.records)
    }

    /// The open transactions whose id starts with `prefix`, by id.
    pub fn transactions(&self, prefix: &str) -> Result<Vec<TransactionInfo>, LogError> {
        self.each_transaction(prefix, |_, _| Ok(()))?
            .into_iter()
            .collect()
    }

    /// The open transactions whose id starts with `prefix`, by id, or what is wrong with them;
    /// `also` checks more of each.
    fn each_transaction(
        &self,
        prefix: &str,
        also: impl Fn(&str, &TransactionMeta) -> Result<(), LogError>,
    ) -> Listed<TransactionInfo> {
        let keys = self
            .inner
            .storage
            .keys(TRANSACTIONS, prefix.as_bytes(), &[], usize::MAX)
            .map_err(|e| self.storage_error(e, format!("listing transactions ({TRANSACTIONS})")))?;
        let mut infos = Vec::with_capacity(keys.len());
        for key in keys {
            let id = String::from_utf8_lossy(&key).into_owned();
            let info = self.transaction_meta(&id).and_then(|meta| {
                let Some(meta) = meta else { return Ok(None) };
                also(&id, &meta)?;
                Ok(Some(TransactionInfo {
                    id,
                    topic: meta.topic,
                    prepared: meta.prepared,
                    records: meta.records,
                }))
            });
            infos.extend(info.transpose());
        }
        Ok(infos)
    }

    /// The open transactions whose metadata and staged records read back intact, by id; what
    /// is damaged goes to `damaged`.
    pub(crate) fn check_transactions(&self, damaged: &mut Vec<LogError>) -> Vec<TransactionInfo> {
        let staged_intact = |id: &str, meta: &TransactionMeta| {
            let first = self.first_staged(id)?;
            self.check_staged(id, meta, first, |_, _, _| Ok(()))
                .map(|_| ())
        };
        split_damage(self.each_transaction("", staged_intact), damaged)
    }

    /// The records staged in transaction `id`, in staging order.
    pub fn staged(&self, id: &str) -> Result<Vec<StagedRecord>, LogError> {
        check_id(id)?;
        let mut staged = Vec::new();
        self.walk_staged(id, |partition, record, _| {
            staged.push(StagedRecord {
                partition,
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.to_vec(),
                timestamp: record.timestamp,
            });
            Ok(())
        })?;
        Ok(staged)
    }
}

/// Whether the `left` records staged in transaction `id` from sequence number `first` on (none
/// left: `None`) are what its metadata counts.
fn check_left(
    id: &str,
    meta: &TransactionMeta,
    first: Option<u64>,
    left: u64,
) -> Result<(), LogError> {
    let moved = first.unwrap_or(meta.records);
    if moved.checked_add(left) != Some(meta.records) {
        return Err(LogError::CorruptTransaction {
            id: id.to_owned(),
            reason: format!(
                "{left} records are staged from record {moved} on, but its metadata counts {}",
                meta.records
            ),
        });
    }
    Ok(())
}

/// The intact values of `listed`; the damaged ones, or the error listing them, go to
/// `damaged`.
fn split_damage<T>(listed: Listed<T>, damaged: &mut Vec<LogError>) -> Vec<T> {
    match listed {
        Ok(values) => values
            .into_iter()
            .filter_map(|value| value.map_err(|error| damaged.push(error)).ok())
            .collect(),
        Err(error) => {
            damaged.push(error);
            Vec::new()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_transaction_metadata_format_is_pinned() {
        // Format version 1 of a transaction's metadata: topic (length and bytes), prepared,
        // record count. A change here needs a version bump of `Kind::LogTransaction`.
        let meta = TransactionMeta {
            topic: "out".to_owned(),
            prepared: true,
            records: 300,
        };
        let sealed = Envelope::seal(Kind::LogTransaction, &meta).unwrap();
        assert_eq!(&sealed[..7], &[b'R', b'I', b'L', b'L', 4, 1, 0]);
        assert_eq!(
            &sealed[rill_core::codec::HEADER_BYTES..],
            &[3, b'o', b'u', b't', 1, 251, 44, 1]
        );
        let opened: TransactionMeta = Envelope::open(Kind::LogTransaction, &sealed).unwrap();
        assert_eq!(
            (opened.topic.as_str(), opened.prepared, opened.records),
            ("out", true, 300)
        );
    }

    #[test]
    fn the_commit_mark_format_is_pinned() {
        // Format version 1 of a commit mark: the checkpoint. A change here needs a version
        // bump of `Kind::LogCommitMark`.
        let sealed = Envelope::seal(Kind::LogCommitMark, &StoredMark { checkpoint: 300 }).unwrap();
        assert_eq!(&sealed[..7], &[b'R', b'I', b'L', b'L', 8, 1, 0]);
        assert_eq!(&sealed[rill_core::codec::HEADER_BYTES..], &[251, 44, 1]);
    }
}

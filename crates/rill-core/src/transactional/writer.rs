//! [`TransactionalWriter`]: one sink subtask's side of two-phase commit. Each checkpoint's
//! records are staged under a transaction `<job>/<uid>/<subtask>/<sequence>`, prepared
//! (durable) at the checkpoint's barrier, and committed when the checkpoint completes — durably,
//! because the next checkpoint's state no longer lists them. Restored, it commits what the
//! checkpoint had prepared (commits are idempotent) and aborts whatever else its subtask, or a
//! subtask it takes over after a rescale, left open. So readers, who see committed records
//! only, see every record exactly once however often the job fails and restarts.
//! At-least-once, it appends each batch at once and flushes at every barrier instead.
//!
//! Every commit records a [`CommitMark`]: the newest checkpoint whose output this sink (all its
//! subtasks) committed. In a job with checkpoints, a writer that starts checks the mark against
//! where the job starts from. From an older checkpoint, or from none, the job would write again
//! output readers have already seen: refused (a [`SinkRestoreError::Rewind`] naming both
//! checkpoints) unless the job allows the rewind. And its state records which checkpoint's
//! output it had committed when it was taken: a target whose mark is older has lost committed
//! output, and the job refuses to write on top of the hole ([`SinkRestoreError::Behind`]).

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointId;
use crate::codec::{Envelope, Kind, MAGIC};
#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::element::{Data, Record};
use crate::error::BoxError;
use crate::operator::{OperatorInfo, Sink};
use crate::source::decode_position;

use super::{CommitMark, Encode, TransactionalTarget};

/// A writer's checkpointed state (enveloped: [`Kind::TransactionalSinkState`]).
#[derive(Debug, Default, Serialize, Deserialize)]
struct WriterState {
    subtask: u32,
    next_sequence: u64,
    /// (checkpoint, sequence) of the transactions prepared and not yet committed.
    prepared: Vec<(u64, u64)>,
    /// The checkpoint the state was taken for.
    checkpoint: u64,
    /// The newest checkpoint whose output the writer had committed when the state was taken.
    committed: Option<u64>,
}

/// The state of a writer of a Rill before checkpoint marks: no envelope, and neither the
/// checkpoint nor what was committed.
#[derive(Deserialize)]
struct UnmarkedWriterState {
    subtask: u32,
    next_sequence: u64,
    prepared: Vec<(u64, u64)>,
}

impl WriterState {
    fn encode(&self) -> Result<Vec<u8>, BoxError> {
        Ok(Envelope::seal(Kind::TransactionalSinkState, self)?)
    }

    /// A state as [`WriterState::encode`] wrote it, or as a Rill before checkpoint marks did
    /// (the checkpoint then unknown: `None`).
    fn decode(bytes: &[u8]) -> Result<(WriterState, Option<u64>), BoxError> {
        if bytes.starts_with(&MAGIC) {
            let state: WriterState = Envelope::open(Kind::TransactionalSinkState, bytes)?;
            let checkpoint = state.checkpoint;
            return Ok((state, Some(checkpoint)));
        }
        let unmarked: UnmarkedWriterState = decode_position(bytes)?;
        let state = WriterState {
            subtask: unmarked.subtask,
            next_sequence: unmarked.next_sequence,
            prepared: unmarked.prepared,
            ..WriterState::default()
        };
        Ok((state, None))
    }
}

/// Why a two-phase-commit sink refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkRestoreError {
    /// The job starts behind what the sink committed: it would write that output again.
    #[error(
        "sink '{writer}' of {target} has committed the output of checkpoint {committed}, \
         but the job starts from {}: the output since then would be written again. Start from \
         checkpoint {committed} or a newer one, or allow the rewind (`allow_rewind`, \
         `--allow-rewind`) to accept the duplicates", describe_start(*.restoring)
    )]
    Rewind {
        /// The sink's transaction prefix (`<job>/<uid>/`).
        writer: String,
        /// What it writes ([`TransactionalTarget::describe`]).
        target: String,
        /// The newest checkpoint whose output the target holds.
        committed: u64,
        /// Where the job starts: a checkpoint, or none.
        restoring: Option<u64>,
    },
    /// The target's marks of the sink could not be read.
    #[error("cannot read what sink '{writer}' of {target} committed: {reason}")]
    Unreadable {
        /// The sink's transaction prefix (`<job>/<uid>/`).
        writer: String,
        /// What it writes ([`TransactionalTarget::describe`]).
        target: String,
        /// The target's error.
        reason: String,
    },
    /// The target lost output the checkpoint says was committed.
    #[error(
        "{target} is behind checkpoint {restoring}: sink '{writer}' had committed the output of \
         checkpoint {expected} when it was taken, but the newest commit of the sink there is \
         {}. Committed output was lost (damaged, or restored from an older copy?); writing on \
         would leave the hole. Start from a checkpoint no newer than the target's to write the \
         lost output again", describe_commit(*.found)
    )]
    Behind {
        /// The sink's transaction prefix (`<job>/<uid>/`).
        writer: String,
        /// What it writes ([`TransactionalTarget::describe`]).
        target: String,
        /// The checkpoint the job starts from.
        restoring: u64,
        /// The newest checkpoint whose output the sink had committed, by the checkpoint.
        expected: u64,
        /// The newest checkpoint whose output the target holds, by its marks.
        found: Option<u64>,
    },
}

fn describe_start(checkpoint: Option<u64>) -> String {
    checkpoint.map_or_else(
        || "no checkpoint".to_owned(),
        |checkpoint| format!("checkpoint {checkpoint}"),
    )
}

fn describe_commit(checkpoint: Option<u64>) -> String {
    checkpoint.map_or_else(
        || "none".to_owned(),
        |checkpoint| format!("checkpoint {checkpoint}'s"),
    )
}

/// The mark of writer `prefix`'s output of `checkpoint`, when the job checkpoints (without
/// checkpoints, the one commit at end of input is no checkpoint's).
fn mark(prefix: &str, checkpointing: bool, checkpoint: u64) -> Option<CommitMark<'_>> {
    checkpointing.then_some(CommitMark {
        writer: prefix,
        checkpoint,
    })
}

/// One sink subtask's writer, through the transactions of its target.
pub struct TransactionalWriter<X: TransactionalTarget, T> {
    target: X,
    encode: Encode<X, T>,
    exactly_once: bool,
    /// `<job>/<uid>/`: what this sink's transaction ids start with, and its commit marks' writer.
    prefix: String,
    parallelism: u32,
    /// Whether the job checkpoints: only then are commit marks checked at start.
    checkpointing: bool,
    /// Whether the job may start behind what the sink committed.
    allow_rewind: bool,
    state: WriterState,
    /// Records were staged since the last prepare.
    open: bool,
    /// Planted on purpose: `SinkCommitsAtPreCommit` (it commits each transaction at
    /// pre-commit, before its checkpoint completes), `SinkSkipsFlush` (its flushes do
    /// nothing, so what it appends or commits is lost in a crash of the machine), or one of
    /// the restore's: `SinkAbortsCommittedOnRestore`, `SinkCommitsLeftoversOnRestore`,
    /// `SinkLeavesTakenOverOpen`, `SinkIgnoresCommitMark` (it never refuses a rewind).
    #[cfg(feature = "defects")]
    defect: Option<Defect>,
}

impl<X: TransactionalTarget, T> TransactionalWriter<X, T> {
    /// The writer of the sink subtask `info` describes; its transactions are named
    /// `<job>/<uid>/<subtask>/<sequence>`; `exactly_once` chooses transactions over appends.
    pub fn new(target: X, info: &OperatorInfo, encode: Encode<X, T>, exactly_once: bool) -> Self {
        TransactionalWriter {
            target,
            encode,
            exactly_once,
            prefix: format!("{}/{}/", info.job, info.uid),
            parallelism: info.parallelism,
            checkpointing: info.checkpointing,
            allow_rewind: info.allow_rewind,
            state: WriterState {
                subtask: info.subtask,
                ..WriterState::default()
            },
            open: false,
            #[cfg(feature = "defects")]
            defect: None,
        }
    }

    fn transaction_id(&self, subtask: u32, sequence: u64) -> String {
        format!("{}{subtask}/{sequence}", self.prefix)
    }

    /// Commits the transaction `(prepared_at, sequence)` of `subtask`, marked as output of
    /// checkpoint `prepared_at` when the job checkpoints.
    fn commit_marked(
        &mut self,
        subtask: u32,
        (prepared_at, sequence): (u64, u64),
    ) -> Result<(), X::Error> {
        let id = self.transaction_id(subtask, sequence);
        let mark = mark(&self.prefix, self.checkpointing, prepared_at);
        self.target.commit(&id, mark)?;
        if self.checkpointing {
            self.state.committed = self.state.committed.max(Some(prepared_at));
        }
        Ok(())
    }

    /// Checks where the job starts (`restoring`: a checkpoint, or none) against the target's mark
    /// of this sink, and against `expected`, the newest checkpoint whose output the restored
    /// states say was committed.
    fn check_start(
        &mut self,
        restoring: Option<u64>,
        expected: Option<u64>,
    ) -> Result<(), SinkRestoreError> {
        if !self.checkpointing {
            return Ok(());
        }
        let found = self
            .target
            .committed_checkpoint(&self.prefix)
            .map_err(|error| SinkRestoreError::Unreadable {
                writer: self.prefix.clone(),
                target: self.target.describe(),
                reason: error.to_string(),
            })?;
        if let Some(committed) = found
            && restoring.is_none_or(|restoring| committed > restoring)
            && !self.ignores_commit_mark()
        {
            if !self.allow_rewind {
                return Err(SinkRestoreError::Rewind {
                    writer: self.prefix.clone(),
                    target: self.target.describe(),
                    committed,
                    restoring,
                });
            }
            // Allowed: the mark goes back with the job, so that its next runs, which count
            // from here (a new store from checkpoint 1), are neither refused nor unchecked.
            return self
                .target
                .rewind_commit_mark(&self.prefix, restoring)
                .map_err(|error| SinkRestoreError::Unreadable {
                    writer: self.prefix.clone(),
                    target: self.target.describe(),
                    reason: format!("cannot move its commit mark back: {error}"),
                });
        }
        if let (Some(restoring), Some(expected)) = (restoring, expected)
            && found.is_none_or(|found| found < expected)
        {
            return Err(SinkRestoreError::Behind {
                writer: self.prefix.clone(),
                target: self.target.describe(),
                restoring,
                expected,
                found,
            });
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    fn flush(&mut self) -> Result<(), X::Error> {
        if self.skips_flush() {
            return Ok(());
        }
        self.target.flush()
    }

    /// Breaks the writer on purpose, for the simulator to catch.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        if matches!(
            defect,
            Defect::SinkCommitsAtPreCommit
                | Defect::SinkSkipsFlush
                | Defect::SinkAbortsCommittedOnRestore
                | Defect::SinkCommitsLeftoversOnRestore
                | Defect::SinkLeavesTakenOverOpen
                | Defect::SinkIgnoresCommitMark
        ) {
            self.defect = Some(defect);
        }
    }

    /// Whether the planted defect is `defect`.
    #[cfg(feature = "defects")]
    fn planted(&self, defect: Defect) -> bool {
        self.defect == Some(defect)
    }

    /// Whether a planted defect commits at pre-commit.
    #[cfg(feature = "defects")]
    fn commits_at_pre_commit(&self) -> bool {
        self.planted(Defect::SinkCommitsAtPreCommit)
    }

    #[cfg(not(feature = "defects"))]
    fn commits_at_pre_commit(&self) -> bool {
        false
    }

    /// Whether a planted defect starts behind the commit mark without refusing.
    #[cfg(feature = "defects")]
    fn ignores_commit_mark(&self) -> bool {
        self.planted(Defect::SinkIgnoresCommitMark)
    }

    #[cfg(not(feature = "defects"))]
    fn ignores_commit_mark(&self) -> bool {
        false
    }

    /// Whether a planted defect skips flushes.
    #[cfg(feature = "defects")]
    fn skips_flush(&self) -> bool {
        self.planted(Defect::SinkSkipsFlush)
    }

    #[cfg(not(feature = "defects"))]
    fn skips_flush(&self) -> bool {
        false
    }

    /// How many of a restored state's prepared transactions (oldest first) to commit: all,
    /// unless a planted defect takes the newest for one still in flight.
    #[cfg(feature = "defects")]
    fn restored_to_commit(&self, prepared: usize) -> usize {
        if self.planted(Defect::SinkAbortsCommittedOnRestore) {
            return prepared.saturating_sub(1);
        }
        prepared
    }

    #[cfg(not(feature = "defects"))]
    fn restored_to_commit(&self, prepared: usize) -> usize {
        prepared
    }

    /// Whether a planted defect commits the leftovers it should abort.
    #[cfg(feature = "defects")]
    fn commits_leftovers(&self) -> bool {
        self.planted(Defect::SinkCommitsLeftoversOnRestore)
    }

    #[cfg(not(feature = "defects"))]
    fn commits_leftovers(&self) -> bool {
        false
    }

    /// Whether a planted defect forgets the leftovers of the subtasks it takes over.
    #[cfg(feature = "defects")]
    fn forgets_taken_over(&self) -> bool {
        self.planted(Defect::SinkLeavesTakenOverOpen)
    }

    #[cfg(not(feature = "defects"))]
    fn forgets_taken_over(&self) -> bool {
        false
    }
}

impl<X: TransactionalTarget, T: Data> Sink for TransactionalWriter<X, T> {
    type In = T;

    fn write_batch(&mut self, records: Vec<Record<T>>) -> Result<(), BoxError> {
        let batch: Vec<X::Produced> = records
            .iter()
            .map(|record| (self.encode)(&record.value))
            .collect();
        if self.exactly_once {
            let id = self.transaction_id(self.state.subtask, self.state.next_sequence);
            self.target.stage(&id, batch)?;
            self.open = true;
        } else {
            self.target.append(batch)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        if !self.exactly_once {
            self.flush()?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>, BoxError> {
        if !self.exactly_once {
            // What was appended must survive a crash of the machine once the checkpoint does.
            self.flush()?;
            return Ok(None);
        }
        if self.open {
            let sequence = self.state.next_sequence;
            let id = self.transaction_id(self.state.subtask, sequence);
            let mark = mark(&self.prefix, self.checkpointing, checkpoint.0);
            self.target.prepare(&id, mark)?;
            self.state.prepared.push((checkpoint.0, sequence));
            self.state.next_sequence += 1;
            self.open = false;
        }
        self.state.checkpoint = checkpoint.0;
        let state = self.state.encode()?;
        if self.commits_at_pre_commit() {
            self.commit(checkpoint)?;
        }
        Ok(Some(state))
    }

    fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), BoxError> {
        let due = self
            .state
            .prepared
            .iter()
            .take_while(|(prepared_at, _)| *prepared_at <= checkpoint.0)
            .count();
        for (prepared_at, sequence) in self.state.prepared.drain(..due).collect::<Vec<_>>() {
            self.commit_marked(self.state.subtask, (prepared_at, sequence))?;
        }
        // The next checkpoint's state no longer lists these transactions: were the commits
        // lost in a crash of the machine, a restore from it would abort them (found by the
        // simulator's `idle-sink-machine-crashes`). So they must be durable now.
        if due > 0 {
            self.flush()?;
        }
        Ok(())
    }

    fn restore(&mut self, states: Vec<Vec<u8>>) -> Result<(), BoxError> {
        if !self.exactly_once {
            return Ok(());
        }
        let decoded = states
            .iter()
            .map(|bytes| WriterState::decode(bytes))
            .collect::<Result<Vec<_>, _>>()?;
        // After a rescale, an instance no old one maps to gets no state: another one checks.
        if let Some(restoring) = decoded
            .iter()
            .filter_map(|(_, checkpoint)| *checkpoint)
            .max()
        {
            let expected = decoded
                .iter()
                .filter_map(|(state, _)| state.committed)
                .max();
            self.check_start(Some(restoring), expected)?;
        }
        let restored: Vec<WriterState> = decoded.into_iter().map(|(state, _)| state).collect();
        self.state.committed = restored.iter().filter_map(|state| state.committed).max();
        for state in &restored {
            let due = self.restored_to_commit(state.prepared.len());
            for &transaction in &state.prepared[..due] {
                self.commit_marked(state.subtask, transaction)?;
            }
        }
        // Durable before the restored job's checkpoints stop listing them (see `commit`).
        if restored.iter().any(|state| !state.prepared.is_empty()) {
            self.flush()?;
        }
        // What this instance left open, and what subtasks that no longer exist left (those
        // this one takes over: `old % parallelism == own`) — whether or not the checkpoint
        // knew them: an attempt that failed before its first checkpoint, at a parallelism of
        // its own, leaves transactions that no restored state names.
        let own = self.state.subtask;
        let commits_leftovers = self.commits_leftovers();
        for leftover in self.target.open_transactions(&self.prefix)? {
            let Some(subtask) = leftover
                .strip_prefix(self.prefix.as_str())
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(subtask, _)| subtask.parse::<u32>().ok())
            else {
                continue;
            };
            let taken_over = subtask >= self.parallelism
                && subtask % self.parallelism == own
                && !self.forgets_taken_over();
            if subtask != own && !taken_over {
                continue;
            }
            if commits_leftovers {
                self.target.commit(&leftover, None)?;
            } else {
                self.target.abort(&leftover)?;
            }
        }
        if commits_leftovers {
            self.flush()?;
        }
        self.state.next_sequence = restored
            .iter()
            .find(|state| state.subtask == own)
            .map_or(0, |state| state.next_sequence);
        Ok(())
    }

    fn start_fresh(&mut self) -> Result<(), BoxError> {
        if self.exactly_once {
            self.check_start(None, None)?;
        }
        self.restore(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A target that keeps only which transactions are open, what became of the others, and
    /// the commit marks.
    #[derive(Clone, Default)]
    struct Transactions {
        states: Arc<Mutex<BTreeMap<String, &'static str>>>,
        marks: Arc<Mutex<BTreeMap<String, u64>>>,
    }

    impl Transactions {
        fn with_open(ids: &[&str]) -> Self {
            let log = Transactions::default();
            for id in ids {
                log.states.lock().unwrap().insert((*id).to_owned(), "open");
            }
            log
        }

        fn state(&self) -> Vec<(String, &'static str)> {
            let map = self.states.lock().unwrap();
            map.iter().map(|(id, state)| (id.clone(), *state)).collect()
        }

        fn resolve(&self, id: &str, to: &'static str) {
            if let Some(state) = self.states.lock().unwrap().get_mut(id)
                && *state == "open"
            {
                *state = to;
            }
        }

        /// The log as a copy of it taken when its newest commit mark of `writer` was `mark`.
        fn rewound_to(&self, writer: &str, mark: Option<u64>) -> Self {
            let log = self.clone_deep();
            let mut marks = log.marks.lock().unwrap();
            match mark {
                Some(mark) => marks.insert(writer.to_owned(), mark),
                None => marks.remove(writer),
            };
            drop(marks);
            log
        }

        fn clone_deep(&self) -> Self {
            Transactions {
                states: Arc::new(Mutex::new(self.states.lock().unwrap().clone())),
                marks: Arc::new(Mutex::new(self.marks.lock().unwrap().clone())),
            }
        }
    }

    impl TransactionalTarget for Transactions {
        type Produced = ();
        type Error = Infallible;

        fn describe(&self) -> String {
            "topic 'out'".to_owned()
        }

        fn append(&mut self, _records: Vec<()>) -> Result<(), Infallible> {
            Ok(())
        }

        fn stage(&mut self, id: &str, _records: Vec<()>) -> Result<(), Infallible> {
            self.states
                .lock()
                .unwrap()
                .entry(id.to_owned())
                .or_insert("open");
            Ok(())
        }

        fn prepare(&mut self, _id: &str, _mark: Option<CommitMark<'_>>) -> Result<(), Infallible> {
            Ok(())
        }

        fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), Infallible> {
            self.resolve(id, "committed");
            if let Some(mark) = mark {
                let mut marks = self.marks.lock().unwrap();
                let newest = marks.entry(mark.writer.to_owned()).or_default();
                *newest = (*newest).max(mark.checkpoint);
            }
            Ok(())
        }

        fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), Infallible> {
            let mut marks = self.marks.lock().unwrap();
            match to {
                Some(checkpoint) => marks.insert(writer.to_owned(), checkpoint),
                None => marks.remove(writer),
            };
            Ok(())
        }

        fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, Infallible> {
            Ok(self.marks.lock().unwrap().get(writer).copied())
        }

        fn abort(&mut self, id: &str) -> Result<(), Infallible> {
            self.resolve(id, "aborted");
            Ok(())
        }

        fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, Infallible> {
            let map = self.states.lock().unwrap();
            Ok(map
                .iter()
                .filter(|(id, state)| id.starts_with(prefix) && **state == "open")
                .map(|(id, _)| id.clone())
                .collect())
        }

        fn flush(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
    }

    /// Subtask `subtask` of `parallelism` of sink `u` of job `j`.
    fn info(subtask: u32, parallelism: u32, checkpointing: bool) -> OperatorInfo {
        OperatorInfo {
            checkpointing,
            ..OperatorInfo::of_subtask("j", "u", subtask, parallelism)
        }
    }

    fn writer(log: &Transactions, info: &OperatorInfo) -> TransactionalWriter<Transactions, ()> {
        TransactionalWriter::new(log.clone(), info, Arc::new(|_: &()| ()), true)
    }

    #[test]
    fn a_fresh_sink_aborts_what_the_subtasks_it_takes_over_left_open() {
        // Subtasks 0..4 of an attempt that failed before its first checkpoint left these; the
        // job starts again, from no checkpoint, at parallelism 2 (found by the simulator's
        // `rescale-down-key-group-boundaries`: transactions 2/0 and 3/5 stayed open for good).
        let log = Transactions::with_open(&["j/u/0/0", "j/u/1/0", "j/u/2/0", "j/u/3/5", "k/u/0/0"]);
        writer(&log, &info(0, 2, true)).start_fresh().unwrap();
        let expected = [
            ("j/u/0/0", "aborted"),
            ("j/u/1/0", "open"),
            ("j/u/2/0", "aborted"),
            ("j/u/3/5", "open"),
            ("k/u/0/0", "open"),
        ];
        let expected: Vec<(String, &str)> = expected
            .iter()
            .map(|(id, state)| ((*id).to_owned(), *state))
            .collect();
        assert_eq!(
            log.state(),
            expected,
            "subtask 1 takes over 3; another job is not ours"
        );
    }

    /// A sink that writes through checkpoints 1 to `last`, each completing; returns the state
    /// of each checkpoint, by checkpoint.
    fn run_through(log: &Transactions, last: u64) -> BTreeMap<u64, Vec<u8>> {
        let mut sink = writer(log, &info(0, 1, true));
        sink.start_fresh().unwrap();
        let mut states = BTreeMap::new();
        for checkpoint in 1..=last {
            sink.write_batch(vec![Record::new(())]).unwrap();
            let state = sink.pre_commit(CheckpointId(checkpoint)).unwrap().unwrap();
            states.insert(checkpoint, state);
            sink.commit(CheckpointId(checkpoint)).unwrap();
        }
        states
    }

    #[test]
    fn a_start_behind_what_the_sink_committed_is_refused_unless_allowed() {
        let log = Transactions::default();
        let states = run_through(&log, 5);
        assert_eq!(log.clone().committed_checkpoint("j/u/").unwrap(), Some(5));

        let older = writer(&log, &info(0, 1, true)).restore(vec![states[&3].clone()]);
        let error = older.unwrap_err().to_string();
        assert!(
            error.contains("committed the output of checkpoint 5")
                && error.contains("starts from checkpoint 3"),
            "{error}"
        );
        let fresh = writer(&log, &info(0, 1, true)).start_fresh();
        assert!(
            fresh
                .unwrap_err()
                .to_string()
                .contains("starts from no checkpoint"),
            "a lost or deleted checkpoint store is no fresh start"
        );

        writer(&log, &info(0, 1, true))
            .restore(vec![states[&5].clone()])
            .expect("the newest checkpoint restores");
        let mut allowed = info(0, 1, true);
        allowed.allow_rewind = true;
        writer(&log, &allowed)
            .restore(vec![states[&3].clone()])
            .expect("a rewind the job allows");
        writer(&log, &info(0, 1, false))
            .start_fresh()
            .expect("a job without checkpoints starts afresh every run");
    }

    #[test]
    fn a_target_that_lost_committed_output_is_behind_the_checkpoint() {
        let log = Transactions::default();
        let states = run_through(&log, 5);
        // Checkpoint 5 was taken after checkpoint 4's output was committed; the log's copy
        // knows of commits up to checkpoint 2 only.
        let damaged = log.rewound_to("j/u/", Some(2));
        let error = writer(&damaged, &info(0, 1, true))
            .restore(vec![states[&5].clone()])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("topic 'out' is behind checkpoint 5")
                && error.contains("checkpoint 4 when it was taken")
                && error.contains("there is checkpoint 2's"),
            "{error}"
        );
        let emptied = log.rewound_to("j/u/", None);
        let restored = writer(&emptied, &info(0, 1, true)).restore(vec![states[&5].clone()]);
        assert!(restored.unwrap_err().to_string().contains("is none"));
    }

    #[test]
    fn after_an_upscale_an_instance_without_state_leaves_the_check_to_the_others() {
        let log = Transactions::default();
        run_through(&log, 3);
        writer(&log, &info(1, 2, true))
            .restore(Vec::new())
            .expect("restored from checkpoint 3, with no state of its own");
    }

    #[test]
    fn a_state_written_before_commit_marks_still_restores() {
        #[derive(Serialize)]
        struct Unmarked {
            subtask: u32,
            next_sequence: u64,
            prepared: Vec<(u64, u64)>,
        }
        let log = Transactions::with_open(&["j/u/0/7"]);
        let old = crate::source::encode_position(&Unmarked {
            subtask: 0,
            next_sequence: 8,
            prepared: vec![(12, 7)],
        })
        .unwrap();
        let mut sink = writer(&log, &info(0, 1, true));
        sink.restore(vec![old]).unwrap();
        assert_eq!(log.state(), vec![("j/u/0/7".to_owned(), "committed")]);
        assert_eq!(sink.state.next_sequence, 8);
    }

    #[test]
    fn the_sink_state_format_is_pinned() {
        // Format version 1 of a two-phase-commit sink's state: subtask, next sequence, prepared (checkpoint,
        // sequence) pairs, checkpoint, newest committed checkpoint. A change here needs a
        // version bump of `Kind::TransactionalSinkState`.
        let state = WriterState {
            subtask: 2,
            next_sequence: 9,
            prepared: vec![(7, 8)],
            checkpoint: 7,
            committed: Some(6),
        };
        let sealed = state.encode().unwrap();
        assert_eq!(&sealed[..7], &[b'R', b'I', b'L', b'L', 7, 1, 0]);
        assert_eq!(
            &sealed[crate::codec::HEADER_BYTES..],
            &[2, 9, 1, 7, 8, 7, 1, 6]
        );
        let (decoded, checkpoint) = WriterState::decode(&sealed).unwrap();
        assert_eq!((decoded.prepared, checkpoint), (vec![(7, 8)], Some(7)));
    }
}

//! [`LogWriter`] writes a topic through the log's transactions: each checkpoint's records are
//! staged under a transaction `<job>/<uid>/<subtask>/<sequence>`, prepared (durable) at the
//! checkpoint's barrier, and committed when the checkpoint completes — durably, because the
//! next checkpoint's state no longer lists them. Restored, it commits what the checkpoint had
//! prepared (commits are idempotent) and aborts whatever else its subtask, or a subtask it takes
//! over after a rescale, left open. So readers, who see committed records only, see every
//! record exactly once however often the job fails and restarts. At-least-once, it appends each
//! batch at once and flushes at every barrier instead.

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointId;
#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::element::{Data, Record};
use crate::error::BoxError;
use crate::operator::Sink;
use crate::source::{decode_position, encode_position};

use super::{ConnectorLog, Encode};

/// A writer's checkpointed state.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WriterState {
    subtask: u32,
    next_sequence: u64,
    /// (checkpoint, sequence) of the transactions prepared and not yet committed.
    prepared: Vec<(u64, u64)>,
}

/// One sink subtask's writer of a topic.
pub struct LogWriter<L: ConnectorLog, T> {
    log: L,
    topic: String,
    encode: Encode<L, T>,
    exactly_once: bool,
    /// `<job>/<uid>/`: what this sink's transaction ids start with.
    prefix: String,
    parallelism: u32,
    state: WriterState,
    /// Records were staged since the last prepare.
    open: bool,
    /// Planted on purpose: `SinkCommitsAtPreCommit` (it commits each transaction at
    /// pre-commit, before its checkpoint completes), `SinkSkipsFlush` (its flushes do
    /// nothing, so what it appends or commits is lost in a crash of the machine), or one of
    /// the restore's: `SinkAbortsCommittedOnRestore`, `SinkCommitsLeftoversOnRestore`,
    /// `SinkLeavesTakenOverOpen`.
    #[cfg(feature = "defects")]
    defect: Option<Defect>,
}

impl<L: ConnectorLog, T> LogWriter<L, T> {
    /// The writer of subtask `subtask` of `parallelism`; `prefix` (`<job>/<uid>/`) names its
    /// transactions; `exactly_once` chooses transactions over appends.
    pub fn new(
        log: &L,
        topic: &str,
        (prefix, subtask, parallelism): (String, u32, u32),
        encode: Encode<L, T>,
        exactly_once: bool,
    ) -> Self {
        LogWriter {
            log: log.clone(),
            topic: topic.to_owned(),
            encode,
            exactly_once,
            prefix,
            parallelism,
            state: WriterState {
                subtask,
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

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), L::Error> {
        if self.skips_flush() {
            return Ok(());
        }
        self.log.flush()
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

impl<L: ConnectorLog, T: Data> Sink for LogWriter<L, T> {
    type In = T;

    fn write_batch(&mut self, records: Vec<Record<T>>) -> Result<(), BoxError> {
        let batch: Vec<L::Produced> = records
            .iter()
            .map(|record| (self.encode)(&record.value))
            .collect();
        if self.exactly_once {
            let id = self.transaction_id(self.state.subtask, self.state.next_sequence);
            self.log.stage(&id, &self.topic, batch)?;
            self.open = true;
        } else {
            self.log.append(&self.topic, batch)?;
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
            self.log
                .prepare(&self.transaction_id(self.state.subtask, sequence))?;
            self.state.prepared.push((checkpoint.0, sequence));
            self.state.next_sequence += 1;
            self.open = false;
        }
        let state = encode_position(&self.state)?;
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
        for (_, sequence) in self.state.prepared.drain(..due).collect::<Vec<_>>() {
            self.log
                .commit(&self.transaction_id(self.state.subtask, sequence))?;
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
        let restored = states
            .iter()
            .map(|bytes| decode_position::<WriterState>(bytes))
            .collect::<Result<Vec<_>, _>>()?;
        for state in &restored {
            let due = self.restored_to_commit(state.prepared.len());
            for &(_, sequence) in &state.prepared[..due] {
                self.log
                    .commit(&self.transaction_id(state.subtask, sequence))?;
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
        for leftover in self.log.open_transactions(&self.prefix)? {
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
                self.log.commit(&leftover)?;
            } else {
                self.log.abort(&leftover)?;
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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log that keeps only which transactions are open, and what became of the others.
    #[derive(Clone, Default)]
    struct Transactions(Arc<Mutex<BTreeMap<String, &'static str>>>);

    impl Transactions {
        fn with_open(ids: &[&str]) -> Self {
            let log = Transactions::default();
            for id in ids {
                log.0.lock().unwrap().insert((*id).to_owned(), "open");
            }
            log
        }

        fn state(&self) -> Vec<(String, &'static str)> {
            let map = self.0.lock().unwrap();
            map.iter().map(|(id, state)| (id.clone(), *state)).collect()
        }

        fn resolve(&self, id: &str, to: &'static str) {
            if let Some(state) = self.0.lock().unwrap().get_mut(id)
                && *state == "open"
            {
                *state = to;
            }
        }
    }

    impl ConnectorLog for Transactions {
        type Record = ();
        type Produced = ();
        type Error = Infallible;

        fn end_offsets(&self, _topic: &str) -> Result<Vec<u64>, Infallible> {
            Ok(Vec::new())
        }

        fn read(&self, _: &str, _: u32, _: u64, _: usize) -> Result<Vec<()>, Infallible> {
            Ok(Vec::new())
        }

        fn timestamp(_record: &()) -> i64 {
            0
        }

        fn append(&self, _topic: &str, _records: Vec<()>) -> Result<(), Infallible> {
            Ok(())
        }

        fn stage(&self, id: &str, _topic: &str, _records: Vec<()>) -> Result<(), Infallible> {
            self.0
                .lock()
                .unwrap()
                .entry(id.to_owned())
                .or_insert("open");
            Ok(())
        }

        fn prepare(&self, _id: &str) -> Result<(), Infallible> {
            Ok(())
        }

        fn commit(&self, id: &str) -> Result<(), Infallible> {
            self.resolve(id, "committed");
            Ok(())
        }

        fn abort(&self, id: &str) -> Result<(), Infallible> {
            self.resolve(id, "aborted");
            Ok(())
        }

        fn open_transactions(&self, prefix: &str) -> Result<Vec<String>, Infallible> {
            let map = self.0.lock().unwrap();
            Ok(map
                .iter()
                .filter(|(id, state)| id.starts_with(prefix) && **state == "open")
                .map(|(id, _)| id.clone())
                .collect())
        }

        fn flush(&self) -> Result<(), Infallible> {
            Ok(())
        }
    }

    #[test]
    fn a_fresh_sink_aborts_what_the_subtasks_it_takes_over_left_open() {
        // Subtasks 0..4 of an attempt that failed before its first checkpoint left these; the
        // job starts again, from no checkpoint, at parallelism 2 (found by the simulator's
        // `rescale-down-key-group-boundaries`: transactions 2/0 and 3/5 stayed open for good).
        let log = Transactions::with_open(&["j/u/0/0", "j/u/1/0", "j/u/2/0", "j/u/3/5", "k/u/0/0"]);
        let place = ("j/u/".to_owned(), 0, 2);
        let mut writer: LogWriter<Transactions, ()> =
            LogWriter::new(&log, "out", place, Arc::new(|_: &()| ()), true);
        writer.restore(Vec::new()).unwrap();
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
}

//! A model of a message broker with a duplicate window — what NATS JetStream promises
//! `rill-nats`'s target — as the target of simulated sinks.
//!
//! The broker is a server beside the job and survives every crash of it. A transaction's
//! messages are staged durably (acknowledged) as they are written, and listed as open until
//! committed or aborted. A commit is not atomic, as `rill-nats`'s is not: it publishes the
//! staged messages one by one, each with the id `<transaction>/<index>`, then records the
//! commit mark, then drops what was staged; the machine may die between any two of these (the
//! `crash-during-commit` fault: after as many publications as the fault's write count). The
//! broker drops a publication whose id it has stored before — the duplicate window, here
//! longer than any run — so a restored job that commits the transaction again publishes the
//! rest and nothing twice. With `[sink] duplicate_window = false` the broker keeps no ids, and
//! a commit cut short and done again duplicates what it had published.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rill_core::transactional::{CommitMark, TransactionalTarget};

use crate::log::{LogRecord, SimLog};

/// A contract broken by the writer, or the machine dying under a commit.
#[derive(Debug, thiserror::Error)]
#[error("the broker: {0}")]
pub struct BrokerError(String);

#[derive(Debug, Default)]
struct Streams {
    /// Staged transactions, by id.
    staged: BTreeMap<String, Vec<LogRecord>>,
    /// The published stream, in order.
    published: Vec<LogRecord>,
    /// The message ids published: the duplicate window.
    ids: BTreeSet<String>,
    /// The last mark of each writer.
    marks: BTreeMap<String, u64>,
}

/// The simulated broker, shared by every attempt of a run.
#[derive(Clone, Debug)]
pub struct SimBroker {
    streams: Arc<Mutex<Streams>>,
    /// Whether it drops publications whose id it has stored.
    dedupes: bool,
    /// The log, whose disk stands for the machine: a `crash-during-commit` fault is armed
    /// there, and the machine dies there.
    machine: SimLog,
}

impl SimBroker {
    /// A broker that dedupes message ids if `dedupes`; `machine` is the log of the run, on the
    /// job's machine.
    pub fn new(dedupes: bool, machine: &SimLog) -> Self {
        SimBroker {
            streams: Arc::default(),
            dedupes,
            machine: machine.clone(),
        }
    }

    fn streams(&self) -> MutexGuard<'_, Streams> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A sink subtask's client.
    pub fn session(&self) -> BrokerSession {
        BrokerSession {
            broker: self.clone(),
        }
    }

    /// The published messages, in order.
    pub fn with_published<R>(&self, read: impl FnOnce(&[LogRecord]) -> R) -> R {
        read(&self.streams().published)
    }

    /// The staged transactions, by id.
    pub fn staged(&self) -> Vec<String> {
        self.streams().staged.keys().cloned().collect()
    }

    /// Publishes `record` with `id`, unless the window holds the id.
    fn publish(&self, id: Option<String>, record: LogRecord) {
        let mut streams = self.streams();
        if let Some(id) = id
            && self.dedupes
            && !streams.ids.insert(id)
        {
            return;
        }
        streams.published.push(record);
    }
}

/// One sink subtask's client of the broker.
pub struct BrokerSession {
    broker: SimBroker,
}

impl TransactionalTarget for BrokerSession {
    type Produced = LogRecord;
    type Error = BrokerError;

    fn describe(&self) -> String {
        "the simulated broker's stream".to_owned()
    }

    fn append(&mut self, records: Vec<LogRecord>) -> Result<(), BrokerError> {
        for record in records {
            self.broker.publish(None, record);
        }
        Ok(())
    }

    fn stage(&mut self, id: &str, records: Vec<LogRecord>) -> Result<(), BrokerError> {
        let mut streams = self.broker.streams();
        streams
            .staged
            .entry(id.to_owned())
            .or_default()
            .extend(records);
        Ok(())
    }

    /// Staged messages are stored already.
    fn prepare(&mut self, _id: &str, _mark: Option<CommitMark<'_>>) -> Result<(), BrokerError> {
        Ok(())
    }

    fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), BrokerError> {
        let Some(staged) = self.broker.streams().staged.get(id).cloned() else {
            return Ok(());
        };
        let crash_after = self.broker.machine.take_commit_crash();
        for (index, record) in staged.into_iter().enumerate() {
            if crash_after.is_some_and(|published| index as u32 >= published) {
                self.broker.machine.crash_machine_now();
                return Err(BrokerError(format!(
                    "the machine died committing '{id}', after {index} publications"
                )));
            }
            self.broker.publish(Some(format!("{id}/{index}")), record);
        }
        if crash_after.is_some() {
            // The fault fell after the publications: between them and the mark.
            self.broker.machine.crash_machine_now();
            return Err(BrokerError(format!(
                "the machine died committing '{id}', before its mark"
            )));
        }
        let mut streams = self.broker.streams();
        if let Some(mark) = mark {
            let newest = streams.marks.entry(mark.writer.to_owned()).or_default();
            *newest = (*newest).max(mark.checkpoint);
        }
        streams.staged.remove(id);
        Ok(())
    }

    fn abort(&mut self, id: &str) -> Result<(), BrokerError> {
        self.broker.streams().staged.remove(id);
        Ok(())
    }

    fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, BrokerError> {
        let streams = self.broker.streams();
        let ids = streams.staged.keys().filter(|id| id.starts_with(prefix));
        Ok(ids.cloned().collect())
    }

    fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, BrokerError> {
        Ok(self.broker.streams().marks.get(writer).copied())
    }

    fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), BrokerError> {
        let mut streams = self.broker.streams();
        match to {
            Some(checkpoint) => streams.marks.insert(writer.to_owned(), checkpoint),
            None => streams.marks.remove(writer),
        };
        Ok(())
    }

    /// What the broker acknowledged is stored.
    fn flush(&mut self) -> Result<(), BrokerError> {
        Ok(())
    }
}

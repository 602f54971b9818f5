//! Operators: the typed traits users and built-ins implement, the type-erased form a subtask
//! chains, and the stateless built-ins (map, filter, flat-map).
//!
//! A subtask calls its operators once per batch, not once per record: the erased adapter
//! downcasts the batch once, and the typed operator loops over plain `Vec`s.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointId;
use crate::element::{Data, Record, Records, Timestamp};
use crate::error::{BoxError, OperatorError};
use crate::key::KeyGroupRange;
use crate::state::{DeferredScan, KeyedStateSnapshot, StateBackend};

/// Where an operator instance runs: what it may use to set itself up.
#[derive(Clone, Debug)]
pub struct OperatorInfo {
    /// The job's name: with the operator's name, it names what the instance keeps outside
    /// the job (a sink's transactions, say).
    pub job: String,
    /// The operator's name, as given in the job.
    pub name: String,
    /// The operator's stable id (see [`crate::graph::OperatorNode::uid`]).
    pub uid: String,
    /// This instance's index in `0..parallelism`.
    pub subtask: u32,
    /// How many instances of the operator run.
    pub parallelism: u32,
    /// The number of key groups of the job.
    pub max_parallelism: u32,
    /// The key groups this instance owns, if it is keyed.
    pub key_groups: KeyGroupRange,
    /// Whether the job takes checkpoints. Without them, a two-phase-commit sink commits at end
    /// of input; with them, when each checkpoint completes.
    pub checkpointing: bool,
    /// Where keyed state lives.
    pub state_backend: StateBackend,
    /// Whether the job may start behind what its sinks committed (see
    /// [`crate::graph::JobGraph::allow_rewind`]).
    pub allow_rewind: bool,
}

impl OperatorInfo {
    /// Subtask `subtask` of `parallelism` of the operator `uid` (also its name) of `job`, in a
    /// job that checkpoints, with the default max parallelism, state in memory and no rewind
    /// allowed: what a driver or test of one's own builds an operator or sink instance with.
    pub fn of_subtask(job: &str, uid: &str, subtask: u32, parallelism: u32) -> Self {
        let max_parallelism = crate::key::DEFAULT_MAX_PARALLELISM;
        OperatorInfo {
            job: job.to_owned(),
            name: uid.to_owned(),
            uid: uid.to_owned(),
            subtask,
            parallelism,
            max_parallelism,
            key_groups: KeyGroupRange::for_subtask(subtask, parallelism, max_parallelism),
            checkpointing: true,
            state_backend: StateBackend::Memory,
            allow_rewind: false,
        }
    }
}

/// What an operator instance keeps across a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// Its keyed state, per key group.
    pub keyed: KeyedStateSnapshot,
    /// Its operator (non-keyed) state, encoded by the operator: a sink's pending
    /// transactions, say. Taken, at most the instance's own; restored, those of the instances
    /// it takes over from (its own, or after a rescale every old instance's).
    #[serde(default)]
    pub operator: Vec<Vec<u8>>,
    /// Keyed state frozen at the barrier and not yet encoded into `keyed`: the driver
    /// completes it off the data path ([`SubtaskSnapshot::complete`]) before the snapshot is
    /// acknowledged; restoring completes it first too. Never stored.
    ///
    /// [`SubtaskSnapshot::complete`]: crate::checkpoint::SubtaskSnapshot::complete
    #[serde(skip)]
    pub deferred: Option<DeferredScan>,
}

impl OperatorSnapshot {
    /// Encodes the frozen keyed state into `keyed`; does nothing if there is none.
    pub fn complete(&mut self) -> Result<(), crate::state::StateError> {
        match self.deferred.take() {
            Some(deferred) => deferred.complete(&mut self.keyed),
            None => Ok(()),
        }
    }

    /// The size of its encoded state, keyed and operator state together.
    pub fn state_bytes(&self) -> u64 {
        let keyed: usize = self
            .keyed
            .tables
            .values()
            .flat_map(|groups| groups.values())
            .map(Vec::len)
            .sum();
        let operator: usize = self.operator.iter().map(Vec::len).sum();
        (keyed + operator) as u64
    }
}

/// A one-input operator over typed batches: what built-ins and users implement.
pub trait OneInputOperator: Send + 'static {
    /// The type of the records it consumes.
    type In: Data;
    /// The type of the records it emits.
    type Out: Data;

    /// Readies the instance before its first record, timer or checkpoint — after a restore,
    /// if it has one — on the subtask's own thread: a keyed operator reports here that its
    /// state cannot be opened, or that restored state does not fit it.
    fn open(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Processes a batch of records, pushing what it emits onto `out` in order.
    fn process_batch(
        &mut self,
        input: Vec<Record<Self::In>>,
        out: &mut Vec<Record<Self::Out>>,
    ) -> Result<(), BoxError>;

    /// The input's watermark advanced; records pushed onto `out` precede the watermark.
    fn on_watermark(
        &mut self,
        _watermark: Timestamp,
        _out: &mut Vec<Record<Self::Out>>,
    ) -> Result<(), BoxError> {
        Ok(())
    }

    /// Processing time reached `now` (milliseconds since the Unix epoch, from the driver's
    /// clock: the wall clock in the runtime, the virtual clock in the simulator); records
    /// pushed onto `out` are what the operator's processing-time timers emit.
    fn on_processing_time(
        &mut self,
        _now: Timestamp,
        _out: &mut Vec<Record<Self::Out>>,
    ) -> Result<(), BoxError> {
        Ok(())
    }

    /// The input ended; records pushed onto `out` are the operator's last.
    fn end_of_input(&mut self, _out: &mut Vec<Record<Self::Out>>) -> Result<(), BoxError> {
        Ok(())
    }

    /// The operator's state for checkpoint `checkpoint`, taken when its barrier passes;
    /// stateless operators keep the default.
    fn snapshot_state(&mut self, _checkpoint: CheckpointId) -> Result<OperatorSnapshot, BoxError> {
        Ok(OperatorSnapshot::default())
    }

    /// Replaces the operator's state by a snapshot (narrowed to its key groups).
    fn restore_state(&mut self, _snapshot: OperatorSnapshot) -> Result<(), BoxError> {
        Ok(())
    }

    /// Checkpoint `checkpoint` is complete: every subtask's snapshot of it is durable. Called
    /// in checkpoint order; a notice may be skipped when a newer one arrives first, so act on
    /// everything up to `checkpoint`.
    fn notify_checkpoint_complete(&mut self, _checkpoint: CheckpointId) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The type-erased operator a subtask chains.
pub trait Operator: Send {
    /// Readies the instance before it is first called otherwise (after a restore, if any).
    fn open(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
    /// Processes one batch; returns what it emits, if anything.
    fn process(&mut self, input: Records) -> Result<Option<Records>, OperatorError>;
    /// The input's watermark advanced; returns records to emit before the watermark.
    fn on_watermark(&mut self, watermark: Timestamp) -> Result<Option<Records>, OperatorError>;
    /// Processing time advanced; returns what processing-time timers emit.
    fn on_processing_time(&mut self, now: Timestamp) -> Result<Option<Records>, OperatorError>;
    /// The input ended; returns the operator's last records.
    fn end_of_input(&mut self) -> Result<Option<Records>, OperatorError>;
    /// The operator's state for a checkpoint.
    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
    ) -> Result<OperatorSnapshot, OperatorError>;
    /// Replaces the operator's state by a snapshot.
    fn restore_state(&mut self, snapshot: OperatorSnapshot) -> Result<(), OperatorError>;
    /// A checkpoint is complete.
    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId)
    -> Result<(), OperatorError>;
}

/// Adapts a [`OneInputOperator`] to the erased [`Operator`].
pub struct Erased<O>(pub O);

fn non_empty<T: Data>(records: Vec<Record<T>>) -> Option<Records> {
    (!records.is_empty()).then(|| Records::new(records))
}

impl<O: OneInputOperator> Operator for Erased<O> {
    fn open(&mut self) -> Result<(), OperatorError> {
        self.0.open().map_err(OperatorError::from_user)
    }

    fn process(&mut self, input: Records) -> Result<Option<Records>, OperatorError> {
        let input = input.downcast::<O::In>()?;
        let mut out = Vec::new();
        self.0
            .process_batch(input, &mut out)
            .map_err(OperatorError::from_user)?;
        Ok(non_empty(out))
    }

    fn on_watermark(&mut self, watermark: Timestamp) -> Result<Option<Records>, OperatorError> {
        let mut out = Vec::new();
        self.0
            .on_watermark(watermark, &mut out)
            .map_err(OperatorError::from_user)?;
        Ok(non_empty(out))
    }

    fn on_processing_time(&mut self, now: Timestamp) -> Result<Option<Records>, OperatorError> {
        let mut out = Vec::new();
        self.0
            .on_processing_time(now, &mut out)
            .map_err(OperatorError::from_user)?;
        Ok(non_empty(out))
    }

    fn end_of_input(&mut self) -> Result<Option<Records>, OperatorError> {
        let mut out = Vec::new();
        self.0
            .end_of_input(&mut out)
            .map_err(OperatorError::from_user)?;
        Ok(non_empty(out))
    }

    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
    ) -> Result<OperatorSnapshot, OperatorError> {
        self.0
            .snapshot_state(checkpoint)
            .map_err(OperatorError::from_user)
    }

    fn restore_state(&mut self, snapshot: OperatorSnapshot) -> Result<(), OperatorError> {
        self.0
            .restore_state(snapshot)
            .map_err(OperatorError::from_user)
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> Result<(), OperatorError> {
        self.0
            .notify_checkpoint_complete(checkpoint)
            .map_err(OperatorError::from_user)
    }
}

/// Hands batches on untouched: the operator behind a union, whose inputs all feed one stream.
pub struct Passthrough;

impl Operator for Passthrough {
    fn process(&mut self, input: Records) -> Result<Option<Records>, OperatorError> {
        Ok(Some(input))
    }

    fn on_watermark(&mut self, _watermark: Timestamp) -> Result<Option<Records>, OperatorError> {
        Ok(None)
    }

    fn on_processing_time(&mut self, _now: Timestamp) -> Result<Option<Records>, OperatorError> {
        Ok(None)
    }

    fn end_of_input(&mut self) -> Result<Option<Records>, OperatorError> {
        Ok(None)
    }

    fn snapshot_state(
        &mut self,
        _checkpoint: CheckpointId,
    ) -> Result<OperatorSnapshot, OperatorError> {
        Ok(OperatorSnapshot::default())
    }

    fn restore_state(&mut self, _snapshot: OperatorSnapshot) -> Result<(), OperatorError> {
        Ok(())
    }

    fn notify_checkpoint_complete(
        &mut self,
        _checkpoint: CheckpointId,
    ) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// A shared user function, as built-ins hold them: one copy serves every subtask.
pub type UserFn<F> = Arc<F>;

/// Applies a function to every record's value.
pub struct Map<T, U, F> {
    f: UserFn<F>,
    types: PhantomData<fn(T) -> U>,
}

impl<T, U, F> Map<T, U, F> {
    /// A map with the given function.
    pub fn new(f: UserFn<F>) -> Self {
        Map {
            f,
            types: PhantomData,
        }
    }
}

impl<T: Data, U: Data, F: Fn(T) -> U + Send + Sync + 'static> OneInputOperator for Map<T, U, F> {
    type In = T;
    type Out = U;

    fn process_batch(
        &mut self,
        input: Vec<Record<T>>,
        out: &mut Vec<Record<U>>,
    ) -> Result<(), BoxError> {
        let f = &*self.f;
        out.extend(input.into_iter().map(|record| record.map(f)));
        Ok(())
    }
}

/// Keeps the records whose value satisfies a predicate.
pub struct Filter<T, F> {
    predicate: UserFn<F>,
    types: PhantomData<fn(T)>,
}

impl<T, F> Filter<T, F> {
    /// A filter with the given predicate.
    pub fn new(predicate: UserFn<F>) -> Self {
        Filter {
            predicate,
            types: PhantomData,
        }
    }
}

impl<T: Data, F: Fn(&T) -> bool + Send + Sync + 'static> OneInputOperator for Filter<T, F> {
    type In = T;
    type Out = T;

    fn process_batch(
        &mut self,
        mut input: Vec<Record<T>>,
        out: &mut Vec<Record<T>>,
    ) -> Result<(), BoxError> {
        let predicate = &*self.predicate;
        input.retain(|record| predicate(&record.value));
        // Filtering in place reuses the batch's allocation.
        if out.is_empty() {
            *out = input;
        } else {
            out.append(&mut input);
        }
        Ok(())
    }
}

/// Replaces every record by zero or more records, each with the input's timestamp.
pub struct FlatMap<T, U, I, F> {
    f: UserFn<F>,
    types: PhantomData<fn(T) -> (U, I)>,
}

impl<T, U, I, F> FlatMap<T, U, I, F> {
    /// A flat-map with the given function.
    pub fn new(f: UserFn<F>) -> Self {
        FlatMap {
            f,
            types: PhantomData,
        }
    }
}

impl<T, U, I, F> OneInputOperator for FlatMap<T, U, I, F>
where
    T: Data,
    U: Data,
    I: IntoIterator<Item = U> + 'static,
    F: Fn(T) -> I + Send + Sync + 'static,
{
    type In = T;
    type Out = U;

    fn process_batch(
        &mut self,
        input: Vec<Record<T>>,
        out: &mut Vec<Record<U>>,
    ) -> Result<(), BoxError> {
        let f = &*self.f;
        out.reserve(input.len());
        for record in input {
            let timestamp = record.timestamp();
            out.extend(
                f(record.value)
                    .into_iter()
                    .map(|value| Record::with_optional_timestamp(value, timestamp)),
            );
        }
        Ok(())
    }
}

/// The end of a stream: writes records somewhere outside the job.
///
/// A sink that promises exactly-once output uses **two-phase commit**: it writes each
/// checkpoint's records into a transaction of the outside system, pre-commits that transaction
/// when the checkpoint's barrier passes ([`Sink::pre_commit`], which returns the sink's state
/// with the transaction in it), and commits it when the checkpoint is complete
/// ([`Sink::commit`]). Restored from a checkpoint, it commits the transactions that checkpoint
/// pre-committed (commits must be idempotent: some may have committed before the failure) and
/// aborts any other it left open ([`Sink::restore`]). In a job without checkpoints, the sink
/// pre-commits and commits once, at end of input. Simple sinks keep the defaults, and are
/// at-least-once: after a failure they write again what they wrote since the checkpoint.
pub trait Sink: Send + 'static {
    /// The type of the records it writes.
    type In: Data;

    /// Writes a batch of records.
    fn write_batch(&mut self, records: Vec<Record<Self::In>>) -> Result<(), BoxError>;

    /// The input ended: flush whatever is buffered.
    fn finish(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    /// The barrier of `checkpoint` passed: make what was written since the last one durable
    /// and ready to commit, and return the sink's state (what [`Sink::restore`] gets back).
    fn pre_commit(&mut self, _checkpoint: CheckpointId) -> Result<Option<Vec<u8>>, BoxError> {
        Ok(None)
    }

    /// `checkpoint` is complete: commit what was pre-committed up to it. The commits must be
    /// durable when this returns: the state of the next checkpoint no longer lists these
    /// transactions, so a restore from it could not commit them again.
    fn commit(&mut self, _checkpoint: CheckpointId) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called once before the sink writes anything, with the states [`Sink::pre_commit`]
    /// returned for the checkpoint the job restarts from: this instance's own, or after a
    /// rescale those of every old instance (commit them all: commits are idempotent); none
    /// for an instance no old one maps to.
    fn restore(&mut self, _states: Vec<Vec<u8>>) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called once before the sink writes anything, instead of [`Sink::restore`], when the job
    /// starts from no checkpoint. A sink that knows what it committed before can refuse to
    /// write it again here. By default, a restore from no state.
    fn start_fresh(&mut self) -> Result<(), BoxError> {
        self.restore(Vec::new())
    }
}

/// Adapts a [`Sink`] to a [`OneInputOperator`] that emits nothing.
pub struct SinkOperator<S> {
    sink: S,
    /// Whether the job takes checkpoints; if not, the sink commits at end of input.
    checkpointing: bool,
    /// Whether [`Sink::restore`] has been called.
    restored: bool,
}

impl<S: Sink> SinkOperator<S> {
    /// Wraps the sink instance of the subtask `info` describes.
    pub fn new(sink: S, info: &OperatorInfo) -> Self {
        SinkOperator {
            sink,
            checkpointing: info.checkpointing,
            restored: false,
        }
    }

    /// Starts a sink that was not restored from a checkpoint before its first use.
    fn ensure_restored(&mut self) -> Result<(), BoxError> {
        if !self.restored {
            self.restored = true;
            self.sink.start_fresh()?;
        }
        Ok(())
    }
}

impl<S: Sink> OneInputOperator for SinkOperator<S> {
    type In = S::In;
    type Out = ();

    fn process_batch(
        &mut self,
        input: Vec<Record<S::In>>,
        _out: &mut Vec<Record<()>>,
    ) -> Result<(), BoxError> {
        self.ensure_restored()?;
        self.sink.write_batch(input)
    }

    fn end_of_input(&mut self, _out: &mut Vec<Record<()>>) -> Result<(), BoxError> {
        self.ensure_restored()?;
        self.sink.finish()?;
        if !self.checkpointing {
            self.sink.pre_commit(CheckpointId::END_OF_INPUT)?;
            self.sink.commit(CheckpointId::END_OF_INPUT)?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, checkpoint: CheckpointId) -> Result<OperatorSnapshot, BoxError> {
        self.ensure_restored()?;
        Ok(OperatorSnapshot {
            operator: self.sink.pre_commit(checkpoint)?.into_iter().collect(),
            ..OperatorSnapshot::default()
        })
    }

    fn restore_state(&mut self, snapshot: OperatorSnapshot) -> Result<(), BoxError> {
        self.restored = true;
        self.sink.restore(snapshot.operator)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<(), BoxError> {
        self.ensure_restored()?;
        self.sink.commit(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<O: OneInputOperator>(op: O, input: Vec<O::In>) -> Vec<O::Out> {
        let mut erased = Erased(op);
        let records = Records::new(input.into_iter().map(Record::new).collect());
        match erased.process(records).unwrap() {
            Some(out) => out
                .downcast::<O::Out>()
                .unwrap()
                .into_iter()
                .map(|r| r.value)
                .collect(),
            None => Vec::new(),
        }
    }

    #[test]
    fn map_filter_flat_map() {
        assert_eq!(
            run(Map::new(Arc::new(|x: u32| x * 2)), vec![1, 2, 3]),
            vec![2, 4, 6]
        );
        assert_eq!(
            run(Filter::new(Arc::new(|x: &u32| x % 2 == 1)), vec![1, 2, 3]),
            vec![1, 3]
        );
        let split = FlatMap::new(Arc::new(|line: String| {
            line.split(' ').map(str::to_owned).collect::<Vec<_>>()
        }));
        assert_eq!(
            run(split, vec!["a b".into(), "c".into()]),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn one_to_one_operators_keep_timestamps() {
        let mut erased = Erased(Map::new(Arc::new(|x: u32| x + 1)));
        let input = Records::new(vec![Record::with_timestamp(1u32, Timestamp(10))]);
        let out = erased
            .process(input)
            .unwrap()
            .unwrap()
            .downcast::<u32>()
            .unwrap();
        assert_eq!(out, vec![Record::with_timestamp(2, Timestamp(10))]);
    }

    #[test]
    fn wrong_batch_type_is_an_error_not_a_panic() {
        let mut erased = Erased(Map::new(Arc::new(|x: u32| x)));
        let err = erased
            .process(Records::new(vec![Record::new("text")]))
            .unwrap_err();
        assert!(matches!(err, OperatorError::TypeMismatch(_)), "{err}");
    }
}

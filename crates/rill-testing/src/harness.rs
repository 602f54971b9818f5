//! The operator harness: drives one operator instance as a subtask would, with no runtime.
//!
//! [`OperatorHarness`] holds the operator as the runtime does — behind the type-erased
//! [`Operator`] interface, fed batches of records — and keeps the subtask's rules: the
//! watermark and processing time only move forward, the end of input moves the watermark to the
//! end of time before the operator's last call, and nothing comes after it. A snapshot is
//! completed and encoded as a checkpoint stores it, and restored from those bytes.
//!
//! One harness covers every operator shape: keyed operators (process functions, reduces,
//! windows) are one-input operators over their records, and two-input operators are one-input
//! operators over [`rill_core::two_input::Either`] records, with a watermark per input (the
//! operator is told the lesser). Operators with side outputs emit [`Tagged`] values:
//! [`OperatorHarness::take_main`] and [`OperatorHarness::take_side`] split them.

use std::collections::BTreeMap;

use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_core::element::{Data, Record, RecordTypeMismatch, Records, Timestamp};
use rill_core::error::OperatorError;
use rill_core::key::{Key, KeyGroupRange, key_group_of};
use rill_core::layout::{JobLayout, RestoreError, SubtaskLayout, assign_state};
use rill_core::operator::{Erased, OneInputOperator, Operator, OperatorSnapshot};
use rill_core::side_output::{OutputTag, SideOutputTypeMismatch, Tagged};
use rill_core::two_input::Either;

/// What can go wrong driving an operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// Input was pushed after the end of input.
    #[error("the input has ended: nothing more can be pushed")]
    Ended,
    /// The operator failed.
    #[error("the operator failed: {0}")]
    Operator(#[from] OperatorError),
    /// The operator emitted records of another type than it declares.
    #[error(transparent)]
    Output(#[from] RecordTypeMismatch),
    /// A side output was read with another type than it carries.
    #[error(transparent)]
    SideOutput(#[from] SideOutputTypeMismatch),
    /// A snapshot could not be completed, encoded or decoded.
    #[error("the snapshot cannot be taken or read: {0}")]
    Snapshot(String),
    /// A snapshot cannot be split over the instances asked for.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// No instance owns a record's key group (the instances do not cover the key space).
    #[error("no instance owns key group {0}")]
    NoInstanceForKeyGroup(u32),
    /// A parallelism a keyed operator cannot run at: each instance owns at least one key
    /// group.
    #[error(
        "parallelism {parallelism} must be between 1 and the max parallelism {max_parallelism}"
    )]
    BadParallelism {
        /// The parallelism asked for.
        parallelism: u32,
        /// The number of key groups.
        max_parallelism: u32,
    },
}

/// Checks that `parallelism` instances can split `max_parallelism` key groups.
fn check_parallelism(parallelism: u32, max_parallelism: u32) -> Result<(), HarnessError> {
    if parallelism == 0 || parallelism > max_parallelism {
        return Err(HarnessError::BadParallelism {
            parallelism,
            max_parallelism,
        });
    }
    Ok(())
}

/// An operator's state as a checkpoint stores it: completed and encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    bytes: Vec<u8>,
}

impl Snapshot {
    fn encode(snapshot: &OperatorSnapshot) -> Result<Self, HarnessError> {
        bincode::serde::encode_to_vec(snapshot, bincode::config::standard())
            .map(|bytes| Snapshot { bytes })
            .map_err(|error| HarnessError::Snapshot(error.to_string()))
    }

    /// The operator snapshot the bytes hold.
    pub fn decode(&self) -> Result<OperatorSnapshot, HarnessError> {
        bincode::serde::decode_from_slice(&self.bytes, bincode::config::standard())
            .map(|(snapshot, _)| snapshot)
            .map_err(|error| HarnessError::Snapshot(error.to_string()))
    }

    /// The size of the encoded snapshot.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the encoded snapshot is empty (it never is: even no state encodes to bytes).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A snapshot taken at a checkpoint's barrier, not yet encoded: its keyed state may still be
/// frozen, as the runtime leaves it while the operator runs on and encodes it off the data
/// path. [`PendingSnapshot::complete`] encodes it.
pub struct PendingSnapshot(OperatorSnapshot);

impl PendingSnapshot {
    /// Encodes the snapshot as a checkpoint stores it.
    pub fn complete(mut self) -> Result<Snapshot, HarnessError> {
        self.0
            .complete()
            .map_err(|error| HarnessError::Snapshot(error.to_string()))?;
        Snapshot::encode(&self.0)
    }
}

/// One operator instance, driven as a subtask drives it.
pub struct OperatorHarness<O: OneInputOperator> {
    operator: Erased<O>,
    watermark: Timestamp,
    /// Each input's watermark, for two-input operators: `advance_watermark` moves both.
    input_watermarks: [Timestamp; 2],
    processing_time: Timestamp,
    ended: bool,
    output: Vec<Record<O::Out>>,
    checkpoints: u64,
    /// The operator has been opened (after its restore, before any other call).
    opened: bool,
}

impl<O: OneInputOperator> OperatorHarness<O> {
    /// A harness around a fresh operator instance.
    pub fn new(operator: O) -> Self {
        OperatorHarness {
            operator: Erased(operator),
            watermark: Timestamp::MIN,
            input_watermarks: [Timestamp::MIN; 2],
            processing_time: Timestamp::MIN,
            ended: false,
            output: Vec::new(),
            checkpoints: 0,
            opened: false,
        }
    }

    /// Opens the operator before its first call after a restore, as a subtask does: a keyed
    /// operator whose restored state does not fit fails here.
    fn open(&mut self) -> Result<(), HarnessError> {
        if !self.opened {
            self.opened = true;
            self.operator.open()?;
        }
        Ok(())
    }

    /// A harness around `operator` restored from `snapshot`, as a restarted job restores it.
    pub fn restored(operator: O, snapshot: &Snapshot) -> Result<Self, HarnessError> {
        let mut harness = Self::new(operator);
        harness.operator.restore_state(snapshot.decode()?)?;
        Ok(harness)
    }

    /// The operator, to inspect it.
    pub fn operator(&self) -> &O {
        &self.operator.0
    }

    /// The watermark the operator was last told of.
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    fn collect(&mut self, emitted: Option<Records>) -> Result<(), HarnessError> {
        if let Some(records) = emitted {
            self.output.extend(records.downcast::<O::Out>()?);
        }
        Ok(())
    }

    /// Processes records, as one batch.
    pub fn push_records(&mut self, records: Vec<Record<O::In>>) -> Result<(), HarnessError> {
        if self.ended {
            return Err(HarnessError::Ended);
        }
        if records.is_empty() {
            return Ok(());
        }
        self.open()?;
        let emitted = self.operator.process(Records::new(records))?;
        self.collect(emitted)
    }

    /// Processes one record without an event timestamp.
    pub fn push(&mut self, value: O::In) -> Result<(), HarnessError> {
        self.push_records(vec![Record::new(value)])
    }

    /// Processes one record with an event timestamp.
    pub fn push_at(&mut self, value: O::In, timestamp: Timestamp) -> Result<(), HarnessError> {
        self.push_records(vec![Record::with_timestamp(value, timestamp)])
    }

    /// Moves the watermark (of every input) to `watermark`; as in a subtask, a watermark that
    /// does not advance is not passed on.
    pub fn advance_watermark(&mut self, watermark: Timestamp) -> Result<(), HarnessError> {
        if self.ended {
            return Err(HarnessError::Ended);
        }
        for input in &mut self.input_watermarks {
            *input = (*input).max(watermark);
        }
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.open()?;
        let emitted = self.operator.on_watermark(watermark)?;
        self.collect(emitted)
    }

    /// Moves processing time to `now` (a time that does not advance is not passed on).
    pub fn advance_processing_time(&mut self, now: Timestamp) -> Result<(), HarnessError> {
        if self.ended {
            return Err(HarnessError::Ended);
        }
        if now <= self.processing_time {
            return Ok(());
        }
        self.processing_time = now;
        self.open()?;
        let emitted = self.operator.on_processing_time(now)?;
        self.collect(emitted)
    }

    /// Ends the input: the watermark moves to the end of time, then the operator emits its
    /// last records. Nothing can be pushed afterwards.
    pub fn end_input(&mut self) -> Result<(), HarnessError> {
        self.advance_watermark(Timestamp::MAX)?;
        self.ended = true;
        self.open()?;
        let emitted = self.operator.end_of_input()?;
        self.collect(emitted)
    }

    /// Takes a snapshot, as a checkpoint's barrier would: completed and encoded.
    pub fn snapshot(&mut self) -> Result<Snapshot, HarnessError> {
        self.begin_snapshot()?.complete()
    }

    /// Takes a snapshot as a checkpoint's barrier would, and leaves it to be encoded later:
    /// the runtime encodes a snapshot while the operator processes on, so what the operator
    /// does meanwhile must not change it.
    pub fn begin_snapshot(&mut self) -> Result<PendingSnapshot, HarnessError> {
        self.open()?;
        self.checkpoints += 1;
        let snapshot = self
            .operator
            .snapshot_state(CheckpointId(self.checkpoints))?;
        Ok(PendingSnapshot(snapshot))
    }

    /// Tells the operator that its last snapshot's checkpoint is complete (sinks commit).
    pub fn notify_checkpoint_complete(&mut self) -> Result<(), HarnessError> {
        self.open()?;
        let checkpoint = CheckpointId(self.checkpoints);
        Ok(self.operator.notify_checkpoint_complete(checkpoint)?)
    }

    /// The records emitted so far and not yet taken, in order.
    pub fn output(&self) -> &[Record<O::Out>] {
        &self.output
    }

    /// Takes the records emitted so far, in order.
    pub fn take_output(&mut self) -> Vec<Record<O::Out>> {
        std::mem::take(&mut self.output)
    }
}

impl<O, A, B> OperatorHarness<O>
where
    O: OneInputOperator<In = Either<A, B>>,
    A: Data,
    B: Data,
{
    /// Moves the first input's watermark (a watermark behind it changes nothing). The
    /// operator's watermark is the lesser of its inputs' watermarks, as a subtask's is the
    /// least over its input channels.
    pub fn advance_first_watermark(&mut self, watermark: Timestamp) -> Result<(), HarnessError> {
        self.advance_input_watermark(0, watermark)
    }

    /// Moves the second input's watermark; see [`OperatorHarness::advance_first_watermark`].
    pub fn advance_second_watermark(&mut self, watermark: Timestamp) -> Result<(), HarnessError> {
        self.advance_input_watermark(1, watermark)
    }

    fn advance_input_watermark(
        &mut self,
        input: usize,
        watermark: Timestamp,
    ) -> Result<(), HarnessError> {
        if self.ended {
            return Err(HarnessError::Ended);
        }
        self.input_watermarks[input] = self.input_watermarks[input].max(watermark);
        let [first, second] = self.input_watermarks;
        self.advance_watermark(first.min(second))
    }
}

impl<O, T> OperatorHarness<O>
where
    O: OneInputOperator<Out = Tagged<T>>,
    T: Data,
{
    /// Takes the main-output records emitted so far, in order, leaving side outputs.
    pub fn take_main(&mut self) -> Vec<Record<T>> {
        let mut main = Vec::new();
        let mut rest = Vec::new();
        for record in self.output.drain(..) {
            let timestamp = record.timestamp();
            match record.value {
                Tagged::Main(value) => main.push(Record::with_optional_timestamp(value, timestamp)),
                side => rest.push(Record::with_optional_timestamp(side, timestamp)),
            }
        }
        self.output = rest;
        main
    }

    /// Takes the records emitted so far to the side output `tag` names, in order, leaving the
    /// rest.
    pub fn take_side<S: Data>(
        &mut self,
        tag: &OutputTag<S>,
    ) -> Result<Vec<Record<S>>, HarnessError> {
        let mut side = Vec::new();
        let mut rest = Vec::new();
        for record in self.output.drain(..) {
            let timestamp = record.timestamp();
            match record.value {
                Tagged::Side(value) if value.tag() == tag.id() => {
                    side.push(Record::with_optional_timestamp(
                        value.downcast::<S>()?,
                        timestamp,
                    ));
                }
                other => rest.push(Record::with_optional_timestamp(other, timestamp)),
            }
        }
        self.output = rest;
        Ok(side)
    }
}

/// Several instances of a keyed operator, each owning a range of key groups, as a job at that
/// parallelism runs it: records go to the instance that owns their key; watermarks and
/// processing time reach every instance.
pub struct KeyedInstances<O: OneInputOperator, K> {
    instances: Vec<(KeyGroupRange, OperatorHarness<O>)>,
    key_of: KeyOf<O::In, K>,
    max_parallelism: u32,
}

/// Extracts the key of a record's value.
type KeyOf<T, K> = Box<dyn Fn(&T) -> K>;

/// The layout of one operator called `op` at `parallelism`, for [`assign_state`].
fn single_operator_layout(parallelism: u32, max_parallelism: u32) -> JobLayout {
    JobLayout {
        max_parallelism,
        subtasks: (0..parallelism)
            .map(|index| SubtaskLayout {
                index,
                parallelism,
                source: None,
                operators: vec!["op".to_owned()],
            })
            .collect(),
    }
}

impl<O: OneInputOperator, K: Key> KeyedInstances<O, K> {
    /// `parallelism` fresh instances made by `make` (told the key groups of each), as a job
    /// at that parallelism starts without a checkpoint.
    pub fn new(
        parallelism: u32,
        max_parallelism: u32,
        make: impl Fn(KeyGroupRange) -> O,
        key_of: impl Fn(&O::In) -> K + 'static,
    ) -> Result<Self, HarnessError> {
        check_parallelism(parallelism, max_parallelism)?;
        let instances = (0..parallelism)
            .map(|index| {
                let range = KeyGroupRange::for_subtask(index, parallelism, max_parallelism);
                (range, OperatorHarness::new(make(range)))
            })
            .collect();
        Ok(KeyedInstances {
            instances,
            key_of: Box::new(key_of),
            max_parallelism,
        })
    }

    /// `parallelism` instances made by `make` (told the key groups of each), restored from
    /// `snapshots` — one per instance of the job that took them — exactly as the runtime
    /// assigns a checkpoint's state to a job of another parallelism.
    pub fn restored(
        snapshots: &[Snapshot],
        parallelism: u32,
        max_parallelism: u32,
        make: impl Fn(KeyGroupRange) -> O,
        key_of: impl Fn(&O::In) -> K + 'static,
    ) -> Result<Self, HarnessError> {
        check_parallelism(parallelism, max_parallelism)?;
        check_parallelism(snapshots.len() as u32, max_parallelism)?;
        let taken = single_operator_layout(snapshots.len() as u32, max_parallelism);
        let restoring = single_operator_layout(parallelism, max_parallelism);
        let mut by_position = BTreeMap::new();
        for (position, snapshot) in snapshots.iter().enumerate() {
            let subtask = SubtaskSnapshot {
                source_positions: Vec::new(),
                operators: vec![snapshot.decode()?],
            };
            by_position.insert(position, subtask);
        }
        let assigned = assign_state(&taken, &by_position, &restoring)?;
        let mut instances = Vec::new();
        for (index, mut subtask) in assigned.into_iter().enumerate() {
            let range = KeyGroupRange::for_subtask(index as u32, parallelism, max_parallelism);
            let mut harness = OperatorHarness::new(make(range));
            if let Some(state) = subtask.operators.pop() {
                harness.operator.restore_state(state)?;
            }
            instances.push((range, harness));
        }
        Ok(KeyedInstances {
            instances,
            key_of: Box::new(key_of),
            max_parallelism,
        })
    }

    /// The instances, each with the key groups it owns.
    pub fn instances(&mut self) -> &mut [(KeyGroupRange, OperatorHarness<O>)] {
        &mut self.instances
    }

    /// Processes one record on the instance that owns its key.
    pub fn push_at(&mut self, value: O::In, timestamp: Timestamp) -> Result<(), HarnessError> {
        self.push_record(Record::with_timestamp(value, timestamp))
    }

    /// Processes one record (with its timestamp, if any) on the instance that owns its key.
    pub fn push_record(&mut self, record: Record<O::In>) -> Result<(), HarnessError> {
        let group = key_group_of(&(self.key_of)(&record.value), self.max_parallelism);
        match self
            .instances
            .iter_mut()
            .find(|(range, _)| range.contains(group))
        {
            Some((_, harness)) => harness.push_records(vec![record]),
            None => Err(HarnessError::NoInstanceForKeyGroup(group)),
        }
    }

    /// Moves every instance's watermark to `watermark`.
    pub fn advance_watermark(&mut self, watermark: Timestamp) -> Result<(), HarnessError> {
        self.for_each(|harness| harness.advance_watermark(watermark))
    }

    /// Moves every instance's processing time to `now`.
    pub fn advance_processing_time(&mut self, now: Timestamp) -> Result<(), HarnessError> {
        self.for_each(|harness| harness.advance_processing_time(now))
    }

    /// Ends every instance's input.
    pub fn end_input(&mut self) -> Result<(), HarnessError> {
        self.for_each(OperatorHarness::end_input)
    }

    /// Snapshots every instance.
    pub fn snapshot(&mut self) -> Result<Vec<Snapshot>, HarnessError> {
        self.instances
            .iter_mut()
            .map(|(_, harness)| harness.snapshot())
            .collect()
    }

    /// Takes every instance's output, instance by instance.
    pub fn take_output(&mut self) -> Vec<Record<O::Out>> {
        self.instances
            .iter_mut()
            .flat_map(|(_, harness)| harness.take_output())
            .collect()
    }

    fn for_each(
        &mut self,
        mut call: impl FnMut(&mut OperatorHarness<O>) -> Result<(), HarnessError>,
    ) -> Result<(), HarnessError> {
        self.instances
            .iter_mut()
            .try_for_each(|(_, harness)| call(harness))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rill_core::error::BoxError;
    use rill_core::keyed::{KeyedContext, KeyedProcess, KeyedProcessFunction, KeyedReduce};
    use rill_core::state::KeyedStateStore;

    use super::*;

    /// Emits even values, sends odd ones to the "odd" side output, and at each event-time
    /// timer (1 ms after a record) emits the timer's time.
    #[derive(Clone)]
    struct Split;

    impl KeyedProcessFunction for Split {
        type Key = u8;
        type In = u32;
        type Out = i64;

        fn process(
            &mut self,
            value: u32,
            ctx: &mut KeyedContext<'_, u8, i64>,
        ) -> Result<(), BoxError> {
            if value.is_multiple_of(2) {
                ctx.emit(i64::from(value));
            } else {
                ctx.output(&OutputTag::<u32>::new("odd"), value);
            }
            let at = ctx.timestamp().ok_or("no time")?;
            ctx.register_event_time_timer(Timestamp(at.0 + 1));
            Ok(())
        }

        fn on_timer(
            &mut self,
            at: Timestamp,
            ctx: &mut KeyedContext<'_, u8, i64>,
        ) -> Result<(), BoxError> {
            ctx.emit(-at.0);
            Ok(())
        }
    }

    fn split() -> KeyedProcess<Split> {
        KeyedProcess::new(Split, Arc::new(|_: &u32| 0u8), KeyedStateStore::new(128))
    }

    fn values<T: Clone>(records: &[Record<T>]) -> Vec<T> {
        records.iter().map(|record| record.value.clone()).collect()
    }

    #[test]
    fn main_and_side_outputs_come_apart_in_order() {
        let mut harness = OperatorHarness::new(split());
        for (value, at) in [(2, 10), (3, 11), (4, 12), (5, 13)] {
            harness.push_at(value, Timestamp(at)).unwrap();
        }
        harness.advance_watermark(Timestamp(12)).unwrap();
        let odd = harness.take_side(&OutputTag::<u32>::new("odd")).unwrap();
        assert_eq!(values(&odd), vec![3, 5]);
        assert_eq!(values(&harness.take_main()), vec![2, 4, -11, -12]);
        assert!(harness.output().is_empty());
        let wrong = harness.push_at(7, Timestamp(20)).and_then(|()| {
            harness
                .take_side(&OutputTag::<String>::new("odd"))
                .map(|_| ())
        });
        assert!(
            matches!(wrong, Err(HarnessError::SideOutput(_))),
            "{wrong:?}"
        );
    }

    #[test]
    fn time_only_moves_forward_and_nothing_comes_after_the_end() {
        let mut harness = OperatorHarness::new(split());
        harness.push_at(2, Timestamp(10)).unwrap();
        harness.advance_watermark(Timestamp(50)).unwrap();
        harness.advance_watermark(Timestamp(5)).unwrap();
        assert_eq!(harness.watermark(), Timestamp(50));
        harness.push_at(4, Timestamp(60)).unwrap();
        harness.end_input().unwrap();
        assert_eq!(
            values(&harness.take_main()),
            vec![2, -11, 4, -61],
            "the end fires timers"
        );
        assert!(matches!(
            harness.push_at(6, Timestamp(70)),
            Err(HarnessError::Ended)
        ));
        assert!(matches!(
            harness.advance_processing_time(Timestamp(1)),
            Err(HarnessError::Ended)
        ));
    }

    /// Emits every watermark it is told of.
    struct WatermarkLog;

    impl OneInputOperator for WatermarkLog {
        type In = Either<u8, u8>;
        type Out = i64;

        fn process_batch(
            &mut self,
            _input: Vec<Record<Either<u8, u8>>>,
            _out: &mut Vec<Record<i64>>,
        ) -> Result<(), BoxError> {
            Ok(())
        }

        fn on_watermark(
            &mut self,
            watermark: Timestamp,
            out: &mut Vec<Record<i64>>,
        ) -> Result<(), BoxError> {
            out.push(Record::new(watermark.0));
            Ok(())
        }
    }

    #[test]
    fn a_two_input_operator_is_told_the_lesser_of_its_inputs_watermarks() {
        let mut harness = OperatorHarness::new(WatermarkLog);
        harness.advance_first_watermark(Timestamp(10)).unwrap();
        assert!(
            harness.output().is_empty(),
            "the second input holds it back"
        );
        harness.advance_second_watermark(Timestamp(5)).unwrap();
        harness.advance_second_watermark(Timestamp(20)).unwrap();
        harness.advance_first_watermark(Timestamp(8)).unwrap();
        harness.advance_first_watermark(Timestamp(30)).unwrap();
        harness.advance_watermark(Timestamp(40)).unwrap();
        assert_eq!(values(&harness.take_output()), vec![5, 10, 20, 40]);
    }

    type Sum = (char, u32);

    fn sums() -> KeyedReduce<Sum, char, impl Fn(Sum, Sum) -> Sum> {
        let add = |a: Sum, b: Sum| (a.0, a.1 + b.1);
        KeyedReduce::new(
            Arc::new(add),
            Arc::new(|s: &Sum| s.0),
            KeyedStateStore::new(128),
        )
    }

    #[test]
    fn a_snapshot_encoded_later_holds_the_state_of_its_barrier() {
        let mut harness = OperatorHarness::new(sums());
        harness.push(('a', 1)).unwrap();
        let pending = harness.begin_snapshot().unwrap();
        harness.push(('a', 10)).unwrap();
        let snapshot = pending.complete().unwrap();
        let mut restored = OperatorHarness::restored(sums(), &snapshot).unwrap();
        restored.push(('a', 100)).unwrap();
        assert_eq!(values(&restored.take_output()), vec![('a', 101)]);
    }

    #[test]
    fn keyed_instances_own_their_key_groups_and_split_or_merge_them_on_restore() {
        let key_of = |s: &Sum| s.0;
        let bad = KeyedInstances::new(0, 128, |_| sums(), key_of).err();
        assert!(matches!(
            bad,
            Some(HarnessError::BadParallelism { parallelism: 0, .. })
        ));
        let mut three = KeyedInstances::new(3, 128, |_| sums(), key_of).unwrap();
        for key in ['a', 'b', 'c', 'd', 'e'] {
            three.push_record(Record::new((key, 1))).unwrap();
        }
        let snapshots = three.snapshot().unwrap();
        let mut two = KeyedInstances::restored(&snapshots, 2, 128, |_| sums(), key_of).unwrap();
        for key in ['a', 'b', 'c', 'd', 'e'] {
            two.push_record(Record::new((key, 1))).unwrap();
        }
        let mut merged = Vec::new();
        for (range, instance) in two.instances() {
            for (key, count) in values(&instance.take_output()) {
                assert!(
                    range.contains(key_group_of(&key, 128)),
                    "{key} on {range:?}"
                );
                merged.push((key, count));
            }
        }
        merged.sort();
        assert_eq!(
            merged,
            vec![('a', 2), ('b', 2), ('c', 2), ('d', 2), ('e', 2)],
            "every count restored, wherever its key group went"
        );
    }
}

//! Two-input operators: `connect` two streams and process both with shared keyed state.
//!
//! A two-input operator reads the union of its inputs, each record wrapped as [`Either`]: the
//! first input's records are `Left`, the second's `Right`. The subtask already treats all of
//! its input channels alike — barriers align across every channel and the watermark is the
//! minimum over every channel — so alignment and the watermark rule hold across both inputs,
//! with no second code path in the subtask.
//!
//! [`KeyedCoProcessFunction`] is what users implement; [`CoProcess`] runs one as a keyed process
//! function over the wrapped records, so it has the same state, timers and side outputs.
//! [`IntervalJoin`] is a built-in co-process function; the window join is a window function
//! ([`crate::window::WindowJoin`]).

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::element::{Data, Timestamp};
use crate::error::{BoxError, MissingEventTime};
use crate::key::Key;
use crate::keyed::{KeyedContext, KeyedProcessFunction};
use crate::side_output::OutputTag;
use crate::state::{MapState, StateValue};

/// A record of the first (`Left`) or the second (`Right`) input of a two-input operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Either<A, B> {
    /// A record of the first input.
    Left(A),
    /// A record of the second input.
    Right(B),
}

/// A function over two keyed streams connected by the same key: each input's records reach
/// their own method, with the key's shared state, timers and side outputs.
pub trait KeyedCoProcessFunction: Clone + Send + 'static {
    /// The key both inputs are partitioned by.
    type Key: Key;
    /// The first input's records.
    type In1: Data;
    /// The second input's records.
    type In2: Data;
    /// The records it emits.
    type Out: Data;

    /// Processes one record of the first input.
    fn process1(
        &mut self,
        value: Self::In1,
        ctx: &mut KeyedContext<'_, Self::Key, Self::Out>,
    ) -> Result<(), BoxError>;

    /// Processes one record of the second input.
    fn process2(
        &mut self,
        value: Self::In2,
        ctx: &mut KeyedContext<'_, Self::Key, Self::Out>,
    ) -> Result<(), BoxError>;

    /// A timer registered for `ctx.key()` fired at `timestamp`.
    fn on_timer(
        &mut self,
        _timestamp: Timestamp,
        _ctx: &mut KeyedContext<'_, Self::Key, Self::Out>,
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Runs a [`KeyedCoProcessFunction`] as the process function of the connected inputs.
#[derive(Clone)]
pub struct CoProcess<F>(pub F);

impl<F: KeyedCoProcessFunction> KeyedProcessFunction for CoProcess<F> {
    type Key = F::Key;
    type In = Either<F::In1, F::In2>;
    type Out = F::Out;

    fn process(
        &mut self,
        value: Either<F::In1, F::In2>,
        ctx: &mut KeyedContext<'_, F::Key, F::Out>,
    ) -> Result<(), BoxError> {
        match value {
            Either::Left(value) => self.0.process1(value, ctx),
            Either::Right(value) => self.0.process2(value, ctx),
        }
    }

    fn on_timer(
        &mut self,
        timestamp: Timestamp,
        ctx: &mut KeyedContext<'_, F::Key, F::Out>,
    ) -> Result<(), BoxError> {
        self.0.on_timer(timestamp, ctx)
    }
}

/// Joins two keyed streams on time intervals: a record `a` of the first input pairs with every
/// record `b` of the second input of the same key whose time lies in
/// `[a's time + lower, a's time + upper]`; each pair is emitted once, with the later of the
/// two timestamps.
///
/// Each side's records wait in keyed state until the watermark is past the last time a partner
/// could have (then an event-time timer drops them). As in Flink, a record is late when its
/// time is below the watermark when it arrives: it could miss partners already dropped, and
/// goes to the `late` side output instead. A record exactly at the watermark is joined, and
/// the partners at the bounds of its interval are still held for it.
pub struct IntervalJoin<K, A, B, O, F> {
    lower: i64,
    upper: i64,
    join: Arc<F>,
    late: OutputTag<Either<A, B>>,
    left: MapState<i64, Vec<A>>,
    right: MapState<i64, Vec<B>>,
    types: PhantomData<fn(K) -> O>,
}

impl<K, A: Clone, B: Clone, O, F> Clone for IntervalJoin<K, A, B, O, F> {
    fn clone(&self) -> Self {
        IntervalJoin {
            lower: self.lower,
            upper: self.upper,
            join: Arc::clone(&self.join),
            late: self.late.clone(),
            left: self.left.clone(),
            right: self.right.clone(),
            types: PhantomData,
        }
    }
}

/// An interval whose lower bound is above its upper bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an interval join's lower bound ({lower} ms) is above its upper bound ({upper} ms)")]
pub struct BadInterval {
    /// The lower bound.
    pub lower: i64,
    /// The upper bound.
    pub upper: i64,
}

/// Checks an interval join's bounds: a lower bound above the upper one would never pair
/// anything.
pub fn check_interval(lower: i64, upper: i64) -> Result<(), BadInterval> {
    if lower > upper {
        return Err(BadInterval { lower, upper });
    }
    Ok(())
}

impl<K, A, B, O, F> IntervalJoin<K, A, B, O, F>
where
    A: StateValue,
    B: StateValue,
{
    /// Pairs with `join` the records `b` whose time is in `[a + lower, a + upper]` (ms, either
    /// may be negative; see [`check_interval`]); late records go to `late`.
    pub fn new(lower: i64, upper: i64, join: Arc<F>, late: OutputTag<Either<A, B>>) -> Self {
        IntervalJoin {
            lower,
            upper,
            join,
            late,
            left: MapState::new("interval-join-left"),
            right: MapState::new("interval-join-right"),
            types: PhantomData,
        }
    }

    /// When a first-input record at `time` can have no more partners: once the watermark is
    /// past its last partner's time (a partner exactly at the watermark is not late).
    fn left_expiry(&self, time: i64) -> i64 {
        time.wrapping_add(self.upper.max(0)).wrapping_add(1)
    }

    /// When a second-input record at `time` can have no more partners.
    fn right_expiry(&self, time: i64) -> i64 {
        time.wrapping_sub(self.lower.min(0)).wrapping_add(1)
    }
}

/// The event time of a record an interval join needs.
fn event_time(timestamp: Option<Timestamp>) -> Result<i64, MissingEventTime> {
    Ok(MissingEventTime::require(timestamp, "an interval join")?.0)
}

impl<K, A, B, O, F> KeyedCoProcessFunction for IntervalJoin<K, A, B, O, F>
where
    K: Key,
    A: Data + StateValue,
    B: Data + StateValue,
    O: Data,
    F: Fn(&A, &B) -> O + Send + Sync + 'static,
{
    type Key = K;
    type In1 = A;
    type In2 = B;
    type Out = O;

    fn process1(&mut self, a: A, ctx: &mut KeyedContext<'_, K, O>) -> Result<(), BoxError> {
        let time = event_time(ctx.timestamp())?;
        if Timestamp(time) < ctx.current_watermark() {
            ctx.output(&self.late, Either::Left(a));
            return Ok(());
        }
        let (from, to) = (
            time.saturating_add(self.lower),
            time.saturating_add(self.upper),
        );
        for (partner_time, partners) in self.right.entries(ctx) {
            if (from..=to).contains(&partner_time) {
                for b in &partners {
                    ctx.emit_with_timestamp((self.join)(&a, b), Timestamp(time.max(partner_time)));
                }
            }
        }
        let mut waiting = self.left.get(ctx, &time).unwrap_or_default();
        waiting.push(a);
        self.left.insert(ctx, time, waiting);
        ctx.register_event_time_timer(Timestamp(self.left_expiry(time)));
        Ok(())
    }

    fn process2(&mut self, b: B, ctx: &mut KeyedContext<'_, K, O>) -> Result<(), BoxError> {
        let time = event_time(ctx.timestamp())?;
        if Timestamp(time) < ctx.current_watermark() {
            ctx.output(&self.late, Either::Right(b));
            return Ok(());
        }
        let (from, to) = (
            time.saturating_sub(self.upper),
            time.saturating_sub(self.lower),
        );
        for (partner_time, partners) in self.left.entries(ctx) {
            if (from..=to).contains(&partner_time) {
                for a in &partners {
                    ctx.emit_with_timestamp((self.join)(a, &b), Timestamp(time.max(partner_time)));
                }
            }
        }
        let mut waiting = self.right.get(ctx, &time).unwrap_or_default();
        waiting.push(b);
        self.right.insert(ctx, time, waiting);
        ctx.register_event_time_timer(Timestamp(self.right_expiry(time)));
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: Timestamp,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), BoxError> {
        // The timer is the expiry of the records of one time on either side: drop them.
        // (Wrapping, as the expiries are: the inverse is exact.)
        let expired = timestamp.0.wrapping_sub(1);
        let left_time = expired.wrapping_sub(self.upper.max(0));
        let right_time = expired.wrapping_add(self.lower.min(0));
        self.left.remove(ctx, &left_time);
        self.right.remove(ctx, &right_time);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::Record;
    use crate::keyed::KeyedProcess;
    use crate::operator::OneInputOperator;
    use crate::side_output::Tagged;
    use crate::state::{KeyedStateStore, ValueState};

    type Input<A, B> = Either<(u8, A), (u8, B)>;

    fn key_of<A, B>(input: &Input<A, B>) -> u8 {
        match input {
            Either::Left((key, _)) | Either::Right((key, _)) => *key,
        }
    }

    /// Records of both inputs, each with its event time.
    type Timed<F> = Vec<(
        Either<<F as KeyedCoProcessFunction>::In1, <F as KeyedCoProcessFunction>::In2>,
        i64,
    )>;

    fn run<F>(
        op: &mut KeyedProcess<CoProcess<F>>,
        input: Timed<F>,
        watermark: i64,
    ) -> (Vec<(F::Out, i64)>, usize)
    where
        F: KeyedCoProcessFunction<Key = u8>,
    {
        let mut out = Vec::new();
        let records = input
            .into_iter()
            .map(|(value, time)| Record::with_timestamp(value, Timestamp(time)))
            .collect();
        op.process_batch(records, &mut out).unwrap();
        op.on_watermark(Timestamp(watermark), &mut out).unwrap();
        let mut main = Vec::new();
        let mut side = 0;
        for record in out {
            let time = record.timestamp().map_or(i64::MIN, |t| t.0);
            match record.value {
                Tagged::Main(value) => main.push((value, time)),
                Tagged::Side(_) => side += 1,
            }
        }
        (main, side)
    }

    /// Passes the second input's records only while the first input has enabled the key;
    /// an enable lasts 100 ms of event time.
    #[derive(Clone)]
    struct Gate {
        open_until: ValueState<i64>,
    }

    impl KeyedCoProcessFunction for Gate {
        type Key = u8;
        type In1 = (u8, ());
        type In2 = (u8, u32);
        type Out = u32;

        fn process1(
            &mut self,
            _: (u8, ()),
            ctx: &mut KeyedContext<'_, u8, u32>,
        ) -> Result<(), BoxError> {
            let until = ctx.timestamp().ok_or("no time")?.0 + 100;
            self.open_until.set(ctx, until);
            ctx.register_event_time_timer(Timestamp(until));
            Ok(())
        }

        fn process2(
            &mut self,
            (_, value): (u8, u32),
            ctx: &mut KeyedContext<'_, u8, u32>,
        ) -> Result<(), BoxError> {
            if self.open_until.get(ctx).is_some() {
                ctx.emit(value);
            }
            Ok(())
        }

        fn on_timer(
            &mut self,
            timestamp: Timestamp,
            ctx: &mut KeyedContext<'_, u8, u32>,
        ) -> Result<(), BoxError> {
            if self.open_until.get(ctx) == Some(timestamp.0) {
                self.open_until.clear(ctx);
            }
            Ok(())
        }
    }

    #[test]
    fn a_co_process_function_shares_keyed_state_and_timers_across_both_inputs() {
        let gate = Gate {
            open_until: ValueState::new("open-until"),
        };
        let mut op =
            KeyedProcess::new(CoProcess(gate), Arc::new(key_of), KeyedStateStore::new(128));
        let (passed, _) = run(
            &mut op,
            vec![
                (Either::Right((1, 10)), 0),
                (Either::Left((1, ())), 5),
                (Either::Right((1, 11)), 6),
                (Either::Right((2, 12)), 7),
            ],
            50,
        );
        assert_eq!(passed, vec![(11, 6)], "key 2 was never enabled");
        let (passed, _) = run(&mut op, vec![(Either::Right((1, 13)), 104)], 105);
        assert_eq!(passed, vec![(13, 104)]);
        let (passed, _) = run(&mut op, vec![(Either::Right((1, 14)), 106)], 200);
        assert_eq!(passed, vec![], "the gate's timer closed it at 105");
    }

    type Named = (u8, char);
    type PairUp = fn(&Named, &Named) -> (char, char);
    type Joining = KeyedProcess<CoProcess<IntervalJoin<u8, Named, Named, (char, char), PairUp>>>;

    fn interval_join(lower: i64, upper: i64) -> Joining {
        let pair_up: PairUp = |a, b| (a.1, b.1);
        let join = IntervalJoin::new(lower, upper, Arc::new(pair_up), OutputTag::new("late"));
        KeyedProcess::new(CoProcess(join), Arc::new(key_of), KeyedStateStore::new(128))
    }

    #[test]
    fn an_interval_join_pairs_records_within_the_interval_once() {
        let mut op = interval_join(-5, 10);
        let (pairs, late) = run(
            &mut op,
            vec![
                (Either::Left((1, 'a')), 100),
                (Either::Right((1, 'x')), 94),  // 100 - 6: too early
                (Either::Right((1, 'y')), 95),  // 100 - 5: in
                (Either::Right((1, 'z')), 110), // 100 + 10: in
                (Either::Right((2, 'w')), 100), // other key
                (Either::Left((1, 'b')), 111),  // pairs with z (110 in [106, 121])
                (Either::Right((1, 'v')), 111), // 111 + 5 - 10: a needs [101, 116]... a at 100? no; b at 111 in [101, 116]: yes
            ],
            0,
        );
        assert_eq!(
            pairs,
            vec![
                (('a', 'y'), 100),
                (('a', 'z'), 110),
                (('b', 'z'), 111),
                (('b', 'v'), 111)
            ]
        );
        assert_eq!(late, 0);
        // The watermark passed every waiting record's last chance: all are dropped, and a
        // record behind the watermark is late rather than silently unmatched.
        let (pairs, late) = run(&mut op, vec![], 1_000);
        assert_eq!((pairs, late), (vec![], 0));
        let mut snapshot = op
            .snapshot_state(crate::checkpoint::CheckpointId(1))
            .unwrap();
        snapshot.complete().unwrap();
        assert!(
            snapshot
                .keyed
                .tables
                .keys()
                .all(|table| !table.starts_with("interval-join")),
            "every waiting record was dropped: {:?}",
            snapshot.keyed.tables.keys().collect::<Vec<_>>()
        );
        let (pairs, late) = run(
            &mut op,
            vec![
                (Either::Right((1, 'u')), 999),
                (Either::Left((1, 'c')), 1_001),
            ],
            1_000,
        );
        assert_eq!((pairs, late), (vec![], 1));
    }

    #[test]
    fn a_record_exactly_at_the_watermark_joins_its_partner_at_the_bound_as_in_flink() {
        // Flink's IntervalJoinOperator: late means strictly below the watermark.
        let mut op = interval_join(0, 10);
        run(&mut op, vec![(Either::Left((1, 'a')), 100)], 110);
        let (pairs, late) = run(&mut op, vec![(Either::Right((1, 'b')), 110)], 110);
        assert_eq!(late, 0, "at the watermark is not late");
        assert_eq!(pairs.len(), 1, "a@100 is still held for b@110: {pairs:?}");
        run(&mut op, vec![], 111);
        let (pairs, late) = run(&mut op, vec![(Either::Right((1, 'c')), 110)], 111);
        assert_eq!(
            (pairs.len(), late),
            (0, 1),
            "below the watermark is late, and a@100 is gone"
        );
    }

    #[test]
    fn an_interval_with_lower_above_upper_is_an_error() {
        let error = check_interval(5, 1).unwrap_err();
        assert!(check_interval(-5, -5).is_ok());
        assert_eq!(
            error.to_string(),
            "an interval join's lower bound (5 ms) is above its upper bound (1 ms)"
        );
    }
}

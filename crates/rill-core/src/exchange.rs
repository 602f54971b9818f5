//! Exchange strategies: how the records of one upstream subtask are split among the subtasks
//! of the downstream operator.
//!
//! A [`Router`] is the typed half of a partitioner: it knows the record type and splits one
//! batch into per-target batches. Watermarks and end-of-input are not routed: every target
//! receives them (see [`crate::partitioner`]).

use std::marker::PhantomData;
use std::sync::Arc;

use crate::element::{Data, Event, Record, RecordTypeMismatch, Records};
use crate::key::{Key, key_group_of, subtask_for_key_group};

/// Which exchange an edge uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Subtask `i` sends to subtask `i` only; needs equal parallelism on both sides.
    Forward,
    /// Records go round-robin to every downstream subtask.
    Rebalance,
    /// A record goes to the subtask owning its key's key group.
    KeyHash,
    /// Every record goes to every downstream subtask.
    Broadcast,
}

/// Splits batches among a partitioner's targets.
pub trait Router: Send {
    /// Appends this batch's records to the target event lists, each as one `Event::Records`.
    fn route(
        &mut self,
        records: Records,
        targets: &mut [Vec<Event>],
    ) -> Result<(), RecordTypeMismatch>;
}

/// Where a router runs: what it needs to route the way every other partitioner of its edge
/// does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterContext {
    /// The index of the upstream subtask the partitioner serves.
    pub upstream_subtask: u32,
    /// The job's number of key groups.
    pub max_parallelism: u32,
}

/// Builds a fresh router for each partitioner of an edge.
pub type RouterFactory = Arc<dyn Fn(&RouterContext) -> Box<dyn Router> + Send + Sync>;

/// Hands the whole batch to the only target.
pub struct ForwardRouter;

impl Router for ForwardRouter {
    fn route(
        &mut self,
        records: Records,
        targets: &mut [Vec<Event>],
    ) -> Result<(), RecordTypeMismatch> {
        debug_assert_eq!(targets.len(), 1, "a forward partitioner has one target");
        if let Some(target) = targets.first_mut() {
            target.push(Event::Records(records));
        }
        Ok(())
    }
}

/// Hands a copy of the batch to every target.
pub struct BroadcastRouter;

impl Router for BroadcastRouter {
    fn route(
        &mut self,
        records: Records,
        targets: &mut [Vec<Event>],
    ) -> Result<(), RecordTypeMismatch> {
        if let Some((last, rest)) = targets.split_last_mut() {
            for target in rest {
                target.push(Event::Records(records.clone()));
            }
            last.push(Event::Records(records));
        }
        Ok(())
    }
}

fn push_split<T: Data>(split: Vec<Vec<Record<T>>>, targets: &mut [Vec<Event>]) {
    for (records, target) in split.into_iter().zip(targets) {
        if !records.is_empty() {
            target.push(Event::Records(Records::new(records)));
        }
    }
}

/// Deals records round-robin; the turn carries over between batches, so over any prefix of the
/// stream the targets' counts differ by at most one.
pub struct RebalanceRouter<T> {
    next: usize,
    records: PhantomData<fn(T)>,
}

impl<T> RebalanceRouter<T> {
    /// A router whose first record goes to target `start` (spreading the first records of
    /// several upstream subtasks over different targets).
    pub fn starting_at(start: usize) -> Self {
        RebalanceRouter {
            next: start,
            records: PhantomData,
        }
    }
}

impl<T: Data> Router for RebalanceRouter<T> {
    fn route(
        &mut self,
        records: Records,
        targets: &mut [Vec<Event>],
    ) -> Result<(), RecordTypeMismatch> {
        let records = records.downcast::<T>()?;
        let n = targets.len();
        let mut split: Vec<Vec<Record<T>>> = (0..n)
            .map(|_| Vec::with_capacity(records.len() / n + 1))
            .collect();
        let mut next = self.next % n;
        for record in records {
            split[next].push(record);
            next = if next + 1 == n { 0 } else { next + 1 };
        }
        self.next = next;
        push_split(split, targets);
        Ok(())
    }
}

/// Sends each record to the subtask owning its key's key group.
///
/// Generic over the selector's type so that a concrete closure is inlined into the routing loop;
/// a shared [`KeySelector`](crate::keyed::KeySelector) works too.
pub struct KeyHashRouter<T, K, S: ?Sized = dyn Fn(&T) -> K + Send + Sync> {
    key_of: Arc<S>,
    max_parallelism: u32,
    /// The target of each key group, computed on the first batch (when the number of targets
    /// is known) so that routing a record costs no division.
    target_of_group: Vec<u32>,
    records: PhantomData<fn(&T) -> K>,
}

impl<T, K, S: ?Sized> KeyHashRouter<T, K, S> {
    /// A router by the key `key_of` extracts, over `max_parallelism` key groups.
    pub fn new(key_of: Arc<S>, max_parallelism: u32) -> Self {
        KeyHashRouter {
            key_of,
            max_parallelism,
            target_of_group: Vec::new(),
            records: PhantomData,
        }
    }
}

impl<T: Data, K: Key, S: Fn(&T) -> K + Send + Sync + ?Sized> Router for KeyHashRouter<T, K, S> {
    fn route(
        &mut self,
        records: Records,
        targets: &mut [Vec<Event>],
    ) -> Result<(), RecordTypeMismatch> {
        let records = records.downcast::<T>()?;
        let n = targets.len() as u32;
        if n == 1 {
            push_split(vec![records], targets);
            return Ok(());
        }
        if self.target_of_group.len() != self.max_parallelism as usize {
            self.target_of_group = (0..self.max_parallelism)
                .map(|group| subtask_for_key_group(group, n, self.max_parallelism))
                .collect();
        }
        // Room for a fair share plus slack, so that most batches split without reallocating.
        let share = records.len() / n as usize;
        let mut split: Vec<Vec<Record<T>>> = (0..n)
            .map(|_| Vec::with_capacity(share + share / 8 + 16))
            .collect();
        for record in records {
            let group = key_group_of(&(self.key_of)(&record.value), self.max_parallelism);
            split[self.target_of_group[group as usize] as usize].push(record);
        }
        push_split(split, targets);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn route_all<T: Data>(router: &mut dyn Router, batches: Vec<Vec<T>>, n: usize) -> Vec<Vec<T>> {
        let mut received = vec![Vec::new(); n];
        for batch in batches {
            let mut targets = vec![Vec::new(); n];
            router
                .route(
                    Records::new(batch.into_iter().map(Record::new).collect()),
                    &mut targets,
                )
                .unwrap();
            for (target, events) in targets.into_iter().enumerate() {
                for event in events {
                    let Event::Records(records) = event else {
                        panic!("only records are routed")
                    };
                    received[target].extend(
                        records
                            .downcast::<T>()
                            .unwrap()
                            .into_iter()
                            .map(|r| r.value),
                    );
                }
            }
        }
        received
    }

    proptest! {
        #[test]
        fn key_hash_sends_a_key_to_one_subtask_only(
            batches in prop::collection::vec(prop::collection::vec(0u32..50, 0..40), 1..6),
            n in 1usize..8,
        ) {
            let mut router = KeyHashRouter::<u32, u32>::new(Arc::new(|x| *x), 128);
            let received = route_all(&mut router, batches.clone(), n);
            let total: usize = received.iter().map(Vec::len).sum();
            prop_assert_eq!(total, batches.iter().map(Vec::len).sum::<usize>());
            for (target, values) in received.iter().enumerate() {
                for value in values {
                    let group = key_group_of(value, 128);
                    prop_assert_eq!(subtask_for_key_group(group, n as u32, 128) as usize, target);
                }
            }
        }

        #[test]
        fn rebalance_spreads_within_one(
            sizes in prop::collection::vec(0usize..50, 1..8),
            n in 1usize..8,
            start in 0usize..8,
        ) {
            let batches: Vec<Vec<usize>> = sizes.iter().map(|&s| (0..s).collect()).collect();
            let received = route_all(&mut RebalanceRouter::<usize>::starting_at(start), batches, n);
            let counts: Vec<usize> = received.iter().map(Vec::len).collect();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(max - min <= 1, "counts {:?}", counts);
            prop_assert_eq!(counts.iter().sum::<usize>(), sizes.iter().sum::<usize>());
        }

        #[test]
        fn broadcast_reaches_every_target(values in prop::collection::vec(any::<u8>(), 0..30), n in 1usize..6) {
            let received = route_all(&mut BroadcastRouter, vec![values.clone()], n);
            for target in received {
                prop_assert_eq!(&target, &values);
            }
        }
    }
}

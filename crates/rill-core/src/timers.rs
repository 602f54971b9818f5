//! Timers of keyed operators: event-time timers fire when the watermark reaches them,
//! processing-time timers when the driver's clock does.
//!
//! A timer belongs to a key and a namespace (`()` for process functions, the window for window
//! operators); registering the same (key, namespace, time) twice keeps one timer. Due timers
//! fire in timestamp order, and timers of one timestamp in the order they were registered, so a
//! run's firing order depends only on its input.
//!
//! Timers are keyed state: a snapshot stores them per key group, under the reserved tables
//! `__timers/event-time` and `__timers/processing-time` of the operator's
//! [`KeyedStateSnapshot`], so that they restore — and rescale — with the rest of the key's
//! state. Each keeps its place among the timers of its time, so restored timers fire in the
//! order they would have. A timer registered before a crash fires after recovery, once: the
//! checkpoint holds it only if it had not fired when the barrier passed. The operator's
//! watermark is kept too, so that what was late before a failure is late after it.
//!
//! The end of input is not a watermark that survives: when a bounded input ends, the driver
//! moves the watermark to the end of time (`Timestamp::MAX`) so that every timer fires, but a
//! snapshot keeps the last watermark the input itself gave. A job started again on new records
//! from a bounded run's final checkpoint treats them as the input's continuation: late only if
//! they are late for the watermark its records had reached (windows the end of input fired
//! early fire a second time, over the new records only, when the watermark passes them).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;

use crate::element::Timestamp;
use crate::key::{Key, key_group_of};
use crate::state::{KeyedStateSnapshot, StateError, decode, encode};

/// What the operator's watermark is called in snapshots.
const WATERMARK: &str = "__timers/watermark";

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Event time: the timer fires when the watermark reaches it.
    EventTime,
    /// Processing time: the timer fires when the driver's clock reaches it.
    ProcessingTime,
}

impl TimeDomain {
    /// The snapshot table the domain's timers are stored under.
    fn table(self) -> &'static str {
        match self {
            TimeDomain::EventTime => "__timers/event-time",
            TimeDomain::ProcessingTime => "__timers/processing-time",
        }
    }
}

/// The timers of one domain: for each time, its timers in the order they were registered,
/// and the registered timers with their registration numbers. A deleted timer leaves the index
/// only; its queue entry is skipped when its time comes (and when a snapshot lists the queue),
/// also if the timer was registered again, later in the queue. Timers of one time share one queue entry, so
/// the many timers of aligned windows (every key's window ends at the same time) cost a push
/// and a set insertion each.
struct TimerQueue<K, N> {
    due: BTreeMap<Timestamp, VecDeque<(K, N, u64)>>,
    /// Each registered timer's registration number: a queue entry whose number is not its
    /// timer's current one was deleted (and perhaps registered again, further back).
    registered: FxHashMap<(K, N, Timestamp), u64>,
    next_registration: u64,
}

impl<K: Key, N: Key> TimerQueue<K, N> {
    fn new() -> Self {
        TimerQueue {
            due: BTreeMap::new(),
            registered: FxHashMap::default(),
            next_registration: 0,
        }
    }

    fn register(&mut self, key: K, namespace: N, time: Timestamp) {
        if let Entry::Vacant(entry) = self
            .registered
            .entry((key.clone(), namespace.clone(), time))
        {
            let registration = self.next_registration;
            self.next_registration += 1;
            entry.insert(registration);
            self.due
                .entry(time)
                .or_default()
                .push_back((key, namespace, registration));
        }
    }

    fn delete(&mut self, key: &K, namespace: &N, time: Timestamp) {
        self.registered
            .remove(&(key.clone(), namespace.clone(), time));
    }

    /// Whether a queue entry is its timer's current registration.
    fn is_current(&self, key: &K, namespace: &N, time: Timestamp, registration: u64) -> bool {
        self.registered
            .get(&(key.clone(), namespace.clone(), time))
            .is_some_and(|current| *current == registration)
    }

    /// Removes and returns the earliest registered timer at or before `up_to`.
    fn pop_due(&mut self, up_to: Timestamp) -> Option<(Timestamp, K, N)> {
        loop {
            let mut entry = self.due.first_entry()?;
            let time = *entry.key();
            if time > up_to {
                return None;
            }
            let Some((key, namespace, registration)) = entry.get_mut().pop_front() else {
                entry.remove();
                continue;
            };
            if self.is_current(&key, &namespace, time, registration) {
                self.registered
                    .remove(&(key.clone(), namespace.clone(), time));
                return Some((time, key, namespace));
            }
        }
    }

    fn len(&self) -> usize {
        self.registered.len()
    }

    /// The registered timers per key group, each with its place among the timers of its
    /// time, so that a restore fires them in the same order.
    fn snapshot(
        &self,
        table: &str,
        max_parallelism: u32,
    ) -> Result<BTreeMap<u32, Vec<u8>>, StateError> {
        let mut groups: BTreeMap<u32, Vec<(&K, &N, Timestamp, u64)>> = BTreeMap::new();
        for (time, timers) in &self.due {
            for (place, (key, namespace, registration)) in timers.iter().enumerate() {
                if self.is_current(key, namespace, *time, *registration) {
                    groups
                        .entry(key_group_of(key, max_parallelism))
                        .or_default()
                        .push((key, namespace, *time, place as u64));
                }
            }
        }
        groups
            .into_iter()
            .map(|(group, timers)| Ok((group, encode(table, &timers)?)))
            .collect()
    }

    /// Registers the timers of the given key groups, in the order they would have fired.
    fn restore(&mut self, table: &str, groups: BTreeMap<u32, Vec<u8>>) -> Result<(), StateError> {
        let mut timers: Vec<(K, N, Timestamp, u64)> = Vec::new();
        for (group, bytes) in groups {
            timers.extend(decode::<Vec<(K, N, Timestamp, u64)>>(table, group, &bytes)?);
        }
        // Stable: timers of one place in different snapshots (after a rescale) keep their
        // key groups' order.
        timers.sort_by_key(|(_, _, time, place)| (*time, *place));
        for (key, namespace, time, _) in timers {
            self.register(key, namespace, time);
        }
        Ok(())
    }
}

/// The event-time and processing-time timers of one keyed operator instance, with the
/// operator's view of both clocks.
pub struct TimerService<K, N> {
    event_time: TimerQueue<K, N>,
    processing_time: TimerQueue<K, N>,
    watermark: Timestamp,
    /// The last watermark below the end of time: what a snapshot keeps.
    input_watermark: Timestamp,
    now: Timestamp,
    max_parallelism: u32,
    /// Planted on purpose (by the operator it serves): it drops the timers it is restored
    /// with.
    #[cfg(feature = "defects")]
    drops_restored: bool,
    /// Planted on purpose (by the operator it serves): event-time timers fire one ms early.
    #[cfg(feature = "defects")]
    fires_early: bool,
}

impl<K: Key, N: Key> TimerService<K, N> {
    /// No timers, over `max_parallelism` key groups; both clocks at their start.
    pub fn new(max_parallelism: u32) -> Self {
        TimerService {
            event_time: TimerQueue::new(),
            processing_time: TimerQueue::new(),
            watermark: Timestamp::MIN,
            input_watermark: Timestamp::MIN,
            now: Timestamp::MIN,
            max_parallelism,
            #[cfg(feature = "defects")]
            drops_restored: false,
            #[cfg(feature = "defects")]
            fires_early: false,
        }
    }

    /// The operator's input watermark.
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The latest processing time the driver reported.
    pub fn current_processing_time(&self) -> Timestamp {
        self.now
    }

    /// Registers a timer of `domain` for `key` and `namespace` at `time`.
    pub fn register(&mut self, domain: TimeDomain, key: K, namespace: N, time: Timestamp) {
        self.queue(domain).register(key, namespace, time);
    }

    /// Deletes the timer of `domain` for `key` and `namespace` at `time`, if there is one.
    pub fn delete(&mut self, domain: TimeDomain, key: &K, namespace: &N, time: Timestamp) {
        self.queue(domain).delete(key, namespace, time);
    }

    /// How many timers of `domain` are pending.
    pub fn pending(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event_time.len(),
            TimeDomain::ProcessingTime => self.processing_time.len(),
        }
    }

    fn queue(&mut self, domain: TimeDomain) -> &mut TimerQueue<K, N> {
        match domain {
            TimeDomain::EventTime => &mut self.event_time,
            TimeDomain::ProcessingTime => &mut self.processing_time,
        }
    }

    /// Moves the watermark to `watermark` (never back). `Timestamp::MAX` is the end of input:
    /// every timer fires, but snapshots keep the watermark before it.
    pub fn advance_watermark(&mut self, watermark: Timestamp) {
        self.watermark = self.watermark.max(watermark);
        if watermark < Timestamp::MAX {
            self.input_watermark = self.input_watermark.max(watermark);
        }
    }

    /// Moves processing time to `now` (never back).
    pub fn advance_processing_time(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
    }

    /// Removes and returns the earliest timer of `domain` its clock has reached. Call it until
    /// `None`: a timer registered while others fire fires in the same pass if it is due.
    pub fn pop_due(&mut self, domain: TimeDomain) -> Option<(Timestamp, K, N)> {
        match domain {
            TimeDomain::EventTime => self.event_time.pop_due(self.event_time_due()),
            TimeDomain::ProcessingTime => self.processing_time.pop_due(self.now),
        }
    }

    /// Adds the timers to `snapshot`, per key group.
    pub fn snapshot_into(&self, snapshot: &mut KeyedStateSnapshot) -> Result<(), StateError> {
        for domain in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
            let queue = match domain {
                TimeDomain::EventTime => &self.event_time,
                TimeDomain::ProcessingTime => &self.processing_time,
            };
            let groups = queue.snapshot(domain.table(), self.max_parallelism)?;
            if !groups.is_empty() {
                snapshot.tables.insert(domain.table().to_owned(), groups);
            }
        }
        Ok(())
    }

    /// The operator's watermark, encoded as operator (non-keyed) state: restored, a window
    /// closed before a failure stays closed to the records replayed after it, as without the
    /// failure. The end of input is not kept: the watermark before it is.
    pub fn snapshot_watermark(&self) -> Result<Vec<u8>, StateError> {
        encode(WATERMARK, &self.input_watermark)
    }

    /// Restores the watermark from the states [`TimerService::snapshot_watermark`] gave: the
    /// least of them (after a rescale, an instance takes over from several).
    pub fn restore_watermark(&mut self, states: &[Vec<u8>]) -> Result<(), StateError> {
        let mut restored: Option<Timestamp> = None;
        for state in states {
            let watermark: Timestamp = decode(WATERMARK, 0, state)?;
            restored = Some(restored.map_or(watermark, |least| least.min(watermark)));
        }
        if let Some(watermark) = restored {
            self.advance_watermark(watermark);
        }
        Ok(())
    }

    /// Takes the timers out of `snapshot` (already narrowed to this instance's key groups)
    /// and registers them; the rest of the snapshot is the operator's other keyed state.
    pub fn restore_from(&mut self, snapshot: &mut KeyedStateSnapshot) -> Result<(), StateError> {
        for domain in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
            if let Some(groups) = snapshot.tables.remove(domain.table())
                && !self.drops_restored()
            {
                self.queue(domain).restore(domain.table(), groups)?;
            }
        }
        Ok(())
    }

    /// Breaks the service on purpose, for the simulator to catch: restored, it drops the
    /// timers of its snapshot. Its operator plants it, under the operator's own defect.
    #[cfg(feature = "defects")]
    pub(crate) fn drop_restored_timers(&mut self) {
        self.drops_restored = true;
    }

    #[cfg(feature = "defects")]
    fn drops_restored(&self) -> bool {
        self.drops_restored
    }

    #[cfg(not(feature = "defects"))]
    fn drops_restored(&self) -> bool {
        false
    }

    /// Breaks the service on purpose, for the simulator to catch: event-time timers fire
    /// when the watermark is one ms short of them. Its operator plants it.
    #[cfg(feature = "defects")]
    pub(crate) fn fire_event_timers_early(&mut self) {
        self.fires_early = true;
    }

    /// Up to which time event-time timers are due: the watermark (a planted defect: one ms
    /// past it).
    #[cfg(feature = "defects")]
    fn event_time_due(&self) -> Timestamp {
        if self.fires_early {
            return Timestamp(self.watermark.0.saturating_add(1));
        }
        self.watermark
    }

    #[cfg(not(feature = "defects"))]
    fn event_time_due(&self) -> Timestamp {
        self.watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyGroupRange;

    fn fire_all(timers: &mut TimerService<u32, ()>, domain: TimeDomain) -> Vec<(i64, u32)> {
        std::iter::from_fn(|| timers.pop_due(domain))
            .map(|(time, key, ())| (time.0, key))
            .collect()
    }

    #[test]
    fn due_timers_fire_in_timestamp_then_registration_order() {
        let mut timers = TimerService::new(128);
        for (key, time) in [(1, 30), (2, 10), (3, 20), (4, 10), (5, 40)] {
            timers.register(TimeDomain::EventTime, key, (), Timestamp(time));
        }
        timers.advance_watermark(Timestamp(29));
        assert_eq!(
            fire_all(&mut timers, TimeDomain::EventTime),
            vec![(10, 2), (10, 4), (20, 3)]
        );
        timers.advance_watermark(Timestamp(5));
        assert_eq!(timers.current_watermark(), Timestamp(29), "never back");
        timers.advance_watermark(Timestamp(40));
        assert_eq!(
            fire_all(&mut timers, TimeDomain::EventTime),
            vec![(30, 1), (40, 5)]
        );
    }

    #[test]
    fn registering_twice_keeps_one_timer_and_deleting_removes_it() {
        let mut timers = TimerService::new(128);
        timers.register(TimeDomain::ProcessingTime, 7, (), Timestamp(100));
        timers.register(TimeDomain::ProcessingTime, 7, (), Timestamp(100));
        timers.register(TimeDomain::ProcessingTime, 7, (), Timestamp(200));
        timers.register(TimeDomain::EventTime, 7, (), Timestamp(100));
        assert_eq!(timers.pending(TimeDomain::ProcessingTime), 2);
        timers.delete(TimeDomain::ProcessingTime, &7, &(), Timestamp(200));
        timers.delete(TimeDomain::ProcessingTime, &8, &(), Timestamp(100));
        timers.advance_processing_time(Timestamp(1_000));
        assert_eq!(
            fire_all(&mut timers, TimeDomain::ProcessingTime),
            vec![(100, 7)]
        );
        assert_eq!(
            fire_all(&mut timers, TimeDomain::EventTime),
            vec![],
            "the event-time timer waits for the watermark"
        );
        // A deleted timer registered again is a new timer.
        timers.register(TimeDomain::ProcessingTime, 7, (), Timestamp(100));
        assert_eq!(
            fire_all(&mut timers, TimeDomain::ProcessingTime),
            vec![(100, 7)]
        );
    }

    #[test]
    fn a_timer_deleted_and_registered_again_fires_in_its_new_place_also_after_a_restore() {
        let mut timers = TimerService::new(128);
        timers.register(TimeDomain::EventTime, 2, (), Timestamp(50));
        timers.delete(TimeDomain::EventTime, &2, &(), Timestamp(50));
        timers.register(TimeDomain::EventTime, 0, (), Timestamp(50));
        timers.register(TimeDomain::EventTime, 2, (), Timestamp(50));
        let mut snapshot = KeyedStateSnapshot::default();
        timers.snapshot_into(&mut snapshot).unwrap();
        let mut restored = TimerService::<u32, ()>::new(128);
        restored.restore_from(&mut snapshot).unwrap();
        for service in [&mut timers, &mut restored] {
            service.advance_watermark(Timestamp(50));
            assert_eq!(
                fire_all(service, TimeDomain::EventTime),
                vec![(50, 0), (50, 2)],
                "registered again after key 0, key 2 fires after it"
            );
        }
    }

    #[test]
    fn the_end_of_input_is_not_kept_in_a_snapshot_the_watermark_before_it_is() {
        let mut timers = TimerService::<u32, ()>::new(128);
        timers.advance_watermark(Timestamp(70));
        timers.advance_watermark(Timestamp::MAX);
        assert_eq!(
            timers.current_watermark(),
            Timestamp::MAX,
            "every timer is due"
        );
        let state = timers.snapshot_watermark().unwrap();
        let mut restored = TimerService::<u32, ()>::new(128);
        restored.restore_watermark(&[state]).unwrap();
        assert_eq!(
            restored.current_watermark(),
            Timestamp(70),
            "a run started again from the final checkpoint goes on from the input's watermark"
        );
    }

    #[test]
    fn timers_restore_per_key_group_as_a_rescale_splits_them() {
        let mut timers = TimerService::new(128);
        for key in 0..50u32 {
            timers.register(
                TimeDomain::EventTime,
                key,
                (),
                Timestamp(i64::from(key % 7)),
            );
            timers.register(TimeDomain::ProcessingTime, key, (), Timestamp(5));
        }
        let mut snapshot = KeyedStateSnapshot::default();
        timers.snapshot_into(&mut snapshot).unwrap();

        let mut fired = Vec::new();
        let mut processing = 0;
        for index in 0..2 {
            let range = KeyGroupRange::for_subtask(index, 2, 128);
            let mut part = snapshot.select(range);
            let mut restored = TimerService::<u32, ()>::new(128);
            restored.restore_from(&mut part).unwrap();
            assert!(part.tables.is_empty(), "timer tables are taken out");
            restored.advance_watermark(Timestamp::MAX);
            let keys = fire_all(&mut restored, TimeDomain::EventTime);
            assert!(
                keys.iter()
                    .all(|(_, key)| range.contains(key_group_of(key, 128))),
                "an instance restores its own key groups' timers only"
            );
            assert!(keys.windows(2).all(|pair| pair[0].0 <= pair[1].0));
            fired.extend(keys);
            processing += restored.pending(TimeDomain::ProcessingTime);
        }
        assert_eq!(processing, 50);
        fired.sort();
        let mut expected: Vec<(i64, u32)> = (0..50).map(|key| (i64::from(key % 7), key)).collect();
        expected.sort();
        assert_eq!(fired, expected, "every timer restores exactly once");
    }
}

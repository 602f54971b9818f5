//! The window operator: runs a [`WindowFunction`] over the windows a [`WindowAssigner`] puts
//! each record of a keyed stream in.
//!
//! State, all keyed and checkpointed: each window's accumulator (in the window's namespace),
//! each global window's record count, each key's open sessions, and the event-time timers that
//! fire windows (at their last timestamp) and clean them up (at their last timestamp plus the
//! allowed lateness). A window whose cleanup time the watermark has reached is gone: a record
//! for it — when every window it belongs to is gone — is emitted to the late-data side output.
//!
//! Merging windows (sessions): a record's session window `[t, t + gap)` merges with every open
//! session of its key that it overlaps or touches; their accumulators are merged into the new,
//! covering session and their timers replaced by its own.

use crate::checkpoint::CheckpointId;
use crate::element::{Record, Timestamp};
use crate::error::BoxError;
use crate::keyed::{KeyScope, KeySelector, restore_keyed, snapshot_keyed};
use crate::operator::{OneInputOperator, OperatorSnapshot};
use crate::side_output::{OutputTag, Tagged};
use crate::state::{InNamespace, KeyedStateStore, ValueState};
use crate::timers::{TimeDomain, TimerService};

use super::functions::{WindowContext, WindowFunction};
use super::{TimeWindow, WindowAssigner};

/// Runs a window function over keyed windows; emits results and late records as [`Tagged`]
/// values (the late records under the tag given at construction).
pub struct WindowOperator<W: WindowFunction> {
    function: W,
    assigner: WindowAssigner,
    allowed_lateness: i64,
    late_data: OutputTag<W::In>,
    key_of: KeySelector<W::In, W::Key>,
    store: KeyedStateStore<W::Key>,
    timers: TimerService<W::Key, TimeWindow>,
    contents: ValueState<W::Acc>,
    counts: ValueState<u64>,
    sessions: ValueState<Vec<TimeWindow>>,
    /// Scratch space for a record's windows.
    assigned: Vec<TimeWindow>,
    /// Scratch space for a firing's results.
    results: Vec<W::Out>,
}

impl<W: WindowFunction> WindowOperator<W> {
    /// An operator instance computing `function` over the windows `assigner` gives the keys
    /// `key_of` extracts, with state in `store`. Records up to `allowed_lateness` ms behind
    /// the watermark still update their windows; later ones go to `late_data`.
    pub fn new(
        function: W,
        assigner: WindowAssigner,
        allowed_lateness: i64,
        late_data: OutputTag<W::In>,
        key_of: KeySelector<W::In, W::Key>,
        store: KeyedStateStore<W::Key>,
    ) -> Self {
        let timers = TimerService::new(store.max_parallelism());
        WindowOperator {
            function,
            assigner,
            allowed_lateness: allowed_lateness.max(0),
            late_data,
            key_of,
            store,
            timers,
            contents: ValueState::new("window-contents"),
            counts: ValueState::new("window-count"),
            sessions: ValueState::new("window-sessions"),
            assigned: Vec::new(),
            results: Vec::new(),
        }
    }

    /// When a window's state is dropped: its last timestamp plus the allowed lateness.
    fn cleanup_time(&self, window: &TimeWindow) -> Timestamp {
        Timestamp(
            window
                .max_timestamp()
                .0
                .saturating_add(self.allowed_lateness),
        )
    }

    fn is_gone(&self, window: &TimeWindow) -> bool {
        self.cleanup_time(window) <= self.timers.current_watermark()
    }

    /// Adds `value` to `window` of `key`.
    fn add(&mut self, key: &W::Key, window: &TimeWindow, value: W::In) -> Result<(), BoxError> {
        let mut scope = KeyScope {
            key,
            store: &mut self.store,
        };
        let mut scope = InNamespace::new(&mut scope, window)?;
        let function = &self.function;
        self.contents.update(&mut scope, |contents| {
            let contents = contents.get_or_insert_with(|| function.create());
            function.add(contents, value);
        });
        Ok(())
    }

    /// Emits the results of `window` of `key`, if it holds anything.
    fn fire(
        &mut self,
        key: &W::Key,
        window: &TimeWindow,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        let mut scope = KeyScope {
            key,
            store: &mut self.store,
        };
        let mut scope = InNamespace::new(&mut scope, window)?;
        let ctx = WindowContext::new(key, *window, self.timers.current_watermark());
        let (function, results) = (&mut self.function, &mut self.results);
        self.contents.with(&mut scope, |contents| match contents {
            Some(contents) => function.emit(&ctx, contents, results),
            None => Ok(()),
        })?;
        let timestamp = window.max_timestamp();
        out.extend(
            self.results
                .drain(..)
                .map(|value| Record::with_timestamp(Tagged::Main(value), timestamp)),
        );
        Ok(())
    }

    /// Drops the state of `window` of `key`.
    fn clear(&mut self, key: &W::Key, window: &TimeWindow) -> Result<(), BoxError> {
        let mut scope = KeyScope {
            key,
            store: &mut self.store,
        };
        let mut scope = InNamespace::new(&mut scope, window)?;
        self.contents.clear(&mut scope);
        Ok(())
    }

    /// Takes the accumulator of `window` of `key` out of state.
    fn take(&mut self, key: &W::Key, window: &TimeWindow) -> Result<Option<W::Acc>, BoxError> {
        let mut scope = KeyScope {
            key,
            store: &mut self.store,
        };
        let mut scope = InNamespace::new(&mut scope, window)?;
        Ok(self.contents.update(&mut scope, Option::take))
    }

    /// Registers the timers of a window that just received a record, or fires it at once if
    /// the watermark has passed its end (a late firing, within the allowed lateness).
    fn schedule(
        &mut self,
        key: &W::Key,
        window: &TimeWindow,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        let end = window.max_timestamp();
        if end <= self.timers.current_watermark() {
            self.fire(key, window, out)?;
        } else {
            self.timers
                .register(TimeDomain::EventTime, key.clone(), *window, end);
        }
        let cleanup = self.cleanup_time(window);
        if cleanup != end {
            self.timers
                .register(TimeDomain::EventTime, key.clone(), *window, cleanup);
        }
        Ok(())
    }

    fn unschedule(&mut self, key: &W::Key, window: &TimeWindow) {
        for time in [window.max_timestamp(), self.cleanup_time(window)] {
            self.timers.delete(TimeDomain::EventTime, key, window, time);
        }
    }

    /// A record for time windows that do not merge.
    fn add_to_windows(
        &mut self,
        key: W::Key,
        record: Record<W::In>,
        timestamp: Timestamp,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        let mut windows = std::mem::take(&mut self.assigned);
        self.assigner.assign(timestamp, &mut windows);
        windows.retain(|window| !self.is_gone(window));
        match windows.split_last() {
            None => out.push(Record::with_timestamp(
                Tagged::side(&self.late_data, record.value),
                timestamp,
            )),
            Some((last, rest)) => {
                for window in rest {
                    self.add(&key, window, record.value.clone())?;
                    self.schedule(&key, window, out)?;
                }
                self.add(&key, last, record.value)?;
                self.schedule(&key, last, out)?;
            }
        }
        self.assigned = windows;
        Ok(())
    }

    /// A record for session windows: merge its session with the key's sessions it touches.
    fn add_to_session(
        &mut self,
        key: W::Key,
        record: Record<W::In>,
        timestamp: Timestamp,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        let mut windows = std::mem::take(&mut self.assigned);
        self.assigner.assign(timestamp, &mut windows);
        let own = windows[0];
        self.assigned = windows;
        if self.is_gone(&own) {
            out.push(Record::with_timestamp(
                Tagged::side(&self.late_data, record.value),
                timestamp,
            ));
            return Ok(());
        }
        let mut scope = KeyScope {
            key: &key,
            store: &mut self.store,
        };
        let mut sessions = self.sessions.get(&mut scope).unwrap_or_default();
        let (touched, mut kept): (Vec<TimeWindow>, Vec<TimeWindow>) = sessions
            .drain(..)
            .partition(|session| session.intersects(&own));
        let merged = touched
            .iter()
            .fold(own, |cover, session| cover.cover(session));
        let mut contents: Option<W::Acc> = None;
        for session in &touched {
            self.unschedule(&key, session);
            if let Some(other) = self.take(&key, session)? {
                match &mut contents {
                    Some(into) => self.function.merge(into, other),
                    None => contents = Some(other),
                }
            }
        }
        if let Some(contents) = contents {
            let mut scope = KeyScope {
                key: &key,
                store: &mut self.store,
            };
            let mut scope = InNamespace::new(&mut scope, &merged)?;
            self.contents.set(&mut scope, contents);
        }
        let position = kept.partition_point(|session| session.start < merged.start);
        kept.insert(position, merged);
        let mut scope = KeyScope {
            key: &key,
            store: &mut self.store,
        };
        self.sessions.set(&mut scope, kept);
        self.add(&key, &merged, record.value)?;
        self.schedule(&key, &merged, out)
    }

    /// A record for the global window: fire and empty it when it holds `count` records.
    fn add_to_global(
        &mut self,
        key: W::Key,
        record: Record<W::In>,
        count: u64,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        let window = TimeWindow::GLOBAL;
        self.add(&key, &window, record.value)?;
        let mut scope = KeyScope {
            key: &key,
            store: &mut self.store,
        };
        let mut scope = InNamespace::new(&mut scope, &window)?;
        let reached = self.counts.update(&mut scope, |seen| {
            let now = seen.unwrap_or(0) + 1;
            *seen = (now < count).then_some(now);
            now >= count
        });
        if reached {
            self.fire(&key, &window, out)?;
            self.clear(&key, &window)?;
        }
        Ok(())
    }

    /// A window's timer fired at `time`: fire it at its end, drop it at its cleanup time.
    fn on_timer(
        &mut self,
        time: Timestamp,
        key: W::Key,
        window: TimeWindow,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        if time == window.max_timestamp() {
            self.fire(&key, &window, out)?;
        }
        if time == self.cleanup_time(&window) {
            self.clear(&key, &window)?;
            if self.assigner.is_merging() {
                let mut scope = KeyScope {
                    key: &key,
                    store: &mut self.store,
                };
                self.sessions.update(&mut scope, |sessions| {
                    if let Some(open) = sessions {
                        open.retain(|session| *session != window);
                        if open.is_empty() {
                            *sessions = None;
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

impl<W: WindowFunction> OneInputOperator for WindowOperator<W> {
    type In = W::In;
    type Out = Tagged<W::Out>;

    fn process_batch(
        &mut self,
        input: Vec<Record<W::In>>,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        for record in input {
            let key = (self.key_of)(&record.value);
            if let WindowAssigner::GlobalCount { count } = self.assigner {
                self.add_to_global(key, record, count, out)?;
                continue;
            }
            let Some(timestamp) = record.timestamp() else {
                return Err(
                    "an event-time window got a record without an event timestamp: \
                            give its source a watermark strategy (and a timestamp assigner)"
                        .into(),
                );
            };
            if self.assigner.is_merging() {
                self.add_to_session(key, record, timestamp, out)?;
            } else {
                self.add_to_windows(key, record, timestamp, out)?;
            }
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        self.timers.advance_watermark(watermark);
        while let Some((time, key, window)) = self.timers.pop_due(TimeDomain::EventTime) {
            self.on_timer(time, key, window, out)?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, _checkpoint: CheckpointId) -> Result<OperatorSnapshot, BoxError> {
        snapshot_keyed(&mut self.store, &self.timers)
    }

    fn restore_state(&mut self, snapshot: OperatorSnapshot) -> Result<(), BoxError> {
        restore_keyed(&mut self.store, &mut self.timers, snapshot)
    }
}

//! The window operator: runs a [`WindowFunction`] over the windows a [`WindowAssigner`] puts
//! each record of a keyed stream in.
//!
//! State, all keyed and checkpointed: each key's open windows with their accumulators, in one
//! list per key (a key has few windows open at once — one tumbling window, `size / slide`
//! sliding ones, its sessions — so a record costs one state lookup however many windows it
//! belongs to, and the list of a merging assigner is the key's sessions); each key's record
//! count in its global window; and the event-time timers that fire windows (at their last
//! timestamp) and clean them up (at their last timestamp plus the allowed lateness). A window
//! whose cleanup time the watermark has reached is gone: a record for it — when every window it
//! belongs to is gone — is emitted to the late-data side output. Late records are counted and
//! logged (a warning at the 1st, 2nd, 4th, 8th … of an instance) whether or not the job reads
//! the side output: a job that does not drops them, and must not do so silently.
//!
//! Merging windows (sessions): a record's session window `[t, t + gap)` merges with every open
//! session of its key that it overlaps or touches; their accumulators are merged into the new,
//! covering session and their timers replaced by its own. As in Flink, the record is late only
//! when that merged session is gone, not whenever its own window would be.

use crate::checkpoint::CheckpointId;
#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::element::{Record, Timestamp};
use crate::error::{BoxError, MissingEventTime};
use crate::keyed::{KeyScope, KeySelector, restore_keyed, snapshot_keyed};
use crate::operator::{OneInputOperator, OperatorSnapshot};
use crate::side_output::{OutputTag, Tagged};
use crate::state::{KeyedStateStore, ValueState};
use crate::timers::{TimeDomain, TimerService};

use super::functions::{WindowContext, WindowFunction};
use super::{TimeWindow, WindowAssigner};

/// A key's open windows and their accumulators, by window start.
type OpenWindows<A> = Vec<(TimeWindow, A)>;

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
    windows: ValueState<OpenWindows<W::Acc>>,
    counts: ValueState<u64>,
    /// Scratch space for a record's windows.
    assigned: Vec<TimeWindow>,
    /// Scratch space for the windows a record opened.
    opened: Vec<TimeWindow>,
    /// Scratch space for a firing's results.
    results: Vec<W::Out>,
    /// How many records came too late for every window they belong to.
    late_records: u64,
}

/// Emits `window`'s results onto `out`, each with the window's last timestamp.
fn emit<W: WindowFunction>(
    function: &mut W,
    ctx: &WindowContext<'_, W::Key>,
    accumulator: &W::Acc,
    results: &mut Vec<W::Out>,
    out: &mut Vec<Record<Tagged<W::Out>>>,
) -> Result<(), BoxError> {
    function.emit(ctx, accumulator, results)?;
    let timestamp = ctx.window().max_timestamp();
    out.extend(
        results
            .drain(..)
            .map(|value| Record::with_timestamp(Tagged::Main(value), timestamp)),
    );
    Ok(())
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
            windows: ValueState::new("window-contents"),
            counts: ValueState::new("window-count"),
            assigned: Vec::new(),
            opened: Vec::new(),
            results: Vec::new(),
            late_records: 0,
        }
    }

    /// How many records this instance emitted as late (since it was built: the count is not
    /// checkpointed).
    pub fn late_records(&self) -> u64 {
        self.late_records
    }

    /// Breaks the operator on purpose, for the simulator to catch: with `WindowDropsTimers`,
    /// restored, it drops its pending timers, so its restored windows never fire (unless a new
    /// record schedules them again); with `EventTimersFireEarly`, its windows fire when the
    /// watermark is one ms short of their end.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        match defect {
            Defect::WindowDropsTimers => self.timers.drop_restored_timers(),
            Defect::EventTimersFireEarly => self.timers.fire_event_timers_early(),
            _ => {}
        }
    }

    /// When a window's state is dropped: its last timestamp plus the allowed lateness.
    fn cleanup_time(&self, window: &TimeWindow) -> Timestamp {
        cleanup_time(window, self.allowed_lateness)
    }

    /// Changes `key`'s list of open windows in place (dropped from state when it empties),
    /// with the window function and its results buffer at hand.
    fn modify_windows<R>(
        &mut self,
        key: &W::Key,
        modify: impl FnOnce(&mut OpenWindows<W::Acc>, &mut W, &mut Vec<W::Out>) -> R,
    ) -> R {
        let (function, results) = (&mut self.function, &mut self.results);
        let mut scope = KeyScope {
            key,
            store: &mut self.store,
        };
        self.windows.modify(&mut scope, has_windows, |open| {
            modify(open, function, results)
        })
    }

    /// Sends a record too late for every window it belongs to to the late-data side output,
    /// and counts it.
    fn emit_late(
        &mut self,
        record: Record<W::In>,
        timestamp: Timestamp,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) {
        self.late_records += 1;
        if self.late_records.is_power_of_two() {
            tracing::warn!(
                late_records = self.late_records,
                record_time = %timestamp,
                watermark = %self.timers.current_watermark(),
                allowed_lateness_ms = self.allowed_lateness,
                "records arrived later than their windows' allowed lateness; they go to the side \
                 output '{}', and a job that does not read it drops them",
                self.late_data.id()
            );
        }
        out.push(Record::with_timestamp(
            Tagged::side(&self.late_data, record.value),
            timestamp,
        ));
    }

    /// Registers the timers of a window that just opened: one to fire it (unless the
    /// watermark has passed its end already) and one to drop it.
    fn schedule(&mut self, key: &W::Key, window: &TimeWindow) {
        let end = window.max_timestamp();
        if end > self.timers.current_watermark() {
            self.timers
                .register(TimeDomain::EventTime, key.clone(), *window, end);
        }
        let cleanup = self.cleanup_time(window);
        if cleanup != end {
            self.timers
                .register(TimeDomain::EventTime, key.clone(), *window, cleanup);
        }
    }

    fn unschedule(&mut self, key: &W::Key, window: &TimeWindow) {
        for time in [window.max_timestamp(), self.cleanup_time(window)] {
            self.timers.delete(TimeDomain::EventTime, key, window, time);
        }
    }

    /// A record for time windows that do not merge: added to each of its windows in one
    /// state access; a window the watermark has passed (within the allowed lateness) fires
    /// again at once.
    fn add_to_windows(
        &mut self,
        key: W::Key,
        record: Record<W::In>,
        timestamp: Timestamp,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        let watermark = self.timers.current_watermark();
        let lateness = self.allowed_lateness;
        let mut windows = std::mem::take(&mut self.assigned);
        self.assigner.assign(timestamp, &mut windows);
        windows.retain(|window| cleanup_time(window, lateness) > watermark);
        let Some((last, rest)) = windows.split_last() else {
            self.assigned = windows;
            self.emit_late(record, timestamp, out);
            return Ok(());
        };
        let mut opened = std::mem::take(&mut self.opened);
        opened.clear();
        let fired = self.modify_windows(&key, |open, function, results| {
            let mut add = |window: &TimeWindow, value: W::In| -> Result<(), BoxError> {
                let position = match open.iter().position(|(w, _)| w == window) {
                    Some(position) => position,
                    None => {
                        opened.push(*window);
                        open.push((*window, function.create()));
                        open.len() - 1
                    }
                };
                let accumulator = &mut open[position].1;
                function.add(accumulator, value);
                if window.max_timestamp() <= watermark {
                    let ctx = WindowContext::new(&key, *window, watermark);
                    emit(function, &ctx, accumulator, results, out)?;
                }
                Ok(())
            };
            for window in rest {
                add(window, record.value.clone())?;
            }
            add(last, record.value)
        });
        for window in &opened {
            self.schedule(&key, window);
        }
        self.assigned = windows;
        self.opened = opened;
        fired
    }

    /// A record for session windows: merge its session with the key's sessions it touches.
    /// As in Flink, lateness is judged on the merged session, not on the record's own: a
    /// record behind the watermark that touches a session still open joins it.
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
        let watermark = self.timers.current_watermark();
        let lateness = self.allowed_lateness;
        let mut value = Some(record.value);
        let mut touched = std::mem::take(&mut self.opened);
        touched.clear();
        let merged = self.modify_windows(&key, |sessions, function, results| {
            let merged = sessions
                .iter()
                .filter(|(session, _)| session.intersects(&own))
                .fold(own, |merged, (session, _)| merged.cover(session));
            if cleanup_time(&merged, lateness) <= watermark {
                return Ok::<_, BoxError>(None);
            }
            let Some(value) = value.take() else {
                return Ok(None);
            };
            let mut contents: Option<W::Acc> = None;
            let mut index = 0;
            while index < sessions.len() {
                if sessions[index].0.intersects(&own) {
                    let (session, other) = sessions.remove(index);
                    touched.push(session);
                    match &mut contents {
                        Some(into) => function.merge(into, other),
                        None => contents = Some(other),
                    }
                } else {
                    index += 1;
                }
            }
            let mut contents = contents.unwrap_or_else(|| function.create());
            function.add(&mut contents, value);
            if merged.max_timestamp() <= watermark {
                let ctx = WindowContext::new(&key, merged, watermark);
                emit(function, &ctx, &contents, results, out)?;
            }
            let position = sessions.partition_point(|(session, _)| session.start < merged.start);
            sessions.insert(position, (merged, contents));
            Ok(Some(merged))
        })?;
        if let Some(merged) = merged {
            for session in &touched {
                if *session != merged {
                    self.unschedule(&key, session);
                }
            }
            self.schedule(&key, &merged);
        } else if let Some(value) = value {
            self.emit_late(Record::with_timestamp(value, timestamp), timestamp, out);
        }
        self.opened = touched;
        Ok(())
    }

    /// A record for the global window: fire and empty it when it holds `count` records.
    fn add_to_global(
        &mut self,
        key: W::Key,
        record: Record<W::In>,
        count: u64,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        let mut scope = KeyScope {
            key: &key,
            store: &mut self.store,
        };
        let reached = self.counts.update(&mut scope, |seen| {
            let now = seen.unwrap_or(0) + 1;
            *seen = (now < count).then_some(now);
            now >= count
        });
        let watermark = self.timers.current_watermark();
        self.modify_windows(&key, |open, function, results| {
            if open.is_empty() {
                open.push((TimeWindow::GLOBAL, function.create()));
            }
            function.add(&mut open[0].1, record.value);
            if reached {
                let ctx = WindowContext::new(&key, TimeWindow::GLOBAL, watermark);
                let fired = emit(function, &ctx, &open[0].1, results, out);
                open.clear();
                return fired;
            }
            Ok(())
        })
    }

    /// A window's timer fired at `time`: fire it at its end, drop it at its cleanup time.
    fn on_timer(
        &mut self,
        time: Timestamp,
        key: W::Key,
        window: TimeWindow,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        let fire = time == window.max_timestamp();
        let drop = time == self.cleanup_time(&window);
        let watermark = self.timers.current_watermark();
        self.modify_windows(&key, |windows, function, results| {
            let Some(position) = windows.iter().position(|(w, _)| *w == window) else {
                return Ok(());
            };
            if fire {
                let ctx = WindowContext::new(&key, window, watermark);
                emit(function, &ctx, &windows[position].1, results, out)?;
            }
            if drop {
                windows.remove(position);
            }
            Ok(())
        })
    }
}

/// Whether a key has open windows: its list is dropped from state when it has none.
fn has_windows<A>(open: &OpenWindows<A>) -> bool {
    !open.is_empty()
}

/// When a window's state is dropped: its last timestamp plus `allowed_lateness`.
fn cleanup_time(window: &TimeWindow, allowed_lateness: i64) -> Timestamp {
    Timestamp(window.max_timestamp().0.saturating_add(allowed_lateness))
}

impl<W: WindowFunction> OneInputOperator for WindowOperator<W> {
    type In = W::In;
    type Out = Tagged<W::Out>;

    fn open(&mut self) -> Result<(), BoxError> {
        // Restored chunks are decoded now: state that does not fit fails the restore.
        self.store.preload(&self.windows)?;
        Ok(self.store.preload(&self.counts)?)
    }

    fn process_batch(
        &mut self,
        input: Vec<Record<W::In>>,
        out: &mut Vec<Record<Tagged<W::Out>>>,
    ) -> Result<(), BoxError> {
        for record in input {
            let key = (self.key_of)(&record.value);
            let added = match self.assigner {
                WindowAssigner::GlobalCount { count } => {
                    self.add_to_global(key, record, count, out)
                }
                _ => match MissingEventTime::require(record.timestamp(), "an event-time window") {
                    Ok(timestamp) if self.assigner.is_merging() => {
                        self.add_to_session(key, record, timestamp, out)
                    }
                    Ok(timestamp) => self.add_to_windows(key, record, timestamp, out),
                    Err(missing) => Err(missing.into()),
                },
            };
            // A state failure first: what the window function did over the empty list of
            // windows a failed access gave is a consequence.
            self.store.check()?;
            added?;
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
            let fired = self.on_timer(time, key, window, out);
            self.store.check()?;
            fired?;
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

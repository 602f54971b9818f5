//! Windows on keyed streams: which windows a record belongs to, and the operator that keeps
//! each key's windows and emits their results.
//!
//! - [`WindowAssigner`]: tumbling, sliding and session windows in event time, and the global
//!   window with a count trigger;
//! - [`functions`]: what a window computes — reduce, aggregate (an accumulator per window),
//!   process (every element, with the window's metadata), aggregate then process, and the
//!   window join's pairs;
//! - [`operator`]: the window operator itself: window contents as keyed state in the window's
//!   namespace, event-time timers that fire and clean up windows, allowed lateness, and late
//!   records sent to a side output.
//!
//! Time windows fire when the watermark passes their end (a window `[start, end)` fires at
//! watermark `end - 1`, its last timestamp), with the window's last timestamp on every result.
//! A record arriving after that, but no later than the allowed lateness, updates the window and
//! fires it again at once ("late firing"); a record later than that goes to the late-data side
//! output. Global windows fire when they hold `count` records, and start empty again; like
//! Flink's, a global window that has not reached its count when the input ends does not fire.

pub mod functions;
pub mod operator;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::element::Timestamp;

pub use functions::{
    AggregateProcessWindow, AggregateWindow, ProcessWindow, ProcessWindowFunction, ReduceWindow,
    WindowContext, WindowFunction, WindowJoin,
};
pub use operator::WindowOperator;

/// A window of event time, `[start, end)`; the global window spans all of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimeWindow {
    /// The first timestamp in the window.
    pub start: Timestamp,
    /// The first timestamp after the window.
    pub end: Timestamp,
}

impl TimeWindow {
    /// The window every record of a global-window stream belongs to.
    pub const GLOBAL: TimeWindow = TimeWindow {
        start: Timestamp::MIN,
        end: Timestamp::MAX,
    };

    /// The window `[start, end)` in milliseconds.
    pub fn new(start: i64, end: i64) -> Self {
        TimeWindow {
            start: Timestamp(start),
            end: Timestamp(end),
        }
    }

    /// The last timestamp in the window: when it fires, and the timestamp of its results. As
    /// in Flink, the global window's is the end of time itself.
    pub fn max_timestamp(&self) -> Timestamp {
        if *self == TimeWindow::GLOBAL {
            return Timestamp::MAX;
        }
        Timestamp(self.end.0.saturating_sub(1))
    }

    /// Whether the two windows overlap or touch: session windows that do are one session.
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A window specification that cannot work, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WindowError {
    /// A size, slide or gap is zero or does not fit in milliseconds.
    #[error("window {what} must be at least 1 ms and at most i64::MAX ms, got {millis} ms")]
    BadDuration {
        /// Which duration.
        what: &'static str,
        /// Its length.
        millis: u128,
    },
    /// A count trigger of zero.
    #[error("a count window must fire every 1 or more records, got 0")]
    ZeroCount,
}

/// Which windows a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Consecutive windows of `size` ms, starting at multiples of `size` (plus `offset`).
    Tumbling {
        /// The window length.
        size: i64,
        /// Shifts window starts (e.g. to a time zone).
        offset: i64,
    },
    /// Windows of `size` ms starting every `slide` ms: a record is in `size / slide` of them.
    Sliding {
        /// The window length.
        size: i64,
        /// The distance between window starts.
        slide: i64,
        /// Shifts window starts.
        offset: i64,
    },
    /// Per key, records closer than `gap` ms in event time form one session; sessions merge
    /// as records fill the gaps between them.
    Session {
        /// The inactivity that closes a session.
        gap: i64,
    },
    /// One window per key for all time, fired (and emptied) every `count` records.
    GlobalCount {
        /// How many records fire the window.
        count: u64,
    },
}

fn millis(what: &'static str, duration: Duration) -> Result<i64, WindowError> {
    let millis = duration.as_millis();
    match i64::try_from(millis) {
        Ok(value) if value > 0 => Ok(value),
        _ => Err(WindowError::BadDuration { what, millis }),
    }
}

impl WindowAssigner {
    /// Tumbling windows of `size`.
    pub fn tumbling(size: Duration) -> Result<Self, WindowError> {
        Ok(WindowAssigner::Tumbling {
            size: millis("size", size)?,
            offset: 0,
        })
    }

    /// Windows of `size` starting every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Result<Self, WindowError> {
        Ok(WindowAssigner::Sliding {
            size: millis("size", size)?,
            slide: millis("slide", slide)?,
            offset: 0,
        })
    }

    /// Session windows closed by `gap` of inactivity.
    pub fn session(gap: Duration) -> Result<Self, WindowError> {
        Ok(WindowAssigner::Session {
            gap: millis("gap", gap)?,
        })
    }

    /// The global window, fired every `count` records.
    pub fn global_count(count: u64) -> Result<Self, WindowError> {
        if count == 0 {
            return Err(WindowError::ZeroCount);
        }
        Ok(WindowAssigner::GlobalCount { count })
    }

    /// Whether windows merge (sessions).
    pub fn is_merging(&self) -> bool {
        matches!(self, WindowAssigner::Session { .. })
    }

    /// Whether windows follow event time (all but the global window).
    pub fn is_event_time(&self) -> bool {
        !matches!(self, WindowAssigner::GlobalCount { .. })
    }

    /// Replaces `windows` by the windows of a record at `timestamp`; for sessions, the
    /// record's own session window, before any merging.
    pub fn assign(&self, timestamp: Timestamp, windows: &mut Vec<TimeWindow>) {
        windows.clear();
        let ts = timestamp.0;
        match *self {
            WindowAssigner::Tumbling { size, offset } => {
                let start = window_start(ts, offset, size);
                windows.push(TimeWindow::new(start, start.saturating_add(size)));
            }
            WindowAssigner::Sliding {
                size,
                slide,
                offset,
            } => {
                let mut start = window_start(ts, offset, slide);
                while start > ts.saturating_sub(size) {
                    windows.push(TimeWindow::new(start, start.saturating_add(size)));
                    match start.checked_sub(slide) {
                        Some(earlier) => start = earlier,
                        None => break,
                    }
                }
            }
            WindowAssigner::Session { gap } => {
                windows.push(TimeWindow::new(ts, ts.saturating_add(gap)));
            }
            WindowAssigner::GlobalCount { .. } => windows.push(TimeWindow::GLOBAL),
        }
    }
}

/// The start of the window of length `size` (shifted by `offset`) that holds `timestamp`.
fn window_start(timestamp: i64, offset: i64, size: i64) -> i64 {
    timestamp - (timestamp.wrapping_sub(offset)).rem_euclid(size)
}

#[cfg(test)]
mod assigner_tests {
    use super::*;

    fn windows_of(assigner: WindowAssigner, timestamp: i64) -> Vec<(i64, i64)> {
        let mut windows = Vec::new();
        assigner.assign(Timestamp(timestamp), &mut windows);
        let mut spans: Vec<(i64, i64)> = windows.iter().map(|w| (w.start.0, w.end.0)).collect();
        spans.sort();
        spans
    }

    #[test]
    fn tumbling_windows_partition_time_including_negative_timestamps() {
        let tumbling = WindowAssigner::tumbling(Duration::from_secs(10)).unwrap();
        assert_eq!(windows_of(tumbling, 0), vec![(0, 10_000)]);
        assert_eq!(windows_of(tumbling, 9_999), vec![(0, 10_000)]);
        assert_eq!(windows_of(tumbling, 10_000), vec![(10_000, 20_000)]);
        assert_eq!(windows_of(tumbling, -1), vec![(-10_000, 0)]);
        let shifted = WindowAssigner::Tumbling {
            size: 10,
            offset: 3,
        };
        assert_eq!(windows_of(shifted, 2), vec![(-7, 3)]);
        assert_eq!(windows_of(shifted, 3), vec![(3, 13)]);
    }

    #[test]
    fn a_record_is_in_size_over_slide_sliding_windows() {
        let sliding =
            WindowAssigner::sliding(Duration::from_secs(10), Duration::from_secs(2)).unwrap();
        assert_eq!(
            windows_of(sliding, 10_500),
            vec![
                (2_000, 12_000),
                (4_000, 14_000),
                (6_000, 16_000),
                (8_000, 18_000),
                (10_000, 20_000)
            ]
        );
        assert_eq!(windows_of(sliding, 1_999).len(), 5);
        for timestamp in [-7_001, 0, 1, 12_345] {
            for (start, end) in windows_of(sliding, timestamp) {
                assert!(start <= timestamp && timestamp < end);
                assert_eq!(start.rem_euclid(2_000), 0);
            }
        }
        let hopping = WindowAssigner::Sliding {
            size: 2,
            slide: 5,
            offset: 0,
        };
        assert_eq!(windows_of(hopping, 6), vec![(5, 7)]);
        assert_eq!(windows_of(hopping, 7), vec![], "between hopping windows");
    }

    #[test]
    fn session_windows_start_at_the_record_and_merge_when_they_touch() {
        let session = WindowAssigner::session(Duration::from_millis(30)).unwrap();
        assert_eq!(windows_of(session, 100), vec![(100, 130)]);
        let a = TimeWindow::new(100, 130);
        assert!(a.intersects(&TimeWindow::new(130, 160)), "touching");
        assert!(!a.intersects(&TimeWindow::new(131, 161)));
        assert_eq!(
            a.cover(&TimeWindow::new(120, 170)),
            TimeWindow::new(100, 170)
        );
        assert_eq!(a.max_timestamp(), Timestamp(129));
    }

    #[test]
    fn bad_window_specifications_are_errors_naming_the_value() {
        let error = WindowAssigner::tumbling(Duration::ZERO).unwrap_err();
        assert_eq!(
            error.to_string(),
            "window size must be at least 1 ms and at most i64::MAX ms, got 0 ms"
        );
        assert!(
            WindowAssigner::sliding(Duration::from_secs(1), Duration::from_micros(10)).is_err()
        );
        assert_eq!(
            WindowAssigner::global_count(0).unwrap_err(),
            WindowError::ZeroCount
        );
    }
}

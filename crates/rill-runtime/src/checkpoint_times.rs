//! How long a job's checkpoints took, from their trigger until the job master hears they are
//! complete (every snapshot taken, persisted and synced, every subtask told), and how long after
//! the job's start the first one completed: the figures a [`crate::JobReport`] gives.
//!
//! An HDR histogram (`hdrhistogram`) keeps the durations in bounded memory however long a job
//! runs, with quantiles to within 0.1 %.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// The checkpoint durations of a job that ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointTimes {
    /// From the job's submission until its first checkpoint completed.
    pub first_completed_after: Duration,
    /// How many checkpoints completed.
    pub completed: u64,
    /// The median time from a checkpoint's trigger to its completion.
    pub median: Duration,
    /// The 99th percentile of those times.
    pub p99: Duration,
    /// The longest of them.
    pub max: Duration,
}

const HOUR_MS: u64 = 3_600_000;

/// Collects the times as checkpoints complete.
pub(crate) struct CheckpointTimer {
    started_at: Instant,
    first_completed_after: Option<Duration>,
    /// Milliseconds up to an hour (longer ones count as an hour), three significant digits.
    durations: Histogram<u64>,
}

impl CheckpointTimer {
    pub(crate) fn new(started_at: Instant) -> Self {
        CheckpointTimer {
            started_at,
            first_completed_after: None,
            durations: Histogram::new_with_bounds(1, HOUR_MS, 3).unwrap_or_else(|_| {
                unreachable!("1 ms to an hour at three significant digits is a valid histogram")
            }),
        }
    }

    /// Records a checkpoint completed now, triggered at `triggered_at_ms` (the runtime's clock,
    /// as in [`rill_core::coordinator::CheckpointMetadata`]: ms since the Unix epoch).
    pub(crate) fn completed(&mut self, triggered_at_ms: u64) {
        self.first_completed_after
            .get_or_insert_with(|| self.started_at.elapsed());
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        self.durations
            .saturating_record(now_ms.saturating_sub(triggered_at_ms));
    }

    /// The times, once a checkpoint has completed.
    pub(crate) fn times(&self) -> Option<CheckpointTimes> {
        let ms = Duration::from_millis;
        Some(CheckpointTimes {
            first_completed_after: self.first_completed_after?,
            completed: self.durations.len(),
            median: ms(self.durations.value_at_quantile(0.5)),
            p99: ms(self.durations.value_at_quantile(0.99)),
            max: ms(self.durations.max()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_checkpoint_no_times_and_each_completion_is_counted() {
        let mut timer = CheckpointTimer::new(Instant::now());
        assert_eq!(timer.times(), None);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for ago_ms in [50_000, 10_000, 20_000] {
            timer.completed(now_ms - ago_ms);
        }
        let times = timer.times().unwrap();
        assert_eq!(times.completed, 3);
        assert!(
            (20_000..21_000).contains(&(times.median.as_millis() as u64)),
            "{times:?}"
        );
        assert!(times.max >= Duration::from_secs(50), "{times:?}");
        assert!(times.first_completed_after < times.max, "{times:?}");
    }
}

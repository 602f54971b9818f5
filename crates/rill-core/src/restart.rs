//! Restart strategies: whether a failed job restarts from its latest completed checkpoint, and
//! after how long.

/// How a job restarts after a task failure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum RestartStrategy {
    /// A failure ends the job.
    #[default]
    None,
    /// Restart up to `attempts` times, waiting `delay_ms` before each.
    FixedDelay {
        /// The most restarts.
        attempts: u32,
        /// The wait before each restart.
        delay_ms: u64,
    },
    /// Restart up to `attempts` times, waiting `initial_delay_ms` before the first and twice as
    /// long before each next one, at most `max_delay_ms`.
    ExponentialBackoff {
        /// The most restarts.
        attempts: u32,
        /// The wait before the first restart.
        initial_delay_ms: u64,
        /// The longest wait.
        max_delay_ms: u64,
    },
}

impl RestartStrategy {
    /// The wait before restart number `restart` (1 for the first), or `None` if the job must not
    /// restart again.
    pub fn delay_before(&self, restart: u32) -> Option<u64> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay_ms } => {
                (restart <= attempts).then_some(delay_ms)
            }
            RestartStrategy::ExponentialBackoff {
                attempts,
                initial_delay_ms,
                max_delay_ms,
            } => (restart <= attempts).then(|| {
                let doublings = restart.saturating_sub(1).min(63);
                initial_delay_ms
                    .saturating_mul(1u64 << doublings)
                    .min(max_delay_ms)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_bound_the_restarts_and_space_them() {
        assert_eq!(RestartStrategy::None.delay_before(1), None);
        let fixed = RestartStrategy::FixedDelay {
            attempts: 2,
            delay_ms: 50,
        };
        assert_eq!(
            [1, 2, 3].map(|n| fixed.delay_before(n)),
            [Some(50), Some(50), None]
        );
        let backoff = RestartStrategy::ExponentialBackoff {
            attempts: 5,
            initial_delay_ms: 10,
            max_delay_ms: 50,
        };
        assert_eq!(
            [1, 2, 3, 4, 5, 6].map(|n| backoff.delay_before(n)),
            [Some(10), Some(20), Some(40), Some(50), Some(50), None]
        );
    }
}

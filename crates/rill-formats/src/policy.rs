//! What a connector does with a record that does not decode: [`OnDecodeError`], chosen per
//! connector, and [`DecodeErrors`], which applies it and counts what it skipped.
//!
//! Failing is the default: a record that does not decode is data the job would otherwise lose
//! without anyone noticing. Skipping suits input known to hold some garbage (hand-edited
//! files, a topic other producers write); every skipped record is logged at `warn` with the
//! error — which names it and where it was — and the count so far, so that skipping is never
//! silent.
//!
//! Sending such records to a side output instead is not offered yet: a source's records reach
//! the job as one stream, and the API gives side outputs only to process functions and
//! windows. A source could emit `Tagged` values as those do, if the API let a source's stream
//! select its main output and side outputs the same way.

use crate::error::DecodeError;

/// The policy for records that do not decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDecodeError {
    /// The job fails with the [`DecodeError`].
    #[default]
    Fail,
    /// The record is skipped, logged (`tracing::warn`) and counted.
    Skip,
}

/// Applies an [`OnDecodeError`] policy, counting the records it skips.
#[derive(Clone, Debug, Default)]
pub struct DecodeErrors {
    policy: OnDecodeError,
    skipped: u64,
}

impl DecodeErrors {
    /// Applies `policy`.
    pub fn new(policy: OnDecodeError) -> Self {
        DecodeErrors { policy, skipped: 0 }
    }

    /// A record did not decode: `Err(error)` if the job is to fail, `Ok(())` if it was skipped
    /// (and logged, and counted).
    pub fn handle(&mut self, error: DecodeError) -> Result<(), DecodeError> {
        match self.policy {
            OnDecodeError::Fail => Err(error),
            OnDecodeError::Skip => {
                self.skipped += 1;
                tracing::warn!(skipped = self.skipped, "skipped a record: {error}");
                Ok(())
            }
        }
    }

    /// How many records were skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_returns_the_error_and_skip_counts() {
        let error = || DecodeError::new("JSON", b"{", "EOF").at_byte("file 'a'", 3);
        let mut fail = DecodeErrors::default();
        assert_eq!(fail.handle(error()), Err(error()));
        assert_eq!(fail.skipped(), 0);
        let mut skip = DecodeErrors::new(OnDecodeError::Skip);
        assert_eq!(skip.handle(error()), Ok(()));
        assert_eq!(skip.handle(error()), Ok(()));
        assert_eq!(skip.skipped(), 2);
    }
}

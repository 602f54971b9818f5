//! Credit-based flow control.
//!
//! The receiver of every channel grants its sender a fixed number of batch credits up front
//! ([`FlowConfig::channel_credits`]) and returns one credit each time it takes a batch off the
//! channel. A sender spends one credit per batch and queues batches while it has none; a
//! subtask whose outputs hold queued batches takes no new input and its source polls nothing.
//! So every queue is bounded by credits, and backpressure travels upstream to the sources.

use std::collections::VecDeque;

/// Sizes of the batches and of the flow-control windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// The most records a source emits per poll.
    pub batch_size: usize,
    /// The batches a channel's sender may have in flight before the receiver takes one.
    pub channel_credits: u32,
    /// How far (ms) an input channel's watermark may run ahead of the subtask's slowest input
    /// before the subtask stops taking its batches (`None`: never). Credits bound the batches
    /// in flight but not how far one source runs ahead of another in event time; without this
    /// bound, every record of the faster one waits in window and join state for the slower.
    pub watermark_drift_ms: Option<u64>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            batch_size: 1024,
            channel_credits: 4,
            watermark_drift_ms: Some(10_000),
        }
    }
}

/// Sizes that would stop a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowConfigError {
    /// Batches of no record.
    #[error("the batch size must be at least 1")]
    ZeroBatchSize,
    /// No credit: nothing could ever be sent.
    #[error("channel credits must be at least 1: with none, no batch could ever be sent")]
    ZeroCredits,
}

impl FlowConfig {
    /// Checks that the sizes let records flow.
    pub fn validate(&self) -> Result<(), FlowConfigError> {
        if self.batch_size == 0 {
            return Err(FlowConfigError::ZeroBatchSize);
        }
        if self.channel_credits == 0 {
            return Err(FlowConfigError::ZeroCredits);
        }
        Ok(())
    }
}

/// A sender's side of one channel: its credits and the items waiting for one.
#[derive(Debug)]
pub(crate) struct CreditedQueue<T> {
    credits: u32,
    waiting: VecDeque<T>,
}

impl<T> CreditedQueue<T> {
    pub(crate) fn new(credits: u32) -> Self {
        CreditedQueue {
            credits,
            waiting: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        self.waiting.push_back(item);
    }

    pub(crate) fn grant(&mut self, credits: u32) {
        self.credits = self.credits.saturating_add(credits);
    }

    /// The next item, if one waits and a credit pays for it.
    pub(crate) fn pop_sendable(&mut self) -> Option<T> {
        if self.credits == 0 {
            return None;
        }
        let item = self.waiting.pop_front()?;
        self.credits -= 1;
        Some(item)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_wait_for_credit_in_order() {
        let mut queue = CreditedQueue::new(1);
        queue.push('a');
        queue.push('b');
        assert_eq!(queue.pop_sendable(), Some('a'));
        assert_eq!(queue.pop_sendable(), None, "no credit left");
        queue.grant(2);
        assert_eq!(queue.pop_sendable(), Some('b'));
        assert_eq!(queue.pop_sendable(), None, "nothing left");
        assert!(queue.is_empty());
    }
}

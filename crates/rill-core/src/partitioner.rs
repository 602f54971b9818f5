//! The partitioner state machine: one per (upstream subtask, output edge).
//!
//! It takes the upstream subtask's batches, splits their records among its targets with the
//! edge's [`Router`], hands watermarks and end-of-input to every target, and forwards each
//! target's share as a batch once that target's channel has credit. Because one partitioner
//! feeds each (upstream, downstream) channel, every channel stays FIFO.
//!
//! Driving it mirrors [`crate::subtask`]: `handle_batch` / `handle_credit` in,
//! `poll_transmit` out. The upstream subtask gets a credit back for a batch once every share of
//! that batch has been handed over, so the partitioner holds at most `channel_credits` upstream
//! batches.

use std::collections::VecDeque;

use crate::element::{Batch, Event};
use crate::error::{TaskError, guard};
use crate::exchange::Router;
use crate::flow::{CreditedQueue, FlowConfig};

/// A message the partitioner wants sent.
#[derive(Debug)]
pub enum PartitionerTransmit {
    /// A batch for target `target` (an index into the partitioner's target list).
    Batch {
        /// The target's index.
        target: usize,
        /// The batch.
        batch: Batch,
    },
    /// Credits for the upstream subtask's output.
    UpstreamCredit(u32),
}

/// One partitioner.
pub struct PartitionerCore {
    name: String,
    router: Box<dyn Router>,
    targets: Vec<CreditedQueue<(u64, Batch)>>,
    /// Upstream batches not yet fully handed over: (sequence number, shares still waiting).
    outstanding: VecDeque<(u64, usize)>,
    next_sequence: u64,
    transmits: VecDeque<PartitionerTransmit>,
}

impl PartitionerCore {
    /// A partitioner with `targets` targets, each starting with the configured credits; `name`
    /// names it in errors (a panicking key selector runs here).
    pub fn new(
        name: impl Into<String>,
        router: Box<dyn Router>,
        targets: usize,
        flow: FlowConfig,
    ) -> Self {
        PartitionerCore {
            name: name.into(),
            router,
            targets: (0..targets)
                .map(|_| CreditedQueue::new(flow.channel_credits))
                .collect(),
            outstanding: VecDeque::new(),
            next_sequence: 0,
            transmits: VecDeque::new(),
        }
    }

    /// The upstream subtask sent a batch.
    pub fn handle_batch(&mut self, batch: Batch) -> Result<(), TaskError> {
        let mut shares: Vec<Vec<Event>> = vec![Vec::new(); self.targets.len()];
        for event in batch.events {
            match event {
                Event::Records(records) => {
                    let router = &mut self.router;
                    let shares = &mut shares;
                    guard(|| Ok(router.route(records, shares)?)).map_err(|error| TaskError {
                        operator: self.name.clone(),
                        error,
                    })?;
                }
                marker => {
                    for share in &mut shares {
                        share.push(marker.clone());
                    }
                }
            }
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let mut waiting = 0;
        for (target, events) in shares.into_iter().enumerate() {
            if !events.is_empty() {
                self.targets[target].push((sequence, Batch { events }));
                waiting += 1;
            }
        }
        self.outstanding.push_back((sequence, waiting));
        self.pump();
        Ok(())
    }

    /// Target `target`'s channel returned credits.
    pub fn handle_credit(&mut self, target: usize, credits: u32) {
        if let Some(queue) = self.targets.get_mut(target) {
            queue.grant(credits);
            self.pump();
        }
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<PartitionerTransmit> {
        self.transmits.pop_front()
    }

    /// Whether every batch received has been handed over.
    pub fn is_idle(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Sends what credits allow and returns credits for fully handed-over upstream batches.
    fn pump(&mut self) {
        for (target, queue) in self.targets.iter_mut().enumerate() {
            while let Some((sequence, batch)) = queue.pop_sendable() {
                self.transmits
                    .push_back(PartitionerTransmit::Batch { target, batch });
                let first = self.outstanding.front().map_or(0, |&(first, _)| first);
                let entry = &mut self.outstanding[(sequence - first) as usize];
                debug_assert_eq!(entry.0, sequence);
                entry.1 -= 1;
            }
        }
        let mut credits = 0;
        while self
            .outstanding
            .front()
            .is_some_and(|&(_, waiting)| waiting == 0)
        {
            self.outstanding.pop_front();
            credits += 1;
        }
        if credits > 0 {
            self.transmits
                .push_back(PartitionerTransmit::UpstreamCredit(credits));
        }
    }
}

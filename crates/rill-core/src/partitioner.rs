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
use crate::error::{TaskError, guarded};
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
    /// Planted on purpose: with `PartitionerLeaksCredits`, how many credit messages it has
    /// sent (every seventh is lost).
    #[cfg(feature = "defects")]
    leaks: Option<u64>,
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
            #[cfg(feature = "defects")]
            leaks: None,
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
                    guarded(&self.name, || Ok(router.route(records, shares)?))?;
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
        if credits > 0 && !self.leaks_credit() {
            self.transmits
                .push_back(PartitionerTransmit::UpstreamCredit(credits));
        }
    }

    /// Breaks the partitioner on purpose, for the simulator to catch.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: crate::defects::Defect) {
        if defect == crate::defects::Defect::PartitionerLeaksCredits {
            self.leaks = Some(0);
        }
    }

    /// Whether a planted defect loses this credit message.
    #[cfg(feature = "defects")]
    fn leaks_credit(&mut self) -> bool {
        const LEAKED_EVERY: u64 = 7;
        self.leaks.as_mut().is_some_and(|sent| {
            *sent += 1;
            sent.is_multiple_of(LEAKED_EVERY)
        })
    }

    #[cfg(not(feature = "defects"))]
    fn leaks_credit(&mut self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::exchange::KeyHashRouter;
    use crate::{Record, Records, Timestamp};

    fn partitioner(credits: u32) -> PartitionerCore {
        let router = KeyHashRouter::<u32, u32>::new(Arc::new(|x: &u32| *x), 128);
        PartitionerCore::new(
            "test",
            Box::new(router),
            2,
            FlowConfig {
                batch_size: 8,
                channel_credits: credits,
                ..FlowConfig::default()
            },
        )
    }

    fn records(values: impl IntoIterator<Item = u32>) -> Event {
        Event::Records(Records::new(values.into_iter().map(Record::new).collect()))
    }

    #[test]
    fn upstream_credit_returns_once_every_share_is_sent() {
        let mut core = partitioner(0);
        core.handle_batch(Batch {
            events: vec![records(0..50), Event::Watermark(Timestamp(3))],
        })
        .unwrap();
        assert!(core.poll_transmit().is_none(), "no target has credit yet");
        core.handle_credit(0, 1);
        let first = core.poll_transmit();
        assert!(matches!(
            first,
            Some(PartitionerTransmit::Batch { target: 0, .. })
        ));
        assert!(
            core.poll_transmit().is_none(),
            "target 1's share still waits: no upstream credit"
        );
        assert!(!core.is_idle());
        core.handle_credit(1, 1);
        let Some(PartitionerTransmit::Batch { target: 1, batch }) = core.poll_transmit() else {
            panic!("target 1's share goes out");
        };
        assert!(
            matches!(batch.events.last(), Some(Event::Watermark(Timestamp(3)))),
            "every target gets the watermark, after its records"
        );
        assert!(matches!(
            core.poll_transmit(),
            Some(PartitionerTransmit::UpstreamCredit(1))
        ));
        assert!(core.is_idle());
    }

    #[test]
    fn a_panicking_key_selector_is_reported_not_raised() {
        let router = KeyHashRouter::<u32, u32>::new(
            Arc::new(|x: &u32| if *x == 3 { panic!("bad key {x}") } else { *x }),
            128,
        );
        let mut core =
            PartitionerCore::new("keyed edge", Box::new(router), 2, FlowConfig::default());
        let error = core
            .handle_batch(Batch {
                events: vec![records(0..5)],
            })
            .unwrap_err();
        assert_eq!(error.operator, "keyed edge");
        assert!(error.to_string().contains("bad key 3"), "{error}");
    }
}

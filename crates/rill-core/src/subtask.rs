//! The subtask state machine: one parallel instance of a chain of operators.
//!
//! A driver (an actor, or the simulator) feeds it inputs with `handle_*`, lets it work with
//! [`SubtaskCore::step`], and carries what it wants sent from [`SubtaskCore::poll_transmit`]:
//!
//! 1. `handle_batch(channel, batch)` when a batch arrives on an input channel;
//!    `handle_credit(output, n)` when an output's partitioner returns credits;
//! 2. `step()` until it returns anything but [`Step::Progress`];
//! 3. `poll_transmit()` until `None`, sending each batch to the output's partitioner and each
//!    credit to the input channel's sender.
//!
//! A step processes one input batch (or one source poll) through the whole chain. A subtask
//! takes no new input while any output holds a batch it has no credit for: that is how
//! backpressure reaches the sources. The watermark of a subtask is the minimum over its input
//! channels; an ended channel counts as `Timestamp::MAX`.

use std::collections::VecDeque;

use crate::element::{Batch, Event, Records, Timestamp};
use crate::error::{TaskError, guarded};
use crate::flow::{CreditedQueue, FlowConfig};
use crate::operator::Operator;
use crate::source::{AnySource, SourcePoll};

/// What a subtask's chain starts with.
pub enum Head {
    /// A source, polled for batches.
    Source {
        /// The source's operator name.
        name: String,
        /// The source instance.
        source: Box<dyn AnySource>,
    },
    /// Input channels fed by upstream partitioners.
    Inputs {
        /// How many input channels the subtask has.
        channels: usize,
    },
}

/// One operator of the chain, with its name for errors.
pub struct ChainedOperator {
    /// The operator's name.
    pub name: String,
    /// The operator instance.
    pub operator: Box<dyn Operator>,
}

/// Everything a subtask needs to run.
pub struct SubtaskSpec {
    /// Where its records come from.
    pub head: Head,
    /// Its operators, in chain order (after the source, if it has one).
    pub chain: Vec<ChainedOperator>,
    /// How many output edges leave the chain's tail.
    pub outputs: usize,
    /// Batch size and credits.
    pub flow: FlowConfig,
}

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// It processed a batch; step again.
    Progress,
    /// It waits for an input batch or for output credit; step again after the next `handle_*`.
    Blocked,
    /// Its source has nothing now; step again after a pause.
    Idle,
    /// It has emitted end-of-input and every output batch has been handed over.
    Finished,
}

/// A message the subtask wants sent.
#[derive(Debug)]
pub enum SubtaskTransmit {
    /// A batch for the partitioner of output edge `output`.
    Batch {
        /// The output's index.
        output: usize,
        /// The batch.
        batch: Batch,
    },
    /// Credits for the sender of input channel `input`.
    Credit {
        /// The input channel's index.
        input: usize,
        /// How many batches the sender may send more.
        credits: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// End of input has been emitted; output batches may still wait for credit.
    Draining,
    Finished,
}

struct InputChannelState {
    queue: VecDeque<Batch>,
    watermark: Timestamp,
    ended: bool,
}

struct OutputState {
    queue: CreditedQueue<Batch>,
    building: Vec<Event>,
}

/// One parallel instance of a chain.
pub struct SubtaskCore {
    head: HeadState,
    chain: Vec<ChainedOperator>,
    outputs: Vec<OutputState>,
    transmits: VecDeque<SubtaskTransmit>,
    watermark: Timestamp,
    phase: Phase,
    batch_size: usize,
    /// The credits each input channel granted: the most batches it can hold.
    channel_credits: u32,
}

enum HeadState {
    Source {
        name: String,
        source: Box<dyn AnySource>,
    },
    Inputs {
        channels: Vec<InputChannelState>,
        next: usize,
    },
}

impl SubtaskCore {
    /// A subtask ready to run; every output starts with the configured credits.
    pub fn new(spec: SubtaskSpec) -> Self {
        let head = match spec.head {
            Head::Source { name, source } => HeadState::Source { name, source },
            Head::Inputs { channels } => HeadState::Inputs {
                channels: (0..channels)
                    .map(|_| InputChannelState {
                        queue: VecDeque::new(),
                        watermark: Timestamp::MIN,
                        ended: false,
                    })
                    .collect(),
                next: 0,
            },
        };
        SubtaskCore {
            head,
            chain: spec.chain,
            outputs: (0..spec.outputs)
                .map(|_| OutputState {
                    queue: CreditedQueue::new(spec.flow.channel_credits),
                    building: Vec::new(),
                })
                .collect(),
            transmits: VecDeque::new(),
            watermark: Timestamp::MIN,
            phase: Phase::Running,
            batch_size: spec.flow.batch_size.max(1),
            channel_credits: spec.flow.channel_credits,
        }
    }

    /// A batch arrived on input channel `channel`.
    pub fn handle_batch(&mut self, channel: usize, batch: Batch) {
        match &mut self.head {
            HeadState::Inputs { channels, .. } if channel < channels.len() => {
                let queue = &mut channels[channel].queue;
                queue.push_back(batch);
                debug_assert!(
                    queue.len() <= self.channel_credits as usize,
                    "input channel {channel} holds {} batches but granted only {} credits",
                    queue.len(),
                    self.channel_credits
                );
            }
            _ => debug_assert!(
                false,
                "batch for input channel {channel}, which does not exist"
            ),
        }
    }

    /// The partitioner of output `output` returned credits.
    pub fn handle_credit(&mut self, output: usize, credits: u32) {
        if let Some(state) = self.outputs.get_mut(output) {
            state.queue.grant(credits);
            self.send_ready(output);
        }
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<SubtaskTransmit> {
        self.transmits.pop_front()
    }

    /// Whether the subtask has finished.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// The subtask's current watermark.
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Does one unit of work: one input batch or one source poll through the whole chain.
    pub fn step(&mut self) -> Result<Step, TaskError> {
        match self.phase {
            Phase::Finished => return Ok(Step::Finished),
            Phase::Draining if self.outputs_idle() => {
                self.phase = Phase::Finished;
                return Ok(Step::Finished);
            }
            Phase::Draining => return Ok(Step::Blocked),
            Phase::Running if !self.outputs_idle() => return Ok(Step::Blocked),
            Phase::Running => {}
        }
        let step = match &mut self.head {
            HeadState::Source { .. } => self.step_source()?,
            HeadState::Inputs { .. } => self.step_inputs()?,
        };
        self.flush_outputs();
        Ok(step)
    }

    fn outputs_idle(&self) -> bool {
        self.outputs.iter().all(|output| output.queue.is_empty())
    }

    fn step_source(&mut self) -> Result<Step, TaskError> {
        let HeadState::Source { name, source } = &mut self.head else {
            unreachable!("step_source runs for source heads only")
        };
        let batch_size = self.batch_size;
        let polled = guarded(name, || source.poll(batch_size))?;
        let emitted = polled.records.is_some();
        if let Some(records) = polled.records {
            self.run_chain(0, records)?;
        }
        if let Some(watermark) = polled.watermark {
            self.advance_watermark(watermark)?;
        }
        Ok(match polled.status {
            SourcePoll::Finished => {
                self.end_input()?;
                Step::Progress
            }
            SourcePoll::Idle if !emitted => Step::Idle,
            SourcePoll::Idle | SourcePoll::Ready => Step::Progress,
        })
    }

    fn step_inputs(&mut self) -> Result<Step, TaskError> {
        let HeadState::Inputs { channels, next } = &mut self.head else {
            unreachable!("step_inputs runs for input heads only")
        };
        let count = channels.len();
        let Some(channel) = (0..count)
            .map(|offset| (*next + offset) % count)
            .find(|&c| !channels[c].queue.is_empty())
        else {
            return Ok(Step::Blocked);
        };
        *next = (channel + 1) % count;
        let Some(batch) = channels[channel].queue.pop_front() else {
            return Ok(Step::Blocked);
        };
        self.transmits.push_back(SubtaskTransmit::Credit {
            input: channel,
            credits: 1,
        });
        for event in batch.events {
            match event {
                Event::Records(records) => self.run_chain(0, records)?,
                Event::Watermark(watermark) => self.channel_watermark(channel, watermark, false)?,
                Event::EndOfInput => self.channel_watermark(channel, Timestamp::MAX, true)?,
            }
        }
        Ok(Step::Progress)
    }

    /// Records a channel's watermark (or its end) and applies the minimum rule.
    fn channel_watermark(
        &mut self,
        channel: usize,
        watermark: Timestamp,
        ended: bool,
    ) -> Result<(), TaskError> {
        let HeadState::Inputs { channels, .. } = &mut self.head else {
            unreachable!("channel watermarks exist for input heads only")
        };
        let state = &mut channels[channel];
        state.watermark = state.watermark.max(watermark);
        state.ended |= ended;
        let minimum = channels
            .iter()
            .map(|c| if c.ended { Timestamp::MAX } else { c.watermark })
            .min()
            .unwrap_or(Timestamp::MAX);
        let all_ended = channels.iter().all(|c| c.ended);
        self.advance_watermark(minimum)?;
        if all_ended {
            self.end_input()?;
        }
        Ok(())
    }

    fn advance_watermark(&mut self, watermark: Timestamp) -> Result<(), TaskError> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        for index in 0..self.chain.len() {
            let link = &mut self.chain[index];
            let emitted = guarded(&link.name, || link.operator.on_watermark(watermark))?;
            if let Some(records) = emitted {
                self.run_chain(index + 1, records)?;
            }
        }
        self.emit(Event::Watermark(watermark));
        Ok(())
    }

    fn end_input(&mut self) -> Result<(), TaskError> {
        if self.phase != Phase::Running {
            return Ok(());
        }
        self.advance_watermark(Timestamp::MAX)?;
        for index in 0..self.chain.len() {
            let link = &mut self.chain[index];
            let emitted = guarded(&link.name, || link.operator.end_of_input())?;
            if let Some(records) = emitted {
                self.run_chain(index + 1, records)?;
            }
        }
        self.emit(Event::EndOfInput);
        self.phase = Phase::Draining;
        Ok(())
    }

    /// Passes records through the chain from operator `from` on, then to the outputs.
    fn run_chain(&mut self, from: usize, mut records: Records) -> Result<(), TaskError> {
        for link in &mut self.chain[from..] {
            let input = records;
            match guarded(&link.name, || link.operator.process(input))? {
                Some(output) => records = output,
                None => return Ok(()),
            }
        }
        self.emit(Event::Records(records));
        Ok(())
    }

    /// Appends an event to every output's batch under construction.
    fn emit(&mut self, event: Event) {
        if let Some((last, rest)) = self.outputs.split_last_mut() {
            for output in rest {
                output.building.push(event.clone());
            }
            last.building.push(event);
        }
    }

    /// Closes the batches under construction and sends what credits allow.
    fn flush_outputs(&mut self) {
        for index in 0..self.outputs.len() {
            let output = &mut self.outputs[index];
            if !output.building.is_empty() {
                let events = std::mem::take(&mut output.building);
                output.queue.push(Batch { events });
            }
            self.send_ready(index);
        }
    }

    fn send_ready(&mut self, output: usize) {
        while let Some(batch) = self.outputs[output].queue.pop_sendable() {
            self.transmits
                .push_back(SubtaskTransmit::Batch { output, batch });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::error::{BoxError, OperatorError};
    use crate::operator::{Erased, Map, OneInputOperator};
    use crate::source::IterSource;
    use crate::{Record, Records};

    /// Passes records on and remembers every watermark it is told about.
    struct WatermarkLog(Arc<Mutex<Vec<Timestamp>>>);

    impl OneInputOperator for WatermarkLog {
        type In = u32;
        type Out = u32;

        fn process_batch(
            &mut self,
            input: Vec<Record<u32>>,
            out: &mut Vec<Record<u32>>,
        ) -> Result<(), BoxError> {
            out.extend(input);
            Ok(())
        }

        fn on_watermark(
            &mut self,
            watermark: Timestamp,
            _out: &mut Vec<Record<u32>>,
        ) -> Result<(), BoxError> {
            self.0.lock().unwrap().push(watermark);
            Ok(())
        }
    }

    fn flow(batch_size: usize, channel_credits: u32) -> FlowConfig {
        FlowConfig {
            batch_size,
            channel_credits,
        }
    }

    fn batch(events: Vec<Event>) -> Batch {
        Batch { events }
    }

    fn drain(core: &mut SubtaskCore) -> Vec<SubtaskTransmit> {
        std::iter::from_fn(|| core.poll_transmit()).collect()
    }

    fn step_until_stuck(core: &mut SubtaskCore) -> Step {
        loop {
            match core.step().unwrap() {
                Step::Progress => continue,
                other => return other,
            }
        }
    }

    #[test]
    fn the_watermark_is_the_minimum_over_input_channels() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut core = SubtaskCore::new(SubtaskSpec {
            head: Head::Inputs { channels: 2 },
            chain: vec![ChainedOperator {
                name: "log".into(),
                operator: Box::new(Erased(WatermarkLog(seen.clone()))),
            }],
            outputs: 1,
            flow: flow(8, 8),
        });
        let mut feed = |channel: usize, event: Event| {
            core.handle_batch(channel, batch(vec![event]));
            step_until_stuck(&mut core);
            let out = drain(&mut core);
            (core.watermark(), out)
        };
        assert_eq!(
            feed(0, Event::Watermark(Timestamp(10))).0,
            Timestamp::MIN,
            "channel 1 said nothing yet"
        );
        assert_eq!(feed(1, Event::Watermark(Timestamp(5))).0, Timestamp(5));
        assert_eq!(feed(1, Event::Watermark(Timestamp(20))).0, Timestamp(10));
        assert_eq!(
            feed(1, Event::Watermark(Timestamp(15))).0,
            Timestamp(10),
            "watermarks never go back"
        );
        assert_eq!(
            feed(0, Event::EndOfInput).0,
            Timestamp(20),
            "an ended channel no longer holds it back"
        );
        let (watermark, out) = feed(1, Event::EndOfInput);
        assert_eq!(watermark, Timestamp::MAX);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Timestamp(5), Timestamp(10), Timestamp(20), Timestamp::MAX]
        );
        let last = out.iter().rev().find_map(|t| match t {
            SubtaskTransmit::Batch { batch, .. } => Some(batch.events.clone()),
            SubtaskTransmit::Credit { .. } => None,
        });
        let last = last.unwrap();
        assert!(
            matches!(
                last[..],
                [Event::Watermark(Timestamp::MAX), Event::EndOfInput]
            ),
            "{last:?}"
        );
        assert_eq!(step_until_stuck(&mut core), Step::Finished);
    }

    #[test]
    fn a_source_stops_polling_when_its_output_has_no_credit() {
        let polls = Arc::new(Mutex::new(0));
        let counter = polls.clone();
        let count_polls = Map::new(Arc::new(move |x: u32| {
            *counter.lock().unwrap() += 1;
            x
        }));
        let mut core = SubtaskCore::new(SubtaskSpec {
            head: Head::Source {
                name: "numbers".into(),
                source: Box::new(IterSource::new(0u32..100)),
            },
            chain: vec![ChainedOperator {
                name: "count".into(),
                operator: Box::new(Erased(count_polls)),
            }],
            outputs: 1,
            flow: flow(10, 2),
        });
        assert_eq!(step_until_stuck(&mut core), Step::Blocked);
        let sent = drain(&mut core).len();
        // Two credits pay for two batches; the third is built and waits; then the source stops.
        assert_eq!(sent, 2);
        assert_eq!(*polls.lock().unwrap(), 30);
        assert_eq!(step_until_stuck(&mut core), Step::Blocked);
        assert_eq!(*polls.lock().unwrap(), 30, "no poll while blocked");
        core.handle_credit(0, 1);
        assert_eq!(drain(&mut core).len(), 1, "the waiting batch goes out");
        assert_eq!(step_until_stuck(&mut core), Step::Blocked);
        assert_eq!(*polls.lock().unwrap(), 40);
        core.handle_credit(0, 100);
        assert_eq!(step_until_stuck(&mut core), Step::Finished);
        let records: usize = drain(&mut core)
            .iter()
            .map(|t| match t {
                SubtaskTransmit::Batch { batch, .. } => batch.record_count(),
                SubtaskTransmit::Credit { .. } => 0,
            })
            .sum();
        assert_eq!(records, 100 - 30, "the rest arrives once credit does");
    }

    #[test]
    fn taking_a_batch_returns_a_credit_to_its_channel() {
        let mut core = SubtaskCore::new(SubtaskSpec {
            head: Head::Inputs { channels: 3 },
            chain: Vec::new(),
            outputs: 0,
            flow: flow(8, 2),
        });
        core.handle_batch(
            2,
            batch(vec![Event::Records(Records::new(vec![Record::new(1u8)]))]),
        );
        assert_eq!(core.step().unwrap(), Step::Progress);
        let transmits = drain(&mut core);
        assert!(
            matches!(
                transmits[..],
                [SubtaskTransmit::Credit {
                    input: 2,
                    credits: 1
                }]
            ),
            "{transmits:?}"
        );
        assert_eq!(core.step().unwrap(), Step::Blocked, "nothing more to take");
    }

    #[test]
    fn a_panicking_operator_fails_the_step_with_its_name() {
        let mut core = SubtaskCore::new(SubtaskSpec {
            head: Head::Source {
                name: "numbers".into(),
                source: Box::new(IterSource::new(0u32..10)),
            },
            chain: vec![ChainedOperator {
                name: "picky".into(),
                operator: Box::new(Erased(Map::new(Arc::new(|x: u32| {
                    assert!(x != 7, "seven is not allowed");
                    x
                })))),
            }],
            outputs: 1,
            flow: flow(16, 2),
        });
        let error = core.step().unwrap_err();
        assert_eq!(error.operator, "picky");
        assert!(
            matches!(&error.error, OperatorError::Panicked(message) if message == "seven is not allowed")
        );
    }
}

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
//! Before the first of these, a driver may call [`SubtaskCore::open`] (after
//! [`SubtaskCore::restore`], if it restores): the chained operators open then, on the driver's
//! thread for the subtask — a keyed operator finds out there that its state cannot be opened or
//! that restored state does not fit. A subtask not opened explicitly opens at its first step,
//! timer or checkpoint call.
//!
//! A step processes one input batch (or one source poll) through the whole chain. A subtask
//! takes no new input while any output holds a batch it has no credit for: that is how
//! backpressure reaches the sources.
//!
//! Time: the driver passes processing time in with [`SubtaskCore::advance_processing_time`]
//! (before the first step, and then as its clock moves: the wall clock in the runtime, the
//! virtual clock in the simulator); the subtask reads no clock. Every chained operator hears
//! of it (its processing-time timers fire), and a source is polled with it, so that it can
//! tell how long a partition has been quiet. Event time comes from the sources' watermarks.
//! The watermark of a subtask with input channels is the minimum over the channels that are
//! neither ended nor idle; it never goes back, so a channel that becomes active again behind
//! it holds it where it is until it catches up. A source subtask emits
//! [`Event::WatermarkStatus`] when its source becomes idle or active again; a subtask whose
//! every open input channel is idle is idle itself and says so downstream once, and active
//! again as soon as one of them is. A channel whose watermark is more than
//! [`FlowConfig::watermark_drift_ms`] ahead of the slowest channel waits (its sender, out of
//! credit, slows down), so that one source cannot run ahead of another in event time and fill
//! window state; the slowest channel never waits, nor does any while barriers align.
//!
//! Checkpoints: a source subtask snapshots when the driver calls
//! [`SubtaskCore::trigger_checkpoint`]; any other subtask when barrier alignment completes
//! (see [`crate::checkpoint`]). Either way it hands the driver a
//! [`SubtaskTransmit::Snapshot`] to persist and acknowledge, and forwards the barrier. A batch
//! whose channel is held mid-batch by a barrier keeps its remaining events, and its credit,
//! until the channel is released. The driver passes on the coordinator's completion notices
//! with [`SubtaskCore::notify_checkpoint_complete`]; two-phase-commit sinks commit then.
//!
//! End of input: a subtask whose input ended emits end-of-input and tells the driver
//! ([`SubtaskTransmit::Ended`]). Without checkpoints it then finishes. With them it waits for
//! the job's **final checkpoint** — one triggered after every subtask has ended — still
//! snapshotting and forwarding barriers, and finishes once that checkpoint is complete: so the
//! last records a sink wrote are committed before the job ends. A finished subtask returns the
//! credit of whatever still reaches it (barriers of upstream subtasks that ended), so that they
//! can finish too.

use std::collections::VecDeque;

use crate::checkpoint::{
    Alignment, BarrierAligner, CheckpointId, CheckpointMode, DeclineReason, SubtaskSnapshot,
};
#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::element::{Batch, Event, Records, Timestamp};
use crate::error::{OperatorError, TaskError, guarded};
use crate::flow::{CreditedQueue, FlowConfig};
use crate::operator::Operator;
use crate::source::{AnySource, Emitted, SourcePoll};
use crate::time::WatermarkStatus;

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
    /// Whether barrier alignment holds channels.
    pub checkpoint_mode: CheckpointMode,
    /// Whether the subtask waits for a final checkpoint after its input ended.
    pub final_checkpoint: bool,
    /// How often (ms of processing time) its source emits periodic watermarks; 0: never.
    pub watermark_interval_ms: u64,
}

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// It processed a batch; step again.
    Progress,
    /// It waits for an input batch, for output credit, or (its input ended) for the final
    /// checkpoint; step again after the next `handle_*`, trigger or notice.
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
    /// The subtask's part of a checkpoint: persist it, then acknowledge the checkpoint.
    Snapshot {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// The subtask's state.
        snapshot: SubtaskSnapshot,
    },
    /// The subtask cannot take part in a checkpoint.
    Declined {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// Why.
        reason: DeclineReason,
    },
    /// The subtask's input ended and it emitted end-of-input: tell the coordinator, which takes
    /// the final checkpoint once every subtask has ended.
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// End of input has been emitted; output batches may still wait for credit, and the
    /// subtask may wait for the final checkpoint.
    Ended,
    Finished,
}

struct InputChannelState {
    queue: VecDeque<Batch>,
    /// The rest of the batch being consumed, held by a barrier; its credit is still owed.
    current: VecDeque<Event>,
    watermark: Timestamp,
    ended: bool,
    /// The sender said it is idle: its watermark does not count until it is active again.
    idle: bool,
}

impl InputChannelState {
    fn has_input(&self) -> bool {
        !self.current.is_empty() || !self.queue.is_empty()
    }

    /// Whether the channel counts for event-time alignment: open, active, and with a watermark.
    fn is_aligned_in_event_time(&self) -> bool {
        !self.ended && !self.idle && self.watermark > Timestamp::MIN
    }

    /// Whether the channel's watermark is past `limit`, so its batches wait.
    fn is_ahead_of(&self, limit: Timestamp) -> bool {
        self.is_aligned_in_event_time() && self.watermark > limit
    }
}

/// The watermark past which an input channel's batches wait for the slower channels: the
/// least watermark of the channels that count, plus the allowed drift. None while barriers are
/// being aligned (a channel that has not delivered its barrier must not be held), or when no
/// channel has a watermark yet. The slowest channel is never held, so the job's slowest input
/// always moves on and event time advances; a channel without watermarks holds nothing back.
fn drift_limit(
    channels: &[InputChannelState],
    aligner: &BarrierAligner,
    drift_ms: Option<u64>,
    holds_while_aligning: bool,
) -> Option<Timestamp> {
    let drift = i64::try_from(drift_ms?).unwrap_or(i64::MAX);
    if aligner.is_aligning() && !holds_while_aligning {
        return None;
    }
    let slowest = channels
        .iter()
        .filter(|channel| channel.is_aligned_in_event_time())
        .map(|channel| channel.watermark)
        .min()?;
    Some(Timestamp(slowest.0.saturating_add(drift)))
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
    /// The status last sent downstream.
    watermark_status: WatermarkStatus,
    /// The latest processing time the driver passed in.
    processing_time: Timestamp,
    /// The processing time the chained operators were last told of: behind
    /// `processing_time` while an output waits for credit.
    operators_processing_time: Timestamp,
    phase: Phase,
    batch_size: usize,
    /// How often (ms of processing time) a source emits periodic watermarks; 0: never.
    watermark_interval_ms: u64,
    /// The credits each input channel granted: the most batches it can hold.
    channel_credits: u32,
    /// How far an input channel may run ahead of the slowest in event time.
    watermark_drift_ms: Option<u64>,
    /// Whether the subtask waits for a final checkpoint after its input ended.
    final_checkpoint: bool,
    /// The final checkpoint is complete: the subtask may finish.
    final_checkpoint_complete: bool,
    /// The chained operators have been opened.
    opened: bool,
    /// Planted on purpose: `DriftHoldsAligningChannels` (the drift limit holds channels back
    /// while barriers align, too).
    #[cfg(feature = "defects")]
    drift_holds_aligning: bool,
    /// Planted on purpose: `WatermarkSkipsSilentChannels` (the minimum rule passes over
    /// channels that have sent no watermark).
    #[cfg(feature = "defects")]
    skips_silent_channels: bool,
}

enum HeadState {
    Source {
        name: String,
        source: Box<dyn AnySource>,
    },
    Inputs {
        channels: Vec<InputChannelState>,
        next: usize,
        aligner: BarrierAligner,
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
                        current: VecDeque::new(),
                        watermark: Timestamp::MIN,
                        ended: false,
                        idle: false,
                    })
                    .collect(),
                next: 0,
                aligner: BarrierAligner::new(spec.checkpoint_mode),
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
            watermark_status: WatermarkStatus::Active,
            processing_time: Timestamp::MIN,
            operators_processing_time: Timestamp::MIN,
            phase: Phase::Running,
            batch_size: spec.flow.batch_size.max(1),
            watermark_interval_ms: spec.watermark_interval_ms,
            channel_credits: spec.flow.channel_credits,
            watermark_drift_ms: spec.flow.watermark_drift_ms,
            final_checkpoint: spec.final_checkpoint,
            final_checkpoint_complete: false,
            opened: false,
            #[cfg(feature = "defects")]
            drift_holds_aligning: false,
            #[cfg(feature = "defects")]
            skips_silent_channels: false,
        }
    }

    /// Opens every chained operator, in chain order, unless they are open already; after a
    /// restore, if there is one, and before anything else calls them.
    pub fn open(&mut self) -> Result<(), TaskError> {
        if self.opened {
            return Ok(());
        }
        // Once: an operator that failed to open has failed the subtask.
        self.opened = true;
        for link in &mut self.chain {
            guarded(&link.name, || link.operator.open())?;
        }
        Ok(())
    }

    /// Breaks the subtask on purpose, for the simulator to catch: with
    /// `SubtaskSkipsAlignment`, a subtask with inputs snapshots at the first barrier of a
    /// checkpoint without holding the channels that delivered it (as at-least-once mode does);
    /// with `DriftHoldsAligningChannels`, the drift limit holds channels while barriers align;
    /// with `WatermarkSkipsSilentChannels`, the minimum rule passes over channels that have
    /// sent no watermark.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        match defect {
            Defect::SubtaskSkipsAlignment => {
                if let HeadState::Inputs { aligner, .. } = &mut self.head {
                    *aligner = BarrierAligner::new(CheckpointMode::AtLeastOnce);
                }
            }
            Defect::DriftHoldsAligningChannels => self.drift_holds_aligning = true,
            Defect::WatermarkSkipsSilentChannels => self.skips_silent_channels = true,
            _ => {}
        }
    }

    /// Whether a planted defect lets the drift limit hold channels while barriers align.
    #[cfg(feature = "defects")]
    fn drift_holds_aligning(&self) -> bool {
        self.drift_holds_aligning
    }

    #[cfg(not(feature = "defects"))]
    fn drift_holds_aligning(&self) -> bool {
        false
    }

    /// Whether a channel's watermark counts in the minimum rule: it does unless the channel
    /// ended or is idle — or, with a planted defect, has sent no watermark yet.
    #[cfg(feature = "defects")]
    fn counts_for_watermark(&self, channel: &InputChannelState) -> bool {
        let passed_over = self.skips_silent_channels && channel.watermark == Timestamp::MIN;
        !(channel.ended || channel.idle || passed_over)
    }

    #[cfg(not(feature = "defects"))]
    fn counts_for_watermark(&self, channel: &InputChannelState) -> bool {
        !channel.ended && !channel.idle
    }

    /// A batch arrived on input channel `channel`.
    pub fn handle_batch(&mut self, channel: usize, batch: Batch) {
        if self.phase == Phase::Finished {
            // Only barriers still come (see `release_inputs`): drop them, return the credit.
            debug_assert!(
                batch
                    .events
                    .iter()
                    .all(|event| matches!(event, Event::Barrier(_))),
                "a finished subtask received more than barriers on input channel {channel}"
            );
            drop(batch);
            self.transmits.push_back(SubtaskTransmit::Credit {
                input: channel,
                credits: 1,
            });
            return;
        }
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

    /// Whether the subtask has told its outputs that it is idle.
    pub fn watermark_status(&self) -> WatermarkStatus {
        self.watermark_status
    }

    /// The latest processing time the driver passed in (`Timestamp::MIN` before the first).
    pub fn processing_time(&self) -> Timestamp {
        self.processing_time
    }

    /// Processing time reached `now`, in milliseconds since the Unix epoch (an earlier time
    /// than the latest changes nothing). While the subtask runs, every chained operator is
    /// told, in chain order, and what it emits runs down the rest of the chain; then the
    /// outputs are handed over. If an output still waits for credit, the operators are told
    /// at the first step that finds every output sent instead, so that no output holds more
    /// than its credits allow.
    pub fn advance_processing_time(&mut self, now: Timestamp) -> Result<(), TaskError> {
        self.open()?;
        self.processing_time = self.processing_time.max(now);
        self.fire_processing_time()?;
        Ok(())
    }

    /// Tells the chained operators the processing time, if they have not heard it and every
    /// output is sent; returns whether it did.
    fn fire_processing_time(&mut self) -> Result<bool, TaskError> {
        let now = self.processing_time;
        if self.phase != Phase::Running
            || now <= self.operators_processing_time
            || !self.outputs_idle()
        {
            return Ok(false);
        }
        self.operators_processing_time = now;
        for index in 0..self.chain.len() {
            let link = &mut self.chain[index];
            let emitted = guarded(&link.name, || link.operator.on_processing_time(now))?;
            if let Some(records) = emitted {
                self.run_chain(index + 1, records)?;
            }
        }
        self.flush_outputs();
        Ok(true)
    }

    /// Starts checkpoint `checkpoint` at a source subtask: snapshot, then emit the barrier after
    /// everything emitted so far. A subtask that has finished declines.
    pub fn trigger_checkpoint(&mut self, checkpoint: CheckpointId) -> Result<(), TaskError> {
        debug_assert!(
            matches!(self.head, HeadState::Source { .. }),
            "only sources are triggered; other subtasks take barriers from their inputs"
        );
        self.open()?;
        if self.phase == Phase::Finished {
            self.transmits.push_back(SubtaskTransmit::Declined {
                checkpoint,
                reason: DeclineReason::Finished,
            });
            return Ok(());
        }
        self.snapshot(checkpoint)?;
        self.flush_outputs();
        Ok(())
    }

    /// Checkpoint `checkpoint` is complete: tell every operator (sinks commit). `last` says it
    /// is the job's final checkpoint: once its outputs are handed over, the subtask finishes.
    pub fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
        last: bool,
    ) -> Result<(), TaskError> {
        if self.phase == Phase::Finished {
            return Ok(());
        }
        self.open()?;
        for link in &mut self.chain {
            guarded(&link.name, || {
                link.operator.notify_checkpoint_complete(checkpoint)
            })?;
        }
        if last {
            debug_assert!(
                self.phase == Phase::Ended,
                "the final checkpoint completed before this subtask's input ended"
            );
            self.final_checkpoint_complete = true;
        }
        Ok(())
    }

    /// Restores the subtask from its part of a checkpoint, before it runs (and before
    /// [`SubtaskCore::open`]: restoring only hands each operator its state, opening checks it).
    pub fn restore(&mut self, snapshot: SubtaskSnapshot) -> Result<(), TaskError> {
        if snapshot.operators.len() != self.chain.len() {
            let names: Vec<&str> = self.chain.iter().map(|link| link.name.as_str()).collect();
            return Err(TaskError {
                operator: names.join(" -> "),
                error: OperatorError::Failed(
                    format!(
                        "the snapshot holds {} operator states but the chain has {} operators",
                        snapshot.operators.len(),
                        self.chain.len()
                    )
                    .into(),
                ),
            });
        }
        if let HeadState::Source { name, source } = &mut self.head {
            for position in &snapshot.source_positions {
                guarded(name, || source.restore_position(position))?;
            }
        }
        for (link, state) in self.chain.iter_mut().zip(snapshot.operators) {
            guarded(&link.name, || link.operator.restore_state(state))?;
        }
        Ok(())
    }

    /// Snapshots the source position and every operator, hands the snapshot to the driver, and
    /// forwards the barrier.
    fn snapshot(&mut self, checkpoint: CheckpointId) -> Result<(), TaskError> {
        let source_positions = match &mut self.head {
            HeadState::Source { name, source } => guarded(name, || source.snapshot_position())?
                .into_iter()
                .collect(),
            HeadState::Inputs { .. } => Vec::new(),
        };
        let operators = self
            .chain
            .iter_mut()
            .map(|link| guarded(&link.name, || link.operator.snapshot_state(checkpoint)))
            .collect::<Result<Vec<_>, _>>()?;
        self.transmits.push_back(SubtaskTransmit::Snapshot {
            checkpoint,
            snapshot: SubtaskSnapshot {
                source_positions,
                operators,
            },
        });
        self.emit(Event::Barrier(checkpoint));
        Ok(())
    }

    /// Does one unit of work: one input batch or one source poll through the whole chain.
    pub fn step(&mut self) -> Result<Step, TaskError> {
        if self.phase == Phase::Finished {
            return Ok(Step::Finished);
        }
        self.open()?;
        if !self.outputs_idle() {
            return Ok(Step::Blocked);
        }
        if self.fire_processing_time()? && !self.outputs_idle() {
            return Ok(Step::Blocked);
        }
        let ended = self.phase == Phase::Ended;
        if ended && (!self.final_checkpoint || self.final_checkpoint_complete) {
            self.phase = Phase::Finished;
            self.release_inputs();
            return Ok(Step::Finished);
        }
        let step = match &mut self.head {
            // An ended source only waits: for triggers, and for the final checkpoint.
            HeadState::Source { .. } if ended => Step::Blocked,
            HeadState::Source { .. } => self.step_source()?,
            // Ended input channels still deliver barriers.
            HeadState::Inputs { .. } => self.step_inputs()?,
        };
        self.flush_outputs();
        Ok(step)
    }

    /// The subtask finished: what its input channels still hold, and what they will bring, are
    /// barriers an upstream subtask emitted after its end of input (it still snapshots for the
    /// final checkpoint). This subtask takes no more of them, so it returns their credits:
    /// otherwise an upstream subtask with barriers waiting for credit could never finish
    /// (found by the simulator's `checkpoint-timeouts`).
    fn release_inputs(&mut self) {
        let HeadState::Inputs { channels, .. } = &mut self.head else {
            return;
        };
        for (input, channel) in channels.iter_mut().enumerate() {
            let held = channel.queue.len() + usize::from(!channel.current.is_empty());
            channel.queue.clear();
            channel.current.clear();
            if held > 0 {
                self.transmits.push_back(SubtaskTransmit::Credit {
                    input,
                    credits: held as u32,
                });
            }
        }
    }

    fn outputs_idle(&self) -> bool {
        self.outputs.iter().all(|output| output.queue.is_empty())
    }

    fn step_source(&mut self) -> Result<Step, TaskError> {
        let HeadState::Source { name, source } = &mut self.head else {
            unreachable!("step_source runs for source heads only")
        };
        let (batch_size, now, interval) = (
            self.batch_size,
            self.processing_time,
            self.watermark_interval_ms,
        );
        let polled = guarded(name, || source.poll(batch_size, now, interval))?;
        // Active before the records, idle after them: downstream never sees a record from a
        // source it believes idle.
        if polled.watermark_status == WatermarkStatus::Active {
            self.set_watermark_status(WatermarkStatus::Active);
        }
        let mut emitted = false;
        for event in polled.emitted {
            match event {
                Emitted::Records(records) => {
                    emitted = true;
                    self.run_chain(0, records)?;
                }
                Emitted::Watermark(watermark) => self.advance_watermark(watermark)?,
            }
        }
        if polled.watermark_status == WatermarkStatus::Idle && polled.status != SourcePoll::Finished
        {
            self.set_watermark_status(WatermarkStatus::Idle);
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
        let holds_while_aligning = self.drift_holds_aligning();
        let HeadState::Inputs {
            channels,
            next,
            aligner,
        } = &mut self.head
        else {
            unreachable!("step_inputs runs for input heads only")
        };
        let count = channels.len();
        let ahead = drift_limit(
            channels,
            aligner,
            self.watermark_drift_ms,
            holds_while_aligning,
        );
        let Some(channel) = (0..count)
            .map(|offset| (*next + offset) % count)
            .find(|&c| {
                channels[c].has_input()
                    && !aligner.holds(c)
                    && !ahead.is_some_and(|limit| channels[c].is_ahead_of(limit))
            })
        else {
            return Ok(Step::Blocked);
        };
        *next = (channel + 1) % count;
        let state = &mut channels[channel];
        if state.current.is_empty()
            && let Some(batch) = state.queue.pop_front()
        {
            state.current = batch.events.into();
        }
        loop {
            let HeadState::Inputs {
                channels, aligner, ..
            } = &mut self.head
            else {
                unreachable!("step_inputs runs for input heads only")
            };
            if aligner.holds(channel) {
                // The rest of the batch, if any, waits behind the barrier.
                break;
            }
            let Some(event) = channels[channel].current.pop_front() else {
                break;
            };
            match event {
                Event::Records(records) => self.run_chain(0, records)?,
                Event::Watermark(watermark) => self.channel_watermark(channel, watermark, false)?,
                Event::WatermarkStatus(status) => self.channel_status(channel, status)?,
                Event::Barrier(checkpoint) => self.channel_barrier(channel, checkpoint)?,
                Event::EndOfInput => self.channel_watermark(channel, Timestamp::MAX, true)?,
            }
        }
        // A batch's credit goes back once all of it is consumed, and not before: a batch held
        // half-way keeps the sender from sending more than the channel can hold.
        let HeadState::Inputs { channels, .. } = &self.head else {
            unreachable!("step_inputs runs for input heads only")
        };
        if channels[channel].current.is_empty() {
            self.transmits.push_back(SubtaskTransmit::Credit {
                input: channel,
                credits: 1,
            });
        }
        Ok(Step::Progress)
    }

    /// A channel delivered a barrier: align, and snapshot once every open channel has.
    fn channel_barrier(
        &mut self,
        channel: usize,
        checkpoint: CheckpointId,
    ) -> Result<(), TaskError> {
        let HeadState::Inputs {
            channels, aligner, ..
        } = &mut self.head
        else {
            unreachable!("barriers arrive on input heads only")
        };
        let ended: Vec<bool> = channels.iter().map(|c| c.ended).collect();
        let alignment = aligner.on_barrier(channel, checkpoint, &ended);
        self.on_alignment(alignment)
    }

    fn on_alignment(&mut self, alignment: Alignment) -> Result<(), TaskError> {
        match alignment {
            Alignment::Waiting => Ok(()),
            Alignment::Complete(checkpoint) => self.snapshot(checkpoint),
            Alignment::Abandoned(checkpoint) => {
                self.transmits.push_back(SubtaskTransmit::Declined {
                    checkpoint,
                    reason: DeclineReason::Overtaken,
                });
                Ok(())
            }
        }
    }

    /// Records a channel's watermark (or its end) and applies the minimum rule.
    fn channel_watermark(
        &mut self,
        channel: usize,
        watermark: Timestamp,
        ended: bool,
    ) -> Result<(), TaskError> {
        let HeadState::Inputs {
            channels, aligner, ..
        } = &mut self.head
        else {
            unreachable!("channel watermarks exist for input heads only")
        };
        let state = &mut channels[channel];
        state.watermark = state.watermark.max(watermark);
        if ended && !state.ended {
            state.ended = true;
            // An alignment waiting only for this channel completes before end of input goes
            // downstream, so the barrier precedes it.
            let ended: Vec<bool> = channels.iter().map(|c| c.ended).collect();
            let alignment = aligner.on_channel_ended(&ended);
            self.on_alignment(alignment)?;
        }
        self.combine_channel_watermarks()
    }

    /// Records that a channel became idle or active again, and applies the minimum rule.
    fn channel_status(&mut self, channel: usize, status: WatermarkStatus) -> Result<(), TaskError> {
        let HeadState::Inputs { channels, .. } = &mut self.head else {
            unreachable!("channel statuses exist for input heads only")
        };
        channels[channel].idle = status == WatermarkStatus::Idle;
        self.combine_channel_watermarks()
    }

    /// The minimum rule: the subtask's watermark is the minimum over the channels that are
    /// neither ended nor idle. With every channel ended, the input ends; with every open
    /// channel idle, the subtask is idle.
    fn combine_channel_watermarks(&mut self) -> Result<(), TaskError> {
        let HeadState::Inputs { channels, .. } = &self.head else {
            unreachable!("channel watermarks exist for input heads only")
        };
        let minimum = channels
            .iter()
            .filter(|c| self.counts_for_watermark(c))
            .map(|c| c.watermark)
            .min();
        let all_ended = channels.iter().all(|c| c.ended);
        match minimum {
            Some(minimum) => {
                self.set_watermark_status(WatermarkStatus::Active);
                self.advance_watermark(minimum)
            }
            None if all_ended => self.end_input(),
            None => {
                self.set_watermark_status(WatermarkStatus::Idle);
                Ok(())
            }
        }
    }

    /// Tells the outputs that the subtask became idle or active again, if it did.
    fn set_watermark_status(&mut self, status: WatermarkStatus) {
        if self.phase == Phase::Running && self.watermark_status != status {
            self.watermark_status = status;
            self.emit(Event::WatermarkStatus(status));
        }
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
        self.phase = Phase::Ended;
        self.transmits.push_back(SubtaskTransmit::Ended);
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
        self.emit_records(records);
        Ok(())
    }

    /// Appends records to every output's batch under construction. More records than a batch
    /// holds (one input record that became many: a flat-map of a huge line) leave in batches
    /// of at most `batch_size` records, each sent as credits allow, so a downstream subtask
    /// never takes more than a batch at once and what it makes of them stays bounded too.
    fn emit_records(&mut self, records: Records) {
        if records.len() <= self.batch_size {
            self.emit(Event::Records(records));
            return;
        }
        self.close_batches();
        for run in records.into_runs(self.batch_size) {
            self.emit(Event::Records(run));
            self.close_batches();
        }
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
        self.close_batches();
        for index in 0..self.outputs.len() {
            self.send_ready(index);
        }
    }

    /// Queues the batches under construction to wait for credit.
    fn close_batches(&mut self) {
        for output in &mut self.outputs {
            if !output.building.is_empty() {
                let events = std::mem::take(&mut output.building);
                output.queue.push(Batch { events });
            }
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
    use crate::operator::{Erased, Map, OneInputOperator, Passthrough};
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
            ..FlowConfig::default()
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
    fn a_finished_subtask_returns_the_credits_of_late_barriers() {
        let mut core = SubtaskCore::new(SubtaskSpec {
            head: Head::Inputs { channels: 2 },
            chain: vec![ChainedOperator {
                name: "pass".into(),
                operator: Box::new(Passthrough),
            }],
            outputs: 0,
            flow: flow(8, 2),
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint: false,
            watermark_interval_ms: 1,
        });
        core.handle_batch(0, batch(vec![Event::EndOfInput]));
        core.handle_batch(1, batch(vec![Event::EndOfInput]));
        assert_eq!(step_until_stuck(&mut core), Step::Finished);
        drain(&mut core);
        // An upstream subtask that ended still snapshots, and its barriers still come.
        core.handle_batch(1, batch(vec![Event::Barrier(CheckpointId(4))]));
        let credits: Vec<(usize, u32)> = drain(&mut core)
            .into_iter()
            .filter_map(|transmit| match transmit {
                SubtaskTransmit::Credit { input, credits } => Some((input, credits)),
                _ => None,
            })
            .collect();
        assert_eq!(credits, vec![(1, 1)]);
    }

    /// A subtask passing `u32`s on, over two input channels, allowing `drift_ms` of drift.
    fn two_channel_pass(drift_ms: Option<u64>) -> SubtaskCore {
        SubtaskCore::new(SubtaskSpec {
            head: Head::Inputs { channels: 2 },
            chain: vec![ChainedOperator {
                name: "pass".into(),
                operator: Box::new(Passthrough),
            }],
            outputs: 1,
            flow: FlowConfig {
                watermark_drift_ms: drift_ms,
                ..flow(8, 8)
            },
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint: false,
            watermark_interval_ms: 1,
        })
    }

    fn values(value: u32) -> Event {
        Event::Records(Records::new(vec![Record::new(value)]))
    }

    /// The values a subtask passed on, in order.
    fn passed(core: &mut SubtaskCore) -> Vec<u32> {
        step_until_stuck(core);
        drain(core)
            .into_iter()
            .filter_map(|transmit| match transmit {
                SubtaskTransmit::Batch { batch, .. } => Some(batch.events),
                _ => None,
            })
            .flatten()
            .filter_map(|event| match event {
                Event::Records(records) => Some(records.downcast::<u32>().unwrap()),
                _ => None,
            })
            .flatten()
            .map(|record| record.value)
            .collect()
    }

    #[test]
    fn a_channel_ahead_in_event_time_waits_for_the_slowest() {
        let mut core = two_channel_pass(Some(1_000));
        // Channel 0 runs 5 s ahead of channel 1.
        core.handle_batch(0, batch(vec![Event::Watermark(Timestamp(6_000))]));
        core.handle_batch(1, batch(vec![Event::Watermark(Timestamp(1_000))]));
        assert_eq!(passed(&mut core), Vec::<u32>::new());
        core.handle_batch(0, batch(vec![values(60)]));
        core.handle_batch(1, batch(vec![values(10)]));
        assert_eq!(passed(&mut core), vec![10], "channel 0 waits");
        core.handle_batch(
            1,
            batch(vec![Event::Watermark(Timestamp(5_000)), values(50)]),
        );
        assert_eq!(
            passed(&mut core),
            vec![50, 60],
            "within 1 s of the slowest, channel 0 moves again"
        );

        // Without a drift limit, channels take turns whatever their event time.
        let mut free = two_channel_pass(None);
        free.handle_batch(0, batch(vec![Event::Watermark(Timestamp(6_000))]));
        free.handle_batch(1, batch(vec![Event::Watermark(Timestamp(1_000))]));
        passed(&mut free);
        free.handle_batch(0, batch(vec![values(60)]));
        free.handle_batch(1, batch(vec![values(10)]));
        assert_eq!(passed(&mut free), vec![60, 10]);
    }

    #[test]
    fn a_channel_ahead_is_not_held_while_barriers_align_nor_by_an_ended_channel() {
        let mut core = two_channel_pass(Some(1_000));
        core.handle_batch(0, batch(vec![Event::Watermark(Timestamp(6_000))]));
        core.handle_batch(1, batch(vec![Event::Watermark(Timestamp(1_000))]));
        passed(&mut core);
        // Channel 1 delivered barrier 1; channel 0's barrier sits behind its records.
        core.handle_batch(1, batch(vec![Event::Barrier(CheckpointId(1))]));
        core.handle_batch(0, batch(vec![values(60), Event::Barrier(CheckpointId(1))]));
        assert_eq!(
            passed(&mut core),
            vec![60],
            "holding channel 0 now would stall the checkpoint: it is not held"
        );
        core.handle_batch(0, batch(vec![values(61)]));
        core.handle_batch(1, batch(vec![Event::EndOfInput]));
        assert_eq!(
            passed(&mut core),
            vec![61],
            "an ended channel holds nothing back"
        );
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
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint: false,
            watermark_interval_ms: 1,
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
            _ => None,
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

    /// The events a subtask sent on its outputs, in order.
    fn sent_events(transmits: Vec<SubtaskTransmit>) -> Vec<Event> {
        transmits
            .into_iter()
            .filter_map(|t| match t {
                SubtaskTransmit::Batch { batch, .. } => Some(batch.events),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// A short description of events, to compare sequences.
    fn describe(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|event| match event {
                Event::Records(records) => {
                    let values: Vec<i64> = records
                        .clone()
                        .downcast::<i64>()
                        .unwrap()
                        .into_iter()
                        .map(|r| r.value)
                        .collect();
                    format!("records {values:?}")
                }
                Event::Watermark(watermark) => format!("watermark {watermark}"),
                Event::WatermarkStatus(status) => format!("{status:?}"),
                Event::Barrier(checkpoint) => format!("barrier {}", checkpoint.0),
                Event::EndOfInput => "end".to_owned(),
            })
            .collect()
    }

    #[test]
    fn idle_channels_do_not_hold_the_watermark_back() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut core = SubtaskCore::new(SubtaskSpec {
            head: Head::Inputs { channels: 3 },
            chain: vec![ChainedOperator {
                name: "log".into(),
                operator: Box::new(Erased(WatermarkLog(seen.clone()))),
            }],
            outputs: 1,
            flow: flow(8, 8),
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint: false,
            watermark_interval_ms: 1,
        });
        let mut feed = |channel: usize, event: Event| {
            core.handle_batch(channel, batch(vec![event]));
            step_until_stuck(&mut core);
            let sent = describe(&sent_events(drain(&mut core)));
            (core.watermark(), core.watermark_status(), sent)
        };
        let (active, idle) = (WatermarkStatus::Active, WatermarkStatus::Idle);
        feed(0, Event::Watermark(Timestamp(10)));
        assert_eq!(
            feed(1, Event::Watermark(Timestamp(20))),
            (Timestamp::MIN, active, vec![]),
            "channel 2 said nothing yet"
        );
        assert_eq!(
            feed(2, Event::WatermarkStatus(idle)),
            (Timestamp(10), active, vec!["watermark 10ms".to_owned()]),
            "an idle channel does not count"
        );
        assert_eq!(
            feed(0, Event::WatermarkStatus(idle)),
            (Timestamp(20), active, vec!["watermark 20ms".to_owned()])
        );
        assert_eq!(
            feed(1, Event::WatermarkStatus(idle)),
            (Timestamp(20), idle, vec!["Idle".to_owned()]),
            "every open channel is idle: so is the subtask, and it says so once"
        );
        assert_eq!(
            feed(2, Event::Watermark(Timestamp(50))),
            (Timestamp(20), idle, vec![]),
            "an idle channel's watermark is kept but does not count"
        );
        assert_eq!(
            feed(0, Event::WatermarkStatus(active)),
            (Timestamp(20), active, vec!["Active".to_owned()]),
            "channel 0 is back at 10: it holds the watermark where it is, never back"
        );
        assert_eq!(
            feed(0, Event::Watermark(Timestamp(30))),
            (Timestamp(30), active, vec!["watermark 30ms".to_owned()])
        );
        assert_eq!(
            feed(2, Event::WatermarkStatus(active)),
            (Timestamp(30), active, vec![]),
            "channel 2 is back, ahead"
        );
        assert_eq!(
            feed(0, Event::EndOfInput),
            (Timestamp(50), active, vec!["watermark 50ms".to_owned()])
        );
        assert_eq!(
            feed(2, Event::EndOfInput),
            (Timestamp(50), idle, vec!["Idle".to_owned()]),
            "the one open channel left is idle"
        );
        assert_eq!(
            feed(1, Event::EndOfInput),
            (
                Timestamp::MAX,
                idle,
                vec!["watermark +inf".to_owned(), "end".to_owned()]
            )
        );
        assert_eq!(
            *seen.lock().unwrap(),
            [
                Timestamp(10),
                Timestamp(20),
                Timestamp(30),
                Timestamp(50),
                Timestamp::MAX
            ]
        );
    }

    /// Emits, at each poll, the next script entry's values, each stamped with its value as
    /// event time; nothing (idle) once the script is out.
    struct Scripted(VecDeque<Vec<i64>>);

    impl crate::source::Source for Scripted {
        type Out = i64;

        fn poll_next(
            &mut self,
            out: &mut crate::source::SourceOutput<i64>,
        ) -> Result<SourcePoll, BoxError> {
            let values = self.0.pop_front().unwrap_or_default();
            let idle = values.is_empty();
            for value in values {
                out.collect_with_timestamp(value, Timestamp(value));
            }
            Ok(if idle {
                SourcePoll::Idle
            } else {
                SourcePoll::Ready
            })
        }
    }

    #[test]
    fn a_source_subtask_says_when_its_source_becomes_idle_and_active_again() {
        let strategy = crate::time::WatermarkStrategy::monotonous()
            .with_idleness(std::time::Duration::from_millis(100));
        let script = vec![vec![5, 7], vec![], vec![], vec![], vec![9]];
        let mut core = SubtaskCore::new(SubtaskSpec {
            head: Head::Source {
                name: "scripted".into(),
                source: Box::new(crate::source::WithWatermarks::new(
                    Scripted(script.into()),
                    strategy,
                )),
            },
            chain: Vec::new(),
            outputs: 1,
            flow: flow(8, 8),
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint: false,
            watermark_interval_ms: 1,
        });
        let mut poll_at = |now: i64| {
            core.advance_processing_time(Timestamp(now)).unwrap();
            let step = core.step().unwrap();
            (step, describe(&sent_events(drain(&mut core))))
        };
        assert_eq!(
            poll_at(0),
            (Step::Progress, vec!["records [5, 7]".to_owned()]),
            "the first periodic watermark is due an interval after the first poll"
        );
        assert_eq!(
            poll_at(99),
            (Step::Idle, vec!["watermark 6ms".to_owned()]),
            "quiet, not for long enough"
        );
        assert_eq!(poll_at(100), (Step::Idle, vec!["Idle".to_owned()]));
        assert_eq!(poll_at(300), (Step::Idle, vec![]), "said once");
        assert_eq!(
            poll_at(301),
            (
                Step::Progress,
                vec![
                    "Active".to_owned(),
                    "records [9]".to_owned(),
                    "watermark 8ms".to_owned()
                ]
            ),
            "active again before the record"
        );
    }

    /// Passes records on; at each processing time it is told of, emits that time.
    struct Clock;

    impl OneInputOperator for Clock {
        type In = i64;
        type Out = i64;

        fn process_batch(
            &mut self,
            input: Vec<Record<i64>>,
            out: &mut Vec<Record<i64>>,
        ) -> Result<(), BoxError> {
            out.extend(input);
            Ok(())
        }

        fn on_processing_time(
            &mut self,
            now: Timestamp,
            out: &mut Vec<Record<i64>>,
        ) -> Result<(), BoxError> {
            out.push(Record::new(now.0));
            Ok(())
        }
    }

    #[test]
    fn processing_time_reaches_the_chain_and_waits_for_output_credit() {
        let mut core = SubtaskCore::new(SubtaskSpec {
            head: Head::Inputs { channels: 1 },
            chain: vec![
                ChainedOperator {
                    name: "clock".into(),
                    operator: Box::new(Erased(Clock)),
                },
                ChainedOperator {
                    name: "times ten".into(),
                    operator: Box::new(Erased(Map::new(Arc::new(|x: i64| x * 10)))),
                },
            ],
            outputs: 1,
            flow: flow(8, 1),
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint: false,
            watermark_interval_ms: 1,
        });
        assert_eq!(core.processing_time(), Timestamp::MIN);
        core.advance_processing_time(Timestamp(5)).unwrap();
        assert_eq!(
            describe(&sent_events(drain(&mut core))),
            ["records [50]"],
            "what the clock emits runs down the rest of the chain"
        );
        core.advance_processing_time(Timestamp(3)).unwrap();
        core.advance_processing_time(Timestamp(5)).unwrap();
        assert_eq!(core.processing_time(), Timestamp(5), "it keeps the latest");
        assert!(
            drain(&mut core).is_empty(),
            "no time that is not later fires"
        );
        core.advance_processing_time(Timestamp(7)).unwrap();
        assert!(
            drain(&mut core).is_empty(),
            "the output's one credit is spent: the batch waits"
        );
        core.advance_processing_time(Timestamp(9)).unwrap();
        assert_eq!(
            step_until_stuck(&mut core),
            Step::Blocked,
            "a batch still waits: the clock's operators are not told yet"
        );
        core.handle_credit(0, 1);
        assert_eq!(describe(&sent_events(drain(&mut core))), ["records [70]"]);
        assert_eq!(step_until_stuck(&mut core), Step::Blocked);
        core.handle_credit(0, 1);
        assert_eq!(
            describe(&sent_events(drain(&mut core))),
            ["records [90]"],
            "told at the first step with every output sent"
        );
        core.handle_credit(0, 1);
        core.handle_batch(0, batch(vec![Event::EndOfInput]));
        assert_eq!(step_until_stuck(&mut core), Step::Finished);
        drain(&mut core);
        core.advance_processing_time(Timestamp(11)).unwrap();
        assert!(
            drain(&mut core).is_empty(),
            "after the end of input, nothing fires"
        );
        assert_eq!(core.processing_time(), Timestamp(11));
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
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint: false,
            watermark_interval_ms: 1,
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
                _ => 0,
            })
            .sum();
        assert_eq!(records, 100 - 30, "the rest arrives once credit does");
    }

    #[test]
    fn one_record_that_becomes_many_leaves_in_batches_of_the_batch_size() {
        let explode = crate::operator::FlatMap::new(Arc::new(|n: u32| 0..n));
        let mut core = SubtaskCore::new(SubtaskSpec {
            head: Head::Source {
                name: "one".into(),
                source: Box::new(IterSource::new([25u32])),
            },
            chain: vec![ChainedOperator {
                name: "explode".into(),
                operator: Box::new(Erased(explode)),
            }],
            outputs: 1,
            flow: flow(10, 1),
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint: false,
            watermark_interval_ms: 1,
        });
        let batches = |core: &mut SubtaskCore| -> Vec<Vec<u32>> {
            drain(core)
                .into_iter()
                .filter_map(|transmit| match transmit {
                    SubtaskTransmit::Batch { batch, .. } => Some(
                        batch
                            .events
                            .into_iter()
                            .filter_map(|event| match event {
                                Event::Records(records) => Some(records.downcast::<u32>().unwrap()),
                                _ => None,
                            })
                            .flatten()
                            .map(|record| record.value)
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(step_until_stuck(&mut core), Step::Blocked);
        assert_eq!(
            batches(&mut core),
            vec![(0..10).collect::<Vec<_>>()],
            "one credit, one batch"
        );
        core.handle_credit(0, 1);
        assert_eq!(batches(&mut core), vec![(10..20).collect::<Vec<_>>()]);
        core.handle_credit(0, 1);
        assert_eq!(step_until_stuck(&mut core), Step::Blocked);
        assert_eq!(batches(&mut core), vec![(20..25).collect::<Vec<_>>()]);
    }

    #[test]
    fn taking_a_batch_returns_a_credit_to_its_channel() {
        let mut core = SubtaskCore::new(SubtaskSpec {
            head: Head::Inputs { channels: 3 },
            chain: Vec::new(),
            outputs: 0,
            flow: flow(8, 2),
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint: false,
            watermark_interval_ms: 1,
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
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint: false,
            watermark_interval_ms: 1,
        });
        let error = core.step().unwrap_err();
        assert_eq!(error.operator, "picky");
        assert!(
            matches!(&error.error, OperatorError::Panicked(message) if message == "seven is not allowed")
        );
    }

    /// A subtask summing every record into one key's state, with two input channels.
    fn summing_subtask(mode: CheckpointMode) -> SubtaskCore {
        let reduce = crate::keyed::KeyedReduce::new(
            Arc::new(|a: u32, b: u32| a + b),
            Arc::new(|_: &u32| 0u8),
            crate::state::KeyedStateStore::new(128),
        );
        SubtaskCore::new(SubtaskSpec {
            head: Head::Inputs { channels: 2 },
            chain: vec![ChainedOperator {
                name: "sum".into(),
                operator: Box::new(Erased(reduce)),
            }],
            outputs: 1,
            flow: flow(8, 4),
            checkpoint_mode: mode,
            final_checkpoint: false,
            watermark_interval_ms: 1,
        })
    }

    fn numbers(values: &[u32]) -> Event {
        Event::Records(Records::new(
            values.iter().copied().map(Record::new).collect(),
        ))
    }

    /// The sum a snapshot holds: restore it and add zero.
    fn restored_sum(snapshot: SubtaskSnapshot) -> u32 {
        let mut core = summing_subtask(CheckpointMode::ExactlyOnce);
        core.restore(snapshot).unwrap();
        core.handle_batch(0, batch(vec![numbers(&[0])]));
        step_until_stuck(&mut core);
        drain(&mut core)
            .into_iter()
            .find_map(|t| match t {
                SubtaskTransmit::Batch { batch, .. } => {
                    batch.events.into_iter().find_map(|e| match e {
                        Event::Records(r) => r.downcast::<u32>().unwrap().pop().map(|r| r.value),
                        _ => None,
                    })
                }
                _ => None,
            })
            .unwrap()
    }

    fn snapshots(transmits: &[SubtaskTransmit]) -> Vec<(CheckpointId, SubtaskSnapshot)> {
        transmits
            .iter()
            .filter_map(|t| match t {
                SubtaskTransmit::Snapshot {
                    checkpoint,
                    snapshot,
                } => Some((*checkpoint, snapshot.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn exactly_once_alignment_snapshots_only_what_precedes_the_barriers() {
        let mut core = summing_subtask(CheckpointMode::ExactlyOnce);
        let one = CheckpointId(1);
        core.handle_batch(
            0,
            batch(vec![numbers(&[1, 2]), Event::Barrier(one), numbers(&[100])]),
        );
        core.handle_batch(1, batch(vec![numbers(&[10])]));
        assert_eq!(step_until_stuck(&mut core), Step::Blocked);
        let before = drain(&mut core);
        assert!(
            snapshots(&before).is_empty(),
            "channel 1 has not delivered the barrier"
        );
        assert!(
            !before
                .iter()
                .any(|t| matches!(t, SubtaskTransmit::Credit { input: 0, .. })),
            "the held batch keeps its credit"
        );
        core.handle_batch(1, batch(vec![Event::Barrier(one)]));
        step_until_stuck(&mut core);
        let after = drain(&mut core);
        let taken = snapshots(&after);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, one);
        assert_eq!(
            restored_sum(taken[0].1.clone()),
            13,
            "1 + 2 + 10; the 100 came after the barrier"
        );
        assert!(
            after
                .iter()
                .any(|t| matches!(t, SubtaskTransmit::Credit { input: 0, .. }))
        );
        let forwarded: Vec<Event> = after
            .into_iter()
            .filter_map(|t| match t {
                SubtaskTransmit::Batch { batch, .. } => Some(batch.events),
                _ => None,
            })
            .flatten()
            .collect();
        let barrier_at = forwarded
            .iter()
            .position(|e| matches!(e, Event::Barrier(id) if *id == one));
        let last_sum_at = forwarded
            .iter()
            .rposition(|e| matches!(e, Event::Records(_)));
        assert!(
            barrier_at < last_sum_at,
            "the barrier goes downstream before the records after it"
        );
    }

    #[test]
    fn at_least_once_does_not_hold_channels() {
        let mut core = summing_subtask(CheckpointMode::AtLeastOnce);
        core.handle_batch(
            0,
            batch(vec![
                numbers(&[1, 2]),
                Event::Barrier(CheckpointId(1)),
                numbers(&[100]),
            ]),
        );
        core.handle_batch(1, batch(vec![numbers(&[10])]));
        step_until_stuck(&mut core);
        core.handle_batch(1, batch(vec![Event::Barrier(CheckpointId(1))]));
        step_until_stuck(&mut core);
        let taken = snapshots(&drain(&mut core));
        assert_eq!(
            restored_sum(taken[0].1.clone()),
            113,
            "the 100 is in: it will be replayed"
        );
    }

    #[test]
    fn a_source_snapshots_its_position_and_resumes_from_it() {
        let source_subtask = || {
            SubtaskCore::new(SubtaskSpec {
                head: Head::Source {
                    name: "numbers".into(),
                    source: Box::new(crate::source::SequenceSource::slice(0..100, 0, 1)),
                },
                chain: Vec::new(),
                outputs: 1,
                flow: flow(10, 100),
                checkpoint_mode: CheckpointMode::ExactlyOnce,
                final_checkpoint: false,
                watermark_interval_ms: 1,
            })
        };
        let mut core = source_subtask();
        core.step().unwrap();
        core.step().unwrap();
        core.trigger_checkpoint(CheckpointId(3)).unwrap();
        let transmits = drain(&mut core);
        let taken = snapshots(&transmits);
        assert!(matches!(
            transmits.last(),
            Some(SubtaskTransmit::Batch { batch, .. }) if matches!(batch.events[..], [Event::Barrier(CheckpointId(3))])
        ));
        let mut resumed = source_subtask();
        resumed.restore(taken[0].1.clone()).unwrap();
        resumed.step().unwrap();
        let first = drain(&mut resumed).into_iter().find_map(|t| match t {
            SubtaskTransmit::Batch { batch, .. } => match &batch.events[0] {
                Event::Records(r) => r
                    .clone()
                    .downcast::<u64>()
                    .unwrap()
                    .first()
                    .map(|r| r.value),
                _ => None,
            },
            _ => None,
        });
        assert_eq!(
            first,
            Some(20),
            "two batches of ten were emitted before the checkpoint"
        );
        let mut finished = source_subtask();
        while finished.step().unwrap() != Step::Finished {}
        finished.trigger_checkpoint(CheckpointId(4)).unwrap();
        assert!(matches!(
            drain(&mut finished).last(),
            Some(SubtaskTransmit::Declined {
                checkpoint: CheckpointId(4),
                reason: DeclineReason::Finished,
            })
        ));
    }

    #[test]
    fn a_snapshot_that_does_not_fit_the_chain_is_refused() {
        let mut core = summing_subtask(CheckpointMode::ExactlyOnce);
        let error = core.restore(SubtaskSnapshot::default()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("0 operator states but the chain has 1"),
            "{error}"
        );
    }

    #[test]
    fn a_batch_ending_in_a_barrier_returns_its_credit_while_the_channel_is_held() {
        let mut core = summing_subtask(CheckpointMode::ExactlyOnce);
        core.handle_batch(
            0,
            batch(vec![numbers(&[1]), Event::Barrier(CheckpointId(1))]),
        );
        step_until_stuck(&mut core);
        let transmits = drain(&mut core);
        assert!(
            transmits
                .iter()
                .any(|t| matches!(t, SubtaskTransmit::Credit { input: 0, .. })),
            "nothing of the batch is left, so its sender gets the credit back: {transmits:?}"
        );
    }

    /// A two-phase-commit sink that records what it is asked to do.
    struct Recording(Arc<Mutex<Vec<String>>>);

    impl crate::operator::Sink for Recording {
        type In = u64;

        fn write_batch(&mut self, records: Vec<Record<u64>>) -> Result<(), BoxError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("write {}", records.len()));
            Ok(())
        }

        fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>, BoxError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("pre-commit {}", checkpoint.0));
            Ok(Some(vec![7]))
        }

        fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), BoxError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("commit {}", checkpoint.0));
            Ok(())
        }

        fn restore(&mut self, states: Vec<Vec<u8>>) -> Result<(), BoxError> {
            self.0.lock().unwrap().push(format!("restore {states:?}"));
            Ok(())
        }
    }

    fn source_into_sink(final_checkpoint: bool, calls: &Arc<Mutex<Vec<String>>>) -> SubtaskCore {
        let info = crate::operator::OperatorInfo {
            job: "job".into(),
            name: "sink".into(),
            uid: "sink".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            key_groups: crate::key::KeyGroupRange::for_subtask(0, 1, 128),
            checkpointing: final_checkpoint,
            state_backend: crate::state::StateBackend::Memory,
            allow_rewind: false,
        };
        SubtaskCore::new(SubtaskSpec {
            head: Head::Source {
                name: "numbers".into(),
                source: Box::new(crate::source::SequenceSource::slice(0..10, 0, 1)),
            },
            chain: vec![ChainedOperator {
                name: "sink".into(),
                operator: Box::new(Erased(crate::operator::SinkOperator::new(
                    Recording(calls.clone()),
                    &info,
                ))),
            }],
            outputs: 0,
            flow: flow(100, 4),
            checkpoint_mode: CheckpointMode::ExactlyOnce,
            final_checkpoint,
            watermark_interval_ms: 1,
        })
    }

    #[test]
    fn with_checkpoints_a_subtask_finishes_only_after_the_final_checkpoint_completes() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut core = source_into_sink(true, &calls);
        assert_eq!(step_until_stuck(&mut core), Step::Blocked);
        assert!(
            drain(&mut core)
                .iter()
                .any(|t| matches!(t, SubtaskTransmit::Ended)),
            "the coordinator learns that the input ended"
        );
        assert_eq!(
            step_until_stuck(&mut core),
            Step::Blocked,
            "it waits for the final checkpoint"
        );
        core.trigger_checkpoint(CheckpointId(4)).unwrap();
        let taken = snapshots(&drain(&mut core));
        assert_eq!(taken[0].1.operators[0].operator, [vec![7]]);
        core.notify_checkpoint_complete(CheckpointId(4), false)
            .unwrap();
        assert_eq!(step_until_stuck(&mut core), Step::Blocked);
        core.trigger_checkpoint(CheckpointId(5)).unwrap();
        core.notify_checkpoint_complete(CheckpointId(5), true)
            .unwrap();
        assert_eq!(step_until_stuck(&mut core), Step::Finished);
        assert_eq!(
            *calls.lock().unwrap(),
            [
                "restore []",
                "write 10",
                "pre-commit 4",
                "commit 4",
                "pre-commit 5",
                "commit 5"
            ]
        );
    }

    #[test]
    fn without_checkpoints_a_sink_commits_at_end_of_input() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut core = source_into_sink(false, &calls);
        assert_eq!(step_until_stuck(&mut core), Step::Finished);
        let end = CheckpointId::END_OF_INPUT.0;
        assert_eq!(
            *calls.lock().unwrap(),
            [
                "restore []".to_owned(),
                "write 10".to_owned(),
                format!("pre-commit {end}"),
                format!("commit {end}")
            ]
        );
    }
}

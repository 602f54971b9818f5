//! The subtask actor: drives one [`SubtaskCore`].
//!
//! Every handler hands its message to the core, then [`SubtaskActor::drive`] steps the core and
//! sends what it emits. Stepping yields to the arbiter after a bounded number of steps, so a
//! busy source shares its thread with the actors placed beside it.
//!
//! Processing time is the wall clock, in milliseconds since the Unix epoch: the actor passes it
//! to the core before the core first steps, and then every
//! [`RuntimeConfig::processing_time_interval`](crate::RuntimeConfig::processing_time_interval).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message};
use rill_core::checkpoint::{CheckpointId, DeclineReason, SubtaskSnapshot};
use rill_core::plan::SubtaskId;
use rill_core::state::StateError;
use rill_core::subtask::{Step, SubtaskCore, SubtaskTransmit};
use rill_core::{TaskError, Timestamp};
use tracing::warn;

use crate::coordinator::CoordinatorActor;
use crate::master::JobMaster;
use crate::messages::{
    Acknowledge, ActorLost, Decline, DeliverBatch, NotifyCheckpointComplete, OutputCredit,
    PartitionBatch, Shutdown, Start, SubtaskEnded, SubtaskFinished, TargetCredit, TaskFailed,
    TriggerCheckpoint, WireSubtask,
};
use crate::panic_context::InSubtask;
use crate::runtime::RuntimeConfig;

/// Steps one handler may take before it yields the thread to other actors.
const STEPS_PER_TURN_MAX: usize = 16;

/// Resumes stepping after a yield or an idle pause.
#[derive(Message)]
#[rtype(result = "()")]
struct Resume;

pub(crate) struct SubtaskActor {
    id: SubtaskId,
    /// The subtask's index in the plan's order, as the coordinator counts acknowledgements.
    index: usize,
    attempt: u32,
    core: SubtaskCore,
    master: Addr<JobMaster>,
    wiring: Option<WireSubtask>,
    source_idle_pause: Duration,
    processing_time_interval: Duration,
    started: bool,
    resume_scheduled: bool,
    /// Finished or failed: nothing more to do but wait for shutdown.
    done: bool,
    failed: bool,
    shutting_down: bool,
    /// Entered while the core runs operators: what they log names the subtask.
    span: tracing::Span,
    /// Marks the thread while the core runs operators: a panic there names the subtask.
    panic_label: Arc<str>,
}

impl SubtaskActor {
    pub(crate) fn new(
        (id, index, attempt): (SubtaskId, usize, u32),
        (core, name, panic_label): (SubtaskCore, &str, String),
        master: Addr<JobMaster>,
        config: &RuntimeConfig,
    ) -> Self {
        let span = tracing::info_span!("subtask", task = %name, index = id.index, attempt);
        SubtaskActor {
            id,
            index,
            attempt,
            core,
            master,
            wiring: None,
            source_idle_pause: config.source_idle_pause,
            processing_time_interval: config.processing_time_interval,
            started: false,
            resume_scheduled: false,
            done: false,
            failed: false,
            shutting_down: false,
            span,
            panic_label: Arc::from(panic_label),
        }
    }

    fn drive(&mut self, ctx: &mut Context<Self>) {
        let _in_subtask = (
            self.span.clone().entered(),
            InSubtask::enter(&self.panic_label),
        );
        if !self.started || self.done {
            // A finished core still returns credits for what reaches it.
            self.send_transmits();
            return;
        }
        for _ in 0..STEPS_PER_TURN_MAX {
            let step = self.core.step();
            self.send_transmits();
            match step {
                Ok(Step::Progress) => continue,
                Ok(Step::Blocked) => return,
                Ok(Step::Idle) => {
                    self.schedule_resume(ctx, Some(self.source_idle_pause));
                    return;
                }
                Ok(Step::Finished) => {
                    self.done = true;
                    self.master.do_send(SubtaskFinished {
                        attempt: self.attempt,
                        subtask: self.id,
                    });
                    return;
                }
                Err(error) => {
                    self.fail(error);
                    return;
                }
            }
        }
        self.schedule_resume(ctx, None);
    }

    /// Passes the wall clock to the core as its processing time, and sends what its operators
    /// emit then.
    fn advance_processing_time(&mut self) {
        if self.done {
            return;
        }
        let _in_subtask = (
            self.span.clone().entered(),
            InSubtask::enter(&self.panic_label),
        );
        match self.core.advance_processing_time(wall_clock_now()) {
            Ok(()) => self.send_transmits(),
            Err(error) => self.fail(error),
        }
    }

    /// Reports a failure; the subtask does nothing more until shutdown.
    fn fail(&mut self, error: TaskError) {
        self.done = true;
        self.failed = true;
        self.master.do_send(TaskFailed {
            attempt: self.attempt,
            subtask: self.id,
            error,
        });
    }

    fn schedule_resume(&mut self, ctx: &mut Context<Self>, after: Option<Duration>) {
        if self.resume_scheduled {
            return;
        }
        self.resume_scheduled = true;
        match after {
            Some(pause) => {
                ctx.notify_later(Resume, pause);
            }
            None => ctx.notify(Resume),
        }
    }

    fn send_transmits(&mut self) {
        let Some(wiring) = &self.wiring else {
            return;
        };
        while let Some(transmit) = self.core.poll_transmit() {
            match transmit {
                SubtaskTransmit::Batch { output, batch } => {
                    wiring.outputs[output].do_send(PartitionBatch(batch))
                }
                SubtaskTransmit::Credit { input, credits } => {
                    let (sender, target) = &wiring.inputs[input];
                    sender.do_send(TargetCredit {
                        target: *target,
                        credits,
                    });
                }
                SubtaskTransmit::Snapshot {
                    checkpoint,
                    snapshot,
                } => {
                    let coordinator = wiring.coordinator.clone();
                    let subtask = self.index;
                    if snapshot.is_deferred() {
                        // Frozen external tables take a while to read: off this thread, so
                        // the subtask processes on meanwhile.
                        tokio::task::spawn_blocking(move || {
                            acknowledge(&coordinator, subtask, checkpoint, snapshot);
                        });
                    } else {
                        acknowledge(&coordinator, subtask, checkpoint, snapshot);
                    }
                }
                SubtaskTransmit::Declined { checkpoint, reason } => {
                    wiring.coordinator.do_send(Decline { checkpoint, reason });
                }
                SubtaskTransmit::Ended => wiring.coordinator.do_send(SubtaskEnded {
                    subtask: self.index,
                }),
            }
        }
    }
}

/// The wall clock in milliseconds since the Unix epoch: the runtime's processing time. A clock
/// set before 1970 reads as the epoch.
fn wall_clock_now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

/// Completes a subtask's snapshot and acknowledges it, or declines the checkpoint if its state
/// cannot be read.
fn acknowledge(
    coordinator: &Addr<CoordinatorActor>,
    subtask: usize,
    checkpoint: CheckpointId,
    mut snapshot: SubtaskSnapshot,
) {
    // Encoding runs user types' `Serialize`: a panic there declines the checkpoint instead of
    // leaving it to time out.
    let completed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| snapshot.complete()))
        .unwrap_or_else(|_| {
            Err(StateError::Encode {
                table: "*".to_owned(),
                reason: "encoding panicked".to_owned(),
            })
        });
    match completed {
        Ok(()) => coordinator.do_send(Acknowledge {
            checkpoint,
            subtask,
            snapshot,
        }),
        Err(error) => {
            warn!(%error, %checkpoint, subtask, "cannot snapshot the subtask's state");
            coordinator.do_send(Decline {
                checkpoint,
                reason: DeclineReason::SnapshotFailed,
            });
        }
    }
}

impl Actor for SubtaskActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if !self.shutting_down {
            self.master.do_send(ActorLost {
                attempt: self.attempt,
                subtask: self.id,
                what: "subtask",
            });
        }
    }
}

impl Handler<WireSubtask> for SubtaskActor {
    type Result = ();

    fn handle(&mut self, wiring: WireSubtask, _ctx: &mut Context<Self>) {
        self.wiring = Some(wiring);
    }
}

impl Handler<Start> for SubtaskActor {
    type Result = ();

    fn handle(&mut self, _: Start, ctx: &mut Context<Self>) {
        if self.started {
            return;
        }
        self.started = true;
        self.advance_processing_time();
        ctx.run_interval(self.processing_time_interval, |actor, _ctx| {
            actor.advance_processing_time();
        });
        self.drive(ctx);
    }
}

impl Handler<Resume> for SubtaskActor {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.resume_scheduled = false;
        self.drive(ctx);
    }
}

impl Handler<DeliverBatch> for SubtaskActor {
    type Result = ();

    fn handle(&mut self, message: DeliverBatch, ctx: &mut Context<Self>) {
        self.core.handle_batch(message.channel, message.batch);
        self.drive(ctx);
    }
}

impl Handler<OutputCredit> for SubtaskActor {
    type Result = ();

    fn handle(&mut self, message: OutputCredit, ctx: &mut Context<Self>) {
        self.core.handle_credit(message.output, message.credits);
        self.send_transmits();
        self.drive(ctx);
    }
}

impl Handler<TriggerCheckpoint> for SubtaskActor {
    type Result = ();

    fn handle(
        &mut self,
        TriggerCheckpoint(checkpoint): TriggerCheckpoint,
        ctx: &mut Context<Self>,
    ) {
        // A finished subtask still answers: its core declines the checkpoint.
        if self.failed {
            return;
        }
        let _in_subtask = InSubtask::enter(&self.panic_label);
        let triggered = self
            .span
            .in_scope(|| self.core.trigger_checkpoint(checkpoint));
        if let Err(error) = triggered {
            self.fail(error);
            return;
        }
        self.send_transmits();
        self.drive(ctx);
    }
}

impl Handler<NotifyCheckpointComplete> for SubtaskActor {
    type Result = ();

    fn handle(&mut self, notice: NotifyCheckpointComplete, ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        let _in_subtask = InSubtask::enter(&self.panic_label);
        let notified = self.span.in_scope(|| {
            self.core
                .notify_checkpoint_complete(notice.checkpoint, notice.last)
        });
        if let Err(error) = notified {
            self.fail(error);
            return;
        }
        self.drive(ctx);
    }
}

impl Handler<Shutdown> for SubtaskActor {
    type Result = ();

    fn handle(&mut self, shutdown: Shutdown, ctx: &mut Context<Self>) {
        self.shutting_down = true;
        ctx.stop();
        if let Some(stopped) = shutdown.stopped {
            let _ = stopped.send(());
        }
    }
}

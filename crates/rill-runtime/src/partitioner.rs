//! The partitioner actor: drives one [`PartitionerCore`] for a (subtask, output edge) pair.

use actix::{Actor, ActorContext, Addr, Context, Handler};
use rill_core::partitioner::{PartitionerCore, PartitionerTransmit};
use rill_core::plan::SubtaskId;

use crate::master::JobMaster;
use crate::messages::{
    ActorLost, DeliverBatch, OutputCredit, PartitionBatch, Shutdown, TargetCredit, TaskFailed,
    WirePartitioner,
};

pub(crate) struct PartitionerActor {
    upstream_id: SubtaskId,
    attempt: u32,
    output: usize,
    core: PartitionerCore,
    master: Addr<JobMaster>,
    wiring: Option<WirePartitioner>,
    failed: bool,
    shutting_down: bool,
}

impl PartitionerActor {
    pub(crate) fn new(
        (upstream_id, output, attempt): (SubtaskId, usize, u32),
        core: PartitionerCore,
        master: Addr<JobMaster>,
    ) -> Self {
        PartitionerActor {
            upstream_id,
            attempt,
            output,
            core,
            master,
            wiring: None,
            failed: false,
            shutting_down: false,
        }
    }

    fn send_transmits(&mut self) {
        let Some(wiring) = &self.wiring else {
            return;
        };
        while let Some(transmit) = self.core.poll_transmit() {
            match transmit {
                PartitionerTransmit::Batch { target, batch } => {
                    let (subtask, channel) = &wiring.targets[target];
                    subtask.do_send(DeliverBatch {
                        channel: *channel,
                        batch,
                    });
                }
                PartitionerTransmit::UpstreamCredit(credits) => {
                    wiring.upstream.do_send(OutputCredit {
                        output: self.output,
                        credits,
                    })
                }
            }
        }
    }
}

impl Actor for PartitionerActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if !self.shutting_down {
            self.master.do_send(ActorLost {
                attempt: self.attempt,
                subtask: self.upstream_id,
                what: "partitioner",
            });
        }
    }
}

impl Handler<WirePartitioner> for PartitionerActor {
    type Result = ();

    fn handle(&mut self, wiring: WirePartitioner, _ctx: &mut Context<Self>) {
        self.wiring = Some(wiring);
        self.send_transmits();
    }
}

impl Handler<PartitionBatch> for PartitionerActor {
    type Result = ();

    fn handle(&mut self, PartitionBatch(batch): PartitionBatch, _ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        if let Err(error) = self.core.handle_batch(batch) {
            self.failed = true;
            self.master.do_send(TaskFailed {
                attempt: self.attempt,
                subtask: self.upstream_id,
                error,
            });
            return;
        }
        self.send_transmits();
    }
}

impl Handler<TargetCredit> for PartitionerActor {
    type Result = ();

    fn handle(&mut self, message: TargetCredit, _ctx: &mut Context<Self>) {
        self.core.handle_credit(message.target, message.credits);
        self.send_transmits();
    }
}

impl Handler<Shutdown> for PartitionerActor {
    type Result = ();

    fn handle(&mut self, shutdown: Shutdown, ctx: &mut Context<Self>) {
        self.shutting_down = true;
        ctx.stop();
        if let Some(stopped) = shutdown.stopped {
            let _ = stopped.send(());
        }
    }
}

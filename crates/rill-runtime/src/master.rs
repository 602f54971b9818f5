//! The job master actor: deploys a physical plan over the arbiters, wires the actors, watches
//! them, and ends the job — with success once every subtask has finished, or with the first
//! failure, a cancel, or a lost actor. Ending always stops every actor of the job.

use std::time::Instant;

use actix::dev::ArbiterHandle;
use actix::{Actor, ActorContext, Addr, Context, Handler};
use rill_core::coordinator::CheckpointMetadata;
use rill_core::graph::{JobGraph, OperatorKind};
use rill_core::plan::{ChannelTarget, PhysicalPlan, SubtaskId};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::coordinator::CoordinatorActor;
use crate::job::{JobError, JobReport};
use crate::messages::{
    ActorLost, Cancel, CheckpointCompleted, CheckpointingFailed, Shutdown, Start, SubtaskFinished,
    TaskFailed, WirePartitioner, WireSubtask,
};
use crate::partitioner::PartitionerActor;
use crate::runtime::RuntimeConfig;
use crate::subtask::SubtaskActor;

pub(crate) struct JobMaster {
    graph: JobGraph,
    plan: PhysicalPlan,
    arbiters: Vec<ArbiterHandle>,
    config: RuntimeConfig,
    outcome: Option<oneshot::Sender<Result<JobReport, JobError>>>,
    subtasks: Vec<(SubtaskId, Addr<SubtaskActor>)>,
    partitioners: Vec<Addr<PartitionerActor>>,
    coordinator: Option<Addr<CoordinatorActor>>,
    finished: Vec<bool>,
    unfinished: usize,
    started_at: Instant,
    checkpoints_completed: u64,
    latest_checkpoint: Option<CheckpointMetadata>,
}

impl JobMaster {
    pub(crate) fn new(
        graph: JobGraph,
        plan: PhysicalPlan,
        arbiters: Vec<ArbiterHandle>,
        config: RuntimeConfig,
        outcome: oneshot::Sender<Result<JobReport, JobError>>,
    ) -> Self {
        JobMaster {
            graph,
            plan,
            arbiters,
            config,
            outcome: Some(outcome),
            subtasks: Vec::new(),
            partitioners: Vec::new(),
            coordinator: None,
            finished: Vec::new(),
            unfinished: 0,
            started_at: Instant::now(),
            checkpoints_completed: 0,
            latest_checkpoint: None,
        }
    }

    /// Starts every actor, wires them, then starts them: wiring messages are all sent before
    /// any `Start`, so no batch can reach an actor before its wiring does.
    fn deploy(&mut self, me: Addr<JobMaster>) {
        let flow = self.config.flow;
        let ids: Vec<SubtaskId> = self.plan.subtasks().collect();
        let mut partitioners_of: Vec<Vec<(Addr<PartitionerActor>, Vec<ChannelTarget>)>> =
            Vec::new();
        for (position, &id) in ids.iter().enumerate() {
            // Round-robin over all subtasks, so that the stages of a pipeline land on different
            // threads; a partitioner shares its upstream subtask's thread.
            let arbiter = &self.arbiters[position % self.arbiters.len()];
            let core = self
                .plan
                .build_subtask(&self.graph, id, flow, self.graph.checkpoint.mode);
            let (master, pause) = (me.clone(), self.config.source_idle_pause);
            let addr = SubtaskActor::start_in_arbiter(arbiter, move |_| {
                SubtaskActor::new(id, position, core, master, pause)
            });
            self.subtasks.push((id, addr));
            let outputs = (0..self.plan.chain(id.chain).outputs.len())
                .map(|output| {
                    let (core, targets) =
                        self.plan.build_partitioner(&self.graph, id, output, flow);
                    let master = me.clone();
                    let addr = PartitionerActor::start_in_arbiter(arbiter, move |_| {
                        PartitionerActor::new(id, output, core, master)
                    });
                    (addr, targets)
                })
                .collect();
            partitioners_of.push(outputs);
        }
        let subtask_addr = |id: SubtaskId| {
            let position = ids
                .iter()
                .position(|&other| other == id)
                .expect("the plan names its own subtasks");
            self.subtasks[position].1.clone()
        };
        for (position, outputs) in partitioners_of.iter().enumerate() {
            for (partitioner, targets) in outputs {
                partitioner.do_send(WirePartitioner {
                    upstream: self.subtasks[position].1.clone(),
                    targets: targets
                        .iter()
                        .map(|t| (subtask_addr(t.subtask), t.channel))
                        .collect(),
                });
                self.partitioners.push(partitioner.clone());
            }
        }
        let sources = self
            .subtasks
            .iter()
            .filter(|(id, _)| self.is_source(*id))
            .map(|(_, addr)| addr.clone())
            .collect();
        let coordinator =
            CoordinatorActor::new(self.graph.checkpoint, ids.len(), sources, me.clone()).start();
        self.coordinator = Some(coordinator.clone());
        for (position, &id) in ids.iter().enumerate() {
            let inputs = self
                .plan
                .channel_senders(id)
                .into_iter()
                .map(|sender| {
                    let upstream = ids
                        .iter()
                        .position(|&other| other == sender.upstream)
                        .expect("the plan names its own subtasks");
                    (
                        partitioners_of[upstream][sender.output].0.clone(),
                        sender.target,
                    )
                })
                .collect();
            let outputs = partitioners_of[position]
                .iter()
                .map(|(addr, _)| addr.clone())
                .collect();
            self.subtasks[position].1.do_send(WireSubtask {
                outputs,
                inputs,
                coordinator: coordinator.clone(),
            });
        }
        self.finished = vec![false; ids.len()];
        self.unfinished = ids.len();
        self.started_at = Instant::now();
        for (_, addr) in &self.subtasks {
            addr.do_send(Start);
        }
        info!(job = %self.graph.name, subtasks = ids.len(), partitioners = self.partitioners.len(), "job deployed");
    }

    fn is_source(&self, id: SubtaskId) -> bool {
        let head = self.plan.chain(id.chain).operators[0];
        matches!(self.graph.operator(head).kind, OperatorKind::Source(_))
    }

    fn position(&self, id: SubtaskId) -> Option<usize> {
        self.subtasks.iter().position(|(other, _)| *other == id)
    }

    fn chain_name(&self, id: SubtaskId) -> String {
        self.plan.chain(id.chain).name.clone()
    }

    /// Ends the job once: reports the outcome and stops every actor.
    fn end(&mut self, outcome: Result<JobReport, JobError>) {
        let Some(sender) = self.outcome.take() else {
            return;
        };
        match &outcome {
            Ok(report) => {
                info!(job = %report.job, elapsed_ms = report.elapsed.as_millis() as u64, "job finished")
            }
            Err(error) => warn!(%error, "job ended"),
        }
        for (_, addr) in &self.subtasks {
            addr.do_send(Shutdown);
        }
        for addr in &self.partitioners {
            addr.do_send(Shutdown);
        }
        if let Some(coordinator) = &self.coordinator {
            coordinator.do_send(Shutdown);
        }
        // The application may have dropped its handle; the job ends all the same.
        let _ = sender.send(outcome);
    }
}

impl Actor for JobMaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        use actix::AsyncContext;
        let me = ctx.address();
        let deployed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.deploy(me)));
        if let Err(payload) = deployed {
            let reason = rill_core::OperatorError::from_panic(payload).to_string();
            self.end(Err(JobError::Deploy {
                job: self.graph.name.clone(),
                reason,
            }));
        }
        if self.outcome.is_none() {
            ctx.stop();
        }
    }
}

impl Handler<SubtaskFinished> for JobMaster {
    type Result = ();

    fn handle(&mut self, SubtaskFinished(id): SubtaskFinished, ctx: &mut Context<Self>) {
        let Some(position) = self.position(id) else {
            return;
        };
        if std::mem::replace(&mut self.finished[position], true) {
            return;
        }
        self.unfinished -= 1;
        debug!(chain = %self.chain_name(id), subtask = id.index, "subtask finished");
        if self.unfinished == 0 {
            self.end(Ok(JobReport {
                job: self.graph.name.clone(),
                subtasks: self.subtasks.len(),
                elapsed: self.started_at.elapsed(),
                checkpoints_completed: self.checkpoints_completed,
                latest_checkpoint: self.latest_checkpoint.clone(),
            }));
            ctx.stop();
        }
    }
}

impl Handler<TaskFailed> for JobMaster {
    type Result = ();

    fn handle(&mut self, failure: TaskFailed, ctx: &mut Context<Self>) {
        let id = failure.subtask;
        self.end(Err(JobError::TaskFailed {
            job: self.graph.name.clone(),
            chain: self.chain_name(id),
            subtask: id.index,
            parallelism: self.plan.chain(id.chain).parallelism,
            error: failure.error,
        }));
        ctx.stop();
    }
}

impl Handler<ActorLost> for JobMaster {
    type Result = ();

    fn handle(&mut self, lost: ActorLost, ctx: &mut Context<Self>) {
        self.end(Err(JobError::ActorLost {
            job: self.graph.name.clone(),
            chain: self.chain_name(lost.subtask),
            subtask: lost.subtask.index,
            what: lost.what,
        }));
        ctx.stop();
    }
}

impl Handler<Cancel> for JobMaster {
    type Result = ();

    fn handle(&mut self, _: Cancel, ctx: &mut Context<Self>) {
        self.end(Err(JobError::Cancelled(self.graph.name.clone())));
        ctx.stop();
    }
}

impl Handler<CheckpointCompleted> for JobMaster {
    type Result = ();

    fn handle(
        &mut self,
        CheckpointCompleted(metadata): CheckpointCompleted,
        _ctx: &mut Context<Self>,
    ) {
        self.checkpoints_completed += 1;
        self.latest_checkpoint = Some(metadata);
    }
}

impl Handler<CheckpointingFailed> for JobMaster {
    type Result = ();

    fn handle(
        &mut self,
        CheckpointingFailed(reason): CheckpointingFailed,
        ctx: &mut Context<Self>,
    ) {
        self.end(Err(JobError::Checkpointing {
            job: self.graph.name.clone(),
            reason,
        }));
        ctx.stop();
    }
}

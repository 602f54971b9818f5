//! The job master actor: deploys a physical plan over the arbiters, wires the actors, watches
//! them, and ends the job — with success once every subtask has finished, or with the first
//! failure, a cancel, or a lost actor. Ending always stops every actor of the job.

use std::time::Instant;

use actix::dev::ArbiterHandle;
use actix::{Actor, ActorContext, Addr, Context, Handler};
use rill_core::graph::JobGraph;
use rill_core::plan::{ChannelTarget, PhysicalPlan, SubtaskId};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::job::{JobError, JobReport};
use crate::messages::{
    ActorLost, Cancel, Shutdown, Start, SubtaskFinished, TaskFailed, WirePartitioner, WireSubtask,
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
    finished: Vec<bool>,
    unfinished: usize,
    started_at: Instant,
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
            finished: Vec::new(),
            unfinished: 0,
            started_at: Instant::now(),
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
            let core = self.plan.build_subtask(&self.graph, id, flow);
            let (master, pause) = (me.clone(), self.config.source_idle_pause);
            let addr = SubtaskActor::start_in_arbiter(arbiter, move |_| {
                SubtaskActor::new(id, core, master, pause)
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
            self.subtasks[position]
                .1
                .do_send(WireSubtask { outputs, inputs });
        }
        self.finished = vec![false; ids.len()];
        self.unfinished = ids.len();
        self.started_at = Instant::now();
        for (_, addr) in &self.subtasks {
            addr.do_send(Start);
        }
        info!(job = %self.graph.name, subtasks = ids.len(), partitioners = self.partitioners.len(), "job deployed");
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

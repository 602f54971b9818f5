//! The job master actor: deploys a physical plan over the arbiters, wires the actors, watches
//! them, and ends the job — with success once every subtask has finished, or with a failure, a
//! cancel, or a lost actor. Ending always stops every actor of the job.
//!
//! On a failure the job's restart strategy decides: the master stops every actor of the
//! current attempt and, after the strategy's delay, deploys a new attempt whose subtasks are
//! restored from the latest completed checkpoint (or start afresh if there is none). Messages
//! from a stopped attempt are recognised by their attempt number and ignored. A job submitted
//! with a checkpoint store holding checkpoints of a job of the same name starts from the
//! newest of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::ArbiterHandle;
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, WrapFuture,
};
use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_core::coordinator::CheckpointMetadata;
use rill_core::graph::{JobGraph, OperatorKind};
use rill_core::layout::{AttemptStart, start_attempt};
use rill_core::plan::{ChannelTarget, PhysicalPlan, SubtaskId};
use rill_store::{CheckpointStore, RestorePoint};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::coordinator::CoordinatorActor;
use crate::job::{JobError, JobReport};
use crate::messages::{
    ActorLost, Cancel, CheckpointCompleted, CheckpointingFailed, RequestSavepoint, SavepointFailed,
    Shutdown, Start, StopCoordinator, SubtaskFinished, TaskFailed, TriggerSavepoint,
    WirePartitioner, WireSubtask,
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
    /// Every subtask's part of the latest completed checkpoint, by index: what a restart
    /// restores.
    latest_snapshots: Option<Arc<BTreeMap<usize, SubtaskSnapshot>>>,
    /// 0 for the first deployment, one more per restart.
    attempt: u32,
    store: Option<CheckpointStore>,
    /// Who waits for the next savepoint, and whether they want the job stopped after it.
    savepoint_waiters: Vec<SavepointWaiter>,
}

struct SavepointWaiter {
    stop: bool,
    reply: oneshot::Sender<Result<CheckpointMetadata, JobError>>,
}

impl JobMaster {
    pub(crate) fn new(
        (graph, plan): (JobGraph, PhysicalPlan),
        (arbiters, config): (Vec<ArbiterHandle>, RuntimeConfig),
        (store, resume_from): (Option<CheckpointStore>, Option<RestorePoint>),
        outcome: oneshot::Sender<Result<JobReport, JobError>>,
    ) -> Self {
        let (latest_checkpoint, latest_snapshots) = match resume_from {
            Some(point) => (Some(point.metadata), Some(Arc::new(point.snapshots))),
            None => (None, None),
        };
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
            latest_checkpoint,
            latest_snapshots,
            attempt: 0,
            store,
            savepoint_waiters: Vec::new(),
        }
    }

    /// Starts every actor, wires them, then starts them: wiring messages are all sent before
    /// any `Start`, so no batch can reach an actor before its wiring does.
    fn deploy(&mut self, me: Addr<JobMaster>) -> Result<(), JobError> {
        let attempt = self.attempt;
        let flow = self.config.flow;
        let ids: Vec<SubtaskId> = self.plan.subtasks().collect();
        let mut partitioners_of: Vec<Vec<(Addr<PartitionerActor>, Vec<ChannelTarget>)>> =
            Vec::new();
        let layout = self.plan.layout(&self.graph);
        let store_next = match &self.store {
            Some(store) => Some(store.next_id(&self.graph.name).map_err(|error| {
                JobError::CheckpointStore {
                    job: self.graph.name.clone(),
                    error,
                }
            })?),
            None => None,
        };
        let latest = self
            .latest_checkpoint
            .as_ref()
            .zip(self.latest_snapshots.as_deref());
        let AttemptStart {
            mut restored,
            first_checkpoint,
        } = start_attempt(latest, &layout, store_next).map_err(|error| JobError::Restore {
            job: self.graph.name.clone(),
            checkpoint: latest.map_or(CheckpointId(0), |(metadata, _)| metadata.checkpoint),
            error,
        })?;
        for (position, &id) in ids.iter().enumerate() {
            // Round-robin over all subtasks, so that the stages of a pipeline land on different
            // threads; a partitioner shares its upstream subtask's thread.
            let arbiter = &self.arbiters[position % self.arbiters.len()];
            let mut core = self.plan.build_subtask(&self.graph, id, flow);
            if let Some(snapshot) = restored.get_mut(position).and_then(Option::take) {
                core.restore(snapshot)
                    .map_err(|error| self.task_error(id, error))?;
            }
            let (master, config) = (me.clone(), self.config);
            let addr = SubtaskActor::start_in_arbiter(arbiter, move |_| {
                SubtaskActor::new((id, position, attempt), core, master, &config)
            });
            self.subtasks.push((id, addr));
            let outputs = (0..self.plan.chain(id.chain).outputs.len())
                .map(|output| {
                    let (core, targets) =
                        self.plan.build_partitioner(&self.graph, id, output, flow);
                    let master = me.clone();
                    let addr = PartitionerActor::start_in_arbiter(arbiter, move |_| {
                        PartitionerActor::new((id, output, attempt), core, master)
                    });
                    (addr, targets)
                })
                .collect();
            partitioners_of.push(outputs);
        }
        for (position, outputs) in partitioners_of.iter().enumerate() {
            for (partitioner, targets) in outputs {
                partitioner.do_send(WirePartitioner {
                    upstream: self.subtasks[position].1.clone(),
                    targets: targets
                        .iter()
                        .map(|t| {
                            (
                                self.subtasks[self.plan.position(t.subtask)].1.clone(),
                                t.channel,
                            )
                        })
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
        let coordinator = CoordinatorActor::new(
            (attempt, first_checkpoint),
            (self.graph.name.clone(), self.store.clone()),
            (self.graph.checkpoint, layout),
            self.subtasks.iter().map(|(_, addr)| addr.clone()).collect(),
            sources,
            me.clone(),
        )
        .start();
        if !self.savepoint_waiters.is_empty() {
            // Asked for before a restart: the new attempt takes it.
            coordinator.do_send(TriggerSavepoint);
        }
        self.coordinator = Some(coordinator.clone());
        for (position, &id) in ids.iter().enumerate() {
            let inputs = self
                .plan
                .channel_senders(id)
                .into_iter()
                .map(|sender| {
                    let upstream = self.plan.position(sender.upstream);
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
        for (_, addr) in &self.subtasks {
            addr.do_send(Start);
        }
        info!(job = %self.graph.name, attempt, subtasks = ids.len(), partitioners = self.partitioners.len(), "job deployed");
        Ok(())
    }

    /// Deploys the current attempt, turning a panic in user code that builds operators into a
    /// deployment error.
    fn deploy_or_end(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let deployed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.deploy(me)))
            .unwrap_or_else(|payload| {
                Err(JobError::Deploy {
                    job: self.graph.name.clone(),
                    reason: rill_core::OperatorError::from_panic(payload).to_string(),
                })
            });
        if let Err(error) = deployed {
            self.end(Err(error));
            ctx.stop();
        }
    }

    fn task_error(&self, id: SubtaskId, error: rill_core::TaskError) -> JobError {
        JobError::TaskFailed {
            job: self.graph.name.clone(),
            chain: self.chain_name(id),
            subtask: id.index,
            parallelism: self.plan.chain(id.chain).parallelism,
            error,
        }
    }

    /// Stops every actor of the current attempt.
    fn stop_attempt(&mut self) {
        for (_, addr) in self.subtasks.drain(..) {
            addr.do_send(Shutdown::default());
        }
        for addr in self.partitioners.drain(..) {
            addr.do_send(Shutdown::default());
        }
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.do_send(Shutdown::default());
        }
    }

    /// A failure: restart from the latest completed checkpoint if the strategy allows, or end
    /// the job with the error.
    ///
    /// The new attempt is deployed only once the old one has stopped: its coordinator, which
    /// hands back the newest checkpoint it completed (sinks may have committed it before the
    /// master heard of it: restoring an older one would commit its records twice), and every
    /// subtask and partitioner (a sink still running could write into the transactions the new
    /// attempt's sink is about to reuse). The stops are sent with `do_send`, so they are
    /// delivered whatever happens to the master meanwhile. If an actor has not stopped within
    /// the runtime's `attempt_stop_timeout` (stuck in user code), the job ends instead of
    /// restarting.
    fn fail(&mut self, error: JobError, ctx: &mut Context<Self>) {
        let restarts = self.attempt + 1;
        let Some(delay_ms) = self.graph.restart.delay_before(restarts) else {
            self.end(Err(error));
            ctx.stop();
            return;
        };
        warn!(%error, restart = restarts, delay_ms, "restarting the job");
        self.attempt = restarts;
        let (reply, latest) = oneshot::channel();
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.do_send(StopCoordinator { reply });
        }
        let mut stopped = Vec::new();
        let mut stop = |send: &dyn Fn(Shutdown)| {
            let (done, wait) = oneshot::channel();
            send(Shutdown {
                stopped: Some(done),
            });
            stopped.push(wait);
        };
        for (_, addr) in self.subtasks.drain(..) {
            stop(&|shutdown| addr.do_send(shutdown));
        }
        for addr in self.partitioners.drain(..) {
            stop(&|shutdown| addr.do_send(shutdown));
        }
        let stop_timeout = self.config.attempt_stop_timeout;
        let all_stopped = async move {
            let deadline = tokio::time::Instant::now() + stop_timeout;
            // An actor already gone dropped its sender: that counts as stopped.
            let latest = tokio::time::timeout_at(deadline, latest)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            let mut all_stopped = true;
            for wait in stopped {
                all_stopped &= tokio::time::timeout_at(deadline, wait).await.is_ok();
            }
            (latest, all_stopped)
        };
        ctx.spawn(
            all_stopped
                .into_actor(self)
                .map(move |(latest, all_stopped), master, ctx| {
                    if let Some(completed) = latest {
                        master.adopt_completed(completed, ctx);
                    }
                    if master.outcome.is_none() {
                        return;
                    }
                    if !all_stopped {
                        master.end(Err(JobError::AttemptDidNotStop {
                            job: master.graph.name.clone(),
                            waited_ms: stop_timeout.as_millis() as u64,
                            error: Box::new(error),
                        }));
                        ctx.stop();
                        return;
                    }
                    info!(from = ?master.latest_checkpoint.as_ref().map(|c| c.checkpoint), "the failed attempt stopped");
                    ctx.run_later(Duration::from_millis(delay_ms), |master, ctx| {
                        if master.outcome.is_some() {
                            master.deploy_or_end(ctx);
                        }
                    });
                }),
        );
    }

    /// A checkpoint completed: the next attempt restores from it, and who waits for a
    /// savepoint hears of it.
    fn adopt_completed(&mut self, completed: CheckpointCompleted, ctx: &mut Context<Self>) {
        if self
            .latest_checkpoint
            .as_ref()
            .is_some_and(|latest| latest.checkpoint >= completed.metadata.checkpoint)
        {
            return;
        }
        self.checkpoints_completed += 1;
        let savepoint = completed.metadata.savepoint;
        self.latest_checkpoint = Some(completed.metadata.clone());
        self.latest_snapshots = Some(completed.snapshots);
        if !savepoint {
            return;
        }
        info!(job = %self.graph.name, checkpoint = %completed.metadata.checkpoint, "savepoint complete");
        let mut stop = false;
        for waiter in self.savepoint_waiters.drain(..) {
            stop |= waiter.stop;
            let _ = waiter.reply.send(Ok(completed.metadata.clone()));
        }
        if stop {
            let report = self.report();
            self.end(Ok(report));
            ctx.stop();
        }
    }

    fn is_source(&self, id: SubtaskId) -> bool {
        let head = self.plan.chain(id.chain).operators[0];
        matches!(self.graph.operator(head).kind, OperatorKind::Source(_))
    }

    fn chain_name(&self, id: SubtaskId) -> String {
        self.plan.chain(id.chain).name.clone()
    }

    /// The report of a job that ends now.
    fn report(&self) -> JobReport {
        JobReport {
            job: self.graph.name.clone(),
            subtasks: self.subtasks.len(),
            elapsed: self.started_at.elapsed(),
            checkpoints_completed: self.checkpoints_completed,
            latest_checkpoint: self.latest_checkpoint.clone(),
            restarts: self.attempt,
        }
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
        self.stop_attempt();
        // The application may have dropped its handle; the job ends all the same.
        let _ = sender.send(outcome);
    }
}

impl Actor for JobMaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.deploy_or_end(ctx);
    }
}

impl Handler<SubtaskFinished> for JobMaster {
    type Result = ();

    fn handle(&mut self, finished: SubtaskFinished, ctx: &mut Context<Self>) {
        let id = finished.subtask;
        if finished.attempt != self.attempt {
            return;
        }
        let position = self.plan.position(id);
        if std::mem::replace(&mut self.finished[position], true) {
            return;
        }
        self.unfinished -= 1;
        debug!(chain = %self.chain_name(id), subtask = id.index, "subtask finished");
        if self.unfinished == 0 {
            let report = self.report();
            self.end(Ok(report));
            ctx.stop();
        }
    }
}

impl Handler<TaskFailed> for JobMaster {
    type Result = ();

    fn handle(&mut self, failure: TaskFailed, ctx: &mut Context<Self>) {
        if failure.attempt != self.attempt {
            return;
        }
        let error = self.task_error(failure.subtask, failure.error);
        self.fail(error, ctx);
    }
}

impl Handler<ActorLost> for JobMaster {
    type Result = ();

    fn handle(&mut self, lost: ActorLost, ctx: &mut Context<Self>) {
        if lost.attempt != self.attempt {
            return;
        }
        let error = JobError::ActorLost {
            job: self.graph.name.clone(),
            chain: self.chain_name(lost.subtask),
            subtask: lost.subtask.index,
            what: lost.what,
        };
        self.fail(error, ctx);
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

    fn handle(&mut self, completed: CheckpointCompleted, ctx: &mut Context<Self>) {
        if completed.attempt != self.attempt {
            // A failed attempt's: its coordinator hands its newest one back when it stops.
            return;
        }
        self.adopt_completed(completed, ctx);
    }
}

impl Handler<RequestSavepoint> for JobMaster {
    type Result = ();

    fn handle(&mut self, request: RequestSavepoint, _ctx: &mut Context<Self>) {
        if self.outcome.is_none() {
            return;
        }
        if self.savepoint_waiters.is_empty()
            && let Some(coordinator) = &self.coordinator
        {
            coordinator.do_send(TriggerSavepoint);
        }
        self.savepoint_waiters.push(SavepointWaiter {
            stop: request.stop,
            reply: request.reply,
        });
    }
}

impl Handler<SavepointFailed> for JobMaster {
    type Result = ();

    fn handle(&mut self, failed: SavepointFailed, _ctx: &mut Context<Self>) {
        if failed.attempt != self.attempt {
            return;
        }
        for waiter in self.savepoint_waiters.drain(..) {
            let _ = waiter.reply.send(Err(JobError::Savepoint {
                job: self.graph.name.clone(),
                reason: failed.reason.clone(),
            }));
        }
    }
}

impl Handler<CheckpointingFailed> for JobMaster {
    type Result = ();

    fn handle(&mut self, failed: CheckpointingFailed, ctx: &mut Context<Self>) {
        if failed.attempt != self.attempt {
            return;
        }
        let error = JobError::Checkpointing {
            job: self.graph.name.clone(),
            reason: failed.reason,
        };
        self.fail(error, ctx);
    }
}

//! The job master actor: deploys a physical plan over the arbiters, wires the actors, watches
//! them, and ends the job — with success once every subtask has finished, or with a failure, a
//! cancel, or a lost actor. Ending always stops every actor of the job.
//!
//! What happens when — attempts, fail-over, adopting the newest completed checkpoint,
//! savepoint waiters, the job's end — is decided by `rill-core`'s [`JobMasterCore`]; this actor
//! hands it what it hears and carries out its actions: deploying an attempt, stopping one and
//! waiting until every actor has stopped, timers, answers. Messages from a stopped attempt are
//! recognised by their attempt number. A job submitted with a checkpoint store holding
//! checkpoints of a job of the same name starts from the newest of them.

use std::time::{Duration, Instant};

use actix::dev::ArbiterHandle;
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, WrapFuture,
};
use rill_core::checkpoint::CheckpointId;
use rill_core::coordinator::{CheckpointMetadata, CompletedCheckpoint, RetainedCheckpoint};
use rill_core::graph::JobGraph;
use rill_core::job_master::{JobEnd, JobMasterCore, MasterAction};
use rill_core::layout::{AttemptStart, start_attempt};
use rill_core::plan::{PhysicalPlan, SubtaskId};
use rill_core::topology::Topology;
use rill_store::CheckpointStore;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::checkpoint_times::CheckpointTimer;
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

/// Who waits for a savepoint.
type SavepointReply = oneshot::Sender<Result<CheckpointMetadata, JobError>>;

pub(crate) struct JobMaster {
    graph: JobGraph,
    plan: PhysicalPlan,
    /// How the plan's subtasks are wired, as every driver wires them.
    topology: Topology,
    arbiters: Vec<ArbiterHandle>,
    config: RuntimeConfig,
    outcome: Option<oneshot::Sender<Result<JobReport, JobError>>>,
    /// Decides the job's lifecycle; this actor carries out what it asks.
    core: JobMasterCore<JobError, SavepointReply>,
    subtasks: Vec<(SubtaskId, Addr<SubtaskActor>)>,
    partitioners: Vec<Addr<PartitionerActor>>,
    coordinator: Option<Addr<CoordinatorActor>>,
    started_at: Instant,
    checkpoint_timer: CheckpointTimer,
    store: Option<CheckpointStore>,
}

impl JobMaster {
    pub(crate) fn new(
        (graph, plan): (JobGraph, PhysicalPlan),
        (arbiters, config): (Vec<ArbiterHandle>, RuntimeConfig),
        (store, resume_from): (Option<CheckpointStore>, Option<CompletedCheckpoint>),
        outcome: oneshot::Sender<Result<JobReport, JobError>>,
    ) -> Self {
        let topology = Topology::new(&plan, &graph);
        let resume_from = resume_from.map(RetainedCheckpoint::InMemory);
        let core = JobMasterCore::new(graph.restart, topology.len(), resume_from);
        let started_at = Instant::now();
        JobMaster {
            graph,
            plan,
            topology,
            arbiters,
            config,
            outcome: Some(outcome),
            core,
            subtasks: Vec::new(),
            partitioners: Vec::new(),
            coordinator: None,
            started_at,
            checkpoint_timer: CheckpointTimer::new(started_at),
            store,
        }
    }

    /// Carries out what the core asks, in order.
    fn perform_actions(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.core.poll_action() {
            match action {
                MasterAction::Deploy { attempt, from } => self.deploy_or_fail(attempt, from, ctx),
                MasterAction::TriggerSavepoint => {
                    if let Some(coordinator) = &self.coordinator {
                        coordinator.do_send(TriggerSavepoint);
                    }
                }
                MasterAction::StopAttempt { attempt } => self.stop_and_wait(attempt, ctx),
                MasterAction::ScheduleRestart { delay_ms } => {
                    info!(job = %self.graph.name, delay_ms, from = ?self.core.latest().map(RetainedCheckpoint::id), "the failed attempt stopped; restarting");
                    ctx.run_later(Duration::from_millis(delay_ms), |master, ctx| {
                        master.core.handle_restart_due();
                        master.perform_actions(ctx);
                    });
                }
                MasterAction::AnswerSavepoint { waiter, result } => {
                    if let Ok(metadata) = &result {
                        info!(job = %self.graph.name, checkpoint = %metadata.checkpoint, "savepoint complete");
                    }
                    let job = self.graph.name.clone();
                    // The asker may have given up waiting.
                    let _ =
                        waiter.send(result.map_err(|reason| JobError::Savepoint { job, reason }));
                }
                MasterAction::End(end) => {
                    self.end(end);
                    ctx.stop();
                }
            }
        }
    }

    /// Starts every actor, wires them, then starts them: wiring messages are all sent before
    /// any `Start`, so no batch can reach an actor before its wiring does.
    fn deploy(
        &mut self,
        attempt: u32,
        from: Option<&CompletedCheckpoint>,
        me: Addr<JobMaster>,
    ) -> Result<(), JobError> {
        let flow = self.config.flow;
        let mut partitioners_of: Vec<Vec<Addr<PartitionerActor>>> = Vec::new();
        let layout = self.plan.layout(&self.graph);
        let store_error = |error| JobError::CheckpointStore {
            job: self.graph.name.clone(),
            error,
        };
        let (store_next, stored) = match &self.store {
            Some(store) => (
                Some(store.next_id(&self.graph.name).map_err(store_error)?),
                store.retained(&self.graph.name).map_err(store_error)?,
            ),
            None => (None, Vec::new()),
        };
        let AttemptStart {
            mut restored,
            first_checkpoint,
        } = start_attempt(from, &layout, store_next).map_err(|error| JobError::Restore {
            job: self.graph.name.clone(),
            checkpoint: from.map_or(CheckpointId(0), CompletedCheckpoint::id),
            error,
        })?;
        for (position, wiring) in self.topology.subtasks.iter().enumerate() {
            let id = wiring.id;
            // Round-robin over all subtasks, so that the stages of a pipeline land on different
            // threads; a partitioner shares its upstream subtask's thread.
            let arbiter = &self.arbiters[position % self.arbiters.len()];
            let mut core = self.plan.build_subtask(&self.graph, id, flow);
            if let Some(snapshot) = restored.get_mut(position).and_then(Option::take) {
                core.restore(snapshot)
                    .map_err(|error| self.task_error(id, error))?;
            }
            let (master, config, name) = (me.clone(), self.config, self.chain_name(id));
            let label = format!(
                "job '{}', subtask {} of {} ({name}), attempt {attempt}",
                self.graph.name,
                id.index,
                self.plan.chain(id.chain).parallelism,
            );
            let addr = SubtaskActor::start_in_arbiter(arbiter, move |_| {
                SubtaskActor::new(
                    (id, position, attempt),
                    (core, &name, label),
                    master,
                    &config,
                )
            });
            self.subtasks.push((id, addr));
            let outputs = (0..wiring.outputs.len())
                .map(|output| {
                    let (core, _) = self.plan.build_partitioner(&self.graph, id, output, flow);
                    let master = me.clone();
                    PartitionerActor::start_in_arbiter(arbiter, move |_| {
                        PartitionerActor::new((id, output, attempt), core, master)
                    })
                })
                .collect();
            partitioners_of.push(outputs);
        }
        for (position, wiring) in self.topology.subtasks.iter().enumerate() {
            for (partitioner, targets) in partitioners_of[position].iter().zip(&wiring.outputs) {
                partitioner.do_send(WirePartitioner {
                    upstream: self.subtasks[position].1.clone(),
                    targets: targets
                        .iter()
                        .map(|&(downstream, channel)| {
                            (self.subtasks[downstream].1.clone(), channel)
                        })
                        .collect(),
                });
                self.partitioners.push(partitioner.clone());
            }
        }
        let sources = self
            .topology
            .subtasks
            .iter()
            .zip(&self.subtasks)
            .filter(|(wiring, _)| wiring.is_source)
            .map(|(_, (_, addr))| addr.clone())
            .collect();
        let coordinator = CoordinatorActor::new(
            (attempt, first_checkpoint, stored),
            (self.graph.name.clone(), self.store.clone()),
            (self.graph.checkpoint, layout),
            self.subtasks.iter().map(|(_, addr)| addr.clone()).collect(),
            sources,
            me.clone(),
        )
        .start();
        self.coordinator = Some(coordinator.clone());
        for (position, wiring) in self.topology.subtasks.iter().enumerate() {
            let inputs = wiring
                .inputs
                .iter()
                .map(|source| {
                    (
                        partitioners_of[source.upstream][source.output].clone(),
                        source.target,
                    )
                })
                .collect();
            self.subtasks[position].1.do_send(WireSubtask {
                outputs: partitioners_of[position].clone(),
                inputs,
                coordinator: coordinator.clone(),
            });
        }
        for (_, addr) in &self.subtasks {
            addr.do_send(Start);
        }
        info!(job = %self.graph.name, attempt, subtasks = self.topology.len(), partitioners = self.partitioners.len(), "job deployed");
        Ok(())
    }

    /// Deploys `attempt`, turning a panic in user code that builds operators into a
    /// deployment error; a deployment that fails ends the job.
    fn deploy_or_fail(
        &mut self,
        attempt: u32,
        from: Option<RetainedCheckpoint>,
        ctx: &mut Context<Self>,
    ) {
        let me = ctx.address();
        let deployed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let from = from.map(|retained| self.read_back(retained)).transpose()?;
            self.deploy(attempt, from.as_ref(), me)
        }))
        .unwrap_or_else(|payload| {
            Err(JobError::Deploy {
                job: self.graph.name.clone(),
                reason: rill_core::OperatorError::from_panic(payload).to_string(),
            })
        });
        if let Err(error) = deployed {
            self.core.handle_deploy_failed(error);
        }
    }

    /// The checkpoint to restore from, with its snapshots: read back from the checkpoint
    /// store unless the coordinator kept them in memory (a job without a store).
    fn read_back(&self, retained: RetainedCheckpoint) -> Result<CompletedCheckpoint, JobError> {
        let job = self.graph.name.clone();
        match (&self.store, retained) {
            (Some(store), retained) => store
                .read_back(&job, retained)
                .map_err(|error| JobError::CheckpointStore { job, error }),
            (None, RetainedCheckpoint::InMemory(completed)) => Ok(completed),
            (None, RetainedCheckpoint::Stored(metadata)) => Err(JobError::Deploy {
                job,
                reason: format!(
                    "{} has its snapshots in a checkpoint store, and the job has none",
                    metadata.checkpoint
                ),
            }),
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

    /// Sends every subtask and partitioner of the current attempt its stop; returns what tells
    /// when each has stopped (an actor already gone counts as stopped). The stops are sent with
    /// `do_send`, so they are delivered whatever happens to the master meanwhile, and each
    /// reaches its actor after everything sent to it before — a completion notice, say.
    fn stop_actors(&mut self) -> Vec<oneshot::Receiver<()>> {
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
        stopped
    }

    /// Whether every actor stopped before `deadline`.
    async fn all_stopped(
        stopped: Vec<oneshot::Receiver<()>>,
        deadline: tokio::time::Instant,
    ) -> bool {
        let mut all_stopped = true;
        for wait in stopped {
            all_stopped &= tokio::time::timeout_at(deadline, wait).await.is_ok();
        }
        all_stopped
    }

    /// Stops every actor of the failed `attempt` and waits until each has stopped — at most
    /// the runtime's `attempt_stop_timeout` — then tells the core, with the newest checkpoint
    /// the attempt's coordinator completed.
    fn stop_and_wait(&mut self, attempt: u32, ctx: &mut Context<Self>) {
        let (reply, latest) = oneshot::channel();
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.do_send(StopCoordinator { reply });
        }
        let stopped = self.stop_actors();
        let deadline = tokio::time::Instant::now() + self.config.attempt_stop_timeout;
        let all_stopped = async move {
            // An actor already gone dropped its sender: that counts as stopped.
            let latest = tokio::time::timeout_at(deadline, latest)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            (latest, Self::all_stopped(stopped, deadline).await)
        };
        debug!(job = %self.graph.name, attempt, "stopping the failed attempt");
        ctx.spawn(
            all_stopped
                .into_actor(self)
                .map(move |(latest, all_stopped), master, ctx| {
                    master.core.handle_attempt_stopped(latest, all_stopped);
                    master.perform_actions(ctx);
                }),
        );
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
            checkpoints_completed: self.core.checkpoints_completed(),
            latest_checkpoint: self.core.latest().map(|latest| latest.metadata().clone()),
            restarts: self.core.restarts(),
            checkpoint_times: self.checkpoint_timer.times(),
        }
    }

    /// Ends the job: stops every actor and, once each has stopped (at most the runtime's
    /// `attempt_stop_timeout`), reports the outcome — so that what the actors were told before
    /// is done when the application hears of the end: the sinks' commits of a savepoint the
    /// job stopped at, above all.
    fn end(&mut self, end: JobEnd<JobError>) {
        let outcome = match end {
            JobEnd::Finished | JobEnd::StoppedWithSavepoint(_) => Ok(self.report()),
            JobEnd::Failed(error) => Err(error),
            JobEnd::AttemptDidNotStop(error) => Err(JobError::AttemptDidNotStop {
                job: self.graph.name.clone(),
                waited_ms: self.config.attempt_stop_timeout.as_millis() as u64,
                error: Box::new(error),
            }),
            JobEnd::Cancelled => Err(JobError::Cancelled(self.graph.name.clone())),
        };
        match &outcome {
            Ok(report) => {
                info!(job = %report.job, elapsed_ms = report.elapsed.as_millis() as u64, "job finished")
            }
            Err(error @ JobError::Cancelled(_)) => info!(%error, "job ended"),
            Err(error) => warn!(%error, "job ended"),
        }
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.do_send(Shutdown::default());
        }
        let stopped = self.stop_actors();
        let deadline = tokio::time::Instant::now() + self.config.attempt_stop_timeout;
        let Some(sender) = self.outcome.take() else {
            return;
        };
        // Detached: the master itself stops now.
        actix::spawn(async move {
            if !Self::all_stopped(stopped, deadline).await {
                warn!("an actor had not stopped when the job ended");
            }
            // The application may have dropped its handle; the job ends all the same.
            let _ = sender.send(outcome);
        });
    }
}

impl Actor for JobMaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.core.start();
        self.perform_actions(ctx);
    }
}

impl Handler<SubtaskFinished> for JobMaster {
    type Result = ();

    fn handle(&mut self, finished: SubtaskFinished, ctx: &mut Context<Self>) {
        let id = finished.subtask;
        if finished.attempt == self.core.attempt() {
            debug!(chain = %self.chain_name(id), subtask = id.index, "subtask finished");
        }
        self.core
            .handle_subtask_finished(finished.attempt, self.plan.position(id));
        self.perform_actions(ctx);
    }
}

impl Handler<TaskFailed> for JobMaster {
    type Result = ();

    fn handle(&mut self, failure: TaskFailed, ctx: &mut Context<Self>) {
        let error = self.task_error(failure.subtask, failure.error);
        if failure.attempt == self.core.attempt() {
            warn!(%error, "a task failed");
        }
        self.core.handle_failure(failure.attempt, error);
        self.perform_actions(ctx);
    }
}

impl Handler<ActorLost> for JobMaster {
    type Result = ();

    fn handle(&mut self, lost: ActorLost, ctx: &mut Context<Self>) {
        let error = JobError::ActorLost {
            job: self.graph.name.clone(),
            chain: self.chain_name(lost.subtask),
            subtask: lost.subtask.index,
            what: lost.what,
        };
        self.core.handle_failure(lost.attempt, error);
        self.perform_actions(ctx);
    }
}

impl Handler<Cancel> for JobMaster {
    type Result = ();

    fn handle(&mut self, _: Cancel, ctx: &mut Context<Self>) {
        self.core.cancel();
        self.perform_actions(ctx);
    }
}

impl Handler<CheckpointCompleted> for JobMaster {
    type Result = ();

    fn handle(&mut self, completed: CheckpointCompleted, ctx: &mut Context<Self>) {
        if completed.attempt == self.core.attempt() {
            self.checkpoint_timer
                .completed(completed.checkpoint.metadata().triggered_at_ms);
        }
        self.core
            .handle_checkpoint_completed(completed.attempt, completed.checkpoint);
        self.perform_actions(ctx);
    }
}

impl Handler<RequestSavepoint> for JobMaster {
    type Result = ();

    fn handle(&mut self, request: RequestSavepoint, ctx: &mut Context<Self>) {
        self.core.request_savepoint(request.reply, request.stop);
        self.perform_actions(ctx);
    }
}

impl Handler<SavepointFailed> for JobMaster {
    type Result = ();

    fn handle(&mut self, failed: SavepointFailed, ctx: &mut Context<Self>) {
        self.core
            .handle_savepoint_failed(failed.attempt, &failed.reason);
        self.perform_actions(ctx);
    }
}

impl Handler<CheckpointingFailed> for JobMaster {
    type Result = ();

    fn handle(&mut self, failed: CheckpointingFailed, ctx: &mut Context<Self>) {
        let error = JobError::Checkpointing {
            job: self.graph.name.clone(),
            reason: failed.reason,
        };
        self.core.handle_failure(failed.attempt, error);
        self.perform_actions(ctx);
    }
}

//! Driving `rill-core`'s [`JobMasterCore`] as the runtime's job master actor does — deploying
//! the attempts it asks for, stopping a failed one, scheduling its restart — and submitting
//! the job again after a crash of its process, as `Runtime::submit_with_store` does.

use rill_core::coordinator::{CompletedCheckpoint, RetainedCheckpoint};
use rill_core::error::{OperatorError, TaskError};
use rill_core::job_master::{JobEnd, JobMasterCore, MasterAction};
use rill_core::layout::StateAssigner;
use rill_core::storage::Storage;
use rill_core::transactional::SinkRestoreError;
use rill_store::{Damage, StoreError};

use super::*;

impl World {
    /// Submits the job (again) with a new job master: it deletes what unfinished checkpoints
    /// left, and resumes from the newest completed checkpoint in the store.
    pub(super) fn submit(&mut self) {
        let resume_from = match self.store.latest(&self.shape.graph.name) {
            Ok(None) => None,
            Ok(Some(intact)) => match self.passed_over(&intact.skipped, intact.checkpoint.id()) {
                Ok(()) => Some(intact.checkpoint),
                Err(violation) => {
                    self.outcome = Some(Outcome::StorageViolated(violation));
                    return;
                }
            },
            Err(StoreError::NoIntactCheckpoint { damaged, .. })
                if damaged.iter().all(|damage| self.expects_damage(damage)) =>
            {
                let listed: Vec<String> = damaged.iter().map(ToString::to_string).collect();
                self.outcome = Some(Outcome::Refused(format!(
                    "no checkpoint is intact: {}",
                    listed.join("; ")
                )));
                return;
            }
            Err(error) => {
                self.outcome = Some(Outcome::StorageViolated(error.to_string()));
                return;
            }
        };
        let starts_from = resume_from.as_ref().map(CompletedCheckpoint::id);
        self.fall_back(starts_from);
        if let Err(error) = self.store.discard_leftovers(&self.shape.graph.name) {
            self.outcome = Some(Outcome::StorageViolated(error.to_string()));
            return;
        }
        // A damaged value the store deleted as a leftover is gone, and its checkpoint's id
        // free for the next one.
        let (job, disk) = (&self.shape.graph.name, &self.disk);
        self.damaged.retain(|&(checkpoint, value)| {
            let (space, key) = CheckpointStore::stored_at(job, checkpoint, value);
            disk.contains(space, &key).unwrap_or(true)
        });
        let resume_from = resume_from.map(RetainedCheckpoint::InMemory);
        let mut master =
            JobMasterCore::new(self.shape.graph.restart, self.shape.subtasks(), resume_from);
        if let Some(defect) = self.defect {
            master.plant_defect(defect);
        }
        master.start();
        self.master = Some(master);
        self.perform_master_actions();
    }

    /// Whether the store may find `damage`: a metadata write cut short (a crash while its
    /// checkpoint completed), or a value a fault damaged.
    fn expects_damage(&self, damage: &Damage) -> bool {
        damage.is_unfinished_metadata() || self.damaged.contains(&(damage.checkpoint, damage.value))
    }

    /// Checks what the store passed over to restore `restoring`, warning of it as the runtime
    /// does: only damage it may find, and none in the checkpoint it restores.
    fn passed_over(&mut self, skipped: &[Damage], restoring: CheckpointId) -> Result<(), String> {
        if let Some(damage) = skipped.iter().find(|damage| !self.expects_damage(damage)) {
            return Err(damage.to_string());
        }
        if let Some((_, value)) = self.damaged.iter().find(|(c, _)| *c == restoring) {
            return Err(format!(
                "the store restores {restoring}, though a fault damaged its {value:?}"
            ));
        }
        for damage in skipped {
            self.trace(13, [damage.checkpoint.0, restoring.0, 0], || {
                format!("warning: {damage}; restoring {restoring}")
            });
        }
        Ok(())
    }

    /// The job submitted starts from `starts_from` (a checkpoint, or none). Past a checkpoint
    /// a fault damaged, it falls back: the store may take such a checkpoint for one that never
    /// completed (a metadata value whose length was damaged reads as a write cut short), so
    /// any damaged checkpoint newer than where the job starts counts. Restores of them then no
    /// longer bind the accounting, and a sink that committed more must refuse to start
    /// ([`World::note_refusal`]).
    fn fall_back(&mut self, starts_from: Option<CheckpointId>) {
        self.starts_from = starts_from;
        self.fell_back = self
            .damaged
            .iter()
            .any(|(damaged, _)| starts_from.is_none_or(|start| *damaged > start));
        if self.fell_back {
            self.restores.fall_back_to(starts_from);
            self.stats.fallbacks += 1;
        }
    }

    /// Notes a subtask's failure to start (to restore, or to open) if it is the refusal a
    /// sink owes after a fall-back: a [`SinkRestoreError::Rewind`] naming where the job
    /// started and the sink's commit mark in the log, which is newer. The job then ends
    /// refused, not failed.
    pub(super) fn note_refusal(&mut self, error: &TaskError) {
        let OperatorError::Failed(failed) = &error.error else {
            return;
        };
        let Some(SinkRestoreError::Rewind {
            writer,
            committed,
            restoring: refused,
            ..
        }) = failed.downcast_ref::<SinkRestoreError>()
        else {
            return;
        };
        let marked = self.log.committed_checkpoint(writer).ok().flatten();
        let starts_from = self.starts_from.map(|start| start.0);
        if self.fell_back
            && *refused == starts_from
            && marked == Some(*committed)
            && starts_from.is_none_or(|start| *committed > start)
        {
            let refusal = error.to_string();
            self.trace(14, [*committed, starts_from.unwrap_or(0), 0], || {
                format!("refused, as it must be: {refusal}")
            });
            self.refusal = Some(refusal);
        }
    }

    /// Carries out what the job master asks, in order.
    pub(super) fn perform_master_actions(&mut self) {
        while let Some(action) = self.master.as_mut().and_then(JobMasterCore::poll_action) {
            match action {
                MasterAction::Deploy { attempt, from } => self.read_back_and_deploy(attempt, from),
                MasterAction::StopAttempt { attempt } => self.stop_attempt(attempt),
                MasterAction::ScheduleRestart { delay_ms } => {
                    self.redeploy = Some((
                        self.now_us + delay_ms.saturating_mul(1_000),
                        Redeploy::RestartDue,
                    ));
                }
                // The simulated jobs take no savepoints on request.
                MasterAction::TriggerSavepoint | MasterAction::AnswerSavepoint { .. } => {}
                MasterAction::End(end) => {
                    self.attempt = None;
                    self.outcome = Some(match end {
                        JobEnd::Finished | JobEnd::StoppedWithSavepoint(_) => Outcome::Finished,
                        JobEnd::Failed(error) => match self.refusal.take() {
                            Some(refusal) => Outcome::Refused(refusal),
                            None => Outcome::Failed(error),
                        },
                        JobEnd::AttemptDidNotStop(error) => {
                            Outcome::Failed(format!("the failed attempt did not stop: {error}"))
                        }
                        JobEnd::Cancelled => Outcome::Failed("cancelled".to_owned()),
                    });
                }
            }
        }
    }

    /// Deploys attempt `number`, restored from `from`, whose snapshots are read back from the
    /// checkpoint store (the coordinator let go of them once written), as the runtime's master
    /// does; a checkpoint that cannot be read back fails the deployment.
    fn read_back_and_deploy(&mut self, number: u32, from: Option<RetainedCheckpoint>) {
        let read_back = from.map(|retained| {
            let id = retained.id();
            self.store
                .read_back(&self.shape.graph.name, retained)
                .map_err(|error| format!("cannot read {id} back from the store: {error}"))
        });
        match read_back.transpose() {
            Ok(from) => self.deploy(number, from.as_ref()),
            Err(reason) => self.deploy_failed(reason),
        }
    }

    /// Deploys attempt `number`, restored from `from`.
    fn deploy(&mut self, number: u32, from: Option<&CompletedCheckpoint>) {
        let from_id = from.map(CompletedCheckpoint::id);
        let job = &self.shape.graph.name;
        let listed = self.store.next_id(job).and_then(|next_id| {
            let stored = self.store.retained(job)?;
            Ok((next_id, stored))
        });
        let (next_id, stored) = match listed {
            Ok(listed) => listed,
            Err(error) => {
                self.outcome = Some(Outcome::StorageViolated(error.to_string()));
                return;
            }
        };
        let mut assigner = StateAssigner::default();
        if let Some(defect) = self.defect {
            assigner.plant_defect(defect);
        }
        let start = match assigner.start_attempt(from, &self.shape.layout, Some(next_id)) {
            Ok(start) => start,
            Err(error) => {
                let reason = format!(
                    "cannot restore {}: {error}",
                    from_id.unwrap_or(CheckpointId(0))
                );
                self.deploy_failed(reason);
                return;
            }
        };
        if let Some(from) = from
            && let Err(reason) = self
                .restores
                .check(from, &self.shape.layout, &start.restored)
        {
            self.outcome = Some(Outcome::Misrestored(reason));
            return;
        }
        self.trace(10, [from_id.map_or(0, |c| c.0), 0, 0], || match from_id {
            Some(checkpoint) => format!("deploy attempt {number}, restored from {checkpoint}"),
            None => format!("deploy attempt {number} from the start of its input"),
        });
        let mut links: Vec<Link> = Vec::new();
        let mut new_link = |to: Endpoint, ordered: bool| {
            links.push(Link {
                to,
                ordered,
                queue: VecDeque::new(),
                last_ready_us: 0,
                slow_extra_us: 0,
                slow_until_us: 0,
            });
            links.len() - 1
        };
        let mut subtasks = Vec::with_capacity(self.shape.subtasks());
        let mut partitioners = Vec::new();
        let mut partitioner_of: Vec<Vec<usize>> = Vec::new();
        for (position, snapshot) in start.restored.into_iter().enumerate() {
            let wiring = self.shape.topology.subtask(position);
            let id = wiring.id;
            let mut core = self
                .shape
                .plan
                .build_subtask(&self.shape.graph, id, self.flow);
            if let Some(defect) = self.defect {
                core.plant_defect(defect);
            }
            if let Some(snapshot) = snapshot
                && let Err(error) = core.restore(snapshot)
            {
                let reason = format!("cannot restore {}: {error}", self.subtask_name(position));
                self.note_refusal(&error);
                self.deploy_failed(reason);
                return;
            }
            let mut output_links = Vec::with_capacity(wiring.outputs.len());
            let mut own = Vec::with_capacity(wiring.outputs.len());
            for (output, targets) in wiring.outputs.iter().enumerate() {
                let (mut core, _) =
                    self.shape
                        .plan
                        .build_partitioner(&self.shape.graph, id, output, self.flow);
                if let Some(defect) = self.defect {
                    core.plant_defect(defect);
                }
                let index = partitioners.len();
                output_links.push(new_link(Endpoint::Partitioner(index), true));
                let credit_link = new_link(Endpoint::Subtask(position), true);
                let target_links = targets
                    .iter()
                    .map(|&(downstream, channel)| {
                        (new_link(Endpoint::Subtask(downstream), true), channel)
                    })
                    .collect();
                partitioners.push(SimPartitioner {
                    core,
                    upstream: position,
                    output,
                    credit_link,
                    target_links,
                });
                own.push(index);
            }
            partitioner_of.push(own);
            subtasks.push(SimSubtask {
                core,
                wants_step: true,
                ready_at_us: self.now_us,
                credit_links: Vec::new(),
                output_links,
                to_coordinator: new_link(Endpoint::Coordinator, true),
                encoded_acks: new_link(Endpoint::Coordinator, false),
                from_coordinator: new_link(Endpoint::Subtask(position), true),
                slow_factor: 1,
                slow_until_us: 0,
            });
        }
        for (position, wiring) in self.shape.topology.subtasks.iter().enumerate() {
            subtasks[position].credit_links = wiring
                .inputs
                .iter()
                .map(|source| {
                    let partitioner = partitioner_of[source.upstream][source.output];
                    (
                        new_link(Endpoint::Partitioner(partitioner), true),
                        source.target,
                    )
                })
                .collect();
        }
        let is_recovery = self.deployments > 0;
        self.deployments += 1;
        let crash_at_step = (is_recovery && self.recovery_crashes_left > 0).then(|| {
            self.recovery_crashes_left -= 1;
            self.stats.steps + self.rng.random_range(1..=RECOVERY_CRASH_WITHIN_STEPS)
        });
        if is_recovery {
            self.stats.recoveries += 1;
        }
        let mut coordinator = CoordinatorCore::new(
            self.shape.graph.checkpoint,
            self.shape.layout.clone(),
            start.first_checkpoint,
        );
        if let Some(defect) = self.defect {
            coordinator.plant_defect(defect);
        }
        coordinator.retain_stored(stored);
        coordinator.release_written_snapshots();
        self.attempt = Some(Attempt {
            number,
            subtasks,
            partitioners,
            links_ready_us: vec![u64::MAX; links.len()],
            links,
            coordinator,
            next_tick_us: self.now_us,
            processing_time_ms: None,
            dead: None,
            crash_at_step,
            stopping: None,
            write: None,
        });
    }

    /// The attempt could not be deployed: the master ends the job.
    fn deploy_failed(&mut self, reason: String) {
        if self.crashed_under_a_commit(&reason) {
            return;
        }
        if let Some(master) = &mut self.master {
            master.handle_deploy_failed(reason);
        }
        self.perform_master_actions();
    }

    /// Whether the failure (`reason`) came from the machine dying under a commit's write (a
    /// `crash-during-commit` fault): then the job crashed with it, and is submitted again.
    fn crashed_under_a_commit(&mut self, reason: &str) -> bool {
        if !self.log.machine_crashed() {
            return false;
        }
        self.crash_process(
            UnsyncedFate::RandomPrefix,
            &format!("crash of the machine during a commit ({reason})"),
        );
        true
    }

    /// A task of the running attempt failed (`dead`, if a subtask crashed or failed: it does
    /// nothing more): the job master decides whether the job fails over.
    pub(super) fn fail_over(&mut self, reason: String, dead: Option<usize>) {
        if self.crashed_under_a_commit(&reason) {
            return;
        }
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        if attempt.dead.is_none() {
            attempt.dead = dead;
        }
        let number = attempt.number;
        if let Some(master) = &mut self.master {
            master.handle_failure(number, reason);
        }
        self.perform_master_actions();
    }

    /// The master stops the failed attempt. As actors do, it stops not at once: its
    /// coordinator handles what reached it before its stop (possibly completing a checkpoint
    /// and sending its notices), and the other subtasks and partitioners handle what reached
    /// them before theirs — a random number of steps.
    fn stop_attempt(&mut self, number: u32) {
        let steps = self.stats.steps;
        let drain_steps = self.rng.random_range(0..=STOP_STEPS_MAX);
        let coordinator_steps = self.rng.random_range(0..=drain_steps);
        let Some(attempt) = self.attempt.as_mut().filter(|a| a.number == number) else {
            return;
        };
        attempt.stopping = Some(Stopping {
            coordinator_stops_at: steps + coordinator_steps,
            stopped_at: steps + drain_steps,
        });
        self.trace(11, [u64::from(number), drain_steps, 0], || {
            format!("stop the failed attempt {number}: it stops within {drain_steps} steps")
        });
    }

    /// Ends a stopping attempt once its last step is done: the master hears of it, with the
    /// newest checkpoint the attempt's coordinator completed.
    pub(super) fn finish_stopping(&mut self) {
        let Some(stopping) = self.attempt.as_ref().and_then(|a| a.stopping) else {
            return;
        };
        let steps = self.stats.steps;
        if steps >= stopping.coordinator_stops_at
            && let Some(attempt) = &mut self.attempt
            && !attempt.coordinator.is_stopping()
        {
            attempt.coordinator.stop();
            self.perform_coordinator_actions();
        }
        let stopped = self
            .attempt
            .as_ref()
            .is_some_and(|a| a.coordinator.has_stopped());
        if steps < stopping.stopped_at || !stopped {
            return;
        }
        let mut stopped_attempt = self.attempt.take();
        let still_writing = stopped_attempt.as_mut().and_then(|a| a.write.take());
        let latest = stopped_attempt.and_then(|mut a| a.coordinator.take_latest_completed());
        let handed_back = latest.as_ref().map(RetainedCheckpoint::id);
        self.trace(12, [handed_back.map_or(0, |c| c.0), 0, 0], || {
            format!("the failed attempt has stopped; its coordinator hands back {handed_back:?}")
        });
        if let Some(master) = &mut self.master {
            master.handle_attempt_stopped(latest, true);
        }
        self.perform_master_actions();
        // A write under way runs on to the end, whatever its coordinator does: it lands after
        // the master chose where to restore from (only a broken coordinator stops before it).
        if let Some((write, _)) = still_writing
            && let Err(error) = self.store.write(&self.shape.graph.name, &write)
        {
            self.outcome = Some(Outcome::StorageViolated(error.to_string()));
        }
    }

    /// The job's process crashed (and, unless `fate` keeps them, its unsynced writes): all
    /// memory is gone, the job master with it; the job is submitted again.
    pub(super) fn crash_process(&mut self, fate: UnsyncedFate, what: &str) {
        let log_damage = self.log.crash(fate, &mut self.rng);
        let store_damage = self.disk.crash(fate, &mut self.rng);
        let torn = if store_damage.torn {
            ", one of them torn"
        } else {
            ""
        };
        self.trace_fault(&format!(
            "{what}; the log lost {} unsynced writes, the checkpoint store {}{torn}",
            log_damage.lost, store_damage.lost
        ));
        self.attempt = None;
        self.master = None;
        // Whoever runs the process (a supervisor) starts it again, under the job's restart
        // strategy.
        self.resubmissions += 1;
        match self.shape.graph.restart.delay_before(self.resubmissions) {
            Some(delay_ms) => {
                self.redeploy = Some((
                    self.now_us + delay_ms.saturating_mul(1_000),
                    Redeploy::Resubmit,
                ));
            }
            None => {
                self.outcome = Some(Outcome::Failed(format!(
                    "not submitted again after {} crashes of the process",
                    self.resubmissions - 1
                )));
            }
        }
    }
}

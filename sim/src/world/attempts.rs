//! Deploying an attempt of the job, failing it over, and crashing its process: what the
//! runtime's job master and its `Runtime::submit` do, around `rill-core`'s `start_attempt`.

use super::*;

impl World {
    pub(super) fn deploy(&mut self, kind: Redeploy) {
        if kind == Redeploy::Resubmit {
            self.latest = match self.store.latest() {
                Ok(latest) => latest,
                Err(error) => {
                    self.outcome = Some(Outcome::StorageViolated(error.to_string()));
                    return;
                }
            };
            self.store.discard_leftovers();
        }
        let latest = self
            .latest
            .as_ref()
            .map(|(metadata, snapshots)| (metadata, snapshots));
        let from = latest.map(|(metadata, _)| metadata.checkpoint);
        let start = match start_attempt(latest, &self.shape.layout, Some(self.store.next_id())) {
            Ok(start) => start,
            Err(error) => {
                self.outcome = Some(Outcome::Failed(format!(
                    "cannot restore {}: {error}",
                    from.unwrap_or(CheckpointId(0))
                )));
                return;
            }
        };
        self.trace(10, [from.map_or(0, |c| c.0), 0, 0], || match from {
            Some(checkpoint) => format!("deploy the job, restored from {checkpoint}"),
            None => "deploy the job from the start of its input".to_owned(),
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
        let mut subtasks = Vec::with_capacity(self.shape.ids.len());
        let mut partitioners = Vec::new();
        let mut partitioner_of: Vec<Vec<usize>> = Vec::new();
        for (position, (&id, snapshot)) in self.shape.ids.iter().zip(start.restored).enumerate() {
            let graph = match &self.shape.unaligned_graph {
                Some(unaligned) if !self.shape.is_source[position] => unaligned,
                _ => &self.shape.graph,
            };
            let mut core = self.shape.plan.build_subtask(graph, id, self.flow);
            if let Some(snapshot) = snapshot
                && let Err(error) = core.restore(snapshot)
            {
                self.outcome = Some(Outcome::Failed(format!(
                    "cannot restore {}: {error}",
                    self.subtask_name(position)
                )));
                return;
            }
            let outputs = self.shape.plan.chain(id.chain).outputs.len();
            let mut output_links = Vec::with_capacity(outputs);
            let mut own = Vec::with_capacity(outputs);
            for output in 0..outputs {
                let (core, targets) =
                    self.shape
                        .plan
                        .build_partitioner(&self.shape.graph, id, output, self.flow);
                let index = partitioners.len();
                output_links.push(new_link(Endpoint::Partitioner(index), true));
                let credit_link = new_link(Endpoint::Subtask(position), true);
                let target_links = targets
                    .iter()
                    .map(|target| {
                        (
                            new_link(
                                Endpoint::Subtask(self.shape.plan.position(target.subtask)),
                                true,
                            ),
                            target.channel,
                        )
                    })
                    .collect();
                partitioners.push(SimPartitioner {
                    core,
                    upstream: position,
                    output,
                    credit_link,
                    target_links,
                    credits_returned: 0,
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
        for (position, &id) in self.shape.ids.iter().enumerate() {
            subtasks[position].credit_links = self
                .shape
                .plan
                .channel_senders(id)
                .into_iter()
                .map(|sender| {
                    let partitioner =
                        partitioner_of[self.shape.plan.position(sender.upstream)][sender.output];
                    (
                        new_link(Endpoint::Partitioner(partitioner), true),
                        sender.target,
                    )
                })
                .collect();
        }
        let is_recovery = self.restarts > 0;
        let crash_at_step = (is_recovery && self.recovery_crashes_left > 0).then(|| {
            self.recovery_crashes_left -= 1;
            self.stats.steps + self.rng.random_range(1..=RECOVERY_CRASH_WITHIN_STEPS)
        });
        if is_recovery {
            self.stats.recoveries += 1;
        }
        self.attempt = Some(Attempt {
            unfinished: subtasks.len(),
            subtasks,
            partitioners,
            links,
            coordinator: CoordinatorCore::new(
                self.shape.graph.checkpoint,
                self.shape.layout.clone(),
                start.first_checkpoint,
            ),
            acks: BTreeMap::new(),
            next_tick_us: self.now_us,
            processing_time_ms: None,
            crash_at_step,
            stopping: None,
        });
    }

    /// A task failed (`dead`, if a subtask crashed or failed): the job fails over, if the
    /// restart strategy allows. As in the runtime, the failed attempt stops before the next
    /// one starts, and not at once: its coordinator handles what reached it before its stop
    /// (possibly completing a checkpoint and sending its notices), and the other subtasks and
    /// partitioners handle what reached them before theirs — a random number of steps. Then
    /// every subtask restarts from the newest checkpoint the coordinator completed.
    pub(super) fn fail_over(&mut self, reason: String, dead: Option<usize>) {
        let steps = self.stats.steps;
        let drain_steps = self.rng.random_range(0..=STOP_STEPS_MAX);
        let coordinator_steps = self.rng.random_range(0..=drain_steps);
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        if attempt.stopping.is_some() {
            return;
        }
        self.restarts += 1;
        let Some(delay_ms) = self.shape.graph.restart.delay_before(self.restarts) else {
            self.attempt = None;
            self.outcome = Some(Outcome::Failed(format!(
                "the restart strategy gave up after {} restarts; last failure: {reason}",
                self.restarts - 1
            )));
            return;
        };
        attempt.stopping = Some(Stopping {
            dead,
            coordinator_stops_at: steps + coordinator_steps,
            stopped_at: steps + drain_steps,
            restart_delay_us: delay_ms.saturating_mul(1_000),
        });
        let restarts = self.restarts;
        self.trace(11, [u64::from(restarts), drain_steps, 0], || {
            format!("fail over (restart {restarts}): {reason}; the attempt stops within {drain_steps} steps")
        });
    }

    /// Ends a stopping attempt once its last step is done, and schedules the next one.
    pub(super) fn finish_stopping(&mut self) {
        let Some(stopping) = self.attempt.as_ref().and_then(|a| a.stopping) else {
            return;
        };
        if self.stats.steps < stopping.stopped_at {
            return;
        }
        self.attempt = None;
        let from = self
            .latest
            .as_ref()
            .map(|(metadata, _)| metadata.checkpoint);
        self.trace(12, [from.map_or(0, |c| c.0), 0, 0], || {
            format!("the failed attempt has stopped; the next restores from {from:?}")
        });
        self.redeploy = Some((self.now_us + stopping.restart_delay_us, Redeploy::FailOver));
    }

    /// The job's process crashed (and, unless `fate` keeps them, its unsynced writes): all
    /// memory is gone; the job is submitted again.
    pub(super) fn crash_process(&mut self, fate: UnsyncedFate, what: &str) {
        let log_damage = self.log.crash(fate, &mut self.rng);
        let store_damage = self.store.crash(fate, &mut self.rng);
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
        self.latest = None;
        self.restarts += 1;
        match self.shape.graph.restart.delay_before(self.restarts) {
            Some(delay_ms) => {
                self.redeploy = Some((
                    self.now_us + delay_ms.saturating_mul(1_000),
                    Redeploy::Resubmit,
                ));
            }
            None => {
                self.outcome = Some(Outcome::Failed(format!(
                    "not submitted again after {} restarts",
                    self.restarts - 1
                )));
            }
        }
    }
}

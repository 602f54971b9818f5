//! Delivering a message to its subtask, partitioner or the coordinator, and carrying what each
//! core emits in reply — as the actors' handlers do — with the faults that wait for a
//! protocol point (a torn write, a coordinator or sink crash) fired on the way.

use super::*;

impl World {
    pub(super) fn deliver(&mut self, link: usize) {
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let now = self.now_us;
        let queue = &attempt.links[link].queue;
        let position = if attempt.links[link].ordered {
            0
        } else {
            let ready: Vec<usize> = (0..queue.len()).filter(|&i| queue[i].0 <= now).collect();
            ready.choose(&mut self.rng).copied().unwrap_or(0)
        };
        let to = attempt.links[link].to;
        let Some((_, message)) = attempt.links[link].queue.remove(position) else {
            return;
        };
        attempt.links_ready_us[link] = attempt.links[link].next_ready().unwrap_or(u64::MAX);
        let (kind, name) = message.kind();
        let digest = message.digest();
        if let Message::Batch { batch, .. } = &message {
            self.records_delivered += batch.record_count() as u64;
        }
        let to_index = match to {
            Endpoint::Subtask(index) | Endpoint::Partitioner(index) => index as u64,
            Endpoint::Coordinator => u64::MAX,
        };
        if self.trace.is_printing() {
            let target = match to {
                Endpoint::Subtask(index) => self.subtask_name(index),
                Endpoint::Partitioner(index) => format!("partitioner {index}"),
                Endpoint::Coordinator => "the coordinator".to_owned(),
            };
            let detail = describe(&message);
            self.trace(kind, [link as u64, to_index, digest], || {
                format!("deliver {name} to {target}{detail}")
            });
        } else {
            self.trace(kind, [link as u64, to_index, digest], String::new);
        }
        match to {
            Endpoint::Subtask(index) => self.deliver_to_subtask(index, message),
            Endpoint::Partitioner(index) => self.deliver_to_partitioner(index, message),
            Endpoint::Coordinator => self.deliver_to_coordinator(message),
        }
    }

    pub(super) fn deliver_to_subtask(&mut self, index: usize, message: Message) {
        if let Message::Notify { checkpoint, .. } = &message {
            let checkpoint = *checkpoint;
            if self.shape.topology.subtask(index).is_terminal
                && self
                    .take_armed(|fault| matches!(fault, Fault::CrashSinkBeforeCommit))
                    .is_some()
            {
                let name = self.subtask_name(index);
                self.trace_fault(&format!(
                    "crash of sink subtask {name} after pre-committing {checkpoint}, before committing it"
                ));
                self.fail_over(format!("sink subtask {name} crashed"), Some(index));
                return;
            }
        }
        let notified = match &message {
            Message::Notify { checkpoint, .. } => Some(*checkpoint),
            _ => None,
        };
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let subtask = &mut attempt.subtasks[index];
        let result = match message {
            Message::Batch { channel, batch } => {
                subtask.core.handle_batch(channel, batch);
                Ok(())
            }
            Message::OutputCredit { output, credits } => {
                subtask.core.handle_credit(output, credits);
                Ok(())
            }
            Message::Trigger(checkpoint) => subtask.core.trigger_checkpoint(checkpoint),
            Message::Notify { checkpoint, last } => {
                subtask.core.notify_checkpoint_complete(checkpoint, last)
            }
            Message::TargetCredit { .. }
            | Message::Ack { .. }
            | Message::Decline { .. }
            | Message::Ended { .. } => Ok(()),
        };
        subtask.wants_step = true;
        if let Err(error) = result {
            let name = self.subtask_name(index);
            self.fail_over(format!("{name} failed: {error}"), Some(index));
            return;
        }
        self.carry_subtask_transmits(index);
        if let Some(checkpoint) = notified
            && let Some(attempt) = &self.attempt
            && attempt.links.iter().any(|link| {
                link.queue.iter().any(|(_, message)| {
                    matches!(message, Message::Notify { checkpoint: other, .. } if *other == checkpoint)
                })
            })
            && let Some(fate) = self
                .take_armed(|f| {
                    matches!(
                        f,
                        Fault::CrashCoordinator {
                            point: CoordinatorPoint::MidNotify,
                            ..
                        }
                    )
                })
                .and_then(|f| coordinator_crash_fate(&f))
        {
            self.crash_process(
                fate,
                &format!(
                    "crash of the coordinator after some completion notices of {checkpoint} were delivered"
                ),
            );
        }
    }

    pub(super) fn carry_subtask_transmits(&mut self, index: usize) {
        loop {
            let Some(attempt) = &mut self.attempt else {
                return;
            };
            let subtask = &mut attempt.subtasks[index];
            let Some(transmit) = subtask.core.poll_transmit() else {
                return;
            };
            match transmit {
                SubtaskTransmit::Batch { output, batch } => {
                    let link = subtask.output_links[output];
                    self.send(link, Message::Batch { channel: 0, batch });
                }
                SubtaskTransmit::Credit { input, credits } => {
                    let (link, target) = subtask.credit_links[input];
                    self.send(link, Message::TargetCredit { target, credits });
                }
                SubtaskTransmit::Snapshot {
                    checkpoint,
                    mut snapshot,
                } => {
                    let link = if snapshot.is_deferred() {
                        subtask.encoded_acks
                    } else {
                        subtask.to_coordinator
                    };
                    let message = match snapshot.complete() {
                        Ok(()) => Message::Ack {
                            checkpoint,
                            subtask: index,
                            snapshot,
                        },
                        Err(_) => Message::Decline {
                            checkpoint,
                            reason: DeclineReason::SnapshotFailed,
                        },
                    };
                    self.send(link, message);
                }
                SubtaskTransmit::Declined { checkpoint, reason } => {
                    let link = subtask.to_coordinator;
                    self.send(link, Message::Decline { checkpoint, reason });
                }
                SubtaskTransmit::Ended => {
                    let link = subtask.to_coordinator;
                    self.send(link, Message::Ended { subtask: index });
                }
            }
        }
    }

    pub(super) fn deliver_to_partitioner(&mut self, index: usize, message: Message) {
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let partitioner = &mut attempt.partitioners[index];
        match message {
            Message::Batch { batch, .. } => {
                if let Err(error) = partitioner.core.handle_batch(batch) {
                    let upstream = partitioner.upstream;
                    let name = self.subtask_name(upstream);
                    self.fail_over(format!("the partitioner of {name} failed: {error}"), None);
                    return;
                }
            }
            Message::TargetCredit { target, credits } => {
                partitioner.core.handle_credit(target, credits);
            }
            Message::OutputCredit { .. }
            | Message::Trigger(_)
            | Message::Notify { .. }
            | Message::Ack { .. }
            | Message::Decline { .. }
            | Message::Ended { .. } => {}
        }
        loop {
            let Some(attempt) = &mut self.attempt else {
                return;
            };
            let partitioner = &mut attempt.partitioners[index];
            let Some(transmit) = partitioner.core.poll_transmit() else {
                return;
            };
            match transmit {
                PartitionerTransmit::Batch { target, batch } => {
                    let (link, channel) = partitioner.target_links[target];
                    self.send(link, Message::Batch { channel, batch });
                }
                PartitionerTransmit::UpstreamCredit(credits) => {
                    let (link, output) = (partitioner.credit_link, partitioner.output);
                    self.send(link, Message::OutputCredit { output, credits });
                }
            }
        }
    }

    pub(super) fn deliver_to_coordinator(&mut self, message: Message) {
        let now_ms = self.now_us / 1_000;
        match message {
            Message::Ack {
                checkpoint,
                subtask,
                snapshot,
            } => self.acknowledge(checkpoint, subtask, snapshot),
            Message::Decline { checkpoint, reason } => {
                if let Some(attempt) = &mut self.attempt {
                    attempt.coordinator.handle_decline(checkpoint, reason);
                }
            }
            Message::Ended { subtask } => {
                if let Some(attempt) = &mut self.attempt {
                    attempt.coordinator.handle_subtask_ended(subtask, now_ms);
                }
            }
            Message::Batch { .. }
            | Message::OutputCredit { .. }
            | Message::TargetCredit { .. }
            | Message::Trigger(_)
            | Message::Notify { .. } => {}
        }
        self.perform_coordinator_actions();
    }

    /// If an armed fault says so, the machine crashes in the middle of the next write to the
    /// checkpoint store, a write of `torn`.
    fn arm_store_crash(&mut self, torn: CheckpointValue) {
        if self
            .take_armed(|f| matches!(f, Fault::TearWrite { what } if *what == torn))
            .is_some()
        {
            self.disk.crash_during_next_write();
        }
    }

    /// What a write to the checkpoint store returned; `None` if it did not return: the
    /// machine crashed during it, or the store refused it (a violation of its contract, which
    /// ends the run).
    fn store_written<T>(
        &mut self,
        written: Result<T, rill_store::StoreError>,
        what: impl FnOnce() -> String,
    ) -> Option<T> {
        match written {
            Ok(written) => Some(written),
            Err(_) if self.disk.crashed_during_write() => {
                self.crash_process(
                    UnsyncedFate::Torn,
                    &format!("crash of the machine while writing {}", what()),
                );
                None
            }
            Err(error) => {
                self.outcome = Some(Outcome::StorageViolated(error.to_string()));
                None
            }
        }
    }

    /// A subtask's snapshot reached the coordinator.
    pub(super) fn acknowledge(
        &mut self,
        checkpoint: CheckpointId,
        subtask: usize,
        snapshot: SubtaskSnapshot,
    ) {
        if let Some(attempt) = &mut self.attempt {
            attempt
                .coordinator
                .handle_ack(checkpoint, subtask, snapshot);
        }
    }

    /// Before a snapshot's write: the coordinator may crash (after some of the checkpoint's
    /// snapshots, before all), or an armed fault tears the write. Returns whether the write
    /// goes ahead.
    fn before_snapshot_write(&mut self, checkpoint: CheckpointId, subtask: usize) -> bool {
        // Past a coin toss per snapshot, so that the crash comes after any number of them,
        // not always before the first.
        let is_crash_point = |f: &Fault| {
            matches!(
                f,
                Fault::CrashCoordinator {
                    point: CoordinatorPoint::AfterAcks,
                    ..
                }
            )
        };
        if self.armed.iter().any(is_crash_point)
            && self.rng.random_bool(0.5)
            && let Some(fate) = self
                .take_armed(is_crash_point)
                .and_then(|f| coordinator_crash_fate(&f))
        {
            self.crash_process(
                fate,
                &format!("crash of the coordinator before storing the snapshot of {checkpoint} by subtask {subtask}"),
            );
            return false;
        }
        self.arm_store_crash(CheckpointValue::Snapshot);
        true
    }

    /// After a checkpoint's metadata is durable: the coordinator may crash before its
    /// completion notices, or an armed fault corrupts what the checkpoint stored. Returns
    /// whether the coordinator goes on.
    fn after_metadata_write(&mut self, checkpoint: CheckpointId, subtasks: usize) -> bool {
        self.stats.checkpoints_completed += 1;
        self.trace(21, [checkpoint.0, 0, 0], || {
            format!("{checkpoint} is complete (metadata synced)")
        });
        if let Some(fate) = self
            .take_armed(|f| {
                matches!(
                    f,
                    Fault::CrashCoordinator {
                        point: CoordinatorPoint::AfterMetadata,
                        ..
                    }
                )
            })
            .and_then(|f| coordinator_crash_fate(&f))
        {
            self.crash_process(
                fate,
                &format!("crash of the coordinator after the metadata of {checkpoint}, before its completion notices"),
            );
            return false;
        }
        if let Some(Fault::CorruptCheckpoint { what, .. }) =
            self.take_armed(|f| matches!(f, Fault::CorruptCheckpoint { .. }))
        {
            self.corrupt_checkpoint(checkpoint, subtasks, what);
            return false;
        }
        true
    }

    /// How long the next write takes: up to twice `store_write_us`, as the seed says, so
    /// that writes race timeouts in every order.
    fn write_duration_us(&mut self) -> u64 {
        self.rng
            .random_range(0..=self.store_write_us.saturating_mul(2))
    }

    /// The coordinator's write under way returns: it is carried out, and the coordinator goes
    /// on.
    pub(super) fn complete_write(&mut self) {
        let Some((write, _)) = self.attempt.as_mut().and_then(|a| a.write.take()) else {
            return;
        };
        if self.perform_write(write) {
            self.perform_coordinator_actions();
        }
    }

    /// Writes to the checkpoint store, with the faults armed for this point, and reports it to
    /// the coordinator; returns whether its actions go on (no crash, no broken contract).
    fn perform_write(&mut self, write: StoreWrite) -> bool {
        let target = write.target();
        let proceeds = match target {
            WriteTarget::Snapshot {
                checkpoint,
                subtask,
            } => self.before_snapshot_write(checkpoint, subtask),
            WriteTarget::Metadata(_) => {
                self.arm_store_crash(CheckpointValue::Metadata);
                true
            }
            WriteTarget::Discard(_) => true,
        };
        if !proceeds {
            return false;
        }
        let subtasks = match &write {
            StoreWrite::Metadata(metadata) => metadata.subtasks,
            StoreWrite::Snapshot { .. } | StoreWrite::Discard(_) => 0,
        };
        let written = self.store.write(&self.shape.graph.name, &write);
        // The core takes its snapshots back without a copy once no write holds them.
        drop(write);
        let Some(bytes) = self.store_written(written, || target.to_string()) else {
            return false;
        };
        let now_ms = self.now_us / 1_000;
        let Some(attempt) = &mut self.attempt else {
            return false;
        };
        attempt
            .coordinator
            .handle_written(target, Ok(bytes), now_ms);
        match target {
            WriteTarget::Metadata(checkpoint) => self.after_metadata_write(checkpoint, subtasks),
            WriteTarget::Discard(checkpoint) => {
                self.trace(22, [checkpoint.0, 0, 0], || format!("discard {checkpoint}"));
                true
            }
            WriteTarget::Snapshot { .. } => true,
        }
    }

    pub(super) fn perform_coordinator_actions(&mut self) {
        loop {
            let Some(attempt) = &mut self.attempt else {
                return;
            };
            let Some(action) = attempt.coordinator.poll_action() else {
                return;
            };
            match action {
                CoordinatorAction::Trigger { checkpoint, .. } => {
                    self.trace(20, [checkpoint.0, 0, 0], || {
                        format!("coordinator triggers {checkpoint}")
                    });
                    for index in 0..self.shape.subtasks() {
                        if self.shape.topology.subtask(index).is_source
                            && let Some(attempt) = &self.attempt
                        {
                            let link = attempt.subtasks[index].from_coordinator;
                            self.send(link, Message::Trigger(checkpoint));
                        }
                    }
                }
                CoordinatorAction::Write(write) => {
                    if self.store_write_us == 0 {
                        if !self.perform_write(write) {
                            return;
                        }
                    } else {
                        let done_us = self.now_us + self.write_duration_us();
                        if let Some(attempt) = &mut self.attempt {
                            attempt.write = Some((write, done_us));
                        }
                    }
                }
                CoordinatorAction::NotifyComplete { checkpoint, last } => {
                    for index in 0..self.shape.subtasks() {
                        if let Some(attempt) = &self.attempt {
                            let link = attempt.subtasks[index].from_coordinator;
                            self.send(link, Message::Notify { checkpoint, last });
                        }
                    }
                }
                CoordinatorAction::Completed(completed) => {
                    let number = attempt.number;
                    if let Some(master) = &mut self.master {
                        master.handle_checkpoint_completed(number, completed);
                    }
                    self.perform_master_actions();
                }
                CoordinatorAction::SavepointFailed(_) => {}
                CoordinatorAction::FailJob(reason) => {
                    self.fail_over(format!("checkpointing failed: {reason}"), None);
                    return;
                }
            }
        }
    }
}

/// What a crash of the coordinator leaves of the unsynced writes (`None` for other faults).
fn coordinator_crash_fate(fault: &Fault) -> Option<UnsyncedFate> {
    match fault {
        Fault::CrashCoordinator { unsynced, .. } => Some(unsynced.fate()),
        _ => None,
    }
}

fn describe(message: &Message) -> String {
    match message {
        Message::Batch { channel, batch } => {
            format!(
                " on channel {channel}: {} events, {} records",
                batch.events.len(),
                batch.record_count()
            )
        }
        Message::OutputCredit { output, credits } => format!(" for output {output}: {credits}"),
        Message::TargetCredit { target, credits } => format!(" for target {target}: {credits}"),
        Message::Trigger(checkpoint) => format!(" of {checkpoint}"),
        Message::Notify { checkpoint, last } => {
            format!(" of {checkpoint}{}", if *last { " (the last)" } else { "" })
        }
        Message::Ack {
            checkpoint,
            subtask,
            snapshot,
        } => format!(
            " of {checkpoint} from subtask {subtask} ({} bytes)",
            snapshot.state_bytes()
        ),
        Message::Decline { checkpoint, reason } => format!(" of {checkpoint}: {reason}"),
        Message::Ended { subtask } => format!(" from subtask {subtask}"),
    }
}

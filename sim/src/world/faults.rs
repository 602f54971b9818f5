//! Arming the scheduled faults as they come due, and firing those that act at once.

use super::*;

impl World {
    pub(super) fn is_stopping(&self) -> bool {
        self.attempt.as_ref().is_some_and(|a| a.stopping.is_some())
    }

    pub(super) fn arm_due_faults(&mut self) {
        if self.attempt.is_none() || self.is_stopping() {
            return;
        }
        while let Some(index) = self
            .schedule
            .iter()
            .position(|fault| fault.is_due(self.progress, self.now_us))
        {
            let due = self.schedule.remove(index);
            if due.fault.is_immediate() {
                self.fire(due.fault);
                if self.attempt.is_none() || self.is_stopping() {
                    return;
                }
            } else {
                self.trace(101, [0, 0, 0], || format!("armed: {}", due.fault));
                self.armed.push(due.fault);
            }
        }
    }

    /// Takes the first armed fault `matches` accepts (none while an attempt is stopping).
    pub(super) fn take_armed(&mut self, matches: impl Fn(&Fault) -> bool) -> Option<Fault> {
        if self.is_stopping() {
            return None;
        }
        let index = self.armed.iter().position(matches)?;
        Some(self.armed.remove(index))
    }

    pub(super) fn fire(&mut self, fault: Fault) {
        match fault {
            Fault::CrashSubtask { target } => {
                let candidates: Vec<usize> = (0..self.shape.subtasks())
                    .filter(|&index| {
                        target.as_ref().is_none_or(|name| {
                            self.shape.topology.subtask(index).operators.contains(name)
                        })
                    })
                    .collect();
                if let Some(&index) = candidates.choose(&mut self.rng) {
                    let name = self.subtask_name(index);
                    self.trace_fault(&format!("crash of subtask {name}"));
                    self.fail_over(format!("subtask {name} crashed"), Some(index));
                }
            }
            Fault::CrashJob { unsynced } => {
                self.crash_process(unsynced.fate(), "crash of the whole job");
            }
            Fault::CrashDuringCommit => {
                let writes_before = self.rng.random_range(0..COMMIT_CRASH_WITHIN_WRITES);
                self.trace_fault(&format!(
                    "the machine is to crash during the next commit, after {writes_before} of its writes"
                ));
                self.log.crash_during_next_commit(writes_before);
            }
            Fault::Rescale { role, parallelism } => {
                self.crash_process(
                    UnsyncedFate::Kept,
                    &format!(
                        "the job is stopped, to be submitted again with '{role}' at parallelism {parallelism}"
                    ),
                );
                self.rescaled.insert(role, parallelism);
                match (self.rebuild)(&self.rescaled).and_then(Shape::new) {
                    Ok(shape) => self.shape = shape,
                    Err(reason) => self.outcome = Some(Outcome::Failed(reason)),
                }
            }
            Fault::CrashDuringRecovery { repeats } => {
                self.recovery_crashes_left += repeats;
                let index = self.rng.random_range(0..self.shape.subtasks());
                let name = self.subtask_name(index);
                self.trace_fault(&format!(
                    "crash of subtask {name}, to crash again during recovery {repeats} times"
                ));
                self.fail_over(format!("subtask {name} crashed"), Some(index));
            }
            Fault::SlowChannel {
                delay_ms,
                duration_ms,
            } => self.slow_channel(delay_ms, duration_ms),
            Fault::SlowSubtask {
                factor,
                duration_ms,
            } => {
                let index = self.rng.random_range(0..self.shape.subtasks());
                let until = self.now_us + duration_ms.saturating_mul(1_000);
                if let Some(attempt) = &mut self.attempt {
                    attempt.subtasks[index].slow_factor = factor.max(1);
                    attempt.subtasks[index].slow_until_us = until;
                }
                let name = self.subtask_name(index);
                self.trace_fault(&format!(
                    "subtask {name} runs {factor}x slower for {duration_ms} ms"
                ));
            }
            Fault::CorruptCheckpoint { what, .. } => {
                match self.store.latest(&self.shape.graph.name) {
                    Ok(Some(newest)) => self.corrupt_checkpoint(
                        newest.checkpoint.id(),
                        newest.checkpoint.metadata.subtasks,
                        what,
                    ),
                    // Nothing to damage yet: the first checkpoint to complete is.
                    Ok(None) | Err(_) => self.armed.push(fault),
                }
            }
            Fault::CrashCoordinator { .. }
            | Fault::CrashSinkBeforeCommit
            | Fault::TearWrite { .. } => {
                self.armed.push(fault);
            }
        }
    }

    /// The process crashes (the disks keep every write), and a value of the completed
    /// `checkpoint` (of `subtasks` snapshots) is found damaged on the store's disk.
    pub(super) fn corrupt_checkpoint(
        &mut self,
        checkpoint: CheckpointId,
        subtasks: usize,
        what: CheckpointValue,
    ) {
        let value = match what {
            CheckpointValue::Metadata => StoredValue::Metadata,
            CheckpointValue::Snapshot => {
                StoredValue::Snapshot(self.rng.random_range(0..subtasks.max(1)))
            }
        };
        let named = match value {
            StoredValue::Metadata => "the metadata".to_owned(),
            StoredValue::Snapshot(subtask) => format!("the snapshot of subtask {subtask}"),
        };
        self.crash_process(
            UnsyncedFate::Kept,
            &format!("crash of the process, and bits of {named} of {checkpoint} flipped on disk"),
        );
        let (space, key) = CheckpointStore::stored_at(&self.shape.graph.name, checkpoint, value);
        if self.disk.flip_bits(space, &key, &mut self.rng).is_some() {
            self.damaged.push((checkpoint, value));
        }
    }

    /// Slows one channel into a subtask with several input channels (alignment waits on it),
    /// or any data channel if none has several.
    pub(super) fn slow_channel(&mut self, delay_ms: u64, duration_ms: u64) {
        let Some(attempt) = &self.attempt else {
            return;
        };
        let data_links: Vec<(usize, usize)> = attempt
            .partitioners
            .iter()
            .flat_map(|p| p.target_links.iter().copied())
            .collect();
        let multi_input: Vec<(usize, usize)> = data_links
            .iter()
            .copied()
            .filter(|&(link, _)| match attempt.links[link].to {
                Endpoint::Subtask(index) => attempt.subtasks[index].credit_links.len() > 1,
                Endpoint::Partitioner(_) | Endpoint::Coordinator => false,
            })
            .collect();
        let pool = if multi_input.is_empty() {
            data_links
        } else {
            multi_input
        };
        let Some(&(link, channel)) = pool.choose(&mut self.rng) else {
            return;
        };
        let until = self.now_us + duration_ms.saturating_mul(1_000);
        let to = match &mut self.attempt {
            Some(attempt) => {
                attempt.links[link].slow_extra_us = delay_ms.saturating_mul(1_000);
                attempt.links[link].slow_until_us = until;
                attempt.links[link].to
            }
            None => return,
        };
        let name = match to {
            Endpoint::Subtask(index) => self.subtask_name(index),
            Endpoint::Partitioner(_) | Endpoint::Coordinator => "?".to_owned(),
        };
        self.trace_fault(&format!(
            "input channel {channel} of {name} delivers {delay_ms} ms late for {duration_ms} ms"
        ));
    }
}

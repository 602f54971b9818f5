//! A job's layout — which operators (by uid) each subtask runs, at which index and parallelism
//! — and the assignment of a checkpoint's state to the subtasks of a job that restores it.
//!
//! A checkpoint stores one snapshot per subtask and, in its metadata, the layout of the job
//! that took it. Restoring, [`assign_state`] regroups that state by operator uid and hands
//! each subtask of the new job what it owns:
//! - **keyed state** by key group: every subtask gets exactly its range's groups, wherever they
//!   were before — this is how a job rescales;
//! - **source positions and operator state** (sinks' pending transactions): with the same
//!   parallelism a subtask gets its own; with another, every subtask gets every old subtask's,
//!   and keeps what concerns it (a log source the partitions it now reads).
//!
//! State that does not fit the job is refused, never dropped: an operator of the checkpoint
//! missing from the job, or another max parallelism (which would move keys between groups).
//! Operators the checkpoint does not know start empty.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointId, SubtaskSnapshot};
use crate::coordinator::CompletedCheckpoint;
#[cfg(feature = "defects")]
use crate::defects::Defect;
use crate::key::KeyGroupRange;
use crate::operator::OperatorSnapshot;
use crate::state::KeyedStateSnapshot;

/// Which operators a job's subtasks run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLayout {
    /// The number of key groups.
    pub max_parallelism: u32,
    /// Every subtask, in the plan's order.
    pub subtasks: Vec<SubtaskLayout>,
}

/// What one subtask runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskLayout {
    /// Its index among the subtasks of its chain.
    pub index: u32,
    /// How many subtasks its chain has.
    pub parallelism: u32,
    /// The uid of the source it starts with, if any.
    pub source: Option<String>,
    /// The uids of its chained operators, in chain order (after the source).
    pub operators: Vec<String>,
}

/// Why a checkpoint's state cannot be restored into a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The job has another max parallelism than the one that took the checkpoint.
    #[error(
        "the checkpoint was taken with max parallelism {checkpoint}, the job has {job}: keys would move to other key groups; restore with max parallelism {checkpoint}"
    )]
    MaxParallelismChanged {
        /// The checkpoint's.
        checkpoint: u32,
        /// The job's.
        job: u32,
    },
    /// The checkpoint holds state of an operator the job does not have.
    #[error(
        "the checkpoint holds state of operator '{0}', which the job does not have; give the operator that should take it this uid"
    )]
    OperatorMissing(String),
    /// An operator was a source in the checkpoint and is not one now, or the reverse.
    #[error("operator '{0}' is a source in one of the job and the checkpoint and not in the other")]
    KindChanged(String),
    /// The checkpoint does not hold what its layout says.
    #[error("the checkpoint is inconsistent: {0}")]
    Inconsistent(String),
}

/// One operator's state in a checkpoint, gathered from all its subtasks.
#[derive(Default)]
struct GatheredState {
    parallelism: u32,
    keyed: KeyedStateSnapshot,
    /// Positions or operator states by old subtask index.
    by_subtask: BTreeMap<u32, Vec<Vec<u8>>>,
}

impl GatheredState {
    /// What subtask `index` of `parallelism` gets: its own, or everyone's after a rescale.
    fn non_keyed_for(&self, index: u32, parallelism: u32) -> Vec<Vec<u8>> {
        if parallelism == self.parallelism {
            self.by_subtask.get(&index).cloned().unwrap_or_default()
        } else {
            self.by_subtask.values().flatten().cloned().collect()
        }
    }
}

impl JobLayout {
    /// Every uid in the layout, with whether it is a source.
    fn uids(&self) -> BTreeMap<&str, bool> {
        let mut uids = BTreeMap::new();
        for subtask in &self.subtasks {
            if let Some(source) = &subtask.source {
                uids.insert(source.as_str(), true);
            }
            for operator in &subtask.operators {
                uids.insert(operator.as_str(), false);
            }
        }
        uids
    }
}

/// Assigns a checkpoint's snapshots (taken by a job laid out as `taken`, by subtask position)
/// to the subtasks of a job laid out as `restoring`; returns one snapshot per subtask
/// position of `restoring`.
pub fn assign_state(
    taken: &JobLayout,
    snapshots: &BTreeMap<usize, SubtaskSnapshot>,
    restoring: &JobLayout,
) -> Result<Vec<SubtaskSnapshot>, RestoreError> {
    StateAssigner::default().assign_state(taken, snapshots, restoring)
}

/// Plans an attempt laid out as `layout`, restored from `latest` (a completed checkpoint's
/// metadata and snapshots) if there is one. Its checkpoints are numbered past the restored one
/// and past `store_next` — one past every id a checkpoint store still holds — so that an
/// attempt restored from an older checkpoint, or after a crash mid-checkpoint, never writes
/// into another checkpoint's keys.
pub fn start_attempt(
    latest: Option<&CompletedCheckpoint>,
    layout: &JobLayout,
    store_next: Option<CheckpointId>,
) -> Result<AttemptStart, RestoreError> {
    StateAssigner::default().start_attempt(latest, layout, store_next)
}

/// What [`assign_state`] and [`start_attempt`] do, as a value: the shipped rule, unless a
/// defect is planted in it (the simulator calls them through one, for that).
#[derive(Clone, Copy, Debug, Default)]
pub struct StateAssigner {
    /// Planted on purpose: `KeyGroupRangeOffByOne` (a restored subtask's key-group range
    /// ends one group late).
    #[cfg(feature = "defects")]
    range_off_by_one: bool,
}

impl StateAssigner {
    /// Breaks the assignment on purpose, for the simulator to catch.
    #[cfg(feature = "defects")]
    pub fn plant_defect(&mut self, defect: Defect) {
        if defect == Defect::KeyGroupRangeOffByOne {
            self.range_off_by_one = true;
        }
    }

    /// The key groups subtask `index` of `parallelism` restores.
    fn key_groups(&self, index: u32, parallelism: u32, max_parallelism: u32) -> KeyGroupRange {
        let range = KeyGroupRange::for_subtask(index, parallelism, max_parallelism);
        if self.range_off_by_one() {
            // The bug: the end of the range without its `- 1`, which shows only where the
            // parallelism divides `(index + 1) * max_parallelism`.
            let end = u64::from(index + 1) * u64::from(max_parallelism) / u64::from(parallelism);
            return KeyGroupRange {
                start: range.start,
                end: (end as u32).min(max_parallelism - 1),
            };
        }
        range
    }

    #[cfg(feature = "defects")]
    fn range_off_by_one(&self) -> bool {
        self.range_off_by_one
    }

    #[cfg(not(feature = "defects"))]
    fn range_off_by_one(&self) -> bool {
        false
    }

    /// [`assign_state`], by this assigner's rule.
    pub fn assign_state(
        &self,
        taken: &JobLayout,
        snapshots: &BTreeMap<usize, SubtaskSnapshot>,
        restoring: &JobLayout,
    ) -> Result<Vec<SubtaskSnapshot>, RestoreError> {
        if taken.max_parallelism != restoring.max_parallelism {
            return Err(RestoreError::MaxParallelismChanged {
                checkpoint: taken.max_parallelism,
                job: restoring.max_parallelism,
            });
        }
        let job_uids = restoring.uids();
        for (uid, is_source) in taken.uids() {
            match job_uids.get(uid) {
                None => return Err(RestoreError::OperatorMissing(uid.to_owned())),
                Some(&now) if now != is_source => {
                    return Err(RestoreError::KindChanged(uid.to_owned()));
                }
                Some(_) => {}
            }
        }
        let gathered = gather(taken, snapshots)?;
        let max_parallelism = restoring.max_parallelism;
        Ok(restoring
            .subtasks
            .iter()
            .map(|subtask| {
                let (index, parallelism) = (subtask.index, subtask.parallelism);
                let source_positions = subtask
                    .source
                    .as_ref()
                    .and_then(|uid| gathered.get(uid))
                    .map(|state| state.non_keyed_for(index, parallelism))
                    .unwrap_or_default();
                let range = self.key_groups(index, parallelism, max_parallelism);
                let operators = subtask
                    .operators
                    .iter()
                    .map(|uid| match gathered.get(uid) {
                        Some(state) => OperatorSnapshot {
                            keyed: state.keyed.select(range),
                            operator: state.non_keyed_for(index, parallelism),
                            deferred: None,
                        },
                        None => OperatorSnapshot::default(),
                    })
                    .collect();
                SubtaskSnapshot {
                    source_positions,
                    operators,
                }
            })
            .collect())
    }

    /// [`start_attempt`], by this assigner's rule.
    pub fn start_attempt(
        &self,
        latest: Option<&CompletedCheckpoint>,
        layout: &JobLayout,
        store_next: Option<CheckpointId>,
    ) -> Result<AttemptStart, RestoreError> {
        let restored = match latest {
            Some(latest) => self
                .assign_state(&latest.metadata.layout, &latest.snapshots, layout)?
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![None; layout.subtasks.len()],
        };
        let after_latest = latest.map_or(1, |latest| latest.id().0 + 1);
        Ok(AttemptStart {
            restored,
            first_checkpoint: store_next
                .unwrap_or(CheckpointId(1))
                .max(CheckpointId(after_latest)),
        })
    }
}

/// What a new attempt of a job starts from: a fail-over, a restart, or a submission that
/// resumes from a checkpoint store. The actix job master and the simulator both start attempts
/// with it.
#[derive(Debug)]
pub struct AttemptStart {
    /// Each subtask's state, by position in the attempt's layout; `None` everywhere for a job
    /// that starts from the beginning of its input.
    pub restored: Vec<Option<SubtaskSnapshot>>,
    /// The id of the attempt's first checkpoint.
    pub first_checkpoint: CheckpointId,
}

/// Regroups the snapshots by operator uid.
fn gather(
    taken: &JobLayout,
    snapshots: &BTreeMap<usize, SubtaskSnapshot>,
) -> Result<BTreeMap<String, GatheredState>, RestoreError> {
    let mut gathered: BTreeMap<String, GatheredState> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (position, layout) in taken.subtasks.iter().enumerate() {
        let snapshot = snapshots.get(&position).ok_or_else(|| {
            RestoreError::Inconsistent(format!("subtask {position} has no snapshot"))
        })?;
        if snapshot.operators.len() != layout.operators.len() {
            return Err(RestoreError::Inconsistent(format!(
                "subtask {position} has {} operator states for {} operators",
                snapshot.operators.len(),
                layout.operators.len()
            )));
        }
        if let Some(source) = &layout.source {
            let state = gathered.entry(source.clone()).or_default();
            state.parallelism = layout.parallelism;
            state
                .by_subtask
                .insert(layout.index, snapshot.source_positions.clone());
        }
        for (uid, operator) in layout.operators.iter().zip(&snapshot.operators) {
            if !seen.insert((uid.clone(), layout.index)) {
                return Err(RestoreError::Inconsistent(format!(
                    "two snapshots of subtask {} of operator '{uid}'",
                    layout.index
                )));
            }
            let state = gathered.entry(uid.clone()).or_default();
            state.parallelism = layout.parallelism;
            state.keyed.merge(operator.keyed.clone());
            state
                .by_subtask
                .insert(layout.index, operator.operator.clone());
        }
    }
    Ok(gathered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::CheckpointMetadata;

    /// A layout of one keyed operator "sum" at `parallelism`, fed by a source "src".
    fn layout(parallelism: u32) -> JobLayout {
        JobLayout {
            max_parallelism: 8,
            subtasks: (0..parallelism)
                .map(|index| SubtaskLayout {
                    index,
                    parallelism,
                    source: Some("src".to_owned()),
                    operators: vec!["sum".to_owned()],
                })
                .collect(),
        }
    }

    /// Snapshots where subtask `i` holds key group `g` as the byte `g` for every group of its
    /// range, its position `[i]` and its operator state `[10 + i]`.
    fn snapshots(parallelism: u32) -> BTreeMap<usize, SubtaskSnapshot> {
        (0..parallelism)
            .map(|index| {
                let range = KeyGroupRange::for_subtask(index, parallelism, 8);
                let mut keyed = KeyedStateSnapshot::default();
                keyed.tables.insert(
                    "count".to_owned(),
                    range
                        .iter()
                        .map(|group| (group, vec![group as u8]))
                        .collect(),
                );
                let snapshot = SubtaskSnapshot {
                    source_positions: vec![vec![index as u8]],
                    operators: vec![OperatorSnapshot {
                        keyed,
                        operator: vec![vec![10 + index as u8]],
                        deferred: None,
                    }],
                };
                (index as usize, snapshot)
            })
            .collect()
    }

    #[test]
    fn same_parallelism_gives_every_subtask_its_own_state() {
        let assigned = assign_state(&layout(2), &snapshots(2), &layout(2)).unwrap();
        let expected: Vec<SubtaskSnapshot> = snapshots(2).into_values().collect();
        assert_eq!(assigned, expected);
    }

    #[test]
    fn rescaling_moves_key_groups_and_gives_everyone_all_non_keyed_state() {
        let assigned = assign_state(&layout(2), &snapshots(2), &layout(3)).unwrap();
        assert_eq!(assigned.len(), 3);
        let mut groups = Vec::new();
        for (index, snapshot) in assigned.iter().enumerate() {
            let range = KeyGroupRange::for_subtask(index as u32, 3, 8);
            let table = &snapshot.operators[0].keyed.tables["count"];
            assert!(table.keys().all(|group| range.contains(*group)));
            groups.extend(table.iter().map(|(group, bytes)| (*group, bytes.clone())));
            assert_eq!(snapshot.source_positions, [vec![0], vec![1]]);
            assert_eq!(snapshot.operators[0].operator, [vec![10], vec![11]]);
        }
        groups.sort();
        let every_group: Vec<(u32, Vec<u8>)> = (0..8).map(|g| (g, vec![g as u8])).collect();
        assert_eq!(groups, every_group, "no key group lost or doubled");
    }

    #[test]
    fn state_that_does_not_fit_is_refused() {
        let mut other_groups = layout(2);
        other_groups.max_parallelism = 16;
        assert_eq!(
            assign_state(&layout(2), &snapshots(2), &other_groups),
            Err(RestoreError::MaxParallelismChanged {
                checkpoint: 8,
                job: 16
            })
        );
        let mut renamed = layout(2);
        for subtask in &mut renamed.subtasks {
            subtask.operators = vec!["total".to_owned()];
        }
        assert_eq!(
            assign_state(&layout(2), &snapshots(2), &renamed),
            Err(RestoreError::OperatorMissing("sum".to_owned()))
        );
        let mut torn = snapshots(2);
        torn.remove(&1);
        assert!(matches!(
            assign_state(&layout(2), &torn, &layout(2)),
            Err(RestoreError::Inconsistent(_))
        ));
    }

    #[test]
    fn an_attempt_restores_every_subtask_and_numbers_past_every_checkpoint_seen() {
        let metadata = CheckpointMetadata {
            checkpoint: CheckpointId(4),
            savepoint: false,
            triggered_at_ms: 0,
            acknowledged_at_ms: 0,
            subtasks: 2,
            state_bytes: 0,
            layout: layout(2),
        };
        let latest = CompletedCheckpoint {
            metadata,
            snapshots: std::sync::Arc::new(snapshots(2)),
        };
        let fresh = start_attempt(None, &layout(3), None).unwrap();
        assert_eq!(fresh.restored.len(), 3);
        assert!(fresh.restored.iter().all(Option::is_none));
        assert_eq!(fresh.first_checkpoint, CheckpointId(1));
        let restored = start_attempt(Some(&latest), &layout(3), None).unwrap();
        assert!(restored.restored.iter().all(Option::is_some));
        assert_eq!(restored.first_checkpoint, CheckpointId(5));
        // The store holds a newer, unfinished checkpoint: its id is not used again.
        let past_store = start_attempt(Some(&latest), &layout(2), Some(CheckpointId(7))).unwrap();
        assert_eq!(past_store.first_checkpoint, CheckpointId(7));
    }

    #[test]
    fn operators_the_checkpoint_does_not_know_start_empty() {
        let mut grown = layout(2);
        for subtask in &mut grown.subtasks {
            subtask.operators.push("new".to_owned());
        }
        let assigned = assign_state(&layout(2), &snapshots(2), &grown).unwrap();
        assert_eq!(assigned[1].operators[1], OperatorSnapshot::default());
    }
}

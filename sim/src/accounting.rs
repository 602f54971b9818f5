//! Accounting for state across restores: every source position and every keyed chunk of a
//! checkpoint goes to exactly one subtask of the job that restores it — the one that reads the
//! partition, or that the key-hash exchange routes the key group to — unchanged.
//!
//! The output and the final state show a restore that loses or doubles state only when a key
//! of the key group concerned comes along afterwards, and only as a wrong count somewhere
//! later. This oracle looks at the restore itself, with rules of its own: a key group belongs
//! to the subtask `subtask_for_key_group` names (the function the exchange routes by, not the
//! range computation restoring uses), and a log partition `p` to source subtask
//! `p % parallelism` (the log source's documented assignment). It checks:
//!
//! - **a checkpoint** (each one restored, and the final one): every partition of every source
//!   has exactly one position, and every key group of every keyed table sits in exactly one
//!   subtask — the one that owns it;
//! - **a restore**: each of those chunks reaches exactly the subtask that owns it in the new
//!   layout, with the same bytes, and nothing else arrives; each partition's position reaches
//!   the subtask that reads it;
//! - **restores in order**: a restore never goes back to a checkpoint older than one restored
//!   before, nor any partition's position behind where a restore put it before — unless the
//!   job fell back past checkpoints a fault damaged.

use std::collections::BTreeMap;

use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_core::coordinator::CompletedCheckpoint;
use rill_core::key::subtask_for_key_group;
use rill_core::layout::JobLayout;
use rill_core::source::decode_position;

/// A source's partition: (source uid, partition).
type Partition = (String, u32);
/// A keyed chunk: (operator uid, state table, key group).
type Chunk = (String, String, u32);

/// What one checkpoint holds, accounted for.
struct Ledger {
    /// Each partition's next offset.
    positions: BTreeMap<Partition, u64>,
    /// Each keyed chunk's bytes.
    chunks: BTreeMap<Chunk, Vec<u8>>,
}

/// A source position as the log source writes it: `(partition, next offset)` pairs.
fn offsets(bytes: &[u8]) -> Result<Vec<(u32, u64)>, String> {
    decode_position(bytes).map_err(|error| format!("a source position cannot be read: {error}"))
}

/// Accounts for a checkpoint's positions and chunks: each once, where it belongs.
fn ledger_of(checkpoint: &CompletedCheckpoint) -> Result<Ledger, String> {
    let id = checkpoint.id();
    let layout = &checkpoint.metadata.layout;
    let mut ledger = Ledger {
        positions: BTreeMap::new(),
        chunks: BTreeMap::new(),
    };
    for (position, subtask) in layout.subtasks.iter().enumerate() {
        let Some(snapshot) = checkpoint.snapshots.get(&position) else {
            return Err(format!("{id} has no snapshot of subtask {position}"));
        };
        if let Some(source) = &subtask.source {
            for bytes in &snapshot.source_positions {
                for (partition, next) in offsets(bytes)? {
                    let key = (source.clone(), partition);
                    if ledger.positions.insert(key, next).is_some() {
                        return Err(format!(
                            "{id} holds two positions of partition {partition} of '{source}'"
                        ));
                    }
                }
            }
        }
        for (uid, operator) in subtask.operators.iter().zip(&snapshot.operators) {
            for (table, groups) in &operator.keyed.tables {
                for (&group, bytes) in groups {
                    let owner =
                        subtask_for_key_group(group, subtask.parallelism, layout.max_parallelism);
                    if owner != subtask.index {
                        return Err(format!(
                            "{id} holds key group {group} of '{uid}' ({table}) in subtask {} of {}, which does not own it (subtask {owner} does)",
                            subtask.index, subtask.parallelism
                        ));
                    }
                    let chunk = (uid.clone(), table.clone(), group);
                    if ledger.chunks.insert(chunk, bytes.clone()).is_some() {
                        return Err(format!(
                            "{id} holds key group {group} of '{uid}' ({table}) twice"
                        ));
                    }
                }
            }
        }
    }
    Ok(ledger)
}

/// Checks a checkpoint on its own: every position and chunk once, where it belongs.
pub fn check_checkpoint(checkpoint: &CompletedCheckpoint) -> Result<(), String> {
    ledger_of(checkpoint).map(|_| ())
}

/// The restores of one run so far.
#[derive(Default)]
pub struct Restores {
    /// The checkpoint restored last, and where it put each partition.
    last: Option<(CheckpointId, BTreeMap<Partition, u64>)>,
}

impl Restores {
    /// Checks that `restored` — what each subtask of a job laid out as `layout` gets, by
    /// position — hands every position and chunk of `checkpoint` to exactly the subtask it
    /// belongs to, and that the restore does not go back behind an earlier one.
    pub fn check(
        &mut self,
        checkpoint: &CompletedCheckpoint,
        layout: &JobLayout,
        restored: &[Option<SubtaskSnapshot>],
    ) -> Result<(), String> {
        let id = checkpoint.id();
        let ledger = ledger_of(checkpoint)?;
        let mut unclaimed = ledger.chunks.clone();
        let mut handed: BTreeMap<Partition, u32> = BTreeMap::new();
        for (position, subtask) in layout.subtasks.iter().enumerate() {
            let Some(Some(snapshot)) = restored.get(position) else {
                return Err(format!(
                    "restoring {id}, subtask {position} gets no snapshot"
                ));
            };
            if let Some(source) = &subtask.source {
                for bytes in &snapshot.source_positions {
                    for (partition, next) in offsets(bytes)? {
                        let key = (source.clone(), partition);
                        if ledger.positions.get(&key) != Some(&next) {
                            return Err(format!(
                                "restoring {id}, source subtask {} of '{source}' gets position {next} of partition {partition}, which the checkpoint does not hold",
                                subtask.index
                            ));
                        }
                        if partition % subtask.parallelism == subtask.index {
                            *handed.entry(key).or_default() += 1;
                        }
                    }
                }
            }
            for (uid, operator) in subtask.operators.iter().zip(&snapshot.operators) {
                for (table, groups) in &operator.keyed.tables {
                    for (&group, bytes) in groups {
                        let owner = subtask_for_key_group(
                            group,
                            subtask.parallelism,
                            layout.max_parallelism,
                        );
                        let chunk = (uid.clone(), table.clone(), group);
                        let what = format!(
                            "restoring {id}, subtask {} of {} of '{uid}' gets key group {group} ({table})",
                            subtask.index, subtask.parallelism
                        );
                        if owner != subtask.index {
                            return Err(format!("{what}, which subtask {owner} owns"));
                        }
                        match unclaimed.remove(&chunk) {
                            Some(stored) if stored == *bytes => {}
                            Some(_) => return Err(format!("{what} changed")),
                            None if ledger.chunks.contains_key(&chunk) => {
                                return Err(format!("{what} a second time"));
                            }
                            None => {
                                return Err(format!("{what}, which the checkpoint does not hold"));
                            }
                        }
                    }
                }
            }
        }
        if let Some(((uid, table, group), _)) = unclaimed.into_iter().next() {
            return Err(format!(
                "restoring {id}, no subtask gets key group {group} of '{uid}' ({table})"
            ));
        }
        for ((source, partition), next) in &ledger.positions {
            let times = handed
                .get(&(source.clone(), *partition))
                .copied()
                .unwrap_or(0);
            if times != 1 {
                return Err(format!(
                    "restoring {id}, position {next} of partition {partition} of '{source}' reaches {times} subtasks that read the partition"
                ));
            }
        }
        if let Some((last, positions)) = &self.last {
            if id < *last {
                return Err(format!("restoring {id}, after {last} was restored"));
            }
            for (partition, &before) in positions {
                if let Some(&now) = ledger.positions.get(partition)
                    && now < before
                {
                    return Err(format!(
                        "restoring {id} puts partition {} of '{}' back to {now}, behind {before} where restoring {last} put it",
                        partition.1, partition.0
                    ));
                }
            }
        }
        self.last = Some((id, ledger.positions));
        Ok(())
    }

    /// The job falls back to `checkpoint` (or to none), past newer ones a fault damaged: a
    /// restore of one of those no longer binds where the next restore may go.
    pub fn fall_back_to(&mut self, checkpoint: Option<CheckpointId>) {
        if self
            .last
            .as_ref()
            .is_some_and(|(last, _)| checkpoint.is_none_or(|checkpoint| *last > checkpoint))
        {
            self.last = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rill_core::coordinator::CheckpointMetadata;
    use rill_core::defects::Defect;
    use rill_core::key::KeyGroupRange;
    use rill_core::layout::{StateAssigner, SubtaskLayout};
    use rill_core::operator::OperatorSnapshot;
    use rill_core::source::encode_position;

    use super::*;

    const MAX: u32 = 16;

    /// A source "src" chained to a keyed "sum", at `parallelism`.
    fn layout(parallelism: u32) -> JobLayout {
        JobLayout {
            max_parallelism: MAX,
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

    /// Checkpoint `id` of the job at `parallelism`: every key group holds a chunk, and each of
    /// 5 partitions is at offset `offset`.
    fn checkpoint(id: u64, parallelism: u32, offset: u64) -> CompletedCheckpoint {
        let snapshots = (0..parallelism)
            .map(|index| {
                let range = KeyGroupRange::for_subtask(index, parallelism, MAX);
                let mut operator = OperatorSnapshot::default();
                operator.keyed.tables.insert(
                    "reduce".to_owned(),
                    range
                        .iter()
                        .map(|group| (group, vec![group as u8]))
                        .collect(),
                );
                let partitions: Vec<(u32, u64)> = (index..5)
                    .step_by(parallelism as usize)
                    .map(|partition| (partition, offset))
                    .collect();
                let snapshot = SubtaskSnapshot {
                    source_positions: vec![encode_position(&partitions).unwrap()],
                    operators: vec![operator],
                };
                (index as usize, snapshot)
            })
            .collect();
        CompletedCheckpoint {
            metadata: CheckpointMetadata {
                checkpoint: CheckpointId(id),
                savepoint: false,
                triggered_at_ms: 0,
                acknowledged_at_ms: 0,
                subtasks: parallelism as usize,
                state_bytes: 0,
                layout: layout(parallelism),
            },
            snapshots: Arc::new(snapshots),
        }
    }

    fn restore(
        restores: &mut Restores,
        assigner: StateAssigner,
        from: &CompletedCheckpoint,
        parallelism: u32,
    ) -> Result<(), String> {
        let start = assigner
            .start_attempt(Some(from), &layout(parallelism), None)
            .unwrap();
        restores.check(from, &layout(parallelism), &start.restored)
    }

    #[test]
    fn rescales_that_hand_everything_to_its_owner_pass() {
        let mut restores = Restores::default();
        let ok = StateAssigner::default();
        assert_eq!(check_checkpoint(&checkpoint(1, 3, 10)), Ok(()));
        assert_eq!(restore(&mut restores, ok, &checkpoint(1, 3, 10), 4), Ok(()));
        assert_eq!(restore(&mut restores, ok, &checkpoint(2, 4, 20), 3), Ok(()));
        assert_eq!(restore(&mut restores, ok, &checkpoint(2, 4, 20), 1), Ok(()));
    }

    #[test]
    fn a_key_group_range_one_group_too_long_is_caught() {
        let mut broken = StateAssigner::default();
        broken.plant_defect(Defect::KeyGroupRangeOffByOne);
        let error = restore(&mut Restores::default(), broken, &checkpoint(1, 3, 10), 4)
            .expect_err("caught");
        assert!(
            error.contains("gets key group 4 (reduce), which subtask 1 owns"),
            "{error}"
        );
        // Where the parallelism does not divide the key groups, the defect does not show.
        assert_eq!(
            restore(&mut Restores::default(), broken, &checkpoint(1, 4, 10), 3),
            Ok(())
        );
    }

    #[test]
    fn a_restore_behind_an_earlier_one_is_caught() {
        let mut restores = Restores::default();
        let ok = StateAssigner::default();
        assert_eq!(restore(&mut restores, ok, &checkpoint(5, 2, 30), 2), Ok(()));
        let older = restore(&mut restores, ok, &checkpoint(4, 2, 20), 2).expect_err("caught");
        assert!(older.contains("after checkpoint 5 was restored"), "{older}");
        let behind = restore(&mut restores, ok, &checkpoint(6, 2, 29), 2).expect_err("caught");
        assert!(behind.contains("back to 29, behind 30"), "{behind}");
    }

    #[test]
    fn a_chunk_in_the_wrong_subtask_of_a_checkpoint_is_caught() {
        let mut misplaced = checkpoint(1, 2, 0);
        let snapshots = Arc::make_mut(&mut misplaced.snapshots);
        let chunk = snapshots.get_mut(&1).unwrap().operators[0]
            .keyed
            .tables
            .get_mut("reduce")
            .unwrap()
            .remove(&8)
            .unwrap();
        snapshots.get_mut(&0).unwrap().operators[0]
            .keyed
            .tables
            .get_mut("reduce")
            .unwrap()
            .insert(8, chunk);
        let error = check_checkpoint(&misplaced).expect_err("caught");
        assert!(error.contains("key group 8"), "{error}");
    }
}

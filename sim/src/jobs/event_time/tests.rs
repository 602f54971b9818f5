//! The event-time jobs' inputs and references: no record late yet many on the bound, each
//! record counted once per window, sessions bridged, every timer and joined pair counted, and
//! state left in a final checkpoint reported by table.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rill_core::checkpoint::CheckpointId;
use rill_core::operator::OperatorSnapshot;

use super::*;

fn spec(records: usize, partitions: u32, keys: u32) -> InputSpec {
    InputSpec {
        records,
        partitions,
        keys,
        arrival_ms: 0,
    }
}

fn times(input: &GeneratedInput) -> Vec<Vec<i64>> {
    input
        .topics
        .iter()
        .flat_map(|topic| &topic.partitions)
        .map(|records| records.iter().map(|r| r.timestamp).collect())
        .collect()
}

#[test]
fn no_record_is_late_in_its_partition_yet_many_sit_on_the_bound() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let input = window_aggregate(&spec(2_000, 3, 20), &mut rng);
    let (mut out_of_order, mut on_the_bound) = (0, 0);
    for partition in times(&input) {
        let mut largest = i64::MIN;
        for time in partition {
            // The partition's watermark is `largest - OUT_OF_ORDERNESS_MS - 1`.
            assert!(time > largest.saturating_sub(OUT_OF_ORDERNESS_MS + 1));
            out_of_order += usize::from(time < largest);
            on_the_bound += usize::from(time == largest.saturating_sub(OUT_OF_ORDERNESS_MS));
            largest = largest.max(time);
        }
    }
    assert!(out_of_order > 500, "{out_of_order} records out of order");
    assert!(
        on_the_bound >= 20,
        "{on_the_bound} records exactly on the out-of-orderness bound"
    );
}

#[test]
fn the_window_reference_counts_each_record_once_per_window_it_is_in() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let input = window_aggregate(&spec(500, 2, 10), &mut rng);
    let mut counted = [0u32; 2];
    for bytes in input.expected.keys() {
        let record = timed(bytes.clone(), 0);
        let (kind, _, start, end, _, count): WindowResult = decode(&record);
        let size = [TUMBLING_MS, SLIDING_MS][usize::from(kind)];
        let offset = [TUMBLING_OFFSET_MS, 0][usize::from(kind)];
        assert_eq!(
            (end - start, (start - offset).rem_euclid(SLIDE_MS)),
            (size, 0)
        );
        counted[usize::from(kind)] += count;
    }
    let per_record = (SLIDING_MS / SLIDE_MS) as u32;
    assert_eq!(counted, [500, 500 * per_record]);
}

/// Replays each key's records in log order through a model of session merging, and counts
/// the records that bridge two sessions or more already open.
fn bridging_records(input: &GeneratedInput) -> usize {
    let mut bridging = 0;
    for partition in &input.topics[0].partitions {
        let mut sessions: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
        for record in partition {
            let (key, _): Reading = decode(record);
            let own = (record.timestamp, record.timestamp + SESSION_GAP_MS);
            let open = sessions.entry(key).or_default();
            let (touched, mut kept): (Vec<_>, Vec<_>) = open
                .drain(..)
                .partition(|&(start, end)| start <= own.1 && own.0 <= end);
            bridging += usize::from(touched.len() >= 2);
            let merged = touched
                .iter()
                .fold(own, |(s, e), &(start, end)| (s.min(start), e.max(end)));
            kept.push(merged);
            *open = kept;
        }
    }
    bridging
}

#[test]
fn session_input_has_records_that_bridge_sessions_read_before_them() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let input = session_windows(&spec(1_000, 2, 12), &mut rng);
    let bridging = bridging_records(&input);
    assert!(bridging >= 20, "only {bridging} bridging records");
    let sessions = input.expected.len();
    assert!(
        (50..900).contains(&sessions),
        "{sessions} sessions of 1000 records: they should merge, but not all into one"
    );
}

#[test]
fn the_timer_reference_counts_every_record_once() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let input = event_timers(&spec(300, 2, 7), &mut rng);
    let total: u64 = input
        .final_state
        .values()
        .map(|count| count.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 300);
    let counted: u32 = input
        .expected
        .keys()
        .map(|bytes| decode::<TimerResult>(&timed(bytes.clone(), 0)).2)
        .sum();
    assert_eq!(counted, 300);
}

#[test]
fn state_left_in_the_final_checkpoint_is_reported_by_table() {
    use rill_core::checkpoint::SubtaskSnapshot;
    use rill_core::coordinator::CheckpointMetadata;
    use rill_core::layout::{JobLayout, SubtaskLayout};

    let subtask = |operators: &[&str]| SubtaskLayout {
        index: 0,
        parallelism: 1,
        source: None,
        operators: operators.iter().map(|name| (*name).to_owned()).collect(),
    };
    let mut window = OperatorSnapshot::default();
    for table in ["window-contents", "__timers/event-time"] {
        let groups = [(3, vec![1]), (7, vec![2])].into_iter().collect();
        window.keyed.tables.insert(table.to_owned(), groups);
    }
    let metadata = CheckpointMetadata {
        checkpoint: CheckpointId(9),
        savepoint: false,
        triggered_at_ms: 0,
        acknowledged_at_ms: 0,
        subtasks: 2,
        state_bytes: 0,
        layout: JobLayout {
            max_parallelism: 128,
            subtasks: vec![
                subtask(&["tumbling", "tumbling (main output)"]),
                subtask(&["sliding", "sliding (main output)"]),
            ],
        },
    };
    let snapshots = [
        SubtaskSnapshot {
            source_positions: Vec::new(),
            operators: vec![window, OperatorSnapshot::default()],
        },
        SubtaskSnapshot {
            source_positions: Vec::new(),
            operators: vec![OperatorSnapshot::default(); 2],
        },
    ];
    let checkpoint = CompletedCheckpoint {
        metadata,
        snapshots: Arc::new(snapshots.into_iter().enumerate().collect()),
    };
    let state = final_state(super::super::JobKind::WindowAggregate, &checkpoint);
    let expected: FinalState = [
        ("tumbling: __timers/event-time", "left in 2 key groups"),
        ("tumbling: window-contents", "left in 2 key groups"),
    ]
    .into_iter()
    .map(|(table, left)| (table.to_owned(), left.to_owned()))
    .collect();
    assert_eq!(state, Ok(expected));
}

#[test]
fn the_join_reference_has_pairs_of_both_joins() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let input = join(&spec(600, 2, 10), &mut rng);
    let mut by_kind = [0i64; 2];
    for (bytes, count) in &input.expected {
        let (kind, ..): JoinResult = decode(&timed(bytes.clone(), 0));
        by_kind[usize::from(kind)] += count;
    }
    assert!(by_kind.iter().all(|&pairs| pairs > 100), "{by_kind:?}");
}

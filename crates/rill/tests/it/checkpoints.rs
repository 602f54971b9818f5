//! Checkpoints taken while jobs run: barriers flow through keyed exchanges and unions, every
//! subtask acknowledges, and the results are the same as without checkpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use rill::prelude::*;

/// Emits `0..end` a few numbers per poll, pausing briefly, so that the job lives long enough for
/// several checkpoints.
struct Trickle {
    next: u64,
    end: u64,
}

impl Source for Trickle {
    type Out = u64;

    fn poll_next(&mut self, out: &mut SourceOutput<u64>) -> Result<SourcePoll, BoxError> {
        std::thread::sleep(Duration::from_micros(500));
        for _ in 0..20 {
            if self.next == self.end {
                return Ok(SourcePoll::Finished);
            }
            out.collect(self.next);
            self.next += 1;
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        rill::core::source::encode_position(&self.next).map(Some)
    }
}

#[test]
fn checkpoints_complete_while_a_keyed_job_runs_and_change_no_result() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(10));
    let left = env.from_source("left", true, |index, parallelism| Trickle {
        next: u64::from(index) * 6_000 / u64::from(parallelism),
        end: u64::from(index + 1) * 6_000 / u64::from(parallelism),
    });
    let right = env.from_source("right", false, |_, _| Trickle {
        next: 6_000,
        end: 10_000,
    });
    let sums = left
        .union([right])
        .map(|n| (n % 7, n))
        .key_by(|(key, _): &(u64, u64)| *key)
        .reduce(|(key, a), (_, b)| (key, a + b))
        .collect();
    let report = env.execute("checkpointed").unwrap();
    assert!(report.checkpoints_completed >= 1, "{report:?}");
    let latest = report.latest_checkpoint.unwrap();
    assert_eq!(
        latest.subtasks, report.subtasks,
        "every subtask acknowledged"
    );
    assert!(
        latest.state_bytes > 0,
        "the reduce state and the source positions are in it"
    );

    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let updates = sums.take();
    assert_eq!(
        updates.len(),
        10_000,
        "one update per record: nothing lost or doubled"
    );
    for (key, sum) in updates {
        last.insert(key, sum);
    }
    for key in 0..7 {
        assert_eq!(
            last[&key],
            (0..10_000u64).filter(|n| n % 7 == key).sum::<u64>()
        );
    }
}

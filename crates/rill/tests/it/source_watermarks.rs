//! Watermarks from the event log on the actor runtime: generated per partition, so that a
//! partition lagging behind holds them back, and with idleness, so that an empty partition does
//! not hold them back for good.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rill::core::operator::OneInputOperator;
use rill::prelude::*;

/// One thing the observing operator saw, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// A record from this partition, with this timestamp.
    Record {
        partition: u32,
        timestamp: Timestamp,
    },
    /// A watermark.
    Watermark(Timestamp),
}

type Sightings = Arc<Mutex<Vec<Seen>>>;

/// Passes nothing on; remembers every record and every watermark it is told about.
struct Observer(Sightings);

impl OneInputOperator for Observer {
    type In = LogRecord;
    type Out = ();

    fn process_batch(
        &mut self,
        input: Vec<Record<LogRecord>>,
        _out: &mut Vec<Record<()>>,
    ) -> Result<(), BoxError> {
        let mut seen = self.0.lock().unwrap();
        for record in input {
            seen.push(Seen::Record {
                partition: record.value.partition,
                timestamp: record.timestamp().unwrap(),
            });
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: Timestamp,
        _out: &mut Vec<Record<()>>,
    ) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(Seen::Watermark(watermark));
        Ok(())
    }
}

fn event(partition: u32, timestamp: i64) -> ProducerRecord {
    ProducerRecord::new(b"event".to_vec())
        .with_partition(partition)
        .with_timestamp(timestamp)
}

/// A log whose topic `events` has one partition per entry of `partitions`, holding records
/// with those timestamps.
fn log_with_events(dir: &std::path::Path, partitions: &[Vec<i64>]) -> EventLog {
    let log = EventLog::open_or_create(dir).unwrap();
    log.create_topic("events", partitions.len() as u32).unwrap();
    let records = partitions
        .iter()
        .enumerate()
        .flat_map(|(partition, timestamps)| {
            timestamps
                .iter()
                .map(move |&timestamp| event(partition as u32, timestamp))
        })
        .collect();
    log.append_batch("events", records).unwrap();
    log
}

/// A job reading `events` with watermarks by `strategy` into an [`Observer`], one subtask
/// reading both partitions in small batches, so that it polls many times.
fn observed_job(
    log: &EventLog,
    strategy: WatermarkStrategy,
    bounded: bool,
) -> (StreamEnv, Sightings) {
    let mut config = ExecutionConfig::default();
    config.runtime.flow.batch_size = 3;
    let env = StreamEnv::with_config(config);
    let mut source = LogSource::records(log, "events")
        .unwrap()
        .with_watermarks(strategy);
    if bounded {
        source = source.bounded();
    }
    let seen = Sightings::default();
    let observer = seen.clone();
    env.from_log(source)
        .transform("observer", move || Observer(observer.clone()))
        .collect();
    (env, seen)
}

fn watermarks(seen: &[Seen]) -> Vec<Timestamp> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Watermark(watermark) => Some(*watermark),
            Seen::Record { .. } => None,
        })
        .collect()
}

#[test]
fn watermarks_from_the_log_wait_for_the_partition_that_lags_behind() {
    let dir = tempfile::tempdir().unwrap();
    let ahead: Vec<i64> = (0..40).map(|i| 100_000 + i * 1_000).collect();
    let lagging: Vec<i64> = (0..20).map(|i| 1_000 + i * 10).collect();
    let last_lagging = Timestamp(lagging[19]);
    let log = log_with_events(dir.path(), &[ahead, lagging]);
    // A watermark at every record (punctuated), so that the job does not depend on how fast
    // it reads: periodic ones, every 200 ms, might come only at the end of so small an input.
    let at_every_record = WatermarkStrategy::punctuated(|t: Timestamp| Some(Timestamp(t.0 - 1)));
    let (env, seen) = observed_job(&log, at_every_record, true);
    env.execute("lagging partition").unwrap();

    let seen = seen.lock().unwrap().clone();
    let mut watermark = Timestamp::MIN;
    for sighting in &seen {
        match *sighting {
            Seen::Record {
                timestamp,
                partition,
            } => assert!(
                timestamp > watermark,
                "a record of partition {partition} at {timestamp} came after the watermark \
                 {watermark}: it is late"
            ),
            Seen::Watermark(next) => {
                assert!(next > watermark, "watermarks only advance");
                watermark = next;
            }
        }
    }
    let records = seen
        .iter()
        .filter(|s| matches!(s, Seen::Record { .. }))
        .count();
    assert_eq!(records, 60, "every record arrived");
    let lagging_read = seen
        .iter()
        .rposition(|s| matches!(s, Seen::Record { partition: 1, .. }))
        .unwrap();
    let held_back = watermarks(&seen[..lagging_read]);
    assert!(
        !held_back.is_empty(),
        "watermarks advanced while the lagging partition was read: {seen:?}"
    );
    assert!(
        held_back.iter().all(|w| *w < last_lagging),
        "while partition 1 still had records to come, the watermark stayed behind them: \
         {held_back:?}"
    );
    assert_eq!(
        watermarks(&seen).last(),
        Some(&Timestamp::MAX),
        "the bounded input ended"
    );
}

#[test]
fn with_idleness_an_empty_partition_does_not_hold_the_watermark_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_events(dir.path(), &[vec![1_000, 2_000], Vec::new()]);
    let strategy = WatermarkStrategy::monotonous().with_idleness(Duration::from_millis(50));
    let (env, seen) = observed_job(&log, strategy, false);
    let job = env.execute_async("empty partition").unwrap();

    // Partition 0 stays busy, a record every 10 ms; partition 1 never has one.
    let producing = AtomicBool::new(true);
    let produced_up_to = std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            let mut timestamp = 2_000;
            while producing.load(Ordering::Relaxed) {
                timestamp += 1_000;
                log.append("events", event(0, timestamp)).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            timestamp
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && !watermarks(&seen.lock().unwrap())
                .iter()
                .any(|w| *w > Timestamp(2_000))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        producing.store(false, Ordering::Relaxed);
        producer.join().unwrap()
    });
    job.cancel();
    assert!(
        job.wait().is_err(),
        "a cancelled job reports that it was cancelled"
    );

    let watermarks = watermarks(&seen.lock().unwrap());
    assert!(
        watermarks.iter().any(|w| *w > Timestamp(2_000)),
        "the watermark followed partition 0 past the empty partition: {watermarks:?}"
    );
    assert!(
        watermarks.iter().all(|w| *w < Timestamp(produced_up_to)),
        "and never past what partition 0 had: {watermarks:?}"
    );
}

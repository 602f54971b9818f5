//! An alert rule over the event log (an event-driven application): a card payment that is
//! authorized must be captured within 30 seconds; when the capture does not come, a timer
//! raises an alert. Captures that come too late go to a side output, for reconciliation.
//!
//! ```text
//! cargo run --release -p rill --example alerts -- --generate 50000 --bounded
//! rill log consume payment-alerts | head
//! rill log consume late-captures | head
//! ```
//!
//! A payment event is a record of the `payments` topic keyed by the payment id, whose value is
//! `authorized` or `captured` and whose log timestamp is when it happened. Events of different
//! payments arrive out of order (up to 2 s late); a payment's own events arrive in turn, as
//! they share a key and so a partition. The rule keeps each
//! payment's deadline in keyed state and registers an event-time timer for it: a capture by
//! the deadline deletes the timer; otherwise the timer fires when the watermark passes the
//! deadline and writes `payment<TAB>deadline` to `payment-alerts`. The decision depends on the
//! events' times only, not on when they arrive, so it is the same however the job runs, fails
//! and recovers. Timers are checkpointed with the state: an alert due when the job fails is
//! raised after recovery, once. Ctrl-C or SIGTERM stops the job with a savepoint when it
//! checkpoints (`--checkpoint-interval-ms`), and cancels it otherwise, saying so.

use std::time::Duration;

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rill::SignalledEnd;
use rill::log::LogError;
use rill::prelude::*;
use shared::{JobArgs, ensure_topic, init_tracing};

mod shared;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
}

const PAYMENTS: &str = "payments";
const ALERTS: &str = "payment-alerts";
const LATE_CAPTURES: &str = "late-captures";

/// How long a capture may take after its authorization.
const CAPTURE_WITHIN_MS: i64 = 30_000;
/// How far behind the latest event of its partition an event may arrive.
const MAX_DELAY_MS: i64 = 2_000;

/// What happened to a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Authorized,
    Captured,
}

/// (payment id, what happened)
type Payment = (String, Kind);

/// Raises an alert when an authorized payment is not captured in time.
#[derive(Clone)]
struct CaptureDeadline {
    deadline: ValueState<i64>,
    late_captures: OutputTag<String>,
}

impl KeyedProcessFunction for CaptureDeadline {
    type Key = String;
    type In = Payment;
    type Out = (String, i64);

    fn process(
        &mut self,
        (payment, kind): Payment,
        ctx: &mut KeyedContext<'_, String, (String, i64)>,
    ) -> Result<(), BoxError> {
        let time = ctx.timestamp().ok_or("a payment event without a time")?.0;
        match (kind, self.deadline.get(ctx)) {
            (Kind::Authorized, _) => {
                let deadline = time + CAPTURE_WITHIN_MS;
                self.deadline.set(ctx, deadline);
                ctx.register_event_time_timer(Timestamp(deadline));
            }
            (Kind::Captured, Some(deadline)) if time <= deadline => {
                self.deadline.clear(ctx);
                ctx.delete_event_time_timer(Timestamp(deadline));
            }
            // After the deadline: whether or not the alert went out yet, it will.
            (Kind::Captured, _) => ctx.output(&self.late_captures, payment),
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        deadline: Timestamp,
        ctx: &mut KeyedContext<'_, String, (String, i64)>,
    ) -> Result<(), BoxError> {
        self.deadline.clear(ctx);
        ctx.emit((ctx.key().clone(), deadline.0));
        Ok(())
    }
}

/// Describes the alert job: payments from `PAYMENTS`, alerts to `ALERTS`, late captures to
/// `LATE_CAPTURES`.
fn alert_rule(
    env: &StreamEnv,
    log: &EventLog,
    bounded: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut source = LogSource::with_decoder(log, PAYMENTS, |record| {
        let payment =
            String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
        let kind = match record.value.as_slice() {
            b"captured" => Kind::Captured,
            _ => Kind::Authorized,
        };
        (payment, kind)
    })?
    .with_watermarks(WatermarkStrategy::bounded_out_of_orderness(
        Duration::from_millis(MAX_DELAY_MS as u64),
    ));
    if bounded {
        source = source.bounded();
    }
    let alerts_sink = LogSink::with_encoder(log, ALERTS, |(payment, deadline): &(String, i64)| {
        ProducerRecord::new(format!("{payment}\t{deadline}").into_bytes())
            .with_key(payment.clone().into_bytes())
    })?;
    let late_sink = LogSink::with_encoder(log, LATE_CAPTURES, |payment: &String| {
        ProducerRecord::new(payment.clone().into_bytes()).with_key(payment.clone().into_bytes())
    })?;

    let late_captures = OutputTag::new("late-captures");
    let alerts = env
        .from_log(source)
        .name("payments")
        .key_by(|(payment, _): &Payment| payment.clone())
        .process(CaptureDeadline {
            deadline: ValueState::new("deadline"),
            late_captures: late_captures.clone(),
        })
        .name("capture deadline")
        .uid("capture-deadline");
    alerts
        .side_output(&late_captures)
        .sink_to_log(late_sink)
        .name("late captures");
    alerts.sink_to_log(alerts_sink).name("alerts");
    Ok(())
}

/// A payment's events: authorized at `authorized`, captured at `captured` if ever.
struct Generated {
    payment: String,
    authorized: i64,
    captured: Option<i64>,
}

/// `count` payments an hour of event time apart in total: most captured within seconds, some
/// late, some never.
fn generate_payments(count: u64, seed: u64) -> Vec<Generated> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let authorized = (i128::from(i) * 3_600_000 / i128::from(count.max(1))) as i64;
            let captured = match rng.random_range(0..100) {
                0..5 => None,
                5..10 => Some(authorized + rng.random_range(CAPTURE_WITHIN_MS + 1..120_000)),
                _ => Some(authorized + rng.random_range(1_000..=CAPTURE_WITHIN_MS)),
            };
            Generated {
                payment: format!("pay-{i:06}"),
                authorized,
                captured,
            }
        })
        .collect()
}

/// Appends the payments' events in the order they arrive: each up to `MAX_DELAY_MS` after it
/// happened, in its payment's partition, and — as a producer writing a payment's events in
/// turn would — a capture after its authorization.
fn append_payments(log: &EventLog, payments: &[Generated], seed: u64) -> Result<(), LogError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events: Vec<(i64, ProducerRecord)> = Vec::new();
    let record = |payment: &Generated, kind: &str, time: i64| {
        ProducerRecord::new(kind.as_bytes().to_vec())
            .with_key(payment.payment.clone().into_bytes())
            .with_timestamp(time)
    };
    for payment in payments {
        let authorization_arrives = payment.authorized + rng.random_range(0..=MAX_DELAY_MS);
        events.push((
            authorization_arrives,
            record(payment, "authorized", payment.authorized),
        ));
        if let Some(captured) = payment.captured {
            let arrives =
                (captured + rng.random_range(0..=MAX_DELAY_MS)).max(authorization_arrives + 1);
            events.push((arrives, record(payment, "captured", captured)));
        }
    }
    events.sort_by_key(|(arrival, _)| *arrival);
    log.append_batch(
        PAYMENTS,
        events.into_iter().map(|(_, record)| record).collect(),
    )?;
    log.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_tracing();
    let args = Args::parse();
    let log = EventLog::open_or_create(&args.job.data_dir)?;
    ensure_topic(&log, PAYMENTS, 4)?;
    ensure_topic(&log, ALERTS, 2)?;
    ensure_topic(&log, LATE_CAPTURES, 1)?;
    if let Some(count) = args.job.generate {
        append_payments(&log, &generate_payments(count, 3), 4)?;
        eprintln!("appended {count} payments to '{PAYMENTS}'");
    }

    let env = args.job.env();
    alert_rule(&env, &log, args.job.bounded)?;
    // Ctrl-C or SIGTERM stops the job with a savepoint when it checkpoints.
    let end = env.execute_async("alerts")?.wait_until_signal()?;
    eprintln!("{end}");
    if !matches!(end, SignalledEnd::Cancelled { .. }) {
        eprintln!("'{ALERTS}' and '{LATE_CAPTURES}' hold its results");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::shared::committed;

    /// Emits one value once `ALERTS` holds committed alerts (a checkpoint completed after the
    /// rule raised some), then ends; fails if that takes more than a minute.
    struct OnceAlertsAreCommitted {
        log: EventLog,
        deadline: Instant,
    }

    impl Source for OnceAlertsAreCommitted {
        type Out = ();

        fn poll_next(&mut self, out: &mut SourceOutput<()>) -> Result<SourcePoll, BoxError> {
            if self.log.end_offsets(ALERTS)?.iter().sum::<u64>() > 0 {
                out.collect(());
                Ok(SourcePoll::Finished)
            } else if Instant::now() < self.deadline {
                Ok(SourcePoll::Idle)
            } else {
                Err("no alerts were committed within a minute".into())
            }
        }
    }

    #[test]
    fn the_rule_alerts_exactly_the_payments_not_captured_in_time_also_across_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open_or_create(dir.path()).unwrap();
        for (topic, partitions) in [(PAYMENTS, 3), (ALERTS, 2), (LATE_CAPTURES, 1)] {
            log.create_topic(topic, partitions).unwrap();
        }
        let payments = generate_payments(5_000, 1);
        append_payments(&log, &payments, 2).unwrap();

        let env = StreamEnv::new();
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(10));
        env.set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 1,
            delay_ms: 10,
        });
        alert_rule(&env, &log, true).unwrap();
        // A failure once a checkpoint has committed alerts, so that the job restarts from a
        // checkpoint: timers pending in it come back from it.
        let armed = Arc::new(AtomicBool::new(true));
        let trigger = armed.clone();
        let (watched, deadline) = (log.clone(), Instant::now() + Duration::from_secs(60));
        env.from_source("once alerts are committed", false, move |_, _| {
            OnceAlertsAreCommitted {
                log: watched.clone(),
                deadline,
            }
        })
        .map(move |()| {
            if trigger.swap(false, Ordering::SeqCst) {
                panic!("injected failure");
            }
        })
        .collect();
        let report = env.execute("alerts").unwrap();
        assert_eq!(report.restarts, 1);

        let deadline = |payment: &Generated| payment.authorized + CAPTURE_WITHIN_MS;
        let mut expected_alerts: Vec<String> = payments
            .iter()
            .filter(|payment| payment.captured.is_none_or(|time| time > deadline(payment)))
            .map(|payment| format!("{}\t{}", payment.payment, deadline(payment)))
            .collect();
        expected_alerts.sort();
        let mut expected_late: Vec<String> = payments
            .iter()
            .filter(|payment| {
                payment
                    .captured
                    .is_some_and(|time| time > deadline(payment))
            })
            .map(|payment| payment.payment.clone())
            .collect();
        expected_late.sort();
        assert!(!expected_alerts.is_empty() && !expected_late.is_empty());
        assert_eq!(committed(&log, ALERTS), expected_alerts);
        assert_eq!(committed(&log, LATE_CAPTURES), expected_late);
    }
}

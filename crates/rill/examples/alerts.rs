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
//!
//! With `--nats URL` the payments come from NATS JetStream instead — the stream `PAYMENTS`
//! (subjects `payments.<partition>`, payload `payment<TAB>authorized|captured<TAB>time in
//! ms`), where `--generate` publishes them — and the alerts are published, exactly-once, to the
//! stream `ALERTS` (subject `alerts.payments`, payload `payment<TAB>deadline`); both streams are
//! created if missing. With `--postgres CONFIG` each alert is also recorded, exactly-once, in
//! the table `payment_alerts (payment text, deadline bigint)`, which must exist:
//!
//! ```text
//! cargo xtask services
//! psql -h 127.0.0.1 -p 15432 -U rill -d rill -c 'CREATE TABLE payment_alerts (payment text, deadline bigint)'
//! cargo run --release -p rill --example alerts -- --generate 50000 --bounded \
//!   --checkpoint-interval-ms 1000 --nats nats://127.0.0.1:14222 \
//!   --postgres 'host=127.0.0.1 port=15432 user=rill dbname=rill'
//! ```

use std::time::Duration;

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rill::SignalledEnd;
use rill::log::LogError;
use rill::prelude::*;
use rill_nats::client::NatsClient;
use rill_nats::{NatsMessage, NatsSink, NatsSinkExt, NatsSource, NatsSourceExt};
use rill_postgres::{PostgresSink, PostgresSinkExt, row};
use shared::{JobArgs, ensure_topic, init_tracing};

mod shared;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// Read payments from, and publish alerts to, NATS JetStream at this URL.
    #[arg(long)]
    nats: Option<String>,
    /// Also record each alert in PostgreSQL, connecting with these parameters.
    #[arg(long)]
    postgres: Option<String>,
}

/// The JetStream streams of payments and alerts, and the subject alerts go to.
const PAYMENTS_STREAM: &str = "PAYMENTS";
const ALERTS_STREAM: &str = "ALERTS";
const ALERTS_SUBJECT: &str = "alerts.payments";
/// JetStream's partitions of payments: subjects `payments.0` to `payments.3`.
const PAYMENT_SUBJECTS: u32 = 4;
/// How long a recovery may take to publish again what a crash cut short; the alerts stream's
/// duplicate window is twice that.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// The table alerts are recorded in.
const ALERTS_TABLE: &str = "payment_alerts";

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

/// Where payments come from and alerts go: the event log, or NATS JetStream (by URL), and
/// PostgreSQL too, if given.
struct Io<'a> {
    log: &'a EventLog,
    nats: Option<&'a str>,
    postgres: Option<&'a str>,
}

fn parse_kind(kind: &[u8]) -> Kind {
    match kind {
        b"captured" => Kind::Captured,
        _ => Kind::Authorized,
    }
}

/// The payments, with their event times: from `PAYMENTS` of the log or of NATS.
fn payments(
    env: &StreamEnv,
    io: &Io<'_>,
    bounded: bool,
) -> Result<DataStream<Payment>, Box<dyn std::error::Error>> {
    let strategy =
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(MAX_DELAY_MS as u64));
    if let Some(url) = io.nats {
        // payment<TAB>kind<TAB>time: the time travels with the event.
        let mut source = NatsSource::with_decoder(url, PAYMENTS_STREAM, |record| {
            let text = String::from_utf8_lossy(&record.payload).into_owned();
            let mut fields = text.split('\t');
            let payment = fields.next().unwrap_or_default().to_owned();
            let kind = parse_kind(fields.next().unwrap_or_default().as_bytes());
            let time = fields
                .next()
                .and_then(|time| time.parse().ok())
                .unwrap_or(0);
            (payment, kind, time)
        })?
        .partitions((0..PAYMENT_SUBJECTS).map(|p| format!("payments.{p}")))
        .with_timestamps(|(_, _, time): &(String, Kind, i64)| Timestamp(*time))
        .with_watermarks(strategy);
        if bounded {
            source = source.bounded();
        }
        let events = env.from_nats(source).name("payments");
        return Ok(events.map(|(payment, kind, _): (String, Kind, i64)| (payment, kind)));
    }
    let mut source = LogSource::with_decoder(io.log, PAYMENTS, |record| {
        let payment =
            String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
        (payment, parse_kind(&record.value))
    })?
    .with_watermarks(strategy);
    if bounded {
        source = source.bounded();
    }
    Ok(env.from_log(source).name("payments"))
}

/// Describes the alert job: payments from `PAYMENTS`, alerts to `ALERTS` (of the log or of
/// NATS, and to PostgreSQL's `ALERTS_TABLE` if asked), late captures to `LATE_CAPTURES`.
fn alert_rule(
    env: &StreamEnv,
    io: &Io<'_>,
    bounded: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let late_sink = LogSink::with_encoder(io.log, LATE_CAPTURES, |payment: &String| {
        ProducerRecord::new(payment.clone().into_bytes()).with_key(payment.clone().into_bytes())
    })?;

    let late_captures = OutputTag::new("late-captures");
    let alerts = payments(env, io, bounded)?
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
    if let Some(config) = io.postgres {
        let table_sink = PostgresSink::new(
            config,
            ALERTS_TABLE,
            &["payment", "deadline"],
            |(payment, deadline): &(String, i64)| row![payment.clone(), *deadline],
        )?;
        alerts
            .clone()
            .sink_to_postgres(table_sink)
            .name("alerts table")
            .uid("alerts-table");
    }
    let text = |(payment, deadline): &(String, i64)| format!("{payment}\t{deadline}");
    match io.nats {
        Some(url) => {
            let nats_sink = NatsSink::new(url, ALERTS_STREAM, RECOVERY_BOUND, move |alert| {
                NatsMessage::new(ALERTS_SUBJECT, text(alert).into_bytes())
            })?;
            alerts.sink_to_nats(nats_sink).name("alerts").uid("alerts");
        }
        None => {
            let alerts_sink =
                LogSink::with_encoder(io.log, ALERTS, move |alert: &(String, i64)| {
                    ProducerRecord::new(text(alert).into_bytes())
                        .with_key(alert.0.clone().into_bytes())
                })?;
            alerts.sink_to_log(alerts_sink).name("alerts");
        }
    }
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

/// Publishes the payments' events to JetStream in the order [`append_payments`] appends them
/// to the log, each on its payment's subject, creating the streams if missing.
fn publish_payments(url: &str, log: &EventLog) -> Result<(), Box<dyn std::error::Error>> {
    let client = NatsClient::connect(url)?;
    client.ensure_stream(PAYMENTS_STREAM, &["payments.>"], Duration::from_secs(120))?;
    client.ensure_stream(ALERTS_STREAM, &["alerts.>"], RECOVERY_BOUND * 2)?;
    let mut messages = Vec::new();
    for partition in 0..log.topic(PAYMENTS)?.partitions {
        let end = log.end_offsets(PAYMENTS)?[partition as usize];
        for record in log.read(PAYMENTS, partition, 0, end as usize)? {
            let payment = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default());
            let kind = String::from_utf8_lossy(&record.value);
            let subject = format!("payments.{}", partition % PAYMENT_SUBJECTS);
            let payload = format!("{payment}\t{kind}\t{}", record.timestamp);
            messages.push(NatsMessage::new(subject, payload.into_bytes()));
        }
    }
    client.publish(messages)?;
    Ok(())
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
        if let Some(url) = &args.nats {
            publish_payments(url, &log)?;
            eprintln!("published them to the stream '{PAYMENTS_STREAM}'");
        }
    }

    let env = args.job.env();
    let io = Io {
        log: &log,
        nats: args.nats.as_deref(),
        postgres: args.postgres.as_deref(),
    };
    alert_rule(&env, &io, args.job.bounded)?;
    // Ctrl-C or SIGTERM stops the job with a savepoint when it checkpoints.
    let end = env.execute_async("alerts")?.wait_until_signal()?;
    eprintln!("{end}");
    if !matches!(end, SignalledEnd::Cancelled { .. }) {
        match &args.nats {
            Some(_) => eprintln!("'{ALERTS_STREAM}' and '{LATE_CAPTURES}' hold its results"),
            None => eprintln!("'{ALERTS}' and '{LATE_CAPTURES}' hold its results"),
        }
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
        let io = Io {
            log: &log,
            nats: None,
            postgres: None,
        };
        alert_rule(&env, &io, true).unwrap();
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

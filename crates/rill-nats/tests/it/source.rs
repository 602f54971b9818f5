//! The JetStream source against a real server: a stream's subjects read as partitions, every
//! message once and in order per subject; a job failing mid-run restores its sequences and,
//! through the exactly-once sink, publishes every message once; a checkpoint past the end of
//! the stream is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rill::core::restart::RestartStrategy;
use rill::core::source::{AnySource, Emitted, Source, SourceOutput, SourcePoll};
use rill::prelude::*;
use rill_nats::source::NatsReader;
use rill_nats::{NatsMessage, NatsSinkExt, NatsSource, NatsSourceExt};

use crate::{client, create_stream, fresh_stream, messages, sink, url};

/// Publishes `count` messages `<subject>.<s>` (s cycling over `subjects`) with payload
/// `s:<i>`; returns the payloads.
fn publish(subject: &str, subjects: u32, count: u32) -> Vec<String> {
    let payloads: Vec<(String, String)> = (0..count)
        .map(|i| {
            let s = i % subjects;
            (format!("{subject}.in{s}"), format!("{s}:{i:05}"))
        })
        .collect();
    let published = payloads
        .iter()
        .map(|(_, payload)| payload.clone())
        .collect();
    let messages = payloads
        .into_iter()
        .map(|(subject, payload)| NatsMessage::new(subject, payload.into_bytes()))
        .collect();
    client().publish(messages).unwrap();
    published
}

fn text_source(stream: &str) -> NatsSource<String> {
    NatsSource::with_decoder(&url(), stream, |record| {
        String::from_utf8_lossy(&record.payload).into_owned()
    })
    .unwrap()
}

#[test]
fn a_bounded_source_reads_every_subject_once_in_order() {
    let (stream, subject) = fresh_stream(Duration::from_secs(300));
    let published = publish(&subject, 3, 3_000);
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let read = env.from_nats(text_source(&stream).bounded()).collect();
    env.execute(&format!("nats-source-{stream}")).unwrap();
    let read = read.take();
    let mut sorted = read.clone();
    sorted.sort();
    let mut expected = published;
    expected.sort();
    assert_eq!(sorted, expected);
    for s in 0..3 {
        let of_subject: Vec<&String> = read
            .iter()
            .filter(|text| text.starts_with(&format!("{s}:")))
            .collect();
        assert!(
            of_subject.windows(2).all(|pair| pair[0] < pair[1]),
            "subject {s} out of order"
        );
    }
}

#[test]
fn a_job_failing_mid_run_restores_its_sequences_and_publishes_every_message_once() {
    let (input, subject) = fresh_stream(Duration::from_secs(300));
    let published = publish(&subject, 4, 12_000);
    let (output, output_subject) = fresh_stream(Duration::from_secs(300));
    let mut config = ExecutionConfig::default();
    config.runtime.flow.batch_size = 16;
    let env = StreamEnv::with_config(config);
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(5));
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 10,
    });
    let (seen, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let counted = seen.clone();
    env.from_nats(text_source(&input).bounded())
        .map(move |text: String| {
            if counted.fetch_add(1, Ordering::Relaxed) == 2_500
                && !failed.swap(true, Ordering::Relaxed)
            {
                panic!("failing once, mid-run");
            }
            text
        })
        .sink_to_nats(sink(&output, &output_subject));
    env.execute(&format!("nats-restore-{input}")).unwrap();
    let mut out = messages(&output);
    out.sort();
    let mut expected = published;
    expected.sort();
    assert_eq!(out, expected);
    let seen = seen.load(Ordering::Relaxed);
    assert!(
        seen > 12_000,
        "read {seen} messages: some again after the failure"
    );
}

/// Reads with `reader` until it has read `count` messages or finished; returns them.
fn read(reader: &mut NatsReader<u64>, count: usize) -> Vec<u64> {
    let mut read = Vec::new();
    while read.len() < count {
        let polled = AnySource::poll(reader, (count - read.len()).min(7), Timestamp(0), 0).unwrap();
        for emitted in polled.emitted {
            if let Emitted::Records(records) = emitted {
                read.extend(
                    records
                        .downcast::<u64>()
                        .unwrap()
                        .into_iter()
                        .map(|r| r.value),
                );
            }
        }
        if polled.status == SourcePoll::Finished {
            break;
        }
    }
    read
}

#[test]
fn a_restored_reader_reads_on_from_the_sequence_after_the_last_it_emitted() {
    let (stream, subject) = fresh_stream(Duration::from_secs(300));
    publish(&subject, 3, 300);
    let decode = Arc::new(|record: rill_nats::source::NatsRecord| record.sequence);
    let filters: Vec<String> = (0..3).map(|s| format!("{subject}.in{s}")).collect();
    let reader = || NatsReader::new((&url(), &stream), &filters, (0, 1), true, decode.clone());
    let mut first = reader();
    let before = read(&mut first, 100);
    let position = Source::snapshot_position(&mut first).unwrap().unwrap();
    let mut restored = reader();
    Source::restore_position(&mut restored, &position).unwrap();
    let after = read(&mut restored, 1_000);
    let mut all: Vec<u64> = before.iter().chain(&after).copied().collect();
    all.sort();
    assert_eq!(all, (1..=300).collect::<Vec<u64>>(), "every sequence once");
}

#[test]
fn a_checkpoint_past_the_end_of_the_stream_is_refused() {
    let (stream, subject) = fresh_stream(Duration::from_secs(300));
    publish(&subject, 1, 20);
    let decode = Arc::new(|record: rill_nats::source::NatsRecord| record.sequence);
    let filters = vec![format!("{subject}.in0")];
    let mut reader = NatsReader::new((&url(), &stream), &filters, (0, 1), true, decode.clone());
    loop {
        let mut out = SourceOutput::new(100, Timestamp(0), 0);
        if reader.poll_next(&mut out).unwrap() == SourcePoll::Finished {
            break;
        }
    }
    let position = Source::snapshot_position(&mut reader).unwrap().unwrap();
    // The stream is recreated with fewer messages than the checkpoint read.
    create_stream(&stream, &subject, Duration::from_secs(300));
    publish(&subject, 1, 5);
    let mut restored = NatsReader::new((&url(), &stream), &filters, (0, 1), true, decode);
    let error = Source::restore_position(&mut restored, &position)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("stream '{stream}' is behind the checkpoint"))
            && error.contains("ends at sequence 5")
            && error.contains("up to sequence 20"),
        "{error}"
    );
}

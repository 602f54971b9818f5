//! The JetStream sink against a real server (`cargo xtask services` starts one; set
//! `RILL_NATS_URL` for another): a job's messages published exactly once, the protocol across
//! a crash, a commit published twice dropped by the duplicate window, refusals, and errors. A
//! missing server fails every test with how to start it; none is skipped.

#![allow(clippy::unwrap_used)]

mod source;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream;
use futures_util::StreamExt;
use rill::core::Record;
use rill::core::checkpoint::CheckpointId;
use rill::core::operator::{OperatorInfo, Sink};
use rill::core::transactional::{CommitMark, TransactionalTarget};
use rill::prelude::*;
use rill_nats::client::NatsClient;
use rill_nats::target::NatsTarget;
use rill_nats::{NatsMessage, NatsSink, NatsSinkExt};

fn url() -> String {
    std::env::var("RILL_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:14222".to_owned())
}

fn client() -> NatsClient {
    let url = url();
    NatsClient::connect(&url).unwrap_or_else(|error| {
        panic!(
            "no NATS at '{url}' ({error}): start the test servers with `cargo xtask services`, \
             or point RILL_NATS_URL at one"
        )
    })
}

/// A fresh stream of this process's own, capturing `<subject>.>`, with a duplicate window of
/// `window`; returns (stream, subject prefix).
fn fresh_stream(window: Duration) -> (String, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (name, subject) = (
        format!("T{}_{n}", std::process::id()),
        format!("t{}n{n}", std::process::id()),
    );
    create_stream(&name, &subject, window);
    (name, subject)
}

/// Creates stream `name` capturing `<subject>.>` anew (deleting one of that name).
fn create_stream(name: &str, subject: &str, window: Duration) {
    let config = stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{subject}.>")],
        duplicate_window: window,
        ..Default::default()
    };
    client()
        .call("creating a test stream", |jetstream| async move {
            let _ = jetstream.delete_stream(&config.name).await;
            jetstream.create_stream(config).await.map(drop)
        })
        .unwrap();
}

/// Every message of `stream`, in order, as text.
fn messages(stream: &str) -> Vec<String> {
    let name = stream.to_owned();
    client()
        .call("reading a test stream", |jetstream| async move {
            let stream = jetstream.get_stream(name).await?;
            let mut consumer = stream
                .create_consumer(pull::OrderedConfig {
                    deliver_policy: DeliverPolicy::All,
                    ..Default::default()
                })
                .await?;
            let pending = consumer.info().await?.num_pending as usize;
            let mut texts = Vec::new();
            let mut messages = consumer.messages().await?.take(pending);
            while let Some(message) = messages.next().await {
                texts.push(String::from_utf8_lossy(&message?.payload).into_owned());
            }
            Ok::<_, async_nats::Error>(texts)
        })
        .unwrap()
}

fn sink(stream: &str, subject: &str) -> NatsSink<String> {
    let subject = format!("{subject}.out");
    NatsSink::new(
        &url(),
        stream,
        Duration::from_secs(60),
        move |text: &String| NatsMessage::new(subject.as_str(), text.clone().into_bytes()),
    )
    .unwrap()
}

/// Subtask 0 of 1 of sink `sink` of `job`, in a job that checkpoints.
fn info(job: &str) -> OperatorInfo {
    OperatorInfo::of_subtask(job, "sink", 0, 1)
}

fn batch(texts: &[&str]) -> Vec<Record<String>> {
    texts
        .iter()
        .map(|text| Record::new((*text).to_owned()))
        .collect()
}

fn sorted(mut texts: Vec<String>) -> Vec<String> {
    texts.sort();
    texts
}

#[test]
fn a_job_publishes_every_message_once() {
    let (stream, subject) = fresh_stream(Duration::from_secs(300));
    let texts: Vec<String> = (0..2_000).map(|i| format!("m{i:04}")).collect();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(20));
    env.from_iter(texts.clone())
        .rebalance()
        .sink_to_nats(sink(&stream, &subject));
    env.execute(&format!("nats-{stream}")).unwrap();
    assert_eq!(sorted(messages(&stream)), texts);
}

#[test]
fn a_crash_before_commit_publishes_the_checkpoint_once_on_restore_and_drops_the_rest() {
    let (stream, subject) = fresh_stream(Duration::from_secs(300));
    let job = format!("nats-protocol-{stream}");
    let sink = sink(&stream, &subject);
    let mut first = sink.writer(&info(&job));
    first.start_fresh().unwrap();
    first.write_batch(batch(&["a", "b"])).unwrap();
    first.pre_commit(CheckpointId(1)).unwrap();
    first.commit(CheckpointId(1)).unwrap();
    first.write_batch(batch(&["c"])).unwrap();
    let second = first.pre_commit(CheckpointId(2)).unwrap().unwrap();
    first.write_batch(batch(&["d"])).unwrap();
    assert_eq!(
        messages(&stream),
        ["a", "b"],
        "checkpoint 2 is not complete"
    );
    drop(first);

    let mut restored = sink.writer(&info(&job));
    restored.restore(vec![second]).unwrap();
    assert_eq!(messages(&stream), ["a", "b", "c"]);
    let mut target = NatsTarget::new(&url(), &stream);
    assert_eq!(
        target.open_transactions(&format!("{job}/")).unwrap(),
        Vec::<String>::new(),
        "'d' was staged by the crashed attempt and is aborted"
    );
}

#[test]
fn a_commit_published_twice_is_dropped_by_the_duplicate_window() {
    let (stream, subject) = fresh_stream(Duration::from_secs(300));
    let mut target = NatsTarget::new(&url(), &stream);
    let messages_of = |texts: &[&str]| -> Vec<NatsMessage> {
        texts
            .iter()
            .map(|text| NatsMessage::new(format!("{subject}.out"), text.as_bytes()))
            .collect()
    };
    let mark = Some(CommitMark {
        writer: "twice/sink/",
        checkpoint: 4,
    });
    target
        .stage("twice/sink/0/3", messages_of(&["x", "y"]))
        .unwrap();
    target.commit("twice/sink/0/3", mark).unwrap();
    // A commit cut short after publishing, before purging: staged again, committed again.
    target
        .stage("twice/sink/0/3", messages_of(&["x", "y"]))
        .unwrap();
    target.commit("twice/sink/0/3", mark).unwrap();
    target.commit("twice/sink/0/3", mark).unwrap();
    assert_eq!(messages(&stream), ["x", "y"]);
    assert_eq!(target.committed_checkpoint("twice/sink/").unwrap(), Some(4));
}

#[test]
fn a_fresh_start_behind_what_was_published_is_refused() {
    let (stream, subject) = fresh_stream(Duration::from_secs(300));
    let job = format!("nats-rewind-{stream}");
    let sink = sink(&stream, &subject);
    let mut writer = sink.writer(&info(&job));
    writer.start_fresh().unwrap();
    writer.write_batch(batch(&["a"])).unwrap();
    writer.pre_commit(CheckpointId(1)).unwrap();
    writer.commit(CheckpointId(1)).unwrap();
    let error = sink
        .writer(&info(&job))
        .start_fresh()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("JetStream stream '{stream}'"))
            && error.contains("starts from no checkpoint"),
        "{error}"
    );
}

#[test]
fn a_duplicate_window_shorter_than_the_recovery_bound_is_refused() {
    let (stream, subject) = fresh_stream(Duration::from_secs(30));
    let error = NatsSink::new(
        &url(),
        &stream,
        Duration::from_secs(60),
        move |text: &String| NatsMessage::new(format!("{subject}.out"), text.clone().into_bytes()),
    )
    .err()
    .map(|error| error.to_string())
    .unwrap_or_default();
    assert!(
        error.contains(&format!(
            "stream '{stream}' drops duplicate message ids for 30s"
        )) && error.contains("up to 60s"),
        "{error}"
    );
}

#[test]
fn a_job_run_again_publishes_again_and_is_not_taken_for_duplicates() {
    // Without checkpoints, every run commits transaction 0 of each subtask at its end: the
    // same transaction ids, within the duplicate window.
    let (stream, subject) = fresh_stream(Duration::from_secs(300));
    let job = format!("nats-again-{stream}");
    for _ in 0..2 {
        let env = StreamEnv::new();
        env.from_iter(vec!["x".to_owned(), "y".to_owned()])
            .sink_to_nats(sink(&stream, &subject));
        env.execute(&job).unwrap();
    }
    assert_eq!(sorted(messages(&stream)), ["x", "x", "y", "y"]);
}

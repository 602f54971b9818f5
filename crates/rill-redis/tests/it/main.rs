//! The Redis sink against a real server (`cargo xtask services` starts one; set
//! `RILL_REDIS_URL` for another): a job's results applied exactly-once, the protocol across a
//! crash, an older checkpoint's result never overwriting a newer one, refusals, and errors. A
//! missing server fails every test with how to start it; none is skipped.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use redis::Commands;
use rill::core::Record;
use rill::core::checkpoint::CheckpointId;
use rill::core::operator::{OperatorInfo, Sink};
use rill::core::transactional::{CommitMark, TransactionalTarget};
use rill::prelude::*;
use rill_redis::target::RedisTarget;
use rill_redis::{RedisSink, RedisSinkExt, RedisWrite};

fn url() -> String {
    std::env::var("RILL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".to_owned())
}

fn connection() -> redis::Connection {
    let url = url();
    redis::Client::open(url.as_str())
        .and_then(|client| client.get_connection())
        .unwrap_or_else(|error| {
            panic!(
                "no Redis at '{url}' ({error}): start the test servers with `cargo xtask \
                 services`, or point RILL_REDIS_URL at one"
            )
        })
}

/// A name of this process's own: `<name>-<pid>-<n>`.
fn fresh(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{name}-{}-{n}", std::process::id())
}

/// The hash `key`, sorted.
fn hash(key: &str) -> BTreeMap<String, String> {
    connection().hgetall(key).unwrap()
}

/// Subtask 0 of 1 of sink `sink` of `job`, in a job that checkpoints.
fn info(job: &str) -> OperatorInfo {
    OperatorInfo::of_subtask(job, "sink", 0, 1)
}

fn counts_sink(key: &str) -> RedisSink<(String, u64)> {
    let key = key.to_owned();
    RedisSink::new(&url(), move |(page, views): &(String, u64)| {
        RedisWrite::hash_set(key.as_str(), page.as_str(), views.to_string())
    })
    .unwrap()
}

fn batch(values: &[(&str, u64)]) -> Vec<Record<(String, u64)>> {
    values
        .iter()
        .map(|(page, views)| Record::new(((*page).to_owned(), *views)))
        .collect()
}

fn expected(values: &[(&str, &str)]) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(field, value)| ((*field).to_owned(), (*value).to_owned()))
        .collect()
}

#[test]
fn a_keyed_job_leaves_each_keys_final_count_and_no_transaction_open() {
    let key = fresh("counts");
    let job = fresh("redis-job");
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(std::time::Duration::from_millis(20));
    let views: Vec<String> = (0..3_000).map(|i| format!("/p{}", i % 7)).collect();
    env.from_iter(views)
        .map(|page: String| (page, 1_u64))
        .key_by(|(page, _): &(String, u64)| page.clone())
        .reduce(|(page, a), (_, b)| (page, a + b))
        .sink_to_redis(counts_sink(&key));
    env.execute(&job).unwrap();
    let expected: BTreeMap<String, String> = (0..7)
        .map(|p| {
            (
                format!("/p{p}"),
                (3_000 / 7 + u64::from(p < 3_000 % 7)).to_string(),
            )
        })
        .collect();
    assert_eq!(hash(&key), expected);
    let open: Vec<String> = connection().smembers("rill:v1:open").unwrap();
    assert!(
        !open.iter().any(|id| id.starts_with(&format!("{job}/"))),
        "{open:?}"
    );
}

#[test]
fn a_crash_before_commit_applies_the_checkpoint_once_on_restore_and_drops_the_rest() {
    let key = fresh("crash");
    let job = fresh("redis-protocol");
    let sink = counts_sink(&key);
    let mut first = sink.writer(&info(&job));
    first.start_fresh().unwrap();
    first.write_batch(batch(&[("a", 1), ("b", 1)])).unwrap();
    first.pre_commit(CheckpointId(1)).unwrap();
    first.commit(CheckpointId(1)).unwrap();
    first.write_batch(batch(&[("a", 2)])).unwrap();
    let second = first.pre_commit(CheckpointId(2)).unwrap().unwrap();
    first.write_batch(batch(&[("b", 9)])).unwrap();
    assert_eq!(
        hash(&key),
        expected(&[("a", "1"), ("b", "1")]),
        "checkpoint 2 is not complete"
    );
    drop(first);

    let mut restored = sink.writer(&info(&job));
    restored.restore(vec![second]).unwrap();
    assert_eq!(hash(&key), expected(&[("a", "2"), ("b", "1")]));
    let open: Vec<String> = connection().smembers("rill:v1:open").unwrap();
    assert!(
        !open.iter().any(|id| id.starts_with(&format!("{job}/"))),
        "{open:?}"
    );
}

#[test]
fn a_late_commit_of_an_older_checkpoint_never_overwrites_a_newer_result() {
    let key = fresh("versions");
    let mut target = RedisTarget::new(&url());
    let mark = |checkpoint| {
        Some(CommitMark {
            writer: "versions-job/sink/",
            checkpoint,
        })
    };
    let write = |value: &str| vec![RedisWrite::set(key.as_str(), value)];
    target.stage("versions-job/sink/1/7", write("new")).unwrap();
    target.stage("versions-job/sink/0/3", write("old")).unwrap();
    target.commit("versions-job/sink/1/7", mark(7)).unwrap();
    target.commit("versions-job/sink/0/3", mark(3)).unwrap();
    let value: String = connection().get(&key).unwrap();
    assert_eq!(value, "new");
    assert_eq!(
        target.committed_checkpoint("versions-job/sink/").unwrap(),
        Some(7)
    );
    target.commit("versions-job/sink/1/7", mark(7)).unwrap();
    assert_eq!(
        target.open_transactions("versions-job/").unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn a_restore_from_behind_what_redis_holds_is_refused() {
    let key = fresh("rewind");
    let job = fresh("redis-rewind");
    let sink = counts_sink(&key);
    let mut writer = sink.writer(&info(&job));
    writer.start_fresh().unwrap();
    let mut states = Vec::new();
    for checkpoint in 1..=3 {
        writer.write_batch(batch(&[("x", checkpoint)])).unwrap();
        states.push(
            writer
                .pre_commit(CheckpointId(checkpoint))
                .unwrap()
                .unwrap(),
        );
        writer.commit(CheckpointId(checkpoint)).unwrap();
    }
    let error = sink
        .writer(&info(&job))
        .restore(vec![states[0].clone()])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Redis at") && error.contains("committed the output of checkpoint 3"),
        "{error}"
    );
    let mut allowed = info(&job);
    allowed.allow_rewind = true;
    let mut rewound = sink.writer(&allowed);
    rewound.restore(vec![states[0].clone()]).unwrap();
    rewound.write_batch(batch(&[("x", 20)])).unwrap();
    rewound.pre_commit(CheckpointId(2)).unwrap();
    rewound.commit(CheckpointId(2)).unwrap();
    assert_eq!(
        hash(&key),
        expected(&[("x", "20")]),
        "after an allowed rewind, the rewound job's results apply again"
    );
}

#[test]
fn a_server_that_is_not_there_is_named() {
    let error = RedisSink::new("redis://127.0.0.1:1", |_: &String| {
        RedisWrite::set("k", "v")
    })
    .err()
    .map(|error| error.to_string())
    .unwrap_or_default();
    assert!(
        error.contains("cannot connect to Redis at 'redis://127.0.0.1:1'"),
        "{error}"
    );
}

#[test]
fn a_commit_that_would_fail_part_way_applies_nothing() {
    let (key, other) = (fresh("atomic"), fresh("atomic"));
    let _: () = connection().set(&other, "a string").unwrap();
    let mut target = RedisTarget::new(&url());
    let writes = vec![
        RedisWrite::set(key.as_str(), "first"),
        RedisWrite::hash_set(other.as_str(), "field", "second"),
    ];
    target.stage("atomic-job/sink/0/0", writes).unwrap();
    let error = target
        .commit("atomic-job/sink/0/0", None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("holds a string, not a hash"), "{error}");
    let first: Option<String> = connection().get(&key).unwrap();
    assert_eq!(first, None, "nothing of the commit was applied");
    let nan = vec![RedisWrite::sorted_set_add(key.as_str(), "m", f64::NAN)];
    let error = target
        .stage("atomic-job/sink/0/1", nan)
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a finite number"), "{error}");
    target.abort("atomic-job/sink/0/0").unwrap();
}

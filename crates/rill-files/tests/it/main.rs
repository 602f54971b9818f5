//! The file connectors in real jobs on the actor runtime: the source (`source`), the sink
//! (`sink`), and the `json_pipeline` example killed with SIGKILL and restarted
//! (`kill_recovery`).

#![allow(clippy::unwrap_used)]

mod kill_recovery;
mod sink;
mod source;

#[path = "../../../rill/tests/it/example_process.rs"]
mod example_process;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rill::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
/// An event of the input files.
pub struct Event {
    pub(crate) id: u64,
    pub(crate) user: String,
}

/// Writes `lines` events as JSON lines into `name`, ids from `first`.
pub fn write_events(dir: &Path, name: &str, first: u64, lines: u64) -> Vec<Event> {
    let events: Vec<Event> = (first..first + lines)
        .map(|id| Event {
            id,
            user: format!("user-{}", id % 17),
        })
        .collect();
    let mut text = String::new();
    for event in &events {
        text.push_str(&serde_json::to_string(event).unwrap());
        text.push('\n');
    }
    std::fs::write(dir.join(name), text).unwrap();
    events
}

/// `files` files of `lines` events each, ids `0..files * lines`.
pub fn write_parts(dir: &Path, files: u64, lines: u64) -> u64 {
    for file in 0..files {
        write_events(dir, &format!("part-{file:03}.jsonl"), file * lines, lines);
    }
    files * lines
}

/// Waits (bounded) for `done`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "no progress: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An environment at `parallelism` with small batches, many per checkpoint.
pub fn small_batches(parallelism: u32) -> StreamEnv {
    let mut config = ExecutionConfig::default();
    config.runtime.flow.batch_size = 16;
    let env = StreamEnv::with_config(config);
    env.set_parallelism(parallelism);
    env
}

/// An environment at parallelism 2 with small batches, a checkpoint every 5 ms and a job that
/// fails restarted up to 3 times; and what to pass every event to so that the `failing`th,
/// counted over every attempt, fails its subtask once (and how many events it was passed).
pub fn fails_once_at(failing: u64) -> (StreamEnv, Arc<AtomicU64>, impl Fn(&Event) + Send + Sync) {
    let env = small_batches(2);
    env.enable_checkpointing(Duration::from_millis(5));
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 10,
    });
    let seen = Arc::new(AtomicU64::new(0));
    let counted = seen.clone();
    let inspect = move |_: &Event| {
        std::thread::sleep(Duration::from_micros(50));
        let n = counted.fetch_add(1, Ordering::Relaxed);
        assert!(n != failing, "injected failure");
    };
    (env, seen, inspect)
}

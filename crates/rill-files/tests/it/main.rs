//! The file connectors in real jobs on the actor runtime: the source (`source`), the sink
//! (`sink`), and the `json_pipeline` example killed with SIGKILL and restarted
//! (`kill_recovery`).

#![allow(clippy::unwrap_used)]

mod kill_recovery;
mod sink;
mod source;

#[path = "../../../rill/tests/it/example_binary.rs"]
mod example_binary;

use std::path::Path;
use std::time::{Duration, Instant};

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

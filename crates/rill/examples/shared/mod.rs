//! What the event-time examples over the log share: logging, their topics, and (in their
//! tests) reading what a job committed.

use rill::log::LogError;
use rill::prelude::*;

/// Logs warnings (or what `RUST_LOG` asks for) to stderr.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub fn ensure_topic(log: &EventLog, topic: &str, partitions: u32) -> Result<(), LogError> {
    match log.topic(topic) {
        Ok(_) => Ok(()),
        Err(_) => log.create_topic(topic, partitions),
    }
}

/// The committed values of `topic` as text, sorted.
#[cfg(test)]
pub fn committed(log: &EventLog, topic: &str) -> Vec<String> {
    let ends = log.end_offsets(topic).unwrap();
    let mut lines = Vec::new();
    for (partition, end) in ends.into_iter().enumerate() {
        for record in log.read(topic, partition as u32, 0, end as usize).unwrap() {
            lines.push(String::from_utf8(record.value).unwrap());
        }
    }
    lines.sort();
    lines
}

//! Redis as a Rill sink for live results, exactly-once: a checkpoint's writes — `SET`, `HSET`,
//! or `ZADD` for a top-N — are applied when the checkpoint completes, all at once, so a reader
//! never sees a result that a recovery would take back, and a result of an older checkpoint
//! never overwrites a newer one. The protocol is `rill-core`'s two-phase-commit writer
//! ([`TransactionalWriter`]), the one the event log's and PostgreSQL's sinks use and the
//! simulator checks; [`target`] adds Redis's side: staging in Redis and an atomic Lua commit.
//!
//! ```no_run
//! use rill::prelude::*;
//! use rill_redis::{RedisSink, RedisSinkExt, RedisWrite};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let env = StreamEnv::new();
//! let sink = RedisSink::new("redis://127.0.0.1:16379", |(page, views): &(String, u64)| {
//!     RedisWrite::hash_set("page-views", page.as_str(), views.to_string())
//! })?;
//! env.from_iter(vec![("/home".to_owned(), 3_u64)]).sink_to_redis(sink);
//! env.execute("page views")?;
//! # Ok(())
//! # }
//! ```
//!
//! The client is the `redis` crate (redis-rs), the maintained Rust client, used through its
//! synchronous connection (a sink runs on its subtask's thread) and its `Script` (`EVALSHA`,
//! falling back to `EVAL`). Connections are plain TCP: no TLS.

pub mod target;

use std::sync::Arc;

use rill_api::connectors::address::without_password;
use rill_api::{DataStream, SinkHandle};
use rill_core::Data;
use rill_core::operator::OperatorInfo;
use rill_core::transactional::{Encode, TransactionalWriter};

use target::RedisTarget;

/// One write to Redis.
#[derive(Clone, Debug, PartialEq)]
pub enum RedisWrite {
    /// `SET key value`.
    Set {
        /// The key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
    /// `HSET key field value`.
    HashSet {
        /// The hash's key.
        key: Vec<u8>,
        /// The field.
        field: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
    /// `ZADD key score member`: a sorted set, read back ranked (`ZREVRANGE`) for a top-N.
    SortedSetAdd {
        /// The sorted set's key.
        key: Vec<u8>,
        /// The member.
        member: Vec<u8>,
        /// Its score.
        score: f64,
    },
}

impl RedisWrite {
    /// `SET key value`.
    pub fn set(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        RedisWrite::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `HSET key field value`.
    pub fn hash_set(
        key: impl Into<Vec<u8>>,
        field: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        RedisWrite::HashSet {
            key: key.into(),
            field: field.into(),
            value: value.into(),
        }
    }

    /// `ZADD key score member`.
    pub fn sorted_set_add(key: impl Into<Vec<u8>>, member: impl Into<Vec<u8>>, score: f64) -> Self {
        RedisWrite::SortedSetAdd {
            key: key.into(),
            member: member.into(),
            score,
        }
    }
}

/// What can go wrong writing to Redis.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The server could not be reached.
    #[error("cannot connect to Redis at '{url}': {source}")]
    Connect {
        /// The server's URL.
        url: String,
        /// The client's error.
        source: redis::RedisError,
    },
    /// A command failed.
    #[error("Redis failed {doing}: {source}")]
    Command {
        /// What the sink was doing.
        doing: String,
        /// The client's error.
        source: redis::RedisError,
    },
    /// The protocol was not followed (a bug in the caller).
    #[error("{0}")]
    Protocol(String),
}

/// Results written to Redis by a stream.
pub struct RedisSink<T> {
    url: String,
    encode: Encode<RedisTarget, T>,
    exactly_once: bool,
}

impl<T: Data> RedisSink<T> {
    /// Writes what `to_write` makes of each value to the server at `url`
    /// (`redis://host:port/db`). Connects once to check that the server answers.
    pub fn new(
        url: &str,
        to_write: impl Fn(&T) -> RedisWrite + Send + Sync + 'static,
    ) -> Result<Self, RedisError> {
        let connect = |source| RedisError::Connect {
            url: without_password(url),
            source,
        };
        let mut connection = redis::Client::open(url)
            .and_then(|client| client.get_connection())
            .map_err(connect)?;
        redis::cmd("PING")
            .query::<String>(&mut connection)
            .map_err(connect)?;
        Ok(RedisSink {
            url: url.to_owned(),
            encode: Arc::new(to_write),
            exactly_once: true,
        })
    }

    /// Applies each batch at once instead of when its checkpoint completes: a reader may see a
    /// result that a recovery then writes again (the same value, if the job is
    /// deterministic).
    pub fn at_least_once(mut self) -> Self {
        self.exactly_once = false;
        self
    }

    /// The writer of the sink subtask `info` describes: what [`RedisSinkExt::sink_to_redis`]
    /// runs, for a driver or test of one's own.
    pub fn writer(&self, info: &OperatorInfo) -> TransactionalWriter<RedisTarget, T> {
        TransactionalWriter::new(
            RedisTarget::new(&self.url),
            info,
            self.encode.clone(),
            self.exactly_once,
        )
    }
}

/// Writes a stream to Redis.
pub trait RedisSinkExt<T> {
    /// Writes the stream's results to Redis: exactly-once by default (a checkpoint's writes
    /// apply when it completes, or at the end of a job without checkpoints), or at-least-once
    /// (see [`RedisSink::at_least_once`]).
    fn sink_to_redis(self, sink: RedisSink<T>) -> SinkHandle;
}

impl<T: Data> RedisSinkExt<T> for DataStream<T> {
    fn sink_to_redis(self, sink: RedisSink<T>) -> SinkHandle {
        let name = format!("redis sink '{}'", without_password(&sink.url));
        self.sink_with(&name, move |info| sink.writer(info))
    }
}

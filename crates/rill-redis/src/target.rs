//! [`RedisTarget`]: a Redis server as the target of `rill-core`'s two-phase-commit writer
//! ([`TransactionalWriter`](rill_core::transactional::TransactionalWriter)).
//!
//! Redis has no transactions that outlive a connection, so a transaction is staged in Redis
//! itself, as the event log stages its own: a checkpoint's writes go, encoded four strings each
//! (operation, key, field or member, value or score), into the list
//! `rill:v1:staged:<transaction>`, and the transaction's id into the set `rill:v1:open`. A
//! commit is one Lua script — atomic in Redis — that applies the staged writes, deletes the
//! list, removes the id from the open set and raises the writer's commit mark in the hash
//! `rill:v1:marks`: a reader sees a checkpoint's results all at once, or none of them. Run
//! again, it finds no list and does nothing, so commits are idempotent. An abort deletes the
//! list.
//!
//! Every key, hash field or sorted-set member written remembers the checkpoint whose output
//! wrote it last (in the hash `rill:v1:versions:<writer>`), and the script skips a write from an
//! older checkpoint than that: a late commit of an older transaction never takes back a newer
//! result. An allowed rewind moves the mark back and forgets the versions, so that the rewound
//! job's results apply again.
//!
//! Durability is Redis's: a prepared transaction and a commit survive a crash of the job's
//! process as soon as Redis has them, and a crash of Redis itself only with `appendonly yes`
//! and `appendfsync always`; `prepare` and `flush` have nothing to add.

use redis::{Commands, Connection, Script};
use rill_api::connectors::address::without_password;
use rill_core::transactional::{CommitMark, TransactionalTarget};

use crate::{RedisError, RedisWrite};

/// What every key of the protocol starts with; `v1` is the staging format's version.
const PREFIX: &str = "rill:v1:";

/// The set of open transactions.
fn open_set() -> String {
    format!("{PREFIX}open")
}

/// The hash of commit marks, by writer.
fn marks_hash() -> String {
    format!("{PREFIX}marks")
}

/// The list a transaction's writes are staged in.
fn staged_list(id: &str) -> String {
    format!("{PREFIX}staged:{id}")
}

/// The hash of the checkpoint that last wrote each item, for one writer.
fn versions_hash(writer: &str) -> String {
    format!("{PREFIX}versions:{writer}")
}

/// Applies a staged transaction atomically (see the module's docs). KEYS: the staged list,
/// the open set, the marks hash, the versions hash; ARGV: the transaction id, the writer and
/// the checkpoint ("" for no mark). Returns how many writes it applied or skipped.
const COMMIT_SCRIPT: &str = r"
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local checkpoint = tonumber(ARGV[3])
local types = { s = 'string', h = 'hash', z = 'zset' }
-- Every write is checked before any is made: Redis keeps what a script wrote before a
-- command of it failed, and a commit must apply all of a checkpoint's writes or none.
for i = 1, #items, 4 do
  local found = redis.call('TYPE', items[i + 1]).ok
  if found ~= 'none' and found ~= types[items[i]] then
    return redis.error_reply('key ' .. items[i + 1] .. ' holds a ' .. found .. ', not a ' .. types[items[i]])
  end
  if items[i] == 'z' and not tonumber(items[i + 3]) then
    return redis.error_reply('score ' .. items[i + 3] .. ' of ' .. items[i + 1] .. ' is not a number')
  end
end
for i = 1, #items, 4 do
  local op, key, field, value = items[i], items[i + 1], items[i + 2], items[i + 3]
  local apply = true
  if checkpoint then
    local item = op .. ':' .. string.len(key) .. ':' .. key .. field
    local seen = tonumber(redis.call('HGET', KEYS[4], item))
    if seen and seen > checkpoint then
      apply = false
    else
      redis.call('HSET', KEYS[4], item, checkpoint)
    end
  end
  if apply then
    if op == 's' then
      redis.call('SET', key, value)
    elseif op == 'h' then
      redis.call('HSET', key, field, value)
    elseif op == 'z' then
      redis.call('ZADD', key, value, field)
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if checkpoint and #items > 0 then
  local newest = tonumber(redis.call('HGET', KEYS[3], ARGV[2]))
  if not newest or newest < checkpoint then
    redis.call('HSET', KEYS[3], ARGV[2], checkpoint)
  end
end
return #items / 4
";

/// One sink subtask's connection to Redis, opened on first use.
pub struct RedisTarget {
    url: String,
    connection: Option<Connection>,
    commit: Script,
}

impl RedisTarget {
    /// The target of the server at `url` (`redis://host:port/db`).
    pub fn new(url: &str) -> Self {
        RedisTarget {
            url: url.to_owned(),
            connection: None,
            commit: Script::new(COMMIT_SCRIPT),
        }
    }

    fn connection(&mut self) -> Result<&mut Connection, RedisError> {
        if self.connection.is_none() {
            let client =
                redis::Client::open(self.url.as_str()).map_err(|source| RedisError::Connect {
                    url: without_password(&self.url),
                    source,
                })?;
            let connection = client
                .get_connection()
                .map_err(|source| RedisError::Connect {
                    url: without_password(&self.url),
                    source,
                })?;
            self.connection = Some(connection);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| RedisError::Protocol("no connection".to_owned()))
    }

    /// Runs `work` on the connection; an error names what the target was doing.
    fn run<R>(
        &mut self,
        doing: &str,
        work: impl FnOnce(&mut Connection) -> redis::RedisResult<R>,
    ) -> Result<R, RedisError> {
        let connection = self.connection()?;
        work(connection).map_err(|source| {
            // A connection that failed may be broken: the next call opens a new one.
            self.connection = None;
            RedisError::Command {
                doing: doing.to_owned(),
                source,
            }
        })
    }
}

/// Refuses a sorted-set score that is not a finite number, which Redis would refuse in the
/// middle of a commit.
fn check_scores(writes: &[RedisWrite]) -> Result<(), RedisError> {
    for write in writes {
        if let RedisWrite::SortedSetAdd { key, member, score } = write
            && !score.is_finite()
        {
            return Err(RedisError::Protocol(format!(
                "the score of member '{}' of sorted set '{}' is {score}, not a finite number",
                String::from_utf8_lossy(member),
                String::from_utf8_lossy(key)
            )));
        }
    }
    Ok(())
}

/// A write as the four strings it is staged as.
fn staged_items(write: &RedisWrite) -> [Vec<u8>; 4] {
    match write {
        RedisWrite::Set { key, value } => [b"s".to_vec(), key.clone(), Vec::new(), value.clone()],
        RedisWrite::HashSet { key, field, value } => {
            [b"h".to_vec(), key.clone(), field.clone(), value.clone()]
        }
        RedisWrite::SortedSetAdd { key, member, score } => [
            b"z".to_vec(),
            key.clone(),
            member.clone(),
            score.to_string().into_bytes(),
        ],
    }
}

impl TransactionalTarget for RedisTarget {
    type Produced = RedisWrite;
    type Error = RedisError;

    fn describe(&self) -> String {
        format!("Redis at '{}'", without_password(&self.url))
    }

    fn append(&mut self, writes: Vec<RedisWrite>) -> Result<(), RedisError> {
        check_scores(&writes)?;
        let mut pipe = redis::pipe();
        for write in &writes {
            match write {
                RedisWrite::Set { key, value } => pipe.set(key, value),
                RedisWrite::HashSet { key, field, value } => pipe.hset(key, field, value),
                RedisWrite::SortedSetAdd { key, member, score } => pipe.zadd(key, member, score),
            }
            .ignore();
        }
        self.run("writing", |connection| pipe.exec(connection))
    }

    fn stage(&mut self, id: &str, writes: Vec<RedisWrite>) -> Result<(), RedisError> {
        check_scores(&writes)?;
        let items: Vec<Vec<u8>> = writes.iter().flat_map(staged_items).collect();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .sadd(open_set(), id)
            .ignore()
            .rpush(staged_list(id), items)
            .ignore();
        self.run(&format!("staging transaction '{id}'"), |connection| {
            pipe.exec(connection)
        })
    }

    /// The staged writes are in Redis already.
    fn prepare(&mut self, _id: &str, _mark: Option<CommitMark<'_>>) -> Result<(), RedisError> {
        Ok(())
    }

    fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), RedisError> {
        let (writer, checkpoint) = match mark {
            Some(mark) => (mark.writer.to_owned(), mark.checkpoint.to_string()),
            None => (String::new(), String::new()),
        };
        let script = self.commit.clone();
        let mut invocation = script.prepare_invoke();
        invocation
            .key(staged_list(id))
            .key(open_set())
            .key(marks_hash())
            .key(versions_hash(&writer))
            .arg(id)
            .arg(&writer)
            .arg(checkpoint);
        self.run(&format!("committing transaction '{id}'"), |connection| {
            invocation.invoke::<i64>(connection).map(drop)
        })
    }

    fn abort(&mut self, id: &str) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(staged_list(id))
            .ignore()
            .srem(open_set(), id)
            .ignore();
        self.run(&format!("aborting transaction '{id}'"), |connection| {
            pipe.exec(connection)
        })
    }

    fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, RedisError> {
        let mut open: Vec<String> = self.run("listing open transactions", |connection| {
            connection.smembers(open_set())
        })?;
        open.retain(|id| id.starts_with(prefix));
        open.sort();
        Ok(open)
    }

    fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, RedisError> {
        self.run("reading the commit marks", |connection| {
            connection.hget(marks_hash(), writer)
        })
    }

    fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        match to {
            Some(checkpoint) => pipe.hset(marks_hash(), writer, checkpoint).ignore(),
            None => pipe.hdel(marks_hash(), writer).ignore(),
        };
        pipe.del(versions_hash(writer)).ignore();
        self.run("moving the commit mark back", |connection| {
            pipe.exec(connection)
        })
    }

    /// Redis has every write when the command returns (see the module's docs).
    fn flush(&mut self) -> Result<(), RedisError> {
        Ok(())
    }
}

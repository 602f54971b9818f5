//! [`NatsTarget`]: NATS JetStream as the target of `rill-core`'s two-phase-commit writer
//! ([`TransactionalWriter`](rill_core::transactional::TransactionalWriter)).
//!
//! JetStream has no transactions, but it drops a message whose `Nats-Msg-Id` it has stored
//! within the stream's duplicate window. So a transaction is staged in JetStream itself: a
//! checkpoint's messages are published, each with its destination in the header
//! `Rill-Subject` and the transaction's nonce (unique to this staging of it) in `Rill-Nonce`,
//! to the subject `rill.staged.<transaction>` of the stream `RILL_STAGING`, where they are
//! durable once acknowledged. The commit reads them back in order and publishes each to its
//! destination with the message id `<transaction>/<checkpoint>/<nonce>/<index>` — the nonce
//! keeps a later run, which reuses transaction ids, from being taken for duplicates; then it
//! records the commit mark (the last message of `rill.marks.<writer>` in the stream
//! `RILL_MARKS`, written expecting the last one read, so that it never goes back) and purges the staged subject. A commit cut short and run again publishes the
//! same ids, which the duplicate window drops; once purged, there is nothing left to commit, so
//! commits are idempotent. An abort purges the staged subject.
//!
//! What makes this exactly-once is the duplicate window: it must be longer than the time from
//! a commit that a crash cut short to the restored job's commit of the same transaction. The
//! sink checks the window at start against the recovery bound it is given. The mark follows the
//! messages rather than coming with them: a crash between the two leaves the mark one
//! checkpoint behind until the restored job commits again.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use futures_util::StreamExt;
use rill_core::transactional::{CommitMark, TransactionalTarget};

use crate::client::{NatsClient, publish_all};
use crate::{NatsError, NatsMessage};

/// The stream transactions are staged in.
pub const STAGING_STREAM: &str = "RILL_STAGING";
/// The stream commit marks are kept in.
pub const MARKS_STREAM: &str = "RILL_MARKS";
/// The header a staged message's destination travels in.
const DESTINATION_HEADER: &str = "Rill-Subject";
/// The header a staged message's transaction nonce travels in.
const NONCE_HEADER: &str = "Rill-Nonce";
/// How often a commit mark is written again when another subtask wrote it in between.
const MARK_RETRIES: usize = 8;

/// A transaction's nonce: unique to this staging of it, so that the message ids of a job's
/// next run, or of a rewound job, which reuse transaction ids, are not taken for duplicates.
fn nonce() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{next:x}", std::process::id())
}

/// `text` as one subject token: letters, digits, `-` and `_` stay; every other byte becomes
/// `~` and two hex digits.
pub(crate) fn escape(text: &str) -> String {
    let mut token = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("~{byte:02x}"));
        }
    }
    token
}

/// The text [`escape`] made `token` of.
fn unescape(token: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'~' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn staged_subject(id: &str) -> String {
    format!("rill.staged.{}", escape(id))
}

fn mark_subject(writer: &str) -> String {
    format!("rill.marks.{}", escape(writer))
}

/// Creates the streams the protocol keeps its state in, if they are missing: staged
/// transactions, and the commit marks (the last message of each writer's subject).
pub(crate) fn ensure_protocol_streams(client: &NatsClient) -> Result<(), NatsError> {
    let streams = [
        (STAGING_STREAM, "rill.staged.>", -1),
        (MARKS_STREAM, "rill.marks.>", 1),
    ];
    for (name, subjects, max_messages_per_subject) in streams {
        let config = stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            storage: stream::StorageType::File,
            max_messages_per_subject,
            ..Default::default()
        };
        client.call(
            &format!("creating the stream {name}"),
            |jetstream| async move { jetstream.get_or_create_stream(config).await.map(drop) },
        )?;
    }
    Ok(())
}

/// One sink subtask's client, connected on first use (which creates the protocol's streams if
/// they are missing).
pub struct NatsTarget {
    url: String,
    stream: String,
    client: Option<NatsClient>,
    /// The transaction being staged and its nonce.
    staging: Option<(String, String)>,
}

impl NatsTarget {
    /// The target of the server at `url`, publishing into `stream`.
    pub fn new(url: &str, stream: &str) -> Self {
        NatsTarget {
            url: url.to_owned(),
            stream: stream.to_owned(),
            client: None,
            staging: None,
        }
    }

    fn client(&mut self) -> Result<&NatsClient, NatsError> {
        if self.client.is_none() {
            let client = NatsClient::connect(&self.url)?;
            ensure_protocol_streams(&client)?;
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| NatsError::Runtime("no client".to_owned()))
    }

    /// Publishes messages and waits for every acknowledgement.
    fn publish_all(
        &mut self,
        doing: &str,
        messages: Vec<(String, HeaderMap, Vec<u8>)>,
    ) -> Result<(), NatsError> {
        self.client()?
            .call(doing, |jetstream| publish_all(jetstream, messages))
    }

    /// (nonce, destination, payload) of the messages staged under `id`, in order.
    fn staged(&mut self, id: &str) -> Result<Vec<(String, String, Vec<u8>)>, NatsError> {
        let subject = staged_subject(id);
        self.client()?.call(
            &format!("reading transaction '{id}'"),
            |jetstream| async move {
                let stream = jetstream.get_stream(STAGING_STREAM).await?;
                let mut consumer = stream
                    .create_consumer(pull::OrderedConfig {
                        filter_subject: subject,
                        deliver_policy: DeliverPolicy::All,
                        ..Default::default()
                    })
                    .await?;
                let pending = consumer.info().await?.num_pending;
                let mut staged = Vec::new();
                let mut messages = consumer.messages().await?.take(pending as usize);
                while let Some(message) = messages.next().await {
                    let message = message?;
                    let header = |name| {
                        message
                            .headers
                            .as_ref()
                            .and_then(|headers| headers.get(name))
                            .map(|value| value.as_str().to_owned())
                    };
                    let destination = header(DESTINATION_HEADER)
                        .ok_or("a staged message without its destination")?;
                    let nonce = header(NONCE_HEADER).unwrap_or_default();
                    staged.push((nonce, destination, message.payload.to_vec()));
                }
                Ok::<_, async_nats::Error>(staged)
            },
        )
    }

    /// Purges the messages staged under `id`.
    fn purge(&mut self, id: &str) -> Result<(), NatsError> {
        let subject = staged_subject(id);
        self.client()?.call(
            &format!("purging transaction '{id}'"),
            |jetstream| async move {
                let stream = jetstream.get_stream(STAGING_STREAM).await?;
                stream.purge().filter(subject).await?;
                Ok::<(), async_nats::Error>(())
            },
        )
    }

    /// `writer`'s mark and the stream sequence it is stored at, if any.
    fn read_mark(&mut self, writer: &str) -> Result<Option<(u64, u64)>, NatsError> {
        let subject = mark_subject(writer);
        let stored = self
            .client()?
            .call("reading the commit mark", |jetstream| async move {
                let stream = jetstream.get_stream(MARKS_STREAM).await?;
                match stream.get_last_raw_message_by_subject(&subject).await {
                    Ok(message) => Ok(Some((message.payload.to_vec(), message.sequence))),
                    Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        Ok(None)
                    }
                    Err(error) => Err(async_nats::Error::from(error)),
                }
            })?;
        stored
            .map(|(bytes, sequence)| {
                std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .map(|checkpoint| (checkpoint, sequence))
                    .ok_or_else(|| NatsError::Request {
                        doing: format!("reading the commit mark of '{writer}'"),
                        reason: format!("not a checkpoint: {:?}", String::from_utf8_lossy(&bytes)),
                    })
            })
            .transpose()
    }

    /// Records `checkpoint` as `writer`'s mark if the mark is older (or, `rewind`, whatever it
    /// is). The write expects the mark it read to be the last, so that subtasks committing at
    /// once never move it back; it reads again and retries if another wrote in between.
    fn put_mark(&mut self, writer: &str, checkpoint: u64, rewind: bool) -> Result<(), NatsError> {
        let subject = mark_subject(writer);
        for _ in 0..MARK_RETRIES {
            let current = self.read_mark(writer)?;
            if !rewind && current.is_some_and(|(newest, _)| newest >= checkpoint) {
                return Ok(());
            }
            let mut headers = HeaderMap::new();
            let expected = current.map_or(0, |(_, sequence)| sequence);
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                expected.to_string().as_str(),
            );
            let payload = checkpoint.to_string().into_bytes();
            let message = vec![(subject.clone(), headers, payload)];
            if self
                .publish_all("recording the commit mark", message)
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(NatsError::Request {
            doing: format!("recording the commit mark of '{writer}'"),
            reason: format!("other writers kept changing it ({MARK_RETRIES} tries)"),
        })
    }

    /// The stream's duplicate window.
    pub(crate) fn duplicate_window(&mut self) -> Result<Duration, NatsError> {
        let name = self.stream.clone();
        self.client()?.call(
            &format!("reading stream '{name}'"),
            |jetstream| async move {
                let mut stream = jetstream.get_stream(name).await?;
                Ok::<_, async_nats::Error>(stream.info().await?.config.duplicate_window)
            },
        )
    }
}

impl TransactionalTarget for NatsTarget {
    type Produced = NatsMessage;
    type Error = NatsError;

    fn describe(&self) -> String {
        format!(
            "JetStream stream '{}' at '{}'",
            self.stream,
            rill_api::connectors::address::without_password(&self.url)
        )
    }

    fn append(&mut self, messages: Vec<NatsMessage>) -> Result<(), NatsError> {
        let messages = messages
            .into_iter()
            .map(|message| (message.subject, HeaderMap::new(), message.payload))
            .collect();
        self.publish_all("publishing", messages)
    }

    fn stage(&mut self, id: &str, messages: Vec<NatsMessage>) -> Result<(), NatsError> {
        let subject = staged_subject(id);
        if self
            .staging
            .as_ref()
            .is_none_or(|(staging, _)| staging != id)
        {
            self.staging = Some((id.to_owned(), nonce()));
        }
        let nonce = self
            .staging
            .as_ref()
            .map(|(_, nonce)| nonce.clone())
            .unwrap_or_default();
        let staged = messages
            .into_iter()
            .map(|message| {
                let mut headers = HeaderMap::new();
                headers.insert(DESTINATION_HEADER, message.subject.as_str());
                headers.insert(NONCE_HEADER, nonce.as_str());
                (subject.clone(), headers, message.payload)
            })
            .collect();
        self.publish_all(&format!("staging transaction '{id}'"), staged)
    }

    /// Staged messages are durable once acknowledged.
    fn prepare(&mut self, _id: &str, _mark: Option<CommitMark<'_>>) -> Result<(), NatsError> {
        Ok(())
    }

    fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), NatsError> {
        let staged = self.staged(id)?;
        if staged.is_empty() {
            return Ok(());
        }
        let checkpoint = mark.map_or_else(|| "end".to_owned(), |mark| mark.checkpoint.to_string());
        let messages = staged
            .into_iter()
            .enumerate()
            .map(|(index, (nonce, destination, payload))| {
                let mut headers = HeaderMap::new();
                let message_id = format!("{id}/{checkpoint}/{nonce}/{index}");
                headers.insert("Nats-Msg-Id", message_id.as_str());
                (destination, headers, payload)
            })
            .collect();
        self.publish_all(&format!("committing transaction '{id}'"), messages)?;
        if let Some(mark) = mark {
            self.put_mark(mark.writer, mark.checkpoint, false)?;
        }
        self.purge(id)
    }

    fn abort(&mut self, id: &str) -> Result<(), NatsError> {
        self.purge(id)
    }

    fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, NatsError> {
        let subjects =
            self.client()?
                .call("listing staged transactions", |jetstream| async move {
                    let stream = jetstream.get_stream(STAGING_STREAM).await?;
                    let mut subjects = stream.info_with_subjects("rill.staged.>").await?;
                    let mut names = Vec::new();
                    while let Some(subject) = subjects.next().await {
                        let (subject, _count) = subject?;
                        names.push(subject);
                    }
                    Ok::<_, async_nats::Error>(names)
                })?;
        let mut open: Vec<String> = subjects
            .iter()
            .filter_map(|subject| subject.strip_prefix("rill.staged."))
            .filter_map(unescape)
            .filter(|id| id.starts_with(prefix))
            .collect();
        open.sort();
        Ok(open)
    }

    fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, NatsError> {
        Ok(self.read_mark(writer)?.map(|(checkpoint, _)| checkpoint))
    }

    fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), NatsError> {
        match to {
            Some(checkpoint) => self.put_mark(writer, checkpoint, true),
            None => {
                let subject = mark_subject(writer);
                self.client()?
                    .call("removing the commit mark", |jetstream| async move {
                        let stream = jetstream.get_stream(MARKS_STREAM).await?;
                        stream.purge().filter(subject).await?;
                        Ok::<(), async_nats::Error>(())
                    })
            }
        }
    }

    /// Everything acknowledged is stored.
    fn flush(&mut self) -> Result<(), NatsError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{escape, unescape};

    #[test]
    fn escaped_names_are_one_token_and_come_back() {
        for name in ["job/sink/0/12", "a.b c*>~", "plain-name_1", "é"] {
            let token = escape(name);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_~".contains(&b))
            );
            assert_eq!(unescape(&token).as_deref(), Some(name));
        }
        assert_eq!(unescape("~zz"), None);
    }
}

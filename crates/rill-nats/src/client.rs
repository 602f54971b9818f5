//! A JetStream client that synchronous code can call.
//!
//! The client is `async-nats`, the NATS maintainers' Rust client. Sources and sinks are
//! synchronous and run inside the actor runtime's tokio threads, where blocking on a future
//! is not allowed; so each [`NatsClient`] owns a small runtime of its own (one worker thread)
//! and [`NatsClient::call`] runs a future there and waits for it on a channel. The runtime is
//! shut down in the background when the client is dropped, which is allowed in async code.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::stream;
use tokio::runtime::Runtime;

use rill_api::connectors::address::without_password;

use crate::{NatsError, NatsMessage};

/// How long a request to the server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a NATS server with JetStream.
pub struct NatsClient {
    runtime: Option<Runtime>,
    jetstream: jetstream::Context,
}

impl NatsClient {
    /// Connects to the server at `url` (`nats://host:port`).
    pub fn connect(url: &str) -> Result<Self, NatsError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rill-nats")
            .enable_all()
            .build()
            .map_err(|error| NatsError::Runtime(error.to_string()))?;
        let address = url.to_owned();
        // The context starts tasks of its own: it is made on the runtime.
        let connected = run_on(&runtime, async move {
            async_nats::ConnectOptions::new()
                .connection_timeout(REQUEST_TIMEOUT)
                .request_timeout(Some(REQUEST_TIMEOUT))
                .max_reconnects(Some(3))
                .connect(address)
                .await
                .map(jetstream::new)
        })?;
        let jetstream = connected.map_err(|error| NatsError::Connect {
            url: without_password(url),
            reason: error.to_string(),
        })?;
        Ok(NatsClient {
            runtime: Some(runtime),
            jetstream,
        })
    }

    /// Runs `work` with the JetStream context on the client's runtime and waits for it; an
    /// error names what it was `doing`.
    pub fn call<R, E, F>(
        &self,
        doing: &str,
        work: impl FnOnce(jetstream::Context) -> F,
    ) -> Result<R, NatsError>
    where
        F: Future<Output = Result<R, E>> + Send + 'static,
        R: Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| NatsError::Runtime("the client's runtime is gone".to_owned()))?;
        run_on(runtime, work(self.jetstream.clone()))?.map_err(|error| NatsError::Request {
            doing: doing.to_owned(),
            reason: error.to_string(),
        })
    }
}

impl NatsClient {
    /// Creates stream `name` capturing `subjects`, with the given duplicate window, unless a
    /// stream of that name exists.
    pub fn ensure_stream(
        &self,
        name: &str,
        subjects: &[&str],
        duplicate_window: Duration,
    ) -> Result<(), NatsError> {
        let config = stream::Config {
            name: name.to_owned(),
            subjects: subjects
                .iter()
                .map(|subject| (*subject).to_owned())
                .collect(),
            duplicate_window,
            ..Default::default()
        };
        self.call(
            &format!("creating stream '{name}'"),
            |jetstream| async move { jetstream.get_or_create_stream(config).await.map(drop) },
        )
    }

    /// Publishes `messages` in order and waits until JetStream has stored them all.
    pub fn publish(&self, messages: Vec<NatsMessage>) -> Result<(), NatsError> {
        let messages = messages
            .into_iter()
            .map(|message| (message.subject, HeaderMap::new(), message.payload))
            .collect();
        self.call("publishing", |jetstream| publish_all(jetstream, messages))
    }
}

/// The most publications awaiting JetStream's acknowledgement at once: the context admits only
/// so many, and a publication beyond them waits for an acknowledgement to be awaited.
const ACKS_IN_FLIGHT: usize = 256;

/// Publishes (subject, headers, payload) messages in order, keeping at most
/// [`ACKS_IN_FLIGHT`] unacknowledged, and waits until JetStream has stored them all.
pub(crate) async fn publish_all(
    jetstream: jetstream::Context,
    messages: Vec<(String, HeaderMap, Vec<u8>)>,
) -> Result<(), async_nats::Error> {
    let mut in_flight = VecDeque::with_capacity(ACKS_IN_FLIGHT);
    for (subject, headers, payload) in messages {
        if in_flight.len() == ACKS_IN_FLIGHT
            && let Some(ack) = in_flight.pop_front()
        {
            ack.await?;
        }
        in_flight.push_back(
            jetstream
                .publish_with_headers(subject, headers, payload.into())
                .await?,
        );
    }
    for ack in in_flight {
        ack.await?;
    }
    Ok(())
}

impl Drop for NatsClient {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `future` on `runtime` and waits for its output from any thread, inside async code or
/// not.
fn run_on<R: Send + 'static>(
    runtime: &Runtime,
    future: impl Future<Output = R> + Send + 'static,
) -> Result<R, NatsError> {
    let (reply, result) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = reply.send(future.await);
    });
    result
        .recv()
        .map_err(|_| NatsError::Runtime("the client's runtime dropped a request".to_owned()))
}

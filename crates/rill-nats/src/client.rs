//! A JetStream client that synchronous code can call.
//!
//! The client is `async-nats`, the NATS maintainers' Rust client. Sources and sinks are
//! synchronous and run inside the actor runtime's tokio threads, where blocking on a future
//! is not allowed; so each [`NatsClient`] owns a small runtime of its own (one worker thread)
//! and [`NatsClient::call`] runs a future there and waits for it on a channel. The runtime is
//! shut down in the background when the client is dropped, which is allowed in async code.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::runtime::Runtime;

use crate::NatsError;

/// How long a request to the server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a NATS server with JetStream.
pub struct NatsClient {
    runtime: Option<Runtime>,
    jetstream: jetstream::Context,
    url: String,
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
            url: url.to_owned(),
            reason: error.to_string(),
        })?;
        Ok(NatsClient {
            runtime: Some(runtime),
            jetstream,
            url: url.to_owned(),
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
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

//! A PostgreSQL connection on a thread of its own.
//!
//! The client is the `postgres` crate: the synchronous face of `tokio-postgres`, the
//! well-kept pure-Rust client (binary `COPY`, prepared statements, SQLSTATE codes). Sinks are
//! synchronous, but they run inside the actor runtime's tokio threads, where the `postgres`
//! client — which blocks on a runtime of its own — must not run. So each [`Connection`] owns a
//! thread that holds the client and runs the work sent to it, one request at a time. Dropping
//! the connection ends the thread and closes the session, which rolls back a transaction left
//! open, as a crash of the process would.

use std::sync::mpsc;
use std::thread::JoinHandle;

use postgres::{Client, NoTls};

use crate::PostgresError;

/// Work for the connection's thread.
type Request = Box<dyn FnOnce(&mut Client) + Send>;

/// One session with the server.
pub(crate) struct Connection {
    requests: Option<mpsc::Sender<Request>>,
    worker: Option<JoinHandle<()>>,
}

impl Connection {
    /// Connects with `config` (`host=… port=… user=… dbname=…`, or a `postgresql://` URL).
    pub(crate) fn open(config: &str) -> Result<Self, PostgresError> {
        let (requests, incoming) = mpsc::channel::<Request>();
        let (ready, connected) = mpsc::sync_channel(1);
        let config_text = config.to_owned();
        let worker = std::thread::Builder::new()
            .name("rill-postgres".to_owned())
            .spawn(move || match Client::connect(&config_text, NoTls) {
                Ok(mut client) => {
                    let _ = ready.send(Ok(()));
                    for request in incoming {
                        request(&mut client);
                    }
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                }
            })
            .map_err(|error| PostgresError::Thread(error.to_string()))?;
        let connection = Connection {
            requests: Some(requests),
            worker: Some(worker),
        };
        match connected.recv() {
            Ok(Ok(())) => Ok(connection),
            Ok(Err(error)) => Err(PostgresError::Connect {
                config: redact(config),
                source: error,
            }),
            Err(_) => Err(PostgresError::Thread(
                "the connection's thread ended before connecting".to_owned(),
            )),
        }
    }

    /// Runs `work` with the client on the connection's thread and waits for its result.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        doing: &str,
        work: impl FnOnce(&mut Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> Result<R, PostgresError> {
        let (reply, result) = mpsc::sync_channel(1);
        let request: Request = Box::new(move |client| {
            let _ = reply.send(work(client));
        });
        let lost = || PostgresError::Thread(format!("the connection's thread ended {doing}"));
        self.requests
            .as_ref()
            .ok_or_else(lost)?
            .send(request)
            .map_err(|_| lost())?;
        match result.recv() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(PostgresError::Query {
                doing: doing.to_owned(),
                source,
            }),
            Err(_) => Err(lost()),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; the client, dropped there, closes the
        // session.
        self.requests = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// `config` without its password, for errors: a URL as `without_password` shows it, and of
/// `key=value` parameters everything but `password` (also written `password = value`).
pub(crate) fn redact(config: &str) -> String {
    if config.contains("://") {
        return rill_api::connectors::address::without_password(config);
    }
    let normalized = config
        .replace(" = ", "=")
        .replace(" =", "=")
        .replace("= ", "=");
    let mut kept = Vec::new();
    let mut quoted = false;
    for part in normalized.split_whitespace() {
        if quoted {
            quoted = !part.ends_with('\'');
            continue;
        }
        if let Some(value) = part.strip_prefix("password=") {
            quoted = value.starts_with('\'') && !(value.len() > 1 && value.ends_with('\''));
            continue;
        }
        kept.push(part);
    }
    kept.join(" ")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn errors_never_show_a_password() {
        assert_eq!(
            redact("host=db user=rill password=secret dbname=x"),
            "host=db user=rill dbname=x"
        );
        assert_eq!(
            redact("postgresql://rill:secret@db:5432/x"),
            "postgresql://rill@db:5432/x"
        );
        assert_eq!(redact("postgresql://db/x"), "postgresql://db/x");
        assert_eq!(redact("host=db password = secret user=u"), "host=db user=u");
        assert_eq!(redact("host=db password='a b' user=u"), "host=db user=u");
    }
}

//! From the configuration's [`PostgresTarget`] to a client configuration:
//! the URL (which the `postgres` crate parses) plus the password kept
//! apart, and the settings every connection of the exporter shares; and a
//! store's connection, which closes off any async runtime (`Connection`).

use crate::PgStoreError;
use ci_slo_core::config::database::PostgresTarget;
use std::str::FromStr;
use std::time::Duration;

/// How long a connection attempt may take, unless the URL says
/// (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client configuration for `target`.
pub fn client_config(target: &PostgresTarget) -> Result<postgres::Config, PgStoreError> {
    let mut config = postgres::Config::from_str(target.url()).map_err(|e| PgStoreError::Url {
        key: target.source().to_string(),
        reason: e.to_string(),
    })?;
    if let Some(password) = target.password() {
        config.password(password.expose());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // The server's NOTICEs (e.g. "relation already exists, skipping" of a
    // migration run again) are not news for the exporter's log.
    if config.get_options().is_none() {
        config.options("-c client_min_messages=warning");
    }
    if config.get_application_name().is_none() {
        config.application_name("ci-slo-exporter");
    }
    Ok(config)
}

/// Connect, naming the target (password masked) when it fails.
pub fn connect(
    config: &postgres::Config,
    shown: &dyn std::fmt::Display,
) -> Result<postgres::Client, PgStoreError> {
    config
        .connect(postgres::NoTls)
        .map_err(|source| PgStoreError::Connect {
            target: shown.to_string(),
            source,
        })
}

/// A connection that closes outside any async runtime. The synchronous
/// `postgres::Client` drives its connection on a tokio runtime of its own:
/// closing it (its `Drop`) blocks on that runtime, and dropping it drops
/// that runtime, both of which panic on a thread of another runtime ("Cannot
/// start a runtime from within a runtime"). The exporter's stores are
/// dropped wherever their last handle goes, an async task of `serve`'s
/// runtime at shutdown included, so a connection dropped inside a runtime's
/// context is closed on a plain thread of its own (waited for: the server
/// has seen it close when the drop returns).
pub(crate) struct Connection(Option<postgres::Client>);

impl Connection {
    pub(crate) fn new(client: postgres::Client) -> Connection {
        Connection(Some(client))
    }
}

impl std::ops::Deref for Connection {
    type Target = postgres::Client;

    fn deref(&self) -> &postgres::Client {
        self.0.as_ref().expect("a connection is open until dropped")
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.0.as_mut().expect("a connection is open until dropped")
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            close(client);
        }
    }
}

/// Close `client`: here, or on a plain thread when this thread is in a
/// tokio runtime's context (see [`Connection`]).
fn close(client: postgres::Client) {
    if tokio::runtime::Handle::try_current().is_err() {
        drop(client);
        return;
    }
    // Shared with the thread, so that when no thread can start the client
    // is taken back here rather than dropped with the failed spawn's closure.
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(client)));
    let theirs = slot.clone();
    let closing = std::thread::Builder::new()
        .name("pg-close".into())
        .spawn(move || {
            let client = theirs.lock().ok().and_then(|mut c| c.take());
            drop(client);
        });
    match closing {
        Ok(thread) => {
            let _ = thread.join();
        }
        Err(e) => {
            // Left open: it closes when the process exits.
            if let Some(client) = slot.lock().ok().and_then(|mut c| c.take()) {
                std::mem::forget(client);
            }
            tracing::warn!(error = %e, "cannot start a thread to close a PostgreSQL connection; left open");
        }
    }
}

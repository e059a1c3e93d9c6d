//! From the configuration's [`PostgresTarget`] to a client configuration:
//! the URL (which the `postgres` crate parses) plus the password kept
//! apart, and the settings every connection of the exporter shares.

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

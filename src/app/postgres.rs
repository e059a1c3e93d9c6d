//! The PostgreSQL store, selected by `[store] url` or `CI_SLO_DATABASE_URL`
//! (docs/configuration.md). It is in progress (crates/store-pg,
//! docs/scaling.md): `serve` connects, migrates the database (so the
//! connection settings and the password are checked end to end) and then
//! stops with an error saying that serving from PostgreSQL is not built
//! yet; the other commands that open the store refuse before touching
//! anything. Nothing falls back to the SQLite file silently. The database
//! prints with its password masked (`***`), in the log and in errors.

use crate::cli::Command;
use crate::config::Config;
use crate::config::database::StoreBackend;
use anyhow::{Result, bail};

/// Ok when the command may go on (the store is SQLite, or the command
/// opens no store); otherwise what happened, as an error.
pub(super) fn check(config: &Config, command: &Command) -> Result<()> {
    let StoreBackend::Postgres(target) = config.store.backend(|k| std::env::var(k).ok())? else {
        return Ok(());
    };
    match command {
        Command::Classify(_) | Command::Report(_) => Ok(()),
        Command::Serve(_) => {
            tracing::info!(database = %target, from = target.source(), "PostgreSQL store selected: connecting and migrating");
            let mut store = ci_slo_store_pg::PgStore::open(&target, &mut |step| {
                tracing::info!(
                    from = step.from,
                    to = step.latest,
                    migration = step.to,
                    "migrating the PostgreSQL database"
                );
            })?;
            let version = store.schema_version()?;
            bail!(
                "PostgreSQL store selected ({target}, from {}): the database is reachable and migrated \
                 (schema version {version}), but this build does not serve from PostgreSQL yet; \
                 unset {} to serve from the SQLite file store.path",
                target.source(),
                target.source()
            )
        }
        _ => bail!(
            "PostgreSQL store selected ({target}, from {}), which this command does not support yet; \
             unset {} to use the SQLite file",
            target.source(),
            target.source()
        ),
    }
}

//! Opening the store: the one place in the exporter that names an engine.
//! Everything else reaches the store through the interface
//! `ci_slo_store::Storage`: a command through the store this module opens,
//! the server through `StoreHandle` (the writer thread and the read pool).
//! The engine is chosen from the configuration: SQLite at `[store] path`,
//! or PostgreSQL when `[store] url` or `CI_SLO_DATABASE_URL` names one
//! (docs/configuration.md, docs/scaling.md). Nothing falls back from one to
//! the other silently. `scripts/check-store-interface` fails when another
//! file of `src/` names the SQLite store or its raw connection.

use crate::config::StoreConfig;
use crate::config::database::{PostgresTarget, StoreBackend};
use crate::store::writer::{READERS, StoreHandle};
use crate::store::{Migrating, Storage, Store, StoreError};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::connect::ConnectConfig;
use std::path::Path;

/// Which engine `config` selects (the environment's `CI_SLO_DATABASE_URL`
/// first).
pub fn backend(config: &StoreConfig) -> Result<StoreBackend, StoreError> {
    config
        .backend(|k| std::env::var(k).ok())
        .map_err(|e| StoreError::Refused(e.to_string()))
}

/// Where the store `config` selects is, for the log: the SQLite file's
/// path, or the PostgreSQL URL with its password masked.
pub fn location(config: &StoreConfig) -> String {
    match backend(config) {
        Ok(StoreBackend::Postgres(target)) => target.to_string(),
        _ => config.path.display().to_string(),
    }
}

/// Open (creating and migrating if needed) the store `config` names.
pub fn open(config: &StoreConfig) -> Result<Box<dyn Storage>, StoreError> {
    open_reporting(config, &mut |_| {})
}

/// [`open`], telling `progress` before each migration it runs.
pub fn open_reporting(
    config: &StoreConfig,
    progress: &mut dyn FnMut(Migrating),
) -> Result<Box<dyn Storage>, StoreError> {
    Ok(match backend(config)? {
        StoreBackend::Sqlite(path) => Box::new(Store::open_reporting(&path, progress)?),
        StoreBackend::Postgres(target) => Box::new(open_postgres(&target, progress)?),
    })
}

fn open_postgres(
    target: &PostgresTarget,
    progress: &mut dyn FnMut(Migrating),
) -> Result<PgStore, StoreError> {
    Ok(PgStore::open(target, progress)?)
}

/// Open the store and start its writer thread and read pool (`serve`, the
/// backfills). PostgreSQL: one connection for the writer and one for each
/// of the [`READERS`], all from one connection configuration (TLS and its
/// CA file read once).
pub fn start(config: &StoreConfig) -> Result<StoreHandle, StoreError> {
    match backend(config)? {
        StoreBackend::Sqlite(path) => StoreHandle::start(&path),
        StoreBackend::Postgres(target) => {
            let connect = ConnectConfig::from_target(&target)?;
            let open = || -> Result<PgStore, StoreError> {
                Ok(PgStore::open_with(&connect, &target, &mut |_| {})?)
            };
            // The connections are made at once, each on its own thread:
            // each is a TCP connect, a SCRAM exchange (CPU on both sides) and
            // the check that the schema is current, a few round trips that
            // one after the other were most of opening (serve's start).
            let mut opened = std::thread::scope(|scope| {
                let opening: Vec<_> = (0..=READERS).map(|_| scope.spawn(open)).collect();
                opening
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(StoreError::Refused(
                                "opening a PostgreSQL connection panicked".into(),
                            ))
                        })
                    })
                    .collect::<Result<Vec<PgStore>, StoreError>>()
            })?;
            let writer = opened.remove(0);
            let readers = opened
                .into_iter()
                .map(|s| Box::new(s) as Box<dyn Storage>)
                .collect();
            StoreHandle::start_with(Box::new(writer), readers, target.to_string())
        }
    }
}

/// `config` with the database a command's `--db` names.
pub fn with_db(config: &StoreConfig, db: &Path) -> StoreConfig {
    StoreConfig {
        path: db.to_path_buf(),
        ..config.clone()
    }
}

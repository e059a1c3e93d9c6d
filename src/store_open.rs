//! Opening the store: the one place in the exporter that names an engine.
//! Everything else reaches the store through the interface
//! `ci_slo_store::Storage`: a command through the store this module opens,
//! the server through `StoreHandle` (the writer thread and the read pool).
//! Today the engine is SQLite (`[store] path`); a second one (PostgreSQL,
//! issue 18) is chosen here from the configuration, and nothing else changes.
//! `scripts/check-store-interface` fails when another file of `src/` names
//! the SQLite store or its raw connection.

use crate::config::StoreConfig;
use crate::store::writer::StoreHandle;
use crate::store::{Migrating, Storage, Store, StoreError};
use std::path::Path;

/// Open (creating and migrating if needed) the store `config` names.
pub fn open(config: &StoreConfig) -> Result<Box<dyn Storage>, StoreError> {
    open_reporting(config, &mut |_| {})
}

/// [`open`], telling `progress` before each migration it runs.
pub fn open_reporting(
    config: &StoreConfig,
    progress: &mut dyn FnMut(Migrating),
) -> Result<Box<dyn Storage>, StoreError> {
    Ok(Box::new(Store::open_reporting(&config.path, progress)?))
}

/// Open the store and start its writer thread and read pool (`serve`, the
/// backfills).
pub fn start(config: &StoreConfig) -> Result<StoreHandle, StoreError> {
    StoreHandle::start(&config.path)
}

/// `config` with the database a command's `--db` names.
pub fn with_db(config: &StoreConfig, db: &Path) -> StoreConfig {
    StoreConfig {
        path: db.to_path_buf(),
        ..config.clone()
    }
}

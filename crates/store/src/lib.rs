//! ci-slo-store, SQLite persistence: migrations, idempotent upserts,
//! exactly-once counting. It builds on `ci-slo-core` only; the exporter
//! builds on both.
//!
//! One `Store` is one connection. The server gives the only writing `Store` to
//! a dedicated thread ([`writer::StoreHandle`]) so writes never contend; reads use
//! their own connection (WAL lets them run beside the writer). Every write
//! happens in one `BEGIN IMMEDIATE` transaction, or in a savepoint of the
//! writer thread's group commit: a crash leaves either the whole run (with its
//! counters) or nothing.
//!
//! The exporter uses a store only through the trait [`Storage`] (see
//! [`storage`]): the SQLite `Store` is its first implementation, and a second
//! engine implements the same trait.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod bulk;
mod content_hash;
mod counting;
mod error;
mod fingerprints;
mod forge_state;
mod fresh;
mod fresh_runs;
pub mod github;
mod hourly;
mod ingest_run;
mod logs;
pub mod merge_counts;
mod plausible;
mod policy;
mod prune;
mod reads;
mod results;
pub mod revision;
pub mod run_counts;
mod run_view;
pub mod schema;
mod scratch;
mod settle;
mod staging;
pub mod storage;
pub mod tally;
pub mod test_index;
pub mod test_slo;
pub mod test_step;
pub mod timeline;
pub mod ui;
pub mod writer;

// The core's modules, so that `crate::model::…` paths in this crate name
// them, as they did when the store was a module of the exporter.
use ci_slo_core::{classify, deps, flaky, model, redact};
#[cfg(test)]
use ci_slo_core::{config, ingest};

use chrono::{DateTime, TimeZone, Utc};
use ci_slo_core::catalog;
use ci_slo_core::model::Forge;
use ci_slo_core::slo;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::path::Path;

pub use counting::run_event_columns;
pub use error::{ErrorKind, StoreError};
pub use forge_state::{ExternalRun, SyncState};
pub use ingest_run::{IngestStatus, Ingested, Prepared, content_hash, external_key, url_in_id};
pub use policy::Policy;
pub use prune::PruneStats;
pub use reads::{
    BucketRow, CounterRow, HistogramRow, MetricState, add_counts, first_whole_hour, window_start,
};
pub use results::{counts_from_columns, outcome_from_code};
pub use run_view::{ChangeView, ReportView, RunView, TestSlice, TestView};
pub use settle::SettleStats;
pub use storage::{BulkLoad, Engine, Fence, FreshLoading, Storage};

pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub struct Store {
    conn: Connection,
}

/// The transaction of one write: its own `BEGIN IMMEDIATE` transaction, or a
/// savepoint when the write runs inside a larger one (the writer thread's
/// group commit, see [`writer`]). Either way it is all or nothing, and
/// dropping it without `commit` rolls it back.
enum WriteTx<'a> {
    Own(Transaction<'a>),
    Nested(rusqlite::Savepoint<'a>),
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            WriteTx::Own(t) => t,
            WriteTx::Nested(s) => s,
        }
    }
}

impl WriteTx<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        match self {
            WriteTx::Own(t) => t.commit(),
            WriteTx::Nested(s) => s.commit(),
        }
    }
}

/// The id of repository (forge ?1, path ?2), for queries by repository.
/// A subquery rather than a join: SQLite re-prepares a join on `repositories`
/// with bound forge and path at each use of a cached statement.
const REPOSITORY_ID: &str = "(SELECT id FROM repositories WHERE forge = ?1 AND path = ?2)";

/// A migration about to run on an existing database: from version `from`
/// (what the file had when opened) through `to` (this step), of `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrating {
    pub from: i64,
    pub to: i64,
    pub latest: i64,
}

impl std::fmt::Display for Migrating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "migrating the database from version {} to {} (now running migration {})",
            self.from, self.latest, self.to
        )
    }
}

const META_SERVING_SINCE: &str = "serving_since";
const META_DEMO: &str = "demo";

impl Store {
    /// Open (creating if needed) and migrate a database file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_reporting(path, &mut |_| {})
    }

    /// [`Store::open`], telling `progress` before each migration it runs (a
    /// migration of a large database can take minutes: the server says so
    /// on `/readyz` and in the log meanwhile).
    pub fn open_reporting(
        path: &Path,
        progress: &mut dyn FnMut(Migrating),
    ) -> Result<Store, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let mut store = Store { conn };
        store.configure()?;
        store.migrate(&path.display().to_string(), progress)?;
        Ok(store)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let mut store = Store {
            conn: Connection::open_in_memory()?,
        };
        store.configure()?;
        store.migrate(":memory:", &mut |_| {})?;
        Ok(store)
    }

    fn configure(&self) -> Result<(), StoreError> {
        self.conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // One ingest runs a few dozen distinct statements: keep them all
        // prepared (rusqlite's default of 16 would re-parse most of them).
        self.conn.set_prepared_statement_cache_capacity(256);
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        register_functions(&self.conn)?;
        Ok(())
    }

    fn migrate(
        &mut self,
        path: &str,
        progress: &mut dyn FnMut(Migrating),
    ) -> Result<(), StoreError> {
        let known = schema::MIGRATIONS.len() as i64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > known {
            return Err(StoreError::TooNew {
                path: path.to_string(),
                found: version,
                known,
            });
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            if version > 0 {
                // A new database is created in an instant; an existing one
                // may hold millions of rows to move.
                progress(Migrating {
                    from: version,
                    to: (i + 1) as i64,
                    latest: known,
                });
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Begin one write (see [`WriteTx`]).
    fn write_tx(&mut self) -> rusqlite::Result<WriteTx<'_>> {
        Ok(if self.conn.is_autocommit() {
            WriteTx::Own(
                self.conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?,
            )
        } else {
            WriteTx::Nested(self.conn.savepoint()?)
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// Record that a server started on this database. From then on, history
    /// loaded with `--history` no longer moves the live counters.
    pub fn mark_serving(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        if self.meta(META_SERVING_SINCE)?.is_none() {
            self.set_meta(META_SERVING_SINCE, &now.to_rfc3339())?;
        }
        Ok(())
    }

    pub fn is_demo(&self) -> Result<bool, StoreError> {
        Ok(self.meta(META_DEMO)?.is_some())
    }

    pub fn mark_demo(&self, seed_info: &str) -> Result<(), StoreError> {
        self.set_meta(META_DEMO, seed_info)
    }

    pub fn run_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))?)
    }
}

/// The SQL functions the store's migrations use: `run_external_key(id)`,
/// [`external_key`] of a text (NULL for NULL; migration 14 computes the key of
/// every stored run with it). Registered on every connection the store opens.
pub(crate) fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "run_external_key",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(ctx.get::<Option<String>>(0)?.map(|id| external_key(&id))),
    )
}

fn upsert_repository(tx: &Connection, forge: Forge, path: &str) -> rusqlite::Result<i64> {
    let mut select =
        tx.prepare_cached("SELECT id FROM repositories WHERE forge = ?1 AND path = ?2")?;
    if let Some(id) = select
        .query_row([forge.as_str(), path], |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    tx.prepare_cached("INSERT INTO repositories (forge, path) VALUES (?1, ?2)")?
        .execute([forge.as_str(), path])?;
    Ok(tx.last_insert_rowid())
}

impl Store {}

#[cfg(test)]
mod tests;

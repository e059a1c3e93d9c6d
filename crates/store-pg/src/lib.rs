//! ci-slo-store-pg: the PostgreSQL store, in progress (issue 18). What
//! exists: the connection configuration from `[store] url` ([`connect`]),
//! the versioned migrations ([`schema`], [`migrate`]) creating SQLite's
//! schema on PostgreSQL, the leadership of replicas ([`leader`]: work that
//! must run once runs on the replica holding a session advisory lock), and
//! part of the storage, with the SQLite store's methods and answers:
//! [`PgStore::ingest_run`] (a run with its failures, test results and
//! per-test counters, reports, dependencies and change, counted once; not
//! yet a differing report of a finished run), `meta`, counters ([`tally`]),
//! SLO events ([`counting`]), the forges' state (webhook deliveries, sync
//! cursors), job logs and retention (`prune`). Several replicas write to
//! one database at once ([`concurrent`]: the locks a write takes, in one
//! order, and the retry of a write that lost a conflict); errors carry the
//! kind the exporter acts on (`From<PgStoreError> for StoreError`). Not
//! here yet: bulk loads, settling, the reads; the exporter serves from
//! SQLite only.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod concurrent;
pub mod connect;
pub mod counting;
mod error;
mod failures;
mod forge_state;
mod ingest_run;
pub mod leader;
mod logs;
mod meta;
pub mod migrate;
mod prune;
mod results;
pub mod schema;
mod statements;
pub mod tally;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{PgStoreError, describe, kind_of_code};
pub use statements::{Sql, Tx};

use ci_slo_core::config::database::PostgresTarget;
use ci_slo_store::Migrating;
use std::cell::{RefCell, RefMut};

/// A connection to a migrated PostgreSQL database.
///
/// Writes take `&mut self`; reads take `&self` (the storage interface's
/// read pool shares nothing between readers, so each reader is one store
/// with its own connection, borrowed per read through [`PgStore::reader`]).
pub struct PgStore {
    client: RefCell<postgres::Client>,
    statements: statements::Statements,
    /// Whether the writer thread holds a batch's transaction open (see the
    /// `Engine` implementation): writes are then savepoints inside it.
    in_batch: bool,
    /// Writes run again after a conflict, since opened (`concurrent.rs`).
    retried: u64,
}

impl PgStore {
    /// Connect to `target` and migrate its database, telling `progress`
    /// before each migration of an existing database.
    pub fn open(
        target: &PostgresTarget,
        progress: &mut dyn FnMut(Migrating),
    ) -> Result<PgStore, PgStoreError> {
        let config = connect::client_config(target)?;
        PgStore::open_config(&config, target, progress)
    }

    /// [`PgStore::open`] with a client configuration; `shown` names the
    /// database in errors (never with its password).
    pub fn open_config(
        config: &postgres::Config,
        shown: &dyn std::fmt::Display,
        progress: &mut dyn FnMut(Migrating),
    ) -> Result<PgStore, PgStoreError> {
        let mut client = connect::connect(config, shown)?;
        migrate::migrate(&mut client, progress)?;
        Ok(PgStore {
            client: RefCell::new(client),
            statements: statements::Statements::default(),
            in_batch: false,
            retried: 0,
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&mut self) -> Result<i64, PgStoreError> {
        migrate::schema_version(self.client.get_mut())
    }

    /// How many times a write of this store was run again after losing a
    /// conflict (a deadlock, a serialization failure) since it was opened.
    pub fn retried(&self) -> u64 {
        self.retried
    }

    /// The connection, for tests and benchmarks that look at the tables.
    pub fn client(&mut self) -> &mut postgres::Client {
        self.client.get_mut()
    }

    /// The connection for one read. Reads never nest, so the borrow is
    /// always free (a nested borrow would be a bug, and panics).
    pub fn reader(&self) -> RefMut<'_, postgres::Client> {
        self.client.borrow_mut()
    }

    /// Begin a write: a transaction (a savepoint inside the batch's
    /// transaction when the writer thread has one open) whose statements
    /// are prepared once per connection.
    pub fn write_tx(&mut self) -> Result<Tx<'_>, PgStoreError> {
        Ok(Tx::begin(
            self.client.get_mut(),
            &mut self.statements,
            self.in_batch,
        )?)
    }
}

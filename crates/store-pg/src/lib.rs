//! ci-slo-store-pg: the PostgreSQL store (issue 18), the second engine
//! behind the exporter's storage interface (`ci_slo_store::Storage`, in
//! [`storage`]), with the SQLite store's methods and answers (its tests feed
//! the same data to both engines and compare).
//!
//! - Connection and schema: the configuration from `[store] url`
//!   ([`connect`]), versioned migrations ([`schema`], [`migrate`]) creating
//!   SQLite's schema on PostgreSQL.
//! - Writes: [`PgStore::ingest_run`] (a run with its failures, test results
//!   and the mark of its new ones, whose per-test counters are folded after
//!   the run, [`fold`], reports, dependencies and change, counted once;
//!   a new report of a finished run judged by the SQLite store's revision
//!   rules), [`PgStore::ingest_batch`] and [`PgStore::in_transaction`],
//!   settling merged changes, late and expired triggers and lost runs,
//!   workflow runs and stale events, `meta`, counters ([`tally`]), SLO
//!   events ([`counting`]), the forges' state, job logs and retention.
//!   Several replicas write at once ([`concurrent`]: the locks a write
//!   takes, in one order, and the retry of a write that lost a conflict);
//!   errors carry the kind the exporter acts on (`From<PgStoreError> for
//!   StoreError`).
//! - Reads: `/metrics`, the history backfill and the forge adapters' lookups
//!   (`reads`, `timeline`, `test_slo`, `github`), the web UI and JSON API
//!   (`ui`, `run_view`, `test_index`), through statements prepared once per
//!   connection ([`PgStore::read`]).
//! - Leadership of replicas ([`leader`]): work that must run once runs on
//!   the replica holding a session advisory lock.
//! - A lost connection (the server restarted, failed over, or ended the
//!   session) is made again before the store's next operation
//!   ([`reconnect`]).
//!
//! Not here: a bulk load (`import cockpit` stores run by run).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

/// The id of repository (forge $1, path $2), for queries by repository: a
/// literal, so that statements built on it with `concat!` are `&'static
/// str` (prepared once per connection).
macro_rules! repository_id {
    () => {
        "(SELECT id FROM repositories WHERE forge = $1 AND path = $2)"
    };
}

mod batch;
pub mod concurrent;
pub mod connect;
pub mod counting;
mod error;
mod failures;
pub mod fold;
mod forge_events;
mod forge_state;
mod github;
mod ingest_run;
pub mod leader;
mod logs;
mod meta;
pub mod migrate;
mod pending;
mod prune;
mod reads;
pub mod reconnect;
mod results;
mod revision;
mod run_view;
pub mod schema;
mod settle;
mod statements;
pub mod storage;
pub mod tally;
mod test_identity;
mod test_index;
mod test_slo;
#[cfg(feature = "testing")]
pub mod testing;
mod timeline;
mod ui;
pub mod vacuum;

pub use error::{PgStoreError, describe, kind_of_code};
pub use statements::{Read, Sql, Tx};

use ci_slo_core::config::database::PostgresTarget;
use ci_slo_store::Migrating;
use std::cell::{Cell, RefCell, RefMut};

/// A connection to a migrated PostgreSQL database.
///
/// Writes take `&mut self`; reads take `&self` (the storage interface's
/// read pool shares nothing between readers, so each reader is one store
/// with its own connection, borrowed per read through [`PgStore::read`],
/// with the statements prepared on it, or [`PgStore::reader`]).
pub struct PgStore {
    client: RefCell<connect::Connection>,
    /// Statements prepared on `client`, for writes and reads alike.
    statements: RefCell<statements::Statements>,
    /// Whether the writer thread holds a batch's transaction open (see the
    /// `Engine` implementation): writes are then savepoints inside it.
    in_batch: bool,
    /// Writes run again after a conflict, since opened (`concurrent.rs`).
    retried: u64,
    /// How the connection is made again when it is lost, and what errors
    /// call the database (never with its password).
    config: connect::ConnectConfig,
    shown: String,
    /// The connection's state as [`reconnect`] tracks it.
    link: reconnect::Link,
    /// Whether `read_consistent` holds a transaction open on the
    /// connection (never made again inside one).
    pinned: Cell<bool>,
    /// The counter tables' own vacuum (`vacuum.rs`).
    vacuum: RefCell<vacuum::CounterVacuum>,
    /// The identities of the tests the snapshot's reads have named
    /// (`test_identity.rs`).
    identities: RefCell<test_identity::Identities>,
    /// The test ids known, and learned by the open transaction
    /// (`pending.rs`).
    pending: pending::Pending,
}

impl PgStore {
    /// Connect to `target` and migrate its database, telling `progress`
    /// before each migration of an existing database.
    pub fn open(
        target: &PostgresTarget,
        progress: &mut dyn FnMut(Migrating),
    ) -> Result<PgStore, PgStoreError> {
        let config = connect::ConnectConfig::from_target(target)?;
        PgStore::open_with(&config, target, progress)
    }

    /// [`PgStore::open`] with a client configuration (TLS as its `sslmode`
    /// says to the `postgres` crate: disable, prefer or require, the
    /// certificate not checked; see [`connect::ConnectConfig::from_client_config`]);
    /// `shown` names the database in errors (never with its password).
    pub fn open_config(
        config: &postgres::Config,
        shown: &dyn std::fmt::Display,
        progress: &mut dyn FnMut(Migrating),
    ) -> Result<PgStore, PgStoreError> {
        PgStore::open_with(&connect::ConnectConfig::from(config), shown, progress)
    }

    /// [`PgStore::open`] with a connection configuration built once (the
    /// exporter's: every connection with the same TLS settings); `shown`
    /// names the database in errors (never with its password).
    pub fn open_with(
        config: &connect::ConnectConfig,
        shown: &dyn std::fmt::Display,
        progress: &mut dyn FnMut(Migrating),
    ) -> Result<PgStore, PgStoreError> {
        let mut client = config.connect_named(shown)?;
        migrate::migrate(&mut client, progress)?;
        Ok(PgStore {
            client: RefCell::new(connect::Connection::new(client)),
            statements: RefCell::default(),
            in_batch: false,
            retried: 0,
            config: config.clone(),
            shown: shown.to_string(),
            link: reconnect::Link::default(),
            pinned: Cell::new(false),
            vacuum: RefCell::default(),
            identities: RefCell::default(),
            pending: pending::Pending::default(),
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&mut self) -> Result<i64, PgStoreError> {
        migrate::schema_version(&mut **self.client.get_mut())
    }

    /// How many times a write of this store was run again after losing a
    /// conflict (a deadlock, a serialization failure) since it was opened.
    pub fn retried(&self) -> u64 {
        self.retried
    }

    /// The connection, for tests and benchmarks that look at the tables
    /// (made again first if it was lost: see [`PgStore::reconnect`]), the
    /// runs stored so far folded into the per-test counters first, as the
    /// store's reads see them (`fold.rs`; a fold that fails is left to the
    /// next).
    pub fn client(&mut self) -> &mut postgres::Client {
        let _ = self.reconnect();
        let _ = self.fold();
        self.client.get_mut()
    }

    /// The connection, for the store's own writes outside a [`Tx`] (made
    /// again first if it was lost).
    pub(crate) fn connection(&mut self) -> &mut postgres::Client {
        let _ = self.reconnect();
        self.client.get_mut()
    }

    /// The connection for one read (made again first if it was lost). Reads
    /// never nest, so the borrow is always free (a nested borrow would be a
    /// bug, and panics).
    pub fn reader(&self) -> RefMut<'_, postgres::Client> {
        let _ = self.reconnect();
        RefMut::map(self.client.borrow_mut(), |c| &mut **c)
    }

    /// The connection for one read with the statements prepared on it
    /// ([`Sql`] with `&'static str` SQL: each prepared once per connection).
    /// As [`PgStore::reader`], reads never nest.
    pub fn read(&self) -> Read<'_> {
        let _ = self.reconnect();
        Read {
            client: RefMut::map(self.client.borrow_mut(), |c| &mut **c),
            cache: self.statements.borrow_mut(),
        }
    }

    /// Begin a write: a transaction (a savepoint inside the batch's
    /// transaction when the writer thread has one open) whose statements
    /// are prepared once per connection.
    ///
    /// Outside a batch, a lost connection is made again first, and a
    /// `BEGIN` that finds it lost (nothing written yet) runs once more on a
    /// new one (`PgStore::begin`, in `reconnect.rs`).
    pub fn write_tx(&mut self) -> Result<Tx<'_>, PgStoreError> {
        if self.in_batch {
            let saved = self.client.get_mut().batch_execute("SAVEPOINT tx");
            saved.map_err(|e| self.lose(e.into()))?;
        } else {
            self.begin("BEGIN")?;
        }
        Ok(Tx::begun(
            self.client.get_mut(),
            self.statements.get_mut(),
            &mut self.pending,
            self.in_batch,
        ))
    }
}

//! Many writes in one transaction on PostgreSQL: [`PgStore::in_transaction`]
//! (what it runs commits together, or not at all), and
//! [`PgStore::ingest_batch`] (runs stored as `ingest_run` stores each, all
//! or none), as the SQLite store's `bulk.rs` gives them. Each write inside
//! is a savepoint of the transaction (`write_tx`), so nesting works: inside
//! a transaction already (a writer's batch, or an outer `in_transaction`),
//! the work runs in that one.

use crate::{PgStore, PgStoreError};
use chrono::{DateTime, Utc};
use ci_slo_core::model::NewRun;
use ci_slo_store::{Ingested, Policy};

impl PgStore {
    /// Run `f` in one transaction: what it writes (each write a savepoint of
    /// it) commits together, or not at all when it fails. Inside a
    /// transaction already, `f` runs in that one. Generic in the error so
    /// that the storage interface's `in_transaction` (whose closure answers
    /// `StoreError`) is this method with `E = StoreError`.
    pub fn in_transaction<T, E: From<PgStoreError>>(
        &mut self,
        f: impl FnOnce(&mut PgStore) -> Result<T, E>,
    ) -> Result<T, E> {
        if self.in_batch {
            return f(self);
        }
        self.begin("BEGIN").map_err(E::from)?;
        self.in_batch = true;
        self.pending.begin();
        let out = f(self);
        self.in_batch = false;
        let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.client.get_mut().batch_execute(end);
        self.pending.ended(out.is_ok() && ended.is_ok());
        let v = out?;
        ended.map_err(|e| E::from(self.lose(e.into())))?;
        Ok(v)
    }

    /// Store `runs` in one transaction (or in the caller's): all of them,
    /// with their counters, or none. As the SQLite store's
    /// `Store::ingest_batch`, without its in-memory buffering (each run is
    /// `ingest_run`, a savepoint of the batch). The runs' per-test
    /// counters are folded after (`fold.rs`), several runs of one context
    /// at once.
    pub fn ingest_batch(
        &mut self,
        runs: &[NewRun],
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Vec<Ingested>, PgStoreError> {
        self.in_transaction(|store| {
            runs.iter()
                .map(|run| store.ingest_run(run, policy, now))
                .collect()
        })
    }
}

//! What the forges' webhooks and pollers keep between calls, on PostgreSQL:
//! the webhook deliveries seen (replays), the sync state of each listing,
//! and the stored runs they look up by their source's id. The same methods
//! and answers as the SQLite store's `forge_state.rs` (`&mut self`: one
//! `postgres::Client` per store). A delivery recorded by one replica is a
//! replay for every other: the insert that creates its row is the one that
//! answers true.

use crate::{PgStore, PgStoreError, Sql};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{Forge, RepositoryRef, Trigger};
use ci_slo_store::{ExternalRun, SyncState, from_ms};

impl PgStore {
    /// Remember a webhook delivery; false when it was seen before (a replay).
    pub fn record_delivery(
        &mut self,
        forge: Forge,
        delivery_id: &str,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PgStoreError> {
        Ok(self.connection().execute(
            "INSERT INTO webhook_deliveries (forge, delivery_id, event, received_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&forge.as_str(), &delivery_id, &event, &now.timestamp_millis()],
        )? == 1)
    }

    /// Whether a webhook delivery was recorded before (read-only).
    pub fn delivery_seen(&self, forge: Forge, delivery_id: &str) -> Result<bool, PgStoreError> {
        Ok(self
            .read()
            .query_opt(
                "SELECT 1 FROM webhook_deliveries WHERE forge = $1 AND delivery_id = $2",
                &[&forge.as_str(), &delivery_id],
            )?
            .is_some())
    }

    /// The sync state of one scope and kind of listing.
    pub fn sync_state(
        &self,
        forge: Forge,
        scope: &str,
        kind: &str,
    ) -> Result<Option<SyncState>, PgStoreError> {
        Ok(self
            .read()
            .query_opt(
                "SELECT cursor, etag, last_success FROM sync_state WHERE forge = $1 AND scope = $2 AND kind = $3",
                &[&forge.as_str(), &scope, &kind],
            )?
            .map(|r| SyncState {
                cursor: r.get(0),
                etag: r.get(1),
                last_success: r.get::<_, Option<i64>>(2).map(from_ms),
            }))
    }

    pub fn set_sync_state(
        &mut self,
        forge: Forge,
        scope: &str,
        kind: &str,
        state: &SyncState,
    ) -> Result<(), PgStoreError> {
        self.connection().execute(
            "INSERT INTO sync_state (forge, scope, kind, cursor, etag, last_success) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (forge, scope, kind) DO UPDATE SET cursor = excluded.cursor, etag = excluded.etag,
                last_success = excluded.last_success",
            &[
                &forge.as_str(),
                &scope,
                &kind,
                &state.cursor,
                &state.etag,
                &state.last_success.map(|t| t.timestamp_millis()),
            ],
        )?;
        Ok(())
    }

    /// The latest successful sync per (forge, scope), Unix ms.
    pub fn last_syncs(&self) -> Result<Vec<(String, String, i64)>, PgStoreError> {
        Ok(self
            .read()
            .query(
                "SELECT forge, scope, max(last_success) FROM sync_state WHERE last_success IS NOT NULL
                 GROUP BY forge, scope ORDER BY forge, scope",
                &[],
            )?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// The stored run with this external id, if any.
    pub fn external_run(
        &self,
        repository: &RepositoryRef,
        external_id: &str,
    ) -> Result<Option<ExternalRun>, PgStoreError> {
        Ok(self
            .read()
            .query_opt(
                concat!(
                    "SELECT r.id, r.attempt, r.trigger FROM runs r WHERE r.repository_id = ",
                    repository_id!(),
                    " AND r.external_id = $3"
                ),
                &[&repository.forge.as_str(), &repository.path, &external_id],
            )?
            .map(|r| ExternalRun {
                id: r.get(0),
                attempt: u32::try_from(r.get::<_, i64>(1)).unwrap_or_default(),
                trigger: r.get::<_, String>(2).parse().unwrap_or(Trigger::Other),
            }))
    }

    /// Whether any run of this commit is stored.
    pub fn has_runs_for_commit(
        &self,
        repository: &RepositoryRef,
        commit: &str,
    ) -> Result<bool, PgStoreError> {
        Ok(self
            .read()
            .query_opt(
                concat!(
                    "SELECT 1 FROM runs r WHERE r.repository_id = ",
                    repository_id!(),
                    " AND r.commit_sha = $3 LIMIT 1"
                ),
                &[&repository.forge.as_str(), &repository.path, &commit],
            )?
            .is_some())
    }
}

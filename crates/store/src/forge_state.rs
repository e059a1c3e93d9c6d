//! What the forges' webhooks and pollers keep between calls: the webhook
//! deliveries seen (replays), the sync state of each listing (cursor, ETag,
//! last success), and the stored runs they look up by their source's id.

use crate::error::StoreError;
use crate::{REPOSITORY_ID, Store, from_ms, to_ms};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{Forge, RepositoryRef, Trigger};
use rusqlite::{OptionalExtension, params};

/// Where a forge listing stopped, and its validator for conditional requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    pub cursor: Option<String>,
    pub etag: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
}

/// A run found by its source's id: what a forge needs to keep attempts and
/// triggers stable across sources (webhook and poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRun {
    pub id: i64,
    pub attempt: u32,
    pub trigger: Trigger,
}

impl Store {
    /// Remember a webhook delivery; false when it was seen before (a replay).
    pub fn record_delivery(
        &self,
        forge: Forge,
        delivery_id: &str,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO webhook_deliveries (forge, delivery_id, event, received_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![forge.as_str(), delivery_id, event, to_ms(now)])?
            == 1)
    }

    /// Whether a webhook delivery was recorded before (read-only; record it
    /// with [`Store::record_delivery`] after the event is committed).
    pub fn delivery_seen(&self, forge: Forge, delivery_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM webhook_deliveries WHERE forge = ?1 AND delivery_id = ?2",
            )?
            .query_row(params![forge.as_str(), delivery_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The sync state of one scope (a repository, project or group) and kind of listing.
    pub fn sync_state(
        &self,
        forge: Forge,
        scope: &str,
        kind: &str,
    ) -> Result<Option<SyncState>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT cursor, etag, last_success FROM sync_state WHERE forge = ?1 AND scope = ?2 AND kind = ?3",
                params![forge.as_str(), scope, kind],
                |r| {
                    Ok(SyncState {
                        cursor: r.get(0)?,
                        etag: r.get(1)?,
                        last_success: r.get::<_, Option<i64>>(2)?.map(from_ms),
                    })
                },
            )
            .optional()?)
    }

    pub fn set_sync_state(
        &self,
        forge: Forge,
        scope: &str,
        kind: &str,
        state: &SyncState,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO sync_state (forge, scope, kind, cursor, etag, last_success) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (forge, scope, kind) DO UPDATE SET cursor = excluded.cursor, etag = excluded.etag,
                last_success = excluded.last_success",
            params![forge.as_str(), scope, kind, state.cursor, state.etag, state.last_success.map(to_ms)],
        )?;
        Ok(())
    }

    /// The latest successful sync per (forge, scope), Unix ms.
    pub fn last_syncs(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT forge, scope, max(last_success) FROM sync_state WHERE last_success IS NOT NULL
             GROUP BY forge, scope ORDER BY forge, scope",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored run with this external id, if any.
    pub fn external_run(
        &self,
        repository: &RepositoryRef,
        external_id: &str,
    ) -> Result<Option<ExternalRun>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT r.id, r.attempt, r.trigger FROM runs r
                 WHERE r.repository_id = {REPOSITORY_ID} AND r.external_key = ?4 AND r.external_id = ?3"
            ))?
            .query_row(
                params![
                    repository.forge.as_str(),
                    repository.path,
                    external_id,
                    crate::external_key(external_id)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?
            .map(|(id, attempt, trigger)| ExternalRun {
                id,
                attempt,
                trigger: trigger.parse().unwrap_or(Trigger::Other),
            }))
    }

    /// Whether any run of this commit is stored.
    pub fn has_runs_for_commit(
        &self,
        repository: &RepositoryRef,
        commit: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT 1 FROM runs r
                 WHERE r.repository_id = {REPOSITORY_ID} AND r.commit_sha = ?3 LIMIT 1"
            ))?
            .query_row(
                params![repository.forge.as_str(), repository.path, commit],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

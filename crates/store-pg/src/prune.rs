//! Retention on PostgreSQL, as the SQLite store's `prune.rs`: deleting
//! runs, changes, SLO events, per-test state and webhook delivery ids older
//! than the configured limits. Counters are not touched.

use crate::{PgStore, PgStoreError, Sql};
use chrono::{DateTime, Utc};
use ci_slo_store::PruneStats;

impl PgStore {
    /// Forget webhook delivery ids received before `before`.
    pub fn prune_deliveries(&mut self, before: DateTime<Utc>) -> Result<usize, PgStoreError> {
        Ok(self.connection().execute(
            "DELETE FROM webhook_deliveries WHERE received_at < $1",
            &[&before.timestamp_millis()],
        )? as usize)
    }

    /// Delete runs (with their tests, reports and failures) that ended before
    /// `before`, and SLO events older than `events_before`. Counters are not
    /// touched.
    pub fn prune(
        &mut self,
        before: DateTime<Utc>,
        events_before: DateTime<Utc>,
    ) -> Result<PruneStats, PgStoreError> {
        let (before, events_before) = (before.timestamp_millis(), events_before.timestamp_millis());
        let mut tx = self.write_tx()?;
        let runs = tx.execute(
            "DELETE FROM runs WHERE final_counted = 1
               AND coalesce(finished_at, started_at, queued_at, created_at) < $1",
            &[&before],
        )?;
        let changes = tx.execute(
            "DELETE FROM changes WHERE decided_at IS NOT NULL AND coalesce(merged_at, last_activity) < $1
               AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.change_id = changes.id)",
            &[&before],
        )?;
        let mut events = tx.execute("DELETE FROM slo_events WHERE at < $1", &[&events_before])?
            + tx.execute("DELETE FROM test_events WHERE at < $1", &[&events_before])?;
        // A run's events are the columns of its `run_events` row: each one
        // older than the limit is cleared, then the rows left empty go.
        for clear in [
            "UPDATE run_events SET queue_at = NULL, queue_good = NULL WHERE queue_at < $1",
            "UPDATE run_events SET run_time_at = NULL, run_time_good = NULL WHERE run_time_at < $1",
            "UPDATE run_events SET completed_at = NULL, completed_good = NULL WHERE completed_at < $1",
        ] {
            events += tx.execute(clear, &[&events_before])?;
        }
        tx.execute(
            "DELETE FROM run_events WHERE queue_at IS NULL AND run_time_at IS NULL AND completed_at IS NULL",
            &[],
        )?;
        // Per-test state of what is gone: the days before `before`, and the
        // commits no stored run has any more. A test's all-time counters stay.
        // The runs stored before are folded first, in this transaction (under
        // the fold's lock to its end: no fold writes a day or a commit
        // deleted here after; `fold.rs`).
        crate::fold::fold_all(&mut tx)?;
        let first_day = before.div_euclid(86_400_000);
        tx.execute("DELETE FROM test_days WHERE day < $1", &[&first_day])?;
        tx.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS gone_commits (id BIGINT PRIMARY KEY) ON COMMIT DELETE ROWS;
             INSERT INTO gone_commits SELECT c.id FROM commits c
               WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.repository_id = c.repository_id AND r.commit_sha = c.sha);
             DELETE FROM test_commits WHERE commit_id IN (SELECT id FROM gone_commits);
             DELETE FROM commits WHERE id IN (SELECT id FROM gone_commits);",
        )?;
        tx.execute(
            "DELETE FROM fingerprints WHERE NOT EXISTS (SELECT 1 FROM failures WHERE failures.fingerprint_id = fingerprints.id)
               AND last_seen < $1",
            &[&before],
        )?;
        tx.commit()?;
        Ok(PruneStats {
            runs: runs as usize,
            changes: changes as usize,
            events: events as usize,
        })
    }
}

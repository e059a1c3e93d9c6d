//! Retention: deleting runs, changes, SLO events, per-test state and
//! webhook delivery ids older than the configured limits. Counters are not touched.

use crate::counting::run_event_columns;
use crate::error::StoreError;
use crate::slo::SloId;
use crate::{Store, to_ms};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub runs: usize,
    pub changes: usize,
    pub events: usize,
}

impl Store {
    /// Forget webhook delivery ids received before `before` (a redelivery
    /// older than that is then treated as new; the event's own identity,
    /// not its delivery id, keeps it from counting twice).
    pub fn prune_deliveries(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM webhook_deliveries WHERE received_at < ?1",
            [to_ms(before)],
        )?)
    }

    /// Delete runs (with their tests, reports and failures) that ended before
    /// `before`, and SLO events older than `events_before`. Counters are not touched.
    pub fn prune(
        &mut self,
        before: DateTime<Utc>,
        events_before: DateTime<Utc>,
    ) -> Result<PruneStats, StoreError> {
        let tx = self.write_tx()?;
        let runs = tx.execute(
            "DELETE FROM runs WHERE final_counted = 1
               AND coalesce(finished_at, started_at, queued_at, created_at) < ?1",
            [to_ms(before)],
        )?;
        let changes = tx.execute(
            "DELETE FROM changes WHERE decided_at IS NOT NULL AND coalesce(merged_at, last_activity) < ?1
               AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.change_id = changes.id)",
            [to_ms(before)],
        )?;
        let mut events = tx.execute(
            "DELETE FROM slo_events WHERE at < ?1",
            [to_ms(events_before)],
        )? + tx.execute(
            "DELETE FROM test_events WHERE at < ?1",
            [to_ms(events_before)],
        )?;
        // A run's events are the columns of its `run_events` row: each
        // one older than the limit is cleared, then the rows left empty go.
        for slo in [SloId::QueueTime, SloId::RunTime, SloId::RunsCompleted] {
            if let Some((at, good)) = run_event_columns(slo) {
                events += tx.execute(
                    &format!("UPDATE run_events SET {at} = NULL, {good} = NULL WHERE {at} < ?1"),
                    [to_ms(events_before)],
                )?;
            }
        }
        tx.execute(
            "DELETE FROM run_events WHERE queue_at IS NULL AND run_time_at IS NULL AND completed_at IS NULL",
            [],
        )?;
        // Per-test state of what is gone: the days before `before`, and the
        // commits no stored run has any more (their results went with their
        // runs). A test's all-time counters in `tests` stay.
        tx.execute(
            "DELETE FROM test_days WHERE day < ?1",
            [to_ms(before).div_euclid(86_400_000)],
        )?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS gone_commits (id INTEGER PRIMARY KEY);
             DELETE FROM gone_commits;
             INSERT INTO gone_commits SELECT c.id FROM commits c
               WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.repository_id = c.repository_id AND r.commit_sha = c.sha);
             DELETE FROM test_commits WHERE commit_id IN (SELECT id FROM gone_commits);
             DELETE FROM commits WHERE id IN (SELECT id FROM gone_commits);
             DELETE FROM gone_commits;",
        )?;
        tx.execute(
            "DELETE FROM fingerprints WHERE NOT EXISTS (SELECT 1 FROM failures WHERE failures.fingerprint_id = fingerprints.id)
               AND last_seen < ?1",
            [to_ms(before)],
        )?;
        tx.commit()?;
        Ok(PruneStats {
            runs,
            changes,
            events,
        })
    }
}

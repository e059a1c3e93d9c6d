//! What the forges' events record on PostgreSQL besides runs, as the SQLite
//! store's `github.rs` writes it: a GitHub workflow run attempt's trigger
//! event and request time, and events ignored as stale (counted).

use crate::counting::data_quality;
use crate::{PgStore, PgStoreError, Sql};
use ci_slo_store::github::WorkflowRunInfo;

impl PgStore {
    /// Count an event older than what is stored for its run, which was
    /// ignored (`ci_exporter_data_quality_rejections_total{reason="stale_event"}`).
    pub fn count_stale_event(&mut self) -> Result<(), PgStoreError> {
        let mut tx = self.write_tx()?;
        data_quality(&mut tx, "stale_event")?;
        tx.commit()?;
        Ok(())
    }

    /// Remember a workflow run attempt's trigger event and request time
    /// (what a later event leaves unknown keeps what an earlier one said).
    pub fn record_workflow_run(
        &mut self,
        repository: &str,
        run_id: u64,
        run_attempt: u32,
        info: &WorkflowRunInfo,
    ) -> Result<(), PgStoreError> {
        let mut tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO github_workflow_runs AS w (repository, run_id, run_attempt, event, run_started_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (repository, run_id, run_attempt) DO UPDATE SET
                event = coalesce(excluded.event, w.event),
                run_started_at = coalesce(excluded.run_started_at, w.run_started_at)",
            &[
                &repository,
                &(run_id as i64),
                &i64::from(run_attempt),
                &info.event,
                &info.run_started_at.map(|t| t.timestamp_millis()),
            ],
        )?;
        tx.commit()?;
        Ok(())
    }
}

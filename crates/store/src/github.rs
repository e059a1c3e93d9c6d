//! Store queries the GitHub source needs on top of the generic ones: the
//! latest known state of a run (to merge webhook events that each carry only
//! part of a run's story), workflow-run metadata, and delivery lookups.

use super::{REPOSITORY_ID, Store, StoreError, from_ms, to_ms};
use crate::model::{RepositoryRef, RunState, Trigger};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

/// What the GitHub source needs to know about a stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunBrief {
    pub id: i64,
    pub external_id: Option<String>,
    pub attempt: u32,
    pub state: RunState,
    pub trigger: Trigger,
    /// The trigger is not decided yet (see `NewRun::trigger_pending`).
    pub trigger_pending: bool,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub url: Option<String>,
    pub log_url: Option<String>,
}

/// A workflow run attempt's metadata (from a `workflow_run` event or the API).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRunInfo {
    pub event: Option<String>,
    pub run_started_at: Option<DateTime<Utc>>,
}

/// A change's outcome (None while undecided) and retries.
pub type ChangeOutcome = (Option<String>, Option<u32>);

const BRIEF_COLUMNS: &str = "r.id, r.external_id, r.attempt, r.state, r.trigger, r.queued_at, r.started_at, \
     r.finished_at, r.url, r.log_url, r.trigger_pending";

fn brief(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunBrief> {
    Ok(RunBrief {
        id: r.get(0)?,
        external_id: r.get(1)?,
        attempt: r.get(2)?,
        state: r.get::<_, String>(3)?.parse().unwrap_or(RunState::Error),
        trigger: r.get::<_, String>(4)?.parse().unwrap_or(Trigger::Other),
        queued_at: r.get::<_, Option<i64>>(5)?.map(from_ms),
        started_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
        finished_at: r.get::<_, Option<i64>>(7)?.map(from_ms),
        url: r.get(8)?,
        log_url: r.get(9)?,
        trigger_pending: r.get(10)?,
    })
}

impl RunBrief {
    /// The latest time the stored run knows of.
    pub fn newest(&self) -> Option<DateTime<Utc>> {
        [self.queued_at, self.started_at, self.finished_at]
            .into_iter()
            .flatten()
            .max()
    }
}

impl Store {
    /// Count an event older than what is stored for its run, which was
    /// ignored (`ci_exporter_data_quality_rejections_total{reason="stale_event"}`).
    pub fn count_stale_event(&self) -> Result<(), StoreError> {
        crate::counting::data_quality(&self.conn, "stale_event")?;
        Ok(())
    }

    /// The run stored under a source's own id.
    pub fn run_by_external_id(
        &self,
        repository: &RepositoryRef,
        external_id: &str,
    ) -> Result<Option<RunBrief>, StoreError> {
        let sql = format!(
            "SELECT {BRIEF_COLUMNS} FROM runs r
             WHERE r.repository_id = {REPOSITORY_ID} AND r.external_key = ?4 AND r.external_id = ?3"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(
                params![
                    repository.forge.as_str(),
                    repository.path,
                    external_id,
                    crate::external_key(external_id)
                ],
                brief,
            )
            .optional()?)
    }

    /// One attempt of a context on a commit (outside attempt groups), or (with
    /// `attempt` None) the latest one.
    pub fn run_attempt(
        &self,
        repository: &RepositoryRef,
        context: &str,
        commit: &str,
        attempt: Option<u32>,
    ) -> Result<Option<RunBrief>, StoreError> {
        // The latest is picked here: an ORDER BY would make SQLite re-prepare
        // the cached statement at every use.
        let sql = format!(
            "SELECT {BRIEF_COLUMNS} FROM runs r
             WHERE r.repository_id = {REPOSITORY_ID} AND r.context = ?3 AND r.commit_sha = ?4
               AND r.attempt_group = '' AND (?5 IS NULL OR r.attempt = ?5)"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                repository.forge.as_str(),
                repository.path,
                context,
                commit,
                attempt
            ],
            brief,
        )?;
        let mut latest: Option<RunBrief> = None;
        for row in rows {
            let row = row?;
            if latest.as_ref().is_none_or(|l| row.attempt > l.attempt) {
                latest = Some(row);
            }
        }
        Ok(latest)
    }

    /// Remember a workflow run attempt's trigger event and request time.
    pub fn record_workflow_run(
        &self,
        repository: &str,
        run_id: u64,
        run_attempt: u32,
        info: &WorkflowRunInfo,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO github_workflow_runs (repository, run_id, run_attempt, event, run_started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (repository, run_id, run_attempt) DO UPDATE SET
                    event = coalesce(excluded.event, event),
                    run_started_at = coalesce(excluded.run_started_at, run_started_at)",
            )?
            .execute(params![
                repository,
                run_id as i64,
                run_attempt,
                info.event,
                info.run_started_at.map(to_ms)
            ])?;
        Ok(())
    }

    pub fn workflow_run(
        &self,
        repository: &str,
        run_id: u64,
        run_attempt: u32,
    ) -> Result<Option<WorkflowRunInfo>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT event, run_started_at FROM github_workflow_runs
                 WHERE repository = ?1 AND run_id = ?2 AND run_attempt = ?3",
            )?
            .query_row(params![repository, run_id as i64, run_attempt], |r| {
                Ok(WorkflowRunInfo {
                    event: r.get(0)?,
                    run_started_at: r.get::<_, Option<i64>>(1)?.map(from_ms),
                })
            })
            .optional()?)
    }

    /// The event that triggered a workflow run, from any of its attempts (re-runs
    /// keep the event of the run).
    pub fn workflow_run_event(
        &self,
        repository: &str,
        run_id: u64,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT event FROM github_workflow_runs
                 WHERE repository = ?1 AND run_id = ?2 AND event IS NOT NULL LIMIT 1",
            )?
            .query_row(params![repository, run_id as i64], |r| r.get(0))
            .optional()?)
    }

    /// A change's decided outcome and retries (None while undecided or unknown).
    pub fn change_outcome(
        &self,
        repository: &RepositoryRef,
        number: i64,
    ) -> Result<Option<ChangeOutcome>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT c.outcome, c.retries FROM changes c JOIN repositories r ON r.id = c.repository_id
                 WHERE r.forge = ?1 AND r.path = ?2 AND c.number = ?3",
                params![repository.forge.as_str(), repository.path, number],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
}

//! The forge adapters' lookups on PostgreSQL, as the SQLite store's
//! `github.rs`: the latest known state of a run (by the source's id, or by
//! context, commit and attempt) and workflow-run metadata.

use crate::{PgStore, PgStoreError, Sql};
use ci_slo_core::model::{RepositoryRef, RunState, Trigger};
use ci_slo_store::from_ms;
use ci_slo_store::github::{RunBrief, WorkflowRunInfo};

/// What a [`RunBrief`] reads, of the runs of repository (forge $1, path $2).
macro_rules! brief_of_repository {
    () => {
        concat!(
            "SELECT r.id, r.external_id, r.attempt, r.state, r.trigger, r.queued_at, r.started_at,
                    r.finished_at, r.url, r.log_url, r.trigger_pending
             FROM runs r WHERE r.repository_id = ",
            repository_id!()
        )
    };
}

fn brief(r: &postgres::Row) -> RunBrief {
    RunBrief {
        id: r.get(0),
        external_id: r.get(1),
        attempt: u32::try_from(r.get::<_, i64>(2)).unwrap_or_default(),
        state: r.get::<_, String>(3).parse().unwrap_or(RunState::Error),
        trigger: r.get::<_, String>(4).parse().unwrap_or(Trigger::Other),
        queued_at: r.get::<_, Option<i64>>(5).map(from_ms),
        started_at: r.get::<_, Option<i64>>(6).map(from_ms),
        finished_at: r.get::<_, Option<i64>>(7).map(from_ms),
        url: r.get(8),
        log_url: r.get(9),
        trigger_pending: r.get::<_, i64>(10) != 0,
    }
}

impl PgStore {
    /// The run stored under a source's own id.
    pub fn run_by_external_id(
        &self,
        repository: &RepositoryRef,
        external_id: &str,
    ) -> Result<Option<RunBrief>, PgStoreError> {
        Ok(self
            .read()
            .query_opt(
                concat!(brief_of_repository!(), " AND r.external_id = $3"),
                &[&repository.forge.as_str(), &repository.path, &external_id],
            )?
            .as_ref()
            .map(brief))
    }

    /// One attempt of a context on a commit (outside attempt groups), or
    /// (with `attempt` None) the latest one; of equal attempts, the first
    /// stored.
    pub fn run_attempt(
        &self,
        repository: &RepositoryRef,
        context: &str,
        commit: &str,
        attempt: Option<u32>,
    ) -> Result<Option<RunBrief>, PgStoreError> {
        Ok(self
            .read()
            .query_opt(
                concat!(
                    brief_of_repository!(),
                    " AND r.context = $3 AND r.commit_sha = $4
                       AND r.attempt_group = '' AND ($5::bigint IS NULL OR r.attempt = $5)
                     ORDER BY r.attempt DESC, r.id LIMIT 1"
                ),
                &[
                    &repository.forge.as_str(),
                    &repository.path,
                    &context,
                    &commit,
                    &attempt.map(i64::from),
                ],
            )?
            .as_ref()
            .map(brief))
    }

    /// A workflow run attempt's trigger event and request time.
    pub fn workflow_run(
        &self,
        repository: &str,
        run_id: u64,
        run_attempt: u32,
    ) -> Result<Option<WorkflowRunInfo>, PgStoreError> {
        Ok(self
            .read()
            .query_opt(
                "SELECT event, run_started_at FROM github_workflow_runs
                 WHERE repository = $1 AND run_id = $2 AND run_attempt = $3",
                &[&repository, &(run_id as i64), &i64::from(run_attempt)],
            )?
            .map(|r| WorkflowRunInfo {
                event: r.get(0),
                run_started_at: r.get::<_, Option<i64>>(1).map(from_ms),
            }))
    }

    /// The event that triggered a workflow run, from any of its attempts
    /// (re-runs keep the event of the run): the first attempt's that has one.
    pub fn workflow_run_event(
        &self,
        repository: &str,
        run_id: u64,
    ) -> Result<Option<String>, PgStoreError> {
        Ok(self
            .read()
            .query_opt(
                "SELECT event FROM github_workflow_runs
                 WHERE repository = $1 AND run_id = $2 AND event IS NOT NULL
                 ORDER BY run_attempt LIMIT 1",
                &[&repository, &(run_id as i64)],
            )?
            .map(|r| r.get(0)))
    }
}

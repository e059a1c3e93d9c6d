//! The GitHub source (docs/design.md §2, §5): webhooks, polling and backfill of
//! commit statuses, check runs, Actions jobs and merged pull requests, and the
//! import of Cockpit's `test-results.db`.
//!
//! Every way in produces the same [`Record`]s, which [`apply`] writes through
//! the store: a webhook and a poll of the same run converge on one stored run.
//!
//! - `wire`: GitHub's JSON (private), converted here to `model` types.
//! - [`webhook`]: `POST /webhooks/github`.
//! - [`poll`]: the API client (pagination, ETags, rate limits) and the poller.
//! - [`cockpit`]: the Cockpit commit-status story.
//! - [`import`]: `import cockpit PATH`.

pub mod cockpit;
pub mod cockpit_db;
pub mod import;
pub mod poll;
pub mod webhook;
mod wire;

use crate::model::{Forge, NewRun, RepositoryRef, RunState, Trigger};
use crate::store::github::{RunBrief, WorkflowRunInfo};
use crate::store::{IngestStatus, Policy, Store, StoreError};
use chrono::{DateTime, Utc};

pub use crate::config::github::{DownloadLogs, GithubConfig, OwnerConfig, StatusPhrases};

/// Why a GitHub payload could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("malformed {event} payload: {source}")]
    Malformed {
        event: String,
        source: serde_json::Error,
    },
    #[error("invalid {event} payload: {reason}")]
    Invalid { event: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One fact from GitHub, ready to be applied to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An Actions job; its attempt is `run_attempt − 1`. The workflow run's
    /// metadata (trigger, request time of the attempt) is looked up when applied.
    Job {
        run: NewRun,
        run_id: u64,
        run_attempt: u32,
    },
    /// A check run (not from Actions): a new check run id on a context that
    /// already has one is the next attempt.
    CheckRun(NewRun),
    /// A run whose attempt is already decided (the Cockpit story when polled).
    Run(NewRun),
    /// One commit status, applied as a step of the Cockpit story.
    Status {
        repository: RepositoryRef,
        commit: String,
        context: String,
        step: cockpit::StatusStep,
        at: DateTime<Utc>,
        url: Option<String>,
    },
    WorkflowRun {
        repository: String,
        run_id: u64,
        run_attempt: u32,
        info: WorkflowRunInfo,
    },
    Merge {
        repository: RepositoryRef,
        number: i64,
        head_sha: String,
        merged_at: DateTime<Utc>,
    },
}

impl Record {
    /// The full path of the repository the record is about.
    pub fn repository_path(&self) -> &str {
        match self {
            Record::Job { run, .. } | Record::CheckRun(run) | Record::Run(run) => {
                &run.repository.path
            }
            Record::Status { repository, .. } | Record::Merge { repository, .. } => {
                &repository.path
            }
            Record::WorkflowRun { repository, .. } => repository,
        }
    }
}

/// What applying records did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Stored runs: (id, what the ingest did, the run as stored).
    pub runs: Vec<(i64, IngestStatus, NewRun)>,
    pub merges: usize,
    /// Stored jobs whose trigger a workflow run decided (and that were counted).
    pub triggers_decided: usize,
    /// Events older than what is stored for their run (or context), ignored.
    pub stale: usize,
}

impl Applied {
    pub fn changed(&self) -> bool {
        self.merges > 0
            || self.triggers_decided > 0
            || self
                .runs
                .iter()
                .any(|(_, s, _)| *s != IngestStatus::Unchanged)
    }
}

pub fn repository(path: &str) -> RepositoryRef {
    RepositoryRef {
        forge: Forge::Github,
        path: path.to_string(),
    }
}

/// The trigger of a workflow run's `event`.
pub fn trigger_of(event: &str) -> Trigger {
    match event {
        "schedule" => Trigger::Schedule,
        "pull_request" | "pull_request_target" | "merge_group" => Trigger::PullRequest,
        "push" => Trigger::Push,
        "workflow_dispatch" => Trigger::Manual,
        _ => Trigger::Other,
    }
}

/// A run's state from a check run's or job's `status` and `conclusion`.
pub fn state_of(status: &str, conclusion: Option<&str>) -> RunState {
    match status {
        "completed" => match conclusion.unwrap_or("") {
            "success" | "neutral" => RunState::Success,
            "failure" => RunState::Failure,
            "cancelled" => RunState::Cancelled,
            "timed_out" => RunState::TimedOut,
            "skipped" => RunState::Skipped,
            // action_required, stale, startup_failure, unknown
            _ => RunState::Error,
        },
        "in_progress" => RunState::Running,
        // queued, waiting, pending, requested
        _ => RunState::Pending,
    }
}

/// Names follow the one rule of [`crate::names`].
fn check_name(event: &str, what: &str, value: &str) -> Result<(), GithubError> {
    crate::names::check(value).map_err(|e| GithubError::Invalid {
        event: event.into(),
        reason: format!("{what} {value:?}: {e}"),
    })
}

fn new_run(repository: RepositoryRef, context: String, commit: String) -> NewRun {
    NewRun {
        repository,
        context,
        commit,
        source: "github".into(),
        ..NewRun::default()
    }
}

/// An Actions job as a run: context `workflow / job`, queued at creation,
/// started when it left the queue, finished at completion.
pub(crate) fn job_record(
    repo: &str,
    job: &wire::WorkflowJob,
    api_url: &str,
    trigger: Trigger,
) -> Result<Record, GithubError> {
    let context = match job.workflow_name.as_deref().filter(|w| !w.is_empty()) {
        Some(w) => format!("{w} / {}", job.name),
        None => job.name.clone(),
    };
    check_name("workflow_job", "the job name", &context)?;
    check_name("workflow_job", "head_sha", &job.head_sha)?;
    let run_attempt = job.run_attempt.unwrap_or(1).max(1);
    let state = state_of(&job.status, job.conclusion.as_deref());
    let mut run = new_run(repository(repo), context, job.head_sha.clone());
    run.external_id = Some(format!("job:{}", job.id));
    // Each workflow run is its own sequence of attempts: a push run and a
    // pull_request run of the same commit are two runs, its re-runs are attempts.
    run.attempt_group = Some(job.run_id.to_string());
    run.attempt = run_attempt - 1;
    run.trigger = trigger;
    run.state = state;
    run.queued_at = job.created_at;
    // A queued job's payload repeats created_at as started_at: it has not started.
    run.started_at = if state == RunState::Pending {
        None
    } else {
        job.started_at
    };
    run.finished_at = if state.is_terminal() {
        job.completed_at
    } else {
        None
    };
    run.url = job.html_url.clone();
    run.log_url = Some(format!(
        "{}/repos/{repo}/actions/jobs/{}/logs",
        api_url.trim_end_matches('/'),
        job.id
    ));
    Ok(Record::Job {
        run,
        run_id: job.run_id,
        run_attempt,
    })
}

/// A check run as a run, unless it is an Actions job (those come as jobs,
/// with their queue time; counting both would count every job twice).
pub(crate) fn check_run_record(
    repo: &str,
    check: &wire::CheckRun,
) -> Result<Option<Record>, GithubError> {
    if check.app.as_ref().and_then(|a| a.slug.as_deref()) == Some("github-actions") {
        return Ok(None);
    }
    check_name("check_run", "the check run name", &check.name)?;
    check_name("check_run", "head_sha", &check.head_sha)?;
    let state = state_of(&check.status, check.conclusion.as_deref());
    let mut run = new_run(repository(repo), check.name.clone(), check.head_sha.clone());
    run.external_id = Some(format!("check:{}", check.id));
    run.state = state;
    run.started_at = if state == RunState::Pending {
        None
    } else {
        check.started_at
    };
    run.finished_at = if state.is_terminal() {
        check.completed_at
    } else {
        None
    };
    run.url = check.html_url.clone();
    Ok(Some(Record::CheckRun(run)))
}

pub(crate) fn workflow_run_record(repo: &str, run: &wire::WorkflowRun) -> Record {
    Record::WorkflowRun {
        repository: repo.to_string(),
        run_id: run.id,
        run_attempt: run.run_attempt.unwrap_or(1).max(1),
        info: WorkflowRunInfo {
            event: run.event.clone(),
            run_started_at: run.run_started_at,
        },
    }
}

/// Apply records in order, in the caller's write (`StoreHandle::write`): when
/// that write is acknowledged all of them are committed, when it fails none is.
pub fn apply(
    store: &mut Store,
    policy: &Policy,
    records: Vec<Record>,
    now: DateTime<Utc>,
) -> Result<Applied, StoreError> {
    let mut applied = Applied::default();
    for record in records {
        match record {
            Record::WorkflowRun {
                repository,
                run_id,
                run_attempt,
                info,
            } => {
                store.record_workflow_run(&repository, run_id, run_attempt, &info)?;
                // Jobs delivered before their workflow run waited for its trigger.
                if let Some(event) = &info.event {
                    let decided = store.decide_trigger(
                        &self::repository(&repository),
                        &run_id.to_string(),
                        trigger_of(event),
                        policy,
                        now,
                    )?;
                    applied.triggers_decided += decided.len();
                }
            }
            Record::Merge {
                repository,
                number,
                head_sha,
                merged_at,
            } => {
                store.record_merge(&repository, number, Some(&head_sha), merged_at, now)?;
                applied.merges += 1;
            }
            Record::Job {
                mut run,
                run_id,
                run_attempt,
            } => {
                let existing = match &run.external_id {
                    Some(e) => store.run_by_external_id(&run.repository, e)?,
                    None => None,
                };
                // The trigger is the workflow run's event. It is decided once:
                // by the poller (which knows the run), by a stored workflow run,
                // else the job waits for its workflow run (Store::decide_trigger).
                match &existing {
                    Some(e) if !e.trigger_pending => run.trigger = e.trigger,
                    _ if run.trigger != Trigger::Other => {}
                    _ => match store.workflow_run_event(&run.repository.path, run_id)? {
                        Some(event) => run.trigger = trigger_of(&event),
                        None => run.trigger_pending = true,
                    },
                }
                let info = store.workflow_run(&run.repository.path, run_id, run_attempt)?;
                if run.attempt > 0 {
                    // A re-run job can carry the created_at of the first attempt,
                    // days before this attempt was requested: its queue starts
                    // when the attempt was requested. Unknown: not measured.
                    run.queued_at = match info.and_then(|i| i.run_started_at) {
                        Some(requested) => run.queued_at.map(|c| c.max(requested)),
                        None => None,
                    };
                }
                ingest_merged(store, policy, run, existing, now, &mut applied)?;
            }
            Record::CheckRun(mut run) => {
                let existing = match &run.external_id {
                    Some(e) => store.run_by_external_id(&run.repository, e)?,
                    None => None,
                };
                run.attempt = match &existing {
                    Some(e) => e.attempt,
                    None => store
                        .latest_attempt(&run.repository, &run.context, &run.commit)?
                        .map(|(a, _)| a + 1)
                        .unwrap_or(0),
                };
                ingest_merged(store, policy, run, existing, now, &mut applied)?;
            }
            Record::Run(run) => {
                let existing = store.run_attempt(
                    &run.repository,
                    &run.context,
                    &run.commit,
                    Some(run.attempt),
                )?;
                ingest_merged(store, policy, run, existing, now, &mut applied)?;
            }
            Record::Status {
                repository,
                commit,
                context,
                step,
                at,
                url,
            } => {
                let latest = store.run_attempt(&repository, &context, &commit, None)?;
                // A status older than the latest stored for this context (a
                // replay, or a delivery that came late) opens no attempt and
                // changes no state; it may only fill in a start time the
                // attempt it belongs to lacks.
                if let Some(l) = &latest
                    && l.newest().is_some_and(|newest| at < newest)
                {
                    let fills_start = step == cockpit::StatusStep::Started
                        && l.started_at.is_none()
                        && l.queued_at.is_none_or(|q| q <= at)
                        && l.finished_at.is_none_or(|f| at <= f);
                    if !fills_start {
                        store.count_stale_event()?;
                        applied.stale += 1;
                        continue;
                    }
                    let mut run = new_run(repository, context, commit);
                    let mut attempt = cockpit::Attempt::from(l);
                    attempt.started_at = Some(at);
                    attempt.fill(&mut run);
                    run.url = url.or_else(|| l.url.clone());
                    ingest_merged(store, policy, run, latest, now, &mut applied)?;
                    continue;
                }
                let latest_attempt = latest.as_ref().map(cockpit::Attempt::from);
                let Some(next) = cockpit::advance(latest_attempt.as_ref(), step, at) else {
                    continue;
                };
                let mut run = new_run(repository, context, commit);
                next.fill(&mut run);
                run.url = url.or_else(|| {
                    latest
                        .as_ref()
                        .filter(|l| l.attempt == next.attempt)
                        .and_then(|l| l.url.clone())
                });
                let existing = latest.filter(|l| l.attempt == next.attempt);
                ingest_merged(store, policy, run, existing, now, &mut applied)?;
            }
        }
    }
    Ok(applied)
}

/// Ingest a run that may carry only part of what is known about it: a late,
/// non-final event never reopens a finished run, and times and links the
/// event lacks are kept from the stored run.
fn ingest_merged(
    store: &mut Store,
    policy: &Policy,
    mut run: NewRun,
    existing: Option<RunBrief>,
    now: DateTime<Utc>,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    if let Some(e) = existing {
        // An event older than what is stored for this run (a replayed or
        // late delivery) changes nothing.
        let newest = [run.queued_at, run.started_at, run.finished_at]
            .into_iter()
            .flatten()
            .max();
        if let (Some(event), Some(stored)) = (newest, e.newest())
            && event < stored
        {
            store.count_stale_event()?;
            applied.stale += 1;
            return Ok(());
        }
        if e.state.is_terminal() && !run.state.is_terminal() {
            return Ok(());
        }
        run.queued_at = run.queued_at.or(e.queued_at);
        run.started_at = run.started_at.or(e.started_at);
        run.url = run.url.or(e.url);
        run.log_url = run.log_url.or(e.log_url);
        if run.trigger == Trigger::Other {
            run.trigger = e.trigger;
        }
    }
    let ingested = store.ingest_run(&run, policy, now)?;
    applied.runs.push((ingested.id, ingested.status, run));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_every_conclusion() {
        let cases = [
            ("completed", Some("success"), RunState::Success),
            ("completed", Some("neutral"), RunState::Success),
            ("completed", Some("failure"), RunState::Failure),
            ("completed", Some("cancelled"), RunState::Cancelled),
            ("completed", Some("timed_out"), RunState::TimedOut),
            ("completed", Some("skipped"), RunState::Skipped),
            ("completed", Some("action_required"), RunState::Error),
            ("completed", Some("stale"), RunState::Error),
            ("completed", Some("startup_failure"), RunState::Error),
            ("completed", None, RunState::Error),
            ("in_progress", None, RunState::Running),
            ("queued", None, RunState::Pending),
            ("waiting", None, RunState::Pending),
        ];
        for (status, conclusion, want) in cases {
            assert_eq!(
                state_of(status, conclusion),
                want,
                "{status} {conclusion:?}"
            );
        }
    }

    #[test]
    fn triggers_map_workflow_events() {
        assert_eq!(trigger_of("schedule"), Trigger::Schedule);
        assert_eq!(trigger_of("pull_request_target"), Trigger::PullRequest);
        assert_eq!(trigger_of("push"), Trigger::Push);
        assert_eq!(trigger_of("workflow_dispatch"), Trigger::Manual);
        assert_eq!(trigger_of("repository_dispatch"), Trigger::Other);
    }

    #[test]
    fn the_section_validates_with_key_names() {
        let mut c = GithubConfig::default();
        assert!(c.validate().is_ok());
        c.repositories = vec!["nope".into()];
        assert_eq!(c.validate().unwrap_err().0, "github.repositories[0]");
        c.repositories.clear();
        c.owners = vec![OwnerConfig {
            owner: "org".into(),
            pattern: Some("(".into()),
        }];
        assert_eq!(c.validate().unwrap_err().0, "github.owners[0].pattern");
    }
}

//! The GitHub source (docs/design.md §2, §5): webhooks, polling and backfill of
//! commit statuses, check runs, Actions jobs and merged pull requests, and the
//! import of Cockpit's `test-results.db`.
//!
//! Every way in produces the forge-neutral events of `forge::event`
//! (this module converts GitHub's wire types to them), which its `apply`
//! writes through the store.
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

use crate::forge::event::{Attempt, Event, Observed};
use crate::model::{Forge, NewRun, RepositoryRef, RunState, Trigger};
use crate::store::StoreError;
use crate::store::github::WorkflowRunInfo;
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

pub(crate) fn new_run(repository: RepositoryRef, context: String, commit: String) -> NewRun {
    NewRun {
        repository,
        context,
        commit,
        source: "github".into(),
        ..NewRun::default()
    }
}

/// (started_at, finished_at) of a run in `state`: a pending one has not
/// started (a queued job's payload repeats created_at as started_at), an
/// unfinished one has not finished.
fn span(state: RunState, started: Option<DateTime<Utc>>, done: Option<DateTime<Utc>>) -> Span {
    let started = started.filter(|_| state != RunState::Pending);
    (started, done.filter(|_| state.is_terminal()))
}

type Span = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// An Actions job as a run: context `workflow / job`, queued at creation,
/// started when it left the queue, finished at completion.
pub(crate) fn job_record(
    repo: &str,
    job: &wire::WorkflowJob,
    api_url: &str,
    trigger: Trigger,
) -> Result<Event, GithubError> {
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
    (run.started_at, run.finished_at) = span(state, job.started_at, job.completed_at);
    run.url = job.html_url.clone();
    run.log_url = Some(format!(
        "{}/repos/{repo}/actions/jobs/{}/logs",
        api_url.trim_end_matches('/'),
        job.id
    ));
    Ok(Event::Run(Observed {
        run,
        attempt: Attempt::Actions {
            run_id: job.run_id,
            run_attempt,
        },
        parent: None,
        partial: true,
    }))
}

/// A check run as a run, unless it is an Actions job (those come as jobs,
/// with their queue time; counting both would count every job twice).
pub(crate) fn check_run_record(
    repo: &str,
    check: &wire::CheckRun,
) -> Result<Option<Event>, GithubError> {
    if check.app.as_ref().and_then(|a| a.slug.as_deref()) == Some("github-actions") {
        return Ok(None);
    }
    check_name("check_run", "the check run name", &check.name)?;
    check_name("check_run", "head_sha", &check.head_sha)?;
    let state = state_of(&check.status, check.conclusion.as_deref());
    let mut run = new_run(repository(repo), check.name.clone(), check.head_sha.clone());
    run.external_id = Some(format!("check:{}", check.id));
    run.state = state;
    (run.started_at, run.finished_at) = span(state, check.started_at, check.completed_at);
    run.url = check.html_url.clone();
    Ok(Some(Event::Run(Observed {
        run,
        attempt: Attempt::Next,
        parent: None,
        partial: true,
    })))
}

pub(crate) fn workflow_run_record(repo: &str, run: &wire::WorkflowRun) -> Event {
    Event::WorkflowRun {
        repository: repository(repo),
        run_id: run.id,
        run_attempt: run.run_attempt.unwrap_or(1).max(1),
        info: WorkflowRunInfo {
            event: run.event.clone(),
            run_started_at: run.run_started_at,
        },
    }
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

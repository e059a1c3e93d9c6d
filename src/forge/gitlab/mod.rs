//! The GitLab source (gitlab.com and self-managed, API v4).
//!
//! * [`webhook`]: `POST /webhooks/gitlab` for Pipeline, Job and Merge Request Hooks.
//! * [`poll`]: incremental polling (`serve`) and `backfill gitlab --days N`.
//! * `wire`: the private serde types of GitLab's payloads; everything is
//!   converted to [`crate::model`] types here, at the boundary.
//!
//! # Definitions (docs/design.md §2)
//! * A **context** is a job's `stage / name` (`test / unit`); a pipeline as a
//!   whole is the context `pipeline`.
//! * **Attempts**: retried jobs (same name and stage on the same commit) are
//!   attempts 0..n, ordered by creation (then id).
//! * **Queue time** is GitLab's own `queued_duration` (time the job waited in
//!   `pending` for a runner), not `started_at − created_at` (which also counts
//!   time waiting for earlier stages). The run's `queued_at` is therefore set
//!   to `started_at − queued_duration`; without `queued_duration`, `created_at`.
//! * **Run time** is GitLab's `duration`: `finished_at = started_at + duration`
//!   when both are known (GitLab's webhook timestamps have one-second precision,
//!   `duration` has microseconds).

pub mod poll;
pub mod webhook;
mod wire;

use crate::forge::event::{Attempt, Observed};
use crate::model::{ChangeRef, Forge, NewRun, RepositoryRef, RunState, Trigger};
use chrono::{DateTime, NaiveDateTime, Utc};
use std::collections::HashMap;

pub use crate::config::gitlab::{DownloadTraces, GitlabConfig, GroupConfig};

/// GitLab times: RFC 3339 (API) or `2016-08-12 15:23:28 UTC` (webhooks).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S %z") {
        return Some(t.with_timezone(&Utc));
    }
    let naive = s.strip_suffix(" UTC").unwrap_or(s);
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// A job's or pipeline's state from GitLab's status (and failure reason).
/// `None` for a manual job nobody started: it is not a run (yet).
pub fn run_state(status: &str, failure_reason: Option<&str>) -> Option<RunState> {
    Some(match status {
        "success" => RunState::Success,
        "failed" => match failure_reason.unwrap_or_default() {
            "job_execution_timeout" | "stuck_or_timeout_failure" => RunState::TimedOut,
            "runner_system_failure"
            | "api_failure"
            | "scheduler_failure"
            | "data_integrity_failure"
            | "runner_unsupported"
            | "missing_dependency_failure"
            | "no_matching_runner" => RunState::Error,
            _ => RunState::Failure,
        },
        "canceled" | "canceling" | "cancelled" => RunState::Cancelled,
        "skipped" => RunState::Skipped,
        "manual" => return None,
        "running" => RunState::Running,
        // created, pending, preparing, waiting_for_resource, scheduled, waiting_for_callback, ...
        _ => RunState::Pending,
    })
}

/// Why a pipeline ran, from its `source`.
pub fn trigger(source: Option<&str>) -> Trigger {
    match source.unwrap_or_default() {
        "schedule" => Trigger::Schedule,
        "merge_request_event" | "external_pull_request_event" => Trigger::PullRequest,
        "push" => Trigger::Push,
        "web" | "api" | "trigger" | "chat" | "webide" => Trigger::Manual,
        _ => Trigger::Other,
    }
}

/// The context of a job: `stage / name`.
pub fn job_context(stage: &str, name: &str) -> String {
    if stage.is_empty() {
        name.to_string()
    } else {
        format!("{stage} / {name}")
    }
}

/// The context of a pipeline as a whole.
pub const PIPELINE_CONTEXT: &str = "pipeline";

/// Milliseconds of a GitLab duration in seconds (rounded; negative or absurd → None).
pub(crate) fn millis(seconds: Option<f64>) -> Option<chrono::Duration> {
    let s = seconds?;
    (s.is_finite() && (0.0..1e9).contains(&s))
        .then(|| chrono::Duration::milliseconds((s * 1000.0).round() as i64))
}

/// (queued_at, started_at, finished_at).
pub(crate) type Times = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// (queued_at, started_at, finished_at) from GitLab's fields, per the
/// definitions in the module docs.
pub(crate) fn times(
    created_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    duration: Option<f64>,
    queued_duration: Option<f64>,
) -> Times {
    let queued_at = match (started_at, millis(queued_duration)) {
        (Some(s), Some(q)) => Some(s - q),
        _ => created_at,
    };
    let finished = match (started_at, millis(duration), finished_at) {
        (Some(s), Some(d), Some(_)) => Some(s + d),
        (_, _, f) => f,
    };
    (queued_at, started_at, finished)
}

/// The change (MR iid) a pipeline ref names: `refs/merge-requests/42/head` → 42.
pub(crate) fn mr_from_ref(r: &str) -> Option<i64> {
    r.strip_prefix("refs/merge-requests/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// A GitLab run as a forge-neutral observation: the whole run as GitLab
/// has it now; without a trigger of its own, its pipeline's (`pipeline`, the
/// pipeline's external id).
pub(crate) fn observed(run: NewRun, attempt: Attempt, pipeline: Option<String>) -> Observed {
    Observed {
        run,
        attempt,
        parent: pipeline,
        partial: false,
    }
}

/// A project as the model's repository.
pub(crate) fn project(path: &str) -> RepositoryRef {
    RepositoryRef {
        forge: Forge::Gitlab,
        path: path.to_string(),
    }
}

/// What the runs of one pipeline share: the project, the commit, the
/// trigger and the change (an MR iid).
pub(crate) fn pipeline_base(
    repository: RepositoryRef,
    commit: &str,
    trigger: Trigger,
    change: Option<i64>,
) -> NewRun {
    NewRun {
        repository,
        commit: commit.to_string(),
        trigger,
        change: change.map(|number| ChangeRef {
            number,
            merged_at: None,
        }),
        source: "gitlab".into(),
        ..NewRun::default()
    }
}

/// A job (of a Job Hook, a Pipeline Hook's builds or the API's job list)
/// in model terms; a manual job nobody started is none.
pub(crate) struct Job {
    pub id: i64,
    /// `stage / name`.
    pub context: String,
    pub state: RunState,
    /// Retries of a context are numbered in creation order (then by id).
    pub created: Option<DateTime<Utc>>,
    pub times: Times,
    /// The job's page; its log is at `/raw` under it.
    pub url: Option<String>,
}

impl Job {
    /// The job as attempt `attempt` of its context, on `base`.
    pub(crate) fn run(self, base: &NewRun, attempt: u32) -> NewRun {
        let (queued_at, started_at, finished_at) = self.times;
        NewRun {
            context: self.context,
            external_id: Some(format!("job:{}", self.id)),
            attempt,
            state: self.state,
            queued_at,
            started_at,
            finished_at,
            log_url: self.url.as_ref().map(|u| format!("{u}/raw")),
            url: self.url,
            ..base.clone()
        }
    }
}

/// A job of the API's job list or a Pipeline Hook's builds in model terms
/// (`None`: a manual job nobody started): `time` reads one of its times by
/// field name; without a page of its own, it is on the project's `web` page.
fn job(
    j: &wire::ApiJob,
    time: impl Fn(&str, &Option<String>) -> Result<Option<DateTime<Utc>>, String>,
    web: Option<&str>,
) -> Result<Option<Job>, String> {
    let Some(state) = run_state(&j.status, j.failure_reason.as_deref()) else {
        return Ok(None);
    };
    Ok(Some(Job {
        id: j.id,
        context: job_context(&j.stage, &j.name),
        state,
        created: j.created_at.as_deref().and_then(parse_time),
        times: times(
            time("created_at", &j.created_at)?,
            time("started_at", &j.started_at)?,
            time("finished_at", &j.finished_at)?,
            j.duration,
            j.queued_duration,
        ),
        url: (j.web_url.clone()).or_else(|| web.map(|w| format!("{w}/-/jobs/{}", j.id))),
    }))
}

/// A pipeline's runs, for the webhook and the poller alike: its jobs, whose
/// retries (same `stage / name`) are attempts 0..n by creation time, then
/// id; then the pipeline as a whole (context `pipeline`) when it is a run:
/// its state, times and page.
pub(crate) fn plan_pipeline(
    base: NewRun,
    id: i64,
    mut jobs: Vec<Job>,
    pipeline: Option<(RunState, Times, Option<String>)>,
) -> Vec<Observed> {
    jobs.sort_by_key(|j| (j.created, j.id));
    let external_id = format!("pipeline:{id}");
    let mut attempts: HashMap<String, u32> = HashMap::new();
    let mut planned: Vec<Observed> = jobs
        .into_iter()
        .map(|j| {
            let attempt = attempts.entry(j.context.clone()).or_insert(0);
            *attempt += 1;
            let run = j.run(&base, *attempt - 1);
            observed(run, Attempt::Known, Some(external_id.clone()))
        })
        .collect();
    if let Some((state, (queued_at, started_at, finished_at), url)) = pipeline {
        let run = NewRun {
            context: PIPELINE_CONTEXT.into(),
            external_id: Some(external_id),
            state,
            queued_at,
            started_at,
            finished_at,
            url,
            ..base
        };
        planned.push(observed(run, Attempt::Known, None));
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_request_timeout_is_refused_with_its_key() {
        let mut c = GitlabConfig::default();
        assert!(c.validate().is_ok());
        c.request_timeout = std::time::Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().0, "gitlab.request_timeout");
    }

    #[test]
    fn times_parse_in_both_gitlab_formats() {
        let a = parse_time("2016-08-12 15:23:28 UTC").unwrap();
        assert_eq!(a.to_rfc3339(), "2016-08-12T15:23:28+00:00");
        let b = parse_time("2021-02-23T02:41:37.886Z").unwrap();
        assert_eq!(b.timestamp_millis() % 1000, 886);
        assert_eq!(
            parse_time("2012-01-03T23:36:29+02:00")
                .unwrap()
                .to_rfc3339(),
            "2012-01-03T21:36:29+00:00"
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn statuses_and_sources_map_to_the_model() {
        assert_eq!(
            run_state("failed", Some("script_failure")),
            Some(RunState::Failure)
        );
        assert_eq!(
            run_state("failed", Some("job_execution_timeout")),
            Some(RunState::TimedOut)
        );
        assert_eq!(
            run_state("failed", Some("runner_system_failure")),
            Some(RunState::Error)
        );
        assert_eq!(run_state("canceled", None), Some(RunState::Cancelled));
        assert_eq!(run_state("created", None), Some(RunState::Pending));
        assert_eq!(run_state("manual", None), None);
        assert_eq!(trigger(Some("schedule")), Trigger::Schedule);
        assert_eq!(trigger(Some("merge_request_event")), Trigger::PullRequest);
        assert_eq!(trigger(Some("web")), Trigger::Manual);
        assert_eq!(trigger(None), Trigger::Other);
        assert_eq!(mr_from_ref("refs/merge-requests/42/head"), Some(42));
        assert_eq!(mr_from_ref("main"), None);
    }

    #[test]
    fn the_relative_root_of_a_self_managed_instance_is_known() {
        let mut c = GitlabConfig::default();
        assert_eq!(c.relative_root(), "");
        c.api_url = "https://example.com/gitlab/api/v4/".into();
        assert_eq!(c.relative_root(), "/gitlab");
    }
}

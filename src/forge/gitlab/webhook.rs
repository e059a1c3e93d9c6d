//! GitLab's part of `POST /webhooks/gitlab` (Pipeline, Job and Merge Request
//! Hooks): `X-Gitlab-Token` compared in constant time with
//! `CI_SLO_GITLAB_WEBHOOK_TOKEN`, the delivery id, and a body turned into
//! forge-neutral events (`Plan`). The flow around them (the order of the checks,
//! forwarding, storing exactly once with the delivery id, the answers) is the
//! one both forges share, `http::webhooks`.

use super::wire::{JobHook, MergeRequestHook, PipelineHook};
use super::{
    Job, job, job_context, mr_from_ref, observed, parse_time, pipeline_base, plan_pipeline,
    run_state, times, trigger,
};
use crate::forge::event::{Attempt, Event};
use crate::model::{RepositoryRef, Trigger};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;

/// Events this exporter reads (others are acknowledged with 202).
pub const EVENTS: &[&str] = &["Job Hook", "Pipeline Hook", "Merge Request Hook"];

/// What one delivery asks the store to do.
#[derive(Debug)]
pub(crate) enum Plan {
    Store(Vec<Event>),
    /// A valid event with nothing to store (e.g. an MR that was only edited).
    Nothing(String),
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The id that identifies a delivery across redeliveries: GitLab's
/// `Idempotency-Key` (17.x), else `X-Gitlab-Event-UUID`; scoped by the
/// webhook (`X-Gitlab-Webhook-UUID`) when sent.
pub fn delivery_id(headers: &HeaderMap) -> Option<String> {
    let event =
        header(headers, "idempotency-key").or_else(|| header(headers, "x-gitlab-event-uuid"))?;
    Some(match header(headers, "x-gitlab-webhook-uuid") {
        Some(hook) => format!("{hook}/{event}"),
        None => event,
    })
}

/// `X-Gitlab-Token` against the configured token, in constant time; the
/// error is the reason for a `401`.
pub fn authorize(headers: &HeaderMap, expected: Option<&str>) -> Result<(), &'static str> {
    let Some(expected) = expected else {
        return Err(
            "GitLab webhooks are disabled: set CI_SLO_GITLAB_WEBHOOK_TOKEN (or secrets.gitlab_webhook_token_file) on the exporter",
        );
    };
    let given = headers
        .get("x-gitlab-token")
        .map(|v| v.as_bytes())
        .ok_or("missing X-Gitlab-Token")?;
    if bool::from(given.ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err("invalid X-Gitlab-Token")
    }
}

/// Turn a delivery into what to store. The error is the reason for a `400`.
pub(crate) fn plan(event: &str, body: &[u8], relative_root: &str) -> Result<Plan, String> {
    match event {
        "Job Hook" => {
            let hook: JobHook = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            job_plan(hook, relative_root)
        }
        "Pipeline Hook" => {
            let hook: PipelineHook = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            pipeline_plan(hook)
        }
        "Merge Request Hook" => {
            let hook: MergeRequestHook = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            merge_plan(hook)
        }
        other => Err(format!("event {other:?} is not handled")),
    }
}

fn repository(path: &str) -> Result<RepositoryRef, String> {
    let path = path.trim_matches('/');
    if crate::names::check(path).is_err() || !path.contains('/') {
        return Err(format!("project path {path:?} is not like group/project"));
    }
    Ok(super::project(path))
}

fn check_sha(sha: &str) -> Result<(), String> {
    if sha.is_empty() || sha.len() > 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("commit sha {sha:?} is not a hex SHA"));
    }
    Ok(())
}

/// Names follow the one rule of [`crate::names`].
fn check_name(what: &str, name: &str) -> Result<(), String> {
    crate::names::check(name).map_err(|e| format!("{what} {name:?}: {e}"))
}

fn time(field: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>, String> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => parse_time(s)
            .map(Some)
            .ok_or_else(|| format!("{field}: {s:?} is not a time")),
    }
}

fn job_plan(hook: JobHook, relative_root: &str) -> Result<Plan, String> {
    let path = hook
        .project
        .as_ref()
        .and_then(|p| p.path_with_namespace.clone())
        .or_else(|| {
            let homepage = hook.repository.as_ref()?.homepage.as_deref()?;
            let url = reqwest::Url::parse(homepage).ok()?;
            let p = url.path();
            Some(p.strip_prefix(relative_root).unwrap_or(p).to_string())
        })
        .ok_or("no project path (project.path_with_namespace or repository.homepage)")?;
    let repository = repository(&path)?;
    check_sha(&hook.sha)?;
    check_name("build_name", &hook.build_name)?;
    let Some(state) = run_state(&hook.build_status, hook.build_failure_reason.as_deref()) else {
        return Ok(Plan::Nothing(format!(
            "job {} waits for a manual action: not a run yet",
            hook.build_id
        )));
    };
    let created = time("build_created_at", &hook.build_created_at)?;
    let times = times(
        created,
        time("build_started_at", &hook.build_started_at)?,
        time("build_finished_at", &hook.build_finished_at)?,
        hook.build_duration,
        hook.build_queued_duration,
    );
    let web = hook
        .repository
        .as_ref()
        .and_then(|r| r.homepage.clone())
        .or_else(|| hook.project.as_ref().and_then(|p| p.web_url.clone()));
    let source = hook.source.as_deref().map(|s| trigger(Some(s)));
    let change = hook.git_ref.as_deref().and_then(mr_from_ref);
    let base = pipeline_base(
        repository,
        &hook.sha,
        source.unwrap_or(Trigger::Other),
        change,
    );
    let job = Job {
        id: hook.build_id,
        context: job_context(&hook.build_stage, &hook.build_name),
        state,
        created,
        times,
        url: web.map(|w| format!("{}/-/jobs/{}", w.trim_end_matches('/'), hook.build_id)),
    };
    let run = job.run(&base, hook.retries_count.unwrap_or(0));
    let attempt = match hook.retries_count {
        Some(_) => Attempt::Known,
        None => Attempt::Next,
    };
    let pipeline = hook.pipeline_id.map(|id| format!("pipeline:{id}"));
    Ok(Plan::Store(vec![Event::Run(observed(
        run, attempt, pipeline,
    ))]))
}

fn pipeline_plan(hook: PipelineHook) -> Result<Plan, String> {
    let path = hook
        .project
        .path_with_namespace
        .as_deref()
        .ok_or("project.path_with_namespace is missing")?;
    let repository = repository(path)?;
    let p = &hook.object_attributes;
    check_sha(&p.sha)?;
    let change = hook
        .merge_request
        .as_ref()
        .map(|m| m.iid)
        .or_else(|| p.git_ref.as_deref().and_then(mr_from_ref));
    let base = pipeline_base(repository, &p.sha, trigger(p.source.as_deref()), change);
    let web = hook
        .project
        .web_url
        .as_deref()
        .map(|w| w.trim_end_matches('/'));
    let mut jobs = Vec::new();
    for b in &hook.builds {
        check_name("builds[].name", &b.name)?;
        let read = |field: &str, t: &Option<String>| time(&format!("builds[].{field}"), t);
        jobs.extend(job(b, read, web)?);
    }
    let pipeline = match run_state(&p.status, None) {
        // The pipeline as a whole: queued at creation, started after GitLab's
        // own queued_duration, finished when GitLab says so.
        Some(state) => {
            let created = time("object_attributes.created_at", &p.created_at)?;
            let finished = if state.is_terminal() {
                time("object_attributes.finished_at", &p.finished_at)?
            } else {
                None
            };
            let started = match (created, super::millis(p.queued_duration)) {
                (Some(c), Some(q)) => Some(c + q),
                _ => None,
            };
            let url = p
                .url
                .clone()
                .or_else(|| web.map(|w| format!("{w}/-/pipelines/{}", p.id)));
            Some((state, (created, started, finished), url))
        }
        None => None,
    };
    let planned = plan_pipeline(base, p.id, jobs, pipeline);
    Ok(Plan::Store(planned.into_iter().map(Event::Run).collect()))
}

fn merge_plan(hook: MergeRequestHook) -> Result<Plan, String> {
    let a = &hook.object_attributes;
    let merged = a.action.as_deref() == Some("merge") || a.state.as_deref() == Some("merged");
    if !merged {
        return Ok(Plan::Nothing(format!(
            "merge request !{} was not merged (action {:?})",
            a.iid,
            a.action.as_deref().unwrap_or("none")
        )));
    }
    let path = hook
        .project
        .path_with_namespace
        .as_deref()
        .ok_or("project.path_with_namespace is missing")?;
    let repository = repository(path)?;
    let head_sha = a.last_commit.as_ref().map(|c| c.id.clone());
    if let Some(sha) = &head_sha {
        check_sha(sha)?;
    }
    let merged_at = time("object_attributes.merged_at", &a.merged_at)?
        .or(time("object_attributes.updated_at", &a.updated_at)?)
        .unwrap_or_else(Utc::now);
    Ok(Plan::Store(vec![Event::Merge {
        repository,
        number: a.iid,
        head_sha,
        merged_at,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunState;
    use axum::http::HeaderValue;

    #[test]
    fn the_token_is_required_and_compared_exactly() {
        let mut h = HeaderMap::new();
        assert!(
            authorize(&h, None)
                .unwrap_err()
                .contains("CI_SLO_GITLAB_WEBHOOK_TOKEN")
        );
        assert!(authorize(&h, Some("s3cret")).is_err());
        h.insert("x-gitlab-token", HeaderValue::from_static("s3cre"));
        assert!(authorize(&h, Some("s3cret")).is_err());
        h.insert("x-gitlab-token", HeaderValue::from_static("s3cret"));
        assert!(authorize(&h, Some("s3cret")).is_ok());
    }

    #[test]
    fn delivery_ids_prefer_the_idempotency_key_and_are_scoped_by_the_hook() {
        let mut h = HeaderMap::new();
        assert_eq!(delivery_id(&h), None);
        h.insert("x-gitlab-event-uuid", HeaderValue::from_static("e-1"));
        assert_eq!(delivery_id(&h).as_deref(), Some("e-1"));
        h.insert("x-gitlab-webhook-uuid", HeaderValue::from_static("w-9"));
        assert_eq!(delivery_id(&h).as_deref(), Some("w-9/e-1"));
        h.insert("idempotency-key", HeaderValue::from_static("k-5"));
        assert_eq!(delivery_id(&h).as_deref(), Some("w-9/k-5"));
    }

    #[test]
    fn hostile_payloads_are_reasons_not_panics() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"sha\": 5}",
            b"{\"object_attributes\": {}}",
            &[0xff, 0xfe, 0x00][..],
        ] {
            for event in ["Job Hook", "Pipeline Hook", "Merge Request Hook"] {
                assert!(plan(event, body, "").is_err(), "{event} {body:?}");
            }
        }
        let job = r#"{"sha":"not hex","build_id":1,"build_name":"x","build_status":"success","project":{"path_with_namespace":"a/b"}}"#;
        assert!(
            plan("Job Hook", job.as_bytes(), "")
                .unwrap_err()
                .contains("hex")
        );
        let job = r#"{"sha":"abc1","build_id":1,"build_name":"x","build_status":"success","build_started_at":"soon","project":{"path_with_namespace":"a/b"}}"#;
        assert!(
            plan("Job Hook", job.as_bytes(), "")
                .unwrap_err()
                .contains("build_started_at")
        );
        let job = r#"{"sha":"abc1","build_id":1,"build_name":"x","build_status":"running","build_duration":1e308,"build_started_at":"2023-01-10 13:50:05 UTC","project":{"path_with_namespace":"a/b"}}"#;
        let Ok(Plan::Store(events)) = plan("Job Hook", job.as_bytes(), "") else {
            panic!("a job with an absurd duration is still a run");
        };
        let [Event::Run(o)] = &events[..] else {
            panic!("one run: {events:?}");
        };
        assert_eq!(o.run.state, RunState::Running);
    }
}

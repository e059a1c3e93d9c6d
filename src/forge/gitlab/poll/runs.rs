//! A pipeline and its jobs as planned runs: retries of a job (same
//! `stage / name`) become attempts 0..n by creation time, then id; the
//! pipeline's test report is attached to the runs of its jobs.

use crate::classify::Classifier;
use crate::forge::event::{Attempt, Observed};
use crate::forge::gitlab::wire::{ApiJob, ApiPipeline, TestReport};
use crate::forge::gitlab::{
    PIPELINE_CONTEXT, job_context, mr_from_ref, observed, parse_time, run_state, times, trigger,
};
use crate::ingest::classify_run;
use crate::model::{ChangeRef, Forge, NewRun, RepositoryRef, TestOutcome, TestResult};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A pipeline's jobs and the pipeline itself as planned runs. Retries (same
/// `stage / name`) are attempts 0..n by creation time, then id.
pub(super) fn plan_pipeline(project: &str, p: &ApiPipeline, jobs: &[ApiJob]) -> Vec<Observed> {
    let repository = RepositoryRef {
        forge: Forge::Gitlab,
        path: project.to_string(),
    };
    let trig = trigger(p.source.as_deref());
    let change = p
        .git_ref
        .as_deref()
        .and_then(mr_from_ref)
        .map(|number| ChangeRef {
            number,
            merged_at: None,
        });
    let pipeline_ext = format!("pipeline:{}", p.id);
    let mut sorted: Vec<&ApiJob> = jobs.iter().collect();
    sorted.sort_by_key(|j| (j.created_at.as_deref().and_then(parse_time), j.id));
    let mut attempts: HashMap<String, u32> = HashMap::new();
    let mut planned = Vec::new();
    let (mut first_start, mut last_end): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        (None, None);
    for j in sorted {
        let Some(state) = run_state(&j.status, j.failure_reason.as_deref()) else {
            continue;
        };
        let context = job_context(&j.stage, &j.name);
        let attempt = attempts.entry(context.clone()).or_insert(0);
        let this = *attempt;
        *attempt += 1;
        let (queued_at, started_at, finished_at) = times(
            j.created_at.as_deref().and_then(parse_time),
            j.started_at.as_deref().and_then(parse_time),
            j.finished_at.as_deref().and_then(parse_time),
            j.duration,
            j.queued_duration,
        );
        if let Some(s) = started_at {
            first_start = Some(first_start.map_or(s, |f| f.min(s)));
        }
        if let Some(f) = finished_at {
            last_end = Some(last_end.map_or(f, |l| l.max(f)));
        }
        planned.push(observed(
            NewRun {
                repository: repository.clone(),
                context,
                commit: p.sha.clone(),
                external_id: Some(format!("job:{}", j.id)),
                attempt: this,
                trigger: trig,
                state,
                queued_at,
                started_at,
                finished_at,
                log_url: j.web_url.as_ref().map(|u| format!("{u}/raw")),
                url: j.web_url.clone(),
                change: change.clone(),
                source: "gitlab".into(),
                ..NewRun::default()
            },
            Attempt::Known,
            Some(pipeline_ext.clone()),
        ));
    }
    if let Some(state) = run_state(&p.status, None) {
        planned.push(observed(
            NewRun {
                repository,
                context: PIPELINE_CONTEXT.into(),
                commit: p.sha.clone(),
                external_id: Some(pipeline_ext),
                attempt: 0,
                trigger: trig,
                state,
                queued_at: p.created_at.as_deref().and_then(parse_time),
                started_at: first_start,
                finished_at: if state.is_terminal() { last_end } else { None },
                url: p.web_url.clone(),
                change,
                source: "gitlab".into(),
                ..NewRun::default()
            },
            Attempt::Known,
            None,
        ));
    }
    planned
}

/// A pipeline's test report onto its runs: a suite is named after its job;
/// its cases go to that job's latest attempt (else to the pipeline run).
pub(super) fn attach_tests(planned: &mut [Observed], report: TestReport, classifier: &Classifier) {
    for suite in report.test_suites {
        let tests: Vec<TestResult> = suite
            .test_cases
            .into_iter()
            .map(|c| {
                let outcome = match c.status.as_str() {
                    "success" => TestOutcome::Passed,
                    "failed" => TestOutcome::Failed,
                    "skipped" => TestOutcome::Skipped,
                    _ => TestOutcome::Errored,
                };
                let output = match c.system_output {
                    Some(serde_json::Value::String(s)) => Some(s),
                    Some(serde_json::Value::Array(a)) => Some(
                        a.iter()
                            .map(|v| {
                                v.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string())
                            })
                            .collect::<Vec<_>>()
                            .join("\n"),
                    ),
                    Some(serde_json::Value::Object(o)) => o
                        .get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                        .or_else(|| Some(serde_json::Value::Object(o).to_string())),
                    _ => None,
                };
                let message = match (output, c.stack_trace) {
                    (Some(o), Some(t)) => Some(format!("{o}\n{t}")),
                    (o, t) => o.or(t),
                };
                TestResult {
                    name: match c.classname.as_deref() {
                        Some(cls) if !cls.is_empty() => format!("{cls}.{}", c.name),
                        _ => c.name,
                    },
                    outcome,
                    duration_seconds: c.execution_time.filter(|t| t.is_finite() && *t >= 0.0),
                    retries: 0,
                    retry_reasons: Vec::new(),
                    message: if outcome == TestOutcome::Passed {
                        None
                    } else {
                        message
                    },
                }
            })
            .collect();
        if tests.is_empty() {
            continue;
        }
        let target = planned
            .iter()
            .rposition(|p| {
                p.run.context.rsplit(" / ").next() == Some(suite.name.as_str())
                    && p.run.context != PIPELINE_CONTEXT
            })
            .or_else(|| {
                planned
                    .iter()
                    .rposition(|p| p.run.context == PIPELINE_CONTEXT)
            });
        if let Some(i) = target {
            let run = &mut planned[i].run;
            run.tests.extend(tests);
            run.failures = classify_run(classifier, None, &run.tests);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunState;

    #[test]
    fn retried_jobs_become_attempts_in_creation_order() {
        let job = |id: i64, name: &str, created: &str, status: &str| ApiJob {
            id,
            name: name.into(),
            stage: "test".into(),
            status: status.into(),
            created_at: Some(created.into()),
            started_at: Some(created.into()),
            finished_at: Some(created.into()),
            duration: Some(10.0),
            queued_duration: Some(2.0),
            failure_reason: None,
            web_url: None,
        };
        let p = ApiPipeline {
            id: 7,
            sha: "abc".into(),
            git_ref: Some("refs/merge-requests/12/head".into()),
            status: "success".into(),
            source: Some("merge_request_event".into()),
            created_at: Some("2026-11-01T10:00:00Z".into()),
            updated_at: None,
            web_url: None,
        };
        let jobs = [
            job(30, "unit", "2026-11-01T10:20:00Z", "success"),
            job(10, "unit", "2026-11-01T10:01:00Z", "failed"),
            job(20, "unit", "2026-11-01T10:10:00Z", "failed"),
            job(11, "lint", "2026-11-01T10:01:00Z", "success"),
        ];
        let planned = plan_pipeline("g/p", &p, &jobs);
        let got: Vec<(String, String, u32)> = planned
            .iter()
            .map(|p| {
                (
                    p.run.context.clone(),
                    p.run.external_id.clone().unwrap(),
                    p.run.attempt,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("test / unit".into(), "job:10".into(), 0),
                ("test / lint".into(), "job:11".into(), 0),
                ("test / unit".into(), "job:20".into(), 1),
                ("test / unit".into(), "job:30".into(), 2),
                ("pipeline".into(), "pipeline:7".into(), 0),
            ]
        );
        assert_eq!(planned[0].run.change.as_ref().unwrap().number, 12);
        assert_eq!(planned[4].run.state, RunState::Success);
    }
}

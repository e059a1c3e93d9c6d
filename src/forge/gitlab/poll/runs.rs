//! A pipeline and its jobs as planned runs: retries of a job (same
//! `stage / name`) become attempts 0..n by creation time, then id; the
//! pipeline's test report is attached to the runs of its jobs.

use crate::classify::Classifier;
use crate::forge::event::Observed;
use crate::forge::gitlab::wire::{ApiJob, ApiPipeline, TestReport};
use crate::forge::gitlab::{
    Job, PIPELINE_CONTEXT, job, mr_from_ref, parse_time, pipeline_base, run_state, trigger,
};
use crate::ingest::classify_run;
use crate::model::{TestOutcome, TestResult};

/// A pipeline's jobs and the pipeline itself as planned runs (see
/// [`crate::forge::gitlab::plan_pipeline`]); the pipeline ran from its
/// first job's start to its last job's end.
pub(super) fn plan_pipeline(project: &str, p: &ApiPipeline, jobs: &[ApiJob]) -> Vec<Observed> {
    let change = p.git_ref.as_deref().and_then(mr_from_ref);
    let base = pipeline_base(
        crate::forge::gitlab::project(project),
        &p.sha,
        trigger(p.source.as_deref()),
        change,
    );
    let lenient = |_: &str, t: &Option<String>| Ok(t.as_deref().and_then(parse_time));
    let jobs: Vec<Job> = (jobs.iter())
        .filter_map(|j| job(j, lenient, None).ok().flatten())
        .collect();
    let pipeline = run_state(&p.status, None).map(|state| {
        let first_start = jobs.iter().filter_map(|j| j.times.1).min();
        let last_end = jobs.iter().filter_map(|j| j.times.2).max();
        let created = p.created_at.as_deref().and_then(parse_time);
        let finished = last_end.filter(|_| state.is_terminal());
        (state, (created, first_start, finished), p.web_url.clone())
    });
    crate::forge::gitlab::plan_pipeline(base, p.id, jobs, pipeline)
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
            finished_at: None,
            queued_duration: None,
            url: None,
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

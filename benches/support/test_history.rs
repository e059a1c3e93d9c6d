//! The history of one large test suite, shared by the per-test benches
//! (benches/test_stats.rs, benches/pg_scale.rs): runs of `tests` tests of
//! one repository and context, two minutes apart, 1% of the tests flaky
//! (failing 5% of runs) and 0.5% broken, with names shaped like a real
//! Java suite's.

use ci_slo_exporter::model::{
    Completeness, Forge, NewRun, RepositoryRef, RunState, TestOutcome, TestResult, Trigger,
};

/// The repository of the history.
pub(crate) const REPO: &str = "bench/suite";

/// The outcome of test `t` in run `i`: 1% flaky (fail 5% of runs), 0.5% broken.
pub(crate) fn outcome(t: usize, i: usize) -> TestOutcome {
    let broken = t % 200 == 7;
    let flaky_failure = t % 100 == 3 && (i * 7919 + t * 104_729).is_multiple_of(20);
    if broken || flaky_failure {
        TestOutcome::Failed
    } else {
        TestOutcome::Passed
    }
}

pub(crate) fn name(t: usize) -> String {
    format!(
        "org.example.module{}.service.Component{}Test.test_case_{t}",
        t % 39,
        t % 250
    )
}

/// Run `i` of `runs`, two minutes apart, ending at `now_ms`.
pub(crate) fn new_run(i: usize, tests: usize, now_ms: i64, runs: usize) -> NewRun {
    let finished =
        chrono::DateTime::from_timestamp_millis(now_ms - (runs.saturating_sub(i)) as i64 * 120_000)
            .unwrap();
    NewRun {
        repository: RepositoryRef {
            forge: Forge::Generic,
            path: REPO.into(),
        },
        context: "unit".into(),
        commit: format!("{:040x}", (i / 2) as u128 * 0x9e37_79b9_7f4a_7c15),
        external_id: Some(format!("job-{i}")),
        attempt_group: None,
        attempt: 0,
        trigger: Trigger::Push,
        trigger_pending: false,
        state: RunState::Success,
        queued_at: Some(finished - chrono::Duration::minutes(10)),
        started_at: Some(finished - chrono::Duration::minutes(9)),
        finished_at: Some(finished),
        url: None,
        log_url: None,
        change: None,
        tests: (0..tests)
            .map(|t| TestResult {
                name: name(t),
                outcome: outcome(t, i),
                duration_seconds: Some(0.01 + (t % 97) as f64 / 10.0),
                retries: 0,
                retry_reasons: vec![],
                message: None,
            })
            .collect(),
        reports: vec![],
        failures: vec![],
        dependencies: Default::default(),
        source: "bench".into(),
        completeness: Completeness::Whole,
    }
}

/// `run` as the body of `POST /api/v1/runs`.
pub(crate) fn body(run: &NewRun) -> String {
    serde_json::json!({
        "repository": REPO,
        "context": run.context,
        "commit": run.commit,
        "external_id": run.external_id,
        "trigger": "push",
        "queued_at": run.queued_at.unwrap().to_rfc3339(),
        "started_at": run.started_at.unwrap().to_rfc3339(),
        "finished_at": run.finished_at.unwrap().to_rfc3339(),
        "tests": run.tests.iter().map(|t| serde_json::json!({
            "name": t.name, "outcome": t.outcome.as_str(), "duration_seconds": t.duration_seconds,
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

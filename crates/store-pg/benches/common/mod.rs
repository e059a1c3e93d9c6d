//! What the store-pg benches share: the runs they store. Each bench
//! compiles this module on its own and uses part of it.
#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use ci_slo_core::model::{
    Forge, NewRun, RepositoryRef, RunState, TestOutcome, TestResult, Trigger,
};

/// Test results per run.
pub(crate) const TESTS: usize = 50;

/// The time the runs end at.
pub(crate) fn end() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .expect("time")
        .to_utc()
}

/// `n` runs a minute apart up to [`end`], over 20 repositories and 5
/// contexts, each with [`TESTS`] test results (a few failing).
pub(crate) fn runs(n: usize) -> Vec<NewRun> {
    let now = end();
    (0..n)
        .map(|i| {
            let at = now - Duration::minutes((n - i) as i64);
            NewRun {
                repository: RepositoryRef {
                    forge: Forge::Github,
                    path: format!("org/repo{}", i % 20),
                },
                context: format!("ci/job{}", i % 5),
                commit: format!("{:040x}", i / 3),
                external_id: Some(format!("job-{i}")),
                attempt: 0,
                trigger: Trigger::PullRequest,
                state: if i % 7 == 0 {
                    RunState::Failure
                } else {
                    RunState::Success
                },
                queued_at: Some(at - Duration::seconds(90)),
                started_at: Some(at - Duration::seconds(60)),
                finished_at: Some(at),
                source: "bench".into(),
                tests: (0..TESTS)
                    .map(|t| TestResult {
                        name: format!("suite::test_{t}"),
                        outcome: if (i + t) % 31 == 0 {
                            TestOutcome::Failed
                        } else {
                            TestOutcome::Passed
                        },
                        duration_seconds: Some(0.25),
                        retries: 0,
                        retry_reasons: Vec::new(),
                        message: None,
                    })
                    .collect(),
                ..NewRun::default()
            }
        })
        .collect()
}

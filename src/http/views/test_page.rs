//! A test's page: its verdict and ratios over the window, every execution,
//! the retry reasons and the failure messages
//! (`/api/v1/tests/{repository}/{context}/{test}`).

use super::{UiQuery, human};
use crate::flaky;
use crate::http::{ApiError, AppState};
use crate::store::ui::TestExecutionRow;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TestStatsView {
    pub executions: u64,
    pub failures: u64,
    pub commits: u64,
    pub flaky_commits: u64,
    /// Failed runs on commits where the test also passed, and passes after an in-run retry.
    pub flaky_failures: u64,
    pub failure_ratio: f64,
    pub flake_ratio: f64,
    pub flip_rate: f64,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TestPageView {
    pub repository: String,
    pub context: String,
    pub test: String,
    pub window: String,
    pub since: DateTime<Utc>,
    pub stats: Option<TestStatsView>,
    /// Retry reasons with how often each was given, most frequent first.
    pub retry_reasons: Vec<(String, u64)>,
    pub executions: Vec<TestExecutionRow>,
}

pub(crate) async fn test_page(
    state: &AppState,
    repository: String,
    context: String,
    test: String,
    q: &UiQuery,
) -> Result<TestPageView, ApiError> {
    let window = q.window_or(state.config.tests.window)?;
    let since = state.clock.now() - window;
    let (r, c, t) = (repository.clone(), context.clone(), test.clone());
    let executions = state
        .store
        .read(move |s| s.test_history(&r, &c, &t, since))
        .await?;
    let stats = flaky::from_counts(
        flaky::counts(
            &executions
                .iter()
                .map(|e| flaky::Execution {
                    commit: e.commit.clone(),
                    outcome: e.outcome,
                    retries: e.retries,
                })
                .collect::<Vec<_>>(),
        ),
        state.config.tests.min_runs,
    )
    .map(|s| TestStatsView {
        executions: s.executions,
        failures: s.failures,
        commits: s.commits,
        flaky_commits: s.flaky_commits,
        flaky_failures: s.flaky_failures,
        failure_ratio: s.failure_ratio,
        flake_ratio: s.flake_ratio,
        flip_rate: s.flip_rate,
        verdict: s.verdict.as_str().into(),
    });
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for e in &executions {
        for r in &e.retry_reasons {
            *reasons.entry(r.clone()).or_default() += 1;
        }
        if e.retries > 0 && e.retry_reasons.is_empty() {
            *reasons.entry("(no reason recorded)".into()).or_default() += e.retries as u64;
        }
    }
    let mut retry_reasons: Vec<(String, u64)> = reasons.into_iter().collect();
    retry_reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(TestPageView {
        repository,
        context,
        test,
        window: human(window),
        since,
        stats,
        retry_reasons,
        executions,
    })
}

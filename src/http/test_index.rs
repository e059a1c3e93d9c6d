//! The test index: `GET /api/v1/tests` (docs/api.md) and the `/tests` page's
//! data. Every test of the window with its verdict and ratios, filtered by
//! repository, context and verdict, in a stable order, a page at a time.

use super::{ApiError, AppState};
use crate::flaky::{self, Verdict};
use crate::store::test_index::TestIndexRow;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The query of `/api/v1/tests` and `/tests`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TestIndexQuery {
    pub repository: Option<String>,
    pub context: Option<String>,
    /// `flaky`, `broken`, `healthy`, `new` or `all` (default).
    pub verdict: Option<String>,
    /// `worst` (default), `name`, `runs`, `failure_ratio`, `flake_ratio`,
    /// `flip_ratio` or `last_seen`.
    pub sort: Option<String>,
    /// Tests per page: 100 by default, at most 1000.
    pub limit: Option<usize>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
    /// The statistics' window (default `tests.window`).
    pub window: Option<String>,
}

pub const SORTS: [&str; 7] = [
    "worst",
    "name",
    "runs",
    "failure_ratio",
    "flake_ratio",
    "flip_ratio",
    "last_seen",
];
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
const STRIP_RUNS: usize = 30;

#[derive(Debug, Clone, Serialize)]
pub struct LastFailure {
    pub run_id: i64,
    pub at: DateTime<Utc>,
    /// The run's page.
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestIndexEntry {
    pub repository: String,
    pub context: String,
    pub test: String,
    pub verdict: &'static str,
    pub runs: u64,
    pub failures: u64,
    pub flaky_failures: u64,
    pub commits: u64,
    pub flaky_commits: u64,
    pub failure_ratio: f64,
    pub flake_ratio: f64,
    pub flip_ratio: f64,
    pub last_seen: Option<DateTime<Utc>>,
    pub first_seen_flaky: Option<DateTime<Utc>>,
    pub last_failure: Option<LastFailure>,
    /// Outcomes of its latest runs, oldest first: `p` passed, `f` failed,
    /// `e` errored, `s` skipped.
    pub history: String,
    /// The test's page.
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestIndexView {
    pub window_start: DateTime<Utc>,
    pub verdict: String,
    pub sort: String,
    /// Tests matching the filters (all pages).
    pub total: usize,
    pub tests: Vec<TestIndexEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Worst first within a verdict (`flaky::rank`); verdicts flaky, broken,
/// new, healthy; then by repository, context and name: a total order.
fn verdict_order(v: Verdict) -> u8 {
    match v {
        Verdict::Flaky => 0,
        Verdict::Broken => 1,
        Verdict::New => 2,
        Verdict::Healthy => 3,
    }
}

fn sort_rows(rows: &mut [TestIndexRow], sort: &str, min_runs: u64) {
    rows.sort_by(|a, b| {
        let (x, y) = (&a.stats, &b.stats);
        let primary = match sort {
            "name" => std::cmp::Ordering::Equal,
            "runs" => y.executions.cmp(&x.executions),
            "failure_ratio" => y.failure_ratio.total_cmp(&x.failure_ratio),
            "flake_ratio" => y.flake_ratio.total_cmp(&x.flake_ratio),
            "flip_ratio" => y.flip_rate.total_cmp(&x.flip_rate),
            "last_seen" => b.last_seen.cmp(&a.last_seen),
            _ => verdict_order(x.verdict)
                .cmp(&verdict_order(y.verdict))
                .then(flaky::rank(x, y, min_runs)),
        };
        primary.then((&a.repository, &a.context, &a.name).cmp(&(
            &b.repository,
            &b.context,
            &b.name,
        )))
    });
}

fn history_code(o: crate::model::TestOutcome) -> char {
    use crate::model::TestOutcome::*;
    match o {
        Passed => 'p',
        Failed => 'f',
        Errored => 'e',
        Skipped => 's',
    }
}

pub async fn test_index(state: &AppState, q: &TestIndexQuery) -> Result<TestIndexView, ApiError> {
    let verdict = nonempty(&q.verdict).unwrap_or_else(|| "all".into());
    let wanted: Option<Verdict> = match verdict.as_str() {
        "all" => None,
        v => Some(
            Verdict::ALL
                .into_iter()
                .find(|x| x.as_str() == v)
                .ok_or_else(|| {
                    bad(format!(
                        "verdict {v:?}: one of flaky, broken, healthy, new, all"
                    ))
                })?,
        ),
    };
    let sort = nonempty(&q.sort).unwrap_or_else(|| "worst".into());
    if !SORTS.contains(&sort.as_str()) {
        return Err(bad(format!("sort {sort:?}: one of {}", SORTS.join(", "))));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let offset: usize = match nonempty(&q.cursor) {
        None => 0,
        Some(c) => c.parse().map_err(|_| {
            bad(format!(
                "cursor {c:?}: pass a next_cursor of a previous page"
            ))
        })?,
    };
    let window = super::views::UiQuery {
        window: q.window.clone(),
        ..Default::default()
    }
    .normalized()
    .window_or(state.config.tests.window)?;
    let since = state.clock.now() - window;
    let min_runs = state.config.tests.min_runs;
    let (repository, context) = (nonempty(&q.repository), nonempty(&q.context));
    let (page, total) = state
        .store
        .read(move |s| {
            let mut rows =
                s.test_index(since, min_runs, repository.as_deref(), context.as_deref())?;
            rows.retain(|r| wanted.is_none_or(|v| r.stats.verdict == v));
            sort_rows(&mut rows, &sort, min_runs);
            let total = rows.len();
            let page: Vec<(TestIndexRow, String)> = rows
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|r| {
                    let strip = s.test_strip(r.id, STRIP_RUNS)?;
                    Ok((r, strip.into_iter().map(|(o, _)| history_code(o)).collect()))
                })
                .collect::<Result<_, crate::store::StoreError>>()?;
            Ok((page, total))
        })
        .await?;
    let end = offset + page.len();
    let tests = page
        .into_iter()
        .map(|(r, history)| TestIndexEntry {
            url: super::views::test_path(&r.repository, &r.context, &r.name),
            repository: r.repository,
            context: r.context,
            test: r.name,
            verdict: r.stats.verdict.as_str(),
            runs: r.stats.executions,
            failures: r.stats.failures,
            flaky_failures: r.stats.flaky_failures,
            commits: r.stats.commits,
            flaky_commits: r.stats.flaky_commits,
            failure_ratio: r.stats.failure_ratio,
            flake_ratio: r.stats.flake_ratio,
            flip_ratio: r.stats.flip_rate,
            last_seen: r.last_seen,
            first_seen_flaky: r.first_seen_flaky,
            last_failure: r.last_failure.map(|(run_id, at)| LastFailure {
                run_id,
                at,
                url: format!("/runs/{run_id}"),
            }),
            history,
        })
        .collect();
    Ok(TestIndexView {
        window_start: since,
        verdict,
        sort: q.sort.clone().unwrap_or_else(|| "worst".into()),
        total,
        tests,
        next_cursor: (end < total).then(|| end.to_string()),
    })
}

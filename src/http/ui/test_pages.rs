//! The tests pages: the index of tests with their verdicts and ratios
//! (`/tests`, whose JSON is `/api/v1/tests` in `http::test_index`) and one
//! test's page with its history, retry reasons and failures
//! (`/tests/{repository}/{context}/{test}` and its JSON under
//! `/api/v1/tests`).

use super::{Filters, Nav, error_page, html_response, layout};
use super::{fmt_time, grafana_link, outcome_symbol, pct};
use crate::http::test_index::{self, TestIndexQuery, TestIndexView};
use crate::http::views::{self, UiQuery};
use crate::http::views::{TestPageView, enc};
use crate::http::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

fn test_html(state: &AppState, q: &UiQuery, v: &TestPageView) -> Markup {
    html! {
        h1 { "Test " code { (v.test) } }
        p.lede { "Repository " strong { (v.repository) } ", context " strong { (v.context) } ", since " (fmt_time(v.since)) " (" (v.window) "). "
            a href=(format!("/tests?repository={}&context={}", enc(&v.repository), enc(&v.context))) { "All tests of this context" } " "
            @if let Some(l) = grafana_link(state, "ci-slo-flaky-tests", "flaky tests", q) { (l) } }
        @match &v.stats {
            None => p.empty { "No executions in this window." },
            Some(s) => {
                dl.facts.stats {
                    dt { "Verdict" } dd { span class=(format!("verdict v-{}", s.verdict)) { (s.verdict) } }
                    dt { "Failure rate" } dd { (pct(s.failure_ratio)) " (" (s.failures) " of " (s.executions) " executions)" }
                    dt { "Flake rate" } dd { (pct(s.flake_ratio)) " (" (s.flaky_failures) " of " (s.executions) " executions failed on a commit where the test also passed, or passed only on retry; " (s.flaky_commits) " of " (s.commits) " commits flaky)" }
                    dt { "Flip rate" } dd { (pct(s.flip_rate)) }
                }
            }
        }
        h2 { "History" }
        ol.strip aria-label="executions, oldest first, by UTC day" {
            @for (i, e) in v.executions.iter().enumerate() {
                @if i == 0 || v.executions[i - 1].at.date_naive() != e.at.date_naive() {
                    li.daymark { time datetime=(e.at.date_naive()) { (e.at.format("%m-%d")) } }
                }
                li class=(format!("o-{}", e.outcome)) {
                    a href=(format!("/runs/{}", e.run_id)) title=(format!("{} {} on {} (attempt {}){}", e.at.format("%Y-%m-%d %H:%M"), e.outcome, &e.commit[..e.commit.len().min(10)], e.attempt, if e.retries > 0 { format!(", {} retries", e.retries) } else { String::new() })) {
                        (outcome_symbol(e.outcome)) span.sr { (e.outcome) }
                    }
                }
            }
        }
        h2 { "Retry reasons" }
        @if v.retry_reasons.is_empty() { p.muted { "No retries in this window." } } @else {
            table { thead { tr { th scope="col" { "Reason" } th scope="col" { "Times" } } }
                tbody { @for (r, n) in &v.retry_reasons { tr { th scope="row" { (r) } td.num { (n) } } } } }
        }
        h2 { "Failures" }
        @let failed: Vec<_> = v.executions.iter().filter(|e| e.message.is_some()).rev().take(20).collect();
        @if failed.is_empty() { p.muted { "No failure messages." } } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Run" } th scope="col" { "Message" } } }
                tbody { @for e in failed { tr {
                    td { (fmt_time(e.at)) } td { a href=(format!("/runs/{}", e.run_id)) { (e.run_id) } }
                    td { code { (e.message.as_deref().unwrap_or("")) } }
                } } }
            } }
        }
    }
}

fn history_outcome(c: char) -> &'static str {
    match c {
        'p' => "passed",
        'f' => "failed",
        'e' => "errored",
        _ => "skipped",
    }
}

fn tests_index_html(q: &TestIndexQuery, v: &TestIndexView) -> Markup {
    let next = v.next_cursor.as_ref().map(|c| {
        let mut parts: Vec<String> = [
            ("repository", &q.repository),
            ("context", &q.context),
            ("window", &q.window),
            ("verdict", &q.verdict),
            ("sort", &q.sort),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", enc(v)))
        })
        .collect();
        if let Some(l) = q.limit {
            parts.push(format!("limit={l}"));
        }
        parts.push(format!("cursor={}", enc(c)));
        format!("/tests?{}", parts.join("&"))
    });
    html! {
        h1 { "Tests" }
        p.lede { (v.total) " tests (" (v.verdict) ") with runs since " (fmt_time(v.window_start)) ", "
            @if v.sort == "worst" { "worst first: flaky by flake ratio, then broken, new and healthy." } @else { "by " (v.sort) "." }
            " Ratios as " a href="/api/v1/tests" { "/api/v1/tests" } " gives them (docs/metrics.md)." }
        @if v.tests.is_empty() { p.empty { "No test matches." } } @else {
            div.scroll { table.tests {
                thead { tr {
                    th scope="col" { "Test" } th scope="col" { "Repository" } th scope="col" { "Context" }
                    th scope="col" { "Verdict" } th scope="col" { "Failure ratio" } th scope="col" { "Flake ratio" }
                    th scope="col" { "Flip rate" } th scope="col" { "Runs" } th scope="col" { "Last failure" }
                    th scope="col" { "First seen flaky" } th scope="col" { "History" }
                } }
                tbody { @for t in &v.tests { tr {
                    th scope="row" { a href=(t.url) { (t.test) } }
                    td { (t.repository) } td { (t.context) }
                    td { span class=(format!("verdict v-{}", t.verdict)) { (t.verdict) } }
                    td.num { (pct(t.failure_ratio)) } td.num { (pct(t.flake_ratio)) } td.num { (pct(t.flip_ratio)) }
                    td.num { (t.runs) }
                    td { @match &t.last_failure { Some(f) => a href=(f.url) { (fmt_time(f.at)) }, None => span.muted { "none" } } }
                    td { @match t.first_seen_flaky { Some(at) => (fmt_time(at)), None => span.muted { "never" } } }
                    td { ol.strip aria-label="latest runs, oldest first" {
                        @for c in t.history.chars() { li class=(format!("o-{}", history_outcome(c))) { span.sr { (history_outcome(c)) } } }
                    } }
                } } }
            } }
        }
        @if let Some(href) = next { p { a rel="next" href=(href) { "Next page" } } }
    }
}

pub(crate) async fn tests_index(
    State(state): State<AppState>,
    Query(tq): Query<TestIndexQuery>,
) -> Response {
    let q = UiQuery {
        repository: tq.repository.clone(),
        context: tq.context.clone(),
        window: tq.window.clone(),
        ..Default::default()
    }
    .normalized();
    let data = async {
        Ok::<_, ApiError>((
            test_index::test_index(&state, &tq).await?,
            views::repositories(&state).await?,
        ))
    };
    let verdict = tq.verdict.clone().unwrap_or_default();
    let sort = tq.sort.clone().unwrap_or_default();
    let extra = html! {
        label { "Verdict "
            select name="verdict" {
                @for v in ["all", "flaky", "broken", "new", "healthy"] {
                    option value=(v) selected[verdict == v] { (v) }
                }
            }
        }
        label { "Sort "
            select name="sort" {
                @for s in test_index::SORTS { option value=(s) selected[sort == s] { (s) } }
            }
        }
    };
    match data.await {
        Ok((v, repos)) => html_response(
            StatusCode::OK,
            layout(
                "Tests",
                Nav::Tests,
                &q,
                &repos,
                Filters {
                    repository: true,
                    context: true,
                    trigger: false,
                    window: true,
                },
                Some(extra),
                tests_index_html(&tq, &v),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

type TestKey = (String, String, String);

pub(crate) async fn test(
    State(state): State<AppState>,
    Path((repository, context, name)): Path<TestKey>,
    Query(q): Query<UiQuery>,
) -> Response {
    let q = q.normalized();
    let data = async {
        Ok::<_, ApiError>((
            views::test_page(&state, repository, context, name, &q).await?,
            views::repositories(&state).await?,
        ))
    };
    match data.await {
        Ok((v, repos)) => html_response(
            StatusCode::OK,
            layout(
                &format!("Test {}", v.test),
                Nav::None,
                &q,
                &repos,
                Filters {
                    window: true,
                    ..Filters::NONE
                },
                None,
                test_html(&state, &q, &v),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

pub(crate) async fn api_test(
    State(state): State<AppState>,
    Path((repository, context, name)): Path<TestKey>,
    Query(q): Query<UiQuery>,
) -> Result<Json<TestPageView>, ApiError> {
    Ok(Json(
        views::test_page(&state, repository, context, name, &q.normalized()).await?,
    ))
}

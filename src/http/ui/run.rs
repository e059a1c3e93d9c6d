//! A run's page (`/runs/{id}`): its facts, failure evidence with context
//! lines, tests a page at a time (failures first), dependency changes and
//! reports; and its links as JSON (`/api/v1/runs/{id}/related`).

use super::{Filters, Nav, error_page, html_response, layout};
use super::{
    class_path, ext_link, fingerprint_path, fmt_seconds, fmt_time, outcome_symbol, state_symbol,
};
use crate::http::views::{self, UiQuery};
use crate::http::views::{RunLinksView, test_path};
use crate::http::{ApiError, AppState};
use crate::store::RunView;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

fn run_html(v: &RunView, links: &RunLinksView, page: usize) -> Markup {
    html! {
        h1 { "Run " (v.id) " " span class=(format!("status s-{}", v.state)) { (state_symbol(&v.state)) " " (v.state) } }
        dl.facts {
            dt { "Repository" } dd { (v.repository) " " span.muted { "(" (v.forge) ")" } }
            dt { "Context" } dd { (v.context) }
            dt { "Commit" } dd {
                @match &links.commit_url {
                    Some(u) => { a.commit href=(u) rel="noopener noreferrer nofollow" { code { (v.commit) } } }
                    None => { code { (v.commit) } }
                }
                " · attempt " (v.attempt)
            }
            dt { "Trigger" } dd { (v.trigger) }
            @if let Some(c) = &v.change {
                dt { "Change" } dd {
                    @match &links.change_url {
                        Some(u) => { a.change href=(u) rel="noopener noreferrer nofollow" { "#" (c.number) } }
                        None => { "#" (c.number) }
                    }
                    @if let Some(o) = &c.outcome { " · " (o) }
                }
            }
            dt { "Other attempts" } dd {
                @if links.related.attempts.is_empty() { span.muted { "none of this context and commit" } }
                @for (i, a) in links.related.attempts.iter().enumerate() {
                    @if i > 0 { ", " }
                    a.attempt href=(format!("/runs/{}", a.run_id)) { "attempt " (a.attempt) } " "
                    span class=(format!("status s-{}", a.state)) { (state_symbol(&a.state)) " " (a.state) }
                }
            }
            dt { "Last green" } dd {
                @match links.related.last_green_run_id {
                    Some(g) => { a.green href=(format!("/runs/{g}")) { "run " (g) } " (the last success of this context before this run)" }
                    None => { span.muted { "no earlier success of this context" } }
                }
            }
            dt { "Queued" } dd { @match v.queued_at { Some(t) => (fmt_time(t)), None => "–" } }
            dt { "Started" } dd { @match v.started_at { Some(t) => (fmt_time(t)), None => "–" } }
            dt { "Finished" } dd { @match v.finished_at { Some(t) => (fmt_time(t)), None => "–" } }
            dt { "Queue time" } dd { @match v.queue_seconds { Some(s) => (fmt_seconds(s)), None => "–" } }
            dt { "Run time" } dd { @match v.run_seconds { Some(s) => (fmt_seconds(s)), None => "–" } }
            dt { "Links" } dd { (ext_link(v.url.as_deref(), "forge page")) " · " (ext_link(v.log_url.as_deref(), "log")) " · " a href=(format!("/api/v1/runs/{}", v.id)) { "JSON" } }
        }
        h2 { "Evidence" }
        @if v.failures.is_empty() { p.muted { "No failure evidence." } }
        @for f in &v.failures {
            section.failure {
                h3 { strong.class { (f.class) } " " span.muted { "(" (f.category) ")" }
                    @if let Some(t) = &f.test_name { " in " a href=(test_path(&v.repository, &v.context, t)) { (t) } } }
                // The classifier records how many context lines come before the evidence;
                // failures stored before it did: at most `line - 1` of them can be.
                @let before = f
                    .context_before
                    .map(|n| n as usize)
                    .unwrap_or_else(|| (f.line.unwrap_or(1).saturating_sub(1) as usize).min(3))
                    .min(f.context.len());
                pre.context {
                    @for line in &f.context[..before] { span.ln { span.lno { "" } (line) "\n" } }
                    span.ln.ev { span.lno { @if let Some(n) = f.line { (n) } } (f.evidence) "\n" }
                    @for line in &f.context[before..] { span.ln { span.lno { "" } (line) "\n" } }
                }
                // further candidates for the evidence, best first
                @for c in &f.candidates {
                    p.also { "also: line " (c.line) " " code { (c.text) } " " span.muted { "(" (c.class) ")" } }
                }
                p.muted {
                    "class " a href=(class_path(&f.class)) { (f.class) }
                    @if let Some(fp) = &f.fingerprint { " · fingerprint " a.fingerprint href=(fingerprint_path(fp)) { code { (fp) } } " (every run with it)" }
                }
            }
        }
        h2 { "Tests" }
        @if v.tests_total > v.tests.len() {
            p.muted {
                "Tests " (v.tests_offset + 1) "–" (v.tests_offset + v.tests.len()) " of " (v.tests_total) ", failures first. "
                @if v.tests_offset > 0 {
                    a href=(format!("/runs/{}?tests_offset={}", v.id, v.tests_offset.saturating_sub(page))) { "← previous " (page) }
                    " "
                }
                @if v.tests_offset + v.tests.len() < v.tests_total {
                    a href=(format!("/runs/{}?tests_offset={}", v.id, v.tests_offset + v.tests.len())) { "next " (page) " →" }
                }
            }
        }
        @if v.tests.is_empty() { p.muted { "No test results." } } @else {
            div.scroll { table.tests {
                thead { tr { th scope="col" { "Test" } th scope="col" { "Outcome" } th scope="col" { "Duration" } th scope="col" { "Retries" } th scope="col" { "Message" } } }
                tbody { @for t in &v.tests { tr class=(format!("o-{}", t.outcome)) {
                    th scope="row" { a href=(test_path(&v.repository, &v.context, &t.name)) { (t.name) } }
                    td { (outcome_symbol(t.outcome)) " " (t.outcome) }
                    td.num { @match t.duration_seconds { Some(d) => (fmt_seconds(d)), None => "–" } }
                    td.num { (t.retries) @if !t.retry_reasons.is_empty() { div.muted { (t.retry_reasons.join("; ")) } } }
                    td { @if let Some(m) = &t.message { code { (m) } } }
                } } }
            } }
        }
        h2 { "Dependencies" }
        @if v.dependency_changes.is_empty() {
            p.muted { @if v.dependencies.is_empty() { "No dependency versions recorded." } @else { "No change since the previous run of this context." } }
        } @else {
            table.deps {
                caption { "Changed since the previous run of this context" }
                thead { tr { th scope="col" { "Package" } th scope="col" { "Before" } th scope="col" { "After" } } }
                tbody { @for d in &v.dependency_changes { tr {
                    th scope="row" { code { (d.package) } }
                    td { (d.before.as_deref().unwrap_or("(new)")) } td { (d.after.as_deref().unwrap_or("(removed)")) }
                } } }
            }
        }
        @if v.state != "success" && links.related.since_green.last_green_run_id.is_some() {
            @let g = &links.related.since_green;
            @if let Some(gid) = g.last_green_run_id {
                @if g.changes.is_empty() {
                    p.muted { "No dependency change since the last green run with recorded versions, " a href=(format!("/runs/{gid}")) { "run " (gid) } "." }
                } @else {
                    table.deps.since-green {
                        caption { "Changed since the last green run with recorded versions, " a href=(format!("/runs/{gid}")) { "run " (gid) } }
                        thead { tr { th scope="col" { "Package" } th scope="col" { "Green" } th scope="col" { "This run" } } }
                        tbody { @for d in &g.changes { tr {
                            th scope="row" { code { (d.package) } }
                            td { (d.before.as_deref().unwrap_or("(new)")) } td { (d.after.as_deref().unwrap_or("(removed)")) }
                        } } }
                    }
                }
            }
        }
        @if !v.dependencies.is_empty() {
            details { summary { "All " (v.dependencies.len()) " recorded versions" }
                ul.inline { @for (p, ver) in &v.dependencies { li { code { (p) } " " (ver) } } } }
        }
        @if !v.reports.is_empty() {
            h2 { "Reports" }
            ul { @for r in &v.reports { li { (r.format) " " (r.name) " (" (r.bytes) " bytes)" } } }
        }
    }
}

/// Which tests a run page lists: `?tests_offset=N`, failures first.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct RunPageQuery {
    #[serde(default)]
    pub tests_offset: usize,
}

/// Longest test message shown on a run page (the JSON API has it whole).
const PAGE_MESSAGE_CHARS: usize = 2000;

async fn load_run(state: &AppState, id: &str, offset: usize) -> Result<RunView, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("run id {id:?} is not a number"),
        )
    })?;
    let slice = crate::store::TestSlice {
        offset,
        limit: state.config.web.run_page_tests,
        failures_first: true,
        message_chars: PAGE_MESSAGE_CHARS,
    };
    state
        .store
        .read(move |s| s.run_slice(id, slice))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run with id {id}")))
}

pub(crate) async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<RunPageQuery>,
) -> Response {
    let q = UiQuery::default();
    let data = async {
        let v = load_run(&state, &id, page.tests_offset).await?;
        let links = views::run_links(&state, &v).await?;
        Ok::<_, ApiError>((v, links))
    };
    match data.await {
        Ok((v, links)) => html_response(
            StatusCode::OK,
            layout(
                &format!("Run {}", v.id),
                Nav::None,
                &q,
                &[],
                Filters::NONE,
                None,
                run_html(&v, &links, state.config.web.run_page_tests),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

/// The run page's links as JSON (the run itself is `/api/v1/runs/{id}`).
pub(crate) async fn api_run_related(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunLinksView>, ApiError> {
    let v = load_run(&state, &id, 0).await?;
    Ok(Json(views::run_links(&state, &v).await?))
}

//! The failures pages: classes and fingerprints of a window with their
//! trends, evidence and issue drafts (`/failures`), one class's or one
//! fingerprint's with its runs (`/failures/classes/{class}`,
//! `/failures/fingerprints/{fingerprint}`), and their JSON under
//! `/api/v1/failures`.

use super::{Filters, Nav, error_page, html_response, layout};
use super::{class_path, feed_hint, fingerprint_path, fmt_time, grafana_link, plural};
use crate::http::views::{self, UiQuery};
use crate::http::views::{FailuresView, test_path};
use crate::http::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

fn sparkline(trend: &[u64], days: &[chrono::NaiveDate]) -> Markup {
    let max = trend.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = trend.len().max(1);
    let w = 100.0 / n as f64;
    let label = trend
        .iter()
        .zip(days)
        .map(|(c, d)| format!("{}: {c}", d.format("%m-%d")))
        .collect::<Vec<_>>()
        .join(", ");
    html! {
        svg.spark viewBox="0 0 100 20" preserveAspectRatio="none" role="img" aria-label=(format!("daily occurrences: {label}")) {
            rect.base x="0" y="19.4" width="100" height="0.6" {}
            @for (i, c) in trend.iter().enumerate() {
                @let h = if *c == 0 { 0.0 } else { (*c as f64 / max * 18.0).max(2.0) };
                rect x=(format!("{:.2}", i as f64 * w + w * 0.1)) y=(format!("{:.2}", 20.0 - h)) width=(format!("{:.2}", w * 0.8)) height=(format!("{h:.2}")) {}
            }
        }
    }
}

/// The first line of an evidence, at most `n` characters.
fn first_line(text: &str, n: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(n).collect();
    if out.len() < line.len() || text.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

fn failures_html(state: &AppState, q: &UiQuery, v: &FailuresView) -> Markup {
    let scoped = v.class.is_some() || v.fingerprint.is_some();
    html! {
        @match (&v.fingerprint, &v.class) {
            (Some(fp), _) => h1 { "Fingerprint " code { (fp) } },
            (None, Some(c)) => h1 { "Failure class " code { (c) } },
            _ => h1 { "Failures" },
        }
        p.lede {
            "Failures of runs from " (fmt_time(v.since)) " to " (fmt_time(v.until)) " (" (v.window) "), "
            @if v.sort == "last_seen" { "most recently seen first. " } @else { "most frequent first. " }
            span.badge.new { "NEW" } " marks an error first seen within " (v.new_window) ". "
            @if scoped { a href=(format!("/failures{}", q.filter_query())) { "← all failures" } " " }
            @if let Some(l) = grafana_link(state, "ci-slo-failures", "failure classes", q) { (l) }
        }
        @if v.fingerprint.is_none() {
            h2 { "Classes" }
            @if v.classes.is_empty() { p.empty { "No failures in this window." } } @else {
                div.scroll { table.classes {
                    thead { tr {
                        th scope="col" { "Class" } th scope="col" { "Occurrences" } th scope="col" { "Trend" }
                        th scope="col" { "Last seen" } th scope="col" { "Fingerprints" } th scope="col" { "Repositories" }
                    } }
                    tbody { @for c in &v.classes { tr {
                        th scope="row" { a.class href=(format!("{}{}", class_path(&c.class), q.filter_query())) { (c.class) } div.muted { (c.category) } }
                        td.num { (c.occurrences) }
                        td { (sparkline(&c.trend, &v.days)) }
                        td { (fmt_time(c.last_seen)) }
                        td.num { (c.fingerprints) }
                        td { (c.repositories.join(", ")) }
                    } } }
                } }
            }
        }
        h2 { "Fingerprints" }
        @if v.fingerprints.is_empty() { p.empty { @if v.new_only { "No NEW fingerprints in this window." } @else { "No failures in this window." } } }
        ol.fingerprints {
            @for f in &v.fingerprints {
                li.fp data-fingerprint=[f.fingerprint.as_deref()] {
                    details open[v.fingerprint.is_some()] {
                        summary.fphead {
                            @if f.is_new { span.badge.new title="first seen within the NEW window" { "NEW" } " " }
                            a.class href=(format!("{}{}", class_path(&f.class), q.filter_query())) { (f.class) }
                            " · " span.num { (plural(f.occurrences, "occurrence", "occurrences")) }
                            " " (sparkline(&f.trend, &v.days))
                            " " span.muted { "last " (fmt_time(f.last_seen)) }
                            " " span.repos { (f.repositories.join(", ")) }
                            code.ev1 { (first_line(&f.evidence, 160)) }
                        }
                        div.fpbody {
                            pre.evidence { code { (f.evidence) } }
                            dl.facts {
                                dt { "Category" } dd { (f.category) }
                                dt { "First seen" } dd { @match f.first_seen { Some(t) => (fmt_time(t)), None => "–" } }
                                dt { "Repositories" } dd { (f.repositories.join(", ")) }
                                @if !f.tests.is_empty() {
                                    dt { "Tests" }
                                    dd { ul.inline { @for t in &f.tests {
                                        li { a href=(test_path(&t.repository, &t.context, &t.name)) { (t.name) } " " span.muted { "(" (t.repository) ", " (t.context) ")" } }
                                    } } }
                                }
                                dt { "Example runs" }
                                dd { ul.inline { @for e in &f.examples {
                                    li { a href=(format!("/runs/{}", e.run_id)) { "run " (e.run_id) } " " span.muted { (e.repository) " · " (e.context) " · " (fmt_time(e.at)) } }
                                } } }
                                @if let Some(fp) = &f.fingerprint {
                                    dt { "Fingerprint" } dd { a href=(format!("{}{}", fingerprint_path(fp), q.filter_query())) { code { (fp) } } " (every run)" }
                                }
                            }
                            @match &f.create_issue_url {
                                Some(u) => { a.create-issue href=(u) rel="noopener noreferrer" target="_blank" { "Create issue" } }
                                None => {
                                    details.issue {
                                        summary { "Issue text to copy" }
                                        p { strong { (f.issue_title) } }
                                        pre { (f.issue_body) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if scoped {
            h2 { "Runs" }
            @if v.runs.is_empty() { p.empty { "No runs in this window." } } @else {
                div.scroll { table.runs {
                    caption.sr { "Runs with this failure, newest first" }
                    thead { tr { th scope="col" { "When" } th scope="col" { "Run" } th scope="col" { "Repository" } th scope="col" { "Context" } th scope="col" { "Test" } } }
                    tbody { @for r in &v.runs { tr {
                        td { (fmt_time(r.at)) }
                        td { a href=(format!("/runs/{}", r.run_id)) { (r.run_id) } }
                        td { (r.repository) }
                        td { (r.context) }
                        td { @if let Some(t) = &r.test { a href=(test_path(&r.repository, &r.context, t)) { (t) } } }
                    } } }
                } }
            }
        }
    }
}

async fn failures_page(state: AppState, q: UiQuery, fingerprint: Option<String>) -> Response {
    let q = q.normalized();
    let data = async {
        Ok::<_, ApiError>((
            views::failures(&state, &q, fingerprint).await?,
            views::repositories(&state).await?,
        ))
    };
    match data.await {
        Ok((v, repos)) => {
            let extra = html! {
                @if v.fingerprint.is_none() {
                    label { "Class " input name="class" value=[q.class.as_deref()] placeholder="all" size="12"; }
                }
                label { "Sort "
                    select name="sort" {
                        option value="count" selected[v.sort == "count"] { "most frequent" }
                        option value="last_seen" selected[v.sort == "last_seen"] { "last seen" }
                    }
                }
                label.check { input type="checkbox" name="new" value="1" checked[v.new_only]; " only NEW" }
            };
            let title = match (&v.fingerprint, &v.class) {
                (Some(fp), _) => format!("Fingerprint {fp}"),
                (None, Some(c)) => format!("Failure class {c}"),
                _ => "Failures".into(),
            };
            let body = if repos.is_empty() {
                html! { (failures_html(&state, &q, &v)) (feed_hint()) }
            } else {
                failures_html(&state, &q, &v)
            };
            html_response(
                StatusCode::OK,
                layout(
                    &title,
                    Nav::Failures,
                    &q,
                    &repos,
                    Filters::ALL,
                    Some(extra),
                    body,
                ),
            )
        }
        Err(e) => error_page(&q, e),
    }
}

pub(crate) async fn failures(State(state): State<AppState>, Query(q): Query<UiQuery>) -> Response {
    failures_page(state, q, None).await
}

pub(crate) async fn failure_class(
    State(state): State<AppState>,
    Path(class): Path<String>,
    Query(mut q): Query<UiQuery>,
) -> Response {
    q.class = Some(class);
    failures_page(state, q, None).await
}

pub(crate) async fn failure_fingerprint(
    State(state): State<AppState>,
    Path(fp): Path<String>,
    Query(q): Query<UiQuery>,
) -> Response {
    failures_page(state, q, Some(fp)).await
}

pub(crate) async fn api_failures(
    State(state): State<AppState>,
    Query(q): Query<UiQuery>,
) -> Result<Json<FailuresView>, ApiError> {
    Ok(Json(views::failures(&state, &q.normalized(), None).await?))
}

pub(crate) async fn api_failure_class(
    State(state): State<AppState>,
    Path(class): Path<String>,
    Query(mut q): Query<UiQuery>,
) -> Result<Json<FailuresView>, ApiError> {
    q.class = Some(class);
    Ok(Json(views::failures(&state, &q.normalized(), None).await?))
}

pub(crate) async fn api_failure_fingerprint(
    State(state): State<AppState>,
    Path(fp): Path<String>,
    Query(q): Query<UiQuery>,
) -> Result<Json<FailuresView>, ApiError> {
    Ok(Json(
        views::failures(&state, &q.normalized(), Some(fp)).await?,
    ))
}

//! The nightly grid pages: every repository's scheduled runs by UTC day
//! (`/nightly`) and one repository's jobs by day (`/nightly/{repository}`),
//! each cell with its failed jobs, evidence and dependency changes in a
//! tooltip; and their JSON under `/api/v1/nightly`.

use super::{Filters, Nav, error_page, html_response, layout};
use super::{feed_hint, fmt_seconds, grafana_link, plural, state_symbol};
use crate::http::views::{self, UiQuery};
use crate::http::views::{NightlyCellView, NightlyJob, NightlyView, enc};
use crate::http::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

fn job_tip(j: &NightlyJob, median: Option<f64>) -> Markup {
    html! {
        li class=(format!("job s-{}", j.state)) {
            a href=(format!("/runs/{}", j.run_id)) { (state_symbol(&j.state)) " " (j.context) } " " span.muted { (j.state) }
            @if let Some(d) = j.duration_seconds {
                " · " (fmt_seconds(d))
                @if let Some(r) = j.runtime_ratio {
                    " (" (format!("{r:.2}")) "× "
                    @match median { Some(m) => { "the median " (fmt_seconds(m)) }, None => "its median" }
                    ")"
                }
            }
            @if let Some(f) = &j.failure {
                div { "class " strong.class { (f.class) } " (" (f.category) ")" }
                code.evidence { (f.evidence) }
            }
            @if let Some(g) = &j.since_green {
                @if g.last_green_run_id.is_none() {
                    div.muted { "no earlier green run to compare dependencies with" }
                } @else if g.changes.is_empty() {
                    div.muted { "no dependency changes since the last green run" }
                } @else {
                    div { "dependency changes since the last green run:" }
                    ul.deps {
                        @for d in &g.changes {
                            li { code { (d.package) } " " (d.before.as_deref().unwrap_or("(new)")) " → " (d.after.as_deref().unwrap_or("(removed)")) }
                        }
                    }
                }
            }
        }
    }
}

/// `2/12 failed`, `1 run, none failed`, `3 runs, none failed`.
fn cell_count(c: &NightlyCellView) -> String {
    if c.failed > 0 {
        format!("{}/{} failed", c.failed, c.runs)
    } else {
        format!("{}, none failed", plural(c.runs as u64, "run", "runs"))
    }
}

fn nightly_tip(c: &NightlyCellView, median: Option<f64>, drill: Option<&str>) -> Markup {
    let (bad, good): (Vec<&NightlyJob>, Vec<&NightlyJob>) =
        c.jobs.iter().partition(|j| j.state != "success");
    html! {
        strong { (cell_count(c)) } " · " (c.day)
        @if !bad.is_empty() { ul.jobs { @for j in &bad { (job_tip(j, median)) } } }
        @if !good.is_empty() {
            div.passed { "passed: "
                @for (i, j) in good.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href=(format!("/runs/{}", j.run_id)) { (j.context) }
                    @if let Some(r) = j.runtime_ratio { " " span.muted { (format!("{r:.1}×")) } }
                }
            }
        }
        @if let Some(href) = drill { div { a href=(href) { "every job of this repository by day →" } } }
    }
}

fn runtime_class(ratio: Option<f64>) -> (&'static str, &'static str) {
    match ratio {
        None => ("rt-none", "no run time"),
        Some(r) if r < 0.8 => ("rt-fast", "faster than usual"),
        Some(r) if r <= 1.2 => ("rt-normal", "usual run time"),
        Some(r) if r <= 1.5 => ("rt-slow", "slower than usual"),
        Some(_) => ("rt-veryslow", "much slower than usual"),
    }
}

/// The jobs × days grid of one repository.
fn nightly_jobs_path(repository: &str) -> String {
    format!("/nightly/{}", enc(repository))
}

fn nightly_html(state: &AppState, q: &UiQuery, v: &NightlyView, empty_db: bool) -> Markup {
    let runtime = v.color == "runtime";
    let page = match &v.repository {
        Some(r) => nightly_jobs_path(r),
        None => "/nightly".to_string(),
    };
    let base = |color: &str| {
        let mut qq = q.clone();
        if v.repository.is_some() {
            qq.repository = None;
        }
        let mut s = qq.filter_query();
        s.push_str(if s.is_empty() { "?" } else { "&" });
        s.push_str(&format!("color={color}"));
        if let Some(d) = q.days {
            s.push_str(&format!("&days={d}"));
        }
        format!("{page}{s}")
    };
    // Carried into the drill-down: days and colour (the repository is the path).
    let drill_query = {
        let mut parts = Vec::new();
        if let Some(c) = &q.context {
            parts.push(format!("context={}", enc(c)));
        }
        if let Some(d) = q.days {
            parts.push(format!("days={d}"));
        }
        if runtime {
            parts.push("color=runtime".to_string());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    };
    let half = v.days.len() / 2;
    let n = v.days.len();
    html! {
        @match &v.repository {
            Some(r) => {
                h1 { "Nightly jobs of " (r) }
                p.lede {
                    "Each scheduled job (context) of " strong { (r) } " per UTC day, newest first, last " (n) " days. "
                    a href=(format!("/nightly{}", { let mut qq = q.clone(); qq.repository = None; qq.filter_query() })) { "← all repositories" }
                    " "
                    @if let Some(l) = grafana_link(state, "ci-slo-nightly", "nightly grid", q) { (l) }
                }
            }
            None => {
                h1 { "Nightly and scheduled runs" }
                p.lede {
                    "Every scheduled run of each repository per UTC day, newest day first, last " (n) " days: "
                    "the colour is the worst run of the day, the count how many failed. "
                    "Hover, focus or tap a cell for its failed jobs, their evidence and the dependency changes since the last green run; "
                    "open a repository for its jobs by day. "
                    @if let Some(l) = grafana_link(state, "ci-slo-nightly", "nightly grid", q) { (l) }
                }
            }
        }
        p.toggle {
            "Colour by: "
            @if runtime {
                a href=(base("state")) { "state" } " · " strong aria-current="true" { "run time vs. each job's median" }
            } @else {
                strong aria-current="true" { "state" } " · " a href=(base("runtime")) { "run time vs. each job's median" }
            }
        }
        @if v.rows.is_empty() {
            p.empty { "No scheduled runs in these days." }
            @if empty_db { (feed_hint()) }
        } @else {
            div.scroll.grid-wrap {
                table.grid {
                    caption.sr { "Scheduled runs per " @if v.repository.is_some() { "job" } @else { "repository" } " and day, newest day first" }
                    thead { tr {
                        th scope="col" { @if v.repository.is_some() { "Job" } @else { "Repository" } }
                        @for d in v.days.iter().rev() { th scope="col" { abbr title=(d) { (d.format("%m-%d")) } } }
                    } }
                    tbody {
                        @for (ri, row) in v.rows.iter().enumerate() {
                            tr {
                                @match &row.context {
                                    Some(c) => th scope="row" { (c)
                                        @if let Some(m) = row.median_seconds { div.muted { "median " (fmt_seconds(m)) } } },
                                    None => th scope="row" { a.repo href=(format!("{}{drill_query}", nightly_jobs_path(&row.repository))) {
                                        // Long paths wrap after a slash rather than inside a name.
                                        @for (i, part) in row.repository.split('/').enumerate() { @if i > 0 { "/" wbr; } (part) }
                                    } },
                                }
                                @for (di, cell) in row.cells.iter().rev().enumerate() {
                                    @match cell {
                                        None => td.cell.none { span title="no scheduled run" { "·" } span.sr { "no run" } },
                                        Some(c) => {
                                            @let (rt, rt_text) = runtime_class(c.runtime_ratio);
                                            @let cls = if runtime { format!("cell {rt}") } else { format!("cell s-{}", c.state) };
                                            @let count = cell_count(c);
                                            @let label = if runtime { format!("{}, {}, {count}, {rt_text}", c.day, c.state) } else { format!("{}, {}, {count}", c.day, c.state) };
                                            @let tip = format!("tip-{ri}-{di}");
                                            td class=(cls) data-run=(c.run_id) data-state=(c.state) data-day=(c.day) data-runs=(c.runs) data-failed=(c.failed) {
                                                span.cellink tabindex="0" aria-label=(label) aria-describedby=(tip) {
                                                    @if runtime {
                                                        @match c.runtime_ratio { Some(r) => (format!("{r:.1}×")), None => "–" }
                                                    } @else {
                                                        (state_symbol(&c.state))
                                                    }
                                                    @if c.failed > 0 && c.runs > 1 { span.count { (c.failed) "/" (c.runs) } }
                                                }
                                                div.tip.right[di >= half] role="tooltip" id=(tip) {
                                                    @let drill = v.repository.is_none().then(|| format!("{}{drill_query}", nightly_jobs_path(&row.repository)));
                                                    (nightly_tip(c, row.median_seconds, drill.as_deref()))
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.legend {
                @if runtime {
                    span.cell.rt-fast { "0.7×" } " faster than 0.8× · " span.cell.rt-normal { "1.0×" } " usual · "
                    span.cell.rt-slow { "1.3×" } " up to 1.5× · " span.cell.rt-veryslow { "1.8×" } " slower (the slowest job of the cell)"
                } @else {
                    span.cell.s-success { "✓" } " success · " span.cell.s-failure { "✗" } " failure · "
                    span.cell.s-error { "!" } " error · " span.cell.s-running { "…" } " running or lost · " "· no run · "
                    span.cell.s-failure { "✗" span.count { "1/2" } } " 1 of 2 runs failed"
                }
            }
        }
    }
}

async fn nightly_page(state: AppState, q: UiQuery, jobs_of: Option<String>) -> Response {
    let q = q.normalized();
    let data = async {
        Ok::<_, ApiError>((
            views::nightly(&state, &q, jobs_of).await?,
            views::repositories(&state).await?,
        ))
    };
    match data.await {
        Ok((v, repos)) => {
            let extra = html! {
                label { "Days " input name="days" type="number" min="1" max="92" value=[q.days] size="3"; }
                @if let Some(c) = &q.color { input type="hidden" name="color" value=(c); }
            };
            let title = match &v.repository {
                Some(r) => format!("Nightly jobs of {r}"),
                None => "Nightly".into(),
            };
            let filters = Filters {
                repository: v.repository.is_none(),
                context: true,
                ..Filters::default()
            };
            html_response(
                StatusCode::OK,
                layout(
                    &title,
                    Nav::Nightly,
                    &q,
                    &repos,
                    filters,
                    Some(extra),
                    nightly_html(&state, &q, &v, repos.is_empty()),
                ),
            )
        }
        Err(e) => error_page(&q, e),
    }
}

pub(crate) async fn nightly(State(state): State<AppState>, Query(q): Query<UiQuery>) -> Response {
    nightly_page(state, q, None).await
}

pub(crate) async fn nightly_jobs(
    State(state): State<AppState>,
    Path(repository): Path<String>,
    Query(q): Query<UiQuery>,
) -> Response {
    nightly_page(state, q, Some(repository)).await
}

pub(crate) async fn api_nightly(
    State(state): State<AppState>,
    Query(q): Query<UiQuery>,
) -> Result<Json<NightlyView>, ApiError> {
    Ok(Json(views::nightly(&state, &q.normalized(), None).await?))
}

pub(crate) async fn api_nightly_jobs(
    State(state): State<AppState>,
    Path(repository): Path<String>,
    Query(q): Query<UiQuery>,
) -> Result<Json<NightlyView>, ApiError> {
    Ok(Json(
        views::nightly(&state, &q.normalized(), Some(repository)).await?,
    ))
}

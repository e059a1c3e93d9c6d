//! The drill-down web UI: server-rendered pages (maud escapes every value from
//! the data), one embedded stylesheet, no JavaScript. docs/ui.md describes the
//! pages, filters and URL scheme; [`super::views`] builds the data, which the
//! JSON API serves too.

use super::test_index::{TestIndexQuery, TestIndexView};
use super::views::{
    self, FailuresView, NightlyCellView, NightlyView, SlosView, TestPageView, UiQuery, enc,
    safe_url, test_path,
};
use super::{ApiError, AppState};
use crate::store::RunView;
use crate::store::ui::RepositoryRow;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

pub const CSS: &str = include_str!("app.css");

/// No scripts, no inline styles, nothing from elsewhere: markup that slipped
/// through escaping could still not run.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        // No text can hide itself or reorder what is around it.
        super::text::reveal_html(markup.into_string()),
    )
        .into_response()
}

pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

/// A page's error: the same message as the JSON API, as HTML.
fn error_page(q: &UiQuery, e: ApiError) -> Response {
    let status = e.status;
    let body = html! {
        h1 { "Error " (status.as_u16()) }
        p.error { (e.message) }
        p { a href="/" { "Back to the overview" } }
    };
    html_response(status, layout("Error", Nav::None, q, &[], None, body))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Overview,
    Nightly,
    Failures,
    Tests,
    None,
}

fn fmt_time(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M UTC")) } }
}

fn fmt_seconds(s: f64) -> String {
    let s = s.round() as i64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

/// A link when the URL is http(s), else the text alone.
fn ext_link(url: Option<&str>, text: &str) -> Markup {
    match url.and_then(safe_url) {
        Some(u) => html! { a href=(u) rel="noopener noreferrer nofollow" { (text) } },
        None => html! { span.muted { (text) " (no link)" } },
    }
}

fn state_symbol(state: &str) -> &'static str {
    match state {
        "success" => "✓",
        "failure" => "✗",
        "error" => "!",
        "cancelled" => "⊘",
        "timed_out" => "⌛",
        "skipped" => "–",
        "pending" | "running" => "…",
        _ => "?",
    }
}

fn grafana_link(state: &AppState, uid: &str, title: &str, q: &UiQuery) -> Option<Markup> {
    let base = state
        .config
        .ui
        .grafana_url
        .as_deref()?
        .trim_end_matches('/');
    let mut url = format!("{base}/d/{uid}");
    if let Some(r) = &q.repository {
        url.push_str(&format!("?var-repository={}", enc(r)));
    }
    Some(html! { a.grafana href=(url) rel="noopener noreferrer" { "Grafana: " (title) } })
}

fn layout(
    title: &str,
    nav: Nav,
    q: &UiQuery,
    repositories: &[RepositoryRow],
    extra_filters: Option<Markup>,
    body: Markup,
) -> Markup {
    let fq = q.filter_query();
    let item = |n: Nav, href: &str, label: &str| {
        html! {
            li { a href=(format!("{href}{fq}")) aria-current=[(nav == n).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · CI weather report" }
                link rel="stylesheet" href="/static/app.css";
            }
            body {
                header.top {
                    a.brand href=(format!("/{fq}")) { "CI weather report" }
                    nav aria-label="Pages" {
                        ul {
                            (item(Nav::Overview, "/", "SLOs"))
                            (item(Nav::Nightly, "/nightly", "Nightly"))
                            (item(Nav::Failures, "/failures", "Failures"))
                            (item(Nav::Tests, "/tests", "Tests"))
                        }
                    }
                }
                @if nav != Nav::None {
                    form.filters method="get" aria-label="Filters" {
                        label { "Repository "
                            input name="repository" list="repositories" value=[q.repository.as_deref()] placeholder="all";
                        }
                        datalist id="repositories" {
                            @for r in repositories { option value=(r.path) { (r.forge) } }
                        }
                        label { "Context "
                            input name="context" value=[q.context.as_deref()] placeholder="all";
                        }
                        label { "Trigger "
                            select name="trigger" {
                                option value="" { "all" }
                                @for t in ["pull_request", "push", "schedule", "manual", "other"] {
                                    option value=(t) selected[q.trigger.as_deref() == Some(t)] { (t) }
                                }
                            }
                        }
                        label { "Window "
                            input name="window" value=[q.window.as_deref()] placeholder="e.g. 7d" size="6";
                        }
                        @if let Some(x) = extra_filters { (x) }
                        button type="submit" { "Apply" }
                    }
                }
                main { (body) }
                footer { "ci-slo-exporter · " a href="/metrics" { "metrics" } " · JSON under " code { "/api/v1/" } }
            }
        }
    }
}

fn budget_bar(remaining: f64, status: &str) -> Markup {
    let shown = (remaining.clamp(0.0, 1.0) * 100.0).round();
    html! {
        svg.bar viewBox="0 0 100 10" preserveAspectRatio="none" role="img"
            aria-label=(format!("error budget remaining {}", pct(remaining))) {
            rect.track x="0" y="0" width="100" height="10" {}
            rect class=(format!("fill st-{status}")) x="0" y="0" width=(shown) height="10" {}
        }
    }
}

fn status_text(status: &str) -> &'static str {
    match status {
        "exhausted" => "✗ budget exhausted",
        "burning" => "▲ burning fast",
        "ok" => "✓ within budget",
        _ => "– no data",
    }
}

fn overview_html(state: &AppState, q: &UiQuery, v: &SlosView) -> Markup {
    html! {
        h1 { "Service-level objectives" }
        p.lede {
            "Rolling period " (v.period)
            @if let Some(r) = &v.repository { ", repository " strong { (r) } }
            ". Context and trigger filters do not apply to SLO events. "
            @if let Some(l) = grafana_link(state, "ci-slo-budget", "SLOs and error budget", q) { (l) }
        }
        div.scroll {
            table.slos {
                caption.sr { "SLOs with their indicator, objective and error budget" }
                thead { tr {
                    th scope="col" { "SLO" }
                    th scope="col" { "SLI" }
                    th scope="col" { "Objective" }
                    th scope="col" { "Error budget remaining" }
                    th scope="col" { "Status" }
                    th scope="col" { "Burn rate" }
                } }
                tbody {
                    @for s in &v.slos {
                        tr class=(format!("st-{}", s.status)) {
                            th scope="row" {
                                code { (s.slo) }
                                div.muted { (s.description) }
                            }
                            td.num {
                                @match s.sli { Some(x) => (pct(x)), None => "–" }
                                div.muted { (s.good) " good / " (s.total) }
                            }
                            td.num { (pct(s.objective)) }
                            td {
                                (budget_bar(s.budget_remaining, &s.status))
                                span.num { (pct(s.budget_remaining)) }
                            }
                            td {
                                span class=(format!("status st-{}", s.status)) { (status_text(&s.status)) }
                                @if let Some(t) = s.recovers_at {
                                    div.recovery { "recovers " (fmt_time(t)) " if no further bad events arrive" }
                                }
                            }
                            td {
                                ul.windows {
                                    @for w in &s.windows {
                                        li { (w.window) ": "
                                            @match w.burn_rate { Some(b) => (format!("{b:.2}×")), None => "–" }
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
}

pub async fn overview(State(state): State<AppState>, Query(q): Query<UiQuery>) -> Response {
    let q = q.normalized();
    let data = async {
        Ok::<_, ApiError>((
            views::slos(&state, &q).await?,
            views::repositories(&state).await?,
        ))
    };
    match data.await {
        Ok((v, repos)) => html_response(
            StatusCode::OK,
            layout(
                "SLOs",
                Nav::Overview,
                &q,
                &repos,
                None,
                overview_html(&state, &q, &v),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

fn nightly_tip(c: &NightlyCellView, median: Option<f64>) -> Markup {
    html! {
        strong { (c.state) } " · " (c.day) " · " (c.context)
        @if let Some(d) = c.duration_seconds {
            div { "run time " (fmt_seconds(d))
                @if let (Some(r), Some(m)) = (c.runtime_ratio, median) {
                    " (" (format!("{r:.2}")) "× the median " (fmt_seconds(m)) ")"
                }
            }
        }
        @if let Some(f) = &c.failure {
            div { "class " strong.class { (f.class) } " (" (f.category) ")" }
            code.evidence { (f.evidence) }
        }
        @if let Some(g) = &c.since_green {
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

fn runtime_class(ratio: Option<f64>) -> (&'static str, &'static str) {
    match ratio {
        None => ("rt-none", "no run time"),
        Some(r) if r < 0.8 => ("rt-fast", "faster than usual"),
        Some(r) if r <= 1.2 => ("rt-normal", "usual run time"),
        Some(r) if r <= 1.5 => ("rt-slow", "slower than usual"),
        Some(_) => ("rt-veryslow", "much slower than usual"),
    }
}

fn nightly_html(state: &AppState, q: &UiQuery, v: &NightlyView) -> Markup {
    let runtime = v.color == "runtime";
    let base = |color: &str| {
        let mut qq = q.clone();
        qq.color = Some(color.into());
        let mut s = qq.filter_query();
        s.push_str(if s.is_empty() { "?" } else { "&" });
        s.push_str(&format!("color={color}"));
        if let Some(d) = q.days {
            s.push_str(&format!("&days={d}"));
        }
        format!("/nightly{s}")
    };
    let half = v.days.len() / 2;
    html! {
        h1 { "Nightly and scheduled runs" }
        p.lede {
            "The latest scheduled run of each repository per UTC day, last " (v.days.len()) " days. "
            "Hover or focus a cell for the failure and the dependency changes since the last green run; open it for the run. "
            @if let Some(l) = grafana_link(state, "ci-slo-nightly", "nightly grid", q) { (l) }
        }
        p.toggle {
            "Colour by: "
            @if runtime {
                a href=(base("state")) { "state" } " · " strong aria-current="true" { "run time vs. the repository's median" }
            } @else {
                strong aria-current="true" { "state" } " · " a href=(base("runtime")) { "run time vs. the repository's median" }
            }
        }
        @if v.rows.is_empty() {
            p.empty { "No scheduled runs in these days." }
        } @else {
            div.scroll.grid-wrap {
                table.grid {
                    caption.sr { "Scheduled runs per repository and day" }
                    thead { tr {
                        th scope="col" { "Repository" }
                        @for d in &v.days { th scope="col" { abbr title=(d) { (d.format("%m-%d")) } } }
                    } }
                    tbody {
                        @for row in &v.rows {
                            tr {
                                th scope="row" title=(row.repository) {
                                    (row.repository)
                                    @if let Some(m) = row.median_seconds { div.muted { "median " (fmt_seconds(m)) } }
                                }
                                @for (i, cell) in row.cells.iter().enumerate() {
                                    @match cell {
                                        None => td.cell.none { span title="no scheduled run" { "·" } span.sr { "no run" } },
                                        Some(c) => {
                                            @let (rt, rt_text) = runtime_class(c.runtime_ratio);
                                            @let cls = if runtime { format!("cell {rt}") } else { format!("cell s-{}", c.state) };
                                            @let label = if runtime { format!("{}, {}, {rt_text}", c.day, c.state) } else { format!("{}, {}", c.day, c.state) };
                                            td class=(cls) data-run=(c.run_id) data-state=(c.state) {
                                                a.cellink href=(format!("/runs/{}", c.run_id)) aria-label=(label) aria-describedby=(format!("tip-{}", c.run_id)) {
                                                    @if runtime {
                                                        @match c.runtime_ratio { Some(r) => (format!("{r:.1}×")), None => "–" }
                                                    } @else {
                                                        (state_symbol(&c.state))
                                                    }
                                                }
                                                div.tip.right[i >= half] role="tooltip" id=(format!("tip-{}", c.run_id)) {
                                                    (nightly_tip(c, row.median_seconds))
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
                    span.cell.rt-slow { "1.3×" } " up to 1.5× · " span.cell.rt-veryslow { "1.8×" } " slower"
                } @else {
                    span.cell.s-success { "✓" } " success · " span.cell.s-failure { "✗" } " failure · "
                    span.cell.s-error { "!" } " error · " span.cell.s-running { "…" } " running or lost · " "· no run"
                }
            }
        }
    }
}

pub async fn nightly(State(state): State<AppState>, Query(q): Query<UiQuery>) -> Response {
    let q = q.normalized();
    let data = async {
        Ok::<_, ApiError>((
            views::nightly(&state, &q).await?,
            views::repositories(&state).await?,
        ))
    };
    match data.await {
        Ok((v, repos)) => {
            let extra = html! {
                label { "Days " input name="days" type="number" min="1" max="92" value=[q.days] size="3"; }
                @if let Some(c) = &q.color { input type="hidden" name="color" value=(c); }
            };
            html_response(
                StatusCode::OK,
                layout(
                    "Nightly",
                    Nav::Nightly,
                    &q,
                    &repos,
                    Some(extra),
                    nightly_html(&state, &q, &v),
                ),
            )
        }
        Err(e) => error_page(&q, e),
    }
}

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

fn failures_html(state: &AppState, q: &UiQuery, v: &FailuresView) -> Markup {
    html! {
        h1 { "Failures" }
        p.lede {
            "Failure classes and fingerprints of runs from " (fmt_time(v.since)) " to " (fmt_time(v.until)) " (" (v.window) "), most frequent first. "
            span.badge.new { "NEW" } " marks an error first seen within " (v.new_window) ". "
            @if let Some(l) = grafana_link(state, "ci-slo-failures", "failure classes", q) { (l) }
        }
        h2 { "Classes" }
        @if v.classes.is_empty() { p.empty { "No failures in this window." } } @else {
            div.scroll { table.classes {
                thead { tr {
                    th scope="col" { "Class" } th scope="col" { "Occurrences" } th scope="col" { "Trend" }
                    th scope="col" { "Fingerprints" } th scope="col" { "Repositories" }
                } }
                tbody { @for c in &v.classes { tr {
                    th scope="row" { (c.class) div.muted { (c.category) } }
                    td.num { (c.occurrences) }
                    td { (sparkline(&c.trend, &v.days)) }
                    td.num { (c.fingerprints) }
                    td { (c.repositories.join(", ")) }
                } } }
            } }
        }
        h2 { "Fingerprints" }
        ol.fingerprints {
            @for f in &v.fingerprints {
                li.fp data-fingerprint=[f.fingerprint.as_deref()] {
                    div.fphead {
                        @if f.is_new { span.badge.new title="first seen within the NEW window" { "NEW" } " " }
                        strong.class { (f.class) } " " span.muted { "(" (f.category) ")" }
                        " · " span.num { (f.occurrences) " occurrences" }
                        " " (sparkline(&f.trend, &v.days))
                    }
                    pre.evidence { code { (f.evidence) } }
                    dl.facts {
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
                        @if let Some(fp) = &f.fingerprint { dt { "Fingerprint" } dd { code { (fp) } } }
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

pub async fn failures(State(state): State<AppState>, Query(q): Query<UiQuery>) -> Response {
    let q = q.normalized();
    let data = async {
        Ok::<_, ApiError>((
            views::failures(&state, &q).await?,
            views::repositories(&state).await?,
        ))
    };
    match data.await {
        Ok((v, repos)) => html_response(
            StatusCode::OK,
            layout(
                "Failures",
                Nav::Failures,
                &q,
                &repos,
                None,
                failures_html(&state, &q, &v),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

fn outcome_symbol(o: crate::model::TestOutcome) -> &'static str {
    match o {
        crate::model::TestOutcome::Passed => "✓",
        crate::model::TestOutcome::Failed => "✗",
        crate::model::TestOutcome::Errored => "!",
        crate::model::TestOutcome::Skipped => "–",
    }
}

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
        ol.strip aria-label="executions, oldest first" {
            @for e in &v.executions {
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

pub async fn tests_index(
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
            super::test_index::test_index(&state, &tq).await?,
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
                @for s in super::test_index::SORTS { option value=(s) selected[sort == s] { (s) } }
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
                Some(extra),
                tests_index_html(&tq, &v),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

type TestKey = (String, String, String);

pub async fn test(
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
                None,
                test_html(&state, &q, &v),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

fn run_html(v: &RunView, page: usize) -> Markup {
    html! {
        h1 { "Run " (v.id) " " span class=(format!("status s-{}", v.state)) { (state_symbol(&v.state)) " " (v.state) } }
        dl.facts {
            dt { "Repository" } dd { (v.repository) " " span.muted { "(" (v.forge) ")" } }
            dt { "Context" } dd { (v.context) }
            dt { "Commit" } dd { code { (v.commit) } " · attempt " (v.attempt) }
            dt { "Trigger" } dd { (v.trigger) }
            @if let Some(c) = &v.change {
                dt { "Change" } dd { "#" (c.number) @if let Some(o) = &c.outcome { " · " (o) } }
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
                @if let Some(fp) = &f.fingerprint { p.muted { "fingerprint " code { (fp) } } }
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
pub struct RunPageQuery {
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

pub async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<RunPageQuery>,
) -> Response {
    let q = UiQuery::default();
    match load_run(&state, &id, page.tests_offset).await {
        Ok(v) => html_response(
            StatusCode::OK,
            layout(
                &format!("Run {}", v.id),
                Nav::None,
                &q,
                &[],
                None,
                run_html(&v, state.config.web.run_page_tests),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

// ---------------------------------------------------------------- JSON

pub async fn api_slos(
    State(state): State<AppState>,
    Query(q): Query<UiQuery>,
) -> Result<Json<SlosView>, ApiError> {
    Ok(Json(views::slos(&state, &q.normalized()).await?))
}

pub async fn api_nightly(
    State(state): State<AppState>,
    Query(q): Query<UiQuery>,
) -> Result<Json<NightlyView>, ApiError> {
    Ok(Json(views::nightly(&state, &q.normalized()).await?))
}

pub async fn api_failures(
    State(state): State<AppState>,
    Query(q): Query<UiQuery>,
) -> Result<Json<FailuresView>, ApiError> {
    Ok(Json(views::failures(&state, &q.normalized()).await?))
}

pub async fn api_test(
    State(state): State<AppState>,
    Path((repository, context, name)): Path<TestKey>,
    Query(q): Query<UiQuery>,
) -> Result<Json<TestPageView>, ApiError> {
    Ok(Json(
        views::test_page(&state, repository, context, name, &q.normalized()).await?,
    ))
}

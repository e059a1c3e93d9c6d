//! The drill-down web UI: server-rendered pages (maud escapes every value from
//! the data), one embedded stylesheet, no JavaScript. docs/ui.md describes the
//! pages, filters and URL scheme; [`super::views`] builds the data, which the
//! JSON API serves too.

use super::test_index::{TestIndexQuery, TestIndexView};
use super::views::{
    self, FailuresView, NightlyCellView, NightlyJob, NightlyView, RunLinksView, SloDetailView,
    SloEventsView, SloRow, SlosView, TestPageView, UiQuery, enc, safe_url, test_path,
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
    html_response(
        status,
        layout("Error", Nav::None, q, &[], Filters::NONE, None, body),
    )
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

/// Which of the shared filters a page takes (only those are shown).
#[derive(Clone, Copy, Default)]
struct Filters {
    repository: bool,
    context: bool,
    trigger: bool,
    window: bool,
}

impl Filters {
    const ALL: Filters = Filters {
        repository: true,
        context: true,
        trigger: true,
        window: true,
    };
    const NONE: Filters = Filters {
        repository: false,
        context: false,
        trigger: false,
        window: false,
    };
}

fn layout(
    title: &str,
    nav: Nav,
    q: &UiQuery,
    repositories: &[RepositoryRow],
    filters: Filters,
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
                @if filters.repository || filters.context || filters.trigger || filters.window || extra_filters.is_some() {
                    form.filters method="get" aria-label="Filters" {
                        @if filters.repository {
                            label { "Repository "
                                input name="repository" list="repositories" value=[q.repository.as_deref()] placeholder="all";
                            }
                            datalist id="repositories" {
                                @for r in repositories { option value=(r.path) { (r.forge) } }
                            }
                        }
                        @if filters.context {
                            label { "Context "
                                input name="context" value=[q.context.as_deref()] placeholder="all";
                            }
                        }
                        @if filters.trigger {
                            label { "Trigger "
                                select name="trigger" {
                                    option value="" { "all" }
                                    @for t in ["pull_request", "push", "schedule", "manual", "other"] {
                                        option value=(t) selected[q.trigger.as_deref() == Some(t)] { (t) }
                                    }
                                }
                            }
                        }
                        @if filters.window {
                            label { "Window "
                                input name="window" value=[q.window.as_deref()] placeholder="e.g. 7d" size="6";
                            }
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

/// "12 good / 40" for events, "19 meeting / 20 tests" for test_success.
fn good_of(s: &SloRow) -> String {
    if s.unit == "tests" {
        format!("{} meeting / {} tests", s.good, s.total)
    } else {
        format!("{} good / {}", s.good, s.total)
    }
}

/// test_success: the tests breaching its objective, worst first.
fn breaching_tests_html(s: &SloRow, min_runs: u64) -> Markup {
    let Some(tests) = &s.breaching_tests else {
        return html! {};
    };
    let breaching = s.total - s.good.min(s.total);
    html! {
        h2 { "Breaching tests" }
        p.muted {
            "Tests with at least " (min_runs) " runs in the period whose runs passed less than "
            (pct(s.objective)) " of the time, lowest success ratio first"
            @if breaching as usize > tests.len() { " (the first " (tests.len()) " of " (breaching) ")" }
            ". Skipped executions are not runs."
        }
        @if tests.is_empty() {
            p.empty { "No test breaches the objective." }
        } @else {
            div.scroll { table.breaching {
                caption.sr { "Tests breaching the objective, worst first" }
                thead { tr {
                    th scope="col" { "Test" } th scope="col" { "Repository" } th scope="col" { "Context" }
                    th scope="col" { "Success ratio" } th scope="col" { "Passed / runs" }
                } }
                tbody { @for t in tests { tr {
                    th scope="row" { a href=(t.url) { code { (t.test) } } }
                    td { (t.repository) }
                    td { (t.context) }
                    td.num { (pct(t.success_ratio)) }
                    td.num { (t.passes) " / " (t.runs) }
                } } }
            } }
        }
        @if let Some(e) = &s.executions {
            p.muted {
                "Execution-level ratio (every test execution, " code { "slo=\"test_executions\"" } "): "
                @match e.sli { Some(x) => (pct(x)), None => "–" }
                " (" (e.good) " passed of " (e.total) " executions over " (e.window) ")."
            }
        }
    }
}

fn slo_path(slo: &str) -> String {
    format!("/slos/{}", enc(slo))
}

/// Status, since when exhausted, and when it recovers.
fn slo_status(s: &SloRow) -> Markup {
    html! {
        span class=(format!("status st-{}", s.status)) { (status_text(&s.status)) }
        @if let Some(t) = s.exhausted_since {
            div.recovery { "since " (fmt_time(t)) }
        }
        @if let Some(t) = s.recovers_at {
            div.recovery { "recovers " (fmt_time(t)) " if no further bad events arrive" }
        }
    }
}

/// A line chart of daily values (`None`: no point that day) between `lo` and
/// `hi`, with labelled reference lines; server-rendered SVG.
fn day_chart(
    label: &str,
    days: &[chrono::NaiveDate],
    values: &[Option<f64>],
    (lo, hi): (f64, f64),
    refs: &[(f64, String, &str)],
    fmt: &dyn Fn(f64) -> String,
) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 180.0;
    const L: f64 = 56.0;
    const R: f64 = 8.0;
    const T: f64 = 10.0;
    const B: f64 = 24.0;
    let n = days.len().max(2);
    let x = |i: usize| L + (W - L - R) * i as f64 / (n - 1) as f64;
    let span = if hi > lo { hi - lo } else { 1.0 };
    let y = |v: f64| T + (H - T - B) * (hi - v.clamp(lo, hi)) / span;
    let points: Vec<(usize, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .collect();
    let line: String = points
        .iter()
        .map(|(i, v)| format!("{:.1},{:.1}", x(*i), y(*v)))
        .collect::<Vec<_>>()
        .join(" ");
    let ticks: Vec<usize> = if days.len() <= 1 {
        vec![0]
    } else {
        vec![0, days.len() / 2, days.len() - 1]
    };
    html! {
        svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(label) {
            title { (label) }
            line.axis x1=(L) y1=(T) x2=(L) y2=(H - B) {}
            line.axis x1=(L) y1=(H - B) x2=(W - R) y2=(H - B) {}
            text.tick x=(L - 4.0) y=(y(hi) + 4.0) text-anchor="end" { (fmt(hi)) }
            text.tick x=(L - 4.0) y=(y(lo) + 4.0) text-anchor="end" { (fmt(lo)) }
            @for i in &ticks {
                @if let Some(d) = days.get(*i) {
                    @let anchor = if *i == 0 { "start" } else if *i + 1 == days.len() { "end" } else { "middle" };
                    text.tick x=(x(*i)) y=(H - 6.0) text-anchor=(anchor) { (d.format("%m-%d")) }
                }
            }
            @for (v, text, class) in refs {
                line class=(format!("ref {class}")) x1=(L) y1=(y(*v)) x2=(W - R) y2=(y(*v)) {}
                text class=(format!("reflabel {class}")) x=(W - R - 2.0) y=(y(*v) - 3.0) text-anchor="end" { (text) }
            }
            polyline.series points=(line) {}
            @for (i, v) in &points {
                circle.pt cx=(format!("{:.1}", x(*i))) cy=(format!("{:.1}", y(*v))) r="3" {
                    title { (days[*i]) ": " (fmt(*v)) }
                }
            }
        }
    }
}

fn overview_html(state: &AppState, q: &UiQuery, v: &SlosView) -> Markup {
    html! {
        h1 { "Service-level objectives" }
        p.lede {
            "Rolling period " (v.period)
            @if let Some(r) = &v.repository { ", repository " strong { (r) } }
            ". Open an SLO for its trend, repositories and the events that spent its budget. "
            @if let Some(l) = grafana_link(state, "ci-slo-budget", "SLOs and error budget", q) { (l) }
        }
        @if v.slos.iter().all(|s| s.total == 0) { (feed_hint()) }
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
                                a href=(format!("{}{}", slo_path(&s.slo), q.filter_query())) { code { (s.slo) } }
                                div.muted { (s.description) }
                            }
                            td.num data-label="SLI" {
                                @match s.sli { Some(x) => (pct(x)), None => "–" }
                                div.muted { (good_of(s)) }
                            }
                            td.num data-label="Objective" { (pct(s.objective)) }
                            td data-label="Budget left" {
                                (budget_bar(s.budget_remaining, &s.status))
                                span.num { (pct(s.budget_remaining)) }
                            }
                            td data-label="Status" {
                                (slo_status(s))
                            }
                            td data-label="Burn rate" {
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
                SLO_FILTERS,
                None,
                overview_html(&state, &q, &v),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

fn slo_detail_html(state: &AppState, q: &UiQuery, v: &SloDetailView) -> Markup {
    let s = &v.slo;
    let days: Vec<chrono::NaiveDate> = v.days.iter().map(|d| d.day).collect();
    let slis: Vec<Option<f64>> = v.days.iter().map(|d| d.sli).collect();
    let budgets: Vec<Option<f64>> = v.days.iter().map(|d| Some(d.budget_remaining)).collect();
    // The SLI axis: from a little under the lowest value (or the objective) to 100%.
    let lowest = slis.iter().flatten().copied().fold(s.objective, f64::min);
    let lo = ((lowest - (1.0 - lowest) * 0.25).max(0.0) * 100.0).floor() / 100.0;
    let b_lo = budgets
        .iter()
        .flatten()
        .copied()
        .fold(0.0, f64::min)
        .max(-10.0);
    let b_lo = if b_lo < 0.0 {
        (b_lo * 10.0).floor() / 10.0
    } else {
        0.0
    };
    let events_href = format!("{}/events{}", slo_path(&s.slo), q.filter_query());
    html! {
        h1 { "SLO " code { (s.slo) } }
        p.lede {
            (s.description) ", rolling period " (v.period)
            @if let Some(r) = &v.repository { ", repository " strong { (r) } }
            ". " a href=(format!("/{}", q.filter_query())) { "← all SLOs" } " "
            @if let Some(l) = grafana_link(state, "ci-slo-budget", "SLOs and error budget", q) { (l) }
        }
        dl.facts.stats {
            dt { "SLI" } dd { @match s.sli { Some(x) => (pct(x)), None => "–" } " (" (good_of(s)) ")" }
            dt { "Objective" } dd { (pct(s.objective)) }
            dt { "Error budget remaining" } dd { (budget_bar(s.budget_remaining, &s.status)) " " span.num { (pct(s.budget_remaining)) } }
            dt { "Status" } dd { (slo_status(s)) }
            dt { "Burn rate" } dd { ul.windows { @for w in &s.windows {
                li { (w.window) ": " @match w.burn_rate { Some(b) => (format!("{b:.2}×")), None => "–" } }
            } } }
        }
        @if s.unit == "tests" {
            (breaching_tests_html(s, state.config.slo.test_min_runs))
            p { a.events href=(events_href) { "The failed test executions of the period, newest first →" } }
        } @else {
            p { a.events href=(events_href) { "The " (plural(s.total - s.good.min(s.total), "bad event", "bad events")) " of the period, newest first →" } }
        }
        @if s.unit == "tests" {
            p.muted { "Each test is judged over whole windows of UTC days: there is no daily series." }
        } @else {
        h2 { "SLI by day" }
        @if v.days.iter().all(|d| d.total == 0) {
            p.empty { "No events in the period." }
        } @else {
            (day_chart(
                &format!("daily SLI of {} over the last {} with the objective {}", s.slo, v.period, pct(s.objective)),
                &days, &slis, (lo, 1.0),
                &[(s.objective, format!("objective {}", pct(s.objective)), "objective")],
                &|x| pct(x),
            ))
            h2 { "Error budget over the period" }
            p.muted { "The budget left over the rolling " (v.period) " that ends with each day: below zero it is overspent." }
            (day_chart(
                &format!("error budget remaining of {} by day", s.slo),
                &days, &budgets, (b_lo, 1.0),
                &[(0.0, "budget exhausted".to_string(), "zero")],
                &|x| format!("{:.0}%", x * 100.0),
            ))
            details.daily {
                summary { "Daily figures" }
                div.scroll { table.daily {
                    thead { tr { th scope="col" { "Day" } th scope="col" { "Good / total" } th scope="col" { "SLI" } th scope="col" { "Budget left" } } }
                    tbody { @for d in v.days.iter().rev() { tr {
                        th scope="row" { (d.day) }
                        td.num { (d.good) " / " (d.total) }
                        td.num { @match d.sli { Some(x) => (pct(x)), None => "–" } }
                        td.num { (pct(d.budget_remaining)) }
                    } } }
                } }
            }
        }
        }
        h2 { "By repository" }
        @if v.repositories.is_empty() {
            p.empty { "No repository has events of this SLO in the period." }
        } @else {
            div.scroll { table.repos {
                caption.sr { "Events of the period per repository, most bad events first" }
                thead { tr {
                    th scope="col" { "Repository" } th scope="col" { "SLI" }
                    th scope="col" { @if s.unit == "tests" { "Meeting / tests" } @else { "Good / total" } }
                    th scope="col" { "Bad" } th scope="col" { "Share of bad" }
                } }
                tbody { @for r in &v.repositories { tr {
                    th scope="row" { a href=(format!("{}?repository={}", slo_path(&s.slo), enc(&r.repository))) { (r.repository) } }
                    td.num { @match r.sli { Some(x) => (pct(x)), None => "–" } }
                    td.num { (r.good) " / " (r.total) }
                    td.num { @if r.bad > 0 {
                        a href=(format!("{}/events?repository={}", slo_path(&s.slo), enc(&r.repository))) { (r.bad) }
                    } @else { "0" } }
                    td.num { (pct(r.share_of_bad)) }
                } } }
            } }
        }
    }
}

fn slo_events_html(q: &UiQuery, v: &SloEventsView) -> Markup {
    let page = |offset: usize| {
        let mut s = q.filter_query();
        s.push_str(if s.is_empty() { "?" } else { "&" });
        format!("{}/events{s}offset={offset}", slo_path(&v.slo))
    };
    html! {
        @if v.slo == crate::slo::SloId::TestSuccess.as_str() {
            // Judged per test: its budget is spent by the breaching tests
            // (on the SLO page); these are the failed executions.
            h1 { "Failed test executions of " code { (v.slo) } }
        } @else {
            h1 { "Bad events of " code { (v.slo) } }
        }
        p.lede {
            @if v.slo == crate::slo::SloId::TestSuccess.as_str() {
                (plural(v.bad, "failed test execution", "failed test executions")) " since " (fmt_time(v.since))
                " (" (v.period) "); the budget of test_success is spent by the tests that breach it, listed on its page"
            } @else {
                (plural(v.bad, "bad event", "bad events")) " spent the budget of " (v.description) " since " (fmt_time(v.since))
                " (" (v.period) ")"
            }
            @if let Some(r) = &v.repository { " in " strong { (r) } }
            ", newest first. "
            a href=(format!("{}{}", slo_path(&v.slo), q.filter_query())) { "← the SLO" }
        }
        @if v.events.is_empty() {
            p.empty { "No bad events in the period." }
        } @else {
            div.scroll { table.events {
                thead { tr { th scope="col" { "When" } th scope="col" { "Repository" } th scope="col" { "What" } } }
                tbody { @for e in &v.events { @let ev = &e.event; tr {
                    td { (fmt_time(ev.at)) }
                    td { (ev.repository) }
                    td {
                        @match ev.kind.as_str() {
                            "change" => {
                                "change "
                                @match (&e.change_url, ev.change_number) {
                                    (Some(u), Some(n)) => { a href=(u) rel="noopener noreferrer nofollow" { "#" (n) } }
                                    (None, Some(n)) => { "#" (n) }
                                    _ => { "(pruned)" }
                                }
                                @if let Some(o) = &ev.change_outcome { " " span.muted { (o) } }
                                @if let Some(id) = ev.run_id { " · " a href=(format!("/runs/{id}")) { "run " (id) } }
                            }
                            _ => {
                                @match ev.run_id {
                                    Some(id) => { a href=(format!("/runs/{id}")) { "run " (id) } }
                                    None => { "run (pruned)" }
                                }
                                @if let Some(c) = &ev.context { " · " (c) }
                                @if let Some(st) = &ev.state { " · " span class=(format!("status s-{st}")) { (state_symbol(st)) " " (st) } }
                                @if let (Some(t), Some(c)) = (&ev.test, &ev.context) {
                                    " · test " a href=(test_path(&ev.repository, c, t)) { (t) }
                                }
                            }
                        }
                    }
                } } }
            } }
            p.pages {
                @if v.offset > 0 { a href=(page(v.offset.saturating_sub(v.limit))) { "← newer" } " " }
                "events " (v.offset + 1) "–" (v.offset + v.events.len())
                @if v.events.len() == v.limit { " " a href=(page(v.offset + v.limit)) { "older →" } }
            }
        }
    }
}

/// Which bad events a page lists: `?offset=N`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct EventsPageQuery {
    #[serde(default)]
    pub offset: usize,
}

const SLO_FILTERS: Filters = Filters {
    repository: true,
    ..Filters::NONE
};

pub async fn slo(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<UiQuery>,
) -> Response {
    let q = q.normalized();
    let data = async {
        Ok::<_, ApiError>((
            views::slo_detail(&state, &name, &q).await?,
            views::repositories(&state).await?,
        ))
    };
    match data.await {
        Ok((v, repos)) => html_response(
            StatusCode::OK,
            layout(
                &format!("SLO {}", v.slo.slo),
                Nav::Overview,
                &q,
                &repos,
                SLO_FILTERS,
                None,
                slo_detail_html(&state, &q, &v),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

pub async fn slo_events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<UiQuery>,
    Query(p): Query<EventsPageQuery>,
) -> Response {
    let q = q.normalized();
    let data = async {
        Ok::<_, ApiError>((
            views::slo_events(&state, &name, &q, p.offset).await?,
            views::repositories(&state).await?,
        ))
    };
    match data.await {
        Ok((v, repos)) => html_response(
            StatusCode::OK,
            layout(
                &if v.slo == crate::slo::SloId::TestSuccess.as_str() {
                    format!("Failed test executions of {}", v.slo)
                } else {
                    format!("Bad events of {}", v.slo)
                },
                Nav::Overview,
                &q,
                &repos,
                SLO_FILTERS,
                None,
                slo_events_html(&q, &v),
            ),
        ),
        Err(e) => error_page(&q, e),
    }
}

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

/// `1 occurrence`, `2 occurrences`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
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

/// How to get the first runs in: shown by every page of an empty database.
fn feed_hint() -> Markup {
    html! {
        p.hint {
            "No runs stored yet. Feed runs in with " code { "ci-slo-exporter ingest" } " (TAP or JUnit reports), "
            code { "POST /api/v1/runs" } " (JSON, bearer token), or a GitHub or GitLab webhook to "
            code { "/webhooks/github" } " / " code { "/webhooks/gitlab" } "; "
            code { "ci-slo-exporter backfill" } " fetches a forge's history (README, Getting started)."
        }
    }
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

pub async fn nightly(State(state): State<AppState>, Query(q): Query<UiQuery>) -> Response {
    nightly_page(state, q, None).await
}

pub async fn nightly_jobs(
    State(state): State<AppState>,
    Path(repository): Path<String>,
    Query(q): Query<UiQuery>,
) -> Response {
    nightly_page(state, q, Some(repository)).await
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

fn class_path(class: &str) -> String {
    format!("/failures/classes/{}", enc(class))
}

fn fingerprint_path(fp: &str) -> String {
    format!("/failures/fingerprints/{}", enc(fp))
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

pub async fn failures(State(state): State<AppState>, Query(q): Query<UiQuery>) -> Response {
    failures_page(state, q, None).await
}

pub async fn failure_class(
    State(state): State<AppState>,
    Path(class): Path<String>,
    Query(mut q): Query<UiQuery>,
) -> Response {
    q.class = Some(class);
    failures_page(state, q, None).await
}

pub async fn failure_fingerprint(
    State(state): State<AppState>,
    Path(fp): Path<String>,
    Query(q): Query<UiQuery>,
) -> Response {
    failures_page(state, q, Some(fp)).await
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
pub async fn api_run_related(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunLinksView>, ApiError> {
    let v = load_run(&state, &id, 0).await?;
    Ok(Json(views::run_links(&state, &v).await?))
}

// ---------------------------------------------------------------- JSON

pub async fn api_slos(
    State(state): State<AppState>,
    Query(q): Query<UiQuery>,
) -> Result<Json<SlosView>, ApiError> {
    Ok(Json(views::slos(&state, &q.normalized()).await?))
}

pub async fn api_slo(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<UiQuery>,
) -> Result<Json<SloDetailView>, ApiError> {
    Ok(Json(
        views::slo_detail(&state, &name, &q.normalized()).await?,
    ))
}

pub async fn api_slo_events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<UiQuery>,
    Query(p): Query<EventsPageQuery>,
) -> Result<Json<SloEventsView>, ApiError> {
    Ok(Json(
        views::slo_events(&state, &name, &q.normalized(), p.offset).await?,
    ))
}

pub async fn api_nightly(
    State(state): State<AppState>,
    Query(q): Query<UiQuery>,
) -> Result<Json<NightlyView>, ApiError> {
    Ok(Json(views::nightly(&state, &q.normalized(), None).await?))
}

pub async fn api_nightly_jobs(
    State(state): State<AppState>,
    Path(repository): Path<String>,
    Query(q): Query<UiQuery>,
) -> Result<Json<NightlyView>, ApiError> {
    Ok(Json(
        views::nightly(&state, &q.normalized(), Some(repository)).await?,
    ))
}

pub async fn api_failures(
    State(state): State<AppState>,
    Query(q): Query<UiQuery>,
) -> Result<Json<FailuresView>, ApiError> {
    Ok(Json(views::failures(&state, &q.normalized(), None).await?))
}

pub async fn api_failure_class(
    State(state): State<AppState>,
    Path(class): Path<String>,
    Query(mut q): Query<UiQuery>,
) -> Result<Json<FailuresView>, ApiError> {
    q.class = Some(class);
    Ok(Json(views::failures(&state, &q.normalized(), None).await?))
}

pub async fn api_failure_fingerprint(
    State(state): State<AppState>,
    Path(fp): Path<String>,
    Query(q): Query<UiQuery>,
) -> Result<Json<FailuresView>, ApiError> {
    Ok(Json(
        views::failures(&state, &q.normalized(), Some(fp)).await?,
    ))
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

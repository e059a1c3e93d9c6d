//! The SLO pages: the overview of every SLO (`/`), one SLO's trend,
//! repositories and breaching tests (`/slos/{slo}`), the bad events that
//! spent its budget (`/slos/{slo}/events`), and their JSON under
//! `/api/v1/slos`.

use super::{Filters, Nav, error_page, html_response, layout};
use super::{feed_hint, fmt_time, grafana_link, pct, plural, state_symbol};
use crate::http::views::{self, UiQuery};
use crate::http::views::{SloDetailView, SloEventsView, SloRow, SlosView, enc, test_path};
use crate::http::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

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

pub(crate) async fn overview(State(state): State<AppState>, Query(q): Query<UiQuery>) -> Response {
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
pub(crate) struct EventsPageQuery {
    #[serde(default)]
    pub offset: usize,
}

const SLO_FILTERS: Filters = Filters {
    repository: true,
    ..Filters::NONE
};

pub(crate) async fn slo(
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

pub(crate) async fn slo_events(
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

pub(crate) async fn api_slos(
    State(state): State<AppState>,
    Query(q): Query<UiQuery>,
) -> Result<Json<SlosView>, ApiError> {
    Ok(Json(views::slos(&state, &q.normalized()).await?))
}

pub(crate) async fn api_slo(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<UiQuery>,
) -> Result<Json<SloDetailView>, ApiError> {
    Ok(Json(
        views::slo_detail(&state, &name, &q.normalized()).await?,
    ))
}

pub(crate) async fn api_slo_events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<UiQuery>,
    Query(p): Query<EventsPageQuery>,
) -> Result<Json<SloEventsView>, ApiError> {
    Ok(Json(
        views::slo_events(&state, &name, &q.normalized(), p.offset).await?,
    ))
}

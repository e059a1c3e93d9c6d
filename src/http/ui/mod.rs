//! The drill-down web UI: server-rendered pages (maud escapes every value from
//! the data), one embedded stylesheet, no JavaScript. docs/ui.md describes the
//! pages, filters and URL scheme; [`super::views`] builds the data, which the
//! JSON API serves too.
//!
//! This file holds what every page shares: the layout with its navigation
//! and filters, the HTML answer and its headers, the error page, the
//! stylesheet and the small formatting helpers. One file per page family
//! with its JSON handlers: `slos`, `nightly`, `failures`, `test_pages` (the
//! tests index and a test's page) and `run`.

pub(super) mod failures;
pub(super) mod nightly;
pub(super) mod run;
pub(super) mod slos;
pub(super) mod test_pages;

use super::views::{UiQuery, enc, safe_url};
use super::{ApiError, AppState};
use crate::store::ui::RepositoryRow;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

const CSS: &str = include_str!("app.css");

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

pub(crate) async fn css() -> Response {
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

/// `1 occurrence`, `2 occurrences`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
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

fn class_path(class: &str) -> String {
    format!("/failures/classes/{}", enc(class))
}

fn fingerprint_path(fp: &str) -> String {
    format!("/failures/fingerprints/{}", enc(fp))
}

fn outcome_symbol(o: crate::model::TestOutcome) -> &'static str {
    match o {
        crate::model::TestOutcome::Passed => "✓",
        crate::model::TestOutcome::Failed => "✗",
        crate::model::TestOutcome::Errored => "!",
        crate::model::TestOutcome::Skipped => "–",
    }
}

//! The data behind the drill-down pages, built once and served twice: as
//! HTML by [`super::ui`] and as JSON under `/api/v1/` (docs/ui.md).

use super::{ApiError, AppState};
use crate::flaky;
use crate::slo::{self, EventCounts, SloId};
use crate::store::ui::{
    FailureKey, FailureOccurrence, NightlyFailure, RepositoryRow, RunFilter, SinceGreen,
    TestExecutionRow,
};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Everything but RFC 3986 unreserved characters is percent-encoded: safe in a
/// path segment (a `/` in a repository becomes `%2F`) and in a query value.
pub const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// The page of a test: each of the three parts is one percent-encoded segment.
pub fn test_path(repository: &str, context: &str, test: &str) -> String {
    format!("/tests/{}/{}/{}", enc(repository), enc(context), enc(test))
}

/// A URL from the data, only when it is http(s) and has nothing that could
/// break out of an attribute or smuggle a scheme: else `None` (no link).
pub fn safe_url(url: &str) -> Option<&str> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let ok = (lower.starts_with("http://") || lower.starts_with("https://"))
        && url.len() > 8
        && !url
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '"' | '<' | '>' | '`'));
    ok.then_some(url)
}

/// The filters and options of every page, as they appear in the query string.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct UiQuery {
    pub repository: Option<String>,
    pub context: Option<String>,
    pub trigger: Option<String>,
    /// A duration like `7d`, `24h`, `2weeks`.
    pub window: Option<String>,
    /// Nightly grid: number of days.
    pub days: Option<u32>,
    /// Nightly grid: `state` (default) or `runtime`.
    pub color: Option<String>,
    /// Failures: one failure class.
    pub class: Option<String>,
    /// Failures: only fingerprints first seen within `ui.new_window` (`1`, `on`, `true`).
    pub new: Option<String>,
    /// Failures: `count` (default) or `last_seen` (the most recent first).
    pub sort: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl UiQuery {
    /// Empty form fields mean "no filter".
    pub fn normalized(&self) -> UiQuery {
        UiQuery {
            repository: nonempty(&self.repository),
            context: nonempty(&self.context),
            trigger: nonempty(&self.trigger),
            window: nonempty(&self.window),
            days: self.days,
            color: nonempty(&self.color),
            class: nonempty(&self.class),
            new: nonempty(&self.new),
            sort: nonempty(&self.sort),
        }
    }

    /// `?new=1` (or `on`, `true`): only NEW fingerprints.
    pub fn new_only(&self) -> bool {
        matches!(self.new.as_deref(), Some("1" | "on" | "true" | "yes"))
    }

    pub fn filter(&self) -> RunFilter {
        RunFilter {
            repository: self.repository.clone(),
            context: self.context.clone(),
            trigger: self.trigger.clone(),
        }
    }

    pub fn window_or(&self, default: std::time::Duration) -> Result<Duration, ApiError> {
        let d = match &self.window {
            None => default,
            Some(w) => humantime::parse_duration(w).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("window {w:?}: {e} (e.g. 24h, 7d, 4weeks)"),
                )
            })?,
        };
        if d.is_zero() || d > std::time::Duration::from_secs(400 * 86400) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "window must be longer than zero and at most 400 days",
            ));
        }
        Duration::from_std(d)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "window out of range"))
    }

    /// The query string of the filters (repository, context, trigger, window),
    /// starting with `?`, or empty: carried by the navigation between pages.
    pub fn filter_query(&self) -> String {
        let parts: Vec<String> = [
            ("repository", &self.repository),
            ("context", &self.context),
            ("trigger", &self.trigger),
            ("window", &self.window),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// A window for people: `28 days`, `6 hours`, `1 day 12 hours`.
pub fn human(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    let unit = |n: i64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    let (days, hours, minutes) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(unit(days, "day"));
    }
    if hours > 0 {
        parts.push(unit(hours, "hour"));
    }
    if minutes > 0 || parts.is_empty() {
        parts.push(unit(minutes, "minute"));
    }
    parts.join(" ")
}

// ---------------------------------------------------------------- overview

#[derive(Debug, Clone, Serialize)]
pub struct SloWindow {
    pub window: String,
    pub good: u64,
    pub total: u64,
    pub sli: Option<f64>,
    pub burn_rate: Option<f64>,
}

impl SloWindow {
    /// The window's numbers as `/metrics` exports them ([`EventCounts::window_status`]).
    fn new(window: String, status: slo::WindowStatus) -> SloWindow {
        SloWindow {
            window,
            good: status.good,
            total: status.total,
            sli: status.sli,
            burn_rate: status.burn_rate,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SloRow {
    pub slo: String,
    pub description: String,
    pub objective: f64,
    pub good: u64,
    pub total: u64,
    pub sli: Option<f64>,
    pub budget_remaining: f64,
    /// `no_data`, `ok`, `burning` (the last day burns faster than 1) or `exhausted`.
    pub status: String,
    /// For an exhausted budget: when the rolling period recovers if no further bad events arrive.
    pub recovers_at: Option<DateTime<Utc>>,
    /// For an exhausted budget: since when it has been overspent without a break
    /// (the start of the hour whose events overspent it).
    pub exhausted_since: Option<DateTime<Utc>>,
    pub windows: Vec<SloWindow>,
    /// What `good` and `total` count: `events`, or `tests` for test_success
    /// (tests meeting the objective / tests evaluated).
    pub unit: String,
    /// test_success only: the tests breaching the objective over the
    /// period, worst first, at most [`BREACHING_TESTS_LIMIT`] (`total −
    /// good` says how many there are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaching_tests: Option<Vec<BreachingTest>>,
    /// test_success only: the execution-level ratio over the period (every
    /// test execution, good when it passed), a secondary series.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executions: Option<SloWindow>,
}

/// A test that breaches the test_success objective over the period.
#[derive(Debug, Clone, Serialize)]
pub struct BreachingTest {
    pub repository: String,
    pub context: String,
    pub test: String,
    /// Passed, failed or errored executions in the period (skipped ones are not runs).
    pub runs: u64,
    pub passes: u64,
    /// passes / runs.
    pub success_ratio: f64,
    /// The test's page.
    pub url: String,
}

/// At most this many breaching tests are listed per SLO view.
pub const BREACHING_TESTS_LIMIT: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct SlosView {
    pub generated_at: DateTime<Utc>,
    pub repository: Option<String>,
    pub period: String,
    pub slos: Vec<SloRow>,
}

const HOUR_MS: i64 = 3_600_000;

/// The SLO settings every SLO view needs.
struct SloSettings {
    now: DateTime<Utc>,
    period: Duration,
    windows: Vec<Duration>,
}

fn slo_settings(state: &AppState) -> SloSettings {
    SloSettings {
        now: state.clock.now(),
        period: Duration::from_std(state.config.slo.period).unwrap_or(Duration::days(28)),
        windows: state
            .config
            .slo
            .windows
            .iter()
            .filter_map(|w| Duration::from_std(*w).ok())
            .collect(),
    }
}

fn objective_of(state: &AppState, id: SloId) -> f64 {
    state
        .config
        .slo
        .objectives
        .get(id.as_str())
        .copied()
        .unwrap_or(id.default_objective())
}

/// The SLO named in a path, or 404.
pub fn slo_id(name: &str) -> Result<SloId, ApiError> {
    SloId::ALL
        .into_iter()
        .find(|id| id.as_str() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = SloId::ALL.iter().map(|i| i.as_str()).collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no SLO {name:?} (known: {})", known.join(", ")),
            )
        })
}

/// Hourly events per SLO over two periods back from now (the second for
/// "exhausted since"), oldest first.
async fn slo_buckets(
    state: &AppState,
    s: &SloSettings,
    repository: Option<String>,
) -> Result<HashMap<String, Vec<(i64, EventCounts)>>, ApiError> {
    let since = s.now - s.period - s.period;
    let buckets = state
        .store
        .read(move |st| st.slo_hourly(since, repository.as_deref()))
        .await?;
    let mut per_slo: HashMap<String, Vec<(i64, EventCounts)>> = HashMap::new();
    for b in buckets {
        per_slo
            .entry(b.slo)
            .or_default()
            .push((b.hour_ms, b.counts));
    }
    Ok(per_slo)
}

impl SloSettings {
    /// The windows an SLO row shows, in the order of [`slo_windows`]'s
    /// answer: the period, `slo.windows`, then the last day (for "burning").
    fn row_windows(&self) -> Vec<Duration> {
        let mut w = vec![self.period];
        w.extend(self.windows.iter().copied());
        w.push(Duration::days(1));
        w
    }
}

/// The events of each of [`SloSettings::row_windows`] per SLO, counted as
/// `/metrics` counts them ([`crate::store::Store::slo_counts_in`]: rolling,
/// exact), so the pages and the gauges show the same numbers.
async fn slo_windows(
    state: &AppState,
    s: &SloSettings,
    repository: Option<String>,
) -> Result<Vec<HashMap<String, EventCounts>>, ApiError> {
    let windows: Vec<std::time::Duration> = s
        .row_windows()
        .iter()
        .map(|w| w.to_std().unwrap_or_default())
        .collect();
    let now = s.now;
    Ok(state
        .store
        .read(move |st| st.slo_counts_in_windows(now, &windows, repository.as_deref()))
        .await?)
}

/// One SLO's counts in each of [`SloSettings::row_windows`].
fn counts_of(windows: &[HashMap<String, EventCounts>], id: SloId) -> Vec<EventCounts> {
    windows
        .iter()
        .map(|w| w.get(id.as_str()).copied().unwrap_or_default())
        .collect()
}

/// An SLO row: good/total, SLI, budget and burn rates from `counts` (the
/// events of [`SloSettings::row_windows`]), the recovery and exhaustion
/// dates from the hourly `events`.
fn slo_row(
    id: SloId,
    objective: f64,
    events: &[(i64, EventCounts)],
    counts: &[EventCounts],
    s: &SloSettings,
) -> SloRow {
    let now_ms = s.now.timestamp_millis();
    let period_ms = s.period.num_milliseconds();
    let all = counts.first().copied().unwrap_or_default();
    let budget_remaining = all.budget_remaining(objective);
    let day = counts.last().copied().unwrap_or_default();
    let from = (now_ms - period_ms).div_euclid(HOUR_MS) * HOUR_MS;
    let in_period = &events[events.partition_point(|(h, _)| *h < from)..];
    // The dates walk the hourly buckets (hour-granular, docs/ui.md); they are
    // given only for a budget the exact count says is overspent (in the hour
    // it goes over, the buckets may not say so yet: no date then).
    let (recovers_at, exhausted_since) = if budget_remaining < 0.0 {
        (
            slo::budget_recovery_ms(in_period, period_ms, HOUR_MS, objective)
                .map(crate::store::from_ms),
            slo::exhausted_since_ms(events, period_ms, HOUR_MS, now_ms, objective)
                .map(crate::store::from_ms),
        )
    } else {
        (None, None)
    };
    let status = if all.total == 0 {
        "no_data"
    } else if budget_remaining < 0.0 {
        "exhausted"
    } else if day.burn_rate(objective).is_some_and(|b| b > 1.0) {
        "burning"
    } else {
        "ok"
    };
    SloRow {
        slo: id.as_str().into(),
        description: id.description().into(),
        objective,
        good: all.good,
        total: all.total,
        sli: all.sli(),
        budget_remaining,
        status: status.into(),
        recovers_at,
        exhausted_since,
        windows: s
            .windows
            .iter()
            .zip(counts.iter().skip(1))
            .map(|(w, c)| SloWindow::new(human(*w), c.window_status(objective)))
            .collect(),
        unit: "events".into(),
        breaching_tests: None,
        executions: None,
    }
}

/// test_success judged per test (docs/metrics.md): over the period and each
/// window of at least a day, each test with at least `slo.test_min_runs`
/// runs is an event, good when its success ratio is at least the
/// objective; from the tests' per-day counters (whole UTC days).
/// `executions` are the stored execution events (the secondary ratio).
pub struct TestSuccessView {
    pub row: SloRow,
    /// Per repository over the period: (repository, tests meeting / evaluated).
    pub repositories: Vec<(String, EventCounts)>,
}

async fn test_success_view(
    state: &AppState,
    s: &SloSettings,
    repository: Option<String>,
    executions: EventCounts,
) -> Result<TestSuccessView, ApiError> {
    let id = SloId::TestSuccess;
    let objective = objective_of(state, id);
    let min_runs = state.config.slo.test_min_runs;
    let now_ms = s.now.timestamp_millis();
    // The period first, then the windows of at least a day.
    let mut windows: Vec<Duration> = vec![s.period];
    windows.extend(s.windows.iter().filter(|w| w.num_days() >= 1).copied());
    let first_days: Vec<i64> = windows
        .iter()
        .map(|w| slo::first_test_day(now_ms, w.num_milliseconds()))
        .collect();
    let (tests, names) = state
        .store
        .read(move |st| {
            let tests: Vec<_> = st
                .test_runs_in_windows(&first_days)?
                .into_iter()
                .filter(|t| repository.as_ref().is_none_or(|r| *r == t.repository))
                .collect();
            let mut breaching: Vec<(i64, slo::TestRuns)> = tests
                .iter()
                .filter(|t| t.windows[0].meets(min_runs, objective) == Some(false))
                .map(|t| (t.test_id, t.windows[0]))
                .collect();
            breaching.sort_by(|(a_id, a), (b_id, b)| {
                let ratio = |t: &slo::TestRuns| t.success_ratio().unwrap_or(0.0);
                ratio(a)
                    .total_cmp(&ratio(b))
                    .then(b.runs.cmp(&a.runs))
                    .then(a_id.cmp(b_id))
            });
            breaching.truncate(BREACHING_TESTS_LIMIT);
            let ids: Vec<i64> = breaching.iter().map(|(id, _)| *id).collect();
            let names = st.test_names(&ids)?;
            let listed: Vec<BreachingTest> = breaching
                .into_iter()
                .filter_map(|(id, runs)| {
                    let n = names.get(&id)?;
                    Some(BreachingTest {
                        url: test_path(&n.repository, &n.context, &n.name),
                        repository: n.repository.clone(),
                        context: n.context.clone(),
                        test: n.name.clone(),
                        runs: runs.runs,
                        passes: runs.passes,
                        success_ratio: runs.success_ratio().unwrap_or(0.0),
                    })
                })
                .collect();
            Ok((tests, listed))
        })
        .await?;
    let counted = slo::test_success_by_window(
        tests
            .iter()
            .map(|t| (t.repository.as_str(), t.windows.as_slice())),
        windows.len(),
        min_runs,
        objective,
    );
    let counts = |i: usize| counted.all[i];
    let all = counts(0);
    let budget_remaining = all.budget_remaining(objective);
    let day_index = windows
        .iter()
        .skip(1)
        .position(|w| w.num_days() == 1)
        .map(|i| i + 1);
    let status = if all.total == 0 {
        "no_data"
    } else if budget_remaining < 0.0 {
        "exhausted"
    } else if day_index
        .and_then(|i| counts(i).burn_rate(objective))
        .is_some_and(|b| b > 1.0)
    {
        "burning"
    } else {
        "ok"
    };
    let per_repo: BTreeMap<String, EventCounts> = counted
        .by_repository
        .into_iter()
        .map(|(repo, c)| (repo, c[0]))
        .collect();
    let ex = executions;
    let row = SloRow {
        slo: id.as_str().into(),
        description: id.description().into(),
        objective,
        good: all.good,
        total: all.total,
        sli: all.sli(),
        budget_remaining,
        status: status.into(),
        recovers_at: None,
        exhausted_since: None,
        windows: windows
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, w)| SloWindow::new(human(*w), counts(i).window_status(objective)))
            .collect(),
        unit: "tests".into(),
        breaching_tests: Some(names),
        executions: Some(SloWindow {
            window: human(s.period),
            good: ex.good,
            total: ex.total,
            sli: ex.sli(),
            burn_rate: None,
        }),
    };
    Ok(TestSuccessView {
        row,
        repositories: per_repo.into_iter().filter(|(_, c)| c.total > 0).collect(),
    })
}

pub async fn slos(state: &AppState, q: &UiQuery) -> Result<SlosView, ApiError> {
    let s = slo_settings(state);
    let mut per_slo = slo_buckets(state, &s, q.repository.clone()).await?;
    let windows = slo_windows(state, &s, q.repository.clone()).await?;
    let mut rows = Vec::new();
    for id in SloId::ALL {
        let events = per_slo.remove(id.as_str()).unwrap_or_default();
        let counts = counts_of(&windows, id);
        rows.push(if id == SloId::TestSuccess {
            test_success_view(state, &s, q.repository.clone(), counts[0])
                .await?
                .row
        } else {
            slo_row(id, objective_of(state, id), &events, &counts, &s)
        });
    }
    Ok(SlosView {
        generated_at: s.now,
        repository: q.repository.clone(),
        period: human(s.period),
        slos: rows,
    })
}

/// One UTC day of an SLO's period.
#[derive(Debug, Clone, Serialize)]
pub struct SloDay {
    pub day: NaiveDate,
    pub good: u64,
    pub total: u64,
    /// The SLI of the day's events.
    pub sli: Option<f64>,
    /// The error budget left over the rolling period that ends with the day
    /// (today: now).
    pub budget_remaining: f64,
}

/// One repository's share of an SLO's period.
#[derive(Debug, Clone, Serialize)]
pub struct SloRepository {
    pub forge: String,
    pub repository: String,
    pub good: u64,
    pub total: u64,
    pub bad: u64,
    pub sli: Option<f64>,
    /// bad / all bad events of the SLO in the period.
    pub share_of_bad: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SloDetailView {
    pub generated_at: DateTime<Utc>,
    pub repository: Option<String>,
    pub period: String,
    pub slo: SloRow,
    /// Oldest first, from the day the period starts to today.
    pub days: Vec<SloDay>,
    /// Repositories with events in the period, most bad events first.
    pub repositories: Vec<SloRepository>,
}

pub async fn slo_detail(
    state: &AppState,
    name: &str,
    q: &UiQuery,
) -> Result<SloDetailView, ApiError> {
    let id = slo_id(name)?;
    let s = slo_settings(state);
    let objective = objective_of(state, id);
    let events = slo_buckets(state, &s, q.repository.clone())
        .await?
        .remove(id.as_str())
        .unwrap_or_default();
    let counts = counts_of(&slo_windows(state, &s, q.repository.clone()).await?, id);
    if id == SloId::TestSuccess {
        // Judged per test over whole windows: no daily series; the
        // repositories by tests meeting / evaluated.
        let v = test_success_view(state, &s, q.repository.clone(), counts[0]).await?;
        let all_bad: u64 = v.repositories.iter().map(|(_, c)| c.bad()).sum();
        let mut repositories: Vec<SloRepository> = v
            .repositories
            .into_iter()
            .map(|(repository, c)| SloRepository {
                forge: String::new(),
                repository,
                good: c.good,
                total: c.total,
                bad: c.bad(),
                sli: c.sli(),
                share_of_bad: if all_bad == 0 {
                    0.0
                } else {
                    c.bad() as f64 / all_bad as f64
                },
            })
            .collect();
        repositories.sort_by(|a, b| {
            b.bad
                .cmp(&a.bad)
                .then(b.total.cmp(&a.total))
                .then(a.repository.cmp(&b.repository))
        });
        return Ok(SloDetailView {
            generated_at: s.now,
            repository: q.repository.clone(),
            period: human(s.period),
            slo: v.row,
            days: Vec::new(),
            repositories,
        });
    }
    let row = slo_row(id, objective, &events, &counts, &s);
    let now_ms = s.now.timestamp_millis();
    let period_ms = s.period.num_milliseconds();
    let first = (s.now - s.period).date_naive();
    let today = s.now.date_naive();
    let days = first
        .iter_days()
        .take_while(|d| *d <= today)
        .map(|d| {
            let start = d
                .and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc()
                .timestamp_millis();
            let end = start + 86_400_000;
            let c = slo::sum_between(&events, start, end);
            SloDay {
                day: d,
                good: c.good,
                total: c.total,
                sli: c.sli(),
                budget_remaining: slo::rolling_at(&events, end.min(now_ms), period_ms, HOUR_MS)
                    .budget_remaining(objective),
            }
        })
        .collect();
    let since = s.now - s.period;
    let repository = q.repository.clone();
    let per_repo = state
        .store
        .read(move |st| st.slo_by_repository(id.as_str(), since))
        .await?;
    let per_repo: Vec<_> = per_repo
        .into_iter()
        .filter(|r| repository.as_ref().is_none_or(|p| *p == r.repository))
        .collect();
    let all_bad: u64 = per_repo.iter().map(|r| r.counts.bad()).sum();
    let mut repositories: Vec<SloRepository> = per_repo
        .into_iter()
        .map(|r| SloRepository {
            bad: r.counts.bad(),
            share_of_bad: if all_bad == 0 {
                0.0
            } else {
                r.counts.bad() as f64 / all_bad as f64
            },
            sli: r.counts.sli(),
            good: r.counts.good,
            total: r.counts.total,
            forge: r.forge,
            repository: r.repository,
        })
        .collect();
    repositories.sort_by(|a, b| {
        b.bad
            .cmp(&a.bad)
            .then(b.total.cmp(&a.total))
            .then(a.repository.cmp(&b.repository))
    });
    Ok(SloDetailView {
        generated_at: s.now,
        repository: q.repository.clone(),
        period: human(s.period),
        slo: row,
        days,
        repositories,
    })
}

/// A bad event with links to what it is about.
#[derive(Debug, Clone, Serialize)]
pub struct BadEventView {
    #[serde(flatten)]
    pub event: crate::store::ui::BadEvent,
    /// The change on its forge (GitHub pull request, GitLab merge request).
    pub change_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SloEventsView {
    pub slo: String,
    pub description: String,
    pub repository: Option<String>,
    pub period: String,
    pub since: DateTime<Utc>,
    /// All bad events of the period (of the repository, when given).
    pub bad: u64,
    pub offset: usize,
    pub limit: usize,
    /// Newest first.
    pub events: Vec<BadEventView>,
}

/// Bad events per page of `/slos/{slo}/events`.
pub const EVENTS_PER_PAGE: usize = 100;

pub async fn slo_events(
    state: &AppState,
    name: &str,
    q: &UiQuery,
    offset: usize,
) -> Result<SloEventsView, ApiError> {
    let id = slo_id(name)?;
    if offset > 100_000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "offset must be at most 100000",
        ));
    }
    let s = slo_settings(state);
    // Whole hours, as the hourly counts behind the SLI.
    let since_ms = (s.now - s.period).timestamp_millis().div_euclid(HOUR_MS) * HOUR_MS;
    let since = crate::store::from_ms(since_ms);
    let repository = q.repository.clone();
    let (events, hourly) = state
        .store
        .read(move |st| {
            Ok((
                st.slo_bad_events(
                    id.as_str(),
                    since,
                    repository.as_deref(),
                    offset,
                    EVENTS_PER_PAGE,
                )?,
                st.slo_hourly(since, repository.as_deref())?,
            ))
        })
        .await?;
    let bad = hourly
        .iter()
        .filter(|b| b.slo == id.as_str())
        .map(|b| b.counts.bad())
        .sum();
    let gitlab_web = gitlab_web_base(&state.config.gitlab.api_url);
    let events = events
        .into_iter()
        .map(|e| BadEventView {
            change_url: e
                .change_number
                .and_then(|n| change_url(&e.forge, &e.repository, n, &gitlab_web)),
            event: e,
        })
        .collect();
    Ok(SloEventsView {
        slo: id.as_str().into(),
        description: id.description().into(),
        repository: q.repository.clone(),
        period: human(s.period),
        since,
        bad,
        offset,
        limit: EVENTS_PER_PAGE,
        events,
    })
}

/// A commit's page on its forge; none for generic repositories.
pub fn commit_url(forge: &str, repository: &str, sha: &str, gitlab_web: &str) -> Option<String> {
    if !super::text::safe_repository_path(repository)
        || !sha.chars().all(|c| c.is_ascii_hexdigit())
        || sha.is_empty()
    {
        return None;
    }
    let path: String = repository.split('/').map(enc).collect::<Vec<_>>().join("/");
    match forge {
        "github" => Some(format!("https://github.com/{path}/commit/{sha}")),
        "gitlab" => Some(format!("{gitlab_web}/{path}/-/commit/{sha}")),
        _ => None,
    }
}

/// What a run page links: the forge's change and commit, other attempts, the
/// last green run of its context and the dependency changes since.
#[derive(Debug, Clone, Serialize)]
pub struct RunLinksView {
    pub run_id: i64,
    pub change_url: Option<String>,
    pub commit_url: Option<String>,
    #[serde(flatten)]
    pub related: crate::store::ui::RunRelated,
}

pub async fn run_links(
    state: &AppState,
    run: &crate::store::RunView,
) -> Result<RunLinksView, ApiError> {
    let id = run.id;
    let related = state.store.read(move |s| s.run_related(id)).await?;
    let gitlab_web = gitlab_web_base(&state.config.gitlab.api_url);
    Ok(RunLinksView {
        run_id: run.id,
        change_url: run
            .change
            .as_ref()
            .and_then(|c| change_url(&run.forge, &run.repository, c.number, &gitlab_web)),
        commit_url: commit_url(&run.forge, &run.repository, &run.commit, &gitlab_web),
        related,
    })
}

/// A change's page on its forge; none for generic repositories.
pub fn change_url(forge: &str, repository: &str, number: i64, gitlab_web: &str) -> Option<String> {
    if !super::text::safe_repository_path(repository) {
        return None;
    }
    let path: String = repository.split('/').map(enc).collect::<Vec<_>>().join("/");
    match forge {
        "github" => Some(format!("https://github.com/{path}/pull/{number}")),
        "gitlab" => Some(format!("{gitlab_web}/{path}/-/merge_requests/{number}")),
        _ => None,
    }
}

// ---------------------------------------------------------------- nightly

/// One scheduled run in a nightly cell.
#[derive(Debug, Clone, Serialize)]
pub struct NightlyJob {
    pub run_id: i64,
    pub context: String,
    pub commit: String,
    pub state: String,
    pub duration_seconds: Option<f64>,
    /// Run time / the median run time of its context in the grid.
    pub runtime_ratio: Option<f64>,
    pub url: Option<String>,
    pub failure: Option<NightlyFailure>,
    /// For a failed run: dependency changes since the last green run of its context.
    pub since_green: Option<SinceGreen>,
}

/// A cell of the nightly grid: every scheduled run of a row (a repository,
/// or one context of it) queued on one UTC day.
#[derive(Debug, Clone, Serialize)]
pub struct NightlyCellView {
    pub day: NaiveDate,
    /// The worst state of the day's runs (failure, timed_out, error,
    /// cancelled, running, pending, skipped, success).
    pub state: String,
    /// How many runs the cell summarises, and how many of them failed
    /// (failure, error or timed_out).
    pub runs: u32,
    pub failed: u32,
    /// The run that gives the cell its state: the latest run in the worst state.
    pub run_id: i64,
    pub context: String,
    pub commit: String,
    /// The slowest run relative to the median of its context.
    pub runtime_ratio: Option<f64>,
    /// Every run of the cell, the worst first.
    pub jobs: Vec<NightlyJob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NightlyRow {
    pub forge: String,
    pub repository: String,
    /// In a repository's jobs grid: the context of the row.
    pub context: Option<String>,
    /// The median run time of the row (one context: the jobs grid only).
    pub median_seconds: Option<f64>,
    /// One entry per day of `days`; `null` when no scheduled run that day.
    pub cells: Vec<Option<NightlyCellView>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NightlyView {
    /// The UTC days, oldest first (the page shows the newest first).
    pub days: Vec<NaiveDate>,
    pub color: String,
    /// Set for a repository's jobs × days grid (`/nightly/{repository}`).
    pub repository: Option<String>,
    pub rows: Vec<NightlyRow>,
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// How bad a run state is for a nightly cell: higher is worse.
pub fn state_severity(state: &str) -> u8 {
    match state {
        "failure" => 7,
        "timed_out" => 6,
        "error" => 5,
        "cancelled" => 4,
        "running" => 3,
        "pending" => 2,
        "skipped" => 1,
        "success" => 0,
        _ => 3,
    }
}

/// Whether a run state counts as failed in a cell's `failed/runs`.
pub fn is_failed(state: &str) -> bool {
    matches!(state, "failure" | "error" | "timed_out")
}

/// The nightly grid: per repository (or, with `jobs_of`, per context of that
/// repository) and UTC day, every scheduled run of the day summarised.
pub async fn nightly(
    state: &AppState,
    q: &UiQuery,
    jobs_of: Option<String>,
) -> Result<NightlyView, ApiError> {
    let n = q.days.unwrap_or(state.config.ui.nightly_days);
    if n == 0 || n > 92 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "days must be between 1 and 92",
        ));
    }
    let color = match q.color.as_deref() {
        None | Some("state") => "state",
        Some("runtime") => "runtime",
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("color {other:?}: expected state or runtime"),
            ));
        }
    };
    let today = state.clock.now().date_naive();
    let first = today - Duration::days(n as i64 - 1);
    let days: Vec<NaiveDate> = (0..n as i64).map(|i| first + Duration::days(i)).collect();
    let since = first.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let until = since + Duration::days(n as i64);
    let mut filter = q.filter();
    filter.trigger = None;
    if let Some(r) = &jobs_of {
        filter.repository = Some(r.clone());
    }
    let (runs, mut greens) = state
        .store
        .read(move |s| {
            let runs = s.nightly_runs(since, until, &filter)?;
            let mut greens = HashMap::new();
            for r in runs.iter().filter(|r| is_failed(&r.state)) {
                greens.insert(r.run_id, s.dependencies_since_green(r.run_id)?);
            }
            Ok((runs, greens))
        })
        .await?;
    // Medians per repository and context.
    let mut durations: HashMap<(&str, &str, &str), Vec<f64>> = HashMap::new();
    for r in &runs {
        if let Some(d) = r.duration_seconds {
            durations
                .entry((&r.forge, &r.repository, &r.context))
                .or_default()
                .push(d);
        }
    }
    let medians: HashMap<(String, String, String), f64> = durations
        .into_iter()
        .filter_map(|((f, r, c), mut v)| {
            median(&mut v).map(|m| ((f.to_string(), r.to_string(), c.to_string()), m))
        })
        .collect();
    type RowKey = (String, String, Option<String>);
    let mut rows: BTreeMap<RowKey, Vec<Vec<NightlyJob>>> = BTreeMap::new();
    for r in runs {
        let Some(i) = days.iter().position(|d| *d == r.day) else {
            continue;
        };
        let context = jobs_of.is_some().then(|| r.context.clone());
        let m = medians
            .get(&(r.forge.clone(), r.repository.clone(), r.context.clone()))
            .copied();
        let job = NightlyJob {
            runtime_ratio: match (r.duration_seconds, m) {
                (Some(d), Some(m)) if m > 0.0 => Some(d / m),
                _ => None,
            },
            since_green: greens.remove(&r.run_id),
            run_id: r.run_id,
            context: r.context,
            commit: r.commit,
            state: r.state,
            duration_seconds: r.duration_seconds,
            url: r.url,
            failure: r.failure,
        };
        rows.entry((r.repository, r.forge, context))
            .or_insert_with(|| vec![Vec::new(); days.len()])[i]
            .push(job);
    }
    let rows = rows
        .into_iter()
        .map(|((repository, forge, context), per_day)| {
            let median_seconds = context.as_ref().and_then(|c| {
                medians
                    .get(&(forge.clone(), repository.clone(), c.clone()))
                    .copied()
            });
            let cells = per_day
                .into_iter()
                .zip(&days)
                .map(|(jobs, day)| summarise(*day, jobs))
                .collect();
            NightlyRow {
                forge,
                repository,
                context,
                median_seconds,
                cells,
            }
        })
        .collect();
    Ok(NightlyView {
        days,
        color: color.into(),
        repository: jobs_of,
        rows,
    })
}

/// A cell from the day's runs (oldest first): the worst state, the count, the
/// runs worst first (then newest first).
fn summarise(day: NaiveDate, mut jobs: Vec<NightlyJob>) -> Option<NightlyCellView> {
    jobs.reverse();
    jobs.sort_by_key(|j| std::cmp::Reverse(state_severity(&j.state)));
    let worst = jobs.first()?;
    Some(NightlyCellView {
        day,
        state: worst.state.clone(),
        runs: jobs.len() as u32,
        failed: jobs.iter().filter(|j| is_failed(&j.state)).count() as u32,
        run_id: worst.run_id,
        context: worst.context.clone(),
        commit: worst.commit.clone(),
        runtime_ratio: jobs
            .iter()
            .filter_map(|j| j.runtime_ratio)
            .max_by(|a, b| a.total_cmp(b)),
        jobs,
    })
}

// ---------------------------------------------------------------- failures

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct TestRef {
    pub repository: String,
    pub context: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExampleRun {
    pub run_id: i64,
    pub at: DateTime<Utc>,
    pub repository: String,
    pub context: String,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FingerprintRow {
    /// The fingerprint hash; `null` groups a class's failures without one.
    pub fingerprint: Option<String>,
    pub class: String,
    pub category: String,
    pub normalized: Option<String>,
    /// The latest evidence line.
    pub evidence: String,
    pub occurrences: u64,
    /// Occurrences per day of the window, oldest first.
    pub trend: Vec<u64>,
    pub first_seen: Option<DateTime<Utc>>,
    /// The newest occurrence in the window.
    pub last_seen: DateTime<Utc>,
    pub is_new: bool,
    pub repositories: Vec<String>,
    pub tests: Vec<TestRef>,
    pub examples: Vec<ExampleRun>,
    /// A link to the forge's new-issue form, prefilled; `null` for generic repositories.
    pub create_issue_url: Option<String>,
    /// Title and body of the issue, for copy and paste where there is no form.
    pub issue_title: String,
    pub issue_body: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassRow {
    pub class: String,
    pub category: String,
    pub occurrences: u64,
    pub last_seen: DateTime<Utc>,
    pub trend: Vec<u64>,
    pub fingerprints: usize,
    pub repositories: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailuresView {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub window: String,
    pub new_window: String,
    /// Set on a class's page (`/failures/classes/{class}`) or by `?class=`.
    pub class: Option<String>,
    /// Set on a fingerprint's page (`/failures/fingerprints/{fingerprint}`).
    pub fingerprint: Option<String>,
    pub new_only: bool,
    /// `count` or `last_seen`.
    pub sort: String,
    pub days: Vec<NaiveDate>,
    pub classes: Vec<ClassRow>,
    pub fingerprints: Vec<FingerprintRow>,
    /// On a class's or fingerprint's page: its runs in the window, newest first
    /// (at most 200); empty on the failures page.
    pub runs: Vec<FailureRun>,
}

/// A run with a failure of a class or fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct FailureRun {
    pub run_id: i64,
    pub at: DateTime<Utc>,
    pub repository: String,
    pub context: String,
    pub class: String,
    pub test: Option<String>,
}

/// Most runs listed on a class's or fingerprint's page.
pub const MAX_FAILURE_RUNS: usize = 200;

/// Most fingerprints listed on the page.
pub const MAX_FINGERPRINTS: usize = 100;
/// Most tests listed under one fingerprint.
pub const MAX_TESTS_PER_FINGERPRINT: usize = 50;

pub async fn failures(
    state: &AppState,
    q: &UiQuery,
    fingerprint: Option<String>,
) -> Result<FailuresView, ApiError> {
    let now = state.clock.now();
    let sort = match q.sort.as_deref() {
        None | Some("count") => "count",
        Some("last_seen") => "last_seen",
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("sort {other:?}: expected count or last_seen"),
            ));
        }
    };
    let window = q.window_or(std::time::Duration::from_secs(7 * 86400))?;
    let max = state.config.web.max_failures_window;
    if window.to_std().is_ok_and(|w| w > max) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "window is longer than {} (web.max_failures_window)",
                human(Duration::from_std(max).unwrap_or(Duration::days(90)))
            ),
        ));
    }
    let since = now - window;
    let filter = q.filter();
    // 1. Every failure of the window as names only (one covering-index scan),
    //    grouped and ranked here; 2. text, links and fingerprints of the few
    //    failures the page shows (the latest and the example runs of each
    //    listed group), by id.
    let hash = fingerprint.clone();
    let (mut keys, repositories, fingerprint_id) = state
        .store
        .read(move |s| {
            let fingerprint_id = match &hash {
                Some(h) => Some(s.fingerprint_id(h)?),
                None => None,
            };
            Ok((
                s.failure_keys_between(since, now + Duration::seconds(1), &filter)?,
                s.repositories_by_id()?,
                fingerprint_id,
            ))
        })
        .await?;
    match fingerprint_id {
        Some(None) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no fingerprint {:?}", fingerprint.unwrap_or_default()),
            ));
        }
        Some(Some(id)) => keys.retain(|k| k.fingerprint_id == Some(id)),
        None => {}
    }
    if let Some(c) = &q.class {
        keys.retain(|k| k.class == *c);
    }
    let path_of = |id: i64| -> String {
        repositories
            .get(&id)
            .map(|r| r.path.clone())
            .unwrap_or_default()
    };
    let new_window = Duration::from_std(state.config.ui.new_window).unwrap_or(Duration::hours(24));
    let first_day = since.date_naive();
    let n_days = (now.date_naive() - first_day).num_days() as usize + 1;
    let days: Vec<NaiveDate> = (0..n_days as i64)
        .map(|i| first_day + Duration::days(i))
        .collect();
    let day_index = |at: DateTime<Utc>| {
        ((at.date_naive() - first_day).num_days().max(0) as usize).min(n_days - 1)
    };
    // Group by fingerprint (or class when there is none), keeping first-appearance order (newest first).
    let mut groups: Vec<Vec<&FailureKey>> = Vec::new();
    let mut index: HashMap<(Option<i64>, &str), usize> = HashMap::new();
    for f in &keys {
        let key = match f.fingerprint_id {
            Some(id) => (Some(id), ""),
            None => (None, f.class.as_str()),
        };
        let i = *index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(f);
    }
    struct Group<'a> {
        occ: Vec<&'a FailureKey>,
        trend: Vec<u64>,
        repositories: BTreeSet<String>,
        /// Failure ids of the first failure of up to 3 distinct runs, newest first.
        examples: Vec<i64>,
    }
    let mut ranked: Vec<Group> = groups
        .into_iter()
        .map(|occ| {
            let mut trend = vec![0u64; n_days];
            for f in &occ {
                trend[day_index(f.at)] += 1;
            }
            let repositories = occ.iter().map(|f| path_of(f.repository_id)).collect();
            let mut seen_runs = BTreeSet::new();
            let examples = occ
                .iter()
                .filter(|f| seen_runs.insert(f.run_id))
                .take(3)
                .map(|f| f.id)
                .collect();
            Group {
                occ,
                trend,
                repositories,
                examples,
            }
        })
        .collect();
    let new_only = q.new_only();
    if new_only {
        // The fingerprints first seen within the NEW window (all of them, not
        // only those the page would list).
        let ids: Vec<i64> = ranked
            .iter()
            .filter_map(|g| g.occ[0].fingerprint_id)
            .collect();
        let first_seen = state
            .store
            .read(move |s| s.fingerprints_first_seen(&ids))
            .await?;
        ranked.retain(|g| {
            g.occ[0]
                .fingerprint_id
                .and_then(|id| first_seen.get(&id))
                .is_some_and(|t| *t >= now - new_window)
        });
    }
    if sort == "last_seen" {
        ranked.sort_by(|a, b| b.occ[0].at.cmp(&a.occ[0].at));
    } else {
        // Most occurrences first; ties: the newest first.
        ranked.sort_by(|a, b| {
            b.occ
                .len()
                .cmp(&a.occ.len())
                .then_with(|| b.occ[0].at.cmp(&a.occ[0].at))
        });
    }
    let mut classes: BTreeMap<String, ClassRow> = BTreeMap::new();
    for g in &ranked {
        let latest = g.occ[0];
        let c = classes
            .entry(latest.class.clone())
            .or_insert_with(|| ClassRow {
                class: latest.class.clone(),
                category: latest.category.clone(),
                occurrences: 0,
                last_seen: latest.at,
                trend: vec![0; n_days],
                fingerprints: 0,
                repositories: Vec::new(),
            });
        c.occurrences += g.occ.len() as u64;
        c.last_seen = c.last_seen.max(latest.at);
        c.fingerprints += 1;
        for (t, x) in c.trend.iter_mut().zip(&g.trend) {
            *t += x;
        }
        for r in &g.repositories {
            if !c.repositories.contains(r) {
                c.repositories.push(r.clone());
            }
        }
    }
    let mut classes: Vec<ClassRow> = classes.into_values().collect();
    for c in &mut classes {
        c.repositories.sort();
    }
    if sort == "last_seen" {
        classes.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.class.cmp(&b.class)));
    } else {
        classes.sort_by(|a, b| {
            b.occurrences
                .cmp(&a.occurrences)
                .then(a.class.cmp(&b.class))
        });
    }
    let runs: Vec<FailureRun> = if fingerprint.is_some() || q.class.is_some() {
        let mut seen = BTreeSet::new();
        ranked
            .iter()
            .flat_map(|g| g.occ.iter())
            .filter(|f| seen.insert(f.run_id))
            .map(|f| FailureRun {
                run_id: f.run_id,
                at: f.at,
                repository: path_of(f.repository_id),
                context: f.context.clone(),
                class: f.class.clone(),
                test: f.test_name.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut runs = runs;
    runs.sort_by(|a, b| b.at.cmp(&a.at).then(b.run_id.cmp(&a.run_id)));
    runs.truncate(MAX_FAILURE_RUNS);
    ranked.truncate(MAX_FINGERPRINTS);
    let wanted: Vec<i64> = ranked.iter().flat_map(|g| g.examples.clone()).collect();
    let details: HashMap<i64, FailureOccurrence> = state
        .store
        .read(move |s| {
            let mut out = HashMap::new();
            for id in wanted {
                if let Some(f) = s.failure_occurrence(id)? {
                    out.insert(id, f);
                }
            }
            Ok(out)
        })
        .await?;
    let gitlab_web = gitlab_web_base(&state.config.gitlab.api_url);
    let fingerprints: Vec<FingerprintRow> = ranked
        .iter()
        // A failure pruned between the two reads drops its group from the page.
        .filter_map(|g| {
            let latest = details.get(&g.examples[0])?;
            let tests: BTreeSet<TestRef> = g
                .occ
                .iter()
                .filter_map(|f| {
                    f.test_name.as_ref().map(|t| TestRef {
                        repository: path_of(f.repository_id),
                        context: f.context.clone(),
                        name: t.clone(),
                    })
                })
                .collect();
            let examples: Vec<ExampleRun> = g
                .examples
                .iter()
                .filter_map(|id| details.get(id))
                .map(|f| ExampleRun {
                    run_id: f.run_id,
                    at: f.at,
                    repository: f.repository.clone(),
                    context: f.context.clone(),
                    url: f.url.as_deref().and_then(safe_url).map(str::to_string),
                })
                .collect();
            let first_seen = latest.first_seen;
            let is_new = first_seen.is_some_and(|t| t >= now - new_window);
            let occurrences = g.occ.len() as u64;
            let mut issue =
                IssueDraft::new(latest, occurrences, &human(window), first_seen, &examples);
            // Failures stored before redaction existed, or under other patterns.
            let redactor = &state.policy.redactor;
            redactor.redact_string(&mut issue.title);
            redactor.redact_string(&mut issue.body);
            Some(FingerprintRow {
                fingerprint: latest.fingerprint.clone(),
                class: latest.class.clone(),
                category: latest.category.clone(),
                normalized: latest.normalized.clone(),
                evidence: latest.evidence.clone(),
                occurrences,
                trend: g.trend.clone(),
                first_seen,
                last_seen: g.occ[0].at,
                is_new,
                repositories: g.repositories.iter().cloned().collect(),
                tests: tests.into_iter().take(MAX_TESTS_PER_FINGERPRINT).collect(),
                create_issue_url: issue.url(&latest.forge, &latest.repository, &gitlab_web),
                issue_title: issue.title,
                issue_body: issue.body,
                examples,
            })
        })
        .collect();
    Ok(FailuresView {
        since,
        until: now,
        window: human(window),
        new_window: human(new_window),
        class: q.class.clone(),
        fingerprint,
        new_only,
        sort: sort.into(),
        days,
        classes,
        fingerprints,
        runs,
    })
}

/// The web base of GitLab from its API URL (`https://host/api/v4` → `https://host`).
pub fn gitlab_web_base(api_url: &str) -> String {
    let base = api_url.trim_end_matches('/');
    base.strip_suffix("/api/v4").unwrap_or(base).to_string()
}

/// Most characters of evidence put into an issue (forms take URLs of a few KB).
const ISSUE_EVIDENCE_MAX: usize = 1500;

pub struct IssueDraft {
    pub title: String,
    pub body: String,
}

impl IssueDraft {
    fn new(
        latest: &FailureOccurrence,
        occurrences: u64,
        window: &str,
        first_seen: Option<DateTime<Utc>>,
        examples: &[ExampleRun],
    ) -> IssueDraft {
        let mut evidence: String = latest.evidence.chars().take(ISSUE_EVIDENCE_MAX).collect();
        if evidence.len() < latest.evidence.len() {
            evidence.push('…');
        }
        use super::text::{code_span, fenced, reveal};
        let short: String = latest.evidence.chars().take(80).collect();
        let title = format!("CI failure ({}): {short}", latest.class);
        let mut body = format!(
            "CI failure class {} ({}), seen {occurrences} times in the last {window}",
            code_span(&latest.class),
            latest.category
        );
        if let Some(t) = first_seen {
            body.push_str(&format!(", first seen {}", t.format("%Y-%m-%d %H:%M UTC")));
        }
        body.push_str(".\n\nEvidence:\n\n");
        body.push_str(&fenced(&evidence));
        if let Some(fp) = &latest.fingerprint {
            body.push_str(&format!("\nFingerprint: {}\n", code_span(fp)));
        }
        if !examples.is_empty() {
            body.push_str("\nExample runs:\n");
            for e in examples {
                let link = e.url.as_deref().unwrap_or("(no link)");
                body.push_str(&format!(
                    "- {} {} {}: {link}\n",
                    code_span(&e.repository),
                    code_span(&e.context),
                    e.at.format("%Y-%m-%d %H:%M UTC")
                ));
            }
        }
        IssueDraft {
            title: reveal(&title).into_owned(),
            body: reveal(&body).into_owned(),
        }
    }

    /// GitHub's or GitLab's new-issue form, prefilled; none for other forges.
    pub fn url(&self, forge: &str, repository: &str, gitlab_web: &str) -> Option<String> {
        // `..` would climb out of the repository on the forge.
        if !super::text::safe_repository_path(repository) {
            return None;
        }
        let path: String = repository.split('/').map(enc).collect::<Vec<_>>().join("/");
        match forge {
            "github" => Some(format!(
                "https://github.com/{path}/issues/new?title={}&body={}",
                enc(&self.title),
                enc(&self.body)
            )),
            "gitlab" => Some(format!(
                "{gitlab_web}/{path}/-/issues/new?{}={}&{}={}",
                enc("issue[title]"),
                enc(&self.title),
                enc("issue[description]"),
                enc(&self.body)
            )),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- tests

#[derive(Debug, Clone, Serialize)]
pub struct TestStatsView {
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
pub struct TestPageView {
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

pub async fn test_page(
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

pub async fn repositories(state: &AppState) -> Result<Vec<RepositoryRow>, ApiError> {
    Ok(state.store.read(|s| s.repositories()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_become_links() {
        assert_eq!(
            safe_url("https://x.test/a?b=1"),
            Some("https://x.test/a?b=1")
        );
        assert_eq!(safe_url("HTTP://x.test"), Some("HTTP://x.test"));
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            " https://x.test",
            "data:text/html,<script>",
            "https://",
            "https://x.test/\"onmouseover=\"x",
            "//x.test",
            "https://x.test/a\nb",
        ] {
            assert_eq!(safe_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn test_paths_round_trip_slashes_spaces_and_markup() {
        let p = test_path("group/sub/repo", "ci / test", "<T> a&b \"q\"");
        assert_eq!(
            p,
            "/tests/group%2Fsub%2Frepo/ci%20%2F%20test/%3CT%3E%20a%26b%20%22q%22"
        );
        let segments: Vec<String> = p
            .trim_start_matches("/tests/")
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            })
            .collect();
        assert_eq!(segments, ["group/sub/repo", "ci / test", "<T> a&b \"q\""]);
    }

    #[test]
    fn windows_read_as_words() {
        assert_eq!(human(Duration::days(28)), "28 days");
        assert_eq!(human(Duration::hours(1)), "1 hour");
        assert_eq!(human(Duration::hours(36)), "1 day 12 hours");
        assert_eq!(human(Duration::seconds(30)), "0 minutes");
    }

    fn job(run_id: i64, context: &str, state: &str, secs: Option<f64>) -> NightlyJob {
        NightlyJob {
            run_id,
            context: context.into(),
            commit: "c".into(),
            state: state.into(),
            duration_seconds: secs,
            runtime_ratio: secs.map(|s| s / 100.0),
            url: None,
            failure: None,
            since_green: None,
        }
    }

    #[test]
    fn a_nightly_cell_takes_the_worst_state_and_counts_the_failed_runs() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        assert!(summarise(day, Vec::new()).is_none());
        // Oldest first, as the store reads them: a failed job before a later green one.
        let c = summarise(
            day,
            vec![
                job(1, "upgrade-tests", "failure", Some(90.0)),
                job(2, "full-regression", "success", Some(180.0)),
            ],
        )
        .unwrap();
        assert_eq!((c.state.as_str(), c.failed, c.runs), ("failure", 1, 2));
        assert_eq!((c.run_id, c.context.as_str()), (1, "upgrade-tests"));
        assert_eq!(c.jobs[0].run_id, 1, "the worst first");
        assert_eq!(c.runtime_ratio, Some(1.8), "the slowest job");
        // Errors and time-outs count as failed; the latest of the worst names the cell.
        let c = summarise(
            day,
            vec![
                job(3, "a", "error", None),
                job(4, "b", "timed_out", None),
                job(5, "c", "error", None),
                job(6, "d", "cancelled", None),
                job(7, "e", "success", None),
            ],
        )
        .unwrap();
        assert_eq!((c.state.as_str(), c.failed, c.runs), ("timed_out", 3, 5));
        let order: Vec<i64> = c.jobs.iter().map(|j| j.run_id).collect();
        assert_eq!(order, [4, 5, 3, 6, 7]);
        assert_eq!(c.runtime_ratio, None);
        let c = summarise(day, vec![job(8, "a", "success", None)]).unwrap();
        assert_eq!((c.state.as_str(), c.failed, c.runs), ("success", 0, 1));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn issue_links_are_prefilled_and_encoded() {
        let occ = FailureOccurrence {
            run_id: 7,
            at: "2026-11-20T02:00:00Z".parse().unwrap(),
            forge: "github".into(),
            repository: "o/r".into(),
            context: "ci".into(),
            url: Some("https://github.com/o/r/actions/runs/7".into()),
            class: "oom".into(),
            category: "infrastructure".into(),
            evidence: "Killed & <gone> #1".into(),
            test_name: None,
            fingerprint: Some("abc".into()),
            normalized: None,
            first_seen: None,
        };
        let ex = vec![ExampleRun {
            run_id: 7,
            at: occ.at,
            repository: "o/r".into(),
            context: "ci".into(),
            url: occ.url.clone(),
        }];
        let d = IssueDraft::new(&occ, 3, "7days", None, &ex);
        let gh = d.url("github", "o/r", "https://gitlab.com").unwrap();
        assert!(gh.starts_with("https://github.com/o/r/issues/new?title=CI%20failure%20%28oom%29%3A%20Killed%20%26%20%3Cgone%3E%20%231&body="), "{gh}");
        assert!(gh.contains("https%3A%2F%2Fgithub.com%2Fo%2Fr%2Factions%2Fruns%2F7"));
        let gl = d
            .url("gitlab", "g/s/p", "https://gitlab.example.com")
            .unwrap();
        assert!(
            gl.starts_with(
                "https://gitlab.example.com/g/s/p/-/issues/new?issue%5Btitle%5D=CI%20failure"
            ),
            "{gl}"
        );
        assert!(gl.contains("&issue%5Bdescription%5D=CI%20failure%20class%20%60oom%60"));
        assert_eq!(d.url("generic", "j/n", ""), None);
        assert_eq!(
            gitlab_web_base("https://gitlab.com/api/v4/"),
            "https://gitlab.com"
        );
    }
}

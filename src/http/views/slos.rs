//! The SLO views: the overview's rows (`/api/v1/slos`), one SLO's detail with
//! its days and repositories (`/api/v1/slos/{slo}`), counted as `/metrics`
//! counts them (test_success judged per test), and the bad events that spent
//! its budget, a page at a time (`/api/v1/slos/{slo}/events`).

use super::urls::{change_url, gitlab_web_base};
use super::{UiQuery, human, test_path};
use crate::http::{ApiError, AppState};
use crate::slo::{self, EventCounts, SloId};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SloWindow {
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
pub(crate) struct SloRow {
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
pub(crate) struct BreachingTest {
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
const BREACHING_TESTS_LIMIT: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SlosView {
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
fn slo_id(name: &str) -> Result<SloId, ApiError> {
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
struct TestSuccessView {
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

pub(crate) async fn slos(state: &AppState, q: &UiQuery) -> Result<SlosView, ApiError> {
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
pub(crate) struct SloDay {
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
pub(crate) struct SloRepository {
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
pub(crate) struct SloDetailView {
    pub generated_at: DateTime<Utc>,
    pub repository: Option<String>,
    pub period: String,
    pub slo: SloRow,
    /// Oldest first, from the day the period starts to today.
    pub days: Vec<SloDay>,
    /// Repositories with events in the period, most bad events first.
    pub repositories: Vec<SloRepository>,
}

pub(crate) async fn slo_detail(
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
pub(crate) struct BadEventView {
    #[serde(flatten)]
    pub event: crate::store::ui::BadEvent,
    /// The change on its forge (GitHub pull request, GitLab merge request).
    pub change_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SloEventsView {
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
const EVENTS_PER_PAGE: usize = 100;

pub(crate) async fn slo_events(
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

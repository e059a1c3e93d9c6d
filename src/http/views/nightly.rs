//! The nightly grid: every scheduled run per repository (or per context of
//! one repository) and UTC day, summarised into cells by the worst state,
//! with run times against each job's median.

use super::UiQuery;
use crate::http::{ApiError, AppState};
use crate::store::ui::{NightlyFailure, SinceGreen};
use axum::http::StatusCode;
use chrono::{Duration, NaiveDate};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One scheduled run in a nightly cell.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NightlyJob {
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
pub(crate) struct NightlyCellView {
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
pub(crate) struct NightlyRow {
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
pub(crate) struct NightlyView {
    /// The UTC days, oldest first (the page shows the newest first).
    pub days: Vec<NaiveDate>,
    pub color: String,
    /// Set for a repository's jobs × days grid (`/nightly/{repository}`).
    pub repository: Option<String>,
    pub rows: Vec<NightlyRow>,
}

fn median(values: &mut [f64]) -> Option<f64> {
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
fn state_severity(state: &str) -> u8 {
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
fn is_failed(state: &str) -> bool {
    matches!(state, "failure" | "error" | "timed_out")
}

/// The nightly grid: per repository (or, with `jobs_of`, per context of that
/// repository) and UTC day, every scheduled run of the day summarised.
pub(crate) async fn nightly(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

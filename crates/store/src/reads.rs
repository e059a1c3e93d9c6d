//! The store's aggregate reads: SLO event counts per window (the one counting
//! rule of every SLO number), the persisted counters and histograms, per-test
//! statistics, and the latest attempt of a context on a commit.

use crate::error::StoreError;
use crate::{REPOSITORY_ID, Store, results, tally, to_ms};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{RepositoryRef, RunState};
use ci_slo_core::slo::{EventCounts, SloId};
use rusqlite::params;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct CounterRow {
    pub family: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BucketRow {
    pub le: f64,
    /// Non-cumulative count of this bucket.
    pub count: u64,
    /// (run id, observed value, Unix ms).
    pub exemplar: Option<(i64, f64, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistogramRow {
    pub family: String,
    pub labels: Vec<(String, String)>,
    labels_json: String,
    pub sum: f64,
    pub count: u64,
    pub buckets: Vec<BucketRow>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricState {
    pub counters: Vec<CounterRow>,
    pub histograms: Vec<HistogramRow>,
}

impl BucketRow {
    /// A bucket as stored: its bound, count and exemplar columns (an
    /// exemplar only when all three are set).
    pub fn from_columns(
        le: f64,
        count: i64,
        exemplar_run_id: Option<i64>,
        exemplar_value: Option<f64>,
        exemplar_ts: Option<i64>,
    ) -> BucketRow {
        BucketRow {
            le,
            count: count as u64,
            exemplar: match (exemplar_run_id, exemplar_value, exemplar_ts) {
                (Some(run_id), Some(value), Some(at_ms)) => Some((run_id, value, at_ms)),
                _ => None,
            },
        }
    }
}

impl MetricState {
    /// Add a counter row as stored (labels as [`tally::labels_json`]
    /// encodes them), in (family, labels) order.
    pub fn push_counter(&mut self, family: String, labels_json: &str, value: f64) {
        self.counters.push(CounterRow {
            family,
            labels: tally::parse_labels(labels_json),
            value,
        });
    }

    /// Add a bucket of the histogram series (family, labels as
    /// [`tally::labels_json`] encodes them) with its sum and count: rows in
    /// (family, labels, le) order, so a series' buckets come together.
    pub fn push_bucket(
        &mut self,
        family: String,
        labels_json: String,
        sum: f64,
        count: i64,
        bucket: BucketRow,
    ) {
        let same = self
            .histograms
            .last()
            .is_some_and(|h| h.family == family && h.labels_json == labels_json);
        if !same {
            self.histograms.push(HistogramRow {
                family,
                labels: tally::parse_labels(&labels_json),
                labels_json,
                sum,
                count: count as u64,
                buckets: Vec::new(),
            });
        }
        if let Some(h) = self.histograms.last_mut() {
            h.buckets.push(bucket);
        }
    }
}

/// Where an SLO window of length `window` ending at `now` begins (the
/// earliest time there is, for a window longer than history).
pub fn window_start(now: DateTime<Utc>, window: std::time::Duration) -> DateTime<Utc> {
    let w = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    now.checked_sub_signed(w)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The first whole hour (Unix ms) at or after `since_ms`: a window's whole
/// hours come from the hourly rollup, the part before from the events.
pub fn first_whole_hour(since_ms: i64) -> i64 {
    const HOUR_MS: i64 = 3_600_000;
    since_ms.div_euclid(HOUR_MS) * HOUR_MS
        + if since_ms.rem_euclid(HOUR_MS) == 0 {
            0
        } else {
            HOUR_MS
        }
}

/// Add (good, total) events to an SLO's counts.
pub fn add_counts(out: &mut HashMap<String, EventCounts>, slo: String, good: i64, total: i64) {
    let c = out.entry(slo).or_default();
    c.good += good as u64;
    c.total += total as u64;
}

impl Store {
    /// Each test's statistics since `since` (whole UTC days: the day of
    /// `since` counts whole), from the per-day counters kept at ingest
    /// (migration 10): (repository, context, test, stats). No execution is read.
    pub fn test_stats(
        &self,
        since: DateTime<Utc>,
        min_runs: u64,
    ) -> Result<Vec<(String, String, String, crate::flaky::TestStats)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT repo.path, t.context, t.name, d.runs, d.failures, d.commits, d.flaky_commits, d.flips,
                    d.flaky_failures
             FROM (SELECT test_id, sum(runs) AS runs, sum(failures) AS failures, sum(commits) AS commits,
                          sum(flaky_commits) AS flaky_commits, sum(flips) AS flips,
                          sum(flaky_failures) AS flaky_failures
                   FROM test_days WHERE day >= ?1 GROUP BY test_id) d
             JOIN tests t ON t.id = d.test_id JOIN repositories repo ON repo.id = t.repository_id",
        )?;
        let mut rows = stmt.query([to_ms(since).div_euclid(86_400_000)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let counts = results::counts_at(r, 3)?;
            if let Some(stats) = crate::flaky::from_counts(counts, min_runs) {
                out.push((r.get(0)?, r.get(1)?, r.get(2)?, stats));
            }
        }
        Ok(out)
    }

    /// The highest attempt stored for a context on a commit (outside attempt
    /// groups), with its state.
    pub fn latest_attempt(
        &self,
        repository: &RepositoryRef,
        context: &str,
        commit: &str,
    ) -> Result<Option<(u32, RunState)>, StoreError> {
        // The highest is picked here: an ORDER BY would make SQLite re-prepare
        // the cached statement at every use.
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT r.attempt, r.state FROM runs r
             WHERE r.repository_id = {REPOSITORY_ID} AND r.context = ?3 AND r.commit_sha = ?4
               AND r.attempt_group = ''"
        ))?;
        let rows = stmt.query_map(
            params![repository.forge.as_str(), repository.path, context, commit],
            |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)),
        )?;
        let mut latest: Option<(u32, String)> = None;
        for row in rows {
            let row = row?;
            if latest.as_ref().is_none_or(|l| row.0 > l.0) {
                latest = Some(row);
            }
        }
        Ok(latest.map(|(a, s)| (a, s.parse().unwrap_or(RunState::Error))))
    }

    /// SLO event counts since `since`, per SLO: [`Store::slo_counts_in`]
    /// over every repository.
    pub fn slo_counts_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<HashMap<String, EventCounts>, StoreError> {
        self.slo_counts_in(since, None)
    }

    /// [`Store::slo_counts_in`] for each window ending at `now`, in the
    /// order of `windows`: what every SLO number is computed from.
    pub fn slo_counts_in_windows(
        &self,
        now: DateTime<Utc>,
        windows: &[std::time::Duration],
        repository: Option<&str>,
    ) -> Result<Vec<HashMap<String, EventCounts>>, StoreError> {
        windows
            .iter()
            .map(|w| self.slo_counts_in(window_start(now, *w), repository))
            .collect()
    }

    /// The events of an SLO window: every event stored at or after `since`,
    /// per SLO, of one repository (by path) or of all. This is the one
    /// counting rule of every SLO number (docs/metrics.md "Windows"): `/metrics`
    /// (`ci_slo_*` gauges), the UI and its JSON read their windows here, so the
    /// numbers agree. A window is rolling and exact to the millisecond: whole
    /// hours come from the hourly rollup (migration 5, kept by triggers), the
    /// part of the first hour from the events themselves, so a month of events
    /// is not read on every snapshot. Events stamped after now (clock skew) are
    /// in every window.
    pub fn slo_counts_in(
        &self,
        since: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<HashMap<String, EventCounts>, StoreError> {
        let since_ms = to_ms(since);
        let first_whole_hour = first_whole_hour(since_ms);
        let mut out: HashMap<String, EventCounts> = HashMap::new();
        let mut add = |slo: String, good: i64, total: i64| add_counts(&mut out, slo, good, total);
        // Repository 0 of the rollup is every repository; `?3` is the path
        // (NULL: all). Two texts rather than `?3 IS NULL OR ...`, so that each
        // uses its index (the rollup's primary key, `slo_events_at`).
        let (hourly_repo, repo) = match repository {
            Some(_) => (
                "repository_id IN (SELECT id FROM repositories WHERE path = ?3)",
                "AND repository_id IN (SELECT id FROM repositories WHERE path = ?3)",
            ),
            None => ("repository_id = 0 AND ?3 IS NULL", "AND ?3 IS NULL"),
        };
        let hourly = format!(
            "SELECT slo, sum(good), sum(total) FROM slo_hourly
             WHERE {hourly_repo} AND hour >= ?1 GROUP BY slo"
        );
        let params = rusqlite::params![first_whole_hour, since_ms, repository];
        let mut hours = self.conn.prepare_cached(&hourly)?;
        let mut rows = hours.query(params)?;
        while let Some(r) = rows.next()? {
            add(r.get(0)?, r.get(1)?, r.get(2)?);
        }
        let mut edge = self.conn.prepare_cached(&format!(
            "SELECT slo, coalesce(sum(good), 0), count(*) FROM slo_events
             WHERE at >= ?2 AND at < ?1 {repo} GROUP BY slo"
        ))?;
        let mut rows = edge.query(params)?;
        while let Some(r) = rows.next()? {
            add(r.get(0)?, r.get(1)?, r.get(2)?);
        }
        // A run's events are one `run_events` row (migration 13).
        let mut runs = self.conn.prepare_cached(&format!(
            "SELECT 'queue_time', coalesce(sum(queue_good), 0), count(*) FROM run_events
               WHERE queue_at >= ?2 AND queue_at < ?1 {repo}
             UNION ALL
             SELECT 'run_time', coalesce(sum(run_time_good), 0), count(*) FROM run_events
               WHERE run_time_at >= ?2 AND run_time_at < ?1 {repo}
             UNION ALL
             SELECT 'runs_completed', coalesce(sum(completed_good), 0), count(*) FROM run_events
               WHERE completed_at >= ?2 AND completed_at < ?1 {repo}"
        ))?;
        let mut rows = runs.query(params)?;
        while let Some(r) = rows.next()? {
            let total: i64 = r.get(2)?;
            if total > 0 {
                add(r.get(0)?, r.get(1)?, total);
            }
        }
        // The test_success events of a run are one row (migration 10).
        let (good, total): (i64, i64) = self
            .conn
            .prepare_cached(&format!(
                "SELECT coalesce(sum(good), 0), coalesce(sum(total), 0) FROM test_events
                 WHERE at >= ?2 AND at < ?1 {repo}"
            ))?
            .query_row(params, |r| Ok((r.get(0)?, r.get(1)?)))?;
        if total > 0 {
            add(SloId::TestSuccess.as_str().to_string(), good, total);
        }
        Ok(out)
    }

    /// Every persisted counter and histogram.
    pub fn metric_state(&self) -> Result<MetricState, StoreError> {
        let mut state = MetricState::default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT family, labels, value FROM metric_counters ORDER BY family, labels",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            state.push_counter(r.get(0)?, &r.get::<_, String>(1)?, r.get(2)?);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT h.family, h.labels, h.sum, h.count, b.le, b.count, b.exemplar_run_id, b.exemplar_value, b.exemplar_ts
             FROM metric_histograms h JOIN metric_buckets b ON b.family = h.family AND b.labels = h.labels
             ORDER BY h.family, h.labels, b.le",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let bucket =
                BucketRow::from_columns(r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?);
            state.push_bucket(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, bucket);
        }
        Ok(state)
    }
}

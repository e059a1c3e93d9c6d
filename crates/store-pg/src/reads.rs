//! The aggregate reads on PostgreSQL, as the SQLite store's `reads.rs`:
//! SLO event counts per window (the one counting rule of every SLO number),
//! the persisted counters and histograms, per-test statistics, and the
//! latest attempt of a context on a commit. What is not SQL (windows, the
//! grouping of buckets into histograms, test statistics) is the SQLite
//! store's own code.

use crate::{PgStore, PgStoreError, REPOSITORY_ID};
use chrono::{DateTime, Utc};
use ci_slo_core::flaky::{self, TestStats};
use ci_slo_core::model::{RepositoryRef, RunState};
use ci_slo_core::slo::{EventCounts, SloId};
use ci_slo_store::{
    BucketRow, MetricState, add_counts, counts_from_columns, first_whole_hour, window_start,
};
use postgres::types::ToSql;
use std::collections::HashMap;

/// Six `bigint` columns of `row` from `first` on, as test counters.
pub(crate) fn counts_at(row: &postgres::Row, first: usize) -> flaky::Counts {
    counts_from_columns(std::array::from_fn(|i| row.get::<_, i64>(first + i)))
}

impl PgStore {
    /// Each test's statistics since `since` (whole UTC days: the day of
    /// `since` counts whole), from the per-day counters: (repository,
    /// context, test, stats), by test id.
    pub fn test_stats(
        &self,
        since: DateTime<Utc>,
        min_runs: u64,
    ) -> Result<Vec<(String, String, String, TestStats)>, PgStoreError> {
        let rows = self.reader().query(
            "SELECT repo.path, t.context, t.name, d.runs, d.failures, d.commits, d.flaky_commits, d.flips,
                    d.flaky_failures
             FROM (SELECT test_id, sum(runs)::bigint AS runs, sum(failures)::bigint AS failures,
                          sum(commits)::bigint AS commits, sum(flaky_commits)::bigint AS flaky_commits,
                          sum(flips)::bigint AS flips, sum(flaky_failures)::bigint AS flaky_failures
                   FROM test_days WHERE day >= $1 GROUP BY test_id) d
             JOIN tests t ON t.id = d.test_id JOIN repositories repo ON repo.id = t.repository_id
             ORDER BY d.test_id",
            &[&since.timestamp_millis().div_euclid(86_400_000)],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                flaky::from_counts(counts_at(r, 3), min_runs)
                    .map(|stats| (r.get(0), r.get(1), r.get(2), stats))
            })
            .collect())
    }

    /// The highest attempt stored for a context on a commit (outside attempt
    /// groups), with its state; of equal attempts, the first stored.
    pub fn latest_attempt(
        &self,
        repository: &RepositoryRef,
        context: &str,
        commit: &str,
    ) -> Result<Option<(u32, RunState)>, PgStoreError> {
        Ok(self
            .reader()
            .query_opt(
                &format!(
                    "SELECT r.attempt, r.state FROM runs r
                     WHERE r.repository_id = {REPOSITORY_ID} AND r.context = $3 AND r.commit_sha = $4
                       AND r.attempt_group = ''
                     ORDER BY r.attempt DESC, r.id LIMIT 1"
                ),
                &[&repository.forge.as_str(), &repository.path, &context, &commit],
            )?
            .map(|r| {
                (
                    u32::try_from(r.get::<_, i64>(0)).unwrap_or_default(),
                    r.get::<_, String>(1).parse().unwrap_or(RunState::Error),
                )
            }))
    }

    /// [`PgStore::slo_counts_in`] for each window ending at `now`, in the
    /// order of `windows`.
    pub fn slo_counts_in_windows(
        &self,
        now: DateTime<Utc>,
        windows: &[std::time::Duration],
        repository: Option<&str>,
    ) -> Result<Vec<HashMap<String, EventCounts>>, PgStoreError> {
        windows
            .iter()
            .map(|w| self.slo_counts_in(window_start(now, *w), repository))
            .collect()
    }

    /// Every event stored at or after `since`, per SLO, of one repository
    /// (by path) or of all, as the SQLite store's `slo_counts_in`: whole
    /// hours from the hourly rollup, the part of the first hour from the
    /// events themselves; events stamped after now are in every window.
    pub fn slo_counts_in(
        &self,
        since: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<HashMap<String, EventCounts>, PgStoreError> {
        let since_ms = since.timestamp_millis();
        let whole = first_whole_hour(since_ms);
        let mut out: HashMap<String, EventCounts> = HashMap::new();
        let mut client = self.reader();
        // Repository 0 of the rollup is every repository. Each text names
        // only the parameters it binds (PostgreSQL types every one).
        let (hourly, edge, runs, tests) = match repository {
            Some(_) => (
                "SELECT slo, sum(good)::bigint, sum(total)::bigint FROM slo_hourly
                 WHERE repository_id IN (SELECT id FROM repositories WHERE path = $2) AND hour >= $1
                 GROUP BY slo",
                "SELECT slo, coalesce(sum(good), 0)::bigint, count(*) FROM slo_events
                 WHERE at >= $1 AND at < $2
                   AND repository_id IN (SELECT id FROM repositories WHERE path = $3)
                 GROUP BY slo",
                "SELECT 'queue_time', coalesce(sum(queue_good), 0)::bigint, count(*) FROM run_events
                   WHERE queue_at >= $1 AND queue_at < $2
                     AND repository_id IN (SELECT id FROM repositories WHERE path = $3)
                 UNION ALL
                 SELECT 'run_time', coalesce(sum(run_time_good), 0)::bigint, count(*) FROM run_events
                   WHERE run_time_at >= $1 AND run_time_at < $2
                     AND repository_id IN (SELECT id FROM repositories WHERE path = $3)
                 UNION ALL
                 SELECT 'runs_completed', coalesce(sum(completed_good), 0)::bigint, count(*) FROM run_events
                   WHERE completed_at >= $1 AND completed_at < $2
                     AND repository_id IN (SELECT id FROM repositories WHERE path = $3)",
                "SELECT coalesce(sum(good), 0)::bigint, coalesce(sum(total), 0)::bigint FROM test_events
                 WHERE at >= $1 AND at < $2
                   AND repository_id IN (SELECT id FROM repositories WHERE path = $3)",
            ),
            None => (
                "SELECT slo, sum(good)::bigint, sum(total)::bigint FROM slo_hourly
                 WHERE repository_id = 0 AND hour >= $1 GROUP BY slo",
                "SELECT slo, coalesce(sum(good), 0)::bigint, count(*) FROM slo_events
                 WHERE at >= $1 AND at < $2 GROUP BY slo",
                "SELECT 'queue_time', coalesce(sum(queue_good), 0)::bigint, count(*) FROM run_events
                   WHERE queue_at >= $1 AND queue_at < $2
                 UNION ALL
                 SELECT 'run_time', coalesce(sum(run_time_good), 0)::bigint, count(*) FROM run_events
                   WHERE run_time_at >= $1 AND run_time_at < $2
                 UNION ALL
                 SELECT 'runs_completed', coalesce(sum(completed_good), 0)::bigint, count(*) FROM run_events
                   WHERE completed_at >= $1 AND completed_at < $2",
                "SELECT coalesce(sum(good), 0)::bigint, coalesce(sum(total), 0)::bigint FROM test_events
                 WHERE at >= $1 AND at < $2",
            ),
        };
        let hour_params: Vec<&(dyn ToSql + Sync)> = match &repository {
            Some(path) => vec![&whole, path],
            None => vec![&whole],
        };
        for r in client.query(hourly, &hour_params)? {
            add_counts(&mut out, r.get(0), r.get(1), r.get(2));
        }
        let edge_params: Vec<&(dyn ToSql + Sync)> = match &repository {
            Some(path) => vec![&since_ms, &whole, path],
            None => vec![&since_ms, &whole],
        };
        for r in client.query(edge, &edge_params)? {
            add_counts(&mut out, r.get(0), r.get(1), r.get(2));
        }
        for r in client.query(runs, &edge_params)? {
            let total: i64 = r.get(2);
            if total > 0 {
                add_counts(&mut out, r.get(0), r.get(1), total);
            }
        }
        let r = client.query_one(tests, &edge_params)?;
        let (good, total): (i64, i64) = (r.get(0), r.get(1));
        if total > 0 {
            add_counts(
                &mut out,
                SloId::TestSuccess.as_str().to_string(),
                good,
                total,
            );
        }
        Ok(out)
    }

    /// Every persisted counter and histogram, in (family, labels) order as
    /// SQLite sorts text (bytewise: `COLLATE "C"`), buckets by bound.
    pub fn metric_state(&self) -> Result<MetricState, PgStoreError> {
        let mut client = self.reader();
        let mut state = MetricState::default();
        for r in client.query(
            r#"SELECT family, labels, value FROM metric_counters
               ORDER BY family COLLATE "C", labels COLLATE "C""#,
            &[],
        )? {
            state.push_counter(r.get(0), r.get(1), r.get(2));
        }
        for r in client.query(
            r#"SELECT h.family, h.labels, h.sum, h.count, b.le, b.count, b.exemplar_run_id, b.exemplar_value,
                      b.exemplar_ts
               FROM metric_histograms h JOIN metric_buckets b ON b.family = h.family AND b.labels = h.labels
               ORDER BY h.family COLLATE "C", h.labels COLLATE "C", b.le"#,
            &[],
        )? {
            let bucket = BucketRow::from_columns(r.get(4), r.get(5), r.get(6), r.get(7), r.get(8));
            state.push_bucket(r.get(0), r.get(1), r.get(2), r.get(3), bucket);
        }
        Ok(state)
    }
}

//! The aggregate reads on PostgreSQL, as the SQLite store's `reads.rs`:
//! SLO event counts per window (the one counting rule of every SLO number),
//! the persisted counters and histograms, per-test statistics, and the
//! latest attempt of a context on a commit. What is not SQL (windows, the
//! grouping of buckets into histograms, test statistics) is the SQLite
//! store's own code.

use crate::{PgStore, PgStoreError, Sql};
use chrono::{DateTime, Utc};
use ci_slo_core::flaky::{self, TestStats};
use ci_slo_core::model::{RepositoryRef, RunState};
use ci_slo_core::slo::{EventCounts, SloId};
use ci_slo_store::{
    BucketRow, MetricState, add_counts, counts_from_columns, first_whole_hour, window_start,
};
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
        // The runs stored so far folded first (`fold.rs`); the counters,
        // then the tests' names from the cache (`test_identity.rs`):
        // joining `tests` read its every page.
        self.fold_for_read()?;
        let mut client = self.reader();
        let rows = client.query(
            "SELECT test_id::bigint, sum(runs)::bigint, sum(failures)::bigint, sum(commits)::bigint,
                    sum(flaky_commits)::bigint, sum(flips)::bigint, sum(flaky_failures)::bigint
             FROM test_days WHERE day >= $1 GROUP BY test_id ORDER BY test_id",
            &[&since.timestamp_millis().div_euclid(86_400_000)],
        )?;
        let repos: HashMap<i64, String> = client
            .query("SELECT id, path FROM repositories", &[])?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let names = self.test_identities(&mut client, &ids)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let test = names.get(&r.get::<_, i64>(0))?;
                flaky::from_counts(counts_at(r, 1), min_runs).map(|stats| {
                    (
                        repos.get(&test.repository_id).cloned().unwrap_or_default(),
                        test.context.clone(),
                        test.name.clone(),
                        stats,
                    )
                })
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
                concat!(
                    "SELECT r.attempt, r.state FROM runs r WHERE r.repository_id = ",
                    repository_id!(),
                    " AND r.context = $3 AND r.commit_sha = $4 AND r.attempt_group = ''
                     ORDER BY r.attempt DESC, r.id LIMIT 1"
                ),
                &[
                    &repository.forge.as_str(),
                    &repository.path,
                    &context,
                    &commit,
                ],
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
        // One statement, one round trip: the whole hours from the rollup
        // (repository 0 is every repository; each of its rows counts), the
        // edge of the first hour from the events, run events and test
        // events (each part counted when it has events, as in SQLite).
        let rows = match repository {
            Some(path) => self.read().query(
                "SELECT slo, sum(good)::bigint, sum(total)::bigint, true FROM slo_hourly
                   WHERE repository_id IN (SELECT id FROM repositories WHERE path = $3) AND hour >= $1
                   GROUP BY slo
                 UNION ALL
                 SELECT slo, coalesce(sum(good), 0)::bigint, count(*), true FROM slo_events
                   WHERE at >= $2 AND at < $1
                     AND repository_id IN (SELECT id FROM repositories WHERE path = $3)
                   GROUP BY slo
                 UNION ALL
                 SELECT 'queue_time', coalesce(sum(queue_good), 0)::bigint, count(*), false FROM run_events
                   WHERE queue_at >= $2 AND queue_at < $1
                     AND repository_id IN (SELECT id FROM repositories WHERE path = $3)
                 UNION ALL
                 SELECT 'run_time', coalesce(sum(run_time_good), 0)::bigint, count(*), false FROM run_events
                   WHERE run_time_at >= $2 AND run_time_at < $1
                     AND repository_id IN (SELECT id FROM repositories WHERE path = $3)
                 UNION ALL
                 SELECT 'runs_completed', coalesce(sum(completed_good), 0)::bigint, count(*), false
                   FROM run_events
                   WHERE completed_at >= $2 AND completed_at < $1
                     AND repository_id IN (SELECT id FROM repositories WHERE path = $3)
                 UNION ALL
                 SELECT $4, coalesce(sum(good), 0)::bigint, coalesce(sum(total), 0)::bigint, false
                   FROM test_events
                   WHERE at >= $2 AND at < $1
                     AND repository_id IN (SELECT id FROM repositories WHERE path = $3)",
                &[&whole, &since_ms, &path, &SloId::TestSuccess.as_str()],
            )?,
            None => self.read().query(
                "SELECT slo, sum(good)::bigint, sum(total)::bigint, true FROM slo_hourly
                   WHERE repository_id = 0 AND hour >= $1 GROUP BY slo
                 UNION ALL
                 SELECT slo, coalesce(sum(good), 0)::bigint, count(*), true FROM slo_events
                   WHERE at >= $2 AND at < $1 GROUP BY slo
                 UNION ALL
                 SELECT 'queue_time', coalesce(sum(queue_good), 0)::bigint, count(*), false FROM run_events
                   WHERE queue_at >= $2 AND queue_at < $1
                 UNION ALL
                 SELECT 'run_time', coalesce(sum(run_time_good), 0)::bigint, count(*), false FROM run_events
                   WHERE run_time_at >= $2 AND run_time_at < $1
                 UNION ALL
                 SELECT 'runs_completed', coalesce(sum(completed_good), 0)::bigint, count(*), false
                   FROM run_events
                   WHERE completed_at >= $2 AND completed_at < $1
                 UNION ALL
                 SELECT $3, coalesce(sum(good), 0)::bigint, coalesce(sum(total), 0)::bigint, false
                   FROM test_events
                   WHERE at >= $2 AND at < $1",
                &[&whole, &since_ms, &SloId::TestSuccess.as_str()],
            )?,
        };
        for r in &rows {
            let (total, always): (i64, bool) = (r.get(2), r.get(3));
            if always || total > 0 {
                add_counts(&mut out, r.get(0), r.get(1), total);
            }
        }
        Ok(out)
    }

    /// Every persisted counter and histogram, in (family, labels) order as
    /// SQLite sorts text (bytewise: `COLLATE "C"`), buckets by bound.
    pub fn metric_state(&self) -> Result<MetricState, PgStoreError> {
        let mut client = self.read();
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

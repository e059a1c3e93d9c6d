//! The test index (`/tests`, `/api/v1/tests`): every test of a window with
//! its statistics from the per-day counters (migration 10) and what its
//! `tests` row knows (last seen, last failure, first seen flaky), and the
//! latest outcomes of one test for its history strip.

use super::{Store, StoreError, from_ms, to_ms};
use crate::flaky::{TestStats, from_counts};
use chrono::{DateTime, Utc};
use rusqlite::params;

/// One test of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct TestIndexRow {
    pub id: i64,
    pub repository: String,
    pub context: String,
    pub name: String,
    pub stats: TestStats,
    pub last_seen: Option<DateTime<Utc>>,
    pub first_seen_flaky: Option<DateTime<Utc>>,
    /// The run of the latest failure, and when.
    pub last_failure: Option<(i64, DateTime<Utc>)>,
}

impl Store {
    /// Every test with a run since `since` (whole UTC days, as
    /// [`Store::test_stats`]), optionally of one repository and context.
    pub fn test_index(
        &self,
        since: DateTime<Utc>,
        min_runs: u64,
        repository: Option<&str>,
        context: Option<&str>,
    ) -> Result<Vec<TestIndexRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.id, repo.path, t.context, t.name, d.runs, d.failures, d.commits, d.flaky_commits,
                    d.flips, d.flaky_failures, t.last_seen, t.first_seen_flaky, t.last_failure_run_id,
                    t.last_failure_at
             FROM (SELECT test_id, sum(runs) AS runs, sum(failures) AS failures, sum(commits) AS commits,
                          sum(flaky_commits) AS flaky_commits, sum(flips) AS flips,
                          sum(flaky_failures) AS flaky_failures
                   FROM test_days WHERE day >= ?1 GROUP BY test_id) d
             JOIN tests t ON t.id = d.test_id JOIN repositories repo ON repo.id = t.repository_id
             WHERE (?2 IS NULL OR repo.path = ?2) AND (?3 IS NULL OR t.context = ?3)",
        )?;
        let mut rows = stmt.query(params![
            to_ms(since).div_euclid(86_400_000),
            repository,
            context
        ])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let counts = super::results::counts_at(r, 4)?;
            let Some(stats) = from_counts(counts, min_runs) else {
                continue;
            };
            let failure: (Option<i64>, Option<i64>) = (r.get(12)?, r.get(13)?);
            out.push(TestIndexRow {
                id: r.get(0)?,
                repository: r.get(1)?,
                context: r.get(2)?,
                name: r.get(3)?,
                stats,
                last_seen: r.get::<_, Option<i64>>(10)?.map(from_ms),
                first_seen_flaky: r.get::<_, Option<i64>>(11)?.map(from_ms),
                last_failure: match failure {
                    (Some(run), Some(at)) => Some((run, from_ms(at))),
                    _ => None,
                },
            });
        }
        Ok(out)
    }

    /// The outcomes of test `test_id` in the latest `n` runs of its
    /// repository and context that ran it (among the latest 500 of them),
    /// oldest first: (outcome, run id).
    pub fn test_strip(
        &self,
        test_id: i64,
        n: usize,
    ) -> Result<Vec<(crate::model::TestOutcome, i64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT res.outcome, r.id FROM
                (SELECT r.id, coalesce(r.queued_at, r.started_at, r.created_at) AS at FROM runs r
                 WHERE r.repository_id = (SELECT repository_id FROM tests WHERE id = ?1)
                   AND r.context = (SELECT context FROM tests WHERE id = ?1)
                 ORDER BY coalesce(r.queued_at, r.started_at, r.created_at) DESC, r.id DESC LIMIT 500) r
             JOIN results res ON res.run_id = r.id AND res.test_id = ?1
             ORDER BY r.at DESC, r.id DESC LIMIT ?2",
        )?;
        let mut out: Vec<(crate::model::TestOutcome, i64)> = stmt
            .query_map(params![test_id, n as i64], |r| {
                Ok((super::results::outcome_from_code(r.get(0)?), r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }
}

//! The test index on PostgreSQL: the SQLite store's `test_index.rs` (every
//! test of a window with its statistics from the per-day counters and what
//! its `tests` row knows, the latest outcomes of one test for its history
//! strip) and `test_names` (of its `test_slo.rs`), with the same answers.

use crate::{PgStore, PgStoreError};
use chrono::{DateTime, Utc};
use ci_slo_core::flaky::{Counts, from_counts};
use ci_slo_core::model::TestOutcome;
use ci_slo_store::test_index::TestIndexRow;
use ci_slo_store::test_slo::TestName;
use ci_slo_store::{from_ms, outcome_from_code, to_ms};
use std::collections::HashMap;

const DAY_MS: i64 = 86_400_000;

impl PgStore {
    /// Every test with a run since `since` (whole UTC days), optionally of
    /// one repository and context, by id.
    pub fn test_index(
        &self,
        since: DateTime<Utc>,
        min_runs: u64,
        repository: Option<&str>,
        context: Option<&str>,
    ) -> Result<Vec<TestIndexRow>, PgStoreError> {
        self.fold_for_read()?;
        let rows = self.reader().query(
            "SELECT t.id, repo.path, t.context, t.name, d.runs, d.failures, d.commits, d.flaky_commits,
                    d.flips, d.flaky_failures, t.last_seen, t.first_seen_flaky, t.last_failure_run_id,
                    t.last_failure_at
             FROM (SELECT test_id, sum(runs)::bigint AS runs, sum(failures)::bigint AS failures,
                          sum(commits)::bigint AS commits, sum(flaky_commits)::bigint AS flaky_commits,
                          sum(flips)::bigint AS flips, sum(flaky_failures)::bigint AS flaky_failures
                   FROM test_days WHERE day >= $1 GROUP BY test_id) d
             JOIN tests t ON t.id = d.test_id JOIN repositories repo ON repo.id = t.repository_id
             WHERE ($2::text IS NULL OR repo.path = $2) AND ($3::text IS NULL OR t.context = $3)
             ORDER BY t.id",
            &[&to_ms(since).div_euclid(DAY_MS), &repository, &context],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let n = |i: usize| r.get::<_, i64>(i).max(0) as u64;
            let counts = Counts {
                executions: n(4),
                failures: n(5),
                commits: n(6),
                flaky_commits: n(7),
                flips: n(8),
                flaky_failures: n(9),
            };
            let Some(stats) = from_counts(counts, min_runs) else {
                continue;
            };
            let at = |i: usize| r.get::<_, Option<i64>>(i).map(from_ms);
            out.push(TestIndexRow {
                id: r.get(0),
                repository: r.get(1),
                context: r.get(2),
                name: r.get(3),
                stats,
                last_seen: at(10),
                first_seen_flaky: at(11),
                last_failure: match (r.get::<_, Option<i64>>(12), at(13)) {
                    (Some(run), Some(at)) => Some((run, at)),
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
    ) -> Result<Vec<(TestOutcome, i64)>, PgStoreError> {
        // Each run's row of results (`run_results`), the test's outcome by
        // its place in the row's test ids (no id past INTEGER is stored).
        let mut out: Vec<(TestOutcome, i64)> = self
            .reader()
            .query(
                "SELECT res.outcomes[p.i]::bigint, r.id FROM
                    (SELECT r.id, coalesce(r.queued_at, r.started_at, r.created_at) AS at FROM runs r
                     WHERE r.repository_id = (SELECT repository_id FROM tests WHERE id = $1)
                       AND r.context = (SELECT context FROM tests WHERE id = $1)
                     ORDER BY coalesce(r.queued_at, r.started_at, r.created_at) DESC, r.id DESC LIMIT 500) r
                 JOIN run_results res ON res.run_id = r.id
                 CROSS JOIN LATERAL (SELECT array_position(res.test_ids,
                     CASE WHEN $1 <= 2147483647 THEN $1::integer END) AS i) p
                 WHERE p.i IS NOT NULL
                 ORDER BY r.at DESC, r.id DESC LIMIT $2",
                &[&test_id, &i64::try_from(n).unwrap_or(i64::MAX)],
            )?
            .iter()
            .map(|r| (outcome_from_code(r.get(0)), r.get(1)))
            .collect();
        out.reverse();
        Ok(out)
    }

    /// The names of tests by id (unknown ids are left out).
    pub fn test_names(&self, ids: &[i64]) -> Result<HashMap<i64, TestName>, PgStoreError> {
        Ok(self
            .reader()
            .query(
                "SELECT t.id, repo.path, t.context, t.name FROM tests t
                 JOIN repositories repo ON repo.id = t.repository_id WHERE t.id = ANY($1)",
                &[&ids],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    TestName {
                        repository: r.get(1),
                        context: r.get(2),
                        name: r.get(3),
                    },
                )
            })
            .collect())
    }
}

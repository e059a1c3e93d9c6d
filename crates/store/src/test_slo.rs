//! The runs behind the test_success SLO: each test's runs and passes over
//! several windows at once, added up from the per-day counters kept at
//! ingest (`test_days`, migration 10), so no execution is read. Windows are
//! whole UTC days, as the other per-test statistics ([`Store::test_stats`]).

use super::{Store, StoreError};
use crate::slo::TestRuns;
use std::collections::HashMap;

/// One test's runs in each window asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct TestWindowRuns {
    pub test_id: i64,
    pub repository: String,
    /// One entry per first day asked for, in the same order.
    pub windows: Vec<TestRuns>,
}

/// A test's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct TestName {
    pub repository: String,
    pub context: String,
    pub name: String,
}

impl Store {
    /// Every test with a run on or after the earliest of `first_days` (UTC
    /// day numbers, Unix ms / 86,400,000), with its runs and passes from
    /// each first day on. A repository is named by its path.
    pub fn test_runs_in_windows(
        &self,
        first_days: &[i64],
    ) -> Result<Vec<TestWindowRuns>, StoreError> {
        let Some(earliest) = first_days.iter().min().copied() else {
            return Ok(Vec::new());
        };
        let repos: HashMap<i64, String> = self
            .conn
            .prepare_cached("SELECT id, path FROM repositories")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        // CROSS JOIN keeps `tests` outside: per test, a seek in test_days'
        // primary key (test_id, day) from the first day on, not a scan of
        // every retained day (SQLite would otherwise scan test_days). The
        // windows are added up in SQL, one pair of sums per window: a row
        // per test comes back, not one per test and day.
        let sums: Vec<String> = (0..first_days.len())
            .map(|i| {
                let p = i + 2;
                format!(
                    "sum(CASE WHEN d.day >= ?{p} THEN d.runs ELSE 0 END), \
                     sum(CASE WHEN d.day >= ?{p} THEN d.passes ELSE 0 END)"
                )
            })
            .collect();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT t.id, t.repository_id, {}
             FROM tests t CROSS JOIN test_days d ON d.test_id = t.id AND d.day >= ?1
             GROUP BY t.id",
            sums.join(", ")
        ))?;
        let params: Vec<i64> = std::iter::once(earliest)
            .chain(first_days.iter().copied())
            .collect();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let (test_id, repository_id): (i64, i64) = (r.get(0)?, r.get(1)?);
            let mut windows = Vec::with_capacity(first_days.len());
            for i in 0..first_days.len() {
                windows.push(TestRuns {
                    runs: r.get::<_, i64>(2 + 2 * i)?.max(0) as u64,
                    passes: r.get::<_, i64>(3 + 2 * i)?.max(0) as u64,
                });
            }
            out.push(TestWindowRuns {
                test_id,
                repository: repos.get(&repository_id).cloned().unwrap_or_default(),
                windows,
            });
        }
        Ok(out)
    }

    /// The names of tests by id (unknown ids are left out).
    pub fn test_names(&self, ids: &[i64]) -> Result<HashMap<i64, TestName>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT repo.path, t.context, t.name FROM tests t
             JOIN repositories repo ON repo.id = t.repository_id WHERE t.id = ?1",
        )?;
        let mut out = HashMap::new();
        for id in ids {
            let mut rows = stmt.query([id])?;
            if let Some(r) = rows.next()? {
                out.insert(
                    *id,
                    TestName {
                        repository: r.get(0)?,
                        context: r.get(1)?,
                        name: r.get(2)?,
                    },
                );
            }
        }
        Ok(out)
    }
}

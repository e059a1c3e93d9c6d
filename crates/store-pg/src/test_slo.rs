//! The runs behind the test_success SLO on PostgreSQL, as the SQLite
//! store's `test_slo.rs`: each test's runs and passes over several windows
//! at once, added up from the per-day counters (`test_days`).

use crate::{PgStore, PgStoreError};
use ci_slo_core::slo::TestRuns;
use ci_slo_store::test_slo::TestWindowRuns;
use postgres::types::ToSql;
use std::collections::HashMap;

impl PgStore {
    /// Every test with a run on or after the earliest of `first_days` (UTC
    /// day numbers), with its runs and passes from each first day on, by
    /// test id. A repository is named by its path.
    pub fn test_runs_in_windows(
        &self,
        first_days: &[i64],
    ) -> Result<Vec<TestWindowRuns>, PgStoreError> {
        let Some(earliest) = first_days.iter().min().copied() else {
            return Ok(Vec::new());
        };
        self.fold_for_read()?;
        let mut client = self.reader();
        let repos: HashMap<i64, String> = client
            .query("SELECT id, path FROM repositories", &[])?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let sums: Vec<String> = (0..first_days.len())
            .map(|i| {
                let p = i + 2;
                format!(
                    "sum(CASE WHEN d.day >= ${p} THEN d.runs ELSE 0 END)::bigint, \
                     sum(CASE WHEN d.day >= ${p} THEN d.passes ELSE 0 END)::bigint"
                )
            })
            .collect();
        // The counters only, the tests' repositories from the cache
        // (`test_identity.rs`): joining `tests` read its every page.
        let sql = format!(
            "SELECT d.test_id::bigint, {} FROM test_days d WHERE d.day >= $1
             GROUP BY d.test_id ORDER BY d.test_id",
            sums.join(", ")
        );
        let params: Vec<i64> = std::iter::once(earliest)
            .chain(first_days.iter().copied())
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&sql, &params)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let tests = self.test_identities(&mut client, &ids)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let test = tests.get(&r.get::<_, i64>(0))?;
                Some(TestWindowRuns {
                    test_id: r.get(0),
                    repository: repos.get(&test.repository_id).cloned().unwrap_or_default(),
                    windows: (0..first_days.len())
                        .map(|i| TestRuns {
                            runs: r.get::<_, i64>(1 + 2 * i).max(0) as u64,
                            passes: r.get::<_, i64>(2 + 2 * i).max(0) as u64,
                        })
                        .collect(),
                })
            })
            .collect())
    }
}

//! Where a fresh load's test results wait for the set-based counting
//! ([`Staging`]): tests and commits interned in memory, results written
//! straight into `results`, the integers the per-test counters need appended
//! to scratch tables (see `fresh.rs`).

use crate::model::{TestOutcome, TestResult};
use crate::{hourly, results};
use rusqlite::{Connection, params};
use std::collections::HashMap;

/// Where a fresh load's test results wait for the set-based counting.
///
/// Tests and commits are interned here, in memory, in the order the per-run
/// path interns them (a run's tests in order of first appearance, runs in id
/// order): a new (repository, context, name) gets the next `tests` id and its
/// row at once, so each result is written straight into `results` with its
/// test id (a run's results sorted by test id: appended in key order), and
/// only integers wait in a scratch table for the per-test counting.
pub(crate) struct Staging {
    pub(crate) staged: usize,
    /// Test names, interned once whatever their context.
    names: HashMap<String, u32>,
    /// repository id → context → index into `tests`.
    contexts: HashMap<i64, HashMap<String, u32>>,
    /// Per (repository, context): name index → test id.
    tests: Vec<HashMap<u32, i64>>,
    next_test: i64,
    /// repository id → sha → commit id.
    commits: HashMap<i64, HashMap<String, i64>>,
    next_commit: i64,
    /// Per test id: whether its latest counted result (in run order) failed,
    /// for the flips (0 none yet, 1 passed, 2 failed).
    last: Vec<u8>,
}

impl Staging {
    pub(crate) fn new(tx: &Connection) -> rusqlite::Result<Staging> {
        let next = |table: &str| -> rusqlite::Result<i64> {
            tx.query_row(
                &format!("SELECT coalesce(max(id), 0) + 1 FROM {table}"),
                [],
                |r| r.get(0),
            )
        };
        Ok(Staging {
            staged: 0,
            names: HashMap::new(),
            contexts: HashMap::new(),
            tests: Vec::new(),
            next_test: next("tests")?,
            commits: HashMap::new(),
            next_commit: next("commits")?,
            last: Vec::new(),
        })
    }

    /// The id of the test `name` of `run`'s repository and context (`context`
    /// its index), its `tests` row written when it is new.
    fn test(
        &mut self,
        tx: &Connection,
        run: &results::RunOf<'_>,
        context: usize,
        name: &str,
    ) -> rusqlite::Result<i64> {
        let next_name = self.names.len() as u32;
        let name_key = match self.names.get(name) {
            Some(k) => *k,
            None => {
                self.names.insert(name.to_owned(), next_name);
                next_name
            }
        };
        if let Some(id) = self.tests[context].get(&name_key) {
            return Ok(*id);
        }
        let id = self.next_test;
        tx.prepare_cached(
            "INSERT INTO tests (id, repository_id, context, name) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![id, run.repository_id, run.context, name])?;
        self.tests[context].insert(name_key, id);
        self.next_test += 1;
        Ok(id)
    }

    /// The index of `run`'s (repository, context) into `tests`.
    fn context(&mut self, run: &results::RunOf<'_>) -> usize {
        let next = self.tests.len() as u32;
        let of_repository = self.contexts.entry(run.repository_id).or_default();
        let key = match of_repository.get(run.context) {
            Some(k) => *k,
            None => {
                of_repository.insert(run.context.to_owned(), next);
                self.tests.push(HashMap::new());
                next
            }
        };
        key as usize
    }

    /// The id of `run`'s commit, its `commits` row written when it is new.
    fn commit(&mut self, tx: &Connection, run: &results::RunOf<'_>) -> rusqlite::Result<i64> {
        let of_repository = self.commits.entry(run.repository_id).or_default();
        if let Some(id) = of_repository.get(run.commit) {
            return Ok(*id);
        }
        let id = self.next_commit;
        tx.prepare_cached("INSERT INTO commits (id, repository_id, sha) VALUES (?1, ?2, ?3)")?
            .execute(params![id, run.repository_id, run.commit])?;
        of_repository.insert(run.commit.to_owned(), id);
        self.next_commit += 1;
        Ok(id)
    }

    /// Store `tests` as the results of `run` (a new run: nothing to replace)
    /// and count its test_success events as `results::store` does. A name
    /// given twice counts once, by its first result, and stores its last
    /// (as the per-run path's upsert does).
    pub(super) fn stage(
        &mut self,
        tx: &Connection,
        run: &results::RunOf<'_>,
        tests: &[TestResult],
        live: bool,
    ) -> rusqlite::Result<()> {
        if tests.is_empty() {
            return Ok(());
        }
        let commit_id = self.commit(tx, run)?;
        let context = self.context(run);
        // (test id, first, last) of each name, in order of first appearance
        // (the order the per-run path interns them in).
        let mut unique: Vec<(i64, &TestResult, &TestResult)> = Vec::with_capacity(tests.len());
        let mut index: HashMap<i64, usize> = HashMap::new();
        for t in tests {
            let id = self.test(tx, run, context, &t.name)?;
            let found = if tests.len() <= 16 {
                unique.iter().position(|(i, _, _)| *i == id)
            } else {
                index.get(&id).copied()
            };
            match found {
                Some(i) => unique[i].2 = t,
                None => {
                    index.insert(id, unique.len());
                    unique.push((id, t, t));
                }
            }
        }
        let (mut good, mut total) = (0i64, 0i64);
        {
            let mut counted_row = tx.prepare_cached(
                "INSERT INTO temp.fresh_counted (test_id, run_id, commit_id, at, failed, retry_pass, flip)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (id, first, _) in &unique {
                // What the first result counts as; skipped counts nothing.
                let (failed, retry_pass) = match first.outcome {
                    TestOutcome::Skipped => continue,
                    TestOutcome::Failed | TestOutcome::Errored => (true, false),
                    TestOutcome::Passed => (false, first.retries > 0),
                };
                total += 1;
                good += i64::from(!failed);
                let slot = (*id - 1) as usize;
                if self.last.len() <= slot {
                    self.last.resize(slot + 1, 0);
                }
                let flip = self.last[slot] != 0 && (self.last[slot] == 2) != failed;
                self.last[slot] = if failed { 2 } else { 1 };
                counted_row.execute(params![
                    id, run.run_id, commit_id, run.at_ms, failed, retry_pass, flip
                ])?;
            }
        }
        // Appended in (run, test) order: the key order of `results`.
        unique.sort_unstable_by_key(|(id, _, _)| *id);
        let mut insert = tx.prepare_cached(
            "INSERT INTO results (run_id, test_id, outcome, duration_seconds, retries, retry_reasons, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (id, _, last) in &unique {
            let reasons = if last.retry_reasons.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&last.retry_reasons).unwrap_or_else(|_| "[]".into()))
            };
            insert.execute(params![
                run.run_id,
                id,
                results::outcome_code(last.outcome),
                last.duration_seconds,
                last.retries,
                reasons,
                last.message,
            ])?;
            self.staged += 1;
        }
        tx.prepare_cached(
            "INSERT INTO temp.fresh_runs (run_id, repository_id, at, good, total, commit_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            run.run_id,
            run.repository_id,
            run.at_ms,
            good,
            total,
            commit_id
        ])?;
        if total > 0 {
            hourly::add(
                run.repository_id,
                run.at_ms,
                crate::slo::SloId::TestSuccess.as_str(),
                good,
                total,
            );
            results::count_test_success(tx, run.repository, good, total, live)?;
        }
        Ok(())
    }
}

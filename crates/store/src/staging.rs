//! Where a fresh load's test results wait for the per-test counting
//! ([`Staging`]): tests and commits interned in memory, results written
//! straight into `results`, each run's commit and time kept in memory, and
//! at the end one pass over the results in (test, run) order
//! that writes every `tests`, `test_days` and `test_commits` row once
//! ([`Staging::write_tests`], see `fresh.rs`).

use crate::model::{TestOutcome, TestResult};
use crate::test_step::Step;
use crate::{hourly, results};
use foldhash::HashMap;
use rusqlite::{Connection, params};
use std::collections::BTreeMap;

/// Where a fresh load's test results wait for the per-test counting.
///
/// Tests and commits are interned here, in memory, in the order the per-run
/// path interns them (a run's tests in order of first appearance, runs in id
/// order): a new (repository, context, name) gets the next `tests` id at
/// once (its row is written at the end, with its counters; the tests' text
/// index is built after them: no random insert into it), so each
/// result is written straight into `results` with its test id (a run's
/// results sorted by test id: appended in key order); what the per-test
/// counting at the end needs besides them (each run's commit and time, the
/// results that do not count as stored) waits in memory.
pub(crate) struct Staging {
    pub(crate) staged: usize,
    /// Test names, interned once whatever their context.
    names: HashMap<String, u32>,
    /// Name key → name.
    name_texts: Vec<String>,
    /// repository id → context → index into `tests`.
    contexts: HashMap<i64, HashMap<String, u32>>,
    /// Context index → (repository id, context).
    context_texts: Vec<(i64, String)>,
    /// Per (repository, context): name index → test id.
    tests: Vec<HashMap<u32, i64>>,
    /// Per test interned here (ids from `first_test` on): (context index,
    /// name key).
    test_rows: Vec<(u32, u32)>,
    first_test: i64,
    next_test: i64,
    /// repository id → sha → commit id.
    commits: HashMap<i64, HashMap<String, i64>>,
    first_commit: i64,
    next_commit: i64,
    /// What the counting at the end needs of each run with results, by
    /// `run id - first_run`: its commit (`commit id - first_commit`) and
    /// its time. Its counted results are read back from `results`.
    first_run: Option<i64>,
    run_commits: Vec<u32>,
    run_times: Vec<i64>,
    /// The results whose stored row (a name's last result in its run) does
    /// not say what is counted (its first result, see `stage`): (test id,
    /// run id) → what the first counts as (None: nothing, it was skipped).
    counted_otherwise: HashMap<(i64, i64), Option<Counted>>,
}

/// What a counted result is to the per-test counters: (failed, passed after
/// a retry).
type Counted = (bool, bool);

/// What a result counts as (None: nothing, a skipped one), from its outcome
/// and retries: the stored row's (its code read back with
/// `results::outcome_from_code`) and the reported result's rule alike.
fn counted(outcome: TestOutcome, retries: i64) -> Option<Counted> {
    match outcome {
        TestOutcome::Skipped => None,
        TestOutcome::Passed => Some((false, retries > 0)),
        TestOutcome::Failed | TestOutcome::Errored => Some((true, false)),
    }
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
        let first_test = next("tests")?;
        let first_commit = next("commits")?;
        Ok(Staging {
            staged: 0,
            names: HashMap::default(),
            name_texts: Vec::new(),
            contexts: HashMap::default(),
            context_texts: Vec::new(),
            tests: Vec::new(),
            test_rows: Vec::new(),
            first_test,
            next_test: first_test,
            commits: HashMap::default(),
            first_commit,
            next_commit: first_commit,
            first_run: None,
            run_commits: Vec::new(),
            run_times: Vec::new(),
            counted_otherwise: HashMap::default(),
        })
    }

    /// The id of the test `name` of the repository and context `context`
    /// (its index), interned now when it is new (its row is written by
    /// [`Staging::write_tests`]).
    fn test(&mut self, context: usize, name: &str) -> i64 {
        let next_name = self.names.len() as u32;
        let name_key = match self.names.get(name) {
            Some(k) => *k,
            None => {
                self.names.insert(name.to_owned(), next_name);
                self.name_texts.push(name.to_owned());
                next_name
            }
        };
        if let Some(id) = self.tests[context].get(&name_key) {
            return *id;
        }
        let id = self.next_test;
        self.tests[context].insert(name_key, id);
        self.test_rows.push((context as u32, name_key));
        self.next_test += 1;
        id
    }

    /// The index of `run`'s (repository, context) into `tests`.
    fn context(&mut self, run: &results::RunOf<'_>) -> usize {
        let next = self.tests.len() as u32;
        let of_repository = self.contexts.entry(run.repository_id).or_default();
        let key = match of_repository.get(run.context) {
            Some(k) => *k,
            None => {
                of_repository.insert(run.context.to_owned(), next);
                self.context_texts
                    .push((run.repository_id, run.context.to_owned()));
                self.tests.push(HashMap::default());
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

    /// Remember `run`'s commit and time for the counting at the end (runs
    /// come in id order; ids the load did not give a result to stay unused).
    fn remember_run(&mut self, run_id: i64, commit_id: i64, at: i64) -> rusqlite::Result<()> {
        let first = *self.first_run.get_or_insert(run_id);
        let too_many = || {
            rusqlite::Error::ToSqlConversionFailure(
                "a fresh load's runs or commits outgrew its in-memory index".into(),
            )
        };
        let slot = usize::try_from(run_id - first).map_err(|_| too_many())?;
        let commit = u32::try_from(commit_id - self.first_commit).map_err(|_| too_many())?;
        if slot >= self.run_times.len() {
            self.run_commits.resize(slot + 1, 0);
            self.run_times.resize(slot + 1, 0);
        }
        self.run_commits[slot] = commit;
        self.run_times[slot] = at;
        Ok(())
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
        let mut index: HashMap<i64, usize> = HashMap::default();
        for t in tests {
            let id = self.test(context, &t.name);
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
        for (id, first, last) in &unique {
            // What the first result counts as; skipped counts nothing.
            let first_counts = counted(first.outcome, i64::from(first.retries));
            if let Some((failed, _)) = first_counts {
                total += 1;
                good += i64::from(!failed);
            }
            // The stored row is the last result: what counts is read back
            // from it at the end, unless the first says otherwise.
            if !std::ptr::eq(*first, *last)
                && counted(last.outcome, i64::from(last.retries)) != first_counts
            {
                self.counted_otherwise
                    .insert((*id, run.run_id), first_counts);
            }
        }
        self.remember_run(run.run_id, commit_id, run.at_ms)?;
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
        // The run's test_success events: its `test_events` row, appended in
        // run order (its index is built at the end of the load).
        if total > 0 {
            tx.prepare_cached(
                "INSERT INTO test_events (run_id, repository_id, at, good, total) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![run.run_id, run.repository_id, run.at_ms, good, total])?;
        }
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

/// A counted result, read in (test, run) order.
struct Execution {
    test_id: i64,
    run_id: i64,
    commit_id: i64,
    at: i64,
    failed: bool,
    retry_pass: bool,
}

/// What a test's counted results add up to (`tests`' counters).
#[derive(Default)]
struct Totals {
    runs: i64,
    passes: i64,
    failures: i64,
    flips: i64,
    commits: i64,
    flaky_commits: i64,
    flaky_failures: i64,
    last_failed: Option<bool>,
    first_seen: Option<i64>,
    last_seen: Option<i64>,
    last_failure: Option<(i64, i64)>,
    first_flaky: Option<i64>,
}

/// A `test_days` row's counters: runs, passes, failures, flips, commits,
/// flaky commits, flaky failures.
type Day = [i64; 7];

impl Staging {
    /// Free what only interning needs (the load stored its last run):
    /// [`Staging::write_tests`] needs the interned tests' names only.
    pub(crate) fn stop_interning(&mut self) {
        self.names = HashMap::default();
        self.contexts = HashMap::default();
        self.tests = Vec::new();
        self.commits = HashMap::default();
    }

    /// Write every test interned by the load with its counters, its
    /// `test_days` rows and (into `temp.fresh_commits`, for a sort by the
    /// table's key) its `test_commits` rows, from the load's results read
    /// sorted by (test, run), each as its run's first result of that name
    /// counts, with its run's commit and time (`sorted` is called once
    /// the sort is done, before any row is written): one pass in that order, each result moving
    /// its test's counters, day and commit by the per-run path's own rule
    /// ([`Step`], as `results::count` applies it), so the rows are the ones
    /// counting run by run gives. Tests in id order (`tests` appended),
    /// days in (test, day) order (`test_days` appended).
    pub(crate) fn write_tests(
        &self,
        tx: &Connection,
        sorted: &mut dyn FnMut() -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        // The results in (test, run) order, each read as its run's first
        // result of that name counts (`counted_otherwise`), with its run's
        // commit and time (`run_commits`, `run_times`).
        let mut exec = tx.prepare(
            "SELECT test_id, run_id, outcome, retries FROM results ORDER BY test_id, run_id",
        )?;
        let mut rows = exec.query([])?;
        let first_run = self.first_run.unwrap_or(0);
        let mut next = || -> rusqlite::Result<Option<Execution>> {
            while let Some(r) = rows.next()? {
                let (test_id, run_id): (i64, i64) = (r.get(0)?, r.get(1)?);
                let stored = counted(results::outcome_from_code(r.get(2)?), r.get(3)?);
                let counts = if self.counted_otherwise.is_empty() {
                    stored
                } else {
                    match self.counted_otherwise.get(&(test_id, run_id)) {
                        Some(first) => *first,
                        None => stored,
                    }
                };
                let Some((failed, retry_pass)) = counts else {
                    continue;
                };
                let slot = usize::try_from(run_id - first_run)
                    .ok()
                    .filter(|s| *s < self.run_times.len())
                    .ok_or_else(|| {
                        rusqlite::Error::ToSqlConversionFailure(
                            format!("result of run {run_id}, which the load did not remember")
                                .into(),
                        )
                    })?;
                return Ok(Some(Execution {
                    test_id,
                    run_id,
                    commit_id: self.first_commit + i64::from(self.run_commits[slot]),
                    at: self.run_times[slot],
                    failed,
                    retry_pass,
                }));
            }
            Ok(None)
        };
        let mut insert_test = tx.prepare(
            "INSERT INTO tests (id, repository_id, context, name, runs, passes, failures, flips, commits,
                 flaky_commits, flaky_failures, last_failed, first_seen, last_seen, last_failure_run_id,
                 last_failure_at, first_seen_flaky)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        let mut insert_day = tx.prepare(
            "INSERT INTO test_days (test_id, day, runs, passes, failures, flips, commits, flaky_commits,
                 flaky_failures)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut insert_commit = tx.prepare(
            "INSERT INTO temp.fresh_commits (commit_id, test_id, flags, failures) VALUES (?1, ?2, ?3, ?4)",
        )?;
        // A test's commits (flags, failures) and days, emptied per test.
        let mut commits: HashMap<i64, (i64, i64)> = HashMap::default();
        let mut days: BTreeMap<i64, Day> = BTreeMap::new();
        // The first row comes once the sort is done.
        let mut pending = next()?;
        sorted()?;
        for (i, (context, name)) in self.test_rows.iter().enumerate() {
            let id = self.first_test + i as i64;
            let mut t = Totals::default();
            commits.clear();
            days.clear();
            while let Some(e) = pending.as_ref().filter(|e| e.test_id == id) {
                let stored = commits.get(&e.commit_id).copied();
                let step = Step::of(stored, t.last_failed, e.failed, u32::from(e.retry_pass));
                commits.insert(e.commit_id, (step.flags, step.commit_failures));
                let flaky = i64::from(step.became_flaky);
                t.runs += 1;
                t.passes += step.passes;
                t.failures += step.failures;
                t.flips += step.flip;
                t.commits += step.new_commit;
                t.flaky_commits += flaky;
                t.flaky_failures += step.flaky_failures;
                t.last_failed = Some(e.failed);
                t.first_seen = Some(t.first_seen.map_or(e.at, |f| f.min(e.at)));
                t.last_seen = Some(t.last_seen.map_or(e.at, |l| l.max(e.at)));
                if e.failed {
                    t.last_failure = Some((e.run_id, e.at));
                }
                if step.became_flaky && t.first_flaky.is_none() {
                    t.first_flaky = Some(e.at);
                }
                let day = days.entry(e.at.div_euclid(DAY_MS)).or_default();
                for (v, by) in day.iter_mut().zip([
                    1,
                    step.passes,
                    step.failures,
                    step.flip,
                    step.new_commit,
                    flaky,
                    step.flaky_failures,
                ]) {
                    *v += by;
                }
                pending = next()?;
            }
            let (repository_id, context) = &self.context_texts[*context as usize];
            insert_test.execute(params![
                id,
                repository_id,
                context,
                self.name_texts[*name as usize],
                t.runs,
                t.passes,
                t.failures,
                t.flips,
                t.commits,
                t.flaky_commits,
                t.flaky_failures,
                t.last_failed,
                t.first_seen,
                t.last_seen,
                t.last_failure.map(|f| f.0),
                t.last_failure.map(|f| f.1),
                t.first_flaky,
            ])?;
            for (day, c) in &days {
                insert_day.execute(params![id, day, c[0], c[1], c[2], c[3], c[4], c[5], c[6]])?;
            }
            for (commit_id, (flags, failures)) in &commits {
                insert_commit.execute(params![commit_id, id, flags, failures])?;
            }
        }
        debug_assert!(pending.is_none(), "a counted result of a test not interned");
        Ok(())
    }
}

const DAY_MS: i64 = 86_400_000;

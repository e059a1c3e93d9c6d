//! Test results in their compact form, and the per-test counters they move
//! (migration 10).
//!
//! A test is interned once per (repository, context, name) in `tests`; a
//! result is a `results` row keyed by (run, test). A result new to the store
//! moves its test's counters in the same transaction: runs, passes,
//! failures, flips (the outcome differs from the test's previous counted
//! result), commits and flaky commits (`test_commits`: a pass and a failure
//! on one commit, or a pass after an in-run retry), first and last seen,
//! the last failure and when the test was first seen flaky; the same
//! increments go to the test's UTC day in `test_days`, which the windowed
//! statistics add up. The run's test_success events are its `test_events`
//! row. Nothing is counted twice: a result already stored for the run and
//! test (a replay, an update of an unfinished run) moves nothing.
//!
//! A bulk load ([`Batched`], `Store::ingest_batch`) writes the results as
//! they come but adds up the counters of a whole batch in memory (the test's
//! row, its days, its commits, the runs' test_events) and writes each row
//! once before the batch commits: the same values, computed by the same
//! step ([`Step`]) in the same order, in the same transaction.

use super::{catalog, tally};
use crate::model::{TestOutcome, TestResult};
use crate::test_step::{Step, TestCounts};
use rusqlite::{CachedStatement, Connection, OptionalExtension, params};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// A day in milliseconds: a `test_days` row is the UTC day `at_ms.div_euclid(DAY_MS)`
/// (the per-run path here and a fresh load's `staging.rs` alike).
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The stored code of an outcome (`results.outcome`).
pub(crate) fn outcome_code(o: TestOutcome) -> i64 {
    match o {
        TestOutcome::Passed => 0,
        TestOutcome::Failed => 1,
        TestOutcome::Errored => 2,
        TestOutcome::Skipped => 3,
    }
}

/// A test's counters from six columns, in the order `runs, failures,
/// commits, flaky_commits, flips, flaky_failures` (as `tests` and
/// `test_days` name them); a negative count reads as 0.
pub fn counts_from_columns(c: [i64; 6]) -> crate::flaky::Counts {
    let n = |i: usize| c[i].max(0) as u64;
    crate::flaky::Counts {
        executions: n(0),
        failures: n(1),
        commits: n(2),
        flaky_commits: n(3),
        flips: n(4),
        flaky_failures: n(5),
    }
}

/// [`counts_from_columns`] of six columns of `row` starting at `first`.
pub(crate) fn counts_at(
    row: &rusqlite::Row<'_>,
    first: usize,
) -> rusqlite::Result<crate::flaky::Counts> {
    let mut c = [0i64; 6];
    for (i, v) in c.iter_mut().enumerate() {
        *v = row.get(first + i)?;
    }
    Ok(counts_from_columns(c))
}

/// The outcome of a stored code (`results.outcome`; both stores' code).
pub fn outcome_from_code(code: i64) -> TestOutcome {
    match code {
        0 => TestOutcome::Passed,
        1 => TestOutcome::Failed,
        3 => TestOutcome::Skipped,
        _ => TestOutcome::Errored,
    }
}

/// The run a set of results belongs to.
pub(crate) struct RunOf<'a> {
    pub run_id: i64,
    pub repository_id: i64,
    pub repository: &'a str,
    pub context: &'a str,
    pub commit: &'a str,
    /// The run's event time (Unix ms): its latest known time.
    pub at_ms: i64,
}

/// Store `tests` as the results of `run` (replacing what an update of the run
/// replaces: results not in `tests` are deleted) and count the new ones.
/// `live`: the test_success events move the live counters (else they count
/// as backdated).
pub(crate) fn store(
    tx: &Connection,
    run: &RunOf<'_>,
    tests: &[TestResult],
    replacing: bool,
    live: bool,
) -> rusqlite::Result<()> {
    if tests.is_empty() {
        return Ok(());
    }
    // The batch (if one is active) is taken out while this run is stored, so
    // no borrow is held across a statement; it goes back even on an error
    // (the failed batch then rolls back and drops it).
    let mut batch = BATCH.with(|b| b.borrow_mut().take());
    let stored = store_in(tx, run, tests, replacing, live, batch.as_mut());
    if let Some(batch) = batch {
        BATCH.with(|b| *b.borrow_mut() = Some(batch));
    }
    stored
}

fn store_in(
    tx: &Connection,
    run: &RunOf<'_>,
    tests: &[TestResult],
    replacing: bool,
    live: bool,
    mut batch: Option<&mut Batch>,
) -> rusqlite::Result<()> {
    let before: HashSet<i64> = if replacing {
        tx.prepare_cached("SELECT test_id FROM results WHERE run_id = ?1")?
            .query_map([run.run_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    } else {
        HashSet::new()
    };
    let commit_id = match batch.as_deref_mut() {
        Some(b) => b.commit(tx, run.repository_id, run.commit)?,
        None => intern_commit(tx, run.repository_id, run.commit)?,
    };
    let mut insert = tx.prepare_cached(
        "INSERT INTO results (run_id, test_id, outcome, duration_seconds, retries, retry_reasons, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (run_id, test_id) DO UPDATE SET outcome = excluded.outcome,
            duration_seconds = excluded.duration_seconds, retries = excluded.retries,
            retry_reasons = excluded.retry_reasons, message = excluded.message",
    )?;
    let mut seen: HashSet<i64> = HashSet::with_capacity(tests.len());
    let (mut good, mut total) = (0i64, 0i64);
    let mut st = Statements::new(tx);
    for t in tests {
        let (test_id, last_failed) = match batch.as_deref_mut() {
            Some(b) => b.test(&mut st, run.repository_id, run.context, &t.name)?,
            None => intern_test(&mut st, run.repository_id, run.context, &t.name)?,
        };
        let reasons = if t.retry_reasons.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&t.retry_reasons).unwrap_or_else(|_| "[]".into()))
        };
        insert.execute(params![
            run.run_id,
            test_id,
            outcome_code(t.outcome),
            t.duration_seconds,
            t.retries,
            reasons,
            t.message,
        ])?;
        let new = seen.insert(test_id) && !before.contains(&test_id);
        if !new || t.outcome == TestOutcome::Skipped {
            continue;
        }
        let failed = matches!(t.outcome, TestOutcome::Failed | TestOutcome::Errored);
        total += 1;
        good += i64::from(!failed);
        match batch.as_deref_mut() {
            Some(b) => b.count(tx, run, test_id, commit_id, failed, t.retries)?,
            None => count(
                &mut st,
                run,
                test_id,
                last_failed,
                commit_id,
                failed,
                t.retries,
            )?,
        }
    }
    if replacing {
        let gone: Vec<i64> = before.difference(&seen).copied().collect();
        let mut delete =
            tx.prepare_cached("DELETE FROM results WHERE run_id = ?1 AND test_id = ?2")?;
        for test_id in gone {
            delete.execute(params![run.run_id, test_id])?;
        }
    }
    if total > 0 {
        match batch {
            Some(b) => {
                let e = b.events.entry(run.run_id).or_insert(Event {
                    repository_id: run.repository_id,
                    at: run.at_ms,
                    good: 0,
                    total: 0,
                });
                e.good += good;
                e.total += total;
            }
            None => write_event(
                tx,
                run.run_id,
                &Event {
                    repository_id: run.repository_id,
                    at: run.at_ms,
                    good,
                    total,
                },
            )?,
        }
        count_test_success(tx, run.repository, good, total, live)?;
    }
    Ok(())
}

/// Count a run's new test_success events (`total` of them, `good` good) in
/// the metric counters: live, or as backdated.
pub(super) fn count_test_success(
    tx: &Connection,
    repository: &str,
    good: i64,
    total: i64,
    live: bool,
) -> rusqlite::Result<()> {
    let slo = crate::slo::SloId::TestSuccess.as_str();
    if live {
        let series = |result| [("slo", slo), ("repository", repository), ("result", result)];
        // Both results exist from the first event on (see `slo_event`).
        tally::ensure(tx, catalog::SLO_EVENTS, &series("good"))?;
        tally::ensure(tx, catalog::SLO_EVENTS, &series("bad"))?;
        if good > 0 {
            tally::inc(tx, catalog::SLO_EVENTS, &series("good"), good as f64)?;
        }
        if total > good {
            tally::inc(
                tx,
                catalog::SLO_EVENTS,
                &series("bad"),
                (total - good) as f64,
            )?;
        }
    } else {
        tally::inc(
            tx,
            catalog::BACKDATED,
            &[("kind", "slo_event")],
            total as f64,
        )?;
    }
    Ok(())
}

fn intern_commit(tx: &Connection, repository_id: i64, sha: &str) -> rusqlite::Result<i64> {
    if let Some(id) = tx
        .prepare_cached("SELECT id FROM commits WHERE repository_id = ?1 AND sha = ?2")?
        .query_row(params![repository_id, sha], |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    tx.prepare_cached("INSERT INTO commits (repository_id, sha) VALUES (?1, ?2)")?
        .execute(params![repository_id, sha])?;
    Ok(tx.last_insert_rowid())
}

/// The test's id and the outcome of its latest counted result (true: failed).
fn intern_test(
    st: &mut Statements<'_>,
    repository_id: i64,
    context: &str,
    name: &str,
) -> rusqlite::Result<(i64, Option<bool>)> {
    if let Some(found) = st
        .get(
            Stmt::FindTest,
            "SELECT id, last_failed FROM tests WHERE repository_id = ?1 AND context = ?2 AND name = ?3",
        )?
        .query_row(params![repository_id, context, name], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
    {
        return Ok(found);
    }
    st.get(
        Stmt::NewTest,
        "INSERT INTO tests (repository_id, context, name) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![repository_id, context, name])?;
    Ok((st.tx.last_insert_rowid(), None))
}

/// The statements written once per result, each taken from the connection's
/// statement cache once per run (or per batch's write) instead of once per
/// result: a cache lookup hashes the statement's whole text, and giving it
/// back resets and clears it (together about 6 % of the writer's time for
/// a posted run of 8,000 results).
struct Statements<'c> {
    tx: &'c Connection,
    taken: [Option<CachedStatement<'c>>; Stmt::COUNT],
}

/// Which of [`Statements`].
#[derive(Clone, Copy)]
enum Stmt {
    FindTest,
    NewTest,
    FindCommitRow,
    WriteCommitRow,
    WriteTest,
    WriteDay,
}

impl Stmt {
    /// How many there are: one past the last.
    const COUNT: usize = Stmt::WriteDay as usize + 1;
}

impl<'c> Statements<'c> {
    fn new(tx: &'c Connection) -> Statements<'c> {
        Statements {
            tx,
            taken: Default::default(),
        }
    }

    /// Statement `which` (`sql` is its text), prepared on first use.
    fn get(&mut self, which: Stmt, sql: &str) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let slot = &mut self.taken[which as usize];
        if slot.is_none() {
            *slot = Some(self.tx.prepare_cached(sql)?);
        }
        Ok(slot.as_mut().expect("prepared above"))
    }
}

/// Move a test's counters for one new result.
fn count(
    st: &mut Statements<'_>,
    run: &RunOf<'_>,
    test_id: i64,
    last_failed: Option<bool>,
    commit_id: i64,
    failed: bool,
    retries: u32,
) -> rusqlite::Result<()> {
    let stored: Option<(i64, i64)> = st
        .get(
            Stmt::FindCommitRow,
            "SELECT flags, failures FROM test_commits WHERE test_id = ?1 AND commit_id = ?2",
        )?
        .query_row(params![test_id, commit_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let step = Step::of(stored, last_failed, failed, retries);
    if step.commit_changed {
        write_commit(st, test_id, commit_id, step.flags, step.commit_failures)?;
    }
    write_test(
        st,
        test_id,
        &TestDelta {
            counts: TestCounts::of(&step),
            last_failed: failed,
            first_seen: run.at_ms,
            last_seen: run.at_ms,
            last_failure: failed.then_some((run.run_id, run.at_ms)),
            first_flaky: step.became_flaky.then_some(run.at_ms),
        },
    )?;
    write_day(
        st,
        test_id,
        run.at_ms.div_euclid(DAY_MS),
        &TestCounts::of(&step),
    )
}

fn write_commit(
    st: &mut Statements<'_>,
    test_id: i64,
    commit_id: i64,
    flags: i64,
    failures: i64,
) -> rusqlite::Result<()> {
    st.get(
        Stmt::WriteCommitRow,
        "INSERT INTO test_commits (test_id, commit_id, flags, failures) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (test_id, commit_id) DO UPDATE SET flags = excluded.flags, failures = excluded.failures",
    )?
    .execute(params![test_id, commit_id, flags, failures])?;
    Ok(())
}

/// What counted results add to a `tests` row: the sums, and the latest
/// (`last_failed`, `last_failure`: run and time of the latest counted failure)
/// or earliest (`first_flaky`: when a commit of it first became flaky) of
/// them in counting order; `first_seen`/`last_seen` the min and max time.
#[derive(Debug, Clone, Copy)]
struct TestDelta {
    counts: TestCounts,
    last_failed: bool,
    first_seen: i64,
    last_seen: i64,
    last_failure: Option<(i64, i64)>,
    first_flaky: Option<i64>,
}

fn write_test(st: &mut Statements<'_>, test_id: i64, d: &TestDelta) -> rusqlite::Result<()> {
    st.get(
        Stmt::WriteTest,
        "UPDATE tests SET runs = runs + ?2, passes = passes + ?3, failures = failures + ?4, flips = flips + ?5,
            commits = commits + ?6, flaky_commits = flaky_commits + ?7, flaky_failures = flaky_failures + ?8,
            last_failed = ?9,
            first_seen = min(coalesce(first_seen, ?10), ?10), last_seen = max(coalesce(last_seen, ?11), ?11),
            last_failure_run_id = coalesce(?12, last_failure_run_id),
            last_failure_at = CASE WHEN ?12 IS NULL THEN last_failure_at ELSE ?13 END,
            first_seen_flaky = coalesce(first_seen_flaky, ?14)
         WHERE id = ?1",
    )?
    .execute(params![
        test_id,
        d.counts.runs,
        d.counts.passes,
        d.counts.failures,
        d.counts.flips,
        d.counts.commits,
        d.counts.flaky_commits,
        d.counts.flaky_failures,
        d.last_failed,
        d.first_seen,
        d.last_seen,
        d.last_failure.map(|f| f.0),
        d.last_failure.map(|f| f.1),
        d.first_flaky,
    ])?;
    Ok(())
}

fn write_day(
    st: &mut Statements<'_>,
    test_id: i64,
    day: i64,
    d: &TestCounts,
) -> rusqlite::Result<()> {
    st.get(
        Stmt::WriteDay,
        "INSERT INTO test_days (test_id, day, runs, passes, failures, flips, commits, flaky_commits, flaky_failures)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (test_id, day) DO UPDATE SET runs = runs + excluded.runs, passes = passes + excluded.passes,
            failures = failures + excluded.failures, flips = flips + excluded.flips,
            commits = commits + excluded.commits, flaky_commits = flaky_commits + excluded.flaky_commits,
            flaky_failures = flaky_failures + excluded.flaky_failures",
    )?
    .execute(params![
        test_id,
        day,
        d.runs,
        d.passes,
        d.failures,
        d.flips,
        d.commits,
        d.flaky_commits,
        d.flaky_failures
    ])?;
    Ok(())
}

/// A run's test_success events: its `test_events` row, or what adds to it.
#[derive(Debug, Clone, Copy)]
struct Event {
    repository_id: i64,
    at: i64,
    good: i64,
    total: i64,
}

fn write_event(tx: &Connection, run_id: i64, e: &Event) -> rusqlite::Result<()> {
    // The row keeps the time it was first written with: its hour is where
    // the rollup adds (as the update trigger does).
    let at: i64 = tx
        .prepare_cached(
            "INSERT INTO test_events (run_id, repository_id, at, good, total) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (run_id) DO UPDATE SET good = good + excluded.good, total = total + excluded.total
             RETURNING at",
        )?
        .query_row(params![run_id, e.repository_id, e.at, e.good, e.total], |r| r.get(0))?;
    super::hourly::add(
        e.repository_id,
        at,
        crate::slo::SloId::TestSuccess.as_str(),
        e.good,
        e.total,
    );
    Ok(())
}

/// A test as a batch knows it: its id, its latest counted outcome, and what
/// the batch adds to its row (None until a result of it counts).
struct BatchTest {
    id: i64,
    last_failed: Option<bool>,
    delta: Option<TestDelta>,
}

/// A `test_commits` row as a batch knows it: read once, then kept here.
#[derive(Clone, Copy)]
struct BatchCommit {
    /// flags and failures; None while the test has no row for the commit.
    stored: Option<(i64, i64)>,
    changed: bool,
}

/// The per-test counters of one batch (see the module documentation).
#[derive(Default)]
struct Batch {
    /// (repository, sha) → commit id.
    commits: HashMap<(i64, String), i64>,
    /// (repository, context, name) → index in `tests`.
    test_index: HashMap<(i64, String, String), usize>,
    tests: Vec<BatchTest>,
    /// test id → index in `tests`.
    by_id: HashMap<i64, usize>,
    /// Commits whose `test_commits` rows are loaded into `test_commits`.
    loaded: HashSet<i64>,
    /// (commit, test) → its row.
    test_commits: HashMap<(i64, i64), BatchCommit>,
    /// (test, day) → what the batch adds.
    days: HashMap<(i64, i64), TestCounts>,
    /// run → its test_success events in this batch.
    events: HashMap<i64, Event>,
}

impl Batch {
    fn commit(&mut self, tx: &Connection, repository_id: i64, sha: &str) -> rusqlite::Result<i64> {
        let key = (repository_id, sha.to_owned());
        if let Some(&id) = self.commits.get(&key) {
            return Ok(id);
        }
        let id = intern_commit(tx, repository_id, sha)?;
        self.commits.insert(key, id);
        Ok(id)
    }

    fn test(
        &mut self,
        st: &mut Statements<'_>,
        repository_id: i64,
        context: &str,
        name: &str,
    ) -> rusqlite::Result<(i64, Option<bool>)> {
        let key = (repository_id, context.to_owned(), name.to_owned());
        if let Some(&i) = self.test_index.get(&key) {
            let t = &self.tests[i];
            return Ok((t.id, t.last_failed));
        }
        let (id, last_failed) = intern_test(st, repository_id, context, name)?;
        self.test_index.insert(key, self.tests.len());
        self.by_id.insert(id, self.tests.len());
        self.tests.push(BatchTest {
            id,
            last_failed,
            delta: None,
        });
        Ok((id, last_failed))
    }

    /// [`count`] into memory: the same step, from the batch's view of the
    /// test and its commit.
    fn count(
        &mut self,
        tx: &Connection,
        run: &RunOf<'_>,
        test_id: i64,
        commit_id: i64,
        failed: bool,
        retries: u32,
    ) -> rusqlite::Result<()> {
        if self.loaded.insert(commit_id) {
            let mut rows = tx.prepare_cached(
                "SELECT test_id, flags, failures FROM test_commits WHERE commit_id = ?1",
            )?;
            let rows = rows.query_map([commit_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (test, flags, failures) = row?;
                self.test_commits.insert(
                    (commit_id, test),
                    BatchCommit {
                        stored: Some((flags, failures)),
                        changed: false,
                    },
                );
            }
        }
        let Some(&i) = self.by_id.get(&test_id) else {
            // Every test counted here was interned through `Batch::test`.
            return Err(rusqlite::Error::QueryReturnedNoRows);
        };
        let test = &mut self.tests[i];
        let commit = self
            .test_commits
            .entry((commit_id, test_id))
            .or_insert(BatchCommit {
                stored: None,
                changed: false,
            });
        let step = Step::of(commit.stored, test.last_failed, failed, retries);
        if step.commit_changed {
            commit.stored = Some((step.flags, step.commit_failures));
            commit.changed = true;
        }
        test.last_failed = Some(failed);
        let at = run.at_ms;
        let d = test.delta.get_or_insert(TestDelta {
            counts: TestCounts::default(),
            last_failed: failed,
            first_seen: at,
            last_seen: at,
            last_failure: None,
            first_flaky: None,
        });
        d.counts.add(&step);
        d.last_failed = failed;
        d.first_seen = d.first_seen.min(at);
        d.last_seen = d.last_seen.max(at);
        if failed {
            d.last_failure = Some((run.run_id, at));
        }
        if step.became_flaky && d.first_flaky.is_none() {
            d.first_flaky = Some(at);
        }
        let day = self
            .days
            .entry((test_id, at.div_euclid(DAY_MS)))
            .or_default();
        day.add(&step);
        Ok(())
    }

    /// Write every row the batch moved, once, in key order.
    fn write(self, tx: &Connection) -> rusqlite::Result<()> {
        let mut st = Statements::new(tx);
        let mut commits: Vec<_> = self
            .test_commits
            .into_iter()
            .filter(|(_, c)| c.changed)
            .collect();
        commits.sort_unstable_by_key(|(k, _)| *k);
        for ((commit_id, test_id), c) in commits {
            if let Some((flags, failures)) = c.stored {
                write_commit(&mut st, test_id, commit_id, flags, failures)?;
            }
        }
        let mut tests: Vec<_> = self
            .tests
            .iter()
            .filter_map(|t| t.delta.map(|d| (t.id, d)))
            .collect();
        tests.sort_unstable_by_key(|(id, _)| *id);
        for (id, d) in tests {
            write_test(&mut st, id, &d)?;
        }
        let mut days: Vec<_> = self.days.into_iter().collect();
        days.sort_unstable_by_key(|(k, _)| *k);
        for ((test_id, day), d) in days {
            write_day(&mut st, test_id, day, &d)?;
        }
        let mut events: Vec<_> = self.events.into_iter().collect();
        events.sort_unstable_by_key(|(run, _)| *run);
        for (run_id, e) in events {
            write_event(tx, run_id, &e)?;
        }
        Ok(())
    }
}

thread_local! {
    /// The per-test counters of the bulk load running on this thread, if any.
    static BATCH: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// While alive, results stored on this thread count into memory;
/// [`Batched::flush`] writes the counters (call it before the transaction
/// commits). Dropped without a flush (the batch failed), they are discarded
/// with the rolled-back batch.
pub(crate) struct Batched(());

impl Batched {
    /// Start batching; None when a batch is already active on this thread.
    pub(crate) fn start() -> Option<Batched> {
        BATCH.with(|b| {
            let mut b = b.borrow_mut();
            if b.is_some() {
                return None;
            }
            *b = Some(Batch::default());
            Some(Batched(()))
        })
    }

    /// Write the batch's counters through `tx` and stop batching.
    pub(crate) fn flush(self, tx: &Connection) -> rusqlite::Result<()> {
        match BATCH.with(|b| b.borrow_mut().take()) {
            Some(batch) => batch.write(tx),
            None => Ok(()),
        }
    }
}

impl Drop for Batched {
    fn drop(&mut self) {
        BATCH.with(|b| b.borrow_mut().take());
    }
}

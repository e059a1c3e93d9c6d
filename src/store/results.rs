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

use super::{catalog, tally};
use crate::model::{TestOutcome, TestResult};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashSet;

const DAY_MS: i64 = 86_400_000;

/// `test_commits.flags` bits.
const PASSED: i64 = 1;
const FAILED: i64 = 2;
const RETRY_PASSED: i64 = 4;
const COUNTED_FLAKY: i64 = 8;

/// The stored code of an outcome (`results.outcome`).
pub fn outcome_code(o: TestOutcome) -> i64 {
    match o {
        TestOutcome::Passed => 0,
        TestOutcome::Failed => 1,
        TestOutcome::Errored => 2,
        TestOutcome::Skipped => 3,
    }
}

/// A test's counters read from six columns of `row` starting at `first`,
/// in the order `runs, failures, commits, flaky_commits, flips,
/// flaky_failures` (as `tests` and `test_days` name them).
pub fn counts_at(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<crate::flaky::Counts> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(first + i)?.max(0) as u64) };
    Ok(crate::flaky::Counts {
        executions: n(0)?,
        failures: n(1)?,
        commits: n(2)?,
        flaky_commits: n(3)?,
        flips: n(4)?,
        flaky_failures: n(5)?,
    })
}

/// The outcome of a stored code.
pub fn outcome_from_code(code: i64) -> TestOutcome {
    match code {
        0 => TestOutcome::Passed,
        1 => TestOutcome::Failed,
        3 => TestOutcome::Skipped,
        _ => TestOutcome::Errored,
    }
}

/// The run a set of results belongs to.
pub struct RunOf<'a> {
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
pub fn store(
    tx: &Connection,
    run: &RunOf<'_>,
    tests: &[TestResult],
    replacing: bool,
    live: bool,
) -> rusqlite::Result<()> {
    if tests.is_empty() {
        return Ok(());
    }
    let before: HashSet<i64> = if replacing {
        tx.prepare_cached("SELECT test_id FROM results WHERE run_id = ?1")?
            .query_map([run.run_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    } else {
        HashSet::new()
    };
    let commit_id = intern_commit(tx, run.repository_id, run.commit)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO results (run_id, test_id, outcome, duration_seconds, retries, retry_reasons, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (run_id, test_id) DO UPDATE SET outcome = excluded.outcome,
            duration_seconds = excluded.duration_seconds, retries = excluded.retries,
            retry_reasons = excluded.retry_reasons, message = excluded.message",
    )?;
    let mut seen: HashSet<i64> = HashSet::with_capacity(tests.len());
    let (mut good, mut total) = (0i64, 0i64);
    for t in tests {
        let (test_id, last_failed) = intern_test(tx, run.repository_id, run.context, &t.name)?;
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
        count(tx, run, test_id, last_failed, commit_id, failed, t.retries)?;
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
        tx.prepare_cached(
            "INSERT INTO test_events (run_id, repository_id, at, good, total) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (run_id) DO UPDATE SET good = good + excluded.good, total = total + excluded.total",
        )?
        .execute(params![
            run.run_id,
            run.repository_id,
            run.at_ms,
            good,
            total
        ])?;
        let slo = crate::slo::SloId::TestSuccess.as_str();
        if live {
            let series = |result| {
                [
                    ("slo", slo),
                    ("repository", run.repository),
                    ("result", result),
                ]
            };
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
    tx: &Connection,
    repository_id: i64,
    context: &str,
    name: &str,
) -> rusqlite::Result<(i64, Option<bool>)> {
    if let Some(found) = tx
        .prepare_cached(
            "SELECT id, last_failed FROM tests WHERE repository_id = ?1 AND context = ?2 AND name = ?3",
        )?
        .query_row(params![repository_id, context, name], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
    {
        return Ok(found);
    }
    tx.prepare_cached("INSERT INTO tests (repository_id, context, name) VALUES (?1, ?2, ?3)")?
        .execute(params![repository_id, context, name])?;
    Ok((tx.last_insert_rowid(), None))
}

/// Move a test's counters for one new result.
fn count(
    tx: &Connection,
    run: &RunOf<'_>,
    test_id: i64,
    last_failed: Option<bool>,
    commit_id: i64,
    failed: bool,
    retries: u32,
) -> rusqlite::Result<()> {
    let stored: Option<(i64, i64)> = tx
        .prepare_cached(
            "SELECT flags, failures FROM test_commits WHERE test_id = ?1 AND commit_id = ?2",
        )?
        .query_row(params![test_id, commit_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let flags = stored.map(|s| s.0);
    let old = flags.unwrap_or(0);
    let commit_failures = stored.map_or(0, |s| s.1) + i64::from(failed);
    let retry_pass = i64::from(!failed && retries > 0);
    let mut now = old
        | if failed { FAILED } else { PASSED }
        | if !failed && retries > 0 {
            RETRY_PASSED
        } else {
            0
        };
    let flaky_now = (now & PASSED != 0 && now & FAILED != 0) || now & RETRY_PASSED != 0;
    let became_flaky = flaky_now && old & COUNTED_FLAKY == 0;
    if became_flaky {
        now |= COUNTED_FLAKY;
    }
    // Flaky failures: when the commit becomes flaky, its failures so far
    // (and this retried pass); once flaky, each further failure or retried pass.
    let flaky_failures = if became_flaky {
        commit_failures + retry_pass
    } else if old & COUNTED_FLAKY != 0 {
        i64::from(failed) + retry_pass
    } else {
        0
    };
    if flags != Some(now) || failed {
        tx.prepare_cached(
            "INSERT INTO test_commits (test_id, commit_id, flags, failures) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (test_id, commit_id) DO UPDATE SET flags = excluded.flags, failures = excluded.failures",
        )?
        .execute(params![test_id, commit_id, now, commit_failures])?;
    }
    let new_commit = i64::from(flags.is_none());
    let flip = i64::from(last_failed.is_some_and(|l| l != failed));
    let (passes, failures) = (i64::from(!failed), i64::from(failed));
    let flaky = i64::from(became_flaky);
    tx.prepare_cached(
        "UPDATE tests SET runs = runs + 1, passes = passes + ?2, failures = failures + ?3, flips = flips + ?4,
            commits = commits + ?5, flaky_commits = flaky_commits + ?6, flaky_failures = flaky_failures + ?10,
            last_failed = ?7,
            first_seen = min(coalesce(first_seen, ?8), ?8), last_seen = max(coalesce(last_seen, ?8), ?8),
            last_failure_run_id = CASE WHEN ?7 THEN ?9 ELSE last_failure_run_id END,
            last_failure_at = CASE WHEN ?7 THEN ?8 ELSE last_failure_at END,
            first_seen_flaky = CASE WHEN ?6 THEN coalesce(first_seen_flaky, ?8) ELSE first_seen_flaky END
         WHERE id = ?1",
    )?
    .execute(params![
        test_id,
        passes,
        failures,
        flip,
        new_commit,
        flaky,
        failed,
        run.at_ms,
        run.run_id,
        flaky_failures
    ])?;
    tx.prepare_cached(
        "INSERT INTO test_days (test_id, day, runs, passes, failures, flips, commits, flaky_commits, flaky_failures)
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (test_id, day) DO UPDATE SET runs = runs + 1, passes = passes + excluded.passes,
            failures = failures + excluded.failures, flips = flips + excluded.flips,
            commits = commits + excluded.commits, flaky_commits = flaky_commits + excluded.flaky_commits,
            flaky_failures = flaky_failures + excluded.flaky_failures",
    )?
    .execute(params![
        test_id,
        run.at_ms.div_euclid(DAY_MS),
        passes,
        failures,
        flip,
        new_commit,
        flaky,
        flaky_failures
    ])?;
    Ok(())
}

//! Test results and the per-test counters they move, on PostgreSQL: the
//! SQLite store's `results.rs` (one-run path; not its bulk `Batch`), with
//! the same tables, the same step ([`Step`], copied) and the same answers.
//! A result new to the store moves its test's counters once, in the run's
//! transaction; a replay or an update of an unfinished run moves nothing
//! for results already stored.
//!
//! Replicas: the counters of one test are read and written under the lock
//! of its `tests` row (`FOR UPDATE`, taken for the run's known tests in id
//! order before any is counted), so two replicas storing results of one
//! test at once count them one after the other. Two runs that first
//! introduce the same new tests in different orders at the same moment can
//! deadlock; PostgreSQL then aborts one ingest with an error (nothing of it
//! is stored) and a retry stores it.

use crate::statements::Sql;
use crate::tally;
use ci_slo_core::catalog;
use ci_slo_core::model::{TestOutcome, TestResult};
use ci_slo_core::slo::SloId;
use std::collections::HashSet;

const DAY_MS: i64 = 86_400_000;

/// `test_commits.flags` bits.
const PASSED: i64 = 1;
const FAILED: i64 = 2;
const RETRY_PASSED: i64 = 4;
const COUNTED_FLAKY: i64 = 8;

fn outcome_code(o: TestOutcome) -> i64 {
    match o {
        TestOutcome::Passed => 0,
        TestOutcome::Failed => 1,
        TestOutcome::Errored => 2,
        TestOutcome::Skipped => 3,
    }
}

/// The run a set of results belongs to.
pub(crate) struct RunOf<'a> {
    pub(crate) run_id: i64,
    pub(crate) repository_id: i64,
    pub(crate) repository: &'a str,
    pub(crate) context: &'a str,
    pub(crate) commit: &'a str,
    /// The run's event time (Unix ms): its latest known time.
    pub(crate) at_ms: i64,
}

/// Store `tests` as the results of `run` (an update replaces: results not
/// in `tests` are deleted) and count the new ones.
pub(crate) fn store(
    tx: &mut impl Sql,
    run: &RunOf<'_>,
    tests: &[TestResult],
    replacing: bool,
    live: bool,
) -> Result<(), postgres::Error> {
    if tests.is_empty() {
        return Ok(());
    }
    let before: HashSet<i64> = if replacing {
        tx.query(
            "SELECT test_id FROM results WHERE run_id = $1",
            &[&run.run_id],
        )?
        .into_iter()
        .map(|r| r.get(0))
        .collect()
    } else {
        HashSet::new()
    };
    // Lock the run's known tests in one order (see the module docs).
    let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
    tx.query(
        "SELECT id FROM tests WHERE repository_id = $1 AND context = $2 AND name = ANY($3)
         ORDER BY id FOR UPDATE",
        &[&run.repository_id, &run.context, &names],
    )?;
    let commit_id = intern_commit(tx, run.repository_id, run.commit)?;
    let mut seen: HashSet<i64> = HashSet::with_capacity(tests.len());
    let (mut good, mut total) = (0i64, 0i64);
    for t in tests {
        let (test_id, last_failed) = intern_test(tx, run.repository_id, run.context, &t.name)?;
        let reasons = (!t.retry_reasons.is_empty())
            .then(|| serde_json::to_string(&t.retry_reasons).unwrap_or_else(|_| "[]".into()));
        tx.execute(
            "INSERT INTO results (run_id, test_id, outcome, duration_seconds, retries, retry_reasons, message)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (run_id, test_id) DO UPDATE SET outcome = excluded.outcome,
                duration_seconds = excluded.duration_seconds, retries = excluded.retries,
                retry_reasons = excluded.retry_reasons, message = excluded.message",
            &[
                &run.run_id,
                &test_id,
                &outcome_code(t.outcome),
                &t.duration_seconds,
                &i64::from(t.retries),
                &reasons,
                &t.message,
            ],
        )?;
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
        for test_id in before.difference(&seen) {
            tx.execute(
                "DELETE FROM results WHERE run_id = $1 AND test_id = $2",
                &[&run.run_id, test_id],
            )?;
        }
    }
    if total > 0 {
        // The row keeps the time it was first written with.
        tx.execute(
            "INSERT INTO test_events AS e (run_id, repository_id, at, good, total) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (run_id) DO UPDATE SET good = e.good + excluded.good, total = e.total + excluded.total",
            &[&run.run_id, &run.repository_id, &run.at_ms, &good, &total],
        )?;
        count_test_success(tx, run.repository, good, total, live)?;
    }
    Ok(())
}

/// Count a run's new test_success events in the metric counters.
fn count_test_success(
    tx: &mut impl Sql,
    repository: &str,
    good: i64,
    total: i64,
    live: bool,
) -> Result<(), postgres::Error> {
    let slo = SloId::TestSuccess.as_str();
    if live {
        let series = |result| [("slo", slo), ("repository", repository), ("result", result)];
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

fn intern_commit(tx: &mut impl Sql, repository_id: i64, sha: &str) -> Result<i64, postgres::Error> {
    let select = "SELECT id FROM commits WHERE repository_id = $1 AND sha = $2";
    if let Some(row) = tx.query_opt(select, &[&repository_id, &sha])? {
        return Ok(row.get(0));
    }
    match tx.query_opt(
        "INSERT INTO commits (repository_id, sha) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
        &[&repository_id, &sha],
    )? {
        Some(row) => Ok(row.get(0)),
        None => Ok(tx.query_one(select, &[&repository_id, &sha])?.get(0)),
    }
}

/// The test's id and the outcome of its latest counted result (true:
/// failed), its row locked.
fn intern_test(
    tx: &mut impl Sql,
    repository_id: i64,
    context: &str,
    name: &str,
) -> Result<(i64, Option<bool>), postgres::Error> {
    let select =
        "SELECT id, last_failed FROM tests WHERE repository_id = $1 AND context = $2 AND name = $3
                  FOR UPDATE";
    let read = |r: postgres::Row| (r.get(0), r.get::<_, Option<i64>>(1).map(|f| f != 0));
    if let Some(row) = tx.query_opt(select, &[&repository_id, &context, &name])? {
        return Ok(read(row));
    }
    match tx.query_opt(
        "INSERT INTO tests (repository_id, context, name) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING RETURNING id",
        &[&repository_id, &context, &name],
    )? {
        Some(row) => Ok((row.get(0), None)),
        None => Ok(read(
            tx.query_one(select, &[&repository_id, &context, &name])?,
        )),
    }
}

/// What one new result does to its test's counters (the SQLite store's
/// `results::Step`, unchanged).
#[derive(Debug, Clone, Copy)]
struct Step {
    flags: i64,
    commit_failures: i64,
    commit_changed: bool,
    new_commit: i64,
    flip: i64,
    passes: i64,
    failures: i64,
    became_flaky: bool,
    flaky_failures: i64,
}

impl Step {
    fn of(
        stored: Option<(i64, i64)>,
        last_failed: Option<bool>,
        failed: bool,
        retries: u32,
    ) -> Step {
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
        let flaky_failures = if became_flaky {
            commit_failures + retry_pass
        } else if old & COUNTED_FLAKY != 0 {
            i64::from(failed) + retry_pass
        } else {
            0
        };
        Step {
            flags: now,
            commit_failures,
            commit_changed: flags != Some(now) || failed,
            new_commit: i64::from(flags.is_none()),
            flip: i64::from(last_failed.is_some_and(|l| l != failed)),
            passes: i64::from(!failed),
            failures: i64::from(failed),
            became_flaky,
            flaky_failures,
        }
    }
}

/// Move a test's counters for one new result.
fn count(
    tx: &mut impl Sql,
    run: &RunOf<'_>,
    test_id: i64,
    last_failed: Option<bool>,
    commit_id: i64,
    failed: bool,
    retries: u32,
) -> Result<(), postgres::Error> {
    let stored: Option<(i64, i64)> = tx
        .query_opt(
            "SELECT flags, failures FROM test_commits WHERE test_id = $1 AND commit_id = $2",
            &[&test_id, &commit_id],
        )?
        .map(|r| (r.get(0), r.get(1)));
    let step = Step::of(stored, last_failed, failed, retries);
    if step.commit_changed {
        tx.execute(
            "INSERT INTO test_commits (test_id, commit_id, flags, failures) VALUES ($1, $2, $3, $4)
             ON CONFLICT (commit_id, test_id) DO UPDATE SET flags = excluded.flags, failures = excluded.failures",
            &[&test_id, &commit_id, &step.flags, &step.commit_failures],
        )?;
    }
    let flaky = i64::from(step.became_flaky);
    let last_failure = failed.then_some((run.run_id, run.at_ms));
    let first_flaky = step.became_flaky.then_some(run.at_ms);
    tx.execute(
        "UPDATE tests SET runs = runs + 1, passes = passes + $2, failures = failures + $3, flips = flips + $4,
            commits = commits + $5, flaky_commits = flaky_commits + $6, flaky_failures = flaky_failures + $7,
            last_failed = $8,
            first_seen = least(coalesce(first_seen, $9), $9), last_seen = greatest(coalesce(last_seen, $9), $9),
            last_failure_run_id = coalesce($10, last_failure_run_id),
            last_failure_at = CASE WHEN $10::bigint IS NULL THEN last_failure_at ELSE $11 END,
            first_seen_flaky = coalesce(first_seen_flaky, $12)
         WHERE id = $1",
        &[
            &test_id,
            &step.passes,
            &step.failures,
            &step.flip,
            &step.new_commit,
            &flaky,
            &step.flaky_failures,
            &i64::from(failed),
            &run.at_ms,
            &last_failure.map(|f| f.0),
            &last_failure.map(|f| f.1),
            &first_flaky,
        ],
    )?;
    tx.execute(
        "INSERT INTO test_days AS d (test_id, day, runs, passes, failures, flips, commits, flaky_commits, flaky_failures)
         VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (test_id, day) DO UPDATE SET runs = d.runs + excluded.runs, passes = d.passes + excluded.passes,
            failures = d.failures + excluded.failures, flips = d.flips + excluded.flips,
            commits = d.commits + excluded.commits, flaky_commits = d.flaky_commits + excluded.flaky_commits,
            flaky_failures = d.flaky_failures + excluded.flaky_failures",
        &[
            &test_id,
            &run.at_ms.div_euclid(DAY_MS),
            &step.passes,
            &step.failures,
            &step.flip,
            &step.new_commit,
            &flaky,
            &step.flaky_failures,
        ],
    )?;
    Ok(())
}

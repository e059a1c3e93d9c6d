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
use std::collections::{HashMap, HashSet};

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
/// in `tests` are deleted) and count the new ones. Set-based: one statement
/// per table for the whole run (arrays bound as parameters, `unnest`), not
/// one per result. A test named twice in one run keeps the last of its
/// results and is counted once, by the first (as the SQLite store does).
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
    let ids = intern_tests(tx, run, tests)?;
    let commit_id = intern_commit(tx, run.repository_id, run.commit)?;

    // Each test's row once: the last of its results, and the first one,
    // which is the one counted.
    let mut rows: HashMap<i64, (usize, usize)> = HashMap::with_capacity(tests.len());
    let mut order: Vec<i64> = Vec::with_capacity(tests.len());
    for (i, t) in tests.iter().enumerate() {
        let (id, _) = *ids
            .get(t.name.as_str())
            .expect("every test of the run is interned");
        rows.entry(id).and_modify(|r| r.1 = i).or_insert_with(|| {
            order.push(id);
            (i, i)
        });
    }
    upsert_results(tx, run.run_id, tests, &order, &rows)?;
    if replacing {
        let gone: Vec<i64> = before
            .iter()
            .copied()
            .filter(|id| !rows.contains_key(id))
            .collect();
        if !gone.is_empty() {
            tx.execute(
                "DELETE FROM results WHERE run_id = $1 AND test_id = ANY($2)",
                &[&run.run_id, &gone],
            )?;
        }
    }

    // The new results that move counters, in the order of the run.
    let counted: Vec<(i64, &TestResult)> = order
        .iter()
        .map(|id| (*id, &tests[rows[id].0]))
        .filter(|(id, t)| !before.contains(id) && t.outcome != TestOutcome::Skipped)
        .collect();
    if counted.is_empty() {
        return Ok(());
    }
    let good = counted
        .iter()
        .filter(|(_, t)| !is_failed(t.outcome))
        .count() as i64;
    let total = counted.len() as i64;
    count(tx, run, commit_id, &counted, &ids)?;
    // The row keeps the time it was first written with.
    tx.execute(
        "INSERT INTO test_events AS e (run_id, repository_id, at, good, total) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (run_id) DO UPDATE SET good = e.good + excluded.good, total = e.total + excluded.total",
        &[&run.run_id, &run.repository_id, &run.at_ms, &good, &total],
    )?;
    count_test_success(tx, run.repository, good, total, live)?;
    Ok(())
}

fn is_failed(o: TestOutcome) -> bool {
    matches!(o, TestOutcome::Failed | TestOutcome::Errored)
}

/// The run's results, one row per test (`rows`: the index of its first
/// and of its last result in `tests`; the last one is stored).
fn upsert_results(
    tx: &mut impl Sql,
    run_id: i64,
    tests: &[TestResult],
    order: &[i64],
    rows: &HashMap<i64, (usize, usize)>,
) -> Result<(), postgres::Error> {
    let n = order.len();
    let (mut outcome, mut duration, mut retries, mut reasons, mut message) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for id in order {
        let t = &tests[rows[id].1];
        outcome.push(outcome_code(t.outcome));
        duration.push(t.duration_seconds);
        retries.push(i64::from(t.retries));
        reasons.push(
            (!t.retry_reasons.is_empty())
                .then(|| serde_json::to_string(&t.retry_reasons).unwrap_or_else(|_| "[]".into())),
        );
        message.push(t.message.as_deref());
    }
    tx.execute(
        "INSERT INTO results (run_id, test_id, outcome, duration_seconds, retries, retry_reasons, message)
         SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::float8[], $5::bigint[], $6::text[], $7::text[])
         ON CONFLICT (run_id, test_id) DO UPDATE SET outcome = excluded.outcome,
            duration_seconds = excluded.duration_seconds, retries = excluded.retries,
            retry_reasons = excluded.retry_reasons, message = excluded.message",
        &[
            &run_id, &order, &outcome, &duration, &retries, &reasons, &message,
        ],
    )?;
    Ok(())
}

/// Count a run's new test_success events in the metric counters: both
/// series exist from the first event on (at 0 if none of their kind), in
/// one statement.
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
        tally::add_all(
            tx,
            catalog::SLO_EVENTS,
            &[
                (&series("good"), good as f64),
                (&series("bad"), (total - good) as f64),
            ],
        )?;
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

/// Each test of the run by name: its id and the outcome of its latest
/// counted result (true: failed), its row locked. The known tests are
/// locked first, in id order (see the module docs); the new ones are then
/// created in one statement, in the order of the run (their ids follow
/// SQLite's, in order of first sight).
fn intern_tests<'t>(
    tx: &mut impl Sql,
    run: &RunOf<'_>,
    tests: &'t [TestResult],
) -> Result<HashMap<&'t str, (i64, Option<bool>)>, postgres::Error> {
    let mut names: Vec<&str> = Vec::with_capacity(tests.len());
    let mut unique: HashSet<&str> = HashSet::with_capacity(tests.len());
    for t in tests {
        if unique.insert(t.name.as_str()) {
            names.push(t.name.as_str());
        }
    }
    let lock = "SELECT id, name, last_failed FROM tests
                WHERE repository_id = $1 AND context = $2 AND name = ANY($3)
                ORDER BY id FOR UPDATE";
    let mut ids: HashMap<&'t str, (i64, Option<bool>)> = HashMap::with_capacity(names.len());
    let read = |ids: &mut HashMap<&'t str, (i64, Option<bool>)>, rows: Vec<postgres::Row>| {
        for r in rows {
            let name: &str = r.get(1);
            if let Some(n) = unique.get(name) {
                ids.insert(n, (r.get(0), r.get::<_, Option<i64>>(2).map(|f| f != 0)));
            }
        }
    };
    let rows = tx.query(lock, &[&run.repository_id, &run.context, &names])?;
    read(&mut ids, rows);
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !ids.contains_key(n))
        .collect();
    if missing.is_empty() {
        return Ok(ids);
    }
    let created = tx.query(
        "INSERT INTO tests (repository_id, context, name)
         SELECT $1, $2, n FROM unnest($3::text[]) WITH ORDINALITY AS u(n, i) ORDER BY i
         ON CONFLICT DO NOTHING RETURNING id, name, last_failed",
        &[&run.repository_id, &run.context, &missing],
    )?;
    read(&mut ids, created);
    // Another replica created some of them meanwhile: lock them as well.
    let raced: Vec<&str> = missing
        .into_iter()
        .filter(|n| !ids.contains_key(n))
        .collect();
    if !raced.is_empty() {
        let rows = tx.query(lock, &[&run.repository_id, &run.context, &raced])?;
        read(&mut ids, rows);
    }
    Ok(ids)
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

/// Move the counters of the run's tests for their new results (`counted`:
/// one per test, by test id), one statement per table.
fn count(
    tx: &mut impl Sql,
    run: &RunOf<'_>,
    commit_id: i64,
    counted: &[(i64, &TestResult)],
    ids: &HashMap<&str, (i64, Option<bool>)>,
) -> Result<(), postgres::Error> {
    let test_ids: Vec<i64> = counted.iter().map(|(id, _)| *id).collect();
    let stored: HashMap<i64, (i64, i64)> = tx
        .query(
            "SELECT test_id, flags, failures FROM test_commits WHERE commit_id = $1 AND test_id = ANY($2)",
            &[&commit_id, &test_ids],
        )?
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let n = counted.len();
    let (mut changed_ids, mut changed_flags, mut changed_failures) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut u: [Vec<i64>; 7] = Default::default();
    let mut last_failed: Vec<i64> = Vec::with_capacity(n);
    for (test_id, t) in counted {
        let failed = is_failed(t.outcome);
        let before = ids.get(t.name.as_str()).and_then(|(_, l)| *l);
        let step = Step::of(stored.get(test_id).copied(), before, failed, t.retries);
        if step.commit_changed {
            changed_ids.push(*test_id);
            changed_flags.push(step.flags);
            changed_failures.push(step.commit_failures);
        }
        for (column, value) in u.iter_mut().zip([
            *test_id,
            step.passes,
            step.failures,
            step.flip,
            step.new_commit,
            i64::from(step.became_flaky),
            step.flaky_failures,
        ]) {
            column.push(value);
        }
        last_failed.push(i64::from(failed));
    }
    if !changed_ids.is_empty() {
        tx.execute(
            "INSERT INTO test_commits (test_id, commit_id, flags, failures)
             SELECT u.test_id, $1, u.flags, u.failures
             FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS u(test_id, flags, failures)
             ON CONFLICT (commit_id, test_id) DO UPDATE SET flags = excluded.flags, failures = excluded.failures",
            &[&commit_id, &changed_ids, &changed_flags, &changed_failures],
        )?;
    }
    let [ids, passes, failures, flips, commits, flaky, flaky_failures] = &u;
    // The rows are locked already (`intern_tests`): no wait here.
    tx.execute(
        "UPDATE tests t SET runs = t.runs + 1, passes = t.passes + u.passes, failures = t.failures + u.failures,
            flips = t.flips + u.flips, commits = t.commits + u.commits,
            flaky_commits = t.flaky_commits + u.flaky, flaky_failures = t.flaky_failures + u.flaky_failures,
            last_failed = u.failed,
            first_seen = least(coalesce(t.first_seen, $1::bigint), $1::bigint),
            last_seen = greatest(coalesce(t.last_seen, $1::bigint), $1::bigint),
            last_failure_run_id = CASE WHEN u.failed = 1 THEN $2::bigint ELSE t.last_failure_run_id END,
            last_failure_at = CASE WHEN u.failed = 1 THEN $1::bigint ELSE t.last_failure_at END,
            first_seen_flaky = CASE WHEN u.flaky = 1 THEN coalesce(t.first_seen_flaky, $1::bigint)
                ELSE t.first_seen_flaky END
         FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[],
                     $9::bigint[], $10::bigint[])
            AS u(id, passes, failures, flips, commits, flaky, flaky_failures, failed)
         WHERE t.id = u.id",
        &[
            &run.at_ms,
            &run.run_id,
            ids,
            passes,
            failures,
            flips,
            commits,
            flaky,
            flaky_failures,
            &last_failed,
        ],
    )?;
    tx.execute(
        "INSERT INTO test_days AS d (test_id, day, runs, passes, failures, flips, commits, flaky_commits, flaky_failures)
         SELECT u.id, $1, 1, u.passes, u.failures, u.flips, u.commits, u.flaky, u.flaky_failures
         FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
                     $8::bigint[]) AS u(id, passes, failures, flips, commits, flaky, flaky_failures)
         ON CONFLICT (test_id, day) DO UPDATE SET runs = d.runs + excluded.runs, passes = d.passes + excluded.passes,
            failures = d.failures + excluded.failures, flips = d.flips + excluded.flips,
            commits = d.commits + excluded.commits, flaky_commits = d.flaky_commits + excluded.flaky_commits,
            flaky_failures = d.flaky_failures + excluded.flaky_failures",
        &[
            &run.at_ms.div_euclid(DAY_MS),
            ids,
            passes,
            failures,
            flips,
            commits,
            flaky,
            flaky_failures,
        ],
    )?;
    Ok(())
}

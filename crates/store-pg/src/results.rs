//! Test results and the per-test counters they move, on PostgreSQL: the
//! SQLite store's `results.rs` (one-run path; not its bulk `Batch`), with
//! the same tables, the same step (`ci_slo_store::test_step::Step`, shared)
//! and the same answers.
//! A result new to the store moves its test's counters once, in the run's
//! transaction; a replay or an update of an unfinished run moves nothing
//! for results already stored.
//!
//! Replicas: the counters of a repository and context's tests (`tests`,
//! `test_days`, `test_commits`) are read and written under one lock of
//! that repository and context (`concurrent::lock_tests`, an advisory
//! transaction lock taken before any of them is read), so two replicas
//! storing results of one test at once count them one after the other;
//! new tests are created under the same lock (see `intern_tests` and
//! `concurrent.rs`).

use crate::statements::Sql;
use ci_slo_core::catalog;
use ci_slo_core::model::{TestOutcome, TestResult};
use ci_slo_core::slo::SloId;
use ci_slo_store::tally::labels_json;
use ci_slo_store::test_step::Step;
use postgres::types::ToSql;
use std::collections::{HashMap, HashSet};

const DAY_MS: i64 = 86_400_000;

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

/// Storing a run's results as its one `run_results` row (schema migration
/// 4): `$1` the run, then the columns as arrays in test id order (`$6`
/// test ids, outcomes, durations, retries, retry reasons, `$11` messages;
/// NULL for an array of defaults, see [`result_columns`]). The row is the
/// run's whole set of results: an update of the run replaces it (results
/// left out of the update are gone, as SQLite deletes them). A test id
/// past `INTEGER` is an error ("integer out of range"), never wrapped.
/// One row per run is what keeps one result per (run, test): the columns
/// hold each distinct test of the run once; two writers of one run are
/// serialized by its primary key, and before that by the run's row, which
/// `ingest_run` locks (`FOR UPDATE`) before it reads what the run had.
macro_rules! results_upsert {
    () => {
        "INSERT INTO run_results (run_id, test_ids, outcomes, durations, retries, retry_reasons, messages)
         VALUES ($1, $6::bigint[]::integer[], $7::bigint[]::smallint[], $8::float8[], $9::bigint[], $10::text[],
                 $11::text[])
         ON CONFLICT (run_id) DO UPDATE SET test_ids = excluded.test_ids, outcomes = excluded.outcomes,
            durations = excluded.durations, retries = excluded.retries,
            retry_reasons = excluded.retry_reasons, messages = excluded.messages"
    };
}

/// A run's results without new ones to count ($2 to $5 unused but typed,
/// so that both statements bind the same first parameters).
const RESULTS: &str = concat!(
    "WITH unused AS (SELECT $2::bigint, $3::bigint, $4::bigint, $5::bigint) ",
    results_upsert!()
);

/// A run's results and what its new ones count, in one statement: the
/// results ([`results_upsert`]); `test_commits` ($5 the commit; $12 test
/// ids, $13 flags, $14 failures, only those that change); the tests'
/// counters and their day's (`$4`; $15 test ids, $16 passes, $17 failures,
/// $18 flips, $19 commits, $20 flaky commits, $21 flaky failures, $22 1
/// when failed; under the lock of the tests' counters, taken by
/// `intern_tests`, so the day's rows are updated where they exist and
/// inserted where not, without an upsert's conflict check and row lock).
/// The run's `test_events` row is written later ([`TEST_EVENTS`]); the
/// metric counters they move are the transaction's, added at its commit.
const RESULTS_COUNTED: &str = concat!(
    "WITH unused AS (SELECT $2::bigint), r AS (",
    results_upsert!(),
    "),
     c AS (
        INSERT INTO test_commits (test_id, commit_id, flags, failures)
        SELECT u.test_id, $5::bigint, u.flags, u.failures
        FROM unnest($12::bigint[], $13::bigint[], $14::bigint[]) AS u(test_id, flags, failures)
        ON CONFLICT (commit_id, test_id) DO UPDATE SET flags = excluded.flags, failures = excluded.failures),
     u AS (SELECT * FROM unnest($15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[],
                               $20::bigint[], $21::bigint[], $22::bigint[])
           AS u(id, passes, failures, flips, commits, flaky, flaky_failures, failed)),
     t AS (
        UPDATE tests t SET runs = t.runs + 1, passes = t.passes + u.passes, failures = t.failures + u.failures,
            flips = t.flips + u.flips, commits = t.commits + u.commits,
            flaky_commits = t.flaky_commits + u.flaky, flaky_failures = t.flaky_failures + u.flaky_failures,
            last_failed = u.failed,
            first_seen = least(coalesce(t.first_seen, $3::bigint), $3::bigint),
            last_seen = greatest(coalesce(t.last_seen, $3::bigint), $3::bigint),
            last_failure_run_id = CASE WHEN u.failed = 1 THEN $1::bigint ELSE t.last_failure_run_id END,
            last_failure_at = CASE WHEN u.failed = 1 THEN $3::bigint ELSE t.last_failure_at END,
            first_seen_flaky = CASE WHEN u.flaky = 1 THEN coalesce(t.first_seen_flaky, $3::bigint)
                ELSE t.first_seen_flaky END
        FROM u WHERE t.id = u.id),
     d AS (
        UPDATE test_days d SET runs = d.runs + 1, passes = d.passes + u.passes, failures = d.failures + u.failures,
            flips = d.flips + u.flips, commits = d.commits + u.commits, flaky_commits = d.flaky_commits + u.flaky,
            flaky_failures = d.flaky_failures + u.flaky_failures
        FROM u WHERE d.test_id = u.id AND d.day = $4
        RETURNING d.test_id)
     INSERT INTO test_days (test_id, day, runs, passes, failures, flips, commits, flaky_commits, flaky_failures)
     SELECT u.id, $4, 1, u.passes, u.failures, u.flips, u.commits, u.flaky, u.flaky_failures FROM u
     WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.test_id = u.id)"
);

/// The test_success events of a run's new results, its `test_events` row
/// ($1 run, $2 repository, $3 time, $4 good, $5 total; the row keeps the
/// time it was first written with): its trigger moves the repository's
/// hourly rollup row, which every run of the repository and hour moves,
/// locked until the transaction ends. So it is written with the run's
/// other SLO events, after the results (`concurrent.rs`).
const TEST_EVENTS: &str =
    "INSERT INTO test_events AS e (run_id, repository_id, at, good, total) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (run_id) DO UPDATE SET good = e.good + excluded.good, total = e.total + excluded.total";

/// The test_success events that [`store`] left to write: good, total.
#[must_use = "a run's test events are written by `TestEvents::write`"]
pub(crate) struct TestEvents(Option<(i64, i64)>);

impl TestEvents {
    /// Write them as `run`'s `test_events` row (nothing when the run
    /// counted no new result).
    pub(crate) fn write(self, tx: &mut impl Sql, run: &RunOf<'_>) -> Result<(), postgres::Error> {
        if let Some((good, total)) = self.0 {
            tx.execute(
                TEST_EVENTS,
                &[&run.run_id, &run.repository_id, &run.at_ms, &good, &total],
            )?;
        }
        Ok(())
    }
}

/// Store `tests` as the results of `run` (an update replaces: the run's
/// row is written again with `tests` only) and count the new ones.
/// Set-based: the tests' rows in one or two statements ([`intern_tests`]),
/// the commit and its per-test rows in one ([`commit_of`]), then the
/// results and every counter they move in one ([`RESULTS_COUNTED`]): a
/// handful of round trips for the whole run, not five per result. A test
/// named twice in one run keeps the last of its results and is counted
/// once, by the first (as the SQLite store does). The run's test_success
/// events are left to the caller ([`TestEvents`]), to write with its other
/// SLO events.
pub(crate) fn store(
    tx: &mut impl Sql,
    run: &RunOf<'_>,
    tests: &[TestResult],
    replacing: bool,
    live: bool,
) -> Result<TestEvents, postgres::Error> {
    if tests.is_empty() {
        return Ok(TestEvents(None));
    }
    let before: HashSet<i64> = if replacing {
        tx.query(
            "SELECT unnest(test_ids)::bigint FROM run_results WHERE run_id = $1",
            &[&run.run_id],
        )?
        .into_iter()
        .map(|r| r.get(0))
        .collect()
    } else {
        HashSet::new()
    };
    let ids = intern_tests(tx, run, tests)?;

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
    // The new results that move counters, in the order of the run.
    let counted: Vec<(i64, &TestResult)> = order
        .iter()
        .map(|id| (*id, &tests[rows[id].0]))
        .filter(|(id, t)| !before.contains(id) && t.outcome != TestOutcome::Skipped)
        .collect();
    let counted_ids: Vec<i64> = counted.iter().map(|(id, _)| *id).collect();
    let (commit_id, stored) = commit_of(tx, run.repository_id, run.commit, &counted_ids)?;

    // Stored in test id order (as SQLite's and the former table's primary
    // key keep them).
    let mut stored_ids = order.clone();
    stored_ids.sort_unstable();
    let (outcome, duration, retries, reasons, message) = result_columns(tests, &stored_ids, &rows);
    let day = run.at_ms.div_euclid(DAY_MS);
    let head: [&(dyn ToSql + Sync); 11] = [
        &run.run_id,
        &run.repository_id,
        &run.at_ms,
        &day,
        &commit_id,
        &stored_ids,
        &outcome,
        &duration,
        &retries,
        &reasons,
        &message,
    ];
    if counted.is_empty() {
        tx.execute(RESULTS, &head)?;
    } else {
        let steps = Steps::of(&counted, &ids, &stored);
        let good = counted
            .iter()
            .filter(|(_, t)| !is_failed(t.outcome))
            .count() as i64;
        let total = counted.len() as i64;
        let (family, labels, values) = test_success_counters(run.repository, good, total, live);
        let [
            ids,
            passes,
            failures,
            flips,
            commits,
            flaky,
            flaky_failures,
            failed,
        ] = &steps.tests;
        let tail: [&(dyn ToSql + Sync); 11] = [
            &steps.commit_ids,
            &steps.commit_flags,
            &steps.commit_failures,
            ids,
            passes,
            failures,
            flips,
            commits,
            flaky,
            flaky_failures,
            failed,
        ];
        let params: Vec<&(dyn ToSql + Sync)> = head.iter().chain(tail.iter()).copied().collect();
        tx.execute(RESULTS_COUNTED, &params)?;
        for (labels, value) in labels.into_iter().zip(values) {
            tx.count(family, labels, value)?;
        }
        return Ok(TestEvents(Some((good, total))));
    }
    Ok(TestEvents(None))
}

fn is_failed(o: TestOutcome) -> bool {
    matches!(o, TestOutcome::Failed | TestOutcome::Errored)
}

type ResultColumns<'t> = (
    Vec<i64>,
    Option<Vec<Option<f64>>>,
    Option<Vec<i64>>,
    Option<Vec<Option<String>>>,
    Option<Vec<Option<&'t str>>>,
);

/// The run's results as columns, one row per test in `order` (`rows`: the
/// index of its first and of its last result in `tests`; the last one is
/// stored). A column of defaults only (no duration, no retry, no retry
/// reason, no message) is None: stored as NULL, read back as the defaults
/// by the `results` view.
fn result_columns<'t>(
    tests: &'t [TestResult],
    order: &[i64],
    rows: &HashMap<i64, (usize, usize)>,
) -> ResultColumns<'t> {
    let n = order.len();
    let mut outcome = Vec::with_capacity(n);
    let mut duration = Vec::with_capacity(n);
    let mut retries = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    let mut message = Vec::with_capacity(n);
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
    (
        outcome,
        duration.iter().any(Option::is_some).then_some(duration),
        retries.iter().any(|r| *r != 0).then_some(retries),
        reasons.iter().any(Option::is_some).then_some(reasons),
        message.iter().any(Option::is_some).then_some(message),
    )
}

/// The counter series a run's new test_success events move: both results'
/// series exist from the first event on (at 0 if none of their kind); or,
/// for history, the backdated events.
fn test_success_counters(
    repository: &str,
    good: i64,
    total: i64,
    live: bool,
) -> (&'static str, Vec<String>, Vec<f64>) {
    let slo = SloId::TestSuccess.as_str();
    if live {
        let series =
            |result| labels_json(&[("slo", slo), ("repository", repository), ("result", result)]);
        (
            catalog::SLO_EVENTS.name,
            vec![series("good"), series("bad")],
            vec![good as f64, (total - good) as f64],
        )
    } else {
        (
            catalog::BACKDATED.name,
            vec![labels_json(&[("kind", "slo_event")])],
            vec![total as f64],
        )
    }
}

/// What `test_commits` holds of some tests on one commit: flags, failures.
type Stored = HashMap<i64, (i64, i64)>;

/// The run's commit (created if new) and what is stored of `test_ids` on
/// it (`test_commits`: flags, failures), in one statement when the commit
/// is known. Read under the lock of the tests' counters.
fn commit_of(
    tx: &mut impl Sql,
    repository_id: i64,
    sha: &str,
    test_ids: &[i64],
) -> Result<(i64, Stored), postgres::Error> {
    let rows = tx.query(
        "SELECT c.id, tc.test_id::bigint, tc.flags::bigint, tc.failures::bigint FROM commits c
         LEFT JOIN test_commits tc ON tc.commit_id = c.id AND tc.test_id = ANY($3::bigint[])
         WHERE c.repository_id = $1 AND c.sha = $2",
        &[&repository_id, &sha, &test_ids],
    )?;
    if let Some(first) = rows.first() {
        let id: i64 = first.get(0);
        let stored = rows
            .iter()
            .filter_map(|r| {
                let test_id: Option<i64> = r.get(1);
                test_id.map(|t| (t, (r.get(2), r.get(3))))
            })
            .collect();
        return Ok((id, stored));
    }
    let id = match tx.query_opt(
        "INSERT INTO commits (repository_id, sha) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
        &[&repository_id, &sha],
    )? {
        Some(row) => row.get(0),
        // Another replica created it meanwhile: nothing of these tests is
        // on it yet (their counters' lock is held here).
        None => tx
            .query_one(
                "SELECT id FROM commits WHERE repository_id = $1 AND sha = $2",
                &[&repository_id, &sha],
            )?
            .get(0),
    };
    Ok((id, HashMap::new()))
}

/// Each test of the run by name: its id and the outcome of its latest
/// counted result (true: failed), read under the lock of the counters of
/// its repository and context (`concurrent::lock_tests`, taken first: the
/// counters of a test are only written under it). Tests new to the store
/// are created under the same lock, in one statement, in the order of the
/// run (their ids follow SQLite's, in order of first sight). No row is
/// locked here: a run's tests' rows were locked `FOR UPDATE` before, a
/// second write of each of 8,000 rows per run that the counters' update
/// then wrote again.
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
    crate::concurrent::lock_tests(tx, run.repository_id, run.context)?;
    // A join with the names, not `name = ANY($3)`: a plan made while the
    // table was small may scan the repository and context's index range
    // and test each name against the whole array (8,000 × 8,000).
    let select = "SELECT t.id, t.name, t.last_failed FROM unnest($3::text[]) AS n(name)
         JOIN tests t ON t.repository_id = $1 AND t.context = $2 AND t.name = n.name";
    let mut ids: HashMap<&'t str, (i64, Option<bool>)> = HashMap::with_capacity(names.len());
    let found = |ids: &mut HashMap<&'t str, (i64, Option<bool>)>, rows: Vec<postgres::Row>| {
        for r in rows {
            let name: &str = r.get(1);
            if let Some(n) = unique.get(name) {
                ids.insert(n, (r.get(0), r.get::<_, Option<i64>>(2).map(|f| f != 0)));
            }
        }
    };
    found(
        &mut ids,
        tx.query(select, &[&run.repository_id, &run.context, &names])?,
    );
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !ids.contains_key(n))
        .collect();
    if !missing.is_empty() {
        // A test created since by a writer outside the lock (a row written
        // into the `test_results` view) is a conflict, read after.
        found(
            &mut ids,
            tx.query(
                "INSERT INTO tests (repository_id, context, name)
                 SELECT $1, $2, n FROM unnest($3::text[]) WITH ORDINALITY AS u(n, i) ORDER BY i
                 ON CONFLICT DO NOTHING
                 RETURNING id, name, last_failed",
                &[&run.repository_id, &run.context, &missing],
            )?,
        );
        if ids.len() < names.len() {
            let rest: Vec<&str> = missing
                .iter()
                .copied()
                .filter(|n| !ids.contains_key(n))
                .collect();
            found(
                &mut ids,
                tx.query(select, &[&run.repository_id, &run.context, &rest])?,
            );
        }
    }
    Ok(ids)
}

/// What the run's new results do to their tests' counters, as columns (one
/// row per test, in the order of the run): the `test_commits` rows that
/// change, and the tests' increments.
struct Steps {
    commit_ids: Vec<i64>,
    commit_flags: Vec<i64>,
    commit_failures: Vec<i64>,
    /// Test id, passes, failures, flips, commits, flaky commits, flaky
    /// failures, 1 when failed.
    tests: [Vec<i64>; 8],
}

impl Steps {
    fn of(
        counted: &[(i64, &TestResult)],
        ids: &HashMap<&str, (i64, Option<bool>)>,
        stored: &Stored,
    ) -> Steps {
        let mut s = Steps {
            commit_ids: Vec::new(),
            commit_flags: Vec::new(),
            commit_failures: Vec::new(),
            tests: Default::default(),
        };
        for (test_id, t) in counted {
            let failed = is_failed(t.outcome);
            let last_failed = ids.get(t.name.as_str()).and_then(|(_, l)| *l);
            let step = Step::of(stored.get(test_id).copied(), last_failed, failed, t.retries);
            if step.commit_changed {
                s.commit_ids.push(*test_id);
                s.commit_flags.push(step.flags);
                s.commit_failures.push(step.commit_failures);
            }
            for (column, value) in s.tests.iter_mut().zip([
                *test_id,
                step.passes,
                step.failures,
                step.flip,
                step.new_commit,
                i64::from(step.became_flaky),
                step.flaky_failures,
                i64::from(failed),
            ]) {
                column.push(value);
            }
        }
        s
    }
}

//! Test results and the per-test counters they move, on PostgreSQL: the
//! SQLite store's `results.rs` (one-run path; not its bulk `Batch`), with
//! the same tables, the same step (`ci_slo_store::test_step::Step`, shared)
//! and the same answers.
//! A result new to the store is marked in the run's transaction, and
//! moves its test's counters once, when a fold steps the marks (`fold.rs`:
//! the rows of `tests`, `test_days` and `test_commits`, written after the
//! run, once for all the runs folded together); a replay or an update of
//! an unfinished run marks nothing for results already stored.
//!
//! Replicas: a run's transaction reads no counter and writes none, so two
//! replicas storing results of one test at once do not wait for each
//! other; their marks are folded one after the other. New tests are
//! created under one lock of their repository and context (see
//! `intern_tests` and `concurrent.rs`).

use crate::fold::{self, MarkedResult};
use crate::statements::{Sql, Tx};
use ci_slo_core::catalog;
use ci_slo_core::model::{TestOutcome, TestResult};
use ci_slo_core::slo::SloId;
use ci_slo_store::tally::labels_json;
use std::collections::{HashMap, HashSet};

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
/// 4): `$1` the run, then the columns as arrays in test id order (`$2`
/// test ids, outcomes, durations, retries, retry reasons, `$7` messages;
/// NULL for an array of defaults, see [`result_columns`]). The row is the
/// run's whole set of results: an update of the run replaces it (results
/// left out of the update are gone, as SQLite deletes them). A test id
/// past `INTEGER` is an error ("integer out of range"), never wrapped.
/// One row per run is what keeps one result per (run, test): the columns
/// hold each distinct test of the run once; two writers of one run are
/// serialized by its primary key, and before that by the run's row, which
/// `ingest_run` locks (`FOR UPDATE`) before it reads what the run had.
/// The tests' counters are the fold's (`fold.rs`); the metric counters
/// the new results move are the transaction's, added at its commit.
const RESULTS: &str =
    "INSERT INTO run_results (run_id, test_ids, outcomes, durations, retries, retry_reasons, messages)
     VALUES ($1, $2::bigint[]::integer[], $3::bigint[]::smallint[], $4::float8[], $5::bigint[], $6::text[],
             $7::text[])
     ON CONFLICT (run_id) DO UPDATE SET test_ids = excluded.test_ids, outcomes = excluded.outcomes,
        durations = excluded.durations, retries = excluded.retries,
        retry_reasons = excluded.retry_reasons, messages = excluded.messages";

/// The test_success events of a run's new results, its `test_events` row
/// ($1 run, $2 repository, $3 time, $4 good, $5 total; the row keeps the
/// time it was first written with): its trigger moves the repository's
/// hourly rollup row, which every run of the repository and hour moves,
/// locked until the transaction ends. So it is written with the run's
/// other SLO events, after the results (`concurrent.rs`).
const TEST_EVENTS: &str =
    "INSERT INTO test_events AS e (run_id, repository_id, at, good, total) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (run_id) DO UPDATE SET good = e.good + excluded.good, total = e.total + excluded.total";

/// What [`store`] left to write with the run's other shared rows, after
/// its failures (`concurrent.rs`): the run's commit when it is new to the
/// store (its rows of `test_commits` are the fold's, `fold.rs`), and the
/// test_success events (good, total) of its new results.
#[must_use = "what a run's results leave to write is written by `Late::write`"]
#[derive(Default)]
pub(crate) struct Late {
    commit: bool,
    events: Option<(i64, i64)>,
}

impl Late {
    /// Write them for `run`.
    pub(crate) fn write(self, tx: &mut impl Sql, run: &RunOf<'_>) -> Result<(), postgres::Error> {
        if self.commit {
            fold::new_commit(tx, run.repository_id, run.commit)?;
        }
        if let Some((good, total)) = self.events {
            tx.execute(
                TEST_EVENTS,
                &[&run.run_id, &run.repository_id, &run.at_ms, &good, &total],
            )?;
        }
        Ok(())
    }
}

/// Store `tests` as the results of `run` (an update replaces: the run's
/// row is written again with `tests` only) and mark the new ones for the
/// fold. Set-based: the tests' ids from what the store knows, else in one
/// or two statements ([`intern_tests`]), then the results in one
/// ([`RESULTS`]) and the mark of the new ones in one (`fold::mark`): a
/// handful of round trips for the whole run, not five per result. Their
/// tests' counters are stepped later, by a fold (`fold.rs`). A test named
/// twice in one run keeps the last of its results and is counted once, by
/// the first (as the SQLite store does). The run's commit when new, and
/// its test_success events, are left to the caller ([`Late`]), to write
/// with its other shared rows.
pub(crate) fn store(
    tx: &mut Tx<'_>,
    run: &RunOf<'_>,
    tests: &[TestResult],
    replacing: bool,
    live: bool,
) -> Result<Late, postgres::Error> {
    if tests.is_empty() {
        return Ok(Late::default());
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
        let id = *ids
            .get(t.name.as_str())
            .expect("every test of the run is interned");
        rows.entry(id).and_modify(|r| r.1 = i).or_insert_with(|| {
            order.push(id);
            (i, i)
        });
    }
    // The new results that move counters, in the order of the run.
    let counted: Vec<MarkedResult> = order
        .iter()
        .map(|id| (*id, &tests[rows[id].0]))
        .filter(|(id, t)| !before.contains(id) && t.outcome != TestOutcome::Skipped)
        .map(|(test_id, t)| MarkedResult {
            test_id,
            failed: is_failed(t.outcome),
            retries: t.retries,
        })
        .collect();

    // Stored in test id order (as SQLite's and the former table's primary
    // key keep them).
    let mut stored_ids = order.clone();
    stored_ids.sort_unstable();
    let (outcome, duration, retries, reasons, message) = result_columns(tests, &stored_ids, &rows);
    tx.execute(
        RESULTS,
        &[
            &run.run_id,
            &stored_ids,
            &outcome,
            &duration,
            &retries,
            &reasons,
            &message,
        ],
    )?;
    let mut late = Late {
        commit: true,
        events: None,
    };
    if counted.is_empty() {
        return Ok(late);
    }
    fold::mark(
        tx,
        run.run_id,
        run.repository_id,
        run.commit,
        run.at_ms,
        &counted,
    )?;
    let good = counted.iter().filter(|c| !c.failed).count() as i64;
    let total = counted.len() as i64;
    let (family, labels, values) = test_success_counters(run.repository, good, total, live);
    for (labels, value) in labels.into_iter().zip(values) {
        tx.count(family, labels, value)?;
    }
    late.events = Some((good, total));
    Ok(late)
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

/// Each test of the run by name: its id. Ids the store knows
/// (`pending.rs`: an id never changes) are not looked up; the others are
/// looked up by name in one statement, and tests new to the store are
/// created in one more, in the order of the run (their ids follow
/// SQLite's, in order of first sight), under the lock of creating the
/// tests of the run's repository and context (`concurrent::lock_tests`):
/// two runs creating some of the same tests in different orders would
/// otherwise wait for each other's rows. No counter is read here: the
/// fold steps them (`fold.rs`).
fn intern_tests<'t>(
    tx: &mut Tx<'_>,
    run: &RunOf<'_>,
    tests: &'t [TestResult],
) -> Result<HashMap<&'t str, i64>, postgres::Error> {
    let mut names: Vec<&'t str> = Vec::with_capacity(tests.len());
    let mut unique: HashSet<&str> = HashSet::with_capacity(tests.len());
    for t in tests {
        if unique.insert(t.name.as_str()) {
            names.push(t.name.as_str());
        }
    }
    let mut ids = tx
        .pending()
        .known_ids(run.repository_id, run.context, &names);
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !ids.contains_key(n))
        .collect();
    if unknown.is_empty() {
        return Ok(ids);
    }
    // A join with the names, not `name = ANY($3)`: a plan made while the
    // table was small may scan the repository and context's index range
    // and test each name against the whole array (8,000 × 8,000).
    let select = "SELECT t.id, t.name FROM unnest($3::text[]) AS n(name)
         JOIN tests t ON t.repository_id = $1 AND t.context = $2 AND t.name = n.name";
    let found = |tx: &mut Tx<'_>, ids: &mut HashMap<&'t str, i64>, rows: Vec<postgres::Row>| {
        for r in rows {
            let name: &str = r.get(1);
            if let Some(n) = unique.get(name) {
                let id: i64 = r.get(0);
                tx.pending().learn(run.repository_id, run.context, n, id);
                ids.insert(n, id);
            }
        }
    };
    let rows = tx.query(select, &[&run.repository_id, &run.context, &unknown])?;
    found(tx, &mut ids, rows);
    let missing: Vec<&str> = unknown
        .iter()
        .copied()
        .filter(|n| !ids.contains_key(n))
        .collect();
    if !missing.is_empty() {
        crate::concurrent::lock_tests(tx, run.repository_id, run.context)?;
        // A test created since (by another replica, or a row written into
        // the `test_results` view) is a conflict, read after.
        let rows = tx.query(
            "INSERT INTO tests (repository_id, context, name)
             SELECT $1, $2, n FROM unnest($3::text[]) WITH ORDINALITY AS u(n, i) ORDER BY i
             ON CONFLICT DO NOTHING
             RETURNING id, name",
            &[&run.repository_id, &run.context, &missing],
        )?;
        found(tx, &mut ids, rows);
        if ids.len() < names.len() {
            let rest: Vec<&str> = missing
                .iter()
                .copied()
                .filter(|n| !ids.contains_key(n))
                .collect();
            let rows = tx.query(select, &[&run.repository_id, &run.context, &rest])?;
            found(tx, &mut ids, rows);
        }
    }
    Ok(ids)
}

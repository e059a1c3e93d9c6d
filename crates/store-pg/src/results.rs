//! Test results and the per-test counters they move, on PostgreSQL: the
//! SQLite store's `results.rs` (one-run path; not its bulk `Batch`), with
//! the same tables, the same step (`ci_slo_store::test_step::Step`, shared)
//! and the same answers.
//! A result new to the store moves its test's counters once, in the run's
//! transaction (the rows of `tests` and `test_days` written at its commit,
//! once for all its runs: `pending.rs`); a replay or an update of an
//! unfinished run moves nothing for results already stored.
//!
//! Replicas: the counters of a repository and context's tests (`tests`,
//! `test_days`, `test_commits`) are read and written under one lock of
//! that repository and context (`concurrent::lock_tests`, an advisory
//! transaction lock taken before any of them is read), so two replicas
//! storing results of one test at once count them one after the other;
//! new tests are created under the same lock (see `intern_tests` and
//! `concurrent.rs`).

use crate::pending::{Counted, Counts, Pending};
use crate::statements::{Sql, Tx};
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
/// The tests' counters and their day's are kept pending (`pending.rs`);
/// the metric counters they move are the transaction's, added at its
/// commit.
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

/// A run's commit when it is new to the store (`commits` row and
/// `test_commits` rows), created late ([`Late::write`]): its unique key is
/// shared by every job of the commit, in every context, and a second
/// transaction inserting the same key waits for the first to end.
const NEW_COMMIT: &str =
    "INSERT INTO commits (repository_id, sha) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id";
const COMMIT_ID: &str = "SELECT id FROM commits WHERE repository_id = $1 AND sha = $2";

/// What the run's new results change of its tests on its commit
/// (`test_commits`): test ids, flags, failures, only those that change.
type CommitRows = [Vec<i64>; 3];

/// Write `rows` on commit `commit_id`: at once on a commit the store
/// knows (so that a later run of the commit in the same transaction reads
/// them), with the commit on a new one ([`Late`]).
fn write_commit_rows(
    tx: &mut impl Sql,
    commit_id: i64,
    [ids, flags, failures]: &CommitRows,
) -> Result<(), postgres::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO test_commits (test_id, commit_id, flags, failures)
         SELECT u.test_id, $1::bigint, u.flags, u.failures
         FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS u(test_id, flags, failures)
         ON CONFLICT (commit_id, test_id) DO UPDATE SET flags = excluded.flags, failures = excluded.failures",
        &[&commit_id, ids, flags, failures],
    )?;
    Ok(())
}

/// What [`store`] left to write with the run's other shared rows, after
/// its failures (`concurrent.rs`): the run's commit when it is new to the
/// store, with the `test_commits` rows of its tests (none of them can be
/// there: the tests' lock is held), and the test_success events (good,
/// total) of its new results.
#[must_use = "what a run's results leave to write is written by `Late::write`"]
#[derive(Default)]
pub(crate) struct Late {
    new_commit: Option<CommitRows>,
    events: Option<(i64, i64)>,
}

impl Late {
    /// Write them for `run`.
    pub(crate) fn write(self, tx: &mut impl Sql, run: &RunOf<'_>) -> Result<(), postgres::Error> {
        if let Some(rows) = &self.new_commit {
            let key: [&(dyn ToSql + Sync); 2] = [&run.repository_id, &run.commit];
            let id: i64 = match tx.query_opt(NEW_COMMIT, &key)? {
                Some(row) => row.get(0),
                // Another replica created it meanwhile: nothing of these
                // tests is on it (their counters' lock is held here).
                None => tx.query_one(COMMIT_ID, &key)?.get(0),
            };
            write_commit_rows(tx, id, rows)?;
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
/// row is written again with `tests` only) and count the new ones.
/// Set-based: the tests' rows in one or two statements ([`intern_tests`]),
/// the commit and its per-test rows in one ([`known_commit`]), then the
/// results in one ([`RESULTS`]) and the rows on the commit in one
/// ([`write_commit_rows`]): a handful of round trips for the whole run, not
/// five per result. The tests' counters
/// are stepped from what the transaction has pending for them (its earlier
/// runs) and kept pending (`pending.rs`). A test
/// named twice in one run keeps the last of its results and is counted
/// once, by the first (as the SQLite store does). The run's commit when
/// new, and its test_success events, are left to the caller ([`Late`]), to
/// write with its other shared rows.
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
    let (commit_id, stored) = match known_commit(tx, run.repository_id, run.commit, &counted_ids)? {
        Some((id, stored)) => (Some(id), stored),
        None => (None, HashMap::new()),
    };

    // Stored in test id order (as SQLite's and the former table's primary
    // key keep them).
    let mut stored_ids = order.clone();
    stored_ids.sort_unstable();
    let (outcome, duration, retries, reasons, message) = result_columns(tests, &stored_ids, &rows);
    let day = run.at_ms.div_euclid(DAY_MS);
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
        new_commit: commit_id.is_none().then(CommitRows::default),
        events: None,
    };
    if counted.is_empty() {
        return Ok(late);
    }
    let steps = Steps::of(&counted, &ids, &stored, tx.pending());
    tx.pending()
        .add_run(run.run_id, run.at_ms, day, &steps.counted);
    let rows = [steps.commit_ids, steps.commit_flags, steps.commit_failures];
    match commit_id {
        Some(id) => write_commit_rows(tx, id, &rows)?,
        None => late.new_commit = Some(rows),
    }
    let good = counted
        .iter()
        .filter(|(_, t)| !is_failed(t.outcome))
        .count() as i64;
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

/// What `test_commits` holds of some tests on one commit: flags, failures.
type Stored = HashMap<i64, (i64, i64)>;

/// The run's commit, when the store knows it, and what is stored of
/// `test_ids` on it (`test_commits`: flags, failures), in one statement.
/// Read under the lock of the tests' counters. A new commit is created
/// later ([`Late`]).
///
/// The rows are read as one range of the primary key (commit, test), from
/// the least to the greatest of `test_ids`, and those of other tests left
/// out here: a context's tests are created together, so their ids are
/// mostly one range, and one index range scan reads a run of 8,000 tests
/// in a fraction of the time of 8,000 index lookups (`= ANY` of the ids,
/// before: 10 to 20 ms of server time per posted run at 2 M results,
/// against 4 ms).
fn known_commit(
    tx: &mut impl Sql,
    repository_id: i64,
    sha: &str,
    test_ids: &[i64],
) -> Result<Option<(i64, Stored)>, postgres::Error> {
    let (low, high) = match (test_ids.iter().min(), test_ids.iter().max()) {
        (Some(low), Some(high)) => (*low, *high),
        // No test: the commit only (an empty range).
        _ => (1, 0),
    };
    let rows = tx.query(
        "SELECT c.id, tc.test_id::bigint, tc.flags::bigint, tc.failures::bigint FROM commits c
         LEFT JOIN test_commits tc ON tc.commit_id = c.id AND tc.test_id BETWEEN $3::bigint AND $4::bigint
         WHERE c.repository_id = $1 AND c.sha = $2",
        &[&repository_id, &sha, &low, &high],
    )?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let wanted: HashSet<i64> = test_ids.iter().copied().collect();
    let stored = rows
        .iter()
        .filter_map(|r| {
            let test_id: i64 = r.get::<_, Option<i64>>(1)?;
            wanted
                .contains(&test_id)
                .then(|| (test_id, (r.get(2), r.get(3))))
        })
        .collect();
    Ok(Some((first.get(0), stored)))
}

/// Each test of the run by name: its id and the outcome of its latest
/// counted result as its row has it (true: failed), read under the lock of
/// the counters of its repository and context (`concurrent::lock_tests`,
/// taken first: the counters of a test are only written under it).
///
/// Ids the store knows (`pending.rs`: an id never changes) are not looked
/// up by name: only their `last_failed` is read, fresh, by the context's
/// index range when the run names at least half of the tests known of its
/// context, else by id (and not at all for tests the transaction already
/// counted: their pending state is the latest). The others are looked up
/// by name, and tests new to the store are created under the same lock,
/// in one statement, in the order of the run (their ids follow SQLite's,
/// in order of first sight). No row is locked here: a run's tests' rows
/// were locked `FOR UPDATE` before, a second write of each of 8,000 rows
/// per run that the counters' update then wrote again.
fn intern_tests<'t>(
    tx: &mut Tx<'_>,
    run: &RunOf<'_>,
    tests: &'t [TestResult],
) -> Result<HashMap<&'t str, (i64, Option<bool>)>, postgres::Error> {
    let mut names: Vec<&'t str> = Vec::with_capacity(tests.len());
    let mut unique: HashSet<&str> = HashSet::with_capacity(tests.len());
    for t in tests {
        if unique.insert(t.name.as_str()) {
            names.push(t.name.as_str());
        }
    }
    crate::concurrent::lock_tests(tx, run.repository_id, run.context)?;
    let (known, in_context) = tx
        .pending()
        .known_ids(run.repository_id, run.context, &names);
    let mut ids: HashMap<&'t str, (i64, Option<bool>)> = HashMap::with_capacity(names.len());
    let mut unread: HashMap<i64, &'t str> = HashMap::new();
    for (name, id) in known {
        ids.insert(name, (id, None));
        if tx.pending().last_failed(id).is_none() {
            unread.insert(id, name);
        }
    }
    if !unread.is_empty() {
        let rows = if unread.len() * 2 >= in_context {
            tx.query(
                "SELECT id, last_failed FROM tests WHERE repository_id = $1 AND context = $2",
                &[&run.repository_id, &run.context],
            )?
        } else {
            let wanted: Vec<i64> = unread.keys().copied().collect();
            tx.query(
                "SELECT id, last_failed FROM tests WHERE id = ANY($1::bigint[])",
                &[&wanted],
            )?
        };
        for r in rows {
            if let Some(name) = unread.get(&r.get::<_, i64>(0)) {
                let last_failed = r.get::<_, Option<i64>>(1).map(|f| f != 0);
                ids.entry(name).and_modify(|e| e.1 = last_failed);
            }
        }
    }
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
    let select = "SELECT t.id, t.name, t.last_failed FROM unnest($3::text[]) AS n(name)
         JOIN tests t ON t.repository_id = $1 AND t.context = $2 AND t.name = n.name";
    let found = |tx: &mut Tx<'_>,
                 ids: &mut HashMap<&'t str, (i64, Option<bool>)>,
                 rows: Vec<postgres::Row>| {
        for r in rows {
            let name: &str = r.get(1);
            if let Some(n) = unique.get(name) {
                let id: i64 = r.get(0);
                tx.pending().learn(run.repository_id, run.context, n, id);
                ids.insert(n, (id, r.get::<_, Option<i64>>(2).map(|f| f != 0)));
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
        // A test created since by a writer outside the lock (a row written
        // into the `test_results` view) is a conflict, read after.
        let rows = tx.query(
            "INSERT INTO tests (repository_id, context, name)
             SELECT $1, $2, n FROM unnest($3::text[]) WITH ORDINALITY AS u(n, i) ORDER BY i
             ON CONFLICT DO NOTHING
             RETURNING id, name, last_failed",
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

/// What the run's new results do to their tests' counters (one row per
/// test, in the order of the run): the `test_commits` rows that change, as
/// columns, and the tests' increments.
struct Steps {
    commit_ids: Vec<i64>,
    commit_flags: Vec<i64>,
    commit_failures: Vec<i64>,
    counted: Vec<Counted>,
}

impl Steps {
    /// Each step from the test's latest counted result: pending in the
    /// transaction, else as its row has it (`ids`).
    fn of(
        counted: &[(i64, &TestResult)],
        ids: &HashMap<&str, (i64, Option<bool>)>,
        stored: &Stored,
        pending: &Pending,
    ) -> Steps {
        let mut s = Steps {
            commit_ids: Vec::new(),
            commit_flags: Vec::new(),
            commit_failures: Vec::new(),
            counted: Vec::with_capacity(counted.len()),
        };
        for (test_id, t) in counted {
            let failed = is_failed(t.outcome);
            let last_failed = match pending.last_failed(*test_id) {
                Some(l) => Some(l),
                None => ids.get(t.name.as_str()).and_then(|(_, l)| *l),
            };
            let step = Step::of(stored.get(test_id).copied(), last_failed, failed, t.retries);
            if step.commit_changed {
                s.commit_ids.push(*test_id);
                s.commit_flags.push(step.flags);
                s.commit_failures.push(step.commit_failures);
            }
            s.counted.push(Counted {
                test_id: *test_id,
                counts: Counts {
                    runs: 1,
                    passes: step.passes,
                    failures: step.failures,
                    flips: step.flip,
                    commits: step.new_commit,
                    flaky_commits: i64::from(step.became_flaky),
                    flaky_failures: step.flaky_failures,
                },
                failed,
                became_flaky: step.became_flaky,
            });
        }
        s
    }
}

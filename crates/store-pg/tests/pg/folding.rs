//! The per-test counters folded after the run (`fold.rs`): a stored run
//! leaves a mark of its counted results, a fold steps the marks and
//! deletes them in one transaction, and every read of the counters folds
//! first, so the answers stay SQLite's. Held to the SQLite store's answers
//! and rows after the same runs.

use crate::ingest::{assert_same, now, run, test};
use chrono::Duration;
use ci_slo_core::config::Config;
use ci_slo_core::model::{NewRun, RunState, TestOutcome};
use ci_slo_store::{IngestStatus, Policy, Store};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::testing::{TestDatabase, TestServer};
use std::sync::Barrier;

fn open(db: &TestDatabase) -> PgStore {
    PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap()
}

/// Runs of one context, two per commit, of 30 tests: some failing, some
/// passing on a retry, one skipped, one named twice (counted once); one
/// run a day earlier than the others.
fn runs(n: usize) -> Vec<NewRun> {
    (0..n)
        .map(|i| {
            let back = if i == 3 { 2000 } else { 0 } + 300 - 10 * i as i64;
            let mut r = run(
                "o/a",
                "ci/test",
                (i % 2) as u32,
                RunState::Success,
                [Some(back), Some(back - 5), Some(back - 8)],
            );
            r.commit = format!("c{}", i / 2);
            r.tests = (0..30)
                .map(|t| {
                    let outcome = if t == 29 {
                        TestOutcome::Skipped
                    } else if (t + i) % 5 == 0 {
                        TestOutcome::Failed
                    } else {
                        TestOutcome::Passed
                    };
                    test(&format!("t{t}"), outcome, u32::from((t * i) % 7 == 3))
                })
                .collect();
            r.tests.push(test("t0", TestOutcome::Passed, 0));
            r
        })
        .collect()
}

type Stats = Vec<(String, String, String, ci_slo_core::flaky::TestStats)>;

/// Test statistics in name order.
fn sorted(mut v: Stats) -> Stats {
    v.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    v
}

/// The marks on `db`, in their order: how many results each holds.
fn marks(db: &TestDatabase) -> Vec<i64> {
    db.connect()
        .unwrap()
        .query(
            "SELECT cardinality(test_ids)::bigint FROM unfolded_results ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every counted run of every test, as `tests` has them now on `db`.
fn counted(db: &TestDatabase) -> i64 {
    db.connect()
        .unwrap()
        .query_one("SELECT coalesce(sum(runs), 0)::bigint FROM tests", &[])
        .unwrap()
        .get(0)
}

/// A SQLite store and a PostgreSQL one (on a database of its own), both
/// after `n` of [`runs`] (none: both empty), and the policy they were
/// stored with.
fn stored(hint: &str, n: usize) -> (Store, PgStore, TestDatabase, Policy) {
    let policy = Policy::from_config(&Config::default());
    let db = TestServer::shared().database(hint).unwrap();
    let (mut sqlite, mut pg) = (Store::open_in_memory().unwrap(), open(&db));
    store_both(&mut sqlite, &mut pg, &runs(n), &policy);
    (sqlite, pg, db, policy)
}

/// The same runs into a SQLite store and `pg`, each created.
fn store_both(sqlite: &mut Store, pg: &mut PgStore, runs: &[NewRun], policy: &Policy) {
    for r in runs {
        let a = sqlite.ingest_run(r, policy, now()).unwrap();
        assert_eq!(pg.ingest_run(r, policy, now()).unwrap(), a);
        assert_eq!(a.status, IngestStatus::Created);
    }
}

#[test]
fn a_stored_run_leaves_a_mark_of_its_counted_results_that_a_fold_counts_and_removes() {
    let (sqlite, mut pg, db, policy) = stored("fold_marks", 6);
    let runs = runs(6);
    // 29 counted results a run: 30 names, one skipped; t0's second result
    // is not counted.
    assert_eq!(marks(&db), vec![29; 6]);
    assert_eq!(counted(&db), 0, "nothing counted in the runs' transactions");
    // A replay marks nothing.
    assert_eq!(
        pg.ingest_run(&runs[0], &policy, now()).unwrap().status,
        IngestStatus::Unchanged
    );
    assert_eq!(marks(&db).len(), 6);
    assert_eq!(pg.fold().unwrap(), 6);
    assert_eq!(marks(&db), Vec::<i64>::new());
    assert_eq!(counted(&db), 6 * 29);
    assert_eq!(pg.fold().unwrap(), 0, "nothing left");
    assert_same(&sqlite, &mut pg);
}

#[test]
fn a_read_of_the_counters_folds_first_and_answers_as_sqlite() {
    let (mut sqlite, mut pg, db, policy) = stored("fold_on_read", 0);
    let runs = runs(6);
    let since = now() - Duration::days(30);
    store_both(&mut sqlite, &mut pg, &runs[..3], &policy);
    assert_eq!(
        sorted(pg.test_stats(since, 1).unwrap()),
        sorted(sqlite.test_stats(since, 1).unwrap())
    );
    assert!(marks(&db).is_empty(), "the read folded");
    store_both(&mut sqlite, &mut pg, &runs[3..], &policy);
    assert_eq!(marks(&db).len(), 3);
    // Through another store (a replica) that stored none of them.
    let other = open(&db);
    let today = now().timestamp_millis().div_euclid(86_400_000);
    assert_eq!(
        format!("{:?}", other.test_day_counts(today - 5, today).unwrap()),
        format!("{:?}", sqlite.test_day_counts(today - 5, today).unwrap())
    );
    assert!(marks(&db).is_empty());
    assert_eq!(
        sorted(pg.test_stats(since, 1).unwrap()),
        sorted(sqlite.test_stats(since, 1).unwrap())
    );
    assert_eq!(
        pg.test_index(since, 1, None, None).unwrap(),
        sqlite.test_index(since, 1, None, None).unwrap()
    );
    assert_same(&sqlite, &mut pg);
}

#[test]
fn a_fold_that_does_not_commit_leaves_its_marks_for_the_next_which_counts_them_once() {
    let (sqlite, mut pg, db, _) = stored("fold_interrupted", 6);
    // Rolled back: nothing of it stays.
    let mut client = db.connect().unwrap();
    let mut tx = client.transaction().unwrap();
    assert_eq!(ci_slo_store_pg::fold::fold_batch(&mut tx).unwrap().0, 6);
    drop(tx);
    assert_eq!(marks(&db).len(), 6);
    assert_eq!(counted(&db), 0);
    // Its connection ended before its commit (a replica killed mid-fold).
    let mut doomed = db.connect().unwrap();
    doomed.batch_execute("BEGIN").unwrap();
    assert_eq!(ci_slo_store_pg::fold::fold_batch(&mut doomed).unwrap().0, 6);
    let pid: i32 = doomed
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    db.connect()
        .unwrap()
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    assert!(doomed.batch_execute("COMMIT").is_err());
    assert_eq!(marks(&db).len(), 6);
    assert_eq!(counted(&db), 0);
    // The next fold counts each once.
    assert_eq!(pg.fold().unwrap(), 6);
    assert_eq!(counted(&db), 6 * 29);
    assert_same(&sqlite, &mut pg);
}

#[test]
fn two_folds_at_once_on_two_stores_count_each_mark_once() {
    let (sqlite, mut pg, db, _) = stored("fold_at_once", 12);
    assert_eq!(marks(&db).len(), 12);
    let barrier = Barrier::new(2);
    let folded: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (barrier, db) = (&barrier, &db);
                s.spawn(move || {
                    let store = open(db);
                    barrier.wait();
                    store.fold().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(folded.iter().sum::<u64>(), 12, "{folded:?}");
    assert!(marks(&db).is_empty());
    assert_eq!(counted(&db), 12 * 29);
    assert_same(&sqlite, &mut pg);
}

#[test]
fn an_update_of_an_unfinished_run_marks_only_its_new_results() {
    let (mut sqlite, mut pg, db, policy) = stored("fold_update", 0);
    let mut running = run(
        "o/a",
        "ci/test",
        0,
        RunState::Running,
        [Some(30), Some(20), None],
    );
    running.tests = vec![
        test("a", TestOutcome::Passed, 0),
        test("b", TestOutcome::Failed, 0),
    ];
    let mut done = running.clone();
    done.state = RunState::Failure;
    done.finished_at = Some(now() - Duration::minutes(10));
    done.tests.push(test("c", TestOutcome::Failed, 0));
    done.tests.push(test("d", TestOutcome::Skipped, 0));
    for (r, status) in [
        (&running, IngestStatus::Created),
        (&done, IngestStatus::Updated),
    ] {
        let a = sqlite.ingest_run(r, &policy, now()).unwrap();
        assert_eq!(a.status, status);
        assert_eq!(pg.ingest_run(r, &policy, now()).unwrap(), a);
    }
    // a and b, then c alone (d skipped).
    assert_eq!(marks(&db), vec![2, 1]);
    assert_same(&sqlite, &mut pg);
    assert!(marks(&db).is_empty());
    assert_eq!(counted(&db), 3);
}

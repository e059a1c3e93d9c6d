//! The per-test counters are folded after the runs, several runs of a
//! context at once (`fold.rs`, `pending.rs`): runs of one repository and
//! context stored in one transaction (`ingest_batch`, the writer's batch of jobs) count exactly
//! what they count one transaction each, and as SQLite counts them; a job
//! rolled back to its savepoint leaves nothing of its counters, nor of the
//! test ids it created.

use crate::ingest::{DUMPS, assert_same, now, pg_dump, run, test};
use ci_slo_core::config::Config;
use ci_slo_core::model::{NewRun, RunState, TestOutcome};
use ci_slo_store::{Engine, Policy, Store, StoreError};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::testing::{TestDatabase, TestServer};

fn open(hint: &str) -> (PgStore, TestDatabase) {
    let db = TestServer::shared().database(hint).unwrap();
    let pg = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    (pg, db)
}

/// Runs of two contexts of one repository, interleaved, over two days:
/// attempts of one commit (flaky commits, `test_commits` steps), outcomes
/// that flip, a skipped result, a test named twice, tests added later.
fn runs() -> Vec<NewRun> {
    (0..8i64)
        .map(|i| {
            let context = if i % 3 == 2 { "build" } else { "ci/test" };
            // Two days: the first four runs a day and more before the rest.
            let m = if i < 4 { 2000 - i * 10 } else { 300 - i * 10 };
            let mut r = run(
                "o/a",
                context,
                (i % 2) as u32,
                if i % 4 == 1 {
                    RunState::Failure
                } else {
                    RunState::Success
                },
                [Some(m), Some(m - 5), Some(m - 9)],
            );
            r.commit = format!("c{}", i / 2);
            let outcome = |t: i64| {
                if (t + i) % 3 == 0 {
                    TestOutcome::Failed
                } else if (t * i) % 7 == 5 {
                    TestOutcome::Skipped
                } else {
                    TestOutcome::Passed
                }
            };
            r.tests = (0..6 + i / 2)
                .map(|t| test(&format!("t{t}"), outcome(t), u32::from(t == 1)))
                .collect();
            if i == 3 {
                r.tests.push(test("t0", TestOutcome::Passed, 0));
            }
            r
        })
        .collect()
}

/// Every row both PostgreSQL stores hold is the same (ingest's dumps: the
/// tests' counters, their days', their commits', the results, the metric
/// counters).
fn assert_pg_same(a: &mut PgStore, b: &mut PgStore) {
    for sql in DUMPS {
        assert_eq!(pg_dump(a, sql), pg_dump(b, sql), "{sql}");
    }
}

#[test]
fn runs_of_one_context_in_one_transaction_count_as_in_a_transaction_each_and_as_sqlite() {
    let policy = Policy::from_config(&Config::default());
    let runs = runs();
    let mut sqlite = Store::open_in_memory().unwrap();
    let (mut each, _a) = open("aggregation_each");
    let (mut batch, _b) = open("aggregation_batch");
    let (mut jobs, _c) = open("aggregation_jobs");
    for r in &runs {
        let a = sqlite.ingest_run(r, &policy, now()).unwrap();
        assert_eq!(each.ingest_run(r, &policy, now()).unwrap(), a);
    }
    assert_same(&sqlite, &mut each);

    // All of them in one transaction (half, then the rest: the second
    // transaction steps from the first one's committed rows and ids).
    let (first, rest) = runs.split_at(3);
    batch.ingest_batch(first, &policy, now()).unwrap();
    batch.ingest_batch(rest, &policy, now()).unwrap();
    assert_same(&sqlite, &mut batch);
    assert_pg_same(&mut each, &mut batch);

    // The writer's way: one transaction, a savepoint per job.
    jobs.begin_batch().unwrap();
    for r in &runs {
        jobs.begin_job().unwrap();
        jobs.ingest_run(r, &policy, now()).unwrap();
        jobs.end_job(true).unwrap();
    }
    jobs.commit_batch().unwrap();
    assert_same(&sqlite, &mut jobs);
}

#[test]
fn a_job_rolled_back_to_its_savepoint_leaves_none_of_its_counters_nor_its_new_tests() {
    let policy = Policy::from_config(&Config::default());
    let runs = runs();
    // The rolled-back run fails every test, and names a new one, which the
    // next run names too.
    let mut dropped = runs[1].clone();
    for t in &mut dropped.tests {
        t.outcome = TestOutcome::Failed;
    }
    dropped.tests.push(test("new", TestOutcome::Failed, 0));
    let mut next = runs[2].clone();
    next.context = runs[0].context.clone();
    next.tests.push(test("new", TestOutcome::Passed, 0));

    // A writer's batch: the second job is rolled back to its savepoint
    // (failed), the others kept.
    let (mut jobs, _a) = open("aggregation_rolled_back_job");
    jobs.begin_batch().unwrap();
    for (r, keep) in [(&runs[0], true), (&dropped, false), (&next, true)] {
        jobs.begin_job().unwrap();
        jobs.ingest_run(r, &policy, now()).unwrap();
        jobs.end_job(keep).unwrap();
    }
    jobs.commit_batch().unwrap();
    let new_tests = pg_dump(
        &mut jobs,
        "SELECT name || '|' || runs || '|' || failures FROM tests WHERE name = 'new'",
    );
    assert_eq!(new_tests, ["new|1|0"], "counted once, by the kept run");

    // The same, the dropped run a transaction of its own rolled back: the
    // same ids are taken from the sequences, and every row is the same.
    let (mut each, _b) = open("aggregation_rolled_back_each");
    each.ingest_run(&runs[0], &policy, now()).unwrap();
    let rolled_back: Result<(), StoreError> = each.in_transaction(|s| {
        s.ingest_run(&dropped, &policy, now())?;
        Err(StoreError::Refused("rolled back".into()))
    });
    assert!(rolled_back.is_err());
    each.ingest_run(&next, &policy, now()).unwrap();
    assert_pg_same(&mut jobs, &mut each);
    let dropped_run: Vec<String> = pg_dump(&mut jobs, "SELECT count(*)::text FROM runs");
    assert_eq!(dropped_run, ["2"]);
}

//! Several replicas writing to one database at once (issue 18): the same
//! runs stored through several `PgStore`s (each its own connection, on its
//! own thread) at the same moment are stored and counted exactly once, as
//! the SQLite store counts them stored one by one; webhook deliveries are
//! recorded once; and the errors the exporter acts on have their kinds,
//! provoked on a real server.

use crate::ingest::{failure, normalized, now, pg_dump, run, sqlite_dump, test};
use ci_slo_core::config::Config;
use ci_slo_core::model::{ChangeRef, Forge, NewRun, RunState, TestOutcome};
use ci_slo_store::{ErrorKind, IngestStatus, Policy, Store, StoreError};
use ci_slo_store_pg::migrate::migrate;
use ci_slo_store_pg::testing::{TestDatabase, TestServer};
use ci_slo_store_pg::{PgStore, PgStoreError, kind_of_code};
use postgres::error::SqlState;
use std::sync::Barrier;

fn open(db: &TestDatabase) -> PgStore {
    PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap()
}

fn pg_error(e: postgres::Error) -> (ErrorKind, Option<ErrorKind>, String) {
    let pg = PgStoreError::from(e);
    let kind = pg.kind();
    let text = pg.to_string();
    (kind, StoreError::from(pg).kind(), text)
}

#[test]
fn errors_from_a_real_server_have_the_kinds_the_exporter_acts_on() {
    let db = TestServer::shared().database("error_kinds").unwrap();
    drop(open(&db));
    let mut a = db.connect().unwrap();
    let mut b = db.connect().unwrap();

    // A unique constraint.
    a.execute(
        "INSERT INTO repositories (forge, path) VALUES ('github', 'o/dup')",
        &[],
    )
    .unwrap();
    let err = a
        .execute(
            "INSERT INTO repositories (forge, path) VALUES ('github', 'o/dup')",
            &[],
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let (kind, store_kind, text) = pg_error(err);
    assert_eq!(kind, ErrorKind::Constraint);
    assert_eq!(store_kind, Some(ErrorKind::Constraint));
    assert!(text.contains("duplicate key"), "{text}");

    // A serialization failure: a repeatable-read transaction updating a row
    // another one changed since its snapshot.
    a.execute("INSERT INTO meta (key, value) VALUES ('k', 'v0')", &[])
        .unwrap();
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    a.query_one("SELECT value FROM meta WHERE key = 'k'", &[])
        .unwrap();
    b.execute("UPDATE meta SET value = 'v1' WHERE key = 'k'", &[])
        .unwrap();
    let err = a
        .execute("UPDATE meta SET value = 'v2' WHERE key = 'k'", &[])
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::T_R_SERIALIZATION_FAILURE));
    assert_eq!(pg_error(err).1, Some(ErrorKind::Conflict));
    a.batch_execute("ROLLBACK").unwrap();

    // A deadlock: two transactions each waiting for the other's row.
    a.batch_execute("INSERT INTO meta (key, value) VALUES ('k2', 'v0')")
        .unwrap();
    let barrier = Barrier::new(2);
    let errors: Vec<postgres::Error> = std::thread::scope(|s| {
        let handles: Vec<_> = [(&mut a, "k", "k2"), (&mut b, "k2", "k")]
            .into_iter()
            .map(|(c, first, second)| {
                let barrier = &barrier;
                s.spawn(move || {
                    c.batch_execute("BEGIN").unwrap();
                    c.execute("UPDATE meta SET value = 'x' WHERE key = $1", &[&first])
                        .unwrap();
                    barrier.wait();
                    let r = c.execute("UPDATE meta SET value = 'y' WHERE key = $1", &[&second]);
                    // The survivor waits for the victim's rollback here.
                    c.batch_execute("ROLLBACK").unwrap();
                    r.err()
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(errors.len(), 1, "one victim: {errors:?}");
    let err = errors.into_iter().next().unwrap();
    assert_eq!(err.code(), Some(&SqlState::T_R_DEADLOCK_DETECTED));
    assert_eq!(pg_error(err).1, Some(ErrorKind::Conflict));

    // The connection ended by the server (57P01), then closed.
    let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    b.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let first = a.execute("SELECT 1", &[]).unwrap_err();
    // The server's FATAL 57P01, or the reset connection, as it arrives.
    let io = std::error::Error::source(&first).is_some_and(|s| s.is::<std::io::Error>());
    assert!(
        first.code() == Some(&SqlState::ADMIN_SHUTDOWN) || first.is_closed() || io,
        "{first:?}"
    );
    assert_eq!(pg_error(first).1, Some(ErrorKind::Unavailable));
    let again = a.execute("SELECT 1", &[]).unwrap_err();
    assert!(again.is_closed(), "{again:?}");
    assert_eq!(pg_error(again).1, Some(ErrorKind::Unavailable));

    // No server listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nowhere = postgres::Config::new();
    nowhere
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(db.name());
    let err = PgStore::open_config(&nowhere, &"nowhere", &mut |_| {})
        .err()
        .unwrap();
    assert!(matches!(err, PgStoreError::Connect { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert_eq!(StoreError::from(err).kind(), Some(ErrorKind::Unavailable));

    // Anything else: a syntax error.
    let err = b.execute("SELEC 1", &[]).unwrap_err();
    assert_eq!(pg_error(err).1, Some(ErrorKind::Other));

    // A database newer than the exporter.
    b.execute("UPDATE schema_version SET version = version + 1", &[])
        .unwrap();
    let err = migrate(&mut b, &mut |_| {}).unwrap_err();
    match StoreError::from(err) {
        StoreError::TooNew { path, found, known } => {
            assert_eq!(path, db.name());
            assert_eq!(found, known + 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sqlstates_the_server_sends_on_failing_connections_are_unavailable() {
    for code in [
        SqlState::CONNECTION_EXCEPTION,
        SqlState::CONNECTION_FAILURE,
        SqlState::CONNECTION_DOES_NOT_EXIST,
        SqlState::PROTOCOL_VIOLATION,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
    ] {
        assert_eq!(kind_of_code(&code), ErrorKind::Unavailable, "{code:?}");
    }
    for (code, kind) in [
        (SqlState::FOREIGN_KEY_VIOLATION, ErrorKind::Constraint),
        (SqlState::NOT_NULL_VIOLATION, ErrorKind::Constraint),
        (SqlState::T_R_SERIALIZATION_FAILURE, ErrorKind::Conflict),
        (SqlState::T_R_DEADLOCK_DETECTED, ErrorKind::Conflict),
        (SqlState::QUERY_CANCELED, ErrorKind::Other),
        (SqlState::DISK_FULL, ErrorKind::Other),
    ] {
        assert_eq!(kind_of_code(&code), kind, "{code:?}");
    }
}

/// Distinct runs of three new repositories, two contexts each, sharing
/// their tests (several runs of one test, on several commits and days)
/// and their failures' fingerprints (in different orders); some without
/// an external id.
fn shared_runs(n: usize) -> Vec<NewRun> {
    (0..n)
        .map(|i| {
            let state = if i % 5 == 0 {
                RunState::Failure
            } else {
                RunState::Success
            };
            let mut r = run(
                &format!("o/r{}", i % 3),
                if i % 2 == 0 { "unit" } else { "e2e" },
                0,
                state,
                [
                    Some(60 * (i as i64 % 4) + 30),
                    Some(60 * (i as i64 % 4) + 20),
                    Some(60 * (i as i64 % 4) + 5),
                ],
            );
            r.commit = format!("c{}", i % 7);
            if i % 4 == 3 {
                r.attempt = (i / 4) as u32;
            } else {
                r.external_id = Some(format!("gh:{i}"));
            }
            r.tests = (0..30)
                .map(|t| {
                    let name = format!("suite::t{}", (t * 7 + i) % 40);
                    let outcome = match (i * 31 + t * 17) % 11 {
                        0 => TestOutcome::Failed,
                        1 => TestOutcome::Skipped,
                        _ => TestOutcome::Passed,
                    };
                    test(&name, outcome, (t % 9 == 0) as u32)
                })
                .collect();
            if state == RunState::Failure {
                // Shared within a repository (the repository that sees a
                // fingerprint first counts it new: per repository, that
                // does not depend on which run came first).
                let repo = i % 3;
                let fps = [
                    format!("fp-a{repo}"),
                    format!("fp-b{repo}"),
                    format!("fp-c{repo}"),
                    format!("fp-{i}"),
                ];
                let k = i % 3;
                r.failures = (0..3)
                    .map(|j| {
                        failure(
                            if j == 0 { "oom" } else { "network" },
                            Some(fps[(k + j) % 4].as_str()),
                        )
                    })
                    .collect();
            }
            r
        })
        .collect()
}

/// What ingest stores, without the ids that depend on which writer came
/// first: per table, rows keyed by repository path, context, test name,
/// commit and external id, with the columns that do not depend on the
/// order the runs arrived in.
const UNORDERED: &[&str] = &[
    "SELECT family || '|' || labels || '|' || value FROM metric_counters ORDER BY 1",
    "SELECT family || '|' || labels || '|' || sum || '|' || count FROM metric_histograms ORDER BY 1",
    "SELECT family || '|' || labels || '|' || le || '|' || count FROM metric_buckets ORDER BY 1",
    "SELECT p.path || '|' || h.hour || '|' || h.slo || '|' || h.good || '|' || h.total
     FROM slo_hourly h JOIN repositories p ON p.id = h.repository_id ORDER BY 1",
    "SELECT forge || '|' || path FROM repositories ORDER BY 1",
    "SELECT p.path || '|' || r.context || '|' || r.commit_sha || '|' || r.attempt || '|' || coalesce(r.external_id, '-')
        || '|' || r.state || '|' || r.content_hash || '|' || r.queue_counted || '|' || r.final_counted
        || '|' || (SELECT count(*) FROM failures f WHERE f.run_id = r.id)
        || '|' || (SELECT count(*) FROM results x WHERE x.run_id = r.id)
     FROM runs r JOIN repositories p ON p.id = r.repository_id ORDER BY 1",
    "SELECT hash || '|' || occurrences || '|' || first_seen || '|' || last_seen FROM fingerprints ORDER BY 1",
    "SELECT p.path || '|' || t.context || '|' || t.name || '|' || t.runs || '|' || t.passes || '|' || t.failures
        || '|' || t.commits || '|' || t.flaky_commits || '|' || coalesce(t.first_seen, -1) || '|'
        || coalesce(t.last_seen, -1)
     FROM tests t JOIN repositories p ON p.id = t.repository_id ORDER BY 1",
    "SELECT p.path || '|' || t.context || '|' || t.name || '|' || d.day || '|' || d.runs || '|' || d.passes
        || '|' || d.failures || '|' || d.commits
     FROM test_days d JOIN tests t ON t.id = d.test_id JOIN repositories p ON p.id = t.repository_id ORDER BY 1",
    "SELECT p.path || '|' || t.context || '|' || t.name || '|' || c.sha || '|' || tc.flags || '|' || tc.failures
     FROM test_commits tc JOIN tests t ON t.id = tc.test_id JOIN commits c ON c.id = tc.commit_id
        JOIN repositories p ON p.id = t.repository_id ORDER BY 1",
    "SELECT p.path || '|' || e.at || '|' || e.good || '|' || e.total
     FROM test_events e JOIN repositories p ON p.id = e.repository_id ORDER BY 1",
    "SELECT p.path || '|' || coalesce(e.queue_at, -1) || '|' || coalesce(e.queue_good, -1) || '|'
        || coalesce(e.run_time_good, -1) || '|' || coalesce(e.completed_good, -1)
     FROM run_events e JOIN repositories p ON p.id = e.repository_id ORDER BY 1",
];

fn assert_same_unordered(sqlite: &Store, pg: &mut PgStore) {
    for sql in UNORDERED {
        let lite = sqlite_dump(sqlite, sql);
        let ours = pg_dump(pg, sql);
        // Sorted here, after normalizing: the engines print numbers
        // differently (300.0, 300), so the orders of their texts differ.
        let (mut ours, mut lite) = (normalized(ours), normalized(lite));
        ours.sort();
        lite.sort();
        if ours != lite {
            let only_pg: Vec<&String> = ours.iter().filter(|r| !lite.contains(r)).collect();
            let only_sqlite: Vec<&String> = lite.iter().filter(|r| !ours.contains(r)).collect();
            panic!("{sql}\nonly on PostgreSQL: {only_pg:#?}\nonly on SQLite: {only_sqlite:#?}");
        }
    }
}

/// `WRITERS` stores on `db`, each on a thread of its own, doing `work`
/// (given its number) at the same moment; what each returned, in order.
/// No write of any was run again: the locks are taken in one order, so
/// none lost a deadlock.
fn at_once<T: Send>(db: &TestDatabase, work: impl Fn(usize, &mut PgStore) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(WRITERS);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    let mut store = open(db);
                    barrier.wait();
                    let out = work(w, &mut store);
                    assert_eq!(store.retried(), 0);
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The SQLite store after `runs`, each stored once, in order (serving).
fn sqlite_after(runs: &[NewRun], policy: &Policy) -> Store {
    let mut sqlite = Store::open_in_memory().unwrap();
    sqlite.mark_serving(now()).unwrap();
    for r in runs {
        sqlite.ingest_run(r, policy, now()).unwrap();
    }
    sqlite
}

/// Each writer's share of distinct runs, all stored as new.
fn store_shares(store: &mut PgStore, w: usize, runs: &[NewRun], policy: &Policy) {
    for r in runs.iter().skip(w).step_by(WRITERS) {
        let got = store.ingest_run(r, policy, now()).unwrap();
        assert_eq!(got.status, IngestStatus::Created);
    }
}

const WRITERS: usize = 4;

#[test]
fn the_same_runs_through_four_replicas_at_once_are_stored_and_counted_once() {
    let policy = Policy::from_config(&Config::default());
    let runs = shared_runs(48);
    let db = TestServer::shared().database("concurrent_same").unwrap();
    let mut pg = open(&db);
    pg.mark_serving(now()).unwrap();
    // Each writer stores every run, starting at a different one.
    let statuses: Vec<Vec<(usize, IngestStatus)>> = at_once(&db, |w, store| {
        (0..runs.len())
            .map(|k| {
                let i = (k + w * runs.len() / WRITERS) % runs.len();
                (
                    i,
                    store.ingest_run(&runs[i], &policy, now()).unwrap().status,
                )
            })
            .collect()
    });
    for i in 0..runs.len() {
        let of_run: Vec<IngestStatus> = statuses
            .iter()
            .flatten()
            .filter(|(r, _)| *r == i)
            .map(|(_, s)| *s)
            .collect();
        let created = of_run
            .iter()
            .filter(|s| **s == IngestStatus::Created)
            .count();
        let unchanged = of_run
            .iter()
            .filter(|s| **s == IngestStatus::Unchanged)
            .count();
        assert_eq!(
            (created, unchanged),
            (1, WRITERS - 1),
            "run {i}: {of_run:?}"
        );
    }
    let sqlite = sqlite_after(&runs, &policy);
    assert_eq!(pg.run_count().unwrap(), runs.len() as i64);
    assert_same_unordered(&sqlite, &mut pg);
}

#[test]
fn distinct_runs_of_new_repositories_through_four_replicas_at_once_are_counted_as_sqlite_does() {
    let policy = Policy::from_config(&Config::default());
    let runs = shared_runs(60);
    let db = TestServer::shared()
        .database("concurrent_distinct")
        .unwrap();
    let mut pg = open(&db);
    pg.mark_serving(now()).unwrap();
    at_once(&db, |w, store| store_shares(store, w, &runs, &policy));
    let sqlite = sqlite_after(&runs, &policy);
    assert_same_unordered(&sqlite, &mut pg);
    // One row per repository, per test, per commit.
    let dups: i64 = pg
        .client()
        .query_one(
            "SELECT (SELECT count(*) FROM repositories) - (SELECT count(DISTINCT path) FROM repositories)
                + (SELECT count(*) FROM tests) - (SELECT count(DISTINCT (repository_id, context, name)) FROM tests)
                + (SELECT count(*) FROM commits) - (SELECT count(DISTINCT (repository_id, sha)) FROM commits)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dups, 0);
}

#[test]
fn a_webhook_delivery_sent_to_four_replicas_at_once_is_recorded_by_one() {
    const DELIVERIES: usize = 50;
    let db = TestServer::shared()
        .database("concurrent_deliveries")
        .unwrap();
    drop(open(&db));
    let firsts: usize = at_once(&db, |_, store| {
        (0..DELIVERIES)
            .filter(|d| {
                let id = format!("d-{d}");
                store
                    .record_delivery(Forge::Github, &id, "workflow_job", now())
                    .unwrap()
            })
            .count()
    })
    .into_iter()
    .sum();
    assert_eq!(firsts, DELIVERIES);
    let stored: i64 = open(&db)
        .client()
        .query_one("SELECT count(*) FROM webhook_deliveries", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, DELIVERIES as i64);
}

#[test]
fn runs_of_one_repository_in_many_contexts_at_once_never_wait_for_each_other_in_a_cycle() {
    // The same counter series (per repository and result) moved by every
    // run, good and bad alternating, with nothing else in common that
    // would serialise the writers earlier (a context per run).
    const RUNS: usize = 60;
    let policy = Policy::from_config(&Config::default());
    let runs: Vec<NewRun> = (0..WRITERS * RUNS)
        .map(|i| {
            let bad = i % 2 == 0;
            // An hour of its own: no hourly rollup row in common either.
            let hour = 60 * i as i64;
            let mut r = run(
                "o/hot",
                &format!("ctx-{i}"),
                0,
                if bad {
                    RunState::Failure
                } else {
                    RunState::Success
                },
                [
                    Some(hour + if bad { 50 } else { 11 }),
                    Some(hour + 10),
                    Some(hour + 1),
                ],
            );
            r.external_id = Some(format!("hot-{i}"));
            // Failures of two classes, in either order.
            let classes = if bad {
                ["oom", "network"]
            } else {
                ["network", "oom"]
            };
            r.failures = classes.iter().map(|c| failure(c, None)).collect();
            r.tests = (0..3)
                .map(|t| {
                    let outcome = if (i + t) % 2 == 0 {
                        TestOutcome::Failed
                    } else {
                        TestOutcome::Passed
                    };
                    test(&format!("t{t}"), outcome, 0)
                })
                .collect();
            r
        })
        .collect();
    let db = TestServer::shared().database("concurrent_hot").unwrap();
    let mut pg = open(&db);
    pg.mark_serving(now()).unwrap();
    at_once(&db, |w, store| store_shares(store, w, &runs, &policy));
    let sqlite = sqlite_after(&runs, &policy);
    assert_same_unordered(&sqlite, &mut pg);
}

/// Distinct finished runs shaped like real ones: 8 repositories, 4
/// contexts, each run 100 to 500 results out of its repository and
/// context's 2,000 tests (about one in 40 failing, some retried), a
/// failure with a fingerprint now and then; `offset` keeps the sets of
/// several calls apart.
fn realistic_runs(n: usize, offset: usize) -> Vec<NewRun> {
    (offset..offset + n)
        .map(|i| {
            let results = 100 + (i * 37) % 401;
            let first = (i * 97) % 2000;
            let state = if i % 9 == 0 {
                RunState::Failure
            } else {
                RunState::Success
            };
            let mut r = run(
                &format!("org/repo{}", i % 8),
                &format!("ci/job{}", (i / 8) % 4),
                0,
                state,
                [
                    Some((i % 600) as i64 + 12),
                    Some((i % 600) as i64 + 10),
                    Some((i % 600) as i64),
                ],
            );
            r.external_id = Some(format!("job-{i}"));
            r.commit = format!("{:040x}", i / 5);
            r.tests = (0..results)
                .map(|k| {
                    let t = (first + k) % 2000;
                    let outcome = match (i * 31 + t * 7) % 40 {
                        0 => TestOutcome::Failed,
                        1 => TestOutcome::Skipped,
                        _ => TestOutcome::Passed,
                    };
                    test(
                        &format!("tests/module_{}.py::test_case_{t}", t / 50),
                        outcome,
                        u32::from((i + t) % 97 == 0),
                    )
                })
                .collect();
            if state == RunState::Failure {
                r.failures = vec![failure("test", Some(&format!("fp-{}", i % 13)))];
            }
            r
        })
        .collect()
}

/// Throughput of 1, 2 and 4 writers (each its own `PgStore`, as replicas
/// are) storing distinct runs, on a server of its own with PostgreSQL's
/// durable defaults (fsync on), each count on a fresh database whose tests
/// already exist (a run per repository and context with all 2,000 first,
/// not timed). Prints figures; asserts only that every run was stored.
/// `cargo test -p ci-slo-store-pg --features testing --test pg --release
/// -- --ignored --nocapture writers_throughput` (`CI_SLO_CONC_RUNS` runs
/// per count, 240 by default).
#[test]
#[ignore = "a measurement: prints figures"]
fn writers_throughput() {
    let n: usize = std::env::var("CI_SLO_CONC_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240);
    let policy = Policy::from_config(&Config::default());
    let server = TestServer::start_with(&[]).unwrap();
    let warm: Vec<NewRun> = (0..32)
        .map(|k| {
            let mut r = realistic_runs(1, 1_000_000 + k).remove(0);
            r.repository.path = format!("org/repo{}", k % 8);
            r.context = format!("ci/job{}", k / 8);
            r.tests = (0..2000)
                .map(|t| {
                    test(
                        &format!("tests/module_{}.py::test_case_{t}", t / 50),
                        TestOutcome::Passed,
                        0,
                    )
                })
                .collect();
            r
        })
        .collect();
    let runs = realistic_runs(n, 0);
    let results: usize = runs.iter().map(|r| r.tests.len()).sum();
    let mut baseline = 0.0;
    for writers in [1usize, 2, 4] {
        let db = server.database(&format!("throughput{writers}")).unwrap();
        let mut store = open(&db);
        store.mark_serving(now()).unwrap();
        for r in &warm {
            store.ingest_run(r, &policy, now()).unwrap();
        }
        let barrier = Barrier::new(writers + 1);
        let done = std::sync::atomic::AtomicBool::new(false);
        let (elapsed, retried) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    let (db, barrier, policy, runs) = (&db, &barrier, &policy, &runs);
                    s.spawn(move || {
                        let mut store = open(db);
                        barrier.wait();
                        for r in runs.iter().skip(w).step_by(writers) {
                            let got = store.ingest_run(r, policy, now()).unwrap();
                            assert_eq!(got.status, IngestStatus::Created);
                        }
                        store.retried()
                    })
                })
                .collect();
            barrier.wait();
            let began = std::time::Instant::now();
            // What the writers' backends do meanwhile, sampled.
            let (db, done) = (&db, &done);
            let sampler = s.spawn(move || sample_backends(db, done));
            let retried: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            let elapsed = began.elapsed().as_secs_f64();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "  {writers} writer(s), backends sampled: {}",
                sampler.join().unwrap()
            );
            (elapsed, retried)
        });
        assert_eq!(store.run_count().unwrap(), (n + warm.len()) as i64);
        let rate = n as f64 / elapsed;
        if writers == 1 {
            baseline = rate;
        }
        eprintln!(
            "PostgreSQL ingest, {writers} writer(s): {n} runs ({results} results) in {elapsed:.2} s: \
             {rate:.0} runs/s, {:.0} results/s, {:.2}x one writer ({baseline:.0} runs/s); {retried} retried",
            results as f64 / elapsed,
            rate / baseline,
        );
    }
}

/// How the other backends of `db` spent their time until `done`: the mean
/// number running, waiting for a lock, and waiting otherwise (I/O, the
/// client), sampled every 10 ms.
fn sample_backends(db: &TestDatabase, done: &std::sync::atomic::AtomicBool) -> String {
    let mut client = db.connect().unwrap();
    let (mut samples, mut running, mut lock, mut other) = (0u32, 0i64, 0i64, 0i64);
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'active' AND wait_event IS NULL),
                        count(*) FILTER (WHERE wait_event_type = 'Lock'),
                        count(*) FILTER (WHERE wait_event_type IS DISTINCT FROM 'Lock' AND wait_event IS NOT NULL
                                         AND state = 'active')
                 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap();
        samples += 1;
        running += row.get::<_, i64>(0);
        lock += row.get::<_, i64>(1);
        other += row.get::<_, i64>(2);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mean = |x: i64| x as f64 / f64::from(samples.max(1));
    format!(
        "{samples} samples, mean {:.2} running, {:.2} waiting for a lock, {:.2} waiting on I/O or else",
        mean(running),
        mean(lock),
        mean(other)
    )
}

#[test]
fn a_write_that_loses_a_deadlock_is_run_again_and_stored_once() {
    // Another session (not a store: outside the stores' lock order) holds
    // the change's row and then waits for the run the store is writing,
    // while the store waits for that row (a run's transaction moves its
    // known change's last activity; it no longer writes its tests' rows,
    // which the fold does): the store's write is the deadlock's victim (its
    // session checks first), rolls back, and runs again.
    let policy = Policy::from_config(&Config::default());
    let db = TestServer::shared().database("deadlock_retry").unwrap();
    let mut store = open(&db);
    store.mark_serving(now()).unwrap();
    let mut seed = run(
        "o/a",
        "unit",
        0,
        RunState::Success,
        [Some(9), Some(8), Some(7)],
    );
    seed.external_id = Some("gh:1".into());
    seed.tests = vec![test("t1", TestOutcome::Passed, 0)];
    seed.change = Some(ChangeRef {
        number: 7,
        merged_at: None,
    });
    store.ingest_run(&seed, &policy, now()).unwrap();
    // The store checks for a deadlock 5 s into a wait, the other session
    // only after 60 s: the store is the one that finds it.
    store
        .client()
        .batch_execute("SET deadlock_timeout = '5s'")
        .unwrap();
    let mut other = db.connect().unwrap();
    other
        .batch_execute(
            "SET deadlock_timeout = '60s'; BEGIN;
             SELECT id FROM changes WHERE number = 7 FOR UPDATE",
        )
        .unwrap();
    let mut next = seed.clone();
    next.external_id = Some("gh:2".into());
    next.commit = "def456".into();
    let mut watch = db.connect().unwrap();
    // The store's own session (the server's other databases, other tests'
    // sessions, wait on locks of their own).
    let store_pid: i32 = store
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let (got, retried) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let got = store.ingest_run(&next, &policy, now());
            (got, store.retried())
        });
        // The store waits for the change's row (its run's row written)...
        while watch
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = $1",
                &[&store_pid],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 0
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // ...and the other session for the store's run (the same external
        // id): a cycle. Once the store's write is rolled back, this goes
        // through; rolled back in turn, it lets the store's second attempt on.
        other
            .execute(
                "INSERT INTO runs (repository_id, external_id, context, commit_sha, attempt, trigger, state,
                    source, content_hash, created_at, updated_at)
                 SELECT id, 'gh:2', 'unit', 'x', 0, 'push', 'success', 'test', 'x', 0, 0
                 FROM repositories WHERE path = 'o/a'",
                &[],
            )
            .unwrap();
        other.batch_execute("ROLLBACK").unwrap();
        writer.join().unwrap()
    });
    assert_eq!(got.unwrap().status, IngestStatus::Created);
    assert_eq!(retried, 1);
    let sqlite = sqlite_after(&[seed, next], &policy);
    assert_same_unordered(&sqlite, &mut store);
}

#[test]
fn runs_of_one_pull_request_in_two_contexts_wait_for_each_other_only_after_their_results() {
    // Every job of a pull request's push ends at about the same time, each
    // its own context, often with the same failure: the change's row, the
    // fingerprint's and the commit's are shared by all of them. A run
    // stored while another replica's transaction holds those rows must
    // store its results before it waits (for that transaction's end), not
    // wait first and then do all of its work: its results and the mark of
    // them (its tests' counters, `test_commits` among them, are folded
    // after the run, `fold.rs`), on a commit the store knows and on a new
    // one.
    one_pull_request_in_two_contexts("late_shared_rows", false);
    one_pull_request_in_two_contexts("late_new_commit", true);
}

fn one_pull_request_in_two_contexts(name: &str, new_commit: bool) {
    let policy = Policy::from_config(&Config::default());
    let db = TestServer::shared().database(name).unwrap();
    let job = |context: &str, id: &str| {
        let mut r = run(
            "o/pr",
            context,
            0,
            RunState::Failure,
            [Some(9), Some(8), Some(7)],
        );
        r.external_id = Some(id.into());
        r.change = Some(ci_slo_core::model::ChangeRef {
            number: 42,
            merged_at: None,
        });
        r.failures = vec![failure("oom", Some("fp-oom"))];
        r.tests = (0..20)
            .map(|t| {
                let outcome = if t == 3 {
                    TestOutcome::Failed
                } else {
                    TestOutcome::Passed
                };
                test(&format!("t{t}"), outcome, 0)
            })
            .collect();
        r
    };
    // The change and the fingerprint exist before (and the commit, unless
    // `new_commit`).
    let seed = job("lint", "gh:1");
    let (mut a_run, mut b_run) = (job("unit", "gh:2"), job("integration", "gh:3"));
    if new_commit {
        a_run.commit = "f00d".into();
        b_run.commit = "f00d".into();
    }
    let mut a = open(&db);
    a.mark_serving(now()).unwrap();
    a.ingest_run(&seed, &policy, now()).unwrap();
    let mut b = open(&db);
    let b_pid: i32 = b
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let mut watch = db.connect().unwrap();
    let (stored, release) = (Barrier::new(2), Barrier::new(2));
    let (b_got, b_held) = std::thread::scope(|s| {
        s.spawn(|| {
            a.in_transaction(|store| -> Result<(), PgStoreError> {
                store.ingest_run(&a_run, &policy, now())?;
                stored.wait();
                release.wait();
                Ok(())
            })
            .unwrap();
        });
        stored.wait();
        let writer = s.spawn(|| b.ingest_run(&b_run, &policy, now()));
        // B ends up waiting for A's transaction...
        let mut waits = 0;
        while watch
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = $1",
                &[&b_pid],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 0
        {
            waits += 1;
            assert!(waits < 3000, "B never waited for A's shared rows");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // ...with its results and their mark written already (the tests'
        // counters are folded after the run: fold.rs).
        let held: Vec<String> = watch
            .query(
                "SELECT DISTINCT relation::regclass::text FROM pg_locks
                 WHERE pid = $1 AND granted AND mode = 'RowExclusiveLock'
                   AND relation::regclass::text IN ('run_results', 'unfolded_results', 'tests', 'test_days',
                                                    'test_commits')
                 ORDER BY 1",
                &[&b_pid],
            )
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        release.wait();
        (writer.join().unwrap(), held)
    });
    for table in ["run_results", "unfolded_results"] {
        assert!(
            b_held.iter().any(|t| t == table),
            "B waited before writing {table}: it had written {b_held:?}"
        );
    }
    assert!(
        !b_held
            .iter()
            .any(|t| t == "test_days" || t == "test_commits"),
        "B wrote counters in its transaction: {b_held:?}"
    );
    assert_eq!(b_got.unwrap().status, IngestStatus::Created);
    let sqlite = sqlite_after(&[seed, a_run, b_run], &policy);
    assert_same_unordered(&sqlite, &mut b);
}

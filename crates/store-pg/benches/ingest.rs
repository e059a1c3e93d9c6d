//! Run ingest on PostgreSQL next to SQLite, in the same run: the same runs
//! (each with `TESTS` test results) stored one transaction per run through
//! `Store::ingest_run` (SQLite file, WAL, as `serve` opens it) and
//! `PgStore::ingest_run` (a PostgreSQL server started here on loopback with
//! its durable defaults: fsync on). Prints runs/s, results/s and bytes per
//! result for both, and PostgreSQL's runs/s again on a session with
//! `synchronous_commit = off` (SQLite's synchronous=NORMAL in WAL mode does
//! not sync at each commit either). `cargo bench -p ci-slo-store-pg --bench ingest`
//! (`CI_SLO_BENCH_RUNS` runs, 2,000 by default).

use chrono::{DateTime, Duration, Utc};
use ci_slo_core::config::Config;
use ci_slo_core::model::{
    Forge, NewRun, RepositoryRef, RunState, TestOutcome, TestResult, Trigger,
};
use ci_slo_store::{Policy, Store};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::testing::TestServer;
use std::time::Instant;

const TESTS: usize = 50;

fn runs(n: usize) -> Vec<NewRun> {
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .expect("time")
        .to_utc();
    (0..n)
        .map(|i| {
            let at = now - Duration::minutes((n - i) as i64);
            NewRun {
                repository: RepositoryRef {
                    forge: Forge::Github,
                    path: format!("org/repo{}", i % 20),
                },
                context: format!("ci/job{}", i % 5),
                commit: format!("{:040x}", i / 3),
                external_id: Some(format!("job-{i}")),
                attempt: 0,
                trigger: Trigger::PullRequest,
                state: if i % 7 == 0 {
                    RunState::Failure
                } else {
                    RunState::Success
                },
                queued_at: Some(at - Duration::seconds(90)),
                started_at: Some(at - Duration::seconds(60)),
                finished_at: Some(at),
                source: "bench".into(),
                tests: (0..TESTS)
                    .map(|t| TestResult {
                        name: format!("suite::test_{t}"),
                        outcome: if (i + t) % 31 == 0 {
                            TestOutcome::Failed
                        } else {
                            TestOutcome::Passed
                        },
                        duration_seconds: Some(0.25),
                        retries: 0,
                        retry_reasons: Vec::new(),
                        message: None,
                    })
                    .collect(),
                ..NewRun::default()
            }
        })
        .collect()
}

fn main() {
    let n: usize = std::env::var("CI_SLO_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let runs = runs(n);
    let policy = Policy::from_config(&Config::default());
    let now = Utc::now();
    let results = (n * TESTS) as f64;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    let mut sqlite = Store::open(&path).expect("sqlite");
    let began = Instant::now();
    for r in &runs {
        sqlite.ingest_run(r, &policy, now).expect("sqlite ingest");
    }
    let lite = began.elapsed().as_secs_f64();
    let _ = sqlite
        .connection()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    let lite_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    let server = TestServer::start_with(&[]).expect("start PostgreSQL");
    let db = server.database("bench").expect("database");
    let mut pg = PgStore::open_config(&db.config(), &"bench", &mut |_| {}).expect("pg");
    let began = Instant::now();
    for r in &runs {
        pg.ingest_run(r, &policy, now).expect("pg ingest");
    }
    let post = began.elapsed().as_secs_f64();
    pg.client().batch_execute("VACUUM ANALYZE").expect("vacuum");
    let pg_bytes: i64 = pg
        .client()
        .query_one("SELECT pg_database_size(current_database())", &[])
        .expect("size")
        .get(0);
    let empty: i64 = {
        let e = server.database("empty").expect("database");
        drop(PgStore::open_config(&e.config(), &"bench", &mut |_| {}).expect("pg"));
        e.connect()
            .expect("connect")
            .query_one("SELECT pg_database_size(current_database())", &[])
            .expect("size")
            .get(0)
    };
    // The same on a session with `synchronous_commit = off`: a commit
    // returns before its WAL is flushed (a crash of the machine may lose
    // the last commits, never corrupts), as SQLite's synchronous=NORMAL in
    // WAL mode does not sync at each commit either.
    let relaxed_db = server.database("relaxed").expect("database");
    let mut relaxed =
        PgStore::open_config(&relaxed_db.config(), &"bench", &mut |_| {}).expect("pg");
    relaxed
        .client()
        .batch_execute("SET synchronous_commit = off")
        .expect("synchronous_commit");
    let began = Instant::now();
    for r in &runs {
        relaxed.ingest_run(r, &policy, now).expect("pg ingest");
    }
    let relaxed_time = began.elapsed().as_secs_f64();

    println!(
        "ingest of {n} runs x {TESTS} test results, one transaction per run, same machine, same run:"
    );
    println!(
        "  SQLite (file, WAL, synchronous=NORMAL): {:>8.0} runs/s {:>9.0} results/s  {:>6.1} bytes/result",
        n as f64 / lite,
        results / lite,
        lite_bytes as f64 / results
    );
    println!(
        "  PostgreSQL (loopback, fsync on):        {:>8.0} runs/s {:>9.0} results/s  {:>6.1} bytes/result (database size less an empty migrated one)",
        n as f64 / post,
        results / post,
        (pg_bytes - empty) as f64 / results
    );
    println!("  PostgreSQL / SQLite time: {:.2}x", post / lite);
    println!(
        "  PostgreSQL, synchronous_commit off:    {:>8.0} runs/s {:>9.0} results/s",
        n as f64 / relaxed_time,
        results / relaxed_time,
    );
    println!(
        "  PostgreSQL (synchronous_commit off) / SQLite time: {:.2}x",
        relaxed_time / lite
    );
}

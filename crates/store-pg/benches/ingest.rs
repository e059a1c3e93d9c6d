//! Run ingest on PostgreSQL next to SQLite, in the same run: the same runs
//! (each with `TESTS` test results) stored one transaction per run through
//! `Store::ingest_run` (SQLite file, WAL, as `serve` opens it) and
//! `PgStore::ingest_run` (a PostgreSQL server started here on loopback with
//! its durable defaults: fsync on). Prints runs/s, results/s and bytes per
//! result for both, and PostgreSQL's runs/s again on a session with
//! `synchronous_commit = off` (SQLite's synchronous=NORMAL in WAL mode does
//! not sync at each commit either). `cargo bench -p ci-slo-store-pg --bench ingest`
//! (`CI_SLO_BENCH_RUNS` runs, 2,000 by default).

mod common;

use chrono::Utc;
use ci_slo_core::config::Config;
use ci_slo_store::{Policy, Store};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::testing::TestServer;
use common::{TESTS, runs};
use std::time::Instant;

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

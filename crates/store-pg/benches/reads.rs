//! The reads of `/metrics`, the history backfill and the forge adapters on
//! PostgreSQL next to SQLite, in the same run: the same runs (each with
//! `TESTS` test results) stored in both (SQLite file, WAL, as `serve` opens
//! it; a PostgreSQL server started here on loopback), then each read
//! repeated and its mean time per call printed for both, with the ratio.
//! `cargo bench -p ci-slo-store-pg --bench reads` (`CI_SLO_BENCH_RUNS` runs,
//! 1,000 by default; `CI_SLO_BENCH_REPEAT` calls per read, 20 by default).

mod common;

use chrono::{Duration, Utc};
use ci_slo_core::config::Config;
use ci_slo_core::model::{DurationLimits, Forge, RepositoryRef};
use ci_slo_store::{Policy, Store};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::testing::TestServer;
use common::{TESTS, end, runs};
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Mean seconds per call of `f` over `repeat` calls (after one untimed).
fn time(repeat: usize, mut f: impl FnMut()) -> f64 {
    f();
    let began = Instant::now();
    for _ in 0..repeat {
        f();
    }
    began.elapsed().as_secs_f64() / repeat as f64
}

fn main() {
    let n = env("CI_SLO_BENCH_RUNS", 1000);
    let repeat = env("CI_SLO_BENCH_REPEAT", 20).max(1);
    let runs = runs(n);
    let policy = Policy::from_config(&Config::default());
    let now = Utc::now();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut sqlite = Store::open(&dir.path().join("bench.db")).expect("sqlite");
    for r in &runs {
        sqlite.ingest_run(r, &policy, now).expect("sqlite ingest");
    }
    let server = TestServer::start_with(&[]).expect("start PostgreSQL");
    let db = server.database("bench").expect("database");
    let mut pg = PgStore::open_config(&db.config(), &"bench", &mut |_| {}).expect("pg");
    for r in &runs {
        pg.ingest_run(r, &policy, now).expect("pg ingest");
    }
    pg.client().batch_execute("VACUUM ANALYZE").expect("vacuum");

    let at = end();
    let windows: Vec<std::time::Duration> = [3_600u64, 86_400, 7 * 86_400, 28 * 86_400]
        .into_iter()
        .map(std::time::Duration::from_secs)
        .collect();
    let today = at.timestamp_millis().div_euclid(86_400_000);
    let first_days = [today - 1, today - 7, today - 28];
    let repo = RepositoryRef {
        forge: Forge::Github,
        path: "org/repo3".into(),
    };
    let commit = format!("{:040x}", n / 3 - 1);
    let limits = DurationLimits::default();

    println!(
        "reads over {n} runs x {TESTS} test results, mean of {repeat} calls, same machine, same run:"
    );
    println!(
        "  {:<44} {:>10} {:>12} {:>9}",
        "read", "SQLite ms", "PostgreSQL ms", "PG/SQLite"
    );
    let row = |name: &str, lite: f64, post: f64| {
        println!(
            "  {name:<44} {:>10.3} {:>12.3} {:>8.1}x",
            lite * 1e3,
            post * 1e3,
            post / lite
        );
    };
    row(
        "metric_state",
        time(repeat, || drop(sqlite.metric_state().expect("read"))),
        time(repeat, || drop(pg.metric_state().expect("read"))),
    );
    row(
        "slo_counts_in_windows (4 windows, all)",
        time(repeat, || {
            drop(
                sqlite
                    .slo_counts_in_windows(at, &windows, None)
                    .expect("read"),
            )
        }),
        time(repeat, || {
            drop(pg.slo_counts_in_windows(at, &windows, None).expect("read"))
        }),
    );
    row(
        "slo_counts_in_windows (4 windows, one repo)",
        time(repeat, || {
            drop(
                sqlite
                    .slo_counts_in_windows(at, &windows, Some("org/repo3"))
                    .expect("read"),
            )
        }),
        time(repeat, || {
            drop(
                pg.slo_counts_in_windows(at, &windows, Some("org/repo3"))
                    .expect("read"),
            )
        }),
    );
    row(
        "test_stats (28 days)",
        time(repeat, || {
            drop(sqlite.test_stats(at - Duration::days(28), 3).expect("read"))
        }),
        time(repeat, || {
            drop(pg.test_stats(at - Duration::days(28), 3).expect("read"))
        }),
    );
    row(
        "test_runs_in_windows (3 windows)",
        time(repeat, || {
            drop(sqlite.test_runs_in_windows(&first_days).expect("read"))
        }),
        time(repeat, || {
            drop(pg.test_runs_in_windows(&first_days).expect("read"))
        }),
    );
    row(
        "test_day_counts (28 days)",
        time(repeat, || {
            drop(sqlite.test_day_counts(today - 28, today).expect("read"))
        }),
        time(repeat, || {
            drop(pg.test_day_counts(today - 28, today).expect("read"))
        }),
    );
    row(
        "counted_events (every run)",
        time(repeat, || {
            let mut k = 0usize;
            sqlite.counted_events(limits, |_| k += 1).expect("read");
        }),
        time(repeat, || {
            let mut k = 0usize;
            pg.counted_events(limits, &mut |_| k += 1).expect("read");
        }),
    );
    let id = format!("job-{}", n / 2);
    row(
        "run_by_external_id",
        time(repeat, || {
            drop(sqlite.run_by_external_id(&repo, &id).expect("read"))
        }),
        time(repeat, || {
            drop(pg.run_by_external_id(&repo, &id).expect("read"))
        }),
    );
    row(
        "run_attempt (latest)",
        time(repeat, || {
            drop(
                sqlite
                    .run_attempt(&repo, "ci/job3", &commit, None)
                    .expect("read"),
            )
        }),
        time(repeat, || {
            drop(
                pg.run_attempt(&repo, "ci/job3", &commit, None)
                    .expect("read"),
            )
        }),
    );
}

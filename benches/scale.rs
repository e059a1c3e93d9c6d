//! The store-side figures of issue 8, each next to a baseline from the same
//! run: `cargo bench --bench scale` (scripts/bench runs it too).
//!
//! 1. ingest rows/s: runs with test results posted to `POST /api/v1/runs` of
//!    the release binary by concurrent clients (acknowledged after commit),
//!    next to the same rows written by plain rusqlite INSERTs into the same
//!    schema, one transaction per run (the floor of SQLite itself);
//! 2. `/metrics` scrape p50/p99 on a database with ~10 M stored test results,
//!    next to the same with ~10 k: the ratio shows the scrape is flat (it
//!    serves a snapshot built off the scrape path); the snapshot's build time
//!    and the exporter's RSS are printed for both;
//! 3. SLI recomputation (the SLO gauges from stored events, as the snapshot
//!    builder does it) over 1 M runs, next to the same over 1 k runs.
//!
//! Knobs: SCALE_RUNS (large database, default 1 000 000 runs × 10 tests),
//! SCALE_INGEST_RUNS (default 4000), SCALE_TESTS (tests per ingested run,
//! default 20), SCALE_CLIENTS (default 8), SCALE_SCRAPES (default 400),
//! SCALE_DIR (keep and reuse the generated databases there).

#[path = "support/mod.rs"]
mod support;

use ci_slo_exporter::config::Config;
use ci_slo_exporter::store::Store;
use rusqlite::params;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use support::{Spec, env_num, generate, get, percentile, serve, status_kb};

const TOKEN: &str = "scale-bench-token";

fn run_body(i: usize, tests: usize) -> String {
    let tests: Vec<serde_json::Value> = (0..tests)
        .map(|t| {
            let failed = t == i % tests.max(1) && i.is_multiple_of(10);
            serde_json::json!({
                "name": format!("suite{}.Test{t}", t % 7),
                "outcome": if failed { "failed" } else { "passed" },
                "duration_seconds": 0.25 + t as f64 / 100.0,
                "message": failed.then_some("assertion failed: expected 200, got 500"),
            })
        })
        .collect();
    let context = ["build", "test", "e2e"][i % 3];
    serde_json::json!({
        "repository": format!("bench/repo-{}", i % 50),
        "context": context,
        "commit": format!("{:040x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
        "trigger": "pull_request",
        "queued_at": "2026-11-20T10:00:00Z",
        "started_at": "2026-11-20T10:01:00Z",
        "finished_at": "2026-11-20T10:09:00Z",
        "tests": tests,
    })
    .to_string()
}

/// Runs per second and rows per second through the HTTP ingest API.
fn ingest_http(runs: usize, tests: usize, clients: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ingest.db");
    let server = serve(&db, &[("CI_SLO_API_TOKEN", TOKEN)]);
    let bodies: Arc<Vec<String>> = Arc::new((0..runs).map(|i| run_body(i, tests)).collect());
    let started = Instant::now();
    support::post_runs(&[server.base.as_str()], clients, bodies, TOKEN);
    let secs = started.elapsed().as_secs_f64();
    (runs as f64 / secs, (runs * (1 + tests)) as f64 / secs)
}

/// Rows per second of plain INSERTs of the same rows into the same schema,
/// one transaction per run, with the exporter's pragmas (WAL, synchronous NORMAL).
fn ingest_sqlite(runs: usize, tests: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("raw.db")).unwrap();
    let conn = store.connection();
    for r in 0..50 {
        conn.execute(
            "INSERT INTO repositories (id, forge, path) VALUES (?1, 'generic', ?2)",
            params![r + 1, format!("bench/repo-{r}")],
        )
        .unwrap();
    }
    let started = Instant::now();
    for i in 0..runs {
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut run = tx
                .prepare_cached(
                    "INSERT INTO runs (repository_id, context, commit_sha, attempt, trigger_code, state_code, queued_at,
                       started_at, finished_at, source_code, content_digest, created_at, updated_at, queue_counted, final_counted)
                     VALUES (?1, ?2, ?3, 0, 'pull_request', 'success', ?4, ?5, ?6, 'api', 'x', ?6, ?6, 1, 1)",
                )
                .unwrap();
            let t0 = 1_763_632_800_000i64;
            run.execute(params![
                (i % 50) as i64 + 1,
                ["build", "test", "e2e"][i % 3],
                format!("{:040x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
                t0,
                t0 + 60_000,
                t0 + 540_000
            ])
            .unwrap();
            let run_id = tx.last_insert_rowid();
            let mut test = tx
                .prepare_cached(
                    "INSERT INTO test_results (run_id, name, outcome, duration_seconds, retries, retry_reasons, message)
                     VALUES (?1, ?2, 'passed', ?3, 0, '[]', NULL)",
                )
                .unwrap();
            for t in 0..tests {
                test.execute(params![
                    run_id,
                    format!("suite{}.Test{t}", t % 7),
                    0.25 + t as f64 / 100.0
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    (runs * (1 + tests)) as f64 / started.elapsed().as_secs_f64()
}

struct ScrapeFigures {
    p50: f64,
    p99: f64,
    bytes: usize,
    build_seconds: f64,
    rss_mb: f64,
}

fn scrape(db: &Path, n: usize) -> ScrapeFigures {
    let server = serve(db, &[]);
    // The first snapshot is built before /readyz answers 200; one warm-up scrape.
    let (status, bytes) = get(&server.base, "/metrics");
    assert_eq!(status, 200);
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let (s, _) = get(&server.base, "/metrics");
            assert_eq!(s, 200);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let body = ureq::get(&format!("{}/metrics", server.base))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let build_seconds = body
        .lines()
        .find(|l| l.starts_with("ci_exporter_snapshot_build_duration_seconds "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    ScrapeFigures {
        p50: percentile(&ms, 0.5),
        p99: percentile(&ms, 0.99),
        bytes,
        build_seconds,
        rss_mb: status_kb(server.child.id(), "VmRSS").map_or(f64::NAN, |kb| kb as f64 / 1024.0),
    }
}

/// Median milliseconds of the SLO gauges' recomputation over `db`.
fn sli_recompute(db: &Path) -> f64 {
    let store = Store::open(db).unwrap();
    let config = Config::default();
    let now = chrono::Utc::now();
    let mut ms: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let families = ci_slo_exporter::metrics::slo_families(&store, &config, now).unwrap();
            assert!(!families.is_empty());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    ms[2]
}

fn test_result_count(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM test_results", [], |r| r.get(0))
        .unwrap()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: run with `cargo bench --bench scale`");
        return;
    }
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );

    let (runs, tests, clients) = (
        env_num("SCALE_INGEST_RUNS", 4000),
        env_num("SCALE_TESTS", 20),
        env_num("SCALE_CLIENTS", 8),
    );
    println!("\n== 1. ingest: {runs} runs × {tests} test results, {clients} clients");
    let (runs_s, rows_s) = ingest_http(runs, tests, clients);
    let raw = ingest_sqlite(runs, tests);
    println!(
        "POST /api/v1/runs (acknowledged after commit): {runs_s:.0} runs/s, {rows_s:.0} rows/s"
    );
    println!("plain SQLite INSERTs, one transaction per run (baseline): {raw:.0} rows/s");
    println!("ratio exporter/SQLite: {:.2}", rows_s / raw);

    let large = env_num("SCALE_RUNS", 1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("SCALE_DIR").map(std::path::PathBuf::from);
    let dir = keep.as_deref().unwrap_or(tmp.path());
    std::fs::create_dir_all(dir).unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut dbs = Vec::new();
    for runs in [1_000, large] {
        let db = dir.join(format!("scale-{runs}.db"));
        if keep.is_none() || !db.exists() {
            let t = Instant::now();
            generate(
                &db,
                Spec {
                    runs,
                    tests_per_run: 10,
                    tests_every: 1,
                },
                now_ms,
            );
            eprintln!(
                "generated {runs} runs in {:.0} s ({} MB)",
                t.elapsed().as_secs_f64(),
                std::fs::metadata(&db).map_or(0, |m| m.len() / 1_000_000)
            );
        }
        dbs.push((runs, test_result_count(&db), db));
    }

    let n = env_num("SCALE_SCRAPES", 400);
    println!("\n== 2. /metrics scrape, {n} sequential scrapes after one warm-up");
    let mut figures = Vec::new();
    for (runs, results, db) in &dbs {
        let f = scrape(db, n);
        println!(
            "{results} test results ({runs} runs): p50 {:.2} ms, p99 {:.2} ms, {} KB, snapshot built in {:.2} s, RSS {:.0} MB",
            f.p50,
            f.p99,
            f.bytes / 1024,
            f.build_seconds,
            f.rss_mb
        );
        figures.push(f);
    }
    println!(
        "ratio p50 large/small: {:.2}, p99: {:.2}; the exposition is {:.1}x larger (more tests and repositories reach the worst-N families), the stored test results {:.0}x",
        figures[1].p50 / figures[0].p50,
        figures[1].p99 / figures[0].p99,
        figures[1].bytes as f64 / figures[0].bytes as f64,
        dbs[1].1 as f64 / dbs[0].1 as f64
    );

    println!("\n== 3. SLI recomputation (SLO gauges over every window, from stored events)");
    let small = sli_recompute(&dbs[0].2);
    let big = sli_recompute(&dbs[1].2);
    println!("{} runs (baseline): {small:.1} ms", dbs[0].0);
    println!("{} runs: {big:.1} ms", dbs[1].0);
    println!("ratio: {:.1}", big / small);
}

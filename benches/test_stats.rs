//! Per-test intelligence at scale (issue 14 §1-2, issue 12 §6):
//! `cargo bench --bench test_stats` (scripts/bench runs it too).
//!
//! A history of TESTS distinct tests × RUNS runs (default 8,000 × 2,000:
//! 16 M results; about 1% of the tests flaky, 0.5% broken; two runs per
//! commit) is stored through the library's batched ingest (the path of
//! `import cockpit`), then the release binary is started on it and on a
//! small database of the same tests × 20 runs (the same run's baseline):
//!
//! 1. bytes per stored test result after a checkpoint (database + indexes),
//!    next to the layout before migration 10 (one `test_results` row with
//!    the name plus one `slo_events` row per result) holding the same results;
//! 2. time until the port answers `/healthz`, and until `/readyz` is 200;
//! 3. ingest results/s of INGEST_RUNS more runs (each TESTS results) through
//!    `POST /api/v1/runs` with 2 clients, on the large and the small database;
//! 4. freshness: seconds from the last acknowledged run to `/metrics`
//!    counting it (`ci_exporter_stored_runs`), the snapshot build time;
//! 5. RSS over time (sampled every 0.5 s) while it starts, ingests and serves.
//!
//! Knobs: TESTS (8000), RUNS (2000), INGEST_RUNS (40), STATS_DIR (keep and
//! reuse the generated database there).

#[path = "support/mod.rs"]
mod support;

use ci_slo_exporter::config::Config;
use ci_slo_exporter::model::{NewRun, TestOutcome};
use ci_slo_exporter::store::{Policy, Store};
use rusqlite::params;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::test_history::{body, name, new_run, outcome};
use support::{BIN, env_num, status_kb};

const TOKEN: &str = "test-stats-bench-token";

/// Store `runs` runs of `tests` tests; results/s of the batched ingest.
fn generate(db: &Path, tests: usize, runs: usize, now_ms: i64) -> f64 {
    let _ = std::fs::remove_file(db);
    let mut store = Store::open(db).unwrap();
    store.tune_for_bulk_load(64).unwrap();
    let policy = Policy::from_config(&Config::default());
    let started = Instant::now();
    let batch = 5;
    for first in (0..runs).step_by(batch) {
        let chunk: Vec<NewRun> = (first..(first + batch).min(runs))
            .map(|i| new_run(i, tests, now_ms, runs))
            .collect();
        store
            .ingest_batch(&chunk, &policy, chrono::Utc::now())
            .unwrap();
        if first % 200 == 0 && first > 0 {
            eprintln!(
                "  {first} runs stored, {:.0} results/s",
                (first * tests) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let rate = (runs * tests) as f64 / started.elapsed().as_secs_f64();
    store.checkpoint().unwrap();
    rate
}

fn file_bytes(db: &Path) -> u64 {
    let wal = db.with_extension("sqlite-wal");
    std::fs::metadata(db).map_or(0, |m| m.len()) + std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// Bytes per result of the layout before migration 10, on `runs` × `tests`.
fn old_layout_bytes(dir: &Path, tests: usize, runs: usize) -> f64 {
    let db = dir.join("old-layout.db");
    let _ = std::fs::remove_file(&db);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE test_results (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, name TEXT NOT NULL,
             outcome TEXT NOT NULL, duration_seconds REAL, retries INTEGER NOT NULL, retry_reasons TEXT NOT NULL,
             message TEXT, UNIQUE (run_id, name));
         CREATE TABLE slo_events (slo TEXT NOT NULL, subject TEXT NOT NULL, repository_id INTEGER NOT NULL,
             at INTEGER NOT NULL, good INTEGER NOT NULL, PRIMARY KEY (slo, subject)) WITHOUT ROWID;
         CREATE INDEX slo_events_at ON slo_events (at, slo, good);",
    )
    .unwrap();
    let names: Vec<String> = (0..tests).map(name).collect();
    for i in 0..runs {
        conn.execute_batch("BEGIN").unwrap();
        {
            let mut tr = conn
                .prepare_cached(
                    "INSERT INTO test_results (run_id, name, outcome, duration_seconds, retries, retry_reasons, message)
                     VALUES (?1, ?2, ?3, ?4, 0, '[]', NULL)",
                )
                .unwrap();
            let mut ev = conn
                .prepare_cached(
                    "INSERT INTO slo_events (slo, subject, repository_id, at, good) VALUES ('test_success', ?1, 1, ?2, ?3)",
                )
                .unwrap();
            for (t, n) in names.iter().enumerate() {
                let o = outcome(t, i);
                tr.execute(params![
                    i as i64 + 1,
                    n,
                    o.as_str(),
                    0.01 + (t % 97) as f64 / 10.0
                ])
                .unwrap();
                ev.execute(params![
                    format!("test:{}:{n}", i + 1),
                    1_764_000_000_000i64 + i as i64 * 120_000,
                    o == TestOutcome::Passed
                ])
                .unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    let bytes = file_bytes(&db) as f64 / (runs * tests) as f64;
    let _ = std::fs::remove_file(&db);
    bytes
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn get(base: &str, path: &str) -> Option<(u16, String)> {
    let mut r = agent().get(&format!("{base}{path}")).call().ok()?;
    Some((
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    ))
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

struct Figures {
    healthz_s: f64,
    ready_s: f64,
    results_s: f64,
    fresh_s: f64,
    build_s: f64,
    rss: Vec<(f64, f64)>,
}

/// Serve `db`, ingest `ingest_runs` more runs of `tests` results, measure.
fn serve_and_ingest(db: &Path, tests: usize, ingest_runs: usize, first_run: usize) -> Figures {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    let mut child = Command::new(BIN)
        .args(["serve", "--db"])
        .arg(db)
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .env("CI_SLO_LOG", "warn")
        .env("CI_SLO_API_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Some(kb) = status_kb(pid, "VmRSS") {
                    out.push((t0.elapsed().as_secs_f64(), kb as f64 / 1024.0));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            out
        })
    };
    let mut healthz_s = f64::NAN;
    loop {
        match get(&base, "/healthz") {
            Some((200, _)) if healthz_s.is_nan() => healthz_s = t0.elapsed().as_secs_f64(),
            _ => {}
        }
        if !healthz_s.is_nan() && matches!(get(&base, "/readyz"), Some((200, _))) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready_s = t0.elapsed().as_secs_f64();
    let runs_before = sample(
        &get(&base, "/metrics").unwrap().1,
        "ci_exporter_stored_runs",
    )
    .unwrap_or(0.0);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..ingest_runs)
            .map(|k| {
                body(&new_run(
                    first_run + k,
                    tests,
                    now_ms,
                    first_run + ingest_runs,
                ))
            })
            .collect(),
    );
    let started = Instant::now();
    support::post_runs(&[base.as_str()], 2, bodies, TOKEN);
    let acked = Instant::now();
    let results_s = (ingest_runs * tests) as f64 / started.elapsed().as_secs_f64();
    let want = runs_before + ingest_runs as f64;
    let (fresh_s, build_s) = loop {
        let text = get(&base, "/metrics").unwrap().1;
        if sample(&text, "ci_exporter_stored_runs") >= Some(want) {
            break (
                acked.elapsed().as_secs_f64(),
                sample(&text, "ci_exporter_snapshot_build_duration_seconds").unwrap_or(f64::NAN),
            );
        }
        assert!(acked.elapsed() < Duration::from_secs(600), "never fresh");
        std::thread::sleep(Duration::from_millis(50));
    };
    // A few seconds of serving after the burst.
    std::thread::sleep(Duration::from_secs(3));
    done.store(true, Ordering::Relaxed);
    let rss = sampler.join().unwrap();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.wait();
    Figures {
        healthz_s,
        ready_s,
        results_s,
        fresh_s,
        build_s,
        rss,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("test_stats: run with `cargo bench --bench test_stats`");
        return;
    }
    let (tests, runs, ingest_runs) = (
        env_num("TESTS", 8000usize),
        env_num("RUNS", 2000usize),
        env_num("INGEST_RUNS", 40usize),
    );
    let small_runs = 20;
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("STATS_DIR").map(std::path::PathBuf::from);
    let dir = keep.as_deref().unwrap_or(tmp.path());
    std::fs::create_dir_all(dir).unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    println!(
        "machine: {} cores; {tests} tests × {runs} runs ({} M results), baseline {tests} × {small_runs}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        (tests * runs) as f64 / 1e6
    );

    println!("\n== 1. storage");
    let large = dir.join(format!("stats-{tests}x{runs}.sqlite"));
    let small = dir.join(format!("stats-{tests}x{small_runs}.sqlite"));
    let gen_large = if keep.is_some() && large.exists() {
        f64::NAN
    } else {
        generate(&large, tests, runs, now_ms)
    };
    let gen_small = generate(&small, tests, small_runs, now_ms);
    let per = |db: &Path, n: usize| file_bytes(db) as f64 / (n * tests) as f64;
    let old = old_layout_bytes(dir, tests, small_runs);
    println!(
        "batched library ingest (import path): {gen_large:.0} results/s into the large database, {gen_small:.0} into the small one"
    );
    println!(
        "bytes per stored result after a checkpoint: {:.1} ({} MB for {} M results); small database {:.1}; layout before migration 10 (same results as the small one): {old:.1}",
        per(&large, runs),
        file_bytes(&large) / 1_000_000,
        (tests * runs) as f64 / 1e6,
        per(&small, small_runs),
    );

    println!(
        "\n== 2-5. serving: start, ingest {ingest_runs} runs × {tests} results over HTTP (2 clients), freshness, RSS"
    );
    // A kept large database is served as a copy: the runs posted below
    // would otherwise stay in it, and the next run of the bench would post
    // the same runs again (409) onto a larger history.
    let served_large = if keep.is_some() {
        let copy = dir.join(format!("stats-{tests}x{runs}-served.sqlite"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", copy.display()));
        }
        std::fs::copy(&large, &copy).unwrap();
        let wal = |db: &Path| format!("{}-wal", db.display());
        if Path::new(&wal(&large)).exists() {
            std::fs::copy(wal(&large), wal(&copy)).unwrap();
        }
        copy
    } else {
        large.clone()
    };
    for (label, db, stored) in [
        ("small (baseline)", &small, small_runs),
        ("large", &served_large, runs),
    ] {
        let f = serve_and_ingest(db, tests, ingest_runs, stored + 1_000_000);
        let peak = f.rss.iter().map(|r| r.1).fold(0.0, f64::max);
        println!(
            "{label}: /healthz after {:.2} s, ready after {:.2} s; POST /api/v1/runs {:.0} results/s; on /metrics {:.2} s after the last ack (snapshot built in {:.3} s); RSS peak {peak:.0} MB",
            f.healthz_s, f.ready_s, f.results_s, f.fresh_s, f.build_s
        );
        let strip: Vec<String> = f
            .rss
            .iter()
            .step_by((f.rss.len() / 12).max(1))
            .map(|(t, mb)| format!("{t:.0}s:{mb:.0}"))
            .collect();
        println!("  RSS over time (s:MB): {}", strip.join(" "));
    }
}

//! What TLS to PostgreSQL costs, next to plain connections in the same run
//! on the same server (a PostgreSQL started here on loopback with `ssl=on`,
//! a certificate from a CA made here, TLS optional): the time to open a
//! connection (TCP, TLS handshake, SCRAM authentication, the session's
//! settings) with `sslmode=disable`, `require` and `verify-full`; the round
//! trip of `SELECT 1`; reading about 1 MB; and storing runs through the
//! store (`ingest_run`, 50 test results each).
//! `cargo bench -p ci-slo-store-pg --bench tls` (`CI_SLO_BENCH_CONNECTS`
//! connections per mode, 100 by default; `CI_SLO_BENCH_QUERIES` `SELECT 1`
//! per mode, 5,000 by default; `CI_SLO_BENCH_RUNS` runs, 300 by default).

mod common;

use ci_slo_core::config::Config;
use ci_slo_store::Policy;
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::connect::ConnectConfig;
use ci_slo_store_pg::testing::{TestCerts, TestServer};
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and mean of `samples` (seconds), in ms.
fn summary(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    (median * 1e3, mean * 1e3)
}

fn main() {
    let connects = env("CI_SLO_BENCH_CONNECTS", 100).max(1);
    let queries = env("CI_SLO_BENCH_QUERIES", 5000).max(1);
    let n_runs = env("CI_SLO_BENCH_RUNS", 300).max(1);

    let certs = TestCerts::new(&["127.0.0.1"]);
    let server = TestServer::start_tls(&certs.server_cert_pem, &certs.server_key_pem, false)
        .expect("start PostgreSQL with TLS");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = certs.write_ca(dir.path(), "ca.pem").expect("CA file");
    let modes = [
        ("disable", "sslmode=disable".to_string()),
        ("require", "sslmode=require".to_string()),
        (
            "verify-full",
            format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        ),
    ];
    println!(
        "TLS to PostgreSQL: {connects} connections, {queries} × SELECT 1, 20 × ~1 MB, \
         {n_runs} runs of {} results per mode (loopback)",
        common::TESTS
    );
    println!(
        "| sslmode | connect ms (median / mean) | SELECT 1 µs | ~1 MB read ms | ingest_run runs/s |"
    );
    println!("|---|---|---|---|---|");
    let policy = Policy::from_config(&Config::default());
    let runs = common::runs(n_runs);
    for (name, query) in &modes {
        let db = server.database(&format!("tls_{name}")).expect("database");
        let url = format!(
            "postgres://{}:{}@127.0.0.1:{}/{}?{query}",
            TestServer::USER,
            server.password(),
            server.port(),
            db.name()
        );
        let config = ConnectConfig::parse(&url).expect("URL");
        // Connections: each opened, used once (the handshake is done by
        // then) and closed.
        let mut samples = Vec::with_capacity(connects);
        for _ in 0..connects {
            let began = Instant::now();
            let mut c = config.connect().expect("connect");
            c.batch_execute("SELECT 1").expect("query");
            samples.push(began.elapsed().as_secs_f64());
        }
        let (median, mean) = summary(samples);
        let mut c = config.connect().expect("connect");
        let tls: bool = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .expect("pg_stat_ssl")
            .get(0);
        assert_eq!(tls, *name != "disable", "{name}: TLS {tls}");
        let one = c.prepare("SELECT 1").expect("prepare");
        c.query_one(&one, &[]).expect("warm");
        let began = Instant::now();
        for _ in 0..queries {
            c.query_one(&one, &[]).expect("SELECT 1");
        }
        let select_us = began.elapsed().as_secs_f64() / queries as f64 * 1e6;
        let big = c
            .prepare("SELECT repeat('x', 100) FROM generate_series(1, 10000)")
            .expect("prepare");
        c.query(&big, &[]).expect("warm");
        let began = Instant::now();
        for _ in 0..20 {
            assert_eq!(c.query(&big, &[]).expect("read").len(), 10_000);
        }
        let big_ms = began.elapsed().as_secs_f64() / 20.0 * 1e3;
        drop(c);
        let mut store = PgStore::open_config(&config, &"bench", &mut |_| {}).expect("store");
        let now = common::end();
        let began = Instant::now();
        for r in &runs {
            store.ingest_run(r, &policy, now).expect("ingest");
        }
        let runs_per_s = n_runs as f64 / began.elapsed().as_secs_f64();
        println!(
            "| {name} | {median:.2} / {mean:.2} | {select_us:.1} | {big_ms:.2} | {runs_per_s:.0} |"
        );
    }
}

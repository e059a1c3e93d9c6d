//! What TLS to PostgreSQL costs, next to plain connections in the same run
//! on the same server (a PostgreSQL started here on loopback with `ssl=on`,
//! a certificate from a CA made here, TLS optional): the time to open a
//! connection (TCP, TLS handshake, SCRAM authentication, the session's
//! settings) with `sslmode=disable`, `require` and `verify-full`; the round
//! trip of a prepared `SELECT 1`; reading about 1 MB; and storing runs
//! through the store (`ingest_run`, 50 test results each). The modes take
//! turns in 20 rounds (so a change of the machine's load falls on all of
//! them) and the medians of the rounds are printed (docs/benchmarks.md,
//! *TLS to PostgreSQL*).
//! `cargo bench -p ci-slo-store-pg --bench tls` (`CI_SLO_BENCH_CONNECTS`
//! connections per mode, 100 by default; `CI_SLO_BENCH_QUERIES` `SELECT 1`
//! per mode, 5,000 by default; `CI_SLO_BENCH_RUNS` runs per mode, 300 by
//! default).

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

/// One sslmode's connections.
struct Mode {
    name: &'static str,
    config: ConnectConfig,
    client: postgres::Client,
    store: PgStore,
    one: postgres::Statement,
    big: postgres::Statement,
    connect: Vec<f64>,
    select: Vec<f64>,
    read: Vec<f64>,
    ingest: Vec<f64>,
    _db: ci_slo_store_pg::testing::TestDatabase,
}

fn main() {
    let connects = env("CI_SLO_BENCH_CONNECTS", 100).max(1);
    let queries = env("CI_SLO_BENCH_QUERIES", 5000).max(20);
    let n_runs = env("CI_SLO_BENCH_RUNS", 300).max(20);
    let rounds = 20;

    let certs = TestCerts::new(&["127.0.0.1"]);
    let server = TestServer::start_tls(&certs.server_cert_pem, &certs.server_key_pem, false)
        .expect("start PostgreSQL with TLS");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = certs.write_ca(dir.path(), "ca.pem").expect("CA file");
    let queries_of = [
        ("disable", "sslmode=disable".to_string()),
        ("require", "sslmode=require".to_string()),
        (
            "verify-full",
            format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        ),
    ];
    let mut modes: Vec<Mode> = queries_of
        .iter()
        .map(|(name, query)| {
            let db = server.database(&format!("tls_{name}")).expect("database");
            let url = format!(
                "postgres://{}:{}@127.0.0.1:{}/{}?{query}",
                TestServer::USER,
                server.password(),
                server.port(),
                db.name()
            );
            let config = ConnectConfig::parse(&url).expect("URL");
            let mut client = config.connect().expect("connect");
            let tls: bool = client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .expect("pg_stat_ssl")
                .get(0);
            assert_eq!(tls, *name != "disable", "{name}: TLS {tls}");
            let one = client.prepare("SELECT 1").expect("prepare");
            let big = client
                .prepare("SELECT repeat('x', 100) FROM generate_series(1, 10000)")
                .expect("prepare");
            let store = PgStore::open_with(&config, &"bench", &mut |_| {}).expect("store");
            Mode {
                name,
                config,
                client,
                store,
                one,
                big,
                connect: Vec::new(),
                select: Vec::new(),
                read: Vec::new(),
                ingest: Vec::new(),
                _db: db,
            }
        })
        .collect();
    println!(
        "TLS to PostgreSQL (loopback), the modes interleaved in {rounds} rounds: {connects} \
         connections, {queries} × SELECT 1, 40 × ~1 MB read, {n_runs} runs of {} results \
         stored, per mode; medians of the rounds",
        common::TESTS
    );
    let policy = Policy::from_config(&Config::default());
    let runs = common::runs(n_runs);
    let now = common::end();
    for round in 0..rounds {
        for m in modes.iter_mut() {
            // Connections: each opened, used once (the handshake is done
            // by then) and closed.
            for _ in 0..connects.div_ceil(rounds) {
                let began = Instant::now();
                let mut c = m.config.connect().expect("connect");
                c.batch_execute("SELECT 1").expect("query");
                m.connect.push(began.elapsed().as_secs_f64());
            }
            let n = queries / rounds;
            let began = Instant::now();
            for _ in 0..n {
                m.client.query_one(&m.one, &[]).expect("SELECT 1");
            }
            m.select.push(began.elapsed().as_secs_f64() / n as f64);
            for _ in 0..2 {
                let began = Instant::now();
                let rows = m.client.query(&m.big, &[]).expect("read");
                m.read.push(began.elapsed().as_secs_f64());
                assert_eq!(rows.len(), 10_000);
            }
            let chunk = n_runs / rounds;
            let began = Instant::now();
            for r in &runs[round * chunk..(round + 1) * chunk] {
                m.store.ingest_run(r, &policy, now).expect("ingest");
            }
            m.ingest.push(began.elapsed().as_secs_f64() / chunk as f64);
        }
    }
    println!(
        "| sslmode | connect ms (median / mean) | SELECT 1 µs | ~1 MB read ms | ingest_run ms per run |"
    );
    println!("|---|---|---|---|---|");
    for m in modes {
        let (c_median, c_mean) = summary(m.connect);
        let (select, _) = summary(m.select);
        let (read, _) = summary(m.read);
        let (ingest, _) = summary(m.ingest);
        println!(
            "| {} | {c_median:.2} / {c_mean:.2} | {:.1} | {read:.2} | {ingest:.2} |",
            m.name,
            select * 1e3
        );
    }
}

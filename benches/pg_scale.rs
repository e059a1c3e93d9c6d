//! PostgreSQL next to SQLite at scale (issue 18 item 5):
//! `cargo bench --bench pg_scale` (scripts/bench runs it too).
//!
//! The same history, RESULTS test results (default 10 M) in runs of TESTS
//! distinct tests (default 8,000, names as in `benches/test_stats.rs`: 1%
//! flaky, 0.5% broken, two runs per commit), is stored through the storage
//! interface's batched ingest (5 runs a transaction) into a SQLite file and
//! into a PostgreSQL database of a server started here on loopback (Debian's
//! `postgresql` package, in a temporary data directory, as the tests do:
//! `ci_slo_store_pg::testing`; its durable defaults, fsync on). Then, each
//! figure for both engines in the same run, with the ratio PostgreSQL /
//! SQLite:
//!
//! 1. bytes per stored result: SQLite's file (and WAL) after a checkpoint;
//!    PostgreSQL's `pg_database_size` after `VACUUM (ANALYZE)`, less the
//!    size of an empty migrated database, and the tables' own
//!    `pg_total_relation_size` (tables, indexes, TOAST);
//! 2. seconds from starting the release binary's `serve` to `/readyz` 200;
//! 3. `/metrics` p50 and p99 over SCRAPES sequential scrapes (default 300);
//! 4. `POST /api/v1/runs` results/s: INGEST_RUNS runs (default 20) of TESTS
//!    results with 1 client, then with 2; on PostgreSQL also with a second
//!    replica on the same database (2 replicas × 2 clients against 1 × 2),
//!    with the runs of one context and again with the runs spread over
//!    PG_SCALE_REPLICA_CONTEXTS contexts (default 4; each context's first
//!    run, which creates its tests, posted first and not timed). Each
//!    figure until the last answer, and until the posted runs are counted:
//!    PostgreSQL folds a run's per-test counters after it
//!    (`ci_slo_store_pg::fold`), so the time until no mark is left counts
//!    too (the replica figures are the latter).
//!
//! With PG_SCALE_VARIANT_SQL (e.g. `ALTER TABLE tests SET (fillfactor =
//! 50)`), a second PostgreSQL database, where that SQL ran after the
//! migrations, is loaded and served the same way: a column of its own, to
//! try a change of the schema against the one of this build in one run.
//!
//! With PG_SCALE_STATEMENTS=1 the server loads `pg_stat_statements`
//! (statements inside trigger functions tracked too) and, after each
//! PostgreSQL database's ingest through the API, the bench prints the
//! statements that took the most server time while it was served: where
//! the time of a run goes.
//!
//! Knobs: PG_SCALE_RESULTS (10000000), PG_SCALE_TESTS (8000),
//! PG_SCALE_INGEST_RUNS (20), PG_SCALE_SCRAPES (300),
//! PG_SCALE_REPLICA_CONTEXTS (4; 1 leaves that measurement out),
//! PG_SCALE_LOG (the served exporters' log level, `CI_SLO_LOG`: warn),
//! PG_SCALE_VARIANT_SQL, PG_SCALE_STATEMENTS, PG_SCALE_WAITS (1: what
//! busy sessions wait on during the replica measurements, sampled from
//! `pg_stat_activity`), PG_SCALE_COMPARE_BIN (another build's exporter
//! binary: after the load, only start to `/readyz` and the scrapes, that
//! binary and this build's alternately, nothing posted).
//! A quick run:
//! `PG_SCALE_RESULTS=400000 PG_SCALE_INGEST_RUNS=4 cargo bench --bench pg_scale`.

#[path = "support/mod.rs"]
mod support;

use ci_slo_exporter::config::Config;
use ci_slo_exporter::model::NewRun;
use ci_slo_exporter::store::{Policy, Storage, Store};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::testing::{TestDatabase, TestServer};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::test_history::{body, new_run};
use support::{BIN, env_num, get, percentile};

const TOKEN: &str = "pg-scale-bench-token";
/// Runs per transaction while storing the history.
const BATCH: usize = 5;

/// Store `runs` runs of `tests` tests through the batched ingest of the
/// store `open` gives, a new one (connection) every `reopen_every` runs
/// when not 0; results/s until they are counted (folded, on PostgreSQL).
fn load(
    label: &str,
    open: &mut dyn FnMut() -> Box<dyn Storage>,
    reopen_every: usize,
    (tests, runs, now_ms): (usize, usize, i64),
) -> f64 {
    let policy = Policy::from_config(&Config::default());
    let started = Instant::now();
    let mut last = Instant::now();
    let mut store = open();
    for first in (0..runs).step_by(BATCH) {
        if reopen_every > 0 && first > 0 && first % reopen_every == 0 {
            drop(store);
            store = open();
        }
        let chunk: Vec<NewRun> = (first..(first + BATCH).min(runs))
            .map(|i| new_run(i, tests, now_ms, runs))
            .collect();
        store
            .ingest_batch(&chunk, &policy, chrono::Utc::now())
            .unwrap();
        if last.elapsed() > Duration::from_secs(60) {
            last = Instant::now();
            eprintln!(
                "  {label}: {} of {runs} runs stored, {:.0} results/s",
                first + chunk.len(),
                ((first + chunk.len()) * tests) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    // Until counted: PostgreSQL folds the runs' per-test counters after
    // them (`Storage::fold`; SQLite counted them in each transaction).
    let folded = store.fold().unwrap();
    if folded > 0 {
        eprintln!("  {label}: {folded} stored runs folded into the per-test counters");
    }
    (runs * tests) as f64 / started.elapsed().as_secs_f64()
}

/// How the exporter finds its store.
#[derive(Clone)]
enum Engine {
    Sqlite(std::path::PathBuf),
    /// `CI_SLO_DATABASE_URL`, password included.
    Postgres(String),
}

struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Start `serve` on `engine`; it and the seconds until `/readyz` was 200.
fn serve(engine: &Engine, dir: &Path) -> (Served, f64) {
    serve_bin(BIN, engine, dir)
}

/// [`serve`] with the exporter binary `bin`.
fn serve_bin(bin: &str, engine: &Engine, dir: &Path) -> (Served, f64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env(
            "CI_SLO_LOG",
            std::env::var("PG_SCALE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("CI_SLO_API_TOKEN", TOKEN)
        .env_remove("CI_SLO_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    match engine {
        Engine::Sqlite(path) => cmd.arg("--db").arg(path),
        Engine::Postgres(url) => cmd.env("CI_SLO_DATABASE_URL", url),
    };
    let t0 = Instant::now();
    let child = cmd.spawn().expect("start the exporter");
    let served = Served {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    while get(&served.base, "/readyz").0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(600), "not ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let ready = t0.elapsed().as_secs_f64();
    (served, ready)
}

/// p50 and p99 of `n` sequential scrapes after 10 untimed, in ms.
fn scrapes(base: &str, n: usize) -> (f64, f64) {
    for _ in 0..10 {
        assert_eq!(get(base, "/metrics").0, 200);
    }
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(get(base, "/metrics").0, 200);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    (percentile(&ms, 0.5), percentile(&ms, 0.99))
}

/// Post `bodies` to the replicas at `bases`, `clients` clients per replica
/// taking the next body in turn; results/s until the last answer, and
/// until every posted run is counted (on PostgreSQL `db`: no mark left to
/// fold, see [`wait_counted`]).
fn ingest(
    bases: &[&str],
    clients: usize,
    bodies: Vec<String>,
    tests: usize,
    db: Option<&TestDatabase>,
) -> (f64, f64) {
    let n = bodies.len();
    let started = Instant::now();
    support::post_runs(bases, clients, Arc::new(bodies), TOKEN);
    let posted = started.elapsed().as_secs_f64();
    wait_counted(db);
    let counted = started.elapsed().as_secs_f64();
    ((n * tests) as f64 / posted, (n * tests) as f64 / counted)
}

/// Until the runs posted to PostgreSQL `db` are counted: its per-test
/// counters are folded after the run (`ci_slo_store_pg::fold`, by the
/// leader and by reads), so the posted runs are counted once no mark is
/// left (a database without the marks' table counts in the run's
/// transaction). Polled every 5 ms.
fn wait_counted(db: Option<&TestDatabase>) {
    let Some(db) = db else { return };
    let mut c = db.connect().unwrap();
    let marks: bool = c
        .query_one("SELECT to_regclass('unfolded_results') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    while marks
        && c.query_one("SELECT EXISTS (SELECT 1 FROM unfolded_results)", &[])
            .unwrap()
            .get::<_, bool>(0)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The figures of one engine.
#[derive(Default)]
struct Figures {
    load: f64,
    bytes: f64,
    ready: f64,
    p50: f64,
    p99: f64,
    one_client: f64,
    two_clients: f64,
    /// Until counted (PostgreSQL: folded), results/s.
    one_counted: f64,
    two_counted: f64,
}

/// Serve `engine`, measure readiness, scrapes and ingest; the next run
/// index to post is `*next` (advanced).
fn serving(
    label: &str,
    engine: &Engine,
    dir: &Path,
    f: &mut Figures,
    (tests, ingest_runs, n_scrapes): (usize, usize, usize),
    next: &mut usize,
    db: Option<&TestDatabase>,
) {
    let (served, ready) = serve(engine, dir);
    f.ready = ready;
    (f.p50, f.p99) = scrapes(&served.base, n_scrapes);
    let mut batch = |n: usize| -> Vec<String> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let first = *next;
        *next += n;
        (first..first + n)
            .map(|i| body(&new_run(i, tests, now_ms, first + n)))
            .collect()
    };
    (f.one_client, f.one_counted) = ingest(&[&served.base], 1, batch(ingest_runs), tests, db);
    (f.two_clients, f.two_counted) = ingest(&[&served.base], 2, batch(ingest_runs), tests, db);
    println!(
        "{label}: ready after {:.2} s; /metrics p50 {:.2} ms, p99 {:.2} ms; POST /api/v1/runs {:.0} results/s with 1 client, {:.0} with 2 ({:.0} and {:.0} until counted)",
        f.ready, f.p50, f.p99, f.one_client, f.two_clients, f.one_counted, f.two_counted
    );
}

/// With PG_SCALE_COMPARE_BIN: start to `/readyz` and the scrapes' p50 /
/// p99 of that binary ("other") and of this build's, alternately (other,
/// this, this, other) on the same loaded databases, each engine in turn;
/// nothing posted.
fn compare(other: &str, sqlite: &Engine, pg: &Engine, dir: &Path, n_scrapes: usize) {
    println!("\n== {other} (other) against {BIN} (this), start to /readyz and {n_scrapes} scrapes");
    println!(
        "| round, build (load) | SQLite ready / p50 / p99 | PostgreSQL ready / p50 / p99 | ready, p99 / SQLite |"
    );
    println!("|---|---|---|---|");
    for (round, (label, bin)) in [
        ("other", other),
        ("this", BIN),
        ("this", BIN),
        ("other", other),
    ]
    .into_iter()
    .enumerate()
    {
        let load = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string();
        let mut f = [(0.0, 0.0, 0.0); 2];
        for (i, engine) in [sqlite, pg].into_iter().enumerate() {
            let (served, ready) = serve_bin(bin, engine, dir);
            let (p50, p99) = scrapes(&served.base, n_scrapes);
            f[i] = (ready, p50, p99);
        }
        println!(
            "| {}, {label} ({load}) | {:.3} s / {:.2} / {:.2} ms | {:.3} s / {:.2} / {:.2} ms | {:.2}, {:.2} |",
            round + 1,
            f[0].0,
            f[0].1,
            f[0].2,
            f[1].0,
            f[1].1,
            f[1].2,
            f[1].0 / f[0].0,
            f[1].2 / f[0].2
        );
    }
}

/// With PG_SCALE_WAITS=1: what the database's busy sessions wait on while
/// `f` runs, sampled every 10 ms from `pg_stat_activity` (a wait on a
/// `Lock` is a session held up by another transaction; `transactionid` or
/// `tuple`: a row that transaction wrote), printed as the share of samples
/// per wait and statement.
fn sampling_waits<T>(db: &TestDatabase, label: &str, f: impl FnOnce() -> T) -> T {
    if !std::env::var("PG_SCALE_WAITS").is_ok_and(|v| v == "1") {
        return f();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut c = db.connect().unwrap();
    let name = db.name().to_string();
    let flag = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        let mut samples = 0usize;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            samples += 1;
            for r in c
                .query(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'on CPU'),
                            left(regexp_replace(query, '\\s+', ' ', 'g'), 70)
                     FROM pg_stat_activity
                     WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .unwrap()
            {
                let (wait, query): (String, String) = (r.get(0), r.get(1));
                *seen.entry(format!("{wait} | {query}")).or_default() += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (seen, samples)
    });
    let out = f();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, samples) = sampler.join().unwrap();
    let mut seen: Vec<_> = seen.into_iter().collect();
    seen.sort_by_key(|s| std::cmp::Reverse(s.1));
    println!("{label}: busy sessions in {samples} samples (share of samples: wait | statement):");
    for (what, n) in seen.iter().take(10) {
        println!(
            "  {:5.1} % {what}",
            100.0 * *n as f64 / samples.max(1) as f64
        );
    }
    out
}

/// Rows updated, of them HOT, and dead versions, of each per-test
/// counters' table, as `pg_stat_user_tables` counts them.
type Updates = Vec<(String, i64, i64, i64)>;

fn pg_update_counts(db: &TestDatabase) -> Updates {
    let mut c = db.connect().unwrap();
    // The statistics collector flushes at the end of a transaction, with
    // a delay of up to a second.
    std::thread::sleep(Duration::from_secs(2));
    c.query(
        "SELECT relname::text, n_tup_upd, n_tup_hot_upd, n_dead_tup FROM pg_stat_user_tables
         WHERE relname IN ('tests', 'test_days', 'test_commits', 'results') ORDER BY relname",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// What the updates since `before` (none: since the start) did to the
/// per-test counters' tables: rows updated, of them HOT (in the same page,
/// no new index entries), dead versions left for vacuum.
fn pg_updates(now: &Updates, before: Option<&Updates>) -> String {
    now.iter()
        .map(|(t, upd, hot, dead)| {
            let (upd0, hot0) = before
                .and_then(|b| b.iter().find(|r| &r.0 == t))
                .map_or((0, 0), |r| (r.1, r.2));
            let (upd, hot) = (upd - upd0, hot - hot0);
            format!(
                "{t} {upd} updated, {hot} HOT ({:.0} %), {dead} dead",
                100.0 * hot as f64 / (upd.max(1)) as f64
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// With `report` (a label and the runs posted), print the statements that
/// took the most server time since the last call, per posted run; reset
/// the counts.
fn top_statements(db: &TestDatabase, report: Option<(&str, usize)>) {
    let mut c = db.connect().unwrap();
    if c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .is_err()
    {
        return;
    }
    if let Some((label, runs)) = report {
        let rows = c
            .query(
                "SELECT s.calls, s.total_exec_time, s.rows, s.shared_blks_hit + s.shared_blks_read,
                        s.shared_blks_dirtied, s.wal_bytes::float8, s.toplevel,
                        left(regexp_replace(s.query, '\\s+', ' ', 'g'), 110)
                 FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                 WHERE d.datname = current_database()
                 ORDER BY s.total_exec_time DESC LIMIT 14",
                &[],
            )
            .unwrap();
        println!(
            "{label}: server time per posted run ({runs} runs), by statement (pg_stat_statements; nested: inside a function or trigger):"
        );
        println!(
            "| ms per run | calls per run | rows per run | blocks per run | dirtied per run | WAL kB per run | statement |\n|---:|---:|---:|---:|---:|---:|---|"
        );
        let per = |v: f64| v / runs as f64;
        for r in rows {
            let (calls, ms, n, blocks, dirtied, wal, top, q): (
                i64,
                f64,
                i64,
                i64,
                i64,
                f64,
                bool,
                String,
            ) = (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            );
            println!(
                "| {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {}`{}` |",
                per(ms),
                per(calls as f64),
                per(n as f64),
                per(blocks as f64),
                per(dirtied as f64),
                per(wal) / 1024.0,
                if top { "" } else { "nested: " },
                q.replace('|', "\\|")
            );
        }
    }
    c.batch_execute("SELECT pg_stat_statements_reset()")
        .unwrap();
}

/// The per-test tables' sizes with their indexes (MB), after the load.
fn pg_table_sizes(db: &TestDatabase) -> String {
    let mut c = db.connect().unwrap();
    c.query(
        "SELECT relname::text, pg_relation_size(oid), pg_total_relation_size(oid) FROM pg_class
         WHERE relname IN ('tests', 'test_days', 'test_commits', 'results') ORDER BY relname",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let (t, heap, total): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        format!(
            "{t} {:.1} MB ({:.1} MB with its indexes)",
            heap as f64 / 1e6,
            total as f64 / 1e6
        )
    })
    .collect::<Vec<_>>()
    .join("; ")
}

fn pg_bytes(db: &TestDatabase) -> (i64, i64) {
    let mut c = db.connect().unwrap();
    c.batch_execute("VACUUM (ANALYZE)").unwrap();
    let database: i64 = c
        .query_one("SELECT pg_database_size(current_database())", &[])
        .unwrap()
        .get(0);
    let tables: i64 = c
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm')",
            &[],
        )
        .unwrap()
        .get(0);
    (database, tables)
}

/// The largest tables (with their indexes and TOAST) in bytes per result.
fn pg_largest(db: &TestDatabase, stored: usize) -> String {
    let mut c = db.connect().unwrap();
    c.query(
        "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC LIMIT 6",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let (t, size): (String, i64) = (r.get(0), r.get(1));
        format!("{t} {:.1}", size as f64 / stored as f64)
    })
    .collect::<Vec<_>>()
    .join(", ")
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("pg_scale: run with `cargo bench --bench pg_scale`");
        return;
    }
    let tests = env_num("PG_SCALE_TESTS", 8000usize);
    let results = env_num("PG_SCALE_RESULTS", 10_000_000usize);
    let ingest_runs = env_num("PG_SCALE_INGEST_RUNS", 20usize);
    let n_scrapes = env_num("PG_SCALE_SCRAPES", 300usize);
    let variant = std::env::var("PG_SCALE_VARIANT_SQL").unwrap_or_default();
    let runs = (results / tests).max(1);
    let stored = runs * tests;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    println!(
        "machine: {} cores; {tests} tests × {runs} runs = {:.1} M results on each engine",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        stored as f64 / 1e6
    );
    let statements = std::env::var("PG_SCALE_STATEMENTS").is_ok_and(|v| v == "1");
    let tracking: &[(&str, &str)] = &[
        ("shared_preload_libraries", "pg_stat_statements"),
        ("pg_stat_statements.track", "all"),
        ("track_io_timing", "on"),
    ];
    let server =
        TestServer::start_with(if statements { tracking } else { &[] }).expect("start PostgreSQL");
    let version: String = server
        .admin_config()
        .connect(postgres::NoTls)
        .unwrap()
        .query_one("SHOW server_version", &[])
        .unwrap()
        .get(0);
    println!(
        "PostgreSQL {version} on 127.0.0.1:{} (its defaults: fsync on, synchronous_commit on, shared_buffers 128 MB), started in {:.1} s",
        server.port(),
        server.startup().as_secs_f64()
    );
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut sq = Figures::default();

    println!("\n== storing the history (batched ingest, {BATCH} runs a transaction)");
    let file = dir.join("history.sqlite");
    sq.load = load(
        "SQLite",
        &mut || {
            let store = Store::open(&file).unwrap();
            store.tune_for_bulk_load(64).unwrap();
            Box::new(store)
        },
        0,
        (tests, runs, now_ms),
    );
    Store::open(&file).unwrap().checkpoint().unwrap();
    let wal = file.with_extension("sqlite-wal");
    let sqlite_bytes = std::fs::metadata(&file).map_or(0, |m| m.len())
        + std::fs::metadata(&wal).map_or(0, |m| m.len());
    sq.bytes = sqlite_bytes as f64 / stored as f64;
    println!("SQLite: {:.0} results/s", sq.load);

    let empty = server.database("pg_scale_empty").unwrap();
    PgStore::open_config(&empty.config(), &empty.name(), &mut |_| {}).unwrap();
    let (empty_size, _) = pg_bytes(&empty);
    // The database as this build migrates it; with PG_SCALE_VARIANT_SQL
    // also one where that SQL ran after the migrations (e.g. a table
    // setting to try), loaded and served the same way in the same run.
    let mut variants = vec![("PostgreSQL", "", Figures::default())];
    if !variant.is_empty() {
        variants.push((
            "PostgreSQL + PG_SCALE_VARIANT_SQL",
            variant.as_str(),
            Figures::default(),
        ));
    }
    let mut databases = Vec::new();
    for (label, undo, f) in &mut variants {
        let db = server.database("pg_scale").unwrap();
        let mut store = PgStore::open_config(&db.config(), &db.name(), &mut |_| {}).unwrap();
        if !undo.is_empty() {
            store.client().batch_execute(undo).unwrap();
        }
        drop(store);
        // A new connection every 100 runs: a connection prepares its
        // statements once, and plans made on the first, empty tables stay.
        f.load = load(
            label,
            &mut || Box::new(PgStore::open_config(&db.config(), &db.name(), &mut |_| {}).unwrap()),
            100,
            (tests, runs, now_ms),
        );
        println!("{label}: {:.0} results/s", f.load);
        println!(
            "{label}: after the load: {}",
            pg_updates(&pg_update_counts(&db), None)
        );
        let (db_size, tables) = pg_bytes(&db);
        f.bytes = (db_size - empty_size) as f64 / stored as f64;
        println!(
            "{label}: {:.1} bytes per result (database {} MB less {} MB empty, after VACUUM), its tables with their indexes {:.1}",
            f.bytes,
            db_size / 1_000_000,
            empty_size / 1_000_000,
            tables as f64 / stored as f64
        );
        println!(
            "{label}: the largest tables, bytes per result: {}",
            pg_largest(&db, stored)
        );
        println!("{label}: {}", pg_table_sizes(&db));
        databases.push(db);
    }
    println!(
        "SQLite: {:.1} bytes per result ({} MB after a checkpoint)",
        sq.bytes,
        sqlite_bytes / 1_000_000,
    );

    if let Ok(other) = std::env::var("PG_SCALE_COMPARE_BIN") {
        let pg = Engine::Postgres(server.url(databases[0].name()).replacen(
            '@',
            &format!(":{}@", server.password()),
            1,
        ));
        compare(&other, &Engine::Sqlite(file.clone()), &pg, dir, n_scrapes);
        return;
    }
    println!(
        "\n== serving: /readyz, {n_scrapes} scrapes, POST /api/v1/runs of {ingest_runs} runs × {tests} results"
    );
    let url = |db: &TestDatabase| {
        Engine::Postgres(server.url(db.name()).replacen(
            '@',
            &format!(":{}@", server.password()),
            1,
        ))
    };
    let shape = (tests, ingest_runs, n_scrapes);
    let mut next = runs;
    serving(
        "SQLite",
        &Engine::Sqlite(file.clone()),
        dir,
        &mut sq,
        shape,
        &mut next,
        None,
    );
    let mut next_pg = runs;
    for ((label, _, f), db) in variants.iter_mut().zip(&databases) {
        next_pg = runs;
        if statements {
            top_statements(db, None);
        }
        let before = pg_update_counts(db);
        serving(label, &url(db), dir, f, shape, &mut next_pg, Some(db));
        println!(
            "{label}: while serving: {}",
            pg_updates(&pg_update_counts(db), Some(&before))
        );
        if statements {
            top_statements(db, Some((label, 2 * ingest_runs)));
        }
    }
    // A second replica on the same database: each replica takes as many
    // clients as the one replica did.
    let pg_engine = url(&databases[0]);
    let (a, _) = serve(&pg_engine, dir);
    let (b, _) = serve(&pg_engine, dir);
    // Runs `first..first + n` posted as `contexts` contexts of the
    // repository, in turn (one: the history's own).
    let bodies = |first: usize, n: usize, contexts: usize| -> Vec<String> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        (first..first + n)
            .map(|i| {
                let mut run = new_run(i, tests, now_ms, first + n);
                if contexts > 1 {
                    run.context = format!("unit-{}", i % contexts);
                }
                body(&run)
            })
            .collect()
    };
    // 1 replica × 2 clients, then 2 replicas × 2 clients, with the runs
    // over `contexts` contexts: results/s of each. With several contexts
    // (a suite split into jobs, or several teams' suites): the runs of one
    // context are counted one after the other under their lock, so only
    // runs of different contexts can go on at once on two replicas. Each
    // new context's first run (which creates its tests) is posted first,
    // not timed.
    let db = &databases[0];
    let mut replicas = |contexts: usize| -> (f64, f64) {
        let label = if contexts > 1 { ", spread" } else { "" };
        if contexts > 1 {
            ingest(
                &[&a.base],
                1,
                bodies(next_pg, contexts, contexts),
                tests,
                Some(db),
            );
            next_pg += contexts;
        }
        let one = sampling_waits(db, &format!("1 replica{label}"), || {
            ingest(
                &[&a.base],
                2,
                bodies(next_pg, ingest_runs, contexts),
                tests,
                Some(db),
            )
            .1
        });
        next_pg += ingest_runs;
        let two = sampling_waits(db, &format!("2 replicas{label}"), || {
            ingest(
                &[&a.base, &b.base],
                2,
                bodies(next_pg, 2 * ingest_runs, contexts),
                tests,
                Some(db),
            )
            .1
        });
        next_pg += 2 * ingest_runs;
        (one, two)
    };
    let (one_replica, two_replicas) = replicas(1);
    let contexts = env_num("PG_SCALE_REPLICA_CONTEXTS", 4usize);
    let spread = (contexts > 1).then(|| replicas(contexts));
    drop((a, b));

    let mut head = String::from("| figure | SQLite |");
    let mut rule = String::from("|---|---:|");
    for (label, _, _) in &variants {
        head += &format!(" {label} | / SQLite |");
        rule += "---:|---:|";
    }
    println!("\n{head}\n{rule}");
    let row = |what: &str, get: &dyn Fn(&Figures) -> f64, unit: &str, digits: usize| {
        let s = get(&sq);
        let mut line = format!("| {what} | {s:.digits$}{unit} |");
        for (_, _, f) in &variants {
            let p = get(f);
            line += &format!(" {p:.digits$}{unit} | {:.2} |", p / s);
        }
        println!("{line}");
    };
    row("batched load of the history, results/s", &|f| f.load, "", 0);
    row("bytes per stored result", &|f| f.bytes, "", 1);
    row("start to `/readyz` 200", &|f| f.ready, " s", 2);
    row("`/metrics` p50", &|f| f.p50, " ms", 2);
    row("`/metrics` p99", &|f| f.p99, " ms", 2);
    type Get<'a> = &'a dyn Fn(&Figures) -> f64;
    let posts: [(&str, Get<'_>); 4] = [
        ("1 client", &|f| f.one_client),
        ("2 clients", &|f| f.two_clients),
        ("1 client, until counted", &|f| f.one_counted),
        ("2 clients, until counted", &|f| f.two_counted),
    ];
    for (clients, get) in posts {
        row(
            &format!("`POST /api/v1/runs`, {clients}, results/s"),
            get,
            "",
            0,
        );
    }
    println!(
        "PostgreSQL, a second replica on the same database: 2 replicas × 2 clients {two_replicas:.0} results/s against 1 replica × 2 clients {one_replica:.0} (same run): × {:.2}",
        two_replicas / one_replica
    );
    if let Some((one, two)) = spread {
        println!(
            "PostgreSQL, the same with the runs spread over {contexts} contexts: 2 replicas × 2 clients {two:.0} results/s against 1 replica × 2 clients {one:.0} (same run): × {:.2}",
            two / one
        );
    }
}

//! `import cockpit` at scale (issue 12): a generated Cockpit test-results.db
//! of 1 M runs and ~3 M test rows (benches/support/cockpit.rs: the real
//! schema, project and context names, revisions, thousands of test names),
//! imported by the release binary, next to the floor of the same run: the
//! same rows copied into a fresh SQLite file with plain prepared INSERTs in
//! large transactions (the same journal settings as the store: WAL,
//! synchronous=NORMAL).
//!
//! Prints: import seconds (and the ratio to the floor; targets ≤ 3× and
//! ≤ 60 s), peak RSS (target ≤ 200 MB), result size / source size (target
//! ≤ 1.5; with what the result's bytes are spent on), and a second import of
//! the same file, which must change nothing.
//!
//! Knobs: COCKPIT_RUNS (default 1 000 000), COCKPIT_TESTS_PER_RUN (mean,
//! default 2.9, which gives ~3 M rows with the flaky tries), COCKPIT_DIR
//! (keep the files there; the source is reused when it exists).

#[path = "support/mod.rs"]
mod support;

use rusqlite::{Connection, params_from_iter};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;
use support::cockpit;

fn size(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// The floor: every row of both tables into a fresh file, plain prepared
/// INSERTs, 100 000 rows per transaction.
fn floor(source: &Path, dest: &Path) -> f64 {
    let _ = std::fs::remove_file(dest);
    let started = Instant::now();
    let src = Connection::open(source).unwrap();
    let dst = Connection::open(dest).unwrap();
    dst.pragma_update(None, "journal_mode", "WAL").unwrap();
    dst.pragma_update(None, "synchronous", "NORMAL").unwrap();
    dst.execute_batch(cockpit::SCHEMA).unwrap();
    for (table, columns) in [("TestRuns", 11), ("Tests", 5)] {
        let mut read = src
            .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
            .unwrap();
        let marks = vec!["?"; columns].join(", ");
        let mut rows = read.query([]).unwrap();
        dst.execute_batch("BEGIN").unwrap();
        let mut n = 0;
        {
            let mut write = dst
                .prepare(&format!("INSERT INTO {table} VALUES ({marks})"))
                .unwrap();
            while let Some(r) = rows.next().unwrap() {
                let values: Vec<rusqlite::types::Value> =
                    (0..columns).map(|i| r.get(i).unwrap()).collect();
                write.execute(params_from_iter(values)).unwrap();
                n += 1;
                if n % 100_000 == 0 {
                    dst.execute_batch("COMMIT; BEGIN").unwrap();
                }
            }
        }
        dst.execute_batch("COMMIT").unwrap();
    }
    dst.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    started.elapsed().as_secs_f64()
}

/// `import cockpit` by the release binary: (seconds, peak RSS in KiB, its JSON summary).
fn import(source: &Path, db: &Path, log: &Path) -> (f64, u64, serde_json::Value) {
    let rss = db.with_extension("rss");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss)
        .arg(support::BIN)
        .args(["import", "cockpit"])
        .arg(source)
        .arg("--db")
        .arg(db)
        .env("CI_SLO_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .output()
        .expect("/usr/bin/time and the release binary run");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "import failed: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    let kb = std::fs::read_to_string(&rss)
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (secs, kb, serde_json::from_slice(&out.stdout).unwrap())
}

/// Bytes per table and index of a database (SQLite's dbstat), largest first.
fn breakdown(db: &Path) -> Vec<(String, u64)> {
    let conn = Connection::open(db).unwrap();
    let Ok(mut stmt) = conn.prepare(
        "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY sum(pgsize) DESC LIMIT 12",
    ) else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn main() {
    let runs: usize = support::env_num("COCKPIT_RUNS", 1_000_000);
    let per_run: f64 = support::env_num("COCKPIT_TESTS_PER_RUN", 2.9);
    let keep = std::env::var("COCKPIT_DIR").ok();
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep
        .as_deref()
        .map(Path::new)
        .unwrap_or(tmp.path())
        .to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join(format!("test-results-{runs}.db"));
    if !source.exists() {
        let started = Instant::now();
        let g = cockpit::generate(&source, runs, per_run, 12);
        eprintln!(
            "generated {} runs ({} pending, {} of a revision also tested in a branch project), {} test rows, {} revisions in {:.0} s",
            g.runs,
            g.pending,
            g.overlapping_runs,
            g.tests,
            g.revisions,
            started.elapsed().as_secs_f64()
        );
    }
    let conn = Connection::open(&source).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let (rows, tests, names) = (
        count("SELECT count(*) FROM TestRuns"),
        count("SELECT count(*) FROM Tests"),
        count("SELECT count(DISTINCT testname) FROM Tests"),
    );
    drop(conn);
    let source_bytes = size(&source);
    println!(
        "source: {rows} runs, {tests} test rows, {names} distinct test names, {:.0} MB",
        mb(source_bytes)
    );

    let floor_s = floor(&source, &dir.join("floor.db"));
    println!(
        "floor (plain prepared INSERTs of the same rows, 100 k per transaction): {floor_s:.1} s"
    );
    let _ = std::fs::remove_file(dir.join("floor.db"));

    let db = dir.join("imported.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let log = dir.join("import.log");
    let (secs, rss_kb, stats) = import(&source, &db, &log);
    let progress_lines = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("runs ("))
        .count();
    let result_bytes = size(&db);
    println!(
        "import cockpit: {secs:.1} s = {:.2}x the floor (targets <= 3x and <= 60 s); {:.0} runs/s; {progress_lines} progress lines",
        secs / floor_s,
        rows as f64 / secs
    );
    println!(
        "peak RSS: {:.0} MB (target <= 200 MB)",
        rss_kb as f64 / 1024.0
    );
    println!(
        "result: {:.0} MB = {:.2}x the source (target <= 1.5x)",
        mb(result_bytes),
        result_bytes as f64 / source_bytes as f64
    );
    println!("summary: {stats}");
    let parts = breakdown(&db);
    if !parts.is_empty() {
        let shown: Vec<String> = parts
            .iter()
            .map(|(name, bytes)| format!("{name} {:.0} MB", mb(*bytes)))
            .collect();
        println!("result by table/index: {}", shown.join(", "));
    }

    let (again_s, again_kb, again) = import(&source, &db, &log);
    println!(
        "second import of the same file: {again_s:.1} s, peak RSS {:.0} MB; created {}, updated {}, conflicting {}, changes decided {} (all must be 0)",
        again_kb as f64 / 1024.0,
        again["runs_created"],
        again["runs_updated"],
        again["runs_conflicting"],
        again["changes_decided"]
    );
}

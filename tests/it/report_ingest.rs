//! `report` and `ingest` agree on the real binary: every test `report` counts
//! in a file is a test `ingest` stores, with the same outcomes; a test class
//! that failed to load (Ant's suite-level `<error>`) is one errored test; a
//! name a report repeats after a pass (Jest `test.each`) is kept as separate
//! tests (`name [2]`, ...).

use crate::common;

use std::path::Path;

fn fixture(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/junit")
        .join(rel)
        .display()
        .to_string()
}

/// `report FILE` as JSON.
fn report(file: &str, dir: &Path) -> serde_json::Value {
    let out = common::run(&["report", file], dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `ingest --junit FILE` into `db`; the stored tests as (outcome, count).
fn ingest(file: &str, db: &Path, dir: &Path, commit: &str) -> Vec<(String, i64)> {
    let out = common::run(
        &[
            "ingest",
            "--db",
            db.to_str().unwrap(),
            "--repository",
            "acme/shop",
            "--context",
            "junit",
            "--commit",
            commit,
            "--junit",
            file,
        ],
        dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = answer["id"].as_i64().unwrap();
    let mut stored: Vec<(String, i64)> = common::sql::rows(
        db,
        &format!("SELECT outcome, count(*) FROM test_results WHERE run_id = {id} GROUP BY outcome"),
    )
    .into_iter()
    .map(|r| (r.text(0), r.int(1)))
    .collect();
    stored.sort();
    stored
}

fn counted(report: &serde_json::Value) -> Vec<(String, i64)> {
    ["errored", "failed", "passed", "skipped"]
        .iter()
        .filter_map(|k| {
            let n = report[*k].as_i64().unwrap_or(0);
            (n > 0).then(|| (k.to_string(), n))
        })
        .collect()
}

#[test]
fn report_and_ingest_count_the_same_tests_in_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("r.db");
    for (i, (file, tests)) in [
        // Ant: a test class that failed to load → one errored test.
        ("ant/TEST-com.example.InventoryTest.xml", 1),
        ("ant/TEST-com.example.CartTest.xml", 2),
        // Jest with `test.each` titles repeated after passes (dorny/test-reporter
        // counts 4239 too).
        ("dorny/external/jest/jest-test-results.xml", 4239),
        // TestNG data providers (Apache Pulsar) repeated after passes (808 for dorny).
        ("dorny/external/java/pulsar-test-report.xml", 808),
    ]
    .into_iter()
    .enumerate()
    {
        let path = fixture(file);
        let r = report(&path, d);
        assert_eq!(r["tests"], tests, "{file}: {r}");
        let stored = ingest(&path, &db, d, &format!("c{i}"));
        assert_eq!(stored, counted(&r), "{file}: report says {r}");
        let total: i64 = stored.iter().map(|(_, n)| n).sum();
        assert_eq!(Some(total), r["tests"].as_i64(), "{file}");
    }
    // The repeated titles are stored under their own names.
    let renamed = common::sql::count(
        &db,
        "SELECT count(*) FROM test_results t JOIN runs r ON r.id = t.run_id
         WHERE r.commit_sha = 'c2' AND t.name LIKE '% [2]'",
    );
    assert!(renamed > 0, "no `name [2]` among the Jest tests");
    let errored = common::sql::text(
        &db,
        "SELECT t.name FROM test_results t JOIN runs r ON r.id = t.run_id
         WHERE r.commit_sha = 'c0' AND t.outcome = 'errored'",
    );
    assert_eq!(errored.as_deref(), Some("com.example.InventoryTest"));
}

//! `classify` and `report`: the commands users tune their rules with. Their
//! JSON output (one object per input file) is a contract.

use crate::common;

use common::run;
use serde_json::Value;

fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect()
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

#[test]
fn classify_prints_class_evidence_and_1_based_line_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("oom.log"),
        "\x1b[32mStarting tests\x1b[0m\nrunning suite 7\n[ 812.5] Out of memory: Killed process 4242 (java)\nmake: *** [all] Error 137\n",
    )
    .unwrap();
    std::fs::write(d.join("clean.log"), "all good\n42 tests passed\n").unwrap();
    let out = run(&["classify", "oom.log", "clean.log"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = lines(&out.stdout);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["file"], "oom.log");
    assert_eq!(v[0]["class"], "oom");
    assert_eq!(v[0]["category"], "infra");
    assert_eq!(v[0]["line"], 3);
    assert_eq!(
        v[0]["evidence"],
        "[ 812.5] Out of memory: Killed process 4242 (java)"
    );
    assert_eq!(
        v[0]["context"][0], "Starting tests",
        "context lines are clean of ANSI"
    );
    assert_eq!(v[0]["fingerprint"].as_str().unwrap().len(), 16);
    assert_eq!(v[1]["class"], Value::Null);
    assert_eq!(v[1]["line"], Value::Null);
}

#[test]
fn classify_uses_the_configured_rules_and_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("c.toml"),
        "[[classify.rules]]\nname = \"flaky-postgres\"\npattern = '(?i)could not connect to server: .*port 5432'\ncategory = \"infra\"\npriority = 200\n",
    )
    .unwrap();
    std::fs::write(d.join("pg.log"), "setup\npsql: could not connect to server: Connection refused on port 5432\nError: exit 2\n").unwrap();
    let out = run(
        &["classify", "--config", "c.toml", "pg.log", "missing.log"],
        d,
    );
    assert!(!out.status.success(), "a missing file fails the command");
    let v = lines(&out.stdout);
    assert_eq!(
        (v[0]["class"].as_str(), v[0]["line"].as_u64()),
        (Some("flaky-postgres"), Some(2))
    );
    assert_eq!(v[1]["file"], "missing.log");
    assert!(v[1]["error"].as_str().is_some());
}

#[test]
fn report_summarises_tap_and_junit_and_goes_on_past_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("cockpit.tap"),
        "1..3\nok 1 test/check-a TestA.testOne\nnot ok 2 test/check-b TestB.testTwo # RETRY 1 (test affected tests 3 times)\nok 2 test/check-b TestB.testTwo\nok 3 test/check-c # SKIP Known issue #1234\n",
    )
    .unwrap();
    let jest = format!("{FIXTURES}/junit/dorny/external/jest/jest-test-results.xml");
    let corrupt = format!(
        "{FIXTURES}/junit/mikepenz/corrupt-junit/e2e-tests/corrupt/target/sf-reports/TEST-test.CorruptTest.xml"
    );
    let out = run(&["report", "cockpit.tap", &corrupt, &jest], d);
    assert!(
        !out.status.success(),
        "a corrupt report fails the command at the end"
    );
    let v = lines(&out.stdout);
    assert_eq!(v.len(), 3, "every file gets its line");
    let want_tap = serde_json::json!({"file": "cockpit.tap", "format": "tap", "tests": 3, "passed": 2, "failed": 0,
        "errored": 0, "skipped": 1, "retried": 1, "flaky": 1});
    assert_eq!(v[0], want_tap);
    assert!(v[1]["error"].as_str().unwrap().contains("line"), "{}", v[1]);
    assert_eq!(v[2]["format"], "junit");
    assert_eq!(
        v[2]["tests"], 4239,
        "dorny's expected total for external/jest/jest-test-results.xml"
    );
    assert_eq!(v[2]["skipped"], 30);
}

/// `ci-slo-exporter report *.xml | head -1`: the reader closes the pipe after
/// the first line; the command stops quietly instead of panicking in
/// `println!`. The output is far larger than a pipe's buffer, so the command
/// is still writing when the pipe closes.
#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let tap = dir.path().join("one.tap");
    std::fs::write(&tap, "1..1\nok 1 test/check-a\n").unwrap();
    let tap = tap.display().to_string();
    let files = vec![tap.as_str(); 5_000];
    let mut child = Command::new(common::BIN)
        .arg("report")
        .args(&files)
        .env("CI_SLO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: the pipe is closed with ~600 kB unwritten.
    assert!(first.contains("\"format\":\"tap\""), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "a closed stdout must not panic: {stderr}"
    );
    assert!(
        out.status.success(),
        "a closed stdout is a quiet, successful end ({:?}): {stderr}",
        out.status
    );
}

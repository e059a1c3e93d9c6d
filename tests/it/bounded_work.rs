//! Bounded work per request: per-run limits answer 413 naming the limit, a
//! 200 k-test run's page stays small (failures first, links to the rest), the
//! failures window is capped, and small ingests keep answering while large
//! ones queue (their latency is measured here and asserted loosely; the
//! precise figures are in `cargo bench --bench hardening`).

use crate::common;

use common::{Exporter, TOKEN};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn start(dir: &std::path::Path, server: &str) -> Exporter {
    let c = dir.join("c.toml");
    std::fs::write(&c, format!("[server]\n{server}")).unwrap();
    Exporter::start(
        dir,
        &dir.join("s.db"),
        &["--config", c.to_str().unwrap()],
        &[("CI_SLO_API_TOKEN", TOKEN)],
    )
}

fn big_run(commit: &str, tests: usize, failed_every: usize) -> Vec<u8> {
    let now = chrono::Utc::now();
    let tests: Vec<Value> = (0..tests)
        .map(|i| {
            if i % failed_every == failed_every - 1 {
                json!({"name": format!("suite::case_{i:06}"), "outcome": "failed", "message": format!("assertion {i} failed")})
            } else {
                json!({"name": format!("suite::case_{i:06}"), "outcome": "passed"})
            }
        })
        .collect();
    json!({"repository": "acme/big", "context": "unit", "commit": commit, "tests": tests,
           "finished_at": now.to_rfc3339()})
    .to_string()
    .into_bytes()
}

#[test]
fn per_run_limits_answer_413_with_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(
        dir.path(),
        "max_tests_per_run = 10\nmax_report_bytes_per_run = 2048\nmax_log_bytes_per_run = 1024\n",
    );
    let base = json!({"repository": "a/b", "context": "c", "commit": "x", "state": "failure"});
    let with = |k: &str, v: Value| {
        let mut r = base.clone();
        r[k] = v;
        r.to_string()
    };
    let tests: Vec<Value> = (0..11)
        .map(|i| json!({"name": format!("t{i}"), "outcome": "passed"}))
        .collect();
    let tap: String = (1..=12).map(|i| format!("ok {i} - t{i}\n")).collect();
    for (body, limit, key) in [
        (
            with("tests", json!(tests)),
            "10",
            "server.max_tests_per_run",
        ),
        (
            with("tap", json!("x".repeat(3000))),
            "2048",
            "server.max_report_bytes_per_run",
        ),
        (
            with("log", json!("y".repeat(2000))),
            "1024",
            "server.max_log_bytes_per_run",
        ),
        // Tests that come from a report count too.
        (
            with("tap", json!(format!("1..12\n{tap}"))),
            "10",
            "server.max_tests_per_run",
        ),
    ] {
        let (status, answer) = e.post("/api/v1/runs", Some(TOKEN), body.as_bytes());
        assert_eq!(status, 413, "{answer}");
        let msg = answer["error"].as_str().unwrap();
        assert!(msg.contains(limit) && msg.contains(key), "{msg}");
    }
    let (status, answer) = e.post(
        "/api/v1/runs",
        Some(TOKEN),
        with("tests", json!(tests[..10])).as_bytes(),
    );
    assert_eq!(status, 201, "{answer}");
    // The failures window is capped.
    let (status, text) = e.get("/api/v1/failures?window=400d");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("web.max_failures_window"), "{text}");
    e.stop();
}

#[test]
fn a_200k_test_run_page_stays_small_and_lists_failures_first() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(
        dir.path(),
        "max_body_bytes = 33554432\nmax_body_bytes_in_flight = 67108864\nmax_tests_per_run = 250000\n",
    );
    let body = big_run("c0", 200_000, 1000);
    let started = Instant::now();
    let (status, answer) = e.post("/api/v1/runs", Some(TOKEN), &body);
    assert_eq!(status, 201, "{answer}");
    eprintln!(
        "200 k tests ({} bytes) ingested in {:?}",
        body.len(),
        started.elapsed()
    );
    let id = answer["id"].as_i64().unwrap();
    let (status, page) = e.get(&format!("/runs/{id}"));
    assert_eq!(status, 200);
    assert!(page.len() < 2_000_000, "the page is {} bytes", page.len());
    // The 200 failed tests come first, then passed ones, then a link on.
    let first_failed = page
        .find("suite::case_000999")
        .expect("a failed test listed");
    let first_passed = page
        .find("suite::case_000000")
        .expect("passed tests follow");
    assert!(first_failed < first_passed);
    assert!(
        page.contains("of 200000, failures first"),
        "a count of all tests"
    );
    assert!(
        page.contains(&format!("/runs/{id}?tests_offset=500")),
        "a link to the rest"
    );
    let (status, next) = e.get(&format!("/runs/{id}?tests_offset=500"));
    assert_eq!(status, 200);
    assert!(next.len() < 2_000_000 && next.contains("Tests 501–1000 of 200000"));
    // The JSON answer is paged too.
    let (status, text) = e.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["tests_total"], 200_000);
    assert_eq!(v["tests"].as_array().unwrap().len(), 10_000);
    let (_, text) = e.get(&format!("/api/v1/runs/{id}?tests_offset=199990"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["tests"].as_array().unwrap().len(), 10);
    assert_eq!(v["tests"][9]["name"], "suite::case_199999");
    e.stop();
}

#[test]
fn small_ingests_keep_answering_while_large_ones_queue() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(
        dir.path(),
        "max_body_bytes = 33554432\nmax_body_bytes_in_flight = 134217728\nmax_tests_per_run = 250000\n",
    );
    let base = e.base.clone();
    let large: Vec<_> = (0..3)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let body = big_run(&format!("large-{i}"), 60_000, 100);
                let started = Instant::now();
                let mut r = common::agent()
                    .post(&format!("{base}/api/v1/runs"))
                    .header("Authorization", &format!("Bearer {TOKEN}"))
                    .header("Content-Type", "application/json")
                    .send(&body[..])
                    .unwrap();
                assert_eq!(
                    r.status(),
                    201,
                    "{}",
                    r.body_mut().read_to_string().unwrap()
                );
                started.elapsed()
            })
        })
        .collect();
    // A stream of small ingests while the large ones are written.
    std::thread::sleep(Duration::from_millis(300));
    let mut small = Vec::new();
    let now = chrono::Utc::now().to_rfc3339();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !large.iter().all(|h| h.is_finished()) && Instant::now() < deadline {
        let run = json!({"repository": "acme/small", "context": "lint", "commit": format!("s{}", small.len()),
                         "state": "success", "finished_at": now});
        let started = Instant::now();
        let (status, answer) = e.post("/api/v1/runs", Some(TOKEN), run.to_string().as_bytes());
        assert_eq!(status, 201, "{answer}");
        small.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    let large: Vec<Duration> = large.into_iter().map(|h| h.join().unwrap()).collect();
    small.sort();
    let worst = *small.last().unwrap();
    let median = small[small.len() / 2];
    eprintln!(
        "large ingests took {large:?}; {} small ingests meanwhile: median {median:?}, worst {worst:?}",
        small.len()
    );
    assert!(
        small.len() >= 3,
        "the large ingests were done before the small ones started"
    );
    // Loose: on 2 shared cores in a debug build. A small write waits at most
    // for the one large write already running, never for the queue of them.
    let longest_large = large.iter().max().unwrap();
    assert!(
        worst < *longest_large,
        "a small ingest ({worst:?}) waited as long as the large ones ({longest_large:?})"
    );
    e.stop();
}

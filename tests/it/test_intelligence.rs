//! Issue 14 on the real binary: per-test statistics kept at ingest. A
//! generated history with known healthy, flaky and broken tests (a
//! 1-in-2,000 flake, tests seen on a single commit or in a single run) ends
//! up with exactly those verdicts on /metrics soon after the last run is
//! ingested, and the same after a restart (the counters are stored, not
//! rebuilt from the results), with /healthz and /readyz answering.

use crate::common;

use common::{Exporter, TOKEN};
use serde_json::{Value, json};

const RUNS: usize = 2000;

fn ago(minutes: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339()
}

/// Run `i` of the history: two runs per commit, tests by their known nature.
fn run(i: usize) -> Value {
    let mut tests = Vec::new();
    let mut add = |name: &str, passed: bool| {
        tests.push(json!({"name": name, "outcome": if passed { "passed" } else { "failed" }}));
    };
    for h in 0..6 {
        add(&format!("healthy_{h}"), true);
    }
    add("broken_always", false);
    add("broken_since_start", false);
    // Fails once in 2,000 runs; the other run of that commit passed.
    add("flaky_one_in_2000", i != 1234);
    // Fails in the first run of every fifth commit, passes in the second.
    add("flaky_often", !i.is_multiple_of(10));
    // Fails on whole commits (both runs), passes on the others: not flaky.
    add("fails_by_commit", !(i / 2).is_multiple_of(7));
    if i < 2 {
        // Seen only on the first commit: a failure, then a pass.
        add("flaky_single_commit", i == 1);
    }
    if i == 5 {
        // One failing run: not yet broken.
        add("seen_once", false);
    }
    let minutes = (RUNS - i) as i64;
    json!({
        "repository": "acme/big",
        "context": "unit",
        "commit": format!("{:040x}", i / 2),
        "external_id": format!("job-{i}"),
        "trigger": "push",
        "queued_at": ago(minutes + 3),
        "started_at": ago(minutes + 2),
        "finished_at": ago(minutes),
        "tests": tests,
    })
}

fn verdicts(text: &str) -> (f64, f64, f64, f64) {
    let v = |verdict: &str| {
        common::sample(
            text,
            &format!("ci_tests{{repository=\"acme/big\",verdict=\"{verdict}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    (v("healthy"), v("flaky"), v("broken"), v("new"))
}

/// The tests with a positive flake ratio on /metrics, in exposition order
/// (worst first, docs/metrics.md).
fn flaky_names(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("ci_test_flake_ratio{"))
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0))
        .filter_map(|l| {
            let at = l.find("test=\"")? + 6;
            Some(l[at..at + l[at..].find('"')?].to_string())
        })
        .collect()
}

#[test]
fn known_verdicts_appear_after_ingest_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let e = Exporter::start(dir.path(), &db, &[], &[("CI_SLO_API_TOKEN", TOKEN)]);
    for i in 0..RUNS - 1 {
        let (status, body) = e.post("/api/v1/runs", Some(TOKEN), run(i).to_string().as_bytes());
        assert_eq!(status, 201, "run {i}: {body}");
    }
    // Before the last run, the 1-in-2,000 flake's commit has only its failure.
    let (status, body) = e.post(
        "/api/v1/runs",
        Some(TOKEN),
        run(RUNS - 1).to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    // Ranked by how often they fail a run (1 in 10, 1 in 2,000); the one
    // with two runs (fewer than tests.min_runs) last.
    let want_flaky = vec![
        "flaky_often".to_string(),
        "flaky_one_in_2000".to_string(),
        "flaky_single_commit".to_string(),
    ];
    // healthy: 6 always passing, fails_by_commit; new: seen_once. The failure
    // ratio of the rare flake is its one failure over all its runs: the
    // last run is counted (the snapshot follows the writes).
    let rare = "ci_test_failure_ratio{repository=\"acme/big\",context=\"unit\",test=\"flaky_one_in_2000\"}";
    let text = e.wait_for("the verdicts of the whole history", |t| {
        verdicts(t) == (7.0, 3.0, 2.0, 1.0) && common::sample(t, rare) == Some(1.0 / RUNS as f64)
    });
    assert_eq!(flaky_names(&text), want_flaky);
    let flake = |test: &str| {
        common::sample(
            &text,
            &format!(
                "ci_test_flake_ratio{{repository=\"acme/big\",context=\"unit\",test=\"{test}\"}}"
            ),
        )
    };
    // Per run: flaky failures / runs.
    assert_eq!(flake("flaky_often"), Some(200.0 / RUNS as f64));
    assert_eq!(flake("flaky_single_commit"), Some(0.5));
    assert_eq!(flake("broken_always"), Some(0.0));
    assert_eq!((e.get("/healthz").0, e.get("/readyz").0), (200, 200));

    // The test index: exactly the flaky set, in the documented order.
    let (status, body) = e.get("/api/v1/tests?repository=acme/big&verdict=flaky");
    assert_eq!(status, 200, "{body}");
    let index: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = index["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["test"].as_str().unwrap())
        .collect();
    assert_eq!(names, want_flaky);
    assert_eq!(index["total"], 3);
    assert!(index["next_cursor"].is_null());
    let rare = &index["tests"][1];
    assert_eq!(rare["verdict"], "flaky");
    assert_eq!(rare["runs"], RUNS);
    assert_eq!(rare["failures"], 1);
    assert!(rare["first_seen_flaky"].is_string(), "{rare}");
    // Its last failure links to the run that failed (job-1234).
    let run_url = rare["last_failure"]["url"].as_str().unwrap();
    let (status, run) = e.get(&format!("/api/v1{run_url}"));
    assert_eq!(status, 200, "{run}");
    assert!(run.contains("\"job-1234\""), "{run}");
    // The history strip of the broken test: its latest runs, all failed.
    let (_, broken) = e.get("/api/v1/tests?repository=acme/big&verdict=broken&sort=name");
    let broken: Value = serde_json::from_str(&broken).unwrap();
    assert_eq!(broken["tests"][0]["test"], "broken_always");
    let strip = broken["tests"][0]["history"].as_str().unwrap();
    assert!(
        !strip.is_empty() && strip.chars().all(|c| c == 'f'),
        "{strip}"
    );

    // Pages of 5 go through all 13 tests once, in a stable order.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, body) = e.get(&format!(
            "/api/v1/tests?repository=acme/big&verdict=all&limit=5{cursor}"
        ));
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        for t in page["tests"].as_array().unwrap() {
            seen.push(t["test"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 13, "{seen:?}");
    assert_eq!(&seen[..3], &want_flaky[..]);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 13);
    assert_eq!(e.get("/api/v1/tests?verdict=sometimes").0, 400);
    assert_eq!(e.get("/api/v1/tests?sort=random").0, 400);
    e.stop();

    // After a restart the same verdicts, from the stored counters.
    let e = Exporter::start(dir.path(), &db, &[], &[("CI_SLO_API_TOKEN", TOKEN)]);
    assert_eq!(e.get("/healthz").0, 200);
    let text = e.scrape(false);
    assert_eq!(verdicts(&text), (7.0, 3.0, 2.0, 1.0));
    assert_eq!(flaky_names(&text), want_flaky);
    assert!(
        e.log().contains("ready: first metrics snapshot built"),
        "{}",
        e.log()
    );
    e.stop();
}

/// Run `i` of 40 of a suite whose executions look fine (95.8% passed) while
/// one test passes half the time: 18 tests always pass, `ninety` passes 36
/// of its 40 runs (exactly the 90% objective: meeting), `coin` every other
/// run (breaching), and `rare` fails its 10 runs (fewer than
/// `slo.test_min_runs`, 20: not evaluated). A skipped execution is no run.
fn suite_run(i: usize) -> Value {
    let mut tests: Vec<Value> = (0..18)
        .map(|t| json!({"name": format!("ok_{t}"), "outcome": "passed"}))
        .collect();
    let outcome = |passed: bool| if passed { "passed" } else { "failed" };
    tests.push(json!({"name": "ninety", "outcome": outcome(i % 10 != 3)}));
    tests.push(json!({"name": "coin", "outcome": outcome(i.is_multiple_of(2))}));
    if i < 10 {
        tests.push(json!({"name": "rare", "outcome": "failed"}));
    }
    tests.push(json!({"name": "ok_0_skipped", "outcome": "skipped"}));
    let minutes = (60 - i) as i64;
    json!({
        "repository": "acme/slo",
        "context": "unit",
        "commit": format!("{:040x}", i + 1),
        "external_id": format!("suite-{i}"),
        "trigger": "push",
        "queued_at": ago(minutes + 3),
        "started_at": ago(minutes + 2),
        "finished_at": ago(minutes),
        "tests": tests,
    })
}

fn near(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() < 1e-9)
}

#[test]
fn test_success_is_judged_per_test_not_per_execution() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let e = Exporter::start(dir.path(), &db, &[], &[("CI_SLO_API_TOKEN", TOKEN)]);
    for i in 0..40 {
        let (status, body) = e.post(
            "/api/v1/runs",
            Some(TOKEN),
            suite_run(i).to_string().as_bytes(),
        );
        assert_eq!(status, 201, "run {i}: {body}");
    }
    // Executions: 18 × 40 + 36 + 20 passed of 810 (95.8%, above the objective).
    let exec = |result: &str| {
        format!(
            "ci_slo_events_total{{slo=\"test_executions\",repository=\"acme/slo\",result=\"{result}\"}}"
        )
    };
    let tests = |window: &str, result: &str| {
        format!(
            "ci_slo_tests{{slo=\"test_success\",repository=\"acme/slo\",window=\"{window}\",result=\"{result}\"}}"
        )
    };
    let text = e.wait_for("the per-test SLI of the whole history", |t| {
        common::sample(t, &exec("good")) == Some(776.0)
            && common::sample(t, &tests("28d", "meeting")) == Some(19.0)
    });
    assert_eq!(common::sample(&text, &exec("bad")), Some(34.0));
    assert!(near(
        common::sample(
            &text,
            "ci_slo_sli_ratio{slo=\"test_executions\",window=\"1d\"}"
        ),
        776.0 / 810.0
    ));
    // Per test: 20 evaluated (rare is not), 19 meeting, coin breaching, in
    // every window (all runs are of the last hour).
    for window in ["1d", "3d", "28d"] {
        assert_eq!(
            common::sample(&text, &tests(window, "meeting")),
            Some(19.0),
            "{window}"
        );
        assert_eq!(
            common::sample(&text, &tests(window, "breaching")),
            Some(1.0),
            "{window}"
        );
        let labels = format!("{{slo=\"test_success\",window=\"{window}\"}}");
        assert_eq!(
            common::sample(&text, &format!("ci_slo_window_events{labels}")),
            Some(20.0)
        );
        assert!(near(
            common::sample(&text, &format!("ci_slo_sli_ratio{labels}")),
            0.95
        ));
        // (1 / 20) / (1 - 0.9): half the budget.
        assert!(near(
            common::sample(&text, &format!("ci_slo_burn_rate{labels}")),
            0.5
        ));
    }
    assert!(near(
        common::sample(
            &text,
            "ci_slo_error_budget_remaining_ratio{slo=\"test_success\"}"
        ),
        0.5
    ));
    // No execution counts under test_success, and no window shorter than a day.
    assert!(!text.contains("ci_slo_events_total{slo=\"test_success\""));
    assert_eq!(
        common::sample(
            &text,
            "ci_slo_burn_rate{slo=\"test_success\",window=\"1h\"}"
        ),
        None
    );
    let (ok, promtool) = common::promtool_check(&text);
    assert!(ok, "{promtool}");

    // The API lists the breaching test with its ratio, runs and page.
    let (status, body) = e.get("/api/v1/slos");
    assert_eq!(status, 200, "{body}");
    let slos: Value = serde_json::from_str(&body).unwrap();
    let row = slos["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slo"] == "test_success")
        .unwrap()
        .clone();
    assert_eq!(
        (row["good"].clone(), row["total"].clone()),
        (json!(19), json!(20)),
        "{row}"
    );
    assert_eq!(row["unit"], "tests");
    assert!(near(row["budget_remaining"].as_f64(), 0.5), "{row}");
    assert_eq!(row["status"], "ok");
    let breaching = row["breaching_tests"].as_array().unwrap();
    assert_eq!(breaching.len(), 1, "{row}");
    let coin = &breaching[0];
    assert_eq!(coin["test"], "coin");
    assert_eq!(coin["repository"], "acme/slo");
    assert_eq!(
        (coin["runs"].clone(), coin["passes"].clone()),
        (json!(40), json!(20))
    );
    assert_eq!(coin["success_ratio"], 0.5);
    assert_eq!(coin["url"], "/tests/acme%2Fslo/unit/coin");
    assert!(
        near(row["executions"]["sli"].as_f64(), 776.0 / 810.0),
        "{row}"
    );
    // Other SLOs carry no breaching tests.
    let queue = slos["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slo"] == "queue_time")
        .unwrap();
    assert!(queue.get("breaching_tests").is_none(), "{queue}");
    let (status, _) = e.get(coin["url"].as_str().unwrap());
    assert_eq!(status, 200, "the breaching test's page");

    // The SLO page lists it, linked to its page; rare is not there.
    let (status, page) = e.get("/slos/test_success");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Breaching tests"), "{page}");
    assert!(
        page.contains("href=\"/tests/acme%2Fslo/unit/coin\""),
        "{page}"
    );
    assert!(page.contains("20 / 40"), "{page}");
    assert!(!page.contains(">rare<"), "{page}");
    // Its events page lists the failed executions (coin's 20, ninety's 4, rare's 10).
    let (status, events) = e.get("/slos/test_success/events");
    assert_eq!(status, 200, "{events}");
    assert!(
        events.contains("Failed test executions of")
            && events.contains("34 failed test executions"),
        "{events}"
    );
    let (_, detail) = e.get("/api/v1/slos/test_success");
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["repositories"][0]["repository"], "acme/slo");
    assert_eq!(detail["repositories"][0]["bad"], 1);
    e.stop();

    // With slo.test_min_runs = 10, rare (10 failed runs) is evaluated too:
    // 2 of 21 tests breach, worst (0%) first.
    std::fs::write(dir.path().join("c.toml"), "[slo]\ntest_min_runs = 10\n").unwrap();
    let e = Exporter::start(
        dir.path(),
        &db,
        &["--config", "c.toml"],
        &[("CI_SLO_API_TOKEN", TOKEN)],
    );
    let text = e.scrape(false);
    assert_eq!(common::sample(&text, &tests("28d", "breaching")), Some(2.0));
    assert_eq!(common::sample(&text, &tests("28d", "meeting")), Some(19.0));
    let (_, body) = e.get("/api/v1/slos");
    let slos: Value = serde_json::from_str(&body).unwrap();
    let row = slos["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slo"] == "test_success")
        .unwrap();
    let names: Vec<&str> = row["breaching_tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["test"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rare", "coin"]);
    e.stop();

    // A test_min_runs of 0 is refused with a clear error.
    std::fs::write(dir.path().join("bad.toml"), "[slo]\ntest_min_runs = 0\n").unwrap();
    let err = Exporter::try_start(
        dir.path(),
        &db,
        &["--config", "bad.toml"],
        &[("CI_SLO_API_TOKEN", TOKEN)],
    )
    .err()
    .expect("refused");
    assert!(err.contains("slo.test_min_runs"), "{err}");
}

/// A database as version 9 left it (before the compact per-test storage),
/// holding `runs` runs of `tests` results each.
fn version_9_database(path: &std::path::Path, runs: usize, tests: usize) {
    use ci_slo_exporter::store::schema::MIGRATIONS;
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    for sql in &MIGRATIONS[..9] {
        tx.execute_batch(sql).unwrap();
    }
    tx.execute(
        "INSERT INTO repositories (id, forge, path) VALUES (1, 'generic', 'acme/old')",
        [],
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    {
        let mut run = tx
            .prepare(
                "INSERT INTO runs (id, repository_id, external_id, context, commit_sha, attempt, trigger, state,
                     queued_at, started_at, finished_at, source, content_hash, created_at, updated_at,
                     queue_counted, final_counted)
                 VALUES (?1, 1, ?2, 'unit', ?3, 0, 'push', 'success', ?4, ?4, ?4, 'ingest', 'h', ?4, ?4, 1, 1)",
            )
            .unwrap();
        let mut result = tx
            .prepare(
                "INSERT INTO test_results (run_id, name, outcome, duration_seconds, retries, retry_reasons)
                 VALUES (?1, ?2, 'passed', 0.5, 0, '[]')",
            )
            .unwrap();
        let names: Vec<String> = (0..tests).map(|t| format!("suite.test_{t}")).collect();
        for r in 1..=runs {
            let at = now - (runs - r) as i64 * 60_000;
            run.execute(rusqlite::params![
                r as i64,
                format!("job-{r}"),
                format!("c{r}"),
                at
            ])
            .unwrap();
            for name in &names {
                result.execute(rusqlite::params![r as i64, name]).unwrap();
            }
        }
    }
    tx.pragma_update(None, "user_version", 9).unwrap();
    tx.commit().unwrap();
}

/// Issue 14 step 2: while a large migration runs the server answers:
/// /healthz 200 and /readyz 503 saying it is migrating, then 200; nothing of
/// the old database is lost.
#[test]
fn readyz_says_migrating_while_a_large_database_migrates_and_healthz_answers_throughout() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let made = std::time::Instant::now();
    version_9_database(&db, 100, 1000);
    eprintln!(
        "version 9 database made in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("serve.log");
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(
        std::process::Command::new(common::BIN)
            .args(["serve", "--db"])
            .arg(&db)
            .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
            .env_remove("CI_SLO_API_TOKEN")
            .env("CI_SLO_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let get = |path: &str| -> Option<(u16, String)> {
        let mut r = common::agent().get(&format!("{base}{path}")).call().ok()?;
        Some((
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut not_ready: Vec<String> = Vec::new();
    let mut health_seen = false;
    loop {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "exporter exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(std::time::Instant::now() < deadline, "not ready in 120 s");
        match get("/readyz") {
            None => assert!(!health_seen, "the port closed after answering"),
            Some((200, _)) => break,
            Some((status, body)) => {
                assert_eq!(status, 503, "{body}");
                not_ready.push(body);
                let (status, body) = get("/healthz").expect("/healthz answers while preparing");
                assert_eq!((status, body.as_str()), (200, "ok\n"));
                health_seen = true;
                // Other paths: 503 with the same reason, not a hang.
                let (status, body) = get("/api/v1/runs/1").expect("answers while preparing");
                assert!(status == 503 || status == 200, "{status} {body}");
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        not_ready
            .iter()
            .any(|b| b.starts_with("not ready: migrating the database from version 9 to ")),
        "{not_ready:?} {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("preparing: migrating the database"),
        "{logged}"
    );
    // Every run and result came through the migration.
    let (status, body) = get("/api/v1/tests?repository=acme/old&verdict=all&limit=5").unwrap();
    assert_eq!(status, 200, "{body}");
    let index: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(index["total"], 1000, "{body}");
    let (status, run) = get("/api/v1/runs/100").unwrap();
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        serde_json::from_str::<Value>(&run).unwrap()["tests"]
            .as_array()
            .map(Vec::len),
        Some(1000),
        "{run}"
    );
}

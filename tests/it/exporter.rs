//! The real binary on a temporary database: ingest via CLI and HTTP, scrape
//! exact values, restart, replay, and check the output with real parsers.

use crate::common;

use chrono::{Duration, SecondsFormat, Utc};
use common::{Exporter, TOKEN, persisted_lines, run, sample};
use std::path::Path;

fn ts(d: Duration) -> String {
    (Utc::now() - d).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn ingest(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["ingest"];
    all.extend_from_slice(args);
    let out = run(&all, dir);
    assert!(
        out.status.success(),
        "ingest {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ingest prints JSON")
}

const SETTLE_NOW: &str = "[slo]\nmerge_settle = \"0s\"\n";

#[test]
fn runs_ingested_by_the_cli_are_served_with_exact_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("ci.db").display().to_string();
    let config = write(d, "c.toml", SETTLE_NOW);
    let tap = write(
        d,
        "r.tap",
        "TAP version 13\n1..3\nok 1 - login\nnot ok 2 - bond\nok 3 - timers # SKIP no timers\n",
    );
    let (q0, s0, f0) = (
        ts(Duration::minutes(50)),
        ts(Duration::minutes(49)),
        ts(Duration::minutes(45)),
    ); // 60 s queue, 240 s run
    let (q1, s1, f1) = (
        ts(Duration::minutes(40)),
        ts(Duration::minutes(30)),
        ts(Duration::minutes(20)),
    ); // 600 s queue
    let base = [
        "--config",
        &config,
        "--db",
        &db,
        "--repository",
        "acme/shop",
        "--trigger",
        "pull_request",
        "--commit",
        "c0ffee",
        "--change",
        "5",
    ];

    let first = [
        &base[..],
        &[
            "--context",
            "build",
            "--queued-at",
            &q0,
            "--started-at",
            &s0,
            "--finished-at",
            &f0,
            "--tap",
            &tap,
        ],
    ]
    .concat();
    let out = ingest(d, &first);
    assert_eq!(out["status"], "created");
    assert_eq!(out["id"], 1);
    assert_eq!(
        ingest(d, &first)["status"],
        "unchanged",
        "a replay changes nothing"
    );

    let retry = [
        &base[..],
        &[
            "--context",
            "build",
            "--attempt",
            "1",
            "--state",
            "success",
            "--queued-at",
            &q1,
            "--started-at",
            &s1,
            "--finished-at",
            &f1,
        ],
    ]
    .concat();
    ingest(d, &retry);
    let merged = ts(Duration::minutes(10));
    let other = [
        &base[..],
        &[
            "--context",
            "lint",
            "--state",
            "success",
            "--queued-at",
            &q0,
            "--started-at",
            &s0,
            "--finished-at",
            &f0,
            "--merged-at",
            &merged,
        ],
    ]
    .concat();
    ingest(d, &other);

    let e = Exporter::start(d, Path::new(&db), &["--config", &config], &[]);
    let text = e.scrape(false);
    let series = |s: &str| sample(&text, s);
    let l = "repository=\"acme/shop\"";
    assert_eq!(
        series(&format!(
            "ci_runs_total{{{l},context=\"build\",trigger=\"pull_request\",state=\"failure\",attempt=\"first\"}}"
        )),
        Some(1.0),
        "the TAP failure made the run a failure:\n{text}"
    );
    assert_eq!(
        series(&format!(
            "ci_runs_total{{{l},context=\"build\",trigger=\"pull_request\",state=\"success\",attempt=\"retry\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        series(&format!(
            "ci_runs_total{{{l},context=\"lint\",trigger=\"pull_request\",state=\"success\",attempt=\"first\"}}"
        )),
        Some(1.0)
    );
    let q = format!(
        "ci_run_queue_duration_seconds_bucket{{{l},context=\"build\",trigger=\"pull_request\""
    );
    assert_eq!(series(&format!("{q},le=\"60.0\"}}")), Some(1.0));
    assert_eq!(series(&format!("{q},le=\"300.0\"}}")), Some(1.0));
    assert_eq!(series(&format!("{q},le=\"600.0\"}}")), Some(2.0));
    assert_eq!(
        series(&format!(
            "ci_run_queue_duration_seconds_sum{{{l},context=\"build\",trigger=\"pull_request\"}}"
        )),
        Some(660.0)
    );
    assert_eq!(
        series(&format!(
            "ci_run_duration_seconds_sum{{{l},context=\"build\",trigger=\"pull_request\",state=\"failure\"}}"
        )),
        Some(240.0)
    );
    assert_eq!(
        series(&format!(
            "ci_merged_changes_total{{{l},outcome=\"green_after_one_retry\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        series(&format!(
            "ci_change_retries_to_green_bucket{{{l},le=\"1.0\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        series(&format!(
            "ci_change_retries_to_green_bucket{{{l},le=\"0.0\"}}"
        )),
        Some(0.0)
    );
    assert_eq!(
        series(&format!(
            "ci_slo_events_total{{slo=\"first_attempt_green\",{l},result=\"bad\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        series(&format!(
            "ci_slo_events_total{{slo=\"green_within_one_retry\",{l},result=\"good\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        series(&format!(
            "ci_slo_events_total{{slo=\"queue_time\",{l},result=\"bad\"}}"
        )),
        Some(1.0),
        "600 s > 300 s"
    );
    assert_eq!(
        series(&format!(
            "ci_slo_events_total{{slo=\"queue_time\",{l},result=\"good\"}}"
        )),
        Some(2.0)
    );
    assert_eq!(
        series(&format!(
            "ci_slo_events_total{{slo=\"test_executions\",{l},result=\"bad\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        series(&format!(
            "ci_slo_events_total{{slo=\"test_executions\",{l},result=\"good\"}}"
        )),
        Some(1.0),
        "skips are not events"
    );
    assert_eq!(
        series("ci_slo_sli_ratio{slo=\"queue_time\",window=\"1h\"}"),
        Some(2.0 / 3.0)
    );
    assert_eq!(
        series("ci_slo_sli_ratio{slo=\"first_attempt_green\",window=\"1h\"}"),
        Some(0.0)
    );
    let burn = series("ci_slo_burn_rate{slo=\"queue_time\",window=\"1h\"}").unwrap();
    assert!((burn - (1.0 / 3.0) / 0.05).abs() < 1e-9, "burn {burn}");
    assert_eq!(
        series("ci_slo_objective_ratio{slo=\"first_attempt_green\"}"),
        Some(0.75)
    );
    assert_eq!(series("ci_exporter_demo_data"), Some(0.0));
    assert_eq!(series("ci_exporter_stored_runs"), Some(3.0));

    let (status, body) = e.get("/api/v1/runs/1");
    assert_eq!(status, 200);
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["state"], "failure");
    assert_eq!(run["queue_seconds"], 60.0);
    assert_eq!(run["tests"].as_array().unwrap().len(), 3);
    assert_eq!(run["change"]["outcome"], "green_after_one_retry");
    assert_eq!(run["reports"][0]["format"], "tap");
}

fn api_run(commit: &str, context: &str, state: &str, queue_minutes: i64) -> serde_json::Value {
    serde_json::json!({
        "repository": "acme/api",
        "context": context,
        "commit": commit,
        "trigger": "push",
        "state": state,
        "queued_at": ts(Duration::minutes(30)),
        "started_at": ts(Duration::minutes(30 - queue_minutes)),
        "finished_at": ts(Duration::minutes(2)),
        "url": "https://ci.example.com/build/1",
        "tests": [{"name": "t1", "outcome": "passed", "duration_seconds": 1.5}],
    })
}

#[test]
fn the_ingest_api_authenticates_validates_stores_once_and_answers_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("api.db");
    let config = write(d, "c.toml", "[server]\nmax_body_bytes = 65536\n");
    let e = Exporter::start(
        d,
        &db,
        &["--config", &config],
        &[("CI_SLO_API_TOKEN", TOKEN)],
    );
    let body = serde_json::to_vec(&api_run("abc", "unit", "success", 1)).unwrap();

    let (status, reply) = e.post("/api/v1/runs", None, &body);
    assert_eq!(status, 401, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("Bearer"));
    let (status, _) = e.post("/api/v1/runs", Some("wrong"), &body);
    assert_eq!(status, 401);
    let (status, reply) = e.post("/api/v1/runs", Some(TOKEN), b"{\"repository\": ");
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().starts_with("invalid run"),
        "{reply}"
    );
    let (status, reply) = e.post(
        "/api/v1/runs",
        Some(TOKEN),
        br#"{"repository":"a/b","context":"c","commit":"x","state":"sucess"}"#,
    );
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("sucess"),
        "{reply}"
    );
    let (status, reply) = e.post(
        "/api/v1/runs",
        Some(TOKEN),
        br#"{"repository":"a/b","context":"","commit":"x","state":"success"}"#,
    );
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("context"),
        "{reply}"
    );
    let big = vec![b' '; 70_000];
    let (status, _) = e.post("/api/v1/runs", Some(TOKEN), &big);
    assert_eq!(status, 413);

    let (status, reply) = e.post("/api/v1/runs", Some(TOKEN), &body);
    assert_eq!(status, 201, "{reply}");
    let id = reply["id"].as_i64().unwrap();
    // Acknowledged means committed: another connection sees it right away.
    let stored = common::sql::count(&db, &format!("SELECT count(*) FROM runs WHERE id = {id}"));
    assert_eq!(stored, 1);
    let (status, reply) = e.post("/api/v1/runs", Some(TOKEN), &body);
    assert_eq!(
        (status, reply["id"].as_i64(), reply["status"].as_str()),
        (200, Some(id), Some("unchanged"))
    );

    let text = e.wait_for("the run in ci_runs_total", |t| {
        t.contains("repository=\"acme/api\"")
    });
    let runs = "ci_runs_total{repository=\"acme/api\",context=\"unit\",trigger=\"push\",state=\"success\",attempt=\"first\"}";
    assert_eq!(sample(&text, runs), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "ci_exporter_ingested_runs_total{source=\"api\",result=\"created\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "ci_exporter_ingested_runs_total{source=\"api\",result=\"unchanged\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "ci_exporter_ingested_runs_total{source=\"api\",result=\"unauthorized\"}"
        ),
        Some(2.0)
    );

    let (status, body) = e.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            view["repository"].as_str(),
            view["context"].as_str(),
            view["state"].as_str()
        ),
        (Some("acme/api"), Some("unit"), Some("success"))
    );
    assert_eq!(view["queue_seconds"], 60.0);
    assert_eq!(e.get("/api/v1/runs/999999").0, 404);
    assert_eq!(e.get("/api/v1/runs/abc").0, 400);

    // Package versions are read from the log.
    let mut with_log = api_run("ghi", "deps", "success", 1);
    with_log["log"] = serde_json::Value::String(
        "Collecting numpy==2.1.0\nSuccessfully installed numpy-2.1.0 idna-3.10\n".into(),
    );
    let (status, reply) = e.post(
        "/api/v1/runs",
        Some(TOKEN),
        &serde_json::to_vec(&with_log).unwrap(),
    );
    assert_eq!(status, 201, "{reply}");
    let (_, body) = e.get(&format!("/api/v1/runs/{}", reply["id"]));
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        view["dependencies"],
        serde_json::json!({"idna": "3.10", "numpy": "2.1.0"})
    );

    // A corrupt report is skipped with a warning; the run is stored.
    let mut with_bad_report = api_run("def", "unit", "failure", 1);
    with_bad_report["junit"] = serde_json::Value::String("<testsuite><testcase name=\"x\">".into());
    let (status, reply) = e.post(
        "/api/v1/runs",
        Some(TOKEN),
        &serde_json::to_vec(&with_bad_report).unwrap(),
    );
    assert_eq!(status, 201, "{reply}");
    assert!(
        reply["warnings"][0]
            .as_str()
            .unwrap()
            .contains("report skipped"),
        "{reply}"
    );
}

#[test]
fn a_restart_neither_resets_nor_jumps_counters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("r.db");
    let env = [("CI_SLO_API_TOKEN", TOKEN)];
    let e = Exporter::start(d, &db, &[], &env);
    let bodies: Vec<Vec<u8>> = ["success", "failure", "success"]
        .iter()
        .enumerate()
        .map(|(i, state)| {
            serde_json::to_vec(&api_run(&format!("c{i}"), "unit", state, 10)).unwrap()
        })
        .collect();
    for body in &bodies {
        assert_eq!(e.post("/api/v1/runs", Some(TOKEN), body).0, 201);
    }
    let before = e.wait_for("three runs", |t| {
        sample(
            t,
            "ci_slo_events_total{slo=\"queue_time\",repository=\"acme/api\",result=\"bad\"}",
        ) == Some(3.0)
    });
    e.stop();
    let e = Exporter::start(d, &db, &[], &env);
    let after = e.scrape(false);
    assert_eq!(persisted_lines(&before), persisted_lines(&after));
    assert!(
        persisted_lines(&after).len() > 20,
        "the comparison covers the histograms too"
    );
    // Replaying the same runs after the restart changes nothing either.
    for body in &bodies {
        assert_eq!(e.post("/api/v1/runs", Some(TOKEN), body).0, 200);
    }
    assert_eq!(persisted_lines(&e.scrape(false)), persisted_lines(&before));
}

#[test]
fn demo_output_passes_promtool_and_the_openmetrics_reference_parser() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = Exporter::start(d, &d.join("demo.db"), &["--demo"], &[]);

    let text = e.scrape(false);
    let (ok, lint) = common::promtool_check(&text);
    assert!(
        ok && lint.trim().is_empty(),
        "promtool check metrics on the text format:\n{lint}"
    );

    // promtool reads only the 0.0.4 text format (it cannot parse exemplars), so
    // the OpenMetrics body goes through the reference OpenMetrics parser.
    let om = e.scrape(true);
    assert!(om.ends_with("# EOF\n"));
    let om_path = d.join("scrape.om");
    std::fs::write(&om_path, &om).unwrap();
    // Debian's python3 has the reference parser (python3-prometheus-client).
    let python = common::python3();
    let out = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/openmetrics_check.py"
        ))
        .arg(&om_path)
        .output()
        .expect("python3 runs");
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "OpenMetrics parser rejected the scrape:\n{report}"
    );
    let exemplars: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("exemplars "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        exemplars > 50,
        "histogram buckets carry exemplars: {report}"
    );

    // Every family the foundation promises carries demo values.
    for family in [
        "ci_run_queue_duration_seconds_bucket{",
        "ci_run_duration_seconds_bucket{",
        "ci_runs_total{",
        "ci_merged_changes_total{",
        "ci_change_retries_to_green_bucket{",
        "ci_slo_events_total{",
        "ci_slo_objective_ratio{",
        "ci_slo_sli_ratio{",
        "ci_slo_error_budget_remaining_ratio{",
        "ci_slo_burn_rate{",
        "ci_exporter_demo_data 1",
    ] {
        assert!(text.contains(family), "{family} has no sample on demo data");
    }
    for outcome in [
        "green_first_attempt",
        "green_after_one_retry",
        "green_after_more_retries",
        "merged_red",
    ] {
        assert!(
            text.contains(&format!("outcome=\"{outcome}\"")),
            "demo has no {outcome} change"
        );
    }

    // An exemplar's run id resolves through the API.
    let run_id = om
        .lines()
        .find_map(|l| l.split("# {run_id=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .expect("an exemplar");
    let (status, body) = e.get(&format!("/api/v1/runs/{run_id}"));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn demo_is_added_once_and_refused_on_a_database_with_real_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("demo.db");
    let e = Exporter::start(d, &db, &["--demo"], &[]);
    let runs = sample(&e.scrape(false), "ci_exporter_stored_runs").unwrap();
    let first = persisted_lines(&e.scrape(false));
    assert!(runs > 500.0, "a realistic history: {runs} runs");
    e.stop();
    let e = Exporter::start(d, &db, &["--demo"], &[]);
    assert_eq!(
        sample(&e.scrape(false), "ci_exporter_stored_runs"),
        Some(runs)
    );
    assert_eq!(persisted_lines(&e.scrape(false)), first);
    e.stop();

    let real = d.join("real.db");
    ingest(
        d,
        &[
            "--db",
            real.to_str().unwrap(),
            "--repository",
            "a/b",
            "--context",
            "c",
            "--commit",
            "x",
            "--state",
            "success",
        ],
    );
    let err = Exporter::try_start(d, &real, &["--demo"], &[])
        .err()
        .expect("refused");
    assert!(err.contains("already holds real CI data"), "{err}");
}

#[test]
fn an_invalid_config_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = write(d, "bad.toml", "[slo.objectives]\nrun_time = 95\n");
    let out = run(&["--config", &bad, "serve"], d);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("slo.objectives.run_time") && stderr.contains("between 0 and 1"),
        "{stderr}"
    );
    let typo = write(d, "typo.toml", "[metrics]\nrefresh = \"5s\"\n");
    let out = run(&["serve", "--config", &typo], d);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refresh"),
        "unknown keys are named"
    );
}

#[test]
fn print_config_shows_settings_and_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret_file = write(d, "gh", "ghp_supersecretvalue\n");
    let config = write(
        d,
        "c.toml",
        &format!("[secrets]\ngithub_token_file = \"{secret_file}\"\n"),
    );
    let out = std::process::Command::new(common::BIN)
        .args(["--config", &config, "--print-config"])
        .arg("serve")
        .env("CI_SLO_API_TOKEN", "api-secret-value-123")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("listen_address = \"127.0.0.1:9787\""),
        "{printed}"
    );
    assert!(
        printed.contains("api_token: set (***)") && printed.contains("github_token: set (***)")
    );
    assert!(!printed.contains("api-secret-value-123") && !printed.contains("ghp_supersecretvalue"));
}

#[test]
fn every_command_documents_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    let version = run(&["--version"], dir.path());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("ci-slo-exporter "));
    let serve = String::from_utf8_lossy(&run(&["serve", "--help"], dir.path()).stdout).to_string();
    for flag in [
        "--config",
        "--db",
        "--web.listen-address",
        "--demo",
        "--print-config",
    ] {
        assert!(serve.contains(flag), "serve --help lacks {flag}");
    }
    let ingest =
        String::from_utf8_lossy(&run(&["ingest", "--help"], dir.path()).stdout).to_string();
    for flag in [
        "--db",
        "--repository",
        "--context",
        "--commit",
        "--attempt",
        "--state",
        "--queued-at",
        "--started-at",
        "--finished-at",
        "--change",
        "--merged-at",
        "--tap",
        "--junit",
        "--json",
    ] {
        assert!(ingest.contains(flag), "ingest --help lacks {flag}");
    }
}

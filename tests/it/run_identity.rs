//! Issue 12 on the real binary: runs keep their identity (distinct external
//! ids are distinct runs), finished runs are immutable (409, nothing
//! changed), impossible times are refused with a 400 per reason, and events
//! that arrive late still move the live counters.

use crate::common;

use common::{Exporter, TOKEN};
use serde_json::{Value, json};
use std::path::Path;

const HOOK_TOKEN: &str = "gl-hook-token-77";

fn start(dir: &Path) -> Exporter {
    let config = dir.join("c.toml");
    // tests.refresh_interval short: the per-test page reads stored executions anyway.
    std::fs::write(&config, "[slo]\nmerge_settle = \"1s\"\n").unwrap();
    Exporter::start(
        dir,
        &dir.join("db.sqlite"),
        &["--config", config.to_str().unwrap()],
        &[
            ("CI_SLO_API_TOKEN", TOKEN),
            ("CI_SLO_GITLAB_WEBHOOK_TOKEN", HOOK_TOKEN),
        ],
    )
}

fn ago(minutes: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339()
}

/// The sum of a family's samples whose labels contain every `labels` pair.
fn total(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rejections(text: &str, reason: &str) -> f64 {
    total(
        text,
        "ci_exporter_data_quality_rejections_total",
        &[("reason", reason)],
    )
}

fn get_run(e: &Exporter, id: i64) -> Value {
    let (status, body) = e.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A finished nightly run of `acme/shop` on commit `c0ffee`, with one test.
fn nightly(external_id: &str, test_passed: bool, minutes_ago: i64) -> Value {
    json!({
        "repository": "acme/shop",
        "context": "nightly",
        "commit": "c0ffee",
        "external_id": external_id,
        "trigger": "schedule",
        "queued_at": ago(minutes_ago + 10),
        "started_at": ago(minutes_ago + 9),
        "finished_at": ago(minutes_ago),
        "tests": [
            {"name": "test_checkout", "outcome": if test_passed { "passed" } else { "failed" },
             "message": if test_passed { Value::Null } else { json!("AssertionError: cart is empty") }},
            {"name": "test_login", "outcome": "passed"}
        ]
    })
}

#[test]
fn three_runs_of_one_commit_with_distinct_external_ids_are_three_runs_and_the_test_is_flaky() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path());
    let mut ids = Vec::new();
    for (i, passed) in [true, false, true].into_iter().enumerate() {
        let body = nightly(&format!("nightly-{i}"), passed, 300 - 60 * i as i64);
        let (status, answer) = e.post(
            "/api/v1/runs",
            Some(TOKEN),
            &serde_json::to_vec(&body).unwrap(),
        );
        assert_eq!(
            (status, answer["status"].as_str()),
            (201, Some("created")),
            "{answer}"
        );
        ids.push(answer["id"].as_i64().unwrap());
    }
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3
    );
    let states: Vec<String> = ids
        .iter()
        .map(|id| get_run(&e, *id)["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["success", "failure", "success"]);
    for id in &ids {
        assert_eq!(get_run(&e, *id)["attempt"], 0, "a re-run is not a retry");
    }

    // The test passed and failed on one commit: flaky, from three executions.
    let (status, body) = e.get("/api/v1/tests/acme%2Fshop/nightly/test_checkout");
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["stats"]["executions"], 3, "{page}");
    assert_eq!(page["stats"]["failures"], 1);
    assert_eq!(page["stats"]["verdict"], "flaky");

    let text = e.wait_for("three runs counted", |t| {
        total(t, "ci_runs_total", &[("context", "nightly")]) == 3.0
    });
    assert_eq!(
        total(
            &text,
            "ci_runs_total",
            &[("context", "nightly"), ("attempt", "retry")]
        ),
        0.0
    );
}

#[test]
fn a_finished_run_sent_again_with_other_content_is_a_409_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path());
    let mut body = nightly("build-42", false, 30);
    body["trigger"] = json!("pull_request");
    let bytes = serde_json::to_vec(&body).unwrap();
    let (status, answer) = e.post("/api/v1/runs", Some(TOKEN), &bytes);
    assert_eq!(status, 201, "{answer}");
    let id = answer["id"].as_i64().unwrap();

    // An identical replay: 200, unchanged.
    let (status, answer) = e.post("/api/v1/runs", Some(TOKEN), &bytes);
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("unchanged"))
    );
    let before = get_run(&e, id);
    let counted = e.wait_for("the run counted", |t| {
        total(t, "ci_runs_total", &[("context", "nightly")]) == 1.0
    });

    // The rewrite: success while the failing test stays, the trigger
    // left out (other), the queue time erased.
    let mut rewrite = body.clone();
    rewrite["state"] = json!("success");
    rewrite.as_object_mut().unwrap().remove("trigger");
    rewrite.as_object_mut().unwrap().remove("queued_at");
    let (status, answer) = e.post(
        "/api/v1/runs",
        Some(TOKEN),
        &serde_json::to_vec(&rewrite).unwrap(),
    );
    assert_eq!(status, 409, "{answer}");
    let reason = answer["error"].as_str().unwrap();
    assert!(
        reason.contains("differs in: trigger, state, queued_at"),
        "{reason}"
    );
    assert!(reason.contains("new external_id"), "{reason}");
    assert_eq!(get_run(&e, id), before, "nothing changed");

    let text = e.wait_for("the conflict counted", |t| {
        rejections(t, "finished_run_changed") == 1.0
    });
    for family in ["ci_runs_total", "ci_slo_events_total"] {
        assert_eq!(
            total(&text, family, &[]),
            total(&counted, family, &[]),
            "{family} did not move"
        );
    }
    assert_eq!(
        total(
            &text,
            "ci_exporter_ingested_runs_total",
            &[("result", "conflict")]
        ),
        1.0
    );

    // The correction goes in under a new id.
    let mut correction = rewrite.clone();
    correction["external_id"] = json!("build-42-corrected");
    let (status, _) = e.post(
        "/api/v1/runs",
        Some(TOKEN),
        &serde_json::to_vec(&correction).unwrap(),
    );
    assert_eq!(status, 201);
}

#[test]
fn impossible_times_are_refused_with_a_400_per_reason_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path());
    let ten_years = (chrono::Utc::now() + chrono::Duration::days(3653)).to_rfc3339();
    let cases = [
        (
            "finish before start",
            json!({"queued_at": ago(30), "started_at": ago(20), "finished_at": ago(25)}),
            "finished_at",
            "negative_run_time",
        ),
        (
            "start before queue beyond the clock skew",
            json!({"queued_at": ago(20), "started_at": ago(30), "finished_at": ago(10)}),
            "before queued_at",
            "negative_queue_time",
        ),
        (
            "a run ten years ahead",
            json!({"queued_at": ago(1), "started_at": ago(1), "finished_at": ten_years}),
            "ingest.max_future_skew",
            "future_time",
        ),
    ];
    for (i, (name, times, says, reason)) in cases.iter().enumerate() {
        let mut body = json!({
            "repository": "acme/shop", "context": "unit", "commit": format!("bad{i}"),
            "external_id": format!("bad-{i}"), "state": "success"
        });
        for (k, v) in times.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = e.post(
            "/api/v1/runs",
            Some(TOKEN),
            &serde_json::to_vec(&body).unwrap(),
        );
        assert_eq!(status, 400, "{name}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{name}: {error}");
        e.wait_for(name, |t| rejections(t, reason) == 1.0);
    }
    // Nothing was stored.
    let (status, body) = e.get("/api/v1/runs/1");
    assert_eq!(status, 404, "{body}");

    // Two seconds of clock skew between queue and start is fine (no wait).
    let body = json!({
        "repository": "acme/shop", "context": "unit", "commit": "skew",
        "state": "success", "queued_at": ago(10),
        "started_at": (chrono::Utc::now() - chrono::Duration::seconds(602)).to_rfc3339(),
        "finished_at": ago(1)
    });
    let (status, answer) = e.post(
        "/api/v1/runs",
        Some(TOKEN),
        &serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        get_run(&e, answer["id"].as_i64().unwrap())["queue_seconds"],
        0.0
    );
}

#[test]
fn late_runs_from_the_api_and_a_webhook_move_the_live_counters() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path());
    // Three days late (e.g. store-tests writing at merge time).
    let late = json!({
        "repository": "acme/shop", "context": "integration", "commit": "1ate",
        "external_id": "late-1", "trigger": "push", "state": "failure",
        "queued_at": ago(3 * 1440 + 20), "started_at": ago(3 * 1440 + 15),
        "finished_at": ago(3 * 1440)
    });
    let (status, answer) = e.post(
        "/api/v1/runs",
        Some(TOKEN),
        &serde_json::to_vec(&late).unwrap(),
    );
    assert_eq!(status, 201, "{answer}");
    let text = e.wait_for("the late run counted", |t| {
        total(
            t,
            "ci_runs_total",
            &[("context", "integration"), ("state", "failure")],
        ) == 1.0
    });
    assert_eq!(total(&text, "ci_exporter_backdated_events_total", &[]), 0.0);

    // A GitLab job event from 2023 (the recorded payload), delivered now.
    let job = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gitlab/webhooks/job.json"),
    )
    .unwrap();
    let mut r = common::agent()
        .post(&format!("{}/webhooks/gitlab", e.base))
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", "Job Hook")
        .header("X-Gitlab-Token", HOOK_TOKEN)
        .send(&job[..])
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
    let text = e.wait_for("the late webhook counted", |t| {
        total(
            t,
            "ci_runs_total",
            &[("repository", "jsmithy2/release-tools-fake")],
        ) == 1.0
    });
    assert!(
        total(
            &text,
            "ci_run_duration_seconds_count",
            &[("repository", "jsmithy2/release-tools-fake")]
        ) == 1.0,
        "its run time too"
    );

    // A job from a runner whose clock is ten years ahead: the forge is not
    // told to retry; the run is stored without the impossible times.
    let mut future: Value = serde_json::from_slice(&job).unwrap();
    future["build_id"] = json!(3580121226_u64);
    future["build_started_at"] = json!("2036-01-01 10:00:00 UTC");
    future["build_finished_at"] = json!("2036-01-01 10:01:00 UTC");
    let mut r = common::agent()
        .post(&format!("{}/webhooks/gitlab", e.base))
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", "Job Hook")
        .header("X-Gitlab-Token", HOOK_TOKEN)
        .send(&serde_json::to_vec(&future).unwrap()[..])
        .unwrap();
    let answer: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(answer["status"], "accepted", "{answer}");
    let stored = get_run(&e, answer["runs"][0].as_i64().unwrap());
    assert_eq!(
        (
            &stored["started_at"],
            &stored["finished_at"],
            &stored["run_seconds"]
        ),
        (&Value::Null, &Value::Null, &Value::Null),
        "{stored}"
    );
    let text = e.wait_for("the future times counted", |t| {
        rejections(t, "future_time") == 1.0
    });
    assert_eq!(
        total(
            &text,
            "ci_runs_total",
            &[("repository", "jsmithy2/release-tools-fake")],
        ),
        2.0,
        "the run itself counts"
    );
}

#[test]
fn the_cli_refuses_impossible_times_and_a_changed_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("cli.db");
    let db = db.to_str().unwrap();
    let base = [
        "ingest",
        "--db",
        db,
        "--repository",
        "acme/shop",
        "--context",
        "unit",
        "--commit",
        "abc",
        "--external-id",
        "b-1",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run(&args, d)
    };
    let out = run(with(&[
        "--state",
        "success",
        "--started-at",
        "2026-11-01T10:00:00Z",
        "--finished-at",
        "2026-11-01T09:00:00Z",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("finished_at"), "{err}");

    let ok = with(&[
        "--state",
        "failure",
        "--started-at",
        "2026-11-01T10:00:00Z",
        "--finished-at",
        "2026-11-01T10:05:00Z",
    ]);
    assert!(run(ok.clone()).status.success());
    let again = run(ok);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("\"unchanged\""));
    let out = run(with(&[
        "--state",
        "success",
        "--started-at",
        "2026-11-01T10:00:00Z",
        "--finished-at",
        "2026-11-01T10:05:00Z",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("differs in: state"), "{err}");
}

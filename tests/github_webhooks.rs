//! `POST /webhooks/github` against the real binary, with the real payloads of
//! tests/fixtures/github (octokit/webhooks, MIT). Where a test needs a variation
//! (a merge, a Cockpit story, a job's earlier states), it derives it from a
//! real payload in code.

mod common;

use ci_slo_exporter::forge::github::webhook::sign;
use ci_slo_exporter::model::{Forge, RepositoryRef};
use ci_slo_exporter::store::Store;
use common::{Exporter, agent};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const SECRET: &str = "webhook-secret-3c9e";

fn fixture(path: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github/webhooks")
        .join(path);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn start(dir: &Path, secret: Option<&str>) -> Exporter {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[server]\nmax_body_bytes = 65536\n[slo]\nmerge_settle = \"1s\"\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let db = dir.join("db.sqlite");
    let env: Vec<(&str, &str)> = secret
        .map(|s| vec![("CI_SLO_GITHUB_WEBHOOK_SECRET", s)])
        .unwrap_or_default();
    Exporter::start(dir, &db, &["--config", &config], &env)
}

/// POST a delivery; `signature` None = no header, Some("") = sign with SECRET.
fn deliver(
    e: &Exporter,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<&str>,
) -> (u16, Value) {
    let mut req = agent()
        .post(&format!("{}/webhooks/github", e.base))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery);
    let sig;
    match signature {
        None => {}
        Some("") => {
            sig = sign(SECRET.as_bytes(), body);
            req = req.header("X-Hub-Signature-256", &sig);
        }
        Some(s) => req = req.header("X-Hub-Signature-256", s),
    }
    let mut r = req.send(body).expect("POST");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn send(e: &Exporter, event: &str, delivery: &str, body: &Value) -> (u16, Value) {
    deliver(e, event, delivery, body.to_string().as_bytes(), Some(""))
}

fn run(e: &Exporter, id: &Value) -> Value {
    let (status, body) = e.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn run_count(e: &Exporter) -> i64 {
    Store::open(&e.db).unwrap().run_count().unwrap()
}

#[test]
fn the_webhook_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path(), Some(SECRET));
    let job = fixture("workflow_job/completed.failure.with-organization.payload.json");
    let body = job.to_string();

    let (s, b) = deliver(&e, "workflow_job", "d-1", body.as_bytes(), None);
    assert_eq!(
        (s, b["error"].as_str().unwrap()),
        (401, "missing X-Hub-Signature-256 header")
    );
    let wrong = sign(b"not-the-secret", body.as_bytes());
    let (s, b) = deliver(&e, "workflow_job", "d-1", body.as_bytes(), Some(&wrong));
    assert_eq!(s, 401);
    assert!(
        b["error"].as_str().unwrap().contains("does not match"),
        "{b}"
    );
    let (s, _) = deliver(
        &e,
        "workflow_job",
        "d-1",
        body.as_bytes(),
        Some("sha256=abc"),
    );
    assert_eq!(s, 401);
    assert_eq!(
        run_count(&e),
        0,
        "nothing stored for unauthorized deliveries"
    );

    let (s, b) = deliver(&e, "workflow_job", "d-2", b"{\"workflow_job\": ", Some(""));
    assert_eq!(s, 400);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed workflow_job payload"),
        "{b}"
    );
    let (s, _) = deliver(
        &e,
        "workflow_job",
        "d-3",
        b"{\"repository\": {\"full_name\": 1}}",
        Some(""),
    );
    assert_eq!(s, 400);

    let big = vec![b' '; 70_000];
    let (s, _) = deliver(&e, "workflow_job", "d-4", &big, Some(""));
    assert_eq!(s, 413);

    let (s, b) = deliver(&e, "issues", "d-5", b"{}", Some(""));
    assert_eq!((s, b["status"].as_str()), (202, Some("ignored")));
    let (s, b) = deliver(
        &e,
        "ping",
        "d-6",
        b"{\"zen\":\"Keep it logically awesome.\"}",
        Some(""),
    );
    assert_eq!((s, b["status"].as_str()), (200, Some("pong")));
    assert_eq!(run_count(&e), 0);

    // The real completed.failure job: created 10:33:58, started 10:34:58, completed 10:38:16.
    let (s, b) = send(&e, "workflow_job", "d-7", &job);
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")), "{b}");
    let id = b["runs"][0].clone();
    let r = run(&e, &id);
    assert_eq!(r["context"], "CodeQL / linters");
    assert_eq!(r["state"], "failure");
    assert_eq!(r["attempt"], 0);
    assert_eq!(r["queue_seconds"], 60.0);
    assert_eq!(r["run_seconds"], 198.0);
    assert_eq!(r["external_id"], "job:289782451");
    assert_eq!(r["repository"], "Codertocat/Hello-World");

    let (s, b) = send(&e, "workflow_job", "d-7", &job);
    assert_eq!((s, b["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(run_count(&e), 1);

    let text = e.scrape(false);
    for result in [
        "unauthorized",
        "rejected",
        "ignored",
        "accepted",
        "duplicate",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ci_exporter_webhook_deliveries_total")
                    && l.contains(&format!("result=\"{result}\""))),
            "no {result} delivery counted:\n{text}"
        );
    }

    // No secret configured: 401 saying so.
    let dir2 = tempfile::tempdir().unwrap();
    let e2 = start(dir2.path(), None);
    let (s, b) = send(&e2, "workflow_job", "d-1", &job);
    assert_eq!(s, 401);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("CI_SLO_GITHUB_WEBHOOK_SECRET"),
        "{b}"
    );
}

#[test]
fn one_job_through_queued_in_progress_completed_is_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path(), Some(SECRET));
    let completed = fixture("workflow_job/completed.failure.with-organization.payload.json");
    let mut queued = completed.clone();
    queued["action"] = json!("queued");
    queued["workflow_job"]["status"] = json!("queued");
    queued["workflow_job"]["conclusion"] = Value::Null;
    queued["workflow_job"]["completed_at"] = Value::Null;
    queued["workflow_job"]["started_at"] = queued["workflow_job"]["created_at"].clone();
    let mut in_progress = completed.clone();
    in_progress["action"] = json!("in_progress");
    in_progress["workflow_job"]["status"] = json!("in_progress");
    in_progress["workflow_job"]["conclusion"] = Value::Null;
    in_progress["workflow_job"]["completed_at"] = Value::Null;

    let mut ids = Vec::new();
    for (i, body) in [&queued, &in_progress, &completed].into_iter().enumerate() {
        let (s, b) = send(&e, "workflow_job", &format!("seq-{i}"), body);
        assert_eq!(s, 200, "{b}");
        ids.push(b["runs"][0].clone());
        let r = run(&e, &ids[i]);
        let want = [
            ("pending", Value::Null),
            ("running", Value::Null),
            ("failure", json!(198.0)),
        ][i]
            .clone();
        assert_eq!(
            (r["state"].as_str().unwrap(), r["run_seconds"].clone()),
            (want.0, want.1)
        );
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    // A late in_progress delivery does not reopen the finished job.
    let (s, _) = send(&e, "workflow_job", "seq-late", &in_progress);
    assert_eq!(s, 200);
    let r = run(&e, &ids[0]);
    assert_eq!(
        (r["state"].as_str(), r["queue_seconds"].as_f64()),
        (Some("failure"), Some(60.0))
    );
    assert_eq!(run_count(&e), 1);
}

#[test]
fn status_and_check_run_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path(), Some(SECRET));
    let (s, b) = send(&e, "status", "st-1", &fixture("status/payload.json"));
    assert_eq!(s, 200, "{b}");
    let r = run(&e, &b["runs"][0]);
    assert_eq!(r["context"], "default");
    assert_eq!(r["state"], "success");
    assert_eq!(r["commit"], "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert_eq!(r["finished_at"], "2019-05-15T15:20:55Z");
    assert_eq!(r["attempt"], 0);

    let (s, b) = send(
        &e,
        "check_run",
        "cr-1",
        &fixture("check_run/completed.payload.json"),
    );
    assert_eq!(s, 200, "{b}");
    let r = run(&e, &b["runs"][0]);
    assert_eq!(r["context"], "Octocoders-linter");
    assert_eq!(r["state"], "success");
    assert_eq!(r["run_seconds"], 0.0);
    assert_eq!(r["external_id"], "check:128620228");

    // An Actions check run is the same job a workflow_job event reports: not counted twice.
    let (s, b) = send(
        &e,
        "check_run",
        "cr-2",
        &fixture("check_run/completed.1.payload.json"),
    );
    assert_eq!((s, b["status"].as_str()), (200, Some("ignored")));
    let (s, b) = send(
        &e,
        "check_suite",
        "cs-1",
        &fixture("check_suite/completed.payload.json"),
    );
    assert_eq!((s, b["status"].as_str()), (200, Some("ignored")));
    let (s, b) = send(
        &e,
        "workflow_run",
        "wr-1",
        &fixture("workflow_run/completed.payload.json"),
    );
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")));
    let (s, b) = send(
        &e,
        "pull_request",
        "pr-1",
        &fixture("pull_request/closed.payload.json"),
    );
    assert_eq!(
        (s, b["status"].as_str()),
        (200, Some("ignored")),
        "closed without merge"
    );
    assert_eq!(run_count(&e), 2);
}

#[test]
fn a_cockpit_status_story_and_a_merge_give_green_after_one_retry() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path(), Some(SECRET));
    let base = fixture("status/payload.json");
    let sha = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
    let t0 = chrono::Utc::now() - chrono::Duration::minutes(60);
    let at = |m: i64| (t0 + chrono::Duration::minutes(m)).to_rfc3339();
    let story = [
        ("pending", "Not yet tested", 0),
        ("pending", "Testing in progress [ci-runner-1]", 2),
        ("failure", "Tests failed", 22),
        ("pending", "Not yet tested", 23),
        ("pending", "Testing in progress [ci-runner-2]", 30),
        ("success", "Tests passed", 45),
    ];
    let mut ids = Vec::new();
    for (i, (state, description, m)) in story.iter().enumerate() {
        let mut s = base.clone();
        s["sha"] = json!(sha);
        s["state"] = json!(state);
        s["context"] = json!("fedora-42/pybridge");
        s["description"] = json!(description);
        s["created_at"] = json!(at(*m));
        s["target_url"] = json!(format!("https://logs.example.org/{i}/log.html"));
        let (code, b) = send(&e, "status", &format!("story-{i}"), &s);
        assert_eq!(code, 200, "{b}");
        ids.push(b["runs"][0].clone());
    }
    let first = run(&e, &ids[2]);
    let second = run(&e, &ids[5]);
    assert_eq!(
        (first["attempt"].as_u64(), first["state"].as_str()),
        (Some(0), Some("failure"))
    );
    assert_eq!(
        (
            first["queue_seconds"].as_f64(),
            first["run_seconds"].as_f64()
        ),
        (Some(120.0), Some(1200.0))
    );
    assert_eq!(
        (second["attempt"].as_u64(), second["state"].as_str()),
        (Some(1), Some("success"))
    );
    assert_eq!(
        (
            second["queue_seconds"].as_f64(),
            second["run_seconds"].as_f64()
        ),
        (Some(420.0), Some(900.0))
    );
    assert_eq!(run_count(&e), 2);

    let mut pr = fixture("pull_request/closed.payload.json");
    pr["pull_request"]["merged"] = json!(true);
    pr["pull_request"]["merged_at"] = json!(at(50));
    pr["pull_request"]["head"]["sha"] = json!(sha);
    let (code, b) = send(&e, "pull_request", "merge-1", &pr);
    assert_eq!((code, b["merges"].as_u64()), (200, Some(1)), "{b}");

    let repo = RepositoryRef {
        forge: Forge::Github,
        path: "Codertocat/Hello-World".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let outcome = Store::open(&e.db)
            .unwrap()
            .change_outcome(&repo, 2)
            .unwrap();
        if let Some((Some(outcome), retries)) = outcome {
            assert_eq!(
                (outcome.as_str(), retries),
                ("green_after_one_retry", Some(1))
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the merge was not decided: {outcome:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    e.wait_for("the merged change counted", |t| {
        common::sample(
            t,
            "ci_merged_changes_total{repository=\"Codertocat/Hello-World\",outcome=\"green_after_one_retry\"}",
        ) == Some(1.0)
    });
}

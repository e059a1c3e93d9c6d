//! `POST /webhooks/github` against the real binary, with the real payloads of
//! tests/fixtures/github (octokit/webhooks, MIT). Where a test needs a variation
//! (a merge, a Cockpit story, a job's earlier states), it derives it from a
//! real payload in code.

use crate::common;

use ci_slo_exporter::forge::github::webhook::sign;
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
    start_with(dir, secret, "")
}

/// Start with more configuration (TOML appended to the test's own).
fn start_with(dir: &Path, secret: Option<&str>, more: &str) -> Exporter {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        // The fixtures are years old: kept, whenever the first prune comes
        // (at once on SQLite; on PostgreSQL once leadership is gained, while
        // a test may already be posting).
        format!(
            "[server]\nmax_body_bytes = 65536\n[slo]\nmerge_settle = \"1s\"\n[store]\nretention = \"100years\"\n{more}"
        ),
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
    common::store(&e.db).run_count().unwrap()
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
    // A late in_progress (or queued) delivery does not reopen the finished
    // job: it is older than what is stored, ignored and counted.
    for (i, late) in [&in_progress, &queued].into_iter().enumerate() {
        let (s, b) = send(&e, "workflow_job", &format!("seq-late-{i}"), late);
        assert_eq!((s, b["status"].as_str()), (200, Some("ignored")), "{b}");
        assert_eq!(b["stale"].as_u64(), Some(1), "{b}");
    }
    e.wait_for("the stale job events counted", |t| {
        common::sample(
            t,
            "ci_exporter_data_quality_rejections_total{reason=\"stale_event\"}",
        ) == Some(2.0)
    });
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

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let outcome = common::sql::row(
            &e.db,
            "SELECT c.outcome, c.retries FROM changes c JOIN repositories r ON r.id = c.repository_id
             WHERE r.forge = 'github' AND r.path = 'Codertocat/Hello-World' AND c.number = 2",
        );
        if let Some(Some(decided)) = outcome.as_ref().map(|r| r.opt_text(0)) {
            assert_eq!(
                (decided.as_str(), outcome.unwrap().opt_int(1)),
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

/// The real completed job, moved to `minutes_ago` (inside the live window, so
/// that it moves the live counters) in workflow run `run_id`, as job `job_id`.
fn recent_job(run_id: u64, job_id: u64, run_attempt: u32, conclusion: &str) -> Value {
    let mut job = fixture("workflow_job/completed.failure.with-organization.payload.json");
    let t0 = chrono::Utc::now() - chrono::Duration::minutes(30);
    let at = |s: i64| (t0 + chrono::Duration::seconds(s)).to_rfc3339();
    let j = &mut job["workflow_job"];
    j["id"] = json!(job_id);
    j["run_id"] = json!(run_id);
    j["run_attempt"] = json!(run_attempt);
    j["conclusion"] = json!(conclusion);
    // Queued 60 s, ran 198 s, like the fixture.
    j["created_at"] = json!(at(0));
    j["started_at"] = json!(at(60));
    j["completed_at"] = json!(at(258));
    job
}

/// The real workflow_run event, for workflow run `run_id` of the job fixture's
/// repository, triggered by `event`.
fn workflow_run(run_id: u64, run_attempt: u32, event: &str) -> Value {
    let mut run = fixture("workflow_run/completed.payload.json");
    run["repository"] =
        fixture("workflow_job/completed.failure.with-organization.payload.json")["repository"]
            .clone();
    run["workflow_run"]["id"] = json!(run_id);
    run["workflow_run"]["run_attempt"] = json!(run_attempt);
    run["workflow_run"]["event"] = json!(event);
    run["workflow_run"]["run_started_at"] =
        json!((chrono::Utc::now() - chrono::Duration::minutes(31)).to_rfc3339());
    run
}

const RUNS: &str =
    "ci_runs_total{repository=\"Codertocat/Hello-World\",context=\"CodeQL / linters\"";

/// ci_runs_total of the job fixture's context by trigger, state and attempt.
fn runs_total(text: &str, trigger: &str, state: &str, attempt: &str) -> Option<f64> {
    common::sample(
        text,
        &format!("{RUNS},trigger=\"{trigger}\",state=\"{state}\",attempt=\"{attempt}\"}}"),
    )
}

/// Lines of the job fixture's context's trigger-labelled series.
fn context_series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains("context=\"CodeQL / linters\""))
        .collect()
}

#[test]
fn a_job_delivered_before_its_workflow_run_is_counted_once_under_the_runs_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path(), Some(SECRET));
    let (s, b) = send(
        &e,
        "workflow_job",
        "job-1",
        &recent_job(501, 9001, 1, "failure"),
    );
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")), "{b}");
    let id = b["runs"][0].clone();
    assert_eq!(
        run(&e, &id)["trigger"],
        "other",
        "stored, trigger not known yet"
    );
    let text = e.wait_for("the job stored", |t| {
        common::sample(t, "ci_exporter_stored_runs") == Some(1.0)
    });
    assert_eq!(
        context_series(&text),
        Vec::<&str>::new(),
        "not counted while its trigger is unknown"
    );

    // The workflow run arrives: the job gets its trigger and is counted under it, once.
    let (s, _) = send(&e, "workflow_run", "run-1", &workflow_run(501, 1, "push"));
    assert_eq!(s, 200);
    assert_eq!(run(&e, &id)["trigger"], "push");
    let text = e.wait_for("the job counted", |t| {
        runs_total(t, "push", "failure", "first") == Some(1.0)
    });
    let queue = "ci_run_queue_duration_seconds_count{repository=\"Codertocat/Hello-World\",context=\"CodeQL / linters\",trigger=\"push\"}";
    assert_eq!(
        common::sample(&text, queue),
        Some(1.0),
        "queue time counted under push"
    );
    assert!(
        context_series(&text)
            .iter()
            .all(|l| l.contains("trigger=\"push\"")),
        "nothing counted under another trigger:\n{}",
        context_series(&text).join("\n")
    );

    // Later deliveries of the job or its run change nothing.
    let (s, _) = send(
        &e,
        "workflow_job",
        "job-2",
        &recent_job(501, 9001, 1, "failure"),
    );
    assert_eq!(s, 200);
    let (s, _) = send(&e, "workflow_run", "run-2", &workflow_run(501, 1, "push"));
    assert_eq!(s, 200);
    assert_eq!(run(&e, &id)["trigger"], "push");
    assert_eq!(run_count(&e), 1);
    assert_eq!(stored_runs_total(&e), vec![("push".to_string(), 1.0)]);
}

/// The persisted ci_runs_total of the job fixture's context: (trigger, value).
fn stored_runs_total(e: &Exporter) -> Vec<(String, f64)> {
    let state = common::store(&e.db).metric_state().unwrap();
    let label = |labels: &[(String, String)], k: &str| {
        labels
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    state
        .counters
        .iter()
        .filter(|c| c.family == "ci_runs" && label(&c.labels, "context") == "CodeQL / linters")
        .map(|c| (label(&c.labels, "trigger"), c.value))
        .collect()
}

#[test]
fn a_job_whose_workflow_run_never_comes_is_counted_as_other_after_trigger_wait() {
    let dir = tempfile::tempdir().unwrap();
    let e = start_with(
        dir.path(),
        Some(SECRET),
        "[github]\ntrigger_wait = \"1s\"\n",
    );
    let (s, b) = send(
        &e,
        "workflow_job",
        "job-1",
        &recent_job(601, 9101, 1, "success"),
    );
    assert_eq!(s, 200, "{b}");
    let id = b["runs"][0].clone();
    let text = e.wait_for("the job counted with trigger other", |t| {
        runs_total(t, "other", "success", "first") == Some(1.0)
    });
    assert_eq!(
        common::sample(
            &text,
            "ci_exporter_data_quality_rejections_total{reason=\"unknown_trigger\"}"
        ),
        Some(1.0)
    );

    // Too late: the trigger was decided (the counters carry it), it stays.
    let (s, _) = send(&e, "workflow_run", "run-1", &workflow_run(601, 1, "push"));
    assert_eq!(s, 200);
    let (s, _) = send(
        &e,
        "workflow_job",
        "job-2",
        &recent_job(601, 9101, 1, "success"),
    );
    assert_eq!(s, 200);
    assert_eq!(run(&e, &id)["trigger"], "other");
    assert_eq!(stored_runs_total(&e), vec![("other".to_string(), 1.0)]);
}

#[test]
fn a_push_run_and_a_pull_request_run_of_one_commit_are_two_runs() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path(), Some(SECRET));
    // `on: [push, pull_request]`: two workflow runs of the same workflow on the same commit.
    for (i, (run_id, event)) in [(701, "push"), (702, "pull_request")].iter().enumerate() {
        let (s, _) = send(
            &e,
            "workflow_run",
            &format!("run-{i}"),
            &workflow_run(*run_id, 1, event),
        );
        assert_eq!(s, 200);
    }
    let (s, push) = send(
        &e,
        "workflow_job",
        "job-push",
        &recent_job(701, 9201, 1, "success"),
    );
    assert_eq!(s, 200, "{push}");
    let (s, pr) = send(
        &e,
        "workflow_job",
        "job-pr",
        &recent_job(702, 9202, 1, "failure"),
    );
    assert_eq!(s, 200, "{pr}");
    assert_ne!(
        push["runs"][0], pr["runs"][0],
        "two runs, not one overwritten"
    );
    let (push, pr) = (run(&e, &push["runs"][0]), run(&e, &pr["runs"][0]));
    assert_eq!(
        (
            push["trigger"].as_str(),
            push["state"].as_str(),
            push["attempt"].as_u64()
        ),
        (Some("push"), Some("success"), Some(0))
    );
    assert_eq!(
        (
            pr["trigger"].as_str(),
            pr["state"].as_str(),
            pr["attempt"].as_u64()
        ),
        (Some("pull_request"), Some("failure"), Some(0))
    );
    assert_eq!(push["context"], pr["context"]);

    // A re-run of the pull_request run is its next attempt, not the push run's.
    let (s, _) = send(
        &e,
        "workflow_run",
        "run-rerun",
        &workflow_run(702, 2, "pull_request"),
    );
    assert_eq!(s, 200);
    let (s, rerun) = send(
        &e,
        "workflow_job",
        "job-rerun",
        &recent_job(702, 9203, 2, "success"),
    );
    assert_eq!(s, 200, "{rerun}");
    let rerun = run(&e, &rerun["runs"][0]);
    assert_eq!(
        (rerun["trigger"].as_str(), rerun["attempt"].as_u64()),
        (Some("pull_request"), Some(1))
    );
    assert_eq!(run_count(&e), 3);

    let text = e.wait_for("all three runs counted", |t| {
        runs_total(t, "pull_request", "success", "retry") == Some(1.0)
    });
    assert_eq!(runs_total(&text, "push", "success", "first"), Some(1.0));
    assert_eq!(
        runs_total(&text, "pull_request", "failure", "first"),
        Some(1.0)
    );

    // Merged: the context's final runs (push attempt 0, pull_request attempt 1)
    // are green after one retry.
    let mut merge = fixture("pull_request/closed.payload.json");
    merge["pull_request"]["merged"] = json!(true);
    merge["pull_request"]["merged_at"] = json!(chrono::Utc::now().to_rfc3339());
    merge["pull_request"]["head"]["sha"] = json!("3484a3fb816e0859fd6e1cea078d76385ff50625");
    let (s, b) = send(&e, "pull_request", "merge-1", &merge);
    assert_eq!((s, b["merges"].as_u64()), (200, Some(1)), "{b}");
    e.wait_for("the merge decided", |t| {
        common::sample(
            t,
            "ci_merged_changes_total{repository=\"Codertocat/Hello-World\",outcome=\"green_after_one_retry\"}",
        ) == Some(1.0)
    });
}

/// Issue 19: an old signed `failure` resent under a new delivery id after the
/// `success`, and a replayed `pending`, must not become attempts 2 and 3; a
/// start that arrives after its attempt ended only fills the start time.
#[test]
fn replayed_and_late_status_events_open_no_attempt_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path(), Some(SECRET));
    let base = fixture("status/payload.json");
    let sha = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
    let t0 = chrono::Utc::now() - chrono::Duration::minutes(60);
    let at = |m: i64| (t0 + chrono::Duration::minutes(m)).to_rfc3339();
    let status = |state: &str, description: &str, m: i64| {
        let mut s = base.clone();
        s["sha"] = json!(sha);
        s["state"] = json!(state);
        s["context"] = json!("fedora-42/replay");
        s["description"] = json!(description);
        s["created_at"] = json!(at(m));
        s
    };
    // Attempt 0 fails; attempt 1 is queued and passes, its start delivered late.
    let story = [
        ("pending", "Not yet tested", 0),
        ("pending", "Testing in progress", 2),
        ("failure", "Tests failed", 20),
        ("pending", "Not yet tested", 21),
        ("success", "Tests passed", 40),
        ("pending", "Testing in progress", 25),
    ];
    let mut last = Value::Null;
    for (i, (state, description, m)) in story.iter().enumerate() {
        let (code, b) = send(
            &e,
            "status",
            &format!("d-{i}"),
            &status(state, description, *m),
        );
        assert_eq!(code, 200, "{b}");
        last = b;
    }
    assert_eq!(run_count(&e), 2, "two attempts");
    let second = run(&e, &last["runs"][0]);
    assert_eq!(
        (
            second["attempt"].as_u64(),
            second["state"].as_str(),
            second["queue_seconds"].as_f64(),
            second["run_seconds"].as_f64()
        ),
        (Some(1), Some("success"), Some(240.0), Some(900.0)),
        "the late start filled attempt 1's times: {second}"
    );
    // The replays: the old failure and the old pending under new delivery ids.
    for (i, (state, description, m)) in [
        ("failure", "Tests failed", 20),
        ("pending", "Not yet tested", 0),
        ("pending", "Testing in progress", 2),
    ]
    .into_iter()
    .enumerate()
    {
        let (code, b) = send(
            &e,
            "status",
            &format!("replay-{i}"),
            &status(state, description, m),
        );
        assert_eq!((code, b["status"].as_str()), (200, Some("ignored")), "{b}");
        assert_eq!(b["stale"].as_u64(), Some(1), "{b}");
    }
    assert_eq!(run_count(&e), 2, "no phantom attempts");
    let again = run(&e, &last["runs"][0]);
    assert_eq!(again["state"].as_str(), Some("success"), "{again}");
    e.wait_for("the stale events counted", |t| {
        common::sample(
            t,
            "ci_exporter_data_quality_rejections_total{reason=\"stale_event\"}",
        ) == Some(3.0)
    });
}

/// Names follow the rule every source applies (crates/core/src/names.rs): a real status
/// event whose context carries a newline is refused like the ingest API
/// refuses it, and nothing is stored.
#[test]
fn a_status_whose_context_has_a_control_character_is_refused_like_an_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let config = config.display().to_string();
    let e = Exporter::start(
        dir.path(),
        &dir.path().join("db.sqlite"),
        &["--config", &config],
        &[
            ("CI_SLO_GITHUB_WEBHOOK_SECRET", SECRET),
            ("CI_SLO_API_TOKEN", common::TOKEN),
        ],
    );
    let mut status = fixture("status/payload.json");
    status["context"] = "default\nforged log line".into();
    let (s, b) = send(&e, "status", "st-ctl", &status);
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("must not contain control characters"),
        "{b}"
    );
    assert_eq!(run_count(&e), 0);
    let (s, b) = e.post(
        "/api/v1/runs",
        Some(common::TOKEN),
        serde_json::json!({
            "repository": "acme/shop", "context": "default\nforged log line",
            "commit": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "state": "success",
        })
        .to_string()
        .as_bytes(),
    );
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("must not contain control characters"),
        "{b}"
    );
}

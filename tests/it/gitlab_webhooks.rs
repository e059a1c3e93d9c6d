//! `POST /webhooks/gitlab` against the real binary, with GitLab's own payloads
//! (tests/fixtures/gitlab, from xanzy/go-gitlab).

use crate::common;

use common::{Exporter, agent, sample};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const HOOK_TOKEN: &str = "gl-hook-token-7c1e";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gitlab/webhooks")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn post(
    e: &Exporter,
    event: &str,
    token: Option<&str>,
    uuid: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let mut req = agent()
        .post(&format!("{}/webhooks/gitlab", e.base))
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", event);
    if let Some(t) = token {
        req = req.header("X-Gitlab-Token", t);
    }
    if let Some(u) = uuid {
        req = req.header("X-Gitlab-Event-UUID", u);
    }
    let mut r = req.send(body).expect("POST");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn start(dir: &Path, token: bool) -> Exporter {
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        // The fixtures are years old: kept, whenever the first prune comes
        // (at once on SQLite; on PostgreSQL once leadership is gained, while
        // a test may already be posting).
        "[server]\nmax_body_bytes = 16384\n[slo]\nmerge_settle = \"1s\"\n[store]\nretention = \"100years\"\n",
    )
    .unwrap();
    let env: Vec<(&str, &str)> = if token {
        vec![("CI_SLO_GITLAB_WEBHOOK_TOKEN", HOOK_TOKEN)]
    } else {
        vec![]
    };
    Exporter::start(
        dir,
        &dir.join("db.sqlite"),
        &["--config", config.to_str().unwrap()],
        &env,
    )
}

fn run(e: &Exporter, id: i64) -> Value {
    let (status, body) = e.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn ids(body: &Value) -> Vec<i64> {
    body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

#[test]
fn the_job_hook_gives_a_run_with_gitlabs_queue_time_and_duration() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path(), true);
    let body = serde_json::to_vec(&fixture("job.json")).unwrap();
    let (status, answer) = post(&e, "Job Hook", Some(HOOK_TOKEN), Some("ev-1"), &body);
    assert_eq!(status, 200, "{answer}");
    let r = run(&e, ids(&answer)[0]);
    assert_eq!(r["forge"], "gitlab");
    assert_eq!(r["repository"], "jsmithy2/release-tools-fake");
    assert_eq!(r["context"], "coordinated:tag / auto_deploy:start");
    assert_eq!(r["commit"], "95d49d1efbd941908580e79d65e4b5ecaf4a8305");
    assert_eq!(r["external_id"], "job:3580121225");
    assert_eq!(r["state"], "success");
    // build_duration 49.503592 s; GitLab's build_queued_duration 0.193009 s
    // (started − created would say 3 s).
    assert_eq!(r["run_seconds"], 49.504);
    assert_eq!(r["queue_seconds"], 0.193);
    // retries_count 1: this is the second attempt of the job.
    assert_eq!(r["attempt"], 1);
    assert_eq!(
        r["url"],
        "https://gitlab.com/jsmithy2/release-tools-fake/-/jobs/3580121225"
    );

    // build.json: a job just created → pending, no times yet.
    let body = serde_json::to_vec(&fixture("build.json")).unwrap();
    let (status, answer) = post(&e, "Job Hook", Some(HOOK_TOKEN), Some("ev-2"), &body);
    assert_eq!(status, 200, "{answer}");
    let r = run(&e, ids(&answer)[0]);
    assert_eq!(
        (r["state"].as_str(), r["repository"].as_str()),
        (Some("pending"), Some("gitlab-org/gitlab-test"))
    );
    assert_eq!(r["queue_seconds"], Value::Null);
}

#[test]
fn the_pipeline_hook_builds_become_runs_and_retried_jobs_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path(), true);
    let body = serde_json::to_vec(&fixture("pipeline.json")).unwrap();
    let (status, answer) = post(&e, "Pipeline Hook", Some(HOOK_TOKEN), Some("p-1"), &body);
    assert_eq!(status, 200, "{answer}");
    let runs: Vec<Value> = ids(&answer).into_iter().map(|id| run(&e, id)).collect();
    let summary: Vec<(String, String, String)> = runs
        .iter()
        .map(|r| {
            (
                r["context"].as_str().unwrap().to_string(),
                r["external_id"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        summary,
        vec![
            s("build / build-image", "job:376", "success"),
            s("test / test-image", "job:377", "success"),
            s("test / test-build", "job:378", "success"),
            s("deploy / staging", "job:379", "pending"),
            s("deploy / production", "job:380", "skipped"),
            s("pipeline", "pipeline:31", "success"),
        ]
    );
    let build = &runs[2];
    assert_eq!(build["trigger"], "pull_request");
    assert_eq!(build["repository"], "gitlab-org/gitlab-test");
    assert_eq!(build["queue_seconds"], 196.0);
    assert_eq!(build["run_seconds"], 17.0);
    assert_eq!(build["change"]["number"], 1);
    // The pipeline: created 15:23:28, queued_duration 12 s, finished 15:26:29.
    assert_eq!(runs[5]["queue_seconds"], 12.0);
    assert_eq!(runs[5]["run_seconds"], 169.0);

    // A job retried twice: three job ids, same name and stage, same commit.
    let mut job = fixture("job.json");
    job.as_object_mut().unwrap().remove("retries_count");
    let mut attempts = Vec::new();
    for (i, (id, status)) in [(9001, "failed"), (9002, "failed"), (9003, "success")]
        .into_iter()
        .enumerate()
    {
        job["build_id"] = id.into();
        job["build_status"] = status.into();
        job["build_failure_reason"] = "script_failure".into();
        let body = serde_json::to_vec(&job).unwrap();
        let (code, answer) = post(
            &e,
            "Job Hook",
            Some(HOOK_TOKEN),
            Some(&format!("r-{i}")),
            &body,
        );
        assert_eq!(code, 200, "{answer}");
        let r = run(&e, ids(&answer)[0]);
        attempts.push((
            r["attempt"].as_u64().unwrap(),
            r["state"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        attempts,
        vec![
            (0, "failure".to_string()),
            (1, "failure".to_string()),
            (2, "success".to_string())
        ]
    );
    // A late update of the first job keeps its attempt.
    job["build_id"] = 9001.into();
    job["build_status"] = "failed".into();
    job["build_duration"] = 50.0.into();
    let (_, answer) = post(
        &e,
        "Job Hook",
        Some(HOOK_TOKEN),
        Some("r-late"),
        &serde_json::to_vec(&job).unwrap(),
    );
    assert_eq!(run(&e, ids(&answer)[0])["attempt"], 0);
}

#[test]
fn an_mr_merge_fixes_the_change_outcome_from_its_head_commits_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path(), true);
    let head = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
    let mut job = fixture("job.json");
    job.as_object_mut().unwrap().remove("retries_count");
    job["sha"] = head.into();
    job["project"] = serde_json::json!({"path_with_namespace": "gitlabhq/gitlab-test"});
    // Recent, as GitLab writes times: the fixture's are past the retention,
    // and the first prune (at once on SQLite, once leadership is gained on
    // PostgreSQL) may come after these are stored.
    let ago = |minutes: i64| {
        (chrono::Utc::now() - chrono::Duration::minutes(minutes))
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    };
    job["build_created_at"] = ago(30).into();
    job["build_started_at"] = ago(29).into();
    job["build_finished_at"] = ago(25).into();
    for (id, status) in [(501, "failed"), (502, "success")] {
        job["build_id"] = id.into();
        job["build_status"] = status.into();
        let (code, a) = post(
            &e,
            "Job Hook",
            Some(HOOK_TOKEN),
            None,
            &serde_json::to_vec(&job).unwrap(),
        );
        assert_eq!(code, 200, "{a}");
    }
    // The fixture is an "open" event: nothing to decide.
    let mut mr = fixture("merge_request.json");
    let (code, a) = post(
        &e,
        "Merge Request Hook",
        Some(HOOK_TOKEN),
        Some("m-0"),
        &serde_json::to_vec(&mr).unwrap(),
    );
    assert_eq!((code, a["status"].as_str()), (200, Some("ignored")));
    // The same MR, merged (as GitLab sends it: action merge, state merged).
    mr["object_attributes"]["action"] = "merge".into();
    mr["object_attributes"]["state"] = "merged".into();
    mr["object_attributes"]["updated_at"] = ago(5).into();
    let (code, a) = post(
        &e,
        "Merge Request Hook",
        Some(HOOK_TOKEN),
        Some("m-1"),
        &serde_json::to_vec(&mr).unwrap(),
    );
    assert_eq!((code, a["merged"].as_i64()), (200, Some(1)), "{a}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        let got = common::sql::row(
            &e.db,
            "SELECT c.outcome, c.retries, c.head_sha FROM changes c JOIN repositories r ON r.id = c.repository_id
             WHERE r.path = 'gitlabhq/gitlab-test' AND c.number = 1",
        )
        .map(|r| (r.opt_text(0), r.opt_int(1), r.opt_text(2)));
        if let Some((Some(o), retries, sha)) = got {
            break (o, retries, sha);
        }
        assert!(
            Instant::now() < deadline,
            "the merge was not decided: {got:?}; exporter log:\n{}",
            e.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        outcome,
        (
            "green_after_one_retry".to_string(),
            Some(1),
            Some(head.to_string())
        ),
        "runs: {:?}; exporter log:\n{}",
        common::sql::rows(
            &e.db,
            "SELECT id, external_id, context, commit_sha, attempt, attempt_group, state FROM runs ORDER BY id"
        ),
        e.log()
    );
}

#[test]
fn the_webhook_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let body = serde_json::to_vec(&fixture("job.json")).unwrap();
    {
        // No token configured: 401 that says how to enable it.
        let e = start(dir.path(), false);
        let (code, a) = post(&e, "Job Hook", Some(HOOK_TOKEN), Some("x"), &body);
        assert_eq!(code, 401);
        assert!(
            a["error"]
                .as_str()
                .unwrap()
                .contains("CI_SLO_GITLAB_WEBHOOK_TOKEN"),
            "{a}"
        );
        e.stop();
    }
    let e = start(dir.path(), true);
    let (code, a) = post(&e, "Job Hook", None, Some("x"), &body);
    assert_eq!(
        (code, a["error"].as_str()),
        (401, Some("missing X-Gitlab-Token"))
    );
    let (code, a) = post(&e, "Job Hook", Some("gl-hook-token-7c1f"), Some("x"), &body);
    assert_eq!(
        (code, a["error"].as_str()),
        (401, Some("invalid X-Gitlab-Token"))
    );
    assert_eq!(
        common::store(&e.db).run_count().unwrap(),
        0,
        "nothing stored without the token"
    );

    // Delivered, then replayed (same event UUID): stored once.
    let (code, a) = post(&e, "Job Hook", Some(HOOK_TOKEN), Some("ev-9"), &body);
    assert_eq!((code, a["status"].as_str()), (200, Some("accepted")));
    let (code, a) = post(&e, "Job Hook", Some(HOOK_TOKEN), Some("ev-9"), &body);
    assert_eq!((code, a["status"].as_str()), (200, Some("duplicate")));
    // A redelivery with a new UUID is absorbed by the job id.
    let (code, _) = post(&e, "Job Hook", Some(HOOK_TOKEN), Some("ev-10"), &body);
    assert_eq!(code, 200);
    assert_eq!(common::store(&e.db).run_count().unwrap(), 1);

    let (code, a) = post(
        &e,
        "Job Hook",
        Some(HOOK_TOKEN),
        Some("bad"),
        b"{\"object_kind\": \"build\"",
    );
    assert_eq!(code, 400);
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid Job Hook: EOF while parsing"),
        "{a}"
    );
    let (code, a) = post(
        &e,
        "Pipeline Hook",
        Some(HOOK_TOKEN),
        Some("bad2"),
        b"{\"object_attributes\": {\"id\": \"x\"}}",
    );
    assert_eq!(code, 400);
    assert!(a["error"].as_str().unwrap().contains("invalid type"), "{a}");

    let big = vec![b' '; 20_000];
    let (code, _) = post(&e, "Job Hook", Some(HOOK_TOKEN), Some("big"), &big);
    assert_eq!(code, 413);

    let (code, a) = post(&e, "Push Hook", Some(HOOK_TOKEN), Some("push"), b"{}");
    assert_eq!((code, a["status"].as_str()), (202, Some("ignored")));
    assert_eq!(common::store(&e.db).run_count().unwrap(), 1);

    let text = e.scrape(false);
    let m = |event: &str, result: &str| {
        sample(
            &text,
            &format!(
                "ci_exporter_webhook_deliveries_total{{forge=\"gitlab\",event=\"{event}\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!(m("Job Hook", "unauthorized"), Some(2.0));
    assert_eq!(m("Job Hook", "accepted"), Some(2.0));
    assert_eq!(m("Job Hook", "duplicate"), Some(1.0));
    assert_eq!(m("Job Hook", "rejected"), Some(1.0));
    assert_eq!(m("Pipeline Hook", "rejected"), Some(1.0));
    assert_eq!(m("other", "ignored"), Some(1.0));
}

//! Credentials in CI output never reach a reader: each shape of secret, in an
//! evidence line, its context lines, a test message or a dependency version,
//! is stored as `[REDACTED]`, and `/failures`, `/runs/{id}`, their JSON and
//! the prefilled create-issue link show it so.

use crate::common;

use common::{Exporter, TOKEN};
use serde_json::{Value, json};

/// (a line as CI prints it, the secret in it).
const SHAPES: &[(&str, &str)] = &[
    (
        "fatal: unable to access 'https://oauth2:glpat-AbCdEf0123456789xyz1@gitlab.example.com/g/p.git/': 403",
        "glpat-AbCdEf0123456789xyz1",
    ),
    (
        "git clone https://deploy:s3cr3tP4ss@git.example.com/repo.git failed",
        "s3cr3tP4ss",
    ),
    (
        "> Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc123",
        "eyJhbGciOiJIUzI1NiJ9",
    ),
    (
        "curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZDEyMw==' https://x returned 401",
        "dXNlcjpwYXNzd29yZDEyMw",
    ),
    (
        "push failed with ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    ),
    (
        "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE aws s3 ls: AccessDenied",
        "AKIAIOSFODNN7EXAMPLE",
    ),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY rejected",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "slack notify failed: xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
    ),
    (
        "key: -----BEGIN RSA PRIVATE KEY-----MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo",
    ),
    (
        "mysql -u root password=hunter2isbad -h db: access denied",
        "hunter2isbad",
    ),
    (
        "GET /api?token=abcdef123456&page=2 HTTP/1.1 500",
        "abcdef123456",
    ),
];

fn all_secrets() -> Vec<&'static str> {
    let mut v: Vec<&str> = SHAPES.iter().map(|(_, s)| *s).collect();
    v.push("Sup3rS3cretPw");
    v.push("p4ssw0rd");
    v
}

fn assert_clean(what: &str, text: &str) {
    for s in all_secrets() {
        assert!(!text.contains(s), "{what} shows {s:?}");
    }
}

/// The percent-decoded text of a URL (the create-issue link).
fn decode(url: &str) -> String {
    percent_encoding::percent_decode_str(url)
        .decode_utf8_lossy()
        .into_owned()
}

#[test]
fn every_secret_shape_is_redacted_on_failures_runs_and_issue_links() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = Exporter::start(d, &d.join("s.db"), &[], &[("CI_SLO_API_TOKEN", TOKEN)]);
    let now = chrono::Utc::now();
    let ts = |m: i64| (now - chrono::Duration::minutes(m)).to_rfc3339();
    // One failed test per shape: its message's first line is the evidence of
    // an `unknown` failure, shown on /failures and put into the issue.
    let mut tests: Vec<Value> = SHAPES
        .iter()
        .enumerate()
        .map(|(i, (line, _))| {
            json!({"name": format!("test_{i}"), "outcome": "failed",
                   "message": format!("{line}\n  at step {i}")})
        })
        .collect();
    tests.push(json!({"name": "ok", "outcome": "passed"}));
    // The log's decisive line (out of memory) among context lines with secrets.
    let log = "setup\n\
        export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n\
        + git clone https://ci:Sup3rS3cretPw@git.example.com/repo.git\n\
        Killed\n\
        Out of memory: Killed process 1234 (cc1plus) password=Sup3rS3cretPw\n\
        -----BEGIN OPENSSH PRIVATE KEY-----\n\
        b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n\
        -----END OPENSSH PRIVATE KEY-----\n\
        done\n";
    let run = json!({
        "repository": "acme/app", "forge": "github", "context": "ci `main`", "commit": "abc123",
        "state": "failure", "queued_at": ts(20), "started_at": ts(19), "finished_at": ts(2),
        "url": "https://ci:p4ssw0rd@ci.example.com/job/1",
        "tests": tests, "log": log,
        "dependencies": {"private-pkg": "1.0 @ https://user:p4ssw0rd@pypi.example.com/simple"},
    });
    let (status, body) = e.post("/api/v1/runs", Some(TOKEN), run.to_string().as_bytes());
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().unwrap();

    // The run page and its JSON.
    let (status, page) = e.get(&format!("/runs/{id}"));
    assert_eq!(status, 200);
    assert_clean("/runs/{id}", &page);
    assert!(page.contains("[REDACTED]"));
    assert!(
        page.contains("Out of memory: Killed process 1234 (cc1plus) password=[REDACTED]"),
        "the evidence keeps everything but the secret"
    );
    let (status, json_run) = e.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(status, 200);
    assert_clean("/api/v1/runs/{id}", &json_run);
    let v: Value = serde_json::from_str(&json_run).unwrap();
    let context: Vec<&str> = v["failures"][0]["context"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        context.contains(&"+ git clone https://[REDACTED]@git.example.com/repo.git"),
        "{context:?}"
    );
    assert!(
        !context.iter().any(|l| l.contains("b3BlbnNzaC1rZXkt")),
        "the key block's lines are hidden: {context:?}"
    );
    assert_eq!(
        v["dependencies"]["private-pkg"],
        "1.0 @ https://[REDACTED]@pypi.example.com/simple"
    );
    for (i, (_, secret)) in SHAPES.iter().enumerate() {
        let t = v["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == format!("test_{i}"))
            .unwrap();
        let m = t["message"].as_str().unwrap();
        assert!(!m.contains(secret) && m.contains("[REDACTED]"), "{m}");
    }

    // /failures, its JSON and every create-issue link.
    let (status, failures) = e.get("/failures");
    assert_eq!(status, 200);
    assert_clean("/failures", &failures);
    assert_clean("/failures (decoded links)", &decode(&failures));
    let (status, api) = e.get("/api/v1/failures");
    assert_eq!(status, 200);
    assert_clean("/api/v1/failures", &api);
    let v: Value = serde_json::from_str(&api).unwrap();
    let rows = v["fingerprints"].as_array().unwrap();
    assert!(rows.len() > SHAPES.len(), "{} fingerprints", rows.len());
    let mut redacted_links = 0;
    for row in rows {
        let url = row["create_issue_url"]
            .as_str()
            .expect("a GitHub issue link");
        let text = decode(url);
        assert_clean("a create-issue link", &text);
        assert!(
            url.starts_with("https://github.com/acme/app/issues/new?"),
            "{url}"
        );
        redacted_links += usize::from(text.contains("[REDACTED]"));
        // The context name with a backtick stays inside its code span.
        assert!(text.contains("`` ci `main` ``"), "{text}");
    }
    assert!(
        redacted_links > SHAPES.len(),
        "{redacted_links} links show [REDACTED]"
    );
    e.stop();
}

//! No one gets in, nothing leaks: secrets never show in logs, /metrics, error
//! answers or --print-config; the ingest API and webhooks need their secrets;
//! hostile label values survive both exposition formats intact.

use crate::common;

use chrono::{Duration, SecondsFormat, Utc};
use common::{Exporter, agent};

const SECRETS: [(&str, &str); 5] = [
    ("CI_SLO_API_TOKEN", "api-7c1f0e5d9b2a44c3"),
    ("CI_SLO_GITHUB_TOKEN", "ghp_8d3b1e6f0a9c4e2d7b5a"),
    ("CI_SLO_GITHUB_WEBHOOK_SECRET", "ghwh-2e9d7c5b3a1f"),
    ("CI_SLO_GITLAB_TOKEN", "glpat-4f6e8d0c2b4a6e8d"),
    ("CI_SLO_GITLAB_WEBHOOK_TOKEN", "glwh-9a7b5c3d1e0f"),
];

fn raw_post(e: &Exporter, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut req = agent().post(&format!("{}{path}", e.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.send(body).expect("POST");
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for (var, value) in SECRETS {
        assert!(!text.contains(value), "{what} contains the value of {var}");
    }
}

const HOSTILE: &[&str] = &[
    "quote \" in name",
    "back\\slash",
    "new\nline",
    "ünïcödé ✓ 名前",
    "close} brace # {run_id=\"1\"} 2",
];

#[test]
fn secrets_never_leak_and_every_door_needs_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("c.toml");
    std::fs::write(
        &config,
        "[server]\nmax_body_bytes = 65536\n[tests]\nrefresh_interval = \"1s\"\n# one failed run per test: broken at once, so each gets its series\nmin_runs = 1\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let e = Exporter::start(d, &d.join("s.db"), &["--config", config], &SECRETS);

    let mut answers = String::new();
    // The ingest API: no token, a wrong token, a token that is a prefix of the real one.
    let body = br#"{"repository":"a/b","context":"c","commit":"x","state":"success"}"#;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer api-7c1f"),
        Some("api-7c1f0e5d9b2a44c3"),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        let (status, text) = raw_post(&e, "/api/v1/runs", &headers, body);
        assert_eq!(status, 401, "{auth:?}: {text}");
        answers.push_str(&text);
    }
    // Webhooks without, or with wrong, credentials store nothing.
    let (status, text) = raw_post(
        &e,
        "/webhooks/github",
        &[("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", "1")],
        b"{}",
    );
    assert_eq!(status, 401, "{text}");
    answers.push_str(&text);
    let (status, text) = raw_post(
        &e,
        "/webhooks/github",
        &[
            ("X-GitHub-Event", "ping"),
            ("X-GitHub-Delivery", "2"),
            ("X-Hub-Signature-256", "sha256=00"),
        ],
        b"{}",
    );
    assert_eq!(status, 401, "{text}");
    answers.push_str(&text);
    let (status, text) = raw_post(
        &e,
        "/webhooks/gitlab",
        &[
            ("X-Gitlab-Event", "Job Hook"),
            ("X-Gitlab-Token", "glwh-9a7b"),
        ],
        b"{}",
    );
    assert_eq!(status, 401, "{text}");
    answers.push_str(&text);
    // Oversized and malformed bodies are refused with a reason, not echoed secrets.
    let (status, _) = raw_post(
        &e,
        "/api/v1/runs",
        &[("Authorization", "Bearer api-7c1f0e5d9b2a44c3")],
        &vec![b'x'; 70_000],
    );
    assert_eq!(status, 413);
    let (status, text) = raw_post(
        &e,
        "/api/v1/runs",
        &[("Authorization", "Bearer api-7c1f0e5d9b2a44c3")],
        b"{not json",
    );
    assert_eq!(status, 400);
    answers.push_str(&text);

    // Hostile test names go through the API and come out escaped in both formats.
    let ts =
        |m: i64| (Utc::now() - Duration::minutes(m)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let tests: Vec<_> = HOSTILE
        .iter()
        .map(|n| serde_json::json!({"name": n, "outcome": "failed"}))
        .collect();
    let run = serde_json::json!({"repository": "acme/\"odd\" repo", "context": "ctx\\1", "commit": "abc", "state": "failure",
        "queued_at": ts(10), "started_at": ts(9), "finished_at": ts(1), "tests": tests});
    let (status, reply) = e.post(
        "/api/v1/runs",
        Some("api-7c1f0e5d9b2a44c3"),
        &serde_json::to_vec(&run).unwrap(),
    );
    assert_eq!(status, 201, "{reply}");
    let text = e.wait_for("the hostile tests' gauges", |t| {
        t.matches("ci_test_failure_ratio{").count() >= HOSTILE.len()
    });

    let (ok, lint) = common::promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics rejects the hostile labels:\n{lint}"
    );
    let om_path = d.join("om.txt");
    std::fs::write(&om_path, e.scrape(true)).unwrap();
    let python = common::python3();
    let script = "import json,sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
         names=[s.labels['test'] for f in p(open(sys.argv[1]).read()) if f.name=='ci_test_failure_ratio' for s in f.samples]\n\
         repos={s.labels['repository'] for f in p(open(sys.argv[1]).read()) if f.name=='ci_test_failure_ratio' for s in f.samples}\n\
         print(json.dumps({'names': sorted(names), 'repos': sorted(repos)}))";
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&om_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut want: Vec<&str> = HOSTILE.to_vec();
    want.sort();
    assert_eq!(
        parsed["names"],
        serde_json::json!(want),
        "label values round-trip through OpenMetrics"
    );
    assert_eq!(parsed["repos"], serde_json::json!(["acme/\"odd\" repo"]));

    assert_no_secret("error answers", &answers);
    assert_no_secret("/metrics (text)", &text);
    assert_no_secret("/metrics (OpenMetrics)", &e.scrape(true));
    e.stop();
    let log = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|f| f.ok())
        .filter(|f| f.file_name().to_string_lossy().starts_with("serve-"))
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("serving"), "the log was captured: {log}");
    assert_no_secret("the exporter's log", &log);

    let mut cmd = std::process::Command::new(common::BIN);
    cmd.args(["--config", config, "--print-config", "serve"]);
    for (k, v) in SECRETS {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        printed.contains("github_webhook_secret: set (***)"),
        "{printed}"
    );
    assert_no_secret("--print-config", &printed);
}

//! Sharding (docs/scaling.md) against the real binary: three exporters on
//! loopback, one unsharded and shards `1/2` and `2/2` that forward to each
//! other (`shard_urls`), receive the same runs of many repositories through
//! the JSON ingest API, GitHub webhooks and GitLab webhooks. Each request to
//! the sharded pair goes to a shard picked regardless of the repository, so
//! about half of them are forwarded.
//!
//! Then every `ci_*` series of the three scrapes is compared: counters and
//! histograms of shard 1 plus shard 2 equal the unsharded instance's; the
//! per-repository gauges live on exactly one shard with the unsharded value;
//! the windowed ratio gauges, which cannot be summed, equal the ratio
//! recomputed from the shards' additive parts; and each shard holds only the
//! repositories it owns. A family the test does not know fails it, so a new
//! family must be classified here (and in docs/scaling.md) before it ships.

use crate::common;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ci_slo_exporter::forge::github::webhook::sign;
use common::{Exporter, TOKEN, agent, free_port};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

const GITHUB_SECRET: &str = "gh-secret-sharding-7d1";
const GITLAB_TOKEN: &str = "gl-token-sharding-4e2";

/// The owning shard (1-based) of a repository among `n`, computed here
/// independently of the exporter, as docs/scaling.md specifies it: FNV-1a 64
/// of the path, jump consistent hash into `n` buckets, plus 1. If the
/// exporter's assignment changed, the test fails.
fn owner(repository: &str, n: i64) -> u32 {
    let mut key: u64 = 0xcbf29ce484222325;
    for b in repository.bytes() {
        key ^= u64::from(b);
        key = key.wrapping_mul(0x100000001b3);
    }
    let (mut b, mut j) = (-1i64, 0i64);
    while j < n {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32 + 1
}

/// One HTTP request, sent identically to the unsharded instance and to a shard.
struct Request {
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    repository: String,
}

struct Answer {
    status: u16,
    body: Value,
    owner_header: Option<String>,
}

fn send(e: &Exporter, r: &Request, extra: &[(&str, &str)]) -> Answer {
    let mut req = agent()
        .post(&format!("{}{}", e.base, r.path))
        .header("Content-Type", "application/json");
    for (k, v) in &r.headers {
        req = req.header(*k, v);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(&r.body[..]).expect("POST");
    let owner_header = resp
        .headers()
        .get("x-ci-slo-shard-owner")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        owner_header,
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn gitlab_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn fixture(path: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// Event times fall in two bands well inside the gauge windows' edges (an
/// event seconds from `now − 1h` could fall in the 1h window of one instance
/// and not of another, which rebuilt its snapshot a moment later): runs that
/// end between 5 and 50 minutes ago, and runs between 1h15m and 5h30m ago.
#[derive(Clone, Copy)]
enum Band {
    Recent,
    Older,
}

impl Band {
    /// (queue seconds, run seconds) ranges and the earliest queue time.
    fn times(self, rng: &mut fastrand::Rng, now: DateTime<Utc>) -> [DateTime<Utc>; 3] {
        let (from, spread, queue, run) = match self {
            // queued 50..40 min ago, queue ≤ 10 min, run ≤ 25 min → ends ≥ 5 min ago.
            Band::Recent => (now - Duration::minutes(50), 600, 20..=600, 60..=1500),
            // queued 5h30..3h30 ago, queue ≤ 15 min, run ≤ 1h55 → ends ≥ 1h20 ago.
            Band::Older => (now - Duration::minutes(330), 7200, 20..=900, 600..=6900),
        };
        let queued = from + Duration::seconds(rng.i64(0..=spread));
        let started = queued + Duration::seconds(rng.i64(queue));
        let finished = started + Duration::seconds(rng.i64(run));
        [queued, started, finished]
    }
}

const TEAMS: &[&str] = &["alpha", "beta", "gamma", "delta"];
const SERVICES: &[&str] = &["api", "web", "db", "cli", "etl", "ui"];
/// Failure lines shared by every repository (their fingerprints recur across shards).
const SHARED_FAILURES: &[&str] = &[
    "fatal: unable to access 'https://github.com/acme/deps.git/': Could not resolve host: github.com",
    "write /var/lib/containers/storage/overlay/l/ABC: No space left on device",
    "ERROR: timed out after 1800 seconds waiting for ssh on 10.111.112.1:22",
];

/// The JSON ingest API: per repository three changes (two contexts, retried
/// after failures, two merged), a nightly and a push run.
fn api_requests(rng: &mut fastrand::Rng, now: DateTime<Utc>) -> (Vec<Request>, usize) {
    let mut out = Vec::new();
    let mut merged = 0;
    for team in TEAMS {
        for service in SERVICES {
            let repo = format!("team-{team}/service-{service}");
            let mut post = |run: Value| {
                out.push(Request {
                    path: "/api/v1/runs",
                    headers: vec![("Authorization", format!("Bearer {TOKEN}"))],
                    body: run.to_string().into_bytes(),
                    repository: repo.clone(),
                })
            };
            for number in 1..=3i64 {
                let band = if number == 1 {
                    Band::Older
                } else {
                    Band::Recent
                };
                let commit = format!("{:040x}", rng.u64(..));
                let mut runs = Vec::new();
                let mut last_finish = now - Duration::days(1);
                for context in ["build", "test"] {
                    let mut attempt = 0;
                    loop {
                        let [q, s, f] = band.times(rng, now);
                        let red = rng.f64() < 0.35 && attempt < 2;
                        let state = if !red {
                            "success"
                        } else {
                            ["failure", "error", "timed_out"][rng.usize(0..3)]
                        };
                        let mut run = json!({
                            "repository": repo, "context": context, "commit": commit,
                            "attempt": attempt, "trigger": "pull_request", "state": state,
                            "queued_at": ts(q), "started_at": ts(s), "finished_at": ts(f),
                        });
                        if context == "test" {
                            let flaky = attempt == 0 && rng.f64() < 0.5;
                            run["tests"] = json!([
                                {"name": "suite::login", "outcome": if red { "failed" } else { "passed" },
                                 "message": red.then_some("AssertionError: expected 200, got 503")},
                                {"name": "suite::flaky_network", "outcome": if flaky { "failed" } else { "passed" }},
                                {"name": "suite::slow", "outcome": "passed", "duration_seconds": 31.5},
                                {"name": "suite::not_on_arm", "outcome": "skipped"},
                            ]);
                        } else if red {
                            let line = if rng.bool() {
                                SHARED_FAILURES[rng.usize(0..SHARED_FAILURES.len())].to_string()
                            } else {
                                format!("error: could not compile service {service} of team {team}")
                            };
                            run["log"] = format!("step 1\nstep 2\n{line}\nexit 1").into();
                        }
                        last_finish = last_finish.max(f);
                        runs.push(run);
                        if !red {
                            break;
                        }
                        attempt += 1;
                    }
                }
                // Changes 1 and 2 merge a few minutes after their last run; 3 stays open.
                let merged_at = (number < 3).then(|| ts(last_finish + Duration::minutes(2)));
                if merged_at.is_some() {
                    merged += 1;
                }
                for mut run in runs {
                    run["change"] = json!({"number": number, "merged_at": merged_at});
                    post(run);
                }
            }
            let [q, s, f] = Band::Older.times(rng, now);
            let state = ["success", "failure", "error", "cancelled", "timed_out"][rng.usize(0..5)];
            let mut nightly = json!({
                "repository": repo, "context": "nightly", "commit": format!("{:040x}", rng.u64(..)),
                "trigger": "schedule", "state": state,
                "queued_at": ts(q), "started_at": ts(s), "finished_at": ts(f),
            });
            if state == "failure" {
                nightly["log"] = SHARED_FAILURES[rng.usize(0..SHARED_FAILURES.len())].into();
            }
            post(nightly);
            let [q, s, f] = Band::Recent.times(rng, now);
            post(json!({
                "repository": repo, "context": "build", "commit": format!("{:040x}", rng.u64(..)),
                "trigger": "push", "state": if rng.bool() { "success" } else { "skipped" },
                "queued_at": ts(q), "started_at": ts(s), "finished_at": ts(f),
            }));
        }
    }
    (out, merged)
}

/// GitHub: per repository a `CI / build` job, a `CI / test` job that fails
/// on run attempt 1 and passes on attempt 2, and the pull request merged.
fn github_requests(rng: &mut fastrand::Rng, now: DateTime<Utc>) -> (Vec<Request>, usize) {
    let template =
        fixture("github/webhooks/workflow_job/completed.success.with-organization.payload.json");
    let pr_template = fixture("github/webhooks/pull_request/closed.payload.json");
    let mut out = Vec::new();
    let mut delivery = 0;
    let mut next_delivery = || {
        delivery += 1;
        format!("gh-delivery-{delivery}")
    };
    let mut job_id = 9_000_000u64;
    for (k, service) in SERVICES.iter().enumerate() {
        let repo = format!("gh-org/app-{service}");
        let sha = format!("{:040x}", rng.u64(..));
        let run_id = 7_000_000 + k as u64;
        let mut last_finish = now - Duration::days(1);
        for (name, attempt, conclusion) in [
            ("build", 1, "success"),
            ("test", 1, "failure"),
            ("test", 2, "success"),
        ] {
            job_id += 1;
            let [q, s, f] = Band::Recent.times(rng, now);
            last_finish = last_finish.max(f);
            let mut e = template.clone();
            e["repository"]["full_name"] = repo.clone().into();
            let j = &mut e["workflow_job"];
            j["id"] = job_id.into();
            j["run_id"] = run_id.into();
            j["run_attempt"] = attempt.into();
            j["head_sha"] = sha.clone().into();
            j["name"] = name.into();
            j["workflow_name"] = "CI".into();
            j["conclusion"] = conclusion.into();
            j["created_at"] = ts(q).into();
            j["started_at"] = ts(s).into();
            j["completed_at"] = ts(f).into();
            out.push(github(&repo, "workflow_job", next_delivery(), &e));
        }
        let mut pr = pr_template.clone();
        pr["repository"]["full_name"] = repo.clone().into();
        pr["pull_request"]["number"] = (100 + k).into();
        pr["pull_request"]["merged"] = true.into();
        pr["pull_request"]["merged_at"] = ts(last_finish + Duration::minutes(1)).into();
        pr["pull_request"]["head"]["sha"] = sha.into();
        out.push(github(&repo, "pull_request", next_delivery(), &pr));
    }
    (out, SERVICES.len())
}

fn github(repo: &str, event: &str, delivery: String, body: &Value) -> Request {
    let body = body.to_string().into_bytes();
    Request {
        path: "/webhooks/github",
        headers: vec![
            ("X-GitHub-Event", event.to_string()),
            ("X-GitHub-Delivery", delivery),
            ("X-Hub-Signature-256", sign(GITHUB_SECRET.as_bytes(), &body)),
        ],
        body,
        repository: repo.to_string(),
    }
}

/// GitLab: per project two job hooks (one failed) on a commit, and the MR merged.
fn gitlab_requests(rng: &mut fastrand::Rng, now: DateTime<Utc>) -> (Vec<Request>, usize) {
    let template = fixture("gitlab/webhooks/job.json");
    let mr_template = fixture("gitlab/webhooks/merge_request.json");
    let mut out = Vec::new();
    let mut build_id = 5_000_000u64;
    for (k, service) in SERVICES.iter().enumerate() {
        let project = format!("gl-group/sub/proj-{service}");
        let sha = format!("{:040x}", rng.u64(..));
        let mut last_finish = now - Duration::days(1);
        for (stage, name, status) in [("build", "compile", "success"), ("test", "unit", "failed")] {
            build_id += 1;
            let [q, s, f] = Band::Recent.times(rng, now);
            last_finish = last_finish.max(f);
            let mut job = template.clone();
            let o = job.as_object_mut().unwrap();
            o.insert("project".into(), json!({"path_with_namespace": project}));
            o.insert("sha".into(), sha.clone().into());
            o.insert("build_id".into(), build_id.into());
            o.insert("build_stage".into(), stage.into());
            o.insert("build_name".into(), name.into());
            o.insert("build_status".into(), status.into());
            o.insert("build_created_at".into(), gitlab_ts(q).into());
            o.insert("build_started_at".into(), gitlab_ts(s).into());
            o.insert("build_finished_at".into(), gitlab_ts(f).into());
            o.insert(
                "build_duration".into(),
                ((f - s).num_seconds() as f64).into(),
            );
            o.insert(
                "build_queued_duration".into(),
                ((s - q).num_seconds() as f64).into(),
            );
            o.insert("retries_count".into(), 0.into());
            o.insert("pipeline_id".into(), (800_000 + k as u64).into());
            out.push(gitlab(&project, "Job Hook", build_id.to_string(), &job));
        }
        let mut mr = mr_template.clone();
        mr["project"]["path_with_namespace"] = project.clone().into();
        let a = &mut mr["object_attributes"];
        a["iid"] = (200 + k).into();
        a["action"] = "merge".into();
        a["state"] = "merged".into();
        a["merged_at"] = gitlab_ts(last_finish + Duration::minutes(1)).into();
        a["last_commit"]["id"] = sha.into();
        out.push(gitlab(
            &project,
            "Merge Request Hook",
            format!("mr-{k}"),
            &mr,
        ));
    }
    (out, SERVICES.len())
}

fn gitlab(project: &str, event: &str, uuid: String, body: &Value) -> Request {
    Request {
        path: "/webhooks/gitlab",
        headers: vec![
            ("X-Gitlab-Event", event.to_string()),
            ("X-Gitlab-Token", GITLAB_TOKEN.to_string()),
            ("X-Gitlab-Event-UUID", uuid),
        ],
        body: body.to_string().into_bytes(),
        repository: project.to_string(),
    }
}

/// One scrape: series (`name{labels}`) → (family, type, value).
struct Scrape {
    samples: BTreeMap<String, (String, String, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        let (mut family, mut kind) = (String::new(), String::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                family = parts.next().unwrap().to_string();
                kind = parts.next().unwrap().to_string();
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(
                series.starts_with(family.trim_end_matches("_total")),
                "{series} after # TYPE {family}"
            );
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            };
            samples.insert(series.to_string(), (family.clone(), kind.clone(), value));
        }
        Scrape { samples }
    }

    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).map_or(0.0, |s| s.2)
    }

    fn value(&self, series: &str) -> Option<f64> {
        self.samples.get(series).map(|s| s.2)
    }

    /// The `ci_*` series that are not the exporter's own (`ci_exporter_*`).
    fn domain(&self) -> impl Iterator<Item = (&String, &(String, String, f64))> {
        self.samples
            .iter()
            .filter(|(k, _)| k.starts_with("ci_") && !k.starts_with("ci_exporter_"))
    }

    fn repositories(&self) -> BTreeSet<String> {
        self.samples
            .keys()
            .filter_map(|k| label(k, "repository"))
            .collect()
    }
}

fn label(series: &str, name: &str) -> Option<String> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let mut out = String::new();
    let mut chars = series[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Families whose series the test compares, and how (docs/scaling.md).
const ADDITIVE_GAUGES: &[&str] = &["ci_slo_window_events", "ci_tests", "ci_slo_tests"];
const PER_REPOSITORY_RATIOS: &[&str] = &[
    "ci_test_failure_ratio",
    "ci_test_flake_ratio",
    "ci_test_flip_ratio",
];
const RECOMPUTED_RATIOS: &[&str] = &[
    "ci_slo_sli_ratio",
    "ci_slo_burn_rate",
    "ci_slo_error_budget_remaining_ratio",
];
/// Fingerprint novelty is per database: a line new to shard 2 may be old on
/// shard 1, so the shards' sum is at least the unsharded count, not equal.
const PER_SHARD_NOVELTY: &[&str] = &["ci_failure_fingerprints_new_total"];

/// Every way in which shard 1 + shard 2 differs from the unsharded instance.
fn mismatches(single: &Scrape, s1: &Scrape, s2: &Scrape) -> Vec<String> {
    let mut bad = Vec::new();
    let shards = [s1, s2];
    let mut series: BTreeSet<&String> = BTreeSet::new();
    let mut families: BTreeMap<&str, &str> = BTreeMap::new();
    for s in [single, s1, s2] {
        for (k, (family, kind, _)) in s.domain() {
            series.insert(k);
            families.insert(family, kind);
        }
    }
    for (family, kind) in &families {
        let known = matches!(*kind, "counter" | "histogram")
            || ADDITIVE_GAUGES.contains(family)
            || PER_REPOSITORY_RATIOS.contains(family)
            || RECOMPUTED_RATIOS.contains(family)
            || *family == "ci_slo_objective_ratio";
        if !known {
            bad.push(format!(
                "family {family} ({kind}) is not classified: is it additive across shards? (tests/it/sharding.rs, docs/scaling.md)"
            ));
        }
    }
    let objective = |slo: &str| single.get(&format!("ci_slo_objective_ratio{{slo=\"{slo}\"}}"));
    for k in series {
        let family = [single, s1, s2]
            .iter()
            .find_map(|s| s.samples.get(k))
            .map(|s| s.0.as_str())
            .unwrap();
        let kind = families[family];
        let (one, a, b) = (single.value(k), s1.value(k), s2.value(k));
        let sum = s1.get(k) + s2.get(k);
        if PER_SHARD_NOVELTY.contains(&family) {
            if sum < single.get(k) {
                bad.push(format!("{k}: shards {sum} < unsharded {}", single.get(k)));
            }
        } else if kind == "counter" || kind == "histogram" || ADDITIVE_GAUGES.contains(&family) {
            if !close(sum, single.get(k)) {
                bad.push(format!(
                    "{k}: shard 1 {a:?} + shard 2 {b:?} != unsharded {one:?}"
                ));
            }
        } else if PER_REPOSITORY_RATIOS.contains(&family) {
            if a.is_some() == b.is_some() || a.or(b) != one {
                bad.push(format!("{k}: not on exactly one shard with the unsharded value: shard 1 {a:?}, shard 2 {b:?}, unsharded {one:?}"));
            }
        } else if family == "ci_slo_objective_ratio" {
            if a != one || b != one {
                bad.push(format!("{k}: objectives differ: {a:?} {b:?} {one:?}"));
            }
        } else if RECOMPUTED_RATIOS.contains(&family) {
            // The ratio from additive parts: good = sli × valid per shard.
            let slo = label(k, "slo").unwrap();
            let window = label(k, "window").unwrap_or_else(|| "28d".into());
            let events = format!("ci_slo_window_events{{slo=\"{slo}\",window=\"{window}\"}}");
            let sli = format!("ci_slo_sli_ratio{{slo=\"{slo}\",window=\"{window}\"}}");
            let valid: f64 = shards.iter().map(|s| s.get(&events)).sum();
            let good: f64 = shards.iter().map(|s| s.get(&sli) * s.get(&events)).sum();
            let budget = 1.0 - objective(&slo);
            let recomputed = match family {
                "ci_slo_sli_ratio" => (valid > 0.0).then(|| good / valid),
                "ci_slo_burn_rate" => (valid > 0.0).then(|| (1.0 - good / valid) / budget),
                _ if valid > 0.0 => Some(1.0 - (1.0 - good / valid) / budget),
                _ => Some(1.0),
            };
            let same = match (recomputed, one) {
                (Some(x), Some(y)) => close(x, y),
                (None, None) => true,
                _ => false,
            };
            if !same {
                bad.push(format!(
                    "{k}: recomputed from the shards {recomputed:?}, unsharded {one:?}"
                ));
            }
        }
    }
    // Each shard holds only its own repositories, and together all of them.
    let all = single.repositories();
    let mut union = BTreeSet::new();
    for (i, s) in shards.iter().enumerate() {
        let repos = s.repositories();
        for r in &repos {
            if owner(r, 2) != i as u32 + 1 {
                bad.push(format!(
                    "shard {} exports repository {r}, owned by shard {}",
                    i + 1,
                    owner(r, 2)
                ));
            }
        }
        union.extend(repos);
    }
    if union != all {
        bad.push(format!("repositories: shards {union:?}, unsharded {all:?}"));
    }
    bad
}

#[test]
fn two_shards_add_up_to_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let common = "[metrics]\nrefresh_interval = \"1s\"\n[slo]\nmerge_settle = \"1s\"\n[tests]\nrefresh_interval = \"1s\"\n";
    let urls = format!(
        "shard_urls = [\"http://127.0.0.1:{}\", \"http://127.0.0.1:{}\"]\n",
        ports[1], ports[2]
    );
    let env = [
        ("CI_SLO_API_TOKEN", TOKEN),
        ("CI_SLO_GITHUB_WEBHOOK_SECRET", GITHUB_SECRET),
        ("CI_SLO_GITLAB_WEBHOOK_TOKEN", GITLAB_TOKEN),
    ];
    let start = |port: u16, name: &str, head: String| {
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, format!("{head}{common}")).unwrap();
        let config = config.display().to_string();
        let db = dir.path().join(format!("{name}.db"));
        Exporter::try_start_on(port, dir.path(), &db, &["--config", &config], &env)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let single = start(ports[0], "single", String::new());
    let shard1 = start(ports[1], "shard1", format!("shard = \"1/2\"\n{urls}"));
    let shard2 = start(ports[2], "shard2", format!("shard = \"2/2\"\n{urls}"));
    let shards = [&shard1, &shard2];

    let now = Utc::now();
    let mut rng = fastrand::Rng::with_seed(20261124);
    let (mut requests, mut merged) = api_requests(&mut rng, now);
    for (more, m) in [
        github_requests(&mut rng, now),
        gitlab_requests(&mut rng, now),
    ] {
        requests.extend(more);
        merged += m;
    }
    let repositories: BTreeSet<&str> = requests.iter().map(|r| r.repository.as_str()).collect();
    let owned = |i: u32| repositories.iter().filter(|r| owner(r, 2) == i).count();
    assert!(
        repositories.len() == 36 && owned(1) >= 12 && owned(2) >= 12,
        "a fair split of the test's repositories: {} and {}",
        owned(1),
        owned(2)
    );

    // Send each request to the unsharded instance and to a shard picked
    // regardless of the owner: the other shard's requests are forwarded.
    let mut forwarded = 0;
    for (i, r) in requests.iter().enumerate() {
        let one = send(&single, r, &[]);
        assert!(
            (200..300).contains(&one.status),
            "unsharded: {} {}: {} {}",
            r.path,
            r.repository,
            one.status,
            one.body
        );
        let to = (i + i / 7) % 2;
        let got = send(shards[to], r, &[]);
        let owner_shard = owner(&r.repository, 2);
        assert_eq!(
            (got.status, &got.body["status"]),
            (one.status, &one.body["status"]),
            "shard {} ({} of {}, owned by {owner_shard}): {}",
            to + 1,
            r.path,
            r.repository,
            got.body
        );
        if owner_shard != to as u32 + 1 {
            forwarded += 1;
            assert_eq!(
                got.owner_header.as_deref(),
                Some(format!("{owner_shard}/2").as_str()),
                "a forwarded answer names the owner"
            );
        } else {
            assert_eq!(got.owner_header, None, "the owner answers itself");
        }
    }
    assert!(
        forwarded > requests.len() / 4,
        "{forwarded} of {}",
        requests.len()
    );

    // A request already forwarded once is never forwarded again (no loops
    // when shards disagree): the non-owner refuses it with 421, naming the owner.
    // A request that fails authentication is refused before any forwarding.
    for path in ["/api/v1/runs", "/webhooks/github", "/webhooks/gitlab"] {
        let r = requests
            .iter()
            .find(|r| r.path == path && owner(&r.repository, 2) == 2)
            .unwrap();
        let got = send(&shard1, r, &[("X-CI-SLO-Forwarded-By", "2/2")]);
        assert_eq!(got.status, 421, "{path}: {}", got.body);
        assert_eq!(got.owner_header.as_deref(), Some("2/2"));
        let error = got.body["error"].as_str().unwrap();
        assert!(
            error.contains(&r.repository) && error.contains("shard 2/2"),
            "{error}"
        );
        let mut forged = Request {
            path: r.path,
            headers: r.headers.clone(),
            body: r.body.clone(),
            repository: r.repository.clone(),
        };
        for (k, v) in forged.headers.iter_mut() {
            if ["Authorization", "X-Hub-Signature-256", "X-Gitlab-Token"].contains(k) {
                *v = "Bearer wrong".into();
            }
        }
        let got = send(&shard1, &forged, &[]);
        assert_eq!((got.status, got.owner_header), (401, None), "{path}");
    }

    // Wait until every instance decided its merged changes, then until the
    // scrapes (rebuilt every second) agree.
    let merged_on = |e: &Exporter| -> f64 {
        Scrape::parse(&e.scrape(false))
            .samples
            .iter()
            .filter(|(k, _)| k.starts_with("ci_merged_changes_total{"))
            .map(|(_, v)| v.2)
            .sum()
    };
    let per_shard = |i: u32| {
        // Merged changes of the repositories shard i owns: 2 per API repository, 1 per forge one.
        repositories
            .iter()
            .filter(|r| owner(r, 2) == i)
            .map(|r| if r.starts_with("team-") { 2 } else { 1 })
            .sum::<usize>() as f64
    };
    assert_eq!(per_shard(1) + per_shard(2), merged as f64);
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    for (e, want) in [
        (&single, merged as f64),
        (&shard1, per_shard(1)),
        (&shard2, per_shard(2)),
    ] {
        while merged_on(e) != want {
            assert!(
                Instant::now() < deadline,
                "{} merged changes decided, {want} expected:\n{}",
                merged_on(e),
                e.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let (one, s1, s2) = loop {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let scrapes = [&single, &shard1, &shard2].map(|e| Scrape::parse(&e.scrape(false)));
        let [one, s1, s2] = scrapes;
        let bad = mismatches(&one, &s1, &s2);
        if bad.is_empty() {
            break (one, s1, s2);
        }
        assert!(
            Instant::now() < deadline,
            "shard 1 + shard 2 != unsharded:\n{}",
            bad.join("\n")
        );
    };

    let mut compared: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, (family, _, _)) in one.domain() {
        *compared.entry(family.as_str()).or_default() += 1;
    }
    eprintln!(
        "{} requests ({forwarded} forwarded), {} repositories ({} on shard 1, {} on shard 2); series compared per family: {compared:?}",
        requests.len(),
        repositories.len(),
        owned(1),
        owned(2)
    );

    // The comparison covered every kind of data the requests carried.
    for family in [
        "ci_runs_total",
        "ci_merged_changes_total",
        "ci_slo_events_total",
        "ci_failures_total",
        "ci_failure_fingerprints_new_total",
        "ci_run_queue_duration_seconds",
        "ci_run_duration_seconds",
        "ci_change_retries_to_green",
        "ci_tests",
        "ci_slo_tests",
        "ci_test_failure_ratio",
        "ci_slo_sli_ratio",
        "ci_slo_burn_rate",
    ] {
        for (name, s) in [("unsharded", &one), ("shard 1", &s1), ("shard 2", &s2)] {
            assert!(
                s.domain().any(|(_, v)| v.0 == family),
                "{name} exports no {family}"
            );
        }
    }
    for slo in [
        "test_executions",
        "run_time",
        "queue_time",
        "first_attempt_green",
        "runs_completed",
    ] {
        for window in ["1h", "6h"] {
            let k = format!("ci_slo_window_events{{slo=\"{slo}\",window=\"{window}\"}}");
            assert!(
                s1.get(&k) > 0.0 && s2.get(&k) > 0.0 || slo == "runs_completed" && window == "1h",
                "{k}"
            );
        }
    }
    // Fingerprints shared by repositories on both shards are new on each.
    let novelty = |s: &Scrape| -> f64 {
        s.domain()
            .filter(|(_, v)| v.0 == "ci_failure_fingerprints_new_total")
            .map(|(_, v)| v.2)
            .sum()
    };
    assert!(novelty(&s1) + novelty(&s2) > novelty(&one));

    // Who is who, and what was forwarded.
    assert_eq!(
        one.value("ci_exporter_shard_info{shard=\"1\",shards=\"1\"}"),
        Some(1.0)
    );
    assert_eq!(
        s1.value("ci_exporter_shard_info{shard=\"1\",shards=\"2\"}"),
        Some(1.0)
    );
    assert_eq!(
        s2.value("ci_exporter_shard_info{shard=\"2\",shards=\"2\"}"),
        Some(1.0)
    );
    for s in [&s1, &s2] {
        assert!(
            s.get("ci_exporter_ingested_runs_total{source=\"api\",result=\"forwarded\"}") > 0.0
        );
    }
    // The one 421 of the ingest API above.
    assert_eq!(
        s1.get("ci_exporter_ingested_runs_total{source=\"api\",result=\"misdirected\"}"),
        1.0
    );
    let webhook_forwards: f64 = [&s1, &s2]
        .iter()
        .flat_map(|s| s.samples.iter())
        .filter(|(k, _)| {
            k.starts_with("ci_exporter_webhook_deliveries_total{")
                && k.contains("result=\"forwarded\"")
        })
        .map(|(_, v)| v.2)
        .sum();
    assert!(webhook_forwards >= 4.0, "{webhook_forwards}");
}

/// The one-shot commands write a shard's database directly: `ingest` refuses
/// a repository another shard owns (naming it), and `--print-config` shows
/// the shard.
#[test]
fn the_cli_ingest_refuses_another_shards_repository() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shard2.toml");
    std::fs::write(&config, "shard = \"2/2\"\n").unwrap();
    let (config, db) = (
        config.display().to_string(),
        dir.path().join("s2.db").display().to_string(),
    );
    let (mine, other) = ("acme/web-shop", "cockpit-project/cockpit");
    assert_eq!((owner(mine, 2), owner(other, 2)), (2, 1));
    let ingest = |repo: &str| {
        common::run(
            &[
                "--config",
                &config,
                "ingest",
                "--db",
                &db,
                "--repository",
                repo,
                "--context",
                "build",
                "--commit",
                "c0ffee",
                "--state",
                "success",
            ],
            dir.path(),
        )
    };
    let out = ingest(mine);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ingest(other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(other) && err.contains("shard 1/2") && err.contains("shard 2/2"),
        "{err}"
    );
    let out = common::run(
        &["--config", &config, "--print-config", "serve"],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("shard = \"2/2\""));
}

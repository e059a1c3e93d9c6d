//! A fake GitHub REST API (axum on 127.0.0.1:0) holding repositories with
//! merged pull requests, their Actions workflow runs and jobs, and scheduled
//! workflow runs: what the poller reads. Listings of pull requests carry
//! ETags (304 on If-None-Match); scheduled runs honour `created=>=T`; failed
//! jobs have a log. Data can be added while the exporter polls.
#![allow(dead_code)]

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub(crate) struct Job {
    pub id: u64,
    pub name: String,
    pub conclusion: String,
}

#[derive(Clone)]
struct WorkflowRun {
    id: u64,
    sha: String,
    event: &'static str,
    created_at: DateTime<Utc>,
    jobs: Vec<Job>,
}

#[derive(Clone)]
struct Pull {
    number: i64,
    sha: String,
    merged_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Default)]
struct Repo {
    pulls: Vec<Pull>,
    runs: Vec<WorkflowRun>,
}

#[derive(Default)]
pub(crate) struct Fake {
    repos: Mutex<BTreeMap<String, Repo>>,
    pub requests: AtomicU64,
    pub log_downloads: Mutex<BTreeMap<u64, u64>>,
    /// Every request answered, when started with [`start_recording`].
    pub calls: Mutex<Vec<Call>>,
}

/// One request the fake answered: who sent it (its `Authorization` header,
/// e.g. a token per exporter process), what, and when it arrived and was
/// answered.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub authorization: Option<String>,
    pub path: String,
    pub arrived: std::time::Instant,
    pub answered: std::time::Instant,
}

pub(crate) struct Running {
    pub fake: Arc<Fake>,
    pub addr: std::net::SocketAddr,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Fake {
    /// A pull request merged just now whose head commit ran one workflow
    /// (`run_id`, event `pull_request`) with these jobs.
    pub(crate) fn merge_pull(&self, repo: &str, number: i64, run_id: u64, jobs: Vec<Job>) {
        let now = Utc::now();
        let sha = format!("{:040x}", run_id);
        let mut repos = self.repos.lock().unwrap();
        let r = repos.entry(repo.to_string()).or_default();
        r.pulls.push(Pull {
            number,
            sha: sha.clone(),
            merged_at: now,
            updated_at: now,
        });
        r.runs.push(WorkflowRun {
            id: run_id,
            sha,
            event: "pull_request",
            created_at: now - chrono::Duration::minutes(5),
            jobs,
        });
    }

    /// A scheduled (nightly) workflow run created just now.
    pub(crate) fn schedule_run(&self, repo: &str, run_id: u64, jobs: Vec<Job>) {
        let mut repos = self.repos.lock().unwrap();
        repos
            .entry(repo.to_string())
            .or_default()
            .runs
            .push(WorkflowRun {
                id: run_id,
                sha: format!("{:040x}", run_id),
                event: "schedule",
                created_at: Utc::now(),
                jobs,
            });
    }
}

pub(crate) fn job(id: u64, name: &str, conclusion: &str) -> Job {
    Job {
        id,
        name: name.to_string(),
        conclusion: conclusion.to_string(),
    }
}

pub(crate) fn start(fake: Fake) -> Running {
    serve(fake, false)
}

/// [`start`], recording every request in [`Fake::calls`]: for tests that
/// check who polled when (two replicas never polling at once).
pub(crate) fn start_recording(fake: Fake) -> Running {
    serve(fake, true)
}

/// Serve `fake` on a free loopback port, recording the requests if `record`.
fn serve(fake: Fake, record: bool) -> Running {
    let fake = Arc::new(fake);
    let app = if record {
        Router::new().fallback(recorded)
    } else {
        Router::new().fallback(handle)
    }
    .with_state(fake.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    Running {
        fake,
        addr: rx.recv().unwrap(),
    }
}

async fn recorded(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    let arrived = std::time::Instant::now();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let path = req.uri().path().to_string();
    let response = handle(State(fake.clone()), req).await;
    fake.calls.lock().unwrap().push(Call {
        authorization,
        path,
        arrived,
        answered: std::time::Instant::now(),
    });
    response
}

fn query(req: &Request) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect()
}

fn etag_of(body: &str) -> String {
    let mut h: u64 = 1469598103934665603;
    for b in body.bytes() {
        h = (h ^ b as u64).wrapping_mul(1099511628211);
    }
    format!("W/\"{h:x}\"")
}

fn json_answer(body: Value, headers: &HeaderMap, with_etag: bool) -> Response {
    let text = body.to_string();
    let etag = etag_of(&text);
    if with_etag
        && headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == etag)
    {
        return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    let mut r = (
        StatusCode::OK,
        [
            ("content-type", "application/json".to_string()),
            ("x-ratelimit-remaining", "4999".to_string()),
            ("x-ratelimit-limit", "5000".to_string()),
        ],
        text,
    )
        .into_response();
    if with_etag {
        r.headers_mut().insert("etag", etag.parse().unwrap());
    }
    r
}

fn run_json(run: &WorkflowRun) -> Value {
    json!({"id": run.id, "run_attempt": 1, "event": run.event, "head_sha": run.sha,
           "run_started_at": ts(run.created_at), "created_at": ts(run.created_at)})
}

async fn handle(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    fake.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let q = query(&req);
    let headers = req.headers().clone();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let repos = fake.repos.lock().unwrap();
    let repo_of = |o: &str, n: &str| repos.get(&format!("{o}/{n}"));
    match parts.as_slice() {
        ["repos", o, n, "pulls"] => {
            let mut pulls: Vec<Pull> = repo_of(o, n).map(|r| r.pulls.clone()).unwrap_or_default();
            pulls.sort_by(|a, b| {
                b.updated_at
                    .cmp(&a.updated_at)
                    .then(b.number.cmp(&a.number))
            });
            let items: Vec<Value> = pulls
                .iter()
                .map(|p| {
                    json!({"number": p.number, "state": "closed", "merged_at": ts(p.merged_at),
                           "updated_at": ts(p.updated_at), "head": {"sha": p.sha}})
                })
                .collect();
            json_answer(Value::Array(items), &headers, true)
        }
        ["repos", _, _, "commits", _, "statuses"] => json_answer(json!([]), &headers, false),
        ["repos", _, _, "commits", _, "check-runs"] => {
            json_answer(json!({"total_count": 0, "check_runs": []}), &headers, false)
        }
        ["repos", o, n, "actions", "runs"] => {
            let runs: Vec<Value> = repo_of(o, n)
                .map(|r| {
                    r.runs
                        .iter()
                        .filter(|run| q.get("head_sha").is_none_or(|s| *s == run.sha))
                        .filter(|run| q.get("event").is_none_or(|e| e == run.event))
                        .filter(|run| {
                            q.get("created")
                                .and_then(|c| c.strip_prefix(">="))
                                .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
                                .is_none_or(|from| run.created_at >= from)
                        })
                        .map(run_json)
                        .collect()
                })
                .unwrap_or_default();
            json_answer(
                json!({"total_count": runs.len(), "workflow_runs": runs}),
                &headers,
                false,
            )
        }
        [
            "repos",
            o,
            n,
            "actions",
            "runs",
            id,
            "attempts",
            "1",
            "jobs",
        ] => {
            let id: u64 = id.parse().unwrap_or(0);
            let Some(run) = repo_of(o, n).and_then(|r| r.runs.iter().find(|r| r.id == id)) else {
                return (StatusCode::NOT_FOUND, "{\"message\":\"Not Found\"}").into_response();
            };
            let jobs: Vec<Value> = run
                .jobs
                .iter()
                .map(|j| {
                    json!({"id": j.id, "run_id": run.id, "run_attempt": 1, "head_sha": run.sha,
                           "name": j.name, "workflow_name": "CI", "status": "completed",
                           "conclusion": j.conclusion,
                           "created_at": ts(run.created_at),
                           "started_at": ts(run.created_at + chrono::Duration::seconds(30)),
                           "completed_at": ts(run.created_at + chrono::Duration::seconds(150)),
                           "html_url": format!("https://github.com/{o}/{n}/actions/runs/{}/job/{}", run.id, j.id)})
                })
                .collect();
            json_answer(
                json!({"total_count": jobs.len(), "jobs": jobs}),
                &headers,
                false,
            )
        }
        ["repos", _, _, "actions", "jobs", id, "logs"] => {
            let id: u64 = id.parse().unwrap_or(0);
            *fake.log_downloads.lock().unwrap().entry(id).or_default() += 1;
            (
                StatusCode::OK,
                "##[group]Run tests\nerror: could not resolve host: registry.example.org\n",
            )
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "{\"message\":\"Not Found\"}").into_response(),
    }
}

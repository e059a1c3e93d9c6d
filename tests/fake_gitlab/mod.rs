//! A fake GitLab API v4 (axum on 127.0.0.1:0) for the poll tests and the
//! backfill benchmark: projects, pipelines, jobs, traces, test reports,
//! merged MRs; ETags; injected 429/5xx answers; request counting.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(crate) struct Project {
    pub pipelines: Vec<Value>,
    pub jobs: HashMap<i64, Vec<Value>>,
    pub merge_requests: Vec<Value>,
    pub test_reports: HashMap<i64, Value>,
}

pub(crate) enum Trace {
    Text(String),
    /// An endless log: chunks of this line forever.
    Endless(String),
}

#[derive(Default)]
pub(crate) struct Fake {
    pub projects: Mutex<BTreeMap<String, Project>>,
    pub groups: Mutex<BTreeMap<String, Vec<String>>>,
    pub traces: Mutex<HashMap<i64, Trace>>,
    /// Statuses answered (with `Retry-After: inject_retry_after`, 0 unless
    /// set) before the next real answer.
    pub inject: Mutex<VecDeque<u16>>,
    pub inject_retry_after: AtomicU64,
    /// Groups whose project listing never ends (every page has a next one).
    pub endless_groups: Mutex<std::collections::BTreeSet<String>>,
    pub requests: AtomicU64,
    pub by_path: Mutex<BTreeMap<String, u64>>,
    pub trace_downloads: Mutex<BTreeMap<i64, u64>>,
    pub endless_bytes_sent: Arc<AtomicU64>,
}

pub(crate) struct Running {
    pub fake: Arc<Fake>,
    pub api_url: String,
}

pub(crate) fn start(fake: Fake) -> Running {
    let fake = Arc::new(fake);
    let app = Router::new().fallback(handle).with_state(fake.clone());
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
    let addr = rx.recv().unwrap();
    Running {
        fake,
        api_url: format!("http://{addr}/api/v4"),
    }
}

fn decode(s: &str) -> String {
    s.replace("%2F", "/").replace("%2f", "/")
}

fn query(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                decode(&v.replace("%3A", ":").replace("%2B", "+")),
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

/// A JSON list page with X-Next-Page and an ETag (304 on If-None-Match).
fn list(items: Vec<Value>, q: &HashMap<String, String>, headers: &HeaderMap) -> Response {
    let per_page: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(20);
    let page: usize = q
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let start = (page - 1) * per_page;
    let slice: Vec<Value> = items.iter().skip(start).take(per_page).cloned().collect();
    let next = if start + per_page < items.len() {
        (page + 1).to_string()
    } else {
        String::new()
    };
    let body = Value::Array(slice).to_string();
    let etag = etag_of(&body);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::HeaderName::from_static("x-next-page"), next),
            (
                header::HeaderName::from_static("ratelimit-remaining"),
                "1999".to_string(),
            ),
            (
                header::HeaderName::from_static("ratelimit-limit"),
                "2000".to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

fn after(item: &Value, field: &str, since: Option<&String>) -> bool {
    match (since, item[field].as_str()) {
        (Some(s), Some(v)) => v >= s.as_str(),
        _ => true,
    }
}

async fn handle(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    fake.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    *fake
        .by_path
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    if let Some(status) = fake.inject.lock().unwrap().pop_front() {
        return (
            StatusCode::from_u16(status).unwrap(),
            [(
                header::RETRY_AFTER,
                fake.inject_retry_after.load(Ordering::Relaxed).to_string(),
            )],
            "{\"message\":\"injected\"}",
        )
            .into_response();
    }
    let q = query(&req);
    let headers = req.headers().clone();
    let seg: Vec<&str> = path.trim_start_matches("/api/v4/").split('/').collect();
    match seg.as_slice() {
        ["groups", g, "projects"] if fake.endless_groups.lock().unwrap().contains(&decode(g)) => {
            let page: u64 = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
            // Its first page has an ETag: a poller that kept it would get a 304.
            let etag = "\"endless\"";
            if page == 1
                && headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v == etag)
            {
                return StatusCode::NOT_MODIFIED.into_response();
            }
            let mut r = (
                StatusCode::OK,
                [(
                    header::HeaderName::from_static("x-next-page"),
                    (page + 1).to_string(),
                )],
                "[]",
            )
                .into_response();
            if page == 1 {
                r.headers_mut().insert(header::ETAG, etag.parse().unwrap());
            }
            r
        }
        ["groups", g, "projects"] => {
            let groups = fake.groups.lock().unwrap();
            let items = groups
                .get(&decode(g))
                .map(|ps| {
                    ps.iter()
                        .map(|p| json!({"id": 1, "path_with_namespace": p}))
                        .collect()
                })
                .unwrap_or_default();
            list(items, &q, &headers)
        }
        ["projects", p, "pipelines"] => {
            let projects = fake.projects.lock().unwrap();
            let Some(project) = projects.get(&decode(p)) else {
                return (
                    StatusCode::NOT_FOUND,
                    "{\"message\":\"404 Project Not Found\"}",
                )
                    .into_response();
            };
            let mut items: Vec<Value> = project
                .pipelines
                .iter()
                .filter(|i| after(i, "updated_at", q.get("updated_after")))
                .filter(|i| q.get("sha").is_none_or(|s| i["sha"].as_str() == Some(s)))
                .cloned()
                .collect();
            items.sort_by(|a, b| a["updated_at"].as_str().cmp(&b["updated_at"].as_str()));
            list(items, &q, &headers)
        }
        ["projects", p, "pipelines", id, "jobs"] => {
            let projects = fake.projects.lock().unwrap();
            let id: i64 = id.parse().unwrap_or(0);
            let items = projects
                .get(&decode(p))
                .and_then(|pr| pr.jobs.get(&id).cloned())
                .unwrap_or_default();
            list(items, &q, &headers)
        }
        ["projects", p, "pipelines", id, "test_report"] => {
            let projects = fake.projects.lock().unwrap();
            let id: i64 = id.parse().unwrap_or(0);
            match projects
                .get(&decode(p))
                .and_then(|pr| pr.test_reports.get(&id))
            {
                Some(v) => (StatusCode::OK, v.to_string()).into_response(),
                None => (StatusCode::OK, "{\"test_suites\":[]}").into_response(),
            }
        }
        ["projects", p, "merge_requests"] => {
            let projects = fake.projects.lock().unwrap();
            let items = projects
                .get(&decode(p))
                .map(|pr| {
                    pr.merge_requests
                        .iter()
                        .filter(|i| after(i, "updated_at", q.get("updated_after")))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            list(items, &q, &headers)
        }
        ["projects", _, "jobs", id, "trace"] => {
            let id: i64 = id.parse().unwrap_or(0);
            *fake.trace_downloads.lock().unwrap().entry(id).or_default() += 1;
            let traces = fake.traces.lock().unwrap();
            match traces.get(&id) {
                Some(Trace::Text(t)) => (StatusCode::OK, t.clone()).into_response(),
                Some(Trace::Endless(line)) => {
                    let chunk = bytes_chunk(line);
                    let sent = fake.endless_bytes_sent.clone();
                    let stream = futures_util::stream::repeat_with(move || {
                        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        Ok::<_, std::io::Error>(chunk.clone())
                    });
                    Response::new(Body::from_stream(stream))
                }
                None => (StatusCode::OK, "job log\nERROR: something failed\n").into_response(),
            }
        }
        _ => (StatusCode::NOT_FOUND, "{\"message\":\"404 Not Found\"}").into_response(),
    }
}

fn bytes_chunk(line: &str) -> axum::body::Bytes {
    let mut s = String::new();
    while s.len() < 64 * 1024 {
        s.push_str(line);
    }
    axum::body::Bytes::from(s)
}

pub(crate) fn pipeline(id: i64, sha: &str, status: &str, source: &str, updated_at: &str) -> Value {
    json!({"id": id, "iid": id, "sha": sha, "ref": "main", "status": status, "source": source,
           "created_at": updated_at, "updated_at": updated_at,
           "web_url": format!("https://gitlab.example/p/-/pipelines/{id}")})
}

pub(crate) fn job(id: i64, stage: &str, name: &str, status: &str, created_at: &str) -> Value {
    json!({"id": id, "name": name, "stage": stage, "status": status,
           "created_at": created_at, "started_at": created_at, "finished_at": created_at,
           "duration": 120.5, "queued_duration": 4.25,
           "failure_reason": if status == "failed" { "script_failure" } else { "" },
           "web_url": format!("https://gitlab.example/p/-/jobs/{id}")})
}

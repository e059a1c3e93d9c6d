//! The poller against a fake GitHub: an axum server on 127.0.0.1:0 in the
//! test, counting every request it answers.

use crate::common;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ci_slo_exporter::config::Config;
use ci_slo_exporter::forge::context::Context;
use ci_slo_exporter::forge::driver::{self, Summary};
use ci_slo_exporter::forge::github::poll::Poller;
use ci_slo_exporter::forge::github::{GithubConfig, OwnerConfig};
use ci_slo_exporter::metrics::{MetricsHub, SelfMetrics};
use ci_slo_exporter::model::{Forge, RepositoryRef};
use ci_slo_exporter::store::writer::StoreHandle;
use ci_slo_exporter::store::{Policy, Store};
use common::{capture_logs, self_metric};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHA: &str = "3484a3fb816e0859fd6e1cea078d76385ff50625";

#[derive(Default)]
struct Fake {
    /// (path and query, conditional?)
    log: Vec<(String, bool)>,
    /// Scripted failures for a path, consumed in order.
    failures: HashMap<String, Vec<&'static str>>,
    /// "Now" of fake/history's merged pull requests (see `HISTORY_DAYS`).
    history_now: Option<chrono::DateTime<chrono::Utc>>,
}

/// fake/history: pull request n (1..=5) was merged (and last updated) this many
/// days before `history_now`; its head commit is `history_sha(n)`.
const HISTORY_DAYS: [i64; 5] = [2, 10, 20, 40, 60];

fn history_sha(n: usize) -> String {
    format!("{n:040x}")
}

type Shared = Arc<Mutex<Fake>>;

fn json_response(body: Value, etag: Option<&str>, headers: &HeaderMap) -> Response {
    if let (Some(etag), Some(given)) = (
        etag,
        headers.get("if-none-match").and_then(|v| v.to_str().ok()),
    ) && given == etag
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut r = axum::Json(body).into_response();
    if let Some(e) = etag {
        r.headers_mut().insert("etag", e.parse().unwrap());
    }
    r.headers_mut()
        .insert("x-ratelimit-remaining", "4999".parse().unwrap());
    r.headers_mut()
        .insert("x-ratelimit-limit", "5000".parse().unwrap());
    r
}

fn job(
    id: u64,
    attempt: u32,
    created: &str,
    started: &str,
    completed: &str,
    conclusion: &str,
) -> Value {
    json!({
        "id": id, "run_id": 77, "run_attempt": attempt, "head_sha": SHA, "name": "test",
        "workflow_name": "CI", "status": "completed", "conclusion": conclusion,
        "created_at": created, "started_at": started, "completed_at": completed,
        "html_url": format!("https://github.com/fake/repo-0/actions/runs/77/job/{id}")
    })
}

async fn handler(State(fake): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let scripted = {
        let mut f = fake.lock().unwrap();
        f.log
            .push((pq.clone(), headers.contains_key("if-none-match")));
        f.failures.get_mut(&path).and_then(|v| {
            if v.is_empty() {
                None
            } else {
                Some(v.remove(0))
            }
        })
    };
    match scripted {
        Some("429") => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down",
            )
                .into_response();
        }
        Some("secondary") => {
            return (
                StatusCode::FORBIDDEN,
                [("retry-after", "1")],
                axum::Json(json!({"message": "You have exceeded a secondary rate limit."})),
            )
                .into_response();
        }
        Some("500") => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Some("timeout") => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return (StatusCode::OK, "[]").into_response();
        }
        _ => {}
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if path == "/orgs/endless/repos" {
        // A listing that never ends: every page links to the next.
        let q = req.uri().query().unwrap_or_default();
        let page: u64 = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("page="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        // Its first page has an ETag: a poller that kept it would get a 304.
        if page == 1
            && headers
                .get("if-none-match")
                .is_some_and(|v| v == "\"endless\"")
        {
            return StatusCode::NOT_MODIFIED.into_response();
        }
        let host = headers.get("host").unwrap().to_str().unwrap().to_string();
        let mut r = axum::Json(json!([])).into_response();
        if page == 1 {
            r.headers_mut()
                .insert("etag", "\"endless\"".parse().unwrap());
        }
        r.headers_mut().insert(
            "link",
            format!(
                "<http://{host}/orgs/endless/repos?per_page=100&page={}>; rel=\"next\"",
                page + 1
            )
            .parse()
            .unwrap(),
        );
        return r;
    }
    if path == "/orgs/huge/repos" {
        // A JSON answer one byte larger than the 64 MiB cap.
        let mut body = vec![b' '; 64 * 1024 * 1024 - 1];
        body[0] = b'[';
        body.extend_from_slice(b"]");
        body.push(b' ');
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    if path == "/repos/fake/history/pulls" {
        // Two pages, newest update first, like the real listing.
        let now = fake.lock().unwrap().history_now.unwrap();
        let pr = |n: usize| {
            let at = (now - chrono::Duration::days(HISTORY_DAYS[n - 1])).to_rfc3339();
            json!({"number": n, "merged": true, "merged_at": at, "updated_at": at,
                   "head": {"sha": history_sha(n)}})
        };
        if pq.contains("page=2") {
            return json_response(json!([pr(4), pr(5)]), None, &headers);
        }
        let host = headers.get("host").unwrap().to_str().unwrap();
        let mut r = json_response(json!([pr(1), pr(2), pr(3)]), None, &headers);
        r.headers_mut().insert(
            "link",
            format!("<http://{host}/repos/fake/history/pulls?page=2>; rel=\"next\"")
                .parse()
                .unwrap(),
        );
        return r;
    }
    match parts.as_slice() {
        ["orgs", "fake", "repos"] => {
            let repos: Vec<Value> = (0..100)
                .map(|i| json!({"full_name": format!("fake/repo-{i}")}))
                .collect();
            json_response(Value::Array(repos), Some("\"repos-v1\""), &headers)
        }
        ["repos", "fake", name, "pulls"] => {
            let prs = if *name == "repo-0" || *name == "flaky" {
                let now = chrono::Utc::now();
                json!([{ "number": 7, "merged": true, "merged_at": (now - chrono::Duration::minutes(10)).to_rfc3339(),
                         "updated_at": (now - chrono::Duration::minutes(9)).to_rfc3339(), "head": {"sha": SHA} },
                       { "number": 8, "merged_at": null, "updated_at": now.to_rfc3339(), "head": {"sha": "ffff"} }])
            } else {
                json!([])
            };
            json_response(prs, Some(&format!("\"pulls-{name}\"")), &headers)
        }
        ["repos", "fake", _, "commits", _, "statuses"] => json_response(json!([]), None, &headers),
        ["repos", "fake", _, "commits", _, "check-runs"] => {
            json_response(json!({"total_count": 0, "check_runs": []}), None, &headers)
        }
        ["repos", "fake", name, "actions", "runs"] => {
            if pq.contains("event=schedule") || (*name != "repo-0" && *name != "flaky") {
                return json_response(
                    json!({"total_count": 0, "workflow_runs": []}),
                    None,
                    &headers,
                );
            }
            // Attempt 2 of run 77 was requested days after attempt 1.
            json_response(
                json!({"total_count": 1, "workflow_runs": [{"id": 77, "run_attempt": 2, "event": "pull_request",
                    "run_started_at": "2026-11-03T09:00:00Z"}]}),
                None,
                &headers,
            )
        }
        ["repos", "fake", _, "actions", "runs", "77", "attempts", "1"] => json_response(
            json!({"id": 77, "run_attempt": 1, "event": "pull_request", "run_started_at": "2026-11-01T09:00:00Z"}),
            None,
            &headers,
        ),
        [
            "repos",
            "fake",
            _,
            "actions",
            "runs",
            "77",
            "attempts",
            n,
            "jobs",
        ] => {
            let jobs = if *n == "1" {
                vec![job(
                    1001,
                    1,
                    "2026-11-01T09:00:00Z",
                    "2026-11-01T09:01:00Z",
                    "2026-11-01T09:04:18Z",
                    "failure",
                )]
            } else {
                // The re-run job carries the first attempt's created_at (two days
                // before the re-run was requested) and started before its run_started_at.
                vec![
                    job(
                        1002,
                        2,
                        "2026-11-01T09:00:00Z",
                        "2026-11-03T09:02:00Z",
                        "2026-11-03T09:05:00Z",
                        "success",
                    ),
                    job(
                        1003,
                        2,
                        "2026-11-01T09:00:00Z",
                        "2026-11-03T08:59:00Z",
                        "2026-11-03T09:03:00Z",
                        "success",
                    ),
                ]
            };
            let mut jobs = jobs;
            let last = jobs.len() - 1;
            jobs[last]["name"] = if *n == "1" {
                json!("test")
            } else {
                json!("lint")
            };
            json_response(
                json!({"total_count": jobs.len(), "jobs": jobs}),
                None,
                &headers,
            )
        }
        ["repos", "fake", _, "actions", "jobs", _, "logs"] => (
            StatusCode::OK,
            "##[group]Run tests\nerror: could not resolve host: registry.example.org\n",
        )
            .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Not Found"})),
        )
            .into_response(),
    }
}

async fn fake_github(fake: Shared) -> String {
    let app = Router::new().fallback(handler).with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn poller(api: &str, db: &std::path::Path, f: impl FnOnce(&mut GithubConfig)) -> Poller {
    poller_with(api, db, f, |_| {})
}

/// A poller of `api` into `db`, its configuration and context tweaked.
fn poller_with(
    api: &str,
    db: &std::path::Path,
    f: impl FnOnce(&mut GithubConfig),
    c: impl FnOnce(&mut Context),
) -> Poller {
    let mut g = GithubConfig {
        api_url: api.to_string(),
        retry_base: Duration::from_millis(10),
        ..Default::default()
    };
    f(&mut g);
    let config = Config::default();
    let mut ctx = Context::new(
        StoreHandle::start(db).unwrap(),
        Arc::new(Policy::from_config(&config)),
        Arc::new(config.classifier().unwrap()),
    );
    c(&mut ctx);
    Poller::new(ctx, g, None).unwrap()
}

async fn poll_once(p: &Poller) -> Summary {
    driver::poll_once(p).await.unwrap()
}

async fn backfill(p: &Poller, days: u32, restart: bool) -> Summary {
    driver::backfill(p, days, restart).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_poll_of_an_unchanged_owner_is_one_conditional_request_per_repository() {
    let fake: Shared = Default::default();
    let api = fake_github(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let p = poller(&api, &db, |g| {
        g.owners = vec![OwnerConfig {
            owner: "fake".into(),
            pattern: Some("^repo-".into()),
        }];
    });
    let first = poll_once(&p).await;
    assert_eq!(
        (first.scopes, first.failed.len(), first.merges),
        (100, 0, 1),
        "{first:?}"
    );
    assert_eq!(first.logs, 1, "the failed job's log is downloaded once");
    let before = fake.lock().unwrap().log.len();

    let second = poll_once(&p).await;
    assert_eq!(
        (second.not_modified, second.failed.len(), second.merges),
        (100, 0, 0),
        "{second:?}"
    );
    let log = fake.lock().unwrap().log[before..].to_vec();
    let mut per_repo: HashMap<String, usize> = HashMap::new();
    for (pq, conditional) in &log {
        assert!(
            conditional,
            "unconditional request on the second poll: {pq}"
        );
        if let Some(rest) = pq.strip_prefix("/repos/fake/") {
            *per_repo
                .entry(rest.split('/').next().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(per_repo.len(), 100);
    assert!(per_repo.values().all(|n| *n == 1), "{per_repo:?}");
    assert_eq!(log.len(), 101, "100 repositories + the owner's listing");

    // The data of the merged pull request: attempts, queue times, trigger, outcome.
    let store = Store::open(&db).unwrap();
    let repo = RepositoryRef {
        forge: Forge::Github,
        path: "fake/repo-0".into(),
    };
    let a0 = store
        .run_by_external_id(&repo, "job:1001")
        .unwrap()
        .unwrap();
    let a1 = store
        .run_by_external_id(&repo, "job:1002")
        .unwrap()
        .unwrap();
    let lint = store
        .run_by_external_id(&repo, "job:1003")
        .unwrap()
        .unwrap();
    assert_eq!((a0.attempt, a1.attempt, lint.attempt), (0, 1, 1));
    assert_eq!(a0.trigger.as_str(), "pull_request");
    let view = |id| store.run(id).unwrap().unwrap();
    assert_eq!(
        (view(a0.id).queue_seconds, view(a0.id).run_seconds),
        (Some(60.0), Some(198.0))
    );
    // Queue of the re-run starts when it was requested (09:00 on the 3rd), not two days earlier.
    assert_eq!(
        (view(a1.id).queue_seconds, view(a1.id).run_seconds),
        (Some(120.0), Some(180.0))
    );
    // Started before it was requested: no queue time at all, never a negative one.
    assert_eq!(
        (view(lint.id).queue_seconds, view(lint.id).run_seconds),
        (None, Some(240.0))
    );
    let failures = view(a0.id).failures;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(store.has_log(a0.id).unwrap());
    assert!(
        !store.has_log(a1.id).unwrap(),
        "logs of green jobs are not downloaded"
    );
    let rejections: f64 = store
        .connection()
        .query_row(
            "SELECT value FROM metric_counters WHERE family = 'ci_exporter_data_quality_rejections' AND labels LIKE '%negative_queue_time%'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0.0);
    assert_eq!(rejections, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_errors_and_timeouts_are_waited_out_and_the_data_is_complete() {
    let fake: Shared = Default::default();
    fake.lock().unwrap().failures.insert(
        "/repos/fake/flaky/pulls".into(),
        vec!["429", "secondary", "500", "timeout", "500"],
    );
    let api = fake_github(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let p = poller(&api, &db, |g| {
        g.repositories = vec!["fake/flaky".into()];
        g.request_timeout = Duration::from_millis(500);
    });
    let started = Instant::now();
    let stats = poll_once(&p).await;
    let waited = started.elapsed();
    assert_eq!((stats.failed.len(), stats.merges), (0, 1), "{stats:?}");
    assert!(
        waited >= Duration::from_secs(2),
        "two Retry-After: 1 honoured, waited {waited:?}"
    );
    let pulls = fake
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|(pq, _)| pq.starts_with("/repos/fake/flaky/pulls"))
        .count();
    assert_eq!(pulls, 6, "five failures, then the answer");
    let store = Store::open(&db).unwrap();
    let repo = RepositoryRef {
        forge: Forge::Github,
        path: "fake/flaky".into(),
    };
    for job in ["job:1001", "job:1002", "job:1003"] {
        assert!(
            store.run_by_external_id(&repo, job).unwrap().is_some(),
            "{job} missing"
        );
    }

    // A bounded number of retries: a repository that always fails gives up.
    fake.lock()
        .unwrap()
        .failures
        .insert("/repos/fake/flaky/pulls".into(), vec!["500"; 20]);
    let p = poller(&api, &db, |g| {
        g.repositories = vec!["fake/flaky".into()];
        g.max_retries = 2;
    });
    let stats = poll_once(&p).await;
    assert_eq!(stats.failed.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shard_polls_only_the_repositories_it_owns() {
    use ci_slo_exporter::shard::Shard;
    let fake: Shared = Default::default();
    let api = fake_github(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut polled: Vec<std::collections::BTreeSet<String>> = Vec::new();
    for i in 1..=3 {
        let shard = Shard::new(i, 3).unwrap();
        let db = dir.path().join(format!("db-{i}.sqlite"));
        let owners = |g: &mut GithubConfig| {
            g.owners = vec![OwnerConfig {
                owner: "fake".into(),
                pattern: Some("^repo-".into()),
            }];
        };
        let p = poller_with(&api, &db, owners, |c| c.shard = shard);
        let before = fake.lock().unwrap().log.len();
        let stats = poll_once(&p).await;
        assert_eq!(stats.failed.len(), 0, "{stats:?}");
        let repos: std::collections::BTreeSet<String> = fake.lock().unwrap().log[before..]
            .iter()
            .filter_map(|(pq, _)| pq.strip_prefix("/repos/fake/"))
            .map(|rest| format!("fake/{}", rest.split('/').next().unwrap()))
            .collect();
        assert_eq!(stats.scopes, repos.len());
        assert!(
            repos.iter().all(|r| shard.owns(r)),
            "shard {shard} polled another shard's repository: {repos:?}"
        );
        polled.push(repos);
    }
    // Together the shards poll each of the owner's 100 repositories exactly once.
    let total: usize = polled.iter().map(|p| p.len()).sum();
    let union: std::collections::BTreeSet<&String> = polled.iter().flatten().collect();
    assert_eq!((total, union.len()), (100, 100));
    assert!(
        polled.iter().all(|p| p.len() > 20),
        "{:?}",
        polled.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
}

/// The fake/history pull requests whose head commit a backfill fetched since
/// `from` (an index into the fake's log), in order.
fn fetched_history(fake: &Shared, from: usize) -> Vec<usize> {
    fake.lock().unwrap().log[from..]
        .iter()
        .filter_map(|(pq, _)| {
            let sha = pq
                .strip_prefix("/repos/fake/history/commits/")?
                .strip_suffix("/statuses?per_page=100")?;
            (1..=5).find(|n| history_sha(*n) == sha)
        })
        .collect()
}

fn merged_history(db: &std::path::Path) -> Vec<i64> {
    let store = Store::open(db).unwrap();
    let mut stmt = store
        .connection()
        .prepare(
            "SELECT c.number FROM changes c JOIN repositories r ON r.id = c.repository_id
             WHERE r.path = 'fake/history' AND c.merged_at IS NOT NULL ORDER BY c.number",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_with_more_days_reaches_further_back_and_resumes_without_gap_or_duplicate() {
    let fake: Shared = Default::default();
    fake.lock().unwrap().history_now = Some(chrono::Utc::now());
    let api = fake_github(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let p = poller(&api, &db, |g| {
        g.repositories = vec!["fake/history".into()];
        g.max_retries = 1;
    });

    // 30 days: the three newest, oldest first.
    let mark = fake.lock().unwrap().log.len();
    let stats = backfill(&p, 30, false).await;
    assert_eq!((stats.failed.len(), stats.merges), (0, 3), "{stats:?}");
    assert_eq!(fetched_history(&fake, mark), vec![3, 2, 1]);
    assert_eq!(merged_history(&db), vec![1, 2, 3]);

    // Again: it continues from its cursor (only the newest, the cursor's own, again).
    let mark = fake.lock().unwrap().log.len();
    let stats = backfill(&p, 30, false).await;
    assert_eq!(stats.failed.len(), 0, "{stats:?}");
    assert_eq!(fetched_history(&fake, mark), vec![1]);

    // 90 days: the older two, newest first, and none of the 30 days again. The
    // oldest one fails (a GitHub outage): the run stops there.
    let sha5 = format!("/repos/fake/history/commits/{}/statuses", history_sha(5));
    fake.lock()
        .unwrap()
        .failures
        .insert(sha5.clone(), vec!["500"; 4]);
    let mark = fake.lock().unwrap().log.len();
    let stats = backfill(&p, 90, false).await;
    assert_eq!(stats.failed.len(), 1, "{stats:?}");
    assert_eq!(fetched_history(&fake, mark), vec![4, 5, 5]);
    assert_eq!(merged_history(&db), vec![1, 2, 3, 4]);

    // Resumed: from where it stopped, to the end, no gap.
    fake.lock().unwrap().failures.remove(&sha5);
    let mark = fake.lock().unwrap().log.len();
    let stats = backfill(&p, 90, false).await;
    assert_eq!(stats.failed.len(), 0, "{stats:?}");
    assert_eq!(fetched_history(&fake, mark), vec![4, 5, 1]);
    assert_eq!(merged_history(&db), vec![1, 2, 3, 4, 5]);

    // Fewer days than covered: nothing older again.
    let mark = fake.lock().unwrap().log.len();
    backfill(&p, 7, false).await;
    assert_eq!(fetched_history(&fake, mark), vec![1]);

    // --restart: the whole window again, oldest first; stored once.
    let mark = fake.lock().unwrap().log.len();
    let stats = backfill(&p, 90, true).await;
    assert_eq!((stats.failed.len(), stats.merges), (0, 5), "{stats:?}");
    assert_eq!(fetched_history(&fake, mark), vec![5, 4, 3, 2, 1]);
    assert_eq!(merged_history(&db), vec![1, 2, 3, 4, 5]);
}

/// The same client policy as GitLab's: a listing stops at 10,000 pages, and
/// that is logged (naming the endpoint) and counted, not silent.
#[tokio::test(flavor = "current_thread")]
async fn a_listing_cut_at_the_page_limit_is_logged_and_counted() {
    let (logs, _guard) = capture_logs();
    let fake: Shared = Default::default();
    let api = fake_github(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(MetricsHub::new(SelfMetrics::new()));
    let owners = |g: &mut GithubConfig| {
        g.owners = vec![OwnerConfig {
            owner: "endless".into(),
            pattern: None,
        }];
    };
    let db = dir.path().join("db.sqlite");
    let p = poller_with(&api, &db, owners, |c| c.hub = Some(hub.clone()));
    let stats = poll_once(&p).await;
    assert_eq!((stats.failed.len(), stats.scopes), (0, 0), "{stats:?}");
    let listing_requests = || {
        fake.lock()
            .unwrap()
            .log
            .iter()
            .filter(|(pq, _)| pq.starts_with("/orgs/endless/repos"))
            .count()
    };
    assert_eq!(listing_requests(), 10_000, "the page limit");
    assert_eq!(
        self_metric(
            &hub,
            "ci_exporter_forge_page_limit_reached",
            &[("forge", "github"), ("endpoint", "repos")]
        ),
        1.0
    );
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("WARN") && logs.contains("page limit") && logs.contains("endpoint=\"repos\""),
        "{logs}"
    );
    // The cut listing's first-page ETag was not kept: the next round reads
    // the listing again instead of taking a 304 for the unread rest.
    poll_once(&p).await;
    assert_eq!(
        listing_requests(),
        20_000,
        "the second round read the listing again"
    );
}

/// JSON answers are capped at 64 MiB like GitLab's: a larger one is an
/// undecodable answer, counted as `kind="decode"`, and the poll fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_larger_than_the_cap_is_refused_and_counted() {
    let fake: Shared = Default::default();
    let api = fake_github(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(MetricsHub::new(SelfMetrics::new()));
    let owners = |g: &mut GithubConfig| {
        g.owners = vec![OwnerConfig {
            owner: "huge".into(),
            pattern: None,
        }];
    };
    let db = dir.path().join("db.sqlite");
    let p = poller_with(&api, &db, owners, |c| c.hub = Some(hub.clone()));
    let error = driver::poll_once(&p).await.unwrap_err();
    assert!(error.to_string().contains("undecodable"), "{error}");
    assert_eq!(
        self_metric(
            &hub,
            "ci_exporter_forge_errors",
            &[
                ("forge", "github"),
                ("endpoint", "repos"),
                ("kind", "decode")
            ]
        ),
        1.0
    );
}

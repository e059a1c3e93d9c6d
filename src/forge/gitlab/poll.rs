//! Polling and backfill of GitLab projects through the REST API v4.
//!
//! Per project and round: one conditional request for the pipelines updated
//! since the project's cursor (`updated_after`, `order_by=updated_at`,
//! `sort=asc`, `If-None-Match`); nothing changed → that one request (a `304`,
//! or an empty page whose ETag is kept for next time). For each changed
//! pipeline: its jobs with `include_retried=true` (retries become attempts
//! 0..n per `stage / name`, by creation time then id), the pipeline as a run
//! of context `pipeline`, the test report when enabled, and the trace of each
//! failed job that has no stored log yet: streamed, cut at
//! `trace_max_bytes` with a marker (the rest is never read), classified on
//! the clean text with GitLab's section timings kept. When pipelines changed,
//! merged MRs since the MR cursor are recorded (their head pipeline is fetched
//! when none of its runs is stored). Cursors advance only after what they
//! cover is committed, so an interrupted poll or backfill resumes.
//!
//! Requests: `RateLimit-*` headers into gauges, `429` waits `Retry-After`,
//! `5xx` and network errors back off exponentially with jitter (backon).

use super::wire::{ApiJob, ApiMergeRequest, ApiPipeline, ApiProject, TestReport};
use super::{
    AttemptHint, DownloadTraces, GitlabConfig, GitlabError, PIPELINE_CONTEXT, PlannedRun,
    job_context, mr_from_ref, parse_time, run_state, store_runs, times, trigger,
};
use crate::classify::Classifier;
use crate::deps::Extractor;
use crate::ingest::{classify_run, failures_from};
use crate::metrics::MetricsHub;
use crate::model::{ChangeRef, Forge, NewRun, RepositoryRef, RunState, TestOutcome, TestResult};
use crate::store::writer::StoreHandle;
use crate::store::{Policy, SyncState};
use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use reqwest::header::{ETAG, HeaderMap, IF_NONE_MATCH, LINK, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FORGE: &str = "gitlab";
/// Largest JSON page accepted.
const MAX_JSON_BYTES: u64 = 64 * 1024 * 1024;
const KIND_PIPELINES: &str = "pipelines";
const KIND_BACKFILL: &str = "pipelines_backfill";
const KIND_MERGES: &str = "merge_requests";

/// What the poller did, for tests, the benchmark and logs.
#[derive(Debug, Default)]
pub struct PollStats {
    pub requests: AtomicU64,
    pub not_modified: AtomicU64,
    pub traces: AtomicU64,
    /// Bytes of job logs received from the network (at most the cap plus one chunk per trace).
    pub trace_bytes_read: AtomicU64,
    pub by_endpoint: Mutex<BTreeMap<String, u64>>,
}

impl PollStats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn traces(&self) -> u64 {
        self.traces.load(Ordering::Relaxed)
    }
    pub fn endpoints(&self) -> BTreeMap<String, u64> {
        self.by_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One round's outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    pub projects: usize,
    pub pipelines: usize,
    pub runs: usize,
    pub traces: usize,
    pub merges: usize,
    /// Projects whose poll failed this round (they resume from their cursor next time).
    pub failed: Vec<String>,
}

/// Where a round starts for a project without (or regardless of) its cursor.
#[derive(Debug, Clone, Copy)]
pub enum Since {
    /// `serve`: from the cursor; without one, from this time.
    Poll(DateTime<Utc>),
    /// `backfill --days N`: from this time, or the backfill cursor when later.
    Backfill(DateTime<Utc>),
}

pub struct Poller {
    config: GitlabConfig,
    /// Only projects this shard owns are polled (docs/scaling.md).
    shard: crate::shard::Shard,
    token: Option<String>,
    http: reqwest::Client,
    store: StoreHandle,
    policy: Arc<Policy>,
    classifier: Arc<Classifier>,
    deps: Arc<Extractor>,
    hub: Option<Arc<MetricsHub>>,
    pub stats: Arc<PollStats>,
}

struct Page<T> {
    items: Vec<T>,
    etag: Option<String>,
    next: Option<Url>,
}

enum Fetched<T> {
    NotModified,
    Page(Page<T>),
}

impl Poller {
    pub fn new(
        config: GitlabConfig,
        token: Option<String>,
        store: StoreHandle,
        policy: Arc<Policy>,
        classifier: Arc<Classifier>,
        hub: Option<Arc<MetricsHub>>,
    ) -> Result<Poller, GitlabError> {
        let http =
            crate::forge::http_client(config.request_timeout).map_err(|e| GitlabError::Http {
                endpoint: "client".into(),
                source: e,
            })?;
        Ok(Poller {
            config,
            shard: crate::shard::Shard::ALL,
            token,
            http,
            store,
            policy,
            classifier,
            deps: Arc::new(Extractor::with_defaults()),
            hub,
            stats: Arc::new(PollStats::default()),
        })
    }

    /// Poll only the projects `shard` owns (the others belong to other shards).
    pub fn with_shard(mut self, shard: crate::shard::Shard) -> Poller {
        self.shard = shard;
        self
    }

    /// Read package versions from downloaded traces with these rules
    /// (the shipped ones by default).
    pub fn with_dependencies(mut self, deps: Arc<Extractor>) -> Poller {
        self.deps = deps;
        self
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url, GitlabError> {
        let base = self.config.api_url.trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}{path}"))
            .map_err(|e| GitlabError::Config(format!("api_url: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    fn count(&self, endpoint: &str, status: &str) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .stats
            .by_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(endpoint.to_string())
            .or_default() += 1;
        if let Some(hub) = &self.hub {
            hub.self_metrics
                .count_forge_request(FORGE, endpoint, status);
        }
    }

    fn count_error(&self, endpoint: &str, kind: &str) {
        if let Some(hub) = &self.hub {
            hub.self_metrics.count_forge_error(FORGE, endpoint, kind);
        }
    }

    /// [`read_capped`], counting a body that breaks off (reset, cut, stalled).
    async fn read_body(
        &self,
        resp: reqwest::Response,
        cap: u64,
        endpoint: &str,
    ) -> Result<(Vec<u8>, bool, u64), GitlabError> {
        read_capped(resp, cap, endpoint).await.inspect_err(|e| {
            if let GitlabError::Http { source, .. } = e {
                self.count_error(endpoint, crate::forge::error_kind(source));
            }
        })
    }

    fn rate_limits(&self, headers: &HeaderMap) {
        let Some(hub) = &self.hub else { return };
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map(|v| v as f64)
        };
        hub.self_metrics.set_rate_limit(
            FORGE,
            num("ratelimit-remaining"),
            num("ratelimit-limit"),
            num("ratelimit-reset"),
        );
    }

    /// One GET with retries: 429 waits Retry-After, 5xx and network errors
    /// back off with jitter. 2xx and 304 are returned; other statuses are errors.
    async fn get(
        &self,
        endpoint: &'static str,
        url: &Url,
        etag: Option<&str>,
    ) -> Result<reqwest::Response, GitlabError> {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.config.retry_base_delay)
            .with_max_delay(self.config.retry_base_delay.saturating_mul(64))
            .with_max_times(self.config.max_retries as usize)
            .with_jitter()
            .build();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let mut req = self.http.get(url.clone());
            if let Some(t) = &self.token {
                req = req.header("PRIVATE-TOKEN", t);
            }
            if let Some(e) = etag {
                req = req.header(IF_NONE_MATCH, e);
            }
            let last = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    self.count(endpoint, status.as_str());
                    self.rate_limits(resp.headers());
                    if status.is_success() {
                        return Ok(resp);
                    }
                    if status == StatusCode::NOT_MODIFIED {
                        self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
                        if let Some(hub) = &self.hub {
                            hub.self_metrics.count_not_modified(FORGE);
                        }
                        return Ok(resp);
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let wait =
                            retry_after(resp.headers()).unwrap_or(self.config.retry_base_delay);
                        if wait > self.config.max_retry_after || attempts > self.config.max_retries
                        {
                            return Err(GitlabError::GaveUp {
                                endpoint: endpoint.into(),
                                attempts,
                                last: format!("429, Retry-After {}s", wait.as_secs()),
                            });
                        }
                        tracing::info!(
                            endpoint,
                            wait_s = wait.as_secs_f64(),
                            "GitLab rate limit: waiting"
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if !status.is_server_error() {
                        let body = resp.text().await.unwrap_or_default();
                        return Err(GitlabError::Status {
                            endpoint: endpoint.into(),
                            status: status.as_u16(),
                            body: body.chars().take(300).collect(),
                        });
                    }
                    format!("HTTP {status}")
                }
                Err(e) => {
                    self.count(endpoint, "error");
                    self.count_error(endpoint, crate::forge::error_kind(&e));
                    e.to_string()
                }
            };
            match backoff.next() {
                Some(delay) => {
                    tracing::debug!(endpoint, attempts, %last, delay_ms = delay.as_millis() as u64, "GitLab API: retrying");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(GitlabError::GaveUp {
                        endpoint: endpoint.into(),
                        attempts,
                        last,
                    });
                }
            }
        }
    }

    /// One page of a JSON list (conditional when `etag` is given).
    async fn page<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: &Url,
        etag: Option<&str>,
    ) -> Result<Fetched<T>, GitlabError> {
        let resp = self.get(endpoint, url, etag).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        let headers = resp.headers().clone();
        let (body, truncated, _) = self.read_body(resp, MAX_JSON_BYTES, endpoint).await?;
        if truncated {
            return Err(GitlabError::Decode {
                endpoint: endpoint.into(),
                reason: format!("larger than {MAX_JSON_BYTES} bytes"),
            });
        }
        let items: Vec<T> = serde_json::from_slice(&body).map_err(|e| {
            self.count_error(endpoint, "decode");
            GitlabError::Decode {
                endpoint: endpoint.into(),
                reason: e.to_string(),
            }
        })?;
        Ok(Fetched::Page(Page {
            items,
            etag: headers
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            next: next_page(&headers, url),
        }))
    }

    /// Every page of a JSON list.
    async fn all<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: Url,
    ) -> Result<Vec<T>, GitlabError> {
        let mut out = Vec::new();
        let mut next = Some(url);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 10_000 {
                break;
            }
            if let Fetched::Page(p) = self.page::<T>(endpoint, &url, None).await? {
                out.extend(p.items);
                next = p.next;
            }
        }
        Ok(out)
    }

    /// The projects to poll: the listed ones, then each group's matching
    /// ones; on a shard, only those it owns.
    pub async fn projects(&self) -> Result<Vec<String>, GitlabError> {
        let mut out = self.all_projects().await?;
        if self.shard.is_sharded() {
            let before = out.len();
            out.retain(|p| self.shard.owns(p));
            tracing::debug!(shard = %self.shard, owned = out.len(), of = before, "GitLab projects of this shard");
        }
        Ok(out)
    }

    async fn all_projects(&self) -> Result<Vec<String>, GitlabError> {
        let mut out: Vec<String> = self.config.projects.clone();
        for g in &self.config.groups {
            let pattern = match &g.pattern {
                Some(p) => {
                    Some(regex::Regex::new(p).map_err(|e| GitlabError::Config(e.to_string()))?)
                }
                None => None,
            };
            let url = self.url(
                &format!("/groups/{}/projects", encode(&g.group)),
                &[
                    ("include_subgroups", g.include_subgroups.to_string()),
                    ("archived", "false".into()),
                    ("simple", "true".into()),
                    ("per_page", "100".into()),
                    ("order_by", "id".into()),
                    ("sort", "asc".into()),
                ],
            )?;
            let projects: Vec<ApiProject> = self.all("group_projects", url).await?;
            for p in projects {
                if !p.archived
                    && pattern
                        .as_ref()
                        .is_none_or(|re| re.is_match(&p.path_with_namespace))
                    && !out.contains(&p.path_with_namespace)
                {
                    out.push(p.path_with_namespace);
                }
            }
        }
        Ok(out)
    }

    /// One round over every project. A project that fails is logged and
    /// reported; the others go on.
    pub async fn poll_once(
        &self,
        since: Since,
        progress: &(dyn Fn(usize, usize, &PollReport) + Sync),
    ) -> Result<PollReport, GitlabError> {
        let projects = self.projects().await?;
        let mut report = PollReport {
            projects: projects.len(),
            ..PollReport::default()
        };
        for (i, project) in projects.iter().enumerate() {
            if let Err(e) = self.poll_project(project, since, &mut report).await {
                tracing::warn!(project, error = %e, "GitLab poll of a project failed; it resumes from its cursor");
                report.failed.push(project.clone());
            }
            progress(i + 1, projects.len(), &report);
        }
        Ok(report)
    }

    async fn sync_state(&self, scope: &str, kind: &str) -> Result<SyncState, GitlabError> {
        let (scope, kind) = (scope.to_string(), kind.to_string());
        Ok(self
            .store
            .read(move |s| s.sync_state(Forge::Gitlab, &scope, &kind))
            .await?
            .unwrap_or_default())
    }

    async fn set_sync_state(
        &self,
        scope: &str,
        kind: &str,
        state: SyncState,
    ) -> Result<(), GitlabError> {
        let (scope, kind) = (scope.to_string(), kind.to_string());
        self.store
            .write(move |s| s.set_sync_state(Forge::Gitlab, &scope, &kind, &state))
            .await?;
        Ok(())
    }

    /// Poll one project's pipelines (and, when they changed, its merged MRs).
    pub async fn poll_project(
        &self,
        project: &str,
        since: Since,
        report: &mut PollReport,
    ) -> Result<(), GitlabError> {
        let now = Utc::now();
        let (kind, floor) = match since {
            Since::Poll(t) => (KIND_PIPELINES, t),
            Since::Backfill(t) => (KIND_BACKFILL, t),
        };
        let state = self.sync_state(project, kind).await?;
        let cursor = state.cursor.as_deref().and_then(parse_time);
        let start = match (since, cursor) {
            (Since::Poll(_), Some(c)) => c,
            (Since::Backfill(_), Some(c)) => c.max(floor),
            (_, None) => floor,
        };
        let enc = encode(project);
        let first = self.url(
            &format!("/projects/{enc}/pipelines"),
            &[
                ("updated_after", rfc3339(start)),
                ("order_by", "updated_at".into()),
                ("sort", "asc".into()),
                ("per_page", "100".into()),
            ],
        )?;
        // The stored ETag belongs to the URL of the stored cursor.
        let etag = if cursor == Some(start) {
            state.etag.clone()
        } else {
            None
        };
        let mut next = Some(first);
        let mut newest = start;
        // The cursor as last written this round.
        let mut committed = start;
        let mut changed = false;
        let mut is_first = true;
        while let Some(url) = next.take() {
            let page = match self
                .page::<ApiPipeline>(
                    "pipelines",
                    &url,
                    if is_first { etag.as_deref() } else { None },
                )
                .await?
            {
                Fetched::NotModified => break,
                Fetched::Page(p) => p,
            };
            let fresh: Vec<&ApiPipeline> = page
                .items
                .iter()
                .filter(|p| {
                    p.updated_at
                        .as_deref()
                        .and_then(parse_time)
                        .is_none_or(|u| u > start)
                })
                .collect();
            let before_page = newest;
            for p in &fresh {
                self.sync_pipeline(project, p, report).await?;
                if let Some(u) = p.updated_at.as_deref().and_then(parse_time) {
                    newest = newest.max(u);
                }
                changed = true;
            }
            next = page.next;
            // Advance only after the page's pipelines are committed. While
            // pages follow, stop short of this page's last update time: the
            // next page can hold more pipelines updated at that same instant,
            // and a round cut off between the pages must read them again next
            // time (`updated_after` is inclusive, the filter above is not).
            let page_last = page
                .items
                .iter()
                .filter_map(|p| p.updated_at.as_deref().and_then(parse_time))
                .max();
            committed = match (&next, page_last) {
                (Some(_), Some(last)) => fresh
                    .iter()
                    .filter_map(|p| p.updated_at.as_deref().and_then(parse_time))
                    .chain([before_page])
                    .filter(|u| *u < last)
                    .fold(committed, DateTime::max),
                _ => newest,
            };
            let keep_etag = is_first && next.is_none() && fresh.is_empty();
            self.set_sync_state(
                project,
                kind,
                SyncState {
                    cursor: Some(rfc3339(committed)),
                    etag: if keep_etag { page.etag.clone() } else { None },
                    last_success: Some(now),
                },
            )
            .await?;
            is_first = false;
        }
        if !changed {
            // Nothing new (304 or an empty page): only the success time moves.
            let mut s = self.sync_state(project, kind).await?;
            s.cursor = Some(rfc3339(newest));
            s.last_success = Some(now);
            self.set_sync_state(project, kind, s).await?;
        }
        if let Since::Backfill(_) = since {
            // Let serve continue where the backfill ended.
            let live = self.sync_state(project, KIND_PIPELINES).await?;
            let live_cursor = live.cursor.as_deref().and_then(parse_time);
            if live_cursor.is_none_or(|c| c < newest) {
                self.set_sync_state(
                    project,
                    KIND_PIPELINES,
                    SyncState {
                        cursor: Some(rfc3339(newest)),
                        etag: None,
                        last_success: Some(now),
                    },
                )
                .await?;
            }
        }
        if changed || matches!(since, Since::Backfill(_)) {
            self.sync_merges(project, floor, report).await?;
        }
        Ok(())
    }

    /// Merged MRs since the MR cursor; their head pipeline when none of its runs is stored.
    async fn sync_merges(
        &self,
        project: &str,
        floor: DateTime<Utc>,
        report: &mut PollReport,
    ) -> Result<(), GitlabError> {
        let state = self.sync_state(project, KIND_MERGES).await?;
        let start = state
            .cursor
            .as_deref()
            .and_then(parse_time)
            .unwrap_or(floor);
        let enc = encode(project);
        let url = self.url(
            &format!("/projects/{enc}/merge_requests"),
            &[
                ("state", "merged".into()),
                ("updated_after", rfc3339(start)),
                ("order_by", "updated_at".into()),
                ("sort", "asc".into()),
                ("per_page", "100".into()),
            ],
        )?;
        let mrs: Vec<ApiMergeRequest> = self.all("merge_requests", url).await?;
        let repo = RepositoryRef {
            forge: Forge::Gitlab,
            path: project.to_string(),
        };
        let mut newest = start;
        for mr in mrs {
            let Some(merged_at) = mr.merged_at.as_deref().and_then(parse_time) else {
                continue;
            };
            if let Some(u) = mr.updated_at.as_deref().and_then(parse_time) {
                newest = newest.max(u);
            }
            if let Some(sha) = &mr.sha {
                let (r, s) = (repo.clone(), sha.clone());
                let known = self
                    .store
                    .read(move |st| st.has_runs_for_commit(&r, &s))
                    .await?;
                if !known {
                    let url = self.url(
                        &format!("/projects/{enc}/pipelines"),
                        &[("sha", sha.clone()), ("per_page", "1".into())],
                    )?;
                    if let Fetched::Page(p) =
                        self.page::<ApiPipeline>("pipelines", &url, None).await?
                        && let Some(head) = p.items.first()
                    {
                        self.sync_pipeline(project, head, report).await?;
                    }
                }
            }
            let (r, iid, sha) = (repo.clone(), mr.iid, mr.sha.clone());
            self.store
                .write(move |s| s.record_merge(&r, iid, sha.as_deref(), merged_at, Utc::now()))
                .await?;
            report.merges += 1;
        }
        self.set_sync_state(
            project,
            KIND_MERGES,
            SyncState {
                cursor: Some(rfc3339(newest)),
                etag: None,
                last_success: Some(Utc::now()),
            },
        )
        .await?;
        Ok(())
    }

    /// One pipeline: its jobs (with retries), itself, its test report, the
    /// traces of its failed jobs.
    async fn sync_pipeline(
        &self,
        project: &str,
        p: &ApiPipeline,
        report: &mut PollReport,
    ) -> Result<(), GitlabError> {
        let enc = encode(project);
        let url = self.url(
            &format!("/projects/{enc}/pipelines/{}/jobs", p.id),
            &[
                ("include_retried", "true".into()),
                ("per_page", "100".into()),
            ],
        )?;
        let jobs: Vec<ApiJob> = self.all("jobs", url).await?;
        let mut planned = plan_pipeline(project, p, &jobs);
        report.pipelines += 1;
        let pipeline_state = run_state(&p.status, None);
        if self.config.test_reports && pipeline_state.is_some_and(|s| s.is_terminal()) {
            let url = self.url(
                &format!("/projects/{enc}/pipelines/{}/test_report", p.id),
                &[],
            )?;
            let resp = self.get("test_report", &url, None).await?;
            let (body, truncated, _) = self.read_body(resp, MAX_JSON_BYTES, "test_report").await?;
            match serde_json::from_slice::<TestReport>(&body) {
                Ok(tr) if !truncated => attach_tests(&mut planned, tr, &self.classifier),
                Ok(_) => tracing::warn!(project, pipeline = p.id, "test report too large; skipped"),
                Err(e) => {
                    self.count_error("test_report", "decode");
                    tracing::warn!(project, pipeline = p.id, error = %e, "invalid test report; skipped")
                }
            }
        }
        let policy = self.policy.clone();
        let to_store = planned.clone();
        let ingested = self
            .store
            .write(move |s| store_runs(s, &to_store, &policy, Utc::now()))
            .await?;
        report.runs += ingested.len();
        for (plan, ing) in planned.iter().zip(ingested) {
            let Some(job_id) = plan
                .run
                .external_id
                .as_deref()
                .and_then(|e| e.strip_prefix("job:"))
            else {
                continue;
            };
            let wanted = match self.config.download_traces {
                DownloadTraces::None => false,
                DownloadTraces::Failed => matches!(
                    plan.run.state,
                    RunState::Failure | RunState::Error | RunState::TimedOut
                ),
                DownloadTraces::All => plan.run.state.is_terminal(),
            };
            if !wanted {
                continue;
            }
            let id = ing.id;
            if self.store.read(move |s| s.has_log(id)).await? {
                continue;
            }
            self.fetch_trace(project, job_id, id, plan).await?;
            report.traces += 1;
        }
        Ok(())
    }

    /// Download (streamed, capped), classify and store one job's log.
    async fn fetch_trace(
        &self,
        project: &str,
        job_id: &str,
        run_id: i64,
        plan: &PlannedRun,
    ) -> Result<(), GitlabError> {
        let url = self.url(
            &format!("/projects/{}/jobs/{job_id}/trace", encode(project)),
            &[],
        )?;
        let resp = self.get("trace", &url, None).await?;
        let cap = self.config.trace_max_bytes;
        let (bytes, truncated, read) = self.read_body(resp, cap, "trace").await?;
        self.stats.traces.fetch_add(1, Ordering::Relaxed);
        self.stats
            .trace_bytes_read
            .fetch_add(read, Ordering::Relaxed);
        let mut log = String::from_utf8_lossy(&bytes).into_owned();
        if truncated {
            log.push_str(&format!(
                "\n[ci-slo-exporter: log truncated: only the first {cap} bytes were downloaded]\n"
            ));
        }
        let classification = self
            .classifier
            .classify_log(log.as_bytes())
            .ok()
            .unwrap_or_default();
        let sections = classification.sections;
        let mut planned = plan.clone();
        planned.run.failures =
            failures_from(&self.classifier, classification.primary, &planned.run.tests);
        planned.run.dependencies = self.deps.extract(&log);
        let policy = self.policy.clone();
        self.store
            .write(move |s| {
                let now = Utc::now();
                store_runs(s, std::slice::from_ref(&planned), &policy, now)?;
                s.store_log(run_id, &log, truncated, now)?;
                s.store_sections(run_id, &sections)?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// `serve`'s loop: a round every `poll_interval`; after a round that stored
    /// something, `refresh` is notified.
    pub async fn run_forever(self, refresh: Arc<tokio::sync::Notify>) {
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let lookback = chrono::Duration::from_std(self.config.initial_lookback)
                .unwrap_or(chrono::Duration::days(1));
            match self
                .poll_once(Since::Poll(Utc::now() - lookback), &|_, _, _| {})
                .await
            {
                Ok(r) => {
                    if r.runs + r.merges > 0 {
                        refresh.notify_one();
                    }
                    tracing::info!(
                        projects = r.projects,
                        pipelines = r.pipelines,
                        runs = r.runs,
                        traces = r.traces,
                        merges = r.merges,
                        failed = r.failed.len(),
                        "GitLab poll done"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "GitLab poll failed"),
            }
        }
    }
}

/// A pipeline's jobs and the pipeline itself as planned runs. Retries (same
/// `stage / name`) are attempts 0..n by creation time, then id.
fn plan_pipeline(project: &str, p: &ApiPipeline, jobs: &[ApiJob]) -> Vec<PlannedRun> {
    let repository = RepositoryRef {
        forge: Forge::Gitlab,
        path: project.to_string(),
    };
    let trig = trigger(p.source.as_deref());
    let change = p
        .git_ref
        .as_deref()
        .and_then(mr_from_ref)
        .map(|number| ChangeRef {
            number,
            merged_at: None,
        });
    let pipeline_ext = format!("pipeline:{}", p.id);
    let mut sorted: Vec<&ApiJob> = jobs.iter().collect();
    sorted.sort_by_key(|j| (j.created_at.as_deref().and_then(parse_time), j.id));
    let mut attempts: HashMap<String, u32> = HashMap::new();
    let mut planned = Vec::new();
    let (mut first_start, mut last_end): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        (None, None);
    for j in sorted {
        let Some(state) = run_state(&j.status, j.failure_reason.as_deref()) else {
            continue;
        };
        let context = job_context(&j.stage, &j.name);
        let attempt = attempts.entry(context.clone()).or_insert(0);
        let this = *attempt;
        *attempt += 1;
        let (queued_at, started_at, finished_at) = times(
            j.created_at.as_deref().and_then(parse_time),
            j.started_at.as_deref().and_then(parse_time),
            j.finished_at.as_deref().and_then(parse_time),
            j.duration,
            j.queued_duration,
        );
        if let Some(s) = started_at {
            first_start = Some(first_start.map_or(s, |f| f.min(s)));
        }
        if let Some(f) = finished_at {
            last_end = Some(last_end.map_or(f, |l| l.max(f)));
        }
        planned.push(PlannedRun {
            run: NewRun {
                repository: repository.clone(),
                context,
                commit: p.sha.clone(),
                external_id: Some(format!("job:{}", j.id)),
                attempt: this,
                trigger: trig,
                state,
                queued_at,
                started_at,
                finished_at,
                log_url: j.web_url.as_ref().map(|u| format!("{u}/raw")),
                url: j.web_url.clone(),
                change: change.clone(),
                source: "gitlab".into(),
                ..NewRun::default()
            },
            attempt: AttemptHint::Known(this),
            pipeline_external_id: Some(pipeline_ext.clone()),
        });
    }
    if let Some(state) = run_state(&p.status, None) {
        planned.push(PlannedRun {
            run: NewRun {
                repository,
                context: PIPELINE_CONTEXT.into(),
                commit: p.sha.clone(),
                external_id: Some(pipeline_ext),
                attempt: 0,
                trigger: trig,
                state,
                queued_at: p.created_at.as_deref().and_then(parse_time),
                started_at: first_start,
                finished_at: if state.is_terminal() { last_end } else { None },
                url: p.web_url.clone(),
                change,
                source: "gitlab".into(),
                ..NewRun::default()
            },
            attempt: AttemptHint::Known(0),
            pipeline_external_id: None,
        });
    }
    planned
}

/// A pipeline's test report onto its runs: a suite is named after its job;
/// its cases go to that job's latest attempt (else to the pipeline run).
fn attach_tests(planned: &mut [PlannedRun], report: TestReport, classifier: &Classifier) {
    for suite in report.test_suites {
        let tests: Vec<TestResult> = suite
            .test_cases
            .into_iter()
            .map(|c| {
                let outcome = match c.status.as_str() {
                    "success" => TestOutcome::Passed,
                    "failed" => TestOutcome::Failed,
                    "skipped" => TestOutcome::Skipped,
                    _ => TestOutcome::Errored,
                };
                let output = match c.system_output {
                    Some(serde_json::Value::String(s)) => Some(s),
                    Some(serde_json::Value::Array(a)) => Some(
                        a.iter()
                            .map(|v| {
                                v.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string())
                            })
                            .collect::<Vec<_>>()
                            .join("\n"),
                    ),
                    Some(serde_json::Value::Object(o)) => o
                        .get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                        .or_else(|| Some(serde_json::Value::Object(o).to_string())),
                    _ => None,
                };
                let message = match (output, c.stack_trace) {
                    (Some(o), Some(t)) => Some(format!("{o}\n{t}")),
                    (o, t) => o.or(t),
                };
                TestResult {
                    name: match c.classname.as_deref() {
                        Some(cls) if !cls.is_empty() => format!("{cls}.{}", c.name),
                        _ => c.name,
                    },
                    outcome,
                    duration_seconds: c.execution_time.filter(|t| t.is_finite() && *t >= 0.0),
                    retries: 0,
                    retry_reasons: Vec::new(),
                    message: if outcome == TestOutcome::Passed {
                        None
                    } else {
                        message
                    },
                }
            })
            .collect();
        if tests.is_empty() {
            continue;
        }
        let target = planned
            .iter()
            .rposition(|p| {
                p.run.context.rsplit(" / ").next() == Some(suite.name.as_str())
                    && p.run.context != PIPELINE_CONTEXT
            })
            .or_else(|| {
                planned
                    .iter()
                    .rposition(|p| p.run.context == PIPELINE_CONTEXT)
            });
        if let Some(i) = target {
            let run = &mut planned[i].run;
            run.tests.extend(tests);
            run.failures = classify_run(classifier, None, &run.tests);
        }
    }
}

/// Read a body chunk by chunk, keeping at most `cap` bytes and stopping
/// there: (kept bytes, truncated, bytes received).
async fn read_capped(
    mut resp: reqwest::Response,
    cap: u64,
    endpoint: &str,
) -> Result<(Vec<u8>, bool, u64), GitlabError> {
    let mut out = Vec::new();
    let mut read = 0u64;
    loop {
        let chunk = resp.chunk().await.map_err(|e| GitlabError::Http {
            endpoint: endpoint.to_string(),
            source: e,
        })?;
        let Some(chunk) = chunk else {
            return Ok((out, false, read));
        };
        read += chunk.len() as u64;
        let room = cap.saturating_sub(out.len() as u64) as usize;
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            // Dropping the response closes the stream: the rest is never read.
            return Ok((out, true, read));
        }
        out.extend_from_slice(&chunk);
    }
}

/// `Retry-After` in seconds (GitLab sends seconds).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The next page: `Link: <...>; rel="next"` (keyset and offset pagination),
/// else `X-Next-Page` on the current URL.
fn next_page(headers: &HeaderMap, current: &Url) -> Option<Url> {
    if let Some(link) = headers.get(LINK).and_then(|v| v.to_str().ok()) {
        for part in link.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            if pieces.any(|p| p.trim() == "rel=\"next\"") {
                let target = target.trim_start_matches('<').trim_end_matches('>');
                return Url::parse(target).ok();
            }
        }
    }
    let next = headers.get("x-next-page")?.to_str().ok()?.trim();
    if next.is_empty() {
        return None;
    }
    let mut url = current.clone();
    let pairs: Vec<(String, String)> = current
        .query_pairs()
        .filter(|(k, _)| k != "page")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("page", next);
    Some(url)
}

/// A project or group path as one URL path segment (`a/b` → `a%2Fb`).
fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn pagination_follows_link_then_x_next_page() {
        let cur =
            Url::parse("https://g/api/v4/projects/a%2Fb/pipelines?per_page=100&page=1").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-next-page", HeaderValue::from_static("2"));
        assert_eq!(
            next_page(&h, &cur).unwrap().as_str(),
            "https://g/api/v4/projects/a%2Fb/pipelines?per_page=100&page=2"
        );
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://g/x?cursor=abc>; rel=\"next\", <https://g/x?p=1>; rel=\"first\"",
            ),
        );
        assert_eq!(
            next_page(&h, &cur).unwrap().as_str(),
            "https://g/x?cursor=abc"
        );
        assert_eq!(next_page(&HeaderMap::new(), &cur), None);
        assert_eq!(encode("grp/sub/proj"), "grp%2Fsub%2Fproj");
    }

    #[test]
    fn retried_jobs_become_attempts_in_creation_order() {
        let job = |id: i64, name: &str, created: &str, status: &str| ApiJob {
            id,
            name: name.into(),
            stage: "test".into(),
            status: status.into(),
            created_at: Some(created.into()),
            started_at: Some(created.into()),
            finished_at: Some(created.into()),
            duration: Some(10.0),
            queued_duration: Some(2.0),
            failure_reason: None,
            web_url: None,
        };
        let p = ApiPipeline {
            id: 7,
            sha: "abc".into(),
            git_ref: Some("refs/merge-requests/12/head".into()),
            status: "success".into(),
            source: Some("merge_request_event".into()),
            created_at: Some("2026-11-01T10:00:00Z".into()),
            updated_at: None,
            web_url: None,
        };
        let jobs = [
            job(30, "unit", "2026-11-01T10:20:00Z", "success"),
            job(10, "unit", "2026-11-01T10:01:00Z", "failed"),
            job(20, "unit", "2026-11-01T10:10:00Z", "failed"),
            job(11, "lint", "2026-11-01T10:01:00Z", "success"),
        ];
        let planned = plan_pipeline("g/p", &p, &jobs);
        let got: Vec<(String, String, u32)> = planned
            .iter()
            .map(|p| {
                (
                    p.run.context.clone(),
                    p.run.external_id.clone().unwrap(),
                    p.run.attempt,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("test / unit".into(), "job:10".into(), 0),
                ("test / lint".into(), "job:11".into(), 0),
                ("test / unit".into(), "job:20".into(), 1),
                ("test / unit".into(), "job:30".into(), 2),
                ("pipeline".into(), "pipeline:7".into(), 0),
            ]
        );
        assert_eq!(planned[0].run.change.as_ref().unwrap().number, 12);
        assert_eq!(planned[4].run.state, RunState::Success);
    }
}

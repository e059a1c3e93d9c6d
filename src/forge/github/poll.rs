//! Polling and backfill through the REST API.
//!
//! Per repository (listed, or matched by owner + pattern):
//! 1. closed pull requests, newest update first, conditional on the ETag of
//!    the last complete listing (a 304 re-processes nothing), down to the
//!    repository's cursor;
//! 2. for each merged one, oldest first, its head commit's statuses (the
//!    Cockpit story), check runs and Actions workflow runs with the jobs of
//!    every attempt; failed jobs' logs (once, streamed, capped) are classified;
//!    then the merge is recorded and the cursor advanced, so a crash resumes
//!    from the last committed pull request with no gap and no duplicate;
//! 3. scheduled workflow runs (nightlies) on their own, slower interval.
//!
//! Requests are paginated by `Link: rel="next"`, count in the self-metrics,
//! read the rate-limit headers, wait out `Retry-After` and secondary limits,
//! and back off exponentially with jitter on 5xx and timeouts, a bounded
//! number of times.

use super::{DownloadLogs, GithubConfig, Record, cockpit, wire};
use crate::classify::Classifier;
use crate::config::Secret;
use crate::ingest::classify_run;
use crate::metrics::MetricsHub;
use crate::model::{Forge, RunState, Trigger};
use crate::store::writer::StoreHandle;
use crate::store::{IngestStatus, Policy, StoreError, SyncState};
use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("GitHub API {url}: {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("GitHub API {url}: gave up after {tries} tries: {last}")]
    GaveUp {
        url: String,
        tries: u32,
        last: String,
    },
    #[error("GitHub API {url}: undecodable answer: {source}")]
    Decode {
        url: String,
        source: serde_json::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("owner pattern: {0}")]
    Pattern(#[from] regex::Error),
    #[error(transparent)]
    Github(#[from] super::GithubError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One answer: 200 with a body, or 304.
#[derive(Debug)]
pub struct Page {
    pub not_modified: bool,
    pub body: bytes_compat::Bytes,
    pub etag: Option<String>,
    pub next: Option<String>,
}

mod bytes_compat {
    pub type Bytes = Vec<u8>;
}

/// The REST client: auth, retries, rate limits, metrics.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api: String,
    token: Option<Secret>,
    hub: Arc<MetricsHub>,
    retry_base: Duration,
    max_retries: u32,
    max_wait: Duration,
}

/// The `next` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Client {
    pub fn new(
        config: &GithubConfig,
        token: Option<Secret>,
        hub: Arc<MetricsHub>,
    ) -> Result<Client, PollError> {
        Ok(Client {
            http: crate::forge::http_client(config.request_timeout)?,
            api: config.api_url.trim_end_matches('/').to_string(),
            token,
            hub,
            retry_base: config.retry_base,
            max_retries: config.max_retries,
            max_wait: config.max_retry_wait,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn count(&self, endpoint: &str, status: &str) {
        self.hub
            .self_metrics
            .count_forge_request("github", endpoint, status);
    }

    fn count_error(&self, endpoint: &str, kind: &str) {
        self.hub
            .self_metrics
            .count_forge_error("github", endpoint, kind);
    }

    /// Decode a JSON answer; an undecodable one (truncated, invalid) is counted.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        url: &str,
        body: &[u8],
    ) -> Result<T, PollError> {
        serde_json::from_slice(body).map_err(|source| {
            self.count_error(endpoint, "decode");
            PollError::Decode {
                url: url.to_string(),
                source,
            }
        })
    }

    fn rate_limits(&self, h: &HeaderMap) {
        let num = |n: &str| header_str(h, n).and_then(|v| v.trim().parse::<i64>().ok());
        self.hub.self_metrics.set_rate_limit(
            "github",
            num("x-ratelimit-remaining").map(|v| v as f64),
            num("x-ratelimit-limit").map(|v| v as f64),
            num("x-ratelimit-reset").map(|v| v as f64),
        );
    }

    /// How long a rate-limited answer asks us to wait, if it is one.
    fn rate_limit_wait(&self, status: StatusCode, h: &HeaderMap, body: &str) -> Option<Duration> {
        let retry_after = header_str(h, "retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let exhausted = header_str(h, "x-ratelimit-remaining").map(str::trim) == Some("0");
        let secondary = body.to_lowercase().contains("secondary rate limit");
        let limited = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN
                && (retry_after.is_some() || exhausted || secondary));
        if !limited {
            return None;
        }
        let until_reset = || {
            let reset = header_str(h, "x-ratelimit-reset")?
                .trim()
                .parse::<i64>()
                .ok()?;
            let secs = reset - Utc::now().timestamp();
            Some(Duration::from_secs(secs.max(0) as u64))
        };
        let wait = retry_after
            .or_else(|| if exhausted { until_reset() } else { None })
            // A secondary limit without Retry-After: GitHub asks for at least a minute.
            .unwrap_or(Duration::from_secs(60));
        Some(wait.min(self.max_wait))
    }

    /// GET one page, conditional on `etag`, with retries.
    pub async fn get(
        &self,
        endpoint: &'static str,
        url: &str,
        etag: Option<&str>,
    ) -> Result<Page, PollError> {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.retry_base)
            .with_max_delay(self.max_wait)
            .with_jitter()
            .without_max_times()
            .build();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let mut req = self
                .http
                .get(url)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28");
            if let Some(t) = &self.token
                && let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
            {
                req = req.header("Authorization", v);
            }
            if let Some(e) = etag {
                req = req.header("If-None-Match", e);
            }
            let (wait, last) = match req.send().await {
                Err(e) => {
                    self.count(endpoint, "error");
                    self.count_error(endpoint, crate::forge::error_kind(&e));
                    (backoff.next(), e.to_string())
                }
                Ok(resp) => {
                    let status = resp.status();
                    self.count(endpoint, status.as_str());
                    let headers = resp.headers().clone();
                    self.rate_limits(&headers);
                    if status == StatusCode::NOT_MODIFIED {
                        self.hub.self_metrics.count_not_modified("github");
                        return Ok(Page {
                            not_modified: true,
                            body: Vec::new(),
                            etag: etag.map(str::to_string),
                            next: None,
                        });
                    }
                    match resp.bytes().await {
                        Err(e) => {
                            // The status line came, the body did not (reset, cut, stalled).
                            self.count_error(endpoint, crate::forge::error_kind(&e));
                            (backoff.next(), e.to_string())
                        }
                        Ok(body) if status.is_success() => {
                            return Ok(Page {
                                not_modified: false,
                                body: body.to_vec(),
                                etag: header_str(&headers, "etag").map(str::to_string),
                                next: header_str(&headers, "link").and_then(next_link),
                            });
                        }
                        Ok(body) => {
                            let text =
                                String::from_utf8_lossy(&body[..body.len().min(2000)]).to_string();
                            if let Some(w) = self.rate_limit_wait(status, &headers, &text) {
                                tracing::warn!(url, wait = ?w, "GitHub rate limit; waiting");
                                (Some(w), format!("{status}: rate limited"))
                            } else if status.is_server_error() {
                                (backoff.next(), format!("{status}"))
                            } else {
                                return Err(PollError::Status {
                                    url: url.to_string(),
                                    status: status.as_u16(),
                                    message: text,
                                });
                            }
                        }
                    }
                }
            };
            match wait {
                Some(w) if tries <= self.max_retries => {
                    tracing::debug!(url, tries, wait = ?w, %last, "retrying");
                    tokio::time::sleep(w).await;
                }
                _ => {
                    return Err(PollError::GaveUp {
                        url: url.to_string(),
                        tries,
                        last,
                    });
                }
            }
        }
    }

    /// GET every page of a listing; `items` picks the list out of each page.
    pub(crate) async fn get_all<T, F>(
        &self,
        endpoint: &'static str,
        url: &str,
        items: F,
    ) -> Result<Vec<T>, PollError>
    where
        F: Fn(&[u8]) -> Result<Vec<T>, serde_json::Error>,
    {
        let mut out = Vec::new();
        let mut next = Some(url.to_string());
        let mut pages = 0;
        while let Some(url) = next.take() {
            let page = self.get(endpoint, &url, None).await?;
            out.extend(items(&page.body).map_err(|source| {
                self.count_error(endpoint, "decode");
                PollError::Decode {
                    url: url.clone(),
                    source,
                }
            })?);
            next = page.next;
            pages += 1;
            if pages >= 1000 {
                break;
            }
        }
        Ok(out)
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: &str,
    ) -> Result<T, PollError> {
        let page = self.get(endpoint, url, None).await?;
        self.decode(endpoint, url, &page.body)
    }

    /// Stream a log, keeping at most `cap` bytes; returns (text, truncated).
    pub async fn download_log(&self, url: &str, cap: u64) -> Result<(String, bool), PollError> {
        let mut req = self.http.get(url);
        if let Some(t) = &self.token
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
        {
            req = req.header("Authorization", v);
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.count("logs", "error");
                self.count_error("logs", crate::forge::error_kind(&e));
                return Err(PollError::GaveUp {
                    url: url.into(),
                    tries: 1,
                    last: e.to_string(),
                });
            }
        };
        self.count("logs", resp.status().as_str());
        if !resp.status().is_success() {
            return Err(PollError::Status {
                url: url.into(),
                status: resp.status().as_u16(),
                message: "log download failed".into(),
            });
        }
        let cap = cap as usize;
        let mut buf: Vec<u8> = Vec::new();
        let mut truncated = false;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = cap.saturating_sub(buf.len());
                    if chunk.len() > room {
                        buf.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    self.count_error("logs", crate::forge::error_kind(&e));
                    return Err(PollError::GaveUp {
                        url: url.into(),
                        tries: 1,
                        last: e.to_string(),
                    });
                }
            }
        }
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        if truncated {
            text.push_str(&format!(
                "\n[ci-slo-exporter: log truncated at {cap} bytes]\n"
            ));
        }
        Ok((text, truncated))
    }
}

/// Progress of a poll or backfill: a bar on a terminal, lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
    label: String,
}

impl Progress {
    fn new(show_bar: bool, label: String) -> Progress {
        let bar = (show_bar && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(0);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} PRs {msg}")
            {
                b.set_style(style);
            }
            b.set_prefix(label.clone());
            b
        });
        Progress {
            bar,
            last_line: Instant::now(),
            label,
        }
    }

    fn total(&self, n: usize) {
        if let Some(b) = &self.bar {
            b.set_length(n as u64);
            b.set_position(0);
        }
    }

    fn step(&mut self, done: usize, total: usize) {
        match &self.bar {
            Some(b) => b.set_position(done as u64),
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(10) || done == total {
                    tracing::info!(target: "ci_slo_exporter::github", "{}: {done}/{total} merged pull requests", self.label);
                    self.last_line = Instant::now();
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PollStats {
    pub repositories: usize,
    pub not_modified: usize,
    pub pull_requests: usize,
    pub runs: usize,
    pub logs: usize,
    pub scheduled_runs: usize,
    pub errors: usize,
}

/// Polls GitHub into the store.
pub struct Poller {
    pub client: Client,
    pub store: StoreHandle,
    pub policy: Arc<Policy>,
    pub config: Arc<GithubConfig>,
    pub classifier: Arc<Classifier>,
    /// Reads package versions from downloaded logs.
    pub deps: Arc<crate::deps::Extractor>,
    /// Woken after writes (the metrics snapshot), when serving.
    pub refresh: Option<Arc<tokio::sync::Notify>>,
    /// Show a progress bar on a terminal (backfill).
    pub show_progress: bool,
    /// Only repositories this shard owns are polled (docs/scaling.md).
    pub shard: crate::shard::Shard,
}

/// The backfill's cursor: the newest merged pull request it processed.
const KIND_BACKFILL: &str = "backfill";
/// Where the backfill's covered range starts (its oldest `updated_at`).
const KIND_BACKFILL_FROM: &str = "backfill_from";

/// The range a backfill covered: `from` (None before it was recorded) up to
/// its cursor; None when nothing is covered.
fn covered(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    match (from, to) {
        (Some(from), Some(to)) if from <= to => Some((from, to)),
        // A backfill from before the range was recorded: only its cursor is known.
        (None, Some(to)) => Some((to, to)),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `serve`: kind "pulls", conditional listings.
    Poll,
    /// `backfill`: kind "backfill", from N days back (or its cursor), unconditional.
    Backfill,
}

impl Poller {
    fn notify(&self) {
        if let Some(r) = &self.refresh {
            r.notify_one();
        }
    }

    async fn sync_state(&self, scope: &str, kind: &'static str) -> Result<SyncState, PollError> {
        let scope = scope.to_string();
        Ok(self
            .store
            .read(move |s| s.sync_state(Forge::Github, &scope, kind))
            .await?
            .unwrap_or_default())
    }

    async fn set_sync_state(
        &self,
        scope: &str,
        kind: &'static str,
        state: SyncState,
    ) -> Result<(), PollError> {
        let scope = scope.to_string();
        self.store
            .write(move |s| s.set_sync_state(Forge::Github, &scope, kind, &state))
            .await?;
        Ok(())
    }

    /// The repositories to poll: the listed ones and the owners' matching
    /// ones; on a shard, only those it owns.
    pub async fn repositories(&self) -> Result<Vec<String>, PollError> {
        let mut repos = self.all_repositories().await?;
        if self.shard.is_sharded() {
            let before = repos.len();
            repos.retain(|r| self.shard.owns(r));
            tracing::debug!(shard = %self.shard, owned = repos.len(), of = before, "GitHub repositories of this shard");
        }
        Ok(repos)
    }

    async fn all_repositories(&self) -> Result<Vec<String>, PollError> {
        let mut repos: Vec<String> = self.config.repositories.clone();
        for o in &self.config.owners {
            let pattern = o.pattern.as_deref().map(regex::Regex::new).transpose()?;
            let scope = format!("owner:{}", o.owner);
            let state = self.sync_state(&scope, "repos").await?;
            let url = self
                .client
                .url(&format!("/orgs/{}/repos?per_page=100", o.owner));
            let first = match self.client.get("repos", &url, state.etag.as_deref()).await {
                Err(PollError::Status { status: 404, .. }) => {
                    let url = self
                        .client
                        .url(&format!("/users/{}/repos?per_page=100", o.owner));
                    self.client.get("repos", &url, None).await?
                }
                other => other?,
            };
            let names: Vec<String> = if first.not_modified {
                serde_json::from_str(state.cursor.as_deref().unwrap_or("[]")).unwrap_or_default()
            } else {
                let mut items: Vec<wire::RepoItem> =
                    self.client.decode("repos", &url, &first.body)?;
                if let Some(next) = &first.next {
                    items.extend(
                        self.client
                            .get_all("repos", next, |b| serde_json::from_slice(b))
                            .await?,
                    );
                }
                let names: Vec<String> = items
                    .into_iter()
                    .filter(|r| !r.archived)
                    .map(|r| r.full_name)
                    .collect();
                self.set_sync_state(
                    &scope,
                    "repos",
                    SyncState {
                        cursor: Some(serde_json::to_string(&names).unwrap_or_default()),
                        etag: first.etag.clone(),
                        // Not a repository: kept out of ci_exporter_last_sync_timestamp_seconds.
                        last_success: None,
                    },
                )
                .await?;
                names
            };
            for full in names {
                let name = full.rsplit('/').next().unwrap_or(&full);
                if pattern.as_ref().is_none_or(|p| p.is_match(name)) && !repos.contains(&full) {
                    repos.push(full);
                }
            }
        }
        Ok(repos)
    }

    /// One poll of everything (`serve`).
    pub async fn poll_once(&self) -> PollStats {
        self.run(Mode::Poll, None).await
    }

    /// Fill `days` of history (`backfill github --days N [--restart]`).
    ///
    /// A backfill covers one range of merged pull requests per repository
    /// (by `updated_at`): from where it started (`backfill_from`) to its
    /// cursor. Run again, it continues from the cursor (a resume after an
    /// interruption, or what was merged since); with more days than before it
    /// first fills the older gap. `restart` forgets the range: everything in
    /// the window is fetched again (e.g. after changing the status phrases).
    pub async fn backfill(&self, days: u32, restart: bool) -> PollStats {
        let since = Utc::now() - chrono::Duration::days(days as i64);
        if restart {
            let repos = match self.repositories().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot list GitHub repositories");
                    return PollStats {
                        errors: 1,
                        ..PollStats::default()
                    };
                }
            };
            let forget = self
                .store
                .write(move |s| {
                    for repo in &repos {
                        for kind in [KIND_BACKFILL, KIND_BACKFILL_FROM] {
                            s.set_sync_state(Forge::Github, repo, kind, &SyncState::default())?;
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = forget {
                tracing::error!(error = %e, "cannot restart the backfill");
                return PollStats {
                    errors: 1,
                    ..PollStats::default()
                };
            }
        }
        self.run(Mode::Backfill, Some(since)).await
    }

    async fn run(&self, mode: Mode, since: Option<DateTime<Utc>>) -> PollStats {
        let mut stats = PollStats::default();
        let repos = match self.repositories().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot list GitHub repositories");
                stats.errors += 1;
                return stats;
            }
        };
        stats.repositories = repos.len();
        for repo in &repos {
            if let Err(e) = self.poll_repository(repo, mode, since, &mut stats).await {
                tracing::error!(repository = %repo, error = %e, "GitHub poll failed; will resume from the cursor");
                stats.errors += 1;
            }
        }
        stats
    }

    async fn poll_repository(
        &self,
        repo: &str,
        mode: Mode,
        since: Option<DateTime<Utc>>,
        stats: &mut PollStats,
    ) -> Result<(), PollError> {
        let kind = match mode {
            Mode::Poll => "pulls",
            Mode::Backfill => KIND_BACKFILL,
        };
        let state = self.sync_state(repo, kind).await?;
        let lookback = chrono::Duration::from_std(self.config.initial_lookback)
            .unwrap_or(chrono::Duration::days(1));
        let floor = since.unwrap_or_else(|| Utc::now() - lookback);
        let parse = |c: Option<&str>| {
            c.and_then(|c| DateTime::parse_from_rfc3339(c).ok())
                .map(|c| c.with_timezone(&Utc))
        };
        let stored = parse(state.cursor.as_deref());
        // Merged PRs updated since `cursor` are processed oldest first; a
        // backfill reaching further back than it did before first fills the
        // `gap` (newest first), see `backfill`.
        let (cursor, gap) = match mode {
            Mode::Poll => (stored.map_or(floor, |c| c.max(floor)), None),
            Mode::Backfill => {
                let from = parse(
                    self.sync_state(repo, KIND_BACKFILL_FROM)
                        .await?
                        .cursor
                        .as_deref(),
                );
                match covered(from, stored) {
                    Some((from, to)) if to >= floor => {
                        (to, (floor < from).then_some((floor, from)))
                    }
                    _ => {
                        // Nothing covered in the window: a fresh backfill from the floor.
                        self.set_backfill_from(repo, floor).await?;
                        (floor, None)
                    }
                }
            }
        };
        let lowest = gap.map_or(cursor, |(floor, _)| floor);

        let url = self.client.url(&format!(
            "/repos/{repo}/pulls?state=closed&sort=updated&direction=desc&per_page=100"
        ));
        let etag = if mode == Mode::Poll {
            state.etag.as_deref()
        } else {
            None
        };
        let first = self.client.get("pulls", &url, etag).await?;
        if first.not_modified {
            stats.not_modified += 1;
            self.set_sync_state(
                repo,
                kind,
                SyncState {
                    last_success: Some(Utc::now()),
                    ..state
                },
            )
            .await?;
            return self.poll_schedule(repo, mode, since, stats).await;
        }
        let mut pulls: Vec<wire::PullRequest> = Vec::new();
        let mut page = first;
        let new_etag = page.etag.clone();
        loop {
            let items: Vec<wire::PullRequest> = self.client.decode("pulls", &url, &page.body)?;
            let older = items
                .iter()
                .any(|p| p.updated_at.is_some_and(|u| u < lowest));
            pulls.extend(items);
            match (&page.next, older) {
                (Some(next), false) => page = self.client.get("pulls", next, None).await?,
                _ => break,
            }
        }
        pulls.retain(|p| p.merged_at.is_some());
        let updated = |p: &wire::PullRequest| p.updated_at.unwrap_or_default();
        // The gap, newest first: `from` moves down after each, so the covered
        // range stays one interval whenever the backfill stops.
        let mut older: Vec<&wire::PullRequest> = match gap {
            Some((floor, from)) => pulls
                .iter()
                .filter(|p| p.updated_at.is_some_and(|u| u >= floor && u <= from))
                .collect(),
            None => Vec::new(),
        };
        older.sort_by_key(|p| std::cmp::Reverse((updated(p), p.number)));
        let mut newer: Vec<&wire::PullRequest> = pulls
            .iter()
            .filter(|p| p.updated_at.is_some_and(|u| u >= cursor))
            .filter(|p| !older.iter().any(|o| o.number == p.number))
            .collect();
        newer.sort_by_key(|p| (updated(p), p.number));

        let mut progress = Progress::new(self.show_progress, repo.to_string());
        let total = older.len() + newer.len();
        progress.total(total);
        let mut done = 0;
        for pr in older {
            self.process_pull(repo, pr, stats).await?;
            self.set_backfill_from(repo, updated(pr)).await?;
            done += 1;
            progress.step(done, total);
        }
        if let Some((floor, _)) = gap {
            self.set_backfill_from(repo, floor).await?;
        }
        let mut newest = state.cursor.clone();
        for pr in newer {
            self.process_pull(repo, pr, stats).await?;
            // The cursor moves only after the pull request's data is committed.
            newest = Some(updated(pr).to_rfc3339());
            self.set_sync_state(
                repo,
                kind,
                SyncState {
                    cursor: newest.clone(),
                    etag: state.etag.clone(),
                    last_success: state.last_success,
                },
            )
            .await?;
            done += 1;
            progress.step(done, total);
        }
        progress.finish();
        self.set_sync_state(
            repo,
            kind,
            SyncState {
                cursor: newest,
                etag: if mode == Mode::Poll { new_etag } else { None },
                last_success: Some(Utc::now()),
            },
        )
        .await?;
        self.poll_schedule(repo, mode, since, stats).await
    }

    /// One merged pull request: its head commit's runs, then the merge.
    async fn process_pull(
        &self,
        repo: &str,
        pr: &wire::PullRequest,
        stats: &mut PollStats,
    ) -> Result<(), PollError> {
        let Some(merged_at) = pr.merged_at else {
            return Ok(());
        };
        let mut records = self.commit_records(repo, &pr.head.sha, stats).await?;
        records.push(Record::Merge {
            repository: super::repository(repo),
            number: pr.number,
            head_sha: pr.head.sha.clone(),
            merged_at,
        });
        self.apply_and_fetch_logs(records, stats).await?;
        stats.pull_requests += 1;
        Ok(())
    }

    async fn set_backfill_from(&self, repo: &str, from: DateTime<Utc>) -> Result<(), PollError> {
        self.set_sync_state(
            repo,
            KIND_BACKFILL_FROM,
            SyncState {
                cursor: Some(from.to_rfc3339()),
                ..SyncState::default()
            },
        )
        .await
    }

    /// Everything GitHub knows about the runs on one commit, as records.
    async fn commit_records(
        &self,
        repo: &str,
        sha: &str,
        stats: &mut PollStats,
    ) -> Result<Vec<Record>, PollError> {
        let mut records = Vec::new();
        let statuses: Vec<wire::Status> = self
            .client
            .get_all(
                "statuses",
                &self.client.url(&format!(
                    "/repos/{repo}/commits/{sha}/statuses?per_page=100"
                )),
                |b| serde_json::from_slice(b),
            )
            .await?;
        let phrases = self.config.phrases_for(repo);
        records.extend(
            cockpit::story(repo, sha, statuses, phrases)
                .into_iter()
                .map(Record::Run),
        );

        let mut checks: Vec<wire::CheckRun> = self
            .client
            .get_all(
                "check-runs",
                &self.client.url(&format!(
                    "/repos/{repo}/commits/{sha}/check-runs?per_page=100"
                )),
                |b| serde_json::from_slice::<wire::CheckRunList>(b).map(|l| l.check_runs),
            )
            .await?;
        checks.sort_by_key(|c| c.id);
        for c in &checks {
            records.extend(super::check_run_record(repo, c)?);
        }

        let runs: Vec<wire::WorkflowRun> = self
            .client
            .get_all(
                "actions-runs",
                &self.client.url(&format!(
                    "/repos/{repo}/actions/runs?head_sha={sha}&per_page=100"
                )),
                |b| serde_json::from_slice::<wire::RunList>(b).map(|l| l.workflow_runs),
            )
            .await?;
        for run in runs {
            records.extend(self.workflow_run_records(repo, &run).await?);
        }
        stats.runs += records.len();
        Ok(records)
    }

    /// A workflow run with the jobs of every attempt.
    async fn workflow_run_records(
        &self,
        repo: &str,
        run: &wire::WorkflowRun,
    ) -> Result<Vec<Record>, PollError> {
        let mut records = Vec::new();
        let latest = run.run_attempt.unwrap_or(1).max(1);
        let trigger = super::trigger_of(run.event.as_deref().unwrap_or(""));
        for n in 1..=latest {
            let attempt_run = if n == latest {
                run.clone()
            } else {
                self.client
                    .get_json::<wire::WorkflowRun>(
                        "actions-attempts",
                        &self.client.url(&format!(
                            "/repos/{repo}/actions/runs/{}/attempts/{n}",
                            run.id
                        )),
                    )
                    .await?
            };
            let mut r = super::workflow_run_record(repo, &attempt_run);
            if let Record::WorkflowRun {
                run_attempt, info, ..
            } = &mut r
            {
                *run_attempt = n;
                if info.event.is_none() {
                    info.event = run.event.clone();
                }
            }
            records.push(r);
            let jobs: Vec<wire::WorkflowJob> = self
                .client
                .get_all(
                    "actions-jobs",
                    &self.client.url(&format!(
                        "/repos/{repo}/actions/runs/{}/attempts/{n}/jobs?per_page=100",
                        run.id
                    )),
                    |b| serde_json::from_slice::<wire::JobList>(b).map(|l| l.jobs),
                )
                .await?;
            for job in &jobs {
                records.push(super::job_record(repo, job, &self.config.api_url, trigger)?);
            }
        }
        Ok(records)
    }

    /// Scheduled workflow runs (nightlies), on their own interval.
    async fn poll_schedule(
        &self,
        repo: &str,
        mode: Mode,
        since: Option<DateTime<Utc>>,
        stats: &mut PollStats,
    ) -> Result<(), PollError> {
        let state = self.sync_state(repo, "schedule").await?;
        let now = Utc::now();
        let every = chrono::Duration::from_std(self.config.schedule_poll_interval)
            .unwrap_or(chrono::Duration::hours(1));
        if mode == Mode::Poll && state.last_success.is_some_and(|l| now - l < every) {
            return Ok(());
        }
        let lookback = chrono::Duration::from_std(self.config.initial_lookback)
            .unwrap_or(chrono::Duration::days(1));
        let from = match (mode, since) {
            (Mode::Backfill, Some(s)) => s,
            _ => state
                .last_success
                .map(|l| l - every)
                .unwrap_or(now - lookback),
        };
        let url = self.client.url(&format!(
            "/repos/{repo}/actions/runs?event=schedule&created=%3E%3D{}&per_page=100",
            from.format("%Y-%m-%dT%H:%M:%SZ")
        ));
        let runs: Vec<wire::WorkflowRun> = self
            .client
            .get_all("actions-runs", &url, |b| {
                serde_json::from_slice::<wire::RunList>(b).map(|l| l.workflow_runs)
            })
            .await?;
        for run in runs {
            let mut records = self.workflow_run_records(repo, &run).await?;
            for r in &mut records {
                if let Record::Job { run, .. } = r {
                    run.trigger = Trigger::Schedule;
                }
            }
            stats.scheduled_runs += records
                .iter()
                .filter(|r| matches!(r, Record::Job { .. }))
                .count();
            self.apply_and_fetch_logs(records, stats).await?;
        }
        self.set_sync_state(
            repo,
            "schedule",
            SyncState {
                cursor: None,
                etag: None,
                last_success: Some(now),
            },
        )
        .await
    }

    /// Commit the records, then download, classify and keep the logs of failed
    /// jobs. A log that fails to download for a passing reason (network,
    /// 5xx, 429) fails the call after the records are committed, so that the
    /// caller's cursor stays and the next poll downloads it.
    async fn apply_and_fetch_logs(
        &self,
        records: Vec<Record>,
        stats: &mut PollStats,
    ) -> Result<(), PollError> {
        let policy = self.policy.clone();
        let applied = self
            .store
            .write(move |s| super::apply(s, &policy, records, Utc::now()))
            .await?;
        if applied.changed() {
            self.notify();
        }
        if self.config.download_logs == DownloadLogs::None {
            return Ok(());
        }
        for (id, status, run) in applied.runs {
            if status == IngestStatus::Conflict {
                // The report contradicts the stored, finished run: not this run's log.
                continue;
            }
            let wanted = match self.config.download_logs {
                DownloadLogs::All => run.state.is_terminal(),
                _ => matches!(
                    run.state,
                    RunState::Failure | RunState::Error | RunState::TimedOut
                ),
            };
            let Some(log_url) = run.log_url.clone().filter(|_| wanted) else {
                continue;
            };
            if self.store.read(move |s| s.has_log(id)).await? {
                continue;
            }
            let (text, truncated) = match self
                .client
                .download_log(&log_url, self.config.log_max_bytes)
                .await
            {
                Ok(l) => l,
                // Gone, expired or forbidden: asking again will not help.
                Err(PollError::Status { status, .. })
                    if (400..500).contains(&status) && status != 429 =>
                {
                    tracing::warn!(
                        run = id,
                        status,
                        "the job log cannot be downloaded; skipped"
                    );
                    continue;
                }
                // The forge or the network failed: the caller does not move
                // its cursor past these runs, so the next poll tries again.
                Err(e) => return Err(e),
            };
            let failures = classify_run(&self.classifier, Some(&text), &run.tests);
            let dependencies = self.deps.extract(&text);
            let policy = self.policy.clone();
            self.store
                .write(move |s| {
                    let mut run = run;
                    if !failures.is_empty() || !dependencies.is_empty() {
                        run.failures = failures;
                        run.dependencies = dependencies;
                        s.ingest_run(&run, &policy, Utc::now())?;
                    }
                    s.store_log(id, &text, truncated, Utc::now())
                })
                .await?;
            stats.logs += 1;
            self.notify();
        }
        Ok(())
    }
}

/// `serve`'s background task: poll now, then every `poll_interval`.
pub async fn run_forever(poller: Poller) {
    let mut tick = tokio::time::interval(poller.config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let stats = poller.poll_once().await;
        tracing::info!(?stats, "GitHub poll done");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_give_the_next_page() {
        let link = r#"<https://api.github.com/repositories/1/pulls?page=2>; rel="next", <https://api.github.com/repositories/1/pulls?page=5>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/repositories/1/pulls?page=2")
        );
        assert_eq!(next_link(r#"<https://x/?page=1>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}

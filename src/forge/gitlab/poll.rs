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
//! Requests go through the forge-neutral client (`crate::forge::client`,
//! `crate::forge::pages`): `RateLimit-*` headers into gauges, `429` waits
//! `Retry-After` (capped), `5xx`, network errors and broken bodies back off
//! exponentially with jitter, every body is capped, listings stop (logged
//! and counted) at the page limit.
//!
//! One concern per file:
//! * `http`: the GitLab adapter of the client (auth, rate-limit headers)
//!   and URL pieces;
//! * `projects`: which projects are polled;
//! * `pipelines`: one project's round: changed pipelines, their jobs, test
//!   reports and traces, then the cursor;
//! * `merges`: merged merge requests since the MR cursor;
//! * `runs`: a pipeline and its jobs as planned runs (retries as attempts),
//!   with the test report attached.

mod http;
mod merges;
mod pipelines;
mod projects;
mod runs;

use super::{GitlabConfig, GitlabError};
use crate::classify::Classifier;
use crate::deps::Extractor;
use crate::forge::client::{ForgeClient, Retries};
use crate::forge::driver;
use crate::metrics::MetricsHub;
use crate::model::Forge;
use crate::store::writer::StoreHandle;
use crate::store::{Policy, SyncState};
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const FORGE: &str = "gitlab";
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

pub use crate::forge::driver::Since;

pub struct Poller {
    config: GitlabConfig,
    /// Only projects this shard owns are polled (docs/scaling.md).
    shard: crate::shard::Shard,
    client: ForgeClient<http::Gitlab>,
    store: StoreHandle,
    policy: Arc<Policy>,
    classifier: Arc<Classifier>,
    deps: Arc<Extractor>,
    pub stats: Arc<PollStats>,
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
        let stats = Arc::new(PollStats::default());
        let retries = Retries {
            base: config.retry_base_delay,
            max: config.max_retries,
            max_wait: config.max_retry_after,
        };
        let adapter = http::Gitlab {
            token,
            retry_base_delay: config.retry_base_delay,
        };
        let client = ForgeClient::new(adapter, config.request_timeout, retries, hub)
            .map_err(|e| GitlabError::Http {
                endpoint: "client".into(),
                source: e,
            })?
            .with_observer(stats.clone());
        Ok(Poller {
            config,
            shard: crate::shard::Shard::ALL,
            client,
            store,
            policy,
            classifier,
            deps: Arc::new(Extractor::with_defaults()),
            stats,
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

    /// One round over every project. A project that fails is logged and
    /// reported; the others go on.
    pub async fn poll_once(
        &self,
        since: Since,
        progress: driver::Progress<'_, PollReport>,
    ) -> Result<PollReport, GitlabError> {
        driver::round(self, since, false, progress)
            .await
            .map(Self::report)
    }

    /// `backfill gitlab --days N`: one round from `since` with its progress shown.
    pub(crate) async fn backfill(&self, since: Since) -> Result<PollReport, GitlabError> {
        driver::backfill(self, since, false, true)
            .await
            .map(Self::report)
    }

    fn report(round: driver::Round<PollReport>) -> PollReport {
        PollReport {
            projects: round.scopes,
            failed: round.failed,
            ..round.report
        }
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
}

impl driver::Source for Poller {
    type Report = PollReport;
    type Error = GitlabError;
    const SCOPE: &'static str = "GitLab project";
    const LABEL: &'static str = "backfill gitlab";
    const UNIT: &'static str = "projects";

    async fn scopes(&self) -> Result<Vec<String>, GitlabError> {
        self.projects().await
    }

    async fn sync(
        &self,
        project: &str,
        since: Since,
        report: &mut PollReport,
        _tick: &(dyn Fn(&PollReport) + Sync),
    ) -> Result<(), GitlabError> {
        self.poll_project(project, since, report).await
    }

    fn message(&self, r: &PollReport) -> String {
        format!(
            "{} pipelines, {} runs, {} traces, {} API calls",
            r.pipelines,
            r.runs,
            r.traces,
            self.stats.requests()
        )
    }
}

impl Poller {
    /// `serve`'s loop: a round every `poll_interval` (spread at random,
    /// `forge::poll_forever`) until `stop`; after a round that stored
    /// something, `refresh` is notified.
    pub async fn run_forever(
        self,
        refresh: Arc<tokio::sync::Notify>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::forge::poll_forever(self.config.poll_interval, stop, || async {
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
        })
        .await
    }
}

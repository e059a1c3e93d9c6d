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
//! Requests go through the forge-neutral client (`crate::forge::client`,
//! `crate::forge::pages`): paginated by `Link: rel="next"` up to the page
//! limit, counted in the self-metrics, the rate-limit headers read,
//! `Retry-After` and secondary limits waited out, exponential backoff with
//! jitter on 5xx and network errors, a bounded number of times, bodies capped.
//!
//! One concern per file:
//! * `client`: the GitHub adapter of the forge-neutral client (auth, API and
//!   rate-limit headers, which answers are rate limits, the log marker);
//! * `repositories`: which repositories are polled;
//! * `pulls`: merged pull requests per repository, the cursors and the
//!   backfill's covered range;
//! * `runs`: the runs on a commit (statuses, check runs, workflow runs and
//!   their jobs), scheduled runs, failed jobs' logs;

mod client;
mod pulls;
mod repositories;
mod runs;

pub use client::Client;

use super::GithubConfig;
use crate::classify::Classifier;
use crate::forge::driver::{self, Since};
use crate::model::Forge;
use crate::store::writer::StoreHandle;
use crate::store::{Policy, StoreError, SyncState};
use chrono::Utc;
use pulls::{KIND_BACKFILL, KIND_BACKFILL_FROM};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// A request without a usable answer (the forge-neutral client's error).
    #[error("GitHub API {0}")]
    Fetch(#[from] crate::forge::client::FetchError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("owner pattern: {0}")]
    Pattern(#[from] regex::Error),
    #[error(transparent)]
    Github(#[from] super::GithubError),
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// Show a progress bar on a terminal (`backfill`).
    pub show_progress: bool,
    /// Only repositories this shard owns are polled (docs/scaling.md).
    pub shard: crate::shard::Shard,
}

impl Poller {
    fn notify(&self) {
        if let Some(r) = &self.refresh {
            r.notify_one();
        }
    }

    /// One poll of everything (`serve`).
    pub async fn poll_once(&self) -> PollStats {
        let lookback = chrono::Duration::from_std(self.config.initial_lookback)
            .unwrap_or(chrono::Duration::days(1));
        let since = Since::Poll(Utc::now() - lookback);
        self.stats(driver::round(self, since, false, &|_, _, _| {}).await)
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
        let since = Since::Backfill(Utc::now() - chrono::Duration::days(days as i64));
        let round = driver::backfill(self, since, restart, self.show_progress).await;
        self.stats(round)
    }

    fn stats(&self, round: Result<driver::Round<PollStats>, PollError>) -> PollStats {
        match round {
            Ok(r) => PollStats {
                repositories: r.scopes,
                errors: r.report.errors + r.failed.len(),
                ..r.report
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot list GitHub repositories");
                PollStats {
                    errors: 1,
                    ..PollStats::default()
                }
            }
        }
    }
}

impl driver::Source for Poller {
    type Report = PollStats;
    type Error = PollError;
    const SCOPE: &'static str = "GitHub repository";
    const LABEL: &'static str = "backfill github";
    const UNIT: &'static str = "repositories";

    async fn scopes(&self) -> Result<Vec<String>, PollError> {
        self.repositories().await
    }

    async fn forget(&self, repos: &[String]) -> Result<(), PollError> {
        let repos = repos.to_vec();
        self.store
            .write(move |s| {
                for repo in &repos {
                    for kind in [KIND_BACKFILL, KIND_BACKFILL_FROM] {
                        s.set_sync_state(Forge::Github, repo, kind, &SyncState::default())?;
                    }
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn sync(
        &self,
        repo: &str,
        since: Since,
        stats: &mut PollStats,
        tick: &(dyn Fn(&PollStats) + Sync),
    ) -> Result<(), PollError> {
        self.poll_repository(repo, since, stats, tick).await
    }

    fn message(&self, stats: &PollStats) -> String {
        format!(
            "{} merged pull requests, {} runs, {} logs",
            stats.pull_requests, stats.runs, stats.logs
        )
    }
}

/// `serve`'s background task: a round every `poll_interval` (spread at
/// random, `forge::poll_forever`) until `stop`.
pub async fn run_forever(poller: Poller, stop: tokio::sync::watch::Receiver<bool>) {
    crate::forge::poll_forever(poller.config.poll_interval, stop, || async {
        let stats = poller.poll_once().await;
        tracing::info!(?stats, "GitHub poll done");
    })
    .await
}

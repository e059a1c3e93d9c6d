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
//!   rate-limit headers, which answers are rate limits);
//! * `repositories`: which repositories are polled;
//! * `pulls`: merged pull requests per repository, the cursors and the
//!   backfill's covered range;
//! * `runs`: the runs on a commit (statuses, check runs, workflow runs and
//!   their jobs), scheduled runs, failed jobs' logs;

mod client;
mod pulls;
mod repositories;
mod runs;

use super::GithubConfig;
use crate::config::Secret;
use crate::forge::client::{Counts, ForgeClient};
use crate::forge::context::Context;
use crate::forge::driver::{self, PollError, Since, Summary};
use crate::model::Forge;
use crate::store::SyncState;
use pulls::{KIND_BACKFILL, KIND_BACKFILL_FROM};
use std::time::Duration;

/// Polls GitHub into the store.
pub struct Poller {
    client: ForgeClient<client::Github>,
    ctx: Context,
    config: GithubConfig,
}

impl Poller {
    pub fn new(
        ctx: Context,
        config: GithubConfig,
        token: Option<Secret>,
    ) -> Result<Poller, PollError> {
        Ok(Poller {
            client: client::client(&config, token, ctx.hub.clone())?,
            ctx,
            config,
        })
    }

    /// What the client did.
    pub fn counts(&self) -> &Counts {
        &self.client.counts
    }
}

/// A backfill (`backfill github --days N [--restart]`) covers one range of
/// merged pull requests per repository (by `updated_at`): from where it
/// started (`backfill_from`) to its cursor. Run again, it continues from the
/// cursor (a resume after an interruption, or what was merged since); with
/// more days than before it first fills the older gap. `restart` forgets the
/// range: everything in the window is fetched again (e.g. after changing the
/// status phrases).
impl driver::Source for Poller {
    const NAME: &'static str = "GitHub";
    const SCOPE: &'static str = "GitHub repository";
    const LABEL: &'static str = "backfill github";
    const UNIT: &'static str = "repositories";

    fn schedule(&self) -> (Duration, Duration) {
        (self.config.poll_interval, self.config.initial_lookback)
    }

    async fn scopes(&self) -> Result<Vec<String>, PollError> {
        self.repositories().await
    }

    async fn forget(&self, repos: &[String]) -> Result<(), PollError> {
        let repos = repos.to_vec();
        self.ctx
            .store
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
        summary: &mut Summary,
        tick: &(dyn Fn(&Summary) + Sync),
    ) -> Result<(), PollError> {
        self.poll_repository(repo, since, summary, tick).await
    }

    fn message(&self, s: &Summary) -> String {
        format!(
            "{} merged pull requests, {} runs, {} logs",
            s.merges, s.runs, s.logs
        )
    }
}

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

use super::GitlabConfig;
use crate::config::Secret;
use crate::forge::client::{Counts, ForgeClient, Retries};
use crate::forge::context::Context;
use crate::forge::driver::{self, PollError, Since, Summary};
use crate::model::Forge;
use crate::store::SyncState;
use std::time::Duration;

const KIND_PIPELINES: &str = "pipelines";
const KIND_BACKFILL: &str = "pipelines_backfill";
const KIND_MERGES: &str = "merge_requests";

/// Polls GitLab into the store.
pub struct Poller {
    config: GitlabConfig,
    client: ForgeClient<http::Gitlab>,
    ctx: Context,
}

impl Poller {
    pub fn new(
        ctx: Context,
        config: GitlabConfig,
        token: Option<Secret>,
    ) -> Result<Poller, PollError> {
        let retries = Retries {
            base: config.retry_base_delay,
            max: config.max_retries,
            max_wait: config.max_retry_after,
        };
        let adapter = http::Gitlab {
            token,
            retry_base_delay: config.retry_base_delay,
        };
        let client = ForgeClient::new(
            adapter,
            &config.api_url,
            config.request_timeout,
            retries,
            ctx.hub.clone(),
        )?;
        Ok(Poller {
            config,
            client,
            ctx,
        })
    }

    /// What the client did.
    pub fn counts(&self) -> &Counts {
        &self.client.counts
    }

    async fn sync_state(&self, scope: &str, kind: &'static str) -> Result<SyncState, PollError> {
        Ok(self.ctx.sync_state(Forge::Gitlab, scope, kind).await?)
    }

    async fn set_sync_state(
        &self,
        scope: &str,
        kind: &'static str,
        state: SyncState,
    ) -> Result<(), PollError> {
        Ok(self
            .ctx
            .set_sync_state(Forge::Gitlab, scope, kind, state)
            .await?)
    }
}

impl driver::Source for Poller {
    const NAME: &'static str = "GitLab";
    const SCOPE: &'static str = "GitLab project";
    const LABEL: &'static str = "backfill gitlab";
    const UNIT: &'static str = "projects";

    fn schedule(&self) -> (Duration, Duration) {
        (self.config.poll_interval, self.config.initial_lookback)
    }

    async fn scopes(&self) -> Result<Vec<String>, PollError> {
        self.projects().await
    }

    async fn sync(
        &self,
        project: &str,
        since: Since,
        summary: &mut Summary,
        _tick: &(dyn Fn(&Summary) + Sync),
    ) -> Result<(), PollError> {
        self.poll_project(project, since, summary).await
    }

    fn message(&self, s: &Summary) -> String {
        format!(
            "{} pipelines, {} runs, {} traces, {} API calls",
            s.pipelines,
            s.runs,
            s.logs,
            self.client.counts.requests()
        )
    }
}

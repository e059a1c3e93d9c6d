//! One project's round: the pipelines changed since the cursor (one
//! conditional request when nothing changed), each with its jobs, test report
//! and failed jobs' traces (streamed, capped, classified), then the cursor.

use super::http::{encode, rfc3339};
use super::runs::{attach_tests, plan_pipeline};
use super::{KIND_BACKFILL, KIND_PIPELINES, Poller};
use crate::forge::client::FetchError;
use crate::forge::driver::{PollError, Since, Summary};
use crate::forge::event::{Attempt, Event, apply};
use crate::forge::gitlab::wire::{ApiJob, ApiPipeline, TestReport};
use crate::forge::gitlab::{observed, parse_time, run_state};
use crate::ingest::failures_from;
use crate::model::NewRun;
use crate::store::SyncState;
use chrono::{DateTime, Utc};

impl Poller {
    /// Poll one project's pipelines (and, when they changed, its merged MRs).
    pub async fn poll_project(
        &self,
        project: &str,
        since: Since,
        report: &mut Summary,
    ) -> Result<(), PollError> {
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
        let first = self.client.url(
            &format!("/projects/{enc}/pipelines"),
            &[
                ("updated_after", rfc3339(start)),
                ("order_by", "updated_at".into()),
                ("sort", "asc".into()),
                ("per_page", "100".into()),
            ],
        );
        // The stored ETag belongs to the URL of the stored cursor.
        let etag = if cursor == Some(start) {
            state.etag.clone()
        } else {
            None
        };
        let mut pages = self.client.pages("pipelines", first, etag);
        let mut newest = start;
        // The cursor as last written this round.
        let mut committed = start;
        let mut changed = false;
        let mut is_first = true;
        // Nothing on the first page: a 304.
        while let Some(page) = pages.next_json::<Vec<ApiPipeline>>().await? {
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
            let next = pages.has_next();
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
            committed = match (next, page_last) {
                (true, Some(last)) => fresh
                    .iter()
                    .filter_map(|p| p.updated_at.as_deref().and_then(parse_time))
                    .chain([before_page])
                    .filter(|u| *u < last)
                    .fold(committed, DateTime::max),
                _ => newest,
            };
            let keep_etag = is_first && !next && fresh.is_empty();
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

    /// One pipeline: its jobs (with retries), itself, its test report, the
    /// traces of its failed jobs.
    pub(super) async fn sync_pipeline(
        &self,
        project: &str,
        p: &ApiPipeline,
        report: &mut Summary,
    ) -> Result<(), PollError> {
        let enc = encode(project);
        let url = self.client.url(
            &format!("/projects/{enc}/pipelines/{}/jobs", p.id),
            &[
                ("include_retried", "true".into()),
                ("per_page", "100".into()),
            ],
        );
        let jobs: Vec<ApiJob> = self.client.all("jobs", url, |l: Vec<ApiJob>| l).await?;
        let mut planned = plan_pipeline(project, p, &jobs);
        report.pipelines += 1;
        let pipeline_state = run_state(&p.status, None);
        if self.config.test_reports && pipeline_state.is_some_and(|s| s.is_terminal()) {
            let path = format!("/projects/{enc}/pipelines/{}/test_report", p.id);
            let url = self.client.url(&path, &[]);
            match self.client.json::<TestReport>("test_report", &url).await {
                Ok(tr) => attach_tests(&mut planned, tr, &self.ctx.classifier),
                Err(FetchError::Decode { source, .. }) => {
                    tracing::warn!(project, pipeline = p.id, error = %source, "invalid or too large test report; skipped")
                }
                Err(e) => return Err(e.into()),
            }
        }
        let events = planned.into_iter().map(Event::Run).collect();
        let applied = self.ctx.apply(events).await?;
        report.runs += applied.runs.len();
        for (id, _, run) in applied.runs {
            let Some(job_id) = run
                .external_id
                .as_deref()
                .and_then(|e| e.strip_prefix("job:"))
                .map(str::to_string)
            else {
                continue;
            };
            if !self.config.download_traces.wants(run.state) {
                continue;
            }
            if self.ctx.store.read(move |s| s.has_log(id)).await? {
                continue;
            }
            self.fetch_trace(project, &job_id, id, run).await?;
            report.logs += 1;
        }
        Ok(())
    }

    /// Download (streamed, capped), classify and store one job's log.
    pub(super) async fn fetch_trace(
        &self,
        project: &str,
        job_id: &str,
        run_id: i64,
        mut run: NewRun,
    ) -> Result<(), PollError> {
        let path = format!("/projects/{}/jobs/{job_id}/trace", encode(project));
        let url = self.client.url(&path, &[]);
        let cap = self.config.trace_max_bytes;
        let Some((log, truncated)) = self.client.log("trace", &url, cap).await? else {
            return Ok(());
        };
        let classifier = &self.ctx.classifier;
        let classification = classifier.classify_text(&log).ok().unwrap_or_default();
        let sections = classification.sections;
        run.failures = failures_from(classifier, classification.primary, &run.tests);
        run.dependencies = self.ctx.deps.extract(&log);
        // The run as stored (its attempt and trigger decided), with its failures.
        let event = Event::Run(observed(run, Attempt::Known, None));
        let policy = self.ctx.policy.clone();
        self.ctx
            .store
            .write(move |s| {
                let now = Utc::now();
                apply(s, &policy, vec![event.clone()], now)?;
                s.store_log(run_id, &log, truncated, now)?;
                s.store_sections(run_id, &sections)?;
                Ok(())
            })
            .await?;
        self.ctx.notify();
        Ok(())
    }
}

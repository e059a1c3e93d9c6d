//! The runs on one commit (its statuses, the Cockpit story; check runs;
//! Actions workflow runs with the jobs of every attempt), scheduled workflow
//! runs on their own interval, and the logs of failed jobs: downloaded once,
//! capped, classified.

use super::Poller;
use crate::forge::client::FetchError;
use crate::forge::driver::{PollError, Since, Summary};
use crate::forge::event::{Attempt, Event};
use crate::forge::github::{cockpit, wire};
use crate::ingest::classify_run;
use crate::model::Trigger;
use crate::store::{IngestStatus, SyncState};
use chrono::Utc;

impl Poller {
    /// Everything GitHub knows about the runs on one commit, as records.
    pub(super) async fn commit_records(
        &self,
        repo: &str,
        sha: &str,
        stats: &mut Summary,
    ) -> Result<Vec<Event>, PollError> {
        let mut records = Vec::new();
        let url = |what| {
            let path = format!("/repos/{repo}/commits/{sha}/{what}?per_page=100");
            self.client.url(&path, &[])
        };
        let statuses: Vec<wire::Status> = self
            .client
            .all("statuses", url("statuses"), |l: Vec<wire::Status>| l)
            .await?;
        let phrases = self.config.phrases_for(repo);
        records.extend(
            cockpit::story(repo, sha, statuses, phrases)
                .into_iter()
                .map(|run| Event::run(run, true)),
        );

        let mut checks: Vec<wire::CheckRun> = self
            .client
            .all("check-runs", url("check-runs"), |l: wire::CheckRunList| {
                l.check_runs
            })
            .await?;
        checks.sort_by_key(|c| c.id);
        for c in &checks {
            records.extend(crate::forge::github::check_run_record(repo, c)?);
        }

        let path = format!("/repos/{repo}/actions/runs?head_sha={sha}&per_page=100");
        let runs: Vec<wire::WorkflowRun> = self
            .client
            .all(
                "actions-runs",
                self.client.url(&path, &[]),
                |l: wire::RunList| l.workflow_runs,
            )
            .await?;
        for run in runs {
            records.extend(self.workflow_run_records(repo, &run).await?);
        }
        stats.runs += records.len();
        Ok(records)
    }

    /// A workflow run with the jobs of every attempt.
    pub(super) async fn workflow_run_records(
        &self,
        repo: &str,
        run: &wire::WorkflowRun,
    ) -> Result<Vec<Event>, PollError> {
        let mut records = Vec::new();
        let latest = run.run_attempt.unwrap_or(1).max(1);
        let trigger = crate::forge::github::trigger_of(run.event.as_deref().unwrap_or(""));
        for n in 1..=latest {
            let attempt = format!("/repos/{repo}/actions/runs/{}/attempts/{n}", run.id);
            let attempt_run = if n == latest {
                run.clone()
            } else {
                let url = self.client.url(&attempt, &[]);
                self.client.json("actions-attempts", &url).await?
            };
            let mut r = crate::forge::github::workflow_run_record(repo, &attempt_run);
            if let Event::WorkflowRun {
                run_attempt, info, ..
            } = &mut r
            {
                *run_attempt = n;
                if info.event.is_none() {
                    info.event = run.event.clone();
                }
            }
            records.push(r);
            let url = self
                .client
                .url(&format!("{attempt}/jobs?per_page=100"), &[]);
            let jobs: Vec<wire::WorkflowJob> = self
                .client
                .all("actions-jobs", url, |l: wire::JobList| l.jobs)
                .await?;
            for job in &jobs {
                records.push(crate::forge::github::job_record(
                    repo,
                    job,
                    &self.config.api_url,
                    trigger,
                )?);
            }
        }
        Ok(records)
    }

    /// Scheduled workflow runs (nightlies), on their own interval.
    pub(super) async fn poll_schedule(
        &self,
        repo: &str,
        since: Since,
        stats: &mut Summary,
    ) -> Result<(), PollError> {
        let state = self.sync_state(repo, "schedule").await?;
        let now = Utc::now();
        let every = chrono::Duration::from_std(self.config.schedule_poll_interval)
            .unwrap_or(chrono::Duration::hours(1));
        if matches!(since, Since::Poll(_)) && state.last_success.is_some_and(|l| now - l < every) {
            return Ok(());
        }
        let lookback = chrono::Duration::from_std(self.config.initial_lookback)
            .unwrap_or(chrono::Duration::days(1));
        let from = match since {
            Since::Backfill(s) => s,
            Since::Poll(_) => state
                .last_success
                .map(|l| l - every)
                .unwrap_or(now - lookback),
        };
        let path = format!(
            "/repos/{repo}/actions/runs?event=schedule&created=%3E%3D{}&per_page=100",
            from.format("%Y-%m-%dT%H:%M:%SZ")
        );
        let runs: Vec<wire::WorkflowRun> = self
            .client
            .all(
                "actions-runs",
                self.client.url(&path, &[]),
                |l: wire::RunList| l.workflow_runs,
            )
            .await?;
        for run in runs {
            let mut records = self.workflow_run_records(repo, &run).await?;
            for r in &mut records {
                if let Event::Run(o) = r
                    && matches!(o.attempt, Attempt::Actions { .. })
                {
                    o.run.trigger = Trigger::Schedule;
                }
            }
            stats.scheduled_runs += records
                .iter()
                .filter(
                    |r| matches!(r, Event::Run(o) if matches!(o.attempt, Attempt::Actions { .. })),
                )
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
    pub(super) async fn apply_and_fetch_logs(
        &self,
        records: Vec<Event>,
        stats: &mut Summary,
    ) -> Result<(), PollError> {
        let applied = self.ctx.apply(records).await?;
        for (id, status, run) in applied.runs {
            // A conflict: the report contradicts the stored, finished run,
            // so this is not that run's log.
            let wanted =
                self.config.download_logs.wants(run.state) && status != IngestStatus::Conflict;
            let Some(log_url) = run.log_url.clone().filter(|_| wanted) else {
                continue;
            };
            if self.ctx.store.read(move |s| s.has_log(id)).await? {
                continue;
            }
            let (text, truncated) = match self
                .client
                .log("logs", &log_url, self.config.log_max_bytes)
                .await
            {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                // Gone, expired or forbidden: asking again will not help.
                Err(FetchError::Status { status, .. })
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
                Err(e) => return Err(e.into()),
            };
            let failures = classify_run(&self.ctx.classifier, Some(&text), &run.tests);
            let dependencies = self.ctx.deps.extract(&text);
            let policy = self.ctx.policy.clone();
            let found = !failures.is_empty() || !dependencies.is_empty();
            let mut run = run;
            if found {
                run.failures = failures;
                run.dependencies = dependencies;
            }
            self.ctx
                .store
                .write(move |s| {
                    if found {
                        s.ingest_run(&run, &policy, Utc::now())?;
                    }
                    s.store_log(id, &text, truncated, Utc::now())
                })
                .await?;
            stats.logs += 1;
            self.ctx.notify();
        }
        Ok(())
    }
}

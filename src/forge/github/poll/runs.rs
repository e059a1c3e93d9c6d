//! The runs on one commit (its statuses, the Cockpit story; check runs;
//! Actions workflow runs with the jobs of every attempt), scheduled workflow
//! runs on their own interval, and the logs of failed jobs: downloaded once,
//! capped, classified.

use super::{PollError, PollStats, Poller};
use crate::forge::client::FetchError;
use crate::forge::driver::Since;
use crate::forge::event::{Attempt, Event};
use crate::forge::github::{DownloadLogs, cockpit, wire};
use crate::ingest::classify_run;
use crate::model::{RunState, Trigger};
use crate::store::{IngestStatus, SyncState};
use chrono::Utc;

impl Poller {
    /// Everything GitHub knows about the runs on one commit, as records.
    pub(super) async fn commit_records(
        &self,
        repo: &str,
        sha: &str,
        stats: &mut PollStats,
    ) -> Result<Vec<Event>, PollError> {
        let mut records = Vec::new();
        let statuses: Vec<wire::Status> = self
            .client
            .get_all(
                "statuses",
                &self.client.url(&format!(
                    "/repos/{repo}/commits/{sha}/statuses?per_page=100"
                )),
                |l: Vec<wire::Status>| l,
            )
            .await?;
        let phrases = self.config.phrases_for(repo);
        records.extend(
            cockpit::story(repo, sha, statuses, phrases)
                .into_iter()
                .map(|run| Event::run(run, true)),
        );

        let mut checks: Vec<wire::CheckRun> = self
            .client
            .get_all(
                "check-runs",
                &self.client.url(&format!(
                    "/repos/{repo}/commits/{sha}/check-runs?per_page=100"
                )),
                |l: wire::CheckRunList| l.check_runs,
            )
            .await?;
        checks.sort_by_key(|c| c.id);
        for c in &checks {
            records.extend(crate::forge::github::check_run_record(repo, c)?);
        }

        let runs: Vec<wire::WorkflowRun> = self
            .client
            .get_all(
                "actions-runs",
                &self.client.url(&format!(
                    "/repos/{repo}/actions/runs?head_sha={sha}&per_page=100"
                )),
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
            let jobs: Vec<wire::WorkflowJob> = self
                .client
                .get_all(
                    "actions-jobs",
                    &self.client.url(&format!(
                        "/repos/{repo}/actions/runs/{}/attempts/{n}/jobs?per_page=100",
                        run.id
                    )),
                    |l: wire::JobList| l.jobs,
                )
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
        stats: &mut PollStats,
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
        let url = self.client.url(&format!(
            "/repos/{repo}/actions/runs?event=schedule&created=%3E%3D{}&per_page=100",
            from.format("%Y-%m-%dT%H:%M:%SZ")
        ));
        let runs: Vec<wire::WorkflowRun> = self
            .client
            .get_all("actions-runs", &url, |l: wire::RunList| l.workflow_runs)
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
        stats: &mut PollStats,
    ) -> Result<(), PollError> {
        let policy = self.policy.clone();
        let applied = self
            .store
            .write(move |s| crate::forge::event::apply(s, &policy, records, Utc::now()))
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
                Err(PollError::Fetch(FetchError::Status { status, .. }))
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

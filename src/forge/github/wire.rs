//! GitHub's JSON, as far as this exporter reads it: webhook payloads and REST
//! API answers. Only the fields used are declared (serde ignores the rest);
//! everything that may be absent or null is an `Option` (serde reads an absent
//! one as `None`). These types never
//! leave the `github` module: they become `model` types at its boundary.

use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Repository {
    pub full_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WorkflowJob {
    pub id: u64,
    pub run_id: u64,
    pub run_attempt: Option<u32>,
    pub head_sha: String,
    pub name: String,
    pub workflow_name: Option<String>,
    pub status: String,
    pub conclusion: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub html_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WorkflowRun {
    pub id: u64,
    pub run_attempt: Option<u32>,
    pub event: Option<String>,
    pub run_started_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct App {
    pub slug: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub html_url: Option<String>,
    pub app: Option<App>,
}

/// A commit status, from the `status` event or `GET .../commits/{sha}/statuses`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Status {
    pub id: Option<u64>,
    pub state: String,
    pub context: String,
    pub description: Option<String>,
    pub target_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Head {
    pub sha: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PullRequest {
    pub number: i64,
    pub merged: Option<bool>,
    pub merged_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub head: Head,
}

// Webhook event bodies.

#[derive(Debug, Deserialize)]
pub(crate) struct WorkflowJobEvent {
    pub workflow_job: WorkflowJob,
    pub repository: Repository,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WorkflowRunEvent {
    pub workflow_run: WorkflowRun,
    pub repository: Repository,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckRunEvent {
    pub check_run: CheckRun,
    pub repository: Repository,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckSuiteEvent {
    pub repository: Repository,
}

/// The `status` event is flat: the status fields sit next to `sha`.
#[derive(Debug, Deserialize)]
pub(crate) struct StatusEvent {
    pub sha: String,
    #[serde(flatten)]
    pub status: Status,
    pub repository: Repository,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PullRequestEvent {
    pub action: String,
    pub pull_request: PullRequest,
    pub repository: Repository,
}

// REST API answers.

#[derive(Debug, Deserialize)]
pub(crate) struct JobList {
    pub jobs: Vec<WorkflowJob>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunList {
    pub workflow_runs: Vec<WorkflowRun>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckRunList {
    pub check_runs: Vec<CheckRun>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RepoItem {
    pub full_name: String,
    #[serde(default)]
    pub archived: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn absent_optional_fields_read_as_none() {
        let job: super::WorkflowJob = serde_json::from_str(
            r#"{"id": 1, "run_id": 2, "head_sha": "abc", "name": "unit", "status": "queued"}"#,
        )
        .unwrap();
        assert!(job.run_attempt.is_none() && job.created_at.is_none() && job.html_url.is_none());
    }
}

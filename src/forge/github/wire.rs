//! GitHub's JSON, as far as this exporter reads it: webhook payloads and REST
//! API answers. Only the fields used are declared (serde ignores the rest);
//! everything that may be absent or null is an `Option`. These types never
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
    #[serde(default)]
    pub run_attempt: Option<u32>,
    pub head_sha: String,
    pub name: String,
    #[serde(default)]
    pub workflow_name: Option<String>,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub html_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WorkflowRun {
    pub id: u64,
    #[serde(default)]
    pub run_attempt: Option<u32>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub run_started_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct App {
    #[serde(default)]
    pub slug: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub app: Option<App>,
}

/// A commit status, from the `status` event or `GET .../commits/{sha}/statuses`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Status {
    #[serde(default)]
    pub id: Option<u64>,
    pub state: String,
    pub context: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
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
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merged_at: Option<DateTime<Utc>>,
    #[serde(default)]
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

//! GitLab's JSON, as far as this exporter reads it. Private: converted to
//! model types in the parent module, at the boundary. Every field is optional
//! or defaulted where GitLab versions differ, so that an older or newer
//! GitLab does not make a delivery unreadable.

use serde::Deserialize;

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct HookProject {
    #[serde(default)]
    pub path_with_namespace: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct HookRepository {
    #[serde(default)]
    pub homepage: Option<String>,
}

/// Job Hook (`object_kind: build`).
#[derive(Debug, Deserialize)]
pub(super) struct JobHook {
    pub sha: String,
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
    pub build_id: i64,
    pub build_name: String,
    #[serde(default)]
    pub build_stage: String,
    pub build_status: String,
    #[serde(default)]
    pub build_created_at: Option<String>,
    #[serde(default)]
    pub build_started_at: Option<String>,
    #[serde(default)]
    pub build_finished_at: Option<String>,
    #[serde(default)]
    pub build_duration: Option<f64>,
    #[serde(default)]
    pub build_queued_duration: Option<f64>,
    #[serde(default)]
    pub build_failure_reason: Option<String>,
    #[serde(default)]
    pub retries_count: Option<u32>,
    #[serde(default)]
    pub pipeline_id: Option<i64>,
    #[serde(default)]
    pub project: Option<HookProject>,
    #[serde(default)]
    pub repository: Option<HookRepository>,
    /// Newer GitLab versions send the pipeline's source.
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct HookMergeRequestRef {
    pub iid: i64,
}

/// Pipeline Hook.
#[derive(Debug, Deserialize)]
pub(super) struct PipelineHook {
    pub object_attributes: ApiPipeline,
    #[serde(default)]
    pub merge_request: Option<HookMergeRequestRef>,
    pub project: HookProject,
    #[serde(default)]
    pub builds: Vec<ApiJob>,
}

#[derive(Debug, Deserialize)]
pub(super) struct HookCommit {
    pub id: String,
}

/// Merge Request Hook.
#[derive(Debug, Deserialize)]
pub(super) struct MergeRequestHook {
    pub project: HookProject,
    pub object_attributes: ApiMergeRequest,
}

// ---------------------------------------------------------------------------
// REST API v4
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct ApiProject {
    pub path_with_namespace: String,
    #[serde(default)]
    pub archived: bool,
}

/// A pipeline: an API answer, or a Pipeline Hook's `object_attributes`.
#[derive(Debug, Deserialize)]
pub(super) struct ApiPipeline {
    pub id: i64,
    pub sha: String,
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
    pub status: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Sent by the hook only.
    #[serde(default)]
    pub queued_duration: Option<f64>,
    /// The hook's link to the pipeline.
    #[serde(default)]
    pub url: Option<String>,
    /// The API's link to the pipeline.
    #[serde(default)]
    pub web_url: Option<String>,
}

/// A job: of the API's job list, or a Pipeline Hook's `builds`.
#[derive(Debug, Deserialize)]
pub(super) struct ApiJob {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub stage: String,
    pub status: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub queued_duration: Option<f64>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
}

/// A merge request: an API answer, or a Merge Request Hook's `object_attributes`.
#[derive(Debug, Deserialize)]
pub(super) struct ApiMergeRequest {
    pub iid: i64,
    /// The API's head commit.
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    /// The hook's action (`merge`, `update`, ...).
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub merged_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    /// The hook's head commit.
    #[serde(default)]
    pub last_commit: Option<HookCommit>,
}

#[derive(Debug, Deserialize)]
pub(super) struct TestReport {
    #[serde(default)]
    pub test_suites: Vec<TestSuite>,
}

#[derive(Debug, Deserialize)]
pub(super) struct TestSuite {
    pub name: String,
    #[serde(default)]
    pub test_cases: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
pub(super) struct TestCase {
    pub status: String,
    pub name: String,
    #[serde(default)]
    pub classname: Option<String>,
    #[serde(default)]
    pub execution_time: Option<f64>,
    /// A string, an object or a list, depending on the report.
    #[serde(default)]
    pub system_output: Option<serde_json::Value>,
    #[serde(default)]
    pub stack_trace: Option<String>,
}

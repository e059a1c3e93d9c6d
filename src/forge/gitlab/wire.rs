//! GitLab's JSON, as far as this exporter reads it. Private: converted to
//! model types in the parent module, at the boundary. Every field is optional
//! (an `Option`: serde reads an absent one as `None`) or defaulted where GitLab
//! versions differ, so that an older or newer GitLab does not make a delivery
//! unreadable.

use serde::Deserialize;

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct HookProject {
    pub path_with_namespace: Option<String>,
    pub web_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct HookRepository {
    pub homepage: Option<String>,
}

/// Job Hook (`object_kind: build`).
#[derive(Debug, Deserialize)]
pub(super) struct JobHook {
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub build_id: i64,
    pub build_name: String,
    #[serde(default)]
    pub build_stage: String,
    pub build_status: String,
    pub build_created_at: Option<String>,
    pub build_started_at: Option<String>,
    pub build_finished_at: Option<String>,
    pub build_duration: Option<f64>,
    pub build_queued_duration: Option<f64>,
    pub build_failure_reason: Option<String>,
    pub retries_count: Option<u32>,
    pub pipeline_id: Option<i64>,
    pub project: Option<HookProject>,
    pub repository: Option<HookRepository>,
    /// Newer GitLab versions send the pipeline's source.
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
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub status: String,
    pub source: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub finished_at: Option<String>,
    /// Sent by the hook only.
    pub queued_duration: Option<f64>,
    /// The hook's link to the pipeline.
    pub url: Option<String>,
    /// The API's link to the pipeline.
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
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration: Option<f64>,
    pub queued_duration: Option<f64>,
    pub failure_reason: Option<String>,
    pub web_url: Option<String>,
}

/// A merge request: an API answer, or a Merge Request Hook's `object_attributes`.
#[derive(Debug, Deserialize)]
pub(super) struct ApiMergeRequest {
    pub iid: i64,
    /// The API's head commit.
    pub sha: Option<String>,
    pub state: Option<String>,
    /// The hook's action (`merge`, `update`, ...).
    pub action: Option<String>,
    pub merged_at: Option<String>,
    pub updated_at: Option<String>,
    /// The hook's head commit.
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
    pub classname: Option<String>,
    pub execution_time: Option<f64>,
    /// A string, an object or a list, depending on the report.
    pub system_output: Option<serde_json::Value>,
    pub stack_trace: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn absent_fields_read_as_none_or_their_default() {
        let j: super::ApiJob =
            serde_json::from_str(r#"{"id": 1, "name": "unit", "status": "success"}"#).unwrap();
        assert_eq!(j.stage, "");
        assert!(j.created_at.is_none() && j.duration.is_none() && j.web_url.is_none());
        let p: super::ApiPipeline =
            serde_json::from_str(r#"{"id": 2, "sha": "abc", "status": "running"}"#).unwrap();
        assert!(p.git_ref.is_none() && p.queued_duration.is_none() && p.web_url.is_none());
        let p: super::ApiPipeline =
            serde_json::from_str(r#"{"id": 2, "sha": "abc", "status": "running", "ref": null}"#)
                .unwrap();
        assert!(p.git_ref.is_none());
    }
}

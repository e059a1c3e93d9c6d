//! `[gitlab]`: the GitLab source's section of the configuration (how the
//! forge adapter in `forge::gitlab` reads it is documented in docs/gitlab.md).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which job logs to download: one setting for both forges.
pub use super::github::DownloadLogs as DownloadTraces;

/// Every project of a group (and its subgroups) whose path matches a pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Group path (`grp` or `grp/sub`) or numeric id.
    pub group: String,
    /// Regex on the project's full path (`grp/sub/project`); default: every project.
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default = "yes")]
    pub include_subgroups: bool,
}

fn yes() -> bool {
    true
}

/// `[gitlab]`: the GitLab source (see docs/gitlab.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitlabConfig {
    /// API base URL, e.g. `https://gitlab.example.com/api/v4` for self-managed.
    pub api_url: String,
    /// Projects by full path (`group/sub/project`).
    pub projects: Vec<String>,
    pub groups: Vec<GroupConfig>,
    /// How often `serve` polls.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How far back `serve`'s first poll of a project looks.
    #[serde(with = "humantime_serde")]
    pub initial_lookback: Duration,
    /// Largest job log kept; the rest is not downloaded and a marker is added.
    pub trace_max_bytes: u64,
    pub download_traces: DownloadTraces,
    /// Fetch `/pipelines/:id/test_report` for finished pipelines.
    pub test_reports: bool,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First delay of the exponential backoff (with jitter) on 5xx, network
    /// errors and broken bodies; also the wait of a 429 without `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Retries of one request before the poll of that project gives up (it resumes next time).
    pub max_retries: u32,
    /// Longest single wait (backoff, a 429's `Retry-After`): a longer one is
    /// cut to this, then the request is retried (GitHub's `max_retry_wait`).
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for GitlabConfig {
    fn default() -> Self {
        GitlabConfig {
            api_url: "https://gitlab.com/api/v4".into(),
            projects: Vec::new(),
            groups: Vec::new(),
            poll_interval: Duration::from_secs(300),
            initial_lookback: Duration::from_secs(24 * 3600),
            trace_max_bytes: 10 * 1024 * 1024,
            download_traces: DownloadTraces::Failed,
            test_reports: false,
            request_timeout: Duration::from_secs(60),
            retry_base_delay: Duration::from_secs(1),
            max_retries: 5,
            max_retry_after: Duration::from_secs(900),
        }
    }
}

impl GitlabConfig {
    /// Whether anything is to be polled.
    pub fn enabled(&self) -> bool {
        !self.projects.is_empty() || !self.groups.is_empty()
    }

    /// Check the section; the error names the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let url = url::Url::parse(&self.api_url)
            .map_err(|e| ("gitlab.api_url".to_string(), format!("{e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err((
                "gitlab.api_url".into(),
                "must be an http(s) URL, e.g. https://gitlab.com/api/v4".into(),
            ));
        }
        for (i, p) in self.projects.iter().enumerate() {
            if p.trim().is_empty() || p.starts_with('/') || p.ends_with('/') || !p.contains('/') {
                return Err((
                    format!("gitlab.projects[{i}]"),
                    format!("{p:?} is not a project path like group/sub/project"),
                ));
            }
        }
        for (i, g) in self.groups.iter().enumerate() {
            if g.group.trim().is_empty() {
                return Err((
                    format!("gitlab.groups[{i}].group"),
                    "must not be empty".into(),
                ));
            }
            if let Some(p) = &g.pattern {
                regex::Regex::new(p)
                    .map_err(|e| (format!("gitlab.groups[{i}].pattern"), e.to_string()))?;
            }
        }
        for (key, d) in [
            ("poll_interval", self.poll_interval),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err((format!("gitlab.{key}"), "must be longer than zero".into()));
            }
        }
        if self.trace_max_bytes < 1024 {
            return Err((
                "gitlab.trace_max_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        Ok(())
    }

    /// The web path prefix of a self-managed instance under a relative URL
    /// root (`https://host/gitlab/api/v4` → `/gitlab`), stripped from web URLs.
    pub fn relative_root(&self) -> String {
        url::Url::parse(&self.api_url)
            .ok()
            .map(|u| {
                u.path()
                    .trim_end_matches('/')
                    .trim_end_matches("/api/v4")
                    .to_string()
            })
            .unwrap_or_default()
    }
}

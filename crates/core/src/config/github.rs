//! `[github]`: the GitHub source's section of the configuration (how the
//! forge adapter in `forge::github` reads it is documented in docs/github.md).

use crate::model::RunState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The `[github]` section of the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubConfig {
    /// REST API base URL (GitHub Enterprise Server: `https://HOST/api/v3`).
    pub api_url: String,
    /// Repositories to poll, `owner/name`.
    pub repositories: Vec<String>,
    /// Owners (organisations or users) whose repositories matching `pattern` are polled.
    pub owners: Vec<OwnerConfig>,
    /// How often `serve` polls.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often `serve` looks for scheduled (nightly) workflow runs.
    #[serde(with = "humantime_serde")]
    pub schedule_poll_interval: Duration,
    /// How far back the first poll of a repository looks (use `backfill` for more).
    #[serde(with = "humantime_serde")]
    pub initial_lookback: Duration,
    /// Job logs are cut at this size, with a truncation marker.
    pub log_max_bytes: u64,
    /// Which job logs to download: `failed`, `all` or `none`.
    pub download_logs: DownloadLogs,
    /// The Cockpit status-story phrases (docs/design.md §2), for every repository.
    pub status_phrases: StatusPhrases,
    /// Per-repository overrides of `status_phrases`, keyed by `owner/name`.
    pub repository_status_phrases: BTreeMap<String, StatusPhrases>,
    /// Timeout of one API request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First backoff delay after a 5xx, a network error or a broken body
    /// (doubled each retry, with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Retries of one request before the poll of that repository gives up.
    pub max_retries: u32,
    /// Longest single wait (backoff, `Retry-After`, rate-limit reset): a
    /// longer one is cut to this, then the request is retried.
    #[serde(with = "humantime_serde")]
    pub max_retry_wait: Duration,
    /// How long a job delivered before its workflow run waits for the run's
    /// `event` (its trigger) before it is counted with trigger `other`.
    #[serde(with = "humantime_serde")]
    pub trigger_wait: Duration,
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            api_url: "https://api.github.com".into(),
            repositories: Vec::new(),
            owners: Vec::new(),
            poll_interval: Duration::from_secs(300),
            schedule_poll_interval: Duration::from_secs(3600),
            initial_lookback: Duration::from_secs(86400),
            log_max_bytes: 10 * 1024 * 1024,
            download_logs: DownloadLogs::Failed,
            status_phrases: StatusPhrases::default(),
            repository_status_phrases: BTreeMap::new(),
            request_timeout: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            max_retries: 6,
            max_retry_wait: Duration::from_secs(900),
            trigger_wait: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerConfig {
    pub owner: String,
    /// Regex on the repository name (without the owner); all when absent.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// Which job logs to download (`github.download_logs`, `gitlab.download_traces`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadLogs {
    /// Failed (and errored / timed out) jobs only.
    Failed,
    All,
    None,
}

impl DownloadLogs {
    /// Whether the log of a run in `state` is downloaded.
    pub fn wants(self, state: RunState) -> bool {
        match self {
            DownloadLogs::Failed => matches!(
                state,
                RunState::Failure | RunState::Error | RunState::TimedOut
            ),
            DownloadLogs::All => state.is_terminal(),
            DownloadLogs::None => false,
        }
    }
}

/// Phrases (case-insensitive substrings of a pending status's description)
/// that tell the Cockpit status story.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusPhrases {
    /// A pending status saying the context was queued: opens an attempt.
    pub queued: Vec<String>,
    /// A pending status saying testing started.
    pub started: Vec<String>,
}

impl Default for StatusPhrases {
    fn default() -> Self {
        StatusPhrases {
            queued: vec!["Not yet tested".into()],
            started: vec!["in progress".into()],
        }
    }
}

impl GithubConfig {
    pub fn phrases_for(&self, repository: &str) -> &StatusPhrases {
        self.repository_status_phrases
            .get(repository)
            .unwrap_or(&self.status_phrases)
    }

    /// Whether `serve` has anything to poll.
    pub fn polls(&self) -> bool {
        !self.repositories.is_empty() || !self.owners.is_empty()
    }

    /// Check the section; errors name the key (`github.KEY`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, r: &str| Err((format!("github.{k}"), r.to_string()));
        if !(self.api_url.starts_with("https://") || self.api_url.starts_with("http://")) {
            return err(
                "api_url",
                "must be an http(s) URL, e.g. https://api.github.com",
            );
        }
        for (i, r) in self.repositories.iter().enumerate() {
            if !valid_repository(r) {
                return Err((
                    format!("github.repositories[{i}]"),
                    format!("{r:?} is not owner/name"),
                ));
            }
        }
        for (i, o) in self.owners.iter().enumerate() {
            if o.owner.is_empty() || o.owner.contains('/') {
                return Err((
                    format!("github.owners[{i}].owner"),
                    "must be an organisation or user name".into(),
                ));
            }
            if let Some(p) = &o.pattern
                && let Err(e) = regex::Regex::new(p)
            {
                return Err((format!("github.owners[{i}].pattern"), e.to_string()));
            }
        }
        for (k, d) in [
            ("poll_interval", self.poll_interval),
            ("schedule_poll_interval", self.schedule_poll_interval),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return err(k, "must be longer than zero");
            }
        }
        if self.log_max_bytes < 1024 {
            return err("log_max_bytes", "must be at least 1024");
        }
        for (repo, p) in &self.repository_status_phrases {
            if p.queued.iter().chain(&p.started).any(|s| s.is_empty()) {
                return Err((
                    format!("github.repository_status_phrases.{repo}"),
                    "phrases must not be empty".into(),
                ));
            }
        }
        if self
            .status_phrases
            .queued
            .iter()
            .chain(&self.status_phrases.started)
            .any(|s| s.is_empty())
        {
            return err("status_phrases", "phrases must not be empty");
        }
        Ok(())
    }
}

fn valid_repository(r: &str) -> bool {
    let mut parts = r.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(o), Some(n), None) if !o.is_empty() && !n.is_empty())
}

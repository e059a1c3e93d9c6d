//! The configuration file (TOML) and the secrets that come from the environment.
//!
//! Every key has a default, so an empty file (or none) is a valid config. Every
//! key is documented in docs/configuration.md; `ci-slo-exporter.example.toml`
//! shows them all. Secrets are never read from the file itself: only from
//! environment variables or from files the config names, and they print masked.

pub mod database;
pub mod github;
pub mod gitlab;

use crate::classify::{Classifier, RuleConfig};
use crate::model::Forge;
pub use crate::redact::RedactConfig;
use crate::slo::{RunThresholds, SloId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default address of the HTTP server.
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:9787";
/// The default database file, relative to the working directory.
pub const DEFAULT_DB_PATH: &str = "ci-slo-exporter.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("secret {key}: cannot read {path}: {source}")]
    SecretFile {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This instance's part of the repositories, `"i/n"` (1-based): shard `i`
    /// of `n` owns the repositories whose FNV-1a hash modulo `n` is `i - 1`
    /// (docs/scaling.md). Unset: one instance owns everything (`"1/1"`).
    pub shard: crate::shard::Shard,
    /// Base URLs of all `n` shards in shard order (`shard_urls[i-1]` is shard
    /// `i`, this one included). Set: a webhook or ingest for a repository
    /// another shard owns is forwarded there. Empty: it is refused with 421,
    /// naming the owner.
    pub shard_urls: Vec<String>,
    pub server: ServerConfig,
    pub store: StoreConfig,
    /// What a run's report may say (docs/configuration.md, `[ingest]`).
    pub ingest: IngestConfig,
    pub metrics: MetricsConfig,
    pub slo: SloConfig,
    pub secrets: SecretFiles,
    pub classify: ClassifyConfig,
    pub tests: TestsConfig,
    pub dependencies: DependenciesConfig,
    pub repositories: Vec<RepositoryConfig>,
    /// The GitLab source (docs/gitlab.md).
    pub gitlab: gitlab::GitlabConfig,
    pub github: github::GithubConfig,
    /// The drill-down web UI (docs/ui.md).
    pub ui: UiConfig,
    /// Who may read the pages and the JSON API (docs/security.md).
    pub web: WebConfig,
    /// Secrets removed from CI text before it is stored (docs/security.md).
    pub redact: RedactConfig,
}

/// Access to the pages and the JSON API, and how much one page shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// `Host` header values (`name` or `name:port`) the server answers; any
    /// other gets `400`. Empty: any host (bind to a private address then).
    pub allowed_hosts: Vec<String>,
    /// A run page lists this many tests (failures first), then links to the rest.
    pub run_page_tests: usize,
    /// Longest `window` of `/failures` and `/api/v1/failures`.
    #[serde(with = "humantime_serde")]
    pub max_failures_window: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            allowed_hosts: Vec::new(),
            run_page_tests: 500,
            max_failures_window: days(90),
        }
    }
}

/// The drill-down web UI.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Base URL of Grafana (e.g. `https://grafana.example.com`): the pages link
    /// to the shipped dashboards under it. No links when unset.
    pub grafana_url: Option<String>,
    /// Days shown by the nightly grid.
    pub nightly_days: u32,
    /// A fingerprint first seen within this window carries a NEW badge.
    #[serde(with = "humantime_serde")]
    pub new_window: Duration,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            grafana_url: None,
            nightly_days: 14,
            new_window: hours(24),
        }
    }
}

/// Per-test statistics (flakiness, failure ratio).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestsConfig {
    /// Window of the per-test statistics.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Per-test series are exported only for this many worst tests per
    /// repository and verdict (flaky, broken).
    pub worst_per_repository: usize,
    /// Fewest runs in the window before a test without a flaky commit is
    /// called healthy or broken (else `new`); flaky tests with fewer rank last.
    pub min_runs: u64,
    /// How often the per-test statistics are recomputed; 0 (the default):
    /// at every snapshot (they add up counters kept at ingest, so this is cheap).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for TestsConfig {
    fn default() -> Self {
        TestsConfig {
            window: days(7),
            worst_per_repository: 10,
            min_runs: crate::flaky::DEFAULT_MIN_RUNS,
            refresh_interval: Duration::ZERO,
        }
    }
}

/// Dependency extraction from logs (see `deps`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DependenciesConfig {
    /// Start from the shipped rules (pip, npm, cargo, Maven, Julia Pkg).
    pub default_rules: bool,
    pub rules: Vec<crate::deps::DependencyRule>,
}

impl Default for DependenciesConfig {
    fn default() -> Self {
        DependenciesConfig {
            default_rules: true,
            rules: Vec::new(),
        }
    }
}

/// Failure classification rules (see docs/classification.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifyConfig {
    /// Start from the shipped rule set; `rules` are added after it.
    pub default_rules: bool,
    pub rules: Vec<RuleConfig>,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            default_rules: true,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    pub listen_address: String,
    /// Largest request body accepted (webhooks, ingest API); larger → 413.
    pub max_body_bytes: usize,
    /// A new connection, or a request head once its first byte came, must be
    /// complete within this; else the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An idle connection between requests is closed after this.
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// One request, from its head to the end of its answer.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A request body slower than this (bytes per second, on average after
    /// the first `header_read_timeout`) is refused with 408.
    pub min_body_rate: u64,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Bytes of request bodies being read at once, over all connections;
    /// a body that does not fit is answered 503.
    pub max_body_bytes_in_flight: usize,
    /// Most test results in one ingested run (tests, TAP and JUnit together).
    pub max_tests_per_run: usize,
    /// Most bytes of TAP and JUnit reports in one ingested run.
    pub max_report_bytes_per_run: usize,
    /// Most bytes of log text in one ingested run.
    pub max_log_bytes_per_run: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_address: DEFAULT_LISTEN_ADDRESS.into(),
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(60),
            min_body_rate: 32 * 1024,
            max_connections: 4096,
            max_body_bytes_in_flight: 128 * 1024 * 1024,
            max_tests_per_run: 100_000,
            max_report_bytes_per_run: 5 * 1024 * 1024,
            max_log_bytes_per_run: 10 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite database file (the default store; unused with `url`).
    pub path: PathBuf,
    /// A PostgreSQL database instead of the SQLite file:
    /// `postgres://USER@HOST:PORT/DATABASE`, without the password
    /// (`password_file`, or the whole URL in `CI_SLO_DATABASE_URL`, which
    /// wins). See [`database`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The file holding the PostgreSQL password (trailing newline trimmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Runs older than this are pruned (exported counters are never lowered).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Webhook delivery ids (kept to answer redeliveries `duplicate`) are
    /// pruned after this.
    #[serde(with = "humantime_serde")]
    pub delivery_retention: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: DEFAULT_DB_PATH.into(),
            url: None,
            password_file: None,
            retention: days(400),
            delivery_retention: days(30),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// A run time further ahead of the exporter's clock than this is
    /// impossible: the ingest API and the CLI refuse the run (400), a forge's
    /// report is stored without it; counted as `future_time`.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_future_skew: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// How often the /metrics snapshot is rebuilt from the store (also after every write).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// No longer used (every event new to the store counts when it arrives,
    /// however old; history is loaded with `--history`). Accepted so that old
    /// configuration files still load; a warning says so.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub live_window: Option<Duration>,
    /// Bucket upper bounds (seconds) of `ci_run_queue_duration_seconds`.
    pub queue_buckets: Vec<f64>,
    /// Bucket upper bounds (seconds) of `ci_run_duration_seconds`.
    pub run_buckets: Vec<f64>,
    /// Most series of the repository-labelled families in one snapshot; the
    /// rest are left out and counted in `ci_exporter_series_dropped_total`.
    pub max_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            refresh_interval: Duration::from_secs(15),
            live_window: None,
            queue_buckets: vec![
                10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 21600.0,
            ],
            run_buckets: vec![
                60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0,
                10800.0, 21600.0,
            ],
            max_series: 50_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloConfig {
    /// Error-budget period.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Windows of `ci_slo_sli_ratio` and `ci_slo_burn_rate` (the period is always added).
    #[serde(with = "duration_list")]
    pub windows: Vec<Duration>,
    /// A merged change is decided this long after its merge and its last run.
    #[serde(with = "humantime_serde")]
    pub merge_settle: Duration,
    /// A scheduled run still not finished after this long is counted as lost.
    #[serde(with = "humantime_serde")]
    pub lost_after: Duration,
    /// Run-time threshold of the `run_time` SLO.
    #[serde(with = "humantime_serde")]
    pub run_time_threshold: Duration,
    /// Queue-time threshold of the `queue_time` SLO.
    #[serde(with = "humantime_serde")]
    pub queue_time_threshold: Duration,
    /// Longer queue times than this are data errors, not exported.
    #[serde(with = "humantime_serde")]
    pub max_plausible_queue_time: Duration,
    /// Longer run times than this are data errors, not exported.
    #[serde(with = "humantime_serde")]
    pub max_plausible_run_time: Duration,
    /// Objective per SLO id (0 < objective < 1).
    pub objectives: BTreeMap<String, f64>,
    /// Fewest runs (passed, failed or errored) a test needs in a window to
    /// be judged by the test_success SLO; tests with fewer are not evaluated.
    pub test_min_runs: u64,
}

impl Default for SloConfig {
    fn default() -> Self {
        SloConfig {
            period: days(28),
            windows: vec![hours(1), hours(6), days(1), days(3)],
            merge_settle: Duration::from_secs(300),
            lost_after: hours(24),
            run_time_threshold: hours(1),
            queue_time_threshold: Duration::from_secs(300),
            max_plausible_queue_time: days(7),
            max_plausible_run_time: days(3),
            objectives: SloId::ALL
                .iter()
                .map(|id| (id.as_str().to_string(), id.default_objective()))
                .collect(),
            test_min_runs: crate::slo::DEFAULT_TEST_MIN_RUNS,
        }
    }
}

/// Files that hold secrets; each is optional, the environment variable wins.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecretFiles {
    pub api_token_file: Option<PathBuf>,
    pub github_token_file: Option<PathBuf>,
    pub github_webhook_secret_file: Option<PathBuf>,
    pub gitlab_token_file: Option<PathBuf>,
    pub gitlab_webhook_token_file: Option<PathBuf>,
    pub read_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    #[serde(default = "generic_forge")]
    pub forge: Forge,
    pub path: String,
    /// Contexts that must pass for a merged change to count as green; empty
    /// means every context seen on the change's head commit.
    #[serde(default)]
    pub required_contexts: Vec<String>,
}

fn generic_forge() -> Forge {
    Forge::Generic
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86400)
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

/// A secret value: prints as `***`, never in full.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where each secret comes from: (config key of the file, environment variable).
pub const SECRET_SOURCES: [(&str, &str); 6] = [
    ("api_token", "CI_SLO_API_TOKEN"),
    ("github_token", "CI_SLO_GITHUB_TOKEN"),
    ("github_webhook_secret", "CI_SLO_GITHUB_WEBHOOK_SECRET"),
    ("gitlab_token", "CI_SLO_GITLAB_TOKEN"),
    ("gitlab_webhook_token", "CI_SLO_GITLAB_WEBHOOK_TOKEN"),
    ("read_token", "CI_SLO_READ_TOKEN"),
];

/// The resolved secrets.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub api_token: Option<Secret>,
    pub github_token: Option<Secret>,
    pub github_webhook_secret: Option<Secret>,
    pub gitlab_token: Option<Secret>,
    pub gitlab_webhook_token: Option<Secret>,
    /// When set, the pages and the JSON API need it (or the API token).
    pub read_token: Option<Secret>,
}

impl Secrets {
    /// Resolve every secret: the environment variable if set and non-empty,
    /// else the file named in `[secrets]` (trailing newline trimmed).
    pub fn resolve(
        files: &SecretFiles,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secrets, ConfigError> {
        let one = |key: &str,
                   var: &str,
                   file: &Option<PathBuf>|
         -> Result<Option<Secret>, ConfigError> {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                return Ok(Some(Secret(v)));
            }
            match file {
                None => Ok(None),
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|source| {
                        ConfigError::SecretFile {
                            key: format!("secrets.{key}_file"),
                            path: path.clone(),
                            source,
                        }
                    })?;
                    let text = text.trim_end_matches(['\n', '\r']).to_string();
                    if text.is_empty() {
                        return Err(invalid(format!("secrets.{key}_file"), "the file is empty"));
                    }
                    Ok(Some(Secret(text)))
                }
            }
        };
        Ok(Secrets {
            api_token: one("api_token", "CI_SLO_API_TOKEN", &files.api_token_file)?,
            github_token: one(
                "github_token",
                "CI_SLO_GITHUB_TOKEN",
                &files.github_token_file,
            )?,
            github_webhook_secret: one(
                "github_webhook_secret",
                "CI_SLO_GITHUB_WEBHOOK_SECRET",
                &files.github_webhook_secret_file,
            )?,
            gitlab_token: one(
                "gitlab_token",
                "CI_SLO_GITLAB_TOKEN",
                &files.gitlab_token_file,
            )?,
            gitlab_webhook_token: one(
                "gitlab_webhook_token",
                "CI_SLO_GITLAB_WEBHOOK_TOKEN",
                &files.gitlab_webhook_token_file,
            )?,
            read_token: one("read_token", "CI_SLO_READ_TOKEN", &files.read_token_file)?,
        })
    }

    fn by_key(&self, key: &str) -> Option<&Secret> {
        match key {
            "api_token" => self.api_token.as_ref(),
            "github_token" => self.github_token.as_ref(),
            "github_webhook_secret" => self.github_webhook_secret.as_ref(),
            "gitlab_token" => self.gitlab_token.as_ref(),
            "gitlab_webhook_token" => self.gitlab_webhook_token.as_ref(),
            "read_token" => self.read_token.as_ref(),
            _ => None,
        }
    }

    /// Every secret present, for scanning text that must not contain them.
    pub fn values(&self) -> Vec<&str> {
        SECRET_SOURCES
            .iter()
            .filter_map(|(key, _)| self.by_key(key).map(Secret::expose))
            .collect()
    }
}

impl Config {
    /// Read and validate a config file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Config::parse(&text).map_err(|e| match e {
                    ConfigError::Parse { message, .. } => ConfigError::Parse {
                        path: path.to_path_buf(),
                        message,
                    },
                    other => other,
                })?
            }
        };
        Ok(config)
    }

    /// Keys that are accepted but no longer used: (key, what to do instead).
    pub fn deprecated_keys(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.metrics.live_window.is_some() {
            out.push((
                "metrics.live_window",
                "it is ignored: every event new to the store moves the live counters when it arrives, \
                 however old; load history into a database that has served with `--history` \
                 (docs/configuration.md, History and live counters)",
            ));
        }
        out
    }

    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listen_address()?;
        if !self.shard_urls.is_empty() {
            if !self.shard.is_sharded() {
                return Err(invalid(
                    "shard_urls",
                    "only for a sharded instance: set shard = \"i/n\" with n > 1 too",
                ));
            }
            if self.shard_urls.len() != self.shard.count() as usize {
                return Err(invalid(
                    "shard_urls",
                    format!(
                        "lists {} URLs but shard = \"{}\" has {} shards: list every shard's base URL in shard order",
                        self.shard_urls.len(),
                        self.shard,
                        self.shard.count()
                    ),
                ));
            }
            for (i, url) in self.shard_urls.iter().enumerate() {
                let parsed = url::Url::parse(url).ok();
                if !matches!(parsed.as_ref().map(|u| u.scheme()), Some("http" | "https"))
                    || parsed.as_ref().and_then(|u| u.host_str()).is_none()
                {
                    return Err(invalid(
                        format!("shard_urls[{i}]"),
                        format!(
                            "{url:?} is not an http(s) base URL, e.g. http://exporter-{}:9787",
                            i + 1
                        ),
                    ));
                }
            }
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if self.server.max_body_bytes_in_flight < self.server.max_body_bytes {
            return Err(invalid(
                "server.max_body_bytes_in_flight",
                "must be at least server.max_body_bytes",
            ));
        }
        for (key, n) in [
            ("server.max_connections", self.server.max_connections),
            ("server.max_tests_per_run", self.server.max_tests_per_run),
            (
                "server.max_report_bytes_per_run",
                self.server.max_report_bytes_per_run,
            ),
            (
                "server.max_log_bytes_per_run",
                self.server.max_log_bytes_per_run,
            ),
            ("web.run_page_tests", self.web.run_page_tests),
            ("metrics.max_series", self.metrics.max_series),
        ] {
            if n == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        for (i, host) in self.web.allowed_hosts.iter().enumerate() {
            if host.is_empty() || host.contains(['/', ' ', '@']) {
                return Err(invalid(
                    format!("web.allowed_hosts[{i}]"),
                    format!("{host:?} is not a host name or host:port"),
                ));
            }
        }
        self.store.validate_url()?;
        crate::redact::Redactor::from_config(&self.redact)
            .map_err(|e| invalid("redact.patterns", e.to_string()))?;
        for (key, d) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.keep_alive_timeout", self.server.keep_alive_timeout),
            ("server.request_timeout", self.server.request_timeout),
            ("store.delivery_retention", self.store.delivery_retention),
            ("web.max_failures_window", self.web.max_failures_window),
            ("store.retention", self.store.retention),
            ("metrics.refresh_interval", self.metrics.refresh_interval),
            ("slo.period", self.slo.period),
            ("slo.lost_after", self.slo.lost_after),
            ("slo.run_time_threshold", self.slo.run_time_threshold),
            ("slo.queue_time_threshold", self.slo.queue_time_threshold),
            (
                "slo.max_plausible_queue_time",
                self.slo.max_plausible_queue_time,
            ),
            (
                "slo.max_plausible_run_time",
                self.slo.max_plausible_run_time,
            ),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        if let Some(url) = &self.ui.grafana_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "ui.grafana_url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.ui.nightly_days == 0 || self.ui.nightly_days > 92 {
            return Err(invalid("ui.nightly_days", "must be between 1 and 92"));
        }
        if self.store.retention < self.slo.period {
            return Err(invalid(
                "store.retention",
                "must be at least slo.period, or the error budget would lose its events",
            ));
        }
        if self.slo.test_min_runs == 0 {
            return Err(invalid(
                "slo.test_min_runs",
                "must be at least 1: a test is judged by test_success only once it ran that often in the window (e.g. 20)",
            ));
        }
        if self.slo.windows.iter().any(|w| w.is_zero()) {
            return Err(invalid(
                "slo.windows",
                "every window must be longer than zero",
            ));
        }
        for (key, buckets) in [
            ("metrics.queue_buckets", &self.metrics.queue_buckets),
            ("metrics.run_buckets", &self.metrics.run_buckets),
        ] {
            if buckets.is_empty() {
                return Err(invalid(key, "needs at least one bucket"));
            }
            if buckets.windows(2).any(|w| w[0] >= w[1])
                || buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
            {
                return Err(invalid(
                    key,
                    "bounds must be positive, finite and strictly increasing",
                ));
            }
        }
        for (id, objective) in &self.slo.objectives {
            id.parse::<SloId>()
                .map_err(|reason| invalid(format!("slo.objectives.{id}"), reason))?;
            if !(*objective > 0.0 && *objective < 1.0) {
                return Err(invalid(
                    format!("slo.objectives.{id}"),
                    format!("{objective} is not between 0 and 1 (exclusive), e.g. 0.95"),
                ));
            }
        }
        self.classifier()?;
        self.dependency_extractor()?;
        self.gitlab
            .validate()
            .map_err(|(key, reason)| invalid(key, reason))?;
        self.github
            .validate()
            .map_err(|(key, reason)| invalid(key, reason))?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, repo) in self.repositories.iter().enumerate() {
            if repo.path.trim().is_empty() || repo.path.starts_with('/') || repo.path.ends_with('/')
            {
                return Err(invalid(
                    format!("repositories[{i}].path"),
                    "expected a path like owner/name",
                ));
            }
            if !seen.insert((repo.forge, repo.path.as_str())) {
                return Err(invalid(
                    format!("repositories[{i}]"),
                    format!("{} {} is listed twice", repo.forge, repo.path),
                ));
            }
        }
        Ok(())
    }

    /// The part of [`Config::validate`] about `server.listen_address` alone:
    /// what `serve --web.listen-address` checks after setting it (the rest
    /// was validated when the configuration was loaded; checking it again
    /// would compile the classifier's rules once more, about 0.1 s).
    pub fn validate_listen_address(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen_address
            .parse::<SocketAddr>()
            .map_err(|e| {
                invalid(
                    "server.listen_address",
                    format!("{e} (expected HOST:PORT, e.g. {DEFAULT_LISTEN_ADDRESS})"),
                )
            })
    }

    /// The compiled failure classifier: the default rules (unless disabled) and then the configured ones.
    pub fn classifier(&self) -> Result<Classifier, ConfigError> {
        let mut rules = if self.classify.default_rules {
            Classifier::default_rules()
        } else {
            Vec::new()
        };
        rules.extend(self.classify.rules.iter().cloned());
        Classifier::new(&rules).map_err(|e| invalid("classify.rules", e.to_string()))
    }

    /// The compiled dependency extractor: the default rules (unless disabled) and then the configured ones.
    pub fn dependency_extractor(&self) -> Result<crate::deps::Extractor, ConfigError> {
        let mut rules = if self.dependencies.default_rules {
            crate::deps::default_rules()
        } else {
            Vec::new()
        };
        rules.extend(self.dependencies.rules.iter().cloned());
        crate::deps::Extractor::new(&rules)
            .map_err(|e| invalid("dependencies.rules", e.to_string()))
    }

    pub fn objective(&self, id: SloId) -> f64 {
        self.slo
            .objectives
            .get(id.as_str())
            .copied()
            .unwrap_or_else(|| id.default_objective())
    }

    pub fn run_thresholds(&self) -> RunThresholds {
        RunThresholds {
            max_queue_seconds: self.slo.queue_time_threshold.as_secs_f64(),
            max_run_seconds: self.slo.run_time_threshold.as_secs_f64(),
        }
    }

    /// Windows for the ratio gauges: the configured ones plus the period, sorted, unique.
    pub fn gauge_windows(&self) -> Vec<Duration> {
        let mut w = self.slo.windows.clone();
        w.push(self.slo.period);
        w.sort();
        w.dedup();
        w
    }

    /// Bucket bounds with the SLO threshold always present, so PromQL over the
    /// histogram can compute the same SLI as the events counter.
    pub fn queue_buckets(&self) -> Vec<f64> {
        with_bound(
            &self.metrics.queue_buckets,
            self.slo.queue_time_threshold.as_secs_f64(),
        )
    }

    pub fn run_buckets(&self) -> Vec<f64> {
        with_bound(
            &self.metrics.run_buckets,
            self.slo.run_time_threshold.as_secs_f64(),
        )
    }

    pub fn required_contexts(&self, forge: Forge, path: &str) -> &[String] {
        self.repositories
            .iter()
            .find(|r| r.path == path && (r.forge == forge || r.forge == Forge::Generic))
            .map(|r| r.required_contexts.as_slice())
            .unwrap_or(&[])
    }

    /// The effective configuration as TOML, with a `[secrets]` report that
    /// says where each secret came from and never shows one.
    pub fn to_masked_toml(&self, secrets: &Secrets) -> String {
        let mut out =
            toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
        out.push_str("\n# Secrets (values are never printed):\n");
        for (key, var) in SECRET_SOURCES {
            let state = if secrets.by_key(key).is_some() {
                "set (***)"
            } else {
                "unset"
            };
            out.push_str(&format!(
                "#   {key}: {state}  (from ${var} or secrets.{key}_file)\n"
            ));
        }
        out
    }
}

/// (De)serialise a list of durations as humantime strings (`["1h", "6h"]`).
mod duration_list {
    use serde::{Deserialize, Deserializer, Serializer, de::Error, ser::SerializeSeq};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for d in v {
            seq.serialize_element(&humantime::format_duration(*d).to_string())?;
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                humantime::parse_duration(s).map_err(|e| D::Error::custom(format!("{s:?}: {e}")))
            })
            .collect()
    }
}

fn with_bound(bounds: &[f64], extra: f64) -> Vec<f64> {
    let mut b = bounds.to_vec();
    if !b.contains(&extra) {
        b.push(extra);
        b.sort_by(f64::total_cmp);
    }
    b
}

/// Human text of a window for label values: `1h`, `6h`, `1d`, `28d`, `90m`.
pub fn window_label(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_key_still_loads_with_a_warning_and_the_new_ingest_key_parses() {
        let old = Config::parse("[metrics]\nlive_window = \"24h\"\n").unwrap();
        let deprecated = old.deprecated_keys();
        assert_eq!(deprecated.len(), 1);
        assert_eq!(deprecated[0].0, "metrics.live_window");
        assert!(deprecated[0].1.contains("--history"));
        assert!(Config::default().deprecated_keys().is_empty());
        assert!(
            !Config::default()
                .to_masked_toml(&Secrets::default())
                .contains("live_window"),
            "not printed as a setting any more"
        );
        let c = Config::parse("[ingest]\nmax_future_skew = \"10m\"\n").unwrap();
        assert_eq!(c.ingest.max_future_skew, Duration::from_secs(600));
        assert_eq!(
            Config::default().ingest.max_future_skew,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.listen_address, "127.0.0.1:9787");
        assert_eq!(c.objective(SloId::FirstAttemptGreen), 0.75);
        assert_eq!(c.objective(SloId::TestSuccess), 0.90);
        assert_eq!(c.slo.test_min_runs, 20);
        assert_eq!(c.objective(SloId::QueueTime), 0.95);
        assert!(c.queue_buckets().contains(&300.0) && c.queue_buckets().contains(&3600.0));
        assert!(c.run_buckets().contains(&300.0) && c.run_buckets().contains(&3600.0));
        let labels: Vec<String> = c.gauge_windows().into_iter().map(window_label).collect();
        assert_eq!(labels, ["1h", "6h", "1d", "3d", "28d"]);
    }

    #[test]
    fn invalid_configs_name_the_key_and_the_reason() {
        let cases = [
            (
                "[slo.objectives]\nqueue_time = 1.5\n",
                "slo.objectives.queue_time",
            ),
            ("[slo.objectives]\nqueue = 0.9\n", "slo.objectives.queue"),
            (
                "[server]\nlisten_address = \"nope\"\n",
                "server.listen_address",
            ),
            ("[slo]\nperiod = \"0s\"\n", "slo.period"),
            ("[slo]\nperiod = \"soon\"\n", "period"),
            (
                "[metrics]\nqueue_buckets = [10.0, 5.0]\n",
                "metrics.queue_buckets",
            ),
            (
                "[server]\nlisten_adress = \"127.0.0.1:1\"\n",
                "listen_adress",
            ),
            ("[[repositories]]\npath = \"\"\n", "repositories[0].path"),
            ("shard = \"3/2\"\n", "shard"),
            ("shard = \"0/2\"\n", "shard"),
            ("shard = \"half\"\n", "shard"),
            ("shard = 2\n", "shard"),
            (
                "shard_urls = [\"http://a:1\", \"http://b:1\"]\n",
                "shard_urls",
            ),
            (
                "shard = \"1/3\"\nshard_urls = [\"http://a:1\", \"http://b:1\"]\n",
                "shard_urls",
            ),
            (
                "shard = \"1/2\"\nshard_urls = [\"http://a:1\", \"b:1\"]\n",
                "shard_urls[1]",
            ),
            (
                "[[classify.rules]]\nname = \"x\"\npattern = \"(\"\ncategory = \"infra\"\n",
                "rule \"x\": invalid regex",
            ),
            (
                "[[classify.rules]]\nname = \"x\"\npattern = \"a\"\ncategory = \"weather\"\n",
                "weather",
            ),
            ("[redact]\npatterns = [\"(\"]\n", "redact.patterns"),
            (
                "[web]\nallowed_hosts = [\"http://x\"]\n",
                "web.allowed_hosts[0]",
            ),
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            (
                "[server]\nkeep_alive_timeout = \"0s\"\n",
                "server.keep_alive_timeout",
            ),
            (
                "[server]\nmax_body_bytes_in_flight = 2048\n",
                "server.max_body_bytes_in_flight",
            ),
            ("[metrics]\nmax_series = 0\n", "metrics.max_series"),
            ("[slo]\ntest_min_runs = 0\n", "slo.test_min_runs"),
            ("[slo]\ntest_min_runs = -3\n", "test_min_runs"),
        ];
        for (text, key) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(
                err.contains(key),
                "{text:?} gave {err:?}, which does not name {key}"
            );
        }
    }

    #[test]
    fn secrets_come_from_the_environment_first_then_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gh");
        std::fs::write(&file, "from-file\n").unwrap();
        let files = SecretFiles {
            github_token_file: Some(file),
            api_token_file: Some(dir.path().join("missing")),
            ..Default::default()
        };
        let env = |v: &str| (v == "CI_SLO_API_TOKEN").then(|| "from-env".to_string());
        let s = Secrets::resolve(&files, env).unwrap();
        assert_eq!(s.api_token.as_ref().unwrap().expose(), "from-env");
        assert_eq!(s.github_token.as_ref().unwrap().expose(), "from-file");
        assert_eq!(format!("{:?}", s.api_token), "Some(Secret(***))");
        let printed = Config::default().to_masked_toml(&s);
        assert!(!printed.contains("from-env") && !printed.contains("from-file"));
        assert!(printed.contains("api_token: set (***)"));
        assert!(printed.contains("gitlab_token: unset"));

        let err = Secrets::resolve(&files, |_| None).unwrap_err().to_string();
        assert!(err.contains("secrets.api_token_file"), "{err}");
    }

    #[test]
    fn the_shard_is_one_based_and_prints_back() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.shard, crate::shard::Shard::ALL);
        let c = Config::parse(
            "shard = \"2/2\"\nshard_urls = [\"http://127.0.0.1:1\", \"https://e2.example:9787/\"]\n[server]\nmax_body_bytes = 2048\n",
        )
        .unwrap();
        assert_eq!((c.shard.index(), c.shard.count()), (2, 2));
        let printed = c.to_masked_toml(&Secrets::default());
        assert!(printed.contains("shard = \"2/2\""), "{printed}");
        let again = Config::parse(printed.split("\n# Secrets").next().unwrap()).unwrap();
        assert_eq!(again.shard, c.shard);
        assert_eq!(again.shard_urls, c.shard_urls);
    }

    #[test]
    fn the_example_config_in_the_repository_is_valid() {
        let text = include_str!("../../../ci-slo-exporter.example.toml");
        Config::parse(text).unwrap();
    }
}

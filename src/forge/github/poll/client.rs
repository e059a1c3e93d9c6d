//! The GitHub adapter of the forge-neutral client ([`crate::forge::client`]):
//! the bearer token and API headers, the `X-RateLimit-*` headers, which
//! answers are rate limits (429; a 403 with `Retry-After`, an exhausted
//! window or a secondary limit).

use crate::config::Secret;
use crate::forge::client::{self, Adapter, ForgeClient, Retries};
use crate::forge::github::GithubConfig;
use crate::metrics::MetricsHub;
use crate::model::Forge;
use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use std::sync::Arc;
use std::time::Duration;

/// GitHub's side of the client policy.
pub(crate) struct Github {
    token: Option<Secret>,
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Adapter for Github {
    const FORGE: Forge = Forge::Github;

    fn prepare(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = req
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        let bearer = self
            .token
            .as_ref()
            .map(|t| format!("Bearer {}", t.expose()));
        client::secret_header(req, "Authorization", bearer)
    }

    fn rate_limit_headers(&self) -> [&'static str; 3] {
        [
            "x-ratelimit-remaining",
            "x-ratelimit-limit",
            "x-ratelimit-reset",
        ]
    }

    /// A 429, or a 403 that is a primary (window exhausted) or secondary
    /// limit: `Retry-After`, else until the window resets, else a minute (a
    /// secondary limit without `Retry-After`: GitHub asks for at least one).
    fn rate_limited(&self, status: StatusCode, h: &HeaderMap, body: &str) -> Option<Duration> {
        let retry_after = client::retry_after(h);
        let exhausted = header_str(h, "x-ratelimit-remaining").map(str::trim) == Some("0");
        let secondary = body.to_lowercase().contains("secondary rate limit");
        let limited = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN
                && (retry_after.is_some() || exhausted || secondary));
        if !limited {
            return None;
        }
        let until_reset = || {
            let reset = header_str(h, "x-ratelimit-reset")?
                .trim()
                .parse::<i64>()
                .ok()?;
            let secs = reset - Utc::now().timestamp();
            Some(Duration::from_secs(secs.max(0) as u64))
        };
        Some(
            retry_after
                .or_else(|| if exhausted { until_reset() } else { None })
                .unwrap_or(Duration::from_secs(60)),
        )
    }
}

/// The REST client: the forge-neutral policy with the GitHub adapter.
pub(super) fn client(
    config: &GithubConfig,
    token: Option<Secret>,
    hub: Option<Arc<MetricsHub>>,
) -> Result<ForgeClient<Github>, reqwest::Error> {
    let retries = Retries {
        base: config.retry_base,
        max: config.max_retries,
        max_wait: config.max_retry_wait,
    };
    ForgeClient::new(
        Github { token },
        &config.api_url,
        config.request_timeout,
        retries,
        hub,
    )
}

//! The GitHub adapter of the forge-neutral client ([`crate::forge::client`]):
//! the bearer token and API headers, the `X-RateLimit-*` headers, which
//! answers are rate limits (429; a 403 with `Retry-After`, an exhausted
//! window or a secondary limit), and the log marker of a capped job log.

use super::PollError;
use crate::config::Secret;
use crate::forge::client::{self, Adapter, Answer, FetchError, ForgeClient, Retries};
use crate::forge::github::GithubConfig;
use crate::forge::pages::Pages;
use crate::metrics::MetricsHub;
use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
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
    fn forge(&self) -> &'static str {
        "github"
    }

    fn prepare(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req = req
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(t) = &self.token
            && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
        {
            v.set_sensitive(true);
            req = req.header("Authorization", v);
        }
        req
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
#[derive(Clone)]
pub struct Client {
    inner: Arc<ForgeClient<Github>>,
    api: String,
}

impl Client {
    pub fn new(
        config: &GithubConfig,
        token: Option<Secret>,
        hub: Arc<MetricsHub>,
    ) -> Result<Client, PollError> {
        let retries = Retries {
            base: config.retry_base,
            max: config.max_retries,
            max_wait: config.max_retry_wait,
        };
        Ok(Client {
            inner: Arc::new(ForgeClient::new(
                Github { token },
                config.request_timeout,
                retries,
                Some(hub),
            )?),
            api: config.api_url.trim_end_matches('/').to_string(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// The pages of a listing, the first conditional on `etag`.
    pub(crate) fn pages(
        &self,
        endpoint: &'static str,
        url: &str,
        etag: Option<&str>,
    ) -> Pages<'_, Github> {
        self.inner
            .pages(endpoint, url.to_string(), etag.map(str::to_string))
    }

    /// Every item of a listing; `pick` takes the list out of each page.
    pub(crate) async fn get_all<W: DeserializeOwned, T>(
        &self,
        endpoint: &'static str,
        url: &str,
        pick: impl Fn(W) -> Vec<T>,
    ) -> Result<Vec<T>, PollError> {
        let mut pages = self.pages(endpoint, url, None);
        let mut out = Vec::new();
        while let Some(page) = pages.next_json::<W>().await? {
            out.extend(pick(page.items));
        }
        Ok(out)
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: &str,
    ) -> Result<T, PollError> {
        match self.inner.json(endpoint, url).await? {
            Some(t) => Ok(t),
            None => Err(not_modified(url)),
        }
    }

    /// Download a log (with the retries of every request), keeping at most
    /// `cap` bytes: (text, truncated).
    pub async fn download_log(&self, url: &str, cap: u64) -> Result<(String, bool), PollError> {
        let body = match self.inner.get("logs", url, None, cap).await? {
            Answer::Ok(body) => body,
            Answer::NotModified => return Err(not_modified(url)),
        };
        let mut text = String::from_utf8_lossy(&body.bytes).into_owned();
        if body.truncated {
            text.push_str(&format!(
                "\n[ci-slo-exporter: log truncated at {cap} bytes]\n"
            ));
        }
        Ok((text, body.truncated))
    }
}

/// A 304 to an unconditional request.
fn not_modified(url: &str) -> PollError {
    PollError::Fetch(FetchError::Status {
        endpoint: String::new(),
        url: url.to_string(),
        status: 304,
        message: "not modified without a condition".into(),
    })
}

//! The GitHub REST client: authentication, `Link` pagination, ETags, the
//! rate-limit headers, `Retry-After` and secondary limits, exponential backoff
//! with jitter on 5xx and timeouts, and capped streamed log downloads.

use super::PollError;
use crate::config::Secret;
use crate::forge::github::GithubConfig;
use crate::metrics::MetricsHub;
use backon::BackoffBuilder;
use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// One answer: 200 with a body, or 304.
#[derive(Debug)]
pub struct Page {
    pub not_modified: bool,
    pub body: bytes_compat::Bytes,
    pub etag: Option<String>,
    pub next: Option<String>,
}

mod bytes_compat {
    pub type Bytes = Vec<u8>;
}

/// The REST client: auth, retries, rate limits, metrics.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api: String,
    token: Option<Secret>,
    hub: Arc<MetricsHub>,
    retry_base: Duration,
    max_retries: u32,
    max_wait: Duration,
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Client {
    pub fn new(
        config: &GithubConfig,
        token: Option<Secret>,
        hub: Arc<MetricsHub>,
    ) -> Result<Client, PollError> {
        Ok(Client {
            http: crate::forge::http_client(config.request_timeout)?,
            api: config.api_url.trim_end_matches('/').to_string(),
            token,
            hub,
            retry_base: config.retry_base,
            max_retries: config.max_retries,
            max_wait: config.max_retry_wait,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn count(&self, endpoint: &str, status: &str) {
        self.hub
            .self_metrics
            .count_forge_request("github", endpoint, status);
    }

    fn count_error(&self, endpoint: &str, kind: &str) {
        self.hub
            .self_metrics
            .count_forge_error("github", endpoint, kind);
    }

    /// Decode a JSON answer; an undecodable one (truncated, invalid) is counted.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        url: &str,
        body: &[u8],
    ) -> Result<T, PollError> {
        serde_json::from_slice(body).map_err(|source| {
            self.count_error(endpoint, "decode");
            PollError::Decode {
                url: url.to_string(),
                source,
            }
        })
    }

    fn rate_limits(&self, h: &HeaderMap) {
        let num = |n: &str| header_str(h, n).and_then(|v| v.trim().parse::<i64>().ok());
        self.hub.self_metrics.set_rate_limit(
            "github",
            num("x-ratelimit-remaining").map(|v| v as f64),
            num("x-ratelimit-limit").map(|v| v as f64),
            num("x-ratelimit-reset").map(|v| v as f64),
        );
    }

    /// How long a rate-limited answer asks us to wait, if it is one.
    fn rate_limit_wait(&self, status: StatusCode, h: &HeaderMap, body: &str) -> Option<Duration> {
        let retry_after = header_str(h, "retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
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
        let wait = retry_after
            .or_else(|| if exhausted { until_reset() } else { None })
            // A secondary limit without Retry-After: GitHub asks for at least a minute.
            .unwrap_or(Duration::from_secs(60));
        Some(wait.min(self.max_wait))
    }

    /// GET one page, conditional on `etag`, with retries.
    pub async fn get(
        &self,
        endpoint: &'static str,
        url: &str,
        etag: Option<&str>,
    ) -> Result<Page, PollError> {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.retry_base)
            .with_max_delay(self.max_wait)
            .with_jitter()
            .without_max_times()
            .build();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let mut req = self
                .http
                .get(url)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28");
            if let Some(t) = &self.token
                && let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
            {
                req = req.header("Authorization", v);
            }
            if let Some(e) = etag {
                req = req.header("If-None-Match", e);
            }
            let (wait, last) = match req.send().await {
                Err(e) => {
                    self.count(endpoint, "error");
                    self.count_error(endpoint, crate::forge::error_kind(&e));
                    (backoff.next(), e.to_string())
                }
                Ok(resp) => {
                    let status = resp.status();
                    self.count(endpoint, status.as_str());
                    let headers = resp.headers().clone();
                    self.rate_limits(&headers);
                    if status == StatusCode::NOT_MODIFIED {
                        self.hub.self_metrics.count_not_modified("github");
                        return Ok(Page {
                            not_modified: true,
                            body: Vec::new(),
                            etag: etag.map(str::to_string),
                            next: None,
                        });
                    }
                    match resp.bytes().await {
                        Err(e) => {
                            // The status line came, the body did not (reset, cut, stalled).
                            self.count_error(endpoint, crate::forge::error_kind(&e));
                            (backoff.next(), e.to_string())
                        }
                        Ok(body) if status.is_success() => {
                            return Ok(Page {
                                not_modified: false,
                                body: body.to_vec(),
                                etag: header_str(&headers, "etag").map(str::to_string),
                                next: header_str(&headers, "link")
                                    .and_then(crate::forge::next_link),
                            });
                        }
                        Ok(body) => {
                            let text =
                                String::from_utf8_lossy(&body[..body.len().min(2000)]).to_string();
                            if let Some(w) = self.rate_limit_wait(status, &headers, &text) {
                                tracing::warn!(url, wait = ?w, "GitHub rate limit; waiting");
                                (Some(w), format!("{status}: rate limited"))
                            } else if status.is_server_error() {
                                (backoff.next(), format!("{status}"))
                            } else {
                                return Err(PollError::Status {
                                    url: url.to_string(),
                                    status: status.as_u16(),
                                    message: text,
                                });
                            }
                        }
                    }
                }
            };
            match wait {
                Some(w) if tries <= self.max_retries => {
                    tracing::debug!(url, tries, wait = ?w, %last, "retrying");
                    tokio::time::sleep(w).await;
                }
                _ => {
                    return Err(PollError::GaveUp {
                        url: url.to_string(),
                        tries,
                        last,
                    });
                }
            }
        }
    }

    /// GET every page of a listing; `items` picks the list out of each page.
    pub(crate) async fn get_all<T, F>(
        &self,
        endpoint: &'static str,
        url: &str,
        items: F,
    ) -> Result<Vec<T>, PollError>
    where
        F: Fn(&[u8]) -> Result<Vec<T>, serde_json::Error>,
    {
        let mut out = Vec::new();
        let mut next = Some(url.to_string());
        let mut pages = 0;
        while let Some(url) = next.take() {
            let page = self.get(endpoint, &url, None).await?;
            out.extend(items(&page.body).map_err(|source| {
                self.count_error(endpoint, "decode");
                PollError::Decode {
                    url: url.clone(),
                    source,
                }
            })?);
            next = page.next;
            pages += 1;
            if pages >= 1000 {
                break;
            }
        }
        Ok(out)
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: &str,
    ) -> Result<T, PollError> {
        let page = self.get(endpoint, url, None).await?;
        self.decode(endpoint, url, &page.body)
    }

    /// Stream a log, keeping at most `cap` bytes; returns (text, truncated).
    pub async fn download_log(&self, url: &str, cap: u64) -> Result<(String, bool), PollError> {
        let mut req = self.http.get(url);
        if let Some(t) = &self.token
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
        {
            req = req.header("Authorization", v);
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.count("logs", "error");
                self.count_error("logs", crate::forge::error_kind(&e));
                return Err(PollError::GaveUp {
                    url: url.into(),
                    tries: 1,
                    last: e.to_string(),
                });
            }
        };
        self.count("logs", resp.status().as_str());
        if !resp.status().is_success() {
            return Err(PollError::Status {
                url: url.into(),
                status: resp.status().as_u16(),
                message: "log download failed".into(),
            });
        }
        let cap = cap as usize;
        let mut buf: Vec<u8> = Vec::new();
        let mut truncated = false;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = cap.saturating_sub(buf.len());
                    if chunk.len() > room {
                        buf.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    self.count_error("logs", crate::forge::error_kind(&e));
                    return Err(PollError::GaveUp {
                        url: url.into(),
                        tries: 1,
                        last: e.to_string(),
                    });
                }
            }
        }
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        if truncated {
            text.push_str(&format!(
                "\n[ci-slo-exporter: log truncated at {cap} bytes]\n"
            ));
        }
        Ok((text, truncated))
    }
}

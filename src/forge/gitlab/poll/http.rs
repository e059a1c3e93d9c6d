//! Requests to the GitLab API: the token, `Link` / `X-Next-Page`
//! pagination, conditional requests (`If-None-Match`), the `RateLimit-*`
//! gauges, `429` with `Retry-After`, backoff with jitter on `5xx` and network
//! errors, capped bodies; and the URL pieces (encoded paths, times).

use super::{FORGE, Poller};
use crate::forge::gitlab::GitlabError;
use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use reqwest::header::{ETAG, HeaderMap, IF_NONE_MATCH, LINK, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Largest JSON page accepted.
pub(super) const MAX_JSON_BYTES: u64 = 64 * 1024 * 1024;

pub(super) struct Page<T> {
    pub(super) items: Vec<T>,
    pub(super) etag: Option<String>,
    pub(super) next: Option<Url>,
}

pub(super) enum Fetched<T> {
    NotModified,
    Page(Page<T>),
}

impl Poller {
    pub(super) fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url, GitlabError> {
        let base = self.config.api_url.trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}{path}"))
            .map_err(|e| GitlabError::Config(format!("api_url: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    pub(super) fn count(&self, endpoint: &str, status: &str) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .stats
            .by_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(endpoint.to_string())
            .or_default() += 1;
        if let Some(hub) = &self.hub {
            hub.self_metrics
                .count_forge_request(FORGE, endpoint, status);
        }
    }

    pub(super) fn count_error(&self, endpoint: &str, kind: &str) {
        if let Some(hub) = &self.hub {
            hub.self_metrics.count_forge_error(FORGE, endpoint, kind);
        }
    }

    /// [`read_capped`], counting a body that breaks off (reset, cut, stalled).
    pub(super) async fn read_body(
        &self,
        resp: reqwest::Response,
        cap: u64,
        endpoint: &str,
    ) -> Result<(Vec<u8>, bool, u64), GitlabError> {
        read_capped(resp, cap, endpoint).await.inspect_err(|e| {
            if let GitlabError::Http { source, .. } = e {
                self.count_error(endpoint, crate::forge::error_kind(source));
            }
        })
    }

    pub(super) fn rate_limits(&self, headers: &HeaderMap) {
        let Some(hub) = &self.hub else { return };
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map(|v| v as f64)
        };
        hub.self_metrics.set_rate_limit(
            FORGE,
            num("ratelimit-remaining"),
            num("ratelimit-limit"),
            num("ratelimit-reset"),
        );
    }

    /// One GET with retries: 429 waits Retry-After, 5xx and network errors
    /// back off with jitter. 2xx and 304 are returned; other statuses are errors.
    pub(super) async fn get(
        &self,
        endpoint: &'static str,
        url: &Url,
        etag: Option<&str>,
    ) -> Result<reqwest::Response, GitlabError> {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.config.retry_base_delay)
            .with_max_delay(self.config.retry_base_delay.saturating_mul(64))
            .with_max_times(self.config.max_retries as usize)
            .with_jitter()
            .build();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let mut req = self.http.get(url.clone());
            if let Some(t) = &self.token {
                req = req.header("PRIVATE-TOKEN", t);
            }
            if let Some(e) = etag {
                req = req.header(IF_NONE_MATCH, e);
            }
            let last = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    self.count(endpoint, status.as_str());
                    self.rate_limits(resp.headers());
                    if status.is_success() {
                        return Ok(resp);
                    }
                    if status == StatusCode::NOT_MODIFIED {
                        self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
                        if let Some(hub) = &self.hub {
                            hub.self_metrics.count_not_modified(FORGE);
                        }
                        return Ok(resp);
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let wait =
                            retry_after(resp.headers()).unwrap_or(self.config.retry_base_delay);
                        if wait > self.config.max_retry_after || attempts > self.config.max_retries
                        {
                            return Err(GitlabError::GaveUp {
                                endpoint: endpoint.into(),
                                attempts,
                                last: format!("429, Retry-After {}s", wait.as_secs()),
                            });
                        }
                        tracing::info!(
                            endpoint,
                            wait_s = wait.as_secs_f64(),
                            "GitLab rate limit: waiting"
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if !status.is_server_error() {
                        let body = resp.text().await.unwrap_or_default();
                        return Err(GitlabError::Status {
                            endpoint: endpoint.into(),
                            status: status.as_u16(),
                            body: body.chars().take(300).collect(),
                        });
                    }
                    format!("HTTP {status}")
                }
                Err(e) => {
                    self.count(endpoint, "error");
                    self.count_error(endpoint, crate::forge::error_kind(&e));
                    e.to_string()
                }
            };
            match backoff.next() {
                Some(delay) => {
                    tracing::debug!(endpoint, attempts, %last, delay_ms = delay.as_millis() as u64, "GitLab API: retrying");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(GitlabError::GaveUp {
                        endpoint: endpoint.into(),
                        attempts,
                        last,
                    });
                }
            }
        }
    }

    /// One page of a JSON list (conditional when `etag` is given).
    pub(super) async fn page<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: &Url,
        etag: Option<&str>,
    ) -> Result<Fetched<T>, GitlabError> {
        let resp = self.get(endpoint, url, etag).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        let headers = resp.headers().clone();
        let (body, truncated, _) = self.read_body(resp, MAX_JSON_BYTES, endpoint).await?;
        if truncated {
            return Err(GitlabError::Decode {
                endpoint: endpoint.into(),
                reason: format!("larger than {MAX_JSON_BYTES} bytes"),
            });
        }
        let items: Vec<T> = serde_json::from_slice(&body).map_err(|e| {
            self.count_error(endpoint, "decode");
            GitlabError::Decode {
                endpoint: endpoint.into(),
                reason: e.to_string(),
            }
        })?;
        Ok(Fetched::Page(Page {
            items,
            etag: headers
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            next: next_page(&headers, url),
        }))
    }

    /// Every page of a JSON list.
    pub(super) async fn all<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: Url,
    ) -> Result<Vec<T>, GitlabError> {
        let mut out = Vec::new();
        let mut next = Some(url);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 10_000 {
                break;
            }
            if let Fetched::Page(p) = self.page::<T>(endpoint, &url, None).await? {
                out.extend(p.items);
                next = p.next;
            }
        }
        Ok(out)
    }
}

/// Read a body chunk by chunk, keeping at most `cap` bytes and stopping
/// there: (kept bytes, truncated, bytes received).
pub(super) async fn read_capped(
    mut resp: reqwest::Response,
    cap: u64,
    endpoint: &str,
) -> Result<(Vec<u8>, bool, u64), GitlabError> {
    let mut out = Vec::new();
    let mut read = 0u64;
    loop {
        let chunk = resp.chunk().await.map_err(|e| GitlabError::Http {
            endpoint: endpoint.to_string(),
            source: e,
        })?;
        let Some(chunk) = chunk else {
            return Ok((out, false, read));
        };
        read += chunk.len() as u64;
        let room = cap.saturating_sub(out.len() as u64) as usize;
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            // Dropping the response closes the stream: the rest is never read.
            return Ok((out, true, read));
        }
        out.extend_from_slice(&chunk);
    }
}

/// `Retry-After` in seconds (GitLab sends seconds).
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The next page: `Link: <...>; rel="next"` (keyset and offset pagination),
/// else `X-Next-Page` on the current URL.
pub(super) fn next_page(headers: &HeaderMap, current: &Url) -> Option<Url> {
    if let Some(target) = headers
        .get(LINK)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::forge::next_link)
    {
        return Url::parse(&target).ok();
    }
    let next = headers.get("x-next-page")?.to_str().ok()?.trim();
    if next.is_empty() {
        return None;
    }
    let mut url = current.clone();
    let pairs: Vec<(String, String)> = current
        .query_pairs()
        .filter(|(k, _)| k != "page")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("page", next);
    Some(url)
}

/// A project or group path as one URL path segment (`a/b` → `a%2Fb`).
pub(super) fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn pagination_follows_link_then_x_next_page() {
        let cur =
            Url::parse("https://g/api/v4/projects/a%2Fb/pipelines?per_page=100&page=1").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-next-page", HeaderValue::from_static("2"));
        assert_eq!(
            next_page(&h, &cur).unwrap().as_str(),
            "https://g/api/v4/projects/a%2Fb/pipelines?per_page=100&page=2"
        );
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://g/x?cursor=abc>; rel=\"next\", <https://g/x?p=1>; rel=\"first\"",
            ),
        );
        assert_eq!(
            next_page(&h, &cur).unwrap().as_str(),
            "https://g/x?cursor=abc"
        );
        assert_eq!(next_page(&HeaderMap::new(), &cur), None);
        assert_eq!(encode("grp/sub/proj"), "grp%2Fsub%2Fproj");
    }
}

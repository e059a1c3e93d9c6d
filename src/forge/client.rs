//! The forge-neutral HTTP client policy, one for GitHub and GitLab: GET with
//! retries (a rate-limited answer waits `Retry-After` or the forge's hint,
//! capped; 5xx answers and network or body failures back off exponentially
//! with jitter), conditional requests (`If-None-Match`, `304`), the
//! rate-limit headers into gauges, and one cap on every body read (JSON
//! pages at [`MAX_JSON_BYTES`], logs at their configured size). Pagination
//! is in [`super::pages`].
//!
//! What differs between the forges is an [`Adapter`]: the forge's name in
//! the self-metrics, its headers (auth, API version), which headers carry the
//! rate limit, and which answers are rate limits.

use crate::metrics::MetricsHub;
use crate::model::Forge;
use backon::BackoffBuilder;
use reqwest::StatusCode;
use reqwest::header::{ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH, RETRY_AFTER};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest JSON answer read (a page of a listing, a test report); a larger
/// one is an undecodable answer (`kind="decode"`).
pub(crate) const MAX_JSON_BYTES: u64 = 64 * 1024 * 1024;

/// At most this much of an error answer's body is read (for the message).
const MAX_ERROR_BYTES: u64 = 2000;

/// What a forge's API needs besides the common policy.
pub(crate) trait Adapter: Send + Sync {
    /// The forge (the `forge` label of the self-metrics, the sync states).
    const FORGE: Forge;
    /// Authentication and API headers of every request.
    fn prepare(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder;
    /// Header names of (remaining, limit, reset) of the rate-limit window.
    fn rate_limit_headers(&self) -> [&'static str; 3];
    /// How long a rate-limited answer asks to wait (uncapped), or `None` when
    /// the answer is not a rate limit. `body` is the start of its body.
    fn rate_limited(&self, status: StatusCode, headers: &HeaderMap, body: &str)
    -> Option<Duration>;
}

/// What a client did, for tests, the benchmark and the backfill's summary.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests sent (answered or not).
    pub requests: AtomicU64,
    /// Answers `304`.
    pub not_modified: AtomicU64,
    /// Bytes of job logs received (at most the cap plus one chunk per log).
    pub log_bytes_read: AtomicU64,
    pub by_endpoint: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn endpoints(&self) -> BTreeMap<String, u64> {
        self.by_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The retry settings of one forge's configuration section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retries {
    /// First backoff delay, doubled each retry, with jitter.
    pub base: Duration,
    /// Retries of one request (rate-limit waits included) before giving up.
    pub max: u32,
    /// Longest single wait: a backoff delay or a rate-limit wait.
    pub max_wait: Duration,
}

/// A request that ended without a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A 4xx (not a rate limit) or another non-retried status.
    #[error("{url}: {status}: {message}")]
    Status {
        endpoint: String,
        url: String,
        status: u16,
        /// The start of the body.
        message: String,
    },
    /// Retries exhausted; `last` says what failed last.
    #[error("{url}: gave up after {tries} tries: {last}")]
    GaveUp {
        endpoint: String,
        url: String,
        tries: u32,
        last: String,
    },
    /// JSON that does not parse, or is larger than [`MAX_JSON_BYTES`].
    #[error("{url}: undecodable answer: {source}")]
    Decode {
        endpoint: String,
        url: String,
        source: serde_json::Error,
    },
}

/// A successful answer's body, read up to a cap.
#[derive(Debug)]
pub(crate) struct Body {
    pub bytes: Vec<u8>,
    /// More was sent than the cap; the rest was not read.
    pub truncated: bool,
    /// Bytes received (at most the cap plus one chunk).
    pub read: u64,
    pub headers: HeaderMap,
}

/// A `304`, or a `2xx` with its body.
#[derive(Debug)]
pub(crate) enum Answer {
    NotModified,
    Ok(Body),
}

/// The forge-neutral client: one [`Adapter`], one API, one retry policy.
pub(crate) struct ForgeClient<A> {
    http: reqwest::Client,
    adapter: A,
    /// The API's base URL, without a trailing `/`.
    api: String,
    retries: Retries,
    hub: Option<Arc<MetricsHub>>,
    pub(crate) counts: Counts,
}

impl<A: Adapter> ForgeClient<A> {
    /// `timeout` bounds each request, its body included.
    pub(crate) fn new(
        adapter: A,
        api: &str,
        timeout: Duration,
        retries: Retries,
        hub: Option<Arc<MetricsHub>>,
    ) -> Result<Self, reqwest::Error> {
        Ok(ForgeClient {
            http: super::http_client(timeout)?,
            adapter,
            api: api.trim_end_matches('/').to_string(),
            retries,
            hub,
            counts: Counts::default(),
        })
    }

    pub(crate) fn forge(&self) -> &'static str {
        A::FORGE.as_str()
    }

    /// The URL of `path` under the API, with `query` encoded onto it.
    pub(crate) fn url(&self, path: &str, query: &[(&str, String)]) -> String {
        let url = format!("{}{path}", self.api);
        match reqwest::Url::parse(&url) {
            Ok(mut u) if !query.is_empty() => {
                u.query_pairs_mut()
                    .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
                u.into()
            }
            _ => url,
        }
    }

    fn count(&self, endpoint: &str, status: &str) {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .counts
            .by_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(endpoint.to_string())
            .or_default() += 1;
        if let Some(hub) = &self.hub {
            hub.self_metrics
                .count_forge_request(self.forge(), endpoint, status);
        }
    }

    /// Count a request that failed without a usable answer
    /// (`ci_exporter_forge_errors_total`).
    pub(crate) fn count_error(&self, endpoint: &str, kind: &str) {
        if let Some(hub) = &self.hub {
            hub.self_metrics
                .count_forge_error(self.forge(), endpoint, kind);
        }
    }

    /// Count a listing cut at the page limit.
    pub(crate) fn count_page_limit(&self, endpoint: &str) {
        if let Some(hub) = &self.hub {
            hub.self_metrics
                .count_forge_page_limit(self.forge(), endpoint);
        }
    }

    fn rate_limits(&self, h: &HeaderMap) {
        let Some(hub) = &self.hub else { return };
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map(|v| v as f64)
        };
        let [remaining, limit, reset] = self.adapter.rate_limit_headers();
        hub.self_metrics
            .set_rate_limit(self.forge(), num(remaining), num(limit), num(reset));
    }

    /// GET `url` (conditional on `etag`), reading at most `cap` bytes of a
    /// successful answer's body, with retries: a rate limit waits what the
    /// adapter says (capped by `max_wait`); a 5xx, a network error or a body
    /// that breaks off backs off; after `max` retries it gives up. Other
    /// statuses are [`FetchError::Status`].
    pub(crate) async fn get(
        &self,
        endpoint: &str,
        url: &str,
        etag: Option<&str>,
        cap: u64,
    ) -> Result<Answer, FetchError> {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.retries.base)
            .with_max_delay(self.retries.max_wait)
            .with_jitter()
            .without_max_times()
            .build();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let mut req = self.adapter.prepare(self.http.get(url));
            if let Some(e) = etag {
                req = req.header(IF_NONE_MATCH, e);
            }
            let (wait, last) = match req.send().await {
                Err(e) => {
                    self.count(endpoint, "error");
                    self.count_error(endpoint, super::error_kind(&e));
                    (backoff.next(), e.to_string())
                }
                Ok(resp) => {
                    let status = resp.status();
                    self.count(endpoint, status.as_str());
                    let headers = resp.headers().clone();
                    self.rate_limits(&headers);
                    if status == StatusCode::NOT_MODIFIED {
                        self.counts.not_modified.fetch_add(1, Ordering::Relaxed);
                        if let Some(hub) = &self.hub {
                            hub.self_metrics.count_not_modified(self.forge());
                        }
                        return Ok(Answer::NotModified);
                    }
                    let cap = if status.is_success() {
                        cap
                    } else {
                        MAX_ERROR_BYTES
                    };
                    match read_capped(resp, cap).await {
                        Err(e) => {
                            // The status line came, the body did not (reset, cut, stalled).
                            self.count_error(endpoint, super::error_kind(&e));
                            (backoff.next(), e.to_string())
                        }
                        Ok((bytes, truncated, read)) if status.is_success() => {
                            return Ok(Answer::Ok(Body {
                                bytes,
                                truncated,
                                read,
                                headers,
                            }));
                        }
                        Ok((bytes, _, _)) => {
                            let text = String::from_utf8_lossy(&bytes).into_owned();
                            if let Some(w) = self.adapter.rate_limited(status, &headers, &text) {
                                let w = w.min(self.retries.max_wait);
                                tracing::warn!(forge = self.forge(), endpoint, url, wait = ?w, "rate limit; waiting");
                                (Some(w), format!("{status}: rate limited"))
                            } else if status.is_server_error() {
                                (backoff.next(), format!("HTTP {status}"))
                            } else {
                                return Err(FetchError::Status {
                                    endpoint: endpoint.to_string(),
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
                Some(w) if tries <= self.retries.max => {
                    tracing::debug!(forge = self.forge(), endpoint, url, tries, wait = ?w, %last, "retrying");
                    tokio::time::sleep(w).await;
                }
                _ => {
                    return Err(FetchError::GaveUp {
                        endpoint: endpoint.to_string(),
                        url: url.to_string(),
                        tries,
                        last,
                    });
                }
            }
        }
    }

    /// Decode a JSON body; an undecodable one (invalid, or cut at the cap) is
    /// counted as `kind="decode"`.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        url: &str,
        body: &Body,
    ) -> Result<T, FetchError> {
        let parsed = if body.truncated {
            Err(<serde_json::Error as serde::de::Error>::custom(format!(
                "larger than {MAX_JSON_BYTES} bytes"
            )))
        } else {
            serde_json::from_slice(&body.bytes)
        };
        parsed.map_err(|source| {
            self.count_error(endpoint, "decode");
            FetchError::Decode {
                endpoint: endpoint.to_string(),
                url: url.to_string(),
                source,
            }
        })
    }

    /// Download a job log (with the retries of every request), keeping at
    /// most `cap` bytes and marking a cut one: (text, truncated); `None`: 304.
    pub(crate) async fn log(
        &self,
        endpoint: &str,
        url: &str,
        cap: u64,
    ) -> Result<Option<(String, bool)>, FetchError> {
        let Answer::Ok(body) = self.get(endpoint, url, None, cap).await? else {
            return Ok(None);
        };
        self.counts
            .log_bytes_read
            .fetch_add(body.read, Ordering::Relaxed);
        let mut text = String::from_utf8_lossy(&body.bytes).into_owned();
        if body.truncated {
            text.push_str(&format!(
                "\n[ci-slo-exporter: log truncated: only the first {cap} bytes were downloaded]\n"
            ));
        }
        Ok(Some((text, body.truncated)))
    }

    /// GET and decode one JSON answer (a `304`, to a request without a
    /// condition, is an error).
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        url: &str,
    ) -> Result<T, FetchError> {
        match self.get(endpoint, url, None, MAX_JSON_BYTES).await? {
            Answer::Ok(body) => self.decode(endpoint, url, &body),
            Answer::NotModified => Err(FetchError::Status {
                endpoint: endpoint.to_string(),
                url: url.to_string(),
                status: 304,
                message: "not modified without a condition".into(),
            }),
        }
    }
}

/// The `ETag` of an answer.
pub(crate) fn etag(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `req` with the secret header `name: value` when there is one, marked
/// sensitive (never logged); the adapters' authentication.
pub(crate) fn secret_header(
    req: reqwest::RequestBuilder,
    name: &str,
    value: Option<String>,
) -> reqwest::RequestBuilder {
    match value.and_then(|v| HeaderValue::from_str(&v).ok()) {
        Some(mut v) => {
            v.set_sensitive(true);
            req.header(name, v)
        }
        None => req,
    }
}

/// `Retry-After` in seconds (both forges send seconds).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Read a body chunk by chunk, keeping at most `cap` bytes and stopping
/// there: (kept bytes, truncated, bytes received). Dropping the response
/// closes the stream: the rest is never read.
async fn read_capped(
    mut resp: reqwest::Response,
    cap: u64,
) -> Result<(Vec<u8>, bool, u64), reqwest::Error> {
    let mut out = Vec::new();
    let mut read = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        read += chunk.len() as u64;
        let room = cap.saturating_sub(out.len() as u64) as usize;
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, true, read));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, false, read))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_secret_header_is_set_marked_sensitive_and_left_out_without_a_value() {
        let http = crate::forge::http_client(std::time::Duration::from_secs(5)).unwrap();
        let with = |value: Option<&str>| {
            let req = http.get("http://127.0.0.1/");
            super::secret_header(req, "PRIVATE-TOKEN", value.map(str::to_string))
                .build()
                .unwrap()
        };
        let req = with(Some("glpat-x"));
        let v = req.headers().get("PRIVATE-TOKEN").unwrap();
        assert_eq!(v.to_str().unwrap(), "glpat-x");
        assert!(v.is_sensitive());
        assert!(with(None).headers().get("PRIVATE-TOKEN").is_none());
    }
}

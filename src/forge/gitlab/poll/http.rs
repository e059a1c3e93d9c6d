//! The GitLab adapter of the forge-neutral client ([`crate::forge::client`]):
//! the `PRIVATE-TOKEN` header, the `RateLimit-*` headers, `429` as the rate
//! limit (waiting `Retry-After`, else the first backoff delay); and the URL
//! pieces (encoded paths, times).

use crate::config::Secret;
use crate::forge::client::{self, Adapter};
use crate::model::Forge;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use std::time::Duration;

/// GitLab's side of the client policy.
pub(crate) struct Gitlab {
    pub(super) token: Option<Secret>,
    /// The wait of a 429 without `Retry-After`.
    pub(super) retry_base_delay: Duration,
}

impl Adapter for Gitlab {
    const FORGE: Forge = Forge::Gitlab;

    fn prepare(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let token = self.token.as_ref().map(|t| t.expose().to_string());
        client::secret_header(req, "PRIVATE-TOKEN", token)
    }

    fn rate_limit_headers(&self) -> [&'static str; 3] {
        ["ratelimit-remaining", "ratelimit-limit", "ratelimit-reset"]
    }

    fn rate_limited(&self, status: StatusCode, h: &HeaderMap, _body: &str) -> Option<Duration> {
        (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| client::retry_after(h).unwrap_or(self.retry_base_delay))
    }
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
    #[test]
    fn paths_are_one_segment() {
        assert_eq!(super::encode("grp/sub/proj"), "grp%2Fsub%2Fproj");
    }
}

//! Forge sources (GitHub, GitLab): what they share.
//!
//! Each forge keeps its wire types private and converts them to `model`
//! types at its boundary; this module holds what they share: the HTTP client
//! policy (`client`: retries, rate limits, conditional requests, body caps;
//! `pages`: pagination with one page limit), the forge-neutral event and its
//! apply step (`event`), one round over a forge's scopes for polls and
//! backfills (`driver`) and the polling loop; each forge adds a thin adapter.

pub(crate) mod client;
pub(crate) mod driver;
pub(crate) mod event;
pub mod github;
pub mod gitlab;
pub(crate) mod pages;
pub(crate) mod progress;

use std::sync::Once;
use std::time::Duration;

static CRYPTO: Once = Once::new();

/// An HTTP client for forge APIs: rustls with the ring provider, the
/// platform's trust store, a user agent naming this exporter, timeouts.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    CRYPTO.call_once(|| {
        // Fails only if another provider was installed first, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .user_agent(concat!("ci-slo-exporter/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()
}

/// `serve`'s loop, one for both pollers: a round now, then one every
/// `interval` (a round longer than the interval delays the next one; missed
/// ticks are not made up). Each poller's round persists its own cursors.
pub(crate) async fn poll_forever<F: std::future::Future<Output = ()>>(
    interval: Duration,
    mut round: impl FnMut() -> F,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        round().await;
    }
}

/// The `kind` label of `ci_exporter_forge_errors_total` for a failed
/// request or body read: `timeout` (no answer, or the body stalled, within the
/// request timeout), `connect`, else `connection` (reset, or closed before the
/// answer was complete). reqwest calls a body that breaks off a "decode"
/// error; `decode` is kept for JSON that does not parse, which the callers
/// count themselves.
pub fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "connection"
    }
}

/// The `next` URL of a `Link` header (`<url>; rel="next"`), as both forges
/// paginate.
pub(crate) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_builds_with_the_ring_provider() {
        super::http_client(std::time::Duration::from_secs(5)).unwrap();
        super::http_client(std::time::Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn link_headers_give_the_next_page() {
        let link = r#"<https://api.github.com/repositories/1/pulls?page=2>; rel="next", <https://api.github.com/repositories/1/pulls?page=5>; rel="last""#;
        assert_eq!(
            super::next_link(link).as_deref(),
            Some("https://api.github.com/repositories/1/pulls?page=2")
        );
        assert_eq!(super::next_link(r#"<https://x/?page=1>; rel="prev""#), None);
        assert_eq!(super::next_link("garbage"), None);
    }
}

//! Forge sources (GitHub, GitLab): what they share.
//!
//! Each forge keeps its wire types private and converts them to `model`
//! types at its boundary; this module holds what they share: the HTTP client
//! policy (`client`: retries, rate limits, conditional requests, body caps;
//! `pages`: pagination with one page limit), the forge-neutral event and its
//! apply step (`event`), what a poller works with (`context`), one round over
//! a forge's scopes for polls and backfills (`driver`) and the polling loop;
//! each forge adds a thin adapter.

pub(crate) mod client;
pub mod context;
pub mod driver;
pub(crate) mod event;
pub mod github;
pub mod gitlab;
pub(crate) mod pages;

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

/// How far rounds are spread around their interval (a tenth either way).
const JITTER: f64 = 0.1;

/// `serve`'s loop, one for both pollers: a first round after a random tenth
/// of `interval` at most, then one every `interval` give or take a tenth,
/// at random, so that many instances (or restarts) do not poll the forge in
/// lockstep. A round longer than the wait starts the next one at once
/// (missed rounds are not made up). Each poller's round persists its own
/// cursors.
///
/// When `stop` turns true (or its sender is gone) the loop returns at once,
/// between rounds or in the middle of one: the round's future is dropped at
/// the write or request it awaits. A store write it submitted is one
/// transaction that the writer runs to its end even when nobody waits for
/// its answer, and cursors move only after what they cover is committed, so
/// the next start resumes where this one stopped (`serve` waits for such
/// writes before it exits).
pub(crate) async fn poll_forever<F: std::future::Future<Output = ()>>(
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut round: impl FnMut() -> F,
) {
    let mut wait = interval.mul_f64(JITTER * fastrand::f64());
    loop {
        let start = tokio::time::Instant::now() + wait;
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep_until(start) => {}
        }
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            _ = round() => {}
        }
        wait = jittered(interval, fastrand::f64()).saturating_sub(start.elapsed());
    }
}

/// `interval` spread by up to [`JITTER`] either way; `unit` is in `[0, 1)`.
fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
}

/// Until `stop` is true, or its sender is gone.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
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
    fn rounds_are_spread_within_a_tenth_of_the_interval_either_way() {
        let interval = std::time::Duration::from_secs(300);
        assert_eq!(super::jittered(interval, 0.0).as_secs(), 270);
        assert_eq!(super::jittered(interval, 0.5).as_secs(), 300);
        let waits: Vec<f64> = (0..1000)
            .map(|_| super::jittered(interval, fastrand::f64()).as_secs_f64())
            .collect();
        assert!(
            waits.iter().all(|w| (270.0..330.0).contains(w)),
            "{waits:?}"
        );
        // Spread over the whole range, not one fixed offset (1000 draws all
        // in one half of it would be a broken generator).
        let (min, max) = waits
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), w| (a.min(*w), b.max(*w)));
        assert!(min < 285.0 && max > 315.0, "{min} {max}");
    }

    #[tokio::test]
    async fn polling_stops_at_once_while_waiting_for_the_next_round() {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let rounds = std::sync::atomic::AtomicUsize::new(0);
        // An hour between rounds: the first one is minutes away.
        let polling = super::poll_forever(std::time::Duration::from_secs(3600), stopping, || {
            rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {}
        });
        stop.send(true).unwrap();
        // A guard against a hang, not a timing assertion.
        tokio::time::timeout(std::time::Duration::from_secs(60), polling)
            .await
            .expect("the loop returns once stopped");
        assert_eq!(rounds.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn polling_stops_in_the_middle_of_a_round_and_its_write_is_committed_whole() {
        use crate::model::Forge;
        use crate::store::SyncState;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::writer::StoreHandle::start(&dir.path().join("db")).unwrap();
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
        let entered_tx = std::sync::Mutex::new(Some(entered_tx));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = std::sync::Arc::new(std::sync::Mutex::new(released));
        let rounds = std::sync::Arc::new(AtomicUsize::new(0));
        let polling = {
            let (store, rounds) = (store.clone(), rounds.clone());
            tokio::spawn(super::poll_forever(
                std::time::Duration::from_millis(10),
                stopping,
                move || {
                    rounds.fetch_add(1, Ordering::SeqCst);
                    let mut entered = entered_tx.lock().unwrap().take();
                    let (store, released) = (store.clone(), released.clone());
                    async move {
                        // The round's one write: two rows, held open on the
                        // writer until the test releases it.
                        let _ = store
                            .write(move |s| {
                                if let Some(e) = entered.take() {
                                    let _ = e.send(());
                                }
                                let _ = released.lock().unwrap().recv();
                                let state = SyncState {
                                    cursor: Some("c".into()),
                                    ..SyncState::default()
                                };
                                s.set_sync_state(Forge::Github, "o/r", "one", &state)?;
                                s.set_sync_state(Forge::Github, "o/r", "two", &state)
                            })
                            .await;
                        // Never returns: only a stop ends this round.
                        std::future::pending::<()>().await
                    }
                },
            ))
        };
        entered.await.unwrap();
        stop.send(true).unwrap();
        // The loop returns while its write is still running on the writer.
        tokio::time::timeout(std::time::Duration::from_secs(60), polling)
            .await
            .expect("the loop returns once stopped")
            .unwrap();
        assert_eq!(rounds.load(Ordering::SeqCst), 1, "no round after the stop");
        release.send(()).unwrap();
        // What serve does before it exits: a write queued after the poller's
        // is acknowledged once that one is committed.
        store.write(|_| Ok(())).await.unwrap();
        for kind in ["one", "two"] {
            let state = store
                .read(move |s| s.sync_state(Forge::Github, "o/r", kind))
                .await
                .unwrap();
            assert_eq!(state.and_then(|s| s.cursor).as_deref(), Some("c"), "{kind}");
        }
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

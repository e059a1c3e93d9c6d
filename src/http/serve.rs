//! The accept loop: HTTP/1.1 connections with deadlines and a cap, so that
//! whoever can reach the port cannot hold the server's sockets or memory.
//!
//! Each connection is served by hyper and watched by a small state machine
//! (`Activity`) that knows whether a request is in flight:
//! - a new connection, or a request head whose first byte came, must complete
//!   the head within `header_read_timeout`;
//! - an idle connection between requests is closed after `keep_alive_timeout`;
//! - a request (head, body, handler, answer) is cut after `request_timeout`
//!   plus a short grace for the handler's own timeout answer to go out.
//!
//! At most `max_connections` are open; one more gets a `503` with a JSON
//! reason and is closed. The soft file-descriptor limit is raised to the hard
//! one at start ([`raise_fd_limit`]), and the cap is kept below it, so the
//! process never runs out of descriptors for its database and forge clients.

use crate::metrics::MetricsHub;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// Descriptors kept free for the database, the forge clients and logs.
pub const FD_RESERVE: u64 = 256;

/// Extra time after `request_timeout` for the timeout answer itself.
const ANSWER_GRACE: Duration = Duration::from_secs(5);

/// Connections refused at once beyond the cap (each gets its 503 from a task
/// of its own; more than this are closed without one).
const MAX_REFUSING: usize = 64;

/// The deadlines and the cap of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(c: &crate::config::ServerConfig) -> Limits {
        Limits {
            header_read_timeout: c.header_read_timeout,
            keep_alive_timeout: c.keep_alive_timeout,
            request_timeout: c.request_timeout,
            max_connections: c.max_connections,
        }
    }
}

/// Raise the soft limit of open files to the hard limit; returns the soft
/// limit in force afterwards (None where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    let (before, _) = rlimit::Resource::NOFILE.get().ok()?;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(after) => {
            if after > before {
                tracing::info!(from = before, to = after, "raised the open-file limit");
            }
            Some(after)
        }
        Err(e) => {
            tracing::warn!(error = %e, limit = before, "cannot raise the open-file limit");
            Some(before)
        }
    }
}

/// The connection cap that fits in `fd_limit` descriptors.
pub fn effective_max_connections(configured: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(limit) => {
            let fits = limit.saturating_sub(FD_RESERVE).max(16) as usize;
            if fits < configured {
                tracing::warn!(
                    configured,
                    open_file_limit = limit,
                    using = fits,
                    "server.max_connections does not fit in the open-file limit; using less"
                );
            }
            configured.min(fits)
        }
        None => configured,
    }
}

/// Why the watchdog closed a connection (a label of
/// `ci_exporter_http_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Header,
    KeepAlive,
    Request,
}

impl Cut {
    fn as_str(self) -> &'static str {
        match self {
            Cut::Header => "header_timeout",
            Cut::KeepAlive => "idle_timeout",
            Cut::Request => "request_timeout",
        }
    }
}

/// What one connection is doing, shared by its reader, its service and its
/// watchdog. Times are milliseconds since the connection was accepted, plus
/// one (0 means "not yet").
struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    served: AtomicU64,
    /// Start of the current idle period or of the current request.
    since: AtomicU64,
    /// First byte read while idle (a request head is coming).
    first_read: AtomicU64,
    /// Wakes the watchdog when the deadline moves.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            since: AtomicU64::new(1),
            first_read: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.first_read.load(Ordering::Acquire) == 0
        {
            self.first_read.store(self.now(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn begin(&self) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.since.store(self.now(), Ordering::Release);
        }
        self.first_read.store(0, Ordering::Release);
        self.changed.notify_one();
    }

    fn end(&self) {
        self.served.fetch_add(1, Ordering::AcqRel);
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.first_read.store(0, Ordering::Release);
            self.since.store(self.now(), Ordering::Release);
        }
        self.changed.notify_one();
    }

    /// When the connection must be closed if nothing changes, and why.
    fn deadline(&self, limits: &Limits) -> (u64, Cut) {
        let ms = |d: Duration| d.as_millis() as u64;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            let since = self.since.load(Ordering::Acquire);
            return (
                since + ms(limits.request_timeout + ANSWER_GRACE),
                Cut::Request,
            );
        }
        let first_read = self.first_read.load(Ordering::Acquire);
        if first_read != 0 {
            return (first_read + ms(limits.header_read_timeout), Cut::Header);
        }
        let since = self.since.load(Ordering::Acquire);
        if self.served.load(Ordering::Acquire) == 0 {
            // Connected and silent: as long as a slow head would get.
            (since + ms(limits.header_read_timeout), Cut::Header)
        } else {
            (since + ms(limits.keep_alive_timeout), Cut::KeepAlive)
        }
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that ends its request (for [`Activity`]) when it is
/// dropped: after hyper wrote its last byte, or when the connection died.
struct Ending {
    inner: axum::body::Body,
    activity: Option<Arc<Activity>>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        if let Some(a) = self.activity.take() {
            a.end();
        }
    }
}

impl http_body::Body for Ending {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serve `app` on `listener` until `shutdown` completes, then let the open
/// requests finish (at most `request_timeout`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    hub: Arc<MetricsHub>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_accept_error: Option<Instant> = None;
    let mut accept_errors = 0u64;
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, or the peer left before accept:
                    // keep going, and say so at most once a second.
                    accept_errors += 1;
                    if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, errors = accept_errors, "accept failed");
                        last_accept_error = Some(Instant::now());
                        accept_errors = 0;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            hub.self_metrics.count_connection_refused();
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                let max = limits.max_connections;
                tokio::spawn(async move {
                    refuse(stream, max).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let app = app.clone();
        let hub = hub.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            hub.self_metrics.connection_opened();
            let cut = connection(stream, addr, app, limits, stop).await;
            hub.self_metrics.connection_ended();
            if let Some(cut) = cut {
                hub.self_metrics.count_connection_cut(cut.as_str());
                tracing::debug!(peer = %addr, reason = cut.as_str(), "connection closed by a deadline");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit: all back means all closed.
    let all = limits.max_connections.min(u32::MAX as usize) as u32;
    let _ = tokio::time::timeout(
        limits.request_timeout + ANSWER_GRACE,
        permits.acquire_many(all),
    )
    .await;
    Ok(())
}

/// Serve one connection; Some(why) when a deadline closed it.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> Option<Cut> {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let activity = service_activity.clone();
        activity.begin();
        req.extensions_mut().insert(ConnectInfo(addr));
        let app = app.clone();
        async move {
            let response = match app.oneshot(req.map(axum::body::Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|inner| {
                axum::body::Body::new(Ending {
                    inner,
                    activity: Some(activity),
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog below keeps every deadline (hyper's own header timer
    // would also close idle keep-alive connections at the header deadline).
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let (deadline, _) = activity.deadline(&limits);
        let at = activity.origin + Duration::from_millis(deadline.saturating_sub(1));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
                }
                return None;
            }
            _ = tokio::time::sleep_until(at.into()) => {
                let (deadline, why) = activity.deadline(&limits);
                if deadline <= activity.now() {
                    return Some(why);
                }
            }
            _ = activity.changed.notified() => {}
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Answer a connection beyond the cap with a 503 and close it.
async fn refuse(mut stream: TcpStream, max: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!(
        "{{\"error\":\"too many open connections: this server takes at most {max} at once (server.max_connections); retry shortly\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client already sent, so that closing does not reset
        // the connection before it reads the answer.
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 65536 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        io::Result::Ok(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(60),
            max_connections: 10,
        }
    }

    #[test]
    fn the_deadline_follows_the_connection_state() {
        let a = Activity::new();
        let l = limits();
        assert_eq!(a.deadline(&l), (1 + 10_000, Cut::Header));
        a.begin();
        let (d, why) = a.deadline(&l);
        assert_eq!(why, Cut::Request);
        assert!(d >= 65_000, "{d}");
        // Bytes of the body while in flight do not start a head deadline.
        a.on_read();
        assert_eq!(a.deadline(&l).1, Cut::Request);
        a.end();
        let (d, why) = a.deadline(&l);
        assert_eq!(why, Cut::KeepAlive);
        assert!((20_000..21_000).contains(&d), "{d}");
        a.on_read();
        assert_eq!(a.deadline(&l).1, Cut::Header);
    }

    #[test]
    fn the_cap_fits_in_the_descriptor_limit() {
        assert_eq!(effective_max_connections(4096, Some(1024)), 768);
        assert_eq!(effective_max_connections(4096, Some(1_048_576)), 4096);
        assert_eq!(effective_max_connections(100, None), 100);
    }
}

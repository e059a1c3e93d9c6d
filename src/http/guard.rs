//! The checks every request passes before a handler sees it, cheapest first,
//! so that a request that will be refused costs almost nothing:
//!
//! 1. the `Host` header, when `web.allowed_hosts` is set (DNS rebinding);
//! 2. credentials, from the headers alone: the API token of
//!    `POST /api/v1/runs`, the presence and form of GitHub's
//!    `X-Hub-Signature-256` (its HMAC needs the body; the handler checks it),
//!    GitLab's `X-Gitlab-Token`, and the read token of pages and JSON when one
//!    is set. Refusals are `401` with a JSON reason, logged without the secret
//!    and counted in `ci_exporter_auth_rejections_total`;
//! 3. a `Content-Length` over `server.max_body_bytes`: `413` at once;
//! 4. the body, read here within the limit, at no less than
//!    `server.min_body_rate` on average (`408` otherwise), and within the
//!    budget of bodies being read at once (`503` beyond it).
//!
//! Not one byte of a body is read before steps 1-3 pass. Error answers of
//! the JSON API and webhooks are JSON, framework rejections included.

use super::{ApiError, AppState};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// Pages that answer anyone: probes, the scrape and the stylesheet.
fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/static/app.css"
    )
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Open,
    Read,
    Api,
    GithubHook,
    GitlabHook,
}

impl Door {
    fn of(method: &Method, path: &str) -> Door {
        match (method, path) {
            (&Method::POST, "/api/v1/runs") => Door::Api,
            (&Method::POST, "/webhooks/github") => Door::GithubHook,
            (&Method::POST, "/webhooks/gitlab") => Door::GitlabHook,
            (_, p) if is_open(p) => Door::Open,
            (&Method::GET | &Method::HEAD, _) => Door::Read,
            _ => Door::Open,
        }
    }

    /// The bounded `route` label of the rejection counter.
    fn label(self) -> &'static str {
        match self {
            Door::Open => "other",
            Door::Read => "read",
            Door::Api => "api_runs",
            Door::GithubHook => "webhooks_github",
            Door::GitlabHook => "webhooks_gitlab",
        }
    }
}

/// Why credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No secret is configured for this door.
    Disabled,
    Missing,
    Malformed,
    Invalid,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Invalid => "invalid",
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn same(given: &[u8], expected: &str) -> bool {
    bool::from(given.ct_eq(expected.as_bytes()))
}

/// The token of `Authorization: Bearer T` or `Basic base64(user:T)`.
fn presented_token(headers: &HeaderMap) -> Result<Vec<u8>, Refusal> {
    let value = header_str(headers, header::AUTHORIZATION.as_str()).ok_or(Refusal::Missing)?;
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Ok(t.trim().as_bytes().to_vec());
    }
    if let Some(b) = value.strip_prefix("Basic ") {
        let decoded = decode_base64(b.trim()).ok_or(Refusal::Malformed)?;
        let colon = decoded
            .iter()
            .position(|c| *c == b':')
            .ok_or(Refusal::Malformed)?;
        return Ok(decoded[colon + 1..].to_vec());
    }
    Err(Refusal::Malformed)
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 || s.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Check the credentials a door needs, from the headers only.
fn check(state: &AppState, door: Door, headers: &HeaderMap) -> Result<(), (Refusal, String)> {
    let secrets = &state.secrets;
    match door {
        Door::Open => Ok(()),
        Door::Read => {
            let Some(read) = secrets.read_token.as_ref() else {
                return Ok(());
            };
            let given = presented_token(headers).map_err(|r| {
                (
                    r,
                    "this exporter needs a read token: send Authorization: Bearer <token> (or Basic with the token as password)".to_string(),
                )
            })?;
            let api = secrets.api_token.as_ref().map(|s| s.expose());
            if same(&given, read.expose()) || api.is_some_and(|a| same(&given, a)) {
                Ok(())
            } else {
                Err((Refusal::Invalid, "invalid read token".into()))
            }
        }
        Door::Api => super::api::authorize(headers, secrets.api_token.as_ref().map(|s| s.expose()))
            .map_err(|e| {
                let why = if secrets.api_token.is_none() {
                    Refusal::Disabled
                } else if headers.contains_key(header::AUTHORIZATION) {
                    Refusal::Invalid
                } else {
                    Refusal::Missing
                };
                (why, e.message)
            }),
        Door::GithubHook => {
            if secrets.github_webhook_secret.is_none() {
                return Err((
                    Refusal::Disabled,
                    "GitHub webhooks are disabled: set CI_SLO_GITHUB_WEBHOOK_SECRET (or secrets.github_webhook_secret_file) on the exporter".into(),
                ));
            }
            crate::forge::github::webhook::signature_form(header_str(
                headers,
                "x-hub-signature-256",
            ))
            .map(|_| ())
            .map_err(|e| {
                let why = match e {
                    crate::forge::github::webhook::SignatureError::Missing => Refusal::Missing,
                    _ => Refusal::Malformed,
                };
                (why, e.to_string())
            })
        }
        Door::GitlabHook => {
            let token = secrets.gitlab_webhook_token.as_ref().map(|s| s.expose());
            crate::forge::gitlab::webhook::authorize(headers, token).map_err(|e| {
                let why = if token.is_none() {
                    Refusal::Disabled
                } else if headers.contains_key("x-gitlab-token") {
                    Refusal::Invalid
                } else {
                    Refusal::Missing
                };
                (why, e.to_string())
            })
        }
    }
}

/// Count a refusal where the handler would have counted it too.
fn count_refusal(state: &AppState, door: Door, headers: &HeaderMap, why: Refusal) {
    let m = &state.hub.self_metrics;
    m.count_auth_rejection(door.label(), why.as_str());
    match door {
        Door::Api => m.count_ingest("api", "unauthorized"),
        Door::GithubHook => {
            let event = header_str(headers, "x-github-event").unwrap_or("");
            let label = if crate::forge::github::webhook::EVENTS.contains(&event) || event == "ping"
            {
                event
            } else {
                "other"
            };
            m.count_webhook("github", label, "unauthorized");
        }
        Door::GitlabHook => {
            let event = header_str(headers, "x-gitlab-event").unwrap_or("").trim();
            let label = if crate::forge::gitlab::webhook::EVENTS.contains(&event) {
                event
            } else {
                "other"
            };
            m.count_webhook("gitlab", label, "unauthorized");
        }
        Door::Open | Door::Read => {}
    }
}

/// Whether `host` (a `Host` header) is one of `allowed` (`name` matches any
/// port, `name:port` only that port; case-insensitive).
pub fn host_allowed(allowed: &[String], host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let name = match host.rsplit_once(':') {
        // An IPv6 literal without a port is `[..]`; with one, `[..]:port`.
        Some((n, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host.as_str(),
    };
    allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        a == host || a == name
    })
}

/// The middleware of [`super::router`]: see the module comment.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let web = &state.config.web;
    if !web.allowed_hosts.is_empty() && !matches!(path.as_str(), "/healthz" | "/readyz") {
        let host = header_str(req.headers(), header::HOST.as_str())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        if !host_allowed(&web.allowed_hosts, &host) {
            state
                .hub
                .self_metrics
                .count_auth_rejection("host", "not_allowed");
            tracing::warn!(%peer, host = %host.chars().take(100).collect::<String>(), path = %path, "refused a request for a host not in web.allowed_hosts");
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "this Host is not served here (web.allowed_hosts)",
            )
            .into_response();
        }
    }
    let door = Door::of(&method, &path);
    if let Err((why, message)) = check(&state, door, req.headers()) {
        count_refusal(&state, door, req.headers(), why);
        tracing::warn!(%peer, route = door.label(), reason = why.as_str(), "refused a request for its credentials");
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
        if door == Door::Read {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ci-slo-exporter\", charset=\"UTF-8\""),
            );
        }
        return response;
    }
    let server = &state.config.server;
    let limit = server.max_body_bytes;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = length
        && n > limit as u64
    {
        return too_large(n, limit);
    }
    let wants_json = !matches!(door, Door::Open | Door::Read) || path.starts_with("/api/");
    let req = if matches!(door, Door::Api | Door::GithubHook | Door::GitlabHook) {
        let (parts, body) = req.into_parts();
        match read_body(&state, body, length).await {
            Ok(bytes) => Request::from_parts(parts, Body::from(bytes)),
            Err(e) => return e.into_response(),
        }
    } else {
        req
    };
    let response = next.run(req).await;
    if wants_json {
        json_errors(response, &path).await
    } else {
        response
    }
}

fn too_large(n: u64, limit: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body of {n} bytes is over the limit of {limit} bytes (server.max_body_bytes)"),
    )
    .into_response()
}

/// Read a body within the size limit, the rate floor and the budget of
/// bodies in flight.
async fn read_body(
    state: &AppState,
    mut body: Body,
    length: Option<u64>,
) -> Result<Bytes, ApiError> {
    let server = &state.config.server;
    let limit = server.max_body_bytes;
    let rate = server.min_body_rate.max(1) as f64;
    let grace = server.header_read_timeout;
    let started = Instant::now();
    // Reserve the announced length now; chunked bodies reserve as they come.
    let mut reserved = state.bodies.reserve(length.unwrap_or(0) as usize)?;
    let mut buf = Vec::with_capacity(length.unwrap_or(0).min(limit as u64) as usize);
    loop {
        let due = started + grace + Duration::from_secs_f64(buf.len() as f64 / rate);
        let frame = match tokio::time::timeout_at(due, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body came too slowly: less than {} bytes/s on average (server.min_body_rate)",
                        server.min_body_rate
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}"),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over the limit of {limit} bytes (server.max_body_bytes)"),
            ));
        }
        if buf.len() + data.len() > reserved.bytes() {
            reserved.grow(&state.bodies, buf.len() + data.len())?;
        }
        buf.extend_from_slice(&data);
    }
    // The reservation ends with the read: the handler owns the bytes now, and
    // its own work is bounded by request_timeout.
    drop(reserved);
    Ok(Bytes::from(buf))
}

/// The bytes of request bodies being read at once, bounded by
/// `server.max_body_bytes_in_flight`.
pub struct BodyBudget {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    total: usize,
}

/// Permits are KiB.
const UNIT: usize = 1024;

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        let units = (bytes / UNIT).clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(units)),
            total: bytes,
        }
    }

    fn busy(&self) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many request bodies are being read at once (server.max_body_bytes_in_flight = {}); retry shortly",
                self.total
            ),
        )
    }

    fn reserve(&self, bytes: usize) -> Result<Reservation, ApiError> {
        let units = bytes.div_ceil(UNIT).max(1);
        let permit = u32::try_from(units)
            .ok()
            .and_then(|n| self.permits.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| self.busy())?;
        Ok(Reservation {
            permits: vec![permit],
            units,
        })
    }
}

struct Reservation {
    permits: Vec<tokio::sync::OwnedSemaphorePermit>,
    units: usize,
}

impl Reservation {
    fn bytes(&self) -> usize {
        self.units * UNIT
    }

    /// Grow to at least `bytes` (doubling, to keep the number of permits small).
    fn grow(&mut self, budget: &BodyBudget, bytes: usize) -> Result<(), ApiError> {
        let want = bytes.div_ceil(UNIT).max(self.units * 2);
        let more = want - self.units;
        let permit = u32::try_from(more)
            .ok()
            .and_then(|n| budget.permits.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| budget.busy())?;
        self.permits.push(permit);
        self.units = want;
        Ok(())
    }
}

/// Turn a framework's plain-text or empty error answer into JSON.
async fn json_errors(response: Response, path: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match tokio::time::timeout(
        Duration::from_secs(1),
        http_body_util::Limited::new(body, 4096).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_string(),
        _ => String::new(),
    };
    let message = if !text.is_empty() {
        text
    } else if status == StatusCode::NOT_FOUND {
        format!("no such endpoint: {path}")
    } else if status == StatusCode::METHOD_NOT_ALLOWED {
        format!("method not allowed on {path}")
    } else {
        status.canonical_reason().unwrap_or("error").to_string()
    };
    let mut answer = ApiError::new(status, message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// The whole-request deadline: a handler still working after
/// `server.request_timeout` is dropped and the client gets a `503`.
pub async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.server.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {} (server.request_timeout)",
                humantime::format_duration(limit)
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_by_name_or_name_and_port() {
        let allowed = vec!["ci.example.com".to_string(), "127.0.0.1:9787".to_string()];
        assert!(host_allowed(&allowed, "ci.example.com"));
        assert!(host_allowed(&allowed, "CI.example.com:443"));
        assert!(host_allowed(&allowed, "127.0.0.1:9787"));
        assert!(!host_allowed(&allowed, "127.0.0.1:9788"));
        assert!(!host_allowed(&allowed, "evil.example"));
        assert!(!host_allowed(&allowed, ""));
        assert!(host_allowed(&["[::1]".to_string()], "[::1]:9787"));
    }

    #[test]
    fn basic_and_bearer_tokens_are_read() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), Err(Refusal::Missing));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_token(&h).unwrap(), b"abc");
        // "reader:s3cret" in base64.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic cmVhZGVyOnMzY3JldA=="),
        );
        assert_eq!(presented_token(&h).unwrap(), b"s3cret");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(presented_token(&h), Err(Refusal::Malformed));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert_eq!(presented_token(&h), Err(Refusal::Malformed));
    }
}

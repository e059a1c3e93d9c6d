//! `POST /webhooks/github`: verify, decode, store, then answer.
//!
//! The ladder, in order: no secret configured → 401 (saying so); missing or
//! bad `X-Hub-Signature-256` → 401; no `X-GitHub-Event` or `X-GitHub-Delivery`
//! → 400; `ping` → 200; an event this exporter does not use → 202; a body
//! that does not decode → 400 with the reason; a delivery seen before → 200
//! `duplicate`; otherwise the delivery id and the event's data are stored in
//! one write (all or nothing), and 200 is sent once it is committed.
//! Oversized bodies never get here: 413 from the router's body limit. Nothing
//! is stored for any rejected request. On a shard, a verified event about a
//! repository another shard owns is forwarded to it before anything is stored
//! here (or refused with 421).

use super::{GithubConfig, GithubError, Record, wire};
use crate::http::{ApiError, AppState};
use crate::model::Forge;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Events this exporter reads (other events are acknowledged with 202).
pub const EVENTS: &[&str] = &[
    "status",
    "check_run",
    "check_suite",
    "workflow_run",
    "workflow_job",
    "pull_request",
];

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not sha256=<64 hex digits>")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body (check CI_SLO_GITHUB_WEBHOOK_SECRET)")]
    Mismatch,
}

/// The digest of a `sha256=<64 hex digits>` header, checked for its form
/// only (the server does this before reading the body).
pub fn signature_form(header: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let given = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    Ok(given)
}

/// Check `sha256=<hex>` against HMAC-SHA256(secret, body), in constant time.
pub fn verify_signature(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let given = signature_form(header)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value GitHub would send for `body` (for tests and benchmarks).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Decode one event into records; `Ok(empty)` when the event carries nothing
/// this exporter uses (e.g. a pull request opened).
pub fn records(
    event: &str,
    body: &[u8],
    config: &GithubConfig,
) -> Result<Vec<Record>, GithubError> {
    fn parse<'a, T: serde::Deserialize<'a>>(event: &str, body: &'a [u8]) -> Result<T, GithubError> {
        serde_json::from_slice(body).map_err(|source| GithubError::Malformed {
            event: event.to_string(),
            source,
        })
    }
    Ok(match event {
        "workflow_job" => {
            let e: wire::WorkflowJobEvent = parse(event, body)?;
            vec![super::job_record(
                &e.repository.full_name,
                &e.workflow_job,
                &config.api_url,
                crate::model::Trigger::Other,
            )?]
        }
        "workflow_run" => {
            let e: wire::WorkflowRunEvent = parse(event, body)?;
            vec![super::workflow_run_record(
                &e.repository.full_name,
                &e.workflow_run,
            )]
        }
        "check_run" => {
            let e: wire::CheckRunEvent = parse(event, body)?;
            super::check_run_record(&e.repository.full_name, &e.check_run)?
                .into_iter()
                .collect()
        }
        "check_suite" => {
            // A suite is the sum of its check runs, which arrive on their own.
            let e: wire::CheckSuiteEvent = parse(event, body)?;
            super::check_name(event, "repository", &e.repository.full_name)?;
            Vec::new()
        }
        "status" => {
            let e: wire::StatusEvent = parse(event, body)?;
            let repo = &e.repository.full_name;
            super::check_name(event, "context", &e.status.context)?;
            super::check_name(event, "sha", &e.sha)?;
            let phrases = config.phrases_for(repo);
            match super::cockpit::classify(
                &e.status.state,
                e.status.description.as_deref(),
                phrases,
            ) {
                None => Vec::new(),
                Some(step) => vec![Record::Status {
                    repository: super::repository(repo),
                    commit: e.sha,
                    context: e.status.context,
                    step,
                    at: e.status.created_at,
                    url: e.status.target_url,
                }],
            }
        }
        "pull_request" => {
            let e: wire::PullRequestEvent = parse(event, body)?;
            let pr = e.pull_request;
            match (e.action.as_str(), pr.merged, pr.merged_at) {
                ("closed", Some(true), Some(merged_at)) => {
                    super::check_name(event, "head.sha", &pr.head.sha)?;
                    vec![Record::Merge {
                        repository: super::repository(&e.repository.full_name),
                        number: pr.number,
                        head_sha: pr.head.sha,
                        merged_at,
                    }]
                }
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// The handler of `POST /webhooks/github`.
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let hub = state.hub.clone();
    let event = header(&headers, "x-github-event").unwrap_or("").to_string();
    // Bounded label values: the events we know, ping, or "other".
    let label = if EVENTS.contains(&event.as_str()) || event == "ping" {
        event.as_str()
    } else {
        "other"
    };
    let count = |result: &str| hub.self_metrics.count_webhook("github", label, result);

    let Some(secret) = state.secrets.github_webhook_secret.as_ref() else {
        count("unauthorized");
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "GitHub webhooks are disabled: set CI_SLO_GITHUB_WEBHOOK_SECRET (or secrets.github_webhook_secret_file) on the exporter",
        )
        .into_response();
    };
    if let Err(e) = verify_signature(
        secret.expose().as_bytes(),
        header(&headers, "x-hub-signature-256"),
        &body,
    ) {
        count("unauthorized");
        hub.self_metrics
            .count_auth_rejection("webhooks_github", "invalid");
        tracing::warn!(route = "webhooks_github", reason = %e, "refused a request for its credentials");
        return ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    if event.is_empty() {
        count("rejected");
        return ApiError::new(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header")
            .into_response();
    }
    let Some(delivery) = header(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 200)
        .map(str::to_string)
    else {
        count("rejected");
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing or invalid X-GitHub-Delivery header",
        )
        .into_response();
    };
    if event == "ping" {
        count("accepted");
        return answer(StatusCode::OK, serde_json::json!({ "status": "pong" }));
    }
    if !EVENTS.contains(&event.as_str()) {
        count("ignored");
        return answer(
            StatusCode::ACCEPTED,
            serde_json::json!({ "status": "ignored", "reason": format!("event {event:?} is not used by this exporter") }),
        );
    }
    let records = match records(&event, &body, &state.config.github) {
        Ok(r) => r,
        Err(e) => {
            count("rejected");
            return ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    // One event is about one repository; its owner stores it (docs/scaling.md).
    if let Some(repo) = records.first().map(Record::repository_path)
        && let Some(routed) = state
            .shards
            .route(repo, "/webhooks/github", &headers, &body)
            .await
    {
        count(routed.result());
        return routed.into_response();
    }
    let policy = state.policy.clone();
    let ignored = records.is_empty();
    let event_name = event.clone();
    let result = state
        .store
        .write(move |store| {
            // One write, all or nothing: the delivery id is committed with the
            // event's data, and the answer waits for that commit.
            let now = chrono::Utc::now();
            if !store.record_delivery(Forge::Github, &delivery, &event_name, now)? {
                return Ok(None);
            }
            Ok(Some(super::apply(store, &policy, records, now)?))
        })
        .await;
    match result {
        Ok(None) => {
            count("duplicate");
            answer(StatusCode::OK, serde_json::json!({ "status": "duplicate" }))
        }
        Ok(Some(applied)) => {
            if applied.changed() {
                state.refresh.notify_one();
            }
            // Every record older than what is stored: a replay or a late delivery.
            let stale = applied.stale > 0 && !applied.changed();
            let status = if ignored || stale {
                "ignored"
            } else {
                "accepted"
            };
            count(status);
            let ids: Vec<i64> = applied.runs.iter().map(|(id, ..)| *id).collect();
            let mut body =
                serde_json::json!({ "status": status, "runs": ids, "merges": applied.merges });
            if applied.stale > 0 {
                body["stale"] = applied.stale.into();
                body["reason"] = "older than what is stored for this run: changes nothing".into();
            }
            answer(StatusCode::OK, body)
        }
        Err(e) => {
            count("error");
            ApiError::from(e).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_fail_closed() {
        let body = b"{\"zen\":\"hi\"}";
        let sig = sign(b"s3cret", body);
        assert!(sig.starts_with("sha256=") && sig.len() == 71);
        assert_eq!(verify_signature(b"s3cret", Some(&sig), body), Ok(()));
        assert_eq!(
            verify_signature(b"other", Some(&sig), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", Some(&sig), b"{}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", None, body),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(b"s3cret", Some("sha1=00"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"s3cret", Some("sha256=zz"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"s3cret", Some("sha256=é1"), body),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn hostile_payloads_are_errors_not_panics() {
        let c = GithubConfig::default();
        for event in EVENTS {
            for body in [&b""[..], b"null", b"[]", b"{\"repository\":1}", b"\xff\xfe"] {
                let _ = records(event, body, &c);
            }
        }
        assert!(matches!(
            records("status", b"{", &c),
            Err(GithubError::Malformed { .. })
        ));
    }
}

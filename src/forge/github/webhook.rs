//! GitHub's part of `POST /webhooks/github`: the `X-Hub-Signature-256`
//! check and the decoding of an event into forge-neutral events. The flow around them
//! (the order of the checks, the delivery id, forwarding, storing exactly
//! once, the answers) is the one both forges share, `http::webhooks`.

use super::{GithubConfig, GithubError, wire};
use crate::forge::event::Event;
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

/// Decode one event into forge-neutral events; `Ok(empty)` when the event carries nothing
/// this exporter uses (e.g. a pull request opened).
pub(crate) fn records(
    event: &str,
    body: &[u8],
    config: &GithubConfig,
) -> Result<Vec<Event>, GithubError> {
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
                Some(step) => vec![Event::Status {
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
                    vec![Event::Merge {
                        repository: super::repository(&e.repository.full_name),
                        number: pr.number,
                        head_sha: Some(pr.head.sha),
                        merged_at,
                    }]
                }
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    })
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

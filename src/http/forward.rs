//! Forwarding requests about repositories this shard does not own to the
//! owning shard (`shard = "i/n"` with `shard_urls`, docs/scaling.md), or
//! refusing them with `421 Misdirected Request` naming the owner. Which shard
//! owns a repository is [`crate::shard`]'s pure arithmetic; this is the HTTP
//! part.

use crate::shard::Shard;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Header a shard adds to a request it forwards; a shard that receives a
/// forwarded request for a repository it does not own answers 421 instead of
/// forwarding again (no loops when shards disagree about `n`).
pub const FORWARDED_HEADER: &str = "x-ci-slo-forwarded-by";
/// Header on every answer of a shard-aware endpoint about a repository this
/// shard does not own: the owning shard, `i/n`.
pub const OWNER_HEADER: &str = "x-ci-slo-shard-owner";

/// Routes requests about repositories this shard does not own.
#[derive(Debug, Clone)]
pub struct ShardRouter {
    pub shard: Shard,
    /// Base URLs of the shards in order (`urls[i-1]` is shard `i`); empty:
    /// refuse with 421 instead of forwarding.
    urls: Vec<String>,
    client: Option<reqwest::Client>,
}

impl ShardRouter {
    pub fn new(shard: Shard, urls: &[String]) -> Result<ShardRouter, reqwest::Error> {
        let client = if shard.is_sharded() && !urls.is_empty() {
            Some(crate::forge::http_client(Duration::from_secs(60))?)
        } else {
            None
        };
        Ok(ShardRouter {
            shard,
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            client,
        })
    }

    /// A router that owns everything.
    pub fn unsharded() -> ShardRouter {
        ShardRouter {
            shard: Shard::ALL,
            urls: Vec::new(),
            client: None,
        }
    }

    /// `None` when this shard owns `repository` (handle it here); otherwise
    /// the answer to send: the owner's own answer to the forwarded request
    /// (`path` on the owner, same headers and body), `502` when the owner
    /// cannot be reached, or `421` naming the owner when there is nowhere to
    /// forward to (no `shard_urls`, or the request was already forwarded).
    pub async fn route(
        &self,
        repository: &str,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Routed> {
        if self.shard.owns(repository) {
            return None;
        }
        let owner = self.shard.owner(repository);
        let already_forwarded = headers.contains_key(FORWARDED_HEADER);
        let target = self.urls.get(owner.index() as usize - 1);
        let (Some(client), Some(base), false) = (&self.client, target, already_forwarded) else {
            return Some(Routed::Misdirected(misdirected(
                repository,
                self.shard,
                owner,
                target.map(String::as_str),
            )));
        };
        let url = format!("{base}{path}");
        let mut request = client.post(&url).body(body.clone());
        for (name, value) in headers {
            if !hop_by_hop(name) {
                request = request.header(name, value);
            }
        }
        request = request.header(FORWARDED_HEADER, self.shard.to_string());
        let answer = async {
            let r = request.send().await?;
            let status = r.status();
            let content_type = r.headers().get(header::CONTENT_TYPE).cloned();
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>((status, content_type, body))
        }
        .await;
        Some(match answer {
            Ok((status, content_type, body)) => {
                let status =
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut response = (status, body).into_response();
                if let Some(ct) = content_type {
                    response.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                set_owner(&mut response, owner);
                Routed::Forwarded(response, status)
            }
            Err(e) => {
                tracing::warn!(repository, owner = %owner, url, error = %e, "cannot forward to the owning shard");
                let mut response = super::ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "repository {repository:?} belongs to shard {owner}, which did not answer at {base}: {e}; nothing was stored"
                    ),
                )
                .into_response();
                set_owner(&mut response, owner);
                Routed::Unreachable(response)
            }
        })
    }
}

/// What [`ShardRouter::route`] did with a request this shard does not own.
#[derive(Debug)]
pub enum Routed {
    /// The owner answered (any status); its answer is relayed.
    Forwarded(Response, StatusCode),
    /// The owner could not be reached: 502.
    Unreachable(Response),
    /// Nowhere to forward to: 421 naming the owner.
    Misdirected(Response),
}

impl Routed {
    /// The result label of the webhook and ingest self-metrics.
    pub fn result(&self) -> &'static str {
        match self {
            Routed::Forwarded(..) => "forwarded",
            Routed::Unreachable(_) => "forward_failed",
            Routed::Misdirected(_) => "misdirected",
        }
    }

    pub fn into_response(self) -> Response {
        match self {
            Routed::Forwarded(r, _) | Routed::Unreachable(r) | Routed::Misdirected(r) => r,
        }
    }
}

fn set_owner(response: &mut Response, owner: Shard) {
    if let Ok(v) = HeaderValue::from_str(&owner.to_string()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(OWNER_HEADER), v);
    }
}

fn misdirected(repository: &str, this: Shard, owner: Shard, url: Option<&str>) -> Response {
    let mut body = serde_json::json!({
        "error": format!(
            "repository {repository:?} belongs to shard {owner}, not to this shard {this}; nothing was stored: send it to shard {owner}"
        ),
        "shard": this.to_string(),
        "owner": owner.to_string(),
    });
    if let Some(url) = url {
        body["owner_url"] = url.into();
    }
    let mut response = (StatusCode::MISDIRECTED_REQUEST, axum::Json(body)).into_response();
    set_owner(&mut response, owner);
    response
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "expect"
    )
}

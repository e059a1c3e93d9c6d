//! `POST /webhooks/github` and `POST /webhooks/gitlab`: one flow for both
//! forges. The forge adapters (`forge::github::webhook`,
//! `forge::gitlab::webhook`) only authenticate, name the event and its
//! delivery, and turn a body into what to store; everything else is here, the
//! same for both:
//!
//! 1. credentials (`401`, nothing stored; the server checked that a secret is
//!    configured before reading the body, `http::guard`);
//! 2. the event: an event the exporter does not use answers `202` (counted as
//!    `ignored`), GitHub's `ping` answers `200`;
//! 3. the delivery id (GitHub's `X-GitHub-Delivery` is required: `400`
//!    without it; GitLab's `Idempotency-Key` / `X-Gitlab-Event-UUID` is used
//!    when sent);
//! 4. the body decoded into what to store (`400` with the reason);
//! 5. on a shard, an event about a repository another shard owns is forwarded
//!    to it before anything is stored here (or refused with `421`,
//!    `http::forward`);
//! 6. one write, all or nothing: the delivery id is recorded with the event's
//!    data, a delivery seen before changes nothing (`200` `duplicate`), and the
//!    answer is sent only once the write is committed.
//!
//! Oversized bodies never get here: `413` from the server's limits. Each
//! answer counts once in `ci_exporter_webhook_requests_total{forge,event,result}`.

use super::{ApiError, AppState};
use crate::forge::event::Event;
use crate::forge::github;
use crate::forge::gitlab;
use crate::model::Forge;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The steps both forges share once a delivery is authenticated and decoded:
/// forward to the owning shard, then store it exactly once.
struct Delivery<'a> {
    state: &'a AppState,
    forge: Forge,
    route: &'static str,
    /// The bounded `event` label of the webhook counter.
    label: &'a str,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

impl<'a> Delivery<'a> {
    /// A delivery to `forge`'s `route` whose event header is `event`: its
    /// counter label is the event when `known` says it is used, else
    /// "other" (bounded label values).
    fn new(
        state: &'a AppState,
        forge: Forge,
        route: &'static str,
        event: &'a str,
        known: impl Fn(&str) -> bool,
        headers: &'a HeaderMap,
        body: &'a Bytes,
    ) -> Self {
        Delivery {
            state,
            forge,
            route,
            label: if known(event) { event } else { "other" },
            headers,
            body,
        }
    }

    /// Whether the event is one this exporter does not use.
    fn unused(&self) -> bool {
        self.label == "other"
    }

    /// `202` for an event this exporter does not use (the forge must not retry).
    fn ignore(&self, event: &str) -> Response {
        self.answer(
            "ignored",
            StatusCode::ACCEPTED,
            json!({ "status": "ignored", "reason": format!("event {event:?} is not used by this exporter") }),
        )
    }

    fn count(&self, result: &str) {
        self.state
            .hub
            .self_metrics
            .count_webhook(self.forge.as_str(), self.label, result);
    }

    fn refuse(&self, result: &str, error: ApiError) -> Response {
        self.count(result);
        error.into_response()
    }

    fn answer(&self, result: &str, status: StatusCode, body: Value) -> Response {
        self.count(result);
        (status, Json(body)).into_response()
    }

    /// Forward to the shard that owns `repository`, if that is not this one.
    async fn route(&self, repository: Option<&str>) -> Option<Response> {
        let routed = self
            .state
            .shards
            .route(repository?, self.route, self.headers, self.body)
            .await?;
        self.count(routed.result());
        Some(routed.into_response())
    }

    /// Apply the delivery's events exactly once: in the same write as the
    /// delivery id's record (a delivery seen before changes nothing), the
    /// answer sent once that write is committed. `nothing` says why a valid
    /// event has nothing to store.
    async fn apply(
        &self,
        delivery: Option<String>,
        event: &str,
        events: Vec<Event>,
        nothing: Option<String>,
    ) -> Response {
        let (forge, event) = (self.forge, event.to_string());
        let (clock, policy) = (self.state.clock, self.state.policy.clone());
        let empty = events.is_empty();
        let result = self
            .state
            .store
            .write(move |store| {
                let now = clock.now();
                if let Some(id) = &delivery
                    && !store.record_delivery(forge, id, &event, now)?
                {
                    return Ok(None);
                }
                crate::forge::event::apply(store, &policy, events.clone(), now).map(Some)
            })
            .await;
        let applied = match result {
            Ok(Some(applied)) => applied,
            Ok(None) => {
                return self.answer(
                    "duplicate",
                    StatusCode::OK,
                    json!({ "status": "duplicate" }),
                );
            }
            Err(e) => return self.refuse("error", ApiError::from(e)),
        };
        if applied.changed() {
            self.state.refresh.notify_one();
        }
        // Nothing to store, or every event older than what is stored (a
        // replay or a late delivery).
        let stale = applied.stale > 0 && !applied.changed();
        let result = if empty || stale {
            "ignored"
        } else {
            "accepted"
        };
        let ids: Vec<i64> = applied.runs.iter().map(|(id, ..)| *id).collect();
        let body = match (self.forge, nothing) {
            (Forge::Gitlab, Some(reason)) => json!({ "status": result, "reason": reason }),
            (Forge::Gitlab, None) => match applied.merges.first() {
                Some(n) => json!({ "status": result, "merged": n }),
                None => json!({ "status": result, "runs": ids }),
            },
            // GitHub's answer
            _ => {
                let mut body =
                    json!({ "status": result, "runs": ids, "merges": applied.merges.len() });
                if applied.stale > 0 {
                    body["stale"] = applied.stale.into();
                    body["reason"] =
                        "older than what is stored for this run: changes nothing".into();
                }
                body
            }
        };
        self.answer(result, StatusCode::OK, body)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The handler of `POST /webhooks/github`.
pub async fn github(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let event = header(&headers, "x-github-event").unwrap_or("").to_string();
    let d = Delivery::new(
        &state,
        Forge::Github,
        "/webhooks/github",
        &event,
        |e| github::webhook::EVENTS.contains(&e) || e == "ping",
        &headers,
        &body,
    );
    let Some(secret) = state.secrets.github_webhook_secret.as_ref() else {
        return d.refuse(
            "unauthorized",
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "GitHub webhooks are disabled: set CI_SLO_GITHUB_WEBHOOK_SECRET (or secrets.github_webhook_secret_file) on the exporter",
            ),
        );
    };
    if let Err(e) = github::webhook::verify_signature(
        secret.expose().as_bytes(),
        header(&headers, "x-hub-signature-256"),
        &body,
    ) {
        state
            .hub
            .self_metrics
            .count_auth_rejection("webhooks_github", "invalid");
        tracing::warn!(route = "webhooks_github", reason = %e, "refused a request for its credentials");
        return d.refuse(
            "unauthorized",
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()),
        );
    }
    if event.is_empty() {
        return d.refuse(
            "rejected",
            ApiError::new(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header"),
        );
    }
    let Some(delivery) = header(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 200)
        .map(str::to_string)
    else {
        return d.refuse(
            "rejected",
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing or invalid X-GitHub-Delivery header",
            ),
        );
    };
    if event == "ping" {
        return d.answer("accepted", StatusCode::OK, json!({ "status": "pong" }));
    }
    if d.unused() {
        return d.ignore(&event);
    }
    let events = match github::webhook::records(&event, &body, &state.config.github) {
        Ok(r) => r,
        Err(e) => {
            return d.refuse(
                "rejected",
                ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            );
        }
    };
    // One event is about one repository; its owner stores it (docs/scaling.md).
    if let Some(forwarded) = d.route(repository(&events)).await {
        return forwarded;
    }
    d.apply(Some(delivery), &event, events, None).await
}

/// The repository a delivery is about.
fn repository(events: &[Event]) -> Option<&str> {
    events.first().map(|e| e.repository().path.as_str())
}

/// The handler of `POST /webhooks/gitlab`.
pub async fn gitlab(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let event = header(&headers, "x-gitlab-event")
        .unwrap_or_default()
        .trim()
        .to_string();
    let d = Delivery::new(
        &state,
        Forge::Gitlab,
        "/webhooks/gitlab",
        &event,
        |e| gitlab::webhook::EVENTS.contains(&e),
        &headers,
        &body,
    );
    let token = state
        .secrets
        .gitlab_webhook_token
        .as_ref()
        .map(|s| s.expose());
    if let Err(reason) = gitlab::webhook::authorize(&headers, token) {
        return d.refuse(
            "unauthorized",
            ApiError::new(StatusCode::UNAUTHORIZED, reason),
        );
    }
    if d.unused() {
        return d.ignore(&event);
    }
    let plan = match gitlab::webhook::plan(&event, &body, &state.config.gitlab.relative_root()) {
        Ok(plan) => plan,
        Err(reason) => {
            return d.refuse(
                "rejected",
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid {event}: {reason}"),
                ),
            );
        }
    };
    let (events, nothing) = match plan {
        gitlab::webhook::Plan::Store(events) => (events, None),
        gitlab::webhook::Plan::Nothing(reason) => (Vec::new(), Some(reason)),
    };
    // One delivery is about one project; its owner stores it (docs/scaling.md).
    if let Some(forwarded) = d.route(repository(&events)).await {
        return forwarded;
    }
    let delivery = gitlab::webhook::delivery_id(&headers);
    d.apply(delivery, &event, events, nothing).await
}

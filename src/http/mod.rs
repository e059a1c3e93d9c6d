//! The HTTP server: router, `/metrics`, health, and the JSON API.
//!
//! Handlers are thin: they authenticate, decode, call the store through its
//! writer handle and answer. Errors are JSON `{"error": "..."}` with a status
//! that says whose fault it was.

pub mod api;
pub mod forward;
pub mod guard;
pub mod limits;
pub mod readiness;
pub mod serve;
pub mod test_index;
pub mod text;
pub(crate) mod ui;
pub(crate) mod views;
pub mod webhooks;

use crate::classify::Classifier;
use crate::config::{Config, Secrets};
use crate::metrics::{MetricsHub, expo};
use crate::store::writer::StoreHandle;
use crate::store::{Policy, StoreError};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use tokio::sync::Notify;

/// Everything a handler may need, shared.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub secrets: Arc<Secrets>,
    pub policy: Arc<Policy>,
    pub store: StoreHandle,
    pub hub: Arc<MetricsHub>,
    pub classifier: Arc<Classifier>,
    pub deps: Arc<crate::deps::Extractor>,
    /// Wakes the snapshot refresher after a write.
    pub refresh: Arc<Notify>,
    /// What the server is still preparing (the first snapshot); ready when none.
    pub readiness: Arc<readiness::Readiness>,
    /// Forwards (or refuses) requests about repositories another shard owns.
    pub shards: Arc<forward::ShardRouter>,
    /// The bytes of request bodies being read at once (`guard`).
    pub bodies: Arc<guard::BodyBudget>,
    /// Where "now" comes from (the system clock, or fixed for tests).
    pub clock: crate::clock::Clock,
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/runs", post(api::post_run))
        .route("/api/v1/runs/{id}", get(api::get_run))
        .merge(ui_routes())
        .route("/webhooks/gitlab", post(webhooks::gitlab))
        .route("/webhooks/github", post(webhooks::github))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::deadline,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// The drill-down pages and their JSON (docs/ui.md).
fn ui_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(ui::slos::overview))
        .route("/slos/{slo}", get(ui::slos::slo))
        .route("/slos/{slo}/events", get(ui::slos::slo_events))
        .route("/nightly", get(ui::nightly::nightly))
        .route("/nightly/{repository}", get(ui::nightly::nightly_jobs))
        .route("/failures", get(ui::failures::failures))
        .route(
            "/failures/classes/{class}",
            get(ui::failures::failure_class),
        )
        .route(
            "/failures/fingerprints/{fingerprint}",
            get(ui::failures::failure_fingerprint),
        )
        .route("/tests", get(ui::test_pages::tests_index))
        .route(
            "/tests/{repository}/{context}/{test}",
            get(ui::test_pages::test),
        )
        .route("/runs/{id}", get(ui::run::run))
        .route("/api/v1/runs/{id}/related", get(ui::run::api_run_related))
        .route("/static/app.css", get(ui::css))
        .route("/api/v1/slos", get(ui::slos::api_slos))
        .route("/api/v1/slos/{slo}", get(ui::slos::api_slo))
        .route("/api/v1/slos/{slo}/events", get(ui::slos::api_slo_events))
        .route("/api/v1/nightly", get(ui::nightly::api_nightly))
        .route(
            "/api/v1/nightly/{repository}",
            get(ui::nightly::api_nightly_jobs),
        )
        .route("/api/v1/failures", get(ui::failures::api_failures))
        .route("/api/v1/tests", get(api_tests))
        .route(
            "/api/v1/failures/classes/{class}",
            get(ui::failures::api_failure_class),
        )
        .route(
            "/api/v1/failures/fingerprints/{fingerprint}",
            get(ui::failures::api_failure_fingerprint),
        )
        .route(
            "/api/v1/tests/{repository}/{context}/{test}",
            get(ui::test_pages::api_test),
        )
}

async fn api_tests(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<test_index::TestIndexQuery>,
) -> Result<Json<test_index::TestIndexView>, ApiError> {
    Ok(Json(test_index::test_index(&state, &q).await?))
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    state
        .hub
        .self_metrics
        .count_http_request(&route, response.status().as_u16());
    response
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // Before the first snapshot there is nothing true to serve: a 200 with
    // no `ci_*` series would be a successful scrape saying every series is
    // gone (a replica just restarted behind a load balancer). A 503 is a
    // failed scrape (`up` 0), which says what happened.
    if let Some(phase) = state.readiness.phase() {
        return readiness::starting(&phase);
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let openmetrics = expo::wants_openmetrics(accept);
    // The writer counts its failures; the counter catches up at each scrape.
    state
        .hub
        .self_metrics
        .catch_up_store_write_errors(state.store.write_errors());
    let body = state.hub.render(openmetrics);
    let content_type = if openmetrics {
        expo::OPENMETRICS_CONTENT_TYPE
    } else {
        expo::PROMETHEUS_CONTENT_TYPE
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such page or endpoint: {}", uri.path()),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if let Some(not_ready) = state.readiness.not_ready() {
        return not_ready;
    }
    if state.store.failing() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the last database write failed (see ci_exporter_store_write_errors_total and the log)\n",
        )
            .into_response();
    }
    match state.store.read(|s| s.run_count()).await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readiness: the database is not readable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "database not readable (see the log)\n",
            )
                .into_response()
        }
    }
}

/// An error answer: status plus a reason the client can act on.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error");
        // The database's own message stays in the log.
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage unavailable; retry later (the reason is in the exporter's log)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::metrics::SelfMetrics;
    use readiness::tests::call;

    /// The app takes requests while the first snapshot is built (webhooks
    /// and ingests are stored), but a scrape then gets a 503, not a 200
    /// without the `ci_*` series; once the snapshot is in, the series.
    #[tokio::test]
    async fn metrics_answers_503_until_the_first_snapshot_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default();
        let store = StoreHandle::start(&dir.path().join("ci.db")).unwrap();
        let state = AppState {
            policy: Arc::new(Policy::from_config(&config)),
            classifier: Arc::new(config.classifier().unwrap()),
            deps: Arc::new(config.dependency_extractor().unwrap()),
            config: Arc::new(config),
            secrets: Arc::new(Secrets::default()),
            store,
            hub: Arc::new(MetricsHub::new(SelfMetrics::new())),
            refresh: Default::default(),
            readiness: Arc::new(readiness::Readiness::preparing(
                "building the first metrics snapshot",
            )),
            shards: Arc::new(forward::ShardRouter::new(crate::shard::Shard::ALL, &[]).unwrap()),
            bodies: Arc::new(guard::BodyBudget::new(1 << 20)),
            clock: Clock::system(),
        };
        let app = router(state.clone());

        let (status, body, retry) = call(&app, "/metrics").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("5"));
        assert!(
            body.contains("building the first metrics snapshot"),
            "{body}"
        );

        let config = state.config.clone();
        let snapshot = state
            .store
            .read(move |s| {
                crate::metrics::build_snapshot(
                    s,
                    &config,
                    chrono::Utc::now(),
                    &mut Default::default(),
                )
            })
            .await
            .unwrap();
        state.hub.replace(snapshot);
        state.readiness.set_ready();
        let (status, body, _) = call(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\nci_slo_objective_ratio{"), "{body}");
    }
}

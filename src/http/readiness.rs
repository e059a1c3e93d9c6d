//! Readiness while the server prepares. The port is open from the first
//! moment: while the database opens (a migration of a large one can take
//! minutes) and the first metrics snapshot is built, `/healthz` answers 200,
//! `/readyz` 503 with what is being done, and every other path 503 with
//! `Retry-After`, instead of connections that hang or are refused.

use super::ApiError;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, OnceLock, RwLock};
use tower::ServiceExt;

/// What the server is preparing, or nothing once it is ready.
#[derive(Debug)]
pub struct Readiness {
    phase: RwLock<Option<String>>,
}

impl Readiness {
    /// Not ready: preparing `what`.
    pub fn preparing(what: impl Into<String>) -> Readiness {
        Readiness {
            phase: RwLock::new(Some(what.into())),
        }
    }

    /// Now preparing `what`.
    pub fn set(&self, what: impl Into<String>) {
        *self.phase.write().unwrap_or_else(|p| p.into_inner()) = Some(what.into());
    }

    pub fn set_ready(&self) {
        *self.phase.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// What is being prepared; None when ready.
    pub fn phase(&self) -> Option<String> {
        self.phase.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The `/readyz` answer while preparing.
    pub fn not_ready(&self) -> Option<Response> {
        let phase = self.phase()?;
        Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {phase} (see the log)\n"),
            )
                .into_response(),
        )
    }
}

/// The answer to a request the server cannot serve yet: 503, what it is
/// preparing, and `Retry-After`.
pub fn starting(phase: &str) -> Response {
    let mut answer = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("starting: {phase}; retry shortly"),
    )
    .into_response();
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    answer
}

/// A router that answers for the server until `app` is set (the database is
/// open), then hands every request to `app`.
pub fn gate(readiness: Arc<Readiness>, app: Arc<OnceLock<Router>>) -> Router {
    Router::new().fallback(move |req: Request| {
        let (readiness, app) = (readiness.clone(), app.clone());
        async move {
            if let Some(app) = app.get() {
                return match app.clone().oneshot(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
            }
            match req.uri().path() {
                "/healthz" => "ok\n".into_response(),
                "/readyz" => readiness
                    .not_ready()
                    .unwrap_or_else(|| "ready\n".into_response()),
                _ => starting(&readiness.phase().unwrap_or_default()),
            }
        }
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;

    /// `GET path` of `router`: its status, body and `Retry-After`.
    pub(crate) async fn call(router: &Router, path: &str) -> (StatusCode, String, Option<String>) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), retry)
    }

    #[tokio::test]
    async fn answers_while_preparing_then_hands_over_to_the_app() {
        let readiness = Arc::new(Readiness::preparing("opening the database"));
        let app = Arc::new(OnceLock::new());
        let gate = gate(readiness.clone(), app.clone());

        assert_eq!(call(&gate, "/healthz").await.0, StatusCode::OK);
        let (status, body, _) = call(&gate, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: opening the database (see the log)\n");
        readiness.set("migrating the database from version 9 to 11 (now running migration 10)");
        let (status, body, retry) = call(&gate, "/api/v1/runs/1").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("starting: migrating the database"), "{body}");
        assert_eq!(retry.as_deref(), Some("5"));

        let _ = app.set(Router::new().route("/api/v1/runs/1", get(|| async { "the run" })));
        assert_eq!(
            call(&gate, "/api/v1/runs/1").await,
            (StatusCode::OK, "the run".into(), None)
        );
        // Not the gate's /healthz any more: the app's router answers (here 404).
        assert_eq!(call(&gate, "/healthz").await.0, StatusCode::NOT_FOUND);
    }
}

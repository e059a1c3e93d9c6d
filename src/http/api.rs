//! The JSON API under `/api/v1/`: the generic ingest endpoint and run lookup.

use super::{ApiError, AppState};
use crate::ingest::RunRequest;
use crate::store::{IngestStatus, RunView};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;

/// Check `Authorization: Bearer <token>` against the API token in constant time.
pub fn authorize(headers: &HeaderMap, expected: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the ingest API is disabled: set CI_SLO_API_TOKEN (or secrets.api_token_file) on the exporter",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing Authorization: Bearer <token>",
            )
        })?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid API token"))
    }
}

#[derive(Debug, Serialize)]
pub struct IngestResponse {
    pub id: i64,
    pub status: IngestStatus,
    pub warnings: Vec<String>,
}

/// `POST /api/v1/runs`: 201 when created, 200 for a replay or an update of
/// an unfinished run, 409 for other content of a finished run (nothing changed).
/// Answers only after the run is committed. A run of a repository another
/// shard owns is forwarded there (its answer relayed) or refused with 421.
pub async fn post_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let metrics = &state.hub.self_metrics;
    authorize(
        &headers,
        state.secrets.api_token.as_ref().map(|s| s.expose()),
    )
    .inspect_err(|_| {
        metrics.count_ingest("api", "unauthorized");
    })?;
    let request: RunRequest = serde_json::from_slice(&body).map_err(|e| {
        metrics.count_ingest("api", "rejected");
        ApiError::new(StatusCode::BAD_REQUEST, format!("invalid run: {e}"))
    })?;
    super::limits::check_request(&request, &state.config.server)
        .inspect_err(|_| metrics.count_ingest("api", "rejected"))?;
    // The stored path is the trimmed one (RunRequest::prepare).
    if let Some(routed) = state
        .shards
        .route(request.repository.trim(), "/api/v1/runs", &headers, &body)
        .await
    {
        metrics.count_ingest("api", routed.result());
        return Ok(routed.into_response());
    }
    if let Err(impossible) = crate::ingest::validate::check_times(
        &request,
        state.clock.now(),
        state.config.ingest.max_future_skew,
    ) {
        metrics.count_ingest("api", "rejected");
        let reason = impossible.reason();
        state
            .store
            .write(move |s| s.count_rejection(reason))
            .await?;
        state.refresh.notify_one();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid run: {impossible}"),
        ));
    }
    // Parsing reports and classifying a log is CPU work: off the async workers.
    let (classifier, deps) = (state.classifier.clone(), state.deps.clone());
    let prepared =
        tokio::task::spawn_blocking(move || request.prepare("api", Vec::new(), &classifier, &deps))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the run could not be prepared",
                )
            })?
            .map_err(|e| {
                metrics.count_ingest("api", "rejected");
                ApiError::new(StatusCode::BAD_REQUEST, format!("invalid run: {e}"))
            })?;
    super::limits::check_tests(prepared.run.tests.len(), &state.config.server)
        .inspect_err(|_| metrics.count_ingest("api", "rejected"))?;
    let (policy, now) = (state.policy.clone(), state.clock.now());
    let run = prepared.run;
    let report_bytes = run.reports.iter().map(|r| r.content.len()).sum();
    let bulk = super::limits::is_bulk(run.tests.len(), report_bytes);
    let write = move |s: &mut dyn crate::store::Storage| s.ingest_run(&run, &policy, now);
    let ingested = if bulk {
        state.store.write_bulk(write).await?
    } else {
        state.store.write(write).await?
    };
    let (status, result) = match ingested.status {
        IngestStatus::Created => (StatusCode::CREATED, "created"),
        IngestStatus::Updated => (StatusCode::OK, "updated"),
        IngestStatus::Unchanged => (StatusCode::OK, "unchanged"),
        IngestStatus::Conflict => {
            metrics.count_ingest("api", "conflict");
            // The data-quality counter moved.
            state.refresh.notify_one();
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                conflict_message(ingested.id, &ingested.differing),
            ));
        }
    };
    metrics.count_ingest("api", result);
    if ingested.status != IngestStatus::Unchanged {
        state.refresh.notify_one();
    }
    Ok((
        status,
        Json(IngestResponse {
            id: ingested.id,
            status: ingested.status,
            warnings: prepared.warnings,
        }),
    )
        .into_response())
}

/// Most tests in one `GET /api/v1/runs/{id}` answer; `?tests_offset=`
/// pages through the rest (`tests_total` says how many there are).
pub const API_RUN_TESTS: usize = 10_000;

#[derive(Debug, Default, serde::Deserialize)]
pub struct RunQuery {
    #[serde(default)]
    pub tests_offset: usize,
    #[serde(default)]
    pub tests_limit: Option<usize>,
}

/// The reason of a 409: which fields differ, and how to correct a run.
pub fn conflict_message(id: i64, differing: &[&str]) -> String {
    format!(
        "run {id} is finished and this report differs in: {}; a finished run cannot be changed \
         (to correct it, send the corrected run under a new external_id)",
        differing.join(", ")
    )
}

/// `GET /api/v1/runs/{id}`.
pub async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<RunQuery>,
) -> Result<Json<RunView>, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("run id {id:?} is not a number"),
        )
    })?;
    let slice = crate::store::TestSlice {
        offset: q.tests_offset,
        limit: q.tests_limit.unwrap_or(API_RUN_TESTS).min(API_RUN_TESTS),
        failures_first: false,
        message_chars: usize::MAX,
    };
    match state.store.read(move |s| s.run_slice(id, slice)).await? {
        Some(run) => Ok(Json(run)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run with id {id}"),
        )),
    }
}

//! The filters and options of every page (`UiQuery`), as they appear in the
//! query string: normalisation of empty form fields, the window, the run
//! filter for the store, and the query string carried between pages.

use super::enc;
use crate::http::ApiError;
use crate::store::ui::RunFilter;
use axum::http::StatusCode;
use chrono::Duration;
use serde::Deserialize;

/// The filters and options of every page, as they appear in the query string.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct UiQuery {
    pub repository: Option<String>,
    pub context: Option<String>,
    pub trigger: Option<String>,
    /// A duration like `7d`, `24h`, `2weeks`.
    pub window: Option<String>,
    /// Nightly grid: number of days.
    pub days: Option<u32>,
    /// Nightly grid: `state` (default) or `runtime`.
    pub color: Option<String>,
    /// Failures: one failure class.
    pub class: Option<String>,
    /// Failures: only fingerprints first seen within `ui.new_window` (`1`, `on`, `true`).
    pub new: Option<String>,
    /// Failures: `count` (default) or `last_seen` (the most recent first).
    pub sort: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl UiQuery {
    /// Empty form fields mean "no filter".
    pub(crate) fn normalized(&self) -> UiQuery {
        UiQuery {
            repository: nonempty(&self.repository),
            context: nonempty(&self.context),
            trigger: nonempty(&self.trigger),
            window: nonempty(&self.window),
            days: self.days,
            color: nonempty(&self.color),
            class: nonempty(&self.class),
            new: nonempty(&self.new),
            sort: nonempty(&self.sort),
        }
    }

    /// `?new=1` (or `on`, `true`): only NEW fingerprints.
    pub(crate) fn new_only(&self) -> bool {
        matches!(self.new.as_deref(), Some("1" | "on" | "true" | "yes"))
    }

    pub(crate) fn filter(&self) -> RunFilter {
        RunFilter {
            repository: self.repository.clone(),
            context: self.context.clone(),
            trigger: self.trigger.clone(),
        }
    }

    pub(crate) fn window_or(&self, default: std::time::Duration) -> Result<Duration, ApiError> {
        let d = match &self.window {
            None => default,
            Some(w) => humantime::parse_duration(w).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("window {w:?}: {e} (e.g. 24h, 7d, 4weeks)"),
                )
            })?,
        };
        if d.is_zero() || d > std::time::Duration::from_secs(400 * 86400) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "window must be longer than zero and at most 400 days",
            ));
        }
        Duration::from_std(d)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "window out of range"))
    }

    /// The query string of the filters (repository, context, trigger, window),
    /// starting with `?`, or empty: carried by the navigation between pages.
    pub(crate) fn filter_query(&self) -> String {
        let parts: Vec<String> = [
            ("repository", &self.repository),
            ("context", &self.context),
            ("trigger", &self.trigger),
            ("window", &self.window),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

//! This process's own metrics (`ci_exporter_*`): requests, deliveries,
//! refreshes, forge calls, connections. They start at zero at each restart,
//! as process metrics do, and are read at each scrape.
//!
//! Each family is recorded through a method whose parameters are its labels
//! (`count_webhook(forge, event, result)`), so a label set is spelled in one
//! place and every call site passes the same labels. The values are encoded
//! as [`Family`] values like the snapshot's, so both exposition formats are
//! written directly by `expo` (no re-parsing of text).

use super::expo::{Family, Sample};
use crate::catalog::Kind;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One family: label names fixed at construction, values by label values.
#[derive(Debug)]
struct Live {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl Live {
    const fn new(
        name: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Live {
        Live {
            name,
            kind,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    fn update(&self, values: &[&str], f: impl FnOnce(&mut f64)) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(key).or_insert(0.0));
    }

    fn add(&self, values: &[&str], by: f64) {
        self.update(values, |v| *v += by);
    }

    fn set(&self, values: &[&str], to: f64) {
        self.update(values, |v| *v = to);
    }

    fn get(&self, values: &[&str]) -> f64 {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).copied().unwrap_or(0.0)
    }

    fn family(&self) -> Family {
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let mut samples: Vec<Sample> = map
            .iter()
            .map(|(values, v)| Sample {
                suffix: if self.kind == Kind::Counter {
                    "_total"
                } else {
                    ""
                },
                labels: self
                    .labels
                    .iter()
                    .zip(values)
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                value: *v,
                exemplar: None,
                timestamp_ms: None,
            })
            .collect();
        // A family without labels has its one series from the start.
        if samples.is_empty() && self.labels.is_empty() {
            samples.push(Sample {
                suffix: if self.kind == Kind::Counter {
                    "_total"
                } else {
                    ""
                },
                labels: Vec::new(),
                value: 0.0,
                exemplar: None,
                timestamp_ms: None,
            });
        }
        Family {
            name: format!("ci_exporter_{}", self.name),
            kind: self.kind,
            unit: None,
            help: self.help.to_string(),
            samples,
        }
    }
}

/// Process metrics of this exporter instance.
#[derive(Debug)]
pub struct SelfMetrics {
    http_requests: Live,
    ingested_runs: Live,
    snapshot_refreshes: Live,
    forge_api_requests: Live,
    forge_errors: Live,
    forge_not_modified: Live,
    forge_page_limit: Live,
    forge_rate_limit_remaining: Live,
    forge_rate_limit_limit: Live,
    forge_rate_limit_reset: Live,
    webhook_deliveries: Live,
    http_connections: Live,
    http_connections_refused: Live,
    http_connections_closed: Live,
    auth_rejections: Live,
    store_write_errors: Live,
    series_dropped: Live,
    leader: Live,
}

impl Default for SelfMetrics {
    fn default() -> Self {
        SelfMetrics::new()
    }
}

impl SelfMetrics {
    pub fn new() -> SelfMetrics {
        use Kind::{Counter, Gauge};
        SelfMetrics {
            http_requests: Live::new(
                "http_requests",
                Counter,
                &["route", "status"],
                "HTTP requests served, by route and status code.",
            ),
            ingested_runs: Live::new(
                "ingested_runs",
                Counter,
                &["source", "result"],
                "Runs received by this process, by source and result (created, updated, unchanged, rejected).",
            ),
            snapshot_refreshes: Live::new(
                "snapshot_refreshes",
                Counter,
                &["result"],
                "Rebuilds of the /metrics snapshot, by result.",
            ),
            forge_api_requests: Live::new(
                "forge_api_requests",
                Counter,
                &["forge", "endpoint", "status"],
                "Forge API requests, by forge, endpoint class and HTTP status (or 'error' without a response).",
            ),
            forge_errors: Live::new(
                "forge_errors",
                Counter,
                &["forge", "endpoint", "kind"],
                "Forge API requests that failed without a usable answer, by forge, endpoint class and kind: timeout (no answer or body in time), connect, connection (reset or closed mid-answer), decode (truncated or invalid JSON).",
            ),
            forge_not_modified: Live::new(
                "forge_not_modified",
                Counter,
                &["forge"],
                "Conditional forge API requests answered 304 Not Modified (nothing re-processed).",
            ),
            forge_page_limit: Live::new(
                "forge_page_limit_reached",
                Counter,
                &["forge", "endpoint"],
                "Forge listings cut at the page limit (the rest of the listing not read), by forge and endpoint class.",
            ),
            forge_rate_limit_remaining: Live::new(
                "forge_rate_limit_remaining",
                Gauge,
                &["forge"],
                "Requests left in the forge's current rate-limit window, as last reported.",
            ),
            forge_rate_limit_limit: Live::new(
                "forge_rate_limit_limit",
                Gauge,
                &["forge"],
                "Size of the forge's rate-limit window, as last reported.",
            ),
            forge_rate_limit_reset: Live::new(
                "forge_rate_limit_reset_timestamp_seconds",
                Gauge,
                &["forge"],
                "When the forge's rate-limit window resets (Unix time), as last reported.",
            ),
            webhook_deliveries: Live::new(
                "webhook_deliveries",
                Counter,
                &["forge", "event", "result"],
                "Webhook deliveries by forge, event and result (accepted, duplicate, ignored, rejected, unauthorized).",
            ),
            http_connections: Live::new("http_connections", Gauge, &[], "Open HTTP connections."),
            http_connections_refused: Live::new(
                "http_connections_refused",
                Counter,
                &[],
                "Connections answered 503 and closed because server.max_connections were open.",
            ),
            http_connections_closed: Live::new(
                "http_connections_closed",
                Counter,
                &["reason"],
                "Connections closed by a deadline, by reason: header_timeout (no complete request head in server.header_read_timeout), idle_timeout (server.keep_alive_timeout between requests), request_timeout.",
            ),
            auth_rejections: Live::new(
                "auth_rejections",
                Counter,
                &["route", "reason"],
                "Requests refused for their credentials before their body was read, by route and reason (missing, invalid, malformed, disabled).",
            ),
            store_write_errors: Live::new(
                "store_write_errors",
                Counter,
                &[],
                "Store writes that failed because the database refused or could not commit them (e.g. a full disk); /readyz answers 503 while the last write failed.",
            ),
            series_dropped: Live::new(
                "series_dropped",
                Counter,
                &[],
                "Series left out of /metrics snapshots because the repository-labelled families exceeded metrics.max_series; grows at each snapshot rebuild while the cap is hit.",
            ),
            leader: Live::new(
                "leader",
                Gauge,
                &[],
                "1 while this replica runs the work that must run once (forge polling, settling merged changes, pruning): always with the SQLite store, while it holds the leadership with PostgreSQL; 0 otherwise.",
            ),
        }
    }

    /// One HTTP request answered (`route`: the matched route, bounded).
    pub fn count_http_request(&self, route: &str, status: u16) {
        self.http_requests.add(&[route, &status.to_string()], 1.0);
    }

    pub fn count_ingest(&self, source: &str, result: &str) {
        self.ingested_runs.add(&[source, result], 1.0);
    }

    pub fn count_refresh(&self, result: &str) {
        self.snapshot_refreshes.add(&[result], 1.0);
    }

    /// One forge API call (`status`: the HTTP status, or `error`).
    pub fn count_forge_request(&self, forge: &str, endpoint: &str, status: &str) {
        self.forge_api_requests.add(&[forge, endpoint, status], 1.0);
    }

    /// One forge request that failed without a usable answer.
    pub fn count_forge_error(&self, forge: &str, endpoint: &str, kind: &str) {
        self.forge_errors.add(&[forge, endpoint, kind], 1.0);
    }

    /// One listing cut at the page limit.
    pub fn count_forge_page_limit(&self, forge: &str, endpoint: &str) {
        self.forge_page_limit.add(&[forge, endpoint], 1.0);
    }

    pub fn count_not_modified(&self, forge: &str) {
        self.forge_not_modified.add(&[forge], 1.0);
    }

    /// The rate-limit headers of the forge's last answer (each when sent).
    pub fn set_rate_limit(
        &self,
        forge: &str,
        remaining: Option<f64>,
        limit: Option<f64>,
        reset_unix: Option<f64>,
    ) {
        if let Some(v) = remaining {
            self.forge_rate_limit_remaining.set(&[forge], v);
        }
        if let Some(v) = limit {
            self.forge_rate_limit_limit.set(&[forge], v);
        }
        if let Some(v) = reset_unix {
            self.forge_rate_limit_reset.set(&[forge], v);
        }
    }

    pub fn count_webhook(&self, forge: &str, event: &str, result: &str) {
        self.webhook_deliveries.add(&[forge, event, result], 1.0);
    }

    pub fn connection_opened(&self) {
        self.http_connections.add(&[], 1.0);
    }

    pub fn connection_ended(&self) {
        self.http_connections.add(&[], -1.0);
    }

    pub fn count_connection_refused(&self) {
        self.http_connections_refused.add(&[], 1.0);
    }

    /// A connection closed by a deadline (`reason`: which one).
    pub fn count_connection_cut(&self, reason: &str) {
        self.http_connections_closed.add(&[reason], 1.0);
    }

    /// A request refused for its credentials (route: a bounded route name).
    pub fn count_auth_rejection(&self, route: &str, reason: &str) {
        self.auth_rejections.add(&[route, reason], 1.0);
    }

    /// Bring the write-error counter up to the writer's own count.
    pub fn catch_up_store_write_errors(&self, total: u64) {
        self.store_write_errors
            .update(&[], |v| *v = v.max(total as f64));
    }

    pub fn count_series_dropped(&self, n: u64) {
        self.series_dropped.add(&[], n as f64);
    }

    /// The series dropped so far (for tests and logs).
    pub fn series_dropped(&self) -> f64 {
        self.series_dropped.get(&[])
    }

    /// Whether this replica runs the work that must run once
    /// (`app::leadership`).
    pub fn set_leader(&self, running: bool) {
        self.leader.set(&[], if running { 1.0 } else { 0.0 });
    }

    /// The `ci_exporter_leader` gauge (for tests and logs).
    pub fn leader(&self) -> f64 {
        self.leader.get(&[])
    }

    /// Every family, for encoding.
    pub fn families(&self) -> Vec<Family> {
        [
            &self.http_requests,
            &self.ingested_runs,
            &self.snapshot_refreshes,
            &self.forge_api_requests,
            &self.forge_errors,
            &self.forge_not_modified,
            &self.forge_page_limit,
            &self.forge_rate_limit_remaining,
            &self.forge_rate_limit_limit,
            &self.forge_rate_limit_reset,
            &self.webhook_deliveries,
            &self.http_connections,
            &self.http_connections_refused,
            &self.http_connections_closed,
            &self.auth_rejections,
            &self.store_write_errors,
            &self.series_dropped,
            &self.leader,
        ]
        .into_iter()
        .map(Live::family)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::expo::write_openmetrics;

    #[test]
    fn each_family_carries_its_own_label_names_and_counts_from_zero() {
        let m = SelfMetrics::new();
        m.count_webhook("github", "status", "accepted");
        m.count_webhook("github", "status", "accepted");
        m.count_http_request("/metrics", 200);
        m.connection_opened();
        m.connection_opened();
        m.connection_ended();
        m.set_rate_limit("github", Some(4999.0), Some(5000.0), None);
        m.catch_up_store_write_errors(3);
        m.catch_up_store_write_errors(2);
        let mut out = String::new();
        write_openmetrics(&mut out, &m.families());
        for line in [
            "ci_exporter_webhook_deliveries_total{forge=\"github\",event=\"status\",result=\"accepted\"} 2\n",
            "ci_exporter_http_requests_total{route=\"/metrics\",status=\"200\"} 1\n",
            "ci_exporter_http_connections 1\n",
            "ci_exporter_forge_rate_limit_remaining{forge=\"github\"} 4999\n",
            "ci_exporter_store_write_errors_total 3\n",
            "ci_exporter_http_connections_refused_total 0\n",
            "# TYPE ci_exporter_webhook_deliveries counter\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        assert!(
            !out.contains("ci_exporter_forge_rate_limit_reset_timestamp_seconds{"),
            "a gauge never set has no series"
        );
    }
}

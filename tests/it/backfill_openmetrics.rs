//! History reaches Prometheus as blocks, not as a burst of live events
//! (issue 15): `backfill-openmetrics` writes every counter and histogram
//! family that `/metrics` serves from the store and that the dashboards or
//! rules use, ending on the live values; `scripts/prometheus-init` turns the
//! demo's 30 days into blocks with the recording rules evaluated over them,
//! once; a real Prometheus started on them answers the dashboards' short
//! windows and the 28-day rules.

use crate::common;

use common::{Exporter, agent, free_port};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The labels Prometheus' scrape gives the exporter's series, in the history too.
const TARGET: &str = r#"job="ci-slo-exporter",instance="exporter:9787""#;

/// Counter families of `/metrics` that are not in the store: per-process
/// counters of the running exporter (reset at restart), with no history to
/// write. Dashboards may use them; they start with the first scrape.
const PROCESS_ONLY: &[(&str, &str)] = &[
    ("ci_exporter_http_requests", "requests this process served"),
    ("ci_exporter_ingested_runs", "runs this process received"),
    (
        "ci_exporter_snapshot_refreshes",
        "snapshot rebuilds of this process",
    ),
    (
        "ci_exporter_forge_api_requests",
        "forge API calls of this process",
    ),
    (
        "ci_exporter_forge_errors",
        "forge API failures of this process",
    ),
    (
        "ci_exporter_forge_not_modified",
        "304 answers to this process",
    ),
    (
        "ci_exporter_forge_page_limit_reached",
        "listings this process cut at the page limit",
    ),
    (
        "ci_exporter_webhook_deliveries",
        "webhooks this process received",
    ),
    (
        "ci_exporter_http_connections_refused",
        "connections this process refused beyond its cap",
    ),
    (
        "ci_exporter_http_connections_closed",
        "connections this process closed on a deadline",
    ),
    (
        "ci_exporter_auth_rejections",
        "credentials this process refused",
    ),
    (
        "ci_exporter_store_write_errors",
        "failed writes of this process",
    ),
    (
        "ci_exporter_series_dropped",
        "series this process left out of its snapshots",
    ),
];

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get_json(base: &str, path: &str, params: &[(&str, String)]) -> Value {
    let mut req = agent().get(&format!("{base}{path}"));
    for (k, v) in params {
        req = req.query(*k, v);
    }
    let mut r = req.call().expect("query Prometheus");
    let body = r.body_mut().read_to_string().unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{path} {params:?}: {body}");
    v
}

fn instant(base: &str, query: &str, at: i64) -> Vec<Value> {
    get_json(
        base,
        "/api/v1/query",
        &[("query", query.to_string()), ("time", at.to_string())],
    )["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn range(base: &str, query: &str, start: i64, end: i64, step: i64) -> Vec<Value> {
    get_json(
        base,
        "/api/v1/query_range",
        &[
            ("query", query.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ],
    )["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn value(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

/// Family names (without `_total`/`_bucket`/`_sum`/`_count`) of the raw
/// metrics the dashboards, Grafana alerts and Prometheus rules read.
fn metrics_used() -> BTreeSet<String> {
    let mut text = String::new();
    for dir in [
        "grafana/dashboards",
        "grafana/provisioning/alerting",
        "prometheus/rules",
    ] {
        for e in std::fs::read_dir(Path::new(ROOT).join(dir)).unwrap() {
            text += &std::fs::read_to_string(e.unwrap().path()).unwrap();
        }
    }
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 3 < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && text[i..].starts_with("ci_") {
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(text.len(), |n| i + n);
            let name = &text[i..end];
            // Recording rules (level:metric:operation) are not raw metrics.
            if !name.contains(':') && !name.ends_with('_') {
                let family = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                out.insert(family.to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// `# TYPE` lines of an OpenMetrics text: family -> type.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect()
}

#[test]
fn backfill_writes_every_stored_family_the_dashboards_use_and_prometheus_init_loads_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("demo.db");
    let t0 = Instant::now();
    let e = Exporter::start(d, &db, &["--demo"], &[]);
    eprintln!("[{:.1}s] demo written", t0.elapsed().as_secs_f64());
    let live = e.scrape(true);
    e.stop();

    // --- families: the backfill vs /metrics vs grafana/ and prometheus/ --------
    let until = chrono::Utc::now().timestamp();
    let until_text = chrono::DateTime::from_timestamp(until, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = common::sql::on_engine(&mut Command::new(common::BIN), &db)
        .args([
            "backfill-openmetrics",
            "--db",
            db.to_str().unwrap(),
            "--until",
            &until_text,
            "--instance",
            "exporter:9787",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = String::from_utf8(out.stdout).unwrap();
    let without = common::sql::on_engine(&mut Command::new(common::BIN), &db)
        .args(["backfill-openmetrics", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !without.status.success()
            && String::from_utf8_lossy(&without.stderr).contains("--instance"),
        "the scrape target is required: {}",
        String::from_utf8_lossy(&without.stderr)
    );
    eprintln!("[{:.1}s] backfill-openmetrics", t0.elapsed().as_secs_f64());
    assert!(history.ends_with("# EOF\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("warning"),
        "the demo's events are all counted: {stderr}"
    );
    let written = types(&history);
    let served = types(&live);
    let process: BTreeMap<&str, &str> = PROCESS_ONLY.iter().copied().collect();
    let mut missing = Vec::new();
    for (family, kind) in &served {
        if (kind == "counter" || kind == "histogram")
            && !process.contains_key(family.as_str())
            && written.get(family) != Some(kind)
        {
            missing.push(format!("{family} ({kind}) is served but not backfilled"));
        }
    }
    let used = metrics_used();
    assert!(used.len() > 20, "{used:?}");
    for family in &used {
        match (served.get(family), process.get(family.as_str())) {
            (Some(kind), None) if kind == "counter" || kind == "histogram" => {
                if written.get(family) != Some(kind) {
                    missing.push(format!("{family} ({kind}) is used but not backfilled"));
                }
            }
            (Some(_), _) | (None, Some(_)) => {}
            // Served only with a forge source or after a first sync.
            (None, None)
                if family.starts_with("ci_exporter_forge_rate_limit")
                    || family == "ci_exporter_last_sync_timestamp_seconds" => {}
            (None, None) => missing.push(format!("{family} is used but not served at all")),
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
    for family in [
        "ci_failures",
        "ci_failure_fingerprints_new",
        "ci_change_retries_to_green",
    ] {
        assert!(written.contains_key(family), "{family}");
        let nonzero = history
            .lines()
            .filter(|l| l.starts_with(family))
            .filter(|l| l.rsplit(' ').nth(1).is_some_and(|v| v != "0"))
            .count();
        assert!(nonzero > 10, "{family}: {nonzero} non-zero samples");
    }
    // The recording rules divide by the objectives: they are in the history too.
    assert_eq!(
        written.get("ci_slo_objective_ratio").map(String::as_str),
        Some("gauge")
    );
    // Every stored series ends on its live value.
    let lines: BTreeSet<&str> = history.lines().collect();
    let mut ended = 0;
    for line in live.lines().filter(|l| !l.starts_with('#')) {
        let family = line.split(['{', ' ']).next().unwrap();
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| family.strip_suffix(s))
            .unwrap_or(family);
        if written.contains_key(family) && family != "ci_slo_objective_ratio" {
            // The scrape's labels come first, then the exporter's.
            let series_value = line.split(" # ").next().unwrap();
            let (name, rest) = series_value.split_once('{').unwrap_or_else(|| {
                let (n, v) = series_value.split_once(' ').unwrap();
                (n, v)
            });
            let labelled = if series_value.contains('{') {
                format!("{name}{{{TARGET},{rest}")
            } else {
                format!("{name}{{{TARGET}}} {rest}")
            };
            assert!(
                lines.contains(format!("{labelled} {until}").as_str()),
                "the history of {series_value} does not end there"
            );
            ended += 1;
        }
    }
    assert!(ended > 500, "{ended}");

    // --- scripts/prometheus-init: blocks and recording rules, once ---------------
    let data = d.join("prometheus");
    let init = |data: &Path| {
        // On PostgreSQL with CI_SLO_DATABASE_URL, as the exporter had it.
        let out = common::sql::on_engine(
            &mut Command::new(Path::new(ROOT).join("scripts/prometheus-init")),
            &db,
        )
        .env("CI_SLO_DB", &db)
        .env("PROMETHEUS_DATA", data)
        .env(
            "PROMETHEUS_RULES",
            Path::new(ROOT).join("prometheus/rules/*.yml"),
        )
        .env("CI_SLO_EXPORTER", common::BIN)
        .output()
        .expect("sh runs");
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "prometheus-init failed:\n{log}");
        log
    };
    let log = init(&data);
    eprintln!(
        "[{:.1}s] prometheus-init:\n{log}",
        t0.elapsed().as_secs_f64()
    );
    assert!(log.contains("backfill-rules: 47 recording rules"), "{log}");
    assert_eq!(
        log.contains("the history of the PostgreSQL database"),
        common::on_postgres(),
        "{log}"
    );
    let blocks = |data: &Path| -> BTreeSet<String> {
        std::fs::read_dir(data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect()
    };
    let loaded = blocks(&data);
    assert!(loaded.contains("ci-slo-history-loaded"), "{loaded:?}");
    assert!(
        !loaded.iter().any(|n| n.starts_with('.')),
        "the staging directory is gone: {loaded:?}"
    );
    let marker = std::fs::read_to_string(data.join("ci-slo-history-loaded")).unwrap();
    let until: i64 = chrono::DateTime::parse_from_rfc3339(
        marker
            .split("up to ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap(),
    )
    .unwrap()
    .timestamp();
    let again = init(&data);
    assert!(again.contains("already loaded"), "{again}");
    assert_eq!(blocks(&data), loaded, "a second run changes nothing");
    // A storage a Prometheus already used is left alone.
    let used_dir = d.join("used");
    std::fs::create_dir_all(used_dir.join("wal")).unwrap();
    let skipped = init(&used_dir);
    assert!(skipped.contains("not loading history"), "{skipped}");
    assert_eq!(blocks(&used_dir).len(), 2, "wal and the marker only");

    // --- a real Prometheus on the loaded storage ----------------------------------
    let config = d.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 30s\n").unwrap();
    let port = free_port();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--storage.tsdb.retention.time=35d")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus is installed (Debian package prometheus)"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent()
        .get(&format!("{base}/-/ready"))
        .call()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus not ready: {}",
            std::fs::read_to_string(d.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The counters end where the live ones stood, never went down, and grew.
    let live_runs: f64 = live
        .lines()
        .filter(|l| l.starts_with("ci_runs_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    let at_until = instant(&base, "sum(ci_runs_total)", until);
    assert_eq!(value(&at_until[0]["value"][1]), live_runs);
    // At the 12-hourly keepalive samples (00:00 and 12:00 UTC) every counter
    // has a value; in between only those that changed within 2 minutes.
    let half_days = (until - 30 * 86400) / 43200 * 43200 + 43200;
    let month = range(&base, "sum(ci_runs_total)", half_days, until, 43200);
    let points: Vec<f64> = month[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| value(&p[1]))
        .collect();
    assert!(points.len() >= 59, "two points a day: {}", points.len());
    assert!(points.windows(2).all(|w| w[0] <= w[1]), "never down");
    assert!(
        points[0] < live_runs / 4.0,
        "the month's runs are spread over it: {}",
        points[0]
    );
    for family in [
        "ci_slo_events_total",
        "ci_runs_total",
        "ci_run_duration_seconds_bucket",
    ] {
        let r = instant(&base, &format!("sum(resets({family}[30d]))"), until);
        assert_eq!(value(&r[0]["value"][1]), 0.0, "{family} never resets");
    }

    // The dashboards' short windows: per-interval graphs and heatmaps see the
    // history at Grafana's $__rate_interval for the default 7d and 30d ranges.
    for (window, days, step) in [("10m30s", 7, 600), ("30m30s", 30, 1800)] {
        for q in [
            format!("sum by (le) (increase(ci_run_queue_duration_seconds_bucket[{window}]))"),
            format!("sum by (slo, result) (increase(ci_slo_events_total[{window}]))"),
            format!("sum by (category) (increase(ci_failures_total[{window}]))"),
        ] {
            let r = range(&base, &q, until - days * 86400, until, step);
            let nonzero = r
                .iter()
                .flat_map(|s| s["values"].as_array().unwrap().iter())
                .filter(|p| value(&p[1]) > 0.0)
                .count();
            assert!(nonzero > 20, "{q} over {days}d: {nonzero} non-zero points");
        }
    }

    // The recording rules' history: 28-day windows and the hourly SLIs.
    let hour = until / 3600 * 3600;
    let events28d = instant(&base, "ci:slo_events:increase28d", hour);
    // Every SLO, and the execution events (test_executions); test_success
    // counts the tests it evaluated (from the backfilled ci_slo_tests).
    assert_eq!(events28d.len(), 8, "every SLO: {events28d:?}");
    let test_success = events28d
        .iter()
        .find(|s| s["metric"]["slo"] == "test_success")
        .map(|s| value(&s["value"][1]));
    assert_eq!(
        test_success,
        common::sample(
            &live,
            "ci_slo_window_events{slo=\"test_success\",window=\"28d\"}"
        ),
        "tests evaluated over 28 days: Prometheus as the exporter"
    );
    let stored: f64 = live
        .lines()
        .filter(|l| l.starts_with("ci_slo_window_events{") && l.contains("window=\"28d\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    let recorded: f64 = events28d.iter().map(|s| value(&s["value"][1])).sum();
    eprintln!("28-day SLO events: {recorded:.0} in Prometheus, {stored} in the exporter");
    assert!(
        (recorded / stored - 1.0).abs() < 0.2,
        "Prometheus' 28-day event count ({recorded}) is the exporter's ({stored}) within increase()'s extrapolation"
    );
    for q in [
        "ci:slo_error_budget_remaining:ratio28d",
        "ci_repository:slo_budget_spent_events:ratio28d",
        "ci:slo_burn_rate:ratio_rate3d",
    ] {
        assert!(
            !instant(&base, q, hour).is_empty(),
            "{q} at the last backfilled hour"
        );
    }
    // Hourly points, seen by queries on whole hours (Grafana's steps divide an hour).
    let sli = range(
        &base,
        "ci:slo_sli:ratio_rate1d",
        hour - 7 * 86400,
        hour,
        3600,
    );
    let points = sli
        .iter()
        .map(|s| s["values"].as_array().unwrap().len())
        .max()
        .unwrap_or(0);
    assert!(points >= 160, "a week of hourly 1d SLIs: {points}");
    eprintln!("[{:.1}s] done", t0.elapsed().as_secs_f64());
}

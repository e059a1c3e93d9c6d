//! History reaches Prometheus as blocks, not as a burst of live events:
//! `backfill-openmetrics` → `promtool tsdb create-blocks-from openmetrics` →
//! a real Prometheus started on those blocks answers 30-day range queries, and
//! the backfilled counters end where the live ones stand.

mod common;

use common::{Exporter, agent, free_port, sample};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query_range(base: &str, query: &str, start: i64, end: i64, step: &str) -> serde_json::Value {
    let mut r = agent()
        .get(&format!("{base}/api/v1/query_range"))
        .query("query", query)
        .query("start", start.to_string())
        .query("end", end.to_string())
        .query("step", step)
        .call()
        .expect("query Prometheus");
    let body = r.body_mut().read_to_string().unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{query}: {body}");
    v
}

#[test]
fn backfilled_history_loads_into_prometheus_and_continues_into_the_live_counters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("demo.db");
    let e = Exporter::start(d, &db, &["--demo"], &[]);
    let live = e.scrape(false);
    e.stop();
    let live_runs: f64 = live
        .lines()
        .filter(|l| l.starts_with("ci_runs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(live_runs > 500.0);
    assert!(sample(&live, "ci_exporter_demo_data") == Some(1.0));

    let om = d.join("history.om");
    let out = Command::new(common::BIN)
        .args([
            "backfill-openmetrics",
            "--db",
            db.to_str().unwrap(),
            "--since",
            "30d",
            "--step",
            "1d",
        ])
        .stdout(std::fs::File::create(&om).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&om).unwrap();
    assert!(text.ends_with("# EOF\n"));

    let blocks = d.join("blocks");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&blocks)
        .output()
        .expect("promtool is installed (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool rejected the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let config = d.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let port = free_port();
    let prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", blocks.display()))
            .arg("--storage.tsdb.retention.time=90d")
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

    let now = chrono::Utc::now().timestamp();
    let start = now - 30 * 86400;
    let v = query_range(&base, "sum(ci_runs_total)", start, now, "1d");
    let points = v["data"]["result"][0]["values"]
        .as_array()
        .expect("a series")
        .clone();
    assert!(
        points.len() >= 29,
        "30 days of daily points, got {}",
        points.len()
    );
    let values: Vec<f64> = points
        .iter()
        .map(|p| p[1].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "a counter never goes down: {values:?}"
    );
    assert!(
        values[0] < values[values.len() - 1] / 2.0,
        "the history grows over the month: {values:?}"
    );
    assert_eq!(
        *values.last().unwrap(),
        live_runs,
        "backfill ends where the live counter stands"
    );

    let v = query_range(
        &base,
        "sum(increase(ci_slo_events_total{slo=\"queue_time\"}[2d]))",
        start,
        now,
        "1d",
    );
    let points = v["data"]["result"][0]["values"]
        .as_array()
        .expect("SLI events over the month")
        .len();
    assert!(points >= 25, "{points} points of queue-time events");
    let v = query_range(
        &base,
        "sum(ci_run_queue_duration_seconds_bucket{le=\"300.0\"})",
        start,
        now,
        "1d",
    );
    assert!(
        v["data"]["result"][0]["values"]
            .as_array()
            .is_some_and(|p| p.len() >= 29),
        "histograms too"
    );
    drop(prometheus);
}

//! End-to-end test of the monitoring stack with the real programs on loopback
//! (issues 6 and 15): the exporter on demo data (and polling a fake GitHub),
//! its history loaded into Prometheus by `scripts/prometheus-init`,
//! Prometheus 2.42 with the project's rules scraping the live exporter,
//! Alertmanager 0.25 with the project's email configuration, and an SMTP
//! sink. Debian packages: `prometheus`, `prometheus-alertmanager`,
//! `python3-aiosmtpd`, `python3-yaml`. A missing one fails the test with its
//! name: this test never skips.
//!
//! What it proves (docs/grafana.md, "What the end-to-end test proves"):
//! 1. The first start on a database with 30 days of history (the demo), its
//!    history loaded into Prometheus before Prometheus starts, fires no alert,
//!    and neither does a restart of the exporter. History and live series join
//!    on the same value, without a reset and without a gap.
//! 2. Exemplars reach Prometheus (OpenMetrics scrape) and their `run_id`
//!    resolves with `GET /api/v1/runs/{id}`.
//! 3. A burst of runs that violate the queue-time SLO, ingested through the
//!    API, fires CISLOFastBurn{slo="queue_time"} and nothing else, and
//!    Alertmanager delivers an email naming the SLO, with links.
//! 4. Every PromQL expression of every dashboard panel and every Grafana alert
//!    rule, evaluated as Grafana would over the dashboard's default time range
//!    (template variables substituted, `$__rate_interval` from the range),
//!    parses in Prometheus; at least 95% return data, and each one that does
//!    not is in `EXCEPTIONS` with the reason.
//! 5. The nightly grid's cells are the UTC days of the exporter's /nightly.
//!
//! Test-only deviations from the committed configuration, all made by text
//! substitution that must match exactly (so a change of those files breaks
//! this test instead of silently testing something else):
//! - prometheus.local.yml: scrape and evaluation every 1 s (instead of 30 s /
//!   1 m), loopback ports chosen at run time.
//! - ci-slo-alerts.yml: CISLOFastBurn `for: 5m` becomes `for: 0s`, so that the
//!   test does not wait 5 minutes; every other rule is unchanged. In particular
//!   CIExporterDown keeps `for: 5m`, which is what makes a restart silent.
//! - alertmanager.local.yml: group_wait 1 s instead of 30 s / 1 m, SMTP on the
//!   sink's port.
//!
//! The history is written with the committed scrape interval (30 s), as
//! docker-compose.yml's prometheus-init does.

mod common;
mod fake_github;

use common::{TOKEN, agent, free_port};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Dashboard targets and Grafana alert queries that return nothing on this
/// stack for a real reason: (id, reason). An id is `file / panel title /
/// refId` or `grafana alert / title`. An entry that matches no query, or a
/// query in it that does return data, fails the test (stale list).
const EXCEPTIONS: &[(&str, &str)] = &[(
    "exporter-health.json / Backdated events / A",
    "only history loaded with --history into a database that has served moves it (issue 12): late runs sent to the API count live, and the stack loads no history that way",
)];

/// Share of the expressions that must return data.
const MIN_WITH_DATA: f64 = 0.95;

/// Prometheus' committed scrape interval: Grafana's datasource `timeInterval`,
/// the base of `$__rate_interval`, and the history's sample grid.
const SCRAPE_SECONDS: i64 = 30;

/// Grafana's default `maxDataPoints` for a panel (about its width in pixels).
const MAX_DATA_POINTS: i64 = 1000;

/// The webhook secret the exporter is started with.
const WEBHOOK_SECRET: &str = "stack-e2e-webhook-secret";

// --- processes ------------------------------------------------------------------

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc { name, child, log }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(25);
        format!(
            "--- {} ({}):\n{}",
            self.name,
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    fn stop(&mut self) {
        if !self.running() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A program from a Debian package, or a panic naming the package.
fn require_program(names: &[&str], package: &str) -> PathBuf {
    for name in names {
        for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin"] {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "stack_e2e needs `{}` from the Debian package `{package}`: apt-get install -y {package}",
        names.join("` or `")
    );
}

fn require_python_modules() {
    if !Path::new(PYTHON).is_file() {
        panic!(
            "stack_e2e needs {PYTHON}: apt-get install -y python3 python3-aiosmtpd python3-yaml"
        );
    }
    for (module, package) in [("aiosmtpd", "python3-aiosmtpd"), ("yaml", "python3-yaml")] {
        let ok = Command::new(PYTHON)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "stack_e2e needs the Python module `{module}` for {PYTHON}: apt-get install -y {package}"
        );
    }
}

// --- HTTP helpers -------------------------------------------------------------------

fn get_text(url: &str, query: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent().get(url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    match req.call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

fn get_json(url: &str, query: &[(&str, &str)]) -> Value {
    let (status, body) = get_text(url, query);
    serde_json::from_str(&body)
        .unwrap_or_else(|_| json!({"status": "http", "code": status, "body": body}))
}

/// Replace `from` by `to` in `text`, which must contain it exactly `count` times.
fn replace_exact(text: &str, from: &str, to: &str, count: usize, what: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(
        n, count,
        "{what}: expected {count} occurrence(s) of {from:?}, found {n}; the committed file changed, update tests/stack_e2e.rs"
    );
    text.replace(from, to)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

// --- the stack ------------------------------------------------------------------------

struct Stack {
    dir: PathBuf,
    exporter_port: u16,
    prom: String,
    am: String,
    mail_dir: PathBuf,
    db: PathBuf,
    /// The exporter's configuration file (the fake GitHub source).
    config: PathBuf,
    exporter: Option<Proc>,
    others: Vec<Proc>,
    started: Instant,
}

impl Stack {
    fn exporter_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.exporter_port)
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        if let Some(e) = &self.exporter {
            out += &e.log_tail();
            out += "\n";
        }
        for p in &self.others {
            out += &p.log_tail();
            out += "\n";
        }
        out
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n\n{}", self.logs());
    }

    fn elapsed(&self) -> String {
        format!("{:.1}s", self.started.elapsed().as_secs_f64())
    }

    /// Start (or restart) the exporter on the fixed port with the demo database.
    fn start_exporter(&mut self) {
        let n = self.others.len() + if self.exporter.is_some() { 1 } else { 0 };
        let log = self.dir.join(format!(
            "exporter-{n}-{}.log",
            self.started.elapsed().as_millis()
        ));
        let mut cmd = Command::new(common::BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("serve")
            .arg("--demo")
            .arg("--db")
            .arg(&self.db)
            .arg("--web.listen-address")
            .arg(format!("127.0.0.1:{}", self.exporter_port))
            .current_dir(&self.dir)
            .env("CI_SLO_API_TOKEN", TOKEN)
            .env("CI_SLO_GITHUB_TOKEN", "ghp-stack-e2e")
            .env("CI_SLO_GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("CI_SLO_LOG", "info");
        let mut p = Proc::spawn("ci-slo-exporter", &mut cmd, log);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if !p.running() {
                panic!("exporter exited at start\n{}", p.log_tail());
            }
            if get_text(&format!("{}/readyz", self.exporter_base()), &[]).0 == 200 {
                break;
            }
            if Instant::now() > deadline {
                panic!("exporter not ready within 90 s\n{}", p.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.exporter = Some(p);
    }

    fn stop_exporter(&mut self) {
        if let Some(mut p) = self.exporter.take() {
            p.stop();
        }
    }

    fn query(&self, expr: &str) -> Value {
        get_json(&format!("{}/api/v1/query", self.prom), &[("query", expr)])
    }

    /// The result vector of an instant query that must succeed.
    fn query_ok(&self, expr: &str) -> Vec<Value> {
        let v = self.query(expr);
        if v["status"] != "success" {
            self.fail(&format!("query failed: {expr}\n{v}"));
        }
        match &v["data"]["result"] {
            Value::Array(a) => a.clone(),
            // scalar or string results: one value
            other => vec![json!({"metric": {}, "value": other})],
        }
    }

    /// The result vector of an instant query at `at` (Unix seconds).
    fn query_at(&self, expr: &str, at: i64) -> Vec<Value> {
        let v = get_json(
            &format!("{}/api/v1/query", self.prom),
            &[("query", expr), ("time", &at.to_string())],
        );
        if v["status"] != "success" {
            self.fail(&format!("query failed: {expr}\n{v}"));
        }
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The result matrix of a range query that must succeed.
    fn query_range(&self, expr: &str, start: i64, end: i64, step: i64) -> Vec<Value> {
        let v = get_json(
            &format!("{}/api/v1/query_range", self.prom),
            &[
                ("query", expr),
                ("start", &start.to_string()),
                ("end", &end.to_string()),
                ("step", &step.to_string()),
            ],
        );
        if v["status"] != "success" {
            self.fail(&format!("range query failed: {expr}\n{v}"));
        }
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    fn wait_until(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            if Instant::now() > deadline {
                self.fail(&format!("timed out after {timeout:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Alerts as Prometheus reports them: (alertname, labels, state).
    fn alerts(&self) -> Vec<(String, BTreeMap<String, String>, String)> {
        let v = get_json(&format!("{}/api/v1/alerts", self.prom), &[]);
        if v["status"] != "success" {
            self.fail(&format!("/api/v1/alerts failed: {v}"));
        }
        v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let labels: BTreeMap<String, String> = a["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                (
                    labels.get("alertname").cloned().unwrap_or_default(),
                    labels,
                    a["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// For `period`, poll the alerts: nothing may fire, and CISLOFastBurn
    /// (whose `for` is 0 s here) may not even be pending.
    fn observe_no_alert(&self, phase: &str, period: Duration) {
        let end = Instant::now() + period;
        let mut polls = 0;
        while Instant::now() < end {
            for (name, labels, state) in self.alerts() {
                if state == "firing" || name == "CISLOFastBurn" {
                    self.fail(&format!(
                        "{phase}: alert {name} {labels:?} is {state} (at {})",
                        self.elapsed()
                    ));
                }
            }
            polls += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(polls > 5, "{phase}: observed too briefly");
    }

    fn mails(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.mail_dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "txt"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    fn post_run(&self, body: &Value) -> (u16, String) {
        let mut r = agent()
            .post(&format!("{}/api/v1/runs", self.exporter_base()))
            .header("Content-Type", "application/json")
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .send(body.to_string().as_bytes())
            .expect("POST /api/v1/runs");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    fn exemplar_run_ids(&self, metric: &str) -> BTreeSet<String> {
        let now = chrono::Utc::now().timestamp();
        let start = (now - 45 * 86400).to_string();
        let end = (now + 60).to_string();
        let v = get_json(
            &format!("{}/api/v1/query_exemplars", self.prom),
            &[("query", metric), ("start", &start), ("end", &end)],
        );
        if v["status"] != "success" {
            self.fail(&format!("query_exemplars {metric} failed: {v}"));
        }
        let mut ids = BTreeSet::new();
        for series in v["data"].as_array().unwrap() {
            for ex in series["exemplars"].as_array().unwrap() {
                if let Some(id) = ex["labels"]["run_id"].as_str() {
                    ids.insert(id.to_string());
                }
            }
        }
        ids
    }
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A duration as Grafana and Prometheus write them (`30s`, `10m`, `1d`), in seconds.
fn seconds(text: &str) -> i64 {
    let (n, unit) = text.split_at(text.len() - 1);
    let n: i64 = n.parse().unwrap_or_else(|_| panic!("duration {text}"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => panic!("duration {text}"),
    }
}

/// Grafana's rounding of a computed interval to a "nice" one (rangeutil.roundInterval).
fn round_interval(ms: i64) -> i64 {
    const TABLE: &[(i64, i64)] = &[
        (1_500, 1_000),
        (3_500, 2_000),
        (7_500, 5_000),
        (12_500, 10_000),
        (17_500, 15_000),
        (25_000, 20_000),
        (45_000, 30_000),
        (90_000, 60_000),
        (210_000, 120_000),
        (450_000, 300_000),
        (750_000, 600_000),
        (1_050_000, 900_000),
        (1_500_000, 1_200_000),
        (2_700_000, 1_800_000),
        (5_400_000, 3_600_000),
        (9_000_000, 7_200_000),
        (16_200_000, 10_800_000),
        (32_400_000, 21_600_000),
        (86_400_000, 43_200_000),
        (604_800_000, 86_400_000),
        (1_814_400_000, 604_800_000),
    ];
    TABLE
        .iter()
        .find(|(below, _)| ms < *below)
        .map_or(2_592_000_000, |(_, nice)| *nice)
}

/// One query of a dashboard panel or a Grafana alert rule, as Grafana sends it.
struct GrafanaQuery {
    id: String,
    expr: String,
    instant: bool,
    /// The panel's or target's minimum interval ("interval"), seconds.
    min_interval: Option<i64>,
    max_data_points: i64,
    /// The dashboard's default time range, seconds (alert rules: 600 s, their relativeTimeRange).
    range: i64,
}

impl GrafanaQuery {
    /// The step: the range over maxDataPoints rounded, at least the minimum
    /// interval (the datasource's timeInterval, 30 s, when the panel sets none),
    /// and no more than 11,000 points.
    fn step(&self) -> i64 {
        let computed = round_interval(self.range * 1000 / self.max_data_points) / 1000;
        computed
            .max(self.min_interval.unwrap_or(SCRAPE_SECONDS))
            .max((self.range + 10_999) / 11_000)
            .max(1)
    }

    /// The expression with Grafana's variables replaced: all repositories and
    /// SLOs, the custom variables' defaults, `$__interval` = the step,
    /// `$__rate_interval` = max(step + scrape interval, 4 × scrape interval),
    /// `$__range` = the time range.
    fn promql(&self) -> String {
        let step = self.step();
        let rate = (step + SCRAPE_SECONDS).max(4 * SCRAPE_SECONDS);
        let out = self
            .expr
            .replace("${datasource}", "prometheus")
            .replace("$__rate_interval", &format!("{rate}s"))
            .replace("$__interval", &format!("{step}s"))
            .replace("$__range", &format!("{}s", self.range))
            .replace("$repository", ".*")
            .replace("$window", "1d")
            .replace("$slo", ".*");
        assert!(
            !out.contains('$'),
            "unhandled template variable in {}",
            self.expr
        );
        out
    }
}

/// Every dashboard panel target and Grafana alert query.
fn grafana_queries() -> Vec<GrafanaQuery> {
    let mut out = Vec::new();
    let dir = Path::new(ROOT).join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the six dashboards in {}",
        dir.display()
    );
    fn walk(panels: &Value, file: &str, range: i64, out: &mut Vec<GrafanaQuery>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    let interval = t["interval"].as_str().or(p["interval"].as_str());
                    out.push(GrafanaQuery {
                        id: format!(
                            "{file} / {} / {}",
                            p["title"].as_str().unwrap_or(""),
                            t["refId"].as_str().unwrap_or("")
                        ),
                        expr: expr.to_string(),
                        instant: t["instant"].as_bool() == Some(true),
                        min_interval: interval.filter(|i| !i.is_empty()).map(seconds),
                        max_data_points: p["maxDataPoints"].as_i64().unwrap_or(MAX_DATA_POINTS),
                        range,
                    });
                }
            }
            walk(&p["panels"], file, range, out);
        }
    }
    for f in &files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(d["time"]["to"], "now", "{name}");
        let from = d["time"]["from"].as_str().unwrap();
        let range = seconds(from.strip_prefix("now-").unwrap());
        walk(&d["panels"], &name, range, &mut out);
    }
    let rules_path = Path::new(ROOT).join("grafana/provisioning/alerting/rules.yml");
    let o = Command::new(PYTHON)
        .arg(Path::new(ROOT).join("tests/stack/yaml2json.py"))
        .arg(&rules_path)
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "yaml2json: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rules: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut n = 0;
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            for q in r["data"].as_array().unwrap() {
                if q["datasourceUid"] == "prometheus" {
                    n += 1;
                    assert_eq!(q["model"]["instant"], true, "alert queries are instant");
                    out.push(GrafanaQuery {
                        id: format!("grafana alert / {}", r["title"].as_str().unwrap()),
                        expr: q["model"]["expr"].as_str().unwrap().to_string(),
                        instant: true,
                        min_interval: None,
                        max_data_points: MAX_DATA_POINTS,
                        range: q["relativeTimeRange"]["from"].as_i64().unwrap_or(600),
                    });
                }
            }
        }
    }
    assert!(
        n >= 9,
        "expected a Prometheus query per Grafana alert rule, found {n}"
    );
    out
}

/// A result with at least one sample that is a number (NaN-only is "empty":
/// Grafana draws nothing for it); instant (`value`) or range (`values`).
fn has_data(result: &[Value]) -> bool {
    let number = |v: &Value| {
        let text = v[1].as_str().or_else(|| v.as_str()).unwrap_or("");
        !text.is_empty() && text != "NaN"
    };
    result.iter().any(|s| match s["values"].as_array() {
        Some(points) => points.iter().any(number),
        None => number(&s["value"]),
    })
}

#[test]
fn monitoring_stack_end_to_end() {
    let t0 = Instant::now();
    let prometheus = require_program(&["prometheus"], "prometheus");
    let alertmanager = require_program(
        &["prometheus-alertmanager", "alertmanager"],
        "prometheus-alertmanager",
    );
    require_python_modules();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (smtp_port, am_port, prom_port, exporter_port) =
        (free_port(), free_port(), free_port(), free_port());
    let mut stack = Stack {
        dir: dir.clone(),
        exporter_port,
        prom: format!("http://127.0.0.1:{prom_port}"),
        am: format!("http://127.0.0.1:{am_port}"),
        mail_dir: dir.join("mail"),
        db: dir.join("ci-slo-exporter.db"),
        config: dir.join("ci-slo-exporter.toml"),
        exporter: None,
        others: Vec::new(),
        started: t0,
    };

    // --- SMTP sink --------------------------------------------------------------
    let mut cmd = Command::new(PYTHON);
    cmd.arg(Path::new(ROOT).join("tests/stack/smtp_sink.py"))
        .arg("127.0.0.1")
        .arg(smtp_port.to_string())
        .arg(&stack.mail_dir);
    let sink = Proc::spawn("smtp sink", &mut cmd, dir.join("smtp.log"));
    stack.others.push(sink);
    stack.wait_until("the SMTP sink", Duration::from_secs(20), || {
        std::fs::read_to_string(dir.join("smtp.log"))
            .unwrap_or_default()
            .contains("ready")
    });

    // --- Alertmanager (alertmanager.local.yml on the sink, group_wait 1s) --------
    let am_dir = dir.join("alertmanager");
    copy_dir(
        &Path::new(ROOT).join("alertmanager/templates"),
        &am_dir.join("templates"),
    );
    let am_cfg =
        std::fs::read_to_string(Path::new(ROOT).join("alertmanager/alertmanager.local.yml"))
            .unwrap();
    let am_cfg = replace_exact(
        &am_cfg,
        "'127.0.0.1:2525'",
        &format!("'127.0.0.1:{smtp_port}'"),
        1,
        "alertmanager.local.yml",
    );
    let am_cfg = replace_exact(
        &am_cfg,
        "group_wait: 1m",
        "group_wait: 1s",
        1,
        "alertmanager.local.yml",
    );
    let am_cfg = replace_exact(
        &am_cfg,
        "group_wait: 30s",
        "group_wait: 1s",
        1,
        "alertmanager.local.yml",
    );
    std::fs::write(am_dir.join("alertmanager.yml"), am_cfg).unwrap();
    let mut cmd = Command::new(&alertmanager);
    cmd.arg(format!(
        "--config.file={}",
        am_dir.join("alertmanager.yml").display()
    ))
    .arg(format!("--storage.path={}", am_dir.join("data").display()))
    .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
    .arg(format!("--web.external-url=http://127.0.0.1:{am_port}"))
    // No cluster: no gossip port, no peers.
    .arg("--cluster.listen-address=");
    stack.others.push(Proc::spawn(
        "alertmanager",
        &mut cmd,
        dir.join("alertmanager.log"),
    ));

    // --- a fake GitHub the exporter polls (the forge panels) -------------------------
    let gh = fake_github::start(fake_github::Fake::default());
    gh.fake.merge_pull(
        "acme/forge-sample",
        1,
        9001,
        vec![fake_github::job(9101, "build", "success")],
    );
    gh.fake.schedule_run(
        "acme/forge-sample",
        9002,
        vec![fake_github::job(9102, "nightly", "success")],
    );
    std::fs::write(
        &stack.config,
        format!(
            "[github]\napi_url = \"http://{}\"\nrepositories = [\"acme/forge-sample\"]\n\
             poll_interval = \"2s\"\nschedule_poll_interval = \"2s\"\n",
            gh.addr
        ),
    )
    .unwrap();

    // --- exporter: first start on the 30-day demo history -------------------------
    stack.start_exporter();
    eprintln!(
        "[{}] exporter ready on {}",
        stack.elapsed(),
        stack.exporter_base()
    );
    stack.wait_until(
        "the first poll of the fake GitHub",
        Duration::from_secs(60),
        || {
            let (_, text) = get_text(&format!("{}/metrics", stack.exporter_base()), &[]);
            text.contains("ci_exporter_last_sync_timestamp_seconds{")
                && text.contains("ci_exporter_forge_rate_limit_remaining{")
        },
    );
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let mut r = agent()
        .post(&format!("{}/webhooks/github", stack.exporter_base()))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "ping")
        .header("X-GitHub-Delivery", "stack-e2e-ping-1")
        .header(
            "X-Hub-Signature-256",
            &ci_slo_exporter::forge::github::webhook::sign(WEBHOOK_SECRET.as_bytes(), ping),
        )
        .send(&ping[..])
        .expect("POST /webhooks/github");
    assert!(
        r.status().is_success(),
        "ping: {} {}",
        r.status(),
        r.body_mut().read_to_string().unwrap_or_default()
    );

    // --- the stored history into Prometheus' storage, before Prometheus starts -------
    let prom_dir = dir.join("prometheus");
    let out = Command::new(Path::new(ROOT).join("scripts/prometheus-init"))
        .env("CI_SLO_DB", &stack.db)
        .env("CI_SLO_CONFIG", &stack.config)
        .env("PROMETHEUS_DATA", prom_dir.join("data"))
        .env(
            "PROMETHEUS_RULES",
            Path::new(ROOT).join("prometheus/rules/*.yml"),
        )
        .env("SCRAPE_INTERVAL", format!("{SCRAPE_SECONDS}s"))
        .env("CI_SLO_INSTANCE", format!("127.0.0.1:{exporter_port}"))
        .env("CI_SLO_EXPORTER", common::BIN)
        .env("PROMETHEUS", &prometheus)
        .output()
        .expect("sh runs scripts/prometheus-init");
    let init_log = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        stack.fail(&format!("scripts/prometheus-init failed:\n{init_log}"));
    }
    let marker = std::fs::read_to_string(prom_dir.join("data/ci-slo-history-loaded")).unwrap();
    let history_until = chrono::DateTime::parse_from_rfc3339(
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
    eprintln!("[{}] history loaded:\n{init_log}", stack.elapsed());

    // --- Prometheus (prometheus.local.yml + the rule files, 1 s intervals) ---------
    copy_dir(
        &Path::new(ROOT).join("prometheus/rules"),
        &prom_dir.join("rules"),
    );
    let alerts_path = prom_dir.join("rules/ci-slo-alerts.yml");
    let alerts = std::fs::read_to_string(&alerts_path).unwrap();
    let fast = alerts
        .find("- alert: CISLOFastBurn")
        .expect("CISLOFastBurn in ci-slo-alerts.yml");
    let for_at = fast
        + alerts[fast..]
            .find("for: 5m")
            .expect("CISLOFastBurn has for: 5m");
    assert!(
        !alerts[fast + 1..for_at].contains("- alert:"),
        "the `for: 5m` found belongs to another alert than CISLOFastBurn"
    );
    let alerts = format!(
        "{}for: 0s{}",
        &alerts[..for_at],
        &alerts[for_at + "for: 5m".len()..]
    );
    std::fs::write(&alerts_path, alerts).unwrap();
    let cfg =
        std::fs::read_to_string(Path::new(ROOT).join("prometheus/prometheus.local.yml")).unwrap();
    let what = "prometheus.local.yml";
    let cfg = replace_exact(&cfg, "scrape_interval: 30s", "scrape_interval: 1s", 1, what);
    let cfg = replace_exact(&cfg, "scrape_timeout: 10s", "scrape_timeout: 1s", 1, what);
    let cfg = replace_exact(
        &cfg,
        "evaluation_interval: 1m",
        "evaluation_interval: 1s",
        1,
        what,
    );
    let cfg = replace_exact(
        &cfg,
        "\"127.0.0.1:9787\"",
        &format!("\"127.0.0.1:{exporter_port}\""),
        1,
        what,
    );
    let cfg = replace_exact(
        &cfg,
        "\"127.0.0.1:9093\"",
        &format!("\"127.0.0.1:{am_port}\""),
        1,
        what,
    );
    let cfg = replace_exact(
        &cfg,
        "\"127.0.0.1:9090\"",
        &format!("\"127.0.0.1:{prom_port}\""),
        1,
        what,
    );
    std::fs::write(prom_dir.join("prometheus.yml"), cfg).unwrap();
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!(
        "--config.file={}",
        prom_dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        prom_dir.join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
    // Alert emails link the expression on this URL (the default is the host name).
    .arg(format!("--web.external-url=http://127.0.0.1:{prom_port}"))
    .arg("--enable-feature=exemplar-storage")
    .arg("--storage.tsdb.retention.time=35d");
    stack.others.push(Proc::spawn(
        "prometheus",
        &mut cmd,
        dir.join("prometheus.log"),
    ));

    stack.wait_until("Prometheus ready", Duration::from_secs(60), || {
        get_text(&format!("{}/-/ready", stack.prom), &[]).0 == 200
    });
    stack.wait_until("Alertmanager ready", Duration::from_secs(30), || {
        get_text(&format!("{}/-/ready", stack.am), &[]).0 == 200
    });
    stack.wait_until(
        "Prometheus scraping the exporter and evaluating the rules",
        Duration::from_secs(60),
        || {
            has_data(&stack.query_ok(r#"up{job="ci-slo-exporter"} == 1"#))
                && has_data(&stack.query_ok("ci:slo_burn_rate_threshold:fast"))
                && has_data(&stack.query_ok("count(ci_slo_events_total)"))
        },
    );
    // Prometheus delivers alerts to this Alertmanager.
    stack.wait_until(
        "Prometheus discovering Alertmanager",
        Duration::from_secs(30),
        || {
            let v = get_json(&format!("{}/api/v1/alertmanagers", stack.prom), &[]);
            v["data"]["activeAlertmanagers"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    );
    eprintln!(
        "[{}] Prometheus scrapes the exporter, rules evaluate",
        stack.elapsed()
    );

    // --- 1. first start on 30 days of history: no alert ----------------------------
    stack.observe_no_alert(
        "first start on the 30-day demo history",
        Duration::from_secs(12),
    );
    eprintln!("[{}] first start: no alert", stack.elapsed());

    // --- history and live series join: same values, no reset, no gap, no overlap ----
    let demo = r#"repository!="acme/forge-sample""#;
    let at_until = stack.query_at(
        &format!("sum(ci_slo_events_total{{{demo}}})"),
        history_until,
    );
    let live_now = stack.query_ok(&format!("sum(ci_slo_events_total{{{demo}}})"));
    assert_eq!(
        at_until[0]["value"][1], live_now[0]["value"][1],
        "the last backfilled sample is the live value"
    );
    let now = chrono::Utc::now().timestamp();
    let first_scrape =
        stack.query_range(r#"up{job="ci-slo-exporter"}"#, history_until - 600, now, 1)[0]["values"]
            [0][0]
            .as_f64()
            .unwrap();
    assert!(
        first_scrape > history_until as f64,
        "no live sample before the history ends ({first_scrape} <= {history_until})"
    );
    // From the last backfilled sample on, every series has a value at every
    // second (the first scrape comes within Prometheus' 5-minute lookback).
    let series = stack.query_range(
        &format!("count(ci_slo_events_total{{{demo}}})"),
        history_until,
        now,
        1,
    );
    let counts: Vec<&Value> = series[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p[1])
        .collect();
    assert_eq!(
        counts.len() as i64,
        now - history_until + 1,
        "a value at every second: no gap"
    );
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "the same series throughout: {counts:?}"
    );
    for family in [
        "ci_slo_events_total",
        "ci_runs_total",
        "ci_run_duration_seconds_bucket",
    ] {
        let q = format!("sum(resets({family}[15m])) + sum(increase({family}{{{demo}}}[15m]))");
        let v = stack.query_ok(&q);
        assert_eq!(
            v[0]["value"][1], "0",
            "{family}: no reset and no jump where history meets live"
        );
    }
    eprintln!("[{}] history and live series join", stack.elapsed());

    // --- 2. restart: no alert --------------------------------------------------------
    let before = stack.query_ok(r#"sum(ci_slo_events_total)"#);
    stack.stop_exporter();
    std::thread::sleep(Duration::from_secs(3));
    stack.start_exporter();
    // Up, and its counters scraped again (the failed scrapes while it was
    // down marked them stale; `up` can be seen a moment before they are).
    stack.wait_until(
        "Prometheus scraping the restarted exporter",
        Duration::from_secs(30),
        || {
            has_data(&stack.query_ok(r#"up{job="ci-slo-exporter"} == 1"#))
                && has_data(&stack.query_ok(r#"sum(ci_slo_events_total)"#))
        },
    );
    let after = stack.query_ok(r#"sum(ci_slo_events_total)"#);
    assert_eq!(
        before[0]["value"][1], after[0]["value"][1],
        "counters changed across the restart"
    );
    stack.observe_no_alert("restart of the exporter", Duration::from_secs(12));
    // Any increase a reset or a jump would have caused:
    let resets = stack.query_ok("sum(resets(ci_slo_events_total[5m]))");
    assert_eq!(
        resets[0]["value"][1], "0",
        "a restart must not reset counters"
    );
    assert!(
        stack.mails().is_empty(),
        "emails before the burst:\n{}",
        stack.mails().join("\n")
    );
    eprintln!("[{}] restart: no alert, no email", stack.elapsed());

    // --- exemplars of the demo history resolve to runs ----------------------------
    let mut exemplar_ids = BTreeSet::new();
    for metric in [
        "ci_run_duration_seconds_bucket",
        "ci_run_queue_duration_seconds_bucket",
    ] {
        let ids = stack.exemplar_run_ids(metric);
        if ids.is_empty() {
            stack.fail(&format!(
                "no exemplar with run_id for {metric} in Prometheus"
            ));
        }
        for id in ids.iter().take(15) {
            let (status, body) =
                get_text(&format!("{}/api/v1/runs/{id}", stack.exporter_base()), &[]);
            assert_eq!(
                status, 200,
                "exemplar run_id {id} of {metric} does not resolve: {body}"
            );
        }
        exemplar_ids.extend(ids);
    }
    eprintln!(
        "[{}] {} exemplar run ids, resolved",
        stack.elapsed(),
        exemplar_ids.len()
    );

    // --- 3. burst of SLO-violating runs → CISLOFastBurn → email ---------------------
    let now = chrono::Utc::now();
    let minutes = |m: i64| now - chrono::Duration::minutes(m);
    let mut burst_ids = BTreeSet::new();
    for i in 0..30 {
        // Queued 20 min before it started: bad for queue_time (5 min), good for run_time.
        let body = json!({
            "repository": "acme/web-shop",
            "context": "ci / build",
            "commit": format!("{:040x}", 0xe2e0_0000_u64 + i),
            "external_id": format!("e2e-burst-{i}"),
            "attempt": 0,
            "trigger": "pull_request",
            "state": "success",
            "queued_at": rfc3339(minutes(25)),
            "started_at": rfc3339(minutes(5)),
            "finished_at": rfc3339(minutes(1)),
            "url": format!("https://ci.example.org/e2e/{i}"),
        });
        let (status, text) = stack.post_run(&body);
        assert_eq!(status, 201, "burst run {i}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(id) = v["id"].as_i64() {
            burst_ids.insert(id.to_string());
        } else if let Some(id) = v["id"].as_str() {
            burst_ids.insert(id.to_string());
        }
    }
    // Ordinary traffic that moves the other panels, none of it SLO-violating:
    let extra = [
        // A nightly that failed with a classified log: runs_completed good, a failure class, a fingerprint.
        json!({"repository": "jenkins/nightly-suite", "context": "full-regression", "commit": "e2e0000000000000000000000000000000nightly",
               "external_id": "e2e-nightly", "trigger": "schedule", "state": "failure",
               "queued_at": rfc3339(minutes(50)), "started_at": rfc3339(minutes(49)), "finished_at": rfc3339(minutes(2)),
               "log": "step 4/9: restore cache\nwrite /var/cache/build/obj.tar: No space left on device (e2e)\nBuild step 'Execute shell' marked build as failure\n"}),
        // A cockpit run with tests: test_success events.
        json!({"repository": "cockpit-project/cockpit", "context": "fedora-42", "commit": "e2e00000000000000000000000000000000tests",
               "external_id": "e2e-tests", "trigger": "pull_request", "state": "success",
               "queued_at": rfc3339(minutes(30)), "started_at": rfc3339(minutes(29)), "finished_at": rfc3339(minutes(3)),
               "tests": [{"name": "TestStorage.testLvmRaid", "outcome": "passed", "duration_seconds": 12.5},
                         {"name": "TestNetworking.testBond", "outcome": "passed", "duration_seconds": 8.0}]}),
        // Started before it was queued: refused (400) and counted as a
        // data-quality rejection (negative queue time).
        json!({"repository": "platform/infra/terraform-modules", "context": "lint", "commit": "e2e0000000000000000000000000000000negative",
               "external_id": "e2e-negative", "trigger": "pull_request", "state": "success",
               "queued_at": rfc3339(minutes(10)), "started_at": rfc3339(minutes(12)), "finished_at": rfc3339(minutes(11))}),
        // Three days late: counted when it arrives, like any run new to the store.
        json!({"repository": "platform/infra/terraform-modules", "context": "plan", "commit": "e2e0000000000000000000000000000000backdate",
               "external_id": "e2e-backdated", "trigger": "pull_request", "state": "success",
               "queued_at": rfc3339(minutes(3 * 1440 + 10)), "started_at": rfc3339(minutes(3 * 1440 + 9)), "finished_at": rfc3339(minutes(3 * 1440))}),
    ];
    for body in &extra {
        let (status, text) = stack.post_run(body);
        let expected: &[u16] = if body["external_id"] == "e2e-negative" {
            &[400]
        } else {
            &[201, 200]
        };
        assert!(
            expected.contains(&status),
            "run {}: {status} {text}",
            body["external_id"]
        );
    }
    let burst_done = chrono::Utc::now().timestamp();
    eprintln!(
        "[{}] burst of 30 queue-time violations ingested",
        stack.elapsed()
    );

    stack.wait_until(
        "CISLOFastBurn{slo=\"queue_time\"} firing in Prometheus",
        Duration::from_secs(60),
        || {
            stack.alerts().iter().any(|(name, labels, state)| {
                name == "CISLOFastBurn"
                    && labels.get("slo").is_some_and(|s| s == "queue_time")
                    && state == "firing"
            })
        },
    );
    eprintln!(
        "[{}] CISLOFastBurn{{slo=\"queue_time\"}} fires",
        stack.elapsed()
    );
    let mut mail = String::new();
    stack.wait_until(
        "the CISLOFastBurn email in the SMTP sink",
        Duration::from_secs(60),
        || {
            if let Some(m) = stack
                .mails()
                .into_iter()
                .find(|m| m.contains("CISLOFastBurn"))
            {
                mail = m;
                true
            } else {
                false
            }
        },
    );
    eprintln!("[{}] email delivered", stack.elapsed());
    let subject = mail.lines().next().unwrap_or_default();
    assert!(
        subject.contains("CISLOFastBurn")
            && subject.contains("slo=queue_time")
            && subject.contains("PAGE"),
        "email subject should name the alert, severity and SLO: {subject}"
    );
    assert!(
        mail.contains("Envelope-To: ci-team@ci-slo-exporter.localhost"),
        "recipient:\n{mail}"
    );
    assert!(
        mail.contains("https://github.com/ci-slo-exporter/ci-slo-exporter/blob/main/docs/runbook.md#cislofastburn"),
        "email should link the runbook:\n{mail}"
    );
    assert!(
        mail.contains("<a href=\"http"),
        "the HTML part should carry links:\n{mail}"
    );
    assert!(
        mail.contains(&format!("127.0.0.1:{prom_port}/graph")),
        "email should link the alert's Prometheus expression (generator URL):\n{mail}"
    );
    assert!(
        mail.contains("queue_time events in the last hour were bad"),
        "description:\n{mail}"
    );

    // Nothing else fires, and CISLOFastBurn only for queue_time.
    std::thread::sleep(Duration::from_secs(3));
    for (name, labels, state) in stack.alerts() {
        if state == "firing"
            && !(name == "CISLOFastBurn" && labels.get("slo").is_some_and(|s| s == "queue_time"))
        {
            stack.fail(&format!(
                "unexpected firing alert after the burst: {name} {labels:?}"
            ));
        }
    }
    for m in stack.mails() {
        let subject = m.lines().next().unwrap_or_default();
        assert!(
            subject.contains("CISLOFastBurn slo=queue_time"),
            "unexpected email: {subject}"
        );
    }

    // --- exemplars now include the burst's runs, and resolve ---------------------
    stack.wait_until(
        "exemplars of the burst runs",
        Duration::from_secs(30),
        || {
            stack
                .exemplar_run_ids("ci_run_queue_duration_seconds_bucket")
                .iter()
                .any(|id| burst_ids.contains(id))
        },
    );
    for id in stack
        .exemplar_run_ids("ci_run_queue_duration_seconds_bucket")
        .difference(&exemplar_ids)
    {
        let (status, body) = get_text(&format!("{}/api/v1/runs/{id}", stack.exporter_base()), &[]);
        assert_eq!(status, 200, "exemplar run_id {id} does not resolve: {body}");
    }

    // --- 4. every dashboard and Grafana alert expression -----------------------------
    // Let a few more scrapes land so that short increases cover the ingested runs.
    std::thread::sleep(Duration::from_secs(3));
    // Grafana aligns a range's end down to its step: the live-only panels of
    // the exporter-health dashboard (1-minute step) show a point once a whole
    // minute has passed the first scrape and the burst's counters (ingested
    // runs, the data-quality rejection, the backdated run), as for a user who
    // opens it a minute later.
    let ready_at = ((first_scrape as i64).max(burst_done + 2) / 60 + 1) * 60 + 2;
    while chrono::Utc::now().timestamp() < ready_at {
        std::thread::sleep(Duration::from_millis(250));
    }
    let queries = grafana_queries();
    let exceptions: BTreeMap<&str, &str> = EXCEPTIONS.iter().copied().collect();
    let now = chrono::Utc::now().timestamp();
    let mut empty = Vec::new();
    let mut stale = Vec::new();
    let mut report = Vec::new();
    let mut with_data = 0;
    for q in &queries {
        let promql = q.promql();
        let step = q.step();
        let result = if q.instant {
            stack.query_at(&promql, now)
        } else {
            // Grafana aligns the range to the step.
            stack.query_range(
                &promql,
                (now - q.range) / step * step,
                now / step * step,
                step,
            )
        };
        let data = has_data(&result);
        with_data += usize::from(data);
        match (data, exceptions.contains_key(q.id.as_str())) {
            (false, false) => empty.push(format!("{}\n    {promql}", q.id)),
            (true, true) => stale.push(q.id.clone()),
            _ => {}
        }
        report.push(format!(
            "{:>5} {} ({}, step {step}s)",
            if data { "data" } else { "empty" },
            q.id,
            if q.instant {
                "instant".to_string()
            } else {
                format!("range {}s", q.range)
            }
        ));
    }
    let share = with_data as f64 / queries.len() as f64;
    eprintln!(
        "[{}] {} expressions, {with_data} with data ({:.1}%):\n{}",
        stack.elapsed(),
        queries.len(),
        100.0 * share,
        report.join("\n")
    );
    assert!(
        empty.is_empty(),
        "expressions without data on the demo stack (fix them or add them to EXCEPTIONS with a reason):\n{}",
        empty.join("\n")
    );
    assert!(
        stale.is_empty(),
        "EXCEPTIONS that do return data: {stale:?}"
    );
    let unknown: Vec<&&str> = exceptions
        .keys()
        .filter(|k| !queries.iter().any(|q| q.id == **k))
        .collect();
    assert!(
        unknown.is_empty(),
        "EXCEPTIONS that match no expression: {unknown:?}"
    );
    assert!(
        share >= MIN_WITH_DATA,
        "{:.1}% of the expressions return data, fewer than {:.0}%",
        100.0 * share,
        100.0 * MIN_WITH_DATA
    );

    // The Grafana fast-burn rule agrees with Prometheus': A > 1 for queue_time.
    let fast_rule = queries
        .iter()
        .find(|q| q.id == "grafana alert / CISLOFastBurn")
        .unwrap();
    let fired = stack.query_ok(&fast_rule.promql());
    assert!(
        fired.iter().any(|s| s["metric"]["slo"] == "queue_time"
            && s["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 1.0)),
        "the Grafana CISLOFastBurn query should be above its threshold (1) for queue_time: {fired:?}"
    );
    assert!(
        fired.iter().all(|s| s["metric"]["slo"] == "queue_time"),
        "the Grafana CISLOFastBurn query fires for other SLOs: {fired:?}"
    );

    // --- 5. the nightly grid's days are the UTC days of /nightly ---------------------
    let grid = queries
        .iter()
        .find(|q| {
            q.id == "nightly-grid.json / Nightly result per repository and context, by day / A"
        })
        .expect("the nightly grid panel");
    assert_eq!(grid.step(), 86400, "one point per day");
    let nightly = get_json(
        &format!("{}/api/v1/nightly", stack.exporter_base()),
        &[("days", "30")],
    );
    // The grid counts a run on the UTC day it finished, /nightly on the day it
    // was queued (a nightly may cross midnight, depending on when the demo was
    // generated): check each cell's queue day, then the grid at the run's
    // finish day. A day on which two runs of one job finished (schedule jitter
    // around midnight) has no single expected state and is skipped.
    // Each cell summarises every scheduled run of its repository and day
    // (`jobs`, one per run): each run is compared.
    let rows = nightly["rows"].as_array().expect("/api/v1/nightly rows");
    let mut finished_runs = Vec::new();
    let runs: Vec<(&Value, Value)> = rows
        .iter()
        .flat_map(|r| {
            r["cells"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| !c.is_null())
                .flat_map(move |c| {
                    c["jobs"].as_array().into_iter().flatten().map(move |j| {
                        let mut j = j.clone();
                        j["day"] = c["day"].clone();
                        (r, j)
                    })
                })
        })
        .collect();
    for (row, cell) in &runs {
        let run = get_json(
            &format!("{}/api/v1/runs/{}", stack.exporter_base(), cell["run_id"]),
            &[],
        );
        let day = |field: &str| run[field].as_str().map(|t| t[..10].to_string());
        let Some(queued) = day("queued_at").or(day("started_at")) else {
            continue;
        };
        assert_eq!(
            cell["day"].as_str(),
            Some(queued.as_str()),
            "/nightly's day is the queue day"
        );
        if let Some(finished) = day("finished_at") {
            finished_runs.push((row, cell, queued, finished));
        }
    }
    let mut per_day: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (row, cell, _, finished) in &finished_runs {
        *per_day
            .entry((
                row["repository"].to_string(),
                cell["context"].to_string(),
                finished.clone(),
            ))
            .or_default() += 1;
    }
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for (row, cell, queued, finished) in &finished_runs {
        let key = (
            row["repository"].to_string(),
            cell["context"].to_string(),
            finished.clone(),
        );
        if per_day[&key] != 1 {
            continue;
        }
        let expected = match cell["state"].as_str().unwrap() {
            "success" => "1",
            "failure" => "2",
            _ => "3",
        };
        let midnight = chrono::NaiveDate::parse_from_str(finished, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        let v = stack.query_at(&grid.promql(), midnight);
        let got = v
            .iter()
            .find(|s| {
                s["metric"]["repository"] == row["repository"]
                    && s["metric"]["context"] == cell["context"]
            })
            .map(|s| s["value"][1].as_str().unwrap_or("").to_string());
        if got.as_deref() != Some(expected) {
            mismatches.push(format!(
                "{} {} queued {queued}, finished {finished}: /nightly {} -> {expected}, grid {got:?}",
                row["repository"], cell["context"], cell["state"]
            ));
        }
        compared += 1;
    }
    assert!(compared >= 20, "compared {compared} nightly cells");
    assert!(
        mismatches.is_empty(),
        "nightly grid cells that disagree with the run that finished that day:\n{}",
        mismatches.join("\n")
    );
    eprintln!(
        "[{}] {compared} nightly cells agree with the run that finished that day",
        stack.elapsed()
    );

    eprintln!("[{}] done", stack.elapsed());
    stack.stop_exporter();
    // The other processes stop when `stack` is dropped (Drop of each Proc).
}

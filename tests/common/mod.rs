//! Helpers for tests that run the real binary on a temporary database.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ci-slo-exporter");
pub(crate) const TOKEN: &str = "test-token-5f8a1c";

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run a one-shot command of the binary (on PostgreSQL, see
/// [`on_postgres`], the database standing in for its `--db`).
pub(crate) fn run(args: &[&str], dir: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("CI_SLO_API_TOKEN")
        .env("CI_SLO_LOG", "warn");
    if on_postgres()
        && let Some(i) = args.iter().position(|a| *a == "--db")
        && let Some(db) = args.get(i + 1)
    {
        cmd.env("CI_SLO_DATABASE_URL", database_url(&dir.join(db)));
    }
    cmd.output().expect("binary runs")
}

/// The store the exporter of `db` writes, opened by the test: the SQLite
/// file, or on PostgreSQL ([`on_postgres`]) the database standing in for it.
pub(crate) fn store(db: &Path) -> Box<dyn ci_slo_exporter::store::Storage> {
    if on_postgres() {
        let mut config = postgres::Config::from_str(&database_url(db)).expect("a URL");
        config.options("-c client_min_messages=warning");
        Box::new(
            ci_slo_store_pg::PgStore::open_config(&config, &"test database", &mut |_| {})
                .expect("the test database"),
        )
    } else {
        Box::new(ci_slo_exporter::store::Store::open(db).expect("the SQLite file"))
    }
}

/// Whether the integration tests run the exporter on PostgreSQL
/// (`CI_SLO_TEST_ENGINE=postgres`, see README "Tests") instead of its
/// SQLite default: each `serve` then gets `CI_SLO_DATABASE_URL` of a
/// database of the shared test server (ci_slo_store_pg::testing), one per
/// `--db` path, so a restart on the same path finds the same data.
pub(crate) fn on_postgres() -> bool {
    std::env::var("CI_SLO_TEST_ENGINE").is_ok_and(|v| v == "postgres")
}

/// The PostgreSQL database standing in for the SQLite file `db`, as a URL
/// with the password (the form `CI_SLO_DATABASE_URL` takes).
pub(crate) fn database_url(db: &Path) -> String {
    use ci_slo_store_pg::testing::{TestDatabase, TestServer};
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    static DATABASES: LazyLock<Mutex<HashMap<PathBuf, TestDatabase>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let server = TestServer::shared();
    let mut databases = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    let database = databases.entry(db.to_path_buf()).or_insert_with(|| {
        let hint = db.file_stem().and_then(|s| s.to_str()).unwrap_or("db");
        server.database(hint).expect("a test database")
    });
    server
        .url(database.name())
        .replacen("@", &format!(":{}@", server.password()), 1)
}

/// A client for the tests. Its timeout only keeps a hung exporter from
/// hanging the suite: a 200 k-test ingest on PostgreSQL in a debug build on
/// two loaded cores has taken more than 30 s.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(180)))
        .build()
        .into()
}

/// A running `serve` process, stopped on drop.
pub(crate) struct Exporter {
    child: Child,
    pub base: String,
    pub db: PathBuf,
    pub dir: PathBuf,
    pub stderr_path: PathBuf,
}

impl Exporter {
    pub(crate) fn start(dir: &Path, db: &Path, extra: &[&str], env: &[(&str, &str)]) -> Exporter {
        Self::try_start(dir, db, extra, env).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn try_start(
        dir: &Path,
        db: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Exporter, String> {
        Self::try_start_on(free_port(), dir, db, extra, env)
    }

    /// Start on a port chosen beforehand (e.g. one that other instances' configs name).
    pub(crate) fn try_start_on(
        port: u16,
        dir: &Path,
        db: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Exporter, String> {
        let addr = format!("127.0.0.1:{port}");
        let stderr_path = dir.join(format!("serve-{port}.log"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--db")
            .arg(db)
            .arg("--web.listen-address")
            .arg(&addr)
            .args(extra)
            .current_dir(dir)
            .env_remove("CI_SLO_API_TOKEN")
            .env("CI_SLO_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr);
        if on_postgres() {
            cmd.env("CI_SLO_DATABASE_URL", database_url(db));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn exporter");
        let mut exporter = Exporter {
            child,
            base: format!("http://{addr}"),
            db: db.to_path_buf(),
            dir: dir.to_path_buf(),
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = exporter.child.try_wait() {
                return Err(format!("exporter exited with {status}: {}", exporter.log()));
            }
            if let Ok(mut r) = agent().get(&format!("{}/readyz", exporter.base)).call()
                && r.status() == 200
            {
                let _ = r.body_mut().read_to_string();
                return Ok(exporter);
            }
            if Instant::now() > deadline {
                return Err(format!("exporter not ready in 60 s: {}", exporter.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        let mut r = agent()
            .get(&format!("{}{path}", self.base))
            .call()
            .expect("GET");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    pub(crate) fn scrape(&self, openmetrics: bool) -> String {
        let mut req = agent().get(&format!("{}/metrics", self.base));
        if openmetrics {
            req = req.header(
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            );
        }
        let mut r = req.call().expect("scrape");
        assert_eq!(r.status(), 200);
        r.body_mut().read_to_string().expect("body")
    }

    pub(crate) fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let mut req = agent()
            .post(&format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut r = req.send(body).expect("POST");
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Wait until `f` holds on a scrape (the snapshot is rebuilt shortly after writes).
    pub(crate) fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.scrape(false);
            if f(&text) {
                return text;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last scrape:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop with SIGTERM and wait.
    pub(crate) fn stop(mut self) {
        let _ = self.terminate();
    }

    /// Stop with SIGTERM; how the process exited (None: still running
    /// after 10 s, then killed).
    pub(crate) fn stop_status(mut self) -> Option<std::process::ExitStatus> {
        self.terminate()
    }

    /// Kill with SIGKILL (no chance to clean up) and wait.
    pub(crate) fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.id() as i32;
        // SAFETY-free: use the kill command to send SIGTERM.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
    }
}

/// The value of the sample `name{labels}` in a Prometheus text exposition,
/// where `labels` must match exactly (in order, as the exporter writes them).
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        let value = value.split(' ').next()?;
        Some(match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().ok()?,
        })
    })
}

/// Lines of the persisted families (counters and histograms), for comparing scrapes.
pub(crate) fn persisted_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            [
                "ci_runs_total",
                "ci_merged_changes_total",
                "ci_slo_events_total",
                "ci_failures_total",
                "ci_run_",
                "ci_change_retries",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

pub(crate) fn read_stream(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// `promtool check metrics` on an exposition: (clean, what it printed).
pub(crate) fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Debian's python3, which has the packages the tests install
/// (python3-prometheus-client, python3-aiosmtpd), else whatever is on PATH.
pub(crate) fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Log lines written on this thread at warn and above, while the guard lives.
pub(crate) fn capture_logs() -> (
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    tracing::subscriber::DefaultGuard,
) {
    struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>> = Default::default();
    let b = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || Logs(b.clone()))
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

/// The value of an in-process self-metric sample with exactly these labels.
pub(crate) fn self_metric(
    hub: &ci_slo_exporter::metrics::MetricsHub,
    family: &str,
    labels: &[(&str, &str)],
) -> f64 {
    hub.self_metrics
        .families()
        .into_iter()
        .filter(|f| f.name == family)
        .flat_map(|f| f.samples)
        .filter(|s| {
            s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
        .sum()
}

/// SQL on the store behind a test's exporter, on either engine.
pub(crate) mod sql;

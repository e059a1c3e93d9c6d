//! Shared by the benches (`#[path = "support/mod.rs"] mod support;`): a
//! generator of large databases written directly with rusqlite, and the
//! release binary started on one.
#![allow(dead_code)]

pub(crate) mod cockpit;
pub(crate) mod test_history;

use ci_slo_exporter::store::Store;
use rusqlite::params;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ci-slo-exporter");
pub(crate) const DAY_MS: i64 = 86_400_000;
pub(crate) const REPOS: usize = 100;
const CONTEXTS: [&str; 3] = ["build", "test", "e2e"];

/// What [`generate`] writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub runs: usize,
    /// Test results per run of a repository with tests.
    pub tests_per_run: usize,
    /// Every `tests_every`-th repository has tests (1: all).
    pub tests_every: usize,
}

/// Write a database of `spec.runs` runs over the year before `now_ms`, after
/// the real migrations (so the UI's triggers fill their tables).
pub(crate) fn generate(path: &Path, spec: Spec, now_ms: i64) {
    let Spec {
        runs,
        tests_per_run,
        tests_every,
    } = spec;
    let _ = std::fs::remove_file(path);
    let store = Store::open(path).expect("create database");
    let conn = store.connection();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut repo = conn
            .prepare("INSERT INTO repositories (id, forge, path) VALUES (?1, ?2, ?3)")
            .unwrap();
        for i in 0..REPOS {
            let forge = match i % 10 {
                0..=5 => "github",
                6..=8 => "gitlab",
                _ => "generic",
            };
            repo.execute(params![
                i as i64 + 1,
                forge,
                format!("org{}/repo-{i}", i % 7)
            ])
            .unwrap();
        }
        let mut fp = conn
            .prepare("INSERT INTO fingerprints (id, hash, normalized, first_seen, last_seen, occurrences) VALUES (?1, ?2, ?3, ?4, ?5, 0)")
            .unwrap();
        for i in 0..500i64 {
            fp.execute(params![
                i + 1,
                format!("{:016x}", i * 7919 + 12345),
                format!("error number {i}: something went wrong in <module>"),
                now_ms - 365 * DAY_MS + (i * 17 % 365) * DAY_MS,
                now_ms
            ])
            .unwrap();
        }
        let mut run = conn
            .prepare(
                "INSERT INTO runs (id, repository_id, context, commit_sha, attempt, trigger_code, state_code, queued_at, started_at,
                   finished_at, stored_url, log_url, source_code, content_digest, created_at, updated_at, queue_counted, final_counted)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10, NULL, 'bench', 'x', ?9, ?9, 1, 1)",
            )
            .unwrap();
        let mut test = conn
            .prepare(
                "INSERT INTO test_results (run_id, name, outcome, duration_seconds, retries, retry_reasons, message)
                 VALUES (?1, ?2, ?3, 1.5, ?4, '[]', ?5)",
            )
            .unwrap();
        let mut failure = conn
            .prepare(
                "INSERT INTO failures (run_id, test_name, class, category, line, evidence, context, fingerprint_id)
                 VALUES (?1, ?2, ?3, 'infrastructure', 12, ?4, '[]', ?5)",
            )
            .unwrap();
        let mut event = conn
            .prepare(
                "INSERT INTO run_events (run_id, repository_id, queue_at, queue_good, run_time_at, run_time_good)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .unwrap();
        let mut dep = conn
            .prepare(
                "INSERT INTO dependency_snapshots (run_id, package, version) VALUES (?1, ?2, ?3)",
            )
            .unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let span = 365 * DAY_MS;
        // Nightlies: one per repository per day, the rest pull requests and pushes.
        let nightly = (REPOS * 365).min(runs / 20);
        for id in 1..=runs as i64 {
            let (repo, context, trigger, queued) = if (id as usize) <= nightly {
                let n = id as usize - 1;
                let repo = n % REPOS + 1;
                let day = (n / REPOS) as i64;
                let days = (nightly / REPOS).max(1) as i64;
                let at = now_ms - (days - day) * DAY_MS + 2 * 3_600_000 + rng.i64(0..600_000);
                (repo as i64, "nightly", "schedule", at)
            } else {
                let repo = rng.usize(1..=REPOS) as i64;
                let context = CONTEXTS[rng.usize(0..3)];
                let trigger = if rng.u8(0..10) == 0 {
                    "push"
                } else {
                    "pull_request"
                };
                (repo, context, trigger, now_ms - span + rng.i64(0..span))
            };
            let roll = rng.u8(0..100);
            let state = match roll {
                0..=11 => "failure",
                12..=14 => "error",
                _ => "success",
            };
            let started = queued + rng.i64(5_000..600_000);
            let finished = started + rng.i64(300_000..4_000_000);
            run.execute(params![
                id,
                repo,
                context,
                format!("{:040x}", rng.u64(..)),
                trigger,
                state,
                queued,
                started,
                finished,
                format!("https://ci.example.com/run/{id}")
            ])
            .unwrap();
            event
                .execute(params![
                    id,
                    repo,
                    started,
                    (started - queued < 300_000) as i64,
                    finished,
                    (finished - started < 3_600_000) as i64
                ])
                .unwrap();
            let with_tests = (repo as usize).is_multiple_of(tests_every);
            if with_tests {
                for t in 0..tests_per_run {
                    let failed = state == "failure" && t == (id as usize) % tests_per_run;
                    test.execute(params![
                        id,
                        format!("suite.Test{t}"),
                        if failed { "failed" } else { "passed" },
                        (t == 3 && rng.u8(0..20) == 0) as i64,
                        failed.then_some("assertion failed: expected 200, got 500")
                    ])
                    .unwrap();
                }
            }
            if state != "success" {
                let f = rng.i64(1..=500);
                failure
                    .execute(params![
                        id,
                        with_tests.then(|| format!("suite.Test{}", (id as usize) % tests_per_run)),
                        format!("class-{}", f % 12),
                        format!(
                            "error number {f}: something went wrong in <module> at line {}",
                            rng.u32(1..999)
                        ),
                        f
                    ])
                    .unwrap();
            }
            if trigger == "schedule" {
                for (p, v) in [
                    ("urllib3", "2.2.3"),
                    ("requests", "2.32.3"),
                    ("sqlalchemy", "2.0.36"),
                ] {
                    let v = if rng.u8(0..30) == 0 { "9.9.9" } else { v };
                    dep.execute(params![id, p, v]).unwrap();
                }
            }
        }
    }
    conn.execute_batch("COMMIT").unwrap();
}

pub(crate) struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Stop the exporter as a service manager would (SIGTERM) and wait for it.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the release binary on `db` with `env`, and wait until it is ready.
pub(crate) fn serve(db: &Path, env: &[(&str, &str)]) -> Server {
    serve_with(BIN, db, env)
}

/// [`serve`] with another build of the exporter (a baseline).
pub(crate) fn serve_with(bin: &str, db: &Path, env: &[(&str, &str)]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["serve", "--db"])
        .arg(db)
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .env("CI_SLO_LOG", "warn")
        .env_remove("CI_SLO_API_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start exporter");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(300);
    while get(&base, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "exporter not ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    Server { child, base }
}

/// GET `path`: status and body length (status 0 when the request failed).
pub(crate) fn get(base: &str, path: &str) -> (u16, usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    match agent.get(&format!("{base}{path}")).call() {
        Ok(mut r) => {
            let mut body = String::new();
            let _ = r.body_mut().as_reader().read_to_string(&mut body);
            (r.status().as_u16(), body.len())
        }
        Err(_) => (0, 0),
    }
}

/// Median milliseconds of `n` requests after a warm-up.
pub(crate) fn time(base: &str, path: &str, n: usize) -> f64 {
    let (status, _) = get(base, path);
    assert_eq!(status, 200, "{path}");
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            get(base, path);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    ms[n / 2]
}

/// A numeric knob from the environment, else `default`.
pub(crate) fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0..=1) of sorted values, nearest rank; NaN when empty.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A field of /proc/PID/status in kB (`VmRSS`, `RssAnon`, `RssFile`, `RssShmem`).
pub(crate) fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// POST every one of `bodies` to `/api/v1/runs` of the servers at `bases`
/// with `token`, `clients` threads per server, each taking the next body in
/// turn; panics on any answer but 201. Returns once all are answered.
pub(crate) fn post_runs(
    bases: &[&str],
    clients: usize,
    bodies: std::sync::Arc<Vec<String>>,
    token: &str,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = bases
        .iter()
        .flat_map(|base| std::iter::repeat_n(base.to_string(), clients))
        .map(|base| {
            let (bodies, next, auth) = (bodies.clone(), next.clone(), format!("Bearer {token}"));
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(600)))
                    .build()
                    .into();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= bodies.len() {
                        break;
                    }
                    let status = agent
                        .post(&format!("{base}/api/v1/runs"))
                        .header("Authorization", &auth)
                        .header("Content-Type", "application/json")
                        .send(bodies[i].as_str())
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    assert_eq!(status, 201, "run {i} not created");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

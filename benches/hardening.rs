//! Issue 19's figures, each next to a baseline of the same run:
//!
//! 1. **unauthenticated bodies**: RSS of the exporter while 40 clients each
//!    POST a 10.5 MB body to `/api/v1/runs` without a token, next to its RSS
//!    before them; how long until each got its answer;
//! 2. **connections held**: `/healthz` and `/metrics` p50/p99 while N idle and
//!    slow-header connections are open (default 2,000), next to the same with
//!    none open;
//! 3. **small ingests behind large ones**: latency of small runs posted while
//!    three large runs (BENCH_LARGE_TESTS tests each, default 60,000) are
//!    written, next to the same small runs with nothing else going on.
//!
//! Run:
//!
//!     cargo bench --bench hardening
//!     BENCH_BIN=/path/to/other/ci-slo-exporter cargo bench --bench hardening   # another build
//!
//! Set BENCH_BIN to compare with another build of the exporter (e.g. the
//! commit before issue 19).

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{env_num, percentile, status_kb};

const TOKEN: &str = "bench-token";

struct Exporter {
    child: Child,
    base: String,
    addr: String,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, config: &str) -> Exporter {
    let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| support::BIN.to_string());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = dir.join(format!("c{port}.toml"));
    std::fs::write(&c, config).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .arg("--config")
        .arg(&c)
        .args(["serve", "--db"])
        .arg(dir.join(format!("s{port}.db")))
        .args(["--web.listen-address", &addr])
        .env("CI_SLO_LOG", "error")
        .env("CI_SLO_API_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start exporter");
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while support::get(&base, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "exporter not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    Exporter { child, base, addr }
}

fn rss_mb(pid: u32) -> f64 {
    status_kb(pid, "VmRSS").unwrap_or(0) as f64 / 1024.0
}

fn post(base: &str, body: &[u8]) -> (u16, Duration) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let started = Instant::now();
    let status = match agent
        .post(&format!("{base}/api/v1/runs"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(body)
    {
        Ok(mut r) => {
            let _ = r.body_mut().read_to_string();
            r.status().as_u16()
        }
        Err(_) => 0,
    };
    (status, started.elapsed())
}

fn unauthenticated_bodies(dir: &std::path::Path) {
    let clients = env_num("BENCH_ATTACKERS", 40usize);
    let size = 10_500_000usize;
    let e = start(dir, "[server]\nmax_body_bytes = 11534336\n");
    let pid = e.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_mb(pid);
    let body = std::sync::Arc::new(vec![b'x'; size]);
    let peak = std::sync::Arc::new(std::sync::Mutex::new(before));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let r = rss_mb(pid);
                let mut p = peak.lock().unwrap();
                *p = p.max(r);
                drop(p);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let attackers: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, body) = (e.addr.clone(), body.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                let t = Instant::now();
                let head = format!(
                    "POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes());
                // Send the body as fast as the server takes it, while reading
                // its answer on the side.
                let mut reader = s.try_clone().unwrap();
                let answer = std::thread::spawn(move || {
                    let mut buf = [0u8; 512];
                    let n = reader.read(&mut buf).unwrap_or(0);
                    (String::from_utf8_lossy(&buf[..n]).to_string(), t.elapsed())
                });
                let _ = s.write_all(&body);
                answer.join().unwrap()
            })
        })
        .collect();
    let answers: Vec<(String, Duration)> =
        attackers.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = *peak.lock().unwrap();
    let refused = answers
        .iter()
        .filter(|(a, _)| a.starts_with("HTTP/1.1 401"))
        .count();
    let mut waits: Vec<f64> = answers.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect();
    waits.sort_by(f64::total_cmp);
    println!(
        "unauthenticated bodies: {clients} clients x {:.1} MB: RSS {before:.0} MB before (baseline), peak {peak:.0} MB during (+{:.0} MB); {refused}/{clients} answered 401, time to answer p50 {:.1} ms, max {:.1} ms; all done in {:.2} s",
        size as f64 / 1e6,
        peak - before,
        percentile(&waits, 0.5),
        percentile(&waits, 1.0),
        elapsed.as_secs_f64()
    );
}

fn probe(base: &str, n: usize) -> (f64, f64, f64, f64) {
    let mut h = Vec::new();
    let mut m = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        assert_eq!(support::get(base, "/healthz").0, 200);
        h.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        assert_eq!(support::get(base, "/metrics").0, 200);
        m.push(t.elapsed().as_secs_f64() * 1e3);
    }
    h.sort_by(f64::total_cmp);
    m.sort_by(f64::total_cmp);
    (
        percentile(&h, 0.5),
        percentile(&h, 0.99),
        percentile(&m, 0.5),
        percentile(&m, 0.99),
    )
}

fn connections_held(dir: &std::path::Path) {
    let _ = rlimit::increase_nofile_limit(65536);
    let n = env_num("BENCH_CONNECTIONS", 2000usize);
    let e = start(dir, "[server]\nheader_read_timeout = \"60s\"\n");
    let (h50, h99, m50, m99) = probe(&e.base, 100);
    let mut held = Vec::with_capacity(n);
    let opened = Instant::now();
    for i in 0..n {
        let Ok(mut s) = TcpStream::connect(&e.addr) else {
            break;
        };
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        }
        held.push(s);
    }
    let open_s = opened.elapsed().as_secs_f64();
    let (lh50, lh99, lm50, lm99) = probe(&e.base, 100);
    let rss = rss_mb(e.child.id());
    println!(
        "connections held: {} idle/slow-header connections open (opened in {open_s:.2} s), exporter RSS {rss:.0} MB",
        held.len()
    );
    println!(
        "  /healthz p50/p99 {lh50:.2}/{lh99:.2} ms (baseline with none held: {h50:.2}/{h99:.2} ms)"
    );
    println!(
        "  /metrics p50/p99 {lm50:.2}/{lm99:.2} ms (baseline with none held: {m50:.2}/{m99:.2} ms)"
    );
}

fn big_run(commit: &str, tests: usize) -> Vec<u8> {
    let tests: Vec<serde_json::Value> = (0..tests)
        .map(|i| serde_json::json!({"name": format!("suite::case_{i:06}"), "outcome": if i % 100 == 0 { "failed" } else { "passed" }}))
        .collect();
    serde_json::json!({"repository": "acme/big", "context": "unit", "commit": commit, "tests": tests,
        "finished_at": chrono::Utc::now().to_rfc3339()})
    .to_string()
    .into_bytes()
}

fn small_run(i: usize) -> Vec<u8> {
    serde_json::json!({"repository": "acme/small", "context": "lint", "commit": format!("s{i}"),
        "state": "success", "finished_at": chrono::Utc::now().to_rfc3339()})
    .to_string()
    .into_bytes()
}

fn small_behind_large(dir: &std::path::Path) {
    let tests = env_num("BENCH_LARGE_TESTS", 60_000usize);
    let e = start(
        dir,
        "[server]\nmax_body_bytes = 67108864\nmax_body_bytes_in_flight = 268435456\nmax_tests_per_run = 250000\n",
    );
    // Baseline: small ingests alone.
    let mut alone: Vec<f64> = (0..100)
        .map(|i| {
            let (s, d) = post(&e.base, &small_run(i));
            assert_eq!(s, 201);
            d.as_secs_f64() * 1e3
        })
        .collect();
    alone.sort_by(f64::total_cmp);
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| big_run(&format!("l{i}"), tests)).collect();
    let large: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let base = e.base.clone();
            std::thread::spawn(move || post(&base, &b))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut behind = Vec::new();
    let mut i = 1000;
    while !large.iter().all(|h| h.is_finished()) {
        let (s, d) = post(&e.base, &small_run(i));
        assert_eq!(s, 201);
        behind.push(d.as_secs_f64() * 1e3);
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let large: Vec<f64> = large
        .into_iter()
        .map(|h| {
            let (s, d) = h.join().unwrap();
            assert_eq!(s, 201);
            d.as_secs_f64()
        })
        .collect();
    behind.sort_by(f64::total_cmp);
    println!(
        "small ingests behind 3 large ones ({tests} tests each, answered after {:.1}/{:.1}/{:.1} s): {} small: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (baseline alone: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
        large[0],
        large[1],
        large[2],
        behind.len(),
        percentile(&behind, 0.5),
        percentile(&behind, 0.99),
        percentile(&behind, 1.0),
        percentile(&alone, 0.5),
        percentile(&alone, 0.99),
        percentile(&alone, 1.0),
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "bodies" {
        unauthenticated_bodies(dir.path());
    }
    if only.is_empty() || only == "connections" {
        connections_held(dir.path());
    }
    if only.is_empty() || only == "ingest" {
        small_behind_large(dir.path());
    }
}

//! Whoever can reach the port cannot take the service down: idle and slow
//! connections are closed on their deadlines and never starve `/healthz` or
//! `/metrics`; connections beyond the cap get a clear 503; credentials and
//! sizes are checked before a byte of body is read; slow bodies are cut;
//! `web.allowed_hosts` and the read token close the pages.

use crate::common;

use common::{Exporter, agent};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn connect(e: &Exporter) -> TcpStream {
    let addr = e.base.trim_start_matches("http://");
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Whether the server closed `s` (a read gives EOF or a reset) within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Send `head` and read the answer, without ever sending a body.
fn answer_to_head(e: &Exporter, head: &str) -> (u16, String, Duration) {
    let mut s = connect(e);
    let started = Instant::now();
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the answer's body is complete (content-length) or EOF.
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body, elapsed)
}

#[test]
fn two_thousand_idle_and_slow_connections_do_not_starve_health_or_metrics() {
    // The test holds 2,000+ sockets itself.
    let _ = rlimit::increase_nofile_limit(8192);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = config(
        d,
        "[server]\nheader_read_timeout = \"20s\"\nkeep_alive_timeout = \"3s\"\n",
    );
    let e = Exporter::start(d, &d.join("s.db"), &["--config", &c], &[]);
    let header_timeout = Duration::from_secs(20);

    let opened = Instant::now();
    let mut idle = Vec::new();
    let mut slow = Vec::new();
    for i in 0..2000 {
        let mut s = connect(&e);
        if i % 2 == 0 {
            idle.push(s);
        } else {
            // A request head that never completes (a slowloris).
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            slow.push(s);
        }
    }
    let last_opened = Instant::now();
    eprintln!("opened 2000 connections in {:?}", last_opened - opened);
    // While all 2,000 are open (the scrape counts them), the probes and the
    // scrape answer (the client gives up after 30 s). How long they took is
    // printed, not asserted: it depends on the machine's load.
    let probe = Instant::now();
    let (status, body) = e.get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let healthz = probe.elapsed();
    let scrape = e.scrape(false);
    eprintln!(
        "/healthz {healthz:?}, /healthz + /metrics {:?}",
        probe.elapsed()
    );
    // A connect returns once the kernel queued the connection: the server
    // may accept the last ones after the first scrape. Scrape again until
    // it counts them all (or the first deadlines near).
    let mut connections = common::sample(&scrape, "ci_exporter_http_connections").unwrap();
    while connections < 2000.0 && opened.elapsed() < header_timeout - Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        connections = common::sample(&e.scrape(false), "ci_exporter_http_connections").unwrap();
    }
    assert!(
        connections >= 2000.0,
        "the scrape saw {connections} open connections"
    );
    assert!(
        opened.elapsed() < header_timeout,
        "the machine is too slow for this test: the first deadlines came before the probes"
    );

    // The slow heads and the silent connections are closed by their deadline
    // (20 s after they opened), not much later.
    let wait_until = last_opened + header_timeout + Duration::from_secs(3);
    for (what, list) in [("silent", &mut idle), ("slow-header", &mut slow)] {
        for (i, s) in list.iter_mut().enumerate() {
            let left = wait_until.saturating_duration_since(Instant::now());
            assert!(
                closed_within(s, left.max(Duration::from_millis(10))),
                "{what} connection {i} still open 23 s after it was opened"
            );
        }
    }
    // The client may see a close before the server has counted it.
    let closed_by_deadline = || {
        common::sample(
            &e.scrape(false),
            "ci_exporter_http_connections_closed_total{reason=\"header_timeout\"}",
        )
        .unwrap_or(0.0)
    };
    let counting = Instant::now();
    let mut closed = closed_by_deadline();
    while closed < 2000.0 && counting.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        closed = closed_by_deadline();
    }
    assert!(closed >= 2000.0, "closed by the header deadline: {closed}");

    // A keep-alive connection is closed after keep_alive_timeout once idle.
    let mut s = connect(&e);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    assert!(
        !closed_within(&mut s, Duration::from_millis(1500)),
        "closed before keep_alive_timeout"
    );
    assert!(
        closed_within(&mut s, Duration::from_secs(8)),
        "still open 9.5 s after its answer"
    );
    let idle_for = idle_from.elapsed();
    assert!(
        idle_for >= Duration::from_millis(2500),
        "closed after {idle_for:?} of idleness, keep_alive_timeout is 3 s"
    );
    e.stop();
}

#[test]
fn connections_beyond_the_cap_get_a_clear_503() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = config(
        d,
        "[server]\nmax_connections = 20\nheader_read_timeout = \"30s\"\n",
    );
    let e = Exporter::start(d, &d.join("s.db"), &["--config", &c], &[]);
    // The readiness probe's connection may still be closing.
    std::thread::sleep(Duration::from_millis(300));
    let held: Vec<TcpStream> = (0..20).map(|_| connect(&e)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body, _) = answer_to_head(&e, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("server.max_connections"),
        "{v}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let text = e.scrape(false);
    assert!(
        common::sample(&text, "ci_exporter_http_connections_refused_total").unwrap() >= 1.0,
        "the refusal is counted"
    );
    e.stop();
}

#[test]
fn credentials_and_sizes_are_checked_before_the_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = config(
        d,
        "[server]\nmax_body_bytes = 1048576\nmin_body_rate = 100000\nheader_read_timeout = \"2s\"\n",
    );
    let secrets = [
        ("CI_SLO_API_TOKEN", "api-tok-1234"),
        ("CI_SLO_GITHUB_WEBHOOK_SECRET", "gh-secret"),
        ("CI_SLO_GITLAB_WEBHOOK_TOKEN", "gl-token"),
    ];
    let e = Exporter::start(d, &d.join("s.db"), &["--config", &c], &secrets);
    // Only the head is sent, announcing a body under the limit that never
    // comes: every refusal is answered at once.
    let cases = [
        ("POST /api/v1/runs", "", "missing Authorization"),
        (
            "POST /api/v1/runs",
            "Authorization: Bearer wrong\r\n",
            "invalid API token",
        ),
        (
            "POST /webhooks/github",
            "X-GitHub-Event: status\r\nX-GitHub-Delivery: 1\r\n",
            "missing X-Hub-Signature-256",
        ),
        (
            "POST /webhooks/github",
            "X-GitHub-Event: status\r\nX-Hub-Signature-256: sha1=abcd\r\n",
            "sha256=<64 hex digits>",
        ),
        (
            "POST /webhooks/gitlab",
            "X-Gitlab-Event: Job Hook\r\nX-Gitlab-Token: nope\r\n",
            "invalid X-Gitlab-Token",
        ),
        (
            "POST /webhooks/gitlab",
            "X-Gitlab-Event: Job Hook\r\n",
            "missing X-Gitlab-Token",
        ),
    ];
    for (line, extra, reason) in cases {
        let head = format!(
            "{line} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        );
        let (status, body, took) = answer_to_head(&e, &head);
        assert_eq!(status, 401, "{line} {extra:?}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(v["error"].as_str().unwrap().contains(reason), "{line}: {v}");
        assert!(
            took < Duration::from_secs(1),
            "{line}: answered after {took:?}"
        );
    }
    // Authenticated but announcing too much: 413 at once, naming the limit.
    let (status, body, took) = answer_to_head(
        &e,
        "POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer api-tok-1234\r\nContent-Length: 5000000\r\n\r\n",
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("1048576") && body.contains("server.max_body_bytes"),
        "{body}"
    );
    assert!(took < Duration::from_secs(1));
    // Authenticated, but the body trickles: 408 once it falls behind the rate.
    let mut s = connect(&e);
    s.write_all(b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer api-tok-1234\r\nContent-Length: 500000\r\n\r\n{")
        .unwrap();
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n{") {
        for _ in 0..5 {
            let _ = s.write_all(b" ");
            std::thread::sleep(Duration::from_millis(100));
        }
        s.set_nonblocking(true).unwrap();
        if let Ok(n) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        s.set_nonblocking(false).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10), "no answer");
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("server.min_body_rate"), "{text}");

    // The refusals are counted by route and reason, and logged without secrets.
    let m = e.scrape(false);
    for (route, reason, n) in [
        ("api_runs", "missing", 1.0),
        ("api_runs", "invalid", 1.0),
        ("webhooks_github", "missing", 1.0),
        ("webhooks_github", "malformed", 1.0),
        ("webhooks_gitlab", "invalid", 1.0),
        ("webhooks_gitlab", "missing", 1.0),
    ] {
        let series =
            format!("ci_exporter_auth_rejections_total{{route=\"{route}\",reason=\"{reason}\"}}");
        assert_eq!(common::sample(&m, &series), Some(n), "{series}\n{m}");
    }
    let log = e.log();
    assert!(
        log.contains("refused a request for its credentials"),
        "{log}"
    );
    for (_, secret) in secrets {
        assert!(!log.contains(secret), "the log shows a secret");
    }
    assert!(!log.contains("Bearer wrong") && !log.contains("nope"));
    e.stop();
}

#[test]
fn allowed_hosts_and_the_read_token_close_the_pages_but_not_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = config(
        d,
        "[web]\nallowed_hosts = [\"127.0.0.1\", \"ci.example.com\"]\n",
    );
    let e = Exporter::start(
        d,
        &d.join("s.db"),
        &["--config", &c],
        &[
            ("CI_SLO_READ_TOKEN", "read-tok-99"),
            ("CI_SLO_API_TOKEN", "api-tok-77"),
        ],
    );
    let get = |path: &str, host: &str, auth: Option<&str>| {
        let mut req = agent()
            .get(&format!("{}{path}", e.base))
            .header("Host", host);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let mut r = req.call().unwrap();
        (
            r.status().as_u16(),
            r.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string()),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    // A rebinding name is refused even with a token; the probes answer anyone.
    let (s, _, body) = get(
        "/api/v1/slos",
        "evil.example:9787",
        Some("Bearer read-tok-99"),
    );
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("web.allowed_hosts"), "{body}");
    assert_eq!(get("/healthz", "evil.example", None).0, 200);
    // Pages and JSON need the read token (or the API token), Bearer or Basic.
    let (s, www, body) = get("/api/v1/slos", "ci.example.com", None);
    assert_eq!(s, 401, "{body}");
    assert!(www.unwrap().starts_with("Basic realm="));
    assert_eq!(get("/", "ci.example.com:443", Some("Bearer wrong")).0, 401);
    assert_eq!(
        get("/api/v1/slos", "127.0.0.1:1", Some("Bearer read-tok-99")).0,
        200
    );
    assert_eq!(
        get("/api/v1/slos", "127.0.0.1", Some("Bearer api-tok-77")).0,
        200
    );
    // "anyone:read-tok-99"
    assert_eq!(
        get(
            "/failures",
            "ci.example.com",
            Some("Basic YW55b25lOnJlYWQtdG9rLTk5")
        )
        .0,
        200
    );
    // /metrics stays open (protect it on the network, docs/security.md).
    assert_eq!(get("/metrics", "127.0.0.1", None).0, 200);
    e.stop();
}

//! A misbehaving front for a fake forge: a small HTTP/1.1 server on
//! 127.0.0.1:0 that passes each request to the fake (one backend connection
//! per request) or, while a fault is set, misbehaves the way networks and
//! forges do: stalls, resets, truncated JSON, 5xx and 429 storms.
//!
//! Faults apply per request (also on kept-alive connections), to every
//! request or only to those whose path and query contain a given string, and
//! every faulty answer is counted, so a test can compare what the front dealt
//! with what the exporter reports.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer as the fake does.
    Pass,
    /// Read the request, never answer (the connection stays open).
    Stall,
    /// Send the status line and headers (with the real Content-Length), never the body.
    StallBody,
    /// Read the request, then reset the connection (RST) without a byte of answer.
    Reset,
    /// The real answer with its body cut in half, correctly framed: truncated JSON.
    Truncate,
    /// The real headers and Content-Length, half the body, then close.
    CutBody,
    /// Answer this status (a 5xx storm) with a short body.
    Status(u16),
    /// Answer 429 with `Retry-After` in seconds (a rate-limit storm).
    RateLimited(u64),
}

impl Fault {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Fault::Pass => "pass",
            Fault::Stall => "stall",
            Fault::StallBody => "stall_body",
            Fault::Reset => "reset",
            Fault::Truncate => "truncate",
            Fault::CutBody => "cut_body",
            Fault::Status(_) => "status",
            Fault::RateLimited(_) => "rate_limited",
        }
    }
}

struct State {
    fault: Fault,
    /// Apply the fault only to requests whose path and query contain this.
    only: Option<String>,
    /// Faulty answers dealt, by fault name.
    dealt: BTreeMap<&'static str, u64>,
    /// Requests passed to the fake.
    passed: u64,
    /// Requests given a fault whose answer is not counted yet.
    undecided: u64,
}

#[derive(Clone)]
pub(crate) struct Front {
    /// `http://127.0.0.1:PORT`, the fake's paths below it.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Front {
    /// Start a front for the fake at `backend` (`127.0.0.1:PORT`).
    pub(crate) fn start(backend: std::net::SocketAddr) -> Front {
        let state = Arc::new(Mutex::new(State {
            fault: Fault::Pass,
            only: None,
            dealt: BTreeMap::new(),
            passed: 0,
            undecided: 0,
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(connection(sock, backend, st.clone()));
                }
            });
        });
        let addr = rx.recv().unwrap();
        Front {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// Misbehave this way on every request from now on.
    pub(crate) fn set(&self, fault: Fault) {
        self.switch(fault, None);
    }

    /// Misbehave this way only on requests whose path and query contain `only`.
    pub(crate) fn set_for(&self, fault: Fault, only: &str) {
        self.switch(fault, Some(only.to_string()));
    }

    /// Switch, then wait (bounded) until every request that got the previous
    /// fault is counted, so that [`Front::dealt`] includes all of them.
    fn switch(&self, fault: Fault, only: Option<String>) {
        {
            let mut s = self.state.lock().unwrap();
            s.fault = fault;
            s.only = only;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.state.lock().unwrap().undecided > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a faulty answer was never counted"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Faulty answers dealt so far for this fault (by kind, whatever the status).
    pub(crate) fn dealt(&self, fault: Fault) -> u64 {
        self.state
            .lock()
            .unwrap()
            .dealt
            .get(fault.name())
            .copied()
            .unwrap_or(0)
    }

    /// Requests passed to the fake so far.
    pub(crate) fn passed(&self) -> u64 {
        self.state.lock().unwrap().passed
    }
}

/// Read one request head (GET requests have no body); None at EOF or on error.
async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf[..end + 4].to_vec();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Wait until the client closes the connection (it gave up), keeping it open meanwhile.
async fn hold(mut sock: TcpStream) {
    let mut sink = [0u8; 1024];
    while let Ok(n) = sock.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

struct Answer {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn head(&self, content_length: usize) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.status_line);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("content-length: {content_length}\r\n\r\n"));
        out.into_bytes()
    }
}

/// Ask the fake: the request as HTTP/1.0 with `Connection: close`, so the
/// answer is framed by Content-Length or by the close (never chunked).
async fn ask(backend: std::net::SocketAddr, head: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    let mut req = format!("{method} {target} HTTP/1.0\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if name != "connection" && name != "keep-alive" {
            req.push_str(line);
            req.push_str("\r\n");
        }
    }
    req.push_str("connection: close\r\n\r\n");
    let mut up = TcpStream::connect(backend).await.ok()?;
    up.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw).await.ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = raw[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?.replacen("HTTP/1.0", "HTTP/1.1", 1);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| {
            !matches!(
                k.to_ascii_lowercase().as_str(),
                "content-length" | "transfer-encoding" | "connection" | "keep-alive"
            )
        })
        .collect();
    Some(Answer {
        status_line,
        headers,
        body,
    })
}

async fn connection(mut sock: TcpStream, backend: std::net::SocketAddr, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut sock, &mut buf).await {
        let target = String::from_utf8_lossy(&head)
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string();
        let fault = {
            let mut s = state.lock().unwrap();
            let applies = s.only.as_deref().is_none_or(|o| target.contains(o));
            let fault = if applies { s.fault } else { Fault::Pass };
            if fault != Fault::Pass {
                s.undecided += 1;
            }
            fault
        };
        // Counted once it is known what the request got (a faulty answer may
        // turn out to pass: an empty one cannot be cut).
        let count = |got: Fault| {
            let mut s = state.lock().unwrap();
            if fault != Fault::Pass {
                s.undecided -= 1;
            }
            if got == Fault::Pass {
                s.passed += 1;
            } else {
                *s.dealt.entry(got.name()).or_default() += 1;
            }
        };
        match fault {
            Fault::Stall => {
                count(fault);
                return hold(sock).await;
            }
            Fault::Reset => {
                count(fault);
                let _ = sock.set_zero_linger();
                return;
            }
            Fault::Status(code) => {
                count(fault);
                let body = format!("{{\"message\":\"injected {code}\"}}");
                let answer = format!(
                    "HTTP/1.1 {code} Injected\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if sock.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::RateLimited(secs) => {
                count(fault);
                let body = "{\"message\":\"API rate limit exceeded (injected)\"}";
                let answer = format!(
                    "HTTP/1.1 429 Too Many Requests\r\nretry-after: {secs}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if sock.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::Pass | Fault::Truncate | Fault::CutBody | Fault::StallBody => {
                let Some(answer) = ask(backend, &head).await else {
                    return;
                };
                let full = answer.body.len();
                let half = full / 2;
                // An empty answer (a 304) cannot be cut or stalled: it passes.
                let fault = if full == 0 { Fault::Pass } else { fault };
                count(fault);
                let out = match fault {
                    Fault::Pass => [answer.head(full), answer.body].concat(),
                    Fault::Truncate => [answer.head(half), answer.body[..half].to_vec()].concat(),
                    Fault::CutBody => {
                        let out = [answer.head(full), answer.body[..half].to_vec()].concat();
                        let _ = sock.write_all(&out).await;
                        return;
                    }
                    _ => {
                        if sock.write_all(&answer.head(full)).await.is_ok() {
                            hold(sock).await;
                        }
                        return;
                    }
                };
                if sock.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    }
}

//! Proof under faults (issue 18): two `serve` replicas of the real binary
//! on one PostgreSQL database (the shared test server,
//! ci_slo_store_pg::testing, whatever `CI_SLO_TEST_ENGINE` says), fed runs
//! (`POST /api/v1/runs`) and signed GitHub webhooks (real recorded payloads
//! of tests/fixtures/github) spread over both by client threads, while the
//! leader is SIGKILLed and restarted, [`CYCLES`] times. A request that gets
//! no answer (connection refused or reset by a kill) or a `503` from a
//! replica still starting is sent again to the other replica, as a proxy
//! would; an acknowledged one is sometimes sent again on purpose, and must
//! be `unchanged` / `duplicate`; every fifth event is sent to both replicas
//! at once, and at most one of them may store it anew.
//!
//! Checked during the traffic: no `ci_runs_total` or `ci_slo_events_total`
//! series ever goes back on one address, across kills and restarts (both
//! addresses scraped every 100 ms). Checked at the end, against the
//! database and both replicas' `/metrics`:
//!
//! - every acknowledged run and delivery is stored exactly once, and nothing
//!   else is stored (the runs are the acknowledged ones plus the polled ones);
//!   no answer was another 5xx or a 4xx;
//! - both replicas serve the same `ci_runs_total` and `ci_slo_events_total`
//!   series (two scrapes in a row), whose runs add up to the runs stored
//!   (counted once each);
//! - the GitHub pollers (each process with a token of its own, so the fake
//!   GitHub knows who asked) never poll at once: the spans from each
//!   process's first to its last request are disjoint; after each kill the
//!   survivor's requests arrive, and every merged pull request is polled
//!   once into the store;
//! - after each kill the survivor logs `leadership gained` and serves
//!   `ci_exporter_leader 1` within `LeaderConfig::takeover_bound`, and the
//!   restarted replica follows (`0`).
//!
//! Every wait polls for its condition with a generous limit, which only
//! catches a hang; the figures are printed (docs/scaling.md quotes them).

use crate::common::{self, Exporter, TOKEN};
use crate::fake_github;

use ci_slo_exporter::forge::github::webhook::sign;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "webhook-secret-f4u1t";
/// Kills (and restarts) of the leader.
const CYCLES: usize = 4;
/// Client threads sending runs and deliveries at once.
const CLIENTS: usize = 3;
/// Events acknowledged between two kills (and before the first, after the last).
const EVENTS_BETWEEN_KILLS: usize = 40;
/// The repository the poller reads from the fake GitHub.
const POLLED: &str = "acme/polled";
/// Job ids of the polled pull requests' runs (apart from the webhooks' ones).
const POLLED_JOBS: u64 = 7_000_000;
/// Generous limit of every wait: only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(120);

static NOW: LazyLock<chrono::DateTime<chrono::Utc>> = LazyLock::new(chrono::Utc::now);

fn ago(minutes: i64) -> String {
    (*NOW - chrono::Duration::minutes(minutes)).to_rfc3339()
}

fn fixture(path: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github/webhooks")
        .join(path);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// One event a client sends: a run for the ingest API, or a GitHub workflow
/// run and one of its jobs (two deliveries).
#[derive(Clone, Copy, Debug)]
enum Event {
    Ingest(usize),
    Webhooks(usize),
}

impl Event {
    fn of(n: usize) -> Event {
        if n.is_multiple_of(2) {
            Event::Ingest(n)
        } else {
            Event::Webhooks(n)
        }
    }
}

/// The commit of ingested run `n` (its identity when it has no external id).
fn commit(n: usize) -> String {
    format!("{n:040x}")
}

/// Ingested run `n`: finished, one test; every other one has an external id.
fn api_run(n: usize) -> Vec<u8> {
    let mut run = json!({
        "repository": "acme/faults",
        "context": "unit",
        "commit": commit(n),
        "trigger": "push",
        "state": if n.is_multiple_of(4) { "success" } else { "failure" },
        "queued_at": ago(30),
        "started_at": ago(25),
        "finished_at": ago(2),
        "tests": [{"name": "t1", "outcome": if n.is_multiple_of(4) { "passed" } else { "failed" },
                   "duration_seconds": 1.5}],
    });
    if n % 4 == 2 {
        run["external_id"] = json!(format!("api:{n}"));
    }
    serde_json::to_vec(&run).unwrap()
}

fn job_id(n: usize) -> u64 {
    1_000_000 + n as u64
}

/// The webhook deliveries of event `n`, in the order sent: its workflow run
/// (the job's trigger) and its completed job, both from the recorded
/// payloads with their ids, commit, repository and times made this event's
/// own (the times recent, so the pruner keeps the runs).
fn deliveries(n: usize) -> [(&'static str, String, Vec<u8>); 2] {
    static RUN: LazyLock<Value> = LazyLock::new(|| fixture("workflow_run/completed.payload.json"));
    static SUCCESS: LazyLock<Value> =
        LazyLock::new(|| fixture("workflow_job/completed.success.with-organization.payload.json"));
    static FAILURE: LazyLock<Value> =
        LazyLock::new(|| fixture("workflow_job/completed.failure.with-organization.payload.json"));
    let sha = format!("{:040x}", 0xfeed_0000_0000u64 + n as u64);
    let run_id = 2_000_000 + n as u64;
    let mut run = RUN.clone();
    run["workflow_run"]["id"] = json!(run_id);
    run["workflow_run"]["head_sha"] = json!(sha);
    run["workflow_run"]["event"] = json!("push");
    for t in ["created_at", "run_started_at", "updated_at"] {
        run["workflow_run"][t] = json!(ago(10));
    }
    let mut job: Value = if n.is_multiple_of(3) {
        &*FAILURE
    } else {
        &*SUCCESS
    }
    .clone();
    job["repository"] = run["repository"].clone();
    let j = &mut job["workflow_job"];
    j["id"] = json!(job_id(n));
    j["run_id"] = json!(run_id);
    j["head_sha"] = json!(sha);
    j["created_at"] = json!(ago(10));
    j["started_at"] = json!(ago(9));
    j["completed_at"] = json!(ago(4));
    [
        (
            "workflow_run",
            format!("wr-{n}"),
            run.to_string().into_bytes(),
        ),
        (
            "workflow_job",
            format!("wj-{n}"),
            job.to_string().into_bytes(),
        ),
    ]
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Acknowledged runs (by n) and deliveries (by id), with the status.
    acked_runs: BTreeMap<usize, String>,
    acked_deliveries: BTreeMap<String, String>,
    /// Events the clients gave up on (never acknowledged).
    lost: Vec<String>,
    /// Connections refused (a replica down), requests broken (reset or
    /// closed without an answer: killed while handling), `503` from a
    /// replica still starting (not ready yet), other 5xx answers.
    refused: usize,
    broken: usize,
    starting: usize,
    server_errors: Vec<String>,
    /// Other answers (4xx, an unexpected status): each a failure.
    wrong: Vec<String>,
    /// Acknowledged events sent again on purpose, and their answers.
    replays: usize,
    bad_replays: Vec<String>,
    /// Events sent to both replicas at once (runs as `run N`, deliveries by
    /// id), how many both answered, and the pairs both storing it anew.
    raced: BTreeSet<String>,
    races: usize,
    bad_races: Vec<String>,
}

/// The two replicas' addresses, fixed across restarts.
struct Targets {
    bases: [String; 2],
}

enum Outcome {
    Acked(String),
    Retry,
}

/// Send one request; `Acked(status)` for a 2xx, `Retry` when there was no
/// answer or a 5xx (tallied), a failure recorded for anything else.
fn send(
    agent: &ureq::Agent,
    tally: &Mutex<Tally>,
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Outcome {
    let mut req = agent.post(url).header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    match req.send(body) {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            let answer = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
            let said = answer["status"].as_str().unwrap_or_default().to_string();
            if (200..300).contains(&status) {
                Outcome::Acked(format!("{status} {said}"))
            } else if status == 503 && text.contains("\"starting: ") {
                // A restarted replica answers before it is ready.
                tally.lock().unwrap().starting += 1;
                Outcome::Retry
            } else if status >= 500 {
                tally
                    .lock()
                    .unwrap()
                    .server_errors
                    .push(format!("{url}: {status} {text}"));
                Outcome::Retry
            } else {
                tally
                    .lock()
                    .unwrap()
                    .wrong
                    .push(format!("{url}: {status} {text}"));
                Outcome::Acked(format!("{status} {said}"))
            }
        }
        Err(e) => {
            let refused = matches!(&e, ureq::Error::ConnectionFailed)
                || matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
            let mut t = tally.lock().unwrap();
            if refused {
                t.refused += 1;
            } else {
                t.broken += 1;
            }
            Outcome::Retry
        }
    }
}

/// Send until acknowledged, starting at replica `first` and moving to the
/// other after each failure; None when it never was (within [`PATIENCE`]).
fn deliver_once(
    agent: &ureq::Agent,
    tally: &Mutex<Tally>,
    targets: &Targets,
    first: usize,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<(usize, String)> {
    let start = Instant::now();
    let mut at = first;
    while start.elapsed() < PATIENCE {
        let url = format!("{}{path}", targets.bases[at]);
        if let Outcome::Acked(status) = send(agent, tally, &url, headers, body) {
            return Some((at, status));
        }
        at = 1 - at;
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// One request of an event: where, its headers and body, its delivery id
/// (webhooks), and what sending it again once acknowledged must answer.
struct Request {
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delivery: Option<String>,
    replay: &'static str,
}

/// A client: sends events until `stop`, each until acknowledged; every
/// fifth acknowledged request is sent again to the other replica (when it
/// is up), whose answer must say nothing changed.
fn client(
    id: usize,
    next: &AtomicUsize,
    stop: &AtomicBool,
    targets: &Targets,
    tally: &Mutex<Tally>,
) {
    let agent = common::agent();
    let api = [("Authorization", format!("Bearer {TOKEN}"))];
    let mut sent = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let n = next.fetch_add(1, Ordering::SeqCst);
        let first = (n + id) % 2;
        let requests: Vec<Request> = match Event::of(n) {
            Event::Ingest(n) => vec![Request {
                path: "/api/v1/runs",
                headers: api.to_vec(),
                body: api_run(n),
                delivery: None,
                replay: "200 unchanged",
            }],
            Event::Webhooks(n) => deliveries(n)
                .into_iter()
                .map(|(event, delivery, body)| Request {
                    path: "/webhooks/github",
                    headers: vec![
                        ("X-GitHub-Event", event.to_string()),
                        ("X-GitHub-Delivery", delivery.clone()),
                        ("X-Hub-Signature-256", sign(SECRET.as_bytes(), &body)),
                    ],
                    body,
                    delivery: Some(delivery),
                    replay: "200 duplicate",
                })
                .collect(),
        };
        for Request {
            path,
            headers,
            body,
            delivery,
            replay,
        } in requests
        {
            let key = delivery.clone().unwrap_or_else(|| format!("run {n}"));
            // Every fifth event is also sent to the other replica at the
            // same moment (a proxy's retry racing the original): one of
            // them stores it, the other finds it there.
            let racing = n % 5 == 3;
            let (delivered, rival) = std::thread::scope(|scope| {
                let rival = racing.then(|| {
                    let url = format!("{}{path}", targets.bases[1 - first]);
                    let (agent, headers, body) = (&agent, &headers, &body);
                    scope.spawn(move || send(agent, tally, &url, headers, body))
                });
                let delivered = deliver_once(&agent, tally, targets, first, path, &headers, &body);
                (delivered, rival.map(|r| r.join().unwrap()))
            });
            let Some((at, status)) = delivered else {
                tally.lock().unwrap().lost.push(key);
                continue;
            };
            if let Some(Outcome::Acked(other)) = rival {
                let mut t = tally.lock().unwrap();
                t.races += 1;
                let new = [&status, &other]
                    .into_iter()
                    .filter(|s| *s == "201 created" || *s == "200 accepted")
                    .count();
                if new > 1 {
                    t.bad_races.push(format!("{key}: {status} and {other}"));
                }
            }
            if racing {
                tally.lock().unwrap().raced.insert(key);
            }
            {
                let mut t = tally.lock().unwrap();
                match &delivery {
                    Some(d) => t.acked_deliveries.insert(d.clone(), status),
                    None => t.acked_runs.insert(n, status),
                };
            }
            sent += 1;
            if sent.is_multiple_of(5) {
                let url = format!("{}{path}", targets.bases[1 - at]);
                if let Outcome::Acked(again) = send(&agent, tally, &url, &headers, &body) {
                    let mut t = tally.lock().unwrap();
                    t.replays += 1;
                    if again != replay {
                        t.bad_replays
                            .push(format!("{path} {delivery:?} n={n}: {again}"));
                    }
                }
            }
        }
    }
}

/// One replica: a fixed port, restarted as a new process (an incarnation,
/// with a GitHub token of its own) after each kill.
struct Replica {
    name: &'static str,
    port: u16,
    incarnation: usize,
    exporter: Option<Exporter>,
}

struct Setup {
    dir: PathBuf,
    config: PathBuf,
    url: String,
}

impl Replica {
    fn token(&self) -> String {
        format!("{}-{}", self.name, self.incarnation)
    }

    fn start(&mut self, setup: &Setup) {
        let dir = setup.dir.join(self.token());
        std::fs::create_dir_all(&dir).unwrap();
        let token = self.token();
        let env = [
            ("CI_SLO_API_TOKEN", TOKEN),
            ("CI_SLO_GITHUB_WEBHOOK_SECRET", SECRET),
            ("CI_SLO_GITHUB_TOKEN", token.as_str()),
            ("CI_SLO_DATABASE_URL", setup.url.as_str()),
        ];
        let config = setup.config.to_str().unwrap();
        let db = setup.dir.join("faults.db");
        // The port may still be held a moment after a kill.
        let deadline = Instant::now() + PATIENCE;
        loop {
            match Exporter::try_start_on(self.port, &dir, &db, &["--config", config], &env) {
                Ok(e) => {
                    self.exporter = Some(e);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("replica {} did not start, again: {e}", self.token());
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("replica {} never started: {e}", self.token()),
            }
        }
    }

    fn exporter(&self) -> &Exporter {
        self.exporter.as_ref().expect("running")
    }

    /// `ci_exporter_leader` of this replica (0 when it does not answer).
    fn leads(&self) -> bool {
        self.exporter.as_ref().is_some_and(|e| {
            try_scrape(e).is_some_and(|s| common::sample(&s, "ci_exporter_leader") == Some(1.0))
        })
    }
}

/// A scrape, or None when the replica does not answer.
fn try_scrape(e: &Exporter) -> Option<String> {
    scrape_at(&e.base)
}

fn scrape_at(base: &str) -> Option<String> {
    let mut r = common::agent()
        .get(&format!("{base}/metrics"))
        .call()
        .ok()?;
    (r.status() == 200).then(|| r.body_mut().read_to_string().ok())?
}

/// What the scraper saw during the traffic.
#[derive(Default)]
struct Scrapes {
    count: usize,
    /// A series lower than in an earlier scrape of the same address (a
    /// counter reset to Prometheus).
    went_back: Vec<String>,
    /// Scrapes whose `ci_exporter_stored_runs` is not the runs counted in
    /// `ci_runs_total` (every run sent is finished and its trigger known
    /// when it is stored: in one state of the database they are equal).
    inconsistent: Vec<String>,
}

/// Scrape both addresses until `stop`, killed and restarted processes
/// alike (each process reads the one database, so what one address
/// serves only grows).
fn scraper(targets: &Targets, stop: &AtomicBool) -> Scrapes {
    let mut seen = Scrapes::default();
    let mut last: [BTreeMap<String, f64>; 2] = Default::default();
    while !stop.load(Ordering::SeqCst) {
        for (i, base) in targets.bases.iter().enumerate() {
            let Some(text) = scrape_at(base) else {
                continue;
            };
            seen.count += 1;
            let now: BTreeMap<String, f64> = counter_series(&text)
                .iter()
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_string(), value.parse().ok()?))
                })
                .collect();
            for (series, value) in &now {
                if let Some(before) = last[i].get(series)
                    && value < before
                {
                    seen.went_back
                        .push(format!("{base}: {series} {before} then {value}"));
                }
            }
            let stored = common::sample(&text, "ci_exporter_stored_runs");
            let counted = runs_counted(&counter_series(&text));
            if stored.is_some_and(|s| s != counted) {
                seen.inconsistent.push(format!(
                    "{base}: ci_exporter_stored_runs {stored:?}, ci_runs_total adds up to {counted}"
                ));
            }
            last[i].extend(now);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The `ci_runs_total` and `ci_slo_events_total` samples of a scrape.
fn counter_series(scrape: &str) -> Vec<String> {
    scrape
        .lines()
        .filter(|l| l.starts_with("ci_runs_total{") || l.starts_with("ci_slo_events_total{"))
        .map(String::from)
        .collect()
}

fn runs_counted(series: &[String]) -> f64 {
    series
        .iter()
        .filter(|l| l.starts_with("ci_runs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn count(db: &mut postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).unwrap().get(0)
}

/// Rows per key: `sql` selects (key, count).
fn counts(db: &mut postgres::Client, sql: &str) -> BTreeMap<String, i64> {
    db.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn two_replicas_under_leader_kills_store_every_acknowledged_event_once_and_poll_one_at_a_time() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gh = fake_github::start_recording(fake_github::Fake::default());
    let mut pulls = 0u64;
    let mut merge_pull = |fake: &fake_github::Fake| {
        pulls += 1;
        fake.merge_pull(
            POLLED,
            pulls as i64,
            POLLED_JOBS + pulls,
            vec![fake_github::job(POLLED_JOBS + pulls, "build", "success")],
        );
    };
    merge_pull(&gh.fake);
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nrefresh_interval = \"1s\"\n\
             [github]\napi_url = \"http://{}\"\nrepositories = [\"{POLLED}\"]\n\
             poll_interval = \"1s\"\nschedule_poll_interval = \"2s\"\nretry_base = \"50ms\"\n",
            gh.addr
        ),
    )
    .unwrap();
    let setup = Setup {
        dir: d.to_path_buf(),
        config,
        url: common::database_url(&d.join("faults.db")),
    };
    let mut replicas = [
        Replica {
            name: "a",
            port: common::free_port(),
            incarnation: 0,
            exporter: None,
        },
        Replica {
            name: "b",
            port: common::free_port(),
            incarnation: 0,
            exporter: None,
        },
    ];
    for r in &mut replicas {
        r.start(&setup);
    }
    let targets = Arc::new(Targets {
        bases: [0, 1].map(|i| format!("http://127.0.0.1:{}", replicas[i].port)),
    });
    wait_until("one of the two replicas leads", || {
        replicas.iter().filter(|r| r.leads()).count() == 1
    });

    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let scraping = {
        let (targets, stop) = (targets.clone(), stop.clone());
        std::thread::spawn(move || scraper(&targets, &stop))
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (next, stop, targets, tally) =
                (next.clone(), stop.clone(), targets.clone(), tally.clone());
            std::thread::spawn(move || client(id, &next, &stop, &targets, &tally))
        })
        .collect();
    let acked = |t: &Mutex<Tally>| {
        let t = t.lock().unwrap();
        t.acked_runs.len() + t.acked_deliveries.len()
    };
    let more_acked = |what: &str| {
        let from = acked(&tally);
        wait_until(what, || acked(&tally) >= from + EVENTS_BETWEEN_KILLS);
    };

    let mut takeovers = Vec::new();
    let mut kills = Vec::new();
    more_acked("events acknowledged before the first kill");
    for cycle in 0..CYCLES {
        wait_until("exactly one leader", || {
            replicas.iter().filter(|r| r.leads()).count() == 1
        });
        let l = replicas.iter().position(|r| r.leads()).unwrap();
        let s = 1 - l;
        assert!(!replicas[s].leads(), "cycle {cycle}: two leaders");
        merge_pull(&gh.fake);
        more_acked("events acknowledged between kills");
        let gained_before = replicas[s]
            .exporter()
            .log()
            .matches("leadership gained")
            .count();
        let killed = Instant::now();
        replicas[l].exporter.take().unwrap().crash();
        kills.push((replicas[l].token(), killed));
        let took = wait_until("the survivor leads", || replicas[s].leads());
        takeovers.push(took);
        let log = replicas[s].exporter().log();
        assert_eq!(
            log.matches("leadership gained").count(),
            gained_before + 1,
            "cycle {cycle}: the survivor logs one `leadership gained`: {log}"
        );
        assert!(
            took < ci_slo_store_pg::leader::LeaderConfig::new("x", "y").takeover_bound(),
            "cycle {cycle}: takeover after {took:?}"
        );
        let survivor = format!("Bearer {}", replicas[s].token());
        wait_until("the survivor's poller asks the fake GitHub", || {
            gh.fake.calls.lock().unwrap().iter().any(|c| {
                c.authorization.as_deref() == Some(survivor.as_str()) && c.arrived > killed
            })
        });
        eprintln!(
            "cycle {cycle}: killed {} (leader), {} led after {took:?}",
            kills.last().unwrap().0,
            replicas[s].token()
        );
        replicas[l].incarnation += 1;
        replicas[l].start(&setup);
        assert!(
            replicas[s].leads() && !replicas[l].leads(),
            "cycle {cycle}: the restarted replica follows"
        );
    }
    more_acked("events acknowledged after the last kill");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let traffic_took = began.elapsed();
    let scrapes = scraping.join().unwrap();
    assert!(
        scrapes.went_back.is_empty(),
        "a counter went back on one address: {:?}",
        scrapes.went_back
    );

    // Every merged pull request's run polled once into the store.
    let mut db = postgres::Client::connect(&setup.url, postgres::NoTls).unwrap();
    let polled = |db: &mut postgres::Client| {
        counts(
            db,
            &format!(
                "SELECT external_id, count(*) FROM runs WHERE external_id LIKE 'job:{}%' \
                 GROUP BY external_id",
                POLLED_JOBS / 1_000_000
            ),
        )
    };
    wait_until("every merged pull request polled", || {
        polled(&mut db).len() == pulls as usize
    });
    let want: BTreeMap<String, i64> = (1..=pulls)
        .map(|p| (format!("job:{}", POLLED_JOBS + p), 1))
        .collect();
    assert_eq!(polled(&mut db), want, "each polled job stored once");

    let t = tally.lock().unwrap();
    assert!(t.lost.is_empty(), "never acknowledged: {:?}", t.lost);
    assert!(
        t.wrong.is_empty(),
        "answered neither 2xx nor 5xx: {:?}",
        t.wrong
    );
    let r = |n: usize| -> &Exporter { replicas[n].exporter() };
    // The counters: the same on both replicas, two scrapes in a row, and
    // their runs are the runs stored, each counted once.
    let mut last = (Vec::new(), Vec::new());
    let mut equal_in_a_row = 0;
    let stored_runs = count(&mut db, "SELECT count(*) FROM runs") as f64;
    let settled = wait_until("both replicas count every stored run", || {
        let now = (
            counter_series(&r(0).scrape(false)),
            counter_series(&r(1).scrape(false)),
        );
        let same = now.0 == now.1 && runs_counted(&now.0) == stored_runs && now == last;
        equal_in_a_row = if same { equal_in_a_row + 1 } else { 0 };
        last = now;
        equal_in_a_row >= 2
    });
    assert!(!last.0.is_empty());

    // Every acknowledged event stored exactly once, and nothing else.
    let runs_by_commit = counts(
        &mut db,
        "SELECT r.commit_sha, count(*) FROM runs r JOIN repositories p ON p.id = r.repository_id \
         WHERE p.path = 'acme/faults' GROUP BY r.commit_sha",
    );
    let jobs = counts(
        &mut db,
        "SELECT external_id, count(*) FROM runs WHERE external_id LIKE 'job:1%' GROUP BY external_id",
    );
    let delivered = counts(
        &mut db,
        "SELECT delivery_id, count(*) FROM webhook_deliveries GROUP BY delivery_id",
    );
    for n in t.acked_runs.keys() {
        assert_eq!(runs_by_commit.get(&commit(*n)), Some(&1), "run {n}");
    }
    let mut acked_jobs = BTreeSet::new();
    for d in t.acked_deliveries.keys() {
        assert_eq!(delivered.get(d), Some(&1), "delivery {d}");
        if let Some(n) = d.strip_prefix("wj-") {
            let id = format!("job:{}", job_id(n.parse().unwrap()));
            assert_eq!(jobs.get(&id), Some(&1), "{id} of delivery {d}");
            acked_jobs.insert(id);
        }
    }
    assert_eq!(
        runs_by_commit.len(),
        t.acked_runs.len(),
        "runs never acknowledged stored"
    );
    assert_eq!(
        jobs.len(),
        acked_jobs.len(),
        "jobs never acknowledged stored"
    );
    assert_eq!(delivered.len(), t.acked_deliveries.len());
    assert_eq!(
        stored_runs as usize,
        t.acked_runs.len() + acked_jobs.len() + pulls as usize,
        "runs stored besides the acknowledged and the polled ones"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM runs WHERE trigger_pending <> 0"
        ),
        0,
        "every job's workflow run was delivered: no trigger left pending"
    );
    assert!(t.bad_replays.is_empty(), "replays: {:?}", t.bad_replays);
    assert!(
        t.bad_races.is_empty(),
        "stored twice anew: {:?}",
        t.bad_races
    );
    assert!(t.races > 0, "no race was answered by both replicas");
    for (what, status) in t
        .acked_runs
        .values()
        .map(|s| ("run", s))
        .chain(t.acked_deliveries.values().map(|s| ("delivery", s)))
    {
        assert!(
            [
                "201 created",
                "200 unchanged",
                "200 accepted",
                "200 duplicate"
            ]
            .contains(&status.as_str()),
            "{what} answered {status}"
        );
    }

    // The pollers: each process's requests span a time no other's overlaps.
    let calls = gh.fake.calls.lock().unwrap().clone();
    let mut spans: BTreeMap<String, (Instant, Instant, usize)> = BTreeMap::new();
    for c in &calls {
        let who = c.authorization.clone().unwrap_or_else(|| "(none)".into());
        let span = spans.entry(who).or_insert((c.arrived, c.answered, 0));
        span.0 = span.0.min(c.arrived);
        span.1 = span.1.max(c.answered);
        span.2 += 1;
    }
    let mut ordered: Vec<_> = spans.iter().collect();
    ordered.sort_by_key(|(_, s)| s.0);
    for pair in ordered.windows(2) {
        let ((a, sa), (b, sb)) = (pair[0], pair[1]);
        assert!(
            sa.1 < sb.0,
            "{a} and {b} polled at once: {a} from {:?} to {:?}, {b} from {:?}",
            sa.0 - began,
            sa.1 - began,
            sb.0 - began
        );
    }
    assert!(
        spans.len() > CYCLES,
        "a poller per term: {:?}",
        spans.keys().collect::<Vec<_>>()
    );

    let server_errors = t.server_errors.len();
    // Acknowledged as already there: an earlier attempt was stored by a
    // replica killed before it answered (or a concurrent retry won).
    let already = t
        .acked_runs
        .iter()
        .map(|(n, s)| (format!("run {n}"), s))
        .chain(t.acked_deliveries.iter().map(|(d, s)| (d.clone(), s)))
        .filter(|(key, s)| {
            !t.raced.contains(key) && (*s == "200 unchanged" || *s == "200 duplicate")
        })
        .count();
    eprintln!(
        "replica faults: {CYCLES} leader kills; {} runs ingested and {} webhook deliveries ({} job \
         events) acknowledged by {CLIENTS} clients; {} connections refused and {} requests broken, \
         each sent again to the other replica ({already} of them found already stored); {} 503 from a replica still starting; {server_errors} other 5xx; {} acknowledged requests sent \
         again (all unchanged/duplicate); {} requests sent to both replicas at once and answered by both, \
         never both storing; {} pull requests polled by {} pollers in turn ({} requests); \
         takeovers {takeovers:?}; counters equal {settled:?} after the traffic; {} scrapes during \
         the traffic, none going back, {} of them inconsistent; traffic {:.1} s, whole test {:.1} s",
        t.acked_runs.len(),
        t.acked_deliveries.len(),
        acked_jobs.len(),
        t.refused,
        t.broken,
        t.starting,
        t.replays,
        t.races,
        pulls,
        spans.len(),
        calls.len(),
        scrapes.count,
        scrapes.inconsistent.len(),
        traffic_took.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    for e in &t.server_errors {
        eprintln!("5xx: {e}");
    }
    for e in scrapes.inconsistent.iter().take(5) {
        eprintln!("inconsistent scrape: {e}");
    }
    assert_eq!(server_errors, 0, "5xx answers: {:?}", t.server_errors);
    // Each /metrics rebuild reads one snapshot (Storage::read_consistent):
    // the runs it says are stored are the runs its counters count.
    assert!(
        scrapes.inconsistent.is_empty(),
        "{} scrapes whose stored runs differ from the runs counted: {:?}",
        scrapes.inconsistent.len(),
        &scrapes.inconsistent[..scrapes.inconsistent.len().min(5)]
    );
}

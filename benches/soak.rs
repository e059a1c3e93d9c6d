//! Load soak: mixed traffic against the release binary for a bounded time.
//!
//!     cargo bench --bench soak                         # 60 s
//!     SOAK_SECS=300 SOAK_CLIENTS=4 cargo bench --bench soak
//!
//! It starts the exporter on a temporary database and, until the time is up,
//! drives concurrently: signed GitHub `workflow_job` webhooks, GitLab Job
//! Hooks, JSON ingests to `/api/v1/runs` (a distinct job or run each, so
//! every delivery creates a run) and back-to-back `/metrics` scrapes. It
//! prints the deliveries/s held (overall and the lowest window after
//! warm-up), p50/p99 latency of webhook acknowledgement (sent only after the
//! run is committed), of ingests and of scrapes, the exporter's RSS every
//! SOAK_SAMPLE_SECS (from /proc/PID/status), and whether RSS stayed flat
//! from the end of the warm-up (SOAK_WARMUP_SECS, default a third of the
//! run: SQLite's page cache and the allocator fill up first) to the end.
//!
//! Environment: SOAK_SECS (60), SOAK_CLIENTS per delivery kind (2),
//! SOAK_SCRAPERS (1), SOAK_SAMPLE_SECS (5), SOAK_WARMUP_SECS.

use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use ci_slo_exporter::forge::github::webhook::sign;
use serde_json::Value;
#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{env_num, percentile, serve, status_kb};

const GITHUB_SECRET: &str = "soak-github-secret";
const GITLAB_TOKEN: &str = "soak-gitlab-token";
const API_TOKEN: &str = "soak-api-token";

fn fixture(path: &str) -> Value {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&full).expect(&full)).unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Github,
    Gitlab,
    Ingest,
    Scrape,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Github => "GitHub webhook",
            Kind::Gitlab => "GitLab webhook",
            Kind::Ingest => "API ingest",
            Kind::Scrape => "/metrics scrape",
        }
    }
}

/// Latencies (ms) and failures of one kind, with completion times for windows.
#[derive(Default)]
struct Record {
    latencies_ms: Vec<f64>,
    /// Seconds since the start at which each success completed.
    done_at: Vec<f64>,
    failed: u64,
    first_failure: Option<String>,
}

fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS")
}

/// A least-squares slope of (seconds, MB) points, in MB per minute.
fn slope_per_minute(pts: &[(f64, f64)]) -> f64 {
    if pts.len() < 2 {
        return 0.0;
    }
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let var: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if var > 0.0 { cov / var * 60.0 } else { 0.0 }
}

fn main() {
    let secs = env_num("SOAK_SECS", 60).max(5);
    let clients = env_num("SOAK_CLIENTS", 2).max(1);
    let scrapers = env_num("SOAK_SCRAPERS", 1);
    let sample_every = env_num("SOAK_SAMPLE_SECS", 5).max(1);
    let warmup = env_num("SOAK_WARMUP_SECS", (secs / 3).max(sample_every)).min(secs - 1);

    let dir = tempfile::tempdir().expect("temp dir");
    let server = serve(
        &dir.path().join("soak.db"),
        &[
            ("CI_SLO_GITHUB_WEBHOOK_SECRET", GITHUB_SECRET),
            ("CI_SLO_GITLAB_WEBHOOK_TOKEN", GITLAB_TOKEN),
            ("CI_SLO_API_TOKEN", API_TOKEN),
        ],
    );
    let pid = server.child.id();
    let base = server.base.clone();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();

    let github = Arc::new(fixture(
        "github/webhooks/workflow_job/completed.failure.with-organization.payload.json",
    ));
    let gitlab = Arc::new({
        let mut j = fixture("gitlab/webhooks/job.json");
        j.as_object_mut().unwrap().remove("retries_count");
        j
    });
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    println!(
        "soak: {secs} s against the {} exporter (pid {pid}); {clients} client(s) each for GitHub webhooks, GitLab webhooks and API ingests, {scrapers} /metrics scraper(s); warm-up {warmup} s",
        if cfg!(debug_assertions) {
            "dev-build"
        } else {
            "release-build"
        }
    );

    let mut workers = Vec::new();
    let kinds = [Kind::Github, Kind::Gitlab, Kind::Ingest]
        .into_iter()
        .flat_map(|k| std::iter::repeat_n(k, clients as usize))
        .chain(std::iter::repeat_n(Kind::Scrape, scrapers as usize));
    for kind in kinds {
        let (agent, base, seq, stop, github, gitlab) = (
            agent.clone(),
            base.clone(),
            seq.clone(),
            stop.clone(),
            github.clone(),
            gitlab.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let mut rec = Record::default();
            while !stop.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let result = match kind {
                    Kind::Github => {
                        let mut p = (*github).clone();
                        p["workflow_job"]["id"] = (50_000_000 + n).into();
                        p["workflow_job"]["head_sha"] = format!("{:040x}", n + 1).into();
                        let body = p.to_string().into_bytes();
                        let sig = sign(GITHUB_SECRET.as_bytes(), &body);
                        agent
                            .post(&format!("{base}/webhooks/github"))
                            .header("Content-Type", "application/json")
                            .header("X-GitHub-Event", "workflow_job")
                            .header("X-GitHub-Delivery", &format!("soak-{n}"))
                            .header("X-Hub-Signature-256", &sig)
                            .send(&body[..])
                    }
                    Kind::Gitlab => {
                        let mut j = (*gitlab).clone();
                        j["build_id"] = (60_000_000 + n).into();
                        j["sha"] = format!("{:040x}", n + 1).into();
                        j["project"] = serde_json::json!({
                            "path_with_namespace": format!("soak/gitlab-{}", n % 5)
                        });
                        agent
                            .post(&format!("{base}/webhooks/gitlab"))
                            .header("Content-Type", "application/json")
                            .header("X-Gitlab-Event", "Job Hook")
                            .header("X-Gitlab-Token", GITLAB_TOKEN)
                            .header("X-Gitlab-Event-UUID", &format!("soak-{n}"))
                            .send(&j.to_string().into_bytes()[..])
                    }
                    Kind::Ingest => {
                        let ts = |m: i64| {
                            (Utc::now() - ChronoDuration::minutes(m))
                                .to_rfc3339_opts(SecondsFormat::Secs, true)
                        };
                        let tests: Vec<Value> = (0..3)
                            .map(|t| serde_json::json!({"name": format!("t{t}"),
                                "outcome": if (n + t).is_multiple_of(7) { "failed" } else { "passed" }}))
                            .collect();
                        let body = serde_json::json!({
                            "repository": format!("soak/ingest-{}", n % 5),
                            "context": format!("ctx-{}", n % 4),
                            "commit": format!("{:040x}", n + 1),
                            "external_id": format!("soak-{n}"),
                            "trigger": "push",
                            "state": if n.is_multiple_of(5) { "failure" } else { "success" },
                            "queued_at": ts(20), "started_at": ts(19), "finished_at": ts(1),
                            "tests": tests,
                        });
                        agent
                            .post(&format!("{base}/api/v1/runs"))
                            .header("Content-Type", "application/json")
                            .header("Authorization", &format!("Bearer {API_TOKEN}"))
                            .send(&serde_json::to_vec(&body).unwrap()[..])
                    }
                    Kind::Scrape => agent.get(&format!("{base}/metrics")).call(),
                };
                let ok = match result {
                    Ok(mut r) => {
                        let status = r.status().as_u16();
                        let text = r.body_mut().read_to_string().unwrap_or_default();
                        if (200..300).contains(&status) {
                            Ok(())
                        } else {
                            Err(format!("{status}: {}", text.chars().take(200).collect::<String>()))
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                match ok {
                    Ok(()) => {
                        rec.latencies_ms.push(ms);
                        rec.done_at.push(started.elapsed().as_secs_f64());
                    }
                    Err(e) => {
                        rec.failed += 1;
                        rec.first_failure.get_or_insert(e);
                    }
                }
            }
            (kind, rec)
        }));
    }

    // RSS and progress every sample_every seconds.
    // (t, VmRSS kB, RssAnon kB)
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    let mut t = 0;
    while t < secs {
        t = (t + sample_every).min(secs);
        let until = started + Duration::from_secs(t);
        if let Some(wait) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let kb = rss_kb(pid).unwrap_or(0);
        let mb = |field| status_kb(pid, field).unwrap_or(0) as f64 / 1024.0;
        samples.push((t, kb, status_kb(pid, "RssAnon").unwrap_or(0)));
        println!(
            "t={t:>4} s  exporter RSS {:>6.1} MB (anonymous {:>5.1}, file {:>4.1}, shared {:>4.1}){}",
            kb as f64 / 1024.0,
            mb("RssAnon"),
            mb("RssFile"),
            mb("RssShmem"),
            if t == warmup.div_ceil(sample_every) * sample_every {
                "  (end of warm-up)"
            } else {
                ""
            }
        );
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut by_kind: Vec<(Kind, Record)> = Vec::new();
    for w in workers {
        let (kind, rec) = w.join().unwrap();
        match by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, all)) => {
                all.latencies_ms.extend(rec.latencies_ms);
                all.done_at.extend(rec.done_at);
                all.failed += rec.failed;
                if all.first_failure.is_none() {
                    all.first_failure = rec.first_failure;
                }
            }
            None => by_kind.push((kind, rec)),
        }
    }
    let stored_rss = rss_kb(pid);

    // Deliveries: the three write kinds together.
    let mut done: Vec<f64> = by_kind
        .iter()
        .filter(|(k, _)| *k != Kind::Scrape)
        .flat_map(|(_, r)| r.done_at.iter().copied())
        .collect();
    done.sort_by(f64::total_cmp);
    let total = done.len();
    let window = sample_every as f64;
    let mut lowest = f64::INFINITY;
    let mut w0 = warmup as f64;
    while w0 + window <= secs as f64 {
        let n = done
            .iter()
            .filter(|t| **t >= w0 && **t < w0 + window)
            .count();
        lowest = lowest.min(n as f64 / window);
        w0 += window;
    }
    let parts: Vec<String> = by_kind
        .iter()
        .filter(|(k, _)| *k != Kind::Scrape)
        .map(|(k, r)| format!("{} {}", k.name(), r.latencies_ms.len()))
        .collect();
    println!(
        "deliveries acknowledged after commit: {} = {total} in {elapsed:.1} s = {:.0}/s held overall; lowest {window:.0}-s window after warm-up {lowest:.0}/s",
        parts.join(", "),
        total as f64 / elapsed
    );
    for (kind, rec) in &mut by_kind {
        rec.latencies_ms.sort_by(f64::total_cmp);
        let l = &rec.latencies_ms;
        println!(
            "{:<16} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  ({} ok, {} failed{})",
            kind.name(),
            percentile(l, 0.50),
            percentile(l, 0.99),
            l.last().copied().unwrap_or(f64::NAN),
            l.len(),
            rec.failed,
            rec.first_failure
                .as_deref()
                .map(|f| format!("; first: {f}"))
                .unwrap_or_default()
        );
    }
    let after_warmup = samples
        .iter()
        .find(|(t, _, _)| *t >= warmup)
        .copied()
        .unwrap_or(samples[0]);
    let end = *samples.last().unwrap();
    let after: Vec<&(u64, u64, u64)> = samples
        .iter()
        .filter(|(t, _, _)| *t >= after_warmup.0)
        .collect();
    let rss: fn(&(u64, u64, u64)) -> u64 = |s| s.1;
    let anon: fn(&(u64, u64, u64)) -> u64 = |s| s.2;
    for (what, pick) in [("RSS", rss), ("anonymous RSS", anon)] {
        let (w_mb, e_mb) = (
            pick(&after_warmup) as f64 / 1024.0,
            pick(&end) as f64 / 1024.0,
        );
        let growth = e_mb - w_mb;
        let pts: Vec<(f64, f64)> = after
            .iter()
            .map(|s| (s.0 as f64, pick(s) as f64 / 1024.0))
            .collect();
        // Flat: within 5 % (and 1 MB of allocator slack) of the warm figure.
        let flat = e_mb <= w_mb * 1.05 + 1.0;
        println!(
            "{what}: {w_mb:.1} MB after warm-up (t={} s), {e_mb:.1} MB at the end (t={} s): {growth:+.1} MB ({:+.1} %), slope {:+.2} MB/min after warm-up: {}",
            after_warmup.0,
            end.0,
            if w_mb > 0.0 {
                growth / w_mb * 100.0
            } else {
                0.0
            },
            slope_per_minute(&pts),
            if flat { "flat" } else { "NOT flat" }
        );
    }
    if let Some(kb) = stored_rss {
        let db: u64 = ["soak.db", "soak.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
            .map(|m| m.len())
            .sum();
        println!(
            "after the soak: RSS {:.1} MB, database {:.1} MB",
            kb as f64 / 1024.0,
            db as f64 / 1_048_576.0
        );
    }
    server.stop();
}

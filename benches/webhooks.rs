//! Webhook throughput: replays signed `workflow_job` deliveries (after their
//! workflow run's `workflow_run` event) into a running exporter over loopback
//! and prints deliveries/s acknowledged (every 200 is sent only after the
//! delivery's run, its counters and its delivery id are committed).
//!
//!     cargo bench --bench webhooks                  # 20000 deliveries, 16 clients
//!     BENCH_DELIVERIES=50000 BENCH_CLIENTS=32 cargo bench --bench webhooks
//!
//! It starts the release binary on a temporary database; set BENCH_URL (and
//! CI_SLO_GITHUB_WEBHOOK_SECRET to the exporter's secret) to use a running one.

use ci_slo_exporter::forge::github::webhook::sign;
#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{env_num, serve};

fn main() {
    let deliveries = env_num("BENCH_DELIVERIES", 20_000);
    let clients = env_num("BENCH_CLIENTS", 16).max(1);
    let secret =
        std::env::var("CI_SLO_GITHUB_WEBHOOK_SECRET").unwrap_or_else(|_| "bench-secret".into());

    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = None;
    let base = match std::env::var("BENCH_URL") {
        Ok(url) => url,
        Err(_) => {
            let started = serve(
                &dir.path().join("bench.db"),
                &[("CI_SLO_GITHUB_WEBHOOK_SECRET", secret.as_str())],
            );
            let base = started.base.clone();
            server = Some(started);
            base
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();

    // The real completed.failure payload, one distinct job and commit per delivery.
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/github/webhooks/workflow_job/completed.failure.with-organization.payload.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let bodies: Arc<Vec<(String, Vec<u8>, String)>> = Arc::new(
        (0..deliveries)
            .map(|i| {
                let mut p = fixture.clone();
                p["workflow_job"]["id"] = (10_000_000 + i).into();
                p["workflow_job"]["head_sha"] = format!("{:040x}", i + 1).into();
                let body = p.to_string().into_bytes();
                let sig = sign(secret.as_bytes(), &body);
                (format!("bench-{i}"), body, sig)
            })
            .collect(),
    );

    // Their workflow run's event first (as GitHub usually delivers it), so
    // that every job is counted on arrival under its trigger; a job whose
    // trigger is not known yet would wait for it, uncounted.
    let mut run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/github/webhooks/workflow_run/requested.payload.json"
        ))
        .unwrap(),
    )
    .unwrap();
    run["repository"] = fixture["repository"].clone();
    run["workflow_run"]["id"] = fixture["workflow_job"]["run_id"].clone();
    run["workflow_run"]["event"] = "push".into();
    let body = run.to_string().into_bytes();
    let status = agent
        .post(&format!("{base}/webhooks/github"))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "workflow_run")
        .header("X-GitHub-Delivery", "bench-run")
        .header("X-Hub-Signature-256", &sign(secret.as_bytes(), &body))
        .send(&body[..])
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(status, 200, "the workflow_run delivery");

    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (bodies, next, failed, agent, url) = (
                bodies.clone(),
                next.clone(),
                failed.clone(),
                agent.clone(),
                format!("{base}/webhooks/github"),
            );
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((delivery, body, sig)) = bodies.get(i) else {
                        break;
                    };
                    let ok = agent
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .header("X-GitHub-Event", "workflow_job")
                        .header("X-GitHub-Delivery", delivery)
                        .header("X-Hub-Signature-256", sig)
                        .send(&body[..])
                        .map(|mut r| {
                            let _ = r.body_mut().read_to_string();
                            r.status() == 200
                        })
                        .unwrap_or(false);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "webhooks: {} deliveries acknowledged after commit in {secs:.2} s = {:.0} deliveries/s ({clients} clients, {failed} failed)",
        deliveries - failed,
        (deliveries - failed) as f64 / secs
    );
    if let Some(server) = server {
        server.stop();
    }
}

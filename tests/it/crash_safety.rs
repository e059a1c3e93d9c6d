//! SIGKILL at random points while runs stream in: every run acknowledged with
//! 2xx is stored exactly once and whole, and exported counters never go down.

use crate::common;

use chrono::{Duration, SecondsFormat, Utc};
use common::{Exporter, TOKEN, agent, sample};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const KILLS: usize = 20;
const TESTS_PER_RUN: usize = 3;

/// Run `n`'s body, the same every time it is sent: a resend after a lost answer
/// repeats the run (a finished run sent again with other content is a 409).
fn run_body(n: usize) -> Vec<u8> {
    static START: std::sync::OnceLock<chrono::DateTime<Utc>> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Utc::now);
    let ts = |m: i64| (start - Duration::minutes(m)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let tests: Vec<_> = (0..TESTS_PER_RUN)
        .map(|t| serde_json::json!({"name": format!("t{t}"), "outcome": if (n + t).is_multiple_of(5) { "failed" } else { "passed" }}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "repository": "acme/crash",
        "context": format!("ctx-{}", n % 4),
        "commit": format!("c{n}"),
        "external_id": format!("ext-{n}"),
        "trigger": "push",
        "state": if n.is_multiple_of(3) { "failure" } else { "success" },
        "queued_at": ts(20), "started_at": ts(19), "finished_at": ts(1),
        "tests": tests,
    }))
    .unwrap()
}

fn total(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn acknowledged_runs_survive_sigkill_exactly_once_and_counters_stay_monotonic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let db = d.join("crash.db");
    let env = [("CI_SLO_API_TOKEN", TOKEN)];
    let acknowledged = Arc::new(Mutex::new(Vec::<usize>::new()));
    let mut rng = fastrand::Rng::with_seed(7);
    let mut next = 0usize;
    let mut last_runs = 0.0;
    let mut last_events = 0.0;

    for round in 0..=KILLS {
        let e = Exporter::start(&d, &db, &[], &env);
        let text = e.scrape(false);
        let (runs, events) = (
            total(&text, "ci_runs_total{"),
            total(&text, "ci_slo_events_total{"),
        );
        assert!(
            runs >= last_runs && events >= last_events,
            "round {round}: counters went down ({runs} < {last_runs} or {events} < {last_events})"
        );
        (last_runs, last_events) = (runs, events);
        if round == KILLS {
            break;
        }
        // Two writers stream runs until the kill; a run whose request died is sent again after the restart.
        let stop = Arc::new(AtomicBool::new(false));
        // Run numbers continue across rounds, so no number is ever sent as a new run twice.
        let counter = Arc::new(Mutex::new(next));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (stop, counter, ack, base) = (
                    stop.clone(),
                    counter.clone(),
                    acknowledged.clone(),
                    e.base.clone(),
                );
                std::thread::spawn(move || {
                    let agent = agent();
                    let mut unacked = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let n = {
                            let mut c = counter.lock().unwrap();
                            *c += 1;
                            *c
                        };
                        let sent = agent
                            .post(&format!("{base}/api/v1/runs"))
                            .header("Authorization", &format!("Bearer {TOKEN}"))
                            .header("Content-Type", "application/json")
                            .send(&run_body(n));
                        match sent {
                            Ok(r) if r.status().is_success() => ack.lock().unwrap().push(n),
                            _ => unacked.push(n),
                        }
                    }
                    unacked
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(rng.u64(50..400)));
        e.crash();
        stop.store(true, Ordering::Relaxed);
        let unacked: Vec<usize> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        next = *counter.lock().unwrap();
        // Resend what was not acknowledged (it may or may not have been committed).
        let e = Exporter::start(&d, &db, &[], &env);
        for n in unacked {
            let (status, reply) = e.post("/api/v1/runs", Some(TOKEN), &run_body(n));
            assert!(status == 201 || status == 200, "{status} {reply}");
            acknowledged.lock().unwrap().push(n);
        }
        e.crash();
    }

    let ack = acknowledged.lock().unwrap().clone();
    assert!(
        ack.len() > 200,
        "enough traffic to mean something: {} runs acknowledged",
        ack.len()
    );
    let stored_runs: std::collections::HashMap<String, (i64, i64)> = common::sql::rows(
        &db,
        "SELECT r.external_id, count(DISTINCT r.id), count(t.id)
         FROM runs r LEFT JOIN test_results t ON t.run_id = r.id GROUP BY r.external_id",
    )
    .into_iter()
    .map(|r| (r.text(0), (r.int(1), r.int(2))))
    .collect();
    for n in &ack {
        assert_eq!(
            stored_runs.get(&format!("ext-{n}")),
            Some(&(1, TESTS_PER_RUN as i64)),
            "run {n}: stored once and whole"
        );
    }
    let half_written = common::sql::count(
        &db,
        &format!(
            "SELECT count(*) FROM runs r WHERE (SELECT count(*) FROM test_results t WHERE t.run_id = r.id) != {TESTS_PER_RUN}"
        ),
    );
    assert_eq!(half_written, 0, "no run without all its tests");
    let stored = common::sql::count(&db, "SELECT count(*) FROM runs");
    assert_eq!(
        stored as usize,
        ack.len(),
        "every stored run was acknowledged (retries made sure)"
    );
    assert_eq!(
        last_runs as i64, stored,
        "ci_runs_total counts each stored run once"
    );
    assert_eq!(
        sample(
            &Exporter::start(&d, &db, &[], &env).scrape(false),
            "ci_exporter_stored_runs"
        ),
        Some(stored as f64)
    );
}

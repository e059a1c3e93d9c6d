//! `serve` on PostgreSQL whose connections are all cut (every backend of
//! the exporter terminated, as a restart or a failover of the server does):
//! it connects again, the next ingests are stored, `/readyz` answers 200,
//! and no run is lost or counted twice. Likewise when the server itself is
//! stopped and started again: while it is down ingests fail and `/readyz`
//! answers 503 (`/healthz` 200), and once it is back they are stored.

use crate::common::{Exporter, TOKEN};
use crate::postgres_store::{api_run, gauge};

use ci_slo_store_pg::testing::{TestDatabase, TestServer};
use std::time::{Duration, Instant};

/// Terminate every backend of the exporter on `db`; returns how many.
fn terminate_all(db: &TestDatabase) -> i64 {
    db.connect()
        .unwrap()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'ci-slo-exporter' AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
}

/// The sum of a counter family's series in a scrape.
fn family_sum(scrape: &str, family: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `serve` on `db` with the API token.
fn serve(server: &TestServer, db: &TestDatabase, d: &std::path::Path) -> Exporter {
    let pw = d.join("pw");
    std::fs::write(&pw, format!("{}\n", server.password())).unwrap();
    let config = d.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = {:?}\npassword_file = {:?}\n",
            server.url(db.name()),
            pw.to_str().unwrap()
        ),
    )
    .unwrap();
    Exporter::start(
        d,
        &d.join("unused.db"),
        &["--config", config.to_str().unwrap()],
        &[("CI_SLO_API_TOKEN", TOKEN), ("CI_SLO_DATABASE_URL", "")],
    )
}

/// Post `commit`'s run until it is stored (bounded); returns the attempts.
fn ingest(e: &Exporter, commit: &str) -> u32 {
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (status, reply) = e.post("/api/v1/runs", Some(TOKEN), &api_run(commit));
        if status == 200 || status == 201 {
            return attempts;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{commit} not stored after {attempts} attempts: {status} {reply}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn serve_on_postgres_connects_again_after_every_backend_was_terminated() {
    let server = TestServer::shared();
    let db = server.database("serve_reconnect").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = serve(server, &db, dir.path());
    for commit in ["a1", "b2"] {
        assert_eq!(ingest(&e, commit), 1);
    }
    e.wait_for("two stored runs", |s| {
        gauge(s, "ci_exporter_stored_runs") == Some(2.0)
    });

    // Twice: every connection of the exporter (its writer, readers and
    // leadership) cut, then a new run and a replay of an old one.
    for (round, commit) in [(1, "c3"), (2, "d4")] {
        let cut = terminate_all(&db);
        // The writer, the readers and the leadership; the second time those
        // made again since (the writer and a reader at least: readers
        // connect again when next used).
        let least = if round == 1 { 3 } else { 2 };
        assert!(cut >= least, "round {round}: {cut} backends terminated");
        let t = Instant::now();
        let attempts = ingest(&e, commit);
        let stored = t.elapsed();
        let replay = e.post("/api/v1/runs", Some(TOKEN), &api_run("a1"));
        assert_eq!(replay.0, 200, "{replay:?}");
        let mut ready = None;
        for _ in 0..100 {
            let (status, _) = e.get("/readyz");
            if status == 200 {
                ready = Some(t.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let ready = ready.unwrap_or_else(|| panic!("round {round}: /readyz not 200: {}", e.log()));
        eprintln!(
            "round {round}: {cut} backends terminated; run stored after {:.0} ms ({attempts} attempt(s)), /readyz 200 after {:.0} ms",
            stored.as_secs_f64() * 1000.0,
            ready.as_secs_f64() * 1000.0
        );
    }

    let scrape = e.wait_for("four stored runs", |s| {
        gauge(s, "ci_exporter_stored_runs") == Some(4.0)
    });
    assert_eq!(family_sum(&scrape, "ci_runs_total"), 4.0, "{scrape}");
    let (status, run) = e.get("/api/v1/runs/4");
    assert_eq!(status, 200, "{run}");
    let log = e.log();
    e.stop();
    assert!(log.contains("PostgreSQL connection made again"), "{log}");
    let runs: i64 = db
        .connect()
        .unwrap()
        .query_one("SELECT count(*) FROM runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 4);
}

#[test]
fn serve_on_postgres_fails_while_its_server_is_down_and_stores_again_once_it_is_back() {
    let server = TestServer::start().unwrap();
    let db = server.database("serve_restart").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = serve(&server, &db, dir.path());
    assert_eq!(ingest(&e, "a1"), 1);

    server.pause().unwrap();
    let (status, reply) = e.post("/api/v1/runs", Some(TOKEN), &api_run("b2"));
    assert_eq!(status, 503, "{reply}");
    assert_eq!(e.get("/readyz").0, 503);
    assert_eq!(e.get("/healthz").0, 200, "alive: no restart needed");

    server.resume().unwrap();
    let back = Instant::now();
    let attempts = ingest(&e, "b2");
    let stored = back.elapsed();
    let mut ready = None;
    for _ in 0..100 {
        if e.get("/readyz").0 == 200 {
            ready = Some(back.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = ready.unwrap_or_else(|| panic!("/readyz not 200: {}", e.log()));
    eprintln!(
        "server back: run stored after {:.0} ms ({attempts} attempt(s), 200 ms apart), /readyz 200 after {:.0} ms",
        stored.as_secs_f64() * 1000.0,
        ready.as_secs_f64() * 1000.0
    );
    let scrape = e.wait_for("two stored runs", |s| {
        gauge(s, "ci_exporter_stored_runs") == Some(2.0)
    });
    assert_eq!(family_sum(&scrape, "ci_runs_total"), 2.0, "{scrape}");
    e.stop();
    let runs: i64 = db
        .connect()
        .unwrap()
        .query_one("SELECT count(*) FROM runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 2);
}

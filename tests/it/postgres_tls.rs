//! `serve` on a PostgreSQL server that requires TLS (`hostssl`), reached
//! with `CI_SLO_DATABASE_URL` and `sslmode=verify-full`: it stores and
//! counts a run there, every one of its connections (writer, readers,
//! leadership) is TLS, and with a CA that did not sign the server's
//! certificate it refuses to start, saying why.

use crate::common::{Exporter, TOKEN};
use ci_slo_store_pg::testing::{TestCerts, TestDatabase, TestServer};
use std::time::{Duration, Instant};

fn run(commit: &str) -> Vec<u8> {
    let now = chrono::Utc::now();
    let at = |m: i64| (now - chrono::Duration::minutes(m)).to_rfc3339();
    serde_json::to_vec(&serde_json::json!({
        "repository": "acme/api",
        "context": "unit",
        "commit": commit,
        "trigger": "push",
        "state": "success",
        "queued_at": at(30),
        "started_at": at(25),
        "finished_at": at(2),
        "tests": [{"name": "t1", "outcome": "passed", "duration_seconds": 1.5}],
    }))
    .unwrap()
}

fn gauge(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// The URL of `db` on `server` with `sslmode=verify-full` and `ca` as root.
fn verify_full_url(server: &TestServer, db: &TestDatabase, ca: &std::path::Path) -> String {
    format!(
        "postgres://{}:{}@127.0.0.1:{}/{}?sslmode=verify-full&sslrootcert={}",
        TestServer::USER,
        server.password(),
        server.port(),
        db.name(),
        ca.display()
    )
}

#[test]
fn serve_with_sslmode_verify_full_stores_a_run_over_tls_only() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let server =
        TestServer::start_tls(&certs.server_cert_pem, &certs.server_key_pem, true).unwrap();
    let db = server.database("serve_tls").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = certs.write_ca(d, "ca.pem").unwrap();
    let url = verify_full_url(&server, &db, &ca);
    let e = Exporter::start(
        d,
        &d.join("ci-slo-exporter.db"),
        &[],
        &[("CI_SLO_API_TOKEN", TOKEN), ("CI_SLO_DATABASE_URL", &url)],
    );
    let (status, reply) = e.post("/api/v1/runs", Some(TOKEN), &run("a1"));
    assert!(status == 200 || status == 201, "{status} {reply}");
    let scrape = e.wait_for("the stored run and the leadership", |s| {
        gauge(s, "ci_exporter_stored_runs") == Some(1.0)
            && gauge(s, "ci_exporter_leader") == Some(1.0)
    });
    assert!(scrape.contains("ci_runs_total{"), "{scrape}");
    // Every connection of the exporter to its database is TLS (the server
    // would refuse any other), and there are several: the writer, the
    // readers, the leadership's.
    let mut client = db.connect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (tls, plain) = loop {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = current_database() AND a.application_name = 'ci-slo-exporter'",
                &[],
            )
            .unwrap();
        let (tls, plain): (i64, i64) = (row.get(0), row.get(1));
        if tls >= 3 || Instant::now() > deadline {
            break (tls, plain);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(tls >= 3, "{tls} TLS connections");
    assert_eq!(plain, 0);
    let log = e.log();
    e.stop();
    let runs: i64 = client
        .query_one("SELECT count(*) FROM runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
    assert!(
        !log.contains(server.password()),
        "the password was printed: {log}"
    );
}

#[test]
fn serve_with_sslmode_verify_full_and_the_wrong_ca_refuses_to_start_saying_why() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let other = TestCerts::new(&["127.0.0.1"]);
    let server =
        TestServer::start_tls(&certs.server_cert_pem, &certs.server_key_pem, true).unwrap();
    let db = server.database("serve_tls_wrong_ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = other.write_ca(d, "other-ca.pem").unwrap();
    let url = verify_full_url(&server, &db, &ca);
    let err = Exporter::try_start(
        d,
        &d.join("ci-slo-exporter.db"),
        &[],
        &[("CI_SLO_API_TOKEN", TOKEN), ("CI_SLO_DATABASE_URL", &url)],
    )
    .err()
    .expect("refused to start");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(
        err.contains(&format!(
            "not signed by a CA of sslrootcert {}",
            ca.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains(server.password()),
        "the password was printed: {err}"
    );
}

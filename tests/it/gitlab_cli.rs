//! `ci-slo-exporter backfill gitlab` end to end: the real binary against a
//! local fake GitLab. A backfill that fails part-way says so and resumes to
//! complete data with no duplicate; a repeat downloads nothing twice; `serve`
//! then shows when the project last synced.

use crate::common;
use crate::fake_gitlab;

use chrono::{Duration, Utc};
use fake_gitlab::{Fake, Project, Trace, job, pipeline};
use std::process::Command;

fn ts(minutes_ago: i64) -> String {
    (Utc::now() - Duration::minutes(minutes_ago))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn backfill(
    dir: &std::path::Path,
    config: &str,
    db: &std::path::Path,
) -> (bool, serde_json::Value, String) {
    let out = common::sql::on_engine(&mut Command::new(common::BIN), db)
        .args([
            "--config", config, "backfill", "gitlab", "--days", "30", "--db",
        ])
        .arg(db)
        .current_dir(dir)
        .env("CI_SLO_GITLAB_TOKEN", "glpat-cli-test")
        .env("CI_SLO_LOG", "warn")
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        summary,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn runs(db: &std::path::Path) -> Vec<(String, u32, String)> {
    let mut runs: Vec<(String, u32, String)> =
        common::sql::rows(db, "SELECT context, attempt, state FROM runs")
            .into_iter()
            .map(|r| (r.text(0), r.int(1) as u32, r.text(2)))
            .collect();
    runs.sort();
    runs
}

#[test]
fn backfill_gitlab_fails_loudly_resumes_completely_and_never_downloads_twice() {
    let fake = Fake::default();
    let mut p = Project::default();
    p.pipelines
        .push(pipeline(7, "feed01", "failed", "schedule", &ts(30)));
    p.jobs.insert(
        7,
        vec![
            job(71, "test", "unit", "failed", &ts(40)),
            job(72, "test", "unit", "success", &ts(35)),
            job(74, "build", "compile", "failed", &ts(45)),
        ],
    );
    fake.projects.lock().unwrap().insert("g/p".into(), p);
    fake.traces.lock().unwrap().insert(
        74,
        Trace::Text("Compiling\nwrite /var/lib/docker/overlay: No space left on device\n".into()),
    );
    fake.traces.lock().unwrap().insert(
        71,
        Trace::Text("AssertionError: expected 3, got 4\n".into()),
    );
    // A storm longer than the retries (3 attempts): the first backfill cannot
    // finish; the resumed one meets the last two errors and then the answers.
    fake.inject.lock().unwrap().extend([500; 5]);
    let fake = fake_gitlab::start(fake);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[gitlab]\napi_url = \"{}\"\nprojects = [\"g/p\"]\nretry_base_delay = \"1ms\"\nmax_retries = 2\n",
            fake.api_url
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let db = d.join("gl.db");

    let (ok, summary, stderr) = backfill(d, config, &db);
    assert!(!ok, "a failed project fails the command");
    assert!(
        stderr.contains("run the backfill again to resume"),
        "{stderr}"
    );
    assert_eq!(summary["failed"], serde_json::json!(["g/p"]), "{summary}");

    let (ok, summary, stderr) = backfill(d, config, &db);
    assert!(ok, "{stderr}");
    assert_eq!(
        (summary["pipelines"].as_u64(), summary["traces"].as_u64()),
        (Some(1), Some(2)),
        "{summary}"
    );
    let stored = runs(&db);
    let jobs: Vec<(&str, u32, &str)> = stored
        .iter()
        .filter(|(c, _, _)| c != "pipeline")
        .map(|(c, a, s)| (c.as_str(), *a, s.as_str()))
        .collect();
    assert_eq!(
        jobs,
        vec![
            ("build / compile", 0, "failure"),
            ("test / unit", 0, "failure"),
            ("test / unit", 1, "success")
        ],
        "every job once, the retry as attempt 1: {stored:?}"
    );
    let class = common::sql::text(
        &db,
        "SELECT f.class FROM failures f JOIN runs r ON r.id = f.run_id WHERE r.context = 'build / compile'",
    );
    assert_eq!(
        class.as_deref(),
        Some("disk-full"),
        "the downloaded trace was classified"
    );

    let (ok, summary, stderr) = backfill(d, config, &db);
    assert!(ok, "{stderr}");
    assert_eq!(
        summary["traces"].as_u64(),
        Some(0),
        "nothing downloaded twice: {summary}"
    );
    assert_eq!(runs(&db), stored, "a repeated backfill changes nothing");
    let downloads = fake.fake.trace_downloads.lock().unwrap().clone();
    assert!(downloads.values().all(|n| *n == 1), "{downloads:?}");

    // serve polls on its own: a pipeline that appears after the backfill gets stored.
    {
        let mut projects = fake.fake.projects.lock().unwrap();
        let p = projects.get_mut("g/p").unwrap();
        p.pipelines
            .push(pipeline(8, "feed02", "success", "push", &ts(5)));
        p.jobs
            .insert(8, vec![job(81, "test", "lint", "success", &ts(8))]);
    }
    let e = common::Exporter::start(
        d,
        &db,
        &["--config", config],
        &[("CI_SLO_GITLAB_TOKEN", "glpat-cli-test")],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !runs(&db).iter().any(|(c, _, _)| c == "test / lint") {
        assert!(
            std::time::Instant::now() < deadline,
            "serve's poller did not store the new pipeline: {}",
            e.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let text = e.scrape(false);
    let synced = common::sample(
        &text,
        "ci_exporter_last_sync_timestamp_seconds{forge=\"gitlab\",repository=\"g/p\"}",
    )
    .expect("the project's last sync is exported");
    assert!(
        (Utc::now().timestamp() as f64 - synced).abs() < 600.0,
        "synced just now: {synced}"
    );
}

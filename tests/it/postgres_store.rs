//! `[store] url` / `CI_SLO_DATABASE_URL` select the PostgreSQL store: `serve`
//! on a real PostgreSQL (started by the test, ci_slo_store_pg::testing)
//! migrates it, stores and counts runs there, never prints the password and
//! never falls back to a SQLite file; several replicas on one database serve
//! the same counters and one of them leads the once-only work.

use crate::common::{self, Exporter, TOKEN};

use ci_slo_store_pg::testing::TestServer;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn serve(dir: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Output {
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(common::BIN);
    cmd.args(["--config", path.to_str().unwrap(), "serve"])
        .args([
            "--web.listen-address",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .current_dir(dir)
        .env_remove("CI_SLO_DATABASE_URL")
        .env("CI_SLO_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) fn api_run(commit: &str) -> Vec<u8> {
    static NOW: std::sync::LazyLock<chrono::DateTime<chrono::Utc>> =
        std::sync::LazyLock::new(chrono::Utc::now);
    let at = |m: i64| (*NOW - chrono::Duration::minutes(m)).to_rfc3339();
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

/// The value of an unlabelled gauge in a scrape.
pub(crate) fn gauge(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn serve_on_postgres_with_a_password_file_stores_and_counts_runs_there() {
    let server = TestServer::shared();
    let db = server.database("serve_file").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
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
    let file = d.join("ci-slo-exporter.db");
    // An empty CI_SLO_DATABASE_URL is unset: the file's URL is used.
    let e = Exporter::start(
        d,
        &file,
        &["--config", config.to_str().unwrap()],
        &[("CI_SLO_API_TOKEN", TOKEN), ("CI_SLO_DATABASE_URL", "")],
    );
    for commit in ["a1", "b2", "c3"] {
        let (status, reply) = e.post("/api/v1/runs", Some(TOKEN), &api_run(commit));
        assert!(status == 200 || status == 201, "{status} {reply}");
    }
    // A replay of a stored run changes nothing.
    let (status, reply) = e.post("/api/v1/runs", Some(TOKEN), &api_run("a1"));
    assert_eq!(status, 200, "{reply}");
    let scrape = e.wait_for("three stored runs", |s| {
        gauge(s, "ci_exporter_stored_runs") == Some(3.0)
    });
    assert!(
        scrape.contains("ci_runs_total{") && scrape.contains("state=\"success\""),
        "{scrape}"
    );
    assert_eq!(gauge(&scrape, "ci_exporter_leader"), Some(1.0), "{scrape}");
    let (status, run) = e.get("/api/v1/runs/1");
    assert_eq!(status, 200, "{run}");
    let log = e.log();
    e.stop();
    let mut client = db.connect().unwrap();
    let runs: i64 = client
        .query_one("SELECT count(*) FROM runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 3);
    let version: i64 = client
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, ci_slo_store_pg::schema::MIGRATIONS.len() as i64);
    assert!(log.contains("PostgreSQL store selected"), "{log}");
    assert!(
        !log.contains(server.password()),
        "the password was printed: {log}"
    );
    assert!(!file.exists(), "no SQLite file as a silent fallback");
}

#[test]
fn the_environment_url_wins_and_a_wrong_password_is_reported_masked() {
    let server = TestServer::shared();
    let db = server.database("serve_env").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The file's URL points nowhere; the environment's is used.
    let config = "[store]\nurl = \"postgres://nobody@127.0.0.1:1/nothing\"\n";
    let url = format!(
        "postgres://{}:wrong-{}@127.0.0.1:{}/{}",
        TestServer::USER,
        "pw-9z",
        server.port(),
        db.name()
    );
    let out = serve(dir.path(), config, &[("CI_SLO_DATABASE_URL", &url)]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("password authentication failed"), "{all}");
    assert!(
        all.contains(&format!(":***@127.0.0.1:{}", server.port())),
        "{all}"
    );
    assert!(
        !all.contains("wrong-pw-9z"),
        "the password was printed: {all}"
    );

    let good = format!(
        "postgres://{}:{}@127.0.0.1:{}/{}",
        TestServer::USER,
        server.password(),
        server.port(),
        db.name()
    );
    let path = dir.path().join("c.toml");
    let e = Exporter::start(
        dir.path(),
        &dir.path().join("unused.db"),
        &["--config", path.to_str().unwrap()],
        &[("CI_SLO_DATABASE_URL", &good)],
    );
    let log = e.log();
    e.stop();
    assert!(log.contains("PostgreSQL store selected"), "{log}");
    assert!(log.contains("CI_SLO_DATABASE_URL"), "{log}");
    assert!(
        !log.contains(server.password()),
        "the password was printed: {log}"
    );
}

#[test]
fn a_command_on_an_unreachable_postgres_store_fails_clearly_and_writes_no_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[store]\nurl = \"postgres://u@127.0.0.1:1/db\"\n").unwrap();
    let out = common::run(
        &[
            "--config",
            path.to_str().unwrap(),
            "backfill-openmetrics",
            "--instance",
            "x:1",
        ],
        dir.path(),
    );
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("cannot connect to PostgreSQL postgres://u@127.0.0.1:1/db"),
        "{all}"
    );
    assert!(!dir.path().join("ci-slo-exporter.db").exists());
}

#[test]
fn a_sharded_configuration_is_refused_with_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "shard = \"1/2\"\n[store]\nurl = \"postgres://u@127.0.0.1:1/db\"\n",
    )
    .unwrap();
    let out = serve(dir.path(), &std::fs::read_to_string(&path).unwrap(), &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("is for SQLite stores"), "{all}");
}

#[test]
fn two_replicas_on_one_database_serve_the_same_counters_and_one_of_them_leads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = common::database_url(&d.join("replicas.db"));
    let env = [
        ("CI_SLO_API_TOKEN", TOKEN),
        ("CI_SLO_DATABASE_URL", url.as_str()),
    ];
    let start = |name: &str| Exporter::start(d, &d.join(name), &[], &env);
    let (a, b) = (start("a.db"), start("b.db"));
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let (status, reply) = replica.post("/api/v1/runs", Some(TOKEN), &api_run(&format!("c{i}")));
        assert!(status == 200 || status == 201, "{status} {reply}");
    }
    for replica in [&a, &b] {
        replica.wait_for("ten stored runs on each replica", |s| {
            gauge(s, "ci_exporter_stored_runs") == Some(10.0)
        });
    }
    let leaders = |rs: &[&Exporter]| -> f64 {
        rs.iter()
            .map(|r| gauge(&r.scrape(false), "ci_exporter_leader").unwrap_or(0.0))
            .sum()
    };
    let took = wait_until("exactly one leader", Duration::from_secs(60), || {
        leaders(&[&a, &b]) == 1.0
    });
    eprintln!("one leader of two replicas after {took:?}");
    // The counters come from the database: the same on both.
    let series = |r: &Exporter| -> Vec<String> {
        r.scrape(false)
            .lines()
            .filter(|l| l.starts_with("ci_runs_total{") || l.starts_with("ci_slo_events_total{"))
            .map(String::from)
            .collect()
    };
    assert!(!series(&a).is_empty());
    assert_eq!(series(&a), series(&b));
    // The leader dies: the other takes the work over.
    let a_leads = gauge(&a.scrape(false), "ci_exporter_leader") == Some(1.0);
    let (dead, survivor) = if a_leads { (a, b) } else { (b, a) };
    dead.crash();
    let took = wait_until("the survivor leads", Duration::from_secs(60), || {
        gauge(&survivor.scrape(false), "ci_exporter_leader") == Some(1.0)
    });
    eprintln!("survivor leads {took:?} after the leader was SIGKILLed");
    assert!(
        survivor.log().contains("leadership gained"),
        "{}",
        survivor.log()
    );
}

/// The synchronous PostgreSQL clients each drive a tokio runtime of their
/// own: one dropped on a thread of `serve`'s runtime (the read pool's, when
/// the last handle to the store went at shutdown) panicked with "Cannot
/// start a runtime from within a runtime" and the process exited with 101
/// instead of 0. `serve` stopped by SIGTERM, and the one-shot commands, end
/// cleanly on PostgreSQL.
#[test]
fn serve_at_sigterm_and_the_one_shot_commands_exit_cleanly_on_postgres() {
    use crate::fake_gitlab::{self, Fake, Project, job, pipeline};
    let server = TestServer::shared();
    let db = server.database("clean_exit").unwrap();
    let url = server
        .url(db.name())
        .replacen("@", &format!(":{}@", server.password()), 1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let e = Exporter::start(
        d,
        &d.join("unused.db"),
        &[],
        &[("CI_SLO_API_TOKEN", TOKEN), ("CI_SLO_DATABASE_URL", &url)],
    );
    let (status, reply) = e.post("/api/v1/runs", Some(TOKEN), &api_run("e1"));
    assert_eq!(status, 201, "{reply}");
    // The readers and the writer have each served (a scrape, a UI page).
    e.wait_for("the run on /metrics", |s| {
        gauge(s, "ci_exporter_stored_runs") == Some(1.0)
    });
    assert_eq!(e.get("/api/v1/runs/1").0, 200);
    let log_path = e.stderr_path.clone();
    let exit = e.stop_status();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(exit.and_then(|s| s.code()), Some(0), "{exit:?}: {log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("stopped"), "{log}");

    // The one-shot commands on the same database.
    let one_shot = |args: &[&str], env: &[(&str, &str)]| -> Output {
        let mut cmd = Command::new(common::BIN);
        cmd.args(args)
            .current_dir(d)
            .env_remove("CI_SLO_API_TOKEN")
            .env("CI_SLO_DATABASE_URL", &url)
            .env("CI_SLO_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let junit = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/junit/mikepenz/mocha/mocha.xml"
    );
    let ingest = one_shot(
        &[
            "ingest",
            "--db",
            "x.db",
            "--repository",
            "acme/api",
            "--context",
            "junit",
            "--commit",
            "e2",
            "--junit",
            junit,
        ],
        &[],
    );
    let cockpit = d.join("test-results.db");
    crate::github_cockpit_import::cockpit_db(&cockpit);
    let import = one_shot(
        &[
            "import",
            "cockpit",
            cockpit.to_str().unwrap(),
            "--db",
            "x.db",
        ],
        &[],
    );
    let fake = Fake::default();
    let mut p = Project::default();
    let at = (chrono::Utc::now() - chrono::Duration::minutes(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    p.pipelines
        .push(pipeline(7, "feed01", "success", "push", &at));
    p.jobs
        .insert(7, vec![job(71, "test", "unit", "success", &at)]);
    fake.projects.lock().unwrap().insert("g/p".into(), p);
    let fake = fake_gitlab::start(fake);
    let config = d.join("gitlab.toml");
    std::fs::write(
        &config,
        format!(
            "[gitlab]\napi_url = \"{}\"\nprojects = [\"g/p\"]\n",
            fake.api_url
        ),
    )
    .unwrap();
    let backfill = one_shot(
        &[
            "--config",
            config.to_str().unwrap(),
            "backfill",
            "gitlab",
            "--days",
            "30",
            "--db",
            "x.db",
        ],
        &[("CI_SLO_GITLAB_TOKEN", "glpat-clean-exit")],
    );
    for (name, out) in [
        ("ingest", &ingest),
        ("import cockpit", &import),
        ("backfill gitlab", &backfill),
    ] {
        let all = text(out);
        assert_eq!(out.status.code(), Some(0), "{name}: {all}");
        assert!(!all.contains("panicked"), "{name}: {all}");
    }
    // Each wrote to PostgreSQL: the API's run, ingest's, the import's five,
    // the backfill's pipeline and job.
    let runs: i64 = db
        .connect()
        .unwrap()
        .query_one("SELECT count(*) FROM runs", &[])
        .unwrap()
        .get(0);
    assert!(runs >= 1 + 1 + 5 + 2, "{runs} runs");
}

/// Runs stored while no exporter served (here: a batched ingest that does
/// not fold, as a replica that stopped before its fold leaves them) are a
/// backlog of marks; `serve` folds it before its first snapshot and says so:
/// the log (and /readyz while it lasts) names how many runs and results,
/// and the counters count every run once it is ready.
#[test]
fn serve_folds_a_backlog_of_stored_runs_at_start_and_says_so() {
    use ci_slo_exporter::model::{
        Completeness, Forge, NewRun, RepositoryRef, RunState, TestOutcome, TestResult, Trigger,
    };
    use ci_slo_exporter::store::{Policy, Storage};
    let server = TestServer::shared();
    let db = server.database("backlog").unwrap();
    let url = server
        .url(db.name())
        .replacen('@', &format!(":{}@", server.password()), 1);
    let now = chrono::Utc::now();
    let run = |i: usize| NewRun {
        repository: RepositoryRef {
            forge: Forge::Generic,
            path: "acme/backlog".into(),
        },
        context: "unit".into(),
        commit: format!("{i:040x}"),
        external_id: Some(format!("job-{i}")),
        attempt_group: None,
        attempt: 0,
        trigger: Trigger::Push,
        trigger_pending: false,
        state: RunState::Success,
        queued_at: Some(now - chrono::Duration::minutes(30)),
        started_at: Some(now - chrono::Duration::minutes(29)),
        finished_at: Some(now - chrono::Duration::minutes(20)),
        url: None,
        log_url: None,
        change: None,
        tests: (0..50)
            .map(|t| TestResult {
                name: format!("suite.test_{t}"),
                outcome: if t == 7 && i.is_multiple_of(2) {
                    TestOutcome::Failed
                } else {
                    TestOutcome::Passed
                },
                duration_seconds: Some(0.1),
                retries: 0,
                retry_reasons: vec![],
                message: None,
            })
            .collect(),
        reports: vec![],
        failures: vec![],
        dependencies: Default::default(),
        source: "test".into(),
        completeness: Completeness::Whole,
    };
    let store =
        ci_slo_store_pg::PgStore::open_config(&db.config(), &db.name(), &mut |_| {}).unwrap();
    let policy = Policy::from_config(&ci_slo_exporter::config::Config::default());
    let runs: Vec<NewRun> = (0..6).map(run).collect();
    let mut store: Box<dyn Storage> = Box::new(store);
    store.ingest_batch(&runs, &policy, now).unwrap();
    assert_eq!(
        store.unfolded().unwrap(),
        (6, 300),
        "a backlog of 6 runs' marks"
    );

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let exporter = Exporter::start(
        d,
        &d.join("backlog.db"),
        &[],
        &[("CI_SLO_DATABASE_URL", url.as_str())],
    );
    // The log's fields are coloured: without the escapes.
    let mut log = String::new();
    let mut escaped = false;
    for c in exporter.log().chars() {
        match c {
            '\u{1b}' => escaped = true,
            'm' if escaped => escaped = false,
            _ if escaped => {}
            _ => log.push(c),
        }
    }
    assert!(
        log.contains("preparing: folding 6 stored runs (300 results) into the per-test counters"),
        "{log}"
    );
    assert!(
        log.contains("preparing: stored runs folded into the per-test counters")
            && log.contains("folded=6"),
        "{log}"
    );
    // Folded before the first snapshot: the exporter folded them, not a
    // later read, and its counters count every run.
    assert_eq!(store.unfolded().unwrap(), (0, 0));
    let scrape = exporter.scrape(false);
    assert_eq!(
        gauge(&scrape, "ci_exporter_stored_runs"),
        Some(6.0),
        "{scrape}"
    );
}

//! `[store] url` / `CI_SLO_DATABASE_URL` select the PostgreSQL store, which is
//! in progress: `serve` connects to a real PostgreSQL (started by the test,
//! ci_slo_store_pg::testing), migrates it and stops with a clear error; the
//! password is never printed; without a URL nothing changes (SQLite).

use crate::common;

use ci_slo_store_pg::testing::TestServer;
use std::process::{Command, Output};

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

#[test]
fn serve_with_a_postgres_url_and_password_file_migrates_and_says_it_cannot_serve_yet() {
    let server = TestServer::shared();
    let db = server.database("serve_file").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{}\n", server.password())).unwrap();
    let config = format!(
        "[store]\nurl = {:?}\npassword_file = {:?}\n",
        server.url(db.name()),
        pw.to_str().unwrap()
    );
    let out = serve(dir.path(), &config, &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("PostgreSQL store selected"), "{all}");
    let latest = ci_slo_store_pg::schema::MIGRATIONS.len() as i64;
    assert!(all.contains(&format!("schema version {latest})")), "{all}");
    assert!(
        !all.contains(server.password()),
        "the password was printed: {all}"
    );
    assert!(
        !dir.path().join("ci-slo-exporter.db").exists(),
        "no SQLite file as a silent fallback"
    );
    let version: i64 = db
        .connect()
        .unwrap()
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, latest);
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
    let out = serve(dir.path(), config, &[("CI_SLO_DATABASE_URL", &good)]);
    let all = text(&out);
    assert!(all.contains("PostgreSQL store selected"), "{all}");
    assert!(all.contains("from CI_SLO_DATABASE_URL"), "{all}");
    assert!(
        !all.contains(server.password()),
        "the password was printed: {all}"
    );
}

#[test]
fn other_commands_refuse_a_postgres_store_instead_of_using_the_sqlite_file() {
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
    assert!(all.contains("does not support yet"), "{all}");
}

//! `import cockpit PATH` on a database built here with the schema of
//! cockpit-project/bots' `store-tests` (TestRuns, Tests with seconds) plus a
//! TestCoverage table; the SLIs are compared with values computed by hand.

use crate::common;

use ci_slo_exporter::forge::github::import::synthetic_change_number;
use ci_slo_exporter::model::{Forge, RepositoryRef};
use ci_slo_exporter::store::{Storage, TestSlice};
use rusqlite::{Connection, params};

const A: &str = "aaaa1111bbbb2222cccc3333dddd4444eeee5555";
const B: &str = "bbbb1111bbbb2222cccc3333dddd4444eeee5555";
const T0: f64 = 1_790_000_000.0; // 2026-09-21

pub(crate) fn cockpit_db(path: &std::path::Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE if not exists TestRuns
            (id INTEGER PRIMARY KEY, project TEXT, revision TEXT, context TEXT, url TEXT, time TIMESTAMP,
             retry INTEGER, wait_seconds INTEGER, run_seconds INTEGER, state TEXT, description TEXT, UNIQUE (url));
         CREATE TABLE if not exists Tests
            (testname TEXT NOT NULL, retry_reason TEXT, failed INTEGER, run INTEGER NOT NULL, seconds INTEGER NOT NULL,
             FOREIGN KEY (run) REFERENCES TestRuns(id));
         CREATE TABLE TestCoverage (run INTEGER NOT NULL, coverage REAL);",
    )
    .unwrap();
    // (revision, context, retry, posted offset, wait, run, state)
    let runs = [
        (A, "fedora-42", 0, 0.0, 60, 1200, "failure"),
        (A, "fedora-42", 1, 1300.0, 600, 4000, "success"),
        (A, "debian-testing", 0, 0.0, 100, 1800, "success"),
        (B, "fedora-42", 0, 9000.0, 30, 600, "success"),
        (B, "debian-testing", 0, 9000.0, 400, 3000, "failure"),
    ];
    for (i, (rev, ctx, retry, at, wait, took, state)) in runs.iter().enumerate() {
        c.execute(
            "INSERT INTO TestRuns VALUES (null, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                "cockpit-project/cockpit",
                rev,
                ctx,
                format!("https://logs.example.org/pull-{i}/log.html"),
                T0 + at,
                retry,
                wait,
                took,
                state,
                Option::<String>::None
            ],
        )
        .unwrap();
    }
    // Run 1: testOne failed once (retried for a reason) then passed; testTwo failed.
    for (name, reason, failed, run, secs) in [
        (
            "test/verify/check-a TestA.testOne",
            Some("be robust against unstable tests"),
            1,
            1,
            30,
        ),
        ("test/verify/check-a TestA.testOne", None, 0, 1, 25),
        (
            "test/verify/check-a TestA.testTwo",
            Some("error: could not resolve host: x"),
            1,
            1,
            40,
        ),
        ("test/verify/check-a TestA.testOne", None, 0, 2, 20),
    ] {
        c.execute(
            "INSERT INTO Tests VALUES (?, ?, ?, ?, ?)",
            params![name, reason, failed, run, secs],
        )
        .unwrap();
    }
    c.execute("INSERT INTO TestCoverage VALUES (2, 71.5)", [])
        .unwrap();
}

#[test]
fn a_cockpit_database_imports_once_with_the_right_slis() {
    let dir = tempfile::tempdir().unwrap();
    let cockpit = dir.path().join("test-results.db");
    cockpit_db(&cockpit);
    let db = dir.path().join("ours.db");
    let args = [
        "import",
        "cockpit",
        cockpit.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ];
    let out = common::run(&args, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["runs_created"], 5);
    assert_eq!(stats["tests"], 3);
    assert_eq!(stats["coverage_rows"], 1);
    assert_eq!(
        (stats["changes"].as_u64(), stats["changes_decided"].as_u64()),
        (Some(2), Some(2))
    );

    let store = common::store(&db);
    let slis = |store: &dyn Storage| {
        // Every event (a window back to before the Cockpit runs).
        let all = std::time::Duration::from_secs(100 * 365 * 86_400);
        let counts = store
            .slo_counts_in_windows(chrono::Utc::now(), &[all], None)
            .unwrap()
            .remove(0);
        let mut v: Vec<(String, u64, u64)> = counts
            .into_iter()
            .map(|(slo, c)| (slo, c.good, c.total))
            .collect();
        v.sort();
        v
    };
    let before = slis(&*store);
    let get = |name: &str| {
        before
            .iter()
            .find(|(s, ..)| s == name)
            .map(|(_, g, t)| (*g, *t))
    };
    // waits 60, 600, 100, 30, 400: three within 300 s.
    assert_eq!(get("queue_time"), Some((3, 5)));
    // runs 1200, 4000, 1800, 600, 3000: four within 3600 s.
    assert_eq!(get("run_time"), Some((4, 5)));
    // A: fedora-42 green on its retry, debian green → green after one retry.
    // B: debian-testing failed → merged red.
    assert_eq!(get("merged_without_failures"), Some((1, 2)));
    assert_eq!(get("first_attempt_green"), Some((0, 2)));
    assert_eq!(get("green_within_one_retry"), Some((1, 2)));
    let repo = RepositoryRef {
        forge: Forge::Github,
        path: "cockpit-project/cockpit".into(),
    };
    let outcome = |commit: &str| {
        common::sql::row(
            &db,
            &format!(
                "SELECT c.outcome, c.retries FROM changes c JOIN repositories r ON r.id = c.repository_id
                 WHERE r.forge = 'github' AND r.path = 'cockpit-project/cockpit' AND c.number = {}",
                synthetic_change_number(commit)
            ),
        )
        .map(|r| (r.opt_text(0), r.opt_int(1)))
    };
    assert_eq!(
        outcome(A),
        Some((Some("green_after_one_retry".into()), Some(1)))
    );
    assert_eq!(outcome(B).unwrap().0.as_deref(), Some("merged_red"));

    // Tests with their retries, reasons and durations; coverage kept with its run.
    let first = store
        .run_by_external_id(&repo, "cockpit:https://logs.example.org/pull-0/log.html")
        .unwrap()
        .unwrap();
    let view = store.run_slice(first.id, TestSlice::ALL).unwrap().unwrap();
    assert_eq!(
        (view.queue_seconds, view.run_seconds, view.attempt),
        (Some(60.0), Some(1200.0), 0)
    );
    let one = view
        .tests
        .iter()
        .find(|t| t.name.ends_with("testOne"))
        .unwrap();
    assert_eq!(
        (one.outcome.as_str(), one.retries, one.duration_seconds),
        ("passed", 1, Some(55.0))
    );
    assert_eq!(
        one.retry_reasons,
        vec!["be robust against unstable tests".to_string()]
    );
    let two = view
        .tests
        .iter()
        .find(|t| t.name.ends_with("testTwo"))
        .unwrap();
    assert_eq!((two.outcome.as_str(), two.retries), ("failed", 0));
    let retry = store
        .run_by_external_id(&repo, "cockpit:https://logs.example.org/pull-1/log.html")
        .unwrap()
        .unwrap();
    let retry_view = store.run_slice(retry.id, TestSlice::ALL).unwrap().unwrap();
    assert_eq!(retry_view.attempt, 1);
    assert_eq!(retry_view.reports.len(), 1);
    assert_eq!(retry_view.reports[0].format, "coverage");
    drop(store);

    // Importing twice changes nothing.
    let out = common::run(&args, dir.path());
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            stats["runs_created"].as_u64(),
            stats["runs_unchanged"].as_u64()
        ),
        (Some(0), Some(5))
    );
    assert_eq!(stats["changes_decided"], 0);
    let store = common::store(&db);
    assert_eq!(slis(&*store), before);
    assert_eq!(store.run_count().unwrap(), 5);
}

const C: &str = "cccc1111bbbb2222cccc3333dddd4444eeee5555";

/// One revision tested with the same context in a project and in its branch
/// project (`cockpit-project/cockpit/rhel-8`), as store-tests records it, plus
/// rows that cannot be imported.
fn overlapping_db(path: &std::path::Path) {
    let c = Connection::open(path).unwrap();
    // Python's sqlite3 (store-tests) does not enforce foreign keys: orphans happen.
    c.execute_batch(
        "PRAGMA foreign_keys = OFF;
         CREATE TABLE if not exists TestRuns
            (id INTEGER PRIMARY KEY, project TEXT, revision TEXT, context TEXT, url TEXT, time TIMESTAMP,
             retry INTEGER, wait_seconds INTEGER, run_seconds INTEGER, state TEXT, description TEXT, UNIQUE (url));
         CREATE TABLE if not exists Tests
            (testname TEXT NOT NULL, retry_reason TEXT, failed INTEGER, run INTEGER NOT NULL, seconds INTEGER NOT NULL,
             FOREIGN KEY (run) REFERENCES TestRuns(id));",
    )
    .unwrap();
    // (project, context, retry, state)
    let runs = [
        ("cockpit-project/cockpit", "fedora-42", 0, "success"),
        ("cockpit-project/cockpit/rhel-8", "fedora-42", 0, "failure"),
        ("cockpit-project/cockpit/rhel-8", "fedora-42", 1, "success"),
        ("cockpit-project/cockpit", "debian-testing", 0, "success"),
        // Never finished: store-tests found no final status.
        ("cockpit-project/cockpit", "arch", 0, "pending"),
        // Not owner/name.
        ("cockpit", "fedora-42", 0, "success"),
    ];
    for (i, (project, context, retry, state)) in runs.iter().enumerate() {
        c.execute(
            "INSERT INTO TestRuns VALUES (null, ?, ?, ?, ?, ?, ?, 30, 600, ?, NULL)",
            params![
                project,
                C,
                context,
                format!("https://logs.example.org/pull-7-{i}/log.html"),
                T0 + 100.0 * i as f64,
                retry,
                state
            ],
        )
        .unwrap();
    }
    // The same test in both projects' first runs: it passed in one and failed in the other.
    for (name, reason, failed, run) in [
        (
            "test/verify/check-system-info TestSystemInfo.testBasic",
            None,
            0,
            1,
        ),
        (
            "test/verify/check-system-info TestSystemInfo.testBasic",
            Some("timeout"),
            1,
            2,
        ),
        (
            "test/verify/check-system-info TestSystemInfo.testBasic",
            None,
            0,
            3,
        ),
        (
            "test/verify/check-users TestAccounts.testExpire",
            None,
            0,
            4,
        ),
        // A test of a run that does not exist.
        ("test/verify/check-x TestX.testY", None, 0, 99),
    ] {
        c.execute(
            "INSERT INTO Tests VALUES (?, ?, ?, ?, 20)",
            params![name, reason, failed, run],
        )
        .unwrap();
    }
}

fn import_logged(cockpit: &std::path::Path, db: &std::path::Path) -> std::process::Output {
    common::sql::on_engine(&mut std::process::Command::new(common::BIN), db)
        .args(["import", "cockpit"])
        .arg(cockpit)
        .arg("--db")
        .arg(db)
        .env("CI_SLO_LOG", "info")
        .output()
        .unwrap()
}

/// (runs, test results, changes by outcome) in the store.
fn stored(db: &std::path::Path) -> (i64, i64, Vec<(String, i64)>) {
    let mut outcomes: Vec<(String, i64)> = common::sql::rows(
        db,
        "SELECT coalesce(outcome, 'undecided'), count(*) FROM changes GROUP BY 1",
    )
    .into_iter()
    .map(|r| (r.text(0), r.int(1)))
    .collect();
    outcomes.sort();
    (
        common::sql::count(db, "SELECT count(*) FROM runs"),
        common::sql::count(db, "SELECT count(*) FROM test_results"),
        outcomes,
    )
}

#[test]
fn one_revision_in_two_projects_keeps_every_run_and_importing_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cockpit = dir.path().join("test-results.db");
    overlapping_db(&cockpit);
    let db = dir.path().join("ours.db");
    let out = import_logged(&cockpit, &db);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["rows"], 6, "{stats}");
    assert_eq!(stats["runs_created"], 4, "{stats}");
    assert_eq!(stats["runs_skipped"], 2);
    assert_eq!(
        stats["skipped"],
        serde_json::json!({"pending": 1, "invalid_project": 1})
    );
    assert_eq!(stats["tests"], 4);
    assert_eq!(stats["test_rows_skipped"], 1, "the orphan row");
    assert_eq!(
        (stats["changes"].as_u64(), stats["changes_decided"].as_u64()),
        (Some(1), Some(1))
    );
    // Progress on a non-terminal: log lines, the last one complete.
    assert!(
        stderr.contains("6/6 runs (100%"),
        "no progress line in:\n{stderr}"
    );

    // Both projects' attempt 0 of fedora-42 are stored (with their tests); the
    // branch project's retry made it green, the main project was green: the
    // change is green after one retry.
    let first = stored(&db);
    assert_eq!(first.0, 4);
    assert_eq!(first.1, 4);
    assert_eq!(first.2, vec![("green_after_one_retry".to_string(), 1)]);
    let store = common::store(&db);
    let repo = RepositoryRef {
        forge: Forge::Github,
        path: "cockpit-project/cockpit".into(),
    };
    let states: Vec<String> = (0..3)
        .map(|i| {
            let r = store
                .run_by_external_id(
                    &repo,
                    &format!("cockpit:https://logs.example.org/pull-7-{i}/log.html"),
                )
                .unwrap()
                .unwrap();
            format!("{}:{}", r.attempt, r.state)
        })
        .collect();
    assert_eq!(states, ["0:success", "0:failure", "1:success"]);
    let counters = store.metric_state().unwrap();
    drop(store);

    // Importing again (a team following its store-tests database on a schedule) changes nothing.
    let out = import_logged(&cockpit, &db);
    assert!(out.status.success());
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            again["runs_created"].as_u64(),
            again["runs_updated"].as_u64(),
            again["runs_conflicting"].as_u64(),
            again["runs_unchanged"].as_u64(),
            again["changes_decided"].as_u64()
        ),
        (Some(0), Some(0), Some(0), Some(4), Some(0)),
        "{again}"
    );
    assert_eq!(stored(&db), first);
    assert_eq!(common::store(&db).metric_state().unwrap(), counters);
}

#[test]
fn the_cockpit_file_itself_or_another_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cockpit = d.join("test-results.db");
    overlapping_db(&cockpit);
    let before = std::fs::read(&cockpit).unwrap();
    // The same file, named another way.
    std::os::unix::fs::symlink(&cockpit, d.join("link.db")).unwrap();
    for db in [
        cockpit.clone(),
        d.join("link.db"),
        d.join(".").join("test-results.db"),
    ] {
        let out = import_logged(&cockpit, &db);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is the Cockpit database being imported"),
            "{}: {err}",
            db.display()
        );
    }
    assert_eq!(std::fs::read(&cockpit).unwrap(), before, "not written");

    let text = d.join("notes.db");
    std::fs::write(&text, "these are notes, not SQLite\n".repeat(200)).unwrap();
    let other = d.join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE runs (id INTEGER PRIMARY KEY)")
        .unwrap();
    for (file, says) in [
        (
            &text,
            "is not a Cockpit test-results.db: not an SQLite database",
        ),
        (
            &other,
            "is not a Cockpit test-results.db: it has no table TestRuns",
        ),
    ] {
        let ours = d.join("ours.db");
        let out = import_logged(file, &ours);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert!(!ours.exists(), "no store created for a bad source");
        if common::on_postgres() {
            assert_eq!(
                common::sql::count(
                    &ours,
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
                ),
                0,
                "no store created for a bad source"
            );
        }
    }
}

#[test]
fn on_a_terminal_the_import_shows_a_progress_bar() {
    let dir = tempfile::tempdir().unwrap();
    let cockpit = dir.path().join("test-results.db");
    overlapping_db(&cockpit);
    let db = dir.path().join("ours.db");
    // `script` (util-linux) runs the command on a pseudo-terminal.
    let command = format!(
        "{} import cockpit {} --db {}",
        common::BIN,
        cockpit.display(),
        db.display()
    );
    let out = common::sql::on_engine(&mut std::process::Command::new("script"), &db)
        .args(["-qec", &command, "/dev/null"])
        .env("CI_SLO_LOG", "warn")
        .output()
        .expect("script (util-linux) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("importing") && screen.contains("/6 runs") && screen.contains('['),
        "no progress bar on the terminal:\n{screen}"
    );
    assert!(screen.contains("\"runs_created\":4"), "{screen}");
}

/// The counters a store persisted, summed per family.
fn family_totals(db: &std::path::Path) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for c in common::store(db).metric_state().unwrap().counters {
        *out.entry(c.family).or_insert(0.0) += c.value;
    }
    out
}

#[test]
fn a_scheduled_import_counts_new_runs_live_and_history_loaded_on_purpose_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("ours.db");
    let first = d.join("first.db");
    overlapping_db(&first);
    assert!(import_logged(&first, &db).status.success());
    // The exporter has served from this database since.
    let e = common::Exporter::start(d, &db, &[], &[]);
    e.stop();
    let before = family_totals(&db);

    // store-tests added a merged revision, days after its runs: a scheduled
    // import counts it.
    let later = d.join("later.db");
    overlapping_db(&later);
    Connection::open(&later)
        .unwrap()
        .execute(
            "INSERT INTO TestRuns VALUES (null, 'cockpit-project/cockpit', ?, 'fedora-42',
               'https://logs.example.org/pull-8-0/log.html', ?, 0, 30, 600, 'failure', NULL)",
            params![B, T0 - 5.0 * 86400.0],
        )
        .unwrap();
    let out = import_logged(&later, &db);
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            stats["runs_created"].as_u64(),
            stats["changes_decided"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let after = family_totals(&db);
    assert_eq!(
        after["ci_runs"],
        before["ci_runs"] + 1.0,
        "the late run counts"
    );
    assert_eq!(
        after["ci_merged_changes"],
        before["ci_merged_changes"] + 1.0,
        "its merged change too"
    );
    assert_eq!(after.get("ci_exporter_backdated_events"), None);

    // The same kind of file loaded with --history: stored, not counted live.
    let history = d.join("history.db");
    overlapping_db(&history);
    Connection::open(&history)
        .unwrap()
        .execute(
            "UPDATE TestRuns SET url = url || '?old', revision = ?",
            params![A],
        )
        .unwrap();
    let out = common::sql::on_engine(&mut std::process::Command::new(common::BIN), &db)
        .args(["import", "cockpit"])
        .arg(&history)
        .arg("--db")
        .arg(&db)
        .arg("--history")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["runs_created"], 4);
    let loaded = family_totals(&db);
    assert_eq!(loaded["ci_runs"], after["ci_runs"]);
    assert_eq!(loaded["ci_merged_changes"], after["ci_merged_changes"]);
    assert!(loaded["ci_exporter_backdated_events"] >= 4.0, "{loaded:?}");
    assert_eq!(stored(&db).0, 9);
}

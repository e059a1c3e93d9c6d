//! The first slice of run ingest on PostgreSQL, held to the SQLite store's
//! answers: the same runs through both stores give the same statuses, rows
//! (runs, failures, fingerprints, reports, dependencies, changes) and
//! counters (histograms, buckets with exemplars, SLO events).

use chrono::{DateTime, Duration, Utc};
use ci_slo_core::config::Config;
use ci_slo_core::model::{
    ChangeRef, FailureEvidence, Forge, NewRun, RawReport, RepositoryRef, RunState, TestOutcome,
    TestResult, Trigger,
};
use ci_slo_store::{Policy, Store};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::testing::{TestDatabase, TestServer};

pub(crate) fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .to_utc()
}

pub(crate) fn run(
    path: &str,
    context: &str,
    attempt: u32,
    state: RunState,
    minutes: [Option<i64>; 3],
) -> NewRun {
    let t = |m: Option<i64>| m.map(|m| now() - Duration::minutes(m));
    NewRun {
        repository: RepositoryRef {
            forge: Forge::Github,
            path: path.into(),
        },
        context: context.into(),
        commit: "abc123".into(),
        attempt,
        trigger: Trigger::PullRequest,
        state,
        queued_at: t(minutes[0]),
        started_at: t(minutes[1]),
        finished_at: t(minutes[2]),
        source: "api".into(),
        ..NewRun::default()
    }
}

/// Every row of the tables ingest writes, as text, in a fixed order.
pub(crate) const DUMPS: &[&str] = &[
    "SELECT id || '|' || repository_id || '|' || context || '|' || attempt || '|' || trigger || '|' || state
        || '|' || coalesce(queued_at, -1) || '|' || coalesce(started_at, -1) || '|' || coalesce(finished_at, -1)
        || '|' || content_hash || '|' || queue_counted || '|' || final_counted || '|' || trigger_pending
     FROM runs ORDER BY id",
    "SELECT id || '|' || forge || '|' || path FROM repositories ORDER BY id",
    "SELECT slo || '|' || subject || '|' || repository_id || '|' || at || '|' || good FROM slo_events ORDER BY 1",
    "SELECT family || '|' || labels || '|' || value FROM metric_counters ORDER BY 1",
    "SELECT family || '|' || labels || '|' || sum || '|' || count FROM metric_histograms ORDER BY 1",
    "SELECT family || '|' || labels || '|' || le || '|' || count || '|' || coalesce(exemplar_run_id, -1)
        || '|' || coalesce(exemplar_value, -1) || '|' || coalesce(exemplar_ts, -1)
     FROM metric_buckets ORDER BY family, labels, le",
    "SELECT repository_id || '|' || hour || '|' || slo || '|' || good || '|' || total FROM slo_hourly ORDER BY 1",
    "SELECT id || '|' || run_id || '|' || coalesce(test_name, '-') || '|' || class || '|' || category || '|'
        || coalesce(line, -1) || '|' || evidence || '|' || context || '|' || coalesce(fingerprint_id, -1) || '|'
        || is_new || '|' || coalesce(at, -1) || '|' || coalesce(repository_id, -1) || '|'
        || coalesce(run_context, '-') || '|' || coalesce(context_before, -1) || '|' || coalesce(candidates, '-')
     FROM failures ORDER BY id",
    "SELECT id || '|' || hash || '|' || normalized || '|' || first_seen || '|' || last_seen || '|' || occurrences
     FROM fingerprints ORDER BY id",
    "SELECT run_id || '|' || format || '|' || name || '|' || content FROM reports ORDER BY id",
    "SELECT run_id || '|' || package || '|' || version FROM dependency_snapshots ORDER BY 1",
    "SELECT id || '|' || repository_id || '|' || number || '|' || coalesce(merged_at, -1) || '|' || last_activity
     FROM changes ORDER BY id",
    "SELECT id || '|' || coalesce(change_id, -1) FROM runs ORDER BY id",
    "SELECT id || '|' || repository_id || '|' || context || '|' || name || '|' || runs || '|' || passes || '|'
        || failures || '|' || flips || '|' || commits || '|' || flaky_commits || '|' || flaky_failures || '|'
        || coalesce(last_failed, -1) || '|' || coalesce(first_seen, -1) || '|' || coalesce(last_seen, -1) || '|'
        || coalesce(last_failure_run_id, -1) || '|' || coalesce(last_failure_at, -1) || '|'
        || coalesce(first_seen_flaky, -1)
     FROM tests ORDER BY id",
    "SELECT id || '|' || repository_id || '|' || sha FROM commits ORDER BY id",
    "SELECT run_id || '|' || test_id || '|' || outcome || '|' || coalesce(duration_seconds, -1) || '|' || retries
        || '|' || coalesce(retry_reasons, '-') || '|' || coalesce(message, '-')
     FROM results ORDER BY run_id, test_id",
    "SELECT test_id || '|' || commit_id || '|' || flags || '|' || failures FROM test_commits ORDER BY 1",
    "SELECT test_id || '|' || day || '|' || runs || '|' || passes || '|' || failures || '|' || flips || '|'
        || commits || '|' || flaky_commits || '|' || flaky_failures FROM test_days ORDER BY 1",
    "SELECT run_id || '|' || repository_id || '|' || at || '|' || good || '|' || total FROM test_events ORDER BY run_id",
    "SELECT run_id || '|' || repository_id || '|' || coalesce(queue_at, -1) || '|' || coalesce(queue_good, -1)
        || '|' || coalesce(run_time_at, -1) || '|' || coalesce(run_time_good, -1) || '|'
        || coalesce(completed_at, -1) || '|' || coalesce(completed_good, -1)
     FROM run_events ORDER BY run_id",
    "SELECT id || '|' || coalesce(external_id, '-') || '|' || coalesce(stored_url, '-') || '|' || url_in_id
        || '|' || coalesce(url, '-') || '|' || coalesce(log_url, '-')
     FROM runs ORDER BY id",
];

pub(crate) fn test(name: &str, outcome: TestOutcome, retries: u32) -> TestResult {
    TestResult {
        name: name.into(),
        outcome,
        duration_seconds: Some(1.5),
        retries,
        retry_reasons: if retries > 0 {
            vec!["timeout".into()]
        } else {
            Vec::new()
        },
        message: (outcome == TestOutcome::Failed).then(|| "assertion failed".into()),
    }
}

pub(crate) fn failure(class: &str, fingerprint: Option<&str>) -> FailureEvidence {
    FailureEvidence {
        class: class.into(),
        category: "infra".into(),
        line: Some(12),
        evidence: format!("fatal: {class} at 0x1234"),
        context: vec!["before".into(), "after".into()],
        context_before: Some(1),
        fingerprint: fingerprint.map(String::from),
        test_name: None,
        candidates: Vec::new(),
    }
}

pub(crate) fn sqlite_dump(store: &Store, sql: &str) -> Vec<String> {
    store
        .connection()
        .prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub(crate) fn pg_dump(store: &mut PgStore, sql: &str) -> Vec<String> {
    store
        .client()
        .query(sql, &[])
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

/// Rows of `|`-separated fields with numbers as numbers: SQLite prints
/// floats like 300.0, PostgreSQL like 300.
pub(crate) fn normalized(rows: Vec<String>) -> Vec<String> {
    rows.into_iter()
        .map(|row| {
            row.split('|')
                .map(|f| match f.parse::<f64>() {
                    Ok(x) if x.is_infinite() => "inf".to_string(),
                    Ok(x) => format!("{x}"),
                    Err(_) if f == "Inf" || f == "Infinity" => "inf".to_string(),
                    Err(_) => f.to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// Every table ingest writes holds the same rows in both stores.
pub(crate) fn assert_same(sqlite: &Store, pg: &mut PgStore) {
    for sql in DUMPS {
        let lite = sqlite_dump(sqlite, sql);
        assert_eq!(normalized(pg_dump(pg, sql)), normalized(lite), "{sql}");
    }
}

/// Both stores after the same runs: same answers, same rows.
pub(crate) fn same_in_both(
    hint: &str,
    policy: &Policy,
    serving: bool,
    runs: &[NewRun],
) -> (Store, PgStore, TestDatabase) {
    let mut sqlite = Store::open_in_memory().unwrap();
    let db = TestServer::shared().database(hint).unwrap();
    let mut pg = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    if serving {
        sqlite.mark_serving(now()).unwrap();
        pg.mark_serving(now()).unwrap();
    }
    for (i, r) in runs.iter().enumerate() {
        let a = sqlite.ingest_run(r, policy, now()).unwrap();
        let b = pg.ingest_run(r, policy, now()).unwrap();
        assert_eq!(b, a, "run {i}");
    }
    assert_same(&sqlite, &mut pg);
    (sqlite, pg, db)
}

#[test]
fn runs_through_their_states_are_stored_and_counted_as_sqlite_does() {
    let policy = Policy::from_config(&Config::default());
    let mut queued = run(
        "o/a",
        "ci/test",
        0,
        RunState::Pending,
        [Some(30), None, None],
    );
    let mut started = run(
        "o/a",
        "ci/test",
        0,
        RunState::Running,
        [Some(30), Some(20), None],
    );
    let mut done = run(
        "o/a",
        "ci/test",
        0,
        RunState::Success,
        [Some(30), Some(20), Some(5)],
    );
    let mut retry = run(
        "o/a",
        "ci/test",
        1,
        RunState::Failure,
        [Some(4), Some(3), Some(1)],
    );
    let mut other_repo = run(
        "o/b",
        "build",
        0,
        RunState::Failure,
        [Some(90), Some(10), Some(2)],
    );
    // Urls: a run identified by its log url (`import cockpit`) keeps it once,
    // in its id (`runs.url` gives it back); others store theirs.
    for r in [&mut queued, &mut started, &mut done] {
        r.external_id = Some("cockpit:https://logs.example/a/1".into());
        r.url = Some("https://logs.example/a/1".into());
    }
    retry.url = Some("https://ci.example/retry".into());
    other_repo.external_id = Some("gh:99".into());
    other_repo.url = Some("https://ci.example/99".into());
    // A failed run with failures (two of one class: counted once), a report,
    // dependencies and its change; then a running one that fails on update
    // with a fingerprint seen before (not new).
    let mut red = run(
        "o/b",
        "lint",
        0,
        RunState::Failure,
        [Some(50), Some(40), Some(30)],
    );
    red.failures = vec![
        failure("network", Some("fp-1")),
        failure("network", None),
        failure("oom", Some("fp-2")),
    ];
    red.reports = vec![RawReport {
        format: "tap".into(),
        name: "t.tap".into(),
        content: "ok 1".into(),
    }];
    red.dependencies.insert("serde".into(), "1.0".into());
    red.change = Some(ChangeRef {
        number: 7,
        merged_at: None,
    });
    let mut later = run(
        "o/b",
        "lint",
        0,
        RunState::Running,
        [Some(20), Some(15), None],
    );
    later.commit = "fff000".into();
    let mut later_red = later.clone();
    later_red.state = RunState::Failure;
    later_red.finished_at = Some(now() - Duration::minutes(2));
    later_red.failures = vec![failure("network", Some("fp-1"))];
    later_red.dependencies.insert("serde".into(), "1.1".into());
    // Test results: a pass, a failure and a flaky pass after a retry; the
    // retry of the same commit flips one and makes another flaky (a pass and
    // a failure on one commit); a later commit, a test gone and a skip.
    let mut tested = run(
        "o/c",
        "unit",
        0,
        RunState::Failure,
        [Some(60), Some(50), Some(40)],
    );
    tested.tests = vec![
        test("a", TestOutcome::Passed, 0),
        test("b", TestOutcome::Failed, 0),
        test("c", TestOutcome::Passed, 2),
        test("a", TestOutcome::Failed, 0), // listed twice: counted once
    ];
    let mut retried = run(
        "o/c",
        "unit",
        1,
        RunState::Success,
        [Some(35), Some(30), Some(25)],
    );
    retried.tests = vec![
        test("a", TestOutcome::Passed, 0),
        test("b", TestOutcome::Passed, 0),
        test("c", TestOutcome::Errored, 0),
    ];
    let mut next_commit = run(
        "o/c",
        "unit",
        0,
        RunState::Running,
        [Some(20), Some(15), None],
    );
    next_commit.commit = "0123abc".into();
    next_commit.tests = vec![
        test("b", TestOutcome::Failed, 0),
        test("d", TestOutcome::Skipped, 0),
    ];
    let mut next_done = next_commit.clone();
    next_done.state = RunState::Failure;
    next_done.finished_at = Some(now() - Duration::minutes(3));
    next_done.tests = vec![
        test("b", TestOutcome::Failed, 0),
        test("e", TestOutcome::Passed, 0),
    ];
    let mut ahead = run("o/b", "build", 0, RunState::Success, [Some(1), None, None]);
    ahead.commit = "def456".into();
    ahead.started_at = Some(now() + Duration::hours(3)); // impossible: dropped, counted
    let (_, mut pg, _db) = same_in_both(
        "states",
        &policy,
        false,
        &[
            queued,
            started,
            done.clone(),
            done.clone(), // identical replay: unchanged
            retry,
            other_repo,
            red.clone(),
            red,
            later,
            later_red,
            tested.clone(),
            tested,
            retried,
            next_commit,
            next_done,
            ahead,
        ],
    );
    // Nothing counted twice: one final state per run.
    let runs_total: f64 = pg
        .client()
        .query_one(
            "SELECT sum(value) FROM metric_counters WHERE family = 'ci_runs'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(runs_total, 9.0);
    // The comparison above had something to compare in every table (but
    // `slo_events`: a run's events are its `run_events` row, and ingest
    // records no event of another subject).
    for sql in DUMPS.iter().filter(|sql| !sql.contains("FROM slo_events")) {
        assert!(!pg_dump(&mut pg, sql).is_empty(), "{sql} is empty");
    }
    let urls: Vec<String> = pg_dump(
        &mut pg,
        "SELECT url_in_id || '|' || coalesce(stored_url, '-') || '|' || url FROM runs
         WHERE url IS NOT NULL ORDER BY id",
    );
    assert_eq!(
        urls,
        [
            "1|-|https://logs.example/a/1",
            "0|https://ci.example/retry|https://ci.example/retry",
            "0|https://ci.example/99|https://ci.example/99",
        ]
    );
    let future: f64 = pg
        .client()
        .query_one(
            "SELECT value FROM metric_counters WHERE labels = '[[\"reason\",\"future_time\"]]'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(future, 1.0);
}

#[test]
fn history_into_a_database_that_has_served_is_counted_as_backdated_as_sqlite_does() {
    let mut policy = Policy::from_config(&Config::default());
    policy.history = true;
    let done = run(
        "o/a",
        "ci/test",
        0,
        RunState::Success,
        [Some(30), Some(20), Some(5)],
    );
    let (_, mut pg, _db) = same_in_both("history", &policy, true, &[done]);
    let backdated: Vec<String> = pg_dump(
        &mut pg,
        "SELECT labels || '=' || value FROM metric_counters WHERE family = 'ci_exporter_backdated_events' ORDER BY 1",
    );
    assert_eq!(
        backdated,
        ["[[\"kind\",\"run\"]]=1", "[[\"kind\",\"slo_event\"]]=2"]
    );
}

#[test]
fn two_replicas_storing_results_of_the_same_tests_at_once_count_each_result_once() {
    let policy = Policy::from_config(&Config::default());
    let db = TestServer::shared().database("results_race").unwrap();
    drop(PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap());
    const RUNS: u32 = 15;
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for replica in 0..2u32 {
            let (db, barrier, policy) = (&db, &barrier, &policy);
            s.spawn(move || {
                let mut pg = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
                barrier.wait();
                for i in 0..RUNS {
                    let mut r = run(
                        "o/r",
                        "unit",
                        0,
                        RunState::Success,
                        [Some(9), Some(8), Some(7)],
                    );
                    r.external_id = Some(format!("{replica}-{i}"));
                    r.commit = format!("c{}", i % 4);
                    r.tests = (0..5)
                        .map(|t| {
                            let failed = (i + t + replica) % 3 == 0;
                            let outcome = if failed {
                                TestOutcome::Failed
                            } else {
                                TestOutcome::Passed
                            };
                            test(&format!("t{t}"), outcome, 0)
                        })
                        .collect();
                    pg.ingest_run(&r, policy, now()).unwrap();
                }
            });
        }
    });
    // The runs' counters folded (`fold.rs`) before the tables are read.
    PgStore::open_config(&db.config(), &"test", &mut |_| {})
        .unwrap()
        .fold()
        .unwrap();
    let mut client = db.connect().unwrap();
    let rows = client
        .query(
            "SELECT name, runs, passes + failures, commits FROM tests ORDER BY name",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 5);
    for r in rows {
        let (name, runs, outcomes, commits): (String, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(runs, 2 * i64::from(RUNS), "{name}");
        assert_eq!(outcomes, runs, "{name}");
        assert_eq!(commits, 4, "{name}: one per commit");
    }
    let days: i64 = client
        .query_one("SELECT sum(runs)::bigint FROM test_days", &[])
        .unwrap()
        .get(0);
    assert_eq!(days, 5 * 2 * i64::from(RUNS));
    let events: f64 = client
        .query_one(
            "SELECT sum(value) FROM metric_counters
             WHERE family = 'ci_slo_events' AND labels LIKE '%test_success%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(events, f64::from(5 * 2 * RUNS));
}

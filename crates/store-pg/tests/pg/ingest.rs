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
use ci_slo_store_pg::testing::{TestDatabase, TestServer};
use ci_slo_store_pg::{PgStore, PgStoreError};

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
];

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

fn sqlite_dump(store: &Store, sql: &str) -> Vec<String> {
    store
        .connection()
        .prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn pg_dump(store: &mut PgStore, sql: &str) -> Vec<String> {
    store
        .client()
        .query(sql, &[])
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every table ingest writes holds the same rows in both stores.
pub(crate) fn assert_same(sqlite: &Store, pg: &mut PgStore) {
    for sql in DUMPS {
        let lite = sqlite_dump(sqlite, sql);
        // SQLite prints floats like 300.0, PostgreSQL like 300: compare numbers as numbers.
        let norm = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
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
        };
        assert_eq!(norm(pg_dump(pg, sql)), norm(lite), "{sql}");
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
    let queued = run(
        "o/a",
        "ci/test",
        0,
        RunState::Pending,
        [Some(30), None, None],
    );
    let started = run(
        "o/a",
        "ci/test",
        0,
        RunState::Running,
        [Some(30), Some(20), None],
    );
    let done = run(
        "o/a",
        "ci/test",
        0,
        RunState::Success,
        [Some(30), Some(20), Some(5)],
    );
    let retry = run(
        "o/a",
        "ci/test",
        1,
        RunState::Failure,
        [Some(4), Some(3), Some(1)],
    );
    let other_repo = run(
        "o/b",
        "build",
        0,
        RunState::Failure,
        [Some(90), Some(10), Some(2)],
    );
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
    assert_eq!(runs_total, 6.0);
    // The comparison above had something to compare in every table.
    for sql in DUMPS {
        assert!(!pg_dump(&mut pg, sql).is_empty(), "{sql} is empty");
    }
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
fn what_the_slice_does_not_store_yet_is_refused_before_anything_is_written() {
    let policy = Policy::from_config(&Config::default());
    let db = TestServer::shared().database("not_yet").unwrap();
    let mut pg = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    let mut with_tests = run(
        "o/a",
        "ci/test",
        0,
        RunState::Success,
        [Some(3), Some(2), Some(1)],
    );
    with_tests.tests.push(TestResult {
        name: "t".into(),
        outcome: TestOutcome::Passed,
        duration_seconds: None,
        retries: 0,
        retry_reasons: Vec::new(),
        message: None,
    });
    let err = pg.ingest_run(&with_tests, &policy, now()).unwrap_err();
    assert!(matches!(err, PgStoreError::NotYet(_)), "{err}");
    assert!(err.to_string().contains("test results"), "{err}");
    assert_eq!(pg.run_count().unwrap(), 0);

    let done = run(
        "o/a",
        "ci/test",
        0,
        RunState::Success,
        [Some(3), Some(2), Some(1)],
    );
    pg.ingest_run(&done, &policy, now()).unwrap();
    let mut changed = done.clone();
    changed.url = Some("https://ci.example/1".into());
    let err = pg.ingest_run(&changed, &policy, now()).unwrap_err();
    assert!(err.to_string().contains("finished run"), "{err}");
}

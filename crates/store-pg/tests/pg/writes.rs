//! The PostgreSQL store's remaining writes, held to the SQLite store's
//! answers: new reports of finished runs (the revision rules), batches and
//! transactions, merged changes and settling, triggers decided late, lost
//! scheduled runs, workflow runs and stale events. The same calls on both
//! stores give the same answers, rows and counters.

use crate::ingest::{assert_same, failure, now, pg_dump, run, sqlite_dump, test};
use chrono::{DateTime, Duration, Utc};
use ci_slo_core::config::Config;
use ci_slo_core::model::{
    ChangeRef, Completeness, Forge, NewRun, RawReport, RepositoryRef, RunState, TestOutcome,
    Trigger,
};
use ci_slo_store::github::WorkflowRunInfo;
use ci_slo_store::{IngestStatus, Ingested, Policy, SettleStats, Store};
use ci_slo_store_pg::testing::{TestDatabase, TestServer};
use ci_slo_store_pg::{PgStore, PgStoreError};

/// What the writes here touch beyond ingest's tables (`ingest::DUMPS`).
const MORE: &[&str] = &[
    "SELECT id || '|' || repository_id || '|' || number || '|' || coalesce(head_sha, '-') || '|'
        || coalesce(merged_at, -1) || '|' || last_activity || '|' || coalesce(outcome, '-') || '|'
        || coalesce(retries, -1) || '|' || coalesce(missing, '-') || '|' || coalesce(decided_at, -1)
     FROM changes ORDER BY id",
    "SELECT repository || '|' || run_id || '|' || run_attempt || '|' || coalesce(event, '-') || '|'
        || coalesce(run_started_at, -1)
     FROM github_workflow_runs ORDER BY repository, run_id, run_attempt",
    "SELECT id || '|' || trigger || '|' || trigger_pending || '|' || updated_at FROM runs ORDER BY id",
];

/// Both stores hold the same rows: ingest's tables and [`MORE`].
fn assert_all_same(sqlite: &Store, pg: &mut PgStore) {
    assert_same(sqlite, pg);
    for sql in MORE {
        assert_eq!(pg_dump(pg, sql), sqlite_dump(sqlite, sql), "{sql}");
    }
}

fn stores(hint: &str) -> (Store, PgStore, TestDatabase) {
    let sqlite = Store::open_in_memory().unwrap();
    let db = TestServer::shared().database(hint).unwrap();
    let pg = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    (sqlite, pg, db)
}

/// The same run into both stores: the same answer, which is returned.
fn ingest_both(
    sqlite: &mut Store,
    pg: &mut PgStore,
    r: &NewRun,
    policy: &Policy,
    at: DateTime<Utc>,
) -> Ingested {
    let a = sqlite.ingest_run(r, policy, at).unwrap();
    let b = pg.ingest_run(r, policy, at).unwrap();
    assert_eq!(b, a, "{r:?}");
    a
}

fn counter(pg: &mut PgStore, family: &str, labels: &str) -> f64 {
    pg.client()
        .query_opt(
            "SELECT value FROM metric_counters WHERE family = $1 AND labels = $2",
            &[&family, &labels],
        )
        .unwrap()
        .map_or(0.0, |r| r.get(0))
}

const FINISHED_RUN_CHANGED: &str = "[[\"reason\",\"finished_run_changed\"]]";
const REJECTIONS: &str = "ci_exporter_data_quality_rejections";

#[test]
fn new_reports_of_finished_runs_are_judged_by_the_sqlite_store_s_rules() {
    let policy = Policy::from_config(&Config::default());
    let (mut sqlite, mut pg, _db) = stores("revisions");
    let mut both = |r: &NewRun| ingest_both(&mut sqlite, &mut pg, r, &policy, now());

    // A forge's finished run, told in parts: its tests known, no link yet.
    let mut part = run(
        "o/a",
        "ci/test",
        0,
        RunState::Failure,
        [Some(30), Some(20), Some(10)],
    );
    part.external_id = Some("gh:101".into());
    part.tests = vec![
        test("a", TestOutcome::Failed, 0),
        test("b", TestOutcome::Passed, 1),
    ];
    let id = both(&part).id;
    let unchanged = Ingested::new(id, IngestStatus::Unchanged);
    assert_eq!(both(&part), unchanged, "an identical replay");

    // A later part adds a link, failure evidence from the log and the
    // dependencies, and repeats the tests: an update, nothing counted twice.
    let mut more = part.clone();
    more.url = Some("https://ci.example/101".into());
    more.log_url = Some("https://ci.example/101/log".into());
    more.failures = vec![failure("oom", Some("fp-oom"))];
    more.dependencies.insert("libc".into(), "2.36".into());
    assert_eq!(both(&more), Ingested::new(id, IngestStatus::Updated));
    // The same evidence again adds nothing.
    let mut again = more.clone();
    again.source = "webhook".into();
    assert_eq!(both(&again), unchanged);

    // A "running" event delivered after the end is older news; a time
    // within the tolerance (whole seconds against ms) is the same time.
    let mut late = part.clone();
    late.state = RunState::Running;
    late.finished_at = None;
    assert_eq!(both(&late), unchanged);
    let mut precise = part.clone();
    precise.finished_at = precise.finished_at.map(|f| f + Duration::milliseconds(400));
    assert_eq!(both(&precise), unchanged);

    // A part that contradicts it: a conflict naming the fields, counted.
    let mut flipped = part.clone();
    flipped.state = RunState::Success;
    flipped.finished_at = flipped.finished_at.map(|f| f + Duration::minutes(5));
    flipped.tests[0].outcome = TestOutcome::Passed;
    let conflict = both(&flipped);
    assert_eq!(conflict.status, IngestStatus::Conflict);
    assert_eq!(conflict.differing, ["state", "finished_at", "tests"]);

    // A whole report (API) must repeat the run: reports, trigger, times.
    let mut whole = run(
        "o/b",
        "build",
        2,
        RunState::Success,
        [Some(300), Some(290), Some(200)],
    );
    whole.completeness = Completeness::Whole;
    whole.tests = vec![test("c", TestOutcome::Passed, 0)];
    whole.reports = vec![RawReport {
        format: "junit".into(),
        name: "junit.xml".into(),
        content: "<testsuite/>".into(),
    }];
    whole.change = Some(ChangeRef {
        number: 7,
        merged_at: None,
    });
    let whole_id = both(&whole).id;
    let mut reordered = whole.clone();
    reordered.source = "cli".into();
    assert_eq!(
        both(&reordered),
        Ingested::new(whole_id, IngestStatus::Unchanged),
        "a whole report repeating the run, from another source"
    );
    let mut changed = whole.clone();
    changed.trigger = Trigger::Other;
    changed.queued_at = None;
    changed.reports[0].content = "<testsuite tests=\"2\"/>".into();
    changed.change = Some(ChangeRef {
        number: 8,
        merged_at: None,
    });
    let conflict = both(&changed);
    assert_eq!(conflict.status, IngestStatus::Conflict);
    assert_eq!(
        conflict.differing,
        ["trigger", "queued_at", "change", "reports"]
    );
    let mut fewer_tests = whole.clone();
    fewer_tests.tests.clear();
    assert_eq!(both(&fewer_tests).differing, ["tests"]);

    // A finished run stored without tests, times or change: a part adds them
    // (the test counters move once).
    let mut bare = run("o/a", "lint", 0, RunState::Success, [None, None, Some(5)]);
    bare.external_id = Some("gh:202".into());
    let bare_id = both(&bare).id;
    let mut full = bare.clone();
    full.queued_at = Some(now() - Duration::minutes(9));
    full.started_at = Some(now() - Duration::minutes(8));
    full.tests = vec![
        test("a", TestOutcome::Passed, 0),
        test("d", TestOutcome::Skipped, 0),
    ];
    full.change = Some(ChangeRef {
        number: 9,
        merged_at: None,
    });
    assert_eq!(both(&full), Ingested::new(bare_id, IngestStatus::Updated));
    assert_eq!(both(&full), Ingested::new(bare_id, IngestStatus::Unchanged));

    // A finished run that waited for its trigger takes it from a later part
    // (and is counted then); a part still without it decides nothing.
    let mut waiting = run(
        "o/c",
        "deploy",
        0,
        RunState::Error,
        [Some(50), Some(40), Some(30)],
    );
    waiting.external_id = Some("gh:303".into());
    waiting.trigger = Trigger::Other;
    waiting.trigger_pending = true;
    let waiting_id = both(&waiting).id;
    let mut still = waiting.clone();
    still.log_url = None;
    still.source = "poll".into();
    assert_eq!(
        both(&still),
        Ingested::new(waiting_id, IngestStatus::Unchanged)
    );
    let mut decided = waiting.clone();
    decided.trigger = Trigger::Push;
    decided.trigger_pending = false;
    assert_eq!(
        both(&decided),
        Ingested::new(waiting_id, IngestStatus::Updated)
    );
    let mut contradicting = decided.clone();
    contradicting.trigger = Trigger::Schedule;
    assert_eq!(both(&contradicting).differing, ["trigger"]);

    assert_all_same(&sqlite, &mut pg);
    // Four conflicts, each counted once.
    assert_eq!(counter(&mut pg, REJECTIONS, FINISHED_RUN_CHANGED), 4.0);
}

#[test]
fn a_batch_is_stored_as_sqlite_stores_it_and_all_or_nothing() {
    let policy = Policy::from_config(&Config::default());
    let (mut sqlite, mut pg, _db) = stores("batch");
    let mut runs = Vec::new();
    for (i, path) in ["o/a", "o/b", "o/a", "o/c"].iter().enumerate() {
        let i = i as i64;
        let mut r = run(
            path,
            if i % 2 == 0 { "ci/test" } else { "build" },
            0,
            if i == 1 {
                RunState::Failure
            } else {
                RunState::Success
            },
            [
                Some(2000 - i * 300),
                Some(1990 - i * 300),
                Some(1900 - i * 300),
            ],
        );
        r.commit = format!("c{i}");
        r.tests = vec![
            test("a", TestOutcome::Passed, 0),
            test("b", TestOutcome::Failed, 0),
        ];
        if i == 1 {
            r.failures = vec![failure("network", Some("fp-net"))];
        }
        runs.push(r);
    }
    // A run twice in one batch: the second is its replay.
    runs.push(runs[0].clone());
    let a = sqlite.ingest_batch(&runs, &policy, now()).unwrap();
    let b = pg.ingest_batch(&runs, &policy, now()).unwrap();
    assert_eq!(b, a);
    assert_eq!(b[4].status, IngestStatus::Unchanged);
    assert_eq!(pg.ingest_batch(&[], &policy, now()).unwrap(), []);
    assert_all_same(&sqlite, &mut pg);

    // A batch that fails stores none of its runs, counts nothing.
    let before: Vec<String> = pg_dump(
        &mut pg,
        "SELECT family || labels || value FROM metric_counters ORDER BY 1",
    );
    let good = run(
        "o/d",
        "ci/test",
        0,
        RunState::Success,
        [Some(9), Some(8), Some(7)],
    );
    let mut bad = run(
        "o/d",
        "ci/test",
        1,
        RunState::Success,
        [Some(9), Some(8), Some(7)],
    );
    bad.context = "nul\u{0}byte".into();
    let err = pg.ingest_batch(&[good.clone(), bad], &policy, now());
    assert!(err.is_err(), "PostgreSQL refuses a NUL in text");
    assert_eq!(pg.run_count().unwrap(), 4);
    assert_eq!(
        pg_dump(
            &mut pg,
            "SELECT family || labels || value FROM metric_counters ORDER BY 1"
        ),
        before
    );
    // And the store goes on.
    assert_eq!(
        pg.ingest_batch(&[good], &policy, now()).unwrap()[0].status,
        IngestStatus::Created
    );
}

#[test]
fn in_transaction_commits_together_or_not_at_all_and_nests() {
    let policy = Policy::from_config(&Config::default());
    let (_sqlite, mut pg, _db) = stores("transaction");
    let first = run(
        "o/a",
        "ci/test",
        0,
        RunState::Success,
        [Some(9), Some(8), Some(7)],
    );
    let second = run(
        "o/a",
        "ci/test",
        1,
        RunState::Success,
        [Some(6), Some(5), Some(4)],
    );

    // A failure after two writes: neither stays. (The closure's error is
    // the caller's, as the storage interface's `StoreError` will be.)
    #[derive(Debug)]
    enum Failed {
        Store(#[allow(dead_code)] PgStoreError),
        Refused,
    }
    impl From<PgStoreError> for Failed {
        fn from(e: PgStoreError) -> Failed {
            Failed::Store(e)
        }
    }
    let out: Result<(), Failed> = pg.in_transaction(|s| {
        s.ingest_run(&first, &policy, now())?;
        s.count_stale_event()?;
        Err(Failed::Refused)
    });
    assert!(matches!(out, Err(Failed::Refused)), "{out:?}");
    assert_eq!(pg.run_count().unwrap(), 0);
    assert_eq!(
        counter(&mut pg, REJECTIONS, "[[\"reason\",\"stale_event\"]]"),
        0.0
    );

    // Nested: the inner one runs in the outer one, which commits both; a
    // write that fails inside rolls back alone (its savepoint).
    let ids = pg
        .in_transaction(|s| -> Result<_, PgStoreError> {
            let a = s.ingest_run(&first, &policy, now())?.id;
            let b = s
                .in_transaction(|s| s.ingest_run(&second, &policy, now()))?
                .id;
            assert!(s.store_sections(a, &[("x\u{0}".into(), 1)]).is_err());
            s.store_sections(a, &[("build".into(), 3)])?;
            Ok((a, b))
        })
        .unwrap();
    assert_eq!(pg.run_count().unwrap(), 2);
    assert_eq!(pg.sections(ids.0).unwrap(), [("build".to_string(), 3)]);
}

#[test]
fn merged_changes_settle_as_in_sqlite() {
    let mut policy = Policy::from_config(&Config::default());
    policy.required.insert(
        (Forge::Github, "o/a".into()),
        vec!["ci/test".into(), "lint".into()],
    );
    let (mut sqlite, mut pg, _db) = stores("settle");
    let repo = |path: &str| RepositoryRef {
        forge: Forge::Github,
        path: path.into(),
    };
    let merged = now() - Duration::hours(3);
    let change_run = |path: &str, context: &str, commit: &str, attempt, state, number| {
        let mut r = run(
            path,
            context,
            attempt,
            state,
            [Some(300), Some(290), Some(280)],
        );
        r.commit = commit.into();
        r.change = Some(ChangeRef {
            number,
            merged_at: None,
        });
        r
    };
    let runs = [
        // Change 1 of o/a: green after a retry of one required context.
        change_run("o/a", "ci/test", "h1", 0, RunState::Failure, 1),
        change_run("o/a", "ci/test", "h1", 1, RunState::Success, 1),
        change_run("o/a", "lint", "h1", 0, RunState::Success, 1),
        // Change 2 of o/a: a required context missing, merged red.
        change_run("o/a", "ci/test", "h2", 0, RunState::Failure, 2),
        // Change 3 of o/b: every context seen green at once; head from its runs.
        change_run("o/b", "build", "h3", 0, RunState::Success, 3),
        change_run("o/b", "docs", "h3", 0, RunState::Success, 3),
    ];
    for r in &runs {
        ingest_both(&mut sqlite, &mut pg, r, &policy, now());
    }
    let merges = [
        (repo("o/a"), 1, Some("h1")),
        (repo("o/a"), 2, Some("h2")),
        (repo("o/b"), 3, None),
        // Merged without a run: decided with no outcome, counted as a data problem.
        (repo("o/c"), 4, Some("h4")),
    ];
    for (r, n, h) in &merges {
        let activity = now() - Duration::hours(2);
        sqlite.record_merge(r, *n, *h, merged, activity).unwrap();
        pg.record_merge(r, *n, *h, merged, activity).unwrap();
    }
    // A second merge event keeps the first merge time and head.
    sqlite
        .record_merge(&repo("o/a"), 1, None, now(), now() - Duration::hours(2))
        .unwrap();
    pg.record_merge(&repo("o/a"), 1, None, now(), now() - Duration::hours(2))
        .unwrap();
    assert_all_same(&sqlite, &mut pg);

    // Not yet: the settle time has not passed since the last activity.
    let early = now() - Duration::hours(2) + Duration::minutes(1);
    let a = sqlite.settle(&policy, early, None).unwrap();
    let b = pg.settle(&policy, early, None).unwrap();
    assert_eq!(b, a);
    assert_eq!(b.changes_decided, 0);
    for at in [now(), now() + Duration::hours(1)] {
        let a = sqlite.settle(&policy, at, None).unwrap();
        let b = pg.settle(&policy, at, None).unwrap();
        assert_eq!(b, a);
        assert_all_same(&sqlite, &mut pg);
    }
    let decided: Vec<String> = pg_dump(
        &mut pg,
        "SELECT number || ':' || coalesce(outcome, '-') FROM changes ORDER BY number",
    );
    assert_eq!(decided.len(), 4);
    let undecided: Vec<_> = decided.iter().filter(|d| d.ends_with(":-")).collect();
    assert_eq!(undecided, ["4:-"], "{decided:?}");
    // A run after its change was decided is counted as a data problem.
    let late = change_run("o/a", "lint", "h1", 1, RunState::Success, 1);
    ingest_both(&mut sqlite, &mut pg, &late, &policy, now());
    assert_all_same(&sqlite, &mut pg);
}

#[test]
fn settle_with_no_wait_after_a_bulk_load_and_into_a_served_database_as_in_sqlite() {
    let mut policy = Policy::from_config(&Config::default());
    let (mut sqlite, mut pg, _db) = stores("settle_history");
    let repo = RepositoryRef {
        forge: Forge::Github,
        path: "o/a".into(),
    };
    // Empty: nothing to do.
    assert_eq!(
        pg.settle(&policy, now(), None).unwrap(),
        sqlite.settle(&policy, now(), None).unwrap()
    );
    sqlite.mark_serving(now()).unwrap();
    pg.mark_serving(now()).unwrap();
    policy.history = true;
    let mut r = run(
        "o/a",
        "ci/test",
        0,
        RunState::Success,
        [Some(30), Some(20), Some(10)],
    );
    r.change = Some(ChangeRef {
        number: 5,
        merged_at: Some(now() - Duration::minutes(5)),
    });
    ingest_both(&mut sqlite, &mut pg, &r, &policy, now());
    sqlite
        .record_merge(&repo, 5, Some("abc123"), now(), now())
        .unwrap();
    pg.record_merge(&repo, 5, Some("abc123"), now(), now())
        .unwrap();
    let a = sqlite.settle(&policy, now(), Some(0)).unwrap();
    let b = pg.settle(&policy, now(), Some(0)).unwrap();
    assert_eq!(b, a);
    assert_eq!(b.changes_decided, 1);
    assert_all_same(&sqlite, &mut pg);
}

#[test]
fn triggers_decided_late_or_never_and_lost_scheduled_runs_as_in_sqlite() {
    let policy = Policy::from_config(&Config::default());
    let (mut sqlite, mut pg, _db) = stores("triggers");
    let repo = |path: &str| RepositoryRef {
        forge: Forge::Github,
        path: path.into(),
    };
    let waiting = |path: &str, context: &str, group: &str, state, minutes: [Option<i64>; 3]| {
        let mut r = run(path, context, 0, state, minutes);
        r.attempt_group = Some(group.into());
        r.trigger = Trigger::Other;
        r.trigger_pending = true;
        r
    };
    let runs = [
        waiting(
            "o/a",
            "ci/test",
            "g1",
            RunState::Success,
            [Some(30), Some(20), Some(10)],
        ),
        waiting(
            "o/a",
            "lint",
            "g1",
            RunState::Running,
            [Some(30), Some(25), None],
        ),
        waiting(
            "o/a",
            "ci/test",
            "g2",
            RunState::Failure,
            [Some(60), Some(50), Some(40)],
        ),
        waiting(
            "o/b",
            "ci/test",
            "g1",
            RunState::Success,
            [Some(60), Some(50), Some(40)],
        ),
    ];
    let early = now() - Duration::hours(1);
    for r in &runs {
        ingest_both(&mut sqlite, &mut pg, r, &policy, early);
    }
    // Scheduled runs: one never finishes (lost), one finishes.
    let mut nightly = run(
        "o/c",
        "nightly",
        0,
        RunState::Running,
        [Some(3000), Some(2990), None],
    );
    nightly.trigger = Trigger::Schedule;
    let mut done = run(
        "o/c",
        "nightly",
        1,
        RunState::Success,
        [Some(3000), Some(2990), Some(2900)],
    );
    done.trigger = Trigger::Schedule;
    for r in [&nightly, &done] {
        ingest_both(&mut sqlite, &mut pg, r, &policy, now() - Duration::days(2));
    }
    assert_all_same(&sqlite, &mut pg);

    // A group's trigger becomes known: its waiting runs of that repository.
    let a = sqlite
        .decide_trigger(&repo("o/a"), "g1", Trigger::PullRequest, &policy, now())
        .unwrap();
    let b = pg
        .decide_trigger(&repo("o/a"), "g1", Trigger::PullRequest, &policy, now())
        .unwrap();
    assert_eq!(b, a);
    assert_eq!(b.len(), 2);
    // Again, or an unknown group: nothing waits.
    for (r, g) in [("o/a", "g1"), ("o/a", "nope"), ("o/x", "g1")] {
        let a = sqlite
            .decide_trigger(&repo(r), g, Trigger::Push, &policy, now())
            .unwrap();
        let b = pg
            .decide_trigger(&repo(r), g, Trigger::Push, &policy, now())
            .unwrap();
        assert_eq!((b.clone(), a.is_empty()), (a, true));
    }
    assert_all_same(&sqlite, &mut pg);

    // The rest waited too long: counted with the trigger they have; the
    // scheduled run that never finished is lost.
    let later = now() + Duration::days(1);
    let a = sqlite.settle(&policy, later, None).unwrap();
    let b = pg.settle(&policy, later, None).unwrap();
    assert_eq!(b, a);
    assert_eq!((b.triggers_expired, b.runs_lost), (2, 1));
    assert_all_same(&sqlite, &mut pg);
    // Settling again counts nothing twice.
    let a = sqlite.settle(&policy, later, None).unwrap();
    let b = pg.settle(&policy, later, None).unwrap();
    assert_eq!(b, a);
    assert_all_same(&sqlite, &mut pg);
}

#[test]
fn workflow_runs_and_stale_events_are_recorded_as_in_sqlite() {
    let (sqlite, mut pg, _db) = stores("workflow_runs");
    let t = |m| Some(now() - Duration::minutes(m));
    let calls = [
        ("o/a", 1, 1, None, t(10)),
        ("o/a", 1, 1, Some("push"), None),
        ("o/a", 1, 2, Some("push"), t(5)),
        ("o/a", 1, 2, None, None),
        ("o/b", u64::from(u32::MAX) + 7, 1, Some("schedule"), t(1)),
    ];
    for (repository, id, attempt, event, started) in calls {
        let info = WorkflowRunInfo {
            event: event.map(String::from),
            run_started_at: started,
        };
        sqlite
            .record_workflow_run(repository, id, attempt, &info)
            .unwrap();
        pg.record_workflow_run(repository, id, attempt, &info)
            .unwrap();
    }
    for _ in 0..3 {
        sqlite.count_stale_event().unwrap();
        pg.count_stale_event().unwrap();
    }
    assert_all_same(&sqlite, &mut pg);
    assert_eq!(
        counter(&mut pg, REJECTIONS, "[[\"reason\",\"stale_event\"]]"),
        3.0
    );
    assert_eq!(
        pg_dump(
            &mut pg,
            "SELECT coalesce(event, '-') || '|' || coalesce(run_started_at, -1) FROM github_workflow_runs
             WHERE repository = 'o/a' ORDER BY run_attempt"
        ),
        [
            format!("push|{}", (now() - Duration::minutes(10)).timestamp_millis()),
            format!("push|{}", (now() - Duration::minutes(5)).timestamp_millis()),
        ]
    );
}

/// Two replicas write at once: `first` runs on one inside a transaction,
/// `second` starts on the other, and the first commits only once the
/// second waits for one of its locks. Their answers.
fn race<A, B: Send>(
    db: &TestDatabase,
    first: impl FnOnce(&mut PgStore) -> A,
    second: impl FnOnce(&mut PgStore) -> B + Send,
) -> (A, B) {
    let open = || PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    let (mut a, mut b) = (open(), open());
    let mut watch = db.connect().unwrap();
    let (done, go) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let other = s.spawn(move || {
            go.recv().unwrap();
            second(&mut b)
        });
        let out = a
            .in_transaction(|a| -> Result<_, PgStoreError> {
                let out = first(a);
                done.send(()).unwrap();
                // Not a timing assertion: how long to wait for the other
                // replica to block before calling the test hung.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                loop {
                    let waiting: i64 = watch
                        .query_one(
                            "SELECT count(*) FROM pg_stat_activity
                             WHERE datname = current_database() AND wait_event_type = 'Lock'",
                            &[],
                        )
                        .unwrap()
                        .get(0);
                    if waiting > 0 {
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the other replica never waited"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Ok(out)
            })
            .unwrap();
        (out, other.join().unwrap())
    })
}

/// Two replicas settle at once ([`race`]).
fn settle_race(
    db: &TestDatabase,
    policy: &Policy,
    at: DateTime<Utc>,
) -> (SettleStats, SettleStats) {
    race(
        db,
        |a| a.settle(policy, at, None).unwrap(),
        |b| b.settle(policy, at, None).unwrap(),
    )
}

#[test]
fn two_replicas_settling_at_once_decide_and_count_everything_once() {
    let mut policy = Policy::from_config(&Config::default());
    policy
        .required
        .insert((Forge::Github, "o/a".into()), vec!["ci/test".into()]);
    let later = now() + Duration::days(1);
    let repo = RepositoryRef {
        forge: Forge::Github,
        path: "o/a".into(),
    };
    // What each round leaves to settle: runs waiting for their trigger;
    // merged changes; scheduled runs that never finished.
    type Round = fn(&mut NewRun, u32);
    let rounds: [(&str, Round); 3] = [
        ("race_triggers", |r, i| {
            r.attempt_group = Some(format!("g{i}"));
            r.trigger = Trigger::Other;
            r.trigger_pending = true;
        }),
        ("race_changes", |r, i| {
            r.change = Some(ChangeRef {
                number: i64::from(i),
                merged_at: Some(now() - Duration::hours(5)),
            });
        }),
        ("race_lost", |r, _| {
            r.trigger = Trigger::Schedule;
            r.state = RunState::Running;
            r.finished_at = None;
        }),
    ];
    for (hint, shape) in rounds {
        let mut sqlite = Store::open_in_memory().unwrap();
        let db = TestServer::shared().database(hint).unwrap();
        let mut pg = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
        for i in 0..6u32 {
            let mut r = run(
                "o/a",
                "ci/test",
                i % 2,
                if i % 3 == 0 {
                    RunState::Failure
                } else {
                    RunState::Success
                },
                [Some(600), Some(590), Some(500)],
            );
            r.commit = format!("c{}", i / 2);
            shape(&mut r, i / 2);
            ingest_both(
                &mut sqlite,
                &mut pg,
                &r,
                &policy,
                now() - Duration::hours(4),
            );
        }
        if hint == "race_changes" {
            for n in 0..3 {
                sqlite
                    .record_merge(&repo, n, None, now() - Duration::hours(5), now())
                    .unwrap();
                pg.record_merge(&repo, n, None, now() - Duration::hours(5), now())
                    .unwrap();
            }
        }
        let expected = sqlite.settle(&policy, later, None).unwrap();
        assert_ne!(
            expected,
            SettleStats::default(),
            "{hint}: something to settle"
        );
        let (first, second) = settle_race(&db, &policy, later);
        assert_eq!(first, expected, "{hint}");
        assert_eq!(
            second,
            SettleStats::default(),
            "{hint}: nothing left, nothing twice"
        );
        assert_all_same(&sqlite, &mut pg);
    }
}

#[test]
fn two_replicas_storing_the_same_news_of_a_run_at_once_store_and_count_it_once() {
    let policy = Policy::from_config(&Config::default());
    let (mut sqlite, mut pg, db) = stores("news_race");
    let mut running = run(
        "o/a",
        "ci/test",
        0,
        RunState::Running,
        [Some(30), Some(20), None],
    );
    running.external_id = Some("gh:1".into());
    ingest_both(&mut sqlite, &mut pg, &running, &policy, now());
    // The end of the run, from a webhook and a poller at once.
    let mut finished = running.clone();
    finished.state = RunState::Failure;
    finished.finished_at = Some(now() - Duration::minutes(10));
    finished.tests = vec![
        test("a", TestOutcome::Failed, 0),
        test("b", TestOutcome::Passed, 0),
    ];
    // Then failure evidence from its log, found by two replicas at once.
    let mut evidence = finished.clone();
    evidence.failures = vec![failure("oom", Some("fp-oom"))];
    for news in [&finished, &evidence] {
        let expected = sqlite.ingest_run(news, &policy, now()).unwrap();
        assert_eq!(expected.status, IngestStatus::Updated);
        let (first, second) = race(
            &db,
            |a| a.ingest_run(news, &policy, now()).unwrap(),
            |b| b.ingest_run(news, &policy, now()).unwrap(),
        );
        assert_eq!(first, expected);
        assert_eq!(second, Ingested::new(expected.id, IngestStatus::Unchanged));
        assert_all_same(&sqlite, &mut pg);
    }
}

/// How many times the counter tables were vacuumed by hand (not by
/// autovacuum), as the server counts it.
fn manual_vacuums(pg: &mut PgStore) -> i64 {
    pg.client()
        .query_one(
            "SELECT coalesce(sum(vacuum_count), 0)::bigint FROM pg_stat_user_tables
             WHERE relname IN ('tests', 'test_days')",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn the_counter_tables_are_vacuumed_after_a_commit_once_enough_rows_moved_and_answers_stay() {
    let policy = Policy::from_config(&Config::default());
    let (mut sqlite, mut pg, _db) = stores("counter_vacuum");
    // Runs of 40 tests: due after 100 moved rows, i.e. within the third run.
    pg.set_counter_vacuum_every(100);
    let runs: Vec<NewRun> = (0..5i64)
        .map(|i| {
            // Two attempts of each commit: its second run moves `test_commits`.
            let mut r = run(
                "o/a",
                "ci/test",
                (i % 2) as u32,
                RunState::Success,
                [
                    Some(2000 - i * 100),
                    Some(1990 - i * 100),
                    Some(1900 - i * 100),
                ],
            );
            r.commit = format!("c{}", i / 2);
            r.tests = (0..40)
                .map(|t| {
                    let failed = (t + i) % 7 == 0;
                    test(
                        &format!("t{t}"),
                        if failed {
                            TestOutcome::Failed
                        } else {
                            TestOutcome::Passed
                        },
                        0,
                    )
                })
                .collect();
            r
        })
        .collect();
    // Two runs one by one, each folded: 80 rows moved, nothing due yet.
    for r in &runs[..2] {
        ingest_both(&mut sqlite, &mut pg, r, &policy, now());
        assert_eq!(pg.fold().unwrap(), 1);
    }
    assert_eq!(pg.counter_vacuums(), 0);
    // The rows are moved by the fold (`fold.rs`), not by the runs'
    // transactions; after the fold's commit (40 rows more: the batch's three
    // runs folded at once write each test's row once) the tables are.
    let a = sqlite.ingest_batch(&runs[2..], &policy, now()).unwrap();
    let b = pg.ingest_batch(&runs[2..], &policy, now()).unwrap();
    assert_eq!(b, a);
    assert_eq!(pg.counter_vacuums(), 0);
    pg.fold().unwrap();
    assert_eq!(pg.counter_vacuums(), 1);
    assert!(manual_vacuums(&mut pg) >= 2, "both tables vacuumed");
    // Every counter as SQLite's.
    assert_all_same(&sqlite, &mut pg);
    // A replay moves nothing, and 0 turns it off.
    pg.set_counter_vacuum_every(0);
    for r in &runs {
        assert_eq!(
            pg.ingest_run(r, &policy, now()).unwrap().status,
            IngestStatus::Unchanged
        );
    }
    assert_eq!(pg.counter_vacuums(), 1);
}

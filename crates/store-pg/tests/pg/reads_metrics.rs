//! The reads of `/metrics`, the history backfill and the forge adapters on
//! PostgreSQL, held to the SQLite store's answers: the same history (several
//! repositories and contexts over ten days, retries, tests passing, failing
//! and flaky, failures with fingerprints, merged changes, scheduled runs,
//! runs waiting for their trigger) into both stores, the same answers, on
//! the edges too (an empty store, unknown ids, window boundaries).

use crate::ingest::{failure, now, run, test};
use chrono::{DateTime, Duration, Utc};
use ci_slo_core::config::Config;
use ci_slo_core::model::{
    ChangeRef, DurationLimits, Forge, NewRun, RepositoryRef, RunState, TestOutcome, Trigger,
};
use ci_slo_store::{Policy, Store, SyncState};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::testing::TestServer;

const REPOS: [&str; 3] = ["o/a", "o/b", "g/c"];
const DAY_MINUTES: i64 = 1440;

fn repo(path: &str) -> RepositoryRef {
    RepositoryRef {
        forge: if path.starts_with("g/") {
            Forge::Gitlab
        } else {
            Forge::Github
        },
        path: path.into(),
    }
}

/// Ten days of runs: per repository, day and context a first attempt (red
/// every third day, with failures and a flaky test) and, when red, a green
/// retry; GitLab's runs by external id; merged changes; nightly runs; and
/// runs still queued, running, waiting for their trigger, or with a start
/// before their queueing (a data-quality rejection).
fn history() -> Vec<NewRun> {
    let mut runs = Vec::new();
    for day in (0..10i64).rev() {
        for (ri, path) in REPOS.iter().enumerate() {
            for (ci, context) in ["ci/test", "build"].iter().enumerate() {
                let base = day * DAY_MINUTES + 37 * ri as i64 + 180 * ci as i64 + 60;
                let red = (day + ri as i64) % 3 == 0;
                let commit = format!("{path}-{day}");
                let mut attempts = vec![(0u32, red)];
                if red {
                    attempts.push((1, false));
                }
                for (attempt, failed) in attempts {
                    let offset = base - 45 * attempt as i64;
                    let mut r = run(
                        path,
                        context,
                        attempt,
                        if failed {
                            RunState::Failure
                        } else {
                            RunState::Success
                        },
                        [Some(offset + 30), Some(offset + 20), Some(offset + 5)],
                    );
                    r.repository = repo(path);
                    r.commit = commit.clone();
                    r.trigger = match (day % 4, ci) {
                        (0, 1) => Trigger::Schedule,
                        (_, 1) => Trigger::Push,
                        _ => Trigger::PullRequest,
                    };
                    if path.starts_with("g/") {
                        r.external_id = Some(format!("job:{day}{ci}{attempt}"));
                        r.url = Some(format!("https://gitlab.example/{day}/{ci}/{attempt}"));
                        r.log_url =
                            Some(format!("https://gitlab.example/{day}/{ci}/{attempt}/log"));
                    }
                    r.tests = vec![
                        test("t::passes", TestOutcome::Passed, 0),
                        test(
                            "t::flaky",
                            if failed {
                                TestOutcome::Failed
                            } else {
                                TestOutcome::Passed
                            },
                            u32::from(day % 5 == 1),
                        ),
                        test("t::skipped", TestOutcome::Skipped, 0),
                    ];
                    if *path == "o/b" {
                        r.tests.push(test("t::broken", TestOutcome::Failed, 0));
                    }
                    if failed {
                        r.failures = vec![
                            failure("oom", Some("fp-oom")),
                            failure("oom", Some("fp-oom-2")),
                            failure("timeout", Some(&format!("fp-{day}"))),
                            failure("network", None),
                        ];
                    }
                    if *path == "o/a" && ci == 0 {
                        r.change = Some(ChangeRef {
                            number: day,
                            merged_at: (day % 2 == 0)
                                .then(|| now() - Duration::minutes(offset - 60)),
                        });
                    }
                    runs.push(r);
                }
            }
        }
    }
    // Still queued, running, and a start before the queueing.
    runs.push(run(
        "o/a",
        "lint",
        0,
        RunState::Pending,
        [Some(10), None, None],
    ));
    runs.push(run(
        "o/b",
        "lint",
        0,
        RunState::Running,
        [Some(10), Some(8), None],
    ));
    runs.push(run(
        "o/b",
        "odd",
        0,
        RunState::Success,
        [Some(10), Some(12), Some(2)],
    ));
    // Waiting for its trigger (an attempt group: not an attempt of its own).
    let mut waiting = run(
        "o/a",
        "ci/test",
        3,
        RunState::Success,
        [Some(9), Some(8), Some(7)],
    );
    waiting.commit = "o/a-0".into();
    waiting.attempt_group = Some("wf-1".into());
    waiting.trigger_pending = true;
    runs.push(waiting);
    // Two attempts of the same number, by external id: the first stored wins.
    for (id, minutes) in [("job:tie-1", 30), ("job:tie-2", 20)] {
        let mut r = run(
            "g/c",
            "deploy",
            2,
            RunState::Success,
            [Some(minutes + 2), Some(minutes + 1), Some(minutes)],
        );
        r.repository = repo("g/c");
        r.commit = "tie".into();
        r.external_id = Some(id.into());
        runs.push(r);
    }
    runs
}

/// What settling decides for merged changes, written alike into both
/// stores (the PostgreSQL store does not settle yet).
const DECIDE: &[&str] = &[
    "UPDATE changes SET decided_at = merged_at + 1000, outcome = 'green_first_attempt', retries = 0
     WHERE number = 0",
    "UPDATE changes SET decided_at = merged_at + 1000, outcome = 'green_after_one_retry', retries = 1
     WHERE number = 2",
    "UPDATE changes SET decided_at = merged_at + 1000, outcome = 'merged_red', retries = 2 WHERE number = 6",
    "UPDATE changes SET decided_at = merged_at + 1000, outcome = NULL, retries = NULL WHERE number = 8",
];

/// Workflow runs: an attempt without its event, one with it, another run.
const WORKFLOW_RUNS: &[&str] = &[
    "INSERT INTO github_workflow_runs (repository, run_id, run_attempt, event, run_started_at)
     VALUES ('o/a', 7, 1, NULL, 1772300000000), ('o/a', 7, 2, 'schedule', NULL),
            ('o/a', 7, 3, 'push', 1772310000000), ('o/b', 8, 1, 'pull_request', 1772320000000)",
];

fn both(hint: &str) -> (Store, PgStore, ci_slo_store_pg::testing::TestDatabase) {
    let policy = Policy::from_config(&Config::default());
    // Not `same_in_both`: the tables differ in one way the reads here do
    // not show, fingerprint ids (PostgreSQL's identity spends a value on
    // every upsert of a fingerprint seen before; SQLite's rowid does not).
    let (mut sqlite, mut pg, db) = empty(hint);
    for (i, r) in history().iter().enumerate() {
        let a = sqlite.ingest_run(r, &policy, now()).unwrap();
        let b = pg.ingest_run(r, &policy, now()).unwrap();
        assert_eq!(b, a, "run {i}");
    }
    for sql in DECIDE.iter().chain(WORKFLOW_RUNS) {
        let a = sqlite.connection().execute(sql, []).unwrap();
        let b = pg.client().execute(*sql, &[]).unwrap();
        assert_eq!(b as usize, a, "{sql}");
    }
    (sqlite, pg, db)
}

fn empty(hint: &str) -> (Store, PgStore, ci_slo_store_pg::testing::TestDatabase) {
    let sqlite = Store::open_in_memory().unwrap();
    let db = TestServer::shared().database(hint).unwrap();
    let pg = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    (sqlite, pg, db)
}

/// Every counted event, as text, sorted (the order is unspecified).
/// Where a store's counted events go.
type Emit<'a> = &'a mut dyn FnMut(ci_slo_store::timeline::TimedEvent);

fn events(store: &dyn Fn(Emit<'_>)) -> Vec<String> {
    let mut out = Vec::new();
    store(&mut |e| out.push(format!("{e:?}")));
    out.sort();
    out
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// The `/metrics` reads of both stores agree.
fn assert_metrics_reads_agree(sqlite: &Store, pg: &PgStore, event_times: &[i64]) {
    assert_eq!(pg.metric_state().unwrap(), sqlite.metric_state().unwrap());
    for limits in [
        DurationLimits::default(),
        DurationLimits {
            max_queue_seconds: 60.0,
            max_run_seconds: 300.0,
        },
    ] {
        let lite = events(&|emit| sqlite.counted_events(limits, emit).unwrap());
        let post = events(&|emit| pg.counted_events(limits, emit).unwrap());
        assert_eq!(post, lite, "{limits:?}");
    }
    let windows: Vec<std::time::Duration> =
        [0u64, 1, 3_600, 5_400, 86_400, 3 * 86_400, 30 * 86_400]
            .into_iter()
            .map(std::time::Duration::from_secs)
            .chain([std::time::Duration::MAX])
            .collect();
    // A whole hour, a time inside one, and the hour's last millisecond; and
    // an hour's window beginning just before, at and just after each of
    // `event_times`.
    let mut ats = vec![
        now(),
        now() - Duration::minutes(1_000_017),
        utc("2026-02-27T07:13:21.345Z"),
        utc("2026-02-25T09:59:59.999Z"),
    ];
    for at in event_times {
        for ms in [-1, 0, 1] {
            ats.push(ci_slo_store::from_ms(at + 3_600_000 + ms));
        }
    }
    for at in ats {
        for repository in [None, Some("o/a"), Some("g/c"), Some("nowhere")] {
            assert_eq!(
                pg.slo_counts_in_windows(at, &windows, repository).unwrap(),
                sqlite
                    .slo_counts_in_windows(at, &windows, repository)
                    .unwrap(),
                "{at} {repository:?}"
            );
        }
    }
    assert_eq!(
        pg.slo_counts_in_windows(now(), &[], None).unwrap(),
        Vec::new()
    );
    let sorted = |mut v: Vec<(String, String, String, ci_slo_core::flaky::TestStats)>| {
        v.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        v
    };
    // A day's first millisecond, inside a day, before everything, after everything.
    for since in [
        utc("2026-02-26T00:00:00Z"),
        utc("2026-02-26T23:59:59.999Z"),
        utc("2020-01-01T00:00:00Z"),
        utc("2027-01-01T00:00:00Z"),
    ] {
        for min_runs in [0, 1, 3, 100] {
            assert_eq!(
                sorted(pg.test_stats(since, min_runs).unwrap()),
                sorted(sqlite.test_stats(since, min_runs).unwrap()),
                "{since} {min_runs}"
            );
        }
    }
    let today = now().timestamp_millis().div_euclid(86_400_000);
    for (from, to) in [
        (today - 20, today + 1),
        (today - 3, today - 1),
        (today, today),
        (today - 1, today - 5),
    ] {
        assert_eq!(
            format!("{:?}", pg.test_day_counts(from, to).unwrap()),
            format!("{:?}", sqlite.test_day_counts(from, to).unwrap()),
            "{from}..={to}"
        );
    }
    for first_days in [
        vec![],
        vec![today],
        vec![today - 1, today - 7, today - 30],
        vec![today + 1],
    ] {
        assert_eq!(
            pg.test_runs_in_windows(&first_days).unwrap(),
            sqlite.test_runs_in_windows(&first_days).unwrap(),
            "{first_days:?}"
        );
    }
    assert_eq!(pg.last_syncs().unwrap(), sqlite.last_syncs().unwrap());
    assert_eq!(pg.run_count().unwrap(), sqlite.run_count().unwrap());
    assert_eq!(pg.is_demo().unwrap(), sqlite.is_demo().unwrap());
}

#[test]
fn the_reads_of_metrics_and_the_backfill_answer_as_sqlite_does() {
    let (sqlite, mut pg, _db) = both("reads_metrics");
    // Some times of each kind of SLO event (windows begin at them).
    let event_times: Vec<i64> = pg
        .client()
        .query(
            "(SELECT queue_at FROM run_events WHERE queue_at IS NOT NULL ORDER BY run_id LIMIT 3)
             UNION ALL (SELECT run_time_at FROM run_events WHERE run_time_at IS NOT NULL ORDER BY run_id LIMIT 3)
             UNION ALL (SELECT completed_at FROM run_events WHERE completed_at IS NOT NULL ORDER BY run_id LIMIT 3)
             UNION ALL (SELECT at FROM test_events ORDER BY run_id LIMIT 3)
             UNION ALL (SELECT at FROM slo_events ORDER BY at LIMIT 3)",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert!(event_times.len() >= 12, "{event_times:?}");
    assert_metrics_reads_agree(&sqlite, &pg, &event_times);
    // The history is not trivial: these reads have something to agree on.
    let state = pg.metric_state().unwrap();
    assert!(state.counters.len() > 20, "{}", state.counters.len());
    assert!(
        state
            .histograms
            .iter()
            .any(|h| h.buckets.iter().any(|b| b.exemplar.is_some())),
    );
    let all = events(&|emit| pg.counted_events(DurationLimits::default(), emit).unwrap());
    for family in [
        "\"ci_runs\"",
        "\"ci_failures\"",
        "\"ci_merged_changes\"",
        "ci_run_queue_duration_seconds",
        "ci_change_retries_to_green",
        "merged_change_without_runs",
        "negative_queue_time",
        "test_success",
        "queue_time",
    ] {
        assert!(
            all.iter().any(|e| e.contains(family)),
            "no event of {family}"
        );
    }
    let stats = pg.test_stats(now() - Duration::days(30), 1).unwrap();
    assert!(stats.iter().any(|(_, _, _, s)| s.flaky_commits > 0));
    let windows = pg
        .slo_counts_in_windows(now(), &[std::time::Duration::from_secs(30 * 86_400)], None)
        .unwrap();
    assert!(windows[0].len() >= 4, "{:?}", windows[0]);
    // Sync state and the demo mark, then the same again.
    for (forge, scope, kind, at) in [
        (Forge::Github, "o/a", "runs", Some(now())),
        (
            Forge::Github,
            "o/a",
            "checks",
            Some(now() - Duration::hours(1)),
        ),
        (Forge::Gitlab, "g", "jobs", None),
    ] {
        let state = SyncState {
            cursor: Some("c1".into()),
            etag: None,
            last_success: at,
        };
        sqlite.set_sync_state(forge, scope, kind, &state).unwrap();
        pg.set_sync_state(forge, scope, kind, &state).unwrap();
    }
    sqlite.mark_demo("seed 1").unwrap();
    pg.mark_demo("seed 1").unwrap();
    assert!(pg.is_demo().unwrap());
    assert_eq!(pg.last_syncs().unwrap().len(), 1);
    assert_metrics_reads_agree(&sqlite, &pg, &event_times);
}

#[test]
fn an_empty_store_reads_as_sqlite_does() {
    let (sqlite, pg, _db) = empty("reads_empty");
    assert_metrics_reads_agree(&sqlite, &pg, &[]);
    assert_eq!(pg.metric_state().unwrap(), Default::default());
    assert_forge_lookups_agree(&sqlite, &pg);
}

/// The forge adapters' lookups of both stores agree.
fn assert_forge_lookups_agree(sqlite: &Store, pg: &PgStore) {
    for path in ["o/a", "g/c", "nowhere"] {
        let repository = repo(path);
        for id in ["job:000", "job:111", "job:100", "job:tie-2", "job:999", ""] {
            assert_eq!(
                pg.run_by_external_id(&repository, id).unwrap(),
                sqlite.run_by_external_id(&repository, id).unwrap(),
                "{path} {id}"
            );
        }
        for context in ["ci/test", "build", "deploy", "lint"] {
            for commit in [
                format!("{path}-0"),
                format!("{path}-3"),
                "tie".into(),
                "abc123".into(),
                "nope".into(),
            ] {
                for attempt in [None, Some(0), Some(1), Some(2), Some(3)] {
                    assert_eq!(
                        pg.run_attempt(&repository, context, &commit, attempt)
                            .unwrap(),
                        sqlite
                            .run_attempt(&repository, context, &commit, attempt)
                            .unwrap(),
                        "{path} {context} {commit} {attempt:?}"
                    );
                }
                assert_eq!(
                    pg.latest_attempt(&repository, context, &commit).unwrap(),
                    sqlite
                        .latest_attempt(&repository, context, &commit)
                        .unwrap(),
                    "{path} {context} {commit}"
                );
                assert_eq!(
                    pg.has_runs_for_commit(&repository, &commit).unwrap(),
                    sqlite.has_runs_for_commit(&repository, &commit).unwrap(),
                );
            }
        }
        for forge in [Forge::Github, Forge::Gitlab] {
            for kind in ["runs", "jobs"] {
                assert_eq!(
                    pg.sync_state(forge, path, kind).unwrap(),
                    sqlite.sync_state(forge, path, kind).unwrap()
                );
            }
        }
    }
    for (repository, run_id) in [("o/a", 7), ("o/b", 8), ("o/a", 8), ("o/b", 7)] {
        for attempt in 0..4 {
            assert_eq!(
                pg.workflow_run(repository, run_id, attempt).unwrap(),
                sqlite.workflow_run(repository, run_id, attempt).unwrap(),
                "{repository} {run_id} {attempt}"
            );
        }
        assert_eq!(
            pg.workflow_run_event(repository, run_id).unwrap(),
            sqlite.workflow_run_event(repository, run_id).unwrap(),
            "{repository} {run_id}"
        );
    }
    for run_id in [1, 2, 3, 1_000_000] {
        assert_eq!(pg.has_log(run_id).unwrap(), sqlite.has_log(run_id).unwrap());
    }
}

#[test]
fn the_forge_adapters_lookups_answer_as_sqlite_does() {
    let (sqlite, mut pg, _db) = both("reads_forge");
    for (run_id, content) in [(1, "log one"), (3, "log three")] {
        sqlite.store_log(run_id, content, false, now()).unwrap();
        pg.store_log(run_id, content, false, now()).unwrap();
    }
    let state = SyncState {
        cursor: Some("next".into()),
        etag: Some("W/\"1\"".into()),
        last_success: Some(now()),
    };
    sqlite
        .set_sync_state(Forge::Gitlab, "g/c", "jobs", &state)
        .unwrap();
    pg.set_sync_state(Forge::Gitlab, "g/c", "jobs", &state)
        .unwrap();
    assert_forge_lookups_agree(&sqlite, &pg);
    // What the comparisons above met: runs by id, a tie, a trigger waiting.
    let c = repo("g/c");
    let tie = pg.run_attempt(&c, "deploy", "tie", None).unwrap().unwrap();
    assert_eq!(tie.external_id.as_deref(), Some("job:tie-1"));
    let by_id = pg.run_by_external_id(&c, "job:111").unwrap().unwrap();
    assert_eq!(
        (by_id.attempt, by_id.log_url.is_some(), by_id.url.is_some()),
        (1, true, true)
    );
    let a = repo("o/a");
    assert_eq!(
        pg.latest_attempt(&a, "ci/test", "o/a-0").unwrap(),
        Some((1, RunState::Success))
    );
    assert_eq!(
        pg.workflow_run_event("o/a", 7).unwrap().as_deref(),
        Some("schedule")
    );
    assert!(pg.has_log(3).unwrap() && !pg.has_log(2).unwrap());
}

/// The reads have the store interface's signatures (`Storage`'s, with
/// `PgStoreError`), so `impl Storage for PgStore` is one line a method.
/// The function types spelled out are the interface's signatures.
#[test]
#[allow(clippy::type_complexity)]
fn the_reads_have_the_store_interfaces_signatures() {
    use ci_slo_core::flaky::TestStats;
    use ci_slo_core::slo::EventCounts;
    use ci_slo_store::github::{RunBrief, WorkflowRunInfo};
    use ci_slo_store::test_slo::TestWindowRuns;
    use ci_slo_store::timeline::{TestDays, TimedEvent};
    use ci_slo_store::{MetricState, SyncState};
    use ci_slo_store_pg::PgStoreError;
    use std::collections::HashMap;
    type R<T> = Result<T, PgStoreError>;
    let _: fn(&PgStore) -> R<MetricState> = PgStore::metric_state;
    let _: fn(&PgStore, DurationLimits, &mut dyn FnMut(TimedEvent)) -> R<()> =
        PgStore::counted_events;
    let _: fn(
        &PgStore,
        DateTime<Utc>,
        &[std::time::Duration],
        Option<&str>,
    ) -> R<Vec<HashMap<String, EventCounts>>> = PgStore::slo_counts_in_windows;
    let _: fn(&PgStore, DateTime<Utc>, u64) -> R<Vec<(String, String, String, TestStats)>> =
        PgStore::test_stats;
    let _: fn(&PgStore, i64, i64) -> R<Vec<TestDays>> = PgStore::test_day_counts;
    let _: fn(&PgStore, &[i64]) -> R<Vec<TestWindowRuns>> = PgStore::test_runs_in_windows;
    let _: fn(&PgStore) -> R<Vec<(String, String, i64)>> = PgStore::last_syncs;
    let _: fn(&PgStore) -> R<i64> = PgStore::run_count;
    let _: fn(&PgStore) -> R<bool> = PgStore::is_demo;
    let _: fn(&PgStore, &RepositoryRef, &str) -> R<Option<RunBrief>> = PgStore::run_by_external_id;
    let _: fn(&PgStore, &RepositoryRef, &str, &str, Option<u32>) -> R<Option<RunBrief>> =
        PgStore::run_attempt;
    let _: fn(&PgStore, &RepositoryRef, &str, &str) -> R<Option<(u32, RunState)>> =
        PgStore::latest_attempt;
    let _: fn(&PgStore, &str, u64, u32) -> R<Option<WorkflowRunInfo>> = PgStore::workflow_run;
    let _: fn(&PgStore, &str, u64) -> R<Option<String>> = PgStore::workflow_run_event;
    let _: fn(&PgStore, i64) -> R<bool> = PgStore::has_log;
    let _: fn(&PgStore, &RepositoryRef, &str) -> R<bool> = PgStore::has_runs_for_commit;
    let _: fn(&PgStore, Forge, &str, &str) -> R<Option<SyncState>> = PgStore::sync_state;
}

/// `/metrics` is rebuilt from several reads; in `read_consistent` they all
/// see one snapshot, while another connection (a replica's writer) commits.
#[test]
fn read_consistent_reads_one_snapshot_while_another_replica_commits() {
    use ci_slo_store::Storage;
    let db = TestServer::shared().database("read_consistent").unwrap();
    let open = || PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    let (mut writer, reader) = (open(), open());
    let policy = Policy::from_config(&Config::default());
    let at = |m| [Some(m + 10), Some(m + 5), Some(m)];
    writer
        .ingest_run(
            &run("o/a", "ci/test", 0, RunState::Success, at(30)),
            &policy,
            now(),
        )
        .unwrap();
    let mut seen = Vec::new();
    Storage::read_consistent(&reader, &mut |store| {
        seen.push((store.run_count()?, store.metric_state()?));
        let late = run("o/a", "ci/test", 1, RunState::Failure, at(20));
        writer.ingest_run(&late, &policy, now()).unwrap();
        seen.push((store.run_count()?, store.metric_state()?));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen[0].0, 1);
    assert_eq!(
        seen[1], seen[0],
        "a read inside the snapshot saw a later commit"
    );
    assert_eq!(Storage::run_count(&reader).unwrap(), 2);
    assert_ne!(Storage::metric_state(&reader).unwrap(), seen[0].1);
}

/// The snapshot's per-test reads name tests from a cache of each store
/// (`test_identity.rs`): a test another replica creates after a store has
/// read is named in that store's next reads, with its repository and
/// context, as SQLite names it.
#[test]
fn the_per_test_reads_name_tests_created_since_by_another_replica() {
    let policy = Policy::from_config(&Config::default());
    let (mut sqlite, mut pg, db) = empty("identities");
    let first = |name: &str| {
        let mut r = run(
            "o/a",
            "ci",
            1,
            RunState::Success,
            [Some(30), Some(20), Some(10)],
        );
        r.tests = vec![test(name, TestOutcome::Passed, 0)];
        r
    };
    sqlite.ingest_run(&first("t::one"), &policy, now()).unwrap();
    pg.ingest_run(&first("t::one"), &policy, now()).unwrap();
    let since = now() - Duration::days(7);
    let today = now().timestamp_millis().div_euclid(86_400_000);
    let read = |pg: &PgStore| {
        (
            pg.test_stats(since, 0).unwrap(),
            pg.test_runs_in_windows(&[today - 1]).unwrap(),
        )
    };
    let (stats, windows) = read(&pg);
    assert_eq!(stats.len(), 1);
    assert_eq!(windows.len(), 1);

    // Another replica: a test of another repository and context.
    let mut other = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    let mut second = run(
        "g/c",
        "nightly",
        1,
        RunState::Failure,
        [Some(9), Some(8), Some(7)],
    );
    second.repository = repo("g/c");
    second.tests = vec![
        test("t::one", TestOutcome::Failed, 0),
        test("t::two", TestOutcome::Passed, 0),
    ];
    sqlite.ingest_run(&second, &policy, now()).unwrap();
    other.ingest_run(&second, &policy, now()).unwrap();

    let (stats, windows) = read(&pg);
    assert_eq!(stats, sqlite.test_stats(since, 0).unwrap());
    assert_eq!(windows, sqlite.test_runs_in_windows(&[today - 1]).unwrap());
    let named: Vec<(&str, &str, &str)> = stats
        .iter()
        .map(|(r, c, t, _)| (r.as_str(), c.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            ("o/a", "ci", "t::one"),
            ("g/c", "nightly", "t::one"),
            ("g/c", "nightly", "t::two")
        ]
    );
    assert_eq!(
        windows
            .iter()
            .map(|w| w.repository.as_str())
            .collect::<Vec<_>>(),
        ["o/a", "g/c", "g/c"]
    );
}

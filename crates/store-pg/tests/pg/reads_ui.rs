//! The reads of the web UI and the JSON API on PostgreSQL, held to the
//! SQLite store's answers: the same runs (several repositories, contexts
//! and attempts, tests passing, failing and flaky, failures with evidence
//! and fingerprints, changes, scheduled runs, dependencies, over a week)
//! into both stores, then every read with windows, filters, limits and
//! offsets, unknown ids and an empty store gives the same answer.

use crate::ingest::{failure, now, run, same_in_both, test};
use chrono::{DateTime, Duration, Utc};
use ci_slo_core::config::Config;
use ci_slo_core::model::{ChangeRef, NewRun, RawReport, RunState, TestOutcome, Trigger};
use ci_slo_core::slo::SloId;
use ci_slo_store::ui::RunFilter;
use ci_slo_store::{Policy, Store, TestSlice};
use ci_slo_store_pg::PgStore;

const REPOS: [&str; 3] = ["o/a", "o/b", "o/c"];

/// A week of runs shaped like real use.
fn week() -> Vec<NewRun> {
    let mut runs = Vec::new();
    for day in 0..7i64 {
        for (ri, repo) in REPOS.iter().enumerate() {
            for (ci, context) in ["ci/test", "nightly"].iter().enumerate() {
                let ago = (7 - day) * 24 * 60 - (ri as i64) * 37 - (ci as i64) * 11;
                let red = (day + ri as i64 + ci as i64) % 3 == 0;
                let mut r = run(
                    repo,
                    context,
                    0,
                    if red {
                        RunState::Failure
                    } else {
                        RunState::Success
                    },
                    [Some(ago), Some(ago - 2), Some(ago - 30 - day)],
                );
                r.commit = format!("c{day}{ri}");
                // Runs the CI could not run, long queues and long runs.
                if day == 2 && ri == 1 {
                    r.state = RunState::Error;
                }
                if day == 4 {
                    r.queued_at = Some(now() - Duration::minutes(ago + 120));
                }
                if day == 6 && ci == 1 {
                    r.finished_at = Some(now() - Duration::minutes(ago - 300));
                }
                if *context == "nightly" {
                    r.trigger = Trigger::Schedule;
                } else if day % 2 == 0 {
                    r.trigger = Trigger::Push;
                }
                r.url = Some(format!("https://ci.example/{repo}/{day}/{ci}"));
                r.tests = vec![
                    test("T.alpha", TestOutcome::Passed, 0),
                    test(
                        "T.beta",
                        if red {
                            TestOutcome::Failed
                        } else {
                            TestOutcome::Passed
                        },
                        0,
                    ),
                    test(
                        "T.gamma",
                        if day % 2 == 1 {
                            TestOutcome::Errored
                        } else {
                            TestOutcome::Passed
                        },
                        u32::from(day % 3 == 0),
                    ),
                    test("T.delta", TestOutcome::Skipped, 0),
                    test("t.Zeta", TestOutcome::Passed, 0),
                ];
                if red {
                    let mut f = failure(if ri == 1 { "oom" } else { "network" }, Some("fp-x"));
                    f.evidence = format!("fatal: {repo} day {day}");
                    let mut g = failure("assertion", Some(&format!("fp-{ri}")));
                    g.test_name = Some("T.beta".into());
                    g.candidates = vec![ci_slo_core::model::EvidenceCandidate {
                        line: 7,
                        text: "maybe this".into(),
                        class: "network".into(),
                    }];
                    r.failures = vec![f, g];
                    if day == 3 {
                        r.failures.push(failure("timeout", None));
                    }
                }
                if ri != 2 {
                    r.dependencies
                        .insert("serde".into(), format!("1.0.{}", day / 2));
                    r.dependencies.insert("tokio".into(), "1.40".into());
                    if day >= 4 {
                        r.dependencies.insert("rand".into(), "0.9".into());
                    }
                }
                if *context == "ci/test" && ri == 0 {
                    r.change = Some(ChangeRef {
                        number: 100 + day,
                        merged_at: Some(now() - Duration::minutes(ago - 60)),
                    });
                }
                if day == 5 && ri == 0 {
                    r.reports = vec![RawReport {
                        format: "junit".into(),
                        name: "r.xml".into(),
                        content: "<testsuite>ü</testsuite>".into(),
                    }];
                    r.log_url = Some("https://logs.example/x".into());
                    r.external_id = Some(format!("gh:{day}{ci}"));
                }
                // A retry of the red ones, green (flaky tests on that commit).
                let retry = red.then(|| {
                    let mut b = r.clone();
                    b.attempt = 1;
                    b.state = RunState::Success;
                    b.queued_at = Some(now() - Duration::minutes(ago - 40));
                    b.started_at = Some(now() - Duration::minutes(ago - 41));
                    b.finished_at = Some(now() - Duration::minutes(ago - 70));
                    b.failures = Vec::new();
                    b.external_id = None;
                    for t in &mut b.tests {
                        if t.outcome == TestOutcome::Failed {
                            t.outcome = TestOutcome::Passed;
                            t.message = None;
                        }
                    }
                    b
                });
                runs.push(r);
                runs.extend(retry);
            }
        }
    }
    // Runs of one time (ties broken by id), a pending run and a long message.
    let mut tie_a = run(
        "o/a",
        "ci/test",
        0,
        RunState::Success,
        [Some(30), Some(29), Some(20)],
    );
    tie_a.commit = "tie1".into();
    tie_a.dependencies.insert("serde".into(), "2.0".into());
    let mut tie_b = tie_a.clone();
    tie_b.commit = "tie2".into();
    tie_b.dependencies.insert("serde".into(), "2.1".into());
    // After both: its last green run is one of two of the same time.
    let mut after = tie_a.clone();
    after.commit = "after".into();
    after.state = RunState::Failure;
    after.queued_at = Some(now() - Duration::minutes(10));
    after.started_at = Some(now() - Duration::minutes(9));
    after.finished_at = Some(now() - Duration::minutes(8));
    after.dependencies.insert("serde".into(), "2.2".into());
    let mut pending = run(
        "o/b",
        "nightly",
        0,
        RunState::Pending,
        [Some(5), None, None],
    );
    pending.trigger = Trigger::Schedule;
    pending.commit = "pend".into();
    let mut long = run(
        "o/c",
        "ci/test",
        0,
        RunState::Failure,
        [Some(15), Some(14), Some(3)],
    );
    long.commit = "long".into();
    let mut t = test("T.beta", TestOutcome::Failed, 0);
    t.message = Some("é".repeat(50));
    long.tests = vec![t, test("T.alpha", TestOutcome::Passed, 0)];
    runs.extend([tie_a, tie_b, after, pending, long]);
    runs
}

/// The week in both stores, plus what ingest alone does not write: a
/// decided change with its bad SLO event (as settling records it).
fn stores(hint: &str) -> (Store, PgStore, ci_slo_store_pg::testing::TestDatabase) {
    let policy = Policy::from_config(&Config::default());
    let (sqlite, mut pg, db) = same_in_both(hint, &policy, true, &week());
    let at = (now() - Duration::days(2)).timestamp_millis();
    let sql = format!(
        "UPDATE changes SET outcome = 'failed_runs', retries = 1, decided_at = {at} WHERE number = 103;
         INSERT INTO slo_events (slo, subject, repository_id, at, good)
             SELECT 'merged_without_failures', 'change:' || id, repository_id, {at}, 0 FROM changes WHERE number = 103;
         INSERT INTO slo_events (slo, subject, repository_id, at, good)
             SELECT 'merged_without_failures', 'change:' || id, repository_id, {at} + 1, 1 FROM changes WHERE number = 104;
         INSERT INTO slo_events (slo, subject, repository_id, at, good)
             SELECT 'merged_without_failures', 'change:' || id, repository_id, {at}, 0 FROM changes WHERE number = 102;"
    );
    sqlite.connection().execute_batch(&sql).unwrap();
    pg.client().batch_execute(&sql).unwrap();
    (sqlite, pg, db)
}

fn ids(pg: &mut PgStore, sql: &str) -> Vec<i64> {
    let mut v: Vec<i64> = pg
        .client()
        .query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    v.push(v.iter().max().copied().unwrap_or(0) + 1);
    v.push(-1);
    v
}

fn sinces() -> Vec<DateTime<Utc>> {
    let hour = DateTime::parse_from_rfc3339("2026-02-27T07:00:00Z")
        .unwrap()
        .to_utc();
    vec![
        now() - Duration::days(30),
        now() - Duration::days(3) - Duration::minutes(17),
        hour,
        hour - Duration::milliseconds(1),
        hour + Duration::milliseconds(1),
        now() - Duration::minutes(30),
        now() + Duration::days(1),
    ]
}

fn filters() -> Vec<RunFilter> {
    let mut out = vec![RunFilter::default()];
    for repository in [None, Some("o/a"), Some("o/none")] {
        for context in [None, Some("nightly"), Some("ci/test")] {
            for trigger in [None, Some("schedule"), Some("pull_request"), Some("push")] {
                out.push(RunFilter {
                    repository: repository.map(String::from),
                    context: context.map(String::from),
                    trigger: trigger.map(String::from),
                });
            }
        }
    }
    out
}

fn slos() -> Vec<&'static str> {
    let mut v: Vec<&str> = SloId::ALL.iter().map(|s| s.as_str()).collect();
    v.push("no_such_slo");
    v
}

#[test]
fn repositories_and_slo_events_are_read_as_sqlite_reads_them() {
    let (sqlite, pg, _db) = stores("ui_slo");
    assert_eq!(pg.repositories().unwrap(), sqlite.repositories().unwrap());
    assert_eq!(pg.repositories().unwrap().len(), 3);
    assert_eq!(
        pg.repositories_by_id().unwrap(),
        sqlite.repositories_by_id().unwrap()
    );
    let mut nonempty = 0;
    for since in sinces() {
        for repo in [None, Some("o/a"), Some("o/c"), Some("o/none")] {
            let lite = sqlite.slo_hourly(since, repo).unwrap();
            assert_eq!(
                pg.slo_hourly(since, repo).unwrap(),
                lite,
                "{since} {repo:?}"
            );
            nonempty += usize::from(!lite.is_empty());
        }
        for slo in slos() {
            let lite = sqlite.slo_by_repository(slo, since).unwrap();
            assert_eq!(
                pg.slo_by_repository(slo, since).unwrap(),
                lite,
                "{slo} {since}"
            );
        }
    }
    assert!(nonempty > 10, "{nonempty}");
    let mut kinds = std::collections::BTreeSet::new();
    for since in sinces() {
        for slo in slos() {
            for repo in [None, Some("o/a"), Some("o/b"), Some("o/none")] {
                for (offset, limit) in [(0, 10), (2, 3), (0, 1000), (1000, 10), (0, 0)] {
                    let lite = sqlite
                        .slo_bad_events(slo, since, repo, offset, limit)
                        .unwrap();
                    let got = pg.slo_bad_events(slo, since, repo, offset, limit).unwrap();
                    assert_eq!(got, lite, "{slo} {since} {repo:?} {offset} {limit}");
                    kinds.extend(lite.iter().map(|e| e.kind.clone()));
                }
            }
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["change", "run", "test"]
    );
}

#[test]
fn tests_are_listed_named_and_traced_as_sqlite_does() {
    let (sqlite, mut pg, _db) = stores("ui_tests");
    let test_ids = ids(&mut pg, "SELECT id FROM tests ORDER BY id");
    assert_eq!(
        pg.test_names(&test_ids).unwrap(),
        sqlite.test_names(&test_ids).unwrap()
    );
    assert_eq!(pg.test_names(&[]).unwrap().len(), 0);
    let mut listed = 0;
    for since in sinces() {
        for min_runs in [0, 1, 5, 100] {
            for repo in [None, Some("o/b"), Some("o/none")] {
                for context in [None, Some("nightly")] {
                    let lite = sqlite.test_index(since, min_runs, repo, context).unwrap();
                    let got = pg.test_index(since, min_runs, repo, context).unwrap();
                    assert_eq!(got, lite, "{since} {min_runs} {repo:?} {context:?}");
                    listed += lite.len();
                }
            }
        }
    }
    assert!(listed > 0);
    for id in &test_ids {
        for n in [0, 1, 3, 100] {
            assert_eq!(
                pg.test_strip(*id, n).unwrap(),
                sqlite.test_strip(*id, n).unwrap(),
                "{id} {n}"
            );
        }
    }
    let names: Vec<(String, String, String)> = pg
        .client()
        .query(
            "SELECT repo.path, t.context, t.name FROM tests t JOIN repositories repo ON repo.id = t.repository_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .chain([("o/a".into(), "ci/test".into(), "T.none".into())])
        .collect();
    let mut executions = 0;
    for (repo, context, name) in &names {
        for since in sinces() {
            let lite = sqlite.test_history(repo, context, name, since).unwrap();
            assert_eq!(
                pg.test_history(repo, context, name, since).unwrap(),
                lite,
                "{repo} {context} {name} {since}"
            );
            executions += lite.len();
        }
    }
    assert!(executions > 0);
}

#[test]
fn runs_their_attempts_and_dependencies_read_as_sqlite_reads_them() {
    let (sqlite, mut pg, _db) = stores("ui_runs");
    let run_ids = ids(&mut pg, "SELECT id FROM runs ORDER BY id");
    let slices = [
        TestSlice::ALL,
        TestSlice {
            offset: 1,
            limit: 2,
            failures_first: true,
            message_chars: 3,
        },
        TestSlice {
            offset: 0,
            limit: 3,
            failures_first: false,
            message_chars: 10,
        },
        TestSlice {
            offset: 100,
            limit: 5,
            failures_first: true,
            message_chars: 0,
        },
    ];
    let (mut changed, mut green) = (0, 0);
    for id in &run_ids {
        for slice in slices {
            let lite = sqlite.run_slice(*id, slice).unwrap();
            assert_eq!(pg.run_slice(*id, slice).unwrap(), lite, "{id} {slice:?}");
            changed += lite.map_or(0, |v| v.dependency_changes.len());
        }
        let lite = sqlite.run_related(*id).unwrap();
        assert_eq!(pg.run_related(*id).unwrap(), lite, "{id}");
        green += usize::from(lite.since_green.last_green_run_id.is_some());
        assert_eq!(
            pg.dependencies_since_green(*id).unwrap(),
            sqlite.dependencies_since_green(*id).unwrap(),
            "{id}"
        );
    }
    assert!(changed > 0 && green > 0, "{changed} {green}");
}

#[test]
fn failures_fingerprints_and_nightly_runs_read_as_sqlite_reads_them() {
    let (sqlite, mut pg, _db) = stores("ui_failures");
    let until = [now(), now() - Duration::days(2), now() + Duration::days(1)];
    let mut keys = 0;
    for since in sinces() {
        for until in until {
            for filter in filters() {
                let lite = sqlite.failure_keys_between(since, until, &filter).unwrap();
                assert_eq!(
                    pg.failure_keys_between(since, until, &filter).unwrap(),
                    lite,
                    "{since} {until} {filter:?}"
                );
                keys += lite.len();
                let lite = sqlite.nightly_runs(since, until, &filter).unwrap();
                assert_eq!(
                    pg.nightly_runs(since, until, &filter).unwrap(),
                    lite,
                    "{since} {until} {filter:?}"
                );
            }
        }
    }
    assert!(keys > 0);
    for id in ids(&mut pg, "SELECT id FROM failures ORDER BY id") {
        assert_eq!(
            pg.failure_occurrence(id).unwrap(),
            sqlite.failure_occurrence(id).unwrap(),
            "{id}"
        );
    }
    let hashes: Vec<String> = pg
        .client()
        .query("SELECT hash FROM fingerprints", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .chain(["no-such-hash".to_string()])
        .collect();
    for hash in &hashes {
        assert_eq!(
            pg.fingerprint_id(hash).unwrap(),
            sqlite.fingerprint_id(hash).unwrap(),
            "{hash}"
        );
    }
    let fp_ids = ids(&mut pg, "SELECT id FROM fingerprints ORDER BY id");
    let seen = pg.fingerprints_first_seen(&fp_ids).unwrap();
    assert_eq!(seen, sqlite.fingerprints_first_seen(&fp_ids).unwrap());
    assert_eq!(seen.len(), fp_ids.len() - 2);
}

#[test]
fn an_empty_store_reads_as_an_empty_sqlite_store() {
    let policy = Policy::from_config(&Config::default());
    let (sqlite, pg, _db) = same_in_both("ui_empty", &policy, false, &[]);
    let since = now() - Duration::days(7);
    assert_eq!(pg.repositories().unwrap(), sqlite.repositories().unwrap());
    assert!(pg.repositories_by_id().unwrap().is_empty());
    assert_eq!(
        pg.slo_hourly(since, None).unwrap(),
        sqlite.slo_hourly(since, None).unwrap()
    );
    for slo in slos() {
        assert!(pg.slo_by_repository(slo, since).unwrap().is_empty());
        assert!(
            pg.slo_bad_events(slo, since, None, 0, 10)
                .unwrap()
                .is_empty()
        );
    }
    assert!(pg.test_names(&[1, 2]).unwrap().is_empty());
    assert!(pg.test_index(since, 0, None, None).unwrap().is_empty());
    assert!(pg.test_strip(1, 10).unwrap().is_empty());
    assert!(pg.test_history("o/a", "ci", "T", since).unwrap().is_empty());
    assert_eq!(pg.run_slice(1, TestSlice::ALL).unwrap(), None);
    assert_eq!(pg.run_related(1).unwrap(), sqlite.run_related(1).unwrap());
    let all = RunFilter::default();
    assert!(
        pg.failure_keys_between(since, now(), &all)
            .unwrap()
            .is_empty()
    );
    assert_eq!(pg.failure_occurrence(1).unwrap(), None);
    assert_eq!(pg.fingerprint_id("x").unwrap(), None);
    assert!(pg.fingerprints_first_seen(&[1]).unwrap().is_empty());
    assert!(pg.nightly_runs(since, now(), &all).unwrap().is_empty());
    assert_eq!(
        pg.dependencies_since_green(1).unwrap(),
        sqlite.dependencies_since_green(1).unwrap()
    );
}

/// What a page's reads cost on each engine, printed next to SQLite's (the
/// baseline of the same run; no timed assertion): each read many times
/// over the week, answers still equal.
#[test]
fn each_read_s_time_is_printed_next_to_sqlite_s() {
    let (sqlite, pg, _db) = stores("ui_timing");
    let since = now() - Duration::days(7);
    let all = RunFilter::default();
    let time = |f: &dyn Fn() -> String| {
        let start = std::time::Instant::now();
        let mut last = String::new();
        for _ in 0..20 {
            last = f();
        }
        (start.elapsed().as_secs_f64() * 1000.0 / 20.0, last)
    };
    type Read<'a> = Box<dyn Fn() -> String + 'a>;
    let reads: Vec<(&str, Read<'_>, Read<'_>)> = vec![
        (
            "slo_hourly",
            Box::new(|| format!("{:?}", sqlite.slo_hourly(since, None).unwrap())),
            Box::new(|| format!("{:?}", pg.slo_hourly(since, None).unwrap())),
        ),
        (
            "slo_bad_events",
            Box::new(|| {
                format!(
                    "{:?}",
                    sqlite
                        .slo_bad_events("test_success", since, None, 0, 50)
                        .unwrap()
                )
            }),
            Box::new(|| {
                format!(
                    "{:?}",
                    pg.slo_bad_events("test_success", since, None, 0, 50)
                        .unwrap()
                )
            }),
        ),
        (
            "test_index",
            Box::new(|| format!("{:?}", sqlite.test_index(since, 1, None, None).unwrap())),
            Box::new(|| format!("{:?}", pg.test_index(since, 1, None, None).unwrap())),
        ),
        (
            "run_slice",
            Box::new(|| format!("{:?}", sqlite.run_slice(25, TestSlice::ALL).unwrap())),
            Box::new(|| format!("{:?}", pg.run_slice(25, TestSlice::ALL).unwrap())),
        ),
        (
            "failure_keys_between",
            Box::new(|| {
                format!(
                    "{:?}",
                    sqlite.failure_keys_between(since, now(), &all).unwrap()
                )
            }),
            Box::new(|| format!("{:?}", pg.failure_keys_between(since, now(), &all).unwrap())),
        ),
        (
            "nightly_runs",
            Box::new(|| format!("{:?}", sqlite.nightly_runs(since, now(), &all).unwrap())),
            Box::new(|| format!("{:?}", pg.nightly_runs(since, now(), &all).unwrap())),
        ),
    ];
    for (name, lite, post) in &reads {
        let (lite_ms, lite_answer) = time(lite.as_ref());
        let (pg_ms, pg_answer) = time(post.as_ref());
        assert_eq!(pg_answer, lite_answer, "{name}");
        eprintln!("{name}: PostgreSQL {pg_ms:.2} ms, SQLite {lite_ms:.2} ms (baseline, same run)");
    }
}

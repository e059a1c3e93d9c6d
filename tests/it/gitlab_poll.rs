//! Polling against a local fake GitLab (tests/fake_gitlab).

use crate::common;
use crate::fake_gitlab;

use chrono::{Duration, Utc};
use ci_slo_exporter::classify::Classifier;
use ci_slo_exporter::config::Config;
use ci_slo_exporter::config::Secret;
use ci_slo_exporter::forge::context::Context;
use ci_slo_exporter::forge::driver::{self, Summary};
use ci_slo_exporter::forge::gitlab::GitlabConfig;
use ci_slo_exporter::forge::gitlab::poll::Poller;
use ci_slo_exporter::model::{Forge, RepositoryRef};
use ci_slo_exporter::store::Policy;
use ci_slo_exporter::store::writer::StoreHandle;
use common::{capture_logs, self_metric};
use fake_gitlab::{Fake, Project, Trace, job, pipeline};
use std::sync::Arc;
use std::sync::atomic::Ordering;

struct Setup {
    poller: Poller,
    store: StoreHandle,
    _dir: tempfile::TempDir,
}

fn setup(api_url: &str, projects: Vec<String>, tweak: impl FnOnce(&mut GitlabConfig)) -> Setup {
    setup_with(api_url, projects, tweak, |_| {})
}

/// `setup` with the poller's context tweaked too.
fn setup_with(
    api_url: &str,
    projects: Vec<String>,
    tweak: impl FnOnce(&mut GitlabConfig),
    c: impl FnOnce(&mut Context),
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreHandle::start(&dir.path().join("db.sqlite")).unwrap();
    let mut config = GitlabConfig {
        api_url: api_url.to_string(),
        projects,
        retry_base_delay: std::time::Duration::from_millis(1),
        ..GitlabConfig::default()
    };
    tweak(&mut config);
    let mut ctx = Context::new(
        store.clone(),
        Arc::new(Policy::from_config(&Config::default())),
        Arc::new(Classifier::with_defaults()),
    );
    c(&mut ctx);
    let poller = Poller::new(ctx, config, Some(Secret::new("glpat-test"))).unwrap();
    Setup {
        poller,
        store,
        _dir: dir,
    }
}

fn ts(minutes_ago: i64) -> String {
    (Utc::now() - Duration::minutes(minutes_ago))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn poll(p: &Poller) -> Summary {
    driver::poll_once(p).await.unwrap()
}

fn repo(path: &str) -> RepositoryRef {
    RepositoryRef {
        forge: Forge::Gitlab,
        path: path.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_unchanged_projects_cost_at_most_one_request_each() {
    let fake = Fake::default();
    let mut names = Vec::new();
    for i in 0..100 {
        let name = format!("grp/sub/p{i:03}");
        let mut p = Project::default();
        p.pipelines
            .push(pipeline(1000 + i, "abc123", "success", "push", &ts(30)));
        p.jobs.insert(
            1000 + i,
            vec![job(50_000 + i, "test", "unit", "success", &ts(35))],
        );
        fake.projects.lock().unwrap().insert(name.clone(), p);
        names.push(name);
    }
    fake.groups
        .lock()
        .unwrap()
        .insert("grp".into(), names.clone());
    let fake = fake_gitlab::start(fake);
    let s = setup(&fake.api_url, vec![], |c| {
        c.groups = vec![ci_slo_exporter::forge::gitlab::GroupConfig {
            group: "grp".into(),
            pattern: Some("^grp/sub/p0[0-9][0-9]$".into()),
            include_subgroups: true,
        }];
    });
    let first = poll(&s.poller).await;
    assert_eq!((first.scopes, first.pipelines, first.runs), (100, 100, 200));
    assert!(first.failed.is_empty());
    // Second and third rounds: nothing changed.
    for round in 0..2 {
        let before = fake.fake.requests.load(Ordering::Relaxed);
        let unchanged_before = s.poller.counts().not_modified.load(Ordering::Relaxed);
        let r = poll(&s.poller).await;
        let made = fake.fake.requests.load(Ordering::Relaxed) - before;
        let unchanged = s.poller.counts().not_modified.load(Ordering::Relaxed) - unchanged_before;
        assert_eq!((r.scopes, r.pipelines, r.runs), (100, 0, 0));
        // The group listing is conditional too (like GitHub's owner listings).
        assert!(unchanged >= 1, "round {round}: the group listing is a 304");
        if round == 1 {
            assert_eq!(unchanged, 101, "the group and every project: 304");
        }
        // One group listing plus at most one request per project.
        assert!(made <= 101, "round {round}: {made} requests");
        if round == 1 {
            assert!(
                s.poller.counts().not_modified.load(Ordering::Relaxed) >= 100,
                "ETags are used"
            );
        }
    }
    let state = s
        .store
        .read(|st| st.sync_state(Forge::Gitlab, "grp/sub/p042", "pipelines"))
        .await
        .unwrap()
        .unwrap();
    assert!(state.last_success.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_become_attempts_and_a_429_or_a_500_storm_is_ridden_out() {
    let fake = Fake::default();
    let mut p = Project::default();
    p.pipelines
        .push(pipeline(7, "feed01", "success", "schedule", &ts(10)));
    p.jobs.insert(
        7,
        vec![
            job(72, "test", "unit", "failed", &ts(18)),
            job(71, "test", "unit", "failed", &ts(19)),
            job(73, "test", "unit", "success", &ts(17)),
            job(74, "build", "compile", "success", &ts(20)),
        ],
    );
    fake.projects.lock().unwrap().insert("g/p".into(), p);
    let fake = fake_gitlab::start(fake);
    // One 429 (Retry-After: 0) and three 500s before the answers.
    fake.fake
        .inject
        .lock()
        .unwrap()
        .extend([429, 500, 503, 500]);
    let s = setup(&fake.api_url, vec!["g/p".into()], |_| {});
    let r = poll(&s.poller).await;
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!((r.pipelines, r.runs, r.logs), (1, 5, 2));
    let runs = s
        .store
        .read(|st| {
            let st = st.sqlite().expect("a SQLite store");
            let conn = st.connection();
            let mut stmt = conn.prepare(
                "SELECT context, external_id, attempt, state, trigger, round((started_at - queued_at) / 1000.0, 3),
                        (finished_at - started_at) / 1000.0 FROM runs ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<f64>>(5)?,
                    r.get::<_, Option<f64>>(6)?,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .unwrap();
    let brief: Vec<(&str, &str, u32, &str)> = runs
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2, r.3.as_str()))
        .collect();
    assert_eq!(
        brief,
        vec![
            ("build / compile", "job:74", 0, "success"),
            ("test / unit", "job:71", 0, "failure"),
            ("test / unit", "job:72", 1, "failure"),
            ("test / unit", "job:73", 2, "success"),
            ("pipeline", "pipeline:7", 0, "success"),
        ]
    );
    // Scheduled pipeline → nightly runs; GitLab's queued_duration and duration.
    assert!(runs.iter().all(|r| r.4 == "schedule"));
    assert_eq!((runs[0].5, runs[0].6), (Some(4.25), Some(120.5)));

    // A 500 storm longer than the retries: the project fails, its cursor does not move.
    fake.fake
        .inject
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n(500, 20));
    let before = s
        .store
        .read(|st| st.sync_state(Forge::Gitlab, "g/p", "pipelines"))
        .await
        .unwrap();
    let r = poll(&s.poller).await;
    assert_eq!(r.failed, vec!["g/p".to_string()]);
    let after = s
        .store
        .read(|st| st.sync_state(Forge::Gitlab, "g/p", "pipelines"))
        .await
        .unwrap();
    assert_eq!(before.unwrap().cursor, after.unwrap().cursor);
    fake.fake.inject.lock().unwrap().clear();
    // Traces are never downloaded twice.
    poll(&s.poller).await;
    let downloads = fake.fake.trace_downloads.lock().unwrap().clone();
    assert_eq!(
        downloads.into_iter().collect::<Vec<_>>(),
        vec![(71, 1), (72, 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_larger_than_the_cap_is_cut_with_a_marker_without_reading_the_rest() {
    let fake = Fake::default();
    let mut p = Project::default();
    p.pipelines
        .push(pipeline(8, "beef02", "failed", "push", &ts(10)));
    p.jobs
        .insert(8, vec![job(81, "test", "e2e", "failed", &ts(12))]);
    fake.projects.lock().unwrap().insert("g/huge".into(), p);
    fake.traces
        .lock()
        .unwrap()
        .insert(81, Trace::Endless("Running test 123 ... ok\n".into()));
    let fake = fake_gitlab::start(fake);
    let cap = 256 * 1024;
    let s = setup(&fake.api_url, vec!["g/huge".into()], |c| {
        c.trace_max_bytes = cap
    });
    let r = poll(&s.poller).await;
    assert_eq!(r.logs, 1, "{r:?}");
    let read = s.poller.counts().log_bytes_read.load(Ordering::Relaxed);
    // At most the cap plus one 64 KiB chunk came over the wire.
    assert!(read >= cap && read <= cap + 64 * 1024, "read {read} bytes");
    let (log, truncated) = s
        .store
        .read(|st| {
            let st = st.sqlite().expect("a SQLite store");
            let id = st.external_run(&repo("g/huge"), "job:81")?.unwrap().id;
            Ok(st.log(id)?.unwrap())
        })
        .await
        .unwrap();
    assert!(truncated);
    let marker =
        format!("\n[ci-slo-exporter: log truncated: only the first {cap} bytes were downloaded]\n");
    assert!(log.ends_with(&marker));
    assert_eq!(log.len() as u64, cap + marker.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_with_sections_and_colour_classifies_on_clean_text_and_keeps_section_times() {
    let fake = Fake::default();
    let mut p = Project::default();
    p.pipelines
        .push(pipeline(9, "cafe03", "failed", "schedule", &ts(10)));
    p.jobs
        .insert(9, vec![job(91, "test", "unit", "failed", &ts(12))]);
    fake.projects.lock().unwrap().insert("g/colour".into(), p);
    let log = "\x1b[0KRunning with gitlab-runner 16.6.0\n\
        \x1b[0Ksection_start:1700000000:prepare_executor\r\x1b[0K\x1b[0K\x1b[36;1mPreparing the \"docker\" executor\x1b[0;m\n\
        \x1b[0Ksection_end:1700000012:prepare_executor\r\x1b[0K\n\
        \x1b[0Ksection_start:1700000012:step_script\r\x1b[0K\x1b[32;1m$ cargo build\x1b[0;m\n\
        \x1b[0m\x1b[1m\x1b[38;5;9merror[E0425]\x1b[0m\x1b[1m: cannot find value `x` in this scope\x1b[0m\n\
        \x1b[0Ksection_end:1700000053:step_script\r\x1b[0K\n\
        \x1b[31;1mERROR: Job failed: exit code 101\x1b[0;m\n";
    fake.traces
        .lock()
        .unwrap()
        .insert(91, Trace::Text(log.into()));
    let fake = fake_gitlab::start(fake);
    let s = setup(&fake.api_url, vec!["g/colour".into()], |_| {});
    poll(&s.poller).await;
    let (run, sections) = s
        .store
        .read(|st| {
            let st = st.sqlite().expect("a SQLite store");
            let id = st.external_run(&repo("g/colour"), "job:91")?.unwrap().id;
            Ok((st.run(id)?.unwrap(), st.sections(id)?))
        })
        .await
        .unwrap();
    assert_eq!(
        sections,
        vec![
            ("prepare_executor".to_string(), 12),
            ("step_script".to_string(), 41)
        ]
    );
    let f = &run.failures[0];
    assert_eq!(
        f.evidence,
        "error[E0425]: cannot find value `x` in this scope"
    );
    assert_eq!(f.category, "build");
    assert!(!f.evidence.contains('\x1b'));
    assert_eq!(run.trigger, "schedule");
    // The nightly grid shows the pipeline and its failed job with the evidence.
    let runs = s
        .store
        .read(|st| {
            st.nightly_runs(
                Utc::now() - Duration::days(1),
                Utc::now(),
                &ci_slo_exporter::store::ui::RunFilter::default(),
            )
        })
        .await
        .unwrap();
    assert!(
        runs.iter()
            .any(|r| r.context == "pipeline" && r.state == "failure"),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .any(|r| r.failure.as_ref().is_some_and(|x| x.evidence == f.evidence)),
        "{runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_reports_and_merged_mrs_are_fetched() {
    let fake = Fake::default();
    let mut p = Project::default();
    let mut pl = pipeline(11, "d00d04", "failed", "merge_request_event", &ts(10));
    pl["ref"] = "refs/merge-requests/5/head".into();
    p.pipelines.push(pl);
    p.jobs
        .insert(11, vec![job(111, "test", "Failing", "failed", &ts(12))]);
    let report = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gitlab/api/pipeline_testreport.json"
    ))
    .unwrap();
    p.test_reports
        .insert(11, serde_json::from_str(&report).unwrap());
    p.merge_requests.push(
        serde_json::json!({"iid": 5, "sha": "d00d04", "merged_at": ts(5), "updated_at": ts(5)}),
    );
    fake.projects.lock().unwrap().insert("g/mr".into(), p);
    let fake = fake_gitlab::start(fake);
    let s = setup(&fake.api_url, vec!["g/mr".into()], |c| {
        c.test_reports = true
    });
    let r = poll(&s.poller).await;
    assert_eq!(r.merges, 1, "{r:?}");
    let (job_run, pipeline_run) = s
        .store
        .read(|st| {
            let st = st.sqlite().expect("a SQLite store");
            let j = st.external_run(&repo("g/mr"), "job:111")?.unwrap().id;
            let p = st.external_run(&repo("g/mr"), "pipeline:11")?.unwrap().id;
            Ok((st.run(j)?.unwrap(), st.run(p)?.unwrap()))
        })
        .await
        .unwrap();
    // Suite "Failing" → the job named Failing; "Succes suite" → the pipeline run.
    let names: Vec<(&str, String)> = job_run
        .tests
        .iter()
        .map(|t| (t.name.as_str(), format!("{:?}", t.outcome)))
        .collect();
    assert_eq!(
        names,
        vec![
            ("MyClassOne.Error testcase 1", "Errored".to_string()),
            ("MyClass.Error testcase 2", "Errored".to_string()),
            ("MyClass.Error testcase 3", "Errored".to_string()),
            ("MyClass.Succes full testcase", "Passed".to_string()),
        ]
    );
    assert_eq!(job_run.tests[0].duration_seconds, Some(19.987));
    assert_eq!(pipeline_run.tests.len(), 1);
    assert_eq!(job_run.change.as_ref().unwrap().number, 5);
    let merged = s
        .store
        .read(|st| {
            let st = st.sqlite().expect("a SQLite store");
            Ok(st.connection().query_row(
                "SELECT head_sha, merged_at IS NOT NULL FROM changes WHERE number = 5",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(merged, ("d00d04".to_string(), true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shard_polls_only_the_projects_it_owns() {
    use ci_slo_exporter::shard::Shard;
    let fake = Fake::default();
    let listed: Vec<String> = (0..10).map(|i| format!("top/listed-{i}")).collect();
    let grouped: Vec<String> = (0..50).map(|i| format!("grp/sub/p{i:03}")).collect();
    fake.groups
        .lock()
        .unwrap()
        .insert("grp".into(), grouped.clone());
    let fake = fake_gitlab::start(fake);
    let mut seen = std::collections::BTreeSet::new();
    for i in 1..=2 {
        let shard = Shard::new(i, 2).unwrap();
        let groups = |c: &mut GitlabConfig| {
            c.groups = vec![ci_slo_exporter::forge::gitlab::GroupConfig {
                group: "grp".into(),
                pattern: None,
                include_subgroups: true,
            }];
        };
        let s = setup_with(&fake.api_url, listed.clone(), groups, |c| c.shard = shard);
        let projects = s.poller.projects().await.unwrap();
        assert!(projects.len() > 15, "{shard}: {projects:?}");
        for p in projects {
            assert!(shard.owns(&p), "shard {shard} would poll {p}");
            assert!(seen.insert(p), "polled by both shards");
        }
    }
    // Listed and group projects alike: each on exactly one shard.
    assert_eq!(seen.len(), listed.len() + grouped.len());
}

fn hub() -> Arc<ci_slo_exporter::metrics::MetricsHub> {
    Arc::new(ci_slo_exporter::metrics::MetricsHub::new(
        ci_slo_exporter::metrics::SelfMetrics::new(),
    ))
}

/// A poller like `setup`'s that counts into `hub`.
fn with_hub(
    api_url: &str,
    hub: &Arc<ci_slo_exporter::metrics::MetricsHub>,
    tweak: impl FnOnce(&mut GitlabConfig),
) -> (Poller, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreHandle::start(&dir.path().join("db.sqlite")).unwrap();
    let mut config = GitlabConfig {
        api_url: api_url.to_string(),
        retry_base_delay: std::time::Duration::from_millis(1),
        ..GitlabConfig::default()
    };
    tweak(&mut config);
    let ctx = Context {
        hub: Some(hub.clone()),
        ..Context::new(
            store,
            Arc::new(Policy::from_config(&Config::default())),
            Arc::new(Classifier::with_defaults()),
        )
    };
    let poller = Poller::new(ctx, config, Some(Secret::new("glpat-test"))).unwrap();
    (poller, dir)
}

/// The same client policy as GitHub's: a listing stops at 10,000 pages (it
/// was silent), and that is logged (naming the endpoint) and counted.
#[tokio::test(flavor = "current_thread")]
async fn a_listing_cut_at_the_page_limit_is_logged_and_counted() {
    let (buf, _guard) = capture_logs();

    let fake = Fake::default();
    fake.endless_groups.lock().unwrap().insert("endless".into());
    let fake = fake_gitlab::start(fake);
    let hub = hub();
    let (p, _dir) = with_hub(&fake.api_url, &hub, |c| {
        c.groups = vec![ci_slo_exporter::forge::gitlab::GroupConfig {
            group: "endless".into(),
            pattern: None,
            include_subgroups: true,
        }];
    });
    let r = poll(&p).await;
    assert_eq!((r.scopes, r.failed.len()), (0, 0), "{r:?}");
    assert_eq!(
        fake.fake.by_path.lock().unwrap()["/api/v4/groups/endless/projects"],
        10_000,
        "the page limit"
    );
    assert_eq!(
        self_metric(
            &hub,
            "ci_exporter_forge_page_limit_reached",
            &[("forge", "gitlab"), ("endpoint", "group_projects")]
        ),
        1.0
    );
    let logs = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("WARN")
            && logs.contains("page limit")
            && logs.contains("endpoint=\"group_projects\""),
        "{logs}"
    );
    // The cut listing's first-page ETag was not kept: the next round reads
    // the listing again instead of taking a 304 for the unread rest.
    poll(&p).await;
    assert_eq!(
        fake.fake.by_path.lock().unwrap()["/api/v4/groups/endless/projects"],
        20_000,
        "the second round read the listing again"
    );
}

/// The same rate-limit rule as GitHub's: a `Retry-After` longer than
/// `max_retry_after` is waited for `max_retry_after`, then the request is
/// retried (it used to give up at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_is_waited_for_max_retry_after_then_retried() {
    let fake = Fake::default();
    let mut p = Project::default();
    p.pipelines
        .push(pipeline(9, "feed02", "success", "push", &ts(10)));
    p.jobs
        .insert(9, vec![job(91, "build", "compile", "success", &ts(12))]);
    fake.projects.lock().unwrap().insert("g/p".into(), p);
    let fake = fake_gitlab::start(fake);
    fake.fake.inject_retry_after.store(3600, Ordering::Relaxed);
    fake.fake.inject.lock().unwrap().extend([429]);
    let hub = hub();
    let (p, _dir) = with_hub(&fake.api_url, &hub, |c| {
        c.projects = vec!["g/p".into()];
        c.max_retry_after = std::time::Duration::from_millis(300);
    });
    let started = std::time::Instant::now();
    let r = poll(&p).await;
    let waited = started.elapsed();
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(r.runs, 2, "{r:?}");
    assert!(
        waited >= std::time::Duration::from_millis(300),
        "the capped wait was honoured: {waited:?}"
    );
    assert_eq!(
        self_metric(
            &hub,
            "ci_exporter_forge_api_requests",
            &[
                ("forge", "gitlab"),
                ("endpoint", "pipelines"),
                ("status", "429")
            ]
        ),
        1.0
    );
}

use super::*;
use crate::config::Config;
use crate::model::{
    ChangeRef, Completeness, EvidenceCandidate, FailureEvidence, NewRun, RepositoryRef, RunState,
    TestOutcome, TestResult, Trigger,
};
use crate::slo::EventCounts;
use crate::ui::RunFilter;
use chrono::Duration;
use rusqlite::params;
use std::collections::HashMap;

fn policy() -> Policy {
    let mut p = Policy::from_config(&Config::default());
    p.merge_settle_ms = 0;
    p
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap()
}

/// A database file at `path` at schema `version` (the migrations of that
/// time, run on a connection as the store opens it), `fill` writing its rows
/// in the same transaction.
fn database_at(
    path: &std::path::Path,
    version: usize,
    fill: impl FnOnce(&rusqlite::Transaction<'_>),
) {
    let conn = Connection::open(path).unwrap();
    register_functions(&conn).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for sql in &schema::MIGRATIONS[..version] {
        tx.execute_batch(sql).unwrap();
    }
    tx.pragma_update(None, "user_version", version as i64)
        .unwrap();
    fill(&tx);
    tx.commit().unwrap();
}

fn run(context: &str, commit: &str, attempt: u32, state: RunState) -> NewRun {
    let queued = now() - Duration::minutes(30);
    NewRun {
        repository: RepositoryRef {
            forge: Forge::Generic,
            path: "acme/shop".into(),
        },
        context: context.into(),
        commit: commit.into(),
        external_id: None,
        attempt_group: None,
        attempt,
        trigger: Trigger::PullRequest,
        trigger_pending: false,
        state,
        queued_at: Some(queued),
        started_at: Some(queued + Duration::seconds(60)),
        finished_at: state
            .is_terminal()
            .then(|| queued + Duration::seconds(60 + 198)),
        url: None,
        log_url: None,
        change: None,
        tests: Vec::new(),
        reports: Vec::new(),
        failures: Vec::new(),
        dependencies: Default::default(),
        source: "test".into(),
        completeness: Completeness::Partial,
    }
}

fn counter(store: &Store, family: &str, labels: &[(&str, &str)]) -> f64 {
    let want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    store
        .metric_state()
        .unwrap()
        .counters
        .into_iter()
        .filter(|c| c.family == family && want.iter().all(|w| c.labels.contains(w)))
        .map(|c| c.value)
        .sum()
}

fn histogram_count(store: &Store, family: &str) -> u64 {
    store
        .metric_state()
        .unwrap()
        .histograms
        .into_iter()
        .filter(|h| h.family == family)
        .map(|h| h.count)
        .sum()
}

#[test]
fn a_replayed_run_changes_nothing_and_is_reported_unchanged() {
    let mut store = Store::open_in_memory().unwrap();
    let r = run("test", "abc", 0, RunState::Success);
    let first = store.ingest_run(&r, &policy(), now()).unwrap();
    assert_eq!(first.status, IngestStatus::Created);
    let before = store.metric_state().unwrap();
    let again = store.ingest_run(&r, &policy(), now()).unwrap();
    assert_eq!(again, Ingested::new(first.id, IngestStatus::Unchanged));
    assert_eq!(store.metric_state().unwrap(), before);
    assert_eq!(store.run_count().unwrap(), 1);
}

#[test]
fn a_run_is_counted_once_when_it_becomes_final_whatever_updates_follow() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let pending = run("test", "abc", 0, RunState::Running);
    let id = store.ingest_run(&pending, &p, now()).unwrap().id;
    assert_eq!(counter(&store, "ci_runs", &[]), 0.0);
    assert_eq!(
        histogram_count(&store, "ci_run_queue_duration_seconds"),
        1,
        "queue time is known at start"
    );

    let done = run("test", "abc", 0, RunState::Failure);
    let updated = store.ingest_run(&done, &p, now()).unwrap();
    assert_eq!(updated, Ingested::new(id, IngestStatus::Updated));
    assert_eq!(
        counter(
            &store,
            "ci_runs",
            &[("state", "failure"), ("attempt", "first")]
        ),
        1.0
    );
    assert_eq!(histogram_count(&store, "ci_run_duration_seconds"), 1);

    // A forge's later part adds what the finished run lacked (a link) and is
    // not counted again.
    let mut linked = done.clone();
    linked.url = Some("https://ci.example/1".into());
    assert_eq!(
        store.ingest_run(&linked, &p, now()).unwrap().status,
        IngestStatus::Updated
    );
    assert_eq!(counter(&store, "ci_runs", &[]), 1.0);
    assert_eq!(
        store.run(id).unwrap().unwrap().url.as_deref(),
        Some("https://ci.example/1")
    );

    // Another final state of the finished run is a conflict: nothing changes.
    let before = store.run(id).unwrap().unwrap();
    let mut flipped = linked.clone();
    flipped.state = RunState::Success;
    let answer = store.ingest_run(&flipped, &p, now()).unwrap();
    assert_eq!(
        (answer.status, answer.differing),
        (IngestStatus::Conflict, vec!["state"])
    );
    assert_eq!(store.run(id).unwrap().unwrap(), before);
    assert_eq!(counter(&store, "ci_runs", &[]), 1.0);
    assert_eq!(histogram_count(&store, "ci_run_queue_duration_seconds"), 1);
    assert_eq!(
        counter(
            &store,
            "ci_exporter_data_quality_rejections",
            &[("reason", "finished_run_changed")]
        ),
        1.0
    );
}

#[test]
fn a_finished_run_sent_whole_is_immutable_and_a_replay_is_unchanged() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let mut first = run("test", "abc", 0, RunState::Failure);
    first.completeness = Completeness::Whole;
    first.external_id = Some("build-1".into());
    first.tests = vec![TestResult {
        name: "t".into(),
        outcome: TestOutcome::Failed,
        duration_seconds: Some(2.0),
        retries: 0,
        retry_reasons: Vec::new(),
        message: Some("boom".into()),
    }];
    let id = store.ingest_run(&first, &p, now()).unwrap().id;
    assert_eq!(
        store.ingest_run(&first, &p, now()).unwrap(),
        Ingested::new(id, IngestStatus::Unchanged)
    );
    let before = (
        store.run(id).unwrap().unwrap(),
        store.metric_state().unwrap(),
    );
    // The issue's rewrite: success while the failing test stays, trigger
    // reset to other, queue time erased.
    let mut rewrite = first.clone();
    rewrite.state = RunState::Success;
    rewrite.trigger = Trigger::Other;
    rewrite.queued_at = None;
    let answer = store.ingest_run(&rewrite, &p, now()).unwrap();
    assert_eq!(answer.status, IngestStatus::Conflict);
    assert_eq!(answer.differing, vec!["trigger", "state", "queued_at"]);
    let after = (
        store.run(id).unwrap().unwrap(),
        store.metric_state().unwrap(),
    );
    assert_eq!(after.0, before.0, "the run is as it was");
    let rejected = |m: &MetricState| {
        m.counters
            .iter()
            .filter(|c| c.family == "ci_exporter_data_quality_rejections")
            .map(|c| c.value)
            .sum::<f64>()
    };
    assert_eq!(rejected(&after.1), rejected(&before.1) + 1.0);
}

#[test]
fn runs_are_identified_by_external_id_before_context_commit_and_attempt() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let mut a = run("test", "abc", 0, RunState::Running);
    a.external_id = Some("job-1".into());
    let id = store.ingest_run(&a, &p, now()).unwrap().id;
    let mut renamed = a.clone();
    renamed.context = "test (renamed)".into();
    assert_eq!(store.ingest_run(&renamed, &p, now()).unwrap().id, id);
    assert_eq!(store.run_count().unwrap(), 1);
}

#[test]
fn distinct_external_ids_of_one_context_commit_and_attempt_are_distinct_runs() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    // A nightly re-run of an unchanged commit: pass, fail, pass, all attempt 0.
    let mut ids = Vec::new();
    for (night, state) in [RunState::Success, RunState::Failure, RunState::Success]
        .into_iter()
        .enumerate()
    {
        let mut r = run("nightly", "abc", 0, state);
        r.external_id = Some(format!("night-{night}"));
        let ingested = store.ingest_run(&r, &p, now()).unwrap();
        assert_eq!(ingested.status, IngestStatus::Created);
        ids.push(ingested.id);
    }
    assert_eq!(store.run_count().unwrap(), 3);
    let states: Vec<String> = ids
        .iter()
        .map(|id| store.run(*id).unwrap().unwrap().state)
        .collect();
    assert_eq!(states, ["success", "failure", "success"]);
    assert_eq!(counter(&store, "ci_runs", &[("attempt", "first")]), 3.0);
    // Without an external id the key stays (context, commit, attempt group, attempt).
    let plain = run("nightly", "abc", 0, RunState::Running);
    let a = store.ingest_run(&plain, &p, now()).unwrap();
    let b = store
        .ingest_run(&run("nightly", "abc", 0, RunState::Success), &p, now())
        .unwrap();
    assert_eq!(
        (a.status, b.status),
        (IngestStatus::Created, IngestStatus::Updated)
    );
    assert_eq!(a.id, b.id);
    assert_eq!(store.run_count().unwrap(), 4);
}

#[test]
fn migrating_a_database_with_colliding_runs_keeps_every_run() {
    // A database at schema 7 with runs of one context, commit and attempt
    // (distinct external ids could not both be stored there; the two kinds
    // of key are checked by the new indexes).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    database_at(&path, 7, |tx| {
        tx.execute(
            "INSERT INTO repositories (id, forge, path) VALUES (1, 'generic', 'acme/shop')",
            [],
        )
        .unwrap();
        for (ext, attempt) in [(Some("a"), 0), (None, 1), (Some("c"), 2)] {
            tx.execute(
                "INSERT INTO runs (repository_id, external_id, context, commit_sha, attempt, trigger, state, source,
                    content_hash, created_at, updated_at) VALUES (1, ?1, 'ctx', 'abc', ?2, 'push', 'success', 't', 'h', 0, 0)",
                params![ext, attempt],
            )
            .unwrap();
        }
    });
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.run_count().unwrap(), 3);
    // Now a second run with attempt 0 and another id is a run of its own.
    let mut again = run("ctx", "abc", 0, RunState::Success);
    again.external_id = Some("d".into());
    assert_eq!(
        store.ingest_run(&again, &policy(), now()).unwrap().status,
        IngestStatus::Created
    );
    assert_eq!(store.run_count().unwrap(), 4);
    let version: i64 = store
        .connection()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::MIGRATIONS.len() as i64);
}

#[test]
fn a_url_held_by_the_external_id_is_stored_once_and_reads_back() {
    // A database at schema 11: a run whose url is its external id after the
    // prefix (as `import cockpit` stores them), one with another url, one
    // whose id is the url itself (no prefix), one without an id.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v11.db");
    let url = "https://logs.example/pull-1-abc/log.html";
    let rows = [
        (Some(format!("cockpit:{url}")), Some(url), 0),
        (Some("job-7".to_string()), Some(url), 1),
        (Some(url.to_string()), Some(url), 2),
        (None, Some(url), 3),
        (Some("cockpit:x".to_string()), None, 4),
    ];
    database_at(&path, 11, |tx| {
        tx.execute(
            "INSERT INTO repositories (id, forge, path) VALUES (1, 'generic', 'acme/shop')",
            [],
        )
        .unwrap();
        for (ext, url, attempt) in &rows {
            tx.execute(
                "INSERT INTO runs (repository_id, external_id, context, commit_sha, attempt, trigger, state, source,
                    content_hash, created_at, updated_at, url)
                 VALUES (1, ?1, 'ctx', 'abc', ?2, 'push', 'success', 't', 'h', 0, 0, ?3)",
                params![ext, attempt, url],
            )
            .unwrap();
        }
    });
    let urls = |store: &Store| -> Vec<(Option<String>, Option<String>, bool)> {
        store
            .connection()
            .prepare("SELECT url, stored_url, url_in_id FROM runs ORDER BY attempt")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let mut store = Store::open(&path).unwrap();
    let expected = vec![
        (Some(url.to_string()), None, true),
        (Some(url.to_string()), Some(url.to_string()), false),
        (Some(url.to_string()), Some(url.to_string()), false),
        (Some(url.to_string()), Some(url.to_string()), false),
        (None, None, false),
    ];
    assert_eq!(urls(&store), expected, "migrated");

    // Ingest applies the same rule, and a replay of a migrated run is unchanged.
    for (ext, url, attempt) in &rows {
        let mut r = run("ctx", "def", *attempt, RunState::Success);
        r.external_id = ext.as_ref().map(|e| format!("new-{e}"));
        r.url = url.map(str::to_string);
        store.ingest_run(&r, &policy(), now()).unwrap();
    }
    let ingested: Vec<(Option<String>, bool)> = store
        .connection()
        .prepare("SELECT url, url_in_id FROM runs WHERE commit_sha = 'def' ORDER BY attempt")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        ingested,
        vec![
            // "new-cockpit:<url>": the prefix is "new-cockpit"
            (Some(url.to_string()), true),
            (Some(url.to_string()), false),
            // "new-https://...": "new-https" then "//logs...", not the url
            (Some(url.to_string()), false),
            (Some(url.to_string()), false),
            (None, false),
        ]
    );
    // What the run page reads.
    let id: i64 = store
        .connection()
        .query_row(
            "SELECT id FROM runs WHERE external_id = ?1",
            [format!("new-cockpit:{url}")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(store.run(id).unwrap().unwrap().url.as_deref(), Some(url));
}

#[test]
fn negative_and_absurd_durations_are_not_exported_but_counted() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let mut r = run("test", "abc", 0, RunState::Success);
    // A re-run whose created_at is days before it was requested, and which "finished before it started".
    r.queued_at = Some(now() - Duration::days(20));
    r.finished_at = Some(r.started_at.unwrap() - Duration::seconds(5));
    store.ingest_run(&r, &p, now()).unwrap();
    assert_eq!(histogram_count(&store, "ci_run_queue_duration_seconds"), 0);
    assert_eq!(histogram_count(&store, "ci_run_duration_seconds"), 0);
    assert_eq!(
        counter(
            &store,
            "ci_exporter_data_quality_rejections",
            &[("reason", "absurd_queue_time")]
        ),
        1.0
    );
    assert_eq!(
        counter(
            &store,
            "ci_exporter_data_quality_rejections",
            &[("reason", "negative_run_time")]
        ),
        1.0
    );
    assert_eq!(
        counter(&store, "ci_runs", &[]),
        1.0,
        "the run itself still counts"
    );
}

#[test]
fn a_merged_change_is_decided_from_its_head_commit_after_settling() {
    let mut store = Store::open_in_memory().unwrap();
    let mut p = policy();
    p.merge_settle_ms = 600_000;
    let merged_at = now() - Duration::minutes(5);
    let change = Some(ChangeRef {
        number: 7,
        merged_at: None,
    });
    for (ctx, attempt, state) in [
        ("a", 0, RunState::Failure),
        ("b", 0, RunState::Success),
        ("a", 1, RunState::Success),
    ] {
        let mut r = run(ctx, "head", attempt, state);
        r.change = change.clone();
        store.ingest_run(&r, &p, now()).unwrap();
    }
    let mut last = run("c", "head", 0, RunState::Success);
    last.change = Some(ChangeRef {
        number: 7,
        merged_at: Some(merged_at),
    });
    store.ingest_run(&last, &p, now()).unwrap();

    assert_eq!(
        store.settle(&p, now(), None).unwrap().changes_decided,
        0,
        "not settled yet"
    );
    let later = now() + Duration::minutes(11);
    assert_eq!(store.settle(&p, later, None).unwrap().changes_decided, 1);
    assert_eq!(
        counter(
            &store,
            "ci_merged_changes",
            &[("outcome", "green_after_one_retry")]
        ),
        1.0
    );
    assert_eq!(
        counter(
            &store,
            "ci_slo_events",
            &[("slo", "first_attempt_green"), ("result", "bad")]
        ),
        1.0
    );
    assert_eq!(
        counter(
            &store,
            "ci_slo_events",
            &[("slo", "green_within_one_retry"), ("result", "good")]
        ),
        1.0
    );
    assert_eq!(
        counter(
            &store,
            "ci_slo_events",
            &[("slo", "merged_without_failures"), ("result", "good")]
        ),
        1.0
    );
    assert_eq!(histogram_count(&store, "ci_change_retries_to_green"), 1);
    // Deciding again does nothing.
    assert_eq!(store.settle(&p, later, None).unwrap().changes_decided, 0);
    assert_eq!(counter(&store, "ci_merged_changes", &[]), 1.0);

    // A run arriving after the decision is recorded as late data, not re-decided.
    let mut late = run("d", "head", 0, RunState::Failure);
    late.change = Some(ChangeRef {
        number: 7,
        merged_at: None,
    });
    store.ingest_run(&late, &p, later).unwrap();
    assert_eq!(
        counter(
            &store,
            "ci_exporter_data_quality_rejections",
            &[("reason", "run_after_change_decided")]
        ),
        1.0
    );
    assert_eq!(
        store
            .settle(&p, later + Duration::hours(1), None)
            .unwrap()
            .changes_decided,
        0
    );
}

#[test]
fn a_merged_change_missing_a_required_context_is_merged_red() {
    let mut store = Store::open_in_memory().unwrap();
    let mut p = policy();
    p.required.insert(
        (Forge::Generic, "acme/shop".into()),
        vec!["a".into(), "must".into()],
    );
    let mut r = run("a", "head", 0, RunState::Success);
    r.change = Some(ChangeRef {
        number: 1,
        merged_at: Some(now() - Duration::minutes(1)),
    });
    store.ingest_run(&r, &p, now()).unwrap();
    store.settle(&p, now(), None).unwrap();
    assert_eq!(
        counter(&store, "ci_merged_changes", &[("outcome", "merged_red")]),
        1.0
    );
    assert_eq!(
        histogram_count(&store, "ci_change_retries_to_green"),
        0,
        "red changes have no retries-to-green"
    );
}

#[test]
fn every_event_new_to_the_store_counts_however_old_except_history_loaded_on_purpose() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let history = Policy {
        history: true,
        ..policy()
    };
    let old = |commit: &str| {
        let mut r = run("test", commit, 0, RunState::Success);
        for t in [&mut r.queued_at, &mut r.started_at, &mut r.finished_at] {
            *t = t.map(|t| t - Duration::days(10));
        }
        r
    };
    // Before the first serve everything counts, --history or not: the
    // counters start from the loaded history.
    store.ingest_run(&old("a"), &p, now()).unwrap();
    store.ingest_run(&old("b"), &history, now()).unwrap();
    assert_eq!(counter(&store, "ci_runs", &[]), 2.0);

    store.mark_serving(now()).unwrap();
    // A late event (a redelivered webhook, store-tests writing at merge time)
    // counts when it arrives, ten days late or not.
    store.ingest_run(&old("late"), &p, now()).unwrap();
    assert_eq!(counter(&store, "ci_runs", &[]), 3.0, "a late run counts");
    assert_eq!(counter(&store, "ci_exporter_backdated_events", &[]), 0.0);

    // History loaded on purpose after serving is stored, not counted live.
    store.ingest_run(&old("loaded"), &history, now()).unwrap();
    assert_eq!(
        counter(&store, "ci_runs", &[]),
        3.0,
        "--history: no live counter moves"
    );
    assert_eq!(
        counter(&store, "ci_exporter_backdated_events", &[("kind", "run")]),
        1.0
    );
    let window = store.slo_counts_since(now() - Duration::days(28)).unwrap();
    assert_eq!(
        window["run_time"].total, 4,
        "the windowed gauges see all of them"
    );

    // The same for merged changes: a late merge counts, a loaded one does not.
    for (number, commit, policy) in [(1, "late", &p), (2, "loaded", &history)] {
        store
            .record_merge(
                &RepositoryRef {
                    forge: Forge::Generic,
                    path: "acme/shop".into(),
                },
                number,
                Some(commit),
                now() - Duration::days(9),
                now(),
            )
            .unwrap();
        store.settle(policy, now(), Some(0)).unwrap();
    }
    assert_eq!(counter(&store, "ci_merged_changes", &[]), 1.0);
    assert_eq!(
        counter(
            &store,
            "ci_exporter_backdated_events",
            &[("kind", "merged_change")]
        ),
        1.0
    );
}

#[test]
fn a_scheduled_run_that_never_finishes_is_lost_once() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let mut r = run("nightly", "n1", 0, RunState::Running);
    r.trigger = Trigger::Schedule;
    store.ingest_run(&r, &p, now()).unwrap();
    assert_eq!(store.settle(&p, now(), None).unwrap().runs_lost, 0);
    let later = now() + Duration::hours(25);
    assert_eq!(store.settle(&p, later, None).unwrap().runs_lost, 1);
    assert_eq!(store.settle(&p, later, None).unwrap().runs_lost, 0);
    assert_eq!(
        counter(
            &store,
            "ci_slo_events",
            &[("slo", "runs_completed"), ("result", "bad")]
        ),
        1.0
    );
    // If it reports after all, the run counts but the SLO event stays the first one.
    let mut done = r.clone();
    done.state = RunState::Success;
    done.finished_at = Some(later);
    store.ingest_run(&done, &p, later).unwrap();
    assert_eq!(
        counter(&store, "ci_slo_events", &[("slo", "runs_completed")]),
        1.0
    );
    assert_eq!(counter(&store, "ci_runs", &[("state", "success")]), 1.0);
}

#[test]
fn test_results_become_test_success_events_once() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let mut r = run("test", "abc", 0, RunState::Failure);
    let t = |name: &str, outcome| TestResult {
        name: name.into(),
        outcome,
        duration_seconds: Some(1.0),
        retries: 0,
        retry_reasons: vec![],
        message: None,
    };
    r.tests = vec![
        t("a", TestOutcome::Passed),
        t("b", TestOutcome::Failed),
        t("c", TestOutcome::Skipped),
    ];
    store.ingest_run(&r, &p, now()).unwrap();
    r.url = Some("https://ci.example/2".into());
    store.ingest_run(&r, &p, now()).unwrap();
    assert_eq!(
        counter(
            &store,
            "ci_slo_events",
            &[("slo", "test_success"), ("result", "good")]
        ),
        1.0
    );
    assert_eq!(
        counter(
            &store,
            "ci_slo_events",
            &[("slo", "test_success"), ("result", "bad")]
        ),
        1.0
    );
    assert_eq!(store.run(1).unwrap().unwrap().tests.len(), 3);
}

#[test]
fn pruning_deletes_old_runs_and_never_lowers_a_counter() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let mut r = run("test", "abc", 0, RunState::Success);
    r.tests = vec![test_result("t1", TestOutcome::Passed, 0)];
    store.ingest_run(&r, &p, now()).unwrap();
    let before = store.metric_state().unwrap();
    let stats = store
        .prune(now() + Duration::days(1), now() + Duration::days(1))
        .unwrap();
    assert_eq!(stats.runs, 1);
    assert_eq!(store.run_count().unwrap(), 0);
    assert_eq!(store.metric_state().unwrap(), before);
    // The run's results, its commit's per-test state and the past days go too.
    let count = |table: &str| {
        store
            .connection()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
    };
    for table in [
        "results",
        "test_commits",
        "commits",
        "test_days",
        "test_events",
    ] {
        assert_eq!(count(table), 0, "{table}");
    }
    assert_eq!(count("tests"), 1, "a test's identity stays");
}

#[test]
fn exemplars_point_at_the_latest_run_in_each_bucket() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let a = store
        .ingest_run(&run("test", "a", 0, RunState::Success), &p, now())
        .unwrap()
        .id;
    let b = store
        .ingest_run(&run("test", "b", 0, RunState::Success), &p, now())
        .unwrap()
        .id;
    let state = store.metric_state().unwrap();
    let h = state
        .histograms
        .iter()
        .find(|h| h.family == "ci_run_queue_duration_seconds")
        .unwrap();
    let bucket = h.buckets.iter().find(|x| x.le == 60.0).unwrap();
    assert_eq!(bucket.count, 2);
    assert_eq!(bucket.exemplar.map(|e| e.0), Some(b));
    assert_ne!(a, b);
    assert!(h.buckets.iter().any(|x| x.le == f64::INFINITY));
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    Store::open(&path)
        .unwrap()
        .connection()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Store::open(&path).err().unwrap().to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

#[test]
fn a_state_only_update_keeps_the_tests_and_failures_stored_before() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let mut r = run("test", "abc", 0, RunState::Running);
    r.tests = vec![TestResult {
        name: "t".into(),
        outcome: TestOutcome::Failed,
        duration_seconds: None,
        retries: 0,
        retry_reasons: vec![],
        message: Some("boom".into()),
    }];
    r.failures = vec![FailureEvidence {
        class: "oom".into(),
        category: "infra".into(),
        line: Some(3),
        evidence: "Out of memory".into(),
        context: vec!["booting".into(), "Killed".into()],
        context_before: Some(1),
        fingerprint: Some("f1".into()),
        test_name: None,
        candidates: vec![EvidenceCandidate {
            line: 9,
            text: "Killed".into(),
            class: "killed".into(),
        }],
    }];
    let id = store.ingest_run(&r, &p, now()).unwrap().id;
    let mut done = run("test", "abc", 0, RunState::Failure);
    done.url = Some("https://ci.example/3".into());
    store.ingest_run(&done, &p, now()).unwrap();
    let view = store.run(id).unwrap().unwrap();
    assert_eq!(
        (view.state.as_str(), view.tests.len(), view.failures.len()),
        ("failure", 1, 1)
    );
    // The evidence comes back whole, with where it sits among its context lines.
    assert_eq!(view.failures, r.failures);
    assert_eq!(counter(&store, "ci_failures", &[("class", "oom")]), 1.0);
}

#[test]
fn deliveries_sync_state_and_logs_are_kept_once() {
    let mut store = Store::open_in_memory().unwrap();
    assert!(
        store
            .record_delivery(Forge::Github, "d-1", "status", now())
            .unwrap()
    );
    assert!(
        !store
            .record_delivery(Forge::Github, "d-1", "status", now())
            .unwrap()
    );
    assert!(
        store
            .record_delivery(Forge::Gitlab, "d-1", "Job Hook", now())
            .unwrap()
    );

    assert_eq!(
        store.sync_state(Forge::Github, "a/b", "pulls").unwrap(),
        None
    );
    let state = SyncState {
        cursor: Some("2026-11-01T00:00:00Z".into()),
        etag: Some("W/\"x\"".into()),
        last_success: Some(now()),
    };
    store
        .set_sync_state(Forge::Github, "a/b", "pulls", &state)
        .unwrap();
    assert_eq!(
        store.sync_state(Forge::Github, "a/b", "pulls").unwrap(),
        Some(state)
    );

    let id = store
        .ingest_run(&run("test", "abc", 1, RunState::Failure), &policy(), now())
        .unwrap()
        .id;
    assert!(!store.has_log(id).unwrap());
    assert!(store.store_log(id, "log text", false, now()).unwrap());
    assert!(!store.store_log(id, "other", false, now()).unwrap());
    assert!(store.has_log(id).unwrap());
    let repo = RepositoryRef {
        forge: Forge::Generic,
        path: "acme/shop".into(),
    };
    assert_eq!(
        store.latest_attempt(&repo, "test", "abc").unwrap(),
        Some((1, RunState::Failure))
    );
    assert_eq!(store.latest_attempt(&repo, "test", "zzz").unwrap(), None);
}

#[test]
fn the_first_slo_event_of_a_repository_creates_both_result_series() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .ingest_run(&run("test", "abc", 0, RunState::Success), &policy(), now())
        .unwrap();
    let state = store.metric_state().unwrap();
    let bad = state.counters.iter().find(|c| {
        c.family == "ci_slo_events"
            && c.labels.contains(&("slo".into(), "run_time".into()))
            && c.labels.contains(&("result".into(), "bad".into()))
    });
    assert_eq!(bad.map(|c| c.value), Some(0.0));
}

#[test]
fn a_run_shows_what_its_dependencies_changed_since_the_previous_run_of_its_context() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let deps = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let mut first = run("nightly", "c1", 0, RunState::Success);
    first.dependencies = deps(&[("urllib3", "2.2.2"), ("requests", "2.32.3")]);
    let mut other_context = run("lint", "c2", 0, RunState::Success);
    other_context.dependencies = deps(&[("urllib3", "9.9.9")]);
    let mut second = run("nightly", "c3", 0, RunState::Failure);
    for t in [
        &mut second.queued_at,
        &mut second.started_at,
        &mut second.finished_at,
    ] {
        *t = t.map(|t| t + Duration::minutes(5));
    }
    second.dependencies = deps(&[
        ("urllib3", "2.2.3"),
        ("requests", "2.32.3"),
        ("idna", "3.10"),
    ]);
    let first_id = store.ingest_run(&first, &p, now()).unwrap().id;
    store.ingest_run(&other_context, &p, now()).unwrap();
    let id = store.ingest_run(&second, &p, now()).unwrap().id;
    let view = store.run(id).unwrap().unwrap();
    let changes: Vec<(String, Option<String>, Option<String>)> = view
        .dependency_changes
        .into_iter()
        .map(|c| (c.package, c.before, c.after))
        .collect();
    assert_eq!(
        changes,
        vec![
            ("idna".into(), None, Some("3.10".into())),
            ("urllib3".into(), Some("2.2.2".into()), Some("2.2.3".into()))
        ]
    );
    assert!(
        store
            .run(first_id)
            .unwrap()
            .unwrap()
            .dependency_changes
            .is_empty(),
        "nothing to compare with"
    );
}

#[test]
fn nightly_runs_lists_every_scheduled_run_with_its_first_failure() {
    let mut s = Store::open_in_memory().unwrap();
    let p = policy();
    let day1 = Utc.with_ymd_and_hms(2026, 11, 18, 2, 0, 0).unwrap();
    let day2 = day1 + Duration::days(1);
    let nightly = |context: &str, commit: &str, at: DateTime<Utc>, state: RunState, secs: i64| {
        let mut r = run(context, commit, 0, state);
        r.trigger = Trigger::Schedule;
        r.queued_at = Some(at);
        r.started_at = Some(at + Duration::seconds(10));
        r.finished_at = Some(at + Duration::seconds(10 + secs));
        r
    };
    // Day 1: an early failed pipeline, then a later green one on another commit.
    s.ingest_run(
        &nightly("pipeline", "aaa", day1, RunState::Failure, 600),
        &p,
        now(),
    )
    .unwrap();
    s.ingest_run(
        &nightly(
            "pipeline",
            "bbb",
            day1 + Duration::hours(3),
            RunState::Success,
            500,
        ),
        &p,
        now(),
    )
    .unwrap();
    // Day 2: a failed pipeline whose job carries the evidence.
    s.ingest_run(
        &nightly("pipeline", "ccc", day2, RunState::Failure, 700),
        &p,
        now(),
    )
    .unwrap();
    let mut job = nightly(
        "test / unit",
        "ccc",
        day2 + Duration::minutes(1),
        RunState::Failure,
        300,
    );
    job.failures.push(FailureEvidence {
        class: "oom".into(),
        category: "infra".into(),
        line: Some(7),
        evidence: "Killed (out of memory)".into(),
        context: vec![],
        context_before: None,
        fingerprint: None,
        test_name: None,
        candidates: vec![],
    });
    let job_id = s.ingest_run(&job, &p, now()).unwrap().id;
    // Not scheduled: never in the grid.
    s.ingest_run(&run("pipeline", "ddd", 0, RunState::Failure), &p, now())
        .unwrap();

    let all = RunFilter::default();
    let runs = s
        .nightly_runs(day1 - Duration::days(1), day2 + Duration::days(1), &all)
        .unwrap();
    // Every scheduled run, by time: none is hidden behind a later one.
    assert_eq!(
        runs.iter()
            .map(|r| (r.day.to_string(), r.commit.as_str(), r.state.as_str()))
            .collect::<Vec<_>>(),
        [
            ("2026-11-18".to_string(), "aaa", "failure"),
            ("2026-11-18".to_string(), "bbb", "success"),
            ("2026-11-19".to_string(), "ccc", "failure"),
            ("2026-11-19".to_string(), "ccc", "failure"),
        ]
    );
    assert_eq!(runs[1].duration_seconds, Some(500.0));
    assert_eq!(runs[1].failure, None);
    assert_eq!(
        runs[2].failure, None,
        "the pipeline has no evidence of its own"
    );
    assert_eq!(runs[3].run_id, job_id);
    let f = runs[3].failure.as_ref().unwrap();
    assert_eq!(f.class, "oom");
    assert_eq!(f.evidence, "Killed (out of memory)");
    // The context filters in the query.
    let job_only = RunFilter {
        context: Some("test / unit".into()),
        ..RunFilter::default()
    };
    let got = s
        .nightly_runs(
            day1 - Duration::days(1),
            day2 + Duration::days(1),
            &job_only,
        )
        .unwrap();
    assert_eq!(got.iter().map(|r| r.run_id).collect::<Vec<_>>(), [job_id]);
    let other_repo = RunFilter {
        repository: Some("nobody/else".into()),
        ..RunFilter::default()
    };
    assert!(
        s.nightly_runs(day1, day2 + Duration::days(1), &other_repo)
            .unwrap()
            .is_empty()
    );
    // The window bounds are honoured.
    assert_eq!(
        s.nightly_runs(day2, day2 + Duration::days(1), &all)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn sections_and_external_runs_round_trip() {
    let mut s = Store::open_in_memory().unwrap();
    let mut r = run("build", "abc", 2, RunState::Failure);
    r.external_id = Some("job:9".into());
    r.trigger = Trigger::Schedule;
    let id = s.ingest_run(&r, &policy(), now()).unwrap().id;
    let found = s.external_run(&r.repository, "job:9").unwrap().unwrap();
    assert_eq!(
        (found.id, found.attempt, found.trigger),
        (id, 2, Trigger::Schedule)
    );
    assert!(s.external_run(&r.repository, "job:10").unwrap().is_none());
    assert!(s.has_runs_for_commit(&r.repository, "abc").unwrap());
    assert!(!s.has_runs_for_commit(&r.repository, "abd").unwrap());
    s.store_sections(id, &[("prepare".into(), 3), ("step_script".into(), 41)])
        .unwrap();
    assert_eq!(
        s.sections(id).unwrap(),
        vec![("prepare".to_string(), 3), ("step_script".to_string(), 41)]
    );
    assert!(!s.delivery_seen(Forge::Gitlab, "d-1").unwrap());
    assert!(
        s.record_delivery(Forge::Gitlab, "d-1", "Job Hook", now())
            .unwrap()
    );
    assert!(s.delivery_seen(Forge::Gitlab, "d-1").unwrap());
}

#[test]
fn upgrading_from_schema_5_keeps_failures_on_the_failures_page() {
    // A database written by the previous version (migrations 1-5) with one red run.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v5.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for (i, sql) in schema::MIGRATIONS[..5].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO repositories (id, forge, path) VALUES (7, 'generic', 'acme/shop');
             INSERT INTO runs (id, repository_id, context, commit_sha, attempt, trigger, state, queued_at,
               started_at, finished_at, source, content_hash, created_at, updated_at, queue_counted, final_counted)
             VALUES (3, 7, 'test', 'abc', 0, 'pull_request', 'failure', 1000, 2000, 3000, 'api', 'x', 3000, 3000, 1, 1);
             INSERT INTO failures (run_id, class, category, evidence, context) VALUES (3, 'oom', 'infrastructure', 'Killed', '[]');",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let keys = store
        .failure_keys_between(from_ms(0), from_ms(10_000), &ui::RunFilter::default())
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].run_id, keys[0].repository_id), (3, 7));
    assert_eq!(keys[0].context, "test");
    assert_eq!(keys[0].at, from_ms(1000));
    assert_eq!(
        store
            .failure_occurrence(keys[0].id)
            .unwrap()
            .unwrap()
            .evidence,
        "Killed"
    );
}

#[test]
fn slo_window_counts_from_the_hourly_rollup_equal_counting_every_event() {
    let store = Store::open_in_memory().unwrap();
    let conn = store.connection();
    let mut rng = fastrand::Rng::with_seed(11);
    let base = to_ms(now());
    let hour = 3_600_000;
    for i in 0..3000 {
        // Over ten days, some exactly on hour boundaries, some in the future.
        let at = if i % 10 == 0 {
            base - rng.i64(0..240) * hour
        } else {
            base - rng.i64(-hour..240 * hour)
        };
        conn.execute(
            "INSERT INTO slo_events (slo, subject, repository_id, at, good) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                ["run_time", "queue_time", "first_attempt_green"][i % 3],
                format!("s{i}"),
                rng.i64(1..5),
                at,
                rng.bool() as i64
            ],
        )
        .unwrap();
    }
    // Pruned events leave the rollup too.
    conn.execute("DELETE FROM slo_events WHERE subject LIKE 's1%'", [])
        .unwrap();
    let raw = |since: i64| -> HashMap<String, EventCounts> {
        let mut stmt = conn
            .prepare("SELECT slo, sum(good), count(*) FROM slo_events WHERE at >= ?1 GROUP BY slo")
            .unwrap();
        stmt.query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                EventCounts {
                    good: r.get::<_, i64>(1)? as u64,
                    total: r.get::<_, i64>(2)? as u64,
                },
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    let mut sinces = vec![base, base - hour, base - 24 * hour, base - 300 * hour];
    sinces.extend((0..200).map(|_| base - rng.i64(0..250 * hour)));
    for since in sinces {
        assert_eq!(
            store.slo_counts_since(from_ms(since)).unwrap(),
            raw(since),
            "since {since}"
        );
    }
}

#[test]
fn a_runs_events_in_one_row_roll_up_and_count_like_separate_events() {
    // `run_events` rows written, completed, partly cleared (as prune does)
    // and deleted: the hourly rollup and the window counts equal counting
    // every event of every row, as they do for `slo_events`.
    let store = Store::open_in_memory().unwrap();
    let conn = store.connection();
    let mut rng = fastrand::Rng::with_seed(13);
    let base = to_ms(now());
    let hour = 3_600_000;
    let columns = [
        ("queue_time", "queue_at", "queue_good"),
        ("run_time", "run_time_at", "run_time_good"),
        ("runs_completed", "completed_at", "completed_good"),
    ];
    for run_id in 1..=1500i64 {
        let at = base - rng.i64(-hour..240 * hour);
        conn.execute(
            "INSERT INTO run_events (run_id, repository_id, queue_at, queue_good) VALUES (?1, ?2, ?3, ?4)",
            params![run_id, rng.i64(1..5), at, rng.bool()],
        )
        .unwrap();
        // Most runs finish later (the upsert of counting: set once).
        if run_id % 5 != 0 {
            for (_, at_column, good_column) in &columns[1..] {
                if rng.bool() || *at_column == "run_time_at" {
                    conn.execute(
                        &format!(
                            "INSERT INTO run_events (run_id, repository_id, {at_column}, {good_column})
                             VALUES (?1, 0, ?2, ?3)
                             ON CONFLICT (run_id) DO UPDATE SET {at_column} = excluded.{at_column},
                                {good_column} = excluded.{good_column} WHERE {good_column} IS NULL"
                        ),
                        params![run_id, at + rng.i64(0..3 * hour), rng.bool()],
                    )
                    .unwrap();
                }
            }
        }
    }
    // Set once: a second final event of a run changes nothing.
    assert_eq!(
        conn.execute(
            "INSERT INTO run_events (run_id, repository_id, run_time_at, run_time_good) VALUES (1, 0, 5, 1)
             ON CONFLICT (run_id) DO UPDATE SET run_time_at = excluded.run_time_at,
                run_time_good = excluded.run_time_good WHERE run_time_good IS NULL",
            [],
        )
        .unwrap(),
        0
    );
    // Pruned events leave the rollup too: some columns cleared, some rows deleted.
    conn.execute(
        "UPDATE run_events SET queue_at = NULL, queue_good = NULL WHERE run_id % 7 = 0",
        [],
    )
    .unwrap();
    conn.execute("DELETE FROM run_events WHERE run_id % 11 = 0", [])
        .unwrap();
    let raw = |since: i64| -> HashMap<String, EventCounts> {
        let mut out: HashMap<String, EventCounts> = HashMap::new();
        for (slo, at, good) in columns {
            let (good, total): (i64, i64) = conn
                .query_row(
                    &format!(
                        "SELECT coalesce(sum({good}), 0), count(*) FROM run_events WHERE {at} >= ?1"
                    ),
                    [since],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            if total > 0 {
                out.insert(
                    slo.to_string(),
                    EventCounts {
                        good: good as u64,
                        total: total as u64,
                    },
                );
            }
        }
        out
    };
    assert_eq!(raw(i64::MIN).len(), 3, "every kind of event is there");
    let mut sinces = vec![base, base - hour, base - 24 * hour, base - 300 * hour];
    sinces.extend((0..100).map(|_| base - rng.i64(0..250 * hour)));
    for since in sinces {
        assert_eq!(
            store.slo_counts_since(from_ms(since)).unwrap(),
            raw(since),
            "since {since}"
        );
    }
    // The rollup holds nothing else: every hour's row is made of those events.
    let rollup: i64 = conn
        .query_row(
            "SELECT sum(total) FROM slo_hourly WHERE repository_id = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let events: u64 = raw(i64::MIN).values().map(|c| c.total).sum();
    assert_eq!(rollup as u64, events);
}

#[test]
fn upgrading_from_schema_12_moves_a_runs_slo_events_into_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v12.db");
    let t0 = to_ms(now() - Duration::hours(30));
    let hour = 3_600_000;
    database_at(&path, 12, |tx| {
        tx.execute_batch(
            "INSERT INTO repositories (id, forge, path) VALUES (1, 'generic', 'o/a'), (2, 'generic', 'o/b'),
                 (3, 'generic', 'o/c')",
        )
        .unwrap();
        let mut insert = tx
            .prepare("INSERT INTO slo_events (slo, subject, repository_id, at, good) VALUES (?1, ?2, ?3, ?4, ?5)")
            .unwrap();
        for i in 0..40i64 {
            let repository = 1 + i % 3;
            insert
                .execute(params![
                    "queue_time",
                    format!("run:{i}"),
                    repository,
                    t0 + i * hour,
                    i % 4 != 0
                ])
                .unwrap();
            if i % 5 != 0 {
                insert
                    .execute(params![
                        "run_time",
                        format!("run:{i}"),
                        repository,
                        t0 + i * hour + 1000,
                        i % 3 != 0
                    ])
                    .unwrap();
            }
            if i % 4 == 1 {
                insert
                    .execute(params![
                        "runs_completed",
                        format!("run:{i}"),
                        repository,
                        t0 + i * hour + 9,
                        i % 8 == 1
                    ])
                    .unwrap();
            }
            if i % 6 == 0 {
                insert
                    .execute(params![
                        "first_attempt_green",
                        format!("change:{i}"),
                        repository,
                        t0 + i * hour,
                        i % 12 == 0
                    ])
                    .unwrap();
            }
        }
        drop(insert);
    });
    let before = {
        let conn = Connection::open(&path).unwrap();
        let rollup: Vec<(i64, i64, String, i64, i64)> = conn
            .prepare("SELECT * FROM slo_hourly ORDER BY 1, 2, 3")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rollup
    };
    assert_eq!(
        before.iter().filter(|r| r.0 == 0).map(|r| r.4).sum::<i64>(),
        40 + 32 + 10 + 7
    );
    let store = Store::open(&path).unwrap();
    let conn = store.connection();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM run_events"), 40);
    assert_eq!(
        count("SELECT count(*) FROM run_events WHERE run_time_good IS NOT NULL"),
        32
    );
    assert_eq!(
        count("SELECT count(*) FROM run_events WHERE completed_at IS NOT NULL"),
        10
    );
    assert_eq!(
        count("SELECT count(*) FROM slo_events"),
        7,
        "the changes' events stay"
    );
    assert_eq!(
        count("SELECT completed_at - queue_at FROM run_events WHERE run_id = 5"),
        9,
        "each event keeps its time"
    );
    let after: Vec<(i64, i64, String, i64, i64)> = conn
        .prepare("SELECT * FROM slo_hourly ORDER BY 1, 2, 3")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(after, before, "the hourly rollup is unchanged");
    // Window counts, bad events and the prune read the moved events.
    let counts = store.slo_counts_since(from_ms(t0 - hour)).unwrap();
    assert_eq!(
        counts["queue_time"],
        EventCounts {
            good: 30,
            total: 40
        }
    );
    assert_eq!(counts["run_time"].total, 32);
    let bad = store
        .slo_bad_events("queue_time", from_ms(t0 - hour), None, 0, 100)
        .unwrap();
    assert_eq!(
        bad.iter().map(|e| e.run_id).collect::<Vec<_>>(),
        (0..40)
            .rev()
            .filter(|i| i % 4 == 0)
            .map(Some)
            .collect::<Vec<_>>()
    );
}

#[test]
fn delivery_ids_are_pruned_after_their_retention() {
    let store = Store::open_in_memory().unwrap();
    let now = Utc::now();
    assert!(
        store
            .record_delivery(
                Forge::Github,
                "old",
                "status",
                now - chrono::Duration::days(40)
            )
            .unwrap()
    );
    assert!(
        store
            .record_delivery(
                Forge::Gitlab,
                "new",
                "Job Hook",
                now - chrono::Duration::days(1)
            )
            .unwrap()
    );
    assert_eq!(
        store
            .prune_deliveries(now - chrono::Duration::days(30))
            .unwrap(),
        1
    );
    assert!(!store.delivery_seen(Forge::Github, "old").unwrap());
    assert!(store.delivery_seen(Forge::Gitlab, "new").unwrap());
}

fn test_result(name: &str, outcome: TestOutcome, retries: u32) -> TestResult {
    TestResult {
        name: name.into(),
        outcome,
        duration_seconds: Some(0.5),
        retries,
        retry_reasons: vec![],
        message: None,
    }
}

/// Histories of three tests over runs on a few commits (in ingest order):
/// (commit, outcome of `steady`, `wobbly`, `dead`, retries of `wobbly`).
fn history() -> Vec<(&'static str, [TestOutcome; 3], u32)> {
    use TestOutcome::*;
    vec![
        ("c1", [Passed, Failed, Failed], 0),
        ("c1", [Passed, Passed, Failed], 0),
        ("c2", [Skipped, Passed, Errored], 2),
        ("c3", [Passed, Failed, Failed], 0),
        ("c4", [Passed, Passed, Failed], 0),
        ("c4", [Passed, Failed, Failed], 0),
    ]
}

#[test]
fn per_test_counters_kept_at_ingest_equal_the_statistics_of_the_executions() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    let names = ["steady", "wobbly", "dead"];
    let mut executions: Vec<Vec<crate::flaky::Execution>> = vec![Vec::new(); 3];
    for (i, (commit, outcomes, retries)) in history().into_iter().enumerate() {
        let mut r = run("test", commit, 0, RunState::Failure);
        r.external_id = Some(format!("job-{i}"));
        for (k, name) in names.iter().enumerate() {
            let retries = if k == 1 { retries } else { 0 };
            r.tests.push(test_result(name, outcomes[k], retries));
            executions[k].push(crate::flaky::Execution {
                commit: commit.into(),
                outcome: outcomes[k],
                retries,
            });
        }
        store.ingest_run(&r, &p, now()).unwrap();
        // A replay of the same run counts nothing again.
        store.ingest_run(&r, &p, now()).unwrap();
    }
    let stats = store.test_stats(now() - Duration::days(7), 3).unwrap();
    assert_eq!(stats.len(), 3);
    for (k, name) in names.iter().enumerate() {
        let (_, _, _, got) = stats.iter().find(|s| s.2 == *name).unwrap();
        let want = crate::flaky::stats(&executions[k]).unwrap();
        assert_eq!(*got, want, "{name}");
    }
    let verdict = |name: &str| stats.iter().find(|s| s.2 == name).unwrap().3.verdict;
    assert_eq!(verdict("steady"), crate::flaky::Verdict::Healthy);
    assert_eq!(verdict("wobbly"), crate::flaky::Verdict::Flaky);
    assert_eq!(verdict("dead"), crate::flaky::Verdict::Broken);
    // One stored test per name, one result per run and test, readable through the view.
    let conn = store.connection();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM tests"), 3);
    assert_eq!(count("SELECT count(*) FROM results"), 18);
    assert_eq!(
        count("SELECT count(*) FROM test_results WHERE outcome = 'errored'"),
        1
    );
    // The last failure of `wobbly` is the last run's.
    assert_eq!(
        count("SELECT last_failure_run_id FROM tests WHERE name = 'wobbly'"),
        6
    );
    // Windows older than the results hold nothing.
    assert!(
        store
            .test_stats(now() + Duration::days(2), 3)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn upgrading_from_schema_9_keeps_every_result_and_computes_the_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v9.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for (i, sql) in schema::MIGRATIONS[..9].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        conn.execute(
            "INSERT INTO repositories (id, forge, path) VALUES (7, 'generic', 'acme/shop')",
            [],
        )
        .unwrap();
        let t0 = to_ms(now() - Duration::hours(6));
        for (i, (commit, outcomes, retries)) in history().into_iter().enumerate() {
            let id = i as i64 + 1;
            let at = t0 + id * 60_000;
            conn.execute(
                "INSERT INTO runs (id, repository_id, external_id, context, commit_sha, attempt, trigger, state,
                   queued_at, started_at, finished_at, source, content_hash, created_at, updated_at,
                   queue_counted, final_counted)
                 VALUES (?1, 7, ?2, 'test', ?3, 0, 'pull_request', 'failure', ?4, ?4, ?4, 'api', 'x', ?4, ?4, 1, 1)",
                params![id, format!("job-{i}"), commit, at],
            )
            .unwrap();
            for (k, name) in ["steady", "wobbly", "dead"].iter().enumerate() {
                conn.execute(
                    "INSERT INTO test_results (run_id, name, outcome, duration_seconds, retries, retry_reasons, message)
                     VALUES (?1, ?2, ?3, 0.5, ?4, '[]', NULL)",
                    params![id, name, outcomes[k].as_str(), if k == 1 { retries } else { 0 }],
                )
                .unwrap();
                if let Some((_, good)) = slo::test_event(outcomes[k]) {
                    conn.execute(
                        "INSERT INTO slo_events (slo, subject, repository_id, at, good)
                         VALUES ('test_success', ?1, 7, ?2, ?3)",
                        params![format!("test:{id}:{name}"), at, good],
                    )
                    .unwrap();
                }
            }
        }
    }
    let hourly = |store: &Store| -> Vec<(i64, i64, i64)> {
        store
            .connection()
            .prepare("SELECT repository_id, good, total FROM slo_hourly WHERE slo = 'test_success' ORDER BY 1, hour")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let before = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row(
            "SELECT sum(good), sum(total) FROM slo_hourly WHERE slo = 'test_success' AND repository_id = 7",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .unwrap()
    };
    assert_eq!(before, (8, 17));
    let store = Store::open(&path).unwrap();
    let conn = store.connection();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM results"), 18);
    assert_eq!(count("SELECT count(*) FROM test_results"), 18);
    assert_eq!(
        count("SELECT count(*) FROM slo_events WHERE slo = 'test_success'"),
        0
    );
    assert_eq!(
        count("SELECT sum(total) FROM test_events"),
        17,
        "one row per run"
    );
    let rollup = hourly(&store);
    assert_eq!(
        rollup
            .iter()
            .map(|r| (r.1, r.2))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
        (16, 34),
        "the hourly rollup (all repositories and acme/shop) is unchanged: {rollup:?}"
    );
    // The counters computed by the migration are what ingest would have kept.
    let stats = store.test_stats(now() - Duration::days(7), 3).unwrap();
    let mut executions: Vec<Vec<crate::flaky::Execution>> = vec![Vec::new(); 3];
    for (commit, outcomes, retries) in history() {
        for k in 0..3 {
            executions[k].push(crate::flaky::Execution {
                commit: commit.into(),
                outcome: outcomes[k],
                retries: if k == 1 { retries } else { 0 },
            });
        }
    }
    for (k, name) in ["steady", "wobbly", "dead"].iter().enumerate() {
        let (_, _, _, got) = stats.iter().find(|s| s.2 == *name).unwrap();
        assert_eq!(*got, crate::flaky::stats(&executions[k]).unwrap(), "{name}");
    }
    assert_eq!(
        count("SELECT last_failure_run_id FROM tests WHERE name = 'wobbly'"),
        6
    );
    assert_eq!(
        count("SELECT first_seen_flaky IS NOT NULL FROM tests WHERE name = 'wobbly'"),
        1
    );
    // A row written into the view (a tool loading results directly, the
    // benches' generators) lands in the compact tables.
    conn.execute(
        "INSERT INTO test_results (run_id, name, outcome, duration_seconds, retries, retry_reasons, message)
         VALUES (1, 'loaded_directly', 'failed', 1.5, 0, '[]', 'boom')",
        [],
    )
    .unwrap();
    assert_eq!(count("SELECT count(*) FROM results"), 19);
    assert_eq!(
        count(
            "SELECT count(*) FROM test_results WHERE run_id = 1 AND name = 'loaded_directly'
               AND outcome = 'failed' AND message = 'boom'"
        ),
        1
    );
}

#[test]
fn test_runs_in_windows_add_up_whole_days_from_each_first_day() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy();
    // `t` passes on day 0 (today) and fails twice two days ago; `old` ran
    // ten days ago only; `skip` was only skipped. A run with a skipped
    // result counts no run of that test.
    let today = to_ms(now()).div_euclid(86_400_000);
    for (i, (days_ago, tests)) in [
        (
            0,
            vec![("t", TestOutcome::Passed), ("skip", TestOutcome::Skipped)],
        ),
        (2, vec![("t", TestOutcome::Failed)]),
        (2, vec![("t", TestOutcome::Errored)]),
        (10, vec![("old", TestOutcome::Passed)]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = run("ci", &format!("c{i}"), 0, RunState::Failure);
        let at = now() - Duration::days(days_ago);
        (r.queued_at, r.started_at, r.finished_at) = (Some(at), Some(at), Some(at));
        r.tests = tests
            .into_iter()
            .map(|(n, o)| test_result(n, o, 0))
            .collect();
        store.ingest_run(&r, &p, now()).unwrap();
    }
    // Windows starting today, two days ago, 28 days ago.
    let got = store
        .test_runs_in_windows(&[today, today - 2, today - 28])
        .unwrap();
    let names = store
        .test_names(&got.iter().map(|t| t.test_id).collect::<Vec<_>>())
        .unwrap();
    let by_name: std::collections::BTreeMap<&str, Vec<(u64, u64)>> = got
        .iter()
        .map(|t| {
            (
                names[&t.test_id].name.as_str(),
                t.windows.iter().map(|w| (w.runs, w.passes)).collect(),
            )
        })
        .collect();
    assert_eq!(by_name["t"], vec![(1, 1), (3, 1), (3, 1)]);
    assert_eq!(by_name["old"], vec![(0, 0), (0, 0), (1, 1)]);
    assert!(
        !by_name.contains_key("skip"),
        "a skipped execution is no run: {by_name:?}"
    );
    assert!(got.iter().all(|t| t.repository == "acme/shop"));
    assert_eq!(names[&got[0].test_id].context, "ci");
    // Nothing before the earliest first day.
    let recent = store.test_runs_in_windows(&[today - 3]).unwrap();
    assert_eq!(recent.len(), 1);
    assert!(store.test_runs_in_windows(&[]).unwrap().is_empty());
}

#[test]
fn a_fresh_load_that_stops_midway_leaves_the_store_fresh_with_every_index() {
    // A fresh load drops the secondary indexes of `runs`, `slo_events`,
    // `run_events` and `test_events` and the rollup triggers inside its one
    // transaction: until it commits, no other connection sees them missing,
    // and a load that ends before (an error, a crash) leaves the store as it
    // was, every index there and still fresh.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let schema = |conn: &Connection| -> Vec<(String, String, Option<String>)> {
        conn.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let mut store = Store::open(&path).unwrap();
    let expected = schema(store.connection());
    assert!(
        expected
            .iter()
            .any(|(_, name, _)| name == "run_events_queue_at")
    );
    let policy = policy();
    assert!(store.accepts_fresh_load(&policy).unwrap());
    {
        let mut load = store.fresh_load(&policy, now()).unwrap();
        let runs: Vec<Prepared> = (0..20)
            .map(|i| {
                let mut r = run("ctx", &format!("c{i}"), 0, RunState::Success);
                r.external_id = Some(format!("e{i}"));
                Prepared::new(r, &policy, now())
            })
            .collect();
        load.store_batch(&runs, true).unwrap();
        assert_eq!(load.stored(), 20);
        // Another connection meanwhile: every index and trigger, no run.
        let other = Connection::open(&path).unwrap();
        assert_eq!(schema(&other), expected);
        let runs: i64 = other
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs, 0);
        // The load ends here without `finish`.
    }
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(schema(store.connection()), expected);
    assert_eq!(store.run_count().unwrap(), 0);
    assert!(store.accepts_fresh_load(&policy).unwrap());
}

#[test]
fn a_fresh_load_writes_through_a_rollback_journal_and_leaves_the_store_in_wal_mode() {
    // A fresh load switches the store's write-ahead log off for its
    // transaction (`fresh::rollback_journal`: each new page is written once,
    // into the file) and on again when it ends, finished or not. With
    // another connection open, SQLite refuses the switch and the load keeps
    // the log.
    let dir = tempfile::tempdir().unwrap();
    let mode = |conn: &Connection| -> String {
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    };
    let policy = policy();
    let runs: Vec<Prepared> = (0..20)
        .map(|i| {
            let mut r = run("ctx", &format!("c{i}"), 0, RunState::Success);
            r.external_id = Some(format!("e{i}"));
            Prepared::new(r, &policy, now())
        })
        .collect();
    let path = dir.path().join("alone.db");
    let mut store = Store::open(&path).unwrap();
    assert_eq!(mode(store.connection()), "wal");
    {
        let mut load = store.fresh_load(&policy, now()).unwrap();
        load.store_batch(&runs, true).unwrap();
        // The file says so to a connection opened now.
        let other = Connection::open(&path).unwrap();
        assert_eq!(mode(&other), "delete");
        // The load ends here without `finish`.
    }
    // The index a fresh load drops and builds at its end (`tests_name`, as
    // those of `runs`): there after a load that stopped and one that finished.
    let test_indexes = |conn: &Connection| -> Vec<String> {
        conn.prepare("SELECT name FROM pragma_index_list('tests') WHERE \"unique\"")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(mode(store.connection()), "wal", "after a load that stopped");
    assert_eq!(test_indexes(store.connection()), ["tests_name"]);
    assert_eq!(store.run_count().unwrap(), 0);
    assert!(store.accepts_fresh_load(&policy).unwrap());
    let load = {
        let mut load = store.fresh_load(&policy, now()).unwrap();
        load.store_batch(&runs, true).unwrap();
        load
    };
    load.finish(&mut |_, _| {}).unwrap();
    assert_eq!(mode(store.connection()), "wal", "after a finished load");
    assert_eq!(test_indexes(store.connection()), ["tests_name"]);
    assert_eq!(store.run_count().unwrap(), 20);
    drop(store);
    let other = Connection::open(&path).unwrap();
    assert_eq!(mode(&other), "wal", "in the file");
    assert_eq!(
        other
            .query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        20
    );

    // Another connection has the store open: the load keeps the log.
    let path = dir.path().join("shared.db");
    let mut store = Store::open(&path).unwrap();
    let reader = Connection::open(&path).unwrap();
    assert_eq!(
        reader
            .query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        0
    );
    let mut load = store.fresh_load(&policy, now()).unwrap();
    load.store_batch(&runs, true).unwrap();
    assert_eq!(mode(&reader), "wal");
    load.finish(&mut |_, _| {}).unwrap();
    assert_eq!(mode(store.connection()), "wal");
    assert_eq!(
        reader
            .query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        20
    );
}

#[test]
fn a_fresh_load_builds_its_per_test_tables_in_a_scratch_file_it_deletes_however_it_ends() {
    // The per-test tables are written into a scratch file next to the
    // store by a thread of their own and copied in at the end
    // (`scratch.rs`): the copy is the tables' rows and index, and the file
    // is gone and detached from the store's connection when the load ends,
    // finished or failed.
    let policy = policy();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("fresh.db"))
            .collect();
        names.sort();
        names
    };
    let attached = |store: &Store| -> Vec<String> {
        store
            .connection()
            .prepare("SELECT name FROM pragma_database_list WHERE name NOT IN ('main', 'temp')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let test = |name: &str, outcome| test_result(name, outcome, 0);
    // 30 runs of 10 commits, three tests each; t2 fails on every third run.
    let runs = |external: &dyn Fn(usize) -> String| -> Vec<Prepared> {
        (0..30)
            .map(|i| {
                let mut r = run("ctx", &format!("c{}", i % 10), 0, RunState::Success);
                r.external_id = Some(external(i));
                let t2 = if i % 3 == 0 {
                    TestOutcome::Failed
                } else {
                    TestOutcome::Passed
                };
                r.tests = vec![
                    test("t1", TestOutcome::Passed),
                    test("t2", t2),
                    test(&format!("only-{}", i % 5), TestOutcome::Passed),
                ];
                Prepared::new(r, &policy, now())
            })
            .collect()
    };
    let mut store = Store::open(&path).unwrap();
    // Two runs with one external id: the load fails when it builds the
    // runs' unique index, while the per-test tables are being built.
    let load = {
        let mut load = store.fresh_load(&policy, now()).unwrap();
        load.store_batch(&runs(&|i| format!("e{}", i.min(28))), true)
            .unwrap();
        load
    };
    let failed = load.finish(&mut |_, _| {}).unwrap_err();
    assert!(failed.is_constraint_violation(), "{failed}");
    assert_eq!(files(), Vec::<String>::new(), "after a failed load");
    assert_eq!(attached(&store), Vec::<String>::new());
    assert_eq!(store.run_count().unwrap(), 0);
    assert!(store.accepts_fresh_load(&policy).unwrap());

    let mut steps = Vec::new();
    let load = {
        let mut load = store.fresh_load(&policy, now()).unwrap();
        load.store_batch(&runs(&|i| format!("e{i}")), true).unwrap();
        load
    };
    let told = load.steps();
    load.finish(&mut |done, what| steps.push((done, what.to_string())))
        .unwrap();
    assert_eq!(files(), Vec::<String>::new(), "after a finished load");
    assert_eq!(attached(&store), Vec::<String>::new());
    // Progress: every step told once, in order, as many as announced.
    assert_eq!(steps.len(), told);
    assert!(steps.iter().enumerate().all(|(i, (done, _))| *done == i));
    assert!(
        steps
            .iter()
            .any(|(_, what)| what == "copying the per-test tables")
    );
    let one = |sql: &str| -> i64 { store.connection().query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(one("SELECT count(*) FROM tests"), 7);
    assert_eq!(one("SELECT runs FROM tests WHERE name = 't2'"), 30);
    assert_eq!(one("SELECT failures FROM tests WHERE name = 't2'"), 10);
    // A (commit, test) row per pair: t1 and t2 on each of 10 commits, each
    // only-N on the 2 commits it ran on.
    assert_eq!(one("SELECT count(*) FROM test_commits"), 30);
    assert_eq!(one("SELECT sum(runs) FROM test_days"), 90);
    // The tests' unique index is there, used and whole.
    // (`INDEXED BY` fails when the index cannot serve the query.)
    assert_eq!(
        one("SELECT count(*) FROM tests INDEXED BY tests_name
             WHERE (repository_id, context) = (SELECT repository_id, context FROM tests WHERE name = 't1')"),
        7
    );
    let check: String = store
        .connection()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_fresh_load_checks_no_foreign_key_row_by_row_and_enforces_them_again_when_it_ends() {
    let policy = policy();
    let enforced = |store: &Store| -> bool {
        store
            .connection()
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap()
    };
    let dangling = |store: &Store| -> i64 {
        store
            .connection()
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let runs: Vec<Prepared> = (0..20)
        .map(|i| {
            let state = if i % 3 == 0 {
                RunState::Failure
            } else {
                RunState::Success
            };
            let mut r = run("ctx", &format!("c{i}"), 0, state);
            r.external_id = Some(format!("e{i}"));
            r.change = Some(ChangeRef {
                number: i % 4,
                merged_at: None,
            });
            let test = |name: &str, outcome| test_result(name, outcome, 0);
            r.tests = vec![
                test("t1", TestOutcome::Passed),
                test("t2", TestOutcome::Failed),
            ];
            if state == RunState::Failure {
                r.failures = vec![FailureEvidence {
                    class: "oom".into(),
                    category: "infra".into(),
                    line: Some(3),
                    evidence: "Out of memory".into(),
                    context: vec!["Killed".into()],
                    context_before: Some(0),
                    fingerprint: Some("f1".into()),
                    test_name: None,
                    candidates: Vec::new(),
                }];
            }
            Prepared::new(r, &policy, now())
        })
        .collect();
    let mut store = Store::open_in_memory().unwrap();
    assert!(enforced(&store));
    {
        let mut load = store.fresh_load(&policy, now()).unwrap();
        load.store_batch(&runs, true).unwrap();
        // The load ends here without `finish`.
    }
    assert!(enforced(&store), "after a load that stopped");
    assert_eq!(store.run_count().unwrap(), 0);
    let mut load = store.fresh_load(&policy, now()).unwrap();
    load.store_batch(&runs, true).unwrap();
    load.finish(&mut |_, _| {}).unwrap();
    assert!(enforced(&store), "after a finished load");
    assert_eq!(store.run_count().unwrap(), 20);
    let one = |sql: &str| -> i64 { store.connection().query_row(sql, [], |r| r.get(0)).unwrap() };
    // What references a run, a change and a repository was written.
    assert!(one("SELECT count(*) FROM results") >= 40);
    assert!(one("SELECT count(*) FROM runs WHERE change_id IS NOT NULL") > 0);
    assert!(one("SELECT count(*) FROM failures WHERE fingerprint_id IS NOT NULL") > 0);
    assert_eq!(dangling(&store), 0);
    // Enforced again: a dangling reference is refused.
    assert!(
        store
            .connection()
            .execute(
                "INSERT INTO results (run_id, test_id, outcome, retries) VALUES (999999, 1, 0, 0)",
                [],
            )
            .is_err()
    );
}

#[test]
fn a_fresh_load_stores_changes_and_repositories_as_the_per_run_path_does() {
    // A fresh load remembers the repositories and changes it wrote
    // (`fresh_runs.rs`) instead of asking per run: a change seen again, with
    // a merge time it lacked, one it has, or none, and runs of two
    // repositories, stored in two batches, give the rows run-by-run
    // ingest gives.
    let merged = |minutes: i64| Some(now() - Duration::minutes(minutes));
    let changes = [
        ("acme/shop", 1, None),
        ("acme/shop", 1, merged(50)),
        ("acme/shop", 1, merged(40)),
        ("acme/shop", 2, merged(30)),
        ("acme/web", 1, None),
        ("acme/shop", 2, None),
        ("acme/web", 1, None),
        ("acme/web", 2, None),
        ("acme/web", 1, merged(20)),
        ("acme/shop", 1, None),
    ];
    let runs: Vec<NewRun> = changes
        .iter()
        .enumerate()
        .map(|(i, (path, number, merged_at))| {
            let mut r = run("ctx", &format!("c{i}"), 0, RunState::Success);
            r.repository.path = (*path).into();
            r.external_id = Some(format!("e{i}"));
            r.change = Some(ChangeRef {
                number: *number,
                merged_at: *merged_at,
            });
            r
        })
        .collect();
    let (fresh, per_run) = stored_both_ways(&runs, &[4]);
    let rows = |store: &Store| {
        query_rows(
            store,
            &[
                "SELECT id, forge, path FROM repositories ORDER BY id",
                "SELECT id, repository_id, number, merged_at, last_activity, decided_at FROM changes ORDER BY id",
                "SELECT id, repository_id, change_id FROM runs ORDER BY id",
            ],
        )
    };
    let (got, want) = (rows(&fresh), rows(&per_run));
    assert_eq!(got, want);
    // What the comparison covers: two repositories, four changes, the
    // merge times the first runs lacked set, the first ones kept.
    assert_eq!(want.len(), 2 + 4 + runs.len(), "{want:?}");
    let merged_changes: i64 = fresh
        .connection()
        .query_row(
            "SELECT count(*) FROM changes WHERE merged_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(merged_changes, 3);
}

/// `runs` stored run by run (`ingest_run`) and, into another store, by a
/// fresh load in batches cut at `cuts` (indexes into `runs`): (fresh, per run).
fn stored_both_ways(runs: &[NewRun], cuts: &[usize]) -> (Store, Store) {
    let policy = policy();
    let mut per_run = Store::open_in_memory().unwrap();
    for r in runs {
        per_run.ingest_run(r, &policy, now()).unwrap();
    }
    let mut fresh = Store::open_in_memory().unwrap();
    assert!(fresh.accepts_fresh_load(&policy).unwrap());
    let mut load = fresh.fresh_load(&policy, now()).unwrap();
    let prepared: Vec<Prepared> = runs
        .iter()
        .map(|r| Prepared::new(r.clone(), &policy, now()))
        .collect();
    let mut from = 0;
    for to in cuts.iter().copied().chain([prepared.len()]) {
        load.store_batch(&prepared[from..to], true).unwrap();
        from = to;
    }
    load.finish(&mut |_, _| {}).unwrap();
    (fresh, per_run)
}

/// Every row the queries `sql` give, each as the Debug text of its values.
fn query_rows(store: &Store, sql: &[&str]) -> Vec<String> {
    let conn = store.connection();
    let mut out = Vec::new();
    for sql in sql {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        let mut q = stmt.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let values: Vec<rusqlite::types::Value> = (0..n).map(|i| r.get(i).unwrap()).collect();
            out.push(format!("{values:?}"));
        }
    }
    out
}

#[test]
fn a_fresh_load_counts_a_repeated_name_by_its_first_result_and_stores_its_last() {
    // A name given twice in one run counts once, by its first result, and
    // stores its last. A fresh load reads what counts back from the stored
    // rows at its end, and keeps in memory only the results whose first
    // counts otherwise than their last: every pair of outcomes (skipped
    // first or last, a pass after retries), runs of two commits over two
    // days, stored in three batches, must give the per-test rows run-by-run
    // ingest gives.
    use TestOutcome::{Errored, Failed, Passed, Skipped};
    let outcomes = [
        (Passed, 0),
        (Passed, 2),
        (Failed, 0),
        (Errored, 0),
        (Skipped, 0),
    ];
    let mut runs = Vec::new();
    for (i, first) in outcomes.iter().enumerate() {
        for (j, last) in outcomes.iter().enumerate() {
            let mut r = run("ctx", &format!("c{}", (i + j) % 2), 0, RunState::Failure);
            r.external_id = Some(format!("e{i}-{j}"));
            // Two days apart, in run order.
            for t in [&mut r.queued_at, &mut r.started_at, &mut r.finished_at] {
                *t = t.map(|t| t - Duration::days(2) + Duration::hours((i * 5 + j) as i64 * 2));
            }
            r.tests = vec![
                test_result("t::shared", Passed, 0),
                test_result("t::repeated", first.0, first.1),
                test_result(&format!("t::only{i}"), Failed, 0),
                test_result("t::repeated", Failed, 0),
                test_result("t::repeated", last.0, last.1),
                test_result("t::skipped", Skipped, 0),
            ];
            r.tests[4].message = Some(format!("last of {i} {j}"));
            runs.push(r);
        }
    }
    let (fresh, per_run) = stored_both_ways(&runs, &[7, 16]);
    let rows = |store: &Store| {
        let conn = store.connection();
        // Every column of each table, rows in the order of all their columns.
        let sql: Vec<String> = [
            "tests",
            "test_days",
            "test_commits",
            "results",
            "test_events",
        ]
        .iter()
        .map(|table| {
            let n = conn
                .prepare(&format!("SELECT * FROM {table}"))
                .unwrap()
                .column_count();
            // The table's name is the first column; its own come after it.
            let order: Vec<String> = (2..=n + 1).map(|i| i.to_string()).collect();
            format!(
                "SELECT '{table}', * FROM {table} ORDER BY {}",
                order.join(", ")
            )
        })
        .collect();
        let sql: Vec<&str> = sql.iter().map(String::as_str).collect();
        query_rows(store, &sql)
    };
    let (got, want) = (rows(&fresh), rows(&per_run));
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "the first row that differs");
    }
    assert_eq!(got.len(), want.len());
    // What the comparison covers: the repeated test counted 20 times (25
    // runs, 5 of them skipped first), failed by 10 first results
    // (failed and errored), though its stored last results say otherwise.
    let one = |sql: &str| -> i64 { fresh.connection().query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(one("SELECT runs FROM tests WHERE name = 't::repeated'"), 20);
    assert_eq!(
        one("SELECT failures FROM tests WHERE name = 't::repeated'"),
        10
    );
    assert_eq!(
        one(
            "SELECT count(*) FROM results r JOIN tests t ON t.id = r.test_id
             WHERE t.name = 't::repeated' AND r.message LIKE 'last of %'"
        ),
        25
    );
    assert!(
        one(
            "SELECT count(*) FROM test_days WHERE test_id = (SELECT id FROM tests WHERE name = 't::repeated')"
        ) >= 2
    );
}

#[test]
fn read_consistent_reads_one_snapshot_while_another_connection_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ci.db");
    let mut writer = Store::open(&path).unwrap();
    writer
        .ingest_run(&run("ctx", "a", 0, RunState::Success), &policy(), now())
        .unwrap();
    let reader = Store::open(&path).unwrap();
    let mut seen = Vec::new();
    Storage::read_consistent(&reader, &mut |store| {
        seen.push((store.run_count()?, store.metric_state()?));
        // Another connection commits a run between two reads of the snapshot.
        writer
            .ingest_run(&run("ctx", "b", 0, RunState::Failure), &policy(), now())
            .unwrap();
        seen.push((store.run_count()?, store.metric_state()?));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen[0].0, 1);
    assert_eq!(
        seen[1], seen[0],
        "a read inside the snapshot saw a later commit"
    );
    assert_ne!(
        reader.metric_state().unwrap(),
        seen[0].1,
        "the commit moved counters"
    );
    // Outside it, the next read sees the commit; so would statement-by-statement reads.
    assert_eq!(reader.run_count().unwrap(), 2);
    // A failing read ends the snapshot too: the connection reads afresh after it.
    let failed =
        Storage::read_consistent(&reader, &mut |_| Err(StoreError::Refused("stop".into())));
    assert!(failed.is_err());
    writer
        .ingest_run(&run("ctx", "c", 0, RunState::Success), &policy(), now())
        .unwrap();
    assert_eq!(reader.run_count().unwrap(), 3);
}

#[test]
fn an_external_id_is_indexed_by_its_fixed_64_bit_key() {
    // The first 8 bytes of the id's SHA-256, big-endian (computed
    // independently: Python's hashlib).
    assert_eq!(
        external_key("cockpit:https://logs.example/pull-1-abc/log.html"),
        0x38ef_2256_0bec_7092
    );
    assert_eq!(external_key("job-7"), 0xc37b_d1a8_462d_7ad6_u64 as i64);
    let store = Store::open_in_memory().unwrap();
    let in_sql: i64 = store
        .connection()
        .query_row("SELECT run_external_key('job-7')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        in_sql,
        external_key("job-7"),
        "the SQL function is the same hash"
    );

    // Every lookup of a run by its id goes through the key's index.
    let sql = "SELECT id FROM runs r WHERE r.repository_id = 1 AND r.external_key = ?1 AND r.external_id = ?2";
    let plan: Vec<String> = store
        .connection()
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(params![1, "x"], |r| r.get(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("INDEX runs_external (repository_id=? AND external_key=?)"),
        "{plan}"
    );
}

#[test]
fn runs_are_found_by_key_and_id_and_a_key_collision_is_refused_clearly() {
    let mut store = Store::open_in_memory().unwrap();
    let repository = RepositoryRef {
        forge: Forge::Generic,
        path: "acme/shop".into(),
    };
    let mut first = run("ctx", "abc", 1, RunState::Success);
    first.external_id = Some("job-1".into());
    let id = store.ingest_run(&first, &policy(), now()).unwrap().id;
    let stored: (i64, Vec<u8>, String) = store
        .connection()
        .query_row(
            "SELECT external_key, content_digest, content_hash FROM runs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(stored.0, external_key("job-1"));
    assert_eq!(stored.1.len(), 16, "the hash as its bytes");
    assert_eq!(stored.2, content_hash(&first), "and read back as text");
    assert_eq!(
        store
            .run_by_external_id(&repository, "job-1")
            .unwrap()
            .map(|r| r.id),
        Some(id)
    );
    assert_eq!(
        store
            .external_run(&repository, "job-1")
            .unwrap()
            .map(|r| r.id),
        Some(id)
    );
    assert_eq!(
        store.ingest_run(&first, &policy(), now()).unwrap().status,
        IngestStatus::Unchanged
    );

    // A stored run whose key equals another id's (what a collision of two
    // ids would leave): the lookup compares the id, so neither is the
    // other, and the second id is refused with both named.
    store
        .connection()
        .execute(
            "UPDATE runs SET external_key = ?1 WHERE id = ?2",
            params![external_key("job-2"), id],
        )
        .unwrap();
    assert_eq!(
        store.run_by_external_id(&repository, "job-2").unwrap(),
        None
    );
    assert!(store.external_run(&repository, "job-2").unwrap().is_none());
    let mut second = run("ctx", "abc", 2, RunState::Success);
    second.external_id = Some("job-2".into());
    let err = store.ingest_run(&second, &policy(), now()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"job-2\"") && text.contains("\"job-1\"") && text.contains("collision"),
        "{text}"
    );
    assert_eq!(store.run_count().unwrap(), 1, "nothing stored");
    // In another repository the same key is another run.
    second.repository.path = "acme/other".into();
    assert_eq!(
        store.ingest_run(&second, &policy(), now()).unwrap().status,
        IngestStatus::Created
    );
}

#[test]
fn upgrading_from_schema_13_keys_every_external_id_and_keeps_every_run() {
    // A database at schema 13 with runs as that version stored them: ids
    // (a Cockpit one holding its url), one without, the hex content hash
    // ingest computed, and a hand-written hash that is not hex.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v13.db");
    let url = "https://cockpit-logs.us-east-1.linodeobjects.com/pull-1-abc/log.html";
    let mut runs = Vec::new();
    for (i, ext) in [Some(format!("cockpit:{url}")), Some("job-7".into()), None]
        .into_iter()
        .enumerate()
    {
        let mut r = run("ctx", "abc", i as u32, RunState::Success);
        r.url = ext.as_ref().map(|_| url.to_string());
        r.external_id = ext;
        runs.push(r);
    }
    database_at(&path, 13, |tx| {
        tx.execute(
            "INSERT INTO repositories (id, forge, path) VALUES (1, 'generic', 'acme/shop')",
            [],
        )
        .unwrap();
        for r in &runs {
            let in_id = url_in_id(r.external_id.as_deref(), r.url.as_deref());
            tx.execute(
                "INSERT INTO runs (repository_id, external_id, context, commit_sha, attempt, trigger, state, source,
                    content_hash, created_at, updated_at, stored_url, url_in_id, queued_at, started_at,
                    finished_at, queue_counted, final_counted)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, ?9, ?10, ?11, ?12, ?13, 1, 1)",
                params![
                    r.external_id,
                    r.context,
                    r.commit,
                    r.attempt,
                    r.trigger.as_str(),
                    r.state.as_str(),
                    r.source,
                    content_hash(r),
                    if in_id { None } else { r.url.as_deref() },
                    in_id,
                    r.queued_at.map(to_ms),
                    r.started_at.map(to_ms),
                    r.finished_at.map(to_ms),
                ],
            )
            .unwrap();
        }
        tx.execute(
            "INSERT INTO runs (repository_id, external_id, context, commit_sha, attempt, trigger, state, source,
                content_hash, created_at, updated_at)
             VALUES (1, 'by-hand', 'ctx', 'def', 0, 'push', 'success', 't', 'h', 0, 0)",
            [],
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    type Row = (Option<String>, Option<i64>, String, String, Option<String>);
    let rows: Vec<Row> = store
        .connection()
        .prepare(
            "SELECT external_id, external_key, typeof(content_digest), content_hash, url FROM runs ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 4, "every run kept");
    let forms: Vec<(i64, Option<String>)> = store
        .connection()
        .prepare("SELECT id_form, stored_external_id FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        forms,
        [
            (1, Some("pull-1-abc".into())),
            (0, Some("job-7".into())),
            (0, None),
            (0, Some("by-hand".into()))
        ],
        "a Cockpit log id without its host"
    );
    for (r, row) in runs.iter().zip(&rows) {
        assert_eq!(row.0, r.external_id);
        assert_eq!(row.1, r.external_id.as_deref().map(external_key), "{row:?}");
        assert_eq!((row.2.as_str(), row.3.clone()), ("blob", content_hash(r)));
        assert_eq!(row.4, r.url);
    }
    assert_eq!(
        rows[3],
        (
            Some("by-hand".into()),
            Some(external_key("by-hand")),
            "text".into(),
            "h".into(),
            None
        )
    );
    // The runs stored before are found again: a replay changes nothing, a
    // new id is a new run.
    for r in &runs {
        assert_eq!(
            store.ingest_run(r, &policy(), now()).unwrap().status,
            IngestStatus::Unchanged,
            "{:?}",
            r.external_id
        );
    }
    let repository = runs[0].repository.clone();
    assert_eq!(
        store
            .run_by_external_id(&repository, &format!("cockpit:{url}"))
            .unwrap()
            .map(|r| r.id),
        Some(1)
    );
    assert_eq!(
        store
            .run_by_external_id(&repository, "by-hand")
            .unwrap()
            .map(|r| r.id),
        Some(4)
    );
    let mut other = runs[1].clone();
    other.external_id = Some("job-8".into());
    assert_eq!(
        store.ingest_run(&other, &policy(), now()).unwrap().status,
        IngestStatus::Created
    );
    assert_eq!(store.run_count().unwrap(), 5);
    // The index holds the key, and still refuses a second run with one id.
    let index: String = store
        .connection()
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'runs_external'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(index.contains("(repository_id, external_key)"), "{index}");
    let duplicate = store.connection().execute(
        "INSERT INTO runs (repository_id, external_id, external_key, context, commit_sha, attempt, trigger, state,
            source, content_digest, created_at, updated_at)
         SELECT repository_id, external_id, external_key, context, 'zzz', attempt, trigger, state, source,
            content_digest, 0, 0 FROM runs WHERE id = 2",
        [],
    );
    assert!(duplicate.is_err());
}

#[test]
fn a_cockpit_log_id_is_stored_without_its_host_and_reads_back_whole() {
    let mut store = Store::open_in_memory().unwrap();
    let host = "cockpit:https://cockpit-logs.us-east-1.linodeobjects.com/";
    let ids = [
        (
            format!("{host}pull-1-abc-fedora-42/log.html"),
            1,
            "pull-1-abc-fedora-42",
        ),
        (format!("{host}/log.html"), 1, ""),
        (format!("{host}pull-2/log.txt"), 2, "pull-2/log.txt"),
        (format!("{host}log.html"), 2, "log.html"),
        (host.to_string(), 2, ""),
        (
            "cockpit:https://logs.example/a/log.html".to_string(),
            0,
            "cockpit:https://logs.example/a/log.html",
        ),
        ("job-9".to_string(), 0, "job-9"),
    ];
    for (i, (id, _, _)) in ids.iter().enumerate() {
        let mut r = run("ctx", "abc", i as u32, RunState::Success);
        r.external_id = Some(id.clone());
        r.url = id.split_once(':').map(|(_, url)| url.to_string());
        store.ingest_run(&r, &policy(), now()).unwrap();
        // A replay finds it (by key and the id read back).
        assert_eq!(
            store.ingest_run(&r, &policy(), now()).unwrap().status,
            IngestStatus::Unchanged,
            "{id}"
        );
    }
    let rows: Vec<(String, i64, String, Option<String>)> = store
        .connection()
        .prepare("SELECT external_id, id_form, stored_external_id, url FROM runs ORDER BY attempt")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for ((id, form, stored), row) in ids.iter().zip(&rows) {
        assert_eq!(
            (row.0.as_str(), row.1, row.2.as_str()),
            (id.as_str(), *form, *stored)
        );
        assert_eq!(row.3.as_deref(), id.split_once(':').map(|(_, url)| url));
    }
    // Migration 14 applies the same rule to the ids stored before it.
    let conn = store.connection();
    conn.execute_batch("UPDATE runs SET stored_external_id = external_id, id_form = 0;")
        .unwrap();
    let migration = schema::MIGRATIONS[13];
    let forms = &migration[migration.find("UPDATE runs SET id_form = 1").unwrap()
        ..migration
            .find("ALTER TABLE runs ADD COLUMN external_id")
            .unwrap()];
    conn.execute_batch(forms).unwrap();
    let again: Vec<(String, i64, String, Option<String>)> = conn
        .prepare("SELECT external_id, id_form, stored_external_id, url FROM runs ORDER BY attempt")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(again, rows);
}

#[test]
fn triggers_states_and_sources_are_stored_as_codes_and_read_back_as_text() {
    let mut store = Store::open_in_memory().unwrap();
    let triggers = [
        Trigger::PullRequest,
        Trigger::Push,
        Trigger::Schedule,
        Trigger::Manual,
        Trigger::Other,
    ];
    let states = [
        RunState::Success,
        RunState::Failure,
        RunState::Error,
        RunState::Cancelled,
        RunState::TimedOut,
        RunState::Skipped,
        RunState::Pending,
        RunState::Running,
    ];
    let sources = [
        "cockpit-import",
        "github",
        "gitlab",
        "api",
        "cli",
        "demo",
        "custom",
        "3",
    ];
    let mut expected = Vec::new();
    for i in 0..8 {
        let mut r = run("ctx", &format!("c{i}"), 0, states[i]);
        r.trigger = triggers[i % triggers.len()];
        r.source = sources[i].into();
        store.ingest_run(&r, &policy(), now()).unwrap();
        assert_eq!(
            store.ingest_run(&r, &policy(), now()).unwrap().status,
            IngestStatus::Unchanged
        );
        expected.push((
            r.trigger.as_str().to_string(),
            states[i].as_str().to_string(),
            sources[i].to_string(),
            // known texts are integers, others text as they are
            if i < 6 { "integer" } else { "text" }.to_string(),
        ));
    }
    let rows: Vec<(String, String, String, String)> = store
        .connection()
        .prepare("SELECT trigger, state, source, typeof(source_code) FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, expected);
    let codes: Vec<(i64, i64)> = store
        .connection()
        .prepare("SELECT trigger_code, state_code FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        codes,
        (0..8)
            .map(|i| ((i % 5) as i64, i as i64))
            .collect::<Vec<_>>()
    );
}

#[test]
fn upgrading_from_schema_15_keeps_every_test_and_makes_their_uniqueness_a_named_index() {
    // Migration 16: `tests` without its inline UNIQUE constraint, the same
    // rule kept by the index `tests_name` (which a fresh load drops and
    // builds again); every row kept with its id and counters.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v15.db");
    database_at(&path, 15, |tx| {
        tx.execute_batch(
            "INSERT INTO repositories (id, forge, path) VALUES (1, 'generic', 'acme/shop');
             INSERT INTO tests (id, repository_id, context, name, runs, passes, failures, flips, commits,
                 flaky_commits, flaky_failures, last_failed, first_seen, last_seen, last_failure_run_id,
                 last_failure_at, first_seen_flaky)
             VALUES (3, 1, 'ctx', 'a', 5, 4, 1, 2, 3, 1, 1, 0, 10, 20, 7, 15, 12),
                    (7, 1, 'ctx', 'b', 1, 1, 0, 0, 1, 0, 0, 0, 11, 11, NULL, NULL, NULL),
                    (9, 1, 'other', 'a', 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL);",
        )
        .unwrap();
    });
    let rows = |conn: &Connection| -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = conn.prepare("SELECT * FROM tests ORDER BY id").unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let before = rows(&Connection::open(&path).unwrap());
    assert_eq!(before.len(), 3);
    let mut store = Store::open(&path).unwrap();
    let conn = store.connection();
    assert_eq!(rows(conn), before);
    let indexes: Vec<(String, bool)> = conn
        .prepare("SELECT name, \"unique\" FROM pragma_index_list('tests') ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, [("tests_name".to_string(), true)]);
    let duplicate = conn.execute(
        "INSERT INTO tests (repository_id, context, name) VALUES (1, 'ctx', 'b')",
        [],
    );
    assert!(duplicate.is_err(), "{duplicate:?}");
    // The per-run path finds a stored test by its name and adds new ones.
    let mut r = run("ctx", "abc", 0, RunState::Success);
    r.repository.path = "acme/shop".into();
    r.tests = vec![
        TestResult {
            name: "b".into(),
            outcome: TestOutcome::Passed,
            duration_seconds: None,
            retries: 0,
            retry_reasons: Vec::new(),
            message: None,
        },
        TestResult {
            name: "c".into(),
            outcome: TestOutcome::Failed,
            duration_seconds: None,
            retries: 0,
            retry_reasons: Vec::new(),
            message: None,
        },
    ];
    store.ingest_run(&r, &policy(), now()).unwrap();
    let tests: Vec<(i64, String, i64)> = store
        .connection()
        .prepare("SELECT id, name, runs FROM tests WHERE context = 'ctx' ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tests,
        [(3, "a".into(), 5), (7, "b".into(), 2), (10, "c".into(), 1)]
    );
    // The view over the results reads through the new table.
    let names: Vec<String> = store
        .connection()
        .prepare("SELECT name FROM test_results ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["b", "c"]);
}

#[test]
fn upgrading_from_schema_14_codes_every_trigger_state_and_source_and_keeps_their_texts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v14.db");
    let mut r = run("ctx", "abc", 0, RunState::Failure);
    r.trigger = Trigger::Schedule;
    r.source = "cockpit-import".into();
    r.external_id = Some("job-1".into());
    database_at(&path, 14, |tx| {
        tx.execute(
            "INSERT INTO repositories (id, forge, path) VALUES (1, 'generic', 'acme/shop')",
            [],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO runs (repository_id, stored_external_id, external_key, context, commit_sha, attempt,
                trigger, state, source, content_digest, created_at, updated_at, queued_at, started_at,
                finished_at, queue_counted, final_counted)
             VALUES (1, 'job-1', ?1, 'ctx', 'abc', 0, 'schedule', 'failure', 'cockpit-import', ?2, 0, 0, ?3, ?4,
                ?5, 1, 1)",
            params![
                external_key("job-1"),
                crate::ingest_run::stored_digest(&content_hash(&r)),
                r.queued_at.map(to_ms),
                r.started_at.map(to_ms),
                r.finished_at.map(to_ms),
            ],
        )
        .unwrap();
        // Texts without a code: kept as they are.
        tx.execute(
            "INSERT INTO runs (repository_id, context, commit_sha, attempt, trigger, state, source,
                content_digest, created_at, updated_at)
             VALUES (1, 'ctx', 'def', 0, 'merge_request', 'failed', '3', 'h', 0, 0)",
            [],
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    let rows: Vec<(String, String, String, String, String)> = store
        .connection()
        .prepare(
            "SELECT trigger, state, source, typeof(trigger_code), typeof(source_code) FROM runs ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            (
                "schedule".into(),
                "failure".into(),
                "cockpit-import".into(),
                "integer".into(),
                "integer".into()
            ),
            (
                "merge_request".into(),
                "failed".into(),
                "3".into(),
                "text".into(),
                "text".into()
            ),
        ]
    );
    // The run stored before is the same run, and the trigger's index serves
    // the nightly grid's query.
    assert_eq!(
        store.ingest_run(&r, &policy(), now()).unwrap().status,
        IngestStatus::Unchanged
    );
    let plan: String = store
        .connection()
        .query_row(
            "EXPLAIN QUERY PLAN SELECT id FROM runs r WHERE r.trigger = 'schedule'
               AND coalesce(r.queued_at, r.started_at, r.created_at) >= 1",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("runs_trigger_at"), "{plan}");
}

/// Settling many changes at once (after a bulk import) adds their counters
/// and hourly rollup up in memory: the same rows and metric state as
/// settling them a few hundred at a time, which goes through the triggers.
#[test]
fn settling_many_changes_at_once_stores_and_counts_what_settling_a_few_at_a_time_does() {
    let p = policy();
    let changes = 1_100;
    let repository = RepositoryRef {
        forge: Forge::Generic,
        path: "acme/shop".into(),
    };
    let mut at_once = Store::open_in_memory().unwrap();
    let mut a_few = Store::open_in_memory().unwrap();
    for store in [&mut at_once, &mut a_few] {
        for i in 0..changes {
            let commit = format!("c{i}");
            let state = if i % 3 == 0 {
                RunState::Failure
            } else {
                RunState::Success
            };
            store
                .ingest_run(&run("ci", &commit, 0, state), &p, now())
                .unwrap();
            if i % 3 == 0 && i % 2 == 0 {
                store
                    .ingest_run(&run("ci", &commit, 1, RunState::Success), &p, now())
                    .unwrap();
            }
        }
    }
    let merge = |store: &mut Store, i: i64| {
        store
            .record_merge(
                &repository,
                i + 1,
                Some(&format!("c{i}")),
                now() - Duration::minutes(17 * i),
                now(),
            )
            .unwrap();
    };
    for i in 0..changes {
        merge(&mut at_once, i);
    }
    assert_eq!(
        at_once.settle(&p, now(), Some(0)).unwrap().changes_decided,
        changes as usize
    );
    let mut decided = 0;
    for chunk in (0..changes).collect::<Vec<_>>().chunks(300) {
        for i in chunk {
            merge(&mut a_few, *i);
        }
        decided += a_few.settle(&p, now(), Some(0)).unwrap().changes_decided;
    }
    assert_eq!(decided, changes as usize);
    let rows = |store: &Store, sql: &str| -> Vec<String> {
        let conn = store.connection();
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            Ok((0..n)
                .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect::<Vec<_>>()
                .join(" "))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    for sql in [
        "SELECT * FROM slo_hourly ORDER BY 1, 2, 3",
        "SELECT * FROM slo_events ORDER BY 1, 2",
        "SELECT * FROM changes ORDER BY id",
        "SELECT name, sql FROM sqlite_master ORDER BY name",
    ] {
        let (got, want) = (rows(&at_once, sql), rows(&a_few, sql));
        assert!(got.len() > 3, "{sql}: {got:?}");
        assert_eq!(got, want, "{sql}");
    }
    assert_eq!(
        at_once.metric_state().unwrap(),
        a_few.metric_state().unwrap()
    );
    // The rollup holds every change's events.
    assert_eq!(
        rows(
            &at_once,
            "SELECT sum(total) FROM slo_hourly WHERE repository_id = 0 AND slo IN
                 (SELECT DISTINCT slo FROM slo_events)"
        ),
        rows(&at_once, "SELECT count(*) FROM slo_events")
    );
}

/// Every row of every table of `store`, sorted, `changes.decided_at` left
/// out (the time of the settle that decided it).
fn rows_but_decision_times(store: &Store) -> Vec<String> {
    let conn = store.connection();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let names: Vec<String> = stmt.column_names().map(|n| n.to_string()).collect();
        let mut rows = stmt.query([]).unwrap();
        let mut table_rows = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            let values: Vec<String> = (0..names.len())
                .filter(|&i| !(table == "changes" && names[i] == "decided_at"))
                .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect();
            table_rows.push(format!("{table} {}", values.join(" ")));
        }
        table_rows.sort();
        out.extend(table_rows);
    }
    out
}

#[test]
fn settling_many_changes_in_one_pass_decides_what_settling_them_few_at_a_time_decides() {
    // 1,200 changes: settled at once, their heads' runs are read in one pass
    // over `runs` (and their counters added up in memory); settled 100 at a
    // time, each head's runs are looked up. Heads known or not (then the
    // commit of the change's latest run), shared by two changes, with
    // scheduled runs (not counted), without runs, missing a required context.
    let changes = 1_200_i64;
    let mut p = policy();
    p.required.insert(
        (Forge::Generic, "acme/strict".into()),
        vec!["a".into(), "must".into()],
    );
    let base = now() - Duration::days(30);
    let merged = |k: i64| base + Duration::minutes(k);
    let repo = |k: i64| RepositoryRef {
        forge: Forge::Generic,
        path: if k % 4 == 3 {
            "acme/strict"
        } else {
            "acme/shop"
        }
        .into(),
    };
    let head = |k: i64| {
        if k % 10 == 9 {
            format!("h{}", k - 1) // the head of the change before (same repository only if it is)
        } else {
            format!("h{k}")
        }
    };
    let fill = |store: &mut Store| {
        let mut runs = Vec::new();
        for k in 0..changes {
            if k % 13 == 5 {
                continue; // no run at all
            }
            let change = (k % 7 == 2).then_some(ChangeRef {
                number: k,
                merged_at: None,
            });
            let states = [
                RunState::Failure,
                RunState::Success,
                RunState::Error,
                RunState::Cancelled,
            ];
            for attempt in 0..=(k % 3) as u32 {
                let state = if attempt == (k % 3) as u32 && k % 5 != 0 {
                    RunState::Success
                } else {
                    states[(k * 7 + i64::from(attempt) * 3 + k / 3) as usize % 4]
                };
                let mut r = run("a", &head(k), attempt, state);
                r.repository = repo(k);
                r.change = change.clone();
                runs.push(r);
            }
            if k % 2 == 0 {
                let mut r = run("b", &head(k), 0, RunState::Success);
                r.repository = repo(k);
                r.attempt_group = Some(format!("g{}", k % 3));
                r.change = change.clone();
                runs.push(r);
            }
            // A nightly run of the head that failed: not the change's.
            let mut nightly = run("a", &head(k), 7, RunState::Failure);
            nightly.repository = repo(k);
            nightly.trigger = Trigger::Schedule;
            runs.push(nightly);
            if k % 7 == 2 {
                // An earlier commit of the change: not its head.
                let mut old = run("a", &format!("old{k}"), 0, RunState::Failure);
                old.repository = repo(k);
                old.change = change.clone();
                for t in [
                    &mut old.queued_at,
                    &mut old.started_at,
                    &mut old.finished_at,
                ] {
                    *t = t.map(|t| t - Duration::hours(1));
                }
                runs.push(old);
            }
        }
        for batch in runs.chunks(500) {
            store.ingest_batch(batch, &p, now()).unwrap();
        }
        for k in 0..changes {
            // Changes whose runs name them have no head recorded: the
            // commit of their latest run is taken.
            let head = (k % 7 != 2).then(|| head(k));
            store
                .record_merge(&repo(k), k, head.as_deref(), merged(k), merged(k))
                .unwrap();
        }
    };
    let mut at_once = Store::open_in_memory().unwrap();
    fill(&mut at_once);
    let runs = at_once.run_count().unwrap();
    assert!(changes >= settle::MANY_CHANGES);
    assert!(
        changes * settle::RUNS_PER_CHANGE_FOR_SCAN >= runs,
        "one pass"
    );
    let done = merged(changes);
    let stats = at_once.settle(&p, done, Some(0)).unwrap();
    assert_eq!(stats.changes_decided, changes as usize);

    let mut few = Store::open_in_memory().unwrap();
    fill(&mut few);
    let mut decided = 0;
    for step in 1..=changes / 100 {
        decided += few
            .settle(&p, merged(step * 100 - 1), Some(0))
            .unwrap()
            .changes_decided;
    }
    assert_eq!(decided, changes as usize);

    // What the changes came to, so that the comparison compares something.
    let outcomes: HashMap<Option<String>, i64> = at_once
        .connection()
        .prepare("SELECT outcome, count(*) FROM changes GROUP BY outcome")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(outcomes.len() >= 4, "{outcomes:?}");
    assert!(outcomes[&None] > 0, "changes without runs: {outcomes:?}");
    assert!(outcomes[&Some("merged_red".into())] > 0, "{outcomes:?}");
    let missing: i64 = at_once
        .connection()
        .query_row(
            "SELECT count(*) FROM changes WHERE missing = '[\"must\"]'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(missing > 0);
    let headless: i64 = at_once
        .connection()
        .query_row(
            "SELECT count(*) FROM changes WHERE head_sha LIKE 'h%' AND number % 7 = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(headless > 0, "the heads of changes recorded without one");

    let a = rows_but_decision_times(&at_once);
    let b = rows_but_decision_times(&few);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    assert_eq!(a.len(), b.len());
}

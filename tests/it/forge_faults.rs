//! Forge faults (issue 8, docs/design.md §5): `serve` polls a fake GitHub and a
//! fake GitLab through a front that misbehaves on command: it stalls (no
//! answer; headers but no body), resets connections, cuts bodies, sends
//! truncated JSON, and answers 5xx and 429 storms. While it does:
//!
//! - every scrape of /metrics and /healthz succeeds (within a 5 s client
//!   timeout, a bound on hanging, not a speed target);
//! - the exporter's self-metrics report each fault the front dealt;
//! - nothing of what the forge gained during the fault is stored yet, and
//!   once the forge recovers every job and pipeline it holds is stored
//!   exactly once, failed jobs with their whole log.

use crate::common;
use crate::fake_github;
use crate::fake_gitlab;
use crate::fault_front;

use common::{Exporter, sample};
use fault_front::{Fault, Front};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Scrapes /metrics and /healthz in a loop while the forge misbehaves.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(u64, Vec<String>)>,
}

fn watch(base: &str) -> Watch {
    let stop = Arc::new(AtomicBool::new(false));
    let (s, base) = (stop.clone(), base.to_string());
    let handle = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let (mut ok, mut failures) = (0u64, Vec::new());
        while !s.load(Ordering::Relaxed) {
            for path in ["/metrics", "/healthz"] {
                match agent.get(&format!("{base}{path}")).call() {
                    Ok(mut r) if r.status() == 200 => {
                        let _ = r.body_mut().read_to_string();
                        ok += 1;
                    }
                    Ok(r) => failures.push(format!("{path}: {}", r.status())),
                    Err(e) => failures.push(format!("{path}: {e}")),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (ok, failures)
    });
    Watch { stop, handle }
}

impl Watch {
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Sum of the samples of `family` whose labels contain every one of `with`.
fn total(text: &str, family: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wait (bounded) until `f` holds; panics with `what` and the exporter's log.
fn wait_until(e: &Exporter, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; exporter log:\n{}",
            tail(&e.log())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait (bounded) until the stored runs are exactly `expected`; on timeout,
/// say which are missing and which are extra.
fn wait_for_runs(e: &Exporter, what: &str, expected: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = stored_ids(&e.db);
        if got == *expected {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = expected.difference(&got).collect();
            let extra: Vec<_> = got.difference(expected).collect();
            panic!(
                "timed out waiting for {what}: missing {missing:?}, extra {extra:?}; exporter log:\n{}",
                tail(&e.log())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// External ids of the stored runs, with how often each is stored.
fn stored(db: &Path) -> Vec<(String, i64)> {
    let mut rows: Vec<(String, i64)> = common::sql::rows(
        db,
        "SELECT coalesce(external_id, context), count(*) FROM runs GROUP BY 1",
    )
    .into_iter()
    .map(|r| (r.text(0), r.int(1)))
    .collect();
    rows.sort();
    rows
}

fn stored_ids(db: &Path) -> BTreeSet<String> {
    stored(db).into_iter().map(|(id, _)| id).collect()
}

/// The logs stored, by the external id of their run.
fn logs(db: &Path) -> std::collections::HashMap<String, String> {
    common::sql::rows(
        db,
        "SELECT r.external_id, l.content FROM run_logs l JOIN runs r ON r.id = l.run_id
         WHERE r.external_id IS NOT NULL",
    )
    .into_iter()
    .map(|r| (r.text(0), r.text(1)))
    .collect()
}

/// The external ids among `ids` that have a stored log.
fn logs_of(db: &Path, ids: &[String]) -> Vec<String> {
    let logs = logs(db);
    ids.iter()
        .filter(|id| logs.contains_key(*id))
        .cloned()
        .collect()
}

/// Every expected run stored exactly once, nothing else, failed jobs with their whole log.
fn assert_exactly_once(db: &Path, expected: &BTreeSet<String>, failed: &[String], log_line: &str) {
    let rows = stored(db);
    let twice: Vec<_> = rows.iter().filter(|(_, n)| *n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let got: BTreeSet<String> = rows.into_iter().map(|(id, _)| id).collect();
    assert_eq!(&got, expected, "stored runs differ from the forge's");
    let logs = logs(db);
    for id in failed {
        let content = logs
            .get(id)
            .unwrap_or_else(|| panic!("no log for the failed job {id}"));
        assert!(
            content.contains(log_line),
            "the log of {id} is whole: {content:?}"
        );
    }
}

/// How the exporter reports a fault: (family, label that must be in the sample).
fn reported_as(fault: Fault) -> (&'static str, String) {
    match fault {
        Fault::Stall | Fault::StallBody => (
            "ci_exporter_forge_errors_total",
            "kind=\"timeout\"".to_string(),
        ),
        Fault::Reset | Fault::CutBody => (
            "ci_exporter_forge_errors_total",
            "kind=\"connection\"".to_string(),
        ),
        Fault::Truncate => (
            "ci_exporter_forge_errors_total",
            "kind=\"decode\"".to_string(),
        ),
        Fault::Status(code) => (
            "ci_exporter_forge_api_requests_total",
            format!("status=\"{code}\""),
        ),
        Fault::RateLimited(_) => (
            "ci_exporter_forge_api_requests_total",
            "status=\"429\"".to_string(),
        ),
        Fault::Pass => unreachable!(),
    }
}

/// One fault of the storm: which requests it hits.
struct Phase {
    fault: Fault,
    only: Option<&'static str>,
    /// Whether the fault keeps the runs out (else only their logs).
    blocks_runs: bool,
}

/// The storm: every kind of fault on every request, truncated JSON on the
/// first listing, then a stall and a cut body on log downloads only.
fn phases(json_listing: &'static str, logs: &'static str) -> Vec<Phase> {
    let all = |fault| Phase {
        fault,
        only: None,
        blocks_runs: true,
    };
    let on_logs = |fault| Phase {
        fault,
        only: Some(logs),
        blocks_runs: false,
    };
    vec![
        all(Fault::Stall),
        all(Fault::StallBody),
        all(Fault::Reset),
        all(Fault::CutBody),
        // Truncated JSON only where JSON is read (a cut log would still be text).
        Phase {
            fault: Fault::Truncate,
            only: Some(json_listing),
            blocks_runs: true,
        },
        all(Fault::Status(503)),
        all(Fault::Status(500)),
        all(Fault::RateLimited(1)),
        on_logs(Fault::Stall),
        on_logs(Fault::CutBody),
    ]
}

/// Drive the phases against a running exporter: per phase, the forge gains
/// runs while the fault is on (`add(i)` returns their ids and the failed
/// ones), which join `held` (what the forge holds: run ids, failed job ids);
/// checks as in the module comment.
fn storm(
    e: &Exporter,
    front: &Front,
    phases: Vec<Phase>,
    forge: &str,
    (expected, failed): &mut (BTreeSet<String>, Vec<String>),
    log_line: &str,
    add: impl Fn(usize) -> (Vec<String>, Vec<String>),
) {
    let forge_label = format!("forge=\"{forge}\"");
    for (i, phase) in phases.into_iter().enumerate() {
        let name = format!("{forge} phase {i} ({:?} on {:?})", phase.fault, phase.only);
        let (family, label) = reported_as(phase.fault);
        let reported = || total(&e.scrape(false), family, &[&forge_label, &label]);
        let before = reported();
        let dealt_before = front.dealt(phase.fault);
        match phase.only {
            Some(only) => front.set_for(phase.fault, only),
            None => front.set(phase.fault),
        }
        let (ids, bad) = add(i);
        // Met more than once: again after a failed round (and its retries).
        let meets = if phase.blocks_runs { 3 } else { 2 };
        wait_until(e, &format!("{name}: the poller meets the fault"), || {
            front.dealt(phase.fault) - dealt_before >= meets
        });
        let now = stored_ids(&e.db);
        let early: Vec<&String> = ids.iter().filter(|id| now.contains(*id)).collect();
        assert!(
            !phase.blocks_runs || early.is_empty(),
            "{name}: stored while the forge was failing: {early:?}"
        );
        assert!(
            logs_of(&e.db, &bad).is_empty(),
            "{name}: a log stored while the forge was failing"
        );
        front.set(Fault::Pass);
        let dealt = (front.dealt(phase.fault) - dealt_before) as f64;
        // Every fault dealt is reported. A timeout can also hit a slow
        // answer on a loaded machine, so those are at least as many.
        wait_until(
            e,
            &format!("{name}: {family}{{{label}}} grows by the {dealt} faults dealt"),
            || {
                let grew = reported() - before;
                match phase.fault {
                    Fault::Stall | Fault::StallBody => grew >= dealt,
                    _ => grew == dealt,
                }
            },
        );
        eprintln!(
            "{name}: {dealt} faults dealt, {} reported as {family}{{{label}}}",
            reported() - before
        );
        expected.extend(ids);
        failed.extend(bad);
        wait_for_runs(e, &format!("{name}: catch-up after recovery"), expected);
        // The runs are stored before their logs are downloaded.
        wait_until(e, &format!("{name}: the logs after recovery"), || {
            logs_of(&e.db, failed).len() == failed.len()
        });
        assert_exactly_once(&e.db, expected, failed, log_line);
    }
}

#[test]
fn github_poller_rides_out_stalls_resets_truncated_json_and_storms_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gh = fake_github::start(fake_github::Fake::default());
    let front = Front::start(gh.addr);
    let repo = "acme/app";
    let add = |i: usize| {
        let i = i as u64;
        let (build, test, nightly) = (100 * i + 1, 100 * i + 2, 100 * i + 3);
        gh.fake.merge_pull(
            repo,
            i as i64 + 1,
            1000 + i,
            vec![
                fake_github::job(build, "build", "success"),
                fake_github::job(test, "test", "failure"),
            ],
        );
        gh.fake.schedule_run(
            repo,
            5000 + i,
            vec![fake_github::job(nightly, "nightly", "success")],
        );
        (
            vec![
                format!("job:{build}"),
                format!("job:{test}"),
                format!("job:{nightly}"),
            ],
            vec![format!("job:{test}")],
        )
    };
    // Before the storm: the forge answers and the first data is stored.
    let mut held: (BTreeSet<String>, Vec<String>) = {
        let (ids, bad) = add(100);
        (ids.into_iter().collect(), bad)
    };
    let config = d.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[github]\napi_url = \"{}\"\nrepositories = [\"{repo}\"]\npoll_interval = \"250ms\"\n\
             schedule_poll_interval = \"1s\"\nrequest_timeout = \"1s\"\nretry_base = \"20ms\"\n\
             max_retries = 1\nmax_retry_wait = \"2s\"\n",
            front.url
        ),
    )
    .unwrap();
    let e = Exporter::start(
        d,
        &d.join("gh.db"),
        &["--config", config.to_str().unwrap()],
        &[("CI_SLO_GITHUB_TOKEN", "ghp-faults-test")],
    );
    wait_for_runs(&e, "the first poll", &held.0);

    let w = watch(&e.base);
    storm(
        &e,
        &front,
        phases("/pulls", "/logs"),
        "github",
        &mut held,
        "could not resolve host",
        add,
    );
    let (scrapes, failures) = w.finish();
    assert!(
        failures.is_empty(),
        "scrapes failed during the faults: {failures:?}"
    );
    assert!(scrapes > 50, "the exporter was watched: {scrapes} scrapes");
    let expected = held.0;
    assert_eq!(expected.len(), 33, "11 rounds of 3 jobs");
    // The snapshot follows the store.
    e.wait_for("ci_exporter_stored_runs to count every run once", |t| {
        sample(t, "ci_exporter_stored_runs") == Some(expected.len() as f64)
    });
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn gitlab_config(d: &Path, api_url: &str) -> std::path::PathBuf {
    let config = d.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[gitlab]\napi_url = \"{api_url}\"\nprojects = [\"acme/app\"]\npoll_interval = \"250ms\"\n\
             request_timeout = \"1s\"\nretry_base_delay = \"20ms\"\nmax_retries = 1\n\
             max_retry_after = \"5s\"\n"
        ),
    )
    .unwrap();
    config
}

/// The socket address of the fake GitLab behind its API URL.
fn gitlab_addr(api_url: &str) -> std::net::SocketAddr {
    api_url
        .trim_start_matches("http://")
        .trim_end_matches("/api/v4")
        .parse()
        .unwrap()
}

#[test]
fn gitlab_poller_rides_out_stalls_resets_truncated_json_and_storms_without_a_gap() {
    use fake_gitlab::{Fake, Project, job, pipeline};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fake = Fake::default();
    fake.projects
        .lock()
        .unwrap()
        .insert("acme/app".into(), Project::default());
    let gl = fake_gitlab::start(fake);
    let front = Front::start(gitlab_addr(&gl.api_url));
    let add = |i: usize| {
        let i = i as i64;
        let (pid, ok, bad) = (1000 + i, 100 * i + 1, 100 * i + 2);
        let now = chrono::Utc::now();
        let mut projects = gl.fake.projects.lock().unwrap();
        let p = projects.get_mut("acme/app").unwrap();
        p.pipelines.push(pipeline(
            pid,
            &format!("{pid:040x}"),
            "failed",
            "push",
            &ts(now),
        ));
        let created = ts(now - chrono::Duration::minutes(5));
        p.jobs.insert(
            pid,
            vec![
                job(ok, "build", "compile", "success", &created),
                job(bad, "test", "unit", "failed", &created),
            ],
        );
        (
            vec![
                format!("pipeline:{pid}"),
                format!("job:{ok}"),
                format!("job:{bad}"),
            ],
            vec![format!("job:{bad}")],
        )
    };
    let mut held: (BTreeSet<String>, Vec<String>) = {
        let (ids, bad) = add(100);
        (ids.into_iter().collect(), bad)
    };
    let config = gitlab_config(d, &format!("{}/api/v4", front.url));
    let e = Exporter::start(
        d,
        &d.join("gl.db"),
        &["--config", config.to_str().unwrap()],
        &[("CI_SLO_GITLAB_TOKEN", "glpat-faults-test")],
    );
    wait_for_runs(&e, "the first poll", &held.0);

    let w = watch(&e.base);
    storm(
        &e,
        &front,
        phases("/pipelines", "/trace"),
        "gitlab",
        &mut held,
        "something failed",
        add,
    );
    let (scrapes, failures) = w.finish();
    assert!(
        failures.is_empty(),
        "scrapes failed during the faults: {failures:?}"
    );
    assert!(scrapes > 50, "the exporter was watched: {scrapes} scrapes");
    assert_eq!(held.0.len(), 33, "11 rounds of 3 runs");
    let downloads = gl.fake.trace_downloads.lock().unwrap().clone();
    assert_eq!(
        downloads.len(),
        11,
        "a trace of each failed job: {downloads:?}"
    );
}

/// A storm that cuts a round off between two pages of pipelines updated at
/// the same instant: the next round must still store the second page.
#[test]
fn gitlab_a_round_cut_off_between_pages_of_the_same_instant_leaves_no_gap() {
    use fake_gitlab::{Fake, Project, job, pipeline};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut project = Project::default();
    let now = chrono::Utc::now();
    let mut expected = BTreeSet::new();
    // 150 pipelines, a second apart, except that the 100th (the last of the
    // first page of 100) and the next ten were updated at the same instant.
    for i in 0..150i64 {
        let at = now - chrono::Duration::minutes(60)
            + chrono::Duration::seconds(if (99..110).contains(&i) { 99 } else { i });
        let pid = 2000 + i;
        project.pipelines.push(pipeline(
            pid,
            &format!("{pid:040x}"),
            "success",
            "push",
            &ts(at),
        ));
        project.jobs.insert(
            pid,
            vec![job(
                90_000 + i,
                "test",
                "unit",
                "success",
                &ts(at - chrono::Duration::minutes(5)),
            )],
        );
        expected.insert(format!("pipeline:{pid}"));
        expected.insert(format!("job:{}", 90_000 + i));
    }
    let fake = Fake::default();
    fake.projects
        .lock()
        .unwrap()
        .insert("acme/app".into(), project);
    let gl = fake_gitlab::start(fake);
    let front = Front::start(gitlab_addr(&gl.api_url));
    // The second page fails (longer than the retries) from the start.
    front.set_for(Fault::Status(502), "&page=2");
    let config = gitlab_config(d, &format!("{}/api/v4", front.url));
    let e = Exporter::start(
        d,
        &d.join("gl.db"),
        &["--config", config.to_str().unwrap()],
        &[],
    );
    wait_until(&e, "the first page", || stored_ids(&e.db).len() >= 200);
    // The first round's second page: the request and its one retry.
    wait_until(&e, "the second page to fail", || {
        front.dealt(Fault::Status(502)) >= 2
    });
    front.set(Fault::Pass);
    wait_for_runs(&e, "the second page after recovery", &expected);
    assert_exactly_once(&e.db, &expected, &[], "");
}

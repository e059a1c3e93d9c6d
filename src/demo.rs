//! A deterministic, realistic 30-day CI history, so that a newcomer sees every
//! metric, dashboard and page with data on the first `serve --demo`.
//!
//! It tells the stories the product is for: PRs merged green, retried and
//! merged red; a flaky test; a queue-time regression in the last week; a
//! nightly that slowed down in the last four days; nightly runs that fail with log evidence (one of them with an error never seen
//! before, one that was lost). Runs go through the same ingest pipeline as
//! real ones; the database is marked as demo (`ci_exporter_demo_data 1`).

use crate::classify::Classifier;
use crate::deps::Extractor;
use crate::ingest::{ChangeRequest, RunRequest, TestRequest};
use crate::model::{Forge, RepositoryRef, RunState, TestOutcome, Trigger};
use crate::shard::Shard;
use crate::store::{Policy, Storage, StoreError};
use chrono::{DateTime, Duration, DurationRound, Utc};

/// Seed of the generator: the same seed gives the same history.
pub const SEED: u64 = 20261123;
pub const DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DemoReport {
    /// False when the database already held the demo (nothing was added).
    pub created: bool,
    pub runs: usize,
    pub changes: usize,
}

struct Repo {
    forge: Forge,
    path: &'static str,
    contexts: &'static [&'static str],
    prs_per_day: u32,
    nightly: &'static [&'static str],
}

const REPOS: &[Repo] = &[
    Repo {
        forge: Forge::Github,
        path: "cockpit-project/cockpit",
        contexts: &["fedora-42", "debian-testing", "rhel-9-6/ui"],
        prs_per_day: 4,
        nightly: &[],
    },
    Repo {
        forge: Forge::Github,
        path: "acme/web-shop",
        contexts: &["ci / build", "ci / test", "ci / e2e"],
        prs_per_day: 3,
        nightly: &["nightly / e2e-full"],
    },
    Repo {
        forge: Forge::Gitlab,
        path: "platform/infra/terraform-modules",
        contexts: &["lint", "plan", "integration"],
        prs_per_day: 2,
        nightly: &["nightly-integration"],
    },
    Repo {
        forge: Forge::Generic,
        path: "jenkins/nightly-suite",
        contexts: &[],
        prs_per_day: 0,
        nightly: &["full-regression", "upgrade-tests"],
    },
];

/// Log tails of failing runs: (log text, what it shows).
const FAILURE_LOGS: &[&str] = &[
    "Cloning into 'src'...\nfatal: unable to access 'https://github.com/acme/deps.git/': Could not resolve host: github.com\nError: Process completed with exit code 128.",
    "Running test suite...\n[ 1234.567] Out of memory: Killed process 4242 (qemu-system-x86) total-vm:8123456kB\nKilled\nERROR: Job failed: exit code 137",
    "Compiling shop v0.4.2\nerror[E0308]: mismatched types\n  --> src/cart.rs:42:17\nerror: could not compile `shop` due to previous error",
    "Downloading image quay.io/cockpit/tasks\nwrite /var/lib/containers/storage/overlay/l/ABC: No space left on device\nError: Process completed with exit code 1.",
    "npm ERR! code ERESOLVE\nnpm ERR! ERESOLVE unable to resolve dependency tree\nnpm ERR! Found: react@18.3.1",
    "Waiting for the VM to boot...\nERROR: timed out after 1800 seconds waiting for ssh on 10.111.112.1:22\nTest run aborted",
];

/// An error never seen before: appears only in the last day's nightlies.
const NEW_FAILURE_LOG: &str = "Starting upgrade from 4.2 to 4.3\nthread 'migrate' panicked at src/schema.rs:88:9: column \"tenant_id\" of relation \"invoices\" already exists\nnote: run with `RUST_BACKTRACE=1` for a backtrace";

const FLAKY_TEST: &str = "TestStorage.testLvmRaid";
const TESTS: &[&str] = &[
    "TestLogin.testBasic",
    "TestNetworking.testBond",
    FLAKY_TEST,
    "TestServices.testTimers",
    "TestUpdates.testKpatch",
];

/// Fill `store` with the demo history ending at `now`, unless it already has it.
pub fn seed(
    store: &mut dyn Storage,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<DemoReport, StoreError> {
    seed_shard(store, policy, now, Shard::ALL)
}

/// [`seed`], storing only the repositories `shard` owns. The whole history is
/// generated on every shard (same random draws), so the shards' demos add up
/// to the unsharded demo.
pub fn seed_shard(
    store: &mut dyn Storage,
    policy: &Policy,
    now: DateTime<Utc>,
    shard: Shard,
) -> Result<DemoReport, StoreError> {
    if store.is_demo()? {
        return Ok(DemoReport::default());
    }
    if store.run_count()? > 0 {
        return Err(StoreError::Refused(
            "--demo refused: this database already holds real CI data; use --db with a new file for the demo"
                .into(),
        ));
    }
    let mut g = Generator {
        rng: fastrand::Rng::with_seed(SEED),
        classifier: Classifier::with_defaults(),
        deps: Extractor::with_defaults(),
        report: DemoReport {
            created: true,
            ..DemoReport::default()
        },
        now,
        shard,
        generated: 0,
    };
    let end = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let start = end - Duration::days(DAYS);
    let mut pr_number = 1000;
    for day in 0..DAYS {
        let day_start = start + Duration::days(day);
        for repo in REPOS {
            for n in 0..repo.prs_per_day {
                pr_number += 1;
                let opened = day_start
                    + Duration::hours(8 + (n as i64 * 3) % 10)
                    + Duration::minutes(g.range(0, 59));
                g.pull_request(store, policy, repo, pr_number, opened, day)?;
            }
            for context in repo.nightly {
                let at = day_start + Duration::hours(2) + Duration::minutes(g.range(0, 10));
                g.nightly(store, policy, repo, context, at, day)?;
            }
        }
    }
    // Everything is in: decide every merged change now rather than after the settle delay.
    store.settle(policy, now, Some(0))?;
    store.mark_demo(&format!(
        "seed={SEED} days={DAYS} generated_at={}",
        now.to_rfc3339()
    ))?;
    Ok(g.report)
}

struct Generator {
    rng: fastrand::Rng,
    classifier: Classifier,
    deps: Extractor,
    report: DemoReport,
    now: DateTime<Utc>,
    /// Runs and merges of repositories this shard does not own are generated
    /// (the random draws stay the same) but not stored.
    shard: Shard,
    /// Runs generated so far (stored or not): the demo's run ids.
    generated: usize,
}

impl Generator {
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.i64(lo..=hi)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    fn commit(&mut self) -> String {
        (0..40)
            .map(|_| char::from_digit(self.rng.u32(0..16), 16).unwrap_or('0'))
            .collect()
    }

    /// Queue time in seconds; web-shop's runners got scarce in the last week.
    fn queue_seconds(&mut self, repo: &Repo, day: i64) -> i64 {
        if repo.path == "acme/web-shop" && day >= DAYS - 7 {
            self.range(240, 1100)
        } else {
            self.range(5, 150)
        }
    }

    fn tests(&mut self, failing: bool, flaky_fails: bool) -> Vec<TestRequest> {
        TESTS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let failed = (failing && i == 1) || (flaky_fails && *name == FLAKY_TEST);
                TestRequest {
                    name: name.to_string(),
                    outcome: if failed { TestOutcome::Failed } else { TestOutcome::Passed },
                    duration_seconds: Some(self.range(5, 240) as f64),
                    retries: 0,
                    message: failed.then(|| {
                        if *name == FLAKY_TEST {
                            "AssertionError: timed out waiting for mdraid sync to finish (waited 60s)".to_string()
                        } else {
                            "Error: bond0 did not get an address within 30 seconds".to_string()
                        }
                    }),
                }
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        store: &mut dyn Storage,
        policy: &Policy,
        repo: &Repo,
        context: &str,
        commit: &str,
        attempt: u32,
        trigger: Trigger,
        queued: DateTime<Utc>,
        run_minutes: (i64, i64),
        state: RunState,
        tests: Vec<TestRequest>,
        log: Option<&str>,
        change: Option<ChangeRequest>,
        queue_seconds: i64,
    ) -> Result<DateTime<Utc>, StoreError> {
        let started = queued + Duration::seconds(queue_seconds);
        let finished =
            started + Duration::seconds(self.range(run_minutes.0 * 60, run_minutes.1 * 60));
        let (finished_at, state) = if finished > self.now {
            (None, RunState::Running)
        } else {
            (Some(finished), state)
        };
        self.generated += 1;
        let id = self.generated;
        let base = match repo.forge {
            Forge::Github => format!("https://github.com/{}/actions/runs/{id}", repo.path),
            Forge::Gitlab => format!("https://gitlab.com/{}/-/jobs/{id}", repo.path),
            Forge::Generic => format!(
                "https://jenkins.example.com/job/{}/{id}",
                context.replace(' ', "_")
            ),
        };
        let request = RunRequest {
            repository: repo.path.to_string(),
            forge: Some(repo.forge),
            context: context.to_string(),
            commit: commit.to_string(),
            external_id: Some(format!("demo-{id}")),
            attempt,
            trigger: Some(trigger),
            state: Some(state),
            queued_at: Some(queued),
            started_at: Some(started),
            finished_at,
            log_url: Some(format!("{base}/log")),
            url: Some(base),
            change,
            tests,
            log: log.map(str::to_string),
            ..RunRequest::default()
        };
        let prepared = request
            .prepare("demo", Vec::new(), &self.classifier, &self.deps)
            .map_err(|e| {
                StoreError::Refused(format!("demo generator produced an invalid run: {e}"))
            })?;
        if self.shard.owns(repo.path) {
            store.ingest_run(&prepared.run, policy, self.now)?;
            self.report.runs += 1;
        }
        Ok(finished)
    }

    fn pull_request(
        &mut self,
        store: &mut dyn Storage,
        policy: &Policy,
        repo: &Repo,
        number: i64,
        opened: DateTime<Utc>,
        day: i64,
    ) -> Result<(), StoreError> {
        let commit = self.commit();
        let mut last_finish = opened;
        // About one PR in twelve is merged although a context is still red.
        let merge_red = self.chance(0.08);
        for (ci, context) in repo.contexts.iter().enumerate() {
            let mut queued = opened + Duration::seconds(ci as i64 * 7);
            let mut attempt = 0;
            loop {
                let flaky_fails = repo.path == "cockpit-project/cockpit" && self.chance(0.18);
                let broken = self.chance(0.05);
                let red = flaky_fails || broken || (merge_red && ci == repo.contexts.len() - 1);
                let gives_up =
                    attempt >= 2 || (merge_red && ci == repo.contexts.len() - 1 && attempt >= 1);
                let state = if red {
                    RunState::Failure
                } else {
                    RunState::Success
                };
                let tests = if repo.path == "cockpit-project/cockpit" {
                    self.tests(broken, flaky_fails)
                } else {
                    Vec::new()
                };
                let log = if red && tests.is_empty() {
                    let i = self.rng.usize(0..FAILURE_LOGS.len());
                    Some(FAILURE_LOGS[i])
                } else {
                    None
                };
                let queue = self.queue_seconds(repo, day);
                let finished = self.run(
                    store,
                    policy,
                    repo,
                    context,
                    &commit,
                    attempt,
                    Trigger::PullRequest,
                    queued,
                    (8, 45),
                    state,
                    tests,
                    log,
                    Some(ChangeRequest {
                        number,
                        merged_at: None,
                    }),
                    queue,
                )?;
                last_finish = last_finish.max(finished);
                if !red || gives_up {
                    break;
                }
                attempt += 1;
                queued = finished + Duration::minutes(self.range(2, 30));
            }
        }
        let merged_at = last_finish + Duration::minutes(self.range(5, 120));
        if merged_at < self.now && self.shard.owns(repo.path) {
            self.report.changes += 1;
            let repository = RepositoryRef {
                forge: repo.forge,
                path: repo.path.to_string(),
            };
            store.record_merge(&repository, number, None, merged_at, self.now)?;
        }
        Ok(())
    }

    fn nightly(
        &mut self,
        store: &mut dyn Storage,
        policy: &Policy,
        repo: &Repo,
        context: &str,
        at: DateTime<Utc>,
        day: i64,
    ) -> Result<(), StoreError> {
        let commit = self.commit();
        let last_day = day == DAYS - 1;
        let (state, log): (RunState, Option<&str>) =
            if last_day && repo.path == "jenkins/nightly-suite" {
                (RunState::Failure, Some(NEW_FAILURE_LOG))
            } else if self.chance(0.2) {
                let i = self.rng.usize(0..FAILURE_LOGS.len());
                (RunState::Failure, Some(FAILURE_LOGS[i]))
            } else if self.chance(0.03) {
                (
                    RunState::Error,
                    Some("ERROR: Runner system failure: lost communication with the server"),
                )
            } else {
                (RunState::Success, None)
            };
        // One nightly, ten days ago, never reported back: it counts as lost.
        let lost = day == DAYS - 10 && context == "full-regression";
        let queue = self.range(10, 400);
        if lost {
            self.generated += 1;
            let request = RunRequest {
                repository: repo.path.to_string(),
                forge: Some(repo.forge),
                context: context.to_string(),
                commit,
                external_id: Some(format!("demo-lost-{day}")),
                trigger: Some(Trigger::Schedule),
                state: Some(RunState::Running),
                queued_at: Some(at),
                started_at: Some(at + Duration::seconds(queue)),
                ..RunRequest::default()
            };
            let prepared = request
                .prepare("demo", Vec::new(), &self.classifier, &self.deps)
                .map_err(|e| {
                    StoreError::Refused(format!("demo generator produced an invalid run: {e}"))
                })?;
            if self.shard.owns(repo.path) {
                store.ingest_run(&prepared.run, policy, self.now)?;
                self.report.runs += 1;
            }
            return Ok(());
        }
        self.run(
            store,
            policy,
            repo,
            context,
            &commit,
            0,
            Trigger::Schedule,
            at,
            nightly_minutes(repo, day),
            state,
            Vec::new(),
            Some(&format!(
                "{}\n{}",
                nightly_install_log(day),
                log.unwrap_or("All tests passed")
            )),
            None,
            queue,
        )?;
        Ok(())
    }
}

/// Run time range of a nightly in minutes: web-shop's end-to-end suite slowed
/// down in the last four days (the nightly grid's run-time colouring shows it).
fn nightly_minutes(repo: &Repo, day: i64) -> (i64, i64) {
    if repo.path == "acme/web-shop" && day >= DAYS - 4 {
        (130, 150)
    } else {
        (50, 70)
    }
}

/// The install step of a nightly: urllib3 was upgraded five days ago and
/// sqlalchemy on the last day (when the new migration panic appeared).
fn nightly_install_log(day: i64) -> String {
    let urllib3 = if day >= DAYS - 5 { "2.2.3" } else { "2.2.2" };
    let sqlalchemy = if day >= DAYS - 1 { "2.0.36" } else { "2.0.35" };
    format!("Successfully installed requests-2.32.3 urllib3-{urllib3} sqlalchemy-{sqlalchemy}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::collections::BTreeMap;

    /// Every persisted counter and histogram bucket as `family{labels}` → value.
    fn persisted(store: &Store) -> BTreeMap<String, f64> {
        let state = store.metric_state().unwrap();
        let mut out = BTreeMap::new();
        for c in state.counters {
            *out.entry(format!("{}{:?}", c.family, c.labels))
                .or_default() += c.value;
        }
        for h in state.histograms {
            let key = format!("{}{:?}", h.family, h.labels);
            *out.entry(format!("{key}_sum")).or_default() += h.sum;
            *out.entry(format!("{key}_count")).or_default() += h.count as f64;
            for b in h.buckets {
                *out.entry(format!("{key}_le{}", b.le)).or_default() += b.count as f64;
            }
        }
        out
    }

    #[test]
    fn the_shards_demos_add_up_to_the_unsharded_demo() {
        let config = crate::config::Config::default();
        let policy = Policy::from_config(&config);
        let now = Utc::now();
        let mut single = Store::open_in_memory().unwrap();
        let all = seed(&mut single, &policy, now).unwrap();
        let mut sum: BTreeMap<String, f64> = BTreeMap::new();
        let (mut runs, mut changes) = (0, 0);
        for i in 1..=2 {
            let shard = Shard::new(i, 2).unwrap();
            let mut store = Store::open_in_memory().unwrap();
            let r = seed_shard(&mut store, &policy, now, shard).unwrap();
            assert!(r.runs > 0, "shard {shard} owns a demo repository");
            runs += r.runs;
            changes += r.changes;
            for (k, v) in persisted(&store) {
                // Fingerprint novelty is per database (docs/scaling.md): not additive.
                if k.starts_with("ci_failure_fingerprints_new") {
                    continue;
                }
                *sum.entry(k).or_default() += v;
            }
        }
        assert_eq!((runs, changes), (all.runs, all.changes));
        let mut want = persisted(&single);
        want.retain(|k, _| !k.starts_with("ci_failure_fingerprints_new"));
        assert_eq!(sum, want);
    }
}

//! A simulated 30-day GitLab backfill against the fake GitLab: API calls made
//! next to the estimate 5 + R + (P+J)·D, then a steady-state poll's calls.
//! Run: `cargo bench --bench gitlab_backfill` (or, quicker, with the dev
//! profile: `cargo test --bench gitlab_backfill`). Env: R, P, J, D.

#[path = "../tests/fake_gitlab/mod.rs"]
mod fake_gitlab;

use chrono::{Duration, Utc};
use ci_slo_exporter::classify::Classifier;
use ci_slo_exporter::config::Config;
use ci_slo_exporter::forge::context::Context;
use ci_slo_exporter::forge::driver::{self, Since};
use ci_slo_exporter::forge::gitlab::GitlabConfig;
use ci_slo_exporter::forge::gitlab::poll::Poller;
use ci_slo_exporter::store::Policy;
use ci_slo_exporter::store::writer::StoreHandle;
use fake_gitlab::{Fake, Project, job, pipeline};
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (r, p, j, d) = (env("R", 20), env("P", 10), env("J", 15), env("D", 30));
    assert!(j >= p, "every failed pipeline has at least one failed job");
    let fake = Fake::default();
    let now = Utc::now();
    let mut names = Vec::new();
    for i in 0..r {
        let name = format!("grp/p{i:03}");
        fake.projects
            .lock()
            .unwrap()
            .insert(name.clone(), Project::default());
        names.push(name);
    }
    fake.groups
        .lock()
        .unwrap()
        .insert("grp".into(), names.clone());
    let (mut pid, mut jid) = (1_000_000i64, 5_000_000i64);
    for day in 0..d {
        for k in 0..p {
            // P failed pipelines a day spread over the projects; J failed jobs among them.
            let project = &names[((day * p + k) % r) as usize];
            let t = (now - Duration::days(day) - Duration::hours(2) + Duration::minutes(k))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            pid += 1;
            let failed_jobs = j / p + i64::from(k < j % p);
            let mut jobs = vec![job(jid, "build", "compile", "success", &t)];
            jid += 1;
            for n in 0..failed_jobs {
                jobs.push(job(jid, "test", &format!("suite-{n}"), "failed", &t));
                jid += 1;
            }
            let mut projects = fake.projects.lock().unwrap();
            let pr = projects.get_mut(project).unwrap();
            pr.pipelines
                .push(pipeline(pid, "abc123", "failed", "schedule", &t));
            pr.jobs.insert(pid, jobs);
        }
    }
    let running = fake_gitlab::start(fake);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let store = StoreHandle::start(&dir.path().join("bench.db")).unwrap();
        let config = GitlabConfig {
            api_url: running.api_url.clone(),
            groups: vec![ci_slo_exporter::forge::gitlab::GroupConfig {
                group: "grp".into(),
                pattern: None,
                include_subgroups: true,
            }],
            ..GitlabConfig::default()
        };
        let ctx = Context::new(
            store,
            Arc::new(Policy::from_config(&Config::default())),
            Arc::new(Classifier::with_defaults()),
        );
        let poller = Poller::new(ctx, config, None).unwrap();
        let started = std::time::Instant::now();
        let since = Since::Backfill(Utc::now() - Duration::days(d));
        let report = driver::round(&poller, since, false, &|_, _, _| {})
            .await
            .unwrap();
        let backfill_calls = running.fake.requests.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        let estimate = 5 + r + (p + j) * d;
        println!(
            "GitLab backfill: R={r} projects, P={p} failed pipelines/day, J={j} failed jobs/day, D={d} days"
        );
        println!(
            "  backfill: {backfill_calls} API calls (estimate 5 + R + (P+J)·D = {estimate}) in {secs:.2} s"
        );
        println!("  by endpoint: {:?}", poller.counts().endpoints());
        println!(
            "  pipelines {}, runs {}, traces {}, failed projects {}",
            report.pipelines,
            report.runs,
            report.logs,
            report.failed.len()
        );
        let before = running.fake.requests.load(Ordering::Relaxed);
        driver::poll_once(&poller).await.unwrap();
        let steady = running.fake.requests.load(Ordering::Relaxed) - before;
        println!("  steady-state poll: {steady} API calls (1 group listing + at most 1 per project)");
        let twice = running
            .fake
            .trace_downloads
            .lock()
            .unwrap()
            .values()
            .filter(|n| **n > 1)
            .count();
        println!("  traces downloaded twice: {twice}");
        assert_eq!(twice, 0);
        assert_eq!(report.logs as i64, j * d);
    });
}

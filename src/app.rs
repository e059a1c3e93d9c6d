//! Wiring: turns parsed command-line arguments into a running server or a
//! finished command. The long-running parts are here: the snapshot refresher,
//! the settler (merge decisions, lost runs) and pruning.

use crate::cli::{BackfillArgs, BackfillCommand, Cli, Command, IngestArgs, ServeArgs};
use crate::config::{Config, Secrets};
use crate::demo;
use crate::http::{self, AppState};
use crate::ingest::{ChangeRequest, ReportInput, ReportKind, RunRequest};
use crate::metrics::{self, MetricsHub, SelfMetrics, TestStatsCache};
use crate::store::writer::StoreHandle;
use crate::store::{Policy, Store};
use anyhow::{Context, Result};
use chrono::Utc;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    for (key, advice) in config.deprecated_keys() {
        tracing::warn!("configuration key {key} is no longer used: {advice}");
    }
    let secrets = Secrets::resolve(&config.secrets, |k| std::env::var(k).ok())?;
    if cli.print_config {
        print!("{}", config.to_masked_toml(&secrets));
        return Ok(());
    }
    match cli.command {
        Command::Serve(args) => serve(config, secrets, args),
        Command::Ingest(args) => ingest(&config, *args),
        Command::Classify(args) => classify_files(&config, &args.logs),
        Command::Report(args) => report_files(&args.files),
        Command::BackfillOpenmetrics(args) => backfill_openmetrics(&config, args),
        Command::Backfill(BackfillCommand::Gitlab(args)) => backfill_gitlab(config, secrets, args),
        Command::Backfill(BackfillCommand::Github(args)) => {
            crate::forge::github::backfill_command(config, secrets, args)
        }
        Command::Import(args) => crate::forge::github::import_command(config, args),
    }
}

fn serve(mut config: Config, secrets: Secrets, args: ServeArgs) -> Result<()> {
    if let Some(db) = args.db {
        config.store.path = db;
    }
    if let Some(addr) = args.listen_address {
        config.server.listen_address = addr;
        config.validate()?;
    }
    let addr: SocketAddr = config
        .server
        .listen_address
        .parse()
        .context("server.listen_address")?;
    let policy = Policy::from_config(&config);
    let classifier = config.classifier()?;
    let deps = config.dependency_extractor()?;

    if args.demo {
        let mut store = Store::open(&config.store.path)?;
        let report = demo::seed_shard(&mut store, &policy, Utc::now(), config.shard)?;
        if report.created {
            tracing::info!(
                runs = report.runs,
                changes = report.changes,
                "demo history written"
            );
        } else {
            tracing::info!("demo history already present; nothing added");
        }
    }
    {
        let store = Store::open(&config.store.path)?;
        store.mark_serving(Utc::now())?;
    }
    if secrets.api_token.is_none() {
        tracing::warn!("CI_SLO_API_TOKEN is not set: POST /api/v1/runs will answer 401");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if config.shard.is_sharded() {
        tracing::info!(
            shard = %config.shard,
            forwarding = !config.shard_urls.is_empty(),
            "serving one shard of the repositories"
        );
    }
    let (config_shard, config_shard_urls) = (config.shard, config.shard_urls.clone());
    let body_budget = config.server.max_body_bytes_in_flight;
    let fd_limit = http::serve::raise_fd_limit();
    let mut limits = http::serve::Limits::from_config(&config.server);
    limits.max_connections =
        http::serve::effective_max_connections(limits.max_connections, fd_limit);
    runtime.block_on(async move {
        // Listen first: while the database opens (and migrates) the port
        // is open, and once it is, /healthz answers 200 and /readyz 503
        // with the reason until the first snapshot is built.
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let preparing = std::time::Instant::now();
        tracing::info!(address = %listener.local_addr()?, db = %config.store.path.display(), "listening; preparing: opening the database (migrating it if needed)");
        let store = StoreHandle::start(&config.store.path)?;
        let hub = Arc::new(MetricsHub::new(SelfMetrics::new()));
        let state = AppState {
            config: Arc::new(config),
            secrets: Arc::new(secrets),
            policy: Arc::new(policy),
            store,
            hub,
            classifier: Arc::new(classifier),
            deps: Arc::new(deps),
            refresh: Arc::new(Notify::new()),
            ready: Arc::new(AtomicBool::new(false)),
            shards: Arc::new(crate::shard::ShardRouter::new(
                config_shard,
                &config_shard_urls,
            )?),
            bodies: Arc::new(http::guard::BodyBudget::new(body_budget)),
        };
        tracing::info!(
            seconds = preparing.elapsed().as_secs_f64(),
            "preparing: database open; building the first metrics snapshot (/readyz answers 503 until then)"
        );
        let tests = Arc::new(Mutex::new(TestStatsCache::default()));
        {
            let state = state.clone();
            tokio::spawn(async move {
                refresh_snapshot(&state, &tests).await;
                state.ready.store(true, Ordering::Release);
                tracing::info!(
                    seconds = preparing.elapsed().as_secs_f64(),
                    "ready: first metrics snapshot built"
                );
                refresher(state, tests).await;
            });
        }
        tokio::spawn(settler(state.clone()));
        tokio::spawn(pruner(state.clone()));
        if state.config.gitlab.enabled() {
            let poller = crate::forge::gitlab::poll::Poller::new(
                state.config.gitlab.clone(),
                state.secrets.gitlab_token.as_ref().map(|s| s.expose().to_string()),
                state.store.clone(),
                state.policy.clone(),
                state.classifier.clone(),
                Some(state.hub.clone()),
            )?
            .with_shard(state.config.shard)
            .with_dependencies(state.deps.clone());
            tokio::spawn(poller.run_forever(state.refresh.clone()));
        }
        crate::forge::github::spawn_poller(&state)?;

        tracing::info!(address = %listener.local_addr()?, db = %state.store.path().display(), max_connections = limits.max_connections, "serving");
        let hub = state.hub.clone();
        http::serve::serve(listener, http::router(state), limits, hub, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Rebuild the snapshot once, off the scrape path.
async fn refresh_snapshot(state: &AppState, tests: &Arc<Mutex<TestStatsCache>>) {
    let config = state.config.clone();
    let tests = tests.clone();
    match state
        .store
        .read(move |s| {
            let mut tests = tests.lock().unwrap_or_else(|p| p.into_inner());
            metrics::build_snapshot(s, &config, Utc::now(), &mut tests)
        })
        .await
    {
        Ok(snapshot) => {
            static LAST_DROPPED: std::sync::atomic::AtomicUsize =
                std::sync::atomic::AtomicUsize::new(0);
            if snapshot.dropped > 0 {
                state
                    .hub
                    .self_metrics
                    .series_dropped
                    .inc_by(snapshot.dropped as u64);
            }
            // Said when it changes, not at every rebuild.
            if LAST_DROPPED.swap(snapshot.dropped, Ordering::Relaxed) != snapshot.dropped
                && snapshot.dropped > 0
            {
                tracing::warn!(
                    dropped = snapshot.dropped,
                    max = state.config.metrics.max_series,
                    "more series than metrics.max_series: whole repositories left out of /metrics"
                );
            }
            state.hub.replace(snapshot);
            count_refresh(state, "ok");
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot rebuild the metrics snapshot; serving the previous one");
            count_refresh(state, "error");
        }
    }
}

fn count_refresh(state: &AppState, result: &str) {
    state
        .hub
        .self_metrics
        .snapshot_refreshes
        .get_or_create(&vec![("result".to_string(), result.to_string())])
        .inc();
}

/// Rebuild on the configured interval, and shortly after writes (coalesced).
async fn refresher(state: AppState, tests: Arc<Mutex<TestStatsCache>>) {
    let mut tick = tokio::time::interval(state.config.metrics.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.refresh.notified() => {
                // Let a burst of writes land before rebuilding.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        refresh_snapshot(&state, &tests).await;
    }
}

/// Decide merged changes and count lost scheduled runs as their time comes.
async fn settler(state: AppState) {
    let settle = state.config.slo.merge_settle;
    let every = (settle / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let policy = state.policy.clone();
        match state
            .store
            .write(move |s| s.settle(&policy, Utc::now(), None))
            .await
        {
            Ok(stats) if stats.changes_decided + stats.runs_lost > 0 => {
                tracing::debug!(?stats, "settled");
                state.refresh.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot settle merged changes"),
        }
    }
}

/// Prune runs past the retention once an hour; counters are untouched.
async fn pruner(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let retention = chrono::Duration::from_std(state.config.store.retention)
            .unwrap_or(chrono::Duration::MAX);
        let keep_events = chrono::Duration::from_std(
            state
                .config
                .gauge_windows()
                .into_iter()
                .max()
                .unwrap_or_default()
                .max(state.config.store.retention),
        )
        .unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        match state
            .store
            .write(move |s| s.prune(now - retention, now - keep_events))
            .await
        {
            Ok(stats) if stats.runs > 0 => tracing::info!(?stats, "pruned"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot prune"),
        }
        let deliveries = chrono::Duration::from_std(state.config.store.delivery_retention)
            .unwrap_or(chrono::Duration::MAX);
        match state
            .store
            .write(move |s| s.prune_deliveries(now - deliveries))
            .await
        {
            Ok(n) if n > 0 => tracing::info!(deliveries = n, "pruned webhook delivery ids"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot prune webhook delivery ids"),
        }
    }
}

/// `backfill gitlab --days N`: one resumable round over the configured
/// projects from N days ago, with progress (a bar on a terminal, else lines).
fn backfill_gitlab(mut config: Config, secrets: Secrets, args: BackfillArgs) -> Result<()> {
    use crate::forge::gitlab::poll::{Poller, Since};
    use std::io::IsTerminal;
    if let Some(db) = args.db {
        config.store.path = db;
    }
    if !config.gitlab.enabled() {
        anyhow::bail!("nothing to backfill: set gitlab.projects or gitlab.groups in the config");
    }
    let policy = Arc::new(Policy {
        history: args.history,
        ..Policy::from_config(&config)
    });
    let classifier = Arc::new(config.classifier()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = StoreHandle::start(&config.store.path)?;
        let poller = Poller::new(
            config.gitlab.clone(),
            secrets
                .gitlab_token
                .as_ref()
                .map(|s| s.expose().to_string()),
            store.clone(),
            policy.clone(),
            classifier,
            None,
        )?
        .with_shard(config.shard)
        .with_dependencies(Arc::new(config.dependency_extractor()?));
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} projects {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let stats = poller.stats.clone();
        let started = std::time::Instant::now();
        let last_line = std::sync::Mutex::new(std::time::Instant::now());
        let progress = |done: usize, total: usize, r: &crate::forge::gitlab::poll::PollReport| {
            let msg = format!(
                "{} pipelines, {} runs, {} traces, {} API calls",
                r.pipelines,
                r.runs,
                r.traces,
                stats.requests()
            );
            if let Some(bar) = &bar {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message(msg);
            } else {
                let mut last = last_line.lock().unwrap_or_else(|p| p.into_inner());
                if done == total || last.elapsed() >= Duration::from_secs(10) {
                    *last = std::time::Instant::now();
                    eprintln!("backfill gitlab: {done}/{total} projects, {msg}");
                }
            }
        };
        let since = Utc::now() - chrono::Duration::days(i64::from(args.days));
        let report = poller.poll_once(Since::Backfill(since), &progress).await?;
        if let Some(bar) = &bar {
            bar.finish();
        }
        let settled = store
            .write(move |s| s.settle(&policy, Utc::now(), None))
            .await?;
        println!(
            "{}",
            serde_json::json!({
                "projects": report.projects, "pipelines": report.pipelines, "runs": report.runs,
                "traces": report.traces, "merges": report.merges, "failed": report.failed,
                "changes_decided": settled.changes_decided, "api_calls": stats.requests(),
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
        if !report.failed.is_empty() {
            anyhow::bail!(
                "{} project(s) failed; run the backfill again to resume: {}",
                report.failed.len(),
                report.failed.join(", ")
            );
        }
        Ok(())
    })
}

fn read_text(path: &std::path::Path) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read stdin")?;
        return Ok(s);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn ingest(config: &Config, args: IngestArgs) -> Result<()> {
    let mut request = match &args.json {
        Some(path) => serde_json::from_str::<RunRequest>(&read_text(path)?)
            .with_context(|| format!("invalid run in {}", path.display()))?,
        None => RunRequest {
            repository: args.repository.clone().unwrap_or_default(),
            forge: Some(
                args.forge
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--forge: {e}"))?,
            ),
            context: args.context.clone().unwrap_or_default(),
            commit: args.commit.clone().unwrap_or_default(),
            external_id: args.external_id.clone(),
            attempt: args.attempt,
            trigger: Some(
                args.trigger
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--trigger: {e}"))?,
            ),
            state: match &args.state {
                Some(s) => Some(s.parse().map_err(|e| anyhow::anyhow!("--state: {e}"))?),
                None => None,
            },
            queued_at: args.queued_at,
            started_at: args.started_at,
            finished_at: args.finished_at,
            url: args.url.clone(),
            log_url: args.log_url.clone(),
            change: args.change.map(|number| ChangeRequest {
                number,
                merged_at: args.merged_at,
            }),
            ..RunRequest::default()
        },
    };
    if let Some(log) = &args.log {
        request.log = Some(read_text(log)?);
    }
    let mut reports = Vec::new();
    for (kind, paths) in [
        (ReportKind::Tap, &args.tap),
        (ReportKind::Junit, &args.junit),
    ] {
        for path in paths {
            reports.push(ReportInput {
                format: kind,
                name: path.display().to_string(),
                content: read_text(path)?,
            });
        }
    }
    let repository = request.repository.trim();
    if !config.shard.owns(repository) {
        anyhow::bail!(
            "repository {repository:?} belongs to shard {}, not to this shard {} (shard in the config): ingest it into that shard's database",
            config.shard.owner(repository),
            config.shard
        );
    }
    let policy = Policy {
        history: args.history,
        ..Policy::from_config(config)
    };
    if let Err(impossible) =
        crate::ingest::validate::check_times(&request, Utc::now(), config.ingest.max_future_skew)
    {
        Store::open(&args.db)?.count_rejection(impossible.reason())?;
        anyhow::bail!("invalid run: {impossible}");
    }
    let prepared = request.prepare(
        "cli",
        reports,
        &config.classifier()?,
        &config.dependency_extractor()?,
    )?;
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
    let mut store = Store::open(&args.db)?;
    let now = Utc::now();
    let ingested = store.ingest_run(&prepared.run, &policy, now)?;
    store.settle(&policy, now, None)?;
    if ingested.status == crate::store::IngestStatus::Conflict {
        anyhow::bail!(
            "{}",
            crate::http::api::conflict_message(ingested.id, &ingested.differing)
        );
    }
    println!(
        "{}",
        serde_json::json!({ "id": ingested.id, "status": ingested.status, "warnings": prepared.warnings })
    );
    Ok(())
}

/// Print one JSON line per log; a file that cannot be read gets
/// `{"file","error"}` and makes the command fail after all files are done.
fn classify_files(config: &Config, logs: &[PathBuf]) -> Result<()> {
    let classifier = config.classifier()?;
    let mut failed = 0;
    for path in logs {
        let file = path.display().to_string();
        let result = if path.as_os_str() == "-" {
            classifier.classify_log(std::io::stdin().lock())
        } else {
            std::fs::File::open(path).and_then(|f| classifier.classify_log(f))
        };
        let line = match result {
            Ok(c) => match c.primary {
                Some(m) => serde_json::json!({
                    "file": file, "class": m.class, "category": m.category, "line": m.line,
                    "evidence": m.evidence, "fingerprint": m.fingerprint, "context": m.context,
                    "context_before": m.context_before, "candidates": m.candidates,
                }),
                None => serde_json::json!({
                    "file": file, "class": null, "category": null, "line": null,
                    "evidence": null, "fingerprint": null, "context": [],
                    "context_before": 0, "candidates": [],
                }),
            },
            Err(e) => {
                failed += 1;
                serde_json::json!({ "file": file, "error": e.to_string() })
            }
        };
        println!("{line}");
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} files could not be read",
        logs.len()
    );
    Ok(())
}

/// Print one JSON line per report; a corrupt report gets `{"file","error"}`,
/// the others are still summarised, and the command fails at the end.
fn report_files(files: &[PathBuf]) -> Result<()> {
    let mut failed = 0;
    for path in files {
        let file = path.display().to_string();
        let line = match crate::report::parse_file(path) {
            Ok(r) => {
                let t = r.totals();
                serde_json::json!({
                    "file": file, "format": r.format.as_str(), "tests": t.tests, "passed": t.passed,
                    "failed": t.failed, "errored": t.errored, "skipped": t.skipped,
                    "retried": t.retried, "flaky": t.flaky,
                })
            }
            Err(e) => {
                failed += 1;
                serde_json::json!({ "file": file, "error": e.to_string() })
            }
        };
        println!("{line}");
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} reports could not be parsed",
        files.len()
    );
    Ok(())
}

fn backfill_openmetrics(config: &Config, args: crate::cli::BackfillOpenmetricsArgs) -> Result<()> {
    let db = args.db.unwrap_or_else(|| config.store.path.clone());
    anyhow::ensure!(db.exists(), "database {} does not exist", db.display());
    anyhow::ensure!(args.step.as_secs() >= 1, "--step must be at least 1s");
    anyhow::ensure!(
        !args.job.is_empty() && !args.instance.is_empty(),
        "--job and --instance must not be empty: they are the labels Prometheus gives the scraped series"
    );
    let store = Store::open(&db)?;
    let until = args.until.unwrap_or_else(Utc::now);
    let range = crate::metrics::history::HistoryRange {
        since: until - chrono::Duration::from_std(args.since).context("--since is too long")?,
        until,
        step: chrono::Duration::from_std(args.step).context("--step is too long")?,
        target_labels: vec![
            ("job".to_string(), args.job),
            ("instance".to_string(), args.instance),
        ],
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let report = crate::metrics::history::write_history(&store, config, &range, &mut out)?;
    eprintln!(
        "wrote {} samples of {} series ({:.1} MB) from {} to {}, every {} around each change",
        report.samples,
        report.series,
        report.bytes as f64 / 1e6,
        range.since.to_rfc3339(),
        range.until.to_rfc3339(),
        humantime::format_duration(args.step)
    );
    for (family, n) in &report.uncounted {
        eprintln!(
            "warning: {n} stored events of {family} were never counted by the live counters \
             (stored as backdated, or history loaded after the first serve); the history shows \
             them only as far as the live total leaves room"
        );
    }
    Ok(())
}

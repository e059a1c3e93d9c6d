//! Wiring: turns parsed command-line arguments into a running server or a
//! finished command. `serve` and its long-running parts are here (the
//! snapshot refresher, the settler: merge decisions, lost runs, and pruning;
//! the work that must run once runs while this replica leads: `leadership`);
//! each other command has its own submodule.

mod backfill;
mod files;
mod import;
mod ingest;
pub mod leadership;
mod openmetrics;
mod pollers;
mod postgres;

use crate::cli::{BackfillCommand, Cli, Command, ServeArgs};
use crate::clock::Clock;
use crate::config::{Config, Secrets};
use crate::demo;
use crate::http::readiness::Readiness;
use crate::http::{self, AppState};
use crate::metrics::{self, MetricsHub, SelfMetrics, TestStatsCache};
use crate::store::Policy;
use crate::store::writer::StoreHandle;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    for (key, advice) in config.deprecated_keys() {
        tracing::warn!("configuration key {key} is no longer used: {advice}");
    }
    let secrets = Secrets::resolve(&config.secrets, |k| std::env::var(k).ok())?;
    if cli.print_config {
        crate::output::text(config.to_masked_toml(&secrets))?;
        return Ok(());
    }
    postgres::check(&config, &cli.command)?;
    match cli.command {
        Command::Serve(args) => serve(config, secrets, args),
        Command::Ingest(args) => ingest::ingest(&config, *args),
        Command::Classify(args) => files::classify_files(&config, &args.logs),
        Command::Report(args) => files::report_files(&args.files),
        Command::BackfillOpenmetrics(args) => openmetrics::backfill_openmetrics(&config, args),
        Command::Backfill(BackfillCommand::Gitlab(args)) => backfill::gitlab(config, secrets, args),
        Command::Backfill(BackfillCommand::Github(args)) => backfill::github(config, secrets, args),
        Command::Import(args) => import::cockpit(config, args),
    }
}

fn serve(mut config: Config, secrets: Secrets, args: ServeArgs) -> Result<()> {
    if let Some(db) = args.db {
        config.store.path = db;
    }
    if let Some(addr) = args.listen_address {
        config.server.listen_address = addr;
    }
    let addr: SocketAddr = config.validate_listen_address()?;
    let policy = Policy::from_config(&config);
    // Compiling the classifier's rules is the longest part of starting
    // (0.1 to 0.3 s of CPU): it runs on its own thread while the database
    // opens and the first snapshot is built; /readyz waits for both.
    let compiling = {
        let config = config.clone();
        std::thread::Builder::new()
            .name("classifier".into())
            .spawn(move || -> Result<_> {
                Ok((config.classifier()?, config.dependency_extractor()?))
            })?
    };

    let demo = args.demo;
    let clock = Clock::fixed_or_system(args.now);
    if let Some(at) = clock.fixed_at() {
        tracing::warn!(now = %at, "the clock is fixed (--now / CI_SLO_NOW): for tests only");
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
        // Listen first and answer at once: while the database opens (and
        // migrates) and the first snapshot is built, /healthz answers 200
        // and /readyz 503 with what is being done (http::readiness).
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let address = listener.local_addr()?;
        let preparing = std::time::Instant::now();
        let readiness = Arc::new(Readiness::preparing("opening the database"));
        let app = Arc::new(OnceLock::new());
        let hub = Arc::new(MetricsHub::new(SelfMetrics::new()));
        tracing::info!(address = %address, db = %crate::store_open::location(&config.store), max_connections = limits.max_connections, "listening; preparing: opening the database (migrating it if needed)");
        // The shutdown signal also stops the work that runs once (the
        // pollers: `forge::poll_forever`; the settler; the pruner).
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(http::serve::serve(
            listener,
            http::readiness::gate(readiness.clone(), app.clone()),
            limits,
            hub.clone(),
            async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            },
        ));
        let store = {
            let (store_config, readiness, policy) = (
                config.store.clone(),
                readiness.clone(),
                policy.clone(),
            );
            let shard = config.shard;
            tokio::task::spawn_blocking(move || {
                open_for_serving(&store_config, demo, &policy, shard, clock, &readiness)
            })
            .await??
        };
        // The first snapshot needs neither the classifier nor the state:
        // it starts now, while the classifier may still be compiling.
        readiness.set("building the first metrics snapshot");
        tracing::info!(
            seconds = preparing.elapsed().as_secs_f64(),
            "preparing: database open; building the first metrics snapshot (/readyz answers 503 until then)"
        );
        let config = Arc::new(config);
        let tests = Arc::new(Mutex::new(TestStatsCache::default()));
        let first_snapshot = tokio::spawn({
            let (store, config, hub, tests) =
                (store.clone(), config.clone(), hub.clone(), tests.clone());
            async move { refresh_snapshot_of(&store, &config, clock.now(), &hub, &tests).await }
        });
        let (classifier, deps) = tokio::task::spawn_blocking(move || compiling.join())
            .await?
            .map_err(|_| anyhow::anyhow!("compiling the classifier panicked"))??;
        let state = AppState {
            config,
            secrets: Arc::new(secrets),
            policy: Arc::new(policy),
            store,
            hub,
            classifier: Arc::new(classifier),
            deps: Arc::new(deps),
            refresh: Arc::new(Notify::new()),
            readiness: readiness.clone(),
            shards: Arc::new(crate::http::forward::ShardRouter::new(
                config_shard,
                &config_shard_urls,
            )?),
            bodies: Arc::new(http::guard::BodyBudget::new(body_budget)),
            clock,
        };
        let _ = app.set(http::router(state.clone()));
        // SQLite: one process serves the file, so it always leads (the
        // work starts now, and ci_exporter_leader is 1 from the first
        // scrape). PostgreSQL: the replica holding the database's
        // leadership, kept while `_leader` lives.
        let (leading, _leader) = postgres::leadership(&state.config)?;
        let once = run_once_only(&state, leading, stopping)?;
        {
            let state = state.clone();
            tokio::spawn(async move {
                let _ = first_snapshot.await;
                state.readiness.set_ready();
                tracing::info!(
                    seconds = preparing.elapsed().as_secs_f64(),
                    "ready: first metrics snapshot built"
                );
                refresher(state, tests).await;
            });
        }

        tracing::info!(address = %address, db = %state.store.location(), "serving");
        server.await??;
        // The work that runs once stopped at the signal (or when the server
        // ended); a write a poller submitted before it stopped still runs on
        // the writer, and this empty one, queued after it, is acknowledged
        // once it is committed.
        let _ = once.await;
        state.store.write(|_| Ok(())).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Open (and migrate) the database for `serve`, write the demo history when
/// asked, and record that a server started on it; `readiness` says which
/// step is running.
fn open_for_serving(
    config: &crate::config::StoreConfig,
    demo: bool,
    policy: &Policy,
    shard: crate::shard::Shard,
    clock: Clock,
    readiness: &Readiness,
) -> Result<StoreHandle> {
    let mut store = crate::store_open::open_reporting(config, &mut |step| {
        tracing::info!(
            from = step.from,
            to = step.latest,
            migration = step.to,
            "preparing: migrating the database (/readyz answers 503 until ready)"
        );
        readiness.set(step.to_string());
    })?;
    if demo {
        readiness.set("writing the demo history");
        let report = demo::seed_shard(&mut *store, policy, clock.now(), shard)?;
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
    fold_backlog(&*store, readiness)?;
    store.mark_serving(clock.now())?;
    drop(store);
    Ok(crate::store_open::start(config)?)
}

/// Fold the runs stored and not folded yet into the per-test counters
/// (PostgreSQL: a backlog of marks, e.g. runs stored by a replica that
/// stopped before it folded them, or a bulk load), before the first
/// snapshot reads them: /readyz and the log say how many, and how far the
/// fold got. Without it the first snapshot's read folded them without a
/// word (19.6 s for 2 M results in a benchmark).
fn fold_backlog(store: &dyn crate::store::Storage, readiness: &Readiness) -> Result<()> {
    let (marks, results) = store.unfolded()?;
    if marks == 0 {
        return Ok(());
    }
    let what =
        format!("folding {marks} stored runs ({results} results) into the per-test counters");
    tracing::info!(
        runs = marks,
        results,
        "preparing: {what} (/readyz answers 503 until ready)"
    );
    readiness.set(format!("{what}: 0 of {marks} runs folded"));
    let started = std::time::Instant::now();
    let mut said = started;
    let folded = store.fold_reporting(&mut |done| {
        readiness.set(format!("{what}: {done} of {marks} runs folded"));
        if said.elapsed() >= FOLD_PROGRESS_EVERY {
            said = std::time::Instant::now();
            tracing::info!(
                folded = done,
                runs = marks,
                seconds = started.elapsed().as_secs_f64(),
                "preparing: folding the stored runs into the per-test counters"
            );
        }
    })?;
    tracing::info!(
        folded,
        seconds = started.elapsed().as_secs_f64(),
        "preparing: stored runs folded into the per-test counters"
    );
    Ok(())
}

/// How often a long fold at start says how far it got.
const FOLD_PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
    refresh_snapshot_of(
        &state.store,
        &state.config,
        state.clock.now(),
        &state.hub,
        tests,
    )
    .await;
}

/// [`refresh_snapshot`] from the parts of the state it needs (the first
/// snapshot is built before the state exists).
async fn refresh_snapshot_of(
    store: &StoreHandle,
    config: &Arc<Config>,
    now: chrono::DateTime<chrono::Utc>,
    hub: &Arc<MetricsHub>,
    tests: &Arc<Mutex<TestStatsCache>>,
) {
    let (store, config) = (store.clone(), config.clone());
    let tests = tests.clone();
    let max_series = config.metrics.max_series;
    match store
        .read(move |s| {
            let mut tests = tests.lock().unwrap_or_else(|p| p.into_inner());
            metrics::build_snapshot(s, &config, now, &mut tests)
        })
        .await
    {
        Ok(snapshot) => {
            static LAST_DROPPED: std::sync::atomic::AtomicUsize =
                std::sync::atomic::AtomicUsize::new(0);
            if snapshot.dropped > 0 {
                hub.self_metrics
                    .count_series_dropped(snapshot.dropped as u64);
            }
            // Said when it changes, not at every rebuild.
            if LAST_DROPPED.swap(snapshot.dropped, Ordering::Relaxed) != snapshot.dropped
                && snapshot.dropped > 0
            {
                tracing::warn!(
                    dropped = snapshot.dropped,
                    max = max_series,
                    "more series than metrics.max_series: whole repositories left out of /metrics"
                );
            }
            hub.replace(snapshot);
            hub.self_metrics.count_refresh("ok");
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot rebuild the metrics snapshot; serving the previous one");
            hub.self_metrics.count_refresh("error");
        }
    }
}

/// How long after a write its snapshot rebuild starts: long enough for a
/// burst of writes to land first.
const AFTER_WRITE: Duration = Duration::from_millis(100);

/// Under sustained writes, the least time from the start of one rebuild to
/// the start of the next: the larger of this and [`REBUILD_SPACING`] times
/// the last rebuild's duration (never more than `metrics.refresh_interval`).
const MIN_REBUILD_GAP: Duration = Duration::from_millis(500);

/// A rebuild (which reads every test's per-day counters, on the database
/// server with PostgreSQL) takes at most about a fifth of the time while
/// writes keep coming.
const REBUILD_SPACING: u32 = 5;

/// When the rebuild after a write may start: [`AFTER_WRITE`] after it, and
/// not before the gap since the last rebuild began has passed.
fn next_rebuild_after_write(
    now: std::time::Instant,
    last: Option<(std::time::Instant, Duration)>,
    interval: Duration,
) -> std::time::Instant {
    let soonest = now + AFTER_WRITE;
    match last {
        None => soonest,
        Some((started, took)) => {
            let gap = MIN_REBUILD_GAP.max(took * REBUILD_SPACING).min(interval);
            soonest.max(started + gap)
        }
    }
}

/// Rebuild on the configured interval, and shortly after writes (coalesced;
/// under sustained writes, spaced by [`next_rebuild_after_write`]).
async fn refresher(state: AppState, tests: Arc<Mutex<TestStatsCache>>) {
    let interval = state.config.metrics.refresh_interval;
    // The first snapshot was just built: the next is due an interval later
    // (`interval` would tick at once, a second full rebuild, on PostgreSQL
    // reading every test's counters, among the first scrapes after /readyz).
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(std::time::Instant, Duration)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.refresh.notified() => {
                let at = next_rebuild_after_write(std::time::Instant::now(), last, interval);
                tokio::time::sleep_until(at.into()).await;
            }
        }
        let started = std::time::Instant::now();
        refresh_snapshot(&state, &tests).await;
        last = Some((started, started.elapsed()));
    }
}

/// The work that must run once among the replicas of a database, run while
/// `leadership` says this replica leads (`leadership::run`), until `stop`:
/// the settler, the pruner, the folder and the forge pollers, writing through the
/// store fenced by the term (`leadership`). Fails when a poller cannot be
/// built from the configuration.
pub fn run_once_only(
    state: &AppState,
    leadership: leadership::Leadership,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>> {
    let mut pollers = pollers::Pollers::new(state)?;
    let state = state.clone();
    Ok(leadership::run(
        leadership,
        stop,
        state.hub.clone(),
        state.store.clone(),
        move |stop, store| {
            let mut tasks = vec![
                tokio::spawn(settler(state.clone(), store.clone(), stop.clone())),
                tokio::spawn(pruner(state.clone(), store.clone(), stop.clone())),
                tokio::spawn(folder(store.clone(), stop.clone())),
            ];
            tasks.extend(pollers.spawn(&stop, &store));
            tasks
        },
    ))
}

/// Until the next tick, or None once `stop` turns true (or its sender is
/// gone): the settler and the pruner stop between two writes.
async fn next_tick(
    tick: &mut tokio::time::Interval,
    stop: &mut watch::Receiver<bool>,
) -> Option<()> {
    tokio::select! {
        biased;
        _ = crate::forge::stopped(stop) => None,
        _ = tick.tick() => Some(()),
    }
}

/// A write of the work that runs once failed: at info when its term of
/// leadership had ended (the fence refused it: not a failure of this
/// replica), else as an error.
fn log_failed(e: &crate::store::StoreError, what: &str) {
    if e.is_fenced() {
        tracing::info!(error = %e, "{what}: not written, leadership lost");
    } else {
        tracing::error!(error = %e, "{what}");
    }
}

/// Decide merged changes and count lost scheduled runs as their time comes,
/// writing through `store` (fenced by the term), until `stop`.
async fn settler(state: AppState, store: StoreHandle, mut stop: watch::Receiver<bool>) {
    let settle = state.config.slo.merge_settle;
    let every = (settle / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    while next_tick(&mut tick, &mut stop).await.is_some() {
        let policy = state.policy.clone();
        let now = state.clock.now();
        match store.write(move |s| s.settle(&policy, now, None)).await {
            Ok(stats) if stats.changes_decided + stats.runs_lost > 0 => {
                tracing::debug!(?stats, "settled");
                state.refresh.notify_one();
            }
            Ok(_) => {}
            Err(e) => log_failed(&e, "cannot settle merged changes"),
        }
    }
}

/// How often the leader folds the runs the replicas stored into the
/// per-test counters (`Storage::fold`): often enough that a read, which
/// folds first, seldom meets more than a few runs to fold (a posted run of
/// 8,000 tests is about 200 ms of server time), seldom enough that an idle
/// store costs one `EXISTS` a period.
const FOLD_EVERY: Duration = Duration::from_millis(250);

/// Fold the runs the replicas stored into the per-test counters every
/// [`FOLD_EVERY`], on a read connection (PostgreSQL counts them after the
/// run, crates/store-pg/src/fold.rs; its reads of them fold first anyway,
/// so this keeps the backlog a read would meet short; SQLite has nothing
/// to fold), until `stop`.
async fn folder(store: StoreHandle, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(FOLD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while next_tick(&mut tick, &mut stop).await.is_some() {
        if let Err(e) = store.read(|s| s.fold()).await {
            tracing::warn!(error = %e, "cannot fold the stored runs into the per-test counters");
        }
    }
}

/// Prune runs past the retention once an hour (the first time at once);
/// counters are untouched. Writes through `store` (fenced by the term),
/// until `stop`.
async fn pruner(state: AppState, store: StoreHandle, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    while next_tick(&mut tick, &mut stop).await.is_some() {
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
        let now = state.clock.now();
        match store
            .write(move |s| s.prune(now - retention, now - keep_events))
            .await
        {
            Ok(stats) if stats.runs > 0 => tracing::info!(?stats, "pruned"),
            Ok(_) => {}
            Err(e) => log_failed(&e, "cannot prune"),
        }
        let deliveries = chrono::Duration::from_std(state.config.store.delivery_retention)
            .unwrap_or(chrono::Duration::MAX);
        match store
            .write(move |s| s.prune_deliveries(now - deliveries))
            .await
        {
            Ok(n) if n > 0 => tracing::info!(deliveries = n, "pruned webhook delivery ids"),
            Ok(_) => {}
            Err(e) => log_failed(&e, "cannot prune webhook delivery ids"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_rebuild_follows_a_lone_write_shortly_and_sustained_writes_are_spaced() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(15);
        let ms = |m: u64| Duration::from_millis(m);
        // The first write, and a write long after the last rebuild.
        assert_eq!(next_rebuild_after_write(t0, None, interval), t0 + ms(100));
        let long_ago = Some((t0, ms(20)));
        let later = t0 + ms(5000);
        assert_eq!(
            next_rebuild_after_write(later, long_ago, interval),
            later + ms(100)
        );
        // A write right after a quick rebuild waits for the 500 ms gap.
        assert_eq!(
            next_rebuild_after_write(t0 + ms(30), Some((t0, ms(20))), interval),
            t0 + ms(500)
        );
        // After a slow one, five times its duration.
        assert_eq!(
            next_rebuild_after_write(t0 + ms(300), Some((t0, ms(300))), interval),
            t0 + ms(1500)
        );
        // Never later than the interval's own rebuild would be.
        assert_eq!(
            next_rebuild_after_write(t0 + ms(300), Some((t0, ms(300))), ms(800)),
            t0 + ms(800)
        );
    }
}

//! The work that must run once (forge polling, settling, pruning) runs only
//! while this replica leads (`app::leadership`): driven by a watch by hand,
//! through the real set of tasks `serve` runs (`app::run_once_only`) against
//! the fake GitHub and a SQLite store; and with two PostgreSQL `Leader`s on
//! one test database driving the same gate: never both running, and the
//! survivor takes over when the leader goes.
//!
//! "Not running" is checked after the gate said the work stopped
//! (`ci_exporter_leader` back to 0, which it sets only after the work's tasks
//! ended): from then on nothing may reach the forge or the store, whatever
//! the timing. Waits for something to happen are bounded only to catch a
//! hang.

use crate::common;
use crate::fake_github;

use ci_slo_exporter::app::leadership::{self, Leadership};
use ci_slo_exporter::app::run_once_only;
use ci_slo_exporter::clock::Clock;
use ci_slo_exporter::config::{Config, Secrets};
use ci_slo_exporter::forge::github::GithubConfig;
use ci_slo_exporter::http::AppState;
use ci_slo_exporter::metrics::{MetricsHub, SelfMetrics};
use ci_slo_exporter::model::{Completeness, Forge, NewRun, RepositoryRef, RunState, Trigger};
use ci_slo_exporter::store::Policy;
use ci_slo_exporter::store::writer::StoreHandle;
use ci_slo_store_pg::leader::{Leader, LeaderConfig};
use ci_slo_store_pg::testing::TestServer;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Wait until `f` holds (polling); panic naming `what` if it never does.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`until`] for a condition read from the store.
async fn until_stored(
    store: &StoreHandle,
    what: &str,
    f: impl Fn(&dyn ci_slo_exporter::store::Storage) -> bool + Clone + Send + 'static,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let f = f.clone();
        if store.read(move |s| Ok(f(s))).await.unwrap() {
            return;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn leader_gauge(hub: &MetricsHub) -> f64 {
    common::self_metric(hub, "ci_exporter_leader", &[])
}

/// What `serve` builds, on the SQLite file `db`, with `config` and `clock`.
fn state(db: &std::path::Path, config: Config, clock: Clock) -> AppState {
    state_on(StoreHandle::start(db).unwrap(), config, clock)
}

/// What `serve` builds, on `store`.
fn state_on(store: StoreHandle, config: Config, clock: Clock) -> AppState {
    AppState {
        policy: Arc::new(Policy::from_config(&config)),
        classifier: Arc::new(config.classifier().unwrap()),
        deps: Arc::new(config.dependency_extractor().unwrap()),
        config: Arc::new(config),
        secrets: Arc::new(Secrets::default()),
        store,
        hub: Arc::new(MetricsHub::new(SelfMetrics::new())),
        refresh: Default::default(),
        readiness: Arc::new(ci_slo_exporter::http::readiness::Readiness::preparing(
            "testing",
        )),
        shards: Arc::new(
            ci_slo_exporter::http::forward::ShardRouter::new(
                ci_slo_exporter::shard::Shard::ALL,
                &[],
            )
            .unwrap(),
        ),
        bodies: Arc::new(ci_slo_exporter::http::guard::BodyBudget::new(1 << 20)),
        clock,
    }
}

fn repository() -> RepositoryRef {
    RepositoryRef {
        forge: Forge::Generic,
        path: "acme/shop".into(),
    }
}

/// A finished run of `commit`, half an hour ago.
fn finished_run(commit: &str) -> NewRun {
    let queued = chrono::Utc::now() - chrono::Duration::minutes(30);
    NewRun {
        repository: repository(),
        context: "build".into(),
        commit: commit.into(),
        external_id: None,
        attempt_group: None,
        attempt: 1,
        trigger: Trigger::PullRequest,
        trigger_pending: false,
        state: RunState::Success,
        queued_at: Some(queued),
        started_at: Some(queued + chrono::Duration::seconds(60)),
        finished_at: Some(queued + chrono::Duration::seconds(250)),
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

/// Merged changes the settler decided without runs: one per change here.
fn decided(s: &dyn ci_slo_exporter::store::Storage) -> f64 {
    s.metric_state()
        .unwrap()
        .counters
        .into_iter()
        .filter(|c| {
            c.family == "ci_exporter_data_quality_rejections"
                && c.labels
                    .iter()
                    .any(|(k, v)| k == "reason" && v == "merged_change_without_runs")
        })
        .map(|c| c.value)
        .sum()
}

/// A change merged now and a run that finished half an hour ago: with the
/// clock of the state 1000 days ahead, the settler decides the change at
/// its next round and the pruner deletes the run at its next.
async fn add_work(store: &StoreHandle, number: i64) {
    store
        .write(move |s| {
            let now = chrono::Utc::now();
            s.record_merge(
                &repository(),
                number,
                Some(&format!("{number:040x}")),
                now,
                now,
            )?;
            let policy = Policy::from_config(&Config::default());
            s.ingest_run(
                &finished_run(&format!("{:040x}", 1000 + number)),
                &policy,
                now,
            )?;
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settler_and_the_pruner_run_only_while_leading_and_restart_when_leadership_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    // The settler's round: every second (half the settle time, at least 1 s).
    config.slo.merge_settle = Duration::from_secs(2);
    let ahead = Clock::fixed(chrono::Utc::now() + chrono::Duration::days(1000));
    let state = state(&dir.path().join("s.db"), config, ahead);
    let store = state.store.clone();
    add_work(&store, 1).await;

    let (lead, leading) = watch::channel(false);
    let (stop, stopping) = watch::channel(false);
    let gate = run_once_only(&state, Leadership::follow(leading), stopping).unwrap();
    assert_eq!(
        leader_gauge(&state.hub),
        0.0,
        "not leading: the work did not start"
    );
    // Longer than a settler round: nothing ran while not leading.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (d, runs) = store
        .read(|s| Ok((decided(s), s.run_count()?)))
        .await
        .unwrap();
    assert_eq!(
        (d, runs),
        (0.0, 1),
        "nothing settled or pruned while not leading"
    );

    lead.send(true).unwrap();
    until("the work starts when leadership is gained", || {
        leader_gauge(&state.hub) == 1.0
    })
    .await;
    until_stored(&store, "the change is settled and the run pruned", |s| {
        decided(s) == 1.0 && s.run_count().unwrap() == 0
    })
    .await;

    lead.send(false).unwrap();
    until("the work stops when leadership is lost", || {
        leader_gauge(&state.hub) == 0.0
    })
    .await;
    add_work(&store, 2).await;
    // Longer than two settler rounds: a settler still running would have
    // decided the new change.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (d, runs) = store
        .read(|s| Ok((decided(s), s.run_count()?)))
        .await
        .unwrap();
    assert_eq!(
        (d, runs),
        (1.0, 1),
        "nothing settled or pruned after leadership was lost"
    );

    // Regained: both start again (the pruner's first round is at once, its
    // next an hour later: only a restarted pruner deletes the run now).
    lead.send(true).unwrap();
    until_stored(
        &store,
        "settled and pruned again once leadership returns",
        |s| decided(s) == 2.0 && s.run_count().unwrap() == 0,
    )
    .await;
    assert_eq!(leader_gauge(&state.hub), 1.0);

    stop.send(true).unwrap();
    gate.await.unwrap();
    assert_eq!(leader_gauge(&state.hub), 0.0, "stopped: the work ended");
}

/// A fake GitHub with one merged pull request of `acme/app` (job 11), and a
/// configuration polling it every 200 ms.
fn polled_github() -> (fake_github::Running, Config) {
    let gh = fake_github::start(fake_github::Fake::default());
    gh.fake.merge_pull(
        "acme/app",
        1,
        1001,
        vec![fake_github::job(11, "build", "success")],
    );
    let config = Config {
        github: GithubConfig {
            api_url: format!("http://{}", gh.addr),
            repositories: vec!["acme/app".to_string()],
            poll_interval: Duration::from_millis(200),
            retry_base: Duration::from_millis(10),
            ..Default::default()
        },
        ..Default::default()
    };
    (gh, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_polls_only_while_leading_and_resumes_when_leadership_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (gh, config) = polled_github();
    let state = state(&dir.path().join("p.db"), config, Clock::system());
    let store = state.store.clone();
    let requests = || gh.fake.requests.load(Ordering::SeqCst);

    let (lead, leading) = watch::channel(false);
    let (stop, stopping) = watch::channel(false);
    let gate = run_once_only(&state, Leadership::follow(leading), stopping).unwrap();
    // Several poll intervals: no request while not leading.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(requests(), 0, "no poll while not leading");

    lead.send(true).unwrap();
    until_stored(&store, "the first pull request's run is polled", |s| {
        s.run_count().unwrap() == 1
    })
    .await;

    lead.send(false).unwrap();
    until("the poller stops when leadership is lost", || {
        leader_gauge(&state.hub) == 0.0
    })
    .await;
    let after = requests();
    gh.fake.merge_pull(
        "acme/app",
        2,
        1002,
        vec![fake_github::job(12, "build", "success")],
    );
    // Several poll intervals: not one request once the poller stopped.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(requests(), after, "no request after leadership was lost");
    assert_eq!(
        store.read(|s| s.run_count()).await.unwrap(),
        1,
        "nothing polled after leadership was lost"
    );

    lead.send(true).unwrap();
    until_stored(
        &store,
        "the poller resumes: the second run is polled",
        |s| s.run_count().unwrap() == 2,
    )
    .await;
    assert!(requests() > after);

    stop.send(true).unwrap();
    gate.await.unwrap();
    assert_eq!(leader_gauge(&state.hub), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sqlite_the_replica_always_leads_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir.path().join("a.db"), Config::default(), Clock::system());
    let (stop, stopping) = watch::channel(false);
    let gate = run_once_only(&state, Leadership::always(), stopping).unwrap();
    assert_eq!(
        leader_gauge(&state.hub),
        1.0,
        "leading before run_once_only returns"
    );
    stop.send(true).unwrap();
    gate.await.unwrap();
    assert_eq!(leader_gauge(&state.hub), 0.0);
}

/// A store for work that does not write (an in-memory SQLite database).
fn memory_store() -> StoreHandle {
    let open = || Box::new(ci_slo_exporter::store::Store::open_in_memory().unwrap());
    StoreHandle::start_with(open(), vec![open()], "memory".into()).unwrap()
}

/// One replica of the PostgreSQL test: its `Leader` and its gate, whose work
/// is one task that marks itself running in `running` (shared by the
/// replicas) until told to stop.
struct Replica {
    name: &'static str,
    leader: Option<Arc<Leader>>,
    hub: Arc<MetricsHub>,
    stop: watch::Sender<bool>,
    gate: tokio::task::JoinHandle<()>,
    terms: Arc<AtomicUsize>,
}

/// Who runs the work now, and whether two ever ran it at once.
#[derive(Default)]
struct Running {
    now: Mutex<Vec<&'static str>>,
    overlap: AtomicBool,
}

impl Replica {
    fn start(
        db: &ci_slo_store_pg::testing::TestDatabase,
        name: &'static str,
        running: &Arc<Running>,
    ) -> Replica {
        let mut config = LeaderConfig::new("main", name);
        config.lease = Duration::from_secs(2);
        config.check_interval = Duration::from_millis(100);
        let leader = Arc::new(Leader::start(&db.config(), config));
        let hub = Arc::new(MetricsHub::new(SelfMetrics::new()));
        let (stop, stopping) = watch::channel(false);
        let terms = Arc::new(AtomicUsize::new(0));
        let gate = {
            let (running, terms) = (running.clone(), terms.clone());
            leadership::run(
                Leadership::of(&leader),
                stopping,
                hub.clone(),
                memory_store(),
                move |mut stop, _store| {
                    terms.fetch_add(1, Ordering::SeqCst);
                    let running = running.clone();
                    vec![tokio::spawn(async move {
                        {
                            let mut now = running.now.lock().unwrap();
                            if !now.is_empty() {
                                running.overlap.store(true, Ordering::SeqCst);
                            }
                            now.push(name);
                        }
                        let _ = stop.wait_for(|s| *s).await;
                        running.now.lock().unwrap().retain(|n| *n != name);
                    })]
                },
            )
        };
        Replica {
            name,
            leader: Some(leader),
            hub,
            stop,
            gate,
            terms,
        }
    }

    fn running(&self) -> bool {
        leader_gauge(&self.hub) == 1.0
    }

    /// What `serve` does at a shutdown: stop the work (the gate waits for
    /// it), then drop the `Leader` (its connection closes: the lock is free).
    async fn shut_down(mut self) {
        self.stop.send(true).unwrap();
        (&mut self.gate).await.unwrap();
        assert!(!self.running());
        let leader = self.leader.take().unwrap();
        tokio::task::spawn_blocking(move || drop(leader))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_leaders_never_run_the_work_at_once_and_the_survivor_takes_over() {
    // The synchronous PostgreSQL client runs its own runtime: off this one.
    let db = tokio::task::spawn_blocking(|| {
        let db = TestServer::shared().database("leadership_gate").unwrap();
        ci_slo_store_pg::migrate::migrate(&mut db.connect().unwrap(), &mut |_| {}).unwrap();
        OffRuntime(Some(db))
    })
    .await
    .unwrap();
    let db = db.0.as_ref().unwrap();
    let running = Arc::new(Running::default());
    let a = Replica::start(db, "a", &running);
    let b = Replica::start(db, "b", &running);
    until("one replica runs the work", || a.running() || b.running()).await;
    let (first, second) = if a.running() { (a, b) } else { (b, a) };
    // A few of the contender's tries (100 ms apart): it keeps waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(first.running() && !second.running(), "one leader at a time");
    assert_eq!(*running.now.lock().unwrap(), vec![first.name]);
    let epoch = first.leader.as_ref().unwrap().epoch().unwrap();

    first.shut_down().await;
    until("the survivor takes over", || second.running()).await;
    assert_eq!(*running.now.lock().unwrap(), vec![second.name]);
    assert_eq!(second.terms.load(Ordering::SeqCst), 1);
    assert!(
        second.leader.as_ref().unwrap().epoch().unwrap() > epoch,
        "the survivor leads a newer term"
    );

    // The survivor gives leadership up without a shutdown (its Leader goes,
    // as when its connection fails): its work stops.
    let Replica {
        leader,
        hub,
        stop,
        gate,
        ..
    } = second;
    let leader = leader.unwrap();
    tokio::task::spawn_blocking(move || drop(leader))
        .await
        .unwrap();
    until("the work stops when the Leader is gone", || {
        leader_gauge(&hub) == 0.0
    })
    .await;
    assert!(running.now.lock().unwrap().is_empty());
    assert!(
        !running.overlap.load(Ordering::SeqCst),
        "two replicas ran the work at once"
    );
    stop.send(true).unwrap();
    gate.await.unwrap();
}

/// Drops its value on a thread of its own: a `TestDatabase` drops its
/// database with the synchronous client, which cannot run on a thread of the
/// test's runtime (also when the test panics).
struct OffRuntime<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> Drop for OffRuntime<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            let _ = std::thread::spawn(move || drop(value)).join();
        }
    }
}

/// A replica's store on the PostgreSQL test database: its writer and one
/// reader (opened off the test's runtime: the synchronous client runs one
/// of its own).
fn pg_store(db: &ci_slo_store_pg::testing::TestDatabase) -> StoreHandle {
    let open = || {
        Box::new(ci_slo_store_pg::PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap())
    };
    StoreHandle::start_with(open(), vec![open()], "test".into()).unwrap()
}

/// Rows of the tables a GitHub poller writes (runs, merged changes, workflow
/// runs, logs, sync state, repositories), in all.
async fn written(db: &ci_slo_store_pg::testing::TestDatabase) -> i64 {
    let config = db.config();
    tokio::task::spawn_blocking(move || {
        let mut client = config.connect(postgres::NoTls).unwrap();
        client
            .query_one(
                "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM changes)
                      + (SELECT count(*) FROM github_workflow_runs) + (SELECT count(*) FROM run_logs)
                      + (SELECT count(*) FROM sync_state) + (SELECT count(*) FROM repositories)",
                &[],
            )
            .unwrap()
            .get(0)
    })
    .await
    .unwrap()
}

/// Hold `store`'s writer (inside a transaction, unfenced) until the
/// returned sender is used: the writes submitted meanwhile wait in its queue.
async fn hold_writer(store: &StoreHandle) -> std::sync::mpsc::Sender<()> {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let s = store.clone();
    tokio::spawn(async move {
        s.write(move |_| {
            let _ = started_tx.send(());
            let _ = wait.recv();
            Ok(())
        })
        .await
    });
    tokio::task::spawn_blocking(move || started.recv().unwrap())
        .await
        .unwrap();
    release
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leaders_poller_write_is_refused_once_a_newer_term_began() {
    let (_gh, config) = polled_github();
    // Two replicas' stores on one database, opened (and dropped) off this
    // runtime; the database outlives them.
    let (db, stores) = tokio::task::spawn_blocking(|| {
        let db = TestServer::shared().database("leadership_fenced").unwrap();
        ci_slo_store_pg::migrate::migrate(&mut db.connect().unwrap(), &mut |_| {}).unwrap();
        let stores = (pg_store(&db), pg_store(&db));
        (OffRuntime(Some(db)), OffRuntime(Some(stores)))
    })
    .await
    .unwrap();
    let db = db.0.as_ref().unwrap();
    let (store_a, store_b) = stores.0.clone().unwrap();
    let leader = |name: &str| {
        let mut c = LeaderConfig::new("main", name);
        c.lease = Duration::from_secs(2);
        c.check_interval = Duration::from_millis(100);
        Arc::new(Leader::start(&db.config(), c))
    };

    // A leads; its writer is held, so its poller's first write (of pull
    // request 1's runs) waits in the queue, submitted in A's term.
    let a = leader("a");
    until("A leads", || a.is_leader()).await;
    let release = hold_writer(&store_a).await;
    let state_a = state_on(store_a.clone(), config.clone(), Clock::system());
    let (stop_a, stopping_a) = watch::channel(false);
    let gate_a = run_once_only(&state_a, Leadership::of(&a), stopping_a).unwrap();
    // Queued: the settler's and the pruner's first rounds (at once) and the
    // poller's first write, once it has listed the pull request's runs.
    until("A's poller submitted a write", || store_a.queued() == 3).await;

    // A's term ends (its leadership connection closes), B begins a newer
    // one; then A's writer gets to the poller's write.
    let b = leader("b");
    tokio::task::spawn_blocking(move || drop(a)).await.unwrap();
    until("B leads", || b.is_leader()).await;
    release.send(()).unwrap();
    until("A's work stopped", || leader_gauge(&state_a.hub) == 0.0).await;
    // Queued after the poller's write: once this is answered, that one ran.
    store_a.write(|_| Ok(())).await.unwrap();
    assert_eq!(
        written(db).await,
        0,
        "nothing of the stale term's poller write is committed"
    );
    assert_eq!(store_a.write_errors(), 0, "a fenced write is no failure");
    assert!(!store_a.failing(), "A's /readyz stays ready");

    // B's poller, in B's term, stores the run.
    let state_b = state_on(store_b.clone(), config, Clock::system());
    let (stop_b, stopping_b) = watch::channel(false);
    let gate_b = run_once_only(&state_b, Leadership::of(&b), stopping_b).unwrap();
    until_stored(&store_b, "B's poller stores the run", |s| {
        s.run_count().unwrap() == 1
    })
    .await;
    assert!(written(db).await > 1);
    stop_b.send(true).unwrap();
    gate_b.await.unwrap();
    stop_a.send(true).unwrap();
    gate_a.await.unwrap();
    tokio::task::spawn_blocking(move || drop(b)).await.unwrap();
}

//! Writes of the work that runs once, fenced by their term of leadership
//! (`StoreHandle::fenced` with `Leader::term_fence`), through the exporter's
//! writer on PostgreSQL: a fenced write commits while its term holds and
//! is refused, writing nothing, once a newer term began; a fenced write run
//! again after a conflict checks its fence again; and a new leader's
//! takeover waits for a fenced writer stopped in the middle of its
//! transaction at most about a lease (the server ends the idle
//! transaction): the measured time is printed next to the lease, not
//! asserted against it.

use ci_slo_core::model::Forge;
use ci_slo_store::writer::StoreHandle;
use ci_slo_store::{ErrorKind, Fence, Storage, StoreError, SyncState};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::leader::{Leader, LeaderConfig};
use ci_slo_store_pg::migrate::migrate;
use ci_slo_store_pg::testing::{TestDatabase, TestServer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const NAME: &str = "main";

/// Fast settings for tests: a 2 s lease, tried every 100 ms.
fn config(holder: &str) -> LeaderConfig {
    let mut c = LeaderConfig::new(NAME, holder);
    c.lease = Duration::from_secs(2);
    c.check_interval = Duration::from_millis(100);
    c
}

fn prepared(hint: &str) -> TestDatabase {
    let db = TestServer::shared().database(hint).unwrap();
    migrate(&mut db.connect().unwrap(), &mut |_| {}).unwrap();
    db
}

/// A replica's writer and one reader.
fn replica(db: &TestDatabase) -> StoreHandle {
    let open = || PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    let readers: Vec<Box<dyn Storage>> = vec![Box::new(open())];
    StoreHandle::start_with(Box::new(open()), readers, "test".into()).unwrap()
}

/// The synchronous client runs a runtime of its own: the tests run theirs
/// inside, and open and drop the stores outside it.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !f() {
        assert!(began.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    began.elapsed()
}

fn leading(db: &TestDatabase, me: &str) -> Leader {
    let leader = Leader::start(&db.config(), config(me));
    wait_until("leading", Duration::from_secs(30), || leader.is_leader());
    leader
}

fn cursor(c: &str) -> SyncState {
    SyncState {
        cursor: Some(c.into()),
        ..SyncState::default()
    }
}

/// Write the cursor `c` of scope `scope`.
fn set(
    scope: &'static str,
    c: &'static str,
) -> impl FnMut(&mut dyn Storage) -> Result<(), StoreError> {
    move |s| s.set_sync_state(Forge::Github, scope, "k", &cursor(c))
}

/// The stored cursor of `scope`.
async fn stored(handle: &StoreHandle, scope: &'static str) -> Option<String> {
    handle
        .read(move |s| s.sync_state(Forge::Github, scope, "k"))
        .await
        .unwrap()
        .and_then(|s| s.cursor)
}

#[test]
fn a_fenced_write_commits_while_its_term_holds_and_is_refused_once_a_newer_term_began() {
    let db = prepared("fenced_writes");
    let handle = replica(&db);
    let a = leading(&db, "a");
    let fence = a.term_fence().expect("a leads");
    assert_eq!(
        (fence.name.as_str(), fence.lease),
        (NAME, config("a").lease)
    );
    let stale = handle.fenced(fence.clone());
    block_on(async {
        stale.write(set("s", "while leading")).await.unwrap();
        assert_eq!(stored(&handle, "s").await.as_deref(), Some("while leading"));
    });

    // A goes (its connection closes); B takes a newer term.
    drop(a);
    let b = leading(&db, "b");
    let newer = b.term_fence().unwrap();
    assert!(newer.epoch > fence.epoch, "{newer:?} after {fence:?}");

    block_on(async {
        let ran = Arc::new(AtomicU32::new(0));
        let counted = ran.clone();
        let refused = stale
            .write(move |s| {
                counted.fetch_add(1, Ordering::SeqCst);
                s.set_sync_state(Forge::Github, "s", "k", &cursor("after the term"))
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StoreError::Fenced { name, epoch } if name == NAME && *epoch == fence.epoch),
            "{refused}"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the write did not run");
        assert_eq!(
            stored(&handle, "s").await.as_deref(),
            Some("while leading"),
            "nothing of the stale term's write is committed"
        );
        assert_eq!(handle.write_errors(), 0, "not a database failure");
        assert!(!handle.failing(), "/readyz stays ready");
        // The writer goes on: the new term's fenced writes and unfenced ones commit.
        handle
            .fenced(newer)
            .write(set("s", "new term"))
            .await
            .unwrap();
        handle.write(set("t", "unfenced")).await.unwrap();
        assert_eq!(stored(&handle, "s").await.as_deref(), Some("new term"));
        assert_eq!(stored(&handle, "t").await.as_deref(), Some("unfenced"));
    });
    drop(b);
}

#[test]
fn a_fenced_write_run_again_after_a_conflict_checks_its_fence_again() {
    let db = prepared("fenced_retry");
    let handle = replica(&db);
    let mut admin = db.connect().unwrap();
    admin
        .execute(
            "INSERT INTO leader_terms (name, epoch, holder_pid, holder, heartbeat)
             VALUES ($1, 1, 0, 'test', now())",
            &[&NAME],
        )
        .unwrap();
    let fence = Fence {
        name: NAME.into(),
        epoch: 1,
        lease: Duration::from_secs(2),
    };
    let conflict = || StoreError::Engine {
        kind: ErrorKind::Conflict,
        source: "deadlock detected".into(),
    };
    let admin = Arc::new(std::sync::Mutex::new(admin));
    block_on(async {
        // The term holds: the write conflicts once, runs again, commits.
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = attempts.clone();
        handle
            .fenced(fence.clone())
            .write(move |s| {
                let attempt = counted.fetch_add(1, Ordering::SeqCst) + 1;
                s.set_sync_state(
                    Forge::Github,
                    "r",
                    "k",
                    &cursor(&format!("attempt {attempt}")),
                )?;
                if attempt == 1 {
                    return Err(conflict());
                }
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_eq!(stored(&handle, "r").await.as_deref(), Some("attempt 2"));

        // The term ends while the write's first attempt runs (a newer epoch:
        // not a key update, so it does not wait for the fence's lock): the
        // second attempt finds its fence gone and does not run.
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = attempts.clone();
        let refused = handle
            .fenced(fence.clone())
            .write(move |s| {
                counted.fetch_add(1, Ordering::SeqCst);
                s.set_sync_state(Forge::Github, "r", "k", &cursor("stale"))?;
                admin
                    .lock()
                    .unwrap()
                    .execute(
                        "UPDATE leader_terms SET epoch = epoch + 1 WHERE name = $1",
                        &[&NAME],
                    )
                    .unwrap();
                Err::<(), _>(conflict())
            })
            .await
            .unwrap_err();
        assert!(refused.is_fenced(), "{refused}");
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "not run again");
        assert_eq!(stored(&handle, "r").await.as_deref(), Some("attempt 2"));
        assert_eq!(handle.write_errors(), 0);
        assert!(!handle.failing());
    });
}

#[test]
fn a_new_term_waits_about_a_lease_at_most_for_a_fenced_writer_stopped_mid_transaction() {
    let db = prepared("fenced_stopped");
    let handle = replica(&db);
    let a = leading(&db, "a");
    let fence = a.term_fence().unwrap();
    let lease = a.config().lease;
    // The writer runs a fenced write and then stops inside its transaction
    // (as a stopped process would: the transaction stays open, idle).
    let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stuck = {
        let fenced = handle.fenced(fence.clone());
        rt.spawn(async move {
            fenced
                .write(move |s| {
                    s.set_sync_state(Forge::Github, "x", "k", &cursor("stopped"))?;
                    let _ = entered_tx.send(());
                    let _ = wait.recv();
                    Ok(())
                })
                .await
        })
    };
    entered.recv().unwrap();

    // The term ends (A's leadership connection closes); B contends. Taking
    // the new term deletes the old term's row, which waits for the fenced
    // transaction: until the server ends it, idle for a lease.
    drop(a);
    let b = Leader::start(&db.config(), config("b"));
    let took = wait_until("B takes over", lease * 4 + Duration::from_secs(20), || {
        b.is_leader()
    });
    eprintln!(
        "takeover with a fenced writer stopped mid-transaction: {:.0} ms after the term ended \
         (lease {:.1} s, check every {} ms)",
        took.as_secs_f64() * 1000.0,
        lease.as_secs_f64(),
        config("b").check_interval.as_millis(),
    );
    assert!(b.epoch().unwrap() > fence.epoch);
    // The stopped writer wakes: its transaction is gone, nothing committed.
    release.send(()).unwrap();
    let woke = rt.block_on(stuck).unwrap();
    assert!(woke.is_err(), "the stopped transaction cannot commit");
    let mut check = db.connect().unwrap();
    let rows = check
        .query("SELECT 1 FROM sync_state WHERE scope = 'x'", &[])
        .unwrap();
    assert!(rows.is_empty(), "nothing of the stopped write is committed");
    // The server ended the writer's connection with the transaction: the
    // next write connects again and commits, and /readyz would be 200.
    assert!(handle.failing(), "/readyz would answer 503");
    rt.block_on(handle.write(|s| s.set_sync_state(Forge::Github, "y", "k", &cursor("after"))))
        .unwrap();
    assert!(!handle.failing());
    let rows = check
        .query("SELECT 1 FROM sync_state WHERE scope = 'y'", &[])
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the write after the lost connection is committed"
    );
    drop(rt);
    drop(b);
    drop(handle);
}

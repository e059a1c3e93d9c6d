//! The exporter's writer (group commit: a batch is one transaction, each
//! write a savepoint) on PostgreSQL, with two replicas' writers on one
//! database: a deadlock between their batches rolls back the losing write
//! alone, which runs again after the rest of its batch commits, so no
//! caller sees the conflict.

use ci_slo_core::model::Forge;
use ci_slo_store::writer::StoreHandle;
use ci_slo_store::{Storage, SyncState};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::testing::{TestDatabase, TestServer};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// A replica's writer and one reader. The synchronous client runs a
/// runtime of its own: opened and dropped outside the test's runtime.
fn replica(db: &TestDatabase) -> StoreHandle {
    let open = || PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    let readers: Vec<Box<dyn Storage>> = vec![Box::new(open())];
    StoreHandle::start_with(Box::new(open()), readers, "test".into()).unwrap()
}

fn state(cursor: &str) -> SyncState {
    SyncState {
        cursor: Some(cursor.into()),
        ..SyncState::default()
    }
}

/// Hold `handle`'s writer until `release` is sent, so that the writes
/// queued meanwhile run in one batch.
async fn hold(handle: &StoreHandle) -> std::sync::mpsc::Sender<()> {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let h = handle.clone();
    tokio::spawn(async move {
        h.write(move |_| {
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

#[test]
fn a_deadlock_between_two_replicas_batches_is_retried_and_every_write_commits() {
    let db = TestServer::shared().database("writer_deadlock").unwrap();
    let (x, y) = (replica(&db), replica(&db));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(deadlock(x.clone(), y.clone()));
}

async fn deadlock(x: StoreHandle, y: StoreHandle) {
    for scope in ["a", "b"] {
        x.write(move |s| s.set_sync_state(Forge::Github, scope, "k", &state("0")))
            .await
            .unwrap();
    }
    // Each replica's batch: first one row, then (once both hold their
    // first row) the other: X takes a then b, Y takes b then a.
    let both_hold_one = Arc::new(Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    let mut writes = Vec::new();
    let mut releases = Vec::new();
    for (handle, first, second, name) in [(&x, "a", "b", "x"), (&y, "b", "a", "y")] {
        releases.push(hold(handle).await);
        let (barrier, h) = (both_hold_one.clone(), handle.clone());
        let mut waited = false;
        writes.push(tokio::spawn(async move {
            h.write(move |s| {
                s.set_sync_state(Forge::Github, first, "k", &state(name))?;
                if !std::mem::replace(&mut waited, true) {
                    barrier.wait();
                }
                Ok(())
            })
            .await
        }));
        // Queued in this order: spawned tasks may push in either order, and
        // a batch that took `second` first would never meet the barrier.
        while handle.queued() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (h, attempts) = (handle.clone(), attempts.clone());
        writes.push(tokio::spawn(async move {
            h.write(move |s| {
                attempts.fetch_add(1, Ordering::SeqCst);
                s.set_sync_state(Forge::Github, second, "k", &state(name))
            })
            .await
        }));
        while handle.queued() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for release in releases {
        release.send(()).unwrap();
    }
    for write in writes {
        write
            .await
            .unwrap()
            .expect("no write fails: the conflict is retried");
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "PostgreSQL broke the deadlock by failing one replica's second write once"
    );
    assert_eq!(x.write_errors() + y.write_errors(), 0);
    assert!(!x.failing() && !y.failing(), "/readyz stays 200");
    // Whichever lost, its batch committed its first row, the winner then
    // wrote that row second, and the loser's retry wrote the winner's first
    // row last: a ends with y's cursor, b with x's.
    let a = x
        .read(|s| s.sync_state(Forge::Github, "a", "k"))
        .await
        .unwrap();
    let b = x
        .read(|s| s.sync_state(Forge::Github, "b", "k"))
        .await
        .unwrap();
    let (a, b) = (a.unwrap().cursor.unwrap(), b.unwrap().cursor.unwrap());
    assert_eq!((a.as_str(), b.as_str()), ("y", "x"));
}

//! A store whose connection is lost (its backend terminated, as a restart
//! or a failover of the server does) connects again before its next
//! operation: reads and writes work again, on statements prepared again;
//! the write that met the loss fails and is not run again; while the
//! server refuses connections, operations fail (kind `Unavailable`) without
//! trying more than once per backoff, and work once it accepts them; after
//! the server itself was stopped and started again likewise.

use crate::ingest::{now, run};
use ci_slo_core::config::Config;
use ci_slo_core::model::RunState;
use ci_slo_store::writer::StoreHandle;
use ci_slo_store::{ErrorKind, Policy, Storage};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::reconnect::RECONNECT_BACKOFF;
use ci_slo_store_pg::testing::{TestDatabase, TestServer};
use std::time::{Duration, Instant};

fn open(db: &TestDatabase) -> PgStore {
    PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap()
}

/// Terminate every other backend of `db` (as a server restart does);
/// returns how many.
fn terminate(db: &TestDatabase) -> i64 {
    let mut admin = db.connect().unwrap();
    let n: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    // Wait until they are gone.
    for _ in 0..200 {
        let left: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    n
}

fn runs_in_table(db: &TestDatabase) -> i64 {
    db.connect()
        .unwrap()
        .query_one("SELECT count(*) FROM runs", &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_store_whose_backend_was_terminated_connects_again_and_reads_and_writes() {
    let db = TestServer::shared().database("reconnect").unwrap();
    let policy = Policy::from_config(&Config::default());
    let mut store = open(&db);
    let done = |n: u32| {
        run(
            "o/r",
            "ci",
            n,
            RunState::Success,
            [Some(9), Some(8), Some(1)],
        )
    };
    Storage::ingest_run(&mut store, &done(1), &policy, now()).unwrap();
    assert_eq!(Storage::run_count(&store).unwrap(), 1);
    assert!(!Storage::repositories(&store).unwrap().is_empty());

    // A read after the loss: made again, and run (on statements prepared
    // again on the new connection).
    assert_eq!(terminate(&db), 1);
    let t = Instant::now();
    assert_eq!(Storage::run_count(&store).unwrap(), 1);
    assert!(!Storage::repositories(&store).unwrap().is_empty());
    eprintln!(
        "read after a terminated backend: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(store.reconnects(), 1);

    // A write after the loss: its BEGIN finds the connection lost, and it
    // runs on a new one.
    assert_eq!(terminate(&db), 1);
    let t = Instant::now();
    Storage::ingest_run(&mut store, &done(2), &policy, now()).unwrap();
    eprintln!(
        "write after a terminated backend: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(store.reconnects(), 2);
    assert_eq!(Storage::run_count(&store).unwrap(), 2);

    // A write that loses its connection in the middle fails, with kind
    // Unavailable, and is not run again: nothing of it is kept.
    let e = Storage::in_transaction(&mut store, &mut |s| {
        s.ingest_run(&done(3), &policy, now())?;
        assert_eq!(terminate(&db), 1);
        s.ingest_run(&done(4), &policy, now())?;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Unavailable), "{e}");
    assert_eq!(runs_in_table(&db), 2);
    // The next one works.
    Storage::ingest_run(&mut store, &done(3), &policy, now()).unwrap();
    assert_eq!(store.reconnects(), 3);
    assert_eq!(runs_in_table(&db), 3);
    assert_eq!(Storage::run_count(&store).unwrap(), 3);
}

#[test]
fn the_writer_s_batches_and_consistent_reads_connect_again() {
    let db = TestServer::shared().database("reconnect_writer").unwrap();
    let policy = Policy::from_config(&Config::default());
    let handle = StoreHandle::start_with(
        Box::new(open(&db)),
        vec![Box::new(open(&db))],
        "test".into(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for attempt in 1..=3u32 {
        let (p, r) = (
            policy.clone(),
            run(
                "o/r",
                "ci",
                attempt,
                RunState::Success,
                [Some(9), Some(8), Some(1)],
            ),
        );
        let count = rt.block_on(async {
            handle
                .write(move |s| s.ingest_run(&r, &p, now()).map(drop))
                .await
                .unwrap();
            assert!(!handle.failing());
            handle
                .read(|s| {
                    let mut n = 0;
                    s.read_consistent(&mut |s| {
                        n = s.run_count()?;
                        Ok(())
                    })?;
                    Ok(n)
                })
                .await
                .unwrap()
        });
        assert_eq!(count, i64::from(attempt));
        // The writer's and the reader's connections (outside the runtime:
        // the test's client runs one of its own).
        assert_eq!(terminate(&db), 2);
    }
    assert_eq!(runs_in_table(&db), 3);
    drop(rt);
    drop(handle);
}

#[test]
fn a_store_that_cannot_connect_again_fails_once_per_backoff_and_recovers() {
    let server = TestServer::shared();
    let db = server.database("reconnect_refused").unwrap();
    let mut store = open(&db);
    assert_eq!(Storage::run_count(&store).unwrap(), 0);
    let mut admin = server.admin_config().connect(postgres::NoTls).unwrap();
    let allow = |admin: &mut postgres::Client, yes: bool| {
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {yes}",
                db.name()
            ))
            .unwrap()
    };
    allow(&mut admin, false);
    assert_eq!(terminate_from(&mut admin, db.name()), 1);

    // The read finds the connection lost, and connecting again fails: the
    // read fails with the loss.
    let e = Storage::run_count(&store).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Unavailable), "{e}");
    assert!(e.to_string().contains("57P01"), "{e}");
    // Within the backoff nothing is tried: it fails at once, saying when
    // the next attempt is (only a refusal without an attempt says that).
    let e = Storage::run_count(&store).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Unavailable), "{e}");
    assert!(e.to_string().contains("next attempt in"), "{e}");
    let e = store.write_tx().err().expect("no connection");
    assert!(e.to_string().contains("next attempt in"), "{e}");
    assert_eq!(store.reconnects(), 0);

    // The server accepts connections again: after the backoff, it works.
    allow(&mut admin, true);
    let back = Instant::now();
    let mut tries = 0;
    let count = loop {
        tries += 1;
        match Storage::run_count(&store) {
            Ok(n) => break n,
            Err(e) => {
                assert_eq!(e.kind(), Some(ErrorKind::Unavailable), "{e}");
                assert!(back.elapsed() < Duration::from_secs(20), "{e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(count, 0);
    assert_eq!(store.reconnects(), 1);
    eprintln!(
        "connected again {:.0} ms after the server accepted connections ({tries} tries, backoff {} ms)",
        back.elapsed().as_secs_f64() * 1000.0,
        RECONNECT_BACKOFF.as_millis()
    );
    store.write_tx().unwrap().batch_execute("SELECT 1").unwrap();
}

fn terminate_from(admin: &mut postgres::Client, database: &str) -> i64 {
    let n: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(100));
    n
}

#[test]
fn a_store_whose_server_was_stopped_fails_while_it_is_down_and_works_once_it_is_back() {
    let server = TestServer::start().unwrap();
    let db = server.database("restarted").unwrap();
    let policy = Policy::from_config(&Config::default());
    let mut store = open(&db);
    let done = |n: u32| {
        run(
            "o/r",
            "ci",
            n,
            RunState::Success,
            [Some(9), Some(8), Some(1)],
        )
    };
    Storage::ingest_run(&mut store, &done(1), &policy, now()).unwrap();

    server.pause().unwrap();
    let down = Instant::now();
    // While it is down: writes and reads fail, kind Unavailable.
    let e = Storage::ingest_run(&mut store, &done(2), &policy, now()).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Unavailable), "{e}");
    let e = Storage::run_count(&store).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Unavailable), "{e}");
    std::thread::sleep(RECONNECT_BACKOFF);
    let e = Storage::run_count(&store).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Unavailable), "{e}");
    assert!(e.to_string().contains("cannot connect"), "{e}");

    server.resume().unwrap();
    let up = Instant::now();
    eprintln!(
        "server down for {:.0} ms",
        (up - down).as_secs_f64() * 1000.0
    );
    let mut tries = 0;
    loop {
        tries += 1;
        match Storage::ingest_run(&mut store, &done(2), &policy, now()) {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.kind(), Some(ErrorKind::Unavailable), "{e}");
                assert!(up.elapsed() < Duration::from_secs(20), "{e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    eprintln!(
        "stored {:.0} ms after the server was back ({tries} tries)",
        up.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(Storage::run_count(&store).unwrap(), 2);
    assert_eq!(runs_in_table(&db), 2);
    assert_eq!(store.reconnects(), 1);
    drop(store);
    drop(db);
}

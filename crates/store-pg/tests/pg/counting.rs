//! The first pieces of the storage on PostgreSQL, held to the SQLite
//! store's answers: counters, SLO events counted once (also when two
//! replicas store the same event, or the events of one run, at once), meta.

use ci_slo_core::slo::SloId;
use ci_slo_store::Store;
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::counting::slo_event;
use ci_slo_store_pg::tally;
use ci_slo_store_pg::testing::{TestDatabase, TestServer};
use std::sync::Barrier;

fn open(hint: &str) -> (TestDatabase, PgStore) {
    let db = TestServer::shared().database(hint).unwrap();
    let store = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    (db, store)
}

fn sqlite_counters(store: &Store) -> Vec<(String, String, f64)> {
    store
        .connection()
        .prepare("SELECT family, labels, value FROM metric_counters ORDER BY 1, 2")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn pg_counters(client: &mut postgres::Client) -> Vec<(String, String, f64)> {
    client
        .query(
            "SELECT family, labels, value FROM metric_counters ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[test]
fn a_rejection_is_counted_as_the_sqlite_store_counts_it() {
    let mut sqlite = Store::open_in_memory().unwrap();
    let (_db, mut pg) = open("rejection");
    for reason in ["future_time", "future_time", "negative_duration"] {
        sqlite.count_rejection(reason).unwrap();
        pg.count_rejection(reason).unwrap();
    }
    let expected = sqlite_counters(&sqlite);
    assert_eq!(expected.len(), 2, "{expected:?}");
    assert_eq!(pg_counters(pg.client()), expected);
}

#[test]
fn an_slo_event_from_two_replicas_at_once_is_stored_and_counted_once() {
    let (db, mut store) = open("slo_once");
    store
        .client()
        .batch_execute("INSERT INTO repositories (id, forge, path) VALUES (1, 'github', 'o/r')")
        .unwrap();
    const EVENTS: i64 = 60;
    let barrier = Barrier::new(2);
    let new_counts: Vec<i64> = std::thread::scope(|s| {
        let replicas: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut client = db.connect().unwrap();
                    barrier.wait();
                    let mut new = 0;
                    for i in 0..EVENTS {
                        let mut tx = client.transaction().unwrap();
                        let good = i % 3 != 0;
                        let subject = format!("change:{i}");
                        if slo_event(
                            &mut tx,
                            SloId::FirstAttemptGreen,
                            &subject,
                            1,
                            "o/r",
                            3_600_000 + i,
                            good,
                            true,
                        )
                        .unwrap()
                        {
                            new += 1;
                        }
                        tx.commit().unwrap();
                    }
                    new
                })
            })
            .collect();
        replicas.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(new_counts.iter().sum::<i64>(), EVENTS, "{new_counts:?}");

    let client = store.client();
    let counters = pg_counters(client);
    let value = |result: &str| {
        counters
            .iter()
            .find(|(f, l, _)| f == "ci_slo_events" && l.contains(&format!("\"{result}\"")))
            .map(|c| c.2)
    };
    assert_eq!(value("good"), Some(40.0), "{counters:?}");
    assert_eq!(value("bad"), Some(20.0), "{counters:?}");
    let hourly: Vec<(i64, i64, i64)> = client
        .query(
            "SELECT repository_id, good, total FROM slo_hourly ORDER BY 1",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(hourly, [(0, 40, 60), (1, 40, 60)]);
}

#[test]
fn a_run_s_events_from_two_replicas_at_once_are_one_run_events_row_each_counted_once() {
    let (db, mut store) = open("run_events_once");
    store
        .client()
        .batch_execute("INSERT INTO repositories (id, forge, path) VALUES (1, 'github', 'o/r')")
        .unwrap();
    const RUNS: i64 = 30;
    let barrier = Barrier::new(2);
    let new_counts: Vec<i64> = std::thread::scope(|s| {
        let replicas: Vec<_> = (0..2)
            .map(|replica| {
                let (db, barrier) = (&db, &barrier);
                s.spawn(move || {
                    let mut client = db.connect().unwrap();
                    barrier.wait();
                    let mut new = 0;
                    for i in 0..RUNS {
                        let subject = format!("run:{i}");
                        // The replicas store a run's two events in opposite
                        // orders: the row is created by either.
                        let mut events = [
                            (SloId::QueueTime, i % 2 == 0, 3_600_000 + i),
                            (SloId::RunTime, i % 3 != 0, 7_200_000 + i),
                        ];
                        if replica == 1 {
                            events.reverse();
                        }
                        let mut tx = client.transaction().unwrap();
                        for (slo, good, at) in events {
                            if slo_event(&mut tx, slo, &subject, 1, "o/r", at, good, true).unwrap()
                            {
                                new += 1;
                            }
                        }
                        tx.commit().unwrap();
                    }
                    new
                })
            })
            .collect();
        replicas.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(new_counts.iter().sum::<i64>(), 2 * RUNS, "{new_counts:?}");

    let client = store.client();
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM run_events WHERE queue_good IS NOT NULL AND run_time_good IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, RUNS);
    let stray: i64 = client
        .query_one("SELECT count(*) FROM slo_events", &[])
        .unwrap()
        .get(0);
    assert_eq!(stray, 0);
    let total: f64 = client
        .query_one(
            "SELECT sum(value) FROM metric_counters WHERE family = 'ci_slo_events'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(total, (2 * RUNS) as f64);
    let hourly: Vec<(i64, String, i64, i64)> = client
        .query(
            "SELECT repository_id, slo, good, total FROM slo_hourly ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let (queue_good, run_good) = (
        (0..RUNS).filter(|i| i % 2 == 0).count() as i64,
        (0..RUNS).filter(|i| i % 3 != 0).count() as i64,
    );
    assert_eq!(
        hourly,
        [
            (0, "queue_time".into(), queue_good, RUNS),
            (0, "run_time".into(), run_good, RUNS),
            (1, "queue_time".into(), queue_good, RUNS),
            (1, "run_time".into(), run_good, RUNS),
        ]
    );
}

#[test]
fn a_backdated_event_is_counted_as_backdated_and_a_replay_not_at_all() {
    let (_db, mut store) = open("backdated");
    let client = store.client();
    let mut tx = client.transaction().unwrap();
    assert!(slo_event(&mut tx, SloId::QueueTime, "run:1", 1, "o/r", 1, true, false).unwrap());
    assert!(!slo_event(&mut tx, SloId::QueueTime, "run:1", 1, "o/r", 1, true, false).unwrap());
    tally::ensure(
        &mut tx,
        ci_slo_core::catalog::DATA_QUALITY,
        &[("reason", "x")],
    )
    .unwrap();
    tx.commit().unwrap();
    let counters = pg_counters(client);
    assert_eq!(
        counters,
        [
            (
                "ci_exporter_backdated_events".to_string(),
                "[[\"kind\",\"slo_event\"]]".to_string(),
                1.0
            ),
            (
                "ci_exporter_data_quality_rejections".to_string(),
                "[[\"reason\",\"x\"]]".to_string(),
                0.0
            ),
        ]
    );
}

#[test]
fn meta_keeps_the_first_serving_time_and_the_demo_mark() {
    let (_db, mut store) = open("meta");
    assert_eq!(store.meta("serving_since").unwrap(), None);
    let first = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
        .unwrap()
        .to_utc();
    store.mark_serving(first).unwrap();
    store
        .mark_serving(first + chrono::Duration::hours(1))
        .unwrap();
    assert_eq!(
        store.meta("serving_since").unwrap().as_deref(),
        Some(first.to_rfc3339().as_str())
    );
    assert!(!store.is_demo().unwrap());
    store.mark_demo("seed 1").unwrap();
    assert!(store.is_demo().unwrap());
    assert_eq!(store.run_count().unwrap(), 0);
}

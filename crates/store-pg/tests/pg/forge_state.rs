//! The forges' state on PostgreSQL (webhook deliveries, sync cursors, runs
//! by external id), held to the SQLite store's answers; a delivery recorded
//! by two replicas at once is new for one of them.

use crate::ingest::{now, run};
use ci_slo_core::config::Config;
use ci_slo_core::model::{Forge, RunState};
use ci_slo_store::{Policy, Store};
use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::testing::TestServer;

#[test]
fn the_forges_state_answers_as_in_sqlite_and_a_delivery_is_new_once_across_replicas() {
    use ci_slo_store::SyncState;
    let policy = Policy::from_config(&Config::default());
    let sqlite = {
        let mut s = Store::open_in_memory().unwrap();
        let mut r = run(
            "o/a",
            "ci/test",
            2,
            RunState::Success,
            [Some(3), Some(2), Some(1)],
        );
        r.external_id = Some("job-9".into());
        s.ingest_run(&r, &policy, now()).unwrap();
        s
    };
    let db = TestServer::shared().database("forge_state").unwrap();
    let mut pg = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    let mut r = run(
        "o/a",
        "ci/test",
        2,
        RunState::Success,
        [Some(3), Some(2), Some(1)],
    );
    r.external_id = Some("job-9".into());
    pg.ingest_run(&r, &policy, now()).unwrap();

    let repo = r.repository.clone();
    assert_eq!(
        pg.external_run(&repo, "job-9").unwrap(),
        sqlite.external_run(&repo, "job-9").unwrap()
    );
    assert!(pg.external_run(&repo, "job-9").unwrap().is_some());
    assert_eq!(pg.external_run(&repo, "nope").unwrap(), None);
    assert_eq!(
        pg.has_runs_for_commit(&repo, "abc123").unwrap(),
        sqlite.has_runs_for_commit(&repo, "abc123").unwrap()
    );
    assert!(!pg.has_runs_for_commit(&repo, "zzz").unwrap());

    let state = SyncState {
        cursor: Some("c1".into()),
        etag: Some("\"e\"".into()),
        last_success: Some(now()),
    };
    for (scope, kind) in [("o/a", "pulls"), ("o/a", "runs"), ("g/b", "jobs")] {
        sqlite
            .set_sync_state(Forge::Github, scope, kind, &state)
            .unwrap();
        pg.set_sync_state(Forge::Github, scope, kind, &state)
            .unwrap();
    }
    assert_eq!(
        pg.sync_state(Forge::Github, "o/a", "pulls").unwrap(),
        Some(state.clone())
    );
    assert_eq!(pg.sync_state(Forge::Gitlab, "o/a", "pulls").unwrap(), None);
    assert_eq!(pg.last_syncs().unwrap(), sqlite.last_syncs().unwrap());

    // Two replicas receive the same deliveries at once: each is new once.
    let barrier = std::sync::Barrier::new(2);
    let winners: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut replica =
                        PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
                    barrier.wait();
                    (0..50)
                        .filter(|i| {
                            replica
                                .record_delivery(Forge::Github, &format!("d-{i}"), "push", now())
                                .unwrap()
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(winners.iter().sum::<usize>(), 50, "{winners:?}");
    assert!(pg.delivery_seen(Forge::Github, "d-7").unwrap());
    assert!(!pg.delivery_seen(Forge::Gitlab, "d-7").unwrap());
}

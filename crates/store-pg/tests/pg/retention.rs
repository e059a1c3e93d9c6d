//! Job logs and retention on PostgreSQL, held to the SQLite store's answers.

use crate::ingest::{assert_same, failure, now, run, same_in_both};
use chrono::Duration;
use ci_slo_core::config::Config;
use ci_slo_core::model::{Forge, RunState};
use ci_slo_store::Policy;

#[test]
fn logs_sections_and_pruning_answer_as_in_sqlite() {
    let policy = Policy::from_config(&Config::default());
    let old = {
        let mut r = run(
            "o/a",
            "ci/test",
            0,
            RunState::Failure,
            [Some(9000), Some(8990), Some(8980)],
        );
        r.failures = vec![failure("network", Some("fp-old"))];
        r
    };
    let recent = run(
        "o/a",
        "ci/test",
        1,
        RunState::Success,
        [Some(30), Some(20), Some(10)],
    );
    let open = run(
        "o/b",
        "build",
        0,
        RunState::Running,
        [Some(9000), Some(8990), None],
    );
    // Started before the cut (three days ago), finished after: its queue
    // event goes, its run_time and the run stay (one column of its `run_events` row cleared).
    let long = run(
        "o/c",
        "soak",
        0,
        RunState::Success,
        [Some(4340), Some(4330), Some(4310)],
    );
    let (mut sqlite, mut pg, _db) =
        same_in_both("retention", &policy, false, &[old, recent, open, long]);

    for (id, text) in [(1, "log one"), (2, "log two")] {
        assert!(sqlite.store_log(id, text, false, now()).unwrap());
        assert!(pg.store_log(id, text, false, now()).unwrap());
    }
    assert!(!pg.store_log(1, "again", true, now()).unwrap(), "kept once");
    assert_eq!(pg.log(1).unwrap(), sqlite.log(1).unwrap());
    assert_eq!(pg.log(1).unwrap(), Some(("log one".to_string(), false)));
    assert!(pg.has_log(2).unwrap() && !pg.has_log(3).unwrap());
    let sections = vec![("build".to_string(), 42), ("test".to_string(), 7)];
    sqlite.store_sections(2, &sections).unwrap();
    pg.store_sections(2, &sections).unwrap();
    pg.store_sections(2, &sections).unwrap();
    assert_eq!(pg.sections(2).unwrap(), sqlite.sections(2).unwrap());
    assert_eq!(pg.sections(2).unwrap(), sections);

    assert!(
        sqlite
            .record_delivery(Forge::Github, "d1", "push", now() - Duration::days(40))
            .unwrap()
    );
    assert!(
        pg.record_delivery(Forge::Github, "d1", "push", now() - Duration::days(40))
            .unwrap()
    );
    let cut = now() - Duration::days(3);
    assert_eq!(
        pg.prune_deliveries(cut).unwrap(),
        sqlite.prune_deliveries(cut).unwrap()
    );
    let a = sqlite.prune(cut, cut).unwrap();
    let b = pg.prune(cut, cut).unwrap();
    assert_eq!(b, a);
    assert_eq!(b.runs, 1, "{b:?}");
    assert!(b.events > 0, "{b:?}");
    assert_same(&sqlite, &mut pg);
    let cleared: Vec<String> = pg
        .client()
        .query(
            "SELECT run_id || '|' || (queue_at IS NULL) || '|' || (run_time_at IS NULL) FROM run_events
             ORDER BY run_id",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(cleared, ["2|false|false", "4|true|false"], "{cleared:?}");
    // Pruning again finds nothing more.
    assert_eq!(
        pg.prune(cut, cut).unwrap(),
        ci_slo_store::PruneStats::default()
    );
}

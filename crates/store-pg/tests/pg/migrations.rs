//! Migrations on PostgreSQL: versioned, forward-only, once per database even
//! with replicas starting together, refusing a newer database; and the
//! schema they create is SQLite's (same tables, columns, indexes; triggers
//! doing the same work).

use ci_slo_store::Store;
use ci_slo_store_pg::migrate::{migrate, migrate_to, schema_version};
use ci_slo_store_pg::schema::MIGRATIONS;
use ci_slo_store_pg::testing::TestServer;
use ci_slo_store_pg::{PgStore, PgStoreError};
use std::collections::BTreeSet;

fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

#[test]
fn a_new_database_is_migrated_to_the_latest_version_and_again_is_a_no_op() {
    let db = TestServer::shared().database("twice").unwrap();
    let mut client = db.connect().unwrap();
    assert_eq!(schema_version(&mut client).unwrap(), 0);
    let mut steps = Vec::new();
    assert_eq!(migrate(&mut client, &mut |m| steps.push(m)).unwrap(), 0);
    assert!(steps.is_empty(), "a new database reports no progress");
    assert_eq!(schema_version(&mut client).unwrap(), latest());
    client
        .batch_execute("INSERT INTO meta (key, value) VALUES ('kept', 'yes')")
        .unwrap();
    // Opening again through the store: nothing runs, nothing is lost.
    let mut store = PgStore::open_config(&db.config(), &"test", &mut |m| steps.push(m)).unwrap();
    assert!(steps.is_empty());
    assert_eq!(store.schema_version().unwrap(), latest());
    let kept: String = store
        .client()
        .query_one("SELECT value FROM meta WHERE key = 'kept'", &[])
        .unwrap()
        .get(0);
    assert_eq!(kept, "yes");
}

#[test]
fn replicas_starting_at_once_migrate_once() {
    let db = TestServer::shared().database("concurrent").unwrap();
    let befores: Vec<i64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut client = db.connect().unwrap();
                    migrate(&mut client, &mut |_| {}).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Exactly one found the database empty; the others waited and found it done.
    assert_eq!(
        befores.iter().filter(|&&v| v == 0).count(),
        1,
        "{befores:?}"
    );
    assert_eq!(
        befores.iter().filter(|&&v| v == latest()).count(),
        3,
        "{befores:?}"
    );
    assert_eq!(
        schema_version(&mut db.connect().unwrap()).unwrap(),
        latest()
    );
}

#[test]
fn a_database_newer_than_the_binary_is_refused() {
    let db = TestServer::shared().database("too_new").unwrap();
    let mut client = db.connect().unwrap();
    migrate(&mut client, &mut |_| {}).unwrap();
    client
        .execute("UPDATE schema_version SET version = $1", &[&(latest() + 1)])
        .unwrap();
    let err = migrate(&mut client, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, PgStoreError::TooNew { found, known, .. } if found == latest() + 1 && known == latest()),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(db.name()) && text.contains("upgrade the exporter"),
        "{text}"
    );
    // Refused without touching it.
    assert_eq!(schema_version(&mut client).unwrap(), latest() + 1);
}

#[test]
fn a_later_migration_reports_progress_and_a_failing_one_leaves_nothing() {
    let db = TestServer::shared().database("later").unwrap();
    let mut client = db.connect().unwrap();
    migrate(&mut client, &mut |_| {}).unwrap();
    let next: Vec<&str> = MIGRATIONS
        .iter()
        .copied()
        .chain(["CREATE TABLE added_later (x BIGINT)"])
        .collect();
    let mut steps = Vec::new();
    assert_eq!(
        migrate_to(&mut client, &next, &mut |m| steps.push(m)).unwrap(),
        latest()
    );
    assert_eq!(steps.len(), 1);
    assert_eq!(
        (steps[0].from, steps[0].to, steps[0].latest),
        (latest(), latest() + 1, latest() + 1)
    );
    assert_eq!(schema_version(&mut client).unwrap(), latest() + 1);

    // All pending migrations run in one transaction: a failure keeps none.
    let fresh = TestServer::shared().database("failing").unwrap();
    let mut client = fresh.connect().unwrap();
    let failing = [MIGRATIONS[0], "CREATE TABLE half (x BIGINT); SELECT 1/0"];
    assert!(migrate_to(&mut client, &failing, &mut |_| {}).is_err());
    assert_eq!(schema_version(&mut client).unwrap(), 0);
    let runs: bool = client
        .query_one("SELECT to_regclass('runs') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!runs, "migration 1 was rolled back with the failing one");
}

/// (table or view, its columns in order) of every table and view, generated
/// columns too (`runs.url`: `table_xinfo`, as `table_info` leaves them out).
fn sqlite_shape(store: &Store) -> BTreeSet<(String, Vec<String>)> {
    let conn = store.connection();
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')
             AND name NOT LIKE 'sqlite_%'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    names
        .into_iter()
        .map(|t| {
            let cols: Vec<String> = conn
                .prepare(&format!(
                    "SELECT name FROM pragma_table_xinfo('{t}') ORDER BY cid"
                ))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            (t, cols)
        })
        .collect()
}

fn pg_shape(client: &mut postgres::Client) -> BTreeSet<(String, Vec<String>)> {
    client
        .query(
            "SELECT c.table_name::text, array_agg(c.column_name::text ORDER BY c.ordinal_position)
             FROM information_schema.columns c
             WHERE c.table_schema = 'public' GROUP BY 1",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The columns in which SQLite's migrations 14 and 15 keep a run's id,
/// content hash, trigger, state and source in smaller forms (read back by
/// virtual columns with PostgreSQL's names), which PostgreSQL does not
/// follow yet: left out of SQLite's `runs`, whose columns are then compared
/// by name (the virtual ones come last on SQLite).
const SQLITE_ONLY_RUN_COLUMNS: [&str; 7] = [
    "stored_external_id",
    "content_digest",
    "external_key",
    "id_form",
    "trigger_code",
    "state_code",
    "source_code",
];

fn runs_by_name(shape: BTreeSet<(String, Vec<String>)>) -> BTreeSet<(String, Vec<String>)> {
    shape
        .into_iter()
        .map(|(t, mut cols)| {
            if t == "runs" {
                cols.retain(|c| !SQLITE_ONLY_RUN_COLUMNS.contains(&c.as_str()));
                cols.sort();
            }
            (t, cols)
        })
        .collect()
}

#[test]
fn the_schema_is_sqlite_s_latest_with_the_same_tables_columns_and_indexes() {
    let sqlite = Store::open_in_memory().unwrap();
    let db = TestServer::shared().database("shape").unwrap();
    let mut client = db.connect().unwrap();
    migrate(&mut client, &mut |_| {}).unwrap();

    let mut pg = pg_shape(&mut client);
    // PostgreSQL's own tables: leadership, the version, a run's results
    // as one row of arrays (migration 4: its `results` is a view of it with
    // the columns of SQLite's `results` table, compared below), and the
    // marks of runs whose per-test counters are not folded yet (6).
    let own: BTreeSet<String> = [
        "leader_terms",
        "schema_version",
        "run_results",
        "unfolded_results",
    ]
    .map(String::from)
    .into();
    pg.retain(|(t, _)| !own.contains(t));
    let pg = runs_by_name(pg);
    let lite = runs_by_name(sqlite_shape(&sqlite));
    assert_eq!(
        pg.symmetric_difference(&lite).collect::<Vec<_>>(),
        Vec::<&(String, Vec<String>)>::new(),
        "tables or columns differ"
    );

    // Where SQLite's `results` is a table, PostgreSQL's is a view of
    // `run_results` (smaller on disk: arrays of INTEGER test ids and
    // SMALLINT outcomes), giving every reader the types the table had.
    let results: Vec<(String, String, String)> = client
        .query(
            "SELECT c.column_name::text, c.data_type::text, t.table_type::text
             FROM information_schema.columns c
             JOIN information_schema.tables t USING (table_schema, table_name)
             WHERE c.table_schema = 'public' AND c.table_name = 'results' ORDER BY c.ordinal_position",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let bigint = "bigint";
    let expected: Vec<(String, String, String)> = [
        ("run_id", bigint),
        ("test_id", bigint),
        ("outcome", bigint),
        ("duration_seconds", "double precision"),
        ("retries", bigint),
        ("retry_reasons", "text"),
        ("message", "text"),
    ]
    .map(|(c, t)| (c.to_string(), t.to_string(), "VIEW".to_string()))
    .into();
    assert_eq!(results, expected);

    let lite_indexes: BTreeSet<String> = sqlite
        .connection()
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let pg_indexes: BTreeSet<String> = client
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&String> = lite_indexes.difference(&pg_indexes).collect();
    assert!(
        missing.is_empty(),
        "indexes missing on PostgreSQL: {missing:?}"
    );
}

/// The same statements on both: the triggers must leave the same rows.
const WORKLOAD: &str = "
INSERT INTO repositories (id, forge, path) VALUES (1, 'github', 'o/a'), (2, 'gitlab', 'g/b');
INSERT INTO runs (id, repository_id, context, commit_sha, attempt, trigger, state, queued_at, source,
                  content_hash, created_at, updated_at)
    VALUES (10, 1, 'ci/test', 'abc', 1, 'push', 'success', 7200000, 'api', 'h', 7300000, 7300000),
           (11, 2, 'build', 'def', 1, 'merge_request', 'failed', NULL, 'api', 'h', 3600500, 3600500);
INSERT INTO failures (run_id, class, category, evidence, context) VALUES (10, 'c', 'infra', 'e', '[]'),
                                                                         (11, 'c', 'test', 'e', '[]');
UPDATE runs SET queued_at = 9000000 WHERE id = 10;
INSERT INTO slo_events (slo, subject, repository_id, at, good) VALUES
    ('first_attempt_green', 'change:1', 1, 3600001, 1),
    ('first_attempt_green', 'change:2', 1, 3600002, 0),
    ('first_attempt_green', 'change:3', 2, 3700000, 1),
    ('queue_time', 'run:10', 1, 7300000, 1);
DELETE FROM slo_events WHERE subject = 'change:2';
DELETE FROM slo_events WHERE subject = 'run:10';
INSERT INTO test_events (run_id, repository_id, at, good, total) VALUES (10, 1, 3600000, 5, 6), (11, 2, 3600000, 1, 1);
UPDATE test_events SET good = 6 WHERE run_id = 10;
DELETE FROM test_events WHERE run_id = 11;
INSERT INTO test_results (run_id, name, outcome, duration_seconds, retries, retry_reasons, message)
    VALUES (10, 't1', 'failed', 1.5, 0, '[]', 'boom');
UPDATE runs SET external_id = 'cockpit:https://logs.example/10', url_in_id = 1 WHERE id = 10;
UPDATE runs SET stored_url = 'https://ci.example/11' WHERE id = 11;
INSERT INTO run_events (run_id, repository_id, queue_at, queue_good) VALUES (10, 1, 7300000, 1), (11, 2, 3600500, 0);
UPDATE run_events SET run_time_at = 7400000, run_time_good = 0 WHERE run_id = 10;
UPDATE run_events SET completed_at = 10900000, completed_good = 1 WHERE run_id = 10;
UPDATE run_events SET queue_at = NULL, queue_good = NULL WHERE run_id = 10;
UPDATE run_events SET run_time_good = 1 WHERE run_id = 10;
UPDATE run_events SET repository_id = 2 WHERE run_id = 11;
DELETE FROM run_events WHERE run_id = 11;
INSERT INTO run_events (run_id, repository_id, completed_at, completed_good) VALUES (12, 2, 3700000, 0);
";

const CHECKS: &[&str] = &[
    "SELECT repository_id || ',' || hour || ',' || slo || ',' || good || ',' || total FROM slo_hourly ORDER BY 1",
    "SELECT run_id || ',' || coalesce(at, -1) || ',' || repository_id || ',' || run_context FROM failures ORDER BY 1",
    "SELECT run_id || ',' || id || ',' || name || ',' || outcome || ',' || retry_reasons || ',' || message FROM test_results",
    "SELECT repository_id || ',' || context || ',' || name FROM tests",
    "SELECT id || ',' || coalesce(url, '-') FROM runs ORDER BY id",
    "SELECT run_id || ',' || coalesce(queue_at, -1) || ',' || coalesce(run_time_good, -1) || ',' || coalesce(completed_at, -1)
     FROM run_events ORDER BY run_id",
];

#[test]
fn the_triggers_do_what_sqlite_s_do() {
    let sqlite = Store::open_in_memory().unwrap();
    // SQLite writes a run's id, hash, trigger, state and source in its own
    // columns (migrations 14 and 15; texts it has no code for as they are).
    let lite_workload = WORKLOAD
        .replace("content_hash", "content_digest")
        .replace(
            "attempt, trigger, state, queued_at, source,",
            "attempt, trigger_code, state_code, queued_at, source_code,",
        )
        .replace(
            "SET external_id = 'cockpit:https://logs.example/10'",
            "SET stored_external_id = 'cockpit:https://logs.example/10', \
             external_key = run_external_key('cockpit:https://logs.example/10')",
        );
    assert_ne!(lite_workload, WORKLOAD);
    sqlite.connection().execute_batch(&lite_workload).unwrap();
    let db = TestServer::shared().database("triggers").unwrap();
    let mut client = db.connect().unwrap();
    migrate(&mut client, &mut |_| {}).unwrap();
    client.batch_execute(WORKLOAD).unwrap();
    for check in CHECKS {
        let lite: Vec<String> = sqlite
            .connection()
            .prepare(check)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let pg: Vec<String> = client
            .query(*check, &[])
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!lite.is_empty(), "{check} found nothing");
        assert_eq!(pg, lite, "{check}");
    }
}

/// What a database held before SQLite's migrations 12 and 13 (PostgreSQL's
/// 2 and 3): runs with their urls, and SLO events of runs (and of others).
const BEFORE_URLS_AND_RUN_EVENTS: &str = "
INSERT INTO repositories (id, forge, path) VALUES (1, 'github', 'o/a'), (2, 'gitlab', 'g/b');
INSERT INTO runs (id, repository_id, external_id, context, commit_sha, attempt, trigger, state, source,
                  content_hash, created_at, updated_at, url)
    VALUES (1, 1, 'cockpit:https://logs.example/1', 'c', 'a', 1, 'push', 'success', 'import', 'h', 1, 1,
            'https://logs.example/1'),
           (2, 1, 'gh:2', 'c', 'b', 1, 'push', 'success', 'api', 'h', 1, 1, 'https://ci.example/2'),
           (3, 2, NULL, 'c', 'c', 1, 'push', 'success', 'api', 'h', 1, 1, 'https://ci.example/3'),
           (4, 2, 'cockpit:https://logs.example/4', 'c', 'd', 1, 'push', 'success', 'import', 'h', 1, 1, NULL);
INSERT INTO slo_events (slo, subject, repository_id, at, good) VALUES
    ('queue_time', 'run:1', 1, 3600000, 1),
    ('run_time', 'run:1', 1, 3700000, 0),
    ('runs_completed', 'run:2', 1, 7300000, 1),
    ('queue_time', 'run:3', 2, 3600500, 0),
    ('run_time', 'run:3', 2, 7200000, 1),
    ('runs_completed', 'run:3', 2, 7200000, 1),
    ('queue_time', 'run:x1', 2, 3600000, 1),
    ('first_attempt_green', 'change:1', 1, 3600001, 1);
";

const MOVED: &[&str] = &[
    "SELECT id || ',' || coalesce(external_id, '-') || ',' || coalesce(stored_url, '-') || ',' || url_in_id
        || ',' || coalesce(url, '-') FROM runs ORDER BY id",
    "SELECT run_id || ',' || repository_id || ',' || coalesce(queue_at, -1) || ',' || coalesce(queue_good, -1)
        || ',' || coalesce(run_time_at, -1) || ',' || coalesce(run_time_good, -1) || ','
        || coalesce(completed_at, -1) || ',' || coalesce(completed_good, -1) FROM run_events ORDER BY run_id",
    "SELECT slo || ',' || subject FROM slo_events ORDER BY 1",
    "SELECT repository_id || ',' || hour || ',' || slo || ',' || good || ',' || total FROM slo_hourly ORDER BY 1",
];

#[test]
fn migrations_2_and_3_move_stored_urls_and_run_events_as_sqlite_s_12_and_13_do() {
    // SQLite: a file at version 11, filled, then opened (migrated) by the store.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v11.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for sql in &ci_slo_store::schema::MIGRATIONS[..11] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 11).unwrap();
        tx.execute_batch(BEFORE_URLS_AND_RUN_EVENTS).unwrap();
        tx.commit().unwrap();
    }
    let sqlite = Store::open(&path).unwrap();

    let db = TestServer::shared().database("moved").unwrap();
    let mut client = db.connect().unwrap();
    migrate_to(&mut client, &MIGRATIONS[..1], &mut |_| {}).unwrap();
    client.batch_execute(BEFORE_URLS_AND_RUN_EVENTS).unwrap();
    let rollup = |client: &mut postgres::Client| -> Vec<String> {
        client
            .query(MOVED[3], &[])
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect()
    };
    let hourly_before = rollup(&mut client);
    let mut steps = Vec::new();
    assert_eq!(migrate(&mut client, &mut |m| steps.push(m)).unwrap(), 1);
    assert_eq!(steps.len(), MIGRATIONS.len() - 1);
    assert_eq!(
        rollup(&mut client),
        hourly_before,
        "the rollup is unchanged"
    );

    for check in MOVED {
        let lite: Vec<String> = sqlite
            .connection()
            .prepare(check)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let pg: Vec<String> = client
            .query(*check, &[])
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(pg, lite, "{check}");
    }
    let runs: Vec<String> = client
        .query(MOVED[0], &[])
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        runs,
        [
            "1,cockpit:https://logs.example/1,-,1,https://logs.example/1",
            "2,gh:2,https://ci.example/2,0,https://ci.example/2",
            "3,-,https://ci.example/3,0,https://ci.example/3",
            "4,cockpit:https://logs.example/4,-,0,-",
        ]
    );
    let left: Vec<String> = client
        .query(MOVED[2], &[])
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["first_attempt_green,change:1", "queue_time,run:x1"]);
    // The moved events keep their triggers' work: a prune-like clear of
    // one takes it off the rollup.
    client
        .batch_execute(
            "UPDATE run_events SET run_time_at = NULL, run_time_good = NULL WHERE run_id = 1",
        )
        .unwrap();
    assert_ne!(rollup(&mut client), hourly_before);
}

/// What a database held before migration 4: results of every shape
/// (durations or none, retries and their reasons, messages; a run with
/// only defaults), stored in no particular order.
const BEFORE_RUN_RESULTS: &str = r#"
INSERT INTO repositories (id, forge, path) VALUES (1, 'github', 'o/a');
INSERT INTO runs (id, repository_id, context, commit_sha, attempt, trigger, state, source, content_hash,
                  created_at, updated_at)
    VALUES (1, 1, 'c', 'a', 1, 'push', 'success', 'api', 'h', 1, 1),
           (2, 1, 'c', 'b', 1, 'push', 'failure', 'api', 'h', 2, 2),
           (3, 1, 'c', 'c', 1, 'push', 'success', 'api', 'h', 3, 3);
INSERT INTO tests (repository_id, context, name) VALUES (1, 'c', 't1'), (1, 'c', 't2'), (1, 'c', 't3');
INSERT INTO results (run_id, test_id, outcome, duration_seconds, retries, retry_reasons, message) VALUES
    (1, 3, 0, 0.1, 0, NULL, NULL), (1, 1, 0, 2.5, 0, NULL, NULL), (1, 2, 3, NULL, 0, NULL, NULL),
    (2, 2, 1, 1.25, 2, '["timeout","exit 137"]', 'boom'), (2, 1, 2, NULL, 0, NULL, 'crash'),
    (3, 1, 0, NULL, 0, NULL, NULL);
INSERT INTO commits (repository_id, sha) VALUES (1, 'a'), (1, 'b');
INSERT INTO test_commits (test_id, commit_id, flags, failures) VALUES (1, 1, 1, 0), (2, 1, 11, 3), (1, 2, 2, 1);
INSERT INTO test_days (test_id, day, runs, passes, failures, flips, commits, flaky_commits, flaky_failures)
    VALUES (1, 20500, 3, 1, 2, 1, 2, 1, 1), (2, 20501, 1, 0, 1, 0, 1, 0, 0);
"#;

/// Every result as the views give them, in (run, test) order.
const RESULT_ROWS: &[&str] = &[
    "SELECT run_id || ',' || test_id || ',' || outcome || ',' || coalesce(duration_seconds::text, '-') || ','
        || retries || ',' || coalesce(retry_reasons, '-') || ',' || coalesce(message, '-')
     FROM results ORDER BY run_id, test_id",
    "SELECT run_id || ',' || id || ',' || name || ',' || outcome || ',' || coalesce(duration_seconds::text, '-')
        || ',' || retries || ',' || retry_reasons || ',' || coalesce(message, '-')
     FROM test_results ORDER BY run_id, id",
    "SELECT test_id || ',' || commit_id || ',' || flags || ',' || failures FROM test_commits ORDER BY 1",
    "SELECT test_id || ',' || day || ',' || runs || ',' || passes || ',' || failures || ',' || flips || ','
        || commits || ',' || flaky_commits || ',' || flaky_failures FROM test_days ORDER BY 1",
];

fn rows(client: &mut postgres::Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn migration_4_moves_every_stored_result_into_one_row_per_run() {
    let db = TestServer::shared().database("run_results").unwrap();
    let mut client = db.connect().unwrap();
    migrate_to(&mut client, &MIGRATIONS[..3], &mut |_| {}).unwrap();
    client.batch_execute(BEFORE_RUN_RESULTS).unwrap();
    let before: Vec<Vec<String>> = RESULT_ROWS.iter().map(|q| rows(&mut client, q)).collect();
    assert_eq!(before[0].len(), 6);
    assert_eq!(migrate(&mut client, &mut |_| {}).unwrap(), 3);

    let after: Vec<Vec<String>> = RESULT_ROWS.iter().map(|q| rows(&mut client, q)).collect();
    assert_eq!(after, before, "every result kept, as it was");
    assert_eq!((before[2].len(), before[3].len()), (3, 2));
    let types = rows(
        &mut client,
        "SELECT string_agg(data_type, ',' ORDER BY ordinal_position) FROM information_schema.columns
         WHERE table_name = 'test_commits'",
    );
    assert_eq!(types, ["integer,integer,smallint,integer"]);
    let types = rows(
        &mut client,
        "SELECT string_agg(data_type, ',' ORDER BY ordinal_position) FROM information_schema.columns
         WHERE table_name = 'test_days'",
    );
    assert_eq!(
        types,
        ["integer,bigint,integer,integer,integer,integer,integer,integer,integer"]
    );
    // One row per run, its tests in id order, an array of defaults NULL.
    let stored = rows(
        &mut client,
        "SELECT run_id || ':' || test_ids::text || ':' || outcomes::text || ':'
            || coalesce(durations::text, 'NULL') || ':' || coalesce(retries::text, 'NULL') || ':'
            || coalesce(retry_reasons::text, 'NULL') || ':' || coalesce(messages::text, 'NULL')
         FROM run_results ORDER BY run_id",
    );
    assert_eq!(
        stored,
        [
            "1:{1,2,3}:{0,3,0}:{2.5,NULL,0.1}:NULL:NULL:NULL",
            r#"2:{1,2}:{2,1}:{NULL,1.25}:{0,2}:{NULL,"[\"timeout\",\"exit 137\"]"}:{crash,boom}"#,
            "3:{1}:{0}:NULL:NULL:NULL:NULL",
        ]
    );

    // Written through the view after: in its place; a second result of a
    // test in a run is refused, as the table's primary key refused it.
    client
        .batch_execute(
            "INSERT INTO test_results (run_id, name, outcome, duration_seconds, retries, retry_reasons, message)
                 VALUES (3, 't0', 'failed', 4.0, 1, '[\"flaky\"]', 'late')",
        )
        .unwrap();
    assert_eq!(
        rows(
            &mut client,
            &RESULT_ROWS[1].replace("ORDER BY", "WHERE run_id = 3 ORDER BY")
        ),
        [
            "3,1,t1,passed,-,0,[],-",
            r#"3,4,t0,failed,4,1,["flaky"],late"#
        ]
    );
    let err = client
        .batch_execute(
            "INSERT INTO test_results (run_id, name, outcome) VALUES (3, 't1', 'failed')",
        )
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
        "{err}"
    );
    // A run's results go with it.
    client
        .batch_execute("DELETE FROM runs WHERE id = 2")
        .unwrap();
    assert_eq!(
        rows(
            &mut client,
            "SELECT run_id::text FROM run_results ORDER BY 1"
        ),
        ["1", "3"]
    );
}

#[test]
fn a_test_id_past_integer_is_an_error_never_a_wrapped_id() {
    let db = TestServer::shared().database("test_id_range").unwrap();
    let mut store = PgStore::open_config(&db.config(), &"test", &mut |_| {}).unwrap();
    let policy = ci_slo_store::Policy::from_config(&ci_slo_core::config::Config::default());
    let run = |n: u32, tests: &[&str]| ci_slo_core::model::NewRun {
        external_id: Some(format!("job-{n}")),
        tests: tests
            .iter()
            .map(|t| crate::ingest::test(t, ci_slo_core::model::TestOutcome::Passed, 0))
            .collect(),
        ..crate::ingest::run(
            "o/a",
            "ci",
            1,
            ci_slo_core::model::RunState::Success,
            [Some(3), Some(2), Some(1)],
        )
    };
    store
        .ingest_run(&run(1, &["first"]), &policy, crate::ingest::now())
        .unwrap();
    // New tests' ids stop at 2^31 - 1: the last one is made, the next is refused.
    store
        .client()
        .batch_execute("ALTER TABLE tests ALTER COLUMN id RESTART WITH 2147483647")
        .unwrap();
    let err = store
        .ingest_run(&run(2, &["last", "past"]), &policy, crate::ingest::now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("maximum value"), "{err}");
    // A test row given an id past INTEGER by hand: its results are refused.
    store
        .client()
        .batch_execute(
            "INSERT INTO tests (id, repository_id, context, name)
                 SELECT 2147483648, repository_id, context, 'huge' FROM tests WHERE name = 'first'",
        )
        .unwrap();
    let err = store
        .ingest_run(&run(3, &["huge"]), &policy, crate::ingest::now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
    // Neither stored anything: the first run's result only.
    let stored: i64 = store
        .client()
        .query_one("SELECT count(*) FROM results", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
}

//! Versioned migrations. Each entry runs once, in order, inside a transaction;
//! `PRAGMA user_version` records how far a database has come. Never edit a
//! released migration: add a new one.
//!
//! Public so that upgrade tests (and tools) can build a database as an
//! earlier version left it: apply the first N entries and set
//! `PRAGMA user_version = N`.

pub const MIGRATIONS: &[&str] = &[
    // 1: the domain model of docs/design.md §2 and the persisted metric state.
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE repositories (
    id    INTEGER PRIMARY KEY,
    forge TEXT NOT NULL,
    path  TEXT NOT NULL,
    UNIQUE (forge, path)
);

-- A PR or MR. `outcome` is decided once, `merge_settle` after the merge and
-- the last run of its head commit, and never changes afterwards.
CREATE TABLE changes (
    id            INTEGER PRIMARY KEY,
    repository_id INTEGER NOT NULL REFERENCES repositories(id),
    number        INTEGER NOT NULL,
    head_sha      TEXT,
    merged_at     INTEGER,
    last_activity INTEGER NOT NULL,
    outcome       TEXT,
    retries       INTEGER,
    missing       TEXT,
    decided_at    INTEGER,
    UNIQUE (repository_id, number)
);
CREATE INDEX changes_undecided ON changes (last_activity)
    WHERE decided_at IS NULL AND merged_at IS NOT NULL;

-- One attempt of one context on one commit. Times are Unix milliseconds.
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    repository_id INTEGER NOT NULL REFERENCES repositories(id),
    external_id   TEXT,
    context       TEXT NOT NULL,
    commit_sha    TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    trigger       TEXT NOT NULL,
    state         TEXT NOT NULL,
    queued_at     INTEGER,
    started_at    INTEGER,
    finished_at   INTEGER,
    url           TEXT,
    log_url       TEXT,
    change_id     INTEGER REFERENCES changes(id),
    source        TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    -- set once the run's queue time / final state went into the counters
    queue_counted INTEGER NOT NULL DEFAULT 0,
    final_counted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX runs_identity ON runs (repository_id, context, commit_sha, attempt);
CREATE UNIQUE INDEX runs_external ON runs (repository_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX runs_commit ON runs (repository_id, commit_sha);
CREATE INDEX runs_change ON runs (change_id) WHERE change_id IS NOT NULL;
CREATE INDEX runs_finished ON runs (finished_at);
CREATE INDEX runs_open ON runs (trigger, queued_at) WHERE final_counted = 0;

CREATE TABLE test_results (
    id               INTEGER PRIMARY KEY,
    run_id           INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    duration_seconds REAL,
    retries          INTEGER NOT NULL,
    retry_reasons    TEXT NOT NULL,
    message          TEXT,
    UNIQUE (run_id, name)
);

CREATE TABLE reports (
    id      INTEGER PRIMARY KEY,
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    format  TEXT NOT NULL,
    name    TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX reports_run ON reports (run_id);

CREATE TABLE fingerprints (
    id          INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    normalized  TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    occurrences INTEGER NOT NULL
);

CREATE TABLE failures (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    test_name      TEXT,
    class          TEXT NOT NULL,
    category       TEXT NOT NULL,
    line           INTEGER,
    evidence       TEXT NOT NULL,
    context        TEXT NOT NULL,
    fingerprint_id INTEGER REFERENCES fingerprints(id),
    is_new         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX failures_run ON failures (run_id);

CREATE TABLE dependency_snapshots (
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    package TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (run_id, package)
);

-- One row per SLO event; the primary key makes counting exactly-once.
-- `at` is the event time (Unix ms), used by the windowed gauges.
CREATE TABLE slo_events (
    slo           TEXT NOT NULL,
    subject       TEXT NOT NULL,
    repository_id INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    good          INTEGER NOT NULL,
    PRIMARY KEY (slo, subject)
) WITHOUT ROWID;
CREATE INDEX slo_events_at ON slo_events (at, slo, good);

-- Exported counters and histograms. Only ever incremented; restored at start.
CREATE TABLE metric_counters (
    family TEXT NOT NULL,
    labels TEXT NOT NULL,
    value  REAL NOT NULL,
    PRIMARY KEY (family, labels)
) WITHOUT ROWID;

CREATE TABLE metric_histograms (
    family TEXT NOT NULL,
    labels TEXT NOT NULL,
    sum    REAL NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (family, labels)
) WITHOUT ROWID;

-- Non-cumulative bucket counts; the exemplar is the latest run that landed there.
CREATE TABLE metric_buckets (
    family          TEXT NOT NULL,
    labels          TEXT NOT NULL,
    le              REAL NOT NULL,
    count           INTEGER NOT NULL,
    exemplar_run_id INTEGER,
    exemplar_value  REAL,
    exemplar_ts     INTEGER,
    PRIMARY KEY (family, labels, le)
) WITHOUT ROWID;
"#,
    // 2: what the forge sources need: webhook deliveries (dedupe), per-scope
    // sync cursors with ETags, and job logs downloaded once.
    r#"
CREATE TABLE webhook_deliveries (
    forge       TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    event       TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (forge, delivery_id)
) WITHOUT ROWID;

-- One row per (forge, scope, kind): e.g. ('github', 'octo/repo', 'pulls').
CREATE TABLE sync_state (
    forge        TEXT NOT NULL,
    scope        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    cursor       TEXT,
    etag         TEXT,
    last_success INTEGER,
    PRIMARY KEY (forge, scope, kind)
) WITHOUT ROWID;

CREATE TABLE run_logs (
    run_id     INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    fetched_at INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    truncated  INTEGER NOT NULL,
    content    TEXT NOT NULL
);
"#,
    // 3: GitLab job-log section timings (section_start/section_end markers),
    // kept next to the downloaded log.
    r#"
CREATE TABLE run_sections (
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    ord     INTEGER NOT NULL,
    name    TEXT NOT NULL,
    seconds INTEGER NOT NULL,
    PRIMARY KEY (run_id, ord)
) WITHOUT ROWID;
"#,
    // 4: GitHub Actions workflow runs as far as their jobs need them: the
    // event that triggered the run (the jobs' trigger) and when each attempt
    // was requested (the queue start of re-run jobs).
    r#"
CREATE TABLE github_workflow_runs (
    repository     TEXT NOT NULL,
    run_id         INTEGER NOT NULL,
    run_attempt    INTEGER NOT NULL,
    event          TEXT,
    run_started_at INTEGER,
    PRIMARY KEY (repository, run_id, run_attempt)
) WITHOUT ROWID;
"#,
    // 5: what the drill-down UI (crates/store/src/ui.rs) reads fast on a million runs:
    // runs by time (the expression its queries use), scheduled runs by time
    // (nightly grid), runs of one repository and context by time (test pages,
    // last green run); failures by their run's time (kept by triggers, so no
    // writer changes); SLO events rolled up per hour, for all repositories
    // (repository_id 0) and per repository, also kept by triggers.
    r#"
CREATE INDEX runs_at ON runs (coalesce(queued_at, started_at, created_at));
CREATE INDEX runs_trigger_at ON runs (trigger, coalesce(queued_at, started_at, created_at));
CREATE INDEX runs_repo_context_at ON runs (repository_id, context, coalesce(queued_at, started_at, created_at));

ALTER TABLE failures ADD COLUMN at INTEGER;
UPDATE failures SET at = (SELECT coalesce(queued_at, started_at, created_at) FROM runs WHERE runs.id = failures.run_id);
CREATE INDEX failures_at ON failures (at);
CREATE TRIGGER failures_at_insert AFTER INSERT ON failures BEGIN
    UPDATE failures SET at = (SELECT coalesce(queued_at, started_at, created_at) FROM runs WHERE runs.id = NEW.run_id)
    WHERE id = NEW.id;
END;
CREATE TRIGGER runs_at_update AFTER UPDATE OF queued_at, started_at, created_at ON runs BEGIN
    UPDATE failures SET at = coalesce(NEW.queued_at, NEW.started_at, NEW.created_at) WHERE run_id = NEW.id;
END;

CREATE TABLE slo_hourly (
    repository_id INTEGER NOT NULL,
    hour          INTEGER NOT NULL,
    slo           TEXT NOT NULL,
    good          INTEGER NOT NULL,
    total         INTEGER NOT NULL,
    PRIMARY KEY (repository_id, hour, slo)
) WITHOUT ROWID;
INSERT INTO slo_hourly (repository_id, hour, slo, good, total)
    SELECT 0, at / 3600000 * 3600000, slo, sum(good), count(*) FROM slo_events GROUP BY 2, 3;
INSERT INTO slo_hourly (repository_id, hour, slo, good, total)
    SELECT repository_id, at / 3600000 * 3600000, slo, sum(good), count(*) FROM slo_events GROUP BY 1, 2, 3;
CREATE TRIGGER slo_events_hourly_insert AFTER INSERT ON slo_events BEGIN
    INSERT INTO slo_hourly (repository_id, hour, slo, good, total)
    VALUES (0, NEW.at / 3600000 * 3600000, NEW.slo, NEW.good, 1),
           (NEW.repository_id, NEW.at / 3600000 * 3600000, NEW.slo, NEW.good, 1)
    ON CONFLICT (repository_id, hour, slo) DO UPDATE SET good = good + excluded.good, total = total + 1;
END;
CREATE TRIGGER slo_events_hourly_delete AFTER DELETE ON slo_events BEGIN
    UPDATE slo_hourly SET good = good - OLD.good, total = total - 1
    WHERE repository_id IN (0, OLD.repository_id) AND hour = OLD.at / 3600000 * 3600000 AND slo = OLD.slo;
    DELETE FROM slo_hourly
    WHERE repository_id IN (0, OLD.repository_id) AND hour = OLD.at / 3600000 * 3600000 AND slo = OLD.slo AND total <= 0;
END;
"#,
    // 6: the failures page aggregates a window from one covering index: each
    // failure carries its run's repository and context (a run never changes
    // either; kept by the insert trigger), and where in its context lines the
    // evidence line goes (`context_before`; NULL for failures stored before).
    r#"
ALTER TABLE failures ADD COLUMN repository_id INTEGER;
ALTER TABLE failures ADD COLUMN run_context TEXT;
ALTER TABLE failures ADD COLUMN context_before INTEGER;
UPDATE failures SET (repository_id, run_context) =
    (SELECT repository_id, context FROM runs WHERE runs.id = failures.run_id);
DROP TRIGGER failures_at_insert;
CREATE TRIGGER failures_at_insert AFTER INSERT ON failures BEGIN
    UPDATE failures SET (at, repository_id, run_context) =
        (SELECT coalesce(queued_at, started_at, created_at), repository_id, context FROM runs WHERE runs.id = NEW.run_id)
    WHERE id = NEW.id;
END;
DROP INDEX failures_at;
CREATE INDEX failures_window
    ON failures (at, repository_id, run_context, fingerprint_id, class, category, test_name, run_id);
"#,
    // 7: runs of one context on one commit come in attempt groups: a GitHub
    // workflow run's jobs are attempts of their own workflow run (a push run
    // and a pull_request run of the same commit are two first attempts), other
    // sources have one group (''). A run whose trigger is not known yet (a
    // GitHub job that arrived before its workflow run) is stored but counted
    // only once the trigger is decided (`trigger_pending`).
    r#"
ALTER TABLE runs ADD COLUMN attempt_group TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN trigger_pending INTEGER NOT NULL DEFAULT 0;
DROP INDEX runs_identity;
CREATE UNIQUE INDEX runs_identity ON runs (repository_id, context, commit_sha, attempt_group, attempt);
CREATE INDEX runs_trigger_pending ON runs (repository_id, attempt_group) WHERE trigger_pending = 1;
"#,
    // 8: a run's identity is its source's id where it has one (repository,
    // external_id; `runs_external`): two runs of one context and commit with
    // different ids (a nightly re-run of an unchanged commit, one revision
    // tested in two projects) are two runs, even with equal attempts. The
    // (context, commit, attempt group, attempt) key stays unique only among
    // runs without an external id. Every stored run is kept (lookups by
    // context and commit go through `runs_commit`).
    r#"
DROP INDEX runs_identity;
CREATE UNIQUE INDEX runs_identity ON runs (repository_id, context, commit_sha, attempt_group, attempt)
    WHERE external_id IS NULL;
"#,
    // 9: further evidence candidates of a log failure: a JSON array of
    // {line, text, class}, best first (NULL for failures stored before).
    r#"
ALTER TABLE failures ADD COLUMN candidates TEXT;
"#,
    // 10: compact storage per test result and per-test statistics kept
    // incrementally (issue 12 §6, issue 14 §1). A test's identity is interned
    // once in `tests` (repository, context, name) with its counters; each
    // result is a `results` row keyed by (run, test) holding an outcome code
    // (0 passed, 1 failed, 2 errored, 3 skipped) and what the report carried.
    // `test_commits` keeps, per commit and test (keyed by commit first: a
    // new commit's rows are appended, not spread over the tree), what was
    // seen there (bits:
    // 1 passed, 2 failed, 4 passed after an in-run retry, 8 counted flaky) and
    // `test_days` the counters per UTC day, which the windowed statistics add
    // up. The test_success events of a run are one `test_events` row (good
    // and total), rolled up into `slo_hourly` by triggers like `slo_events`.
    // `test_results` stays readable as a view. Every stored result is kept;
    // the counters of existing results are computed once here.
    r#"
CREATE TABLE tests (
    id                  INTEGER PRIMARY KEY,
    repository_id       INTEGER NOT NULL REFERENCES repositories(id),
    context             TEXT NOT NULL,
    name                TEXT NOT NULL,
    runs                INTEGER NOT NULL DEFAULT 0,
    passes              INTEGER NOT NULL DEFAULT 0,
    failures            INTEGER NOT NULL DEFAULT 0,
    flips               INTEGER NOT NULL DEFAULT 0,
    commits             INTEGER NOT NULL DEFAULT 0,
    flaky_commits       INTEGER NOT NULL DEFAULT 0,
    flaky_failures      INTEGER NOT NULL DEFAULT 0,
    last_failed         INTEGER,
    first_seen          INTEGER,
    last_seen           INTEGER,
    last_failure_run_id INTEGER,
    last_failure_at     INTEGER,
    first_seen_flaky    INTEGER,
    UNIQUE (repository_id, context, name)
);

CREATE TABLE commits (
    id            INTEGER PRIMARY KEY,
    repository_id INTEGER NOT NULL,
    sha           TEXT NOT NULL,
    UNIQUE (repository_id, sha)
);

CREATE TABLE results (
    run_id           INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    test_id          INTEGER NOT NULL,
    outcome          INTEGER NOT NULL,
    duration_seconds REAL,
    retries          INTEGER NOT NULL DEFAULT 0,
    retry_reasons    TEXT,
    message          TEXT,
    PRIMARY KEY (run_id, test_id)
) WITHOUT ROWID;

CREATE TABLE test_commits (
    test_id   INTEGER NOT NULL,
    commit_id INTEGER NOT NULL,
    flags     INTEGER NOT NULL,
    failures  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (commit_id, test_id)
) WITHOUT ROWID;

CREATE TABLE test_days (
    test_id       INTEGER NOT NULL,
    day           INTEGER NOT NULL,
    runs          INTEGER NOT NULL,
    passes        INTEGER NOT NULL,
    failures      INTEGER NOT NULL,
    flips         INTEGER NOT NULL,
    commits       INTEGER NOT NULL,
    flaky_commits INTEGER NOT NULL,
    flaky_failures INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (test_id, day)
) WITHOUT ROWID;

CREATE TABLE test_events (
    run_id        INTEGER PRIMARY KEY,
    repository_id INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    good          INTEGER NOT NULL,
    total         INTEGER NOT NULL
);
CREATE INDEX test_events_at ON test_events (at);

ALTER TABLE test_results RENAME TO test_results_v9;

INSERT INTO tests (repository_id, context, name)
    SELECT r.repository_id, r.context, tr.name
    FROM test_results_v9 tr JOIN runs r ON r.id = tr.run_id
    GROUP BY 1, 2, 3 ORDER BY min(tr.id);

INSERT INTO results (run_id, test_id, outcome, duration_seconds, retries, retry_reasons, message)
    SELECT tr.run_id, t.id,
           CASE tr.outcome WHEN 'passed' THEN 0 WHEN 'failed' THEN 1 WHEN 'skipped' THEN 3 ELSE 2 END,
           tr.duration_seconds, tr.retries, nullif(tr.retry_reasons, '[]'), tr.message
    FROM test_results_v9 tr JOIN runs r ON r.id = tr.run_id
    JOIN tests t ON t.repository_id = r.repository_id AND t.context = r.context AND t.name = tr.name
    ORDER BY tr.run_id, t.id;

DROP TABLE test_results_v9;

CREATE VIEW test_results AS
    SELECT res.run_id, res.test_id AS id, t.name,
           CASE res.outcome WHEN 0 THEN 'passed' WHEN 1 THEN 'failed' WHEN 2 THEN 'errored' ELSE 'skipped' END
               AS outcome,
           res.duration_seconds, res.retries, coalesce(res.retry_reasons, '[]') AS retry_reasons, res.message
    FROM results res JOIN tests t ON t.id = res.test_id;

-- Rows written into the view (a tool that loads results directly) land in
-- the compact tables; they move no counter, as direct inserts never did.
CREATE TRIGGER test_results_insert INSTEAD OF INSERT ON test_results BEGIN
    INSERT OR IGNORE INTO tests (repository_id, context, name)
        SELECT repository_id, context, NEW.name FROM runs WHERE id = NEW.run_id;
    INSERT INTO results (run_id, test_id, outcome, duration_seconds, retries, retry_reasons, message)
        SELECT NEW.run_id, t.id,
               CASE NEW.outcome WHEN 'passed' THEN 0 WHEN 'failed' THEN 1 WHEN 'skipped' THEN 3 ELSE 2 END,
               NEW.duration_seconds, coalesce(NEW.retries, 0), nullif(NEW.retry_reasons, '[]'), NEW.message
        FROM runs r JOIN tests t ON t.repository_id = r.repository_id AND t.context = r.context AND t.name = NEW.name
        WHERE r.id = NEW.run_id;
END;

INSERT INTO commits (repository_id, sha)
    SELECT DISTINCT r.repository_id, r.commit_sha FROM runs r
    WHERE EXISTS (SELECT 1 FROM results res WHERE res.run_id = r.id);

CREATE TEMP TABLE migrate_executions AS
    SELECT test_id, run_id, commit_id, failed, retries, at,
           coalesce(lag(failed) OVER w != failed, 0) AS flip,
           row_number() OVER (PARTITION BY test_id ORDER BY at DESC, run_id DESC) AS from_last
    FROM (SELECT res.test_id, res.run_id, c.id AS commit_id, res.outcome != 0 AS failed, res.retries,
                 coalesce(r.finished_at, r.started_at, r.queued_at, r.created_at) AS at
          FROM results res JOIN runs r ON r.id = res.run_id
          JOIN commits c ON c.repository_id = r.repository_id AND c.sha = r.commit_sha
          WHERE res.outcome != 3)
    WINDOW w AS (PARTITION BY test_id ORDER BY at, run_id);
-- Indexes on the scratch tables (added after release: they change no
-- result, only make the per-test lookups below logarithmic instead of a scan
-- of every execution per test).
CREATE INDEX temp.migrate_executions_test ON migrate_executions (test_id, failed, at, run_id);

CREATE TEMP TABLE migrate_commits AS
    SELECT test_id, commit_id, first_at, pass_at, fail_at, retry_at, fail_count,
           CASE WHEN retry_at IS NOT NULL AND (pass_at IS NULL OR fail_at IS NULL) THEN retry_at
                WHEN pass_at IS NOT NULL AND fail_at IS NOT NULL AND retry_at IS NULL THEN max(pass_at, fail_at)
                WHEN pass_at IS NOT NULL AND fail_at IS NOT NULL THEN min(retry_at, max(pass_at, fail_at))
           END AS flaky_at
    FROM (SELECT test_id, commit_id, min(at) AS first_at, sum(failed) AS fail_count,
                 min(CASE WHEN failed = 0 THEN at END) AS pass_at,
                 min(CASE WHEN failed = 1 THEN at END) AS fail_at,
                 min(CASE WHEN failed = 0 AND retries > 0 THEN at END) AS retry_at
          FROM migrate_executions GROUP BY test_id, commit_id);
CREATE INDEX temp.migrate_commits_test ON migrate_commits (test_id, commit_id);

INSERT INTO test_commits (test_id, commit_id, flags, failures)
    SELECT test_id, commit_id,
           (pass_at IS NOT NULL) | ((fail_at IS NOT NULL) << 1) | ((retry_at IS NOT NULL) << 2)
               | ((flaky_at IS NOT NULL) << 3),
           fail_count
    FROM migrate_commits;

-- A flaky failure (a failure on a commit that also passed, or a pass after
-- an in-run retry) counts on its own day, or on the day its commit became
-- flaky when that came later (as ingest counts it).
INSERT INTO test_days (test_id, day, runs, passes, failures, flips, commits, flaky_commits, flaky_failures)
    SELECT test_id, day, sum(runs), sum(passes), sum(failures), sum(flips), sum(commits), sum(flaky),
           sum(flaky_failures)
    FROM (SELECT test_id, at / 86400000 AS day, 1 AS runs, 1 - failed AS passes, failed AS failures,
                 flip AS flips, 0 AS commits, 0 AS flaky, 0 AS flaky_failures FROM migrate_executions
          UNION ALL
          SELECT test_id, first_at / 86400000, 0, 0, 0, 0, 1, 0, 0 FROM migrate_commits
          UNION ALL
          SELECT test_id, flaky_at / 86400000, 0, 0, 0, 0, 0, 1, 0 FROM migrate_commits WHERE flaky_at IS NOT NULL
          UNION ALL
          SELECT e.test_id, max(e.at, c.flaky_at) / 86400000, 0, 0, 0, 0, 0, 0, 1
          FROM migrate_executions e JOIN migrate_commits c ON c.test_id = e.test_id AND c.commit_id = e.commit_id
          WHERE c.flaky_at IS NOT NULL AND (e.failed = 1 OR e.retries > 0))
    GROUP BY test_id, day;

UPDATE tests SET (runs, passes, failures, flips, commits, flaky_commits, flaky_failures) =
    (SELECT coalesce(sum(runs), 0), coalesce(sum(passes), 0), coalesce(sum(failures), 0), coalesce(sum(flips), 0),
            coalesce(sum(commits), 0), coalesce(sum(flaky_commits), 0), coalesce(sum(flaky_failures), 0)
     FROM test_days d WHERE d.test_id = tests.id);
UPDATE tests SET (last_failed, first_seen, last_seen) =
    (SELECT max(CASE WHEN from_last = 1 THEN failed END), min(at), max(at)
     FROM migrate_executions e WHERE e.test_id = tests.id);
UPDATE tests SET (last_failure_run_id, last_failure_at) =
    (SELECT run_id, at FROM migrate_executions e WHERE e.test_id = tests.id AND failed = 1
     ORDER BY at DESC, run_id DESC LIMIT 1);
UPDATE tests SET first_seen_flaky = (SELECT min(flaky_at) FROM migrate_commits c WHERE c.test_id = tests.id);

DROP TABLE migrate_executions;
DROP TABLE migrate_commits;

INSERT INTO test_events (run_id, repository_id, at, good, total)
    SELECT CAST(substr(subject, 6, instr(substr(subject, 6), ':') - 1) AS INTEGER), repository_id, min(at),
           sum(good), count(*)
    FROM slo_events WHERE slo = 'test_success' AND subject LIKE 'test:%' GROUP BY 1, 2;
DROP TRIGGER slo_events_hourly_delete;
DELETE FROM slo_events WHERE slo = 'test_success' AND subject LIKE 'test:%';
CREATE TRIGGER slo_events_hourly_delete AFTER DELETE ON slo_events BEGIN
    UPDATE slo_hourly SET good = good - OLD.good, total = total - 1
    WHERE repository_id IN (0, OLD.repository_id) AND hour = OLD.at / 3600000 * 3600000 AND slo = OLD.slo;
    DELETE FROM slo_hourly
    WHERE repository_id IN (0, OLD.repository_id) AND hour = OLD.at / 3600000 * 3600000 AND slo = OLD.slo AND total <= 0;
END;

CREATE TRIGGER test_events_hourly_insert AFTER INSERT ON test_events BEGIN
    INSERT INTO slo_hourly (repository_id, hour, slo, good, total)
    VALUES (0, NEW.at / 3600000 * 3600000, 'test_success', NEW.good, NEW.total),
           (NEW.repository_id, NEW.at / 3600000 * 3600000, 'test_success', NEW.good, NEW.total)
    ON CONFLICT (repository_id, hour, slo) DO UPDATE SET good = good + excluded.good, total = total + excluded.total;
END;
CREATE TRIGGER test_events_hourly_update AFTER UPDATE OF good, total ON test_events BEGIN
    UPDATE slo_hourly SET good = good + NEW.good - OLD.good, total = total + NEW.total - OLD.total
    WHERE repository_id IN (0, NEW.repository_id) AND hour = NEW.at / 3600000 * 3600000 AND slo = 'test_success';
END;
CREATE TRIGGER test_events_hourly_delete AFTER DELETE ON test_events BEGIN
    UPDATE slo_hourly SET good = good - OLD.good, total = total - OLD.total
    WHERE repository_id IN (0, OLD.repository_id) AND hour = OLD.at / 3600000 * 3600000 AND slo = 'test_success';
    DELETE FROM slo_hourly
    WHERE repository_id IN (0, OLD.repository_id) AND hour = OLD.at / 3600000 * 3600000 AND slo = 'test_success'
      AND total <= 0;
END;
"#,
    // 11: one repository's bad events of one SLO, newest first, for
    // /slos/{slo}/events?repository= without walking every repository's events.
    r#"
CREATE INDEX slo_events_repository ON slo_events (slo, repository_id, good, at);
"#,
    // 12: smaller runs and SLO-event indexes (issue 12 §5). A run's url is
    // stored once when its external id already holds it as
    // `<prefix>:<url>` (`import cockpit` identifies a run by its log url,
    // `cockpit:<url>`): `stored_url` is then NULL and `url_in_id` 1, and
    // `url`, a virtual column (what readers select), gives it back from the
    // id. Runs stored before move to that form. One repository's bad events
    // (the only reader of `slo_events_repository`) are indexed alone.
    // `runs_finished` goes: no query reads runs by their bare finish time
    // (the prune's is `coalesce(finished_at, ...)`).
    r#"
ALTER TABLE runs RENAME COLUMN url TO stored_url;
ALTER TABLE runs ADD COLUMN url_in_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN url TEXT GENERATED ALWAYS AS
    (CASE WHEN url_in_id THEN substr(external_id, instr(external_id, ':') + 1) ELSE stored_url END) VIRTUAL;
UPDATE runs SET url_in_id = 1, stored_url = NULL
    WHERE stored_url IS NOT NULL AND instr(external_id, ':') > 0
      AND substr(external_id, instr(external_id, ':') + 1) = stored_url;
DROP INDEX slo_events_repository;
CREATE INDEX slo_events_repository ON slo_events (slo, repository_id, at) WHERE good = 0;
DROP INDEX runs_finished;
"#,
    // 13: the SLO events of a run (queue_time at its start, run_time and
    // runs_completed at its end; subject `run:<id>`) are one `run_events` row
    // keyed by the run (issue 12 §5: three `slo_events` rows with two index
    // entries each were a fifth of an imported store), NULL where the run has
    // no such event yet; an event is recorded once (set only while NULL).
    // Rolled up into `slo_hourly` by triggers like `slo_events`. Every stored
    // event moves; the rollup is unchanged.
    r#"
CREATE TABLE run_events (
    run_id         INTEGER PRIMARY KEY,
    repository_id  INTEGER NOT NULL,
    queue_at       INTEGER,
    queue_good     INTEGER,
    run_time_at    INTEGER,
    run_time_good  INTEGER,
    completed_at   INTEGER,
    completed_good INTEGER
);
INSERT INTO run_events (run_id, repository_id, queue_at, queue_good, run_time_at, run_time_good, completed_at,
                        completed_good)
    SELECT CAST(substr(subject, 5) AS INTEGER), max(repository_id),
           max(CASE WHEN slo = 'queue_time' THEN at END), max(CASE WHEN slo = 'queue_time' THEN good END),
           max(CASE WHEN slo = 'run_time' THEN at END), max(CASE WHEN slo = 'run_time' THEN good END),
           max(CASE WHEN slo = 'runs_completed' THEN at END), max(CASE WHEN slo = 'runs_completed' THEN good END)
    FROM slo_events
    WHERE slo IN ('queue_time', 'run_time', 'runs_completed') AND subject GLOB 'run:[0-9]*'
      AND NOT subject GLOB 'run:*[^0-9]*'
    GROUP BY 1 ORDER BY 1;
DROP TRIGGER slo_events_hourly_delete;
DELETE FROM slo_events
    WHERE slo IN ('queue_time', 'run_time', 'runs_completed') AND subject GLOB 'run:[0-9]*'
      AND NOT subject GLOB 'run:*[^0-9]*';
CREATE TRIGGER slo_events_hourly_delete AFTER DELETE ON slo_events BEGIN
    UPDATE slo_hourly SET good = good - OLD.good, total = total - 1
    WHERE repository_id IN (0, OLD.repository_id) AND hour = OLD.at / 3600000 * 3600000 AND slo = OLD.slo;
    DELETE FROM slo_hourly
    WHERE repository_id IN (0, OLD.repository_id) AND hour = OLD.at / 3600000 * 3600000 AND slo = OLD.slo AND total <= 0;
END;
-- The events of a period by time (the partial hour of windowed counts, the
-- bad events newest first), one repository's bad events.
CREATE INDEX run_events_queue_at ON run_events (queue_at) WHERE queue_at IS NOT NULL;
CREATE INDEX run_events_run_time_at ON run_events (run_time_at) WHERE run_time_at IS NOT NULL;
CREATE INDEX run_events_completed_at ON run_events (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX run_events_queue_bad ON run_events (repository_id, queue_at) WHERE queue_good = 0;
CREATE INDEX run_events_run_time_bad ON run_events (repository_id, run_time_at) WHERE run_time_good = 0;
CREATE INDEX run_events_completed_bad ON run_events (repository_id, completed_at) WHERE completed_good = 0;
CREATE TRIGGER run_events_hourly_insert AFTER INSERT ON run_events BEGIN
    INSERT INTO slo_hourly (repository_id, hour, slo, good, total)
        SELECT repository_id, NEW.queue_at / 3600000 * 3600000, 'queue_time', NEW.queue_good, 1
        FROM (SELECT 0 AS repository_id UNION ALL SELECT NEW.repository_id)
        WHERE NEW.queue_good IS NOT NULL
    ON CONFLICT (repository_id, hour, slo) DO UPDATE SET good = good + excluded.good, total = total + 1;
    INSERT INTO slo_hourly (repository_id, hour, slo, good, total)
        SELECT repository_id, NEW.run_time_at / 3600000 * 3600000, 'run_time', NEW.run_time_good, 1
        FROM (SELECT 0 AS repository_id UNION ALL SELECT NEW.repository_id)
        WHERE NEW.run_time_good IS NOT NULL
    ON CONFLICT (repository_id, hour, slo) DO UPDATE SET good = good + excluded.good, total = total + 1;
    INSERT INTO slo_hourly (repository_id, hour, slo, good, total)
        SELECT repository_id, NEW.completed_at / 3600000 * 3600000, 'runs_completed', NEW.completed_good, 1
        FROM (SELECT 0 AS repository_id UNION ALL SELECT NEW.repository_id)
        WHERE NEW.completed_good IS NOT NULL
    ON CONFLICT (repository_id, hour, slo) DO UPDATE SET good = good + excluded.good, total = total + 1;
END;
CREATE TRIGGER run_events_hourly_update_queue_time AFTER UPDATE OF queue_at, queue_good ON run_events
    WHEN OLD.queue_at IS NOT NEW.queue_at OR OLD.queue_good IS NOT NEW.queue_good BEGIN
    UPDATE slo_hourly SET good = good - OLD.queue_good, total = total - 1
    WHERE OLD.queue_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.queue_at / 3600000 * 3600000 AND slo = 'queue_time';
    DELETE FROM slo_hourly
    WHERE OLD.queue_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.queue_at / 3600000 * 3600000 AND slo = 'queue_time' AND total <= 0;
    INSERT INTO slo_hourly (repository_id, hour, slo, good, total)
        SELECT repository_id, NEW.queue_at / 3600000 * 3600000, 'queue_time', NEW.queue_good, 1
        FROM (SELECT 0 AS repository_id UNION ALL SELECT NEW.repository_id)
        WHERE NEW.queue_good IS NOT NULL
    ON CONFLICT (repository_id, hour, slo) DO UPDATE SET good = good + excluded.good, total = total + 1;
END;
CREATE TRIGGER run_events_hourly_update_run_time AFTER UPDATE OF run_time_at, run_time_good ON run_events
    WHEN OLD.run_time_at IS NOT NEW.run_time_at OR OLD.run_time_good IS NOT NEW.run_time_good BEGIN
    UPDATE slo_hourly SET good = good - OLD.run_time_good, total = total - 1
    WHERE OLD.run_time_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.run_time_at / 3600000 * 3600000 AND slo = 'run_time';
    DELETE FROM slo_hourly
    WHERE OLD.run_time_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.run_time_at / 3600000 * 3600000 AND slo = 'run_time' AND total <= 0;
    INSERT INTO slo_hourly (repository_id, hour, slo, good, total)
        SELECT repository_id, NEW.run_time_at / 3600000 * 3600000, 'run_time', NEW.run_time_good, 1
        FROM (SELECT 0 AS repository_id UNION ALL SELECT NEW.repository_id)
        WHERE NEW.run_time_good IS NOT NULL
    ON CONFLICT (repository_id, hour, slo) DO UPDATE SET good = good + excluded.good, total = total + 1;
END;
CREATE TRIGGER run_events_hourly_update_runs_completed AFTER UPDATE OF completed_at, completed_good ON run_events
    WHEN OLD.completed_at IS NOT NEW.completed_at OR OLD.completed_good IS NOT NEW.completed_good BEGIN
    UPDATE slo_hourly SET good = good - OLD.completed_good, total = total - 1
    WHERE OLD.completed_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.completed_at / 3600000 * 3600000 AND slo = 'runs_completed';
    DELETE FROM slo_hourly
    WHERE OLD.completed_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.completed_at / 3600000 * 3600000 AND slo = 'runs_completed' AND total <= 0;
    INSERT INTO slo_hourly (repository_id, hour, slo, good, total)
        SELECT repository_id, NEW.completed_at / 3600000 * 3600000, 'runs_completed', NEW.completed_good, 1
        FROM (SELECT 0 AS repository_id UNION ALL SELECT NEW.repository_id)
        WHERE NEW.completed_good IS NOT NULL
    ON CONFLICT (repository_id, hour, slo) DO UPDATE SET good = good + excluded.good, total = total + 1;
END;
CREATE TRIGGER run_events_hourly_delete AFTER DELETE ON run_events BEGIN
    UPDATE slo_hourly SET good = good - OLD.queue_good, total = total - 1
    WHERE OLD.queue_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.queue_at / 3600000 * 3600000 AND slo = 'queue_time';
    DELETE FROM slo_hourly
    WHERE OLD.queue_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.queue_at / 3600000 * 3600000 AND slo = 'queue_time' AND total <= 0;
    UPDATE slo_hourly SET good = good - OLD.run_time_good, total = total - 1
    WHERE OLD.run_time_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.run_time_at / 3600000 * 3600000 AND slo = 'run_time';
    DELETE FROM slo_hourly
    WHERE OLD.run_time_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.run_time_at / 3600000 * 3600000 AND slo = 'run_time' AND total <= 0;
    UPDATE slo_hourly SET good = good - OLD.completed_good, total = total - 1
    WHERE OLD.completed_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.completed_at / 3600000 * 3600000 AND slo = 'runs_completed';
    DELETE FROM slo_hourly
    WHERE OLD.completed_good IS NOT NULL AND repository_id IN (0, OLD.repository_id)
      AND hour = OLD.completed_at / 3600000 * 3600000 AND slo = 'runs_completed' AND total <= 0;
END;
"#,
    // 14: smaller run identities (issue 12 §5: an imported run's ~110-byte
    // Cockpit id was a third of its row and stored again in `runs_external`).
    // - A run with an external id also stores `external_key`, a 64-bit hash
    //   of the id computed in Rust (`ingest_run::external_key`: the first 8
    //   bytes of its SHA-256; the `run_external_key` SQL function gives it
    //   here), and the unique index `runs_external` holds (repository, key):
    //   a lookup compares the id as well, and a second id with an equal key
    //   in one repository is refused (a hash collision: odds about n²/2⁶⁵
    //   for n runs of a repository). `runs_identity` (runs without an id)
    //   is partial on the key's absence.
    // - An id of the form `import cockpit` gives runs whose logs are on
    //   Cockpit's log host, `cockpit:https://cockpit-logs.us-east-1.linodeobjects.com/<path>/log.html`,
    //   keeps only `<path>` in `stored_external_id` (`id_form` 1; 2 without
    //   the `/log.html`; 0 any other id, stored whole), and `external_id`, a
    //   virtual column (what readers select), gives the id back
    //   (`ingest_run::stored_external_id` applies the same rule). `url`, which
    //   reads the id, is defined again over it.
    // - The content hash is kept as its 16 bytes (`content_digest`; text that
    //   is not 32 lowercase hex digits stays as it is) and `content_hash`, a
    //   virtual column, gives the hex text back.
    // Every stored run is kept, with its id, url and hash.
    r#"
ALTER TABLE runs ADD COLUMN external_key INTEGER;
UPDATE runs SET external_key = run_external_key(external_id) WHERE external_id IS NOT NULL;
DROP INDEX runs_external;
DROP INDEX runs_identity;
ALTER TABLE runs DROP COLUMN url;
ALTER TABLE runs RENAME COLUMN external_id TO stored_external_id;
ALTER TABLE runs ADD COLUMN id_form INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET id_form = 1, stored_external_id = substr(stored_external_id, 58, length(stored_external_id) - 66)
    WHERE length(stored_external_id) >= 66
      AND substr(stored_external_id, 1, 57) = 'cockpit:https://cockpit-logs.us-east-1.linodeobjects.com/'
      AND substr(stored_external_id, -9) = '/log.html';
UPDATE runs SET id_form = 2, stored_external_id = substr(stored_external_id, 58)
    WHERE id_form = 0 AND length(stored_external_id) >= 57
      AND substr(stored_external_id, 1, 57) = 'cockpit:https://cockpit-logs.us-east-1.linodeobjects.com/';
ALTER TABLE runs ADD COLUMN external_id TEXT GENERATED ALWAYS AS
    (CASE id_form
         WHEN 1 THEN 'cockpit:https://cockpit-logs.us-east-1.linodeobjects.com/' || stored_external_id || '/log.html'
         WHEN 2 THEN 'cockpit:https://cockpit-logs.us-east-1.linodeobjects.com/' || stored_external_id
         ELSE stored_external_id END) VIRTUAL;
ALTER TABLE runs ADD COLUMN url TEXT GENERATED ALWAYS AS
    (CASE WHEN url_in_id THEN substr(external_id, instr(external_id, ':') + 1) ELSE stored_url END) VIRTUAL;
CREATE UNIQUE INDEX runs_identity ON runs (repository_id, context, commit_sha, attempt_group, attempt)
    WHERE external_key IS NULL;
CREATE UNIQUE INDEX runs_external ON runs (repository_id, external_key) WHERE external_key IS NOT NULL;
ALTER TABLE runs RENAME COLUMN content_hash TO content_digest;
UPDATE runs SET content_digest = unhex(content_digest)
    WHERE length(content_digest) = 32 AND NOT content_digest GLOB '*[^0-9a-f]*';
ALTER TABLE runs ADD COLUMN content_hash TEXT GENERATED ALWAYS AS
    (CASE WHEN typeof(content_digest) = 'blob' THEN lower(hex(content_digest)) ELSE content_digest END) VIRTUAL;
"#,
    // 15: a run's trigger, state and source as small integer codes (issue 12
    // §5: 33 bytes of text in every imported run). `trigger_code`,
    // `state_code` and `source_code` (no type: kept as written) hold the
    // code of a known text (`ingest_run::TRIGGER_CODES`, `STATE_CODES`,
    // `SOURCE_CODES`: the position in the list) or any other text as it is;
    // `trigger`, `state` and `source` are virtual columns (what readers
    // select) giving the text back. The indexes on the trigger are built
    // again over the virtual column. Every stored run keeps its texts.
    r#"
DROP INDEX runs_trigger_at;
DROP INDEX runs_open;
ALTER TABLE runs ADD COLUMN trigger_code;
ALTER TABLE runs ADD COLUMN state_code;
ALTER TABLE runs ADD COLUMN source_code;
UPDATE runs SET
    trigger_code = CASE trigger WHEN 'pull_request' THEN 0 WHEN 'push' THEN 1 WHEN 'schedule' THEN 2
        WHEN 'manual' THEN 3 WHEN 'other' THEN 4 ELSE trigger END,
    state_code = CASE state WHEN 'success' THEN 0 WHEN 'failure' THEN 1 WHEN 'error' THEN 2 WHEN 'cancelled' THEN 3
        WHEN 'timed_out' THEN 4 WHEN 'skipped' THEN 5 WHEN 'pending' THEN 6
        WHEN 'running' THEN 7 ELSE state END,
    source_code = CASE source WHEN 'cockpit-import' THEN 0 WHEN 'github' THEN 1 WHEN 'gitlab' THEN 2 WHEN 'api' THEN 3
        WHEN 'cli' THEN 4 WHEN 'demo' THEN 5 ELSE source END;
ALTER TABLE runs DROP COLUMN trigger;
ALTER TABLE runs DROP COLUMN state;
ALTER TABLE runs DROP COLUMN source;
ALTER TABLE runs ADD COLUMN trigger TEXT GENERATED ALWAYS AS
    (CASE trigger_code WHEN 0 THEN 'pull_request' WHEN 1 THEN 'push' WHEN 2 THEN 'schedule'
        WHEN 3 THEN 'manual' WHEN 4 THEN 'other' ELSE trigger_code END) VIRTUAL;
ALTER TABLE runs ADD COLUMN state TEXT GENERATED ALWAYS AS
    (CASE state_code WHEN 0 THEN 'success' WHEN 1 THEN 'failure' WHEN 2 THEN 'error'
        WHEN 3 THEN 'cancelled' WHEN 4 THEN 'timed_out' WHEN 5 THEN 'skipped' WHEN 6 THEN 'pending'
        WHEN 7 THEN 'running' ELSE state_code END) VIRTUAL;
ALTER TABLE runs ADD COLUMN source TEXT GENERATED ALWAYS AS
    (CASE source_code WHEN 0 THEN 'cockpit-import' WHEN 1 THEN 'github' WHEN 2 THEN 'gitlab'
        WHEN 3 THEN 'api' WHEN 4 THEN 'cli' WHEN 5 THEN 'demo' ELSE source_code END) VIRTUAL;
CREATE INDEX runs_trigger_at ON runs (trigger, coalesce(queued_at, started_at, created_at));
CREATE INDEX runs_open ON runs (trigger, queued_at) WHERE final_counted = 0;
"#,
    // 16: the tests' uniqueness (repository, context, name) as a named index,
    // `tests_name`, instead of the table's inline UNIQUE constraint (issue
    // 12 §5): a fresh load (`fresh.rs`) drops it with the other secondary
    // indexes and builds it once at its end (a sort) instead of inserting
    // each new test into it at random. SQLite cannot drop a constraint: the
    // table is copied into one without it (every row, with its id), and the
    // view and trigger over it are created again as they were.
    r#"
DROP TRIGGER test_results_insert;
DROP VIEW test_results;
CREATE TABLE tests_v16 (
    id                  INTEGER PRIMARY KEY,
    repository_id       INTEGER NOT NULL REFERENCES repositories(id),
    context             TEXT NOT NULL,
    name                TEXT NOT NULL,
    runs                INTEGER NOT NULL DEFAULT 0,
    passes              INTEGER NOT NULL DEFAULT 0,
    failures            INTEGER NOT NULL DEFAULT 0,
    flips               INTEGER NOT NULL DEFAULT 0,
    commits             INTEGER NOT NULL DEFAULT 0,
    flaky_commits       INTEGER NOT NULL DEFAULT 0,
    flaky_failures      INTEGER NOT NULL DEFAULT 0,
    last_failed         INTEGER,
    first_seen          INTEGER,
    last_seen           INTEGER,
    last_failure_run_id INTEGER,
    last_failure_at     INTEGER,
    first_seen_flaky    INTEGER
);
INSERT INTO tests_v16 (id, repository_id, context, name, runs, passes, failures, flips, commits, flaky_commits,
                       flaky_failures, last_failed, first_seen, last_seen, last_failure_run_id, last_failure_at,
                       first_seen_flaky)
    SELECT id, repository_id, context, name, runs, passes, failures, flips, commits, flaky_commits,
           flaky_failures, last_failed, first_seen, last_seen, last_failure_run_id, last_failure_at,
           first_seen_flaky
    FROM tests ORDER BY id;
DROP TABLE tests;
ALTER TABLE tests_v16 RENAME TO tests;
CREATE UNIQUE INDEX tests_name ON tests (repository_id, context, name);
CREATE VIEW test_results AS
    SELECT res.run_id, res.test_id AS id, t.name,
           CASE res.outcome WHEN 0 THEN 'passed' WHEN 1 THEN 'failed' WHEN 2 THEN 'errored' ELSE 'skipped' END
               AS outcome,
           res.duration_seconds, res.retries, coalesce(res.retry_reasons, '[]') AS retry_reasons, res.message
    FROM results res JOIN tests t ON t.id = res.test_id;
CREATE TRIGGER test_results_insert INSTEAD OF INSERT ON test_results BEGIN
    INSERT OR IGNORE INTO tests (repository_id, context, name)
        SELECT repository_id, context, NEW.name FROM runs WHERE id = NEW.run_id;
    INSERT INTO results (run_id, test_id, outcome, duration_seconds, retries, retry_reasons, message)
        SELECT NEW.run_id, t.id,
               CASE NEW.outcome WHEN 'passed' THEN 0 WHEN 'failed' THEN 1 WHEN 'skipped' THEN 3 ELSE 2 END,
               NEW.duration_seconds, coalesce(NEW.retries, 0), nullif(NEW.retry_reasons, '[]'), NEW.message
        FROM runs r JOIN tests t ON t.repository_id = r.repository_id AND t.context = r.context AND t.name = NEW.name
        WHERE r.id = NEW.run_id;
END;
"#,
];

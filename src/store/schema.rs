//! Versioned migrations. Each entry runs once, in order, inside a transaction;
//! `PRAGMA user_version` records how far a database has come. Never edit a
//! released migration: add a new one.

pub const MIGRATIONS: &[&str] = &[
    // 1: the domain model of DESIGN.md §2 and the persisted metric state.
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
    // 5: what the drill-down UI (src/store/ui.rs) reads fast on a million runs:
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
    // 11 (the lead's numbering; another branch adds 10, so this entry follows
    // it on merge): one repository's bad events of one SLO, newest first, for
    // /slos/{slo}/events?repository= without walking every repository's events.
    r#"
CREATE INDEX slo_events_repository ON slo_events (slo, repository_id, good, at);
"#,
];

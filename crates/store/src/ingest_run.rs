//! Storing a run: redaction and the content hash ([`Prepared`]), finding the
//! stored run a report is about, storing it with its tests, reports and
//! failures, and counting what it newly makes final. `Store::ingest_run` for
//! one run; `bulk.rs` and `fresh.rs` store many through `ingest_in` and
//! `ingest_checked`.

use crate::counting::{Counting, count_run, counted_after, data_quality, event_ms, store_failures};
use crate::error::StoreError;
use crate::fresh_runs::FreshRuns;
use crate::policy::{Policy, moves_live_counters};
use crate::{Store, plausible, results, revision, to_ms, upsert_repository};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{NewRun, RunState, Trigger};
use rusqlite::{CachedStatement, Connection, OptionalExtension, params};
use serde::Serialize;

/// What an ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    Created,
    Updated,
    /// An identical replay (or a part with nothing new): nothing changed.
    Unchanged,
    /// The run is finished and the report contradicts it: nothing changed
    /// (`Ingested::differing` names the fields; counted as a data-quality
    /// rejection, reason `finished_run_changed`).
    Conflict,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ingested {
    pub id: i64,
    pub status: IngestStatus,
    /// With [`IngestStatus::Conflict`]: the fields in which the report
    /// differs from the finished run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differing: Vec<&'static str>,
}

impl Ingested {
    pub fn new(id: i64, status: IngestStatus) -> Ingested {
        Ingested {
            id,
            status,
            differing: Vec::new(),
        }
    }
}

pub use crate::content_hash::content_hash;

/// A new run's row (the flags counting sets go in with it: see `counted_after`).
pub(crate) const INSERT_RUN: &str = "INSERT INTO runs (repository_id, stored_external_id, context, commit_sha,
        attempt, trigger_code, state_code, queued_at, started_at, finished_at, stored_url, log_url, change_id,
        source_code, content_digest, created_at, updated_at, attempt_group, trigger_pending, url_in_id,
        external_key, id_form, queue_counted, final_counted)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16, ?17, ?18, ?19, ?20, ?21,
        ?22, ?23)";

/// The statements a fresh load runs for each run and each test result,
/// prepared once per batch of runs (a statement taken from the connection's
/// cache for each run would hash its SQL text twice, to look it up and to
/// put it back: a few percent of a 1 M-run load's storing thread).
pub(crate) struct Inserts<'c> {
    /// [`INSERT_RUN`].
    pub(crate) run: CachedStatement<'c>,
    /// `staging::INSERT_RESULT`.
    pub(crate) result: CachedStatement<'c>,
    /// `staging::INSERT_TEST_EVENT`.
    pub(crate) test_event: CachedStatement<'c>,
}

impl<'c> Inserts<'c> {
    pub(crate) fn prepare(tx: &'c Connection) -> rusqlite::Result<Inserts<'c>> {
        Ok(Inserts {
            run: tx.prepare_cached(INSERT_RUN)?,
            result: tx.prepare_cached(crate::staging::INSERT_RESULT)?,
            test_event: tx.prepare_cached(crate::staging::INSERT_TEST_EVENT)?,
        })
    }
}

/// A fresh load as `ingest_checked` sees it: what it remembers, and the
/// statements of the batch being stored.
pub(crate) struct Fresh<'r, 'c> {
    pub(crate) runs: &'r mut FreshRuns,
    pub(crate) inserts: &'r mut Inserts<'c>,
    /// The run's [`Prepared::external_key`].
    pub(crate) external_key: Option<i64>,
}

/// A run's external id as the SQLite store indexes it (`runs.external_key`,
/// migration 14): the first 8 bytes of the SHA-256 of the id's UTF-8 bytes,
/// read as a big-endian signed 64-bit integer. The unique index
/// `runs_external` holds (repository, key) instead of the id itself (a
/// Cockpit id, `cockpit:<log url>`, is ~110 bytes), and every lookup compares
/// the id too. Two different ids of one repository with the same key (odds
/// about n²/2⁶⁵ for n runs: 3·10⁻⁸ at a million) cannot both be stored: the
/// second is refused with an error naming both ids (`key_collision`).
/// Fixed: changing it needs a migration that computes every stored key again.
pub fn external_key(external_id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(external_id.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// The start every id of [`stored_external_id`]'s forms 1 and 2 has: `import
/// cockpit`'s `cockpit:<log url>` on Cockpit's log host. Migration 14 spells
/// the same text.
const COCKPIT_LOG_ID: &str = "cockpit:https://cockpit-logs.us-east-1.linodeobjects.com/";
const LOG_HTML: &str = "/log.html";

/// An external id as `runs` keeps it (migration 14): (`id_form`,
/// `stored_external_id`). Form 1 is [`COCKPIT_LOG_ID`]`<path>/log.html`
/// stored as `<path>`, form 2 [`COCKPIT_LOG_ID`]`<rest>` as `<rest>`, form 0
/// any other id, whole. `runs.external_id` gives the id back.
pub(crate) fn stored_external_id(external_id: &str) -> (i64, &str) {
    match external_id.strip_prefix(COCKPIT_LOG_ID) {
        Some(rest) => match rest.strip_suffix(LOG_HTML) {
            Some(path) => (1, path),
            None => (2, rest),
        },
        None => (0, external_id),
    }
}

/// The texts `runs.trigger`, `state` and `source` store as a small integer
/// code, their position here (migration 15, whose virtual columns give them
/// back; any other text is stored as it is).
pub(crate) const TRIGGER_CODES: [&str; 5] = ["pull_request", "push", "schedule", "manual", "other"];
pub(crate) const STATE_CODES: [&str; 8] = [
    "success",
    "failure",
    "error",
    "cancelled",
    "timed_out",
    "skipped",
    "pending",
    "running",
];
pub(crate) const SOURCE_CODES: [&str; 6] =
    ["cockpit-import", "github", "gitlab", "api", "cli", "demo"];

/// A text as a `*_code` column keeps it: its code in `codes`, or itself.
pub(crate) fn coded(text: &str, codes: &[&str]) -> rusqlite::types::Value {
    match codes.iter().position(|c| *c == text) {
        Some(i) => rusqlite::types::Value::Integer(i as i64),
        None => rusqlite::types::Value::Text(text.to_string()),
    }
}

/// A content hash as `runs.content_digest` keeps it (migration 14): the 32
/// lowercase hex digits of [`content_hash`] as their 16 bytes, any other
/// text as it is (`runs.content_hash` gives back the text either way).
pub(crate) fn stored_digest(hash: &str) -> rusqlite::types::Value {
    let hex = hash.as_bytes();
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if hex.len() == 32 {
        let bytes: Option<Vec<u8>> = hex
            .chunks(2)
            .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
            .collect();
        if let Some(bytes) = bytes {
            return rusqlite::types::Value::Blob(bytes);
        }
    }
    rusqlite::types::Value::Text(hash.to_string())
}

/// A run with an external id could not be inserted: when another run of its
/// repository holds a different id with the same [`external_key`], the error
/// says so (the database's own error names only the key's columns).
fn key_collision(
    tx: &Connection,
    repository_id: i64,
    external_id: &str,
    error: rusqlite::Error,
) -> StoreError {
    let is_constraint = matches!(&error, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation);
    if is_constraint {
        let other: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, external_id FROM runs WHERE repository_id = ?1 AND external_key = ?2",
                params![repository_id, external_key(external_id)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ok()
            .flatten();
        if let Some((id, other)) = other
            && other != external_id
        {
            return StoreError::Refused(format!(
                "external id {external_id:?} has the same 64-bit key as the id {other:?} of stored run {id} \
                 in its repository (runs.external_key, a hash collision): not stored; send the run under \
                 another id"
            ));
        }
    }
    StoreError::Sqlite(error)
}

/// Whether a run's url is its external id after the id's prefix
/// (`<prefix>:<url>`, the prefix up to the first ':'): then the url is not
/// stored again (`runs.url` gives it back from the id, migration 12, whose
/// UPDATE applies the same rule to runs stored before).
pub fn url_in_id(external_id: Option<&str>, url: Option<&str>) -> bool {
    match (external_id, url) {
        (Some(id), Some(url)) => id.split_once(':').is_some_and(|(_, rest)| rest == url),
        _ => false,
    }
}

/// A stored run whose identity matched an ingested one.
pub(crate) struct Existing {
    row: revision::Row,
    hash: String,
    trigger: Trigger,
    queue_counted: bool,
    final_counted: bool,
    trigger_pending: bool,
}

/// The stored run a report is about: with an external id, the run with that
/// id in its repository (and nothing else); without one, the run without an
/// external id with the same context, commit, attempt group and attempt.
pub(crate) fn find_existing(
    tx: &Connection,
    repository_id: i64,
    run: &NewRun,
    group: &str,
) -> rusqlite::Result<Option<Existing>> {
    const COLUMNS: &str = "r.id, r.content_hash, r.trigger, r.queue_counted, r.final_counted, r.trigger_pending,
        r.context, r.commit_sha, r.attempt_group, r.attempt, r.state, r.queued_at, r.started_at, r.finished_at,
        r.url, r.log_url, (SELECT number FROM changes c WHERE c.id = r.change_id)";
    let read = |r: &rusqlite::Row<'_>| {
        let trigger: String = r.get(2)?;
        Ok(Existing {
            hash: r.get(1)?,
            trigger: trigger.parse().unwrap_or(Trigger::Other),
            queue_counted: r.get(3)?,
            final_counted: r.get(4)?,
            trigger_pending: r.get(5)?,
            row: revision::Row {
                id: r.get(0)?,
                context: r.get(6)?,
                commit: r.get(7)?,
                attempt_group: r.get(8)?,
                attempt: r.get(9)?,
                trigger,
                trigger_pending: r.get(5)?,
                state: r.get(10)?,
                times: [r.get(11)?, r.get(12)?, r.get(13)?],
                url: r.get(14)?,
                log_url: r.get(15)?,
                change: r.get(16)?,
            },
        })
    };
    match &run.external_id {
        Some(external_id) => tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs r
                 WHERE r.repository_id = ?1 AND r.external_key = ?3 AND r.external_id = ?2"
            ))?
            .query_row(
                params![repository_id, external_id, external_key(external_id)],
                read,
            )
            .optional(),
        None => tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs r
                 WHERE r.repository_id = ?1 AND r.external_key IS NULL AND r.context = ?2
                   AND r.commit_sha = ?3 AND r.attempt_group = ?4 AND r.attempt = ?5"
            ))?
            .query_row(
                params![repository_id, run.context, run.commit, group, run.attempt],
                read,
            )
            .optional(),
    }
}

/// A run as the store keeps it, computed without the database (so a bulk
/// load can compute it on another thread): redacted, impossible future times
/// removed, and its content hash.
pub struct Prepared {
    pub run: NewRun,
    pub(crate) hash: String,
    pub(crate) future_times: bool,
    /// [`external_key`] of the run's external id (a hash: computed here, on
    /// the preparing thread, rather than by the storing one).
    pub(crate) external_key: Option<i64>,
}

impl Prepared {
    /// Its content hash ([`content_hash`] of the run as stored).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Whether impossible future times were removed from the report (a
    /// data-quality count).
    pub fn future_times(&self) -> bool {
        self.future_times
    }

    pub fn new(report: NewRun, policy: &Policy, now: DateTime<Utc>) -> Prepared {
        // Nothing a run carries is stored with a credential in it (src/redact.rs).
        let mut report = report;
        policy.redactor.redact_run_in_place(&mut report);
        let plausible =
            plausible::without_future_times(&report, to_ms(now) + policy.max_future_skew_ms);
        let future_times = plausible.is_some();
        let run = plausible.unwrap_or(report);
        Prepared {
            hash: content_hash(&run),
            external_key: run.external_id.as_deref().map(external_key),
            run,
            future_times,
        }
    }
}

pub(crate) fn ingest_in(
    tx: &Connection,
    report: &NewRun,
    policy: &Policy,
    now_ms: i64,
) -> Result<Ingested, StoreError> {
    // Nothing a run carries is stored with a credential in it (src/redact.rs).
    let redacted = policy.redactor.redact_run(report);
    let report = redacted.as_ref().unwrap_or(report);
    let plausible = plausible::without_future_times(report, now_ms + policy.max_future_skew_ms);
    let future_times = plausible.is_some();
    let report = plausible.as_ref().unwrap_or(report);
    let hash = content_hash(report);
    ingest_checked(tx, report, &hash, future_times, policy, now_ms, None)
}

/// [`ingest_in`] of a run already redacted and checked (`hash` its content
/// hash). `fresh`: a fresh bulk load (`fresh.rs`) — the store holds no run
/// this one could be, what the load wrote before is remembered (`fresh_runs.rs`:
/// the live flag, repositories, changes), and its test results are staged
/// for the load's set-based counting instead of counted here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ingest_checked(
    tx: &Connection,
    report: &NewRun,
    hash: &str,
    future_times: bool,
    policy: &Policy,
    now_ms: i64,
    mut fresh: Option<Fresh<'_, '_>>,
) -> Result<Ingested, StoreError> {
    let repo = &report.repository;
    // A fresh load knows these without asking (`fresh_runs.rs`).
    let (live, repository_id) = match fresh.as_mut() {
        Some(f) => (f.runs.live, f.runs.repository(tx, repo.forge, &repo.path)?),
        None => (
            moves_live_counters(tx, policy)?,
            upsert_repository(tx, repo.forge, &repo.path)?,
        ),
    };
    let group = report.attempt_group.as_deref().unwrap_or("");

    let existing = if fresh.is_some() {
        None
    } else {
        find_existing(tx, repository_id, report, group)?
    };
    if let Some(e) = &existing
        && e.hash == hash
    {
        return Ok(Ingested::new(e.row.id, IngestStatus::Unchanged));
    }
    // A finished run is immutable (revision.rs): what the report may still add.
    let merged;
    let run = match &existing {
        Some(e) if e.row.state.parse().is_ok_and(RunState::is_terminal) => {
            let stored = revision::load(tx, &e.row, report)?;
            match revision::judge(&stored, report) {
                revision::Verdict::Unchanged => {
                    return Ok(Ingested::new(e.row.id, IngestStatus::Unchanged));
                }
                revision::Verdict::Conflict(fields) => {
                    tracing::warn!(
                        run = e.row.id,
                        repository = %repo.path,
                        external_id = report.external_id.as_deref().unwrap_or(""),
                        source = %report.source,
                        differing = %fields.join(","),
                        "a report contradicts a finished run: kept as stored"
                    );
                    data_quality(tx, "finished_run_changed")?;
                    return Ok(Ingested {
                        id: e.row.id,
                        status: IngestStatus::Conflict,
                        differing: fields,
                    });
                }
                revision::Verdict::Update(m) => {
                    merged = *m;
                    &merged
                }
            }
        }
        _ => report,
    };
    // A trigger, once decided, stays: the run's counters carry it as a label.
    let (trigger, trigger_pending) = match &existing {
        Some(e) if !e.trigger_pending && run.trigger_pending => (e.trigger, false),
        _ => (run.trigger, run.trigger_pending),
    };

    let change_id = match &run.change {
        None => None,
        Some(change) => {
            let upsert = |tx: &Connection| -> rusqlite::Result<(i64, bool, bool)> {
                tx.prepare_cached(
                    "INSERT INTO changes (repository_id, number, merged_at, last_activity) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (repository_id, number) DO UPDATE SET
                        merged_at = coalesce(changes.merged_at, excluded.merged_at),
                        last_activity = excluded.last_activity",
                )?
                .execute(params![repository_id, change.number, change.merged_at.map(to_ms), now_ms])?;
                tx.prepare_cached(
                    "SELECT id, decided_at IS NOT NULL, merged_at IS NOT NULL FROM changes
                     WHERE repository_id = ?1 AND number = ?2",
                )?
                .query_row(params![repository_id, change.number], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
            };
            let (id, decided) = match fresh.as_mut() {
                Some(f) => f.runs.change(tx, repository_id, change, upsert)?,
                None => {
                    let (id, decided, _) = upsert(tx)?;
                    (id, decided)
                }
            };
            if decided && existing.is_none() {
                data_quality(tx, "run_after_change_decided")?;
            }
            Some(id)
        }
    };

    // The url is stored once when the external id holds it (migration 12).
    let url_in_id = url_in_id(run.external_id.as_deref(), run.url.as_deref());
    let stored_url = if url_in_id { None } else { run.url.as_deref() };
    // The id's key and the hash's bytes (migration 14).
    // A fresh load's run is the report as prepared (no stored run to merge).
    let key = match &fresh {
        Some(f) => f.external_key,
        None => run.external_id.as_deref().map(external_key),
    };
    let (id_form, stored_id) = match run.external_id.as_deref().map(stored_external_id) {
        Some((form, id)) => (form, Some(id)),
        None => (0, None),
    };
    let digest = stored_digest(hash);
    let (trigger_code, state_code, source_code) = (
        coded(trigger.as_str(), &TRIGGER_CODES),
        coded(run.state.as_str(), &STATE_CODES),
        coded(&run.source, &SOURCE_CODES),
    );
    let values = params![
        repository_id,
        stored_id,
        run.context,
        run.commit,
        run.attempt,
        trigger_code,
        state_code,
        run.queued_at.map(to_ms),
        run.started_at.map(to_ms),
        run.finished_at.map(to_ms),
        stored_url,
        run.log_url,
        change_id,
        source_code,
        digest,
        now_ms,
        group,
        trigger_pending,
        url_in_id,
        key,
        id_form,
    ];
    let (run_id, status, queue_counted, final_counted) = match existing {
        Some(e) => {
            tx.prepare_cached(
                "UPDATE runs SET repository_id = ?1,
                    stored_external_id = CASE WHEN ?2 IS NULL THEN stored_external_id ELSE ?2 END,
                    id_form = CASE WHEN ?2 IS NULL THEN id_form ELSE ?21 END, context = ?3,
                    commit_sha = ?4, attempt = ?5, trigger_code = ?6, state_code = ?7, queued_at = ?8,
                    started_at = ?9, finished_at = ?10, stored_url = ?11, log_url = ?12,
                    change_id = coalesce(?13, change_id), source_code = ?14, content_digest = ?15, updated_at = ?16, attempt_group = ?17,
                    trigger_pending = ?18, url_in_id = ?19, external_key = coalesce(?20, external_key)
                 WHERE id = ?22",
            )?
            .execute(rusqlite::params_from_iter(values.iter().copied().chain([&e.row.id as &dyn rusqlite::ToSql])))?;
            // An update replaces what it carries; a state-only update (a
            // webhook saying "completed") keeps the tests and reports stored before.
            if !run.reports.is_empty() {
                tx.execute("DELETE FROM reports WHERE run_id = ?1", [e.row.id])?;
            }
            if !run.dependencies.is_empty() {
                tx.execute(
                    "DELETE FROM dependency_snapshots WHERE run_id = ?1",
                    [e.row.id],
                )?;
            }
            (
                e.row.id,
                IngestStatus::Updated,
                e.queue_counted,
                e.final_counted,
            )
        }
        None => {
            // Stored with the flags counting sets below (see `counted_after`),
            // so the row is written once.
            let (queue, done) = counted_after(run, trigger_pending);
            let row = || {
                rusqlite::params_from_iter(
                    values
                        .iter()
                        .copied()
                        .chain([&queue as &dyn rusqlite::ToSql, &done]),
                )
            };
            match fresh.as_mut() {
                Some(f) => f.inserts.run.execute(row()),
                None => tx.prepare_cached(INSERT_RUN)?.execute(row()),
            }
            .map_err(|e| match &run.external_id {
                Some(id) => key_collision(tx, repository_id, id, e),
                None => StoreError::Sqlite(e),
            })?;
            (tx.last_insert_rowid(), IngestStatus::Created, false, false)
        }
    };

    // (Taken from the statement cache only when there is a row to write:
    // most runs have none.)
    if !run.dependencies.is_empty() {
        let mut insert = tx.prepare_cached(
            "INSERT INTO dependency_snapshots (run_id, package, version) VALUES (?1, ?2, ?3)",
        )?;
        for (package, version) in &run.dependencies {
            insert.execute(params![run_id, package, version])?;
        }
    }
    if !run.reports.is_empty() {
        let mut insert = tx.prepare_cached(
            "INSERT INTO reports (run_id, format, name, content) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for r in &run.reports {
            insert.execute(params![run_id, r.format, r.name, r.content])?;
        }
    }

    let event_ms = event_ms(run.queued_at, run.started_at, run.finished_at, now_ms);
    // A new run has no failures to replace: only store what it brings.
    if !run.failures.is_empty() {
        store_failures(
            tx,
            run_id,
            &repo.path,
            &run.failures,
            // A merged update stores other failures than the report's.
            event_ms,
            live,
            status == IngestStatus::Updated,
            fresh.as_mut().map(|f| &mut f.runs.fingerprints),
        )?;
    }

    // Counters carry the trigger as a label: a run whose trigger is not
    // decided yet is counted when it is (Store::decide_trigger, or settle).
    if !trigger_pending {
        count_run(
            tx,
            &Counting {
                run_id,
                repository_id,
                repository: &repo.path,
                context: &run.context,
                attempt: run.attempt,
                trigger,
                state: run.state,
                queued_at: run.queued_at,
                started_at: run.started_at,
                finished_at: run.finished_at,
                queue_counted,
                final_counted,
                row_flags: if status == IngestStatus::Created {
                    counted_after(run, trigger_pending)
                } else {
                    (queue_counted, final_counted)
                },
            },
            policy,
            live,
            now_ms,
        )?;
    }

    // An update replaces the tests it carries; a state-only update (no
    // tests) keeps the ones stored before.
    let of = results::RunOf {
        run_id,
        repository_id,
        repository: &repo.path,
        context: &run.context,
        commit: &run.commit,
        at_ms: event_ms,
    };
    match fresh {
        Some(f) => f.runs.staging.stage(
            tx,
            &mut f.inserts.result,
            &mut f.inserts.test_event,
            &of,
            &run.tests,
            live,
        )?,
        None => results::store(tx, &of, &run.tests, status == IngestStatus::Updated, live)?,
    }

    if future_times {
        data_quality(tx, "future_time")?;
    }
    Ok(Ingested::new(run_id, status))
}

impl Store {
    /// Store one run with its tests, reports and failures, and count what it
    /// newly makes final. A replay of identical content changes nothing.
    pub fn ingest_run(
        &mut self,
        run: &NewRun,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError> {
        let tx = self.write_tx()?;
        let ingested = ingest_in(&tx, run, policy, to_ms(now))?;
        tx.commit()?;
        Ok(ingested)
    }

    /// Count a report refused before it reached the store (an impossible
    /// time, `ingest::validate`) in `ci_exporter_data_quality_rejections_total`.
    pub fn count_rejection(&mut self, reason: &str) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        data_quality(&tx, reason)?;
        tx.commit()?;
        Ok(())
    }
}

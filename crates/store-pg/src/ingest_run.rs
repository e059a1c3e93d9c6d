//! Storing a run on PostgreSQL: the SQLite store's `ingest_run.rs`, with
//! the same signature and answers. A run is found by its identity (its external id in its
//! repository, else context, commit, attempt group and attempt among runs
//! without one), created, or updated while it is not finished; an identical
//! replay changes nothing; its queue time and final state are counted once
//! (`counting::count_run`), in the same transaction, with its failures
//! (`failures.rs`), test results and the mark of the new ones
//! (`results.rs`; their per-test counters are folded after the run,
//! `fold.rs`), reports, dependencies and change. A new report of a finished run is
//! judged by the SQLite store's own rules (`ci_slo_store::revision`, the
//! stored run loaded by `revision.rs`): a part may add what the run did not
//! know, a contradiction is a `Conflict` naming the fields and counted as a
//! data-quality rejection (`finished_run_changed`), and nothing else changes.
//! A report that changes a stored run is judged and counted against the
//! run locked (`FOR UPDATE`): two replicas storing the same news at once
//! store and count it once.

use crate::concurrent::lock_run;
use crate::counting::{
    Counting, count_run, counted_after, data_quality, event_ms, moves_live_counters,
};
use crate::failures::store_failures;
use crate::results::{self, RunOf};
use crate::revision::{self, Existing};
use crate::statements::Sql;
use crate::{PgStore, PgStoreError};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{Forge, NewRun, RunState};
// The content hash and the "url held by the external id" rule are the SQLite
// store's own functions, so both engines decide a replay and a stored url
// the same way.
use ci_slo_store::revision::{Verdict, judge};
use ci_slo_store::{IngestStatus, Ingested, Policy, Prepared, url_in_id};

/// A known change's row moved by a run of it: its merge time (kept once
/// known) and its last activity (what settling waits on). A run new to the
/// store that arrives after the change was decided is a data-quality event.
fn touch_change(
    tx: &mut impl Sql,
    change_id: i64,
    merged_at: Option<i64>,
    now_ms: i64,
    new_run: bool,
) -> Result<(), postgres::Error> {
    // The run's row references the change (a key-share lock on it, which
    // retention's delete would wait for): the row is there.
    let decided: bool = tx
        .query_one(
            "UPDATE changes SET merged_at = coalesce(merged_at, $2), last_activity = $3
             WHERE id = $1 RETURNING decided_at IS NOT NULL",
            &[&change_id, &merged_at, &now_ms],
        )?
        .get(0);
    if decided && new_run {
        data_quality(tx, "run_after_change_decided")?;
    }
    Ok(())
}

/// The repository's id, created if new. Looked up first: an insert that
/// meets a conflict still takes a number from the identity sequence, and
/// the ids should follow SQLite's (1, 2, 3 in order of first sight).
pub(crate) fn upsert_repository(
    tx: &mut impl Sql,
    forge: Forge,
    path: &str,
) -> Result<i64, postgres::Error> {
    let select = "SELECT id FROM repositories WHERE forge = $1 AND path = $2";
    if let Some(row) = tx.query_opt(select, &[&forge.as_str(), &path])? {
        return Ok(row.get(0));
    }
    match tx.query_opt(
        "INSERT INTO repositories (forge, path) VALUES ($1, $2)
         ON CONFLICT (forge, path) DO NOTHING RETURNING id",
        &[&forge.as_str(), &path],
    )? {
        Some(row) => Ok(row.get(0)),
        // Another replica created it meanwhile.
        None => Ok(tx.query_one(select, &[&forge.as_str(), &path])?.get(0)),
    }
}

fn find_existing(
    tx: &mut impl Sql,
    repository_id: i64,
    run: &NewRun,
    group: &str,
) -> Result<Option<Existing>, postgres::Error> {
    let row = match &run.external_id {
        Some(external_id) => tx.query_opt(
            "SELECT id, content_hash, state, trigger, trigger_pending, queue_counted, final_counted, context,
                commit_sha, attempt_group, attempt, queued_at, started_at, finished_at, url, log_url,
                (SELECT number FROM changes c WHERE c.id = change_id)
             FROM runs WHERE repository_id = $1 AND external_id = $2",
            &[&repository_id, external_id],
        )?,
        None => tx.query_opt(
            "SELECT id, content_hash, state, trigger, trigger_pending, queue_counted, final_counted, context,
                commit_sha, attempt_group, attempt, queued_at, started_at, finished_at, url, log_url,
                (SELECT number FROM changes c WHERE c.id = change_id)
             FROM runs
             WHERE repository_id = $1 AND external_id IS NULL AND context = $2
               AND commit_sha = $3 AND attempt_group = $4 AND attempt = $5",
            &[
                &repository_id,
                &run.context,
                &run.commit,
                &group,
                &i64::from(run.attempt),
            ],
        )?,
    };
    Ok(row.map(|r| Existing::read(&r, 0)))
}

/// The stored run `id` again, locked for the rest of the transaction: a
/// report that changes a stored run is judged and counted against what the
/// run is once no other replica is changing it (the second of two replicas
/// storing the same news waits for the first, then finds it stored).
/// None when it was deleted meanwhile (retention).
fn lock_existing(tx: &mut impl Sql, id: i64) -> Result<Option<Existing>, postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT id, content_hash, state, trigger, trigger_pending, queue_counted, final_counted, context,
                commit_sha, attempt_group, attempt, queued_at, started_at, finished_at, url, log_url,
                (SELECT number FROM changes c WHERE c.id = change_id)
             FROM runs WHERE id = $1 FOR UPDATE",
            &[&id],
        )?
        .map(|r| Existing::read(&r, 0)))
}

/// The repository's id and the stored run, in one statement when the
/// repository is known; else the repository created (and the run looked
/// for, in case another replica stored both meanwhile).
fn find_run(
    tx: &mut impl Sql,
    forge: Forge,
    path: &str,
    run: &NewRun,
    group: &str,
) -> Result<(i64, Option<Existing>), postgres::Error> {
    let row = match &run.external_id {
        Some(external_id) => tx.query_opt(
            "SELECT r.id, x.id, x.content_hash, x.state, x.trigger, x.trigger_pending, x.queue_counted,
                x.final_counted, x.context, x.commit_sha, x.attempt_group, x.attempt, x.queued_at, x.started_at,
                x.finished_at, x.url, x.log_url, (SELECT number FROM changes c WHERE c.id = x.change_id)
             FROM repositories r LEFT JOIN runs x ON x.repository_id = r.id AND x.external_id = $3
             WHERE r.forge = $1 AND r.path = $2",
            &[&forge.as_str(), &path, external_id],
        )?,
        None => tx.query_opt(
            "SELECT r.id, x.id, x.content_hash, x.state, x.trigger, x.trigger_pending, x.queue_counted,
                x.final_counted, x.context, x.commit_sha, x.attempt_group, x.attempt, x.queued_at, x.started_at,
                x.finished_at, x.url, x.log_url, (SELECT number FROM changes c WHERE c.id = x.change_id)
             FROM repositories r LEFT JOIN runs x ON x.repository_id = r.id AND x.external_id IS NULL
                AND x.context = $3 AND x.commit_sha = $4 AND x.attempt_group = $5 AND x.attempt = $6
             WHERE r.forge = $1 AND r.path = $2",
            &[
                &forge.as_str(),
                &path,
                &run.context,
                &run.commit,
                &group,
                &i64::from(run.attempt),
            ],
        )?,
    };
    match row {
        Some(r) => {
            let existing = r
                .get::<_, Option<i64>>(1)
                .is_some()
                .then(|| Existing::read(&r, 1));
            Ok((r.get(0), existing))
        }
        None => {
            let repository_id = upsert_repository(tx, forge, path)?;
            let existing = find_existing(tx, repository_id, run, group)?;
            Ok((repository_id, existing))
        }
    }
}

impl PgStore {
    /// Store one run and count what it newly makes known, in one
    /// transaction; as the SQLite store's `Store::ingest_run`.
    /// Replicas: see `concurrent.rs` (the run's identity locked first; run
    /// again when it loses a conflict).
    pub fn ingest_run(
        &mut self,
        run: &NewRun,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Ingested, PgStoreError> {
        // Redaction, impossible future times and the content hash, as the
        // SQLite store does: once, whatever number of attempts it takes.
        let prepared = Prepared::new(run.clone(), policy, now);
        self.retrying(|store| store.ingest_once(&prepared, policy, now))
    }

    fn ingest_once(
        &mut self,
        prepared: &Prepared,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Ingested, PgStoreError> {
        let now_ms = now.timestamp_millis();
        let future_times = prepared.future_times();
        let run = &prepared.run;
        let hash = prepared.hash().to_owned();

        let repo = &run.repository;
        let group = run.attempt_group.as_deref().unwrap_or("");
        let mut tx = self.write_tx()?;
        lock_run(&mut tx, repo.forge, &repo.path, run, group)?;
        let live = moves_live_counters(&mut tx, policy)?;
        let (repository_id, existing) = find_run(&mut tx, repo.forge, &repo.path, run, group)?;
        if let Some(e) = &existing
            && e.hash == hash
        {
            return Ok(Ingested::new(e.id, IngestStatus::Unchanged));
        }
        // News of a stored run: judged and counted against it as it is once
        // locked (another replica may have stored the same news meanwhile).
        let existing = match existing {
            Some(e) => lock_existing(&mut tx, e.id)?,
            None => None,
        };
        if let Some(e) = &existing
            && e.hash == hash
        {
            return Ok(Ingested::new(e.id, IngestStatus::Unchanged));
        }
        // A finished run is immutable: what the report may still add, by
        // the SQLite store's rules (ci_slo_store::revision).
        let merged;
        let run = match &existing {
            Some(e) if e.state.parse().is_ok_and(RunState::is_terminal) => {
                let stored = revision::load(&mut tx, e, run)?;
                match judge(&stored, run) {
                    Verdict::Unchanged => {
                        return Ok(Ingested::new(e.id, IngestStatus::Unchanged));
                    }
                    Verdict::Conflict(fields) => {
                        tracing::warn!(
                            run = e.id,
                            repository = %repo.path,
                            external_id = run.external_id.as_deref().unwrap_or(""),
                            source = %run.source,
                            differing = %fields.join(","),
                            "a report contradicts a finished run: kept as stored"
                        );
                        data_quality(&mut tx, "finished_run_changed")?;
                        tx.commit()?;
                        return Ok(Ingested {
                            id: e.id,
                            status: IngestStatus::Conflict,
                            differing: fields,
                        });
                    }
                    Verdict::Update(m) => {
                        merged = *m;
                        &merged
                    }
                }
            }
            _ => run,
        };
        // A trigger, once decided, stays.
        let (trigger, trigger_pending) = match &existing {
            Some(e) if !e.trigger_pending && run.trigger_pending => (e.trigger, false),
            _ => (run.trigger, run.trigger_pending),
        };
        let ms = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
        // A change known to the store is only read here; its row (shared
        // by every run of the change, in every context) is updated late,
        // after the run's results (`touch_change`), so that concurrent runs
        // of one pull request wait for each other only at their end
        // (`concurrent.rs`). A new change is created now.
        let mut touch: Option<(i64, Option<i64>)> = None;
        let change_id: Option<i64> = match &run.change {
            None => None,
            Some(change) => {
                let known = tx.query_opt(
                    "SELECT id FROM changes WHERE repository_id = $1 AND number = $2",
                    &[&repository_id, &change.number],
                )?;
                match known {
                    Some(row) => {
                        let id: i64 = row.get(0);
                        touch = Some((id, ms(change.merged_at)));
                        Some(id)
                    }
                    None => {
                        // An insert that meets a conflict (another replica
                        // created it meanwhile) still takes a number from
                        // the identity sequence: rare, and only then do ids
                        // stop following SQLite's.
                        let row = tx.query_one(
                            "INSERT INTO changes AS c (repository_id, number, merged_at, last_activity)
                             VALUES ($1, $2, $3, $4)
                             ON CONFLICT (repository_id, number) DO UPDATE SET
                                merged_at = coalesce(c.merged_at, excluded.merged_at),
                                last_activity = excluded.last_activity
                             RETURNING id, decided_at IS NOT NULL",
                            &[
                                &repository_id,
                                &change.number,
                                &ms(change.merged_at),
                                &now_ms,
                            ],
                        )?;
                        if row.get::<_, bool>(1) && existing.is_none() {
                            data_quality(&mut tx, "run_after_change_decided")?;
                        }
                        Some(row.get(0))
                    }
                }
            }
        };
        let (queued, started, finished) =
            (ms(run.queued_at), ms(run.started_at), ms(run.finished_at));
        let attempt = i64::from(run.attempt);
        let pending = i64::from(trigger_pending);
        // The url is stored once when the external id holds it (migration 2).
        let in_id = url_in_id(run.external_id.as_deref(), run.url.as_deref());
        let stored_url = if in_id { None } else { run.url.as_deref() };
        let url_in_id = i64::from(in_id);
        let (run_id, status, queue_counted, final_counted) = match &existing {
            Some(e) => {
                tx.execute(
                    "UPDATE runs SET external_id = coalesce($2, external_id), context = $3,
                        commit_sha = $4, attempt = $5, trigger = $6, state = $7, queued_at = $8,
                        started_at = $9, finished_at = $10, stored_url = $11, log_url = $12, source = $13,
                        content_hash = $14, updated_at = $15, attempt_group = $16, trigger_pending = $17,
                        change_id = coalesce($18, change_id), url_in_id = $19
                     WHERE id = $1",
                    &[
                        &e.id,
                        &run.external_id,
                        &run.context,
                        &run.commit,
                        &attempt,
                        &trigger.as_str(),
                        &run.state.as_str(),
                        &queued,
                        &started,
                        &finished,
                        &stored_url,
                        &run.log_url,
                        &run.source,
                        &hash,
                        &now_ms,
                        &group,
                        &pending,
                        &change_id,
                        &url_in_id,
                    ],
                )?;
                // An update replaces what it carries; a state-only update
                // keeps the reports and dependencies stored before.
                if !run.reports.is_empty() {
                    tx.execute("DELETE FROM reports WHERE run_id = $1", &[&e.id])?;
                }
                if !run.dependencies.is_empty() {
                    tx.execute(
                        "DELETE FROM dependency_snapshots WHERE run_id = $1",
                        &[&e.id],
                    )?;
                }
                (
                    e.id,
                    IngestStatus::Updated,
                    e.queue_counted,
                    e.final_counted,
                )
            }
            None => {
                let (queue, done) =
                    counted_after(run.started_at.is_some(), run.state, trigger_pending);
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO runs (repository_id, external_id, context, commit_sha, attempt, trigger,
                            state, queued_at, started_at, finished_at, stored_url, log_url, source, content_hash,
                            created_at, updated_at, attempt_group, trigger_pending, queue_counted, final_counted,
                            change_id, url_in_id)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16,
                            $17, $18, $19, $20, $21)
                         RETURNING id",
                        &[
                            &repository_id,
                            &run.external_id,
                            &run.context,
                            &run.commit,
                            &attempt,
                            &trigger.as_str(),
                            &run.state.as_str(),
                            &queued,
                            &started,
                            &finished,
                            &stored_url,
                            &run.log_url,
                            &run.source,
                            &hash,
                            &now_ms,
                            &group,
                            &pending,
                            &i64::from(queue),
                            &i64::from(done),
                            &change_id,
                            &url_in_id,
                        ],
                    )?
                    .get(0);
                (id, IngestStatus::Created, false, false)
            }
        };
        for (package, version) in &run.dependencies {
            tx.execute(
                "INSERT INTO dependency_snapshots (run_id, package, version) VALUES ($1, $2, $3)",
                &[&run_id, package, version],
            )?;
        }
        for r in &run.reports {
            tx.execute(
                "INSERT INTO reports (run_id, format, name, content) VALUES ($1, $2, $3, $4)",
                &[&run_id, &r.format, &r.name, &r.content],
            )?;
        }
        // An update replaces the tests it carries; a state-only update (no
        // tests) keeps the ones stored before.
        let of = RunOf {
            run_id,
            repository_id,
            repository: &repo.path,
            context: &run.context,
            commit: &run.commit,
            at_ms: event_ms(run.queued_at, run.started_at, run.finished_at, now_ms),
        };
        let late = results::store(
            &mut tx,
            &of,
            &run.tests,
            status == IngestStatus::Updated,
            live,
        )?;
        // Its failures after its results: their fingerprints' rows are
        // shared by every run that shows them, in any context, and locked
        // until the transaction ends (`concurrent.rs`). A new run has no
        // failures to replace: only store what it brings.
        if !run.failures.is_empty() {
            let at = event_ms(run.queued_at, run.started_at, run.finished_at, now_ms);
            store_failures(&mut tx, run_id, &repo.path, &run.failures, at, live)?;
        }
        if let Some((change_id, merged_at)) = touch {
            touch_change(&mut tx, change_id, merged_at, now_ms, existing.is_none())?;
        }
        late.write(&mut tx, &of)?;
        // The run's own counting after its results: the hourly rollup rows
        // it moves are shared by every run of its repository and hour, so
        // they are locked last, for the shortest time (`concurrent.rs`).
        if !trigger_pending {
            let row_flags = if status == IngestStatus::Created {
                counted_after(run.started_at.is_some(), run.state, trigger_pending)
            } else {
                (queue_counted, final_counted)
            };
            count_run(
                &mut tx,
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
                    row_flags,
                },
                policy,
                live,
                now_ms,
            )?;
        }
        if future_times {
            data_quality(&mut tx, "future_time")?;
        }
        tx.commit()?;
        Ok(Ingested::new(run_id, status))
    }
}

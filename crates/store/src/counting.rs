//! Counting what a run newly makes known, once each: SLO events (`slo_event`),
//! a run's queue time and final state (`count_run`), its failure classes
//! (`store_failures`), and data-quality rejections. Ingest and settling both
//! count here. During a fresh load (`fresh.rs`), [`SloEvents`] sends SLO
//! events to a scratch table instead.

use crate::policy::Policy;
use crate::{catalog, hourly, tally, to_ms};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{DataQualityIssue, FailureEvidence, NewRun, RunState, Trigger, durations};
use ci_slo_core::slo::{self, SloId};
use rusqlite::{Connection, params};
use tally::{ExemplarRef, Labels};

thread_local! {
    /// Whether a fresh load on this thread appends SLO events to `temp.fresh_slo`.
    static SLO_EVENTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether `slo_event` appends to `temp.fresh_slo` (a fresh load is storing).
fn appends_slo_events() -> bool {
    SLO_EVENTS.with(|f| f.get())
}

/// While alive, SLO events of other subjects than runs (a run's go to its
/// `run_events` row) go to `temp.fresh_slo`: their key is text, so
/// consecutive events would land all over `slo_events`; appended there
/// once, sorted, at the end of the load. Reset on drop (a
/// failed load rolls the scratch table back with it).
pub(crate) struct SloEvents;

impl SloEvents {
    pub(crate) fn start() -> SloEvents {
        SLO_EVENTS.with(|f| f.set(true));
        SloEvents
    }
}

impl Drop for SloEvents {
    fn drop(&mut self) {
        SLO_EVENTS.with(|f| f.set(false));
    }
}

/// The `run_events` columns (time, good) of the SLO events a run has
/// (subject `run:<id>`), None for the SLOs of other subjects.
pub(crate) fn run_event_columns(slo: SloId) -> Option<(&'static str, &'static str)> {
    match slo {
        SloId::QueueTime => Some(("queue_at", "queue_good")),
        SloId::RunTime => Some(("run_time_at", "run_time_good")),
        SloId::RunsCompleted => Some(("completed_at", "completed_good")),
        _ => None,
    }
}

/// Record an SLO event once; count it when it is new and live.
#[allow(clippy::too_many_arguments)]
pub(crate) fn slo_event(
    tx: &Connection,
    slo: SloId,
    subject: &str,
    repository_id: i64,
    repository: &str,
    at_ms: i64,
    good: bool,
    live: bool,
) -> rusqlite::Result<bool> {
    let run_id = subject
        .strip_prefix("run:")
        .and_then(|id| id.parse::<i64>().ok());
    let inserted = if let (Some((at, good_column)), Some(run_id)) = (run_event_columns(slo), run_id)
    {
        // A run's events are one `run_events` row (migration 13), each set
        // once: appended in run order by a fresh load too.
        tx.prepare_cached(&format!(
            "INSERT INTO run_events (run_id, repository_id, {at}, {good_column}) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (run_id) DO UPDATE SET {at} = excluded.{at}, {good_column} = excluded.{good_column}
             WHERE {good_column} IS NULL"
        ))?
        .execute(params![run_id, repository_id, at_ms, good])?
            == 1
    } else {
        // A fresh load appends its events to a scratch table, written into
        // `slo_events` in key order at its end (`SloEvents`): they are
        // all new (the store held no event, each subject is new).
        let sql = if appends_slo_events() {
            "INSERT INTO temp.fresh_slo (slo, subject, repository_id, at, good) VALUES (?1, ?2, ?3, ?4, ?5)"
        } else {
            "INSERT OR IGNORE INTO slo_events (slo, subject, repository_id, at, good) VALUES (?1, ?2, ?3, ?4, ?5)"
        };
        tx.prepare_cached(sql)?.execute(params![
            slo.as_str(),
            subject,
            repository_id,
            at_ms,
            good
        ])? == 1
    };
    if inserted {
        hourly::add(repository_id, at_ms, slo.as_str(), i64::from(good), 1);
        if live {
            let (result, other) = if good {
                ("good", "bad")
            } else {
                ("bad", "good")
            };
            let series = |result| {
                [
                    ("slo", slo.as_str()),
                    ("repository", repository),
                    ("result", result),
                ]
            };
            // Both results exist from the first event on: a repository's first
            // bad event must be an increase, not a new series, for rate() to see it.
            tally::ensure(tx, catalog::SLO_EVENTS, &series(other))?;
            tally::inc(tx, catalog::SLO_EVENTS, &series(result), 1.0)?;
        } else {
            tally::inc(tx, catalog::BACKDATED, &[("kind", "slo_event")], 1.0)?;
        }
    }
    Ok(inserted)
}

pub(crate) fn data_quality(tx: &Connection, reason: &str) -> rusqlite::Result<()> {
    tally::inc(tx, catalog::DATA_QUALITY, &[("reason", reason)], 1.0)
}

/// When a run happened, for the live window: its latest known time.
pub(crate) fn event_ms(
    queued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    now_ms: i64,
) -> i64 {
    finished_at
        .or(started_at)
        .or(queued_at)
        .map(to_ms)
        .unwrap_or(now_ms)
}

/// What counting a run needs: from the run being ingested, or from the
/// stored row when its trigger is decided later.
pub(crate) struct Counting<'a> {
    pub(crate) run_id: i64,
    pub(crate) repository_id: i64,
    pub(crate) repository: &'a str,
    pub(crate) context: &'a str,
    pub(crate) attempt: u32,
    pub(crate) trigger: Trigger,
    pub(crate) state: RunState,
    pub(crate) queued_at: Option<DateTime<Utc>>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) queue_counted: bool,
    pub(crate) final_counted: bool,
    /// The (queue_counted, final_counted) flags the stored row has now.
    pub(crate) row_flags: (bool, bool),
}

/// The (queue_counted, final_counted) flags [`count_run`] leaves a run with
/// that was counted for nothing before: the queue once the start is known,
/// the final state once terminal; nothing while the trigger is pending.
pub(crate) fn counted_after(run: &NewRun, trigger_pending: bool) -> (bool, bool) {
    if trigger_pending {
        (false, false)
    } else {
        (run.started_at.is_some(), run.state.is_terminal())
    }
}

/// Count what a run newly makes known, once each: its queue time when its
/// start is known, its final state when it is terminal.
pub(crate) fn count_run(
    tx: &Connection,
    c: &Counting<'_>,
    policy: &Policy,
    live: bool,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let event_ms = event_ms(c.queued_at, c.started_at, c.finished_at, now_ms);
    let (d, issues) = durations(c.queued_at, c.started_at, c.finished_at, policy.limits);
    let subject = format!("run:{}", c.run_id);
    let trigger = c.trigger.as_str();
    let exemplar = Some(ExemplarRef {
        run_id: c.run_id,
        at_ms: event_ms,
    });
    let (mut queue_counted, mut final_counted) = (c.queue_counted, c.final_counted);

    if !c.queue_counted && c.started_at.is_some() {
        for issue in issues.iter().filter(|i| {
            matches!(
                i,
                DataQualityIssue::NegativeQueueTime | DataQualityIssue::AbsurdQueueTime
            )
        }) {
            data_quality(tx, issue.as_str())?;
        }
        if let Some(q) = d.queue_seconds {
            let started_ms = c.started_at.map(to_ms).unwrap_or(now_ms);
            if live {
                let labels: &Labels<'_> = &[
                    ("repository", c.repository),
                    ("context", c.context),
                    ("trigger", trigger),
                ];
                tally::observe(
                    tx,
                    catalog::RUN_QUEUE,
                    labels,
                    &policy.queue_buckets,
                    q,
                    exemplar,
                )?;
            }
            let (slo, good) = slo::queue_event(q, policy.thresholds);
            slo_event(
                tx,
                slo,
                &subject,
                c.repository_id,
                c.repository,
                started_ms,
                good,
                live,
            )?;
        }
        queue_counted = true;
    }

    if !c.final_counted && c.state.is_terminal() {
        for issue in issues.iter().filter(|i| {
            matches!(
                i,
                DataQualityIssue::NegativeRunTime | DataQualityIssue::AbsurdRunTime
            )
        }) {
            data_quality(tx, issue.as_str())?;
        }
        let state = c.state.as_str();
        if live {
            let attempt = if c.attempt == 0 { "first" } else { "retry" };
            tally::inc(
                tx,
                catalog::RUNS,
                &[
                    ("repository", c.repository),
                    ("context", c.context),
                    ("trigger", trigger),
                    ("state", state),
                    ("attempt", attempt),
                ],
                1.0,
            )?;
            if let Some(seconds) = d.run_seconds {
                let labels: &Labels<'_> = &[
                    ("repository", c.repository),
                    ("context", c.context),
                    ("trigger", trigger),
                    ("state", state),
                ];
                tally::observe(
                    tx,
                    catalog::RUN_DURATION,
                    labels,
                    &policy.run_buckets,
                    seconds,
                    exemplar,
                )?;
            }
        } else {
            tally::inc(tx, catalog::BACKDATED, &[("kind", "run")], 1.0)?;
        }
        for (slo, good) in
            slo::finished_run_events(c.state, c.trigger, d.run_seconds, policy.thresholds)
        {
            slo_event(
                tx,
                slo,
                &subject,
                c.repository_id,
                c.repository,
                event_ms,
                good,
                live,
            )?;
        }
        final_counted = true;
    }
    if (queue_counted, final_counted) != c.row_flags {
        tx.prepare_cached("UPDATE runs SET queue_counted = ?2, final_counted = ?3 WHERE id = ?1")?
            .execute(params![c.run_id, queue_counted, final_counted])?;
    }
    Ok(())
}

/// Replace a run's failures. Failure counters move only for classes the run
/// did not have before, so a replay or an update never counts twice.
pub(crate) fn store_failures(
    tx: &Connection,
    run_id: i64,
    repository: &str,
    failures: &[FailureEvidence],
    event_ms: i64,
    live: bool,
) -> rusqlite::Result<()> {
    let before: Vec<String> = tx
        .prepare_cached("SELECT DISTINCT class FROM failures WHERE run_id = ?1")?
        .query_map([run_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    tx.prepare_cached("DELETE FROM failures WHERE run_id = ?1")?
        .execute([run_id])?;
    let mut counted = before.clone();
    for f in failures {
        let mut fingerprint_id = None;
        let mut is_new = false;
        if let Some(hash) = &f.fingerprint {
            // One statement: a new fingerprint is stored with its first
            // occurrence (occurrences = 1), a known one moves on.
            let (id, occurrences): (i64, i64) = tx
                .prepare_cached(
                    "INSERT INTO fingerprints (hash, normalized, first_seen, last_seen, occurrences)
                     VALUES (?1, ?2, ?3, ?3, 1)
                     ON CONFLICT (hash) DO UPDATE SET first_seen = min(first_seen, excluded.first_seen),
                        last_seen = max(last_seen, excluded.last_seen), occurrences = occurrences + 1
                     RETURNING id, occurrences",
                )?
                .query_row(
                    params![hash, crate::classify::normalize_fingerprint(&f.evidence), event_ms],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
            is_new = occurrences == 1;
            if is_new && live {
                tally::inc(
                    tx,
                    catalog::FINGERPRINTS_NEW,
                    &[("repository", repository)],
                    1.0,
                )?;
            }
            fingerprint_id = Some(id);
        }
        tx.prepare_cached(
            "INSERT INTO failures (run_id, test_name, class, category, line, evidence, context, fingerprint_id, is_new,
               context_before, candidates)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            run_id,
            f.test_name,
            f.class,
            f.category,
            f.line.map(|l| l as i64),
            f.evidence,
            serde_json::to_string(&f.context).unwrap_or_else(|_| "[]".into()),
            fingerprint_id,
            is_new,
            f.context_before,
            (!f.candidates.is_empty())
                .then(|| serde_json::to_string(&f.candidates).unwrap_or_else(|_| "[]".into())),
        ])?;
        if !counted.contains(&f.class) {
            counted.push(f.class.clone());
            if live {
                tally::inc(
                    tx,
                    catalog::FAILURES,
                    &[
                        ("repository", repository),
                        ("class", &f.class),
                        ("category", &f.category),
                    ],
                    1.0,
                )?;
            }
        }
    }
    Ok(())
}

//! Settling: recording merged changes and deciding their outcome once their
//! settle time has passed, counting scheduled runs that never finished as
//! lost, and deciding the trigger of runs that waited for it.

use crate::catalog::FamilyDef;
use crate::counting::{Counting, Sink, count_run, data_quality, slo_event};
use crate::error::StoreError;
use crate::merge_counts::{DecidedChange, count_merge_with};
use crate::policy::{Policy, moves_live_counters};
use crate::run_counts::CountSink;
use crate::tally::{ExemplarRef, Labels};
use crate::{REPOSITORY_ID, Store, from_ms, hourly, tally, to_ms, upsert_repository};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{Forge, RepositoryRef, RunState, Trigger};
use ci_slo_core::slo::{self, ContextAttempt, SloId};
use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettleStats {
    pub changes_decided: usize,
    pub runs_lost: usize,
    /// Runs counted with trigger `other` after waiting `trigger_wait` for theirs.
    pub triggers_expired: usize,
}

/// Decide the trigger of waiting runs (`trigger_pending`) chosen by `filter`
/// (a condition on `r`, binding `args`) and count them. `trigger` None keeps
/// the stored one (`other`).
pub(crate) fn decide_pending(
    tx: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
    trigger: Option<Trigger>,
    policy: &Policy,
    now_ms: i64,
) -> rusqlite::Result<Vec<i64>> {
    let live = moves_live_counters(tx, policy)?;
    type Row = (
        i64,
        i64,
        String,
        String,
        u32,
        String,
        String,
        [Option<i64>; 3],
        bool,
        bool,
    );
    let mut rows: Vec<Row> = tx
        .prepare_cached(&format!(
            "SELECT r.id, r.repository_id, (SELECT path FROM repositories WHERE id = r.repository_id),
                    r.context, r.attempt, r.trigger, r.state,
                    r.queued_at, r.started_at, r.finished_at, r.queue_counted, r.final_counted
             FROM runs r WHERE r.trigger_pending = 1 AND {filter}"
        ))?
        .query_map(args, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                [r.get(7)?, r.get(8)?, r.get(9)?],
                r.get(10)?,
                r.get(11)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    // In the order they were stored (sorted here: an ORDER BY would make
    // SQLite re-prepare the cached statement at every use).
    rows.sort_by_key(|r| r.0);
    let mut ids = Vec::with_capacity(rows.len());
    for (id, repository_id, path, context, attempt, stored, state, times, qc, fc) in rows {
        let trigger = trigger.unwrap_or_else(|| stored.parse().unwrap_or(Trigger::Other));
        tx.prepare_cached(
            "UPDATE runs SET trigger_code = ?2, trigger_pending = 0, updated_at = ?3 WHERE id = ?1",
        )?
        .execute(params![
            id,
            crate::ingest_run::coded(trigger.as_str(), &crate::ingest_run::TRIGGER_CODES),
            now_ms
        ])?;
        let [queued_at, started_at, finished_at] = times.map(|t| t.map(from_ms));
        count_run(
            tx,
            &Counting {
                run_id: id,
                repository_id,
                repository: &path,
                context: &context,
                attempt,
                trigger,
                state: state.parse().unwrap_or(RunState::Error),
                queued_at,
                started_at,
                finished_at,
                queue_counted: qc,
                final_counted: fc,
                row_flags: (qc, fc),
            },
            policy,
            live,
            now_ms,
        )?;
        ids.push(id);
    }
    Ok(ids)
}

/// A merged change recorded: inserted, or its head and merge time completed
/// and its activity moved.
const RECORD_MERGE: &str = "INSERT INTO changes (repository_id, number, head_sha, merged_at, last_activity) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (repository_id, number) DO UPDATE SET
                head_sha = coalesce(excluded.head_sha, changes.head_sha),
                merged_at = coalesce(changes.merged_at, excluded.merged_at),
                last_activity = excluded.last_activity";

/// From this many changes due on, [`Store::settle`] adds their counters and
/// hourly rollup up in memory (`tally::Buffered`, `hourly::Suspended`).
pub(crate) const MANY_CHANGES: i64 = 1_000;

/// Many changes due and at least one for every this many stored runs (a
/// bulk import: 70 k changes on 1 M runs): their heads' runs are read in one
/// pass over `runs` ([`HeadRuns::scan`]) rather than looked up change by
/// change (an index seek and ~14 row fetches scattered over the table each).
/// At 1 M runs a pass took ~1 µs a run, a change's lookup ~50 µs (a shared
/// machine, docs/benchmarks.md, issue 12): the pass pays from about one
/// change due for every 50 runs.
pub(crate) const RUNS_PER_CHANGE_FOR_SCAN: i64 = 48;

/// The hourly rollup rows settling many changes holds in memory at most
/// (~60 bytes each) before it writes them.
const ROLLUP_ROWS: usize = 25_000;

/// The runs `decide_changes` reads for a head: `(context, attempt group,
/// attempt, state)` of the head commit's runs not triggered by a schedule.
const HEAD_RUNS: &str = "SELECT context, attempt_group, attempt, state FROM runs
                 WHERE repository_id = ?1 AND commit_sha = ?2 AND trigger != 'schedule'";

/// The runs of the heads of many changes, read in one pass over `runs`:
/// each run once, with its context and attempt group interned (20 bytes a
/// run of a due head; the runs of other commits are skipped).
struct HeadRuns {
    contexts: Vec<String>,
    groups: Vec<String>,
    /// (head, context, group, attempt, state), sorted by head.
    runs: Vec<(u32, u32, u32, u32, RunState)>,
    /// Where the runs of head `h` start in `runs` (`h + 1`: where they end).
    starts: Vec<usize>,
}

impl HeadRuns {
    /// Read the runs of `heads` (repository id, head commit; a head may be
    /// the head of several changes) in one pass over `runs`.
    fn scan(tx: &Connection, heads: &[(i64, &str)], runs: i64) -> rusqlite::Result<HeadRuns> {
        type Map<K, V> = foldhash::HashMap<K, V>;
        let mut index: Map<i64, Map<&str, u32>> = Map::default();
        for (h, (repository_id, sha)) in heads.iter().enumerate() {
            index
                .entry(*repository_id)
                .or_default()
                .insert(sha, h as u32);
        }
        let mut contexts: Map<String, u32> = Map::default();
        let mut groups: Map<String, u32> = Map::default();
        let intern = |names: &mut Map<String, u32>, name: &str| match names.get(name) {
            Some(id) => *id,
            None => {
                let id = names.len() as u32;
                names.insert(name.to_string(), id);
                id
            }
        };
        // At most `runs` (the highest run id): room reserved at once, never
        // copied while growing; only what is written to takes memory.
        let mut runs = Vec::with_capacity(usize::try_from(runs).unwrap_or(0));
        let mut stmt = tx.prepare_cached(
            "SELECT repository_id, commit_sha, context, attempt_group, attempt, state FROM runs
             WHERE trigger != 'schedule'",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let Some(shas) = index.get(&r.get::<_, i64>(0)?) else {
                continue;
            };
            let Some(&head) = shas.get(r.get_ref(1)?.as_str()?) else {
                continue;
            };
            let context = intern(&mut contexts, r.get_ref(2)?.as_str()?);
            let group = intern(&mut groups, r.get_ref(3)?.as_str()?);
            let state = r.get_ref(5)?.as_str()?.parse().unwrap_or(RunState::Error);
            runs.push((head, context, group, r.get::<_, u32>(4)?, state));
        }
        runs.sort_unstable_by_key(|r| r.0);
        let mut starts = Vec::with_capacity(heads.len() + 1);
        let mut at = 0;
        for h in 0..=heads.len() as u32 {
            while at < runs.len() && runs[at].0 < h {
                at += 1;
            }
            starts.push(at);
        }
        let names = |map: Map<String, u32>| {
            let mut names = vec![String::new(); map.len()];
            for (name, id) in map {
                names[id as usize] = name;
            }
            names
        };
        Ok(HeadRuns {
            contexts: names(contexts),
            groups: names(groups),
            runs,
            starts,
        })
    }

    fn of(&self, head: u32) -> Vec<ContextAttempt> {
        let h = head as usize;
        self.runs[self.starts[h]..self.starts[h + 1]]
            .iter()
            .map(|&(_, context, group, attempt, state)| ContextAttempt {
                context: self.contexts[context as usize].clone(),
                group: self.groups[group as usize].clone(),
                attempt,
                state,
            })
            .collect()
    }
}

/// A decided change's SLO event, written after all changes are decided:
/// (SLO, subject, index of the change in `due`, time, good, live).
type Event = (SloId, Box<str>, u32, i64, bool, bool);

/// The store's [`Sink`], but the SLO events are kept in `events`, to be
/// written in key order.
struct Deferred<'c, 'e> {
    tx: &'c Connection,
    events: &'e mut Vec<Event>,
    change: u32,
}

impl CountSink for Deferred<'_, '_> {
    type Error = rusqlite::Error;
    fn inc(&mut self, family: FamilyDef, labels: &Labels<'_>, by: f64) -> rusqlite::Result<()> {
        Sink(self.tx).inc(family, labels, by)
    }
    fn observe(
        &mut self,
        family: FamilyDef,
        labels: &Labels<'_>,
        bounds: &[f64],
        value: f64,
        exemplar: Option<ExemplarRef>,
    ) -> rusqlite::Result<()> {
        Sink(self.tx).observe(family, labels, bounds, value, exemplar)
    }
    fn slo_event(
        &mut self,
        slo: SloId,
        subject: &str,
        _repository_id: i64,
        _repository: &str,
        at_ms: i64,
        good: bool,
        live: bool,
    ) -> rusqlite::Result<()> {
        self.events
            .push((slo, subject.into(), self.change, at_ms, good, live));
        Ok(())
    }
}

pub(crate) fn decide_changes(
    tx: &Connection,
    policy: &Policy,
    now_ms: i64,
    settle_ms: i64,
) -> Result<usize, StoreError> {
    let live = moves_live_counters(tx, policy)?;
    // Each repository's forge and path once, not once per change (an
    // import decides 70 k changes of a few repositories: ~8 MB fewer).
    let repositories: foldhash::HashMap<i64, (Forge, String)> = tx
        .prepare_cached("SELECT id, forge, path FROM repositories")?
        .query_map([], |r| {
            let forge: String = r.get(1)?;
            Ok((
                r.get(0)?,
                (forge.parse().unwrap_or(Forge::Generic), r.get(2)?),
            ))
        })?
        .collect::<Result<_, _>>()?;
    let due: Vec<(i64, i64, Option<String>, i64)> = tx
        .prepare_cached(
            "SELECT id, repository_id, head_sha, merged_at FROM changes
             WHERE decided_at IS NULL AND merged_at IS NOT NULL
               AND merged_at <= ?1 AND last_activity <= ?1",
        )?
        .query_map([now_ms - settle_ms], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let repository = |id: &i64| -> (Forge, &str) {
        repositories
            .get(id)
            .map_or((Forge::Generic, ""), |(forge, path)| {
                (*forge, path.as_str())
            })
    };
    // A change without a head commit: the commit of its latest run (the
    // others' heads borrowed, not copied).
    let mut heads: Vec<Option<std::borrow::Cow<'_, str>>> = Vec::with_capacity(due.len());
    for (change_id, _, head_sha, _) in &due {
        heads.push(match head_sha {
            Some(h) => Some(std::borrow::Cow::Borrowed(h.as_str())),
            None => tx
                .prepare_cached(
                    "SELECT commit_sha FROM runs WHERE change_id = ?1
                     ORDER BY coalesce(queued_at, started_at, finished_at, created_at) DESC, id DESC LIMIT 1",
                )?
                .query_row([*change_id], |r| r.get::<_, String>(0))
                .optional()?
                .map(std::borrow::Cow::Owned),
        });
    }
    // The highest run id (as many runs at most), asked only when many
    // changes are due.
    let runs: Option<i64> = if due.len() as i64 >= MANY_CHANGES {
        Some(tx.query_row("SELECT coalesce(max(id), 0) FROM runs", [], |r| r.get(0))?)
    } else {
        None
    };
    let scanned = if let Some(runs) =
        runs.filter(|runs| due.len() as i64 * RUNS_PER_CHANGE_FOR_SCAN >= *runs)
    {
        // Each distinct (repository, head) once, numbered; per change its number.
        let mut numbers: foldhash::HashMap<(i64, &str), u32> = Default::default();
        let mut distinct = Vec::new();
        let of_change: Vec<Option<u32>> = due
            .iter()
            .zip(&heads)
            .map(|((_, repository_id, ..), head)| {
                head.as_deref().map(|head| {
                    *numbers.entry((*repository_id, head)).or_insert_with(|| {
                        distinct.push((*repository_id, head));
                        distinct.len() as u32 - 1
                    })
                })
            })
            .collect();
        Some((HeadRuns::scan(tx, &distinct, runs)?, of_change))
    } else {
        None
    };
    let mut undecided =
        tx.prepare_cached("UPDATE changes SET decided_at = ?2, head_sha = ?3 WHERE id = ?1")?;
    let mut decided = tx.prepare_cached(
        "UPDATE changes SET decided_at = ?2, head_sha = ?3, outcome = ?4, retries = ?5, missing = ?6 WHERE id = ?1",
    )?;
    // Three events a change (`slo::merge_events`): room for them at once.
    let mut events = Vec::with_capacity(due.len() * 3);
    for (i, ((change_id, repository_id, _, merged_at), head)) in due.iter().zip(&heads).enumerate()
    {
        let (forge, path) = repository(repository_id);
        let head = head.as_deref();
        let runs = match (&scanned, head) {
            (Some((scanned, of_change)), _) => {
                of_change[i].map(|h| scanned.of(h)).unwrap_or_default()
            }
            (None, Some(head)) => tx
                .prepare_cached(HEAD_RUNS)?
                .query_map(params![repository_id, head], |r| {
                    Ok(ContextAttempt {
                        context: r.get(0)?,
                        group: r.get(1)?,
                        attempt: r.get(2)?,
                        state: r.get_ref(3)?.as_str()?.parse().unwrap_or(RunState::Error),
                    })
                })?
                .collect::<Result<_, _>>()?,
            (None, None) => Vec::new(),
        };
        let evaluation = slo::evaluate_merge(policy.required_contexts(forge, path), &runs);
        let Some(e) = evaluation else {
            undecided.execute(params![change_id, now_ms, head])?;
            data_quality(tx, "merged_change_without_runs")?;
            continue;
        };
        decided.execute(params![
            change_id,
            now_ms,
            head,
            e.outcome.as_str(),
            e.retries,
            serde_json::to_string(&e.missing_contexts).unwrap_or_default()
        ])?;
        count_merge_with(
            &mut Deferred {
                tx,
                events: &mut events,
                change: i as u32,
            },
            &DecidedChange {
                change_id: *change_id,
                repository_id: *repository_id,
                repository: path,
                merged_at_ms: *merged_at,
            },
            &e,
            live,
        )?;
    }
    drop((undecided, decided));
    // The SLO events in key order: each lands next to the one before in
    // `slo_events` rather than at three places across it per change.
    events.sort_unstable_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    for (i, (slo, subject, change, at_ms, good, live)) in events.into_iter().enumerate() {
        // The hourly increments added up in memory (many changes, see
        // `Store::settle`) are written when they are many: memory stays
        // flat. (Written every 1,000 changes, each hourly row was written
        // for the ~1 event of the 1,000 changes in its hour.)
        if i % 1024 == 1023 {
            hourly::flush_suspended_beyond(tx, ROLLUP_ROWS)?;
        }
        let (_, repository_id, ..) = &due[change as usize];
        let (_, path) = repository(repository_id);
        slo_event(tx, slo, &subject, *repository_id, path, at_ms, good, live)?;
    }
    Ok(due.len())
}

pub(crate) fn count_lost_runs(
    tx: &Connection,
    policy: &Policy,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let live = moves_live_counters(tx, policy)?;
    let lost: Vec<(i64, i64, String, i64)> = tx
        .prepare_cached(
            "SELECT runs.id, runs.repository_id, r.path, coalesce(started_at, queued_at, created_at)
             FROM runs JOIN repositories r ON r.id = runs.repository_id
             WHERE final_counted = 0 AND trigger = 'schedule'
               AND coalesce(started_at, queued_at, created_at) <= ?1
               AND NOT EXISTS (SELECT 1 FROM run_events e WHERE e.run_id = runs.id AND e.completed_good IS NOT NULL)",
        )?
        .query_map([now_ms - policy.lost_after_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (run_id, repository_id, path, since_ms) in &lost {
        let at_ms = since_ms + policy.lost_after_ms;
        slo_event(
            tx,
            SloId::RunsCompleted,
            &format!("run:{run_id}"),
            *repository_id,
            path,
            at_ms,
            false,
            live,
        )?;
    }
    Ok(lost.len())
}

impl Store {
    /// Record that a change was merged (from a forge's merge event, or an
    /// import). Its outcome is decided later, by [`Store::settle`].
    pub fn record_merge(
        &mut self,
        repository: &RepositoryRef,
        number: i64,
        head_sha: Option<&str>,
        merged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        let repository_id = upsert_repository(&tx, repository.forge, &repository.path)?;
        tx.prepare_cached(RECORD_MERGE)?.execute(params![
            repository_id,
            number,
            head_sha,
            to_ms(merged_at),
            to_ms(now)
        ])?;
        tx.commit()?;
        Ok(())
    }

    /// [`Store::record_merge`] for each of `merges` (repository, number,
    /// head commit, merge time), in one write: one statement, each
    /// repository looked up once (an import's 70 k merges at 1 M runs).
    pub fn record_merges(
        &mut self,
        merges: &[(RepositoryRef, i64, Option<String>, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        {
            let mut ids: Vec<(&RepositoryRef, i64)> = Vec::new();
            let mut insert = tx.prepare_cached(RECORD_MERGE)?;
            for (repository, number, head_sha, merged_at) in merges {
                let repository_id = match ids.iter().find(|(r, _)| *r == repository) {
                    Some((_, id)) => *id,
                    None => {
                        let id = upsert_repository(&tx, repository.forge, &repository.path)?;
                        ids.push((repository, id));
                        id
                    }
                };
                insert.execute(params![
                    repository_id,
                    number,
                    head_sha,
                    to_ms(*merged_at),
                    to_ms(now)
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Decide merged changes whose settle time has passed (both since the merge
    /// and since their last run arrived), count scheduled runs that never
    /// finished as lost, and count runs that waited `trigger_wait` for their
    /// trigger in vain. `settle_ms` overrides the policy (0 after a bulk load).
    pub fn settle(
        &mut self,
        policy: &Policy,
        now: DateTime<Utc>,
        settle_ms: Option<i64>,
    ) -> Result<SettleStats, StoreError> {
        let tx = self.write_tx()?;
        let now_ms = to_ms(now);
        let settle = settle_ms.unwrap_or(policy.merge_settle_ms);
        // Many changes to decide at once (after a bulk import: 70 k for a
        // 1 M-run Cockpit file): their counters and hourly rollup are added
        // up in memory and written once, as a batch of runs does (three SLO
        // events per change would otherwise cost two rollup upserts and a
        // counter upsert or two each).
        let due: i64 = tx.query_row(
            "SELECT count(*) FROM changes WHERE decided_at IS NULL AND merged_at IS NOT NULL
               AND merged_at <= ?1 AND last_activity <= ?1",
            [now_ms - settle],
            |r| r.get(0),
        )?;
        let (rollup, buffer) = if due >= MANY_CHANGES {
            (hourly::Suspended::start(&tx)?, tally::Buffered::start())
        } else {
            (None, None)
        };
        // Runs that waited long enough for their trigger are counted as they are.
        let expired = decide_pending(
            &tx,
            "r.created_at <= ?1",
            &[&(now_ms - policy.trigger_wait_ms)],
            None,
            policy,
            now_ms,
        )?;
        for _ in &expired {
            data_quality(&tx, "unknown_trigger")?;
        }
        let stats = SettleStats {
            changes_decided: decide_changes(&tx, policy, now_ms, settle)?,
            runs_lost: count_lost_runs(&tx, policy, now_ms)?,
            triggers_expired: expired.len(),
        };
        if let Some(buffer) = buffer {
            buffer.flush(&tx)?;
        }
        if let Some(rollup) = rollup {
            rollup.finish(&tx)?;
        }
        tx.commit()?;
        Ok(stats)
    }

    /// The trigger of an attempt group (a GitHub workflow run) is known: its
    /// runs that waited for it get it and are counted. Returns their ids.
    pub fn decide_trigger(
        &mut self,
        repository: &RepositoryRef,
        attempt_group: &str,
        trigger: Trigger,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        let tx = self.write_tx()?;
        let ids = decide_pending(
            &tx,
            &format!("r.repository_id = {REPOSITORY_ID} AND r.attempt_group = ?3"),
            &[&repository.forge.as_str(), &repository.path, &attempt_group],
            Some(trigger),
            policy,
            to_ms(now),
        )?;
        tx.commit()?;
        Ok(ids)
    }
}

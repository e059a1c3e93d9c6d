//! A stored, finished run meets another report of itself, on PostgreSQL:
//! what the SQLite store's `revision.rs` loads, loaded here, so that the
//! same engine-neutral rules ([`ci_slo_store::revision::judge`]) decide.
//! An identical replay changes nothing; a forge's part adds what the
//! finished run did not know; a differing whole report is a conflict.

use crate::statements::Sql;
use ci_slo_core::model::{
    Completeness, FailureEvidence, NewRun, RawReport, TestOutcome, TestResult, Trigger,
};
use ci_slo_store::revision::StoredRun;

/// The columns of the stored run the identity lookup selects
/// (`ingest_run.rs`), in that order: id, content_hash, state, trigger,
/// trigger_pending, queue_counted, final_counted, context, commit_sha,
/// attempt_group, attempt, queued_at, started_at, finished_at, url,
/// log_url, the change's number.
pub(crate) struct Existing {
    pub(crate) id: i64,
    pub(crate) hash: String,
    pub(crate) state: String,
    pub(crate) trigger: Trigger,
    pub(crate) trigger_pending: bool,
    pub(crate) queue_counted: bool,
    pub(crate) final_counted: bool,
    /// The run's own facts, as [`ci_slo_store::revision::judge`] compares
    /// them (its tests, failures, dependencies and reports: [`load`]).
    facts: StoredRun,
}

impl Existing {
    /// From the columns listed above of `r`, from column `at` on.
    pub(crate) fn read(r: &postgres::Row, at: usize) -> Existing {
        let trigger: String = r.get(at + 3);
        let trigger_pending = r.get::<_, i64>(at + 4) != 0;
        let state: String = r.get(at + 2);
        Existing {
            id: r.get(at),
            hash: r.get(at + 1),
            trigger: trigger.parse().unwrap_or(Trigger::Other),
            trigger_pending,
            queue_counted: r.get::<_, i64>(at + 5) != 0,
            final_counted: r.get::<_, i64>(at + 6) != 0,
            facts: StoredRun {
                context: r.get(at + 7),
                commit: r.get(at + 8),
                attempt_group: r.get(at + 9),
                attempt: u32::try_from(r.get::<_, i64>(at + 10)).unwrap_or_default(),
                trigger: trigger.parse().ok(),
                trigger_pending,
                state: state.parse().ok(),
                queued_at: r.get(at + 11),
                started_at: r.get(at + 12),
                finished_at: r.get(at + 13),
                url: r.get(at + 14),
                log_url: r.get(at + 15),
                change: r.get(at + 16),
                ..StoredRun::default()
            },
            state,
        }
    }
}

/// What `judge` compares `report` against: the stored run's facts, its
/// tests, and (only when the report brings them, or is whole, as in
/// SQLite) its failures, dependencies and reports.
pub(crate) fn load(
    tx: &mut impl Sql,
    existing: &Existing,
    report: &NewRun,
) -> Result<StoredRun, postgres::Error> {
    let id = existing.id;
    let mut stored = existing.facts.clone();
    stored.tests = tx
        .query(
            "SELECT name, outcome, duration_seconds, retries, retry_reasons, message
             FROM test_results WHERE run_id = $1",
            &[&id],
        )?
        .into_iter()
        .map(|r| TestResult {
            name: r.get(0),
            outcome: r
                .get::<_, String>(1)
                .parse()
                .unwrap_or(TestOutcome::Errored),
            duration_seconds: r.get(2),
            retries: u32::try_from(r.get::<_, i64>(3)).unwrap_or_default(),
            retry_reasons: serde_json::from_str(&r.get::<_, String>(4)).unwrap_or_default(),
            message: r.get(5),
        })
        .collect();
    if !report.failures.is_empty() {
        stored.failures = tx
            .query(
                "SELECT f.class, f.category, f.line, f.evidence, f.context, fp.hash, f.test_name,
                        f.context_before, f.candidates
                 FROM failures f LEFT JOIN fingerprints fp ON fp.id = f.fingerprint_id
                 WHERE f.run_id = $1 ORDER BY f.id",
                &[&id],
            )?
            .into_iter()
            .map(|r| FailureEvidence {
                class: r.get(0),
                category: r.get(1),
                line: r.get::<_, Option<i64>>(2).map(|l| l as u64),
                evidence: r.get(3),
                context: serde_json::from_str(&r.get::<_, String>(4)).unwrap_or_default(),
                fingerprint: r.get(5),
                test_name: r.get(6),
                context_before: r
                    .get::<_, Option<i64>>(7)
                    .and_then(|c| u32::try_from(c).ok()),
                candidates: r
                    .get::<_, Option<String>>(8)
                    .and_then(|c| serde_json::from_str(&c).ok())
                    .unwrap_or_default(),
            })
            .collect();
    }
    if !report.dependencies.is_empty() {
        stored.dependencies = tx
            .query(
                "SELECT package, version FROM dependency_snapshots WHERE run_id = $1",
                &[&id],
            )?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    }
    if !report.reports.is_empty() || report.completeness == Completeness::Whole {
        stored.reports = tx
            .query(
                "SELECT format, name, content FROM reports WHERE run_id = $1",
                &[&id],
            )?
            .into_iter()
            .map(|r| RawReport {
                format: r.get(0),
                name: r.get(1),
                content: r.get(2),
            })
            .collect();
    }
    Ok(stored)
}

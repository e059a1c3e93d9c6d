//! A stored run meets another report of itself (the same external id, or the
//! same context, commit, attempt group and attempt when it has none).
//!
//! Counters count a run once, from what the store held when it became final;
//! if a finished run could still change, the counters and the store would
//! disagree. So a finished run is immutable (docs/metrics.md, *Run identity
//! and immutability*): a report that repeats it changes nothing; a *whole*
//! report (API, CLI) that differs from it in anything, or a forge's *part*
//! that contradicts what it knows, is a conflict and changes nothing; a part
//! may still add what the finished run did not know (a time, a link, its
//! tests, failure evidence from a log downloaded afterwards). An unfinished
//! run simply takes each report as its progress (decided by the caller, not
//! here).
//!
//! [`judge`] is pure and engine-neutral (public, so the PostgreSQL store
//! decides by the same rules): the caller loads the stored run into a
//! [`StoredRun`] (SQLite: this module's `load`) and writes what the
//! [`Verdict`] says.

use crate::model::{
    Completeness, FailureEvidence, NewRun, RawReport, RunState, TestOutcome, TestResult, Trigger,
};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use std::collections::{BTreeMap, HashMap};

/// Times of a forge's parts that differ by less than this are the same time:
/// GitLab's webhooks give whole seconds where its API gives milliseconds.
pub(crate) const PART_TIME_TOLERANCE_MS: i64 = 1000;

/// A stored, finished run as the comparison needs it. Times are Unix ms.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredRun {
    pub context: String,
    pub commit: String,
    pub attempt_group: String,
    pub attempt: u32,
    pub trigger: Option<Trigger>,
    pub trigger_pending: bool,
    pub state: Option<RunState>,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub url: Option<String>,
    pub log_url: Option<String>,
    pub change: Option<i64>,
    pub tests: Vec<TestResult>,
    /// Loaded only when the report brings failures.
    pub failures: Vec<FailureEvidence>,
    /// Loaded only when the report brings dependencies.
    pub dependencies: BTreeMap<String, String>,
    /// Loaded only when the report brings reports, or is whole.
    pub reports: Vec<RawReport>,
}

/// What to do with a report of a finished run.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing new: the stored run stays as it is.
    Unchanged,
    /// Write this run: the stored one with what the report added. Empty
    /// tests, failures, dependencies or reports keep the stored ones.
    Update(Box<NewRun>),
    /// The report contradicts the finished run in these fields: nothing changes.
    Conflict(Vec<&'static str>),
}

fn ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(crate::from_ms)
}

/// The decision for a report of a finished run (`stored.state` terminal).
pub fn judge(stored: &StoredRun, report: &NewRun) -> Verdict {
    match report.completeness {
        Completeness::Whole => judge_whole(stored, report),
        Completeness::Partial => judge_part(stored, report),
    }
}

/// The last result of each test name (as the store keeps them: one row per name).
fn by_name(tests: &[TestResult]) -> HashMap<&str, &TestResult> {
    tests.iter().map(|t| (t.name.as_str(), t)).collect()
}

fn sorted_reports(reports: &[RawReport]) -> Vec<(&str, &str, &str)> {
    let mut v: Vec<_> = reports
        .iter()
        .map(|r| (r.format.as_str(), r.name.as_str(), r.content.as_str()))
        .collect();
    v.sort_unstable();
    v
}

/// A whole report must repeat the run: every fact, every test, every report.
/// Failures and dependencies are derived (from the log, by the configured
/// rules) and not compared.
fn judge_whole(stored: &StoredRun, report: &NewRun) -> Verdict {
    let mut differ = Vec::new();
    let group = report.attempt_group.as_deref().unwrap_or("");
    let checks: [(&'static str, bool); 12] = [
        ("context", stored.context == report.context),
        ("commit", stored.commit == report.commit),
        ("attempt_group", stored.attempt_group == group),
        ("attempt", stored.attempt == report.attempt),
        ("trigger", stored.trigger == Some(report.trigger)),
        ("state", stored.state == Some(report.state)),
        ("queued_at", stored.queued_at == ms(report.queued_at)),
        ("started_at", stored.started_at == ms(report.started_at)),
        ("finished_at", stored.finished_at == ms(report.finished_at)),
        ("url", stored.url == report.url),
        ("log_url", stored.log_url == report.log_url),
        (
            "change",
            stored.change == report.change.as_ref().map(|c| c.number),
        ),
    ];
    differ.extend(checks.iter().filter(|(_, same)| !same).map(|(f, _)| *f));
    if by_name(&stored.tests) != by_name(&report.tests) {
        differ.push("tests");
    }
    if sorted_reports(&stored.reports) != sorted_reports(&report.reports) {
        differ.push("reports");
    }
    if differ.is_empty() {
        Verdict::Unchanged
    } else {
        Verdict::Conflict(differ)
    }
}

/// A forge's part: an older progress report is ignored; what it knows and
/// the stored run knows must agree; what only it knows is added.
fn judge_part(stored: &StoredRun, report: &NewRun) -> Verdict {
    if !report.state.is_terminal() {
        // Older news (a "running" event delivered after "completed").
        return Verdict::Unchanged;
    }
    let mut differ = Vec::new();
    let group = report.attempt_group.as_deref().unwrap_or("");
    if stored.context != report.context {
        differ.push("context");
    }
    if stored.commit != report.commit {
        differ.push("commit");
    }
    if stored.attempt_group != group {
        differ.push("attempt_group");
    }
    if stored.attempt != report.attempt {
        differ.push("attempt");
    }
    if stored.state != Some(report.state) {
        differ.push("state");
    }
    let trigger_known = !stored.trigger_pending && stored.trigger.is_some();
    if trigger_known && !report.trigger_pending && stored.trigger != Some(report.trigger) {
        differ.push("trigger");
    }
    for (field, a, b) in [
        ("queued_at", stored.queued_at, ms(report.queued_at)),
        ("started_at", stored.started_at, ms(report.started_at)),
        ("finished_at", stored.finished_at, ms(report.finished_at)),
    ] {
        if let (Some(a), Some(b)) = (a, b)
            && (a - b).abs() >= PART_TIME_TOLERANCE_MS
        {
            differ.push(field);
        }
    }
    if let (Some(a), Some(b)) = (stored.change, report.change.as_ref().map(|c| c.number))
        && a != b
    {
        differ.push("change");
    }
    if !stored.tests.is_empty() && !report.tests.is_empty() {
        let outcomes = |tests: &[TestResult]| -> HashMap<String, TestOutcome> {
            tests.iter().map(|t| (t.name.clone(), t.outcome)).collect()
        };
        if outcomes(&stored.tests) != outcomes(&report.tests) {
            differ.push("tests");
        }
    }
    if !differ.is_empty() {
        return Verdict::Conflict(differ);
    }

    // Everything the report knows agrees: keep the stored facts, add the rest.
    let mut merged = report.clone();
    let mut added = false;
    let mut fill = |stored: Option<i64>, reported: Option<DateTime<Utc>>| match stored {
        Some(t) => time(Some(t)),
        None => {
            added |= reported.is_some();
            reported
        }
    };
    merged.queued_at = fill(stored.queued_at, report.queued_at);
    merged.started_at = fill(stored.started_at, report.started_at);
    merged.finished_at = fill(stored.finished_at, report.finished_at);
    for (kept, reported) in [
        (&stored.url, &mut merged.url),
        (&stored.log_url, &mut merged.log_url),
    ] {
        match kept {
            Some(k) => *reported = Some(k.clone()),
            None => added |= reported.is_some(),
        }
    }
    if stored.change.is_none() && report.change.is_some() {
        added = true;
    }
    if trigger_known || report.trigger_pending {
        merged.trigger = stored.trigger.unwrap_or(report.trigger);
        merged.trigger_pending = stored.trigger_pending && report.trigger_pending;
    } else {
        // The stored run waited for its trigger; this report decides it.
        added = true;
    }
    if stored.tests.is_empty() {
        added |= !merged.tests.is_empty();
    } else {
        merged.tests.clear();
    }
    if merged.failures.is_empty() || merged.failures == stored.failures {
        merged.failures.clear();
    } else {
        added = true;
    }
    if merged.dependencies.is_empty() || merged.dependencies == stored.dependencies {
        merged.dependencies.clear();
    } else {
        added = true;
    }
    if merged.reports.is_empty()
        || sorted_reports(&merged.reports) == sorted_reports(&stored.reports)
    {
        merged.reports.clear();
    } else {
        added = true;
    }
    if added {
        Verdict::Update(Box::new(merged))
    } else {
        Verdict::Unchanged
    }
}

/// The stored run's columns, as selected by the identity lookup.
pub(crate) struct Row {
    pub id: i64,
    pub context: String,
    pub commit: String,
    pub attempt_group: String,
    pub attempt: u32,
    pub trigger: String,
    pub trigger_pending: bool,
    pub state: String,
    pub times: [Option<i64>; 3],
    pub url: Option<String>,
    pub log_url: Option<String>,
    pub change: Option<i64>,
}

/// Load what [`judge`] compares `report` against.
pub(crate) fn load(conn: &Connection, row: &Row, report: &NewRun) -> rusqlite::Result<StoredRun> {
    let id = row.id;
    let mut stored = StoredRun {
        context: row.context.clone(),
        commit: row.commit.clone(),
        attempt_group: row.attempt_group.clone(),
        attempt: row.attempt,
        trigger: row.trigger.parse().ok(),
        trigger_pending: row.trigger_pending,
        state: row.state.parse().ok(),
        queued_at: row.times[0],
        started_at: row.times[1],
        finished_at: row.times[2],
        url: row.url.clone(),
        log_url: row.log_url.clone(),
        change: row.change,
        ..StoredRun::default()
    };
    stored.tests = conn
        .prepare_cached(
            "SELECT name, outcome, duration_seconds, retries, retry_reasons, message
             FROM test_results WHERE run_id = ?1",
        )?
        .query_map([id], |r| {
            Ok(TestResult {
                name: r.get(0)?,
                outcome: r
                    .get::<_, String>(1)?
                    .parse()
                    .unwrap_or(TestOutcome::Errored),
                duration_seconds: r.get(2)?,
                retries: r.get(3)?,
                retry_reasons: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                message: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    if !report.failures.is_empty() {
        stored.failures = conn
            .prepare_cached(
                "SELECT f.class, f.category, f.line, f.evidence, f.context, fp.hash, f.test_name,
                        f.context_before, f.candidates
                 FROM failures f LEFT JOIN fingerprints fp ON fp.id = f.fingerprint_id
                 WHERE f.run_id = ?1 ORDER BY f.id",
            )?
            .query_map([id], |r| {
                Ok(FailureEvidence {
                    class: r.get(0)?,
                    category: r.get(1)?,
                    line: r.get::<_, Option<i64>>(2)?.map(|l| l as u64),
                    evidence: r.get(3)?,
                    context: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                    fingerprint: r.get(5)?,
                    test_name: r.get(6)?,
                    context_before: r.get(7)?,
                    candidates: r
                        .get::<_, Option<String>>(8)?
                        .and_then(|c| serde_json::from_str(&c).ok())
                        .unwrap_or_default(),
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    if !report.dependencies.is_empty() {
        stored.dependencies = conn
            .prepare_cached("SELECT package, version FROM dependency_snapshots WHERE run_id = ?1")?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
    }
    if !report.reports.is_empty() || report.completeness == Completeness::Whole {
        stored.reports = conn
            .prepare_cached("SELECT format, name, content FROM reports WHERE run_id = ?1")?
            .query_map(params![id], |r| {
                Ok(RawReport {
                    format: r.get(0)?,
                    name: r.get(1)?,
                    content: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeRef;
    use chrono::TimeZone;

    fn t(s: u32) -> Option<DateTime<Utc>> {
        Some(Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, s).unwrap())
    }

    fn test(name: &str, outcome: TestOutcome) -> TestResult {
        TestResult {
            name: name.into(),
            outcome,
            duration_seconds: Some(1.5),
            retries: 0,
            retry_reasons: Vec::new(),
            message: None,
        }
    }

    /// A finished failure with a failed test, and the stored form of it.
    fn finished(completeness: Completeness) -> (NewRun, StoredRun) {
        let run = NewRun {
            context: "unit".into(),
            commit: "abc".into(),
            trigger: Trigger::PullRequest,
            state: RunState::Failure,
            queued_at: t(0),
            started_at: t(10),
            finished_at: t(50),
            url: Some("https://ci.example/1".into()),
            change: Some(ChangeRef {
                number: 7,
                merged_at: None,
            }),
            tests: vec![
                test("a", TestOutcome::Failed),
                test("b", TestOutcome::Passed),
            ],
            completeness,
            ..NewRun::default()
        };
        let stored = StoredRun {
            context: run.context.clone(),
            commit: run.commit.clone(),
            trigger: Some(run.trigger),
            state: Some(run.state),
            queued_at: ms(run.queued_at),
            started_at: ms(run.started_at),
            finished_at: ms(run.finished_at),
            url: run.url.clone(),
            change: Some(7),
            tests: run.tests.clone(),
            ..StoredRun::default()
        };
        (run, stored)
    }

    #[test]
    fn a_whole_report_must_repeat_the_finished_run_and_names_what_differs() {
        let (run, stored) = finished(Completeness::Whole);
        assert_eq!(judge(&stored, &run), Verdict::Unchanged);
        // The example: flipped to success, trigger reset, queue time erased.
        let mut changed = run.clone();
        changed.state = RunState::Success;
        changed.trigger = Trigger::Other;
        changed.queued_at = None;
        assert_eq!(
            judge(&stored, &changed),
            Verdict::Conflict(vec!["trigger", "state", "queued_at"])
        );
        let mut other_test = run.clone();
        other_test.tests[0].outcome = TestOutcome::Passed;
        assert_eq!(
            judge(&stored, &other_test),
            Verdict::Conflict(vec!["tests"])
        );
        // Derived evidence is not content: a replay classified by newer rules is unchanged.
        let mut reclassified = run.clone();
        reclassified.failures.push(FailureEvidence {
            class: "oom".into(),
            category: "infra".into(),
            line: None,
            evidence: "Killed".into(),
            context: Vec::new(),
            context_before: None,
            fingerprint: None,
            test_name: None,
            candidates: Vec::new(),
        });
        assert_eq!(judge(&stored, &reclassified), Verdict::Unchanged);
    }

    #[test]
    fn a_forge_part_adds_what_the_finished_run_lacks_and_never_changes_what_it_knows() {
        let (run, mut stored) = finished(Completeness::Partial);
        assert_eq!(judge(&stored, &run), Verdict::Unchanged);

        // A "running" event delivered after the completed one is older news.
        let mut late = run.clone();
        late.state = RunState::Running;
        late.finished_at = None;
        assert_eq!(judge(&stored, &late), Verdict::Unchanged);

        // Whole seconds (webhook) against milliseconds (API) are the same time.
        let mut precise = run.clone();
        precise.finished_at = precise
            .finished_at
            .map(|f| f + chrono::Duration::milliseconds(400));
        assert_eq!(judge(&stored, &precise), Verdict::Unchanged);

        // A part without tests or times keeps the stored ones: nothing to do.
        let mut thin = run.clone();
        thin.tests.clear();
        thin.queued_at = None;
        thin.url = None;
        assert_eq!(judge(&stored, &thin), Verdict::Unchanged);

        // Another final state, or another outcome of a test, is a conflict.
        let mut flipped = run.clone();
        flipped.state = RunState::Success;
        flipped.finished_at = t(59);
        assert_eq!(
            judge(&stored, &flipped),
            Verdict::Conflict(vec!["state", "finished_at"])
        );

        // What the stored run lacks is added: its tests, a queue time, a link.
        stored.tests.clear();
        stored.queued_at = None;
        stored.url = None;
        let Verdict::Update(merged) = judge(&stored, &run) else {
            panic!("an update")
        };
        assert_eq!(merged.tests, run.tests);
        assert_eq!(merged.queued_at, run.queued_at);
        assert_eq!(merged.url, run.url);
    }

    #[test]
    fn failure_evidence_found_after_the_run_finished_is_added_once() {
        let (run, stored) = finished(Completeness::Partial);
        let mut with_log = run.clone();
        with_log.failures.push(FailureEvidence {
            class: "oom".into(),
            category: "infra".into(),
            line: Some(3),
            evidence: "Killed".into(),
            context: Vec::new(),
            context_before: Some(0),
            fingerprint: Some("f".into()),
            test_name: None,
            candidates: Vec::new(),
        });
        let Verdict::Update(merged) = judge(&stored, &with_log) else {
            panic!("an update")
        };
        assert_eq!(merged.failures, with_log.failures);
        assert!(merged.tests.is_empty(), "the stored tests stay");
        let mut stored = stored;
        stored.failures = with_log.failures.clone();
        assert_eq!(judge(&stored, &with_log), Verdict::Unchanged);
    }

    #[test]
    fn a_finished_run_waiting_for_its_trigger_takes_it_from_a_later_part() {
        let (mut run, mut stored) = finished(Completeness::Partial);
        stored.trigger = Some(Trigger::Other);
        stored.trigger_pending = true;
        run.trigger = Trigger::Push;
        let Verdict::Update(merged) = judge(&stored, &run) else {
            panic!("an update")
        };
        assert_eq!(
            (merged.trigger, merged.trigger_pending),
            (Trigger::Push, false)
        );
        // Still unknown in the report: nothing to decide.
        run.trigger_pending = true;
        run.trigger = Trigger::Other;
        assert_eq!(judge(&stored, &run), Verdict::Unchanged);
    }
}

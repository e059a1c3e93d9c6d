//! `import cockpit PATH`: bring a Cockpit `test-results.db` (written by
//! cockpit-project/bots' `store-tests`) into the store, so a team keeps its
//! history.
//!
//! - `TestRuns` (project, revision, context, url, time, retry, wait_seconds,
//!   run_seconds, state, description): one run per row. `time` is when the
//!   attempt was posted ("Not yet tested"), so queued = time, started =
//!   time + wait_seconds, finished = started + run_seconds. `retry` is the attempt.
//!   The url (unique in Cockpit's table) is the run's external id, so importing
//!   twice changes nothing. An `error` run's description is classified.
//! - `Tests` (testname, retry_reason, failed, run[, seconds]): rows of one test in
//!   one run are its tries; the last decides the outcome, the others are
//!   retries with their reasons; durations add up.
//! - `TestCoverage` (optional; its columns vary between Cockpit versions): rows
//!   with a `run` column are kept verbatim (JSON) as a `coverage` report of that run.
//!
//! `store-tests` runs for the revision of each merged pull request, so every
//! (project, revision) is a merged change whose head is that revision. The
//! database does not know PR numbers: the change gets a stable negative
//! number derived from the revision (real PR numbers are positive), and is
//! merged when its last run finished.

use super::repository;
use crate::classify::Classifier;
use crate::ingest::classify_run;
use crate::model::{NewRun, RawReport, RunState, TestOutcome, TestResult, Trigger};
use crate::store::{IngestStatus, Policy, Store, StoreError};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot open Cockpit database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("{path} is not a Cockpit test-results.db: {reason}")]
    NotCockpit { path: String, reason: String },
    #[error("reading the Cockpit database: {0}")]
    Read(#[from] rusqlite::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ImportStats {
    pub runs_created: usize,
    pub runs_updated: usize,
    pub runs_unchanged: usize,
    /// Finished runs the file now describes otherwise: kept as stored, counted
    /// in `ci_exporter_data_quality_rejections_total{reason="finished_run_changed"}`.
    pub runs_conflicting: usize,
    pub runs_skipped: usize,
    /// Runs of repositories another shard owns (`shard` in the config), not imported.
    pub runs_other_shard: usize,
    pub tests: usize,
    pub coverage_rows: usize,
    pub changes: usize,
    pub changes_decided: usize,
}

struct CockpitRun {
    id: i64,
    project: String,
    revision: String,
    context: String,
    url: Option<String>,
    time: Option<DateTime<Utc>>,
    retry: i64,
    wait: Option<f64>,
    took: Option<f64>,
    state: String,
    description: Option<String>,
}

fn real(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Real(f) if f.is_finite() => Some(*f),
        Value::Text(t) => t.trim().parse().ok().filter(|f: &f64| f.is_finite()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t.clone()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Real(f) => Some(f.to_string()),
        _ => None,
    }
}

/// Cockpit writes a Unix timestamp (float) into a TIMESTAMP column; older
/// tools wrote text. Accept both.
fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    if let Some(secs) = real(v) {
        return Utc.timestamp_millis_opt((secs * 1000.0) as i64).single();
    }
    let t = text(v)?;
    DateTime::parse_from_rfc3339(&t)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|n| n.and_utc())
        })
}

fn columns(conn: &Connection, table: &str) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(1))?;
    rows.collect()
}

/// The owner/name of a Cockpit project ("owner/name/branch" keeps owner/name).
fn project_path(project: &str) -> Option<String> {
    let mut parts = project.split('/').filter(|p| !p.is_empty());
    let (o, n) = (parts.next()?, parts.next()?);
    Some(format!("{o}/{n}"))
}

/// A stable change number for a revision: negative, from its first 12 hex digits.
pub fn synthetic_change_number(revision: &str) -> i64 {
    let digits: String = revision
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect();
    let n = i64::from_str_radix(&digits, 16).unwrap_or(0);
    -(n.max(1))
}

/// Import a Cockpit database into `store`.
pub fn import(
    path: &Path,
    store: &mut Store,
    policy: &Policy,
    classifier: &Classifier,
    now: DateTime<Utc>,
) -> Result<ImportStats, ImportError> {
    import_shard(
        path,
        store,
        policy,
        classifier,
        now,
        crate::shard::Shard::ALL,
    )
}

/// [`import`] only the repositories `shard` owns; the others are counted in
/// `runs_other_shard` (import the same file into every shard).
pub fn import_shard(
    path: &Path,
    store: &mut Store,
    policy: &Policy,
    classifier: &Classifier,
    now: DateTime<Utc>,
    shard: crate::shard::Shard,
) -> Result<ImportStats, ImportError> {
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(ImportError::NotCockpit {
            path: shown,
            reason: "no such file".into(),
        });
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            ImportError::Open {
                path: shown.clone(),
                source,
            }
        })?;
    let run_columns = columns(&conn, "TestRuns").map_err(|e| ImportError::NotCockpit {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    for needed in ["id", "project", "revision", "context", "retry", "state"] {
        if !run_columns.iter().any(|c| c == needed) {
            return Err(ImportError::NotCockpit {
                path: shown,
                reason: format!("table TestRuns has no column {needed}"),
            });
        }
    }

    let runs: Vec<CockpitRun> = {
        let mut stmt = conn.prepare(
            "SELECT id, project, revision, context, url, time, retry, wait_seconds, run_seconds, state, description
             FROM TestRuns ORDER BY time, id",
        )?;
        let rows = stmt.query_map([], |r| {
            let v = |i: usize| r.get::<_, Value>(i);
            Ok(CockpitRun {
                id: r.get(0)?,
                project: text(&v(1)?).unwrap_or_default(),
                revision: text(&v(2)?).unwrap_or_default(),
                context: text(&v(3)?).unwrap_or_default(),
                url: text(&v(4)?),
                time: timestamp(&v(5)?),
                retry: real(&v(6)?).unwrap_or(0.0) as i64,
                wait: real(&v(7)?),
                took: real(&v(8)?),
                state: text(&v(9)?).unwrap_or_default(),
                description: text(&v(10)?),
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };

    let tests = read_tests(&conn)?;
    let coverage = read_coverage(&conn)?;

    let mut stats = ImportStats::default();
    // (project, revision) → merged_at (the last finish)
    let mut changes: BTreeMap<(String, String), DateTime<Utc>> = BTreeMap::new();
    for c in runs {
        let Some(path) = project_path(&c.project) else {
            stats.runs_skipped += 1;
            continue;
        };
        if c.revision.is_empty() || c.context.is_empty() || c.retry < 0 {
            stats.runs_skipped += 1;
            continue;
        }
        if !shard.owns(&path) {
            stats.runs_other_shard += 1;
            continue;
        }
        let state = match c.state.as_str() {
            "success" => RunState::Success,
            "failure" => RunState::Failure,
            "error" => RunState::Error,
            _ => RunState::Pending,
        };
        let queued_at = c.time;
        let started_at = match (state.is_terminal(), queued_at, c.wait) {
            (true, Some(q), Some(w)) => {
                Some(q + chrono::Duration::milliseconds((w * 1000.0) as i64))
            }
            (true, q, None) => q,
            _ => None,
        };
        let finished_at = match (state.is_terminal(), started_at, c.took) {
            (true, Some(s), Some(t)) => {
                Some(s + chrono::Duration::milliseconds((t * 1000.0) as i64))
            }
            _ => None,
        };
        let run_tests = tests.get(&c.id).cloned().unwrap_or_default();
        stats.tests += run_tests.len();
        let mut failures = classify_run(
            classifier,
            c.description
                .as_deref()
                .filter(|_| state == RunState::Error),
            &run_tests,
        );
        failures.truncate(50);
        let reports: Vec<RawReport> = coverage
            .get(&c.id)
            .map(|rows| {
                stats.coverage_rows += rows.len();
                vec![RawReport {
                    format: "coverage".into(),
                    name: "TestCoverage".into(),
                    content: serde_json::Value::Array(rows.clone()).to_string(),
                }]
            })
            .unwrap_or_default();
        let url = c
            .url
            .clone()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
        let run = NewRun {
            repository: repository(&path),
            context: c.context.clone(),
            commit: c.revision.clone(),
            external_id: Some(format!(
                "cockpit:{}",
                c.url.clone().unwrap_or_else(|| format!("id-{}", c.id))
            )),
            attempt: c.retry.min(u32::MAX as i64) as u32,
            trigger: Trigger::PullRequest,
            state,
            queued_at,
            started_at,
            finished_at,
            url,

            tests: run_tests,
            reports,
            failures,
            source: "cockpit-import".into(),
            ..NewRun::default()
        };
        let ingested = store.ingest_run(&run, policy, now)?;
        match ingested.status {
            IngestStatus::Created => stats.runs_created += 1,
            IngestStatus::Updated => stats.runs_updated += 1,
            IngestStatus::Unchanged => stats.runs_unchanged += 1,
            IngestStatus::Conflict => stats.runs_conflicting += 1,
        }
        let end = finished_at.or(started_at).or(queued_at);
        if let Some(end) = end {
            let e = changes.entry((path, c.revision)).or_insert(end);
            *e = (*e).max(end);
        }
    }
    for ((path, revision), merged_at) in &changes {
        store.record_merge(
            &repository(path),
            synthetic_change_number(revision),
            Some(revision),
            *merged_at,
            now,
        )?;
    }
    stats.changes = changes.len();
    // Everything imported is history: decide the changes now.
    stats.changes_decided = store.settle(policy, now, Some(0))?.changes_decided;
    Ok(stats)
}

fn read_tests(conn: &Connection) -> Result<BTreeMap<i64, Vec<TestResult>>, rusqlite::Error> {
    let cols = match columns(conn, "Tests") {
        Ok(c) if !c.is_empty() => c,
        _ => return Ok(BTreeMap::new()),
    };
    let seconds = if cols.iter().any(|c| c == "seconds") {
        "seconds"
    } else {
        "NULL"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT run, testname, failed, retry_reason, {seconds} FROM Tests ORDER BY run, rowid"
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            text(&r.get::<_, Value>(1)?).unwrap_or_default(),
            real(&r.get::<_, Value>(2)?).unwrap_or(0.0) != 0.0,
            text(&r.get::<_, Value>(3)?).filter(|s| !s.is_empty()),
            real(&r.get::<_, Value>(4)?),
        ))
    })?;
    // run → test name → tries in order
    // (failed, retry reason, seconds) of each try
    type Tries = Vec<(bool, Option<String>, Option<f64>)>;
    let mut tries: BTreeMap<i64, Vec<(String, Tries)>> = BTreeMap::new();
    for row in rows {
        let (run, name, failed, reason, seconds) = row?;
        if name.is_empty() || name.len() > crate::ingest::MAX_NAME_LEN {
            continue;
        }
        let tests = tries.entry(run).or_default();
        match tests.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => t.push((failed, reason, seconds)),
            None => tests.push((name, vec![(failed, reason, seconds)])),
        }
    }
    Ok(tries
        .into_iter()
        .map(|(run, tests)| {
            let results = tests
                .into_iter()
                .map(|(name, tries)| {
                    let (last_failed, last_reason, _) =
                        tries.last().cloned().unwrap_or((false, None, None));
                    let durations: Vec<f64> = tries.iter().filter_map(|t| t.2).collect();
                    TestResult {
                        name,
                        outcome: if last_failed {
                            TestOutcome::Failed
                        } else {
                            TestOutcome::Passed
                        },
                        duration_seconds: if durations.is_empty() {
                            None
                        } else {
                            Some(durations.iter().sum())
                        },
                        retries: (tries.len() - 1) as u32,
                        retry_reasons: tries[..tries.len() - 1]
                            .iter()
                            .filter_map(|t| t.1.clone())
                            .collect(),
                        message: if last_failed { last_reason } else { None },
                    }
                })
                .collect();
            (run, results)
        })
        .collect())
}

fn read_coverage(
    conn: &Connection,
) -> Result<BTreeMap<i64, Vec<serde_json::Value>>, rusqlite::Error> {
    let cols = match columns(conn, "TestCoverage") {
        Ok(c) if c.iter().any(|c| c == "run") => c,
        _ => return Ok(BTreeMap::new()),
    };
    let mut stmt = conn.prepare("SELECT * FROM TestCoverage ORDER BY rowid")?;
    let mut out: BTreeMap<i64, Vec<serde_json::Value>> = BTreeMap::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let mut obj = serde_json::Map::new();
        let mut run = None;
        for (i, c) in cols.iter().enumerate() {
            let v: Value = r.get(i)?;
            if c == "run" {
                run = real(&v).map(|f| f as i64);
            }
            obj.insert(
                c.clone(),
                match v {
                    Value::Null => serde_json::Value::Null,
                    Value::Integer(i) => i.into(),
                    Value::Real(f) => serde_json::Number::from_f64(f)
                        .map(serde_json::Value::Number)
                        .unwrap_or(serde_json::Value::Null),
                    Value::Text(t) => t.into(),
                    Value::Blob(b) => format!("<{} bytes>", b.len()).into(),
                },
            );
        }
        if let Some(run) = run {
            out.entry(run)
                .or_default()
                .push(serde_json::Value::Object(obj));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_and_change_numbers() {
        assert_eq!(
            project_path("cockpit-project/cockpit/rhel-7.9").as_deref(),
            Some("cockpit-project/cockpit")
        );
        assert_eq!(project_path("nope"), None);
        let n = synthetic_change_number("0123456789abcdef");
        assert!(n < 0);
        assert_eq!(n, synthetic_change_number("0123456789abcdef"));
        assert_eq!(synthetic_change_number("zz"), -1);
    }
}

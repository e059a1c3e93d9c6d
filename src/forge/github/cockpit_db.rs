//! Reading a Cockpit `test-results.db` (written by cockpit-project/bots'
//! `store-tests`) as a stream: each `TestRuns` row with its `Tests` rows (and
//! `TestCoverage` rows, an optional table), in `TestRuns.id` order, in memory
//! bounded by one run's rows whatever the size of the file.
//!
//! store-tests inserts a run's tests right after the run, so `Tests` in rowid
//! order is already in run order: both tables are read front to back and
//! merged. A file where that does not hold (rows added by other tools) is
//! read with `ORDER BY run`, which SQLite sorts on disk.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// A value of a Cockpit table as SQLite stores it (loosely typed: a column
/// may hold a number in one row and text in another).
pub use rusqlite::types::Value;

/// Why a file cannot be read as a Cockpit database.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open Cockpit database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("{path} is not a Cockpit test-results.db: {reason}")]
    NotCockpit { path: String, reason: String },
    #[error("reading the Cockpit database: {0}")]
    Read(#[from] rusqlite::Error),
}

/// One `TestRuns` row, as written (values are loosely typed in SQLite).
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: i64,
    pub project: Option<String>,
    pub revision: Option<String>,
    pub context: Option<String>,
    pub url: Option<String>,
    pub time: Value,
    pub retry: Value,
    pub wait_seconds: Value,
    pub run_seconds: Value,
    pub state: Option<String>,
    pub description: Option<String>,
}

/// One `Tests` row: one try of a test in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRow {
    pub name: String,
    pub failed: bool,
    pub retry_reason: Option<String>,
    pub seconds: Option<f64>,
}

/// A run with its rows.
#[derive(Debug, Clone)]
pub struct SourceRun {
    pub run: RunRow,
    pub tests: Vec<TestRow>,
    /// `TestCoverage` rows of the run, as JSON objects.
    pub coverage: Vec<serde_json::Value>,
}

/// What reading found besides runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// `Tests` rows whose `run` is no `TestRuns` row.
    pub orphan_tests: usize,
    /// `TestCoverage` rows whose `run` is no `TestRuns` row.
    pub orphan_coverage: usize,
}

pub fn real(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Real(f) if f.is_finite() => Some(*f),
        Value::Text(t) => t.trim().parse().ok().filter(|f: &f64| f.is_finite()),
        _ => None,
    }
}

pub fn text(v: Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t),
        Value::Integer(i) => Some(i.to_string()),
        Value::Real(f) => Some(f.to_string()),
        _ => None,
    }
}

fn columns(conn: &Connection, table: &str) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(1))?;
    rows.collect()
}

/// An open Cockpit database.
pub struct Source {
    conn: Connection,
    tests_seconds: bool,
    has_tests: bool,
    coverage_columns: Vec<String>,
}

impl Source {
    /// Open `path` read-only and check it is a Cockpit database.
    pub fn open(path: &Path) -> Result<Source, SourceError> {
        let shown = path.display().to_string();
        let not_cockpit = |reason: String| SourceError::NotCockpit {
            path: shown.clone(),
            reason,
        };
        if !path.is_file() {
            return Err(not_cockpit("no such file".into()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| SourceError::Open {
            path: shown.clone(),
            source,
        })?;
        let run_columns = columns(&conn, "TestRuns").map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                not_cockpit("not an SQLite database".into())
            }
            e => not_cockpit(e.to_string()),
        })?;
        if run_columns.is_empty() {
            return Err(not_cockpit(
                "it has no table TestRuns (store-tests of cockpit-project/bots writes TestRuns and Tests)"
                    .into(),
            ));
        }
        for needed in ["id", "project", "revision", "context", "retry", "state"] {
            if !run_columns.iter().any(|c| c == needed) {
                return Err(not_cockpit(format!(
                    "table TestRuns has no column {needed}"
                )));
            }
        }
        let test_columns = columns(&conn, "Tests")?;
        let has_tests = !test_columns.is_empty();
        if has_tests {
            for needed in ["testname", "failed", "run", "retry_reason"] {
                if !test_columns.iter().any(|c| c == needed) {
                    return Err(not_cockpit(format!("table Tests has no column {needed}")));
                }
            }
        }
        let coverage_columns = columns(&conn, "TestCoverage")?;
        let coverage_columns = if coverage_columns.iter().any(|c| c == "run") {
            coverage_columns
        } else {
            Vec::new()
        };
        Ok(Source {
            tests_seconds: test_columns.iter().any(|c| c == "seconds"),
            has_tests,
            coverage_columns,
            conn,
        })
    }

    /// Rows of `TestRuns`.
    pub fn run_count(&self) -> Result<u64, SourceError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM TestRuns", [], |r| r.get::<_, i64>(0))?
            .max(0) as u64)
    }

    /// Whether `TestRuns.url` is declared unique (store-tests' schema): then
    /// no two runs of the file share an external id.
    pub fn urls_unique(&self) -> Result<bool, SourceError> {
        let mut list = self.conn.prepare("PRAGMA index_list(TestRuns)")?;
        let unique: Vec<String> = list
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, bool>(2)?)))?
            .filter_map(|r| r.ok().filter(|(_, u)| *u).map(|(n, _)| n))
            .collect();
        for index in unique {
            let mut info = self.conn.prepare(&format!(
                "PRAGMA index_info(\"{}\")",
                index.replace('"', "\"\"")
            ))?;
            let columns: Vec<String> = info
                .query_map([], |r| r.get::<_, String>(2))?
                .collect::<Result<_, _>>()?;
            if columns == ["url"] {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether `Tests` in rowid order is in `run` order (as store-tests writes it).
    fn tests_in_run_order(&self) -> Result<bool, SourceError> {
        let mut stmt = self.conn.prepare("SELECT run FROM Tests")?;
        let mut rows = stmt.query([])?;
        let mut last = i64::MIN;
        while let Some(r) = rows.next()? {
            let run = real(&r.get::<_, Value>(0)?).map(|f| f as i64).unwrap_or(0);
            if run < last {
                return Ok(false);
            }
            last = run;
        }
        Ok(true)
    }

    /// Call `f` with every run and its rows, in `TestRuns.id` order.
    pub fn for_each_run<E: From<SourceError>>(
        &self,
        mut f: impl FnMut(SourceRun) -> Result<(), E>,
    ) -> Result<ReadStats, E> {
        let db = |e: rusqlite::Error| E::from(SourceError::Read(e));
        let mut stats = ReadStats::default();
        let mut runs = self.conn.prepare(
            "SELECT id, project, revision, context, url, time, retry, wait_seconds, run_seconds, state, description
             FROM TestRuns ORDER BY id",
        ).map_err(db)?;
        let tests_sql = if !self.has_tests {
            None
        } else {
            let seconds = if self.tests_seconds {
                "seconds"
            } else {
                "NULL"
            };
            let order = if self.tests_in_run_order().map_err(E::from)? {
                "rowid"
            } else {
                "run, rowid"
            };
            Some(format!(
                "SELECT run, testname, failed, retry_reason, {seconds} FROM Tests ORDER BY {order}"
            ))
        };
        let mut tests_stmt = match &tests_sql {
            Some(sql) => Some(self.conn.prepare(sql).map_err(db)?),
            None => None,
        };
        let mut tests = match tests_stmt.as_mut() {
            Some(s) => Some(s.query([]).map_err(db)?),
            None => None,
        };
        let mut coverage_stmt = if self.coverage_columns.is_empty() {
            None
        } else {
            Some(
                self.conn
                    .prepare("SELECT * FROM TestCoverage ORDER BY run, rowid")
                    .map_err(db)?,
            )
        };
        let mut coverage = match coverage_stmt.as_mut() {
            Some(s) => Some(s.query([]).map_err(db)?),
            None => None,
        };
        let run_index = self
            .coverage_columns
            .iter()
            .position(|c| c == "run")
            .unwrap_or(0);
        // The next test and coverage rows, read ahead: (run, row).
        let mut next_test: Option<(i64, TestRow)> = None;
        let mut next_coverage: Option<(i64, serde_json::Value)> = None;
        let read_test =
            |rows: &mut rusqlite::Rows<'_>| -> rusqlite::Result<Option<(i64, TestRow)>> {
                let Some(r) = rows.next()? else {
                    return Ok(None);
                };
                let run = real(&r.get::<_, Value>(0)?).map(|f| f as i64).unwrap_or(0);
                Ok(Some((
                    run,
                    TestRow {
                        name: text(r.get::<_, Value>(1)?).unwrap_or_default(),
                        failed: real(&r.get::<_, Value>(2)?).unwrap_or(0.0) != 0.0,
                        retry_reason: text(r.get::<_, Value>(3)?).filter(|s| !s.is_empty()),
                        seconds: real(&r.get::<_, Value>(4)?),
                    },
                )))
            };
        let columns = &self.coverage_columns;
        let read_coverage =
            |rows: &mut rusqlite::Rows<'_>| -> rusqlite::Result<Option<(i64, serde_json::Value)>> {
                let Some(r) = rows.next()? else {
                    return Ok(None);
                };
                let mut obj = serde_json::Map::new();
                for (i, c) in columns.iter().enumerate() {
                    obj.insert(c.clone(), json_value(r.get::<_, Value>(i)?));
                }
                let run = real(&r.get::<_, Value>(run_index)?)
                    .map(|f| f as i64)
                    .unwrap_or(0);
                Ok(Some((run, serde_json::Value::Object(obj))))
            };
        if let Some(rows) = tests.as_mut() {
            next_test = read_test(rows).map_err(db)?;
        }
        if let Some(rows) = coverage.as_mut() {
            next_coverage = read_coverage(rows).map_err(db)?;
        }
        let read_run = |r: &rusqlite::Row<'_>| -> rusqlite::Result<RunRow> {
            Ok(RunRow {
                id: r.get(0)?,
                project: text(r.get(1)?),
                revision: text(r.get(2)?),
                context: text(r.get(3)?),
                url: text(r.get(4)?),
                time: r.get(5)?,
                retry: r.get(6)?,
                wait_seconds: r.get(7)?,
                run_seconds: r.get(8)?,
                state: text(r.get(9)?),
                description: text(r.get(10)?),
            })
        };
        let mut rows = runs.query([]).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            let run = read_run(r).map_err(db)?;
            let mut run_tests = Vec::new();
            if let Some(rows) = tests.as_mut() {
                while let Some((id, _)) = &next_test {
                    if *id > run.id {
                        break;
                    }
                    let (id, row) = next_test.take().expect("peeked");
                    if id == run.id {
                        run_tests.push(row);
                    } else {
                        stats.orphan_tests += 1;
                    }
                    next_test = read_test(rows).map_err(db)?;
                }
            }
            let mut run_coverage = Vec::new();
            if let Some(rows) = coverage.as_mut() {
                while let Some((id, _)) = &next_coverage {
                    if *id > run.id {
                        break;
                    }
                    let (id, row) = next_coverage.take().expect("peeked");
                    if id == run.id {
                        run_coverage.push(row);
                    } else {
                        stats.orphan_coverage += 1;
                    }
                    next_coverage = read_coverage(rows).map_err(db)?;
                }
            }
            f(SourceRun {
                run,
                tests: run_tests,
                coverage: run_coverage,
            })?;
        }
        // Rows after the last run belong to none.
        if let Some(rows) = tests.as_mut() {
            while next_test.is_some() {
                stats.orphan_tests += 1;
                next_test = read_test(rows).map_err(db)?;
            }
        }
        if let Some(rows) = coverage.as_mut() {
            while next_coverage.is_some() {
                stats.orphan_coverage += 1;
                next_coverage = read_coverage(rows).map_err(db)?;
            }
        }
        Ok(stats)
    }
}

fn json_value(v: Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => i.into(),
        Value::Real(f) => serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::Text(t) => t.into(),
        Value::Blob(b) => format!("<{} bytes>", b.len()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path, sql: &str) -> std::path::PathBuf {
        let path = dir.join("t.db");
        Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        path
    }

    #[test]
    fn runs_come_with_their_tests_in_either_row_order_and_orphans_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        for order in ["in run order", "out of order"] {
            let inserts = if order == "in run order" {
                "INSERT INTO Tests VALUES ('t1', NULL, 0, 1, 3), ('t2', 'why', 1, 1, 4), ('t3', NULL, 0, 3, 5), ('x', NULL, 0, 9, 1);"
            } else {
                "INSERT INTO Tests VALUES ('t3', NULL, 0, 3, 5), ('t1', NULL, 0, 1, 3), ('x', NULL, 0, 9, 1), ('t2', 'why', 1, 1, 4);"
            };
            let _ = std::fs::remove_file(dir.path().join("t.db"));
            let path = db(
                dir.path(),
                &format!(
                    "CREATE TABLE TestRuns (id INTEGER PRIMARY KEY, project TEXT, revision TEXT, context TEXT, url TEXT,
                       time TIMESTAMP, retry INTEGER, wait_seconds INTEGER, run_seconds INTEGER, state TEXT, description TEXT);
                     CREATE TABLE Tests (testname TEXT NOT NULL, retry_reason TEXT, failed INTEGER, run INTEGER NOT NULL, seconds INTEGER NOT NULL);
                     INSERT INTO TestRuns (id, project, revision, context, retry, state) VALUES
                       (1, 'o/r', 'a', 'c', 0, 'success'), (2, 'o/r', 'a', 'd', 0, 'success'), (3, 'o/r', 'b', 'c', 0, 'failure');
                     {inserts}"
                ),
            );
            let source = Source::open(&path).unwrap();
            assert_eq!(source.run_count().unwrap(), 3);
            let mut seen = Vec::new();
            let stats = source
                .for_each_run(|r| -> Result<(), SourceError> {
                    seen.push((
                        r.run.id,
                        r.tests.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
                    ));
                    Ok(())
                })
                .unwrap();
            assert_eq!(
                seen,
                vec![
                    (1, vec!["t1".to_string(), "t2".to_string()]),
                    (2, vec![]),
                    (3, vec!["t3".to_string()]),
                ],
                "{order}"
            );
            assert_eq!(stats.orphan_tests, 1, "{order}");
        }
    }

    #[test]
    fn files_that_are_not_cockpit_databases_are_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "just some text, certainly not SQLite ".repeat(100)).unwrap();
        let err = Source::open(&text).err().unwrap().to_string();
        assert!(
            err.contains("is not a Cockpit test-results.db: not an SQLite database"),
            "{err}"
        );
        let other = db(dir.path(), "CREATE TABLE runs (id INTEGER PRIMARY KEY);");
        let err = Source::open(&other).err().unwrap().to_string();
        assert!(err.contains("it has no table TestRuns"), "{err}");
        let err = Source::open(&dir.path().join("missing.db"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
    }
}

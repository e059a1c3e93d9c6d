//! SQL on the store behind a test's exporter, whichever engine it runs on
//! (the SQLite file `db`, or on PostgreSQL, see [`super::on_postgres`], the
//! database standing in for it): for the checks a test makes on what was
//! stored beyond what the exporter answers. Both engines' schemas have the
//! same tables and columns (crates/store-pg/src/schema.rs), integers and
//! flags as integers: write queries both accept, with values inlined
//! ([`quote`] for text). Results come back as text, as PostgreSQL's simple
//! protocol gives them, so that `count(*)`, `sum(..)` (numeric on
//! PostgreSQL) and text columns read the same way on both. Call them from
//! a test's thread, not from async code: PostgreSQL's synchronous client
//! runs a runtime of its own.

use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

/// One result row: each column as text, `None` for NULL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row(pub Vec<Option<String>>);

impl Row {
    /// Column `i`, which must not be NULL.
    pub(crate) fn text(&self, i: usize) -> String {
        self.opt_text(i)
            .unwrap_or_else(|| panic!("column {i} is NULL in {self:?}"))
    }

    pub(crate) fn opt_text(&self, i: usize) -> Option<String> {
        self.0
            .get(i)
            .cloned()
            .unwrap_or_else(|| panic!("no column {i} in {self:?}"))
    }

    /// Column `i` as an integer.
    pub(crate) fn int(&self, i: usize) -> i64 {
        let t = self.text(i);
        t.parse()
            .unwrap_or_else(|_| panic!("column {i} is not an integer: {t:?}"))
    }

    pub(crate) fn opt_int(&self, i: usize) -> Option<i64> {
        self.opt_text(i).map(|_| self.int(i))
    }

    /// Column `i` as a number.
    pub(crate) fn real(&self, i: usize) -> f64 {
        let t = self.text(i);
        t.parse()
            .unwrap_or_else(|_| panic!("column {i} is not a number: {t:?}"))
    }
}

/// `s` as an SQL string literal (both engines: `'` doubled, nothing else
/// special).
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sqlite(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).expect("the SQLite file");
    // The exporter may be writing at the same time.
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

fn postgres(db: &Path) -> postgres::Client {
    let mut config = postgres::Config::from_str(&super::database_url(db)).expect("a URL");
    config.options("-c client_min_messages=warning");
    config.connect(postgres::NoTls).expect("the test database")
}

/// Every row `sql` (one statement) answers on the store of `db`.
pub(crate) fn rows(db: &Path, sql: &str) -> Vec<Row> {
    if super::on_postgres() {
        postgres(db)
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => Some(Row((0..r.len())
                    .map(|i| r.get(i).map(str::to_string))
                    .collect())),
                _ => None,
            })
            .collect()
    } else {
        use rusqlite::types::ValueRef;
        let conn = sqlite(db);
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => None,
                        ValueRef::Integer(v) => Some(v.to_string()),
                        ValueRef::Real(v) => Some(v.to_string()),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Row)
        })
        .and_then(|rows| rows.collect())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// The one row `sql` answers, if any (more than one is a mistake).
pub(crate) fn row(db: &Path, sql: &str) -> Option<Row> {
    let mut all = rows(db, sql);
    assert!(all.len() <= 1, "{sql}: {} rows", all.len());
    all.pop()
}

/// The integer `sql` answers in its one row and column (a `count(*)`).
pub(crate) fn count(db: &Path, sql: &str) -> i64 {
    row(db, sql)
        .unwrap_or_else(|| panic!("{sql}: no row"))
        .int(0)
}

/// The first column of the one row `sql` answers, if there is a row.
pub(crate) fn text(db: &Path, sql: &str) -> Option<String> {
    row(db, sql).map(|r| r.text(0))
}

/// Run the statement `sql` (an UPDATE, say) on the store of `db`; answers
/// how many rows it changed.
pub(crate) fn execute(db: &Path, sql: &str) -> u64 {
    if super::on_postgres() {
        postgres(db)
            .execute(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    } else {
        sqlite(db)
            .execute(sql, [])
            .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
    }
}

/// `cmd`, a command of the binary that opens the store `db` (its `--db`),
/// on the test's engine: on PostgreSQL with `CI_SLO_DATABASE_URL` of the
/// database standing in for `db` (as [`super::run`] and
/// [`super::Exporter`] do).
pub(crate) fn on_engine<'a>(cmd: &'a mut Command, db: &Path) -> &'a mut Command {
    if super::on_postgres() {
        cmd.env("CI_SLO_DATABASE_URL", super::database_url(db));
    }
    cmd
}

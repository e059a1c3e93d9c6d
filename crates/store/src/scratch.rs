//! Where a fresh load (`fresh.rs`) builds its per-test tables: `tests`,
//! `test_days`, `test_commits` and the tests' indexes, in a scratch SQLite
//! file of their own ([`Scratch`]), written by a thread of their own while
//! the load's connection builds the other tables' indexes, then copied into
//! the store whole.
//!
//! A SQLite database has one writer: written into the store itself, the
//! per-test tables (about 6.5 M rows at 1 M runs) and their index would
//! come before or after the other indexes, one core busy and the other
//! idle. Written into a file of their own, they take the idle core; the
//! copy into the store (`INSERT INTO t SELECT * FROM scratch.t` into an
//! empty table of the same definition) is SQLite's transfer: each row and
//! index entry copied as it is stored, appended, not decoded, checked or
//! sorted again.
//!
//! The scratch file lies next to the store (in the system's temporary
//! directory for a store in memory) and is deleted when the load ends,
//! finished or not. Its tables are created from the store's own
//! definitions, so the copy is the transfer (an equal definition is what
//! SQLite asks) and the rows are the ones written into the store directly
//! would be. It is written without a journal: nothing in it outlives the
//! load, and the load's own transaction makes the copy atomic.

use crate::staging::Staging;
use rusqlite::Connection;
use std::path::Path;

/// The tables built in the scratch file, in the order they are copied.
pub(crate) const TABLES: [&str; 3] = ["tests", "test_days", "test_commits"];

/// The schema name the scratch file is attached as to the load's connection.
const ATTACHED_AS: &str = "fresh_scratch";

/// The scratch connection's page cache (MiB). Its rows are appended, which
/// touches only the last pages of each table; the cache also bounds the
/// memory of the sort that builds the tests' index.
const CACHE_MIB: i64 = 4;

/// A fresh load's scratch file for its per-test tables (deleted on drop).
pub(crate) struct Scratch {
    file: tempfile::NamedTempFile,
    page_size: i64,
    /// The store's `CREATE TABLE` statements of [`TABLES`].
    tables: Vec<String>,
    /// The `CREATE INDEX` statements of the tests' indexes (dropped from
    /// the store for the load).
    indexes: Vec<String>,
    attached: bool,
}

impl Scratch {
    /// A new scratch file for the load on `conn` (the store's connection),
    /// its tables to be created as the store defines them; `indexes`: the
    /// `CREATE INDEX` statements of the per-test tables' indexes.
    pub(crate) fn create(conn: &Connection, indexes: Vec<String>) -> std::io::Result<Scratch> {
        let dir = match conn.path() {
            Some(p) if !p.is_empty() => Path::new(p)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            _ => std::env::temp_dir(),
        };
        let file = tempfile::Builder::new()
            .prefix(".ci-slo-fresh-tests-")
            .suffix(".db")
            .tempfile_in(&dir)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create the scratch file of the per-test tables in {}: {e}",
                        dir.display()
                    ),
                )
            })?;
        let sql = |conn: &Connection| -> rusqlite::Result<(i64, Vec<String>)> {
            let page_size = conn.query_row("PRAGMA main.page_size", [], |r| r.get(0))?;
            let mut tables = Vec::with_capacity(TABLES.len());
            for table in TABLES {
                tables.push(conn.query_row(
                    "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )?);
            }
            Ok((page_size, tables))
        };
        let (page_size, tables) = sql(conn).map_err(std::io::Error::other)?;
        Ok(Scratch {
            file,
            page_size,
            tables,
            indexes,
            attached: false,
        })
    }

    /// Write the per-test tables of `staging` and their indexes into the
    /// scratch file, on a connection of its own (on the calling thread).
    pub(crate) fn build(&self, staging: &mut Staging) -> rusqlite::Result<()> {
        let conn = Connection::open(self.file.path())?;
        // The page size first: it is fixed when the first table is created.
        conn.pragma_update(None, "page_size", self.page_size)?;
        conn.pragma_update(None, "journal_mode", "OFF")?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.pragma_update(None, "cache_size", -(CACHE_MIB * 1024))?;
        // The tables' references are to the store's tables, which are not
        // here (and the rows refer to ids the load wrote).
        conn.pragma_update(None, "foreign_keys", false)?;
        conn.execute_batch("BEGIN")?;
        for sql in &self.tables {
            conn.execute_batch(sql)?;
        }
        staging.write_tests(&conn)?;
        staging.write_test_commits(&conn)?;
        for sql in &self.indexes {
            conn.execute_batch(sql)?;
        }
        conn.execute_batch("COMMIT")?;
        conn.close().map_err(|(_, e)| e)
    }

    /// Copy the built tables into the store's (empty) ones inside the
    /// load's transaction `tx`: the tests' indexes are created on the empty
    /// table first, so that the transfer copies them too.
    pub(crate) fn copy_into(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        let path = self
            .file
            .path()
            .to_str()
            .ok_or_else(|| rusqlite::Error::InvalidPath(self.file.path().to_path_buf()))?;
        tx.execute(&format!("ATTACH DATABASE ?1 AS {ATTACHED_AS}"), [path])?;
        self.attached = true;
        for sql in &self.indexes {
            tx.execute_batch(sql)?;
        }
        for table in TABLES {
            tx.execute_batch(&format!(
                "INSERT INTO main.{table} SELECT * FROM {ATTACHED_AS}.{table}"
            ))?;
        }
        Ok(())
    }

    /// Detach the scratch file from `conn` once the load's transaction has
    /// ended (SQLite detaches no file a transaction has read).
    pub(crate) fn detach(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.attached {
            conn.execute_batch(&format!("DETACH DATABASE {ATTACHED_AS}"))?;
            self.attached = false;
        }
        Ok(())
    }
}

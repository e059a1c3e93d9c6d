//! A run's downloaded log and its log section timings: kept once, read by
//! the UI and the API.

use crate::error::StoreError;
use crate::{Store, to_ms};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

impl Store {
    /// Keep a run's downloaded log (once; a second call for the same run is ignored).
    /// Returns false when the log was already stored.
    pub fn store_log(
        &self,
        run_id: i64,
        content: &str,
        truncated: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO run_logs (run_id, fetched_at, bytes, truncated, content) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id, to_ms(now), content.len() as i64, truncated, content],
        )? == 1)
    }

    pub fn has_log(&self, run_id: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM run_logs WHERE run_id = ?1", [run_id], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// The stored log of a run: (content, truncated).
    pub fn log(&self, run_id: i64) -> Result<Option<(String, bool)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT content, truncated FROM run_logs WHERE run_id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Keep a run's log section timings (GitLab `section_start`/`section_end`),
    /// replacing earlier ones.
    pub fn store_sections(
        &mut self,
        run_id: i64,
        sections: &[(String, u64)],
    ) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM run_sections WHERE run_id = ?1", [run_id])?;
        for (ord, (name, seconds)) in sections.iter().enumerate() {
            tx.execute(
                "INSERT INTO run_sections (run_id, ord, name, seconds) VALUES (?1, ?2, ?3, ?4)",
                params![
                    run_id,
                    ord as i64,
                    name,
                    i64::try_from(*seconds).unwrap_or(i64::MAX)
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A run's log section timings, in the order they ended.
    pub fn sections(&self, run_id: i64) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, seconds FROM run_sections WHERE run_id = ?1 ORDER BY ord",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

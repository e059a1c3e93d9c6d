//! A run's downloaded log and its log section timings on PostgreSQL, as the
//! SQLite store's `logs.rs`: kept once, read by the UI and the API.

use crate::{PgStore, PgStoreError, Sql};
use chrono::{DateTime, Utc};

impl PgStore {
    /// Keep a run's downloaded log (once; a second call for the same run is
    /// ignored). Returns false when the log was already stored.
    pub fn store_log(
        &mut self,
        run_id: i64,
        content: &str,
        truncated: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, PgStoreError> {
        Ok(self.connection().execute(
            "INSERT INTO run_logs (run_id, fetched_at, bytes, truncated, content) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[
                &run_id,
                &now.timestamp_millis(),
                &(content.len() as i64),
                &i64::from(truncated),
                &content,
            ],
        )? == 1)
    }

    pub fn has_log(&self, run_id: i64) -> Result<bool, PgStoreError> {
        Ok(self
            .read()
            .query_opt("SELECT 1 FROM run_logs WHERE run_id = $1", &[&run_id])?
            .is_some())
    }

    /// The stored log of a run: (content, truncated).
    pub fn log(&self, run_id: i64) -> Result<Option<(String, bool)>, PgStoreError> {
        Ok(self
            .read()
            .query_opt(
                "SELECT content, truncated FROM run_logs WHERE run_id = $1",
                &[&run_id],
            )?
            .map(|r| (r.get(0), r.get::<_, i64>(1) != 0)))
    }

    /// Keep a run's log section timings, replacing earlier ones.
    pub fn store_sections(
        &mut self,
        run_id: i64,
        sections: &[(String, u64)],
    ) -> Result<(), PgStoreError> {
        let mut tx = self.write_tx()?;
        tx.execute("DELETE FROM run_sections WHERE run_id = $1", &[&run_id])?;
        for (ord, (name, seconds)) in sections.iter().enumerate() {
            tx.execute(
                "INSERT INTO run_sections (run_id, ord, name, seconds) VALUES ($1, $2, $3, $4)",
                &[
                    &run_id,
                    &(ord as i64),
                    name,
                    &i64::try_from(*seconds).unwrap_or(i64::MAX),
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A run's log section timings, in the order they ended.
    pub fn sections(&self, run_id: i64) -> Result<Vec<(String, u64)>, PgStoreError> {
        Ok(self
            .read()
            .query(
                "SELECT name, seconds FROM run_sections WHERE run_id = $1 ORDER BY ord",
                &[&run_id],
            )?
            .into_iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }
}

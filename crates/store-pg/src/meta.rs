//! The `meta` table: what the SQLite `Store` keeps there (when a server
//! first served from the database, whether it holds the demo history), with
//! the same keys and methods.

use crate::{PgStore, PgStoreError, Sql};
use chrono::{DateTime, Utc};

const META_SERVING_SINCE: &str = "serving_since";
const META_DEMO: &str = "demo";

impl PgStore {
    pub fn meta(&self, key: &str) -> Result<Option<String>, PgStoreError> {
        Ok(self
            .read()
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
            .map(|r| r.get(0)))
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), PgStoreError> {
        self.connection().execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    /// Record that a server started on this database (the first time only:
    /// `ON CONFLICT DO NOTHING`, so replicas starting together agree).
    pub fn mark_serving(&mut self, now: DateTime<Utc>) -> Result<(), PgStoreError> {
        self.connection().execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&META_SERVING_SINCE, &now.to_rfc3339()],
        )?;
        Ok(())
    }

    pub fn is_demo(&self) -> Result<bool, PgStoreError> {
        Ok(self.meta(META_DEMO)?.is_some())
    }

    pub fn mark_demo(&mut self, seed_info: &str) -> Result<(), PgStoreError> {
        self.set_meta(META_DEMO, seed_info)
    }

    pub fn run_count(&self) -> Result<i64, PgStoreError> {
        Ok(self
            .read()
            .query_one("SELECT count(*) FROM runs", &[])?
            .get(0))
    }
}

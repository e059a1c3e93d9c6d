//! Running [`crate::schema::MIGRATIONS`]: all pending migrations in one
//! transaction, under a transaction-level advisory lock, so that replicas
//! starting at once migrate once (the others wait for the lock, then find
//! the database up to date). A database newer than this binary is refused.

use crate::PgStoreError;
use crate::schema::MIGRATIONS;
use ci_slo_store::Migrating;

/// The advisory lock key that serialises migrators ("cislo" + 1).
pub const MIGRATION_LOCK: i64 = 0x6369_736c_6f00_0001;

/// The version a database has reached (0: never migrated). Reads the
/// version table if there is one.
pub fn schema_version(client: &mut impl postgres::GenericClient) -> Result<i64, PgStoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_opt("SELECT version FROM schema_version", &[])?
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0))
}

/// Bring the database to the latest version, telling `progress` before each
/// migration of an existing database. Returns the version before.
pub fn migrate(
    client: &mut postgres::Client,
    progress: &mut dyn FnMut(Migrating),
) -> Result<i64, PgStoreError> {
    migrate_to(client, MIGRATIONS, progress)
}

/// [`migrate`] with a given list (tests build older and newer databases).
pub fn migrate_to(
    client: &mut postgres::Client,
    migrations: &[&str],
    progress: &mut dyn FnMut(Migrating),
) -> Result<i64, PgStoreError> {
    let known = migrations.len() as i64;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             one     BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
             version BIGINT NOT NULL
         )",
    )?;
    let version = schema_version(&mut tx)?;
    if version > known {
        let database: String = tx.query_one("SELECT current_database()", &[])?.get(0);
        return Err(PgStoreError::TooNew {
            database,
            found: version,
            known,
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
        let to = (i + 1) as i64;
        if version > 0 {
            progress(Migrating {
                from: version,
                to,
                latest: known,
            });
        }
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)
             ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            &[&to],
        )?;
    }
    tx.commit()?;
    Ok(version)
}

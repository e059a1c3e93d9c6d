//! What a fresh bulk load (`fresh.rs`) remembers while it stores runs, so
//! that `ingest_checked` asks the database only what it cannot know
//! ([`FreshRuns`]): whether counters move live (fixed for the whole load),
//! the repositories' ids and the changes the load has written, the
//! fingerprints its failures move (`Fingerprints`), and where the runs'
//! test results wait (`Staging`).
//!
//! Each answer is the one the per-run path's statement would give inside the
//! load's transaction: nothing else writes `meta`, `repositories` or
//! `changes` while the load holds it, and a change's row is only ever
//! written here (its first time in the load by the per-run path's own
//! upsert; after that only when the upsert would still change it).

use crate::fingerprints::Fingerprints;
use crate::policy::{Policy, moves_live_counters};
use crate::staging::Staging;
use crate::{to_ms, upsert_repository};
use ci_slo_core::model::{ChangeRef, Forge};
use foldhash::HashMap;
use rusqlite::{Connection, params};

/// A change as the load left its row: its id, whether `merged_at` is set,
/// whether it was decided (before the load: nothing decides one during it).
#[derive(Clone, Copy)]
struct ChangeRow {
    id: i64,
    merged: bool,
    decided: bool,
}

/// What a fresh load remembers while it stores runs (see the module
/// documentation).
pub(crate) struct FreshRuns {
    pub(crate) staging: Staging,
    /// The fingerprints the load's failures move (written by `FreshLoad::finish`).
    pub(crate) fingerprints: Fingerprints,
    /// Whether the load's counters move live (`moves_live_counters`, read
    /// once: `meta` does not change during the load).
    pub(crate) live: bool,
    /// forge → path → repository id.
    repositories: HashMap<&'static str, HashMap<String, i64>>,
    /// (repository id, number) → the change's row.
    changes: HashMap<(i64, i64), ChangeRow>,
}

impl FreshRuns {
    pub(crate) fn new(tx: &Connection, policy: &Policy) -> rusqlite::Result<FreshRuns> {
        Ok(FreshRuns {
            staging: Staging::new(tx)?,
            fingerprints: Fingerprints::default(),
            live: moves_live_counters(tx, policy)?,
            repositories: HashMap::default(),
            changes: HashMap::default(),
        })
    }

    /// The repository's id, its row written when it is new (`upsert_repository`).
    pub(crate) fn repository(
        &mut self,
        tx: &Connection,
        forge: Forge,
        path: &str,
    ) -> rusqlite::Result<i64> {
        let of_forge = self.repositories.entry(forge.as_str()).or_default();
        if let Some(id) = of_forge.get(path) {
            return Ok(*id);
        }
        let id = upsert_repository(tx, forge, path)?;
        of_forge.insert(path.to_owned(), id);
        Ok(id)
    }

    /// The change's (id, decided), stored by the per-run path's own upsert
    /// (`upsert`: its id, whether it is decided, whether `merged_at` is set)
    /// the first time the load sees it, and after that only when the upsert
    /// would still change its row: `last_activity` is the load's `now`
    /// already, so only a `merged_at` the row lacks.
    pub(crate) fn change(
        &mut self,
        tx: &Connection,
        repository_id: i64,
        change: &ChangeRef,
        upsert: impl FnOnce(&Connection) -> rusqlite::Result<(i64, bool, bool)>,
    ) -> rusqlite::Result<(i64, bool)> {
        let key = (repository_id, change.number);
        match self.changes.get_mut(&key) {
            Some(row) => {
                if let (false, Some(merged_at)) = (row.merged, change.merged_at) {
                    tx.prepare_cached(
                        "UPDATE changes SET merged_at = ?2 WHERE id = ?1 AND merged_at IS NULL",
                    )?
                    .execute(params![row.id, to_ms(merged_at)])?;
                    row.merged = true;
                }
                Ok((row.id, row.decided))
            }
            None => {
                let (id, decided, merged) = upsert(tx)?;
                self.changes.insert(
                    key,
                    ChangeRow {
                        id,
                        merged,
                        decided,
                    },
                );
                Ok((id, decided))
            }
        }
    }
}

//! Each test's identity (repository id, context, name) by test id, kept in
//! memory by a store for the reads of the `/metrics` snapshot
//! ([`PgStore::test_stats`], [`PgStore::test_runs_in_windows`]), which add
//! up `test_days` and only need to name the tests they found.
//!
//! Why: those reads run at every snapshot rebuild (after each write), and
//! joining `tests` made each of them read the whole `tests` table, whose
//! 8,000 rows (at fillfactor 40, updated by every run) are spread over far
//! more pages than the day counters (docs/benchmarks.md, *The snapshot's
//! reads without `tests`*). A test's row is never renamed, moved to another
//! repository or context, or deleted, and its id is never reused, so what
//! is cached stays true; ids not cached yet (tests created since, by this
//! replica or another) are read by id, in the same read (and so the same
//! snapshot of the database) as the counters that named them.

use crate::PgStore;
use std::collections::HashMap;

/// A test's repository id, context and name.
#[derive(Debug, Clone)]
pub(crate) struct TestIdentity {
    pub(crate) repository_id: i64,
    pub(crate) context: String,
    pub(crate) name: String,
}

/// The identities a store has read, by test id.
pub(crate) type Identities = HashMap<i64, TestIdentity>;

impl PgStore {
    /// Make sure the identity of each of `ids` is in the cache, reading the
    /// missing ones through `client` (the read's own connection, already
    /// borrowed by the caller). Returns the cache.
    pub(crate) fn test_identities(
        &self,
        client: &mut postgres::Client,
        ids: &[i64],
    ) -> Result<std::cell::RefMut<'_, Identities>, postgres::Error> {
        let mut known = self.identities.borrow_mut();
        let missing: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !known.contains_key(id))
            .collect();
        if !missing.is_empty() {
            for r in client.query(
                "SELECT id, repository_id, context, name FROM tests WHERE id = ANY($1::bigint[])",
                &[&missing],
            )? {
                known.insert(
                    r.get(0),
                    TestIdentity {
                        repository_id: r.get(1),
                        context: r.get(2),
                        name: r.get(3),
                    },
                );
            }
        }
        Ok(known)
    }
}

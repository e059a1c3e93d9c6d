//! Failure fingerprints as a run's failures move them: a new one is stored
//! with its first occurrence, a known one moves on (`occurrences`, the first
//! and last time it was seen). [`upsert`] does it with one statement per
//! failure; a fresh load ([`Fingerprints`]) does it once per fingerprint: a
//! load of a million runs sees a few hundred fingerprints hundreds of
//! thousands of times, and each upsert rewrote the same row.

use foldhash::HashMap;
use rusqlite::{Connection, params};

/// A fingerprint's row after an occurrence: (id, occurrences, first seen,
/// last seen).
type Row = (i64, i64, i64, i64);

/// Store an occurrence of the fingerprint `hash` at `at_ms` (its row written
/// with `normalized()` when it is new); its row as it is now.
fn upsert_row(
    tx: &Connection,
    hash: &str,
    normalized: impl FnOnce() -> String,
    at_ms: i64,
) -> rusqlite::Result<Row> {
    tx.prepare_cached(
        "INSERT INTO fingerprints (hash, normalized, first_seen, last_seen, occurrences)
         VALUES (?1, ?2, ?3, ?3, 1)
         ON CONFLICT (hash) DO UPDATE SET first_seen = min(first_seen, excluded.first_seen),
            last_seen = max(last_seen, excluded.last_seen), occurrences = occurrences + 1
         RETURNING id, occurrences, first_seen, last_seen",
    )?
    .query_row(params![hash, normalized(), at_ms], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
}

/// Store an occurrence of the fingerprint `hash` at `at_ms`: (its id,
/// whether it is new).
pub(crate) fn upsert(
    tx: &Connection,
    hash: &str,
    normalized: impl FnOnce() -> String,
    at_ms: i64,
) -> rusqlite::Result<(i64, bool)> {
    let (id, occurrences, _, _) = upsert_row(tx, hash, normalized, at_ms)?;
    Ok((id, occurrences == 1))
}

/// A fresh load's fingerprints: each one's first occurrence in the load goes
/// through [`upsert`] (a new one gets its row and id, a known one its
/// counters from the store), the others move its row in memory;
/// [`Fingerprints::write`] writes each moved row once, before the load
/// commits. Ids, counters and `is_new` are the ones [`upsert`] gives
/// occurrence by occurrence.
#[derive(Default)]
pub(crate) struct Fingerprints {
    seen: HashMap<String, Seen>,
}

struct Seen {
    row: Row,
    /// Moved since its row was last written.
    moved: bool,
}

impl Fingerprints {
    /// An occurrence of `hash` at `at_ms`: (its id, whether it is new).
    pub(crate) fn see(
        &mut self,
        tx: &Connection,
        hash: &str,
        normalized: impl FnOnce() -> String,
        at_ms: i64,
    ) -> rusqlite::Result<(i64, bool)> {
        if let Some(seen) = self.seen.get_mut(hash) {
            let (_, occurrences, first, last) = &mut seen.row;
            *occurrences += 1;
            *first = (*first).min(at_ms);
            *last = (*last).max(at_ms);
            seen.moved = true;
            return Ok((seen.row.0, false));
        }
        let row = upsert_row(tx, hash, normalized, at_ms)?;
        self.seen
            .insert(hash.to_owned(), Seen { row, moved: false });
        Ok((row.0, row.1 == 1))
    }

    /// Write the rows moved in memory since the last write.
    pub(crate) fn write(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        let mut update = tx.prepare_cached(
            "UPDATE fingerprints SET occurrences = ?2, first_seen = ?3, last_seen = ?4 WHERE id = ?1",
        )?;
        for seen in self.seen.values_mut().filter(|s| s.moved) {
            let (id, occurrences, first, last) = seen.row;
            update.execute(params![id, occurrences, first, last])?;
            seen.moved = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store: its `fingerprints` table as the migrations make it.
    fn store() -> crate::Store {
        crate::Store::open_in_memory().unwrap()
    }

    fn rows(conn: &Connection) -> Vec<(i64, String, String, i64, i64, i64)> {
        conn.prepare("SELECT * FROM fingerprints ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn occurrences_seen_in_memory_give_what_one_upsert_each_gives() {
        // A fingerprint the store knew before, new ones, out-of-order times.
        let occurrences = [
            ("b", 50),
            ("a", 40),
            ("b", 10),
            ("c", 70),
            ("a", 90),
            ("b", 60),
            ("a", 5),
        ];
        let (each, cached) = (store(), store());
        let (each, cached) = (each.connection(), cached.connection());
        for conn in [each, cached] {
            upsert(conn, "a", || "A".into(), 20).unwrap();
        }
        let mut fingerprints = Fingerprints::default();
        for (hash, at) in occurrences {
            let normalized = || hash.to_uppercase();
            let want = upsert(each, hash, normalized, at).unwrap();
            let got = fingerprints.see(cached, hash, normalized, at).unwrap();
            assert_eq!(got, want, "{hash} at {at}");
        }
        assert_ne!(rows(cached), rows(each), "moved in memory, not written yet");
        fingerprints.write(cached).unwrap();
        assert_eq!(rows(cached), rows(each));
        assert_eq!(
            rows(each)[0],
            (1, "a".into(), "A".into(), 5, 90, 4),
            "what the comparison covers happened"
        );
        // Written once: a second write changes nothing.
        cached
            .execute("UPDATE fingerprints SET occurrences = 0", [])
            .unwrap();
        fingerprints.write(cached).unwrap();
        assert!(rows(cached).iter().all(|r| r.5 == 0));
    }
}

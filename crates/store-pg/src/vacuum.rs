//! Vacuuming the per-test counter tables as the store writes them.
//!
//! Every fold of runs of N tests updates N rows of `tests` and N of
//! `test_days` (the same few thousand rows, fold after fold; once each per
//! fold, `fold.rs`). With room
//! in their pages (schema migration 5) an update is HOT and prunes the
//! previous version, but versions still visible to an open snapshot
//! cannot be pruned, and autovacuum wakes only once a minute
//! (`autovacuum_naptime`):
//! a load of 30,000 results a second spread these 8,000-row tables over
//! 350 MB before it came (docs/benchmarks.md). So the store vacuums them
//! itself, after a fold that brings the rows its folds moved since the
//! last time past [`VACUUM_EVERY`]: `VACUUM (SKIP_LOCKED)`, which never waits
//! for another replica's lock and does not block writes; a vacuum of
//! tables this small costs milliseconds, and their space is reused by the
//! next runs instead of growing. A vacuum that fails (e.g. the store's
//! role does not own the tables) is logged once and not tried again:
//! autovacuum still runs.

use crate::PgStore;

/// Counter rows moved between two vacuums (`tests` rows written, each with
/// its day's): 25 folds of 8,000 tests.
pub const VACUUM_EVERY: u64 = 200_000;

/// What is due: rows moved since the last vacuum, and whether vacuuming
/// still works.
#[derive(Debug)]
pub(crate) struct CounterVacuum {
    moved: u64,
    every: u64,
    disabled: bool,
    done: u64,
}

impl Default for CounterVacuum {
    fn default() -> CounterVacuum {
        CounterVacuum {
            moved: 0,
            every: VACUUM_EVERY,
            disabled: false,
            done: 0,
        }
    }
}

impl PgStore {
    /// After a fold committed `rows` rows of `tests` (each with its day's
    /// row; never inside a transaction): vacuum the counter tables if they
    /// are due.
    pub(crate) fn counter_rows_moved(&self, rows: u64) {
        {
            let mut v = self.vacuum.borrow_mut();
            v.moved = v.moved.saturating_add(rows);
            if v.disabled || v.moved < v.every || self.in_batch || self.pinned.get() {
                return;
            }
            v.moved = 0;
        }
        let out = self
            .client
            .borrow_mut()
            .batch_execute("VACUUM (SKIP_LOCKED) tests, test_days");
        match out {
            Ok(()) => self.vacuum.borrow_mut().done += 1,
            Err(e) => {
                let e = self.lose(e.into());
                tracing::warn!(error = %e, "cannot vacuum the per-test counter tables; left to autovacuum");
                self.vacuum.borrow_mut().disabled = true;
            }
        }
    }

    /// Vacuum the counter tables after every `rows` moved rows (tests and
    /// benchmarks; the default is [`VACUUM_EVERY`]; 0: never).
    pub fn set_counter_vacuum_every(&mut self, rows: u64) {
        self.vacuum.get_mut().every = if rows == 0 { u64::MAX } else { rows };
    }

    /// How many times this store vacuumed the counter tables.
    pub fn counter_vacuums(&self) -> u64 {
        self.vacuum.borrow().done
    }
}

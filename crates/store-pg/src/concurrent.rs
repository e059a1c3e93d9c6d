//! Several replicas writing to one database at once: the locks a write
//! takes, their order, and the retry of a write that lost a conflict.
//!
//! Every write runs at PostgreSQL's default isolation (read committed):
//! each statement sees what other transactions committed before it began,
//! and an `INSERT .. ON CONFLICT` that meets a row another transaction is
//! still writing waits for that transaction, then sees its outcome. What a
//! write reads and then writes on is locked first:
//!
//! 1. the run's identity (`lock_run`, an advisory transaction lock): two
//!    reports of one run are stored one after the other, so the second sees
//!    the first's row (`Unchanged` for a replay, an update otherwise);
//! 2. the repository, and the change when it is new (upserts, one row
//!    each; a known change is only read here);
//! 3. the creation of the tests of the run's repository and context
//!    (`lock_tests`, only when the run names tests new to the store), then
//!    the run's results and the mark of its new ones (`results.rs`). The
//!    run reads and writes none of its tests' counters (`tests`,
//!    `test_days`, `test_commits`): a fold steps them after, from the
//!    marks (`fold.rs`), under one lock of its own (`lock_fold`, taken
//!    first, held to its commit: only folds write those rows, and
//!    retention, which takes it before it deletes any of them);
//! 4. the creation of fingerprints (`lock_new_fingerprints`, only when
//!    the run shows new ones), then the run's fingerprints' rows, in hash
//!    order (`failures.rs`);
//! 5. the known change's row (its last activity), then the run's commit
//!    when it is new to the store (its row, whose key every job of the
//!    commit inserts; its `test_commits` rows are the fold's), then the run's
//!    `test_events` row and its histograms and SLO events, with the hourly
//!    rollup rows they move (`results.rs`, then `counting.rs` in the fixed
//!    order of `ci_slo_store::run_counts`, one series per family).
//!
//!    Steps 4 and 5 take rows that runs of other contexts share (a failure
//!    seen in every job of a commit, one pull request's jobs, a new
//!    commit's key, one repository's hour), each locked until the
//!    transaction ends: taken
//!    after the run's results, so that such runs, stored at once by two
//!    replicas, wait for each other only for their last statements and the
//!    commit, not for the whole of the other's results;
//! 6. the counters (`metric_counters`), last, at commit, in the order of
//!    family and labels (`statements.rs`).
//!
//! A fold (`fold.rs`) takes `lock_fold` first, then, mark after mark, the
//! mark's commit (created again only if retention deleted it) and its
//! tests' rows on it, then the rows of `tests` and `test_days`, then it
//! deletes its marks. A run's write takes none of these rows but a new
//! commit's key, and waits for no fold; retention takes `lock_fold`
//! before the rows it deletes.
//!
//! Each write takes these in this order, and within a step in a fixed one,
//! so two writes cannot wait for each other in a cycle. A deadlock or a
//! serialization failure can still come from writes outside this order
//! (several runs in one batch's transaction; retention and other writers
//! touching the same rows): `PgStore::retrying` runs such a write again,
//! up to [`ATTEMPTS`] times in all, when it is its own transaction. Inside
//! a batch the error goes to the caller (its kind `Conflict`): only the
//! write's savepoint rolled back, and the batch's transaction still holds
//! the locks of its earlier writes, so running the write again there could
//! meet the same cycle.

use crate::statements::Sql;
use crate::{PgStore, PgStoreError};
use ci_slo_core::model::{Forge, NewRun};
use ci_slo_store::ErrorKind;

/// The advisory locks' first key (the two-key form, apart from the
/// single-key locks of migrations and leadership): what the second key,
/// a hash, names.
const RUN: i32 = 0x6369_0001;
const TESTS: i32 = 0x6369_0002;
const NEW_FINGERPRINTS: i32 = 0x6369_0003;
const FOLD: i32 = 0x6369_0004;

/// How many times a write is run in all when it keeps losing conflicts.
pub const ATTEMPTS: u32 = 5;

/// Take the transaction's lock on a run's identity (as `ingest_run` finds
/// it: its external id in its repository, else context, commit, attempt
/// group and attempt). Two identities with the same hash only wait for
/// each other.
pub(crate) fn lock_run(
    tx: &mut impl Sql,
    forge: Forge,
    path: &str,
    run: &NewRun,
    group: &str,
) -> Result<(), postgres::Error> {
    let key = match &run.external_id {
        Some(id) => format!("{}\u{1f}{path}\u{1f}e\u{1f}{id}", forge.as_str()),
        None => format!(
            "{}\u{1f}{path}\u{1f}i\u{1f}{}\u{1f}{}\u{1f}{group}\u{1f}{}",
            forge.as_str(),
            run.context,
            run.commit,
            run.attempt
        ),
    };
    advisory(tx, RUN, &key)
}

/// Take the transaction's lock on creating the tests of one repository
/// and context (`results.rs`): two runs that name some of the same new
/// tests, in different orders, create them one after the other instead of
/// each waiting for the other's rows.
pub(crate) fn lock_tests(
    tx: &mut impl Sql,
    repository_id: i64,
    context: &str,
) -> Result<(), postgres::Error> {
    advisory(tx, TESTS, &format!("{repository_id}\u{1f}{context}"))
}

/// Take the transaction's lock on folding the marks of stored runs into
/// the per-test counters (`fold.rs`): one fold at a time, among all
/// replicas; retention takes it before it deletes counters' rows.
pub(crate) fn lock_fold(tx: &mut impl Sql) -> Result<(), postgres::Error> {
    advisory(tx, FOLD, "")
}

/// Take the transaction's lock on creating fingerprints.
pub(crate) fn lock_new_fingerprints(tx: &mut impl Sql) -> Result<(), postgres::Error> {
    advisory(tx, NEW_FINGERPRINTS, "")
}

fn advisory(tx: &mut impl Sql, space: i32, key: &str) -> Result<(), postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&space, &key],
    )?;
    Ok(())
}

impl PgStore {
    /// Run `write` (one transaction of its own) again when it fails with a
    /// conflict (a deadlock, a serialization failure: nothing of it was
    /// kept), up to [`ATTEMPTS`] times in all; inside a batch, once.
    pub(crate) fn retrying<T>(
        &mut self,
        mut write: impl FnMut(&mut PgStore) -> Result<T, PgStoreError>,
    ) -> Result<T, PgStoreError> {
        let mut attempt = 1;
        loop {
            match write(self) {
                Err(e)
                    if e.kind() == ErrorKind::Conflict && !self.in_batch && attempt < ATTEMPTS =>
                {
                    tracing::debug!(attempt, error = %e, "PostgreSQL write conflicted; running it again");
                    attempt += 1;
                    self.retried += 1;
                }
                r => return r,
            }
        }
    }
}

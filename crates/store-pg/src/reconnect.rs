//! A lost connection made again. The store's connection (the writer's, or
//! a reader's) is lost when the server restarts or fails over, when its
//! backend is terminated (`pg_terminate_backend`), when the network drops
//! it, or when the server ends a fenced transaction that stayed idle for a
//! lease (`leader.rs`, `storage.rs`). The client then says it is closed
//! (`postgres::Client::is_closed`), or an operation fails with an error of
//! kind `Unavailable`: the store notes it (`PgStore::lose`), and before
//! its next operation (a read, `write_tx`, a batch's or a consistent
//! read's `BEGIN`) connects again with the same [`ConnectConfig`], forgets
//! the statements prepared on the old connection (each is prepared again
//! on first use), and closes the old one as every store connection closes
//! (off any async runtime: `connect::Connection`). Migrations are not run
//! again.
//!
//! - The operation that met the loss fails: a write whose `COMMIT` went
//!   unanswered may or may not be committed, so it is never run again
//!   here (the writer runs again only writes that lost a conflict, which
//!   the server rolled back). Two exceptions run once more on a new
//!   connection, because nothing was written: a `BEGIN` that finds the
//!   connection lost (`PgStore::begin`: after an idle connection was
//!   cut, the next write or consistent read succeeds), and a read
//!   (`storage.rs`) outside any transaction.
//! - Nothing is made again inside a transaction (a writer's batch, an
//!   `in_transaction`, a `read_consistent`): the transaction is gone with
//!   its connection, and its remaining statements fail until it ends.
//! - Without hot-looping: when connecting fails, the operation fails with
//!   that error (kind `Unavailable` when the server cannot be reached or is
//!   starting or stopping), and until [`RECONNECT_BACKOFF`] has passed
//!   every operation fails at once with [`PgStoreError::Lost`] (kind
//!   `Unavailable`) without trying; the first one after it tries again.
//!   The writer counts the failed writes and `/readyz` answers 503 until a
//!   write succeeds.

#[cfg(doc)]
use crate::connect::ConnectConfig;
use crate::{PgStore, PgStoreError};
use ci_slo_store::ErrorKind;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

/// How long after a failed attempt to connect again the store waits before
/// the next one (operations in between fail at once).
pub const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// The connection's state: lost or not, when the next attempt may be made
/// after a failed one, and how many times it was made again.
#[derive(Default)]
pub(crate) struct Link {
    lost: Cell<bool>,
    /// After a failed attempt: no other before this instant; why it failed.
    wait: RefCell<Option<(Instant, String)>>,
    reconnects: Cell<u64>,
}

impl PgStore {
    /// How many times the connection was made again after it was lost,
    /// since the store was opened.
    pub fn reconnects(&self) -> u64 {
        self.link.reconnects.get()
    }

    /// `e`, noting the connection lost when `e` says so (kind
    /// `Unavailable`): the next operation connects again.
    pub(crate) fn lose(&self, e: PgStoreError) -> PgStoreError {
        if e.kind() == ErrorKind::Unavailable {
            self.link.lost.set(true);
        }
        e
    }

    /// Whether a transaction is open on the connection (which therefore is
    /// not made again).
    fn in_transaction_now(&self) -> bool {
        self.in_batch || self.pinned.get()
    }

    /// Connect again if the connection was lost (closed, or an operation
    /// failed with kind `Unavailable`) and no transaction is open on it:
    /// see the module's documentation. Ok when there is nothing to do.
    pub fn reconnect(&self) -> Result<(), PgStoreError> {
        if self.in_transaction_now() {
            return Ok(());
        }
        if !self.link.lost.get() && !self.client.borrow().is_closed() {
            return Ok(());
        }
        let now = Instant::now();
        if let Some((until, reason)) = &*self.link.wait.borrow()
            && now < *until
        {
            return Err(PgStoreError::Lost {
                target: self.shown.clone(),
                reason: reason.clone(),
                retry_in: *until - now,
            });
        }
        match self.config.connect_named(&self.shown) {
            Ok(client) => {
                // The old connection closes here (off any runtime).
                *self.client.borrow_mut() = crate::connect::Connection::new(client);
                self.statements.borrow_mut().clear();
                self.link.lost.set(false);
                *self.link.wait.borrow_mut() = None;
                self.link.reconnects.set(self.link.reconnects.get() + 1);
                tracing::info!(database = %self.shown, "PostgreSQL connection made again after it was lost");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = RECONNECT_BACKOFF.as_millis() as u64, "the PostgreSQL connection was lost and cannot be made again");
                *self.link.wait.borrow_mut() = Some((Instant::now() + RECONNECT_BACKOFF, why(&e)));
                self.link.lost.set(true);
                Err(e)
            }
        }
    }

    /// Begin a transaction with `sql` (`BEGIN ...`), the connection made
    /// again first if it was lost; a `BEGIN` that finds it lost (or
    /// closed: the server may have ended the session with any SQLSTATE)
    /// runs once more on a new connection, since nothing was written.
    pub(crate) fn begin(&self, sql: &str) -> Result<(), PgStoreError> {
        self.reconnect()?;
        let first = self.client.borrow_mut().batch_execute(sql);
        let e = match first {
            Ok(()) => return Ok(()),
            Err(e) => PgStoreError::from(e),
        };
        let closed = self.client.borrow().is_closed();
        if (e.kind() != ErrorKind::Unavailable && !closed) || self.in_transaction_now() {
            return Err(self.lose(e));
        }
        tracing::info!(error = %e, "the PostgreSQL connection was lost before a transaction began; connecting again");
        self.link.lost.set(true);
        self.reconnect()?;
        self.client
            .borrow_mut()
            .batch_execute(sql)
            .map_err(|e| self.lose(e.into()))
    }

    /// Whether a read that failed with `e` may run again: the connection
    /// was lost, no transaction is open on it, and a new one was made.
    pub(crate) fn read_again(&self, e: &PgStoreError) -> bool {
        let lost = e.kind() == ErrorKind::Unavailable || self.client.borrow().is_closed();
        if !lost || self.in_transaction_now() {
            return false;
        }
        self.link.lost.set(true);
        self.reconnect().is_ok()
    }
}

/// Why connecting failed, without the target (which [`PgStoreError::Lost`]
/// names).
fn why(e: &PgStoreError) -> String {
    match e {
        PgStoreError::Connect { source, hint, .. } => format!("{}{hint}", crate::describe(source)),
        e => e.to_string(),
    }
}

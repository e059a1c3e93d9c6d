//! Statements prepared once per connection. The client sends an unprepared
//! statement as two round trips (parse, then bind and execute); a prepared
//! one as one. [`Sql`] is what the write paths (`ingest_run`, counting,
//! counters, results, failures) run their SQL through: [`Tx`], a
//! transaction of a [`crate::PgStore`] with the store's cache of prepared
//! statements, or any `postgres` client or transaction as it is (tests).
//! Statements are keyed by their text, so each SQL string is a `&'static
//! str` constant.
//!
//! Counter increments ([`Sql::count`]) are the exception to "run it now": a
//! [`Tx`] keeps them and adds them all at [`Tx::commit`], in one statement,
//! in the order of (family, labels). Every write moves `metric_counters`
//! rows that other writes move too (one series per repository and result),
//! each locked until its transaction ends; taken in one fixed order, last,
//! two replicas' writes cannot deadlock on them (see `concurrent.rs`).

use crate::pending::Pending;
use postgres::types::ToSql;
use postgres::{GenericClient, Row, Statement};
use std::collections::{BTreeMap, HashMap};

/// The prepared statements of one connection, by their text.
#[derive(Default)]
pub(crate) struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    /// Forget them all (the connection they were prepared on is gone).
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// `sql` prepared on `client` (the first time only).
    fn get(
        &mut self,
        client: &mut postgres::Client,
        sql: &'static str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = client.prepare(sql)?;
        self.0.insert(sql, s.clone());
        Ok(s)
    }
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// Running SQL in a write.
pub trait Sql {
    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, postgres::Error>;
    fn query(&mut self, sql: &'static str, params: Params<'_>)
    -> Result<Vec<Row>, postgres::Error>;
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error>;
    fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row, postgres::Error>;

    /// Add `by` to the counter series `labels` (as `tally::labels_json`
    /// encodes them) of `family`, created at `by` if new (`by` 0 only makes
    /// sure it exists). Run now by a client; kept until commit by a [`Tx`].
    fn count(
        &mut self,
        family: &'static str,
        labels: String,
        by: f64,
    ) -> Result<(), postgres::Error> {
        self.execute(COUNT, &[&family, &labels, &by]).map(drop)
    }
}

/// One counter increment ([`Sql::count`] outside a [`Tx`]).
const COUNT: &str = "INSERT INTO metric_counters AS m (family, labels, value) VALUES ($1, $2, $3)
     ON CONFLICT (family, labels) DO UPDATE SET value = m.value + excluded.value";

/// A transaction's counter increments, in the order of its `$1`, `$2`
/// arrays (family, labels; sorted), `$3` the values. An increment of 0
/// changes nothing of an existing row (it only makes sure the series
/// exists), but locks it like any other.
const COUNT_ALL: &str = "INSERT INTO metric_counters AS m (family, labels, value)
     SELECT u.family, u.labels, u.value
     FROM unnest($1::text[], $2::text[], $3::float8[]) WITH ORDINALITY AS u(family, labels, value, i)
     ORDER BY u.i
     ON CONFLICT (family, labels) DO UPDATE SET value = m.value + excluded.value
     WHERE excluded.value <> 0";

impl<C: GenericClient> Sql for C {
    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, postgres::Error> {
        GenericClient::execute(self, sql, params)
    }
    fn query(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        GenericClient::query(self, sql, params)
    }
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        GenericClient::query_opt(self, sql, params)
    }
    fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row, postgres::Error> {
        GenericClient::query_one(self, sql, params)
    }
}

/// A write of the store: a transaction, or, when the writer thread has a
/// batch's transaction open ([`crate::PgStore`] as an `Engine`), a savepoint
/// inside it, so every write path is the same code either way. Statements
/// are prepared once per connection. Dropped without [`Tx::commit`], it
/// rolls back what it wrote (and only that).
pub struct Tx<'a> {
    client: &'a mut postgres::Client,
    cache: &'a mut Statements,
    nested: bool,
    open: bool,
    /// The counter increments kept until commit, by family and labels.
    counters: BTreeMap<(&'static str, String), f64>,
    /// The test ids the transaction learns, this write's own in a layer
    /// of its own (`pending.rs`).
    pending: &'a mut Pending,
}

impl<'a> Tx<'a> {
    /// The write whose `BEGIN` (or savepoint, when `nested`: a transaction
    /// is open) the caller ran ([`crate::PgStore::write_tx`]).
    pub(crate) fn begun(
        client: &'a mut postgres::Client,
        cache: &'a mut Statements,
        pending: &'a mut Pending,
        nested: bool,
    ) -> Tx<'a> {
        if nested {
            pending.open();
        } else {
            pending.begin();
        }
        Tx {
            client,
            cache,
            nested,
            open: true,
            counters: BTreeMap::new(),
            pending,
        }
    }

    /// The test ids known and learned (`pending.rs`).
    pub(crate) fn pending(&mut self) -> &mut Pending {
        self.pending
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        self.cache.get(self.client, sql)
    }

    /// Run statements without parameters (and without preparing them).
    pub fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(sql)
    }

    /// Keep what this write did: its counter increments, in the order of
    /// (family, labels), then `COMMIT` (or release the savepoint: the
    /// batch's transaction commits it with the rest).
    pub fn commit(mut self) -> Result<(), postgres::Error> {
        if !self.counters.is_empty() {
            let counters = std::mem::take(&mut self.counters);
            let n = counters.len();
            let (mut families, mut labels, mut values) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for ((family, l), v) in counters {
                families.push(family);
                labels.push(l);
                values.push(v);
            }
            Sql::execute(&mut self, COUNT_ALL, &[&families, &labels, &values])?;
        }
        self.open = false;
        if self.nested {
            self.pending.release();
            return self.client.batch_execute("RELEASE SAVEPOINT tx");
        }
        let out = self.client.batch_execute("COMMIT");
        self.pending.ended(out.is_ok());
        out
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            if self.nested {
                self.pending.discard();
            } else {
                self.pending.clear();
            }
            // A failure here leaves the connection in a failed transaction,
            // which the next write's statements report.
            let _ = self.client.batch_execute(if self.nested {
                "ROLLBACK TO SAVEPOINT tx; RELEASE SAVEPOINT tx"
            } else {
                "ROLLBACK"
            });
        }
    }
}

/// [`Sql`] for a type with a connection (`self.client`) and a
/// `statement(sql)` that prepares once: [`Tx`] and [`Read`].
macro_rules! prepared_sql {
    ($ty:ty $(; $($extra:tt)*)?) => {
        impl Sql for $ty {
            fn execute(
                &mut self,
                sql: &'static str,
                params: Params<'_>,
            ) -> Result<u64, postgres::Error> {
                let s = self.statement(sql)?;
                self.client.execute(&s, params)
            }
            fn query(
                &mut self,
                sql: &'static str,
                params: Params<'_>,
            ) -> Result<Vec<Row>, postgres::Error> {
                let s = self.statement(sql)?;
                self.client.query(&s, params)
            }
            fn query_opt(
                &mut self,
                sql: &'static str,
                params: Params<'_>,
            ) -> Result<Option<Row>, postgres::Error> {
                let s = self.statement(sql)?;
                self.client.query_opt(&s, params)
            }
            fn query_one(
                &mut self,
                sql: &'static str,
                params: Params<'_>,
            ) -> Result<Row, postgres::Error> {
                let s = self.statement(sql)?;
                self.client.query_one(&s, params)
            }
            $($($extra)*)?
        }
    };
}

prepared_sql!(Tx<'_>;
    fn count(
        &mut self,
        family: &'static str,
        labels: String,
        by: f64,
    ) -> Result<(), postgres::Error> {
        *self.counters.entry((family, labels)).or_insert(0.0) += by;
        Ok(())
    }
);
prepared_sql!(Read<'_>);

/// One read of the store ([`crate::PgStore::read`]): its connection and
/// the store's prepared statements, borrowed for the read; a statement is
/// prepared the first time it runs on the connection, so a read is one
/// round trip (not a parse, then a bind and execute).
pub struct Read<'a> {
    pub(crate) client: std::cell::RefMut<'a, postgres::Client>,
    pub(crate) cache: std::cell::RefMut<'a, Statements>,
}

impl Read<'_> {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        self.cache.get(&mut self.client, sql)
    }
}

//! Statements prepared once per connection. The client sends an unprepared
//! statement as two round trips (parse, then bind and execute); a prepared
//! one as one. [`Sql`] is what the write paths (`ingest_run`, counting,
//! counters, results, failures) run their SQL through: [`Tx`], a
//! transaction of a [`crate::PgStore`] with the store's cache of prepared
//! statements, or any `postgres` client or transaction as it is (tests).
//! Statements are keyed by their text, so each SQL string is a `&'static
//! str` constant.

use postgres::types::ToSql;
use postgres::{GenericClient, Row, Statement};
use std::collections::HashMap;

/// The prepared statements of one connection, by their text.
#[derive(Default)]
pub(crate) struct Statements(HashMap<&'static str, Statement>);

impl Statements {
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
}

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
}

impl<'a> Tx<'a> {
    /// Begin: `BEGIN`, or a savepoint when `nested` (a transaction is open).
    pub(crate) fn begin(
        client: &'a mut postgres::Client,
        cache: &'a mut Statements,
        nested: bool,
    ) -> Result<Tx<'a>, postgres::Error> {
        client.batch_execute(if nested { "SAVEPOINT tx" } else { "BEGIN" })?;
        Ok(Tx {
            client,
            cache,
            nested,
            open: true,
        })
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        self.cache.get(self.client, sql)
    }

    /// Run statements without parameters (and without preparing them).
    pub fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(sql)
    }

    /// Keep what this write did (`COMMIT`, or release the savepoint: the
    /// batch's transaction commits it with the rest).
    pub fn commit(mut self) -> Result<(), postgres::Error> {
        self.open = false;
        self.client.batch_execute(if self.nested {
            "RELEASE SAVEPOINT tx"
        } else {
            "COMMIT"
        })
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
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
    ($ty:ty) => {
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
        }
    };
}

prepared_sql!(Tx<'_>);
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

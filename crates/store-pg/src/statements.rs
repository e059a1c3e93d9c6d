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

/// A transaction of the store, preparing each statement once.
pub struct Tx<'a> {
    tx: postgres::Transaction<'a>,
    cache: &'a mut Statements,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(tx: postgres::Transaction<'a>, cache: &'a mut Statements) -> Tx<'a> {
        Tx { tx, cache }
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.cache.0.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.cache.0.insert(sql, s.clone());
        Ok(s)
    }

    pub fn commit(self) -> Result<(), postgres::Error> {
        self.tx.commit()
    }
}

impl Sql for Tx<'_> {
    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.tx.execute(&s, params)
    }
    fn query(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.tx.query(&s, params)
    }
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.tx.query_opt(&s, params)
    }
    fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.tx.query_one(&s, params)
    }
}

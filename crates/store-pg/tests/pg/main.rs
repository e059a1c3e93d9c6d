//! The PostgreSQL store against a real server: Debian's `postgresql`
//! package, started once for this test binary on 127.0.0.1 in a temporary
//! directory (ci_slo_store_pg::testing), a database per test.

mod aggregation;
mod concurrency;
mod counting;
mod fencing;
mod folding;
mod forge_state;
mod harness;
mod ingest;
mod leader;
mod migrations;
mod reads_metrics;
mod reads_ui;
mod reconnect;
mod retention;
mod tls;
mod writer;
mod writes;

//! ci-slo-exporter: CI history in, service-level indicators, error budgets
//! and failure intelligence out.
//!
//! The workspace's crates follow the data flow: `ci-slo-core` (pure domain
//! types, parsing, classification, SLO math, configuration), `ci-slo-store`
//! (SQLite), and this crate on top (forges, metrics, HTTP and UI, the
//! commands); `main.rs` only parses the command line and reports errors.
//!
//! The modules of the crates below are re-exported here under their own
//! names, so `crate::model::…` inside this crate and
//! `ci_slo_exporter::model::…` in tests, benches and examples name the same
//! items as `ci_slo_core::model::…`. Nothing is re-exported the other way:
//! the compiler refuses a core module that uses the store or the exporter.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub use ci_slo_core::{
    catalog, classify, clock, config, deps, flaky, ingest, model, names, redact, report, shard,
    slo, text,
};
pub use ci_slo_store as store;

pub mod app;
pub mod cli;
pub mod demo;
pub mod forge;
pub mod http;
pub mod metrics;
pub mod output;
pub mod progress;
pub mod store_open;

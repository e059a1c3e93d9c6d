//! ci-slo-core: the domain of ci-slo-exporter, with no I/O of its own.
//!
//! Runs and their tests ([`model`], validated and derived by [`ingest`]),
//! test reports ([`report`]: TAP, JUnit), failure classification and
//! fingerprints ([`classify`]), dependency snapshots ([`deps`]), SLO math
//! ([`slo`]), per-test statistics ([`flaky`]), redaction ([`redact`]), the
//! metric catalog ([`catalog`]), sharding ([`shard`]), the clock ([`clock`])
//! and the configuration ([`config`]). No async runtime, no network, no
//! SQLite: the store (`ci-slo-store`) and the exporter (`ci-slo-exporter`)
//! build on this crate, never the other way round. The only files read here
//! are those a caller names (`Config::load`, `report::parse_file`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod catalog;
pub mod classify;
pub mod clock;
pub mod config;
pub mod deps;
pub mod flaky;
pub mod ingest;
pub mod model;
pub mod names;
pub mod redact;
pub mod report;
pub mod shard;
pub mod slo;
pub mod text;

//! ci-slo-exporter: CI history in, service-level indicators, error budgets
//! and failure intelligence out.
//!
//! The library holds everything; `main.rs` only parses the command line and
//! reports errors. Pure domain types sit in the middle ([`model`], [`slo`]);
//! I/O lives at the edges ([`store`], [`http`], [`report`] inputs).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod app;
pub mod catalog;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod deps;
pub mod flaky;
pub mod forge;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod names;
pub mod output;
pub mod progress;
pub mod redact;
pub mod report;
pub mod shard;
pub mod slo;
pub mod store;
pub mod text;

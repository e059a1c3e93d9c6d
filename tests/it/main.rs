//! The integration tests that can share a process, in one test binary (one
//! link of the exporter instead of one per file). Each file is a module; run
//! one with `cargo test --test it <module>::` (e.g. `cargo test --test it
//! golden::`). They start the real binary as a child process or call the
//! library in-process, and rely on nothing process-wide: no environment
//! variable or working directory is set in this process (children get theirs
//! through `Command`), ports are chosen free, files live in temporary
//! directories. The end-to-end tests with other real programs stay binaries of
//! their own: `stack_e2e` (Prometheus, Alertmanager, an SMTP sink) and
//! `ui_browser` (headless Chromium).

// Support modules, shared with tests/stack_e2e.rs, tests/ui_browser.rs and
// benches/gitlab_backfill.rs.
#[path = "../common/mod.rs"]
mod common;
#[path = "../fake_github/mod.rs"]
mod fake_github;
#[path = "../fake_gitlab/mod.rs"]
mod fake_gitlab;
#[path = "../fault_front/mod.rs"]
mod fault_front;

mod backfill_openmetrics;
mod bounded_work;
mod classify_corpus;
mod classify_fixtures;
mod classify_logs;
mod cli_tools;
mod crash_safety;
mod exporter;
mod forge_faults;
mod github_cockpit_import;
mod github_poll;
mod github_webhooks;
mod gitlab_cli;
mod gitlab_poll;
mod gitlab_webhooks;
mod golden;
mod hardening;
mod junit_fixtures;
mod leadership;
mod postgres_reconnect;
mod postgres_store;
mod postgres_tls;
mod redaction;
mod replica_faults;
mod report_ingest;
mod run_identity;
mod security;
mod sharding;
mod tap_fixtures;
mod test_intelligence;
mod ui_pages;

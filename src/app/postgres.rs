//! The PostgreSQL store, selected by `[store] url` or `CI_SLO_DATABASE_URL`
//! (docs/configuration.md, docs/scaling.md): what changes for the commands
//! when the store is shared by several replicas. Every command reaches it
//! through `store_open` as it does the SQLite file; sharding is refused
//! (replicas on one database replace it), and `serve` runs the work that
//! must run once only while it holds the database's leadership
//! (`ci_slo_store_pg::leader`). The database prints with its password
//! masked (`***`), in the log and in errors.

use super::leadership::Leadership;
use crate::cli::Command;
use crate::config::Config;
use crate::config::database::StoreBackend;
use anyhow::{Result, bail};
use ci_slo_store_pg::leader::{Leader, LeaderConfig};
use std::sync::Arc;

/// The name of the leadership every replica of one database contends for.
pub(super) const LEADERSHIP: &str = "ci-slo-exporter";

/// Ok when the command may go on; with PostgreSQL, logs which database
/// it uses, and refuses a sharded configuration.
pub(super) fn check(config: &Config, command: &Command) -> Result<()> {
    let StoreBackend::Postgres(target) = config.store.backend(|k| std::env::var(k).ok())? else {
        return Ok(());
    };
    if matches!(command, Command::Classify(_) | Command::Report(_)) {
        return Ok(());
    }
    if config.shard.is_sharded() {
        bail!(
            "shard = \"{}\" is for SQLite stores: with PostgreSQL ({target}, from {}) run replicas \
             on the one database instead (docs/scaling.md); remove `shard` and `shard_urls`",
            config.shard,
            target.source()
        );
    }
    tracing::info!(database = %target, from = target.source(), "PostgreSQL store selected");
    Ok(())
}

/// Who runs the work that must run once: with SQLite this process always
/// does; with PostgreSQL the replica holding the database's leadership,
/// kept while the returned `Leader` lives (dropping it gives it up).
pub(super) fn leadership(config: &Config) -> Result<(Leadership, Option<Arc<Leader>>)> {
    let StoreBackend::Postgres(target) = config.store.backend(|k| std::env::var(k).ok())? else {
        return Ok((Leadership::always(), None));
    };
    let base = ci_slo_store_pg::connect::ConnectConfig::from_target(&target)?;
    let holder = format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into()),
        std::process::id()
    );
    let leader = Arc::new(Leader::start_with(
        &base,
        LeaderConfig::new(LEADERSHIP, &holder),
    ));
    tracing::info!(holder = %holder, "contending for the leadership of the once-only work");
    Ok((Leadership::of(&leader), Some(leader)))
}

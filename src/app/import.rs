//! `import cockpit PATH`: a Cockpit `test-results.db` into the store
//! (the importer itself is `forge::github::import`).

use crate::cli::{ImportArgs, ImportSource};
use crate::config::Config;
use crate::forge::github::{cockpit_db, import};
use crate::store::Policy;
use chrono::Utc;

/// `import cockpit PATH [--db PATH]`.
pub(super) fn cockpit(mut config: Config, args: ImportArgs) -> anyhow::Result<()> {
    let ImportSource::Cockpit(args) = args.source;
    if let Some(db) = args.db {
        config.store.path = db;
    }
    let policy = Policy {
        history: args.history,
        ..Policy::from_config(&config)
    };
    if import::same_file(&args.path, &config.store.path) {
        anyhow::bail!(
            "--db {} is the Cockpit database being imported: the exporter would write its tables into it; \
             give --db (or store.path) a database of its own",
            config.store.path.display()
        );
    }
    // A file that is not a Cockpit database is refused before the store is created.
    drop(cockpit_db::Source::open(&args.path)?);
    let classifier = config.classifier()?;
    let mut store = crate::store_open::open(&config.store)?;
    let stats = import::import_with(
        &args.path,
        &mut *store,
        &policy,
        &classifier,
        Utc::now(),
        config.shard,
        import::Mode::Auto,
    )?;
    crate::output::line(serde_json::to_string(&stats)?)?;
    Ok(())
}

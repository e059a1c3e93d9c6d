//! The PostgreSQL store's error type. No message holds the password: the
//! target prints as its URL with `***` (ci_slo_core's `PostgresTarget`),
//! and the client's errors never repeat the connection's settings.

#[derive(Debug, thiserror::Error)]
pub enum PgStoreError {
    #[error("PostgreSQL error: {}", describe(.0))]
    Postgres(#[from] postgres::Error),
    #[error("cannot connect to PostgreSQL {target}: {}", describe(.source))]
    Connect {
        /// The URL with the password masked.
        target: String,
        source: postgres::Error,
    },
    #[error("invalid PostgreSQL URL from {key}: {reason}")]
    Url { key: String, reason: String },
    #[error(
        "PostgreSQL database {database} has schema version {found}, newer than this exporter knows ({known}); upgrade the exporter"
    )]
    TooNew {
        database: String,
        found: i64,
        known: i64,
    },
}

/// What the client's error says, with the server's own message when there
/// is one (the client's `Display` alone says only "db error").
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut out = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            out.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            out.push_str(&format!("; hint: {hint}"));
        }
        return out;
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

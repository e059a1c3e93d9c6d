//! The PostgreSQL store's error type. No message holds the password: the
//! target prints as its URL with `***` (ci_slo_core's `PostgresTarget`),
//! and the client's errors never repeat the connection's settings.

use ci_slo_store::{ErrorKind, StoreError};
use postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum PgStoreError {
    #[error("PostgreSQL error: {}", describe(.0))]
    Postgres(#[from] postgres::Error),
    #[error("cannot connect to PostgreSQL {target}: {}{hint}", describe(.source))]
    Connect {
        /// The URL with the password masked.
        target: String,
        /// What the TLS settings have to do with it, when they do (empty
        /// otherwise; starts with a space).
        hint: String,
        source: postgres::Error,
    },
    #[error(
        "the connection to PostgreSQL {target} was lost and could not be made again ({reason}); next attempt in {} ms",
        retry_in.as_millis()
    )]
    Lost {
        /// The URL with the password masked.
        target: String,
        /// Why the last attempt failed.
        reason: String,
        /// When the next attempt may be made.
        retry_in: std::time::Duration,
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

impl PgStoreError {
    /// What kind of database failure this is, as the exporter acts on it
    /// ([`ci_slo_store::ErrorKind`]): by the server's SQLSTATE when it sent
    /// one (see [`kind_of_code`]), else `Unavailable` for a connection that
    /// closed or failed underneath (an I/O error) or was lost and not made
    /// again yet ([`PgStoreError::Lost`]), else `Other`. The
    /// store's own refusals and settings are `Other` too.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PgStoreError::Postgres(e) | PgStoreError::Connect { source: e, .. } => {
                kind_of_client_error(e)
            }
            PgStoreError::Lost { .. } => ErrorKind::Unavailable,
            PgStoreError::Url { .. } | PgStoreError::TooNew { .. } => ErrorKind::Other,
        }
    }
}

fn kind_of_client_error(e: &postgres::Error) -> ErrorKind {
    if let Some(code) = e.code() {
        return kind_of_code(code);
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Other
    }
}

/// The kind of a SQLSTATE: class 23 (integrity constraint violation) is
/// `Constraint`; 40001 (serialization failure) and 40P01 (deadlock) are
/// `Conflict` (the write may succeed when run again); class 08 (connection
/// exception) and 57P01 to 57P03 (the server shutting down or not yet
/// accepting connections) are `Unavailable`; anything else is `Other`.
pub fn kind_of_code(code: &SqlState) -> ErrorKind {
    let c = code.code();
    if c.starts_with("23") {
        ErrorKind::Constraint
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        ErrorKind::Conflict
    } else if c.starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
    {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Other
    }
}

/// The storage interface's error: database failures as
/// [`StoreError::Engine`] with their [`PgStoreError::kind`] (the message,
/// never the password, is the source's); a database too new as
/// [`StoreError::TooNew`] (its `path` the database as shown); what the
/// store does not do yet as [`StoreError::Refused`].
impl From<PgStoreError> for StoreError {
    fn from(e: PgStoreError) -> StoreError {
        match e {
            PgStoreError::TooNew {
                database,
                found,
                known,
            } => StoreError::TooNew {
                path: database,
                found,
                known,
            },
            e => StoreError::Engine {
                kind: e.kind(),
                source: Box::new(e),
            },
        }
    }
}

//! The store's error type: what every store operation returns when it fails.
//!
//! Its text is for the log: the HTTP layer answers every store error with one
//! fixed message (`http::ApiError`), whatever the engine said.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// An error of another engine (PostgreSQL): its [`ErrorKind`], for the
    /// callers that act on it, and the engine's own error, for the log.
    #[error("database error: {source}")]
    Engine {
        kind: ErrorKind,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this exporter knows ({known}); upgrade the exporter"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("{0}")]
    Refused(String),
    #[error("the store's writer thread has stopped")]
    WriterGone,
    /// A write fenced by a term of leadership (`StoreHandle::fenced`) that
    /// ended before the write ran: a newer leader does the work now, so it
    /// wrote nothing. Not a database failure (not counted, `/readyz` stays
    /// ready) and not run again.
    #[error(
        "not written: term {epoch} of the leadership {name:?} ended (a newer leader does the work)"
    )]
    Fenced { name: String, epoch: i64 },
}

/// What kind of database failure an engine's error is, as far as a caller
/// acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A constraint refused the write (two runs with one external id).
    Constraint,
    /// A concurrent transaction conflicted (a serialization failure, a
    /// deadlock): the write may succeed when run again.
    Conflict,
    /// The database cannot be reached (connection lost, shutting down).
    Unavailable,
    /// Anything else.
    Other,
}

impl StoreError {
    /// Whether the database itself failed (not the store's own refusal, nor
    /// the writer gone): the writer counts these, and `/readyz` reports them.
    pub fn is_database(&self) -> bool {
        matches!(self, StoreError::Sqlite(_) | StoreError::Engine { .. })
    }

    /// The kind of database failure; `None` when the database did not fail.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => Some(match f.code {
                rusqlite::ErrorCode::ConstraintViolation => ErrorKind::Constraint,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    ErrorKind::Conflict
                }
                rusqlite::ErrorCode::CannotOpen => ErrorKind::Unavailable,
                _ => ErrorKind::Other,
            }),
            StoreError::Sqlite(_) => Some(ErrorKind::Other),
            StoreError::Engine { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether a fence refused the write: its term of leadership ended.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }

    /// Whether a constraint refused the write (e.g. a duplicate key).
    pub fn is_constraint_violation(&self) -> bool {
        self.kind() == Some(ErrorKind::Constraint)
    }
}

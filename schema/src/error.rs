//! Database errors, sorted into what a caller branches on.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// A failed database operation.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had: the database is down, unreachable, or the pool timed out.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row that must be unique already exists (username, token, idempotency key, route).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A CHECK or foreign-key constraint refused the change.
    #[error("refused by the database: {0}")]
    Refused(String),
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Any other query error.
    #[error("query failed: {0}")]
    Query(#[source] DieselError),
}

impl From<DieselError> for DbError {
    fn from(err: DieselError) -> DbError {
        match err {
            DieselError::NotFound => DbError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                DbError::AlreadyExists(constraint_message(info.as_ref()))
            }
            DieselError::DatabaseError(
                DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::ForeignKeyViolation
                | DatabaseErrorKind::NotNullViolation,
                info,
            ) => DbError::Refused(constraint_message(info.as_ref())),
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                DbError::Unavailable(info.message().to_owned())
            }
            other => DbError::Query(other),
        }
    }
}

impl From<deadpool::managed::PoolError<diesel_async::pooled_connection::PoolError>> for DbError {
    fn from(err: deadpool::managed::PoolError<diesel_async::pooled_connection::PoolError>) -> Self {
        DbError::Unavailable(with_causes(&err))
    }
}

impl From<diesel::ConnectionError> for DbError {
    fn from(err: diesel::ConnectionError) -> Self {
        DbError::Unavailable(with_causes(&err))
    }
}

/// The error and every cause below it, on one line: tokio-postgres puts the useful part
/// ("Connection refused") in a source.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn constraint_message(
    info: &(dyn diesel::result::DatabaseErrorInformation + Send + Sync),
) -> String {
    match info.constraint_name() {
        Some(name) => format!("{} ({name})", info.message()),
        None => info.message().to_owned(),
    }
}

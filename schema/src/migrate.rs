//! The migrations in `migrations/`, embedded at build time.

use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::DbError;

/// Every migration, in order.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Applies every pending migration; returns the versions applied. Safe to run while
/// connectors run: each migration is one transaction.
pub async fn run_pending_migrations(conn: AsyncPgConnection) -> Result<Vec<String>, DbError> {
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(|v| v.to_string()).collect())
            .map_err(|err| DbError::Migration(err.to_string()))
    })
    .await
    .map_err(|err| DbError::Migration(err.to_string()))?
}

/// Reverts every applied migration, newest first (for tests of the down migrations).
pub async fn revert_all_migrations(conn: AsyncPgConnection) -> Result<Vec<String>, DbError> {
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        conn.revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(|v| v.to_string()).collect())
            .map_err(|err| DbError::Migration(err.to_string()))
    })
    .await
    .map_err(|err| DbError::Migration(err.to_string()))?
}

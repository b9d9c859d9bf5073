//! The connection pool: deadpool over diesel-async, every connection set up the same way.

use std::time::Duration;

use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use secrecy::{ExposeSecret, SecretString};

use crate::DbError;

/// A pool of PostgreSQL connections.
pub type DbPool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;
/// A connection checked out of a [`DbPool`].
pub type DbConn = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// How long one statement may run before PostgreSQL cancels it.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free connection, or for a new one to be made.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per pool.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How to build a pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// `postgres://user:password@host:port/database`; never printed (it may hold a password).
    pub url: SecretString,
    /// Shown in `pg_stat_activity.application_name`.
    pub application_name: String,
    /// Maximum connections.
    pub size: usize,
    /// Per-statement limit, set on every connection.
    pub statement_timeout: Duration,
    /// Limit on waiting for a connection (free or new).
    pub connect_timeout: Duration,
}

impl PoolConfig {
    /// A config with the defaults above.
    pub fn new(url: impl Into<String>, application_name: impl Into<String>) -> PoolConfig {
        PoolConfig {
            url: SecretString::from(url.into()),
            application_name: application_name.into(),
            size: DEFAULT_POOL_SIZE,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Opens one connection set up as the pool's are (for LISTEN, or one-shot CLI work).
pub async fn connect(config: &PoolConfig) -> Result<AsyncPgConnection, DbError> {
    let setup = setup_sql(config);
    let connecting = async {
        let mut conn = crate::tls::establish(config.url.expose_secret()).await?;
        conn.batch_execute(&setup).await?;
        Ok::<_, DbError>(conn)
    };
    tokio::time::timeout(config.connect_timeout, connecting)
        .await
        .map_err(|_| {
            DbError::Unavailable(format!("no connection within {:?}", config.connect_timeout))
        })?
}

/// Builds a pool. No connection is made until one is asked for.
pub fn build_pool(config: &PoolConfig) -> Result<DbPool, DbError> {
    let setup = setup_sql(config);
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        let setup = setup.clone();
        Box::pin(async move {
            let mut conn = crate::tls::establish(&url).await?;
            conn.batch_execute(&setup)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager =
        AsyncDieselConnectionManager::new_with_config(config.url.expose_secret(), manager_config);
    diesel_async::pooled_connection::deadpool::Pool::builder(manager)
        .max_size(config.size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(config.connect_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .build()
        .map_err(|err| DbError::Unavailable(err.to_string()))
}

/// The session settings every connection starts with: the statement timeout and the
/// application name (also used by the balance writer's own connection).
pub(crate) fn setup_sql(config: &PoolConfig) -> String {
    // application_name is quoted as a SQL literal; it comes from our own config, not a peer.
    format!(
        "SET statement_timeout = {}; SET application_name = '{}'",
        config.statement_timeout.as_millis(),
        config.application_name.replace('\'', "''"),
    )
}

/// The NOTIFY channel the migrations' triggers fire when accounts, routes or ledgers change.
pub const CONFIG_CHANNEL: &str = "ilp_config";

/// `LISTEN` on [`CONFIG_CHANNEL`] on `conn`; notifications then arrive on its
/// `notifications_stream`.
pub async fn listen_for_config_changes(conn: &mut AsyncPgConnection) -> Result<(), DbError> {
    conn.batch_execute(&format!("LISTEN {CONFIG_CHANNEL}"))
        .await?;
    Ok(())
}

/// Whether the database answers a trivial query on a connection of `pool` (`/health`).
pub async fn database_answers(pool: &DbPool) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    conn.batch_execute("SELECT 1").await?;
    Ok(())
}

//! A throwaway database per test, cloned from a template that has every migration applied.
//!
//! The base database comes from `TEST_DATABASE_URL` (or `DATABASE_URL`); `scripts/db.sh`
//! starts a local cluster and prints it. The template is named after a hash of the migration
//! files, so a changed migration gets a new one. It is built under an advisory lock (test
//! processes run in parallel), migrated under a temporary name and renamed when complete, so
//! no test ever clones a half-migrated template.

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::{DbError, DbPool, PoolConfig, build_pool};

const TEMPLATE: &str = concat!("ilp_tmpl_", env!("MIGRATIONS_HASH"));
/// Advisory lock key that serialises template builds across test processes.
const TEMPLATE_LOCK_KEY: i64 = 0x494c_505f_544d_504c;

/// A freshly migrated database, dropped (with its connections) when this value is dropped.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    base_url: String,
}

impl TestDb {
    /// Makes a new database from the migrated template.
    pub async fn new() -> TestDb {
        let base_url = base_url();
        let mut admin = AsyncPgConnection::establish(&base_url)
            .await
            .unwrap_or_else(|err| {
                panic!("cannot reach the test cluster at {base_url}: {err}; run scripts/db.sh")
            });
        ensure_template(&mut admin, &base_url)
            .await
            .expect("building the template database");
        let name = format!("ilp_test_{:016x}", rand::random::<u64>());
        admin
            .batch_execute(&format!(
                r#"CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}""#
            ))
            .await
            .expect("cloning the template database");
        TestDb {
            url: url_for(&base_url, &name),
            name,
            base_url,
        }
    }

    /// Its connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A small pool on it.
    pub fn pool(&self) -> DbPool {
        let mut config = PoolConfig::new(&self.url, "ilp-test");
        config.size = 4;
        build_pool(&config).expect("building a test pool")
    }

    /// One connection to it.
    pub async fn connect(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connecting to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
        let (base_url, name) = (self.base_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = AsyncPgConnection::establish(&base_url).await.ok()?;
                admin
                    .batch_execute(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("test_db: could not drop database {}", self.name);
        }
    }
}

fn base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("TEST_DATABASE_URL (or DATABASE_URL) must name a database on the test cluster: run scripts/db.sh")
}

/// `base_url` with its database name replaced by `name`.
pub fn url_for(base_url: &str, name: &str) -> String {
    let (without_query, query) = match base_url.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (base_url, None),
    };
    let prefix = without_query
        .rsplit_once('/')
        .map_or(without_query, |(prefix, _)| prefix);
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

#[derive(diesel::QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    exists: bool,
}

async fn ensure_template(admin: &mut AsyncPgConnection, base_url: &str) -> Result<(), DbError> {
    if template_exists(admin).await? {
        return Ok(());
    }
    admin
        .batch_execute(&format!("SELECT pg_advisory_lock({TEMPLATE_LOCK_KEY})"))
        .await?;
    let built = build_template(admin, base_url).await;
    admin
        .batch_execute(&format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK_KEY})"))
        .await?;
    built
}

async fn build_template(admin: &mut AsyncPgConnection, base_url: &str) -> Result<(), DbError> {
    if template_exists(admin).await? {
        return Ok(()); // another process built it while we waited for the lock
    }
    let building = format!("{TEMPLATE}_building");
    admin
        .batch_execute(&format!(
            r#"DROP DATABASE IF EXISTS "{building}" WITH (FORCE)"#
        ))
        .await?;
    admin
        .batch_execute(&format!(r#"CREATE DATABASE "{building}""#))
        .await?;
    let conn = AsyncPgConnection::establish(&url_for(base_url, &building)).await?;
    crate::migrate::run_pending_migrations(conn).await?;
    // The migration connection closes in the background; the rename waits until it has.
    let rename = format!(r#"ALTER DATABASE "{building}" RENAME TO "{TEMPLATE}""#);
    let mut attempts = 0;
    loop {
        match admin.batch_execute(&rename).await {
            Ok(()) => return Ok(()),
            Err(_) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

async fn template_exists(admin: &mut AsyncPgConnection) -> Result<bool, DbError> {
    let row: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(TEMPLATE)
            .get_result(admin)
            .await?;
    Ok(row.exists)
}

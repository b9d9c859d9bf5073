//! `serve`: the running connector, from configuration to shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{SharedDirectory, keep_directory_fresh, load_directory};
use crate::config::ConnectorConfig;
use crate::http::server::{ServerState, serve as serve_http};

/// Wait between attempts to load accounts at start-up while the database is unreachable.
pub const STARTUP_RETRY: Duration = Duration::from_secs(1);

/// Runs the connector until `shutdown` is cancelled: loads accounts and routes (waiting for
/// the database if it is not there yet), keeps them fresh, and serves ILP-over-HTTP.
pub async fn serve(config: ConnectorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let node = Arc::new(config.ilp_address()?);
    let pool_config = config.database.pool_config("ilp-connector")?;
    let pool = schema::build_pool(&pool_config)?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;

    let directory = loop {
        let loaded = async {
            let mut conn = pool.get().await?;
            load_directory(&mut conn, &node).await
        };
        match loaded.await {
            Ok(directory) => break directory,
            Err(err) => {
                tracing::warn!(error = %err, "cannot load accounts yet; retrying");
                if tokio::time::timeout(STARTUP_RETRY, shutdown.cancelled())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
        }
    };
    tracing::info!(
        accounts = directory.account_count(),
        routes = directory.route_count(),
        "accounts and routes loaded"
    );
    let directory = Arc::new(SharedDirectory::new(directory));

    let tasks = TaskTracker::new();
    let mut listen_config = pool_config.clone();
    listen_config.application_name = "ilp-connector-listen".to_owned();
    tasks.spawn(keep_directory_fresh(
        listen_config,
        pool.clone(),
        (*node).clone(),
        directory.clone(),
        shutdown.clone(),
    ));

    let state = Arc::new(ServerState {
        node: node.clone(),
        directory: directory.clone(),
        chain: crate::chain::build_chain(node.clone(), directory),
        in_flight: Semaphore::new(config.http.max_in_flight),
        max_body_bytes: config.http.max_body_bytes,
    });
    tracing::info!(listen = %listener.local_addr()?, node.address = %node, "ilp-connector ready");
    serve_http(listener, state, shutdown).await;
    tasks.close();
    tasks.wait().await;
    tracing::info!("ilp-connector stopped");
    Ok(())
}

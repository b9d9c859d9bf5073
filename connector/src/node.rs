//! `serve`: the running connector.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::ConnectorConfig;

/// Runs the connector until `shutdown` is cancelled.
pub async fn serve(config: ConnectorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let address = config.ilp_address()?;
    let pool_config = config.database.pool_config("ilp-connector")?;
    let _pool = schema::build_pool(&pool_config)?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;
    tracing::info!(listen = %listener.local_addr()?, node.address = address.as_str(), "ilp-connector ready");
    shutdown.cancelled().await;
    Ok(())
}

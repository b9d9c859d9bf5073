//! `serve`: the running connector, from configuration to shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use schema::models::balance::{deregister_instance, register_instance};
use schema::models::node_secret::{self, node_secret};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{SharedDirectory, keep_directory_fresh, listen_for_changes, load_directory};
use crate::balance::sweeper;
use crate::balance::writer::PgBalanceStore;
use crate::config::ConnectorConfig;
use crate::http::client::HttpClientService;
use crate::http::server::{AccountSlots, ServerState, serve as serve_http};
use crate::service::stream_receiver::HostedReceivers;
use crate::settlement::engine::HttpEngineClient;
use crate::settlement::node_api::{self, NodeApiState};
use crate::settlement::peer_settle::PgClaimStore;

/// Wait between attempts to reach the database at start-up.
pub const STARTUP_RETRY: Duration = Duration::from_secs(1);

/// Runs the connector until `shutdown` is cancelled: registers this process, loads accounts
/// and routes (waiting for the database if it is not there yet), keeps them fresh, runs the
/// balance writer and the reservation sweeper, and serves ILP-over-HTTP (and the RFC 38 node API
/// when `settlement_api.listen` is set). Returns an error if this process was declared dead
/// by another (its reservations swept): it must not go on.
pub async fn serve(config: ConnectorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let node = Arc::new(config.ilp_address()?);
    let spread = config.rates.spread()?;
    let http_limits = config.http.limits()?;
    let api_limits = config.settlement_api.limits()?;
    let admin_limits = config.admin.limits()?;
    let http_tls = config.http.tls()?;
    let api_tls = config.settlement_api.tls()?;
    let provider = config.rates.provider()?;
    let pool_config = config.database.pool_config("ilp-connector")?;
    let pool = schema::build_pool(&pool_config)?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;
    // Bound at start-up, like http.listen, so a taken port fails the start, not later.
    let settlement_listener = match config.settlement_api.listen {
        None => None,
        Some(listen) => {
            // `validate` allows no token only on a loopback address.
            let token = config.settlement_api.token.clone();
            if token.is_none() {
                tracing::warn!(%listen, "settlement_api.token is not set: any local process can call the node API");
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding settlement_api.listen {listen}"))?;
            Some((listener, token))
        }
    };

    let instance_name = runtime::instance::default_instance_name();
    let mut listen_config = pool_config.clone();
    listen_config.application_name = "ilp-connector-listen".to_owned();
    let (instance, listening, directory, stream_secret) = loop {
        let started = async {
            let mut conn = pool.get().await?;
            let instance = register_instance(&mut conn, &instance_name).await?;
            let listening = listen_for_changes(&listen_config).await?;
            let directory = load_directory(&mut conn, &node).await?;
            let stream_secret = node_secret(&mut conn, node_secret::STREAM).await?;
            Ok::<_, schema::DbError>((instance, listening, directory, stream_secret))
        };
        match started.await {
            Ok(started) => break started,
            Err(err) => {
                tracing::warn!(error = %err, "cannot reach the database yet; retrying");
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
        rates = directory.rates().len(),
        connector.instance = %instance,
        "accounts, routes and rates loaded"
    );
    let directory = Arc::new(SharedDirectory::new(directory));

    // `stop` ends serving on a signal, or when this process learns it was swept (`fatal`).
    let fatal = CancellationToken::new();
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn({
        let (shutdown, fatal, stop) = (shutdown.clone(), fatal.clone(), stop.clone());
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = fatal.cancelled() => {}
            }
            stop.cancel();
        }
    });
    tasks.spawn(keep_directory_fresh(
        listen_config,
        listening,
        pool.clone(),
        (*node).clone(),
        directory.clone(),
        stop.clone(),
    ));
    if let Some(provider) = provider {
        tracing::info!(rates.source = provider.kind.name(), url = %provider.url, "polling a rate provider");
        tasks.spawn(provider.run(pool.clone(), stop.clone()));
    }
    let mut writer_config = pool_config.clone();
    writer_config.application_name = "ilp-connector-balances".to_owned();
    let (balances, writer) = PgBalanceStore::start(writer_config, instance, fatal.clone());
    let writer = tokio::spawn(writer);
    let stale_after = Duration::from_secs(config.balances.stale_after_secs);
    let replicas = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    tasks.spawn(sweeper::run(
        pool.clone(),
        balances.escrow().clone(),
        replicas.clone(),
        instance,
        stale_after,
        fatal.clone(),
        stop.clone(),
    ));

    let settlement_api = match settlement_listener {
        None => "disabled".to_owned(),
        Some((settlement_listener, token)) => {
            let api = Arc::new(NodeApiState::new(
                directory.clone(),
                pool.clone(),
                HttpClientService::new(node.clone()),
                token.as_ref().map(secrecy::ExposeSecret::expose_secret),
            ));
            let address = settlement_listener.local_addr()?;
            if let Some(tls) = &api_tls {
                tls.clone()
                    .reload_on_sighup("settlement-api", stop.clone())?;
            }
            tasks.spawn(node_api::serve(
                settlement_listener,
                api_limits,
                api_tls,
                api,
                stop.clone(),
            ));
            address.to_string()
        }
    };
    let admin = match config.admin.listen {
        None => "disabled".to_owned(),
        Some(listen) => {
            let metrics = runtime::admin::install_metrics()?;
            let listener = runtime::admin::bind(listen).await?;
            let address = listener.local_addr()?;
            tasks.spawn(runtime::admin::serve(
                listener,
                admin_limits,
                metrics,
                pool.clone(),
                stop.clone(),
            ));
            address.to_string()
        }
    };
    let receivers = HostedReceivers::new(stream_secret);
    let state = Arc::new(ServerState {
        node: node.clone(),
        directory: directory.clone(),
        receivers: receivers.clone(),
        chain: crate::chain::build_chain(
            node.clone(),
            directory,
            receivers,
            spread,
            replicas,
            balances,
            PgClaimStore::new(pool.clone()),
            HttpEngineClient::new(),
        ),
        in_flight: Semaphore::new(config.http.max_in_flight),
        max_body_bytes: config.http.max_body_bytes,
        per_account: AccountSlots::new(config.http.max_in_flight_per_account),
        limits: http_limits,
        tls: http_tls.clone(),
    });
    match http_tls {
        Some(tls) => tls.reload_on_sighup("ilp-over-http", stop.clone())?,
        None => runtime::tls::ignore_sighup(stop.clone())?,
    }
    tracing::info!(
        listen = %listener.local_addr()?,
        tls = state.tls.is_some(),
        settlement_api = %settlement_api,
        admin = %admin,
        node.address = %node,
        "ilp-connector ready"
    );
    // Type=notify units wait for this; without NOTIFY_SOCKET it does nothing.
    if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %err, "could not notify systemd");
    }
    serve_http(listener, state, stop.clone()).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Every connection is closed: the last handle on the writer goes, and it finishes its queue.
    if writer.await.is_err() {
        tracing::error!("the balance writer panicked");
    }
    tasks.close();
    tasks.wait().await;
    if fatal.is_cancelled() {
        bail!("this connector was declared dead and its reservations given back; restart it");
    }
    match pool.get().await {
        Ok(mut conn) => {
            if let Err(err) = deregister_instance(&mut conn, instance).await {
                tracing::warn!(error = %err, "could not deregister; another connector will sweep this one");
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not deregister; another connector will sweep this one")
        }
    }
    tracing::info!("ilp-connector stopped");
    Ok(())
}

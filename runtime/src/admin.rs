//! The admin listener of both binaries: `GET /metrics` (Prometheus text format) and
//! `GET /health` (200 when the database answers, 503 otherwise, for load balancers).
//!
//! Metrics are recorded with the `metrics` crate and rendered by
//! `metrics-exporter-prometheus`; the names are listed in the README ("Metrics").

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use schema::DbPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long `/health` waits for the database.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Histogram buckets for latencies, in seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];
/// Histogram buckets for batch sizes, in operations.
const OPS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Installs the global Prometheus recorder (once per process) and returns its handle.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_ops".to_owned()), OPS_BUCKETS)?
        .install_recorder()?;
    Ok(handle)
}

/// Binds the admin listener.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding admin.listen {listen}"))
}

/// Serves `/metrics` and `/health` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    limits: crate::listener::ListenerLimits,
    metrics: PrometheusHandle,
    pool: DbPool,
    shutdown: CancellationToken,
) {
    let handle = move |request: Request<hyper::body::Incoming>| {
        let (metrics, pool) = (metrics.clone(), pool.clone());
        async move { answer(&request, &metrics, &pool).await }
    };
    crate::listener::serve_connections(
        "admin",
        listener,
        limits,
        None,
        handle,
        shutdown,
        HEALTH_TIMEOUT,
    )
    .await;
}

async fn answer(
    request: &Request<hyper::body::Incoming>,
    metrics: &PrometheusHandle,
    pool: &DbPool,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only".to_owned());
    }
    match request.uri().path() {
        "/metrics" => {
            metrics.run_upkeep();
            let mut response = text(StatusCode::OK, metrics.render());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        "/health" => {
            if database_answers(pool).await {
                text(StatusCode::OK, "ok\n".to_owned())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database unreachable\n".to_owned(),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found".to_owned()),
    }
}

async fn database_answers(pool: &DbPool) -> bool {
    matches!(
        tokio::time::timeout(HEALTH_TIMEOUT, schema::database_answers(pool)).await,
        Ok(Ok(()))
    )
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

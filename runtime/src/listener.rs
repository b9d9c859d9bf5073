//! The accept loop every HTTP listener of both binaries runs on: HTTP/1.1 keep-alive,
//! `TCP_NODELAY`, graceful shutdown with a grace period.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Pause after a failed `accept` (out of file descriptors and the like), rather than spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Serves HTTP/1.1 keep-alive connections from `listener`, answering each request with
/// `handle`, until `shutdown`; then waits up to `grace` for requests in flight. Every
/// listener (ILP-over-HTTP, the RFC 38 node API, both binaries' admin) runs on this.
pub async fn serve_connections<H, F>(
    name: &'static str,
    listener: TcpListener,
    handle: H,
    shutdown: CancellationToken,
    grace: Duration,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(listener = name, error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let handle = handle.clone();
        let service = hyper::service::service_fn(move |request| {
            let answer = handle(request);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let connection = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(listener = name, peer = %peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open after the shutdown grace period"
        );
    }
}

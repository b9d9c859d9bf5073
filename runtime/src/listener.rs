//! The accept loop every HTTP listener of both binaries runs on: HTTP/1.1 keep-alive,
//! `TCP_NODELAY`, limits a hostile peer cannot get around, graceful shutdown with a grace
//! period.
//!
//! [`ListenerLimits`]: a connection must send a whole request head within
//! `header_read_timeout` of connecting, and of its previous response (so this is also the
//! idle keep-alive timeout); at most `max_connections` are open at once (one more is closed
//! at once). Metrics: `ilp_http_connections{listener}` (open now),
//! `ilp_http_connections_refused_total{listener}`, `ilp_http_header_timeouts_total{listener}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::tls::ServerTls;

/// Pause after a failed `accept` (out of file descriptors and the like), rather than spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Default [`ListenerLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ListenerLimits::max_connections`] of the ILP-over-HTTP listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// Default [`ListenerLimits::max_connections`] of the admin and node API listeners.
pub const DEFAULT_MAX_ADMIN_CONNECTIONS: usize = 256;

/// What one listener allows a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Longest wait for a whole request head, from the connection's start or its previous
    /// response: slow or idle connections are closed after it.
    pub header_read_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl ListenerLimits {
    /// The defaults with at most `max_connections` connections.
    pub fn with_max_connections(max_connections: usize) -> ListenerLimits {
        ListenerLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections,
        }
    }
}

/// Serves HTTP/1.1 keep-alive connections from `listener` within `limits` (over TLS when
/// `tls` is given: HTTP/2 or HTTP/1.1 as ALPN settles), answering each request with
/// `handle`, until `shutdown`; then waits up to `grace` for requests in flight. Every
/// listener (ILP-over-HTTP, the RFC 38 node API, both binaries' admin) runs on this.
pub async fn serve_connections<H, F>(
    name: &'static str,
    listener: TcpListener,
    limits: ListenerLimits,
    tls: Option<ServerTls>,
    handle: H,
    shutdown: CancellationToken,
    grace: Duration,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let open = metrics::gauge!("ilp_http_connections", "listener" => name);
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it: the peer sees the connection end at once.
            metrics::counter!("ilp_http_connections_refused_total", "listener" => name)
                .increment(1);
            tracing::debug!(listener = name, peer = %peer, max = limits.max_connections, "too many connections; closed a new one");
            continue;
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let handle = handle.clone();
        let service = hyper::service::service_fn(move |request| {
            let answer = handle(request);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(ServerTls::acceptor);
        let open = open.clone();
        open.increment(1.0);
        tokio::spawn(async move {
            let ended = match acceptor {
                None => serve_http1(stream, service, limits, watcher).await,
                Some(acceptor) => {
                    // The handshake gets the header timeout too: a slow one is a slow header.
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                                let connection = http2::Builder::new(TokioExecutor::new())
                                    .timer(TokioTimer::new())
                                    .serve_connection(TokioIo::new(tls), service);
                                watcher.watch(connection).await
                            } else {
                                serve_http1(tls, service, limits, watcher).await
                            }
                        }
                        Ok(Err(err)) => {
                            metrics::counter!("ilp_http_tls_handshake_failures_total", "listener" => name).increment(1);
                            tracing::debug!(listener = name, peer = %peer, error = %err, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            metrics::counter!("ilp_http_header_timeouts_total", "listener" => name)
                                .increment(1);
                            Ok(())
                        }
                    }
                }
            };
            if let Err(err) = ended {
                if err.is_timeout() {
                    metrics::counter!("ilp_http_header_timeouts_total", "listener" => name)
                        .increment(1);
                }
                tracing::debug!(listener = name, peer = %peer, error = %err, "connection ended with an error");
            }
            open.decrement(1.0);
            drop(slot);
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

async fn serve_http1<IO, S>(
    io: IO,
    service: S,
    limits: ListenerLimits,
    watcher: Watcher,
) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), service);
    watcher.watch(connection).await
}

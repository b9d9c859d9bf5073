//! Our HTTP client for the RFC 38 engine, against a real HTTP server on 127.0.0.1:0.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use connector::settlement::engine::{
    EngineError, HttpEngineClient, MAX_ENGINE_ERROR_BYTES, SettlementEngine,
};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An engine that answers every request with `status` and `body`; returns its base URL.
async fn engine(status: StatusCode, body: Bytes) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = body.clone();
                    async move {
                        let mut response = Response::new(Full::new(body));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

// Proves an engine's error status comes back with its body (for the peer's Reject data), and
// a long body is cut at MAX_ENGINE_ERROR_BYTES rather than read whole.
#[tokio::test]
async fn an_engine_error_carries_the_start_of_its_body() {
    let client = HttpEngineClient::new();
    let why = Bytes::from_static(br#"{"error":"account not found"}"#);
    let url = engine(StatusCode::NOT_FOUND, why.clone()).await;
    let err = client
        .send_message(&url, 7, Bytes::from_static(b"m"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EngineError::Status {
            status: StatusCode::NOT_FOUND,
            body: why
        }
    );

    let long = Bytes::from(vec![b'x'; 3 * MAX_ENGINE_ERROR_BYTES]);
    let url = engine(StatusCode::INTERNAL_SERVER_ERROR, long).await;
    let err = client
        .send_message(&url, 7, Bytes::from_static(b"m"), Duration::from_secs(5))
        .await
        .unwrap_err();
    match err {
        EngineError::Status { status, body } => {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(body.len(), MAX_ENGINE_ERROR_BYTES);
        }
        other => panic!("expected a status error, got {other:?}"),
    }

    let url = engine(StatusCode::OK, Bytes::from_static(b"reply")).await;
    let reply = client
        .send_message(&url, 7, Bytes::from_static(b"m"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(&reply[..], b"reply");
}

//! `ilp-sink`: a fulfilling ILP-over-HTTP receiver, for `scripts/bench.sh`.
//!
//! Answers every POST whose body is an ILP Prepare with HTTP 200 and a Fulfill carrying
//! `--fulfillment`; anything else gets 400. `GET /stats` returns `{"prepares":N}`. Listens on
//! loopback only and stops by itself after `--max-seconds`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use connector::packet::{FulfillBuilder, Prepare};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// A fulfilling ILP-over-HTTP receiver (loopback only).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Listen address (loopback).
    #[arg(long, default_value = "127.0.0.1:3999")]
    listen: SocketAddr,
    /// Fulfillment to answer with, 64 hex digits (default: the shared bench sink's).
    #[arg(
        long,
        default_value = "696c702d62656e63682d66697865642d707265696d6167652d33326279746573"
    )]
    fulfillment: String,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!("ilp-sink: only loopback listen addresses are allowed");
        return ExitCode::FAILURE;
    }
    let fulfillment: [u8; 32] = match hex::decode(&args.fulfillment)
        .ok()
        .and_then(|v| v.try_into().ok())
    {
        Some(f) => f,
        None => {
            eprintln!("ilp-sink: --fulfillment must be 64 hex digits");
            return ExitCode::FAILURE;
        }
    };
    let fulfill = FulfillBuilder {
        fulfillment: &fulfillment,
        data: &[],
    }
    .build()
    .expect("a Fulfill with no data builds");
    let fulfill = fulfill.into_bytes().freeze();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ilp-sink: {err}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        eprintln!("ilp-sink: listening on {}", listener.local_addr()?);
        let prepares = Arc::new(AtomicU64::new(0));
        let accept = async {
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let (prepares, fulfill) = (prepares.clone(), fulfill.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let (prepares, fulfill) = (prepares.clone(), fulfill.clone());
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    answer(request, &prepares, fulfill).await,
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        };
        tokio::select! {
            result = accept => result,
            _ = tokio::time::sleep(Duration::from_secs(args.max_seconds)) => Ok(()),
        }
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ilp-sink: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    prepares: &AtomicU64,
    fulfill: Bytes,
) -> Response<Full<Bytes>> {
    if request.method() == Method::GET && request.uri().path() == "/stats" {
        let body = format!("{{\"prepares\":{}}}", prepares.load(Ordering::Relaxed));
        return Response::new(Full::new(Bytes::from(body)));
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    if Prepare::try_from(BytesMut::from(&body[..])).is_err() {
        return status(StatusCode::BAD_REQUEST);
    }
    prepares.fetch_add(1, Ordering::Relaxed);
    let mut response = Response::new(Full::new(fulfill));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

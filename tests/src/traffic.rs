//! Packets on the wire: the [`Receiver`] at the far end, single Prepares ([`send_prepare`])
//! and closed-loop traffic ([`run_traffic`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use connector::packet::{AddressRef, FulfillBuilder, Packet, Prepare, PrepareBuilder};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};

use crate::{FULFILLMENT, condition};

/// How the [`Receiver`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Fulfill with [`FULFILLMENT`].
    Fulfill,
    /// Fulfill with a preimage that does not match.
    WrongFulfillment,
    /// Never answer.
    Silent,
    /// Fulfill with [`FULFILLMENT`] after this long (a slow next hop).
    FulfillAfter(Duration),
    /// Hold every Prepare until [`Receiver::release`], then fulfill it: a next hop as slow as
    /// the test needs, whatever the machine's speed.
    FulfillWhenReleased,
}

/// A fulfilling (or misbehaving) ILP-over-HTTP endpoint on 127.0.0.1.
pub struct Receiver {
    /// Its address.
    pub addr: SocketAddr,
    received: Arc<AtomicU64>,
    amount: Arc<AtomicU64>,
    released: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that behaves as `behaviour`.
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let received = Arc::new(AtomicU64::new(0));
        let amount = Arc::new(AtomicU64::new(0));
        let (counter, sum) = (received.clone(), amount.clone());
        let (released, release) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, sum, release) = (counter.clone(), sum.clone(), release.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let (counter, sum) = (counter.clone(), sum.clone());
                            let mut release = release.clone();
                            async move {
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                if let Ok(prepare) = Prepare::try_from(BytesMut::from(&body[..])) {
                                    counter.fetch_add(1, Ordering::SeqCst);
                                    sum.fetch_add(prepare.amount(), Ordering::SeqCst);
                                }
                                let fulfillment = match behaviour {
                                    Behaviour::Fulfill => FULFILLMENT,
                                    Behaviour::FulfillAfter(delay) => {
                                        tokio::time::sleep(delay).await;
                                        FULFILLMENT
                                    }
                                    Behaviour::FulfillWhenReleased => {
                                        // Released, or the receiver is gone: answer either way.
                                        let _ = release.wait_for(|released| *released).await;
                                        FULFILLMENT
                                    }
                                    Behaviour::WrongFulfillment => [1; 32],
                                    Behaviour::Silent => std::future::pending().await,
                                };
                                let fulfill = FulfillBuilder {
                                    fulfillment: &fulfillment,
                                    data: b"thanks",
                                }
                                .build()
                                .expect("a small Fulfill builds");
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                    fulfill.into_bytes().freeze(),
                                )))
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            received,
            amount,
            released,
            task,
        }
    }

    /// Lets the Prepares a [`Behaviour::FulfillWhenReleased`] receiver holds be fulfilled,
    /// and every later one at once.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    /// `http://<addr>/ilp`.
    pub fn url(&self) -> String {
        format!("http://{}/ilp", self.addr)
    }

    /// Prepares received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Sum of the amounts of the Prepares received so far (fulfilled or not).
    pub fn amount(&self) -> u64 {
        self.amount.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Prepare to `destination` for `amount`, expiring in `expires_in`, with [`condition`].
pub fn prepare(destination: &str, amount: u64, expires_in: Duration) -> Prepare {
    PrepareBuilder {
        amount,
        expires_at: SystemTime::now() + expires_in,
        execution_condition: &condition(),
        destination: AddressRef::new(destination).expect("a valid test address"),
        data: b"e2e",
    }
    .build()
    .expect("a small Prepare builds")
}

/// POSTs `body` to `url` with `token` (if any); returns the status and the parsed packet
/// (for a 200). Panics when the request cannot be sent: see [`try_send`].
pub async fn send(url: &str, token: Option<&str>, body: Bytes) -> (StatusCode, Option<Packet>) {
    try_send(url, token, body).await.expect("sending")
}

/// [`send`], with a connection the server closed or refused as an error to retry on.
pub async fn try_send(
    url: &str,
    token: Option<&str>,
    body: Bytes,
) -> Result<(StatusCode, Option<Packet>), String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut request = Request::post(url).header("content-type", "application/octet-stream");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(request.body(Full::new(body)).expect("request"))
        .await
        .map_err(|err| format!("{err:?}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("reading the answer: {err:?}"))?
        .to_bytes();
    let packet = (status == StatusCode::OK)
        .then(|| Packet::try_from(BytesMut::from(&body[..])).expect("a packet"));
    Ok((status, packet))
}

/// POSTs a Prepare; returns the packet the connector answered with (status must be 200).
pub async fn send_prepare(url: &str, token: &str, prepare: Prepare) -> Packet {
    let (status, packet) = send(url, Some(token), prepare.into_bytes().freeze()).await;
    assert_eq!(status, StatusCode::OK);
    packet.expect("a 200 carries a packet")
}

/// What a traffic run saw.
#[derive(Debug, Default, Clone)]
pub struct Traffic {
    /// Fulfills received.
    pub fulfilled: u64,
    /// Rejects by code.
    pub rejects: std::collections::BTreeMap<String, u64>,
    /// Requests that got no ILP answer (connection refused while a connector restarts, ...).
    pub errors: u64,
}

impl Traffic {
    /// Adds what `other` saw.
    pub fn merge(&mut self, other: Traffic) {
        self.fulfilled += other.fulfilled;
        self.errors += other.errors;
        for (code, n) in other.rejects {
            *self.rejects.entry(code).or_default() += n;
        }
    }

    /// Rejects with `code`.
    pub fn rejected(&self, code: &str) -> u64 {
        self.rejects.get(code).copied().unwrap_or(0)
    }
}

/// Sends Prepares of `amount` to `destination` from `concurrency` loops until `stop` is set
/// (or `max_per_loop` each), tolerating connection failures. Prepares expire in 5 s.
pub async fn run_traffic(
    url: String,
    token: &'static str,
    destination: &'static str,
    amount: u64,
    concurrency: usize,
    max_per_loop: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Traffic {
    run_traffic_expiring(
        url,
        token,
        destination,
        amount,
        concurrency,
        max_per_loop,
        stop,
        Duration::from_secs(5),
    )
    .await
}

/// [`run_traffic`] with Prepares that expire in `expires_in`.
#[allow(clippy::too_many_arguments)]
pub async fn run_traffic_expiring(
    url: String,
    token: &'static str,
    destination: &'static str,
    amount: u64,
    concurrency: usize,
    max_per_loop: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
    expires_in: Duration,
) -> Traffic {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut loops = Vec::new();
    for _ in 0..concurrency {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let mut seen = Traffic::default();
            for _ in 0..max_per_loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let body = prepare(destination, amount, expires_in)
                    .into_bytes()
                    .freeze();
                let request = Request::post(&url)
                    .header("content-type", "application/octet-stream")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(body))
                    .expect("request");
                let answer = async {
                    let response = client.request(request).await.ok()?;
                    if response.status() != StatusCode::OK {
                        return None;
                    }
                    let body = response.into_body().collect().await.ok()?.to_bytes();
                    Packet::try_from(BytesMut::from(&body[..])).ok()
                };
                match tokio::time::timeout(expires_in + Duration::from_secs(5), answer)
                    .await
                    .ok()
                    .flatten()
                {
                    Some(Packet::Fulfill(_)) => seen.fulfilled += 1,
                    Some(Packet::Reject(reject)) => {
                        *seen.rejects.entry(reject.code().to_string()).or_default() += 1
                    }
                    _ => {
                        seen.errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            seen
        }));
    }
    let mut total = Traffic::default();
    for handle in loops {
        if let Ok(seen) = handle.await {
            total.merge(seen);
        }
    }
    total
}

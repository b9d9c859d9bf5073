//! The ILP-over-HTTP server: authenticates the caller, reads the Prepare, runs the chain,
//! and answers 200 with the Fulfill or Reject.
//!
//! | request | answer |
//! |---|---|
//! | `POST /ilp`, bearer token of an account | 200 + Fulfill or Reject |
//! | `POST /accounts/{username}/ilp`, that account's token | 200 + Fulfill or Reject |
//! | missing or wrong token | 401, nothing forwarded |
//! | content type other than `application/octet-stream`, `application/ilp+octet-stream` | 415 |
//! | body over `http.max_body_bytes` | 413 |
//! | body that is not an ILP Prepare | 400 |
//! | `GET /{username}` of an account paid here (`stream_receiver`) | 200 + SPSP (RFC 9) JSON: a fresh STREAM destination and shared secret |
//! | `GET /{username}` of any other name | 404 |
//! | other paths / methods | 404 / 405 |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use runtime::http::{BodyError, bearer_token, content_type_is, read_request_body};
use runtime::listener::ListenerLimits;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::accounts::{AccountInfo, SharedDirectory};
use crate::packet::{Address, ErrorCode, Prepare};
use crate::service::stream_receiver::HostedReceivers;
use crate::service::{IncomingRequest, IncomingService, reject};

use super::{ILP_OCTET_STREAM, OCTET_STREAM};

/// How long shutdown waits for packets in flight: the longest hold we allow, plus a margin.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(32);

/// What every connection shares.
#[derive(Debug)]
pub struct ServerState<S> {
    /// Our address, for our own Rejects.
    pub node: Arc<Address>,
    /// Accounts and tokens.
    pub directory: Arc<SharedDirectory>,
    /// The STREAM receivers of accounts paid here, for SPSP queries.
    pub receivers: HostedReceivers,
    /// The incoming chain.
    pub chain: S,
    /// Packets in flight at once; over it, T03 at once (a queued packet may outlive its expiry).
    pub in_flight: Semaphore,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// Prepares in flight at once per sending account; over it, T03 for that account alone.
    pub per_account: AccountSlots,
    /// What the listener allows each connection.
    pub limits: ListenerLimits,
    /// The listener's certificate, when it speaks TLS.
    pub tls: Option<runtime::listener::ServerTls>,
}

/// Prepares in flight per account, at most `max` each: one busy sender cannot take every
/// slot of `in_flight` from the others.
#[derive(Debug)]
pub struct AccountSlots {
    max: u32,
    counts: std::sync::Mutex<HashMap<i64, u32>>,
}

impl AccountSlots {
    /// At most `max` Prepares in flight per account.
    pub fn new(max: u32) -> AccountSlots {
        AccountSlots {
            max,
            counts: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<i64, u32>> {
        // The map holds plain counters: one left by a panicking thread is still correct.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for one Prepare of `account`, or `None` when it has `max` in flight.
    pub fn try_take(&self, account: i64) -> Option<AccountSlot<'_>> {
        let mut counts = self.counts();
        let count = counts.entry(account).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AccountSlot {
            slots: self,
            account,
        })
    }
}

/// One Prepare's place in its account's in-flight count; given back on drop.
#[derive(Debug)]
pub struct AccountSlot<'a> {
    slots: &'a AccountSlots,
    account: i64,
}

impl Drop for AccountSlot<'_> {
    fn drop(&mut self) {
        let mut counts = self.slots.counts();
        if let Some(count) = counts.get_mut(&self.account) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.account);
            }
        }
    }
}

/// Serves connections from `listener` until `shutdown`, then waits up to
/// [`SHUTDOWN_GRACE`] for requests in flight.
pub async fn serve<S: IncomingService>(
    listener: TcpListener,
    state: Arc<ServerState<S>>,
    shutdown: CancellationToken,
) {
    let (limits, tls) = (state.limits, state.tls.clone());
    let handle = move |request| {
        let state = state.clone();
        async move { handle(request, &state).await }
    };
    super::serve_connections(
        "ilp-over-http",
        listener,
        limits,
        tls,
        handle,
        shutdown,
        SHUTDOWN_GRACE,
    )
    .await;
}

fn status(code: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = code;
    response
}

fn packet_response(bytes: BytesMut) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(bytes.freeze()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
    response
}

/// One HTTP request, start to finish. Never fails: every problem is a status or a Reject.
async fn handle<S: IncomingService>(
    request: Request<Incoming>,
    state: &ServerState<S>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if request.method() == Method::GET
        && let Some(username) = path.strip_prefix('/')
        && !username.is_empty()
        && !username.contains('/')
        && username != "ilp"
    {
        return spsp(username, state);
    }
    let username = match path {
        "/ilp" => None,
        _ => match path
            .strip_prefix("/accounts/")
            .and_then(|rest| rest.strip_suffix("/ilp"))
        {
            Some(username) if !username.is_empty() && !username.contains('/') => {
                Some(username.to_owned())
            }
            _ => return status(StatusCode::NOT_FOUND, "not found"),
        },
    };
    if request.method() != Method::POST {
        return status(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let Some(from) = authenticate(&request, username.as_deref(), &state.directory) else {
        return status(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    };
    if !content_type_is(request.headers(), &[OCTET_STREAM, ILP_OCTET_STREAM]) {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/octet-stream",
        );
    }
    let body = match read_request_body(request, state.max_body_bytes).await {
        Ok(body) => body,
        Err(BodyError::TooLarge(_)) => {
            return status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large for an ILP Prepare",
            );
        }
        Err(BodyError::Unreadable(_)) => {
            return status(StatusCode::BAD_REQUEST, "could not read the body");
        }
    };
    let bytes = super::into_mut(body);
    let prepare = match Prepare::try_from(bytes) {
        Ok(prepare) => prepare,
        Err(err) => {
            tracing::debug!(from.account = %from.username, error = %err, "body is not an ILP Prepare");
            return status(StatusCode::BAD_REQUEST, "body is not a valid ILP Prepare");
        }
    };
    let Ok(_permit) = state.in_flight.try_acquire() else {
        metrics::counter!("ilp_packets_busy_total", "limit" => "node").increment(1);
        let reject = reject(
            &state.node,
            ErrorCode::T03_CONNECTOR_BUSY,
            "too many packets in flight",
            &[],
        );
        return packet_response(reject.into_bytes());
    };
    let Some(_slot) = state.per_account.try_take(from.id) else {
        metrics::counter!("ilp_packets_busy_total", "limit" => "account").increment(1);
        let reject = reject(
            &state.node,
            ErrorCode::T03_CONNECTOR_BUSY,
            &format!("too many packets in flight from {}", from.username),
            &[],
        );
        return packet_response(reject.into_bytes());
    };
    // One span per packet. At debug level, so that the default `info` costs nothing per packet.
    let span = tracing::debug_span!(
        "packet",
        from.account = %from.username,
        prepare.destination = %prepare.destination(),
        prepare.amount = prepare.amount(),
    );
    metrics::gauge!("ilp_packets_in_flight").increment(1.0);
    let result = state
        .chain
        .handle_request(IncomingRequest { from, prepare })
        .instrument(span)
        .await;
    metrics::gauge!("ilp_packets_in_flight").decrement(1.0);
    match &result {
        Ok(_) => metrics::counter!("ilp_packets_total", "outcome" => "fulfilled").increment(1),
        Err(reject) => {
            metrics::counter!("ilp_packets_total", "outcome" => "rejected", "code" => reject.code().metric_label())
                .increment(1)
        }
    }
    match result {
        Ok(fulfill) => packet_response(fulfill.into_bytes()),
        Err(reject) => packet_response(reject.into_bytes()),
    }
}

/// SPSP (RFC 9): a fresh STREAM connection to the account `username`, when it is paid here.
/// Anyone may ask (that is the point of a payment pointer); nothing is stored, since the
/// shared secret is derived again from the destination when packets arrive.
fn spsp<S>(username: &str, state: &ServerState<S>) -> Response<Full<Bytes>> {
    let directory = state.directory.current();
    let Some(account) = directory
        .by_username(username)
        .filter(|account| account.stream_receiver)
    else {
        return status(StatusCode::NOT_FOUND, "no such receiver");
    };
    let details = match state.receivers.connection(account) {
        Ok(details) => details,
        Err(err) => {
            tracing::warn!(account = %account.username, error = %err, "cannot make an SPSP connection");
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot make a connection",
            );
        }
    };
    metrics::counter!("ilp_spsp_queries_total").increment(1);
    let body = serde_json::json!({
        "destination_account": details.destination.as_str(),
        "shared_secret": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            details.shared_secret,
        ),
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/spsp4+json"),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// The account whose token the request carries. Only SHA-256 hashes of tokens are kept;
/// the comparison with the stored hash is constant-time.
fn authenticate(
    request: &Request<Incoming>,
    username: Option<&str>,
    directory: &SharedDirectory,
) -> Option<Arc<AccountInfo>> {
    let token = bearer_token(request.headers())?;
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let directory = directory.current();
    let account = match username {
        // A lookup keyed by the hash reveals nothing about the token through timing.
        None => directory.by_token_hash(&hash)?,
        Some(username) => directory.by_username(username)?,
    };
    bool::from(account.token_hash.ct_eq(&hash)).then(|| account.clone())
}

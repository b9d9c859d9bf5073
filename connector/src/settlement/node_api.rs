//! The node side of RFC 38, on its own listener (`[settlement_api]`): what our settlement
//! engines call.
//!
//! | request | answer |
//! |---|---|
//! | `POST /accounts/{id}/settlements`, `Idempotency-Key`, JSON `{"amount":"<digits>","scale":N}` | `201`, JSON Quantity of what was credited (the same key again: the same answer, no second credit) |
//! | `POST /accounts/{id}/messages`, any bytes | sent to the account's peer as a `peer.settle` Prepare; Fulfill → `201` with its data (RFC 38); Reject → `502` with code and message |
//! | missing or wrong `Authorization: Bearer <settlement_api.token>` (when a token is set) | `401` |
//! | no `Idempotency-Key`, bad JSON, amount or scale | `400` with the reason, nothing credited |
//! | unknown account | `404` |
//! | content type other than JSON for a credit | `415` |
//! | body over [`MAX_REQUEST_BODY_BYTES`] | `413` |
//! | database unavailable | `503` (the engine retries with the same key) |
//! | peer unreachable, or no answer within [`MESSAGE_EXPIRY`] | `502` |
//! | other paths / methods | `404` / `405` |
//!
//! `{id}` is the account's numeric id (`ilp-connector accounts list`). The credit itself,
//! scale conversion with leftovers and the idempotency record, is one SQL transaction in
//! `schema::models::incoming_settlement::credit_incoming_settlement`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use runtime::http::{BodyError, bearer_token, content_type_is, read_request_body};
use schema::models::incoming_settlement::{CreditError, credit_incoming_settlement};
use schema::{DbError, DbPool};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accounts::SharedDirectory;
use crate::http::OCTET_STREAM;
use crate::packet::ildcp::PEER_PROTOCOL_CONDITION;
use crate::packet::{MAX_DATA_BYTES, PrepareBuilder};
use crate::service::{OutgoingRequest, OutgoingService};

use super::peer_settle::PEER_SETTLE_DESTINATION;

/// Largest request body: a message becomes Prepare data (at most 32,767 bytes, RFC 27); a
/// credit is a few dozen bytes.
pub const MAX_REQUEST_BODY_BYTES: usize = MAX_DATA_BYTES;
/// Expiry of the `peer.settle` Prepare a message becomes, and how long we wait for its
/// answer (the JS engine framework waits 10 s for a message reply).
pub const MESSAGE_EXPIRY: Duration = Duration::from_secs(10);
/// Longest `Idempotency-Key` accepted (the `incoming_settlements` CHECK).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;
/// How long shutdown waits for requests in flight: one message round trip, plus a margin.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(12);

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// What every connection of the node API shares.
pub struct NodeApiState<O> {
    /// Accounts (for their outgoing URL and token).
    pub directory: Arc<SharedDirectory>,
    /// The database, for credits.
    pub pool: DbPool,
    /// Sends `peer.settle` Prepares to peers (`HttpClientService` in production).
    pub outgoing: O,
    /// SHA-256 of `settlement_api.token`: the token itself is not kept. `None`: no token
    /// asked for (allowed only on a loopback listener, see `ConnectorConfig::validate`).
    pub token_hash: Option<[u8; 32]>,
}

impl<O> std::fmt::Debug for NodeApiState<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeApiState").finish_non_exhaustive()
    }
}

impl<O> NodeApiState<O> {
    /// The state for a node API whose engines present `token` (`None`: any caller that can
    /// reach the listener).
    pub fn new(
        directory: Arc<SharedDirectory>,
        pool: DbPool,
        outgoing: O,
        token: Option<&str>,
    ) -> NodeApiState<O> {
        NodeApiState {
            directory,
            pool,
            outgoing,
            token_hash: token.map(|token| Sha256::digest(token.as_bytes()).into()),
        }
    }
}

/// Serves the node API on `listener` until `shutdown`, then waits up to
/// [`SHUTDOWN_GRACE`] for requests in flight.
pub async fn serve<O: OutgoingService>(
    listener: TcpListener,
    limits: runtime::listener::ListenerLimits,
    tls: Option<runtime::listener::ServerTls>,
    state: Arc<NodeApiState<O>>,
    shutdown: CancellationToken,
) {
    let handle = move |request| {
        let state = state.clone();
        async move { handle(request, &state).await }
    };
    crate::http::serve_connections(
        "settlement-api",
        listener,
        limits,
        tls,
        handle,
        shutdown,
        SHUTDOWN_GRACE,
    )
    .await;
}

fn respond(code: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(code: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    let mut message = message.into();
    message.push('\n');
    respond(code, TEXT, Bytes::from(message))
}

/// Which endpoint a path names.
enum Endpoint {
    Settlements(i64),
    Messages(i64),
}

fn route(path: &str) -> Option<Endpoint> {
    let rest = path.strip_prefix("/accounts/")?;
    let (id, action) = rest.split_once('/')?;
    // Ids are ours: decimal digits only, so `+1` or ` 1` name no account.
    let id = schema::digits::parse_i64(id)?;
    match action {
        "settlements" => Some(Endpoint::Settlements(id)),
        "messages" => Some(Endpoint::Messages(id)),
        _ => None,
    }
}

/// One request, start to finish. Never fails: every problem is a status.
async fn handle<O: OutgoingService>(
    request: Request<Incoming>,
    state: &NodeApiState<O>,
) -> Response<Full<Bytes>> {
    // Authenticate before anything else, so an unauthenticated caller learns nothing.
    if let Some(token_hash) = &state.token_hash
        && !authorized(&request, token_hash)
    {
        let mut response = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response
            .headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return response;
    }
    let Some(endpoint) = route(request.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    if request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    match endpoint {
        Endpoint::Settlements(id) => credit(request, id, state).await,
        Endpoint::Messages(id) => relay_message(request, id, state).await,
    }
}

/// Whether the request carries our bearer token. Both sides are hashed first, so the
/// constant-time comparison does not even leak the token's length.
fn authorized(request: &Request<Incoming>, token_hash: &[u8; 32]) -> bool {
    let Some(token) = bearer_token(request.headers()) else {
        return false;
    };
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    bool::from(hash.ct_eq(token_hash))
}

/// Reads the body, at most [`MAX_REQUEST_BODY_BYTES`].
async fn read_body(request: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match read_request_body(request, MAX_REQUEST_BODY_BYTES).await {
        Ok(body) => Ok(body),
        Err(BodyError::TooLarge(_)) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {MAX_REQUEST_BODY_BYTES} bytes"),
        )),
        Err(BodyError::Unreadable(_)) => {
            Err(text(StatusCode::BAD_REQUEST, "could not read the body"))
        }
    }
}

/// RFC 38's `Quantity`. `amount` is a string of decimal digits; `scale` any `u8`.
#[derive(Debug, Deserialize)]
struct Quantity {
    amount: String,
    scale: u8,
}

async fn credit<O>(
    request: Request<Incoming>,
    account_id: i64,
    state: &NodeApiState<O>,
) -> Response<Full<Bytes>> {
    let key = match request.headers().get("idempotency-key") {
        None => {
            return text(
                StatusCode::BAD_REQUEST,
                "the Idempotency-Key header is required (RFC 38)",
            );
        }
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES => key.to_owned(),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
                    ),
                );
            }
        },
    };
    // `application/json`, with or without parameters such as `charset=utf-8`.
    if !content_type_is(request.headers(), &[JSON]) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/json",
        );
    }
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let quantity: Quantity = match serde_json::from_slice(&body) {
        Ok(quantity) => quantity,
        Err(err) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "body is not a Quantity {{\"amount\":\"<digits>\",\"scale\":<0-255>}}: {err}"
                ),
            );
        }
    };
    if !schema::digits::is_digits(&quantity.amount) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "amount {:?} is not a non-negative integer in decimal digits",
                quantity.amount
            ),
        );
    }
    let mut conn = match state.pool.get().await {
        Ok(conn) => conn,
        Err(err) => {
            tracing::warn!(account.id = account_id, error = %err, "settlement API: no database connection");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable; retry with the same Idempotency-Key",
            );
        }
    };
    match credit_incoming_settlement(
        &mut conn,
        account_id,
        &key,
        &quantity.amount,
        quantity.scale,
    )
    .await
    {
        Ok(credit) => {
            tracing::info!(
                account.id = account_id,
                settlement.amount = %quantity.amount,
                settlement.scale = quantity.scale,
                settlement.credited = credit.credited,
                settlement.replayed = credit.replayed,
                "incoming settlement"
            );
            respond(
                StatusCode::CREATED,
                JSON,
                Bytes::from(credit.response.to_string()),
            )
        }
        Err(CreditError::InvalidAmount(why)) => text(StatusCode::BAD_REQUEST, why),
        Err(CreditError::UnknownAccount) => text(
            StatusCode::NOT_FOUND,
            format!("no account with id {account_id}"),
        ),
        Err(CreditError::Db(err)) => {
            tracing::warn!(account.id = account_id, error = %err, "settlement API: credit failed");
            match err {
                DbError::Unavailable(_) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database unavailable; retry with the same Idempotency-Key",
                ),
                DbError::Refused(why) => text(StatusCode::BAD_REQUEST, why),
                _ => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the credit failed; retry with the same Idempotency-Key",
                ),
            }
        }
    }
}

async fn relay_message<O: OutgoingService>(
    request: Request<Incoming>,
    account_id: i64,
    state: &NodeApiState<O>,
) -> Response<Full<Bytes>> {
    let Some(to) = state.directory.current().by_id(account_id).cloned() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no account with id {account_id}"),
        );
    };
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let prepare = match (PrepareBuilder {
        amount: 0,
        expires_at: SystemTime::now() + MESSAGE_EXPIRY,
        execution_condition: &PEER_PROTOCOL_CONDITION,
        destination: PEER_SETTLE_DESTINATION,
        data: &body,
    })
    .build()
    {
        Ok(prepare) => prepare,
        Err(err) => return text(StatusCode::PAYLOAD_TOO_LARGE, err.to_string()),
    };
    let outgoing = OutgoingRequest {
        from: to.clone(),
        to: to.clone(),
        original_amount: 0,
        prepare,
        conversion: None,
    };
    match tokio::time::timeout(MESSAGE_EXPIRY, state.outgoing.send_request(outgoing)).await {
        // RFC 38: a relayed message is answered 201 with the peer engine's reply.
        Ok(Ok(fulfill)) => respond(
            StatusCode::CREATED,
            OCTET_STREAM,
            Bytes::from(fulfill.into_data()),
        ),
        Ok(Err(reject)) => {
            tracing::info!(
                to.account = %to.username,
                reject.code = %reject.code(),
                "settlement message rejected by the peer"
            );
            text(
                StatusCode::BAD_GATEWAY,
                format!("{} {}", reject.code(), reject.message_str()),
            )
        }
        Err(_) => text(
            StatusCode::BAD_GATEWAY,
            format!("{} did not answer within {MESSAGE_EXPIRY:?}", to.username),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_two_endpoints_with_numeric_ids_are_routed() {
        // Proves ids must be plain digits and only settlements/messages are served.
        assert!(matches!(
            route("/accounts/7/settlements"),
            Some(Endpoint::Settlements(7))
        ));
        assert!(matches!(
            route("/accounts/7/messages"),
            Some(Endpoint::Messages(7))
        ));
        for path in [
            "/accounts/+7/messages",
            "/accounts/alice/messages",
            "/accounts//messages",
            "/accounts/7/ilp",
            "/accounts/7/messages/x",
            "/accounts/99999999999999999999/settlements",
            "/accounts",
        ] {
            assert!(route(path).is_none(), "{path}");
        }
    }
}

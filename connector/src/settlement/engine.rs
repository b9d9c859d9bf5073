//! Our side of an RFC 38 settlement engine's API, as far as the connector calls it: a
//! `peer.settle` message from a peer goes to `POST {engine_url}/accounts/{id}/messages`, and
//! the engine's reply body comes back as the Fulfill data.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, StatusCode};
use runtime::http::{HttpClient, http_client};

use crate::http::OCTET_STREAM;
use crate::packet::MAX_DATA_BYTES;

/// Longest we wait for an engine's reply, whatever the Prepare's expiry: the JS framework
/// for RFC 38 engines waits 10 s for a message reply, so a longer wait helps nobody.
pub const ENGINE_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest engine reply we accept: it becomes Fulfill data, which RFC 27 caps.
pub const MAX_ENGINE_REPLY_BYTES: usize = MAX_DATA_BYTES;
/// Most of an engine's error body relayed to the peer in a Reject's data, in bytes.
pub const MAX_ENGINE_ERROR_BYTES: usize = 8 * 1024;
/// Time allowed to open a TCP connection to an engine.
pub const ENGINE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an engine gave no usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine URL and account id do not make a URL.
    #[error("engine URL {0:?} is not usable")]
    BadUrl(String),
    /// No connection, or it broke before a reply.
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    /// No complete reply within the time allowed.
    #[error("engine did not answer within {0:?}")]
    Timeout(Duration),
    /// A reply other than 2xx, with (up to [`MAX_ENGINE_ERROR_BYTES`] of) its body, which
    /// the peer's engine gets in the Reject's data.
    #[error("engine answered HTTP {status}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of the body; empty when it could not be read.
        body: Bytes,
    },
    /// A 2xx reply over [`MAX_ENGINE_REPLY_BYTES`].
    #[error("engine reply is over {MAX_ENGINE_REPLY_BYTES} bytes, too long for a Fulfill")]
    TooLarge,
}

/// Sends a peer's settlement message to our engine and returns its reply.
pub trait SettlementEngine: Send + Sync + 'static {
    /// POSTs `message` to `{engine_url}/accounts/{account_id}/messages` and returns the body
    /// of a 2xx reply; gives up after `timeout`.
    fn send_message(
        &self,
        engine_url: &str,
        account_id: i64,
        message: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, EngineError>> + Send;
}

/// [`SettlementEngine`] over HTTP/1.1 with a keep-alive pool.
#[derive(Debug, Clone)]
pub struct HttpEngineClient {
    client: HttpClient,
}

impl HttpEngineClient {
    /// A client with its own connection pool.
    pub fn new() -> Self {
        HttpEngineClient {
            client: http_client(ENGINE_CONNECT_TIMEOUT, |pool| pool),
        }
    }
}

impl Default for HttpEngineClient {
    fn default() -> Self {
        HttpEngineClient::new()
    }
}

/// `{engine_url}/accounts/{account_id}/messages`.
pub fn messages_url(engine_url: &str, account_id: i64) -> String {
    format!(
        "{}/accounts/{account_id}/messages",
        engine_url.trim_end_matches('/')
    )
}

impl SettlementEngine for HttpEngineClient {
    async fn send_message(
        &self,
        engine_url: &str,
        account_id: i64,
        message: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, EngineError> {
        let url = messages_url(engine_url, account_id);
        let request = Request::post(url.as_str())
            .header(CONTENT_TYPE, OCTET_STREAM)
            .body(Full::new(message))
            .map_err(|_| EngineError::BadUrl(engine_url.to_owned()))?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| EngineError::Unreachable(schema::error::with_causes(&err)))?;
            let status = response.status();
            if !status.is_success() {
                // The error body tells the peer's engine why; a longer one is cut, not refused.
                let body =
                    runtime::http::read_prefix(response.into_body(), MAX_ENGINE_ERROR_BYTES).await;
                return Err(EngineError::Status { status, body });
            }
            runtime::http::read_body(response.into_body(), MAX_ENGINE_REPLY_BYTES)
                .await
                .map_err(|err| match err {
                    runtime::http::BodyError::TooLarge(_) => EngineError::TooLarge,
                    runtime::http::BodyError::Unreadable(err) => EngineError::Unreachable(err),
                })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| EngineError::Timeout(timeout))?
    }
}

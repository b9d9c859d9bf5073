//! `HttpClientService`: the last link, which POSTs the Prepare to the next hop over a
//! keep-alive connection pool and reads its Fulfill or Reject.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use runtime::http::{HttpClient, http_client};

use crate::packet::{Address, ErrorCode, Packet};
use crate::service::{IlpResult, OutgoingRequest, OutgoingService, reject};

use super::OCTET_STREAM;

/// Largest response body we read from a peer: a Fulfill or Reject with maximal data.
pub const MAX_RESPONSE_BYTES: usize = 40_000;
/// Idle keep-alive connections kept per peer.
pub const MAX_IDLE_CONNECTIONS_PER_PEER: usize = 256;

/// Sends Prepares over ILP-over-HTTP. Errors map to Rejects: unreachable → T01, 5xx → T00,
/// any other non-200 → T01, an unreadable body → T00. The caller bounds the wait (the
/// outgoing validator's timer at the Prepare's expiry).
#[derive(Debug, Clone)]
pub struct HttpClientService {
    node: Arc<Address>,
    client: HttpClient,
    /// When each peer's failure was last logged at `warn`.
    reported: Arc<Mutex<HashMap<i64, Instant>>>,
}

/// A peer that stays unreachable is logged at `warn` at most this often (each failure at
/// `debug`).
pub const UNREACHABLE_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl HttpClientService {
    /// A client with a keep-alive pool per peer.
    pub fn new(node: Arc<Address>) -> Self {
        let client = http_client(Duration::from_secs(5), |pool| {
            pool.pool_max_idle_per_host(MAX_IDLE_CONNECTIONS_PER_PEER)
        });
        HttpClientService {
            node,
            client,
            reported: Arc::default(),
        }
    }

    /// Logs that `account` could not be reached (a refused connection, a TLS certificate
    /// that does not fit): once per [`UNREACHABLE_LOG_INTERVAL`] at `warn`, else `debug`.
    fn report_unreachable(&self, account: i64, username: &str, why: &str) {
        let now = Instant::now();
        let due = {
            let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            match reported.get(&account) {
                Some(at) if now.duration_since(*at) < UNREACHABLE_LOG_INTERVAL => false,
                _ => {
                    reported.insert(account, now);
                    true
                }
            }
        };
        if due {
            tracing::warn!(to.account = %username, error = %why, "peer unreachable (logged at most every 10 s)");
        } else {
            tracing::debug!(to.account = %username, error = %why, "peer unreachable");
        }
    }
}

impl OutgoingService for HttpClientService {
    async fn send_request(&self, request: OutgoingRequest) -> IlpResult {
        let to = &request.to;
        let unreachable =
            |why: String| reject(&self.node, ErrorCode::T01_PEER_UNREACHABLE, &why, &[]);
        let Some(outgoing) = &to.outgoing else {
            return Err(unreachable(format!(
                "account {} has no outgoing URL",
                to.username
            )));
        };
        let mut http = Request::post(outgoing.uri.clone()).header(CONTENT_TYPE, OCTET_STREAM);
        if let Some(authorization) = &outgoing.authorization {
            http = http.header(AUTHORIZATION, authorization.clone());
        }
        let body = Full::new(request.prepare.into_bytes().freeze());
        let http = match http.body(body) {
            Ok(http) => http,
            Err(err) => {
                return Err(unreachable(format!(
                    "cannot build a request to {}: {err}",
                    to.username
                )));
            }
        };
        let response = match self.client.request(http).await {
            Ok(response) => response,
            Err(err) => {
                let why = schema::error::with_causes(&err);
                self.report_unreachable(to.id, &to.username, &why);
                return Err(unreachable(format!("{} unreachable: {why}", to.username)));
            }
        };
        let status = response.status();
        if status != StatusCode::OK {
            let code = if status.is_server_error() {
                ErrorCode::T00_INTERNAL_ERROR
            } else {
                ErrorCode::T01_PEER_UNREACHABLE
            };
            return Err(reject(
                &self.node,
                code,
                &format!("{} answered HTTP {status}", to.username),
                &[],
            ));
        }
        let body = match runtime::http::read_body(response.into_body(), MAX_RESPONSE_BYTES).await {
            Ok(body) => body,
            Err(err) => {
                return Err(reject(
                    &self.node,
                    ErrorCode::T00_INTERNAL_ERROR,
                    &format!("reading {}'s answer: {err}", to.username),
                    &[],
                ));
            }
        };
        let bytes = super::into_mut(body);
        match Packet::try_from(bytes) {
            Ok(Packet::Fulfill(fulfill)) => Ok(fulfill),
            // A downstream Reject goes back upstream unchanged: code, triggeredBy, message, data.
            Ok(Packet::Reject(reject)) => Err(reject),
            Ok(Packet::Prepare(_)) => Err(reject(
                &self.node,
                ErrorCode::T00_INTERNAL_ERROR,
                &format!("{} answered with a Prepare", to.username),
                &[],
            )),
            Err(err) => Err(reject(
                &self.node,
                ErrorCode::T00_INTERNAL_ERROR,
                &format!("{} answered with an invalid packet: {err}", to.username),
                &[],
            )),
        }
    }
}

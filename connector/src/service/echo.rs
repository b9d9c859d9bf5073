//! Ping: the de-facto echo protocol (never ratified; `../shared/reference/other-anchors.md`
//! section 4), answered at the node's own address, and the return leg of our own pings.
//!
//! - An **echo request** is a Prepare to our node address whose data is `ECHOECHOECHOECHO`,
//!   the byte 0 and the requester's return address (OER variable-length string). We send a
//!   Prepare of the same amount and condition to that address with data `ECHOECHOECHOECHO`
//!   and the byte 1, expiring [`ECHO_MARGIN`] earlier, from the same account, and relay its
//!   answer: the requester's fulfillment comes back to it.
//! - The **return leg** of `ilp-connector ping`: a 0-amount echo response to
//!   `<node>.~ping.<nonce>` is fulfilled here with HMAC-SHA256(ping key, nonce), the ping key
//!   being derived from the node's `stream` secret, so the CLI (which reads that secret from
//!   the database) knows the condition and any replica can fulfill it. Only 0-amount packets:
//!   a ping moves no money.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::packet::oer::{Reader, put_var_octet_string};
use crate::packet::{Address, AddressRef, ErrorCode, Field, FulfillBuilder, PrepareBuilder};
use crate::stream::crypto::hmac_sha256;

use super::{IlpResult, IncomingRequest, IncomingService, reject};

/// The data every echo packet starts with.
pub const ECHO_PREFIX: &[u8; 16] = b"ECHOECHOECHOECHO";
/// The segment under our address where our pings' responses come back.
pub const PING_SEGMENT: &str = "~ping";
/// How much earlier than the request the echo response expires.
pub const ECHO_MARGIN: Duration = Duration::from_secs(1);

/// The key our pings' fulfillments are made with, from the node's `stream` secret.
pub fn ping_key(node_secret: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(node_secret, b"ilp-connector ping")
}

/// The fulfillment of the ping whose return address ends in `nonce`.
pub fn ping_fulfillment(ping_key: &[u8; 32], nonce: &str) -> [u8; 32] {
    hmac_sha256(ping_key, nonce.as_bytes())
}

/// Data of an echo request with return address `source`.
pub fn echo_request_data(source: &Address) -> Vec<u8> {
    let mut data = ECHO_PREFIX.to_vec();
    data.push(0);
    put_var_octet_string(&mut data, source.as_str().as_bytes());
    data
}

/// Answers echo requests to our address and our pings' return legs; hands the rest on.
#[derive(Debug)]
pub struct EchoService<S> {
    node: Arc<Address>,
    ping_key: [u8; 32],
    next: S,
}

impl<S> EchoService<S> {
    /// Echo at `node`, our pings' fulfillments from `ping_key` ([`ping_key`]).
    pub fn new(node: Arc<Address>, ping_key: [u8; 32], next: S) -> Self {
        EchoService {
            node,
            ping_key,
            next,
        }
    }

    fn bad(&self, message: &str) -> crate::packet::Reject {
        reject(&self.node, ErrorCode::F01_INVALID_PACKET, message, &[])
    }

    /// Fulfills the return leg of our ping `nonce`; it must carry no money.
    fn answer_ping(&self, amount: u64, nonce: &str) -> IlpResult {
        if amount != 0 {
            return Err(reject(
                &self.node,
                ErrorCode::F02_UNREACHABLE,
                "pings carry no money: only 0-amount echo responses are answered here",
                &[],
            ));
        }
        let fulfillment = ping_fulfillment(&self.ping_key, nonce);
        FulfillBuilder {
            fulfillment: &fulfillment,
            data: &[],
        }
        .build()
        .map_err(|err| {
            reject(
                &self.node,
                ErrorCode::T00_INTERNAL_ERROR,
                &err.to_string(),
                &[],
            )
        })
    }

    /// The nonce of `destination` when it is one of our pings' return addresses.
    fn ping_nonce<'a>(&self, destination: AddressRef<'a>) -> Option<&'a str> {
        destination
            .as_str()
            .strip_prefix(self.node.as_str())?
            .strip_prefix('.')?
            .strip_prefix(PING_SEGMENT)?
            .strip_prefix('.')
    }
}

impl<S: IncomingService> IncomingService for EchoService<S> {
    async fn handle_request(&self, request: IncomingRequest) -> IlpResult {
        let prepare = &request.prepare;
        let data = prepare.data();
        if let Some(nonce) = self.ping_nonce(prepare.destination()) {
            if !(data.len() == 17 && data.starts_with(ECHO_PREFIX) && data[16] == 1) {
                return Err(self.bad("not an echo response"));
            }
            return self.answer_ping(prepare.amount(), nonce);
        }
        if prepare.destination().as_str() != self.node.as_str() || !data.starts_with(ECHO_PREFIX) {
            return self.next.handle_request(request).await;
        }
        let mut reader = Reader::new(&data[ECHO_PREFIX.len()..]);
        match reader.read_u8(Field::Data) {
            Ok(0) => {}
            Ok(1) => return Err(self.bad("an echo response is not for this address")),
            _ => return Err(self.bad("unknown echo packet type")),
        }
        let source = reader
            .read_var_octet_string(Field::Data)
            .ok()
            .and_then(|bytes| AddressRef::from_bytes(bytes).ok())
            .ok_or_else(|| self.bad("echo request without a valid return address"))?
            .to_address();
        let Some(expires_at) = prepare
            .expires_at()
            .checked_sub(ECHO_MARGIN)
            .filter(|at| *at > SystemTime::now())
        else {
            return Err(reject(
                &self.node,
                ErrorCode::R02_INSUFFICIENT_TIMEOUT,
                "too little time left to echo",
                &[],
            ));
        };
        let mut response_data = ECHO_PREFIX.to_vec();
        response_data.push(1);
        let echo = PrepareBuilder {
            amount: prepare.amount(),
            expires_at,
            execution_condition: prepare.execution_condition(),
            destination: source.as_address_ref(),
            data: &response_data,
        }
        .build()
        .map_err(|err| {
            reject(
                &self.node,
                ErrorCode::F00_BAD_REQUEST,
                &err.to_string(),
                &[],
            )
        })?;
        tracing::debug!(from.account = %request.from.username, to = %source, "echo");
        if let Some(nonce) = self.ping_nonce(source.as_address_ref()) {
            // Our own ping of our own address: its return leg ends here too.
            return self.answer_ping(echo.amount(), nonce);
        }
        self.next
            .handle_request(IncomingRequest {
                from: request.from,
                prepare: echo,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::condition_for;
    use crate::service::testing::*;

    fn echo_request(
        to: &str,
        source: &Address,
        condition: &[u8; 32],
        amount: u64,
    ) -> crate::packet::Prepare {
        PrepareBuilder {
            amount,
            expires_at: SystemTime::now() + Duration::from_secs(10),
            execution_condition: condition,
            destination: AddressRef::new(to).unwrap(),
            data: &echo_request_data(source),
        }
        .build()
        .unwrap()
    }

    #[tokio::test]
    async fn a_ping_of_our_own_address_comes_back_fulfilled_with_the_ping_key() {
        // Proves the whole loop at one node: the echo request turns into a response to our
        // `~ping` address, which is fulfilled with HMAC(ping key, nonce), the fulfillment of
        // the condition the pinger chose; nothing reaches the router.
        let key = ping_key(&[3; 32]);
        let next = Recorder::new(|| Ok(fulfill()));
        let service = EchoService::new(Arc::new(node()), key, next.clone());
        let source = Address::new("test.node.~ping.abc123").unwrap();
        let condition = condition_for(&ping_fulfillment(&key, "abc123"));
        let fulfill = service
            .handle_request(IncomingRequest {
                from: account(1, "alice"),
                prepare: echo_request("test.node", &source, &condition, 0),
            })
            .await
            .expect("fulfilled");
        assert!(fulfill.matches_condition(&condition));
        assert_eq!(next.count(), 0);
    }

    #[tokio::test]
    async fn an_echo_request_is_sent_back_to_its_source_and_the_rest_goes_on() {
        // Proves a request naming a remote return address goes on (to the router) as a
        // response to that address, and that packets not for us pass untouched.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = EchoService::new(Arc::new(node()), ping_key(&[3; 32]), next.clone());
        let source = Address::new("g.other.~ping.x").unwrap();
        let _ = service
            .handle_request(IncomingRequest {
                from: account(1, "alice"),
                prepare: echo_request("test.node", &source, &[9; 32], 5),
            })
            .await;
        assert_eq!(next.count(), 1);
        let _ = service
            .handle_request(IncomingRequest {
                from: account(1, "alice"),
                prepare: prepare("test.node.bob", 5, Duration::from_secs(10)),
            })
            .await;
        assert_eq!(next.count(), 2);
    }

    #[tokio::test]
    async fn bad_echo_packets_get_clear_rejects() {
        // Proves malformed requests, money on a ping's return leg and a response that is no
        // echo are rejected, never fulfilled.
        let key = ping_key(&[3; 32]);
        let service = EchoService::new(Arc::new(node()), key, Recorder::new(|| Ok(fulfill())));
        let cases: Vec<(crate::packet::Prepare, ErrorCode)> = vec![
            (
                PrepareBuilder {
                    amount: 0,
                    expires_at: SystemTime::now() + Duration::from_secs(10),
                    execution_condition: &[1; 32],
                    destination: AddressRef::new("test.node").unwrap(),
                    data: b"ECHOECHOECHOECHO\x00\x05ab",
                }
                .build()
                .unwrap(),
                ErrorCode::F01_INVALID_PACKET,
            ),
            (
                PrepareBuilder {
                    amount: 7,
                    expires_at: SystemTime::now() + Duration::from_secs(10),
                    execution_condition: &[1; 32],
                    destination: AddressRef::new("test.node.~ping.n").unwrap(),
                    data: b"ECHOECHOECHOECHO\x01",
                }
                .build()
                .unwrap(),
                ErrorCode::F02_UNREACHABLE,
            ),
            (
                prepare("test.node.~ping.n", 0, Duration::from_secs(10)),
                ErrorCode::F01_INVALID_PACKET,
            ),
        ];
        for (packet, code) in cases {
            let reject = service
                .handle_request(IncomingRequest {
                    from: account(1, "alice"),
                    prepare: packet,
                })
                .await
                .expect_err("rejected");
            assert_eq!(
                reject.code(),
                code,
                "{:?}",
                String::from_utf8_lossy(reject.message())
            );
        }
    }
}

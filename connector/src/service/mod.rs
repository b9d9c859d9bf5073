//! The service chain: each link is a small type that does one thing to a Prepare and hands
//! it on, and every failure is a [`Reject`] value, never a Rust error.
//!
//! Incoming services take a Prepare from an account ([`IncomingRequest`]); once the router
//! has chosen the next hop, outgoing services take an [`OutgoingRequest`]. `chain.rs`
//! writes the order down in one place.

pub mod echo;
pub mod expiry;
pub mod ildcp;
pub mod peer;
pub mod rate_limit;
pub mod stream_receiver;
pub mod validator;

use std::sync::Arc;
use std::time::SystemTime;

use crate::accounts::AccountInfo;
use crate::packet::{Address, ErrorCode, Fulfill, Prepare, Reject, RejectBuilder};

/// The peer's Fulfill, or a Reject (ours or relayed from downstream).
pub type IlpResult = Result<Fulfill, Reject>;

/// A Prepare received from `from`, not yet routed.
#[derive(Debug)]
pub struct IncomingRequest {
    /// The authenticated sender.
    pub from: Arc<AccountInfo>,
    /// The packet, as received.
    pub prepare: Prepare,
}

/// A Prepare on its way to the next hop `to`.
#[derive(Debug)]
pub struct OutgoingRequest {
    /// The sender.
    pub from: Arc<AccountInfo>,
    /// The next hop.
    pub to: Arc<AccountInfo>,
    /// The amount `from` sent (the Prepare's amount may differ after exchange).
    pub original_amount: u64,
    /// The packet to send; amount and expiry as rewritten so far.
    pub prepare: Prepare,
    /// The conversion that took `original_amount` to the Prepare's amount, if any.
    pub conversion: Option<crate::rates::Conversion>,
}

/// One link of the incoming chain. Every failure becomes a `Reject`.
pub trait IncomingService: Send + Sync + 'static {
    /// Handles one Prepare.
    fn handle_request(&self, request: IncomingRequest) -> impl Future<Output = IlpResult> + Send;
}

/// One link of the outgoing chain. Every failure becomes a `Reject`.
pub trait OutgoingService: Send + Sync + 'static {
    /// Sends one Prepare towards `request.to`.
    fn send_request(&self, request: OutgoingRequest) -> impl Future<Output = IlpResult> + Send;
}

impl<S: IncomingService> IncomingService for Arc<S> {
    fn handle_request(&self, request: IncomingRequest) -> impl Future<Output = IlpResult> + Send {
        (**self).handle_request(request)
    }
}

impl<S: OutgoingService> OutgoingService for Arc<S> {
    fn send_request(&self, request: OutgoingRequest) -> impl Future<Output = IlpResult> + Send {
        (**self).send_request(request)
    }
}

/// Longest message we put in our own Rejects, in bytes.
pub const MAX_REJECT_MESSAGE_BYTES: usize = 512;

/// Builds a Reject that this node triggered: the one place our Rejects are made.
pub fn reject(node: &Address, code: ErrorCode, message: &str, data: &[u8]) -> Reject {
    let mut end = message.len().min(MAX_REJECT_MESSAGE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let builder = RejectBuilder {
        code,
        triggered_by: Some(node.as_address_ref()),
        message: &message.as_bytes()[..end],
        data,
    };
    match builder.build() {
        Ok(reject) => reject,
        // Only over-long data can fail; our own data is at most a few bytes.
        Err(_) => RejectBuilder {
            data: &[],
            ..builder
        }
        .build()
        .expect("a Reject with empty data and a short message always builds"),
    }
}

/// Time left until `expires_at`, zero if it has passed.
pub fn time_left(expires_at: SystemTime, now: SystemTime) -> std::time::Duration {
    expires_at.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod testing {
    //! In-memory fakes for the services' unit tests.

    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::packet::{FulfillBuilder, PrepareBuilder};
    use schema::models::Relation;

    /// The fulfillment every fake next hop uses, and its condition.
    pub const FULFILLMENT: [u8; 32] = [7; 32];

    pub fn condition() -> [u8; 32] {
        crate::packet::condition_for(&FULFILLMENT)
    }

    pub fn node() -> Address {
        Address::new("test.node").unwrap()
    }

    pub fn account(id: i64, username: &str) -> Arc<AccountInfo> {
        Arc::new(AccountInfo {
            id,
            username: username.to_owned(),
            ilp_address: Address::new(&format!("test.node.{username}")).unwrap(),
            asset_code: "USD".to_owned(),
            asset_scale: 2,
            relation: Relation::Child,
            max_packet_amount: None,
            token_hash: [id as u8; 32],
            outgoing: None,
            round_trip_time: Duration::from_millis(500),
            ledger: None,
            spread: None,
            max_packets_per_second: None,
            max_amount_per_second: None,
            stream_receiver: false,
        })
    }

    pub fn prepare(destination: &str, amount: u64, expires_in: Duration) -> Prepare {
        PrepareBuilder {
            amount,
            expires_at: SystemTime::now() + expires_in,
            execution_condition: &condition(),
            destination: crate::packet::AddressRef::new(destination).unwrap(),
            data: b"hello",
        }
        .build()
        .unwrap()
    }

    pub fn fulfill() -> Fulfill {
        FulfillBuilder {
            fulfillment: &FULFILLMENT,
            data: b"paid",
        }
        .build()
        .unwrap()
    }

    /// A next hop that records what reached it and answers as told.
    pub struct Recorder<F> {
        pub seen: Mutex<Vec<(i64, u64, SystemTime, String)>>,
        pub answer: F,
    }

    impl<F: Fn() -> IlpResult + Send + Sync + 'static> Recorder<F> {
        pub fn new(answer: F) -> Arc<Self> {
            Arc::new(Recorder {
                seen: Mutex::new(Vec::new()),
                answer,
            })
        }
        pub fn count(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    impl<F: Fn() -> IlpResult + Send + Sync + 'static> IncomingService for Recorder<F> {
        async fn handle_request(&self, request: IncomingRequest) -> IlpResult {
            let p = &request.prepare;
            self.seen.lock().unwrap().push((
                request.from.id,
                p.amount(),
                p.expires_at(),
                p.destination().to_string(),
            ));
            (self.answer)()
        }
    }

    impl<F: Fn() -> IlpResult + Send + Sync + 'static> OutgoingService for Recorder<F> {
        async fn send_request(&self, request: OutgoingRequest) -> IlpResult {
            let p = &request.prepare;
            self.seen.lock().unwrap().push((
                request.to.id,
                p.amount(),
                p.expires_at(),
                p.destination().to_string(),
            ));
            (self.answer)()
        }
    }
}

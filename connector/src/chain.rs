//! `build_chain`: the one place the order of the services is written down.
//!
//! ```text
//! HTTP server (auth, body limit, in-flight cap → T03, one span per packet)
//!  → IncomingValidator   expired → R00; over max packet amount → F08
//!  → IldcpService        peer.config → the account's address, asset code and scale
//!  → EchoService         echo requests to our address go back to their return address;
//!                        our pings' 0-amount return legs (`<node>.~ping.<nonce>`) → Fulfill
//!  → PeerSettleService   peer.settle, never forwarded: by the sender's ledger, a claim row
//!                        (kind claims) or our RFC 38 engine's reply (kind rfc38) → Fulfill;
//!                        no ledger → F02, bad claim → F00, engine or database down → T00/T01
//!  → PeerProtocolGuard   any other peer.* → F02, never routed
//!  → RateLimitService    the sender's share of its packet rate → T05, of its amount rate → T04
//!  → Router              longest-prefix match → F02
//!  → ExchangeRateService  amount into the next hop's asset and scale, rounded down, minus the
//!                        spread: no rate → F02, stale rate → T00, converts to 0 → R01,
//!                        beyond 2^63 - 1 → F08; an F08 from downstream back in our units
//!  → BalanceService      hold on the sender's reservation → T04 (T00 while the database is away);
//!                        post on Fulfill (durable first, exactly once); Reject touches no row
//!  → ExpiryShortener     minus the next hop's round trip, capped → R02
//!  → OutgoingValidator   timer at the shortened expiry → R00; wrong fulfillment → F05
//!  → StreamReceiverService  an account paid here (`stream_receiver`): its STREAM receiver
//!                        answers (Fulfill → posted by BalanceService like any other)
//!  → HttpClientService   keep-alive pool per peer; unreachable → T01, 5xx → T00
//! ```

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use rust_decimal::Decimal;

use crate::accounts::SharedDirectory;
use crate::balance::{BalanceService, BalanceStore};
use crate::http::client::HttpClientService;
use crate::packet::Address;
use crate::rates::ExchangeRateService;
use crate::router::Router;
use crate::service::IncomingService;
use crate::service::echo::EchoService;
use crate::service::expiry::ExpiryShortener;
use crate::service::ildcp::IldcpService;
use crate::service::peer::PeerProtocolGuard;
use crate::service::rate_limit::RateLimitService;
use crate::service::stream_receiver::{HostedReceivers, StreamReceiverService};
use crate::service::validator::{IncomingValidator, OutgoingValidator};
use crate::settlement::engine::SettlementEngine;
use crate::settlement::peer_settle::{ClaimStore, PeerSettleService};

/// Builds the chain, innermost first.
#[allow(clippy::too_many_arguments)] // one per part the chain is built from, named at the call
pub fn build_chain(
    node: Arc<Address>,
    directory: Arc<SharedDirectory>,
    receivers: HostedReceivers,
    spread: Decimal,
    replicas: Arc<AtomicUsize>,
    balances: impl BalanceStore,
    claims: impl ClaimStore,
    engine: impl SettlementEngine,
) -> impl IncomingService {
    let outgoing = HttpClientService::new(node.clone());
    let receivers_ping_key = receivers.ping_key();
    let outgoing = StreamReceiverService::new(receivers, outgoing);
    let outgoing = OutgoingValidator::new(node.clone(), outgoing);
    let outgoing = ExpiryShortener::new(node.clone(), outgoing);
    let outgoing = BalanceService::new(node.clone(), balances, outgoing);
    let outgoing = ExchangeRateService::new(node.clone(), directory.clone(), spread, outgoing);
    let incoming = Router::new(node.clone(), directory.clone(), outgoing);
    let incoming = RateLimitService::new(node.clone(), replicas, incoming);
    let incoming = PeerProtocolGuard::new(node.clone(), incoming);
    let incoming = PeerSettleService::new(node.clone(), directory, claims, engine, incoming);
    let incoming = EchoService::new(node.clone(), receivers_ping_key, incoming);
    let incoming = IldcpService::new(node.clone(), incoming);
    IncomingValidator::new(node, incoming)
}

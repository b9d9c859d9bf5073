//! The connector's half of settlement: `peer.settle` messages from peers, and the node side
//! of RFC 38 that our settlement engines call. The settlement worker does the rest
//! (deciding, paying, verifying claims, crediting); both meet in the database.
//!
//! # Layout
//! - [`peer_settle`]: `PeerSettleService`, the link of the incoming chain that answers
//!   `peer.settle` by the sender's ledger kind, and [`peer_settle::ClaimStore`].
//! - [`claim`]: the native signed-claim message and its shape checks.
//! - [`engine`]: the HTTP client that hands a peer's message to our RFC 38 engine.
//! - [`node_api`]: the `[settlement_api]` listener: incoming settlement credits and
//!   outgoing messages (RFC 38 `POST /accounts/{id}/settlements`, `/messages`).

pub mod claim;
pub mod engine;
pub mod node_api;
pub mod peer_settle;

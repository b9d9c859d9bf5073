//! STREAM (RFC 29): the transport that carries one payment as many ILP packets, with
//! encrypted, authenticated data in each Prepare, Fulfill and Reject.
//!
//! # Layout
//! - [`packet`]: [`StreamPacket`] and every [`Frame`] of RFC 29, OER-encoded; unknown frames
//!   skipped, malformed input an error, never a panic.
//! - [`crypto`]: AES-256-GCM envelopes, fulfillments and conditions ([`StreamKeys`]); the
//!   receiver's stateless connection secrets ([`ConnectionGenerator`]).
//! - [`receiver`]: [`StreamReceiver`], which answers a Prepare from its bytes and the server
//!   secret alone, so every replica can; the caller credits the amounts it fulfills.
//! - [`sender`]: [`pay`], which probes the rate and sends one amount over any [`IlpSend`]
//!   path, with flow and congestion control, and reports exactly what was delivered.
//!
//! Interoperability target: the JS reference `ilp-protocol-stream` 2.7.2-alpha.3 (and
//! `ilp-pay`), in both directions. What we match is noted where it matters: the probe
//! amounts and precision rule, F99 responses carrying the arrived amount, the
//! `ConnectionNewAddress("")` request for asset details, the token/secret derivation,
//! fulfilling 0-amount control packets.

pub mod crypto;
pub mod packet;
pub mod receiver;
pub mod sender;

pub use crypto::{ConnectionDetails, ConnectionGenerator, CryptoError, GenerateError, StreamKeys};
pub use packet::{Frame, FrameType, OpenError, StreamErrorCode, StreamPacket, StreamPacketError};
pub use receiver::{ReceiverAccount, StreamReceiver};
pub use sender::{
    AssetDetails, ExchangeRate, IlpSend, PayError, PayOptions, PayReport, Progress,
    ProgressCallback, RejectSummary, pay,
};

#[cfg(test)]
mod tests;

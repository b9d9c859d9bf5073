//! ILP-over-HTTP (RFC 35, synchronous mode, as Interledger.rs, Rafiki and `ilp-plugin-http`
//! deploy it): the Prepare is the POST body, the Fulfill or Reject is the 200 response body.

pub mod client;
pub mod server;

pub use runtime::listener::serve_connections;

/// Content types we accept and send.
pub const OCTET_STREAM: &str = "application/octet-stream";
/// The alternative content type some implementations send.
pub const ILP_OCTET_STREAM: &str = "application/ilp+octet-stream";

use bytes::Bytes;

/// `bytes` as a `BytesMut` for the codec, without a copy when nothing else holds them.
pub fn into_mut(bytes: Bytes) -> bytes::BytesMut {
    bytes
        .try_into_mut()
        .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]))
}

//! ILP-over-HTTP (RFC 35, synchronous mode, as Interledger.rs, Rafiki and `ilp-plugin-http`
//! deploy it): the Prepare is the POST body, the Fulfill or Reject is the 200 response body.

pub mod client;
pub mod server;

/// Content types we accept and send.
pub const OCTET_STREAM: &str = "application/octet-stream";
/// The alternative content type some implementations send.
pub const ILP_OCTET_STREAM: &str = "application/ilp+octet-stream";

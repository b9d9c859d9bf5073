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
use hyper::Request;
use hyper::body::Incoming;

/// Why an HTTP body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the limit given (declared or actual).
    #[error("body over {0} bytes")]
    TooLarge(usize),
    /// The connection failed while reading.
    #[error("could not read the body: {0}")]
    Unreadable(String),
}

/// Reads a request or response body, at most `limit` bytes. Every body the connector and the
/// worker read goes through here, so none is read without a bound.
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(BodyError::TooLarge(limit))
        }
        Err(err) => Err(BodyError::Unreadable(err.to_string())),
    }
}

/// Reads a request's body, at most `limit` bytes; a larger `Content-Length` is refused
/// before anything is read.
pub async fn read_request_body(
    request: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    read_body(request.into_body(), limit).await
}

/// `bytes` as a `BytesMut` for the codec, without a copy when nothing else holds them.
pub fn into_mut(bytes: Bytes) -> bytes::BytesMut {
    bytes
        .try_into_mut()
        .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]))
}

//! HTTP pieces both binaries use: the client every outgoing call goes through, bounded body
//! reads (whole, or a prefix), and the header parsers for bearer tokens and content types.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// `http://` and `https://` (rustls, [`crate::tls`]; HTTP/2 where the server offers it by
/// ALPN, else HTTP/1.1) with a keep-alive pool. The one client type of the project.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long a client keeps an idle connection: below the listeners' default header-read
/// timeout (30 s, which also closes idle connections), so a peer running our defaults never
/// closes a connection just as we send on it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A client with `TCP_NODELAY`, `connect_timeout`, [`IDLE_TIMEOUT`] and the process's TLS
/// settings; `pool` adjusts the pool (idle connections per host) where the defaults do not
/// fit.
pub fn http_client(
    connect_timeout: Duration,
    pool: impl FnOnce(
        &mut hyper_util::client::legacy::Builder,
    ) -> &mut hyper_util::client::legacy::Builder,
) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config((*crate::tls::client_config()).clone())
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(connector);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_idle_timeout(IDLE_TIMEOUT);
    pool(&mut builder).build(connector)
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case); `None` when
/// there is none, it is another scheme, or the token is empty.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let header = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether the request's `Content-Type`, parameters such as `charset` aside, is one of
/// `accepted` (any case). A request without one is accepted: senders often omit it.
pub fn content_type_is(headers: &HeaderMap, accepted: &[&str]) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return true;
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    accepted.iter().any(|a| essence.eq_ignore_ascii_case(a))
}

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

/// Up to `limit` bytes of `body`, cut rather than refused: what arrived before the limit, the
/// end or a failure. For bodies only shown to someone (an error's explanation).
pub async fn read_prefix<B>(mut body: B, limit: usize) -> Bytes
where
    B: hyper::body::Body + Unpin,
{
    use http_body_util::BodyExt;
    let mut prefix = bytes::BytesMut::new();
    while prefix.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = limit - prefix.len();
                    bytes::BufMut::put(&mut prefix, bytes::Buf::take(data, room));
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    prefix.freeze()
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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(name: hyper::header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            name,
            HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
        );
        headers
    }

    #[test]
    fn bearer_tokens_are_parsed_and_other_schemes_refused() {
        // Proves the scheme is matched in any case, the token trimmed, and anything else None.
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("BEARER x.y", Some("x.y")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer  ", None),
            ("abc", None),
        ] {
            assert_eq!(
                bearer_token(&headers(AUTHORIZATION, value)),
                token,
                "{value:?}"
            );
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn content_types_match_by_essence() {
        // Proves parameters and case do not matter, another type does, and none is accepted.
        let json = ["application/json"];
        assert!(content_type_is(
            &headers(CONTENT_TYPE, "application/json"),
            &json
        ));
        assert!(content_type_is(
            &headers(CONTENT_TYPE, "Application/JSON; charset=utf-8"),
            &json
        ));
        assert!(!content_type_is(
            &headers(CONTENT_TYPE, "text/plain"),
            &json
        ));
        assert!(!content_type_is(
            &headers(CONTENT_TYPE, "application/jsonx"),
            &json
        ));
        assert!(content_type_is(&HeaderMap::new(), &json));
    }
}

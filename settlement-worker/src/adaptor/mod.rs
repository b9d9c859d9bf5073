//! Ledger adaptors: how a settlement is paid on one kind of ledger. [`Adaptor`] is an enum
//! over the kinds, dispatched by `match` (no boxing, no trait objects).
//!
//! An adaptor call has three outcomes, and the caller (`poll`) acts on each:
//! `Ok(())` → the settlement is `confirmed`; [`AdaptorError::Transient`] (the outcome is
//! unknown or the ledger is busy: timeouts, 5xx, connection errors) → it stays `pending` and
//! is retried later *with the same idempotency key*; [`AdaptorError::Rejected`] (the ledger
//! definitely did not pay) → the amount goes back to the balance and it is `failed`.
//!
//! Options are validated once at start-up ([`Adaptor::from_options`]); unknown keys are refused.

pub mod claims;
pub mod rfc38;

use std::time::Duration;

use bytes::Bytes;
use schema::DbPool;
use schema::models::Account;
use schema::models::ledger::LedgerKind;
use schema::models::settlement::Settlement;
use serde_json::{Map, Value};

/// How long one ledger call (HTTP request and answer) may take before it counts as a
/// transient failure, unless `call_timeout_ms` says otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `call_timeout_ms`: a poll must finish within its lease.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a TCP connection to a ledger or peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer body read from an engine or peer, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most characters of a ledger's answer quoted in an error.
const MAX_QUOTED_CHARS: usize = 200;

/// Why a ledger call did not pay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdaptorError {
    /// No definite answer (timeout, connection error, 5xx, 408/409/425/429, a temporary ILP
    /// Reject): retry later with the same idempotency key, never refund.
    #[error("transient: {0}")]
    Transient(String),
    /// The ledger definitely did not pay (4xx, a final ILP Reject): refund.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// A ledger's options are unusable; the message names the option, never a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(pub String);

/// One configured ledger's adaptor.
#[derive(Debug, Clone)]
pub enum Adaptor {
    /// An external RFC 38 settlement engine over HTTP.
    Rfc38(rfc38::Rfc38Adaptor),
    /// Signed cumulative claims sent to the peer as `peer.settle` Prepares.
    Claims(claims::ClaimsAdaptor),
}

impl Adaptor {
    /// Builds the adaptor of the ledger `name` of `kind` from its options; errors name the
    /// option.
    pub fn from_options(
        kind: LedgerKind,
        name: &str,
        options: &Map<String, Value>,
    ) -> Result<Adaptor, OptionsError> {
        Ok(match kind {
            LedgerKind::Rfc38 => Adaptor::Rfc38(rfc38::Rfc38Adaptor::from_options(name, options)?),
            LedgerKind::Claims => {
                Adaptor::Claims(claims::ClaimsAdaptor::from_options(name, options)?)
            }
        })
    }

    /// The options connectors may read (`ledgers.options`): an rfc38 ledger's `engine_url`;
    /// never a token or a key.
    pub fn published_options(&self) -> Map<String, Value> {
        let mut options = Map::new();
        if let Adaptor::Rfc38(adaptor) = self {
            options.insert(
                "engine_url".to_owned(),
                Value::String(adaptor.engine_url().to_owned()),
            );
        }
        options
    }

    /// Whether settlements to `account` can be attempted at all; the reason when not (the
    /// account is then left over its threshold, not lowered, until its settings are fixed).
    pub fn ready_for(&self, account: &Account) -> Result<(), String> {
        match self {
            Adaptor::Rfc38(_) => Ok(()),
            Adaptor::Claims(adaptor) => adaptor.ready_for(account),
        }
    }

    /// Pays `settlement` to `account`, using the settlement id as idempotency key.
    pub async fn settle(
        &self,
        pool: &DbPool,
        account: &Account,
        settlement: &Settlement,
    ) -> Result<(), AdaptorError> {
        match self {
            Adaptor::Rfc38(adaptor) => adaptor.settle(pool, account, settlement).await,
            Adaptor::Claims(adaptor) => adaptor.settle(pool, account, settlement).await,
        }
    }
}

pub(crate) use runtime::http::HttpClient;

pub(crate) fn http_client() -> HttpClient {
    runtime::http::http_client(CONNECT_TIMEOUT, |pool| pool)
}

/// Reads an answer body up to [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, String> {
    runtime::http::read_body(body, MAX_RESPONSE_BYTES)
        .await
        .map_err(|err| format!("reading the answer: {err}"))
}

/// The start of `body` as text, for an error message.
pub(crate) fn quote(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(MAX_QUOTED_CHARS)
        .collect()
}

/// Refuses option keys outside `known`, naming the first unknown one.
pub(crate) fn check_known_keys(
    options: &Map<String, Value>,
    known: &[&str],
) -> Result<(), OptionsError> {
    match options.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(OptionsError(format!(
            "options.{key}: unknown option (known: {})",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// A string option; `None` when absent.
pub(crate) fn string_option(
    options: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, OptionsError> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(OptionsError(format!("options.{key}: must be a string"))),
    }
}

/// `call_timeout_ms` (an integer, or a string of one from the environment), within
/// 1..=[`MAX_CALL_TIMEOUT`]; [`DEFAULT_CALL_TIMEOUT`] when absent.
pub(crate) fn call_timeout(options: &Map<String, Value>) -> Result<Duration, OptionsError> {
    const KEY: &str = "call_timeout_ms";
    let millis = match options.get(KEY) {
        None => return Ok(DEFAULT_CALL_TIMEOUT),
        Some(Value::Number(number)) => number.as_u64(),
        Some(Value::String(text)) => text.parse::<u64>().ok(),
        Some(_) => None,
    };
    let max_ms = u64::try_from(MAX_CALL_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
    match millis {
        Some(ms) if (1..=max_ms).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(OptionsError(format!(
            "options.{KEY}: must be an integer from 1 to {max_ms}"
        ))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Options of string values, as a TOML table of strings gives them.
    pub(crate) fn options(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect()
    }

    // Proves call_timeout_ms accepts integers and numeric strings in range, and nothing else.
    #[test]
    fn call_timeout_is_bounded() {
        let of = |value: Value| {
            let mut options = Map::new();
            options.insert("call_timeout_ms".to_owned(), value);
            call_timeout(&options)
        };
        assert_eq!(call_timeout(&Map::new()), Ok(DEFAULT_CALL_TIMEOUT));
        assert_eq!(of(Value::from(250)), Ok(Duration::from_millis(250)));
        assert_eq!(of(Value::from("250")), Ok(Duration::from_millis(250)));
        for bad in [
            Value::from(0),
            Value::from(60_001),
            Value::from("x"),
            Value::Bool(true),
        ] {
            assert!(of(bad).is_err());
        }
    }
}

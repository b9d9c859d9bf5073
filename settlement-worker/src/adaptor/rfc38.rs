//! `rfc38`: pays through an external RFC 38 settlement engine over HTTP.
//!
//! Options: `engine_url` (required, `http://host:port[/prefix]`), `engine_token` (optional,
//! a secret: set it with `ILP_WORKER_LEDGERS__<NAME>__ENGINE_TOKEN`; sent as a bearer token),
//! `call_timeout_ms` (optional, default [`DEFAULT_CALL_TIMEOUT`]).
//!
//! The account lifecycle (RFC 38 "Setup an account"), made sure of at the start of every poll
//! ([`Rfc38Adaptor::sync_accounts`]): every live account settled through the ledger gets
//! `POST {engine}/accounts` with `{"id":"<account id>"}` (200, 201 and 409 all mean the engine
//! has it; remembered in `ledger_accounts`, so the SQL says which accounts the engine has),
//! and every account that was removed or left the ledger gets `DELETE {engine}/accounts/{id}`
//! (2xx or 404; its `ledger_accounts` row goes). A failure is retried on a later poll:
//! creations back off per account ([`ACCOUNT_BACKOFF`]), deletions are tried every poll.
//! After the worker starts, its first polls `POST` every live account of the ledger again,
//! page by page, whatever `ledger_accounts` says: an engine that lost its accounts (a
//! restart with an in-memory store) gets them back when the worker starts.
//! Each settlement makes sure of its account first as well. Then
//! `POST {engine}/accounts/{id}/settlements` with `Idempotency-Key: <settlement uuid>` and the
//! RFC 38 `Quantity` `{"amount":"<decimal>","scale":<account scale>}`. 2xx pays; 408, 409,
//! 425, 429, 5xx, connection errors and timeouts are transient (retried with the same key,
//! as RFC 38 requires); any other 4xx is a definite rejection.
//!
//! [`DEFAULT_CALL_TIMEOUT`]: super::DEFAULT_CALL_TIMEOUT

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use schema::DbPool;
use schema::models::Account;
use schema::models::ledger_account::{
    forget_ledger_account, ledger_account_exists, list_engine_accounts_gone,
    list_engine_accounts_missing, list_ledger_accounts_after, record_ledger_account,
};
use schema::models::settlement::Settlement;
use serde_json::{Map, Value};

use crate::backoff::Backoff;

use super::{
    AdaptorError, HttpClient, OptionsError, call_timeout, check_known_keys, http_client, quote,
    read_body, string_option,
};

/// Counter of engine account calls that took effect, by `ledger` and `outcome` (`created`,
/// `deleted`, `failed`).
pub const ENGINE_ACCOUNTS_TOTAL: &str = "ilp_engine_accounts_total";
/// Waits between attempts to create one account on an engine that keeps failing.
pub const ACCOUNT_BACKOFF: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
/// Most engine account creations (and, apart, deletions) per poll; the rest wait for the next.
pub const MAX_ACCOUNT_CALLS_PER_POLL: i64 = 100;

/// What one [`Rfc38Adaptor::sync_accounts`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountSync {
    /// Accounts created on the engine.
    pub created: u32,
    /// Accounts deleted from the engine.
    pub deleted: u32,
    /// Calls that failed; tried again on a later poll.
    pub failed: u32,
    /// Creations not tried this poll: the account's last ones failed and it backs off.
    pub backing_off: u32,
}

impl AccountSync {
    fn failed(&mut self, ledger: &str, account_id: i64, doing: &str, err: &AdaptorError) {
        self.failed += 1;
        metrics::counter!(ENGINE_ACCOUNTS_TOTAL, "ledger" => ledger.to_owned(), "outcome" => "failed")
            .increment(1);
        tracing::warn!(
            ledger.name = %ledger,
            account.id = account_id,
            error = %err,
            "{doing} the account on the settlement engine failed; tried again on the next poll"
        );
    }
}

/// The options an `rfc38` ledger takes.
pub const OPTIONS: &[&str] = &["engine_url", "engine_token", "call_timeout_ms"];

/// A client of one RFC 38 settlement engine.
#[derive(Clone)]
pub struct Rfc38Adaptor {
    ledger: String,
    /// `engine_url` without a trailing `/`.
    engine_url: String,
    /// `Bearer <engine_token>`, when set.
    authorization: Option<String>,
    timeout: Duration,
    client: HttpClient,
    /// While this process has not yet confirmed every account on the engine: the last id
    /// confirmed (`i64::MIN` at start); `None` once done.
    confirming: Arc<Mutex<Option<i64>>>,
    /// Accounts whose creation failed: failures in a row, and when to try again.
    creation_failures: Arc<Mutex<HashMap<i64, (u32, Instant)>>>,
}

impl std::fmt::Debug for Rfc38Adaptor {
    // The token is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc38Adaptor")
            .field("ledger", &self.ledger)
            .field("engine_url", &self.engine_url)
            .field(
                "engine_token",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Rfc38Adaptor {
    /// Validates `options` (see the module docs).
    pub fn from_options(ledger: &str, options: &Map<String, Value>) -> Result<Self, OptionsError> {
        check_known_keys(options, OPTIONS)?;
        let Some(engine_url) = string_option(options, "engine_url")? else {
            return Err(OptionsError(
                "options.engine_url: required for an rfc38 ledger".to_owned(),
            ));
        };
        let engine_url = engine_url.trim_end_matches('/').to_owned();
        let uri: Uri = engine_url
            .parse()
            .map_err(|err| OptionsError(format!("options.engine_url: {err}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(OptionsError(
                "options.engine_url: must be http:// or https://host:port[/path]".to_owned(),
            ));
        }
        let authorization = match string_option(options, "engine_token")? {
            Some(token) if token.is_empty() => {
                return Err(OptionsError("options.engine_token: is empty".to_owned()));
            }
            Some(token) => Some(format!("Bearer {token}")),
            None => None,
        };
        Ok(Rfc38Adaptor {
            ledger: ledger.to_owned(),
            engine_url,
            authorization,
            timeout: call_timeout(options)?,
            client: http_client(),
            confirming: Arc::new(Mutex::new(Some(i64::MIN))),
            creation_failures: Arc::default(),
        })
    }

    /// The engine's base URL (published in `ledgers.options.engine_url`).
    pub fn engine_url(&self) -> &str {
        &self.engine_url
    }

    /// Creates the account on the engine once, then asks it to settle.
    pub async fn settle(
        &self,
        pool: &DbPool,
        account: &Account,
        settlement: &Settlement,
    ) -> Result<(), AdaptorError> {
        self.ensure_engine_account(pool, account.id).await?;
        let scale = u8::try_from(account.asset_scale).map_err(|_| {
            AdaptorError::Rejected(format!(
                "asset scale {} is not 0..=255",
                account.asset_scale
            ))
        })?;
        let body = serde_json::json!({
            "amount": settlement.amount.to_string(),
            "scale": scale,
        });
        let path = format!("/accounts/{}/settlements", account.id);
        let key = settlement.id.to_string();
        let (status, answer) = self.post(&path, Some(&key), body).await?;
        classify(status, &answer)
    }

    /// Creates the account on the engine unless `ledger_accounts` says it has it.
    async fn ensure_engine_account(
        &self,
        pool: &DbPool,
        account_id: i64,
    ) -> Result<(), AdaptorError> {
        let db = |err: schema::DbError| AdaptorError::Transient(format!("database: {err}"));
        let known = {
            let mut conn = pool.get().await.map_err(|err| db(err.into()))?;
            ledger_account_exists(&mut conn, &self.ledger, account_id)
                .await
                .map_err(db)?
        };
        if known {
            return Ok(());
        }
        self.create_engine_account(pool, account_id).await
    }

    /// `POST /accounts` for `account_id`, then remembers it in `ledger_accounts`.
    async fn create_engine_account(
        &self,
        pool: &DbPool,
        account_id: i64,
    ) -> Result<(), AdaptorError> {
        let db = |err: schema::DbError| AdaptorError::Transient(format!("database: {err}"));
        let body = serde_json::json!({ "id": account_id.to_string() });
        let (status, answer) = self.post("/accounts", None, body).await?;
        if status != StatusCode::CONFLICT {
            classify(status, &answer)
                .map_err(|err| prefix(err, "creating the account on the engine"))?;
        }
        let mut conn = pool.get().await.map_err(|err| db(err.into()))?;
        record_ledger_account(&mut conn, &self.ledger, account_id)
            .await
            .map_err(db)
    }

    /// Makes the engine's accounts match the ledger's: creates the missing, deletes the gone
    /// (see the module docs). One account's failure does not stop the others; each is
    /// counted in [`ENGINE_ACCOUNTS_TOTAL`] and tried again on the next poll.
    pub async fn sync_accounts(&self, pool: &DbPool) -> Result<AccountSync, schema::DbError> {
        let mut sync = AccountSync::default();
        let (missing, gone) = {
            let mut conn = pool.get().await?;
            (
                list_engine_accounts_missing(&mut conn, &self.ledger, MAX_ACCOUNT_CALLS_PER_POLL)
                    .await?,
                list_engine_accounts_gone(&mut conn, &self.ledger, MAX_ACCOUNT_CALLS_PER_POLL)
                    .await?,
            )
        };
        for &account_id in &missing {
            self.try_create(pool, account_id, &mut sync).await;
        }
        self.confirm_accounts_after_start(pool, &missing, &mut sync)
            .await?;
        for account_id in gone {
            match self.delete_engine_account(pool, account_id).await {
                Ok(()) => sync.deleted += 1,
                Err(err) => sync.failed(&self.ledger, account_id, "deleting", &err),
            }
        }
        for (outcome, n) in [("created", sync.created), ("deleted", sync.deleted)] {
            metrics::counter!(ENGINE_ACCOUNTS_TOTAL, "ledger" => self.ledger.clone(), "outcome" => outcome)
                .increment(u64::from(n));
        }
        Ok(sync)
    }

    /// Creates `account_id` on the engine unless it backs off after earlier failures
    /// ([`ACCOUNT_BACKOFF`]); counts the outcome in `sync`. True when the engine has it now.
    async fn try_create(&self, pool: &DbPool, account_id: i64, sync: &mut AccountSync) -> bool {
        let now = Instant::now();
        let failures = || {
            self.creation_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if failures()
            .get(&account_id)
            .is_some_and(|&(_, next)| next > now)
        {
            sync.backing_off += 1;
            return false;
        }
        match self.create_engine_account(pool, account_id).await {
            Ok(()) => {
                sync.created += 1;
                failures().remove(&account_id);
                true
            }
            Err(err) => {
                sync.failed(&self.ledger, account_id, "creating", &err);
                let mut failures = failures();
                let (count, next) = failures.entry(account_id).or_insert((0, now));
                *next = now + ACCOUNT_BACKOFF.wait(*count);
                *count += 1;
                false
            }
        }
    }

    /// One page of the start-up confirmation (see the module docs), skipping the accounts
    /// this poll's missing pass already had (`done`). An account the engine did not take
    /// loses its `ledger_accounts` row, so a later poll creates it again.
    async fn confirm_accounts_after_start(
        &self,
        pool: &DbPool,
        done: &[i64],
        sync: &mut AccountSync,
    ) -> Result<(), schema::DbError> {
        let after = *self.confirming.lock().unwrap_or_else(|e| e.into_inner());
        let Some(after) = after else {
            return Ok(());
        };
        let page = {
            let mut conn = pool.get().await?;
            list_ledger_accounts_after(&mut conn, &self.ledger, after, MAX_ACCOUNT_CALLS_PER_POLL)
                .await?
        };
        for &account_id in page.iter().filter(|id| !done.contains(id)) {
            if !self.try_create(pool, account_id, sync).await {
                let mut conn = pool.get().await?;
                forget_ledger_account(&mut conn, &self.ledger, account_id).await?;
            }
        }
        let next = match page.last() {
            Some(&last) if page.len() as i64 == MAX_ACCOUNT_CALLS_PER_POLL => Some(last),
            _ => None,
        };
        *self.confirming.lock().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    async fn delete_engine_account(
        &self,
        pool: &DbPool,
        account_id: i64,
    ) -> Result<(), AdaptorError> {
        let db = |err: schema::DbError| AdaptorError::Transient(format!("database: {err}"));
        let path = format!("/accounts/{account_id}");
        let (status, answer) = self.call(Method::DELETE, &path, None, None).await?;
        // 404: the engine never had it, or forgot it already.
        if status != StatusCode::NOT_FOUND {
            classify(status, &answer)?;
        }
        let mut conn = pool.get().await.map_err(|err| db(err.into()))?;
        forget_ledger_account(&mut conn, &self.ledger, account_id)
            .await
            .map_err(db)
    }

    /// POSTs JSON to `{engine}{path}` within the call timeout; the status and body.
    async fn post(
        &self,
        path: &str,
        idempotency_key: Option<&str>,
        body: Value,
    ) -> Result<(StatusCode, Bytes), AdaptorError> {
        self.call(Method::POST, path, idempotency_key, Some(body))
            .await
    }

    /// Sends `method` (with a JSON body, when given) to `{engine}{path}` within the call
    /// timeout; the status and body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Bytes), AdaptorError> {
        let url = format!("{}{path}", self.engine_url);
        let mut request = Request::builder().method(method).uri(&url);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let body = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
        let request = request.body(Full::new(body)).map_err(|err| {
            AdaptorError::Rejected(format!("cannot build a request to {url}: {err}"))
        })?;
        let call = async {
            let response = self.client.request(request).await.map_err(|err| {
                AdaptorError::Transient(format!("{url}: {}", schema::error::with_causes(&err)))
            })?;
            let status = response.status();
            let answer = read_body(response.into_body())
                .await
                .map_err(|err| AdaptorError::Transient(format!("{url}: {err}")))?;
            Ok((status, answer))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(AdaptorError::Transient(format!(
                "{url}: no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// RFC 38 status rules: 2xx pays; 408, 409, 425, 429 and 5xx are worth retrying with the same
/// key; other 4xx are definite.
fn classify(status: StatusCode, answer: &[u8]) -> Result<(), AdaptorError> {
    if status.is_success() {
        return Ok(());
    }
    let message = format!("engine answered HTTP {status}: {}", quote(answer));
    let retryable = matches!(status.as_u16(), 408 | 409 | 425 | 429);
    if status.is_client_error() && !retryable {
        Err(AdaptorError::Rejected(message))
    } else {
        Err(AdaptorError::Transient(message))
    }
}

fn prefix(err: AdaptorError, context: &str) -> AdaptorError {
    match err {
        AdaptorError::Transient(message) => {
            AdaptorError::Transient(format!("{context}: {message}"))
        }
        AdaptorError::Rejected(message) => AdaptorError::Rejected(format!("{context}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptor::tests::options;

    // Proves the status rules: 2xx pays, retryable statuses and 5xx are transient, other 4xx definite.
    #[test]
    fn statuses_are_classified() {
        for ok in [200, 201, 204] {
            assert_eq!(classify(StatusCode::from_u16(ok).unwrap(), b""), Ok(()));
        }
        for transient in [408, 409, 425, 429, 500, 502, 503, 302] {
            let result = classify(StatusCode::from_u16(transient).unwrap(), b"x");
            assert!(
                matches!(result, Err(AdaptorError::Transient(_))),
                "{transient}"
            );
        }
        for rejected in [400, 401, 403, 404, 422] {
            let result = classify(StatusCode::from_u16(rejected).unwrap(), b"x");
            assert!(
                matches!(result, Err(AdaptorError::Rejected(_))),
                "{rejected}"
            );
        }
    }

    // Proves engine_url is required and must be plain http; tokens stay out of Debug.
    #[test]
    fn options_are_validated() {
        let err = Rfc38Adaptor::from_options("usd", &Map::new()).unwrap_err();
        assert!(err.0.contains("engine_url"), "{err}");
        let err =
            Rfc38Adaptor::from_options("usd", &options(&[("engine_url", "ftp://x")])).unwrap_err();
        assert!(err.0.contains("engine_url"), "{err}");
        let err = Rfc38Adaptor::from_options(
            "usd",
            &options(&[("engine_url", "http://e:1"), ("engine_tokn", "x")]),
        )
        .unwrap_err();
        assert!(err.0.contains("engine_tokn"), "{err}");
        let adaptor = Rfc38Adaptor::from_options(
            "usd",
            &options(&[
                ("engine_url", "http://127.0.0.1:3000/"),
                ("engine_token", "s3cret"),
            ]),
        )
        .unwrap();
        assert_eq!(adaptor.engine_url(), "http://127.0.0.1:3000");
        assert!(!format!("{adaptor:?}").contains("s3cret"));
    }
}

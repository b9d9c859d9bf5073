//! `PeerSettleService`: answers `peer.settle` Prepares here, by the sending account's
//! ledger, and never forwards them (RFC 38: "the peer connector MUST NOT forward").
//!
//! | sender's ledger | what happens | answer |
//! |---|---|---|
//! | none | nothing | F02 |
//! | `claims` | shape checked, a `settlement_claims` row written for the worker | Fulfill (empty data); bad shape → F00, database down → T00 |
//! | `rfc38` | data POSTed to `{engine_url}/accounts/{id}/messages`, bounded by the expiry | Fulfill with the engine's reply body; engine error, timeout or no connection → T00/T01 |
//!
//! Every Fulfill carries the peer-protocol fulfillment (32 zero bytes). The condition may
//! be either SHA-256 of that fulfillment (what Interledger.rs sends, and what matches) or
//! SHA-256 of the empty string (what RFC 38's text prints, which no fulfillment matches):
//! the answer is made here, so no fulfillment check downstream sees it, and a peer that
//! followed the RFC's text to the letter would otherwise never get a message through.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use schema::DbError;
use schema::DbPool;
use schema::models::ledger::LedgerKind;

use crate::accounts::{AccountInfo, LedgerInfo, SharedDirectory};
use crate::packet::ildcp::{PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};
use crate::packet::{Address, AddressRef, CONDITION_BYTES, ErrorCode, FulfillBuilder, Prepare};
use crate::service::{IlpResult, IncomingRequest, IncomingService, reject, time_left};

use super::claim::{ReceivedClaim, parse_claim};
use super::engine::{ENGINE_MESSAGE_TIMEOUT, EngineError, SettlementEngine};

/// Destination of settlement messages between peers.
pub const PEER_SETTLE_DESTINATION: AddressRef<'static> = match AddressRef::new("peer.settle") {
    Ok(address) => address,
    Err(_) => panic!("peer.settle is a valid ILP address"),
};

/// SHA-256 of the empty string (`e3b0c442…b855`): the `peer.settle` condition printed in
/// RFC 38, accepted next to [`PEER_PROTOCOL_CONDITION`].
pub const RFC38_PRINTED_CONDITION: [u8; CONDITION_BYTES] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Where received claims are written for the settlement worker.
pub trait ClaimStore: Send + Sync + 'static {
    /// Stores `claim` from `account_id`; returns the new row's id.
    fn insert_claim(
        &self,
        account_id: i64,
        claim: &ReceivedClaim,
    ) -> impl Future<Output = Result<i64, DbError>> + Send;
}

/// [`ClaimStore`] on the `settlement_claims` table.
#[derive(Clone)]
pub struct PgClaimStore {
    pool: DbPool,
}

impl std::fmt::Debug for PgClaimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgClaimStore").finish_non_exhaustive()
    }
}

impl PgClaimStore {
    /// Writes claims through `pool`.
    pub fn new(pool: DbPool) -> Self {
        PgClaimStore { pool }
    }
}

impl ClaimStore for PgClaimStore {
    async fn insert_claim(&self, account_id: i64, claim: &ReceivedClaim) -> Result<i64, DbError> {
        let mut conn = self.pool.get().await?;
        let row = schema::models::claim::NewClaim {
            account_id,
            cumulative_amount: claim.cumulative_amount,
            signed_payload: &claim.signed_payload,
            signature: &claim.signature,
        };
        schema::models::claim::insert_claim(&mut conn, &row).await
    }
}

/// Takes `peer.settle` Prepares; hands everything else to `next`.
#[derive(Debug)]
pub struct PeerSettleService<C, E, S> {
    node: Arc<Address>,
    directory: Arc<SharedDirectory>,
    claims: C,
    engine: E,
    next: S,
}

impl<C, E, S> PeerSettleService<C, E, S> {
    /// Answers `peer.settle` with `claims` (ledger kind `claims`) or `engine` (kind
    /// `rfc38`), looking ledgers up in `directory`; the rest goes to `next`.
    pub fn new(
        node: Arc<Address>,
        directory: Arc<SharedDirectory>,
        claims: C,
        engine: E,
        next: S,
    ) -> Self {
        PeerSettleService {
            node,
            directory,
            claims,
            engine,
            next,
        }
    }
}

impl<C: ClaimStore, E: SettlementEngine, S: IncomingService> IncomingService
    for PeerSettleService<C, E, S>
{
    async fn handle_request(&self, request: IncomingRequest) -> IlpResult {
        if request.prepare.destination() != PEER_SETTLE_DESTINATION {
            return self.next.handle_request(request).await;
        }
        let IncomingRequest { from, prepare } = request;
        let bad_request = |why: &str| {
            Err(reject(
                &self.node,
                ErrorCode::F00_BAD_REQUEST,
                &format!("peer.settle: {why}"),
                &[],
            ))
        };
        let condition = prepare.execution_condition();
        if *condition != PEER_PROTOCOL_CONDITION && *condition != RFC38_PRINTED_CONDITION {
            return bad_request("the condition must be the peer-protocol condition");
        }
        if prepare.amount() != 0 {
            return bad_request("the amount must be 0 (settlement messages carry no money)");
        }
        let Some(ledger_name) = &from.ledger else {
            return Err(reject(
                &self.node,
                ErrorCode::F02_UNREACHABLE,
                &format!(
                    "peer.settle: no settlement ledger is configured for account {}",
                    from.username
                ),
                &[],
            ));
        };
        let directory = self.directory.current();
        let Some(ledger) = directory.ledger(ledger_name) else {
            // Configuration in flux (the worker registers its ledgers when it starts):
            // temporary, so the peer retries.
            return Err(reject(
                &self.node,
                ErrorCode::T00_INTERNAL_ERROR,
                &format!("peer.settle: ledger {ledger_name} is not registered yet"),
                &[],
            ));
        };
        match ledger.kind {
            LedgerKind::Claims => self.record_claim(&from, &prepare).await,
            LedgerKind::Rfc38 => self.relay_to_engine(&from, ledger, prepare).await,
        }
    }
}

impl<C: ClaimStore, E: SettlementEngine, S> PeerSettleService<C, E, S> {
    async fn record_claim(&self, from: &AccountInfo, prepare: &Prepare) -> IlpResult {
        let claim = parse_claim(prepare.data(), &from.asset_code, from.asset_scale).map_err(
            |err| {
                tracing::info!(from.account = %from.username, error = %err, "peer.settle claim refused");
                reject(
                    &self.node,
                    ErrorCode::F00_BAD_REQUEST,
                    &format!("peer.settle: {err}"),
                    &[],
                )
            },
        )?;
        match self.claims.insert_claim(from.id, &claim).await {
            Ok(id) => {
                tracing::info!(
                    from.account = %from.username,
                    claim.id = id,
                    claim.cumulative_amount = claim.cumulative_amount,
                    "settlement claim received"
                );
                self.fulfill(&[])
            }
            Err(err) => {
                tracing::warn!(from.account = %from.username, error = %err, "cannot store a settlement claim");
                Err(reject(
                    &self.node,
                    ErrorCode::T00_INTERNAL_ERROR,
                    "peer.settle: the claim could not be stored; try again",
                    &[],
                ))
            }
        }
    }

    async fn relay_to_engine(
        &self,
        from: &AccountInfo,
        ledger: &LedgerInfo,
        prepare: Prepare,
    ) -> IlpResult {
        let Some(engine_url) = &ledger.engine_url else {
            return Err(reject(
                &self.node,
                ErrorCode::T00_INTERNAL_ERROR,
                &format!(
                    "peer.settle: ledger {} has no usable engine_url option",
                    ledger.name
                ),
                &[],
            ));
        };
        let timeout =
            time_left(prepare.expires_at(), SystemTime::now()).min(ENGINE_MESSAGE_TIMEOUT);
        let message = Bytes::from(prepare.into_data());
        match self
            .engine
            .send_message(engine_url, from.id, message, timeout)
            .await
        {
            Ok(reply) => self.fulfill(&reply),
            Err(err) => {
                tracing::warn!(
                    from.account = %from.username,
                    ledger.name = %ledger.name,
                    error = %err,
                    "settlement engine gave no reply to a peer.settle message"
                );
                let code = match err {
                    EngineError::Unreachable(_) | EngineError::BadUrl(_) => {
                        ErrorCode::T01_PEER_UNREACHABLE
                    }
                    EngineError::Timeout(_)
                    | EngineError::Status { .. }
                    | EngineError::TooLarge => ErrorCode::T00_INTERNAL_ERROR,
                };
                // The engine's error body, for the peer's engine to read.
                let data = match &err {
                    EngineError::Status { body, .. } => &body[..],
                    _ => &[],
                };
                Err(reject(
                    &self.node,
                    code,
                    &format!("peer.settle: settlement engine: {err}"),
                    data,
                ))
            }
        }
    }

    fn fulfill(&self, data: &[u8]) -> IlpResult {
        FulfillBuilder {
            fulfillment: &PEER_PROTOCOL_FULFILLMENT,
            data,
        }
        .build()
        .map_err(|err| {
            reject(
                &self.node,
                ErrorCode::T00_INTERNAL_ERROR,
                &format!("peer.settle: cannot build the Fulfill: {err}"),
                &[],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use schema::LedgerKind;
    use schema::models::ledger::LedgerOptions;

    use crate::accounts::Directory;
    use crate::packet::PrepareBuilder;
    use crate::service::testing::*;

    /// Claims written, or a database that is down.
    #[derive(Default)]
    struct FakeClaims {
        rows: Mutex<Vec<(i64, ReceivedClaim)>>,
        down: bool,
    }

    impl ClaimStore for Arc<FakeClaims> {
        async fn insert_claim(
            &self,
            account_id: i64,
            claim: &ReceivedClaim,
        ) -> Result<i64, DbError> {
            if self.down {
                return Err(DbError::Unavailable("connection refused".into()));
            }
            let mut rows = self.rows.lock().unwrap();
            rows.push((account_id, claim.clone()));
            Ok(rows.len() as i64)
        }
    }

    /// An engine that records messages and answers as told.
    struct FakeEngine {
        seen: Mutex<Vec<(String, i64, Bytes)>>,
        answer: Result<Bytes, EngineError>,
    }

    impl FakeEngine {
        fn new(answer: Result<Bytes, EngineError>) -> Arc<Self> {
            Arc::new(FakeEngine {
                seen: Mutex::new(Vec::new()),
                answer,
            })
        }
    }

    impl SettlementEngine for Arc<FakeEngine> {
        async fn send_message(
            &self,
            engine_url: &str,
            account_id: i64,
            message: Bytes,
            _timeout: Duration,
        ) -> Result<Bytes, EngineError> {
            self.seen
                .lock()
                .unwrap()
                .push((engine_url.to_owned(), account_id, message));
            self.answer.clone()
        }
    }

    fn directory() -> Arc<SharedDirectory> {
        let ledgers = [
            LedgerOptions {
                name: "chan".into(),
                kind: LedgerKind::Claims,
                options: serde_json::json!({}),
            },
            LedgerOptions {
                name: "eng".into(),
                kind: LedgerKind::Rfc38,
                options: serde_json::json!({"engine_url": "http://127.0.0.1:3000/"}),
            },
        ];
        Arc::new(SharedDirectory::new(Directory::build(
            &node(),
            &[],
            &[],
            &ledgers,
        )))
    }

    fn account_on(id: i64, ledger: Option<&str>) -> Arc<AccountInfo> {
        let mut info = (*account(id, "peer")).clone();
        info.ledger = ledger.map(str::to_owned);
        Arc::new(info)
    }

    fn settle(condition: &[u8; 32], amount: u64, data: &[u8]) -> Prepare {
        PrepareBuilder {
            amount,
            expires_at: SystemTime::now() + Duration::from_secs(30),
            execution_condition: condition,
            destination: PEER_SETTLE_DESTINATION,
            data,
        }
        .build()
        .unwrap()
    }

    fn claim_message(claim_hex: &str, signature_hex: &str) -> Vec<u8> {
        format!(r#"{{"claim":"{claim_hex}","signature":"{signature_hex}"}}"#).into_bytes()
    }

    fn payload(code: &str, scale: u8) -> String {
        hex::encode(format!(
            r#"{{"version":1,"payer":"test.peer","payee":"test.node","asset_code":"{code}","asset_scale":{scale},"cumulative_amount":"250"}}"#
        ))
    }

    type Service<F> = PeerSettleService<Arc<FakeClaims>, Arc<FakeEngine>, Arc<Recorder<F>>>;

    fn service<F: Fn() -> IlpResult + Send + Sync + 'static>(
        claims: Arc<FakeClaims>,
        engine: Arc<FakeEngine>,
        next: Arc<Recorder<F>>,
    ) -> Service<F> {
        PeerSettleService::new(Arc::new(node()), directory(), claims, engine, next)
    }

    async fn send<F: Fn() -> IlpResult + Send + Sync + 'static>(
        service: &Service<F>,
        from: Arc<AccountInfo>,
        prepare: Prepare,
    ) -> IlpResult {
        service
            .handle_request(IncomingRequest { from, prepare })
            .await
    }

    #[test]
    fn the_condition_rfc38_prints_is_sha256_of_the_empty_string() {
        // Proves the second accepted condition is exactly e3b0c442…b855, and differs from ours.
        use sha2::{Digest, Sha256};
        assert_eq!(
            RFC38_PRINTED_CONDITION,
            <[u8; 32]>::from(Sha256::digest(b""))
        );
        assert_ne!(RFC38_PRINTED_CONDITION, PEER_PROTOCOL_CONDITION);
    }

    #[tokio::test]
    async fn a_well_formed_claim_is_stored_and_fulfilled_with_the_zero_fulfillment() {
        // Proves a claim from an account on a claims ledger becomes one row and a Fulfill.
        let claims = Arc::new(FakeClaims::default());
        let next = Recorder::new(|| Ok(fulfill()));
        let service = service(
            claims.clone(),
            FakeEngine::new(Ok(Bytes::new())),
            next.clone(),
        );
        let data = claim_message(&payload("USD", 2), &hex::encode([5u8; 64]));
        let fulfill = send(
            &service,
            account_on(4, Some("chan")),
            settle(&PEER_PROTOCOL_CONDITION, 0, &data),
        )
        .await
        .unwrap();
        assert_eq!(*fulfill.fulfillment(), PEER_PROTOCOL_FULFILLMENT);
        assert!(fulfill.matches_condition(&PEER_PROTOCOL_CONDITION));
        let rows = claims.rows.lock().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].0, rows[0].1.cumulative_amount), (4, 250));
        assert_eq!(rows[0].1.signature, [5; 64]);
        assert_eq!(next.count(), 0);
    }

    #[tokio::test]
    async fn malformed_claims_are_refused_with_f00_and_nothing_is_written() {
        // Proves bad hex, a short signature, an asset mismatch and non-JSON are each F00, no row.
        let claims = Arc::new(FakeClaims::default());
        let next = Recorder::new(|| Ok(fulfill()));
        let service = service(
            claims.clone(),
            FakeEngine::new(Ok(Bytes::new())),
            next.clone(),
        );
        let good_signature = hex::encode([5u8; 64]);
        let cases = [
            ("bad hex", claim_message("zz", &good_signature), "not hex"),
            (
                "short signature",
                claim_message(&payload("USD", 2), &hex::encode([5u8; 63])),
                "63 bytes",
            ),
            (
                "other asset code",
                claim_message(&payload("EUR", 2), &good_signature),
                "EUR",
            ),
            (
                "other asset scale",
                claim_message(&payload("USD", 9), &good_signature),
                "scale 9",
            ),
            ("not JSON", b"claim please".to_vec(), "not JSON"),
        ];
        for (case, data, reason) in cases {
            let reject = send(
                &service,
                account_on(4, Some("chan")),
                settle(&PEER_PROTOCOL_CONDITION, 0, &data),
            )
            .await
            .unwrap_err();
            assert_eq!(reject.code(), ErrorCode::F00_BAD_REQUEST, "{case}");
            assert!(
                reject.message_str().contains(reason),
                "{case}: {:?}",
                reject.message_str()
            );
            assert_eq!(reject.triggered_by().unwrap().as_str(), "test.node");
        }
        assert!(claims.rows.lock().unwrap().is_empty());
        assert_eq!(next.count(), 0);
    }

    #[tokio::test]
    async fn an_account_without_a_ledger_gets_a_reject_and_nothing_is_written() {
        // Proves peer.settle from an account no ledger settles is refused, not stored, not routed.
        let claims = Arc::new(FakeClaims::default());
        let engine = FakeEngine::new(Ok(Bytes::new()));
        let next = Recorder::new(|| Ok(fulfill()));
        let service = service(claims.clone(), engine.clone(), next.clone());
        let data = claim_message(&payload("USD", 2), &hex::encode([5u8; 64]));
        let reject = send(
            &service,
            account_on(4, None),
            settle(&PEER_PROTOCOL_CONDITION, 0, &data),
        )
        .await
        .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::F02_UNREACHABLE);
        assert!(reject.message_str().contains("no settlement ledger"));
        assert!(claims.rows.lock().unwrap().is_empty());
        assert!(engine.seen.lock().unwrap().is_empty());
        assert_eq!(next.count(), 0);
    }

    #[tokio::test]
    async fn peer_settle_is_never_forwarded_whatever_goes_wrong() {
        // Proves every peer.settle outcome is answered here; only other destinations reach `next`.
        let claims = Arc::new(FakeClaims {
            down: true,
            ..FakeClaims::default()
        });
        let next = Recorder::new(|| Ok(fulfill()));
        let service = service(
            claims,
            FakeEngine::new(Err(EngineError::Status {
                status: hyper::StatusCode::BAD_GATEWAY,
                body: Bytes::new(),
            })),
            next.clone(),
        );
        let data = claim_message(&payload("USD", 2), &hex::encode([5u8; 64]));
        let cases = [
            (
                "no ledger",
                None,
                PEER_PROTOCOL_CONDITION,
                0,
                ErrorCode::F02_UNREACHABLE,
            ),
            (
                "unknown ledger",
                Some("gone"),
                PEER_PROTOCOL_CONDITION,
                0,
                ErrorCode::T00_INTERNAL_ERROR,
            ),
            (
                "wrong condition",
                Some("chan"),
                condition(),
                0,
                ErrorCode::F00_BAD_REQUEST,
            ),
            (
                "with money",
                Some("chan"),
                PEER_PROTOCOL_CONDITION,
                5,
                ErrorCode::F00_BAD_REQUEST,
            ),
            (
                "database down",
                Some("chan"),
                PEER_PROTOCOL_CONDITION,
                0,
                ErrorCode::T00_INTERNAL_ERROR,
            ),
            (
                "engine fails",
                Some("eng"),
                PEER_PROTOCOL_CONDITION,
                0,
                ErrorCode::T00_INTERNAL_ERROR,
            ),
        ];
        for (case, ledger, condition, amount, code) in cases {
            let reject = send(
                &service,
                account_on(4, ledger),
                settle(&condition, amount, &data),
            )
            .await
            .unwrap_err();
            assert_eq!(reject.code(), code, "{case}: {:?}", reject.message_str());
        }
        assert_eq!(next.count(), 0);
        send(
            &service,
            account_on(4, Some("chan")),
            prepare("test.settle", 1, Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(next.count(), 1);
    }

    #[tokio::test]
    async fn an_rfc38_message_goes_to_the_engine_and_its_reply_is_the_fulfill_data() {
        // Proves the data reaches {engine_url}/accounts/{id}/messages and the reply comes back,
        // under either peer.settle condition (the matching one, or the one RFC 38 prints).
        let engine = FakeEngine::new(Ok(Bytes::from_static(b"{\"reply\":1}")));
        let next = Recorder::new(|| Ok(fulfill()));
        let service = service(
            Arc::new(FakeClaims::default()),
            engine.clone(),
            next.clone(),
        );
        for condition in [PEER_PROTOCOL_CONDITION, RFC38_PRINTED_CONDITION] {
            let fulfill = send(
                &service,
                account_on(9, Some("eng")),
                settle(&condition, 0, b"hello engine"),
            )
            .await
            .unwrap();
            assert_eq!(fulfill.data(), b"{\"reply\":1}");
            assert_eq!(*fulfill.fulfillment(), PEER_PROTOCOL_FULFILLMENT);
        }
        let seen = engine.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, "http://127.0.0.1:3000");
        assert_eq!(seen[0].1, 9);
        assert_eq!(&seen[0].2[..], b"hello engine");
        assert_eq!(next.count(), 0);
    }

    #[tokio::test]
    async fn an_engine_failure_is_a_reject_from_us_never_an_empty_fulfill() {
        // Proves unreachable → T01 and timeout/error status → T00, each triggered by our address.
        let cases = [
            (
                EngineError::Unreachable("refused".into()),
                ErrorCode::T01_PEER_UNREACHABLE,
            ),
            (
                EngineError::Timeout(Duration::from_secs(1)),
                ErrorCode::T00_INTERNAL_ERROR,
            ),
            (
                EngineError::Status {
                    status: hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    body: Bytes::new(),
                },
                ErrorCode::T00_INTERNAL_ERROR,
            ),
            (EngineError::TooLarge, ErrorCode::T00_INTERNAL_ERROR),
        ];
        for (error, code) in cases {
            let next = Recorder::new(|| Ok(fulfill()));
            let service = service(
                Arc::new(FakeClaims::default()),
                FakeEngine::new(Err(error.clone())),
                next,
            );
            let reject = send(
                &service,
                account_on(9, Some("eng")),
                settle(&PEER_PROTOCOL_CONDITION, 0, b"m"),
            )
            .await
            .unwrap_err();
            assert_eq!(reject.code(), code, "{error}");
            assert_eq!(reject.triggered_by().unwrap().as_str(), "test.node");
        }
    }

    #[tokio::test]
    async fn an_engine_error_body_goes_back_in_the_reject_data() {
        // Proves the peer's engine learns why ours refused its message: the body is the data.
        let body = Bytes::from_static(br#"{"error":"unknown account"}"#);
        let service = service(
            Arc::new(FakeClaims::default()),
            FakeEngine::new(Err(EngineError::Status {
                status: hyper::StatusCode::NOT_FOUND,
                body: body.clone(),
            })),
            Recorder::new(|| Ok(fulfill())),
        );
        let reject = send(
            &service,
            account_on(9, Some("eng")),
            settle(&PEER_PROTOCOL_CONDITION, 0, b"m"),
        )
        .await
        .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::T00_INTERNAL_ERROR);
        assert_eq!(reject.data(), &body[..]);
    }

    #[tokio::test]
    async fn an_rfc38_ledger_without_an_engine_url_is_a_temporary_reject() {
        // Proves a ledger whose options lack engine_url answers T00 and calls nothing.
        let ledgers = [LedgerOptions {
            name: "eng".into(),
            kind: LedgerKind::Rfc38,
            options: serde_json::json!({}),
        }];
        let engine = FakeEngine::new(Ok(Bytes::new()));
        let service = PeerSettleService::new(
            Arc::new(node()),
            Arc::new(SharedDirectory::new(Directory::build(
                &node(),
                &[],
                &[],
                &ledgers,
            ))),
            Arc::new(FakeClaims::default()),
            engine.clone(),
            Recorder::new(|| Ok(fulfill())),
        );
        let reject = service
            .handle_request(IncomingRequest {
                from: account_on(9, Some("eng")),
                prepare: settle(&PEER_PROTOCOL_CONDITION, 0, b"m"),
            })
            .await
            .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::T00_INTERNAL_ERROR);
        assert!(reject.message_str().contains("engine_url"));
        assert!(engine.seen.lock().unwrap().is_empty());
    }
}

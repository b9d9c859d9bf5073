//! Unit tests of [`super::PeerSettleService`] with fake claim stores and engines.

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
    async fn insert_claim(&self, account_id: i64, claim: &ReceivedClaim) -> Result<i64, DbError> {
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

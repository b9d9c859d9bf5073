//! Signed claims: sending them to a peer as `peer.settle` Prepares, and verifying and
//! crediting the ones received, on a real PostgreSQL.

// Fixtures (fake engines and peers, account set-up) panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use connector::packet::ildcp::{PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};
use connector::packet::{ErrorCode, FulfillBuilder, Prepare, RejectBuilder};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use schema::models::NewAccount;
use schema::models::account::insert_account;
use schema::models::claim::{NewClaim, find_claim, insert_claim};
use schema::models::incoming_settlement::credit_incoming_settlement;
use schema::test_db::TestDb;
use settlement_worker::adaptor::claims::{ClaimMessage, ClaimPayload, sign_claim};
use settlement_worker::{Adaptor, WorkerConfig, poll_ledger};

use crate::rfc38::{balance, make_due, settlements};

const PAYER_SEED: [u8; 32] = [42; 32];

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn claims_adaptor(signing: bool) -> Adaptor {
    let options = if signing {
        format!(
            "options = {{ signing_key = \"{}\", node_address = \"g.alice\", call_timeout_ms = 2000 }}\n",
            hex::encode(PAYER_SEED)
        )
    } else {
        String::new()
    };
    let config = WorkerConfig::from_toml(&format!(
        "[[ledgers]]\nname = \"chan\"\nkind = \"claims\"\nschedule = \"* * * * * *\"\n{options}"
    ))
    .unwrap();
    config.ledgers[0].adaptor().unwrap()
}

async fn peer_account(
    conn: &mut AsyncPgConnection,
    public_key: Option<&[u8]>,
    outgoing_url: Option<&str>,
) -> i64 {
    insert_account(
        conn,
        &NewAccount {
            username: "bob",
            ilp_address: Some("g.bob"),
            asset_code: "USD",
            asset_scale: 2,
            relation: schema::Relation::Peer,
            max_packet_amount: None,
            settle_threshold: Some(1000),
            settle_to: 0,
            ledger: Some("chan"),
            incoming_token_hash: &[3; 32],
            outgoing_url,
            outgoing_token: Some("to-bob"),
            round_trip_time_ms: 500,
            claims_public_key: public_key,
            spread: None,
            max_packets_per_second: None,
            max_amount_per_second: None,
            stream_receiver: false,
        },
        Some(0),
    )
    .await
    .unwrap()
    .id
}

fn payload(cumulative: i64) -> ClaimPayload {
    ClaimPayload {
        version: 1,
        payer: "g.bob".to_owned(),
        payee: "g.alice".to_owned(),
        asset_code: "USD".to_owned(),
        asset_scale: 2,
        cumulative_amount: cumulative.to_string(),
    }
}

async fn receive(
    conn: &mut AsyncPgConnection,
    account: i64,
    key: &SigningKey,
    cumulative: i64,
) -> i64 {
    let (signed, signature) = sign_claim(key, &payload(cumulative));
    insert_claim(
        conn,
        &NewClaim {
            account_id: account,
            cumulative_amount: cumulative,
            signed_payload: &signed,
            signature: &signature,
        },
    )
    .await
    .unwrap()
}

// Proves received claims credit exactly the delta over the last credited claim: a good claim
// credits, a replay and a lower cumulative credit nothing (rejected), a bad signature and an
// account without a public key are rejected; balance = journal throughout.
#[tokio::test]
async fn received_claims_credit_the_delta_exactly_once() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let bob_key = SigningKey::from_bytes(&[9; 32]);
    let bob = peer_account(conn, Some(&bob_key.verifying_key().to_bytes()), None).await;
    let adaptor = claims_adaptor(false);

    let first = receive(conn, bob, &bob_key, 150).await;
    let replay = receive(conn, bob, &bob_key, 150).await;
    let report = poll_ledger(&pool, "chan", &adaptor, later()).await.unwrap();
    assert_eq!((report.claims_credited, report.claims_rejected), (1, 1));
    assert_eq!(find_claim(conn, first).await.unwrap().credited, Some(150));
    let replayed = find_claim(conn, replay).await.unwrap();
    assert_eq!(replayed.state, schema::ClaimState::Rejected);
    assert!(
        replayed
            .reason
            .unwrap()
            .contains("not above the last credited claim")
    );
    assert_eq!(balance(conn, bob).await, 150);

    let higher = receive(conn, bob, &bob_key, 400).await;
    let lower = receive(conn, bob, &bob_key, 300).await;
    let (mut signed, signature) = sign_claim(&bob_key, &payload(900));
    signed[10] ^= 1;
    let tampered = insert_claim(
        conn,
        &NewClaim {
            account_id: bob,
            cumulative_amount: 900,
            signed_payload: &signed,
            signature: &signature,
        },
    )
    .await
    .unwrap();
    let forged = receive(conn, bob, &SigningKey::from_bytes(&[1; 32]), 1000).await;
    poll_ledger(&pool, "chan", &adaptor, later()).await.unwrap();
    assert_eq!(find_claim(conn, higher).await.unwrap().credited, Some(250));
    assert_eq!(
        find_claim(conn, lower).await.unwrap().state,
        schema::ClaimState::Rejected
    );
    for id in [tampered, forged] {
        let claim = find_claim(conn, id).await.unwrap();
        assert_eq!(
            (claim.state.as_str(), claim.reason.as_deref()),
            ("rejected", Some("bad signature"))
        );
    }
    assert_eq!(balance(conn, bob).await, 400);

    // Nothing left to do, nothing credited twice.
    let again = poll_ledger(&pool, "chan", &adaptor, later()).await.unwrap();
    assert_eq!((again.claims_credited, again.claims_rejected), (0, 0));
    assert_eq!(balance(conn, bob).await, 400);
}

// Proves an account without a public key gets its claims rejected ("no public key").
#[tokio::test]
async fn claims_from_an_account_without_a_key_are_rejected() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let bob = peer_account(conn, None, None).await;
    let id = receive(conn, bob, &SigningKey::from_bytes(&[9; 32]), 150).await;
    poll_ledger(&pool, "chan", &claims_adaptor(false), later())
        .await
        .unwrap();
    let claim = find_claim(conn, id).await.unwrap();
    assert_eq!(
        (claim.state.as_str(), claim.reason.as_deref()),
        ("rejected", Some("no public key"))
    );
    assert_eq!(balance(conn, bob).await, 0);
}

/// A peer's ILP-over-HTTP endpoint that records `peer.settle` Prepares and fulfils them, or
/// rejects them with `reject` when set.
struct Peer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<(String, Prepare)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    async fn start(reject: Option<&'static str>) -> Peer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<(String, Prepare)>>> = Arc::default();
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let sink = sink.clone();
                            async move {
                                let auth = request
                                    .headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let prepare = Prepare::try_from(BytesMut::from(&body[..])).unwrap();
                                sink.lock().unwrap().push((auth, prepare));
                                let answer = match reject {
                                    None => FulfillBuilder {
                                        fulfillment: &PEER_PROTOCOL_FULFILLMENT,
                                        data: b"",
                                    }
                                    .build()
                                    .unwrap()
                                    .into_bytes(),
                                    Some(code) => RejectBuilder {
                                        code: ErrorCode::new(code.as_bytes().try_into().unwrap())
                                            .unwrap(),
                                        triggered_by: None,
                                        message: b"no",
                                        data: b"",
                                    }
                                    .build()
                                    .unwrap()
                                    .into_bytes(),
                                };
                                Ok::<_, Infallible>(Response::new(Full::new(answer.freeze())))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Peer {
            addr,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/ilp", self.addr)
    }

    /// The claims received, verified against the payer's key.
    fn claims(&self) -> Vec<ClaimPayload> {
        use ed25519_dalek::{Signature, Verifier};
        let public = SigningKey::from_bytes(&PAYER_SEED).verifying_key();
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(auth, prepare)| {
                assert_eq!(auth, "Bearer to-bob");
                assert_eq!(prepare.destination().as_str(), "peer.settle");
                assert_eq!(prepare.amount(), 0);
                assert_eq!(prepare.execution_condition(), &PEER_PROTOCOL_CONDITION);
                let message: ClaimMessage = serde_json::from_slice(prepare.data()).unwrap();
                let signed = hex::decode(&message.claim).unwrap();
                let signature: [u8; 64] =
                    hex::decode(&message.signature).unwrap().try_into().unwrap();
                public
                    .verify(&signed, &Signature::from_bytes(&signature))
                    .unwrap();
                serde_json::from_slice(&signed).unwrap()
            })
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fund(conn: &mut AsyncPgConnection, account: i64, key: &str, amount: i64) {
    credit_incoming_settlement(conn, account, key, &amount.to_string(), 2)
        .await
        .unwrap();
}

// Proves outgoing claims are cumulative and signed: two settlements of 1500 and 1200 send
// claims of 1500 and 2700 to peer.settle, both confirmed on Fulfill.
#[tokio::test]
async fn outgoing_claims_are_cumulative_and_confirmed_on_fulfill() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let peer = Peer::start(None).await;
    let bob = peer_account(conn, None, Some(&peer.url())).await;
    let adaptor = claims_adaptor(true);

    fund(conn, bob, "a", 1500).await;
    assert_eq!(
        poll_ledger(&pool, "chan", &adaptor, later())
            .await
            .unwrap()
            .confirmed,
        1
    );
    fund(conn, bob, "b", 1200).await;
    assert_eq!(
        poll_ledger(&pool, "chan", &adaptor, later())
            .await
            .unwrap()
            .confirmed,
        1
    );

    let claims = peer.claims();
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[0].cumulative_amount, "1500");
    assert_eq!(claims[1].cumulative_amount, "2700");
    assert_eq!(
        (claims[1].payer.as_str(), claims[1].payee.as_str()),
        ("g.alice", "g.bob")
    );
    assert!(
        settlements(conn)
            .await
            .iter()
            .all(|s| s.state == schema::SettlementState::Confirmed)
    );
    assert_eq!(balance(conn, bob).await, 0);
}

// Proves a final (F) Reject refunds and fails the settlement, a temporary (T) one keeps it
// pending and resends the very same claim.
#[tokio::test]
async fn rejected_claims_refund_and_temporary_ones_retry_the_same_claim() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let final_peer = Peer::start(Some("F99")).await;
    let bob = peer_account(conn, None, Some(&final_peer.url())).await;
    fund(conn, bob, "a", 1500).await;
    let report = poll_ledger(&pool, "chan", &claims_adaptor(true), later())
        .await
        .unwrap();
    assert_eq!(report.refunded, 1);
    assert_eq!(
        settlements(conn).await[0].state,
        schema::SettlementState::Failed
    );
    assert_eq!(balance(conn, bob).await, 1500);

    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let busy_peer = Peer::start(Some("T00")).await;
    let bob = peer_account(conn, None, Some(&busy_peer.url())).await;
    fund(conn, bob, "a", 1500).await;
    let adaptor = claims_adaptor(true);
    assert_eq!(
        poll_ledger(&pool, "chan", &adaptor, later())
            .await
            .unwrap()
            .postponed,
        1
    );
    make_due(conn).await;
    assert_eq!(
        poll_ledger(&pool, "chan", &adaptor, later())
            .await
            .unwrap()
            .postponed,
        1
    );
    let claims = busy_peer.claims();
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[0], claims[1]);
    assert_eq!(settlements(conn).await.len(), 1);
    assert_eq!(balance(conn, bob).await, 0);
}

// Proves a final Reject of a claim that a later, higher claim already covered (the peer
// confirmed the later one, whose cumulative amount includes this one's) confirms it instead
// of refunding money the peer holds; without the later claim it would be refunded.
#[tokio::test]
async fn a_rejected_claim_superseded_by_a_confirmed_later_one_is_not_refunded() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let peer = Peer::start(Some("F99")).await;
    let bob = peer_account(conn, None, Some(&peer.url())).await;
    fund(conn, bob, "a", 1500).await;
    let earlier = {
        let mut c = pool.get().await.unwrap();
        schema::models::settlement::start_settlement(&mut c, bob, "chan")
            .await
            .unwrap()
            .expect("a settlement is started")
    };
    diesel::sql_query(format!(
        "INSERT INTO settlements (id, account_id, ledger, amount, state) \
         VALUES (gen_random_uuid(), {bob}, 'chan', 500, 'confirmed')"
    ))
    .execute(conn)
    .await
    .unwrap();

    let report = poll_ledger(&pool, "chan", &claims_adaptor(true), later())
        .await
        .unwrap();
    assert_eq!((report.confirmed, report.refunded), (1, 0));
    let rows = settlements(conn).await;
    let row = rows.iter().find(|s| s.id == earlier.id).unwrap();
    assert_eq!(row.state, schema::SettlementState::Confirmed);
    assert!(row.last_error.as_deref().unwrap().contains("superseded"));
    assert_eq!(balance(conn, bob).await, 0);
}

//! Settlement messages end to end: real connectors, a test RFC 38 engine (a hyper server in
//! the test), and `peer.settle` both ways.
//!
//! ```text
//! relay:   peer ──peer.settle──► node test.b ──POST /accounts/{id}/messages──► engine
//! node API: caller ──POST /accounts/{b}/messages──► node A ──peer.settle──► node B ──► B's engine
//! claims:  peer ──peer.settle {claim, signature}──► node test.b ──► settlement_claims row
//! ```
//! Ledger rows are inserted with SQL here; in production the settlement worker registers them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use connector::packet::ildcp::{PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};
use connector::packet::{ErrorCode, Packet, Prepare, PrepareBuilder};
use connector::settlement::peer_settle::PEER_SETTLE_DESTINATION;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use e2e::{Node, cli, free_port, send_prepare};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use schema::test_db::TestDb;

/// What the test engine received: (path, body).
type Seen = Arc<Mutex<Vec<(String, Bytes)>>>;

/// An RFC 38 engine's message endpoint: answers `engine got: <body>`.
struct Engine {
    url: String,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Engine {
    async fn start() -> Engine {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the engine");
        let addr: SocketAddr = listener.local_addr().expect("engine address");
        let seen: Seen = Arc::default();
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let recorded = recorded.clone();
                            async move {
                                let path = request.uri().path().to_owned();
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let mut reply = b"engine got: ".to_vec();
                                reply.extend_from_slice(&body);
                                recorded.lock().expect("lock").push((path, body));
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                    Bytes::from(reply),
                                )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Engine {
            url: format!("http://{addr}"),
            seen,
            task,
        }
    }

    fn seen(&self) -> Vec<(String, Bytes)> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Inserts a `ledgers` row as the worker would register it.
async fn insert_ledger(database_url: &str, name: &str, kind: &str, options: &str) {
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .expect("connecting");
    diesel::sql_query("INSERT INTO ledgers (name, kind, options) VALUES ($1, $2, $3::jsonb)")
        .bind::<diesel::sql_types::Text, _>(name)
        .bind::<diesel::sql_types::Text, _>(kind)
        .bind::<diesel::sql_types::Text, _>(options)
        .execute(&mut conn)
        .await
        .expect("inserting a ledger");
}

/// Adds a USD peer account; returns its id.
fn add_peer(database_url: &str, username: &str, extra: &[&str]) -> i64 {
    let mut args = vec![
        "accounts",
        "add",
        username,
        "--relation",
        "peer",
        "--asset-code",
        "USD",
        "--asset-scale",
        "2",
    ];
    args.extend_from_slice(extra);
    cli(database_url, &args)["id"]
        .as_i64()
        .expect("an account id")
}

fn peer_settle(data: &[u8]) -> Prepare {
    PrepareBuilder {
        amount: 0,
        expires_at: SystemTime::now() + Duration::from_secs(10),
        execution_condition: &PEER_PROTOCOL_CONDITION,
        destination: PEER_SETTLE_DESTINATION,
        data,
    }
    .build()
    .expect("a small Prepare builds")
}

/// A node `test.b` whose account `a` (token `a-in`) is settled by ledger `ledger`
/// (`kind`, `options`); returns the node and `a`'s id.
async fn node_with_ledger(ledger: &str, kind: &str, options: &str) -> (Node, i64) {
    let db = Arc::new(TestDb::new().await);
    insert_ledger(db.url(), ledger, kind, options).await;
    let a = add_peer(
        db.url(),
        "a",
        &["--incoming-token", "a-in", "--ledger", ledger],
    );
    (Node::start_on(db, "test.b", &[]), a)
}

#[tokio::test]
async fn an_rfc38_peer_settle_reaches_our_engine_and_its_reply_is_the_fulfill_data() {
    // Proves the connector POSTs the message to {engine}/accounts/{id}/messages and fulfills
    // with the peer-protocol fulfillment and the engine's reply as data.
    let engine = Engine::start().await;
    let (node, a) = node_with_ledger(
        "eng",
        "rfc38",
        &format!(r#"{{"engine_url":"{}"}}"#, engine.url),
    )
    .await;
    let answer = send_prepare(&node.url(), "a-in", peer_settle(b"hello engine")).await;
    let Packet::Fulfill(fulfill) = answer else {
        panic!("expected a Fulfill, got {answer:?}");
    };
    assert_eq!(fulfill.data(), b"engine got: hello engine");
    assert_eq!(*fulfill.fulfillment(), PEER_PROTOCOL_FULFILLMENT);
    let seen = engine.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, format!("/accounts/{a}/messages"));
    assert_eq!(&seen[0].1[..], b"hello engine");
}

#[tokio::test]
async fn an_engine_that_is_down_gives_a_reject_not_an_empty_fulfill() {
    // Proves a message our engine cannot take comes back as a T-class Reject from us.
    let down = format!("http://127.0.0.1:{}", free_port());
    let (node, _) =
        node_with_ledger("eng", "rfc38", &format!(r#"{{"engine_url":"{down}"}}"#)).await;
    let answer = send_prepare(&node.url(), "a-in", peer_settle(b"anyone?")).await;
    let Packet::Reject(reject) = answer else {
        panic!("expected a Reject, got {answer:?}");
    };
    assert_eq!(reject.code(), ErrorCode::T01_PEER_UNREACHABLE);
    assert_eq!(
        reject.triggered_by().expect("triggeredBy").as_str(),
        "test.b"
    );
}

#[tokio::test]
async fn the_node_api_relays_a_message_to_the_peer_and_returns_its_engines_reply() {
    // Proves POST /accounts/{id}/messages on A's node API becomes a peer.settle to B, B's
    // engine answers, and the answer is the HTTP body A's caller gets.
    let engine = Engine::start().await;
    let (b, a_at_b) = node_with_ledger(
        "eng",
        "rfc38",
        &format!(r#"{{"engine_url":"{}"}}"#, engine.url),
    )
    .await;
    let api_port = free_port();
    let api_listen = format!("127.0.0.1:{api_port}");
    let a_db = Arc::new(TestDb::new().await);
    let b_at_a = add_peer(
        a_db.url(),
        "b",
        &[
            "--incoming-token",
            "b-in",
            "--outgoing-url",
            &b.url(),
            "--outgoing-token",
            "a-in",
        ],
    );
    let _a = Node::start_on(
        a_db,
        "test.a",
        &[
            ("ILP_CONNECTOR_SETTLEMENT_API__LISTEN", &api_listen),
            ("ILP_CONNECTOR_SETTLEMENT_API__TOKEN", "api-token"),
        ],
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let post = |token: &str| {
        Request::post(format!("http://{api_listen}/accounts/{b_at_a}/messages"))
            .header("content-type", "application/octet-stream")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from_static(b"ping")))
            .expect("request")
    };
    let refused = client.request(post("wrong")).await.expect("sending");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let response = client.request(post("api-token")).await.expect("sending");
    assert_eq!(response.status(), StatusCode::CREATED, "RFC 38 answers 201");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"engine got: ping");
    let seen = engine.seen();
    assert_eq!(seen.len(), 1, "the wrong token sent nothing");
    assert_eq!(seen[0].0, format!("/accounts/{a_at_b}/messages"));
}

#[tokio::test]
async fn a_claim_over_peer_settle_is_stored_byte_for_byte_and_a_malformed_one_is_not() {
    // Proves the claims path writes settlement_claims through the real database, and F00
    // with nothing written for a short signature.
    let (node, a) = node_with_ledger("chan", "claims", "{}").await;
    let payload = br#"{"version":1,"payer":"test.a","payee":"test.b","asset_code":"USD","asset_scale":2,"cumulative_amount":"420"}"#;
    let message = |signature: &[u8]| {
        format!(
            r#"{{"claim":"{}","signature":"{}"}}"#,
            hex::encode(payload),
            hex::encode(signature)
        )
    };
    let bad = send_prepare(
        &node.url(),
        "a-in",
        peer_settle(message(&[1; 32]).as_bytes()),
    )
    .await;
    let Packet::Reject(reject) = bad else {
        panic!("expected a Reject, got {bad:?}");
    };
    assert_eq!(reject.code(), ErrorCode::F00_BAD_REQUEST);
    let good = send_prepare(
        &node.url(),
        "a-in",
        peer_settle(message(&[1; 64]).as_bytes()),
    )
    .await;
    assert!(matches!(good, Packet::Fulfill(_)), "{good:?}");

    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Int8)]
        account_id: i64,
        #[diesel(sql_type = diesel::sql_types::Int8)]
        cumulative_amount: i64,
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        signed_payload: Vec<u8>,
        #[diesel(sql_type = diesel::sql_types::Text)]
        state: String,
    }
    let mut conn = AsyncPgConnection::establish(&node.database_url)
        .await
        .expect("connecting");
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT account_id, cumulative_amount, signed_payload, state FROM settlement_claims",
    )
    .load(&mut conn)
    .await
    .expect("reading claims");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].account_id, rows[0].cumulative_amount), (a, 420));
    assert_eq!(rows[0].signed_payload, payload);
    assert_eq!(rows[0].state, "received");
}

//! The RFC 38 node API (`[settlement_api]`) served on 127.0.0.1:0 against a real database:
//! incoming settlement credits and the status codes engines rely on.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use connector::accounts::{SharedDirectory, load_directory};
use connector::http::client::HttpClientService;
use connector::packet::Address;
use connector::settlement::node_api::{NodeApiState, serve};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use schema::models::balance::{find_balance, sum_journal};
use schema::test_db::TestDb;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "engine-secret";

/// A node API on a fresh database with one peer account, `bob`.
struct Api {
    db: TestDb,
    addr: SocketAddr,
    bob: i64,
    stop: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn cli(db: &TestDb, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ilp-connector"))
        .arg("--json")
        .args(args)
        .env("DATABASE_URL", db.url())
        .env_remove("ILP_CONNECTOR_CONFIG")
        .output()
        .expect("running ilp-connector");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

async fn start(bob_outgoing_url: &str) -> Api {
    start_with(bob_outgoing_url, Some(TOKEN)).await
}

async fn start_with(bob_outgoing_url: &str, token: Option<&str>) -> Api {
    let db = TestDb::new().await;
    let bob = cli(
        &db,
        &[
            "accounts",
            "add",
            "bob",
            "--asset-code",
            "USD",
            "--asset-scale",
            "2",
            "--relation",
            "peer",
            "--incoming-token",
            "bob-in",
            "--outgoing-url",
            bob_outgoing_url,
        ],
    )["id"]
        .as_i64()
        .expect("an account id");
    let node = Address::new("test.node").expect("an address");
    let directory = {
        let mut conn = db.connect().await;
        load_directory(&mut conn, &node).await.expect("loading")
    };
    let state = Arc::new(NodeApiState::new(
        Arc::new(SharedDirectory::new(directory)),
        db.pool(),
        HttpClientService::new(Arc::new(node)),
        token,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding");
    let addr = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let limits = runtime::listener::ListenerLimits::with_max_connections(16);
    tokio::spawn(serve(listener, limits, None, state, stop.clone()));
    Api {
        db,
        addr,
        bob,
        stop,
    }
}

/// POSTs `body` to `path` with `headers`; returns status, content type and body.
async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, String, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut request = Request::post(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .expect("request"),
        )
        .await
        .expect("sending");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

const AUTH: (&str, &str) = ("authorization", "Bearer engine-secret");
const JSON: (&str, &str) = ("content-type", "application/json");

impl Api {
    async fn settle(&self, key: Option<&str>, body: &str) -> (StatusCode, String, String) {
        let mut headers = vec![AUTH, JSON];
        if let Some(key) = key {
            headers.push(("idempotency-key", key));
        }
        post(
            self.addr,
            &format!("/accounts/{}/settlements", self.bob),
            &headers,
            body,
        )
        .await
    }

    /// Bob's balance and journal sum.
    async fn bob_balance(&self) -> (i64, i64) {
        let mut conn = self.db.connect().await;
        let balance = find_balance(&mut conn, self.bob).await.expect("balance");
        let journal = sum_journal(&mut conn, self.bob).await.expect("journal");
        (balance.balance, journal)
    }
}

#[tokio::test]
async fn a_credit_without_an_idempotency_key_is_400_and_credits_nothing() {
    // Proves the RFC's required Idempotency-Key is enforced before any write.
    let api = start("http://127.0.0.1:9/ilp").await;
    let (status, _, body) = api.settle(None, r#"{"amount":"100","scale":2}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Idempotency-Key"), "{body}");
    assert_eq!(api.bob_balance().await, (0, 0));
}

#[tokio::test]
async fn the_same_key_twice_answers_the_same_body_and_credits_once() {
    // Proves a replayed credit gets the stored 201 Quantity and moves no money again, and that
    // a JSON content type with a charset and any scale are accepted.
    let api = start("http://127.0.0.1:9/ilp").await;
    let first = api
        .settle(Some("key-1"), r#"{"amount":"150","scale":2}"#)
        .await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.2);
    assert_eq!(first.1, "application/json");
    let quantity: serde_json::Value = serde_json::from_str(&first.2).expect("a JSON body");
    assert_eq!(quantity["amount"], "150");
    assert_eq!(quantity["scale"], 2);
    let again = api
        .settle(Some("key-1"), r#"{"amount":"150","scale":2}"#)
        .await;
    assert_eq!(again, first);
    assert_eq!(api.bob_balance().await, (150, 150));

    // Another key, another scale (what the JS engine framework sends), a charset parameter.
    let (status, _, body) = post(
        api.addr,
        &format!("/accounts/{}/settlements", api.bob),
        &[
            AUTH,
            ("content-type", "application/json; charset=utf-8"),
            ("idempotency-key", "key-2"),
        ],
        r#"{"amount":"25","scale":1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(api.bob_balance().await, (400, 400));
}

#[tokio::test]
async fn amounts_that_are_not_plain_integers_or_do_not_fit_are_400_and_credit_nothing() {
    // Proves a bad Quantity is refused with a reason and leaves balance and journal untouched.
    let api = start("http://127.0.0.1:9/ilp").await;
    let cases = [
        r#"{"amount":"99999999999999999999999","scale":2}"#,
        r#"{"amount":"-5","scale":2}"#,
        r#"{"amount":"1.5","scale":2}"#,
        r#"{"amount":150,"scale":2}"#,
        r#"{"amount":"1","scale":256}"#,
        r#"{"amount":"1"}"#,
        "not json",
    ];
    for (i, body) in cases.iter().enumerate() {
        let key = format!("bad-{i}");
        let (status, _, reason) = api.settle(Some(&key), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reason}");
        assert!(!reason.trim().is_empty(), "{body}: no reason given");
    }
    assert_eq!(api.bob_balance().await, (0, 0));
    // The key of a refused request is not used up.
    let (status, _, body) = api
        .settle(Some("bad-0"), r#"{"amount":"7","scale":2}"#)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(api.bob_balance().await, (7, 7));
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_and_unknown_things_are_404() {
    // Proves authentication comes first, then routing; unknown accounts and paths are 404.
    let api = start("http://127.0.0.1:9/ilp").await;
    let path = format!("/accounts/{}/settlements", api.bob);
    let body = r#"{"amount":"100","scale":2}"#;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer engine-secret-and-more"),
        Some("Basic engine-secret"),
    ] {
        let mut headers = vec![JSON, ("idempotency-key", "k")];
        if let Some(auth) = auth {
            headers.push(("authorization", auth));
        }
        let (status, _, _) = post(api.addr, &path, &headers, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    assert_eq!(api.bob_balance().await, (0, 0));
    let headers = [AUTH, JSON, ("idempotency-key", "k")];
    let unknown = post(api.addr, "/accounts/987654/settlements", &headers, body).await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);
    let other = post(api.addr, "/accounts", &headers, body).await;
    assert_eq!(other.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_a_token_a_stock_engine_needs_no_authorization_header() {
    // Proves a node API configured without a token (loopback only) credits a request with no
    // Authorization header, as a stock ilp-settlement-core engine sends it, exactly once.
    let api = start_with("http://127.0.0.1:9/ilp", None).await;
    let path = format!("/accounts/{}/settlements", api.bob);
    let headers = [JSON, ("idempotency-key", "stock")];
    for _ in 0..2 {
        let (status, _, body) =
            post(api.addr, &path, &headers, r#"{"amount":"7","scale":1}"#).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let credited: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(
            (&credited["amount"], &credited["scale"]),
            (&"7".into(), &1.into()),
            "{body}"
        );
    }
    assert_eq!(api.bob_balance().await, (70, 70));
}

#[tokio::test]
async fn a_message_to_an_unreachable_peer_is_502() {
    // Proves a message whose peer cannot be reached comes back as an error status, not a 2xx.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let api = start(&format!("http://127.0.0.1:{port}/ilp")).await;
    let (status, _, body) = post(
        api.addr,
        &format!("/accounts/{}/messages", api.bob),
        &[AUTH, ("content-type", "application/octet-stream")],
        "hello peer",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.starts_with("T01"), "{body}");
}

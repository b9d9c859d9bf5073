//! Two nodes settling with signed claims, all real processes: A and B each run one
//! `ilp-connector serve` and one `ilp-settlement-worker` on a database of their own, and
//! peer over ILP-over-HTTP on 127.0.0.1. A pays through B, owes B, settles with a signed
//! cumulative claim sent as a `peer.settle` Prepare; B's worker verifies and credits it.

// Fixtures (account set-up, SQL reads) panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use connector::packet::ildcp::PEER_PROTOCOL_CONDITION;
use connector::packet::{AddressRef, Packet, PrepareBuilder};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use e2e::{
    AccountBalance, Behaviour, Node, Receiver, SettlementWorker, free_port, http_get, metric,
    run_traffic, send_prepare, wait_for,
};
use ed25519_dalek::SigningKey;
use hyper::StatusCode;

/// How long settlement may take: both ledgers are polled every second.
const SETTLED_WITHIN: Duration = Duration::from_secs(15);
/// A's account `b` is settled once A owes B this much (base units), down to 0.
const SETTLE_THRESHOLD: i64 = 500;
/// The claims ledger's name, on both sides.
const LEDGER: &str = "chan";
/// A's claims signing key seed (a test key; never a real one).
const A_SEED: [u8; 32] = [0xA1; 32];
/// The token A sends B (B's incoming token for account `a`).
const A_TO_B: &str = "a-to-b-token";
/// The token B sends A (A's incoming token for account `b`).
const B_TO_A: &str = "b-to-a-token";
/// The sender's token at A.
const SENDER: &str = "sender-token";

/// One row of `settlements`, as the test reads it.
#[derive(Debug, diesel::QueryableByName)]
struct SettlementRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    username: String,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    amount: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
}

/// One row of `settlement_claims`, as the test reads it.
#[derive(Debug, Clone, diesel::QueryableByName)]
struct ClaimRow {
    #[diesel(sql_type = diesel::sql_types::Int8)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    username: String,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    cumulative_amount: i64,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    signed_payload: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    signature: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Int8>)]
    credited: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    reason: Option<String>,
}

async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url).await.unwrap()
}

async fn settlements(url: &str) -> Vec<SettlementRow> {
    diesel::sql_query(
        "SELECT a.username, s.amount, s.state FROM settlements s \
         JOIN accounts a ON a.id = s.account_id ORDER BY s.seq",
    )
    .load(&mut connect(url).await)
    .await
    .unwrap()
}

async fn claims(url: &str) -> Vec<ClaimRow> {
    diesel::sql_query(
        "SELECT c.id, a.username, c.cumulative_amount, c.signed_payload, c.signature, c.state, \
         c.credited, c.reason FROM settlement_claims c \
         JOIN accounts a ON a.id = c.account_id ORDER BY c.id",
    )
    .load(&mut connect(url).await)
    .await
    .unwrap()
}

/// Every account's numbers, after checking each balance equals its journal's sum, once no
/// reservation is left.
async fn balances(url: &str) -> Vec<AccountBalance> {
    let rows = e2e::idle_balances(url, Duration::from_secs(15)).await;
    for row in &rows {
        assert_eq!(row.balance, row.journal, "balance != sum(journal): {row:?}");
    }
    rows
}

fn balance_of(rows: &[AccountBalance], username: &str) -> i64 {
    rows.iter()
        .find(|row| row.username == username)
        .unwrap_or_else(|| panic!("no account {username}: {rows:?}"))
        .balance
}

fn worker_config(admin: Option<SocketAddr>) -> String {
    let admin = admin
        .map(|addr| format!("[admin]\nlisten = \"{addr}\"\n\n"))
        .unwrap_or_default();
    format!(
        "{admin}[worker]\nidle_poll_ms = 100\n\n\
         [[ledgers]]\nname = \"{LEDGER}\"\nkind = \"claims\"\nschedule = \"*/1 * * * * *\"\n"
    )
}

/// The `peer.settle` Prepare carrying `claim` exactly as B stored it.
fn replay_of(claim: &ClaimRow) -> connector::packet::Prepare {
    let data = serde_json::json!({
        "claim": hex::encode(&claim.signed_payload),
        "signature": hex::encode(&claim.signature),
    })
    .to_string();
    PrepareBuilder {
        amount: 0,
        expires_at: SystemTime::now() + Duration::from_secs(10),
        execution_condition: &PEER_PROTOCOL_CONDITION,
        destination: AddressRef::new("peer.settle").unwrap(),
        data: data.as_bytes(),
    }
    .build()
    .unwrap()
}

// Proves the issue's acceptance: two nodes, each a connector and a worker on its own
// database, peered both ways; once A owes B past the threshold, A's worker settles with a
// signed claim (A's settlement confirmed, A's balance for `b` lowered by it), B's worker
// credits it exactly once, both sides then agree on the bilateral balance (A's `b` = -B's
// `a`), each node's journals explain its balances, and a replayed claim credits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_settle_with_claims_exactly_once() {
    let a_key = SigningKey::from_bytes(&A_SEED);
    let a_public = hex::encode(a_key.verifying_key().to_bytes());
    let receiver = Receiver::start(Behaviour::Fulfill).await;

    // B: account `a` (A, who pays B by claims on `chan`) and `r` (the receiver).
    let b = Node::start("test.b", |cli| {
        cli(&[
            "accounts",
            "add",
            "a",
            "--relation",
            "peer",
            "--asset-code",
            "USD",
            "--asset-scale",
            "2",
            "--ilp-address",
            "test.a",
            "--credit-limit",
            "",
            "--ledger",
            LEDGER,
            "--incoming-token",
            A_TO_B,
            "--outgoing-token",
            B_TO_A,
            "--claims-public-key",
            &a_public,
        ]);
        cli(&[
            "accounts",
            "add",
            "r",
            "--relation",
            "child",
            "--asset-code",
            "USD",
            "--asset-scale",
            "2",
            "--outgoing-url",
            &receiver.url(),
        ]);
    })
    .await;
    // A: account `s` (the sender) and `b` (B, settled by claims on `chan`), a route to B.
    let b_url = b.url();
    let a = Node::start("test.a", |cli| {
        cli(&[
            "accounts",
            "add",
            "s",
            "--relation",
            "child",
            "--asset-code",
            "USD",
            "--asset-scale",
            "2",
            "--incoming-token",
            SENDER,
            "--credit-limit",
            "",
        ]);
        cli(&[
            "accounts",
            "add",
            "b",
            "--relation",
            "peer",
            "--asset-code",
            "USD",
            "--asset-scale",
            "2",
            "--ilp-address",
            "test.b",
            "--credit-limit",
            "",
            "--settle-threshold",
            &SETTLE_THRESHOLD.to_string(),
            "--settle-to",
            "0",
            "--ledger",
            LEDGER,
            "--incoming-token",
            B_TO_A,
            "--outgoing-url",
            &b_url,
            "--outgoing-token",
            A_TO_B,
        ]);
        cli(&["routes", "add", "test.b", "b"]);
    })
    .await;
    b.cli(&["accounts", "update", "a", "--outgoing-url", &a.url()]);

    let a_seed = hex::encode(A_SEED);
    let _a_worker = SettlementWorker::start(
        &a.database_url,
        &worker_config(None),
        &[
            ("ILP_WORKER_LEDGERS__CHAN__SIGNING_KEY", a_seed.as_str()),
            ("ILP_WORKER_LEDGERS__CHAN__NODE_ADDRESS", "test.a"),
        ],
    );
    let b_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _b_worker = SettlementWorker::start(&b.database_url, &worker_config(Some(b_admin)), &[]);
    // B's worker is up (and its ledger registered) once its admin listener answers.
    wait_for(SETTLED_WITHIN, "B's worker answers /health", || async {
        let client = tokio::net::TcpStream::connect(b_admin).await.ok()?;
        drop(client);
        (http_get(b_admin, "/health").await.0 == StatusCode::OK).then_some(())
    })
    .await;

    // 49 packets of 10 keep A's debt to B under the threshold; one of 100 takes it over, so
    // there is exactly one threshold crossing and one settlement.
    let below = run_traffic(
        a.url(),
        SENDER,
        "test.b.r",
        10,
        7,
        7,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    assert_eq!((below.fulfilled, below.errors), (49, 0), "{below:?}");
    assert!(settlements(&a.database_url).await.is_empty());
    let over = send_prepare(
        &a.url(),
        SENDER,
        e2e::prepare("test.b.r", 100, Duration::from_secs(5)),
    )
    .await;
    assert!(matches!(over, Packet::Fulfill(_)), "{over:?}");
    let owed = 49 * 10 + 100;

    // A's worker settles with a claim, B's worker credits it.
    let settled = wait_for(SETTLED_WITHIN, "A's settlement confirmed", || async {
        let rows = settlements(&a.database_url).await;
        let done = !rows.is_empty() && rows.iter().all(|s| s.state == "confirmed");
        done.then_some(rows)
    })
    .await;
    assert_eq!(
        settled.len(),
        1,
        "one crossing, one settlement: {settled:?}"
    );
    assert_eq!(
        (settled[0].username.as_str(), settled[0].amount),
        ("b", owed)
    );
    let credited = wait_for(SETTLED_WITHIN, "B's claim credited", || async {
        let rows = claims(&b.database_url).await;
        (rows.len() == 1 && rows[0].state == "credited").then_some(rows)
    })
    .await;
    let claim = &credited[0];
    assert_eq!(
        (
            claim.username.as_str(),
            claim.cumulative_amount,
            claim.credited
        ),
        ("a", owed, Some(owed))
    );
    let payload: serde_json::Value = serde_json::from_slice(&claim.signed_payload).unwrap();
    assert_eq!(payload["payer"], "test.a");
    assert_eq!(payload["cumulative_amount"], owed.to_string());

    // Both views of the bilateral balance agree (positive = we owe the holder): A's debt
    // to B was lowered by the settled amount to settle_to, B's claim on A raised to match.
    let a_rows = balances(&a.database_url).await;
    let b_rows = balances(&b.database_url).await;
    assert_eq!(balance_of(&a_rows, "b"), owed - settled[0].amount);
    assert_eq!(balance_of(&a_rows, "b"), 0);
    assert_eq!(
        balance_of(&a_rows, "b"),
        -balance_of(&b_rows, "a"),
        "A: {a_rows:?} B: {b_rows:?}"
    );
    // The money that moved: the sender paid A, B paid the receiver.
    assert_eq!(balance_of(&a_rows, "s"), -owed);
    assert_eq!(balance_of(&b_rows, "r"), owed);
    assert_eq!(receiver.received(), 50);

    // A replayed claim is stored by B's connector (its shape is fine) but credits nothing.
    let replay = send_prepare(&b.url(), A_TO_B, replay_of(claim)).await;
    assert!(matches!(replay, Packet::Fulfill(_)), "{replay:?}");
    let after = wait_for(SETTLED_WITHIN, "the replayed claim processed", || async {
        let rows = claims(&b.database_url).await;
        (rows.len() == 2 && rows[1].state != "received").then_some(rows)
    })
    .await;
    assert_eq!(after[0].state, "credited");
    assert_eq!(
        (after[1].state.as_str(), after[1].credited),
        ("rejected", None),
        "{:?}",
        after[1].reason
    );
    assert!(
        after[1]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("not above the last credited claim"),
        "{:?}",
        after[1].reason
    );
    assert!(after[1].id > after[0].id);
    let b_rows = balances(&b.database_url).await;
    assert_eq!(balance_of(&b_rows, "a"), 0, "the replay credited nothing");
    assert_eq!(
        balance_of(&balances(&a.database_url).await, "b"),
        -balance_of(&b_rows, "a")
    );
    assert_eq!(settlements(&a.database_url).await.len(), 1);

    // B's worker counted one credited and one rejected claim.
    let (status, text) = http_get(b_admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for outcome in ["credited", "rejected"] {
        assert_eq!(
            metric(
                &text,
                "ilp_claims_total",
                &[("ledger", LEDGER), ("outcome", outcome)]
            ),
            Some(1.0),
            "{outcome}: {text}"
        );
    }
}

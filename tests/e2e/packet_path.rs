//! Two connectors chained child to parent, plus a receiver: the packet path end to end.
//!
//! ```text
//! sender ──► child node (test.parent.child) ──► parent node (test.parent) ──► receiver
//!            account `sender` (child)            account `child` (child)       account `receiver` (child)
//!            account `parent`, route test → it
//! ```

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use connector::packet::ildcp::{IldcpResponse, ildcp_request};
use connector::packet::{ErrorCode, Packet};
use e2e::{Behaviour, Node, Receiver, prepare, send, send_prepare};
use hyper::StatusCode;

const USD: &[&str] = &["--asset-code", "USD", "--asset-scale", "2"];

fn add(cli: &dyn Fn(&[&str]) -> serde_json::Value, username: &str, relation: &str, extra: &[&str]) {
    let mut args = vec!["accounts", "add", username, "--relation", relation];
    args.extend_from_slice(USD);
    args.extend_from_slice(extra);
    cli(&args);
}

struct Topology {
    child: Node,
    parent: Node,
    receiver: Receiver,
}

async fn topology(behaviour: Behaviour) -> Topology {
    let receiver = Receiver::start(behaviour).await;
    let receiver_url = receiver.url();
    let parent = Node::start("test.parent", |cli| {
        add(
            cli,
            "child",
            "child",
            &["--incoming-token", "child-in", "--credit-limit", "1000000"],
        );
        add(
            cli,
            "receiver",
            "child",
            &[
                "--incoming-token",
                "receiver-in",
                "--outgoing-url",
                &receiver_url,
            ],
        );
    })
    .await;
    let parent_url = parent.url();
    let child = Node::start("test.parent.child", |cli| {
        add(
            cli,
            "sender",
            "child",
            &[
                "--incoming-token",
                "sender-token",
                "--credit-limit",
                "1000000",
            ],
        );
        add(
            cli,
            "parent",
            "parent",
            &[
                "--incoming-token",
                "parent-in",
                "--outgoing-url",
                &parent_url,
                "--outgoing-token",
                "child-in",
            ],
        );
        cli(&["routes", "add", "test", "parent"]);
    })
    .await;
    Topology {
        child,
        parent,
        receiver,
    }
}

fn reject_of(packet: Packet) -> connector::packet::Reject {
    match packet {
        Packet::Reject(reject) => reject,
        other => panic!("expected a Reject, got {other:?}"),
    }
}

#[tokio::test]
async fn prepare_travels_through_both_connectors_and_the_fulfill_comes_back() {
    // Proves the whole path: auth, routing on both nodes, forwarding, and the Fulfill relayed back.
    let t = topology(Behaviour::Fulfill).await;
    let packet = send_prepare(
        &t.child.url(),
        "sender-token",
        prepare("test.parent.receiver.bob", 10, Duration::from_secs(10)),
    )
    .await;
    match packet {
        Packet::Fulfill(fulfill) => {
            assert_eq!(fulfill.fulfillment(), &e2e::FULFILLMENT);
            assert_eq!(fulfill.data(), b"thanks");
        }
        other => panic!("expected a Fulfill, got {other:?}"),
    }
    assert_eq!(t.receiver.received(), 1);
    // The per-account path works too, with the same token.
    let url = format!("http://{}/accounts/sender/ilp", t.child.addr);
    let packet = send_prepare(
        &url,
        "sender-token",
        prepare("test.parent.receiver", 10, Duration::from_secs(10)),
    )
    .await;
    assert!(matches!(packet, Packet::Fulfill(_)));
    assert_eq!(t.receiver.received(), 2);
}

#[tokio::test]
async fn ildcp_answers_each_account_with_its_own_address_and_asset() {
    // Proves peer.config answers the asking account: a child of the child node, and the child node itself.
    let t = topology(Behaviour::Fulfill).await;
    let ask = |url: String, token: &'static str| async move {
        let packet = send_prepare(
            &url,
            token,
            ildcp_request(SystemTime::now() + Duration::from_secs(30)),
        )
        .await;
        match packet {
            Packet::Fulfill(fulfill) => {
                IldcpResponse::from_fulfill(&fulfill).expect("an ILDCP answer")
            }
            other => panic!("expected a Fulfill, got {other:?}"),
        }
    };
    let sender = ask(t.child.url(), "sender-token").await;
    assert_eq!(
        (
            sender.address.as_str(),
            sender.asset_code.as_str(),
            sender.asset_scale
        ),
        ("test.parent.child.sender", "USD", 2)
    );
    let child = ask(t.parent.url(), "child-in").await;
    assert_eq!(child.address.as_str(), "test.parent.child");
    assert_eq!(t.receiver.received(), 0);
}

#[tokio::test]
async fn unknown_destination_is_f02_relayed_unchanged() {
    // Proves the parent's F02 comes back through the child with the parent as triggeredBy.
    let t = topology(Behaviour::Fulfill).await;
    let reject = reject_of(
        send_prepare(
            &t.child.url(),
            "sender-token",
            prepare("test.parent.nobody", 10, Duration::from_secs(10)),
        )
        .await,
    );
    assert_eq!(reject.code(), ErrorCode::F02_UNREACHABLE);
    assert_eq!(
        reject.triggered_by().map(|a| a.to_string()).as_deref(),
        Some("test.parent")
    );
    assert!(reject.message_str().contains("test.parent.nobody"));
    // A destination outside every route stops at the child itself.
    let reject = reject_of(
        send_prepare(
            &t.child.url(),
            "sender-token",
            prepare("g.elsewhere", 10, Duration::from_secs(10)),
        )
        .await,
    );
    assert_eq!(reject.code(), ErrorCode::F02_UNREACHABLE);
    assert_eq!(
        reject.triggered_by().map(|a| a.to_string()).as_deref(),
        Some("test.parent.child")
    );
}

#[tokio::test]
async fn expired_or_nearly_expired_prepares_are_rejected_and_not_forwarded() {
    // Proves R00 for an expired Prepare and R02 for one with too little time, neither forwarded.
    let t = topology(Behaviour::Fulfill).await;
    let mut expired = prepare("test.parent.receiver", 10, Duration::from_secs(10));
    expired.set_expires_at(SystemTime::now() - Duration::from_secs(1));
    let reject = reject_of(send_prepare(&t.child.url(), "sender-token", expired).await);
    assert_eq!(reject.code(), ErrorCode::R00_TRANSFER_TIMED_OUT);
    let reject = reject_of(
        send_prepare(
            &t.child.url(),
            "sender-token",
            prepare("test.parent.receiver", 10, Duration::from_millis(700)),
        )
        .await,
    );
    assert_eq!(reject.code(), ErrorCode::R02_INSUFFICIENT_TIMEOUT);
    assert_eq!(t.receiver.received(), 0);
}

#[tokio::test]
async fn missing_or_wrong_token_gets_401_and_nothing_is_forwarded() {
    // Proves authentication happens before anything is forwarded, on both paths.
    let t = topology(Behaviour::Fulfill).await;
    let body = || {
        prepare("test.parent.receiver", 10, Duration::from_secs(10))
            .into_bytes()
            .freeze()
    };
    assert_eq!(
        send(&t.child.url(), None, body()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&t.child.url(), Some("wrong"), body()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let url = format!("http://{}/accounts/sender/ilp", t.child.addr);
    assert_eq!(
        send(&url, Some("parent-in"), body()).await.0,
        StatusCode::UNAUTHORIZED,
        "another account's token"
    );
    assert_eq!(t.receiver.received(), 0);
    // Garbage with a good token is a 400, not a crash.
    assert_eq!(
        send(
            &t.child.url(),
            Some("sender-token"),
            Bytes::from_static(b"\x0c\x05hello")
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn wrong_fulfillment_is_turned_into_a_reject() {
    // Proves the sender is never told "fulfilled" when the fulfillment does not match.
    let t = topology(Behaviour::WrongFulfillment).await;
    let reject = reject_of(
        send_prepare(
            &t.child.url(),
            "sender-token",
            prepare("test.parent.receiver", 10, Duration::from_secs(10)),
        )
        .await,
    );
    assert_eq!(reject.code(), ErrorCode::F05_WRONG_CONDITION);
    assert_eq!(
        reject.triggered_by().map(|a| a.to_string()).as_deref(),
        Some("test.parent")
    );
    assert_eq!(t.receiver.received(), 1);
}

#[tokio::test]
async fn silent_receiver_gets_r00_at_the_expiry_not_later() {
    // Proves a receiver that never answers costs the sender no more than the Prepare's expiry.
    // 6 s: two hops take 0.5 s each off it, and a busy machine may delay the packet by seconds
    // without this turning into R02 (too little time left at a hop).
    let t = topology(Behaviour::Silent).await;
    let started = Instant::now();
    let reject = reject_of(
        send_prepare(
            &t.child.url(),
            "sender-token",
            prepare("test.parent.receiver", 10, Duration::from_secs(6)),
        )
        .await,
    );
    let waited = started.elapsed();
    assert_eq!(reject.code(), ErrorCode::R00_TRANSFER_TIMED_OUT);
    assert!(
        waited < Duration::from_secs(6),
        "answered after the expiry: {waited:?}"
    );
    assert!(
        waited > Duration::from_secs(3),
        "gave up too early: {waited:?}"
    );
    assert_eq!(t.receiver.received(), 1);
}

#[tokio::test]
async fn route_added_with_the_cli_takes_effect_within_a_second() {
    // Proves a running connector picks up a CLI change through NOTIFY, without a restart.
    let t = topology(Behaviour::Fulfill).await;
    let receiver_url = t.receiver.url();
    t.parent.cli(&[
        "accounts",
        "add",
        "late",
        "--relation",
        "peer",
        "--asset-code",
        "USD",
        "--asset-scale",
        "2",
        "--outgoing-url",
        &receiver_url,
    ]);
    let child_url = t.child.url();
    let send_once = || {
        send_prepare(
            &child_url,
            "sender-token",
            prepare("test.other.x", 10, Duration::from_secs(10)),
        )
    };
    assert_eq!(
        reject_of(send_once().await).code(),
        ErrorCode::F02_UNREACHABLE
    );

    t.parent.cli(&["routes", "add", "test.other", "late"]);
    let added = Instant::now();
    loop {
        match send_once().await {
            Packet::Fulfill(_) => break,
            _ if added.elapsed() > Duration::from_secs(1) => {
                panic!("the new route was not used within a second")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(t.receiver.received(), 1);
}

#[tokio::test]
async fn metrics_count_packets_by_outcome_and_amounts_per_account() {
    // Proves /metrics moves by exactly what went through, and /health answers.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let receiver_url = receiver.url();
    let db = std::sync::Arc::new(schema::test_db::TestDb::new().await);
    e2e::add_sender(db.url(), "1000");
    e2e::add_receiver(db.url(), &receiver_url);
    let node = Node::start_on(
        db.clone(),
        "test.node",
        &[("ILP_CONNECTOR_ADMIN__LISTEN", "127.0.0.1:0")],
    );
    for _ in 0..5 {
        let packet = send_prepare(
            &node.url(),
            "alice-token",
            prepare("test.node.bob", 10, Duration::from_secs(10)),
        )
        .await;
        assert!(matches!(packet, Packet::Fulfill(_)));
    }
    for _ in 0..2 {
        let packet = send_prepare(
            &node.url(),
            "alice-token",
            prepare("test.node.nobody", 10, Duration::from_secs(10)),
        )
        .await;
        assert_eq!(reject_of(packet).code(), ErrorCode::F02_UNREACHABLE);
    }
    let (status, text) = node.admin_get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let value = |name, labels: &[(&str, &str)]| e2e::metric(&text, name, labels);
    assert_eq!(
        value("ilp_packets_total", &[("outcome", "fulfilled")]),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        value(
            "ilp_packets_total",
            &[("outcome", "rejected"), ("code", "F02")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            "ilp_amount_total",
            &[("account", "alice"), ("direction", "in")]
        ),
        Some(50.0),
        "{text}"
    );
    assert_eq!(
        value(
            "ilp_amount_total",
            &[("account", "bob"), ("direction", "out")]
        ),
        Some(50.0),
        "{text}"
    );
    assert_eq!(value("ilp_packets_in_flight", &[]), Some(0.0), "{text}");
    assert!(
        value("ilp_balance_batch_ops_count", &[]).is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert_eq!(node.admin_get("/health").await.0, StatusCode::OK);
}

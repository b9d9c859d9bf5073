//! Cross-currency forwarding: rates from the CLI and from a provider, the exact amounts that
//! reach the next hop, the books that explain them, and a real JS STREAM payment from USD/9
//! to EUR/6 through the connector.

// Fixtures panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connector::packet::{ErrorCode, Packet};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use e2e::{Behaviour, Node, Receiver, cli, free_port, send_prepare, wait_for};
use http_body_util::Full;
use schema::test_db::TestDb;

/// Adds a child `name` in `asset`/`scale` that sends with `<name>-token`, may owe us
/// `credit_limit` (empty: unlimited), and whose packets go to `outgoing` (if any).
fn add(db: &str, name: &str, asset: &str, scale: &str, credit_limit: &str, outgoing: Option<&str>) {
    let token = format!("{name}-token");
    let mut args = vec![
        "accounts",
        "add",
        name,
        "--relation",
        "child",
        "--asset-code",
        asset,
        "--asset-scale",
        scale,
        "--incoming-token",
        &token,
        "--credit-limit",
        credit_limit,
    ];
    if let Some(url) = outgoing {
        args.extend(["--outgoing-url", url, "--outgoing-token", "connector-token"]);
    }
    cli(db, &args);
}

/// Sends `amount` from alice to `destination` through `node`; the answer.
async fn pay(node: &Node, destination: &str, amount: u64) -> Packet {
    let prepare = e2e::prepare(destination, amount, Duration::from_secs(10));
    send_prepare(&node.url(), "alice-token", prepare).await
}

fn reject_of(packet: &Packet) -> Option<(ErrorCode, String)> {
    match packet {
        Packet::Reject(reject) => Some((reject.code(), reject.message_str().into_owned())),
        _ => None,
    }
}

/// (source, destination, packets) summed over `balance_conversions` for sender `from`.
async fn conversions(db: &str, from: &str) -> (i64, i64, i64) {
    #[derive(diesel::QueryableByName)]
    struct Sums {
        #[diesel(sql_type = diesel::sql_types::Int8)]
        source: i64,
        #[diesel(sql_type = diesel::sql_types::Int8)]
        destination: i64,
        #[diesel(sql_type = diesel::sql_types::Int8)]
        packets: i64,
    }
    let mut conn = AsyncPgConnection::establish(db).await.unwrap();
    let sums: Sums = diesel::sql_query(
        "SELECT coalesce(sum(c.source_amount), 0)::int8 AS source, \
                coalesce(sum(c.destination_amount), 0)::int8 AS destination, \
                coalesce(sum(c.packet_count), 0)::int8 AS packets \
         FROM balance_conversions c JOIN accounts a ON a.id = c.from_account_id WHERE a.username = $1",
    )
    .bind::<diesel::sql_types::Text, _>(from)
    .get_result(&mut conn)
    .await
    .unwrap();
    (sums.source, sums.destination, sums.packets)
}

async fn balance_of(db: &str, username: &str) -> i64 {
    let rows = e2e::account_balances(db).await;
    let row = rows.iter().find(|r| r.username == username).unwrap();
    assert_eq!(
        row.balance, row.journal,
        "{username}: balance = sum of its journal"
    );
    row.balance
}

#[tokio::test]
async fn converted_packets_deliver_exactly_what_the_rate_and_spread_say() {
    // Proves USD/9 → EUR/6 at rate(USD) 1 / rate(EUR) 2 with the node's 1 % spread delivers
    // floor(amount × 0.5 × 0.99 / 1000) per packet, that the books record both sides and the
    // gain, and that dust, a missing rate and a stale one get their documented Rejects
    // without anything forwarded.
    let db = Arc::new(TestDb::new().await);
    let url = db.url().to_owned();
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    add(&url, "alice", "USD", "9", "", None);
    add(&url, "bob", "EUR", "6", "0", Some(&receiver.url()));
    add(&url, "carol", "GBP", "2", "0", Some(&receiver.url()));
    cli(&url, &["rates", "set", "USD", "1"]);
    cli(&url, &["rates", "set", "EUR", "2"]);
    let node = Node::start_on(
        db.clone(),
        "test.node",
        &[("ILP_CONNECTOR_RATES__SPREAD", "0.01")],
    );

    let cases: [(u64, u64); 4] = [
        (1_000_000_000, 495_000),
        (2_021, 1),            // 1.000395
        (123_456_789, 61_111), // 61,111.110555
        (7, 0),                // dust: R01
    ];
    let (mut paid, mut delivered) = (0, 0);
    for (amount, expected) in cases {
        let before = receiver.amount();
        let answer = pay(&node, "test.node.bob.x", amount).await;
        if expected == 0 {
            let (code, message) = reject_of(&answer).unwrap();
            assert_eq!(code, ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT, "{message}");
            assert_eq!(receiver.amount(), before, "dust is not forwarded");
            continue;
        }
        assert!(
            matches!(answer, Packet::Fulfill(_)),
            "{:?}",
            reject_of(&answer)
        );
        assert_eq!(receiver.amount() - before, expected, "{amount} delivered");
        paid += amount as i64;
        delivered += expected as i64;
    }
    assert_eq!(balance_of(&url, "alice").await, -paid);
    assert_eq!(balance_of(&url, "bob").await, delivered);
    assert_eq!(conversions(&url, "alice").await, (paid, delivered, 3));

    // The gain per pair: at the mid rate alice's USD was worth paid × 0.5 EUR.
    #[derive(diesel::QueryableByName)]
    struct Gain {
        #[diesel(sql_type = diesel::sql_types::Text)]
        gain: String,
    }
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let gain: Gain = diesel::sql_query(
        "SELECT gain_whole::text AS gain FROM dashboard_conversions WHERE from_asset_code = 'USD'",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    let expected_gain = rust_decimal::Decimal::new(paid, 9) * rust_decimal::Decimal::new(5, 1)
        - rust_decimal::Decimal::new(delivered, 6);
    assert_eq!(
        gain.gain.parse::<rust_decimal::Decimal>().unwrap(),
        expected_gain
    );

    // No GBP rate: F02 naming it. A GBP rate that expires: used, then T00 once stale.
    let forwarded = receiver.received();
    let (code, message) = reject_of(&pay(&node, "test.node.carol", 1_000_000_000).await).unwrap();
    assert_eq!(code, ErrorCode::F02_UNREACHABLE);
    assert!(message.contains("no exchange rate for GBP"), "{message}");
    cli(
        &url,
        &["rates", "set", "GBP", "1.25", "--max-age-secs", "1"],
    );
    let (code, message) = wait_for(
        Duration::from_secs(15),
        "the GBP rate goes stale",
        || async {
            reject_of(&pay(&node, "test.node.carol", 1_000_000_000).await)
                .filter(|(code, _)| *code == ErrorCode::T00_INTERNAL_ERROR)
        },
    )
    .await;
    assert!(message.contains("GBP is stale"), "{code:?} {message}");
    let listed = cli(&url, &["rates", "list"]);
    let gbp = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["asset_code"] == "GBP")
        .unwrap();
    assert_eq!(gbp["stale"], true, "{listed}");
    // Only GBP packets that converted reached carol, each 1e9 × 0.8 × 0.99 / 10^7 = 79.2 → 79
    // pence; F02 and T00 forwarded nothing.
    let carol = balance_of(&url, "carol").await;
    let reached = i64::try_from(receiver.received() - forwarded).unwrap();
    assert_eq!(carol, 79 * reached);
}

#[tokio::test]
async fn a_rate_set_with_the_cli_is_used_by_every_replica_within_a_second() {
    // Proves the NOTIFY path: two connectors on one database both convert at a new rate
    // less than a second after `rates set` returns.
    let db = Arc::new(TestDb::new().await);
    let url = db.url().to_owned();
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    add(&url, "alice", "USD", "2", "", None);
    add(&url, "bob", "EUR", "2", "0", Some(&receiver.url()));
    cli(&url, &["rates", "set", "USD", "1"]);
    cli(&url, &["rates", "set", "EUR", "1"]);
    let nodes = [
        Node::start_on(db.clone(), "test.node", &[]),
        Node::start_on(db.clone(), "test.node", &[]),
    ];
    for node in &nodes {
        let before = receiver.amount();
        assert!(matches!(
            pay(node, "test.node.bob", 1000).await,
            Packet::Fulfill(_)
        ));
        assert_eq!(receiver.amount() - before, 1000);
    }
    cli(&url, &["rates", "set", "EUR", "2"]);
    let set_at = Instant::now();
    for node in &nodes {
        loop {
            let before = receiver.amount();
            assert!(matches!(
                pay(node, "test.node.bob", 1000).await,
                Packet::Fulfill(_)
            ));
            if receiver.amount() - before == 500 {
                break;
            }
            assert!(
                set_at.elapsed() < Duration::from_secs(1),
                "a replica still converts at the old rate {:?} after rates set",
                set_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A rate feed on 127.0.0.1 in the `json` format; answers 503 while `failing`.
async fn rate_feed(body: &'static str, failing: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let failing = failing.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let failing = AtomicBool::load(&failing, Ordering::SeqCst);
                    async move {
                        let mut response =
                            hyper::Response::new(Full::new(bytes::Bytes::from_static(
                                if failing { b"down" } else { body.as_bytes() },
                            )));
                        if failing {
                            *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_provider_keeps_rates_fresh_and_they_go_stale_when_it_stops_answering() {
    // Proves the json provider writes its rates (never over a manual one), packets convert
    // with them, they go stale once the feed fails for longer than max_age (T00), and come
    // back when it answers again.
    let db = Arc::new(TestDb::new().await);
    let url = db.url().to_owned();
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    add(&url, "alice", "USD", "2", "", None);
    add(&url, "bob", "EUR", "2", "0", Some(&receiver.url()));
    cli(&url, &["rates", "set", "JPY", "0.0067"]);
    let failing = Arc::new(AtomicBool::new(false));
    let feed = rate_feed(
        r#"{"rates": {"USD": "1", "EUR": 2, "JPY": "0.01"}}"#,
        failing.clone(),
    )
    .await;
    let feed_url = format!("http://{feed}/rates.json");
    let node = Node::start_on(
        db.clone(),
        "test.node",
        &[
            ("ILP_CONNECTOR_RATES__PROVIDER", "json"),
            ("ILP_CONNECTOR_RATES__URL", &feed_url),
            ("ILP_CONNECTOR_RATES__POLL_INTERVAL_SECS", "1"),
            ("ILP_CONNECTOR_RATES__MAX_AGE_SECS", "2"),
        ],
    );
    let converts = || async {
        let before = receiver.amount();
        matches!(pay(&node, "test.node.bob", 1000).await, Packet::Fulfill(_))
            .then(|| receiver.amount() - before)
    };
    assert_eq!(
        wait_for(Duration::from_secs(15), "the feed's rates", converts).await,
        500
    );
    let listed = cli(&url, &["rates", "list"]);
    let source = |code: &str| {
        let row = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["asset_code"] == code)
            .unwrap();
        (
            row["source"].as_str().unwrap().to_owned(),
            row["rate"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(source("EUR"), ("json".to_owned(), "2".to_owned()));
    assert_eq!(
        source("JPY"),
        ("manual".to_owned(), "0.0067".to_owned()),
        "a manual rate stays"
    );

    failing.store(true, Ordering::SeqCst);
    let stopped = Instant::now();
    let (code, message) = wait_for(
        Duration::from_secs(20),
        "the feed's rates go stale",
        || async { reject_of(&pay(&node, "test.node.bob", 1000).await) },
    )
    .await;
    assert_eq!(code, ErrorCode::T00_INTERNAL_ERROR, "{message}");
    assert!(message.contains("stale"), "{message}");
    assert!(
        stopped.elapsed() >= Duration::from_secs(1),
        "stale before max_age could pass"
    );

    failing.store(false, Ordering::SeqCst);
    assert_eq!(
        wait_for(Duration::from_secs(15), "fresh rates again", converts).await,
        500
    );
}

#[tokio::test]
async fn a_js_stream_payment_from_usd_to_eur_delivers_what_the_rate_says() {
    // Proves interoperability across assets with the JS reference (ilp-protocol-stream
    // 2.7.2-alpha.3 over ilp-plugin-http): its exchange-rate probe (F99 data relayed as is)
    // and its payment work through our conversion, the receiver gets exactly what the sender
    // was told was delivered, and the books agree with both and with the rate per packet.
    let db = Arc::new(TestDb::new().await);
    let url = db.url().to_owned();
    let (sender_port, receiver_port) = (free_port(), free_port());
    let sender_url = format!("http://127.0.0.1:{sender_port}");
    let receiver_url = format!("http://127.0.0.1:{receiver_port}");
    add(&url, "alice", "USD", "9", "", Some(&sender_url));
    add(&url, "bob", "EUR", "6", "", Some(&receiver_url));
    // At most 0.7 USD per packet: the sender learns it from our F08 and splits the payment.
    cli(
        &url,
        &[
            "accounts",
            "update",
            "alice",
            "--max-packet-amount",
            "700000001",
        ],
    );
    cli(&url, &["rates", "set", "USD", "1"]);
    cli(&url, &["rates", "set", "EUR", "2"]);
    let node = Node::start_on(
        db.clone(),
        "test.node",
        &[("ILP_CONNECTOR_RATES__SPREAD", "0.01")],
    );

    let amount: i64 = 10_000_000_000; // 10 USD at scale 9
    let result = e2e::run_js(
        "stream-pay.js",
        vec![
            ("CONNECTOR_URL", node.url()),
            ("SENDER_PORT", sender_port.to_string()),
            ("RECEIVER_PORT", receiver_port.to_string()),
            ("SENDER_TOKEN", "alice-token".into()),
            ("RECEIVER_TOKEN", "bob-token".into()),
            ("INCOMING_TOKEN", "connector-token".into()),
            ("AMOUNT", amount.to_string()),
        ],
    )
    .await;
    let number = |key: &str| result[key].as_str().unwrap().parse::<i64>().unwrap();
    assert_eq!(result["source"], "USD/9", "{result}");
    assert_eq!(result["destination"], "EUR/6", "{result}");
    assert_eq!(number("sent"), amount, "{result}");
    assert_eq!(number("received"), number("delivered"), "{result}");

    let (source, destination, packets) = conversions(&url, "alice").await;
    assert_eq!(
        source, amount,
        "alice's converted Fulfills add up to what she sent"
    );
    assert_eq!(
        destination,
        number("delivered"),
        "bob was credited what the receiver got"
    );
    assert_eq!(balance_of(&url, "alice").await, -amount);
    assert_eq!(balance_of(&url, "bob").await, destination);
    // Per packet floor(x × 0.000495): the total is at most the floor of the whole, and loses
    // less than one unit per packet to rounding.
    let whole = amount * 495 / 1_000_000;
    assert!(
        destination <= whole && destination > whole - packets,
        "{destination} of {whole} in {packets} packets"
    );
    assert!(
        packets >= 15,
        "{packets} packets for 10 USD at 0.7 USD per packet"
    );
}

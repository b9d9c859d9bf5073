//! STREAM payments with the JS reference (`ilp-protocol-stream` 2.7.2-alpha.3) on the other
//! side: a JS sender paying an account the connector hosts (SPSP), and `ilp-connector pay`
//! paying a JS receiver, across two assets; a payment of thousands of packets; and `pay`'s
//! failures, each of which changes no balance.

// Fixtures panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use e2e::{AccountBalance, Node, binary, cli, free_port, idle_balances, js_dir};
use schema::test_db::TestDb;

/// Adds a child `name` in `asset`/`scale` that sends with `<name>-token`, with no credit
/// limit; `extra` adds settings.
fn add(db: &str, name: &str, asset: &str, scale: &str, extra: &[&str]) {
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
        "",
    ];
    args.extend_from_slice(extra);
    cli(db, &args);
}

fn pay_report(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "pay failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn balance(rows: &[AccountBalance], username: &str) -> i64 {
    let row = rows.iter().find(|row| row.username == username).unwrap();
    assert_eq!(
        row.balance, row.journal,
        "{username}: balance = sum of its journal"
    );
    row.balance
}

fn rates(db: &str) {
    cli(db, &["rates", "set", "USD", "1"]);
    cli(db, &["rates", "set", "EUR", "2"]);
}

#[tokio::test]
async fn a_js_stream_sender_pays_an_account_hosted_here_across_assets() {
    // Proves the SPSP endpoint and the hosted STREAM receiver interoperate with the JS
    // sender: it learns the rate from our receiver's F99 answers, pays USD/9 into carol's
    // EUR/6 account, and what it says was delivered is exactly what carol is credited, with
    // alice debited exactly what it sent.
    let db = Arc::new(TestDb::new().await);
    let url = db.url().to_owned();
    let sender_port = free_port();
    add(
        &url,
        "alice",
        "USD",
        "9",
        &[
            "--outgoing-url",
            &format!("http://127.0.0.1:{sender_port}"),
            "--outgoing-token",
            "connector-token",
            // At most 0.7 USD per packet: the sender learns it from our F08 and splits.
            "--max-packet-amount",
            "700000001",
        ],
    );
    add(&url, "carol", "EUR", "6", &["--stream-receiver", "true"]);
    add(&url, "dave", "EUR", "6", &[]);
    rates(&url);
    let node = Node::start_on(
        db.clone(),
        "test.node",
        &[("ILP_CONNECTOR_RATES__SPREAD", "0.01")],
    );

    // Only an account that opted in answers SPSP.
    let (status, _) = e2e::http_get(node.addr, "/dave").await;
    assert_eq!(status, 404);
    let (status, _) = e2e::http_get(node.addr, "/nobody").await;
    assert_eq!(status, 404);

    let amount: i64 = 10_000_000_000; // 10 USD at scale 9
    let result = e2e::run_js(
        "stream-send.js",
        vec![
            ("CONNECTOR_URL", node.url()),
            ("SENDER_PORT", sender_port.to_string()),
            ("SENDER_TOKEN", "alice-token".into()),
            ("INCOMING_TOKEN", "connector-token".into()),
            ("SPSP_URL", format!("http://{}/carol", node.addr)),
            ("AMOUNT", amount.to_string()),
        ],
    )
    .await;
    let number = |key: &str| result[key].as_str().unwrap().parse::<i64>().unwrap();
    assert!(
        result["destination_account"]
            .as_str()
            .unwrap()
            .starts_with("test.node.carol."),
        "{result}"
    );
    assert_eq!(result["destination"], "EUR/6", "{result}");
    assert_eq!(number("sent"), amount, "{result}");
    // 10 USD at 0.5 EUR per USD, less 1 % spread, floored per packet: a little under 4.95.
    let delivered = number("delivered");
    assert!(
        (4_940_000..=4_950_000).contains(&delivered),
        "{delivered} EUR units delivered"
    );

    let rows = idle_balances(&url, Duration::from_secs(10)).await;
    assert_eq!(
        balance(&rows, "carol"),
        delivered,
        "carol is credited what was delivered"
    );
    assert_eq!(
        balance(&rows, "alice"),
        -amount,
        "alice is debited what she sent"
    );
    assert_eq!(balance(&rows, "dave"), 0);
}

#[tokio::test]
async fn pay_pays_a_js_stream_receiver_across_assets() {
    // Proves our sender interoperates with the JS receiver: `pay` probes the rate through the
    // connector (USD/9 → EUR/6), sends, and the receiver counts exactly what `pay` reports
    // delivered, which is what bob's account is credited.
    let db = Arc::new(TestDb::new().await);
    let url = db.url().to_owned();
    let receiver_port = free_port();
    add(
        &url,
        "alice",
        "USD",
        "9",
        &["--max-packet-amount", "700000001"],
    );
    add(
        &url,
        "bob",
        "EUR",
        "6",
        &[
            "--outgoing-url",
            &format!("http://127.0.0.1:{receiver_port}"),
            "--outgoing-token",
            "connector-token",
        ],
    );
    rates(&url);
    let node = Node::start_on(
        db.clone(),
        "test.node",
        &[("ILP_CONNECTOR_RATES__SPREAD", "0.01")],
    );

    let amount: u64 = 5_000_000_000; // 5 USD
    let mut receiver = Command::new("timeout")
        .args(["120", "node", "stream-receive.js"])
        .current_dir(js_dir("ilp-protocol-stream"))
        .env("CONNECTOR_URL", node.url())
        .env("RECEIVER_PORT", receiver_port.to_string())
        .env("RECEIVER_TOKEN", "bob-token")
        .env("INCOMING_TOKEN", "connector-token")
        // Anything up to the whole amount converted at 0.5: it stops once that arrived.
        .env("EXPECT", "2475000")
        .env("WAIT_MS", "30000")
        .stdout(Stdio::piped())
        .spawn()
        .expect("running node (scripts/js.sh installs it)");
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let destination = first["destination_account"].as_str().unwrap().to_owned();
    let secret = first["shared_secret"].as_str().unwrap().to_owned();
    assert!(destination.starts_with("test.node.bob."), "{first}");

    let out = tokio::task::spawn_blocking({
        let handle = node_handle(&node);
        move || {
            handle.pay(&[
                "--shared-secret",
                &secret,
                &destination,
                &amount.to_string(),
            ])
        }
    })
    .await
    .unwrap();
    let report = pay_report(&out);
    eprintln!("pay: {report}");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["source_sent"], amount, "{report}");
    assert_eq!(report["destination_asset"]["code"], "EUR", "{report}");
    let delivered = report["delivered"].as_u64().unwrap();
    assert!(
        (2_470_000..=2_475_000).contains(&delivered),
        "{delivered} EUR units delivered"
    );

    let last: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = receiver.wait();
    let received: u64 = last["received"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        received, delivered,
        "the JS receiver counted what pay reports"
    );
    let rows = idle_balances(&url, Duration::from_secs(10)).await;
    assert_eq!(balance(&rows, "bob") as u64, delivered);
    assert_eq!(balance(&rows, "alice"), -(amount as i64));
}

#[tokio::test]
async fn pay_of_thousands_of_packets_to_a_hosted_receiver_is_exact() {
    // Proves a payment far larger than the largest packet completes, split in thousands of
    // packets, with the receiver credited exactly the sum `pay` reports and the sender debited
    // exactly the amount, while the SPSP answer came from another replica; same asset.
    let db = Arc::new(TestDb::new().await);
    let url = db.url().to_owned();
    add(&url, "alice", "USD", "2", &["--max-packet-amount", "1000"]);
    add(&url, "carol", "USD", "2", &["--stream-receiver", "true"]);
    let node = Node::start_on(db.clone(), "test.node", &[]);
    // A second replica on the same database hands out the connection: the node secret is
    // shared through the database, so the first one answers its packets.
    let replica = Node::start_on(db.clone(), "test.node", &[]);

    let amount = 3_000_000u64; // at most 1000 per packet: 3000 packets at least
    let spsp = format!("http://{}/carol", replica.addr);
    let out = tokio::task::spawn_blocking({
        let node = node_handle(&node);
        move || node.pay(&[&spsp, &amount.to_string()])
    })
    .await
    .unwrap();
    let report = pay_report(&out);
    eprintln!("pay: {report}");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["source_sent"], amount);
    assert_eq!(report["delivered"], amount);
    assert!(
        report["packets_fulfilled"].as_u64().unwrap() >= 3000,
        "{report}"
    );

    let rows = idle_balances(&url, Duration::from_secs(10)).await;
    assert_eq!(balance(&rows, "carol") as u64, amount);
    assert_eq!(balance(&rows, "alice"), -(amount as i64));
    assert_eq!(
        e2e::journal_packets(&url, "carol").await as u64,
        report["packets_fulfilled"].as_u64().unwrap(),
        "one post per fulfilled packet"
    );
}

#[tokio::test]
async fn pay_failures_are_clear_and_change_no_balance() {
    // Proves each way a payment cannot start ends with a non-zero exit, one clear line, and
    // no balance changed: an unreachable receiver, a receiver that never answers, an unknown
    // account, a wrong token, an amount that does not fit, an address without a secret.
    let db = Arc::new(TestDb::new().await);
    let url = db.url().to_owned();
    add(&url, "alice", "USD", "2", &[]);
    add(&url, "carol", "USD", "2", &["--stream-receiver", "true"]);
    let node = Node::start_on(db.clone(), "test.node", &[]);
    let handle = node_handle(&node);
    let spsp = format!("http://{}/carol", node.addr);

    // A port nothing listens on, and one that accepts but never answers.
    let closed = format!("http://127.0.0.1:{}/x", free_port());
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/x", silent.local_addr().unwrap());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![closed, "100".into()], "unreachable"),
        (vec![silent_url, "100".into()], "did not answer"),
        (
            vec![format!("http://{}/nobody", node.addr), "100".into()],
            "404",
        ),
        (
            vec![spsp.clone(), "18446744073709551616".into()],
            "18446744073709551616",
        ),
        (vec![spsp.clone(), "0".into()], "at least 1"),
        (
            vec!["test.node.carol.x".into(), "100".into()],
            "--shared-secret",
        ),
    ];
    for (args, reason) in cases {
        let out = tokio::task::spawn_blocking({
            let handle = handle.clone();
            move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                handle.pay(&args)
            }
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{reason}: succeeded");
        assert!(
            stderr.contains(reason),
            "{stderr:?} does not say {reason:?}"
        );
    }
    // A wrong token: the node refuses every packet, and pay says so.
    let out = tokio::task::spawn_blocking({
        let handle = handle.clone();
        move || handle.pay_with_token("wrong-token", &[&spsp, "100"])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("401"), "{stderr}");

    let rows = idle_balances(&url, Duration::from_secs(10)).await;
    assert!(
        rows.iter().all(|row| row.balance == 0 && row.journal == 0),
        "{rows:?}"
    );
    drop(silent);
}

/// What `pay` needs of a node, to run it from a blocking task.
#[derive(Clone)]
struct NodeHandle {
    addr: std::net::SocketAddr,
    database_url: String,
}

fn node_handle(node: &Node) -> NodeHandle {
    NodeHandle {
        addr: node.addr,
        database_url: node.database_url.clone(),
    }
}

impl NodeHandle {
    fn pay(&self, args: &[&str]) -> Output {
        self.pay_with_token("alice-token", args)
    }

    fn pay_with_token(&self, token: &str, args: &[&str]) -> Output {
        let url = format!("http://{}/accounts/alice/ilp", self.addr);
        Command::new("timeout")
            .arg("120")
            .arg(binary("ilp-connector"))
            .args(["--json", "pay", "--from", "alice", "--token", token])
            .args(["--node-url", &url, "--idle-timeout-secs", "5"])
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env_remove("ILP_CONNECTOR_CONFIG")
            .output()
            .expect("running ilp-connector pay")
    }
}

#[tokio::test]
async fn a_rate_that_worsens_mid_payment_stops_pay_with_the_books_matching_its_report() {
    // Proves the slippage guard end to end: the rate halves while `pay` is sending (the CLI
    // changes it; the connector applies it within milliseconds), the receiver then rejects
    // every packet below its minimum, and `pay` stops with a clear error whose report says
    // exactly what was sent and delivered, which is what the books say: nothing half-applied.
    let db = Arc::new(TestDb::new().await);
    let url = db.url().to_owned();
    add(&url, "alice", "USD", "2", &["--max-packet-amount", "1000"]);
    add(&url, "carol", "EUR", "2", &["--stream-receiver", "true"]);
    cli(&url, &["rates", "set", "USD", "1"]);
    cli(&url, &["rates", "set", "EUR", "1"]);
    let node = Node::start_on(db.clone(), "test.node", &[]);

    let amount = 20_000_000u64; // 20,000 packets: far longer than the rate change takes
    let spsp = format!("http://{}/carol", node.addr);
    let paying = tokio::task::spawn_blocking({
        let handle = node_handle(&node);
        move || handle.pay(&["--max-slippage", "0.05", &spsp, &amount.to_string()])
    });
    // Once money arrives, make EUR twice as dear: each USD now buys half a EUR.
    e2e::wait_for(Duration::from_secs(30), "the payment under way", || async {
        let rows = e2e::account_balances(&url).await;
        (rows
            .iter()
            .any(|row| row.username == "carol" && row.balance > 0))
        .then_some(())
    })
    .await;
    cli(&url, &["rates", "set", "EUR", "2"]);
    let out = paying.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "pay completed despite the rate: {stderr}"
    );
    assert!(stderr.contains("rate"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("pay: {report}");
    assert_eq!(report["complete"], false, "{report}");
    let (sent, delivered) = (
        report["source_sent"].as_i64().unwrap(),
        report["delivered"].as_i64().unwrap(),
    );
    assert!(0 < sent && (sent as u64) < amount, "{report}");

    let rows = idle_balances(&url, Duration::from_secs(10)).await;
    assert_eq!(
        balance(&rows, "alice"),
        -sent,
        "alice paid what pay reports sent"
    );
    assert_eq!(
        balance(&rows, "carol"),
        delivered,
        "carol got what pay reports delivered"
    );
}

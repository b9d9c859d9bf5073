//! `ilp-connector ping`: echo round trips through real connectors, to our own address and to
//! a peer's, moving no money.

// Fixtures panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use e2e::{Node, binary, cli, free_port, idle_balances};
use schema::test_db::TestDb;

/// What `ping` needs of a node, to run it from a blocking task.
#[derive(Clone)]
struct Target {
    addr: std::net::SocketAddr,
    database_url: String,
    ilp_address: String,
}

fn target(node: &Node) -> Target {
    Target {
        addr: node.addr,
        database_url: node.database_url.clone(),
        ilp_address: node.ilp_address.clone(),
    }
}

/// `ilp-connector --json ping ARGS` as `from` through `node`.
fn ping(node: &Target, from: &str, args: &[&str]) -> Output {
    let url = format!("http://{}/accounts/{from}/ilp", node.addr);
    let token = format!("{from}-token");
    Command::new("timeout")
        .arg("60")
        .arg(binary("ilp-connector"))
        .args([
            "--json",
            "ping",
            "--from",
            from,
            "--token",
            &token,
            "--node-url",
            &url,
        ])
        .args(["--count", "3", "--timeout-secs", "5"])
        .args(args)
        .env("DATABASE_URL", &node.database_url)
        .env("ILP_CONNECTOR_NODE__ILP_ADDRESS", &node.ilp_address)
        .env_remove("ILP_CONNECTOR_CONFIG")
        .output()
        .unwrap()
}

fn peer(db: &str, name: &str, incoming: &str, outgoing_url: &str, outgoing: &str) {
    cli(
        db,
        &[
            "accounts",
            "add",
            name,
            "--relation",
            "peer",
            "--asset-code",
            "USD",
            "--asset-scale",
            "2",
            "--incoming-token",
            incoming,
            "--outgoing-url",
            outgoing_url,
            "--outgoing-token",
            outgoing,
            "--credit-limit",
            "",
        ],
    );
}

#[tokio::test]
async fn ping_comes_back_from_our_node_and_from_a_peer() {
    // Proves the echo responder and the ping return leg: pings of our own address and of a
    // peer's (which echoes them back over its route to us) all come back fulfilled with the
    // fulfillment the CLI derived; a ping of an address nobody serves fails clearly; no
    // balance moves.
    let (db_a, db_b) = (Arc::new(TestDb::new().await), Arc::new(TestDb::new().await));
    let (port_a, port_b) = (free_port(), free_port());
    e2e::add_child(db_a.url(), "alice", "");
    peer(
        db_a.url(),
        "b",
        "b-to-a",
        &format!("http://127.0.0.1:{port_b}/ilp"),
        "a-to-b",
    );
    cli(db_a.url(), &["routes", "add", "test.b", "b"]);
    peer(
        db_b.url(),
        "a",
        "a-to-b",
        &format!("http://127.0.0.1:{port_a}/ilp"),
        "b-to-a",
    );
    cli(db_b.url(), &["routes", "add", "test.a", "a"]);
    let a = Node::start_with_url(db_a.url(), "test.a", &format!("127.0.0.1:{port_a}"), &[]);
    let b = Node::start_with_url(db_b.url(), "test.b", &format!("127.0.0.1:{port_b}"), &[]);

    for address in ["test.a", "test.b"] {
        let out = tokio::task::spawn_blocking({
            let node = target(&a);
            move || ping(&node, "alice", &[address])
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "ping {address}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        eprintln!("ping {address}: {report}");
        assert_eq!(report["replies"], 3, "{report}");
    }

    let out = tokio::task::spawn_blocking({
        let node = target(&a);
        move || ping(&node, "alice", &["test.nowhere"])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no reply from test.nowhere"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["failures"][0].as_str().unwrap().contains("F02"),
        "{report}"
    );

    for db in [&db_a, &db_b] {
        let rows = idle_balances(db.url(), Duration::from_secs(10)).await;
        assert!(
            rows.iter().all(|row| row.balance == 0 && row.journal == 0),
            "{rows:?}"
        );
    }
    drop(b);
}

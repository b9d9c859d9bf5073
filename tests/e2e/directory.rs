//! The directory of accounts and routes each connector caches: changes reach every replica
//! one row at a time, and none is lost while the LISTEN connection is down.

// Fixtures panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use connector::packet::{ErrorCode, Packet};
use e2e::{Behaviour, Node, Receiver, add_child, add_receiver, cli, prepare, send, wait_for};
use hyper::StatusCode;
use schema::test_db::TestDb;

/// What one Prepare got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Fulfilled,
    Rejected(ErrorCode),
    Refused(StatusCode),
}

async fn outcome(node: &Node, token: &str, destination: &str, amount: u64) -> Seen {
    let body = prepare(destination, amount, Duration::from_secs(10))
        .into_bytes()
        .freeze();
    match send(&node.url(), Some(token), body).await {
        (_, Some(Packet::Fulfill(_))) => Seen::Fulfilled,
        (_, Some(Packet::Reject(reject))) => Seen::Rejected(reject.code()),
        (_, Some(Packet::Prepare(_))) => panic!("a Prepare came back"),
        (status, None) => Seen::Refused(status),
    }
}

/// Waits until every node answers a Prepare from `token` to `destination` as `expected`.
async fn on_every_node(nodes: &[Node], what: &str, token: &str, destination: &str, expected: Seen) {
    for (i, node) in nodes.iter().enumerate() {
        wait_for(
            Duration::from_secs(10),
            &format!("{what} (replica {i})"),
            || async { (outcome(node, token, destination, 10).await == expected).then_some(()) },
        )
        .await;
    }
}

/// Two connectors on one database; alice (unlimited) sends, bob is `receiver`.
fn two_replicas(db: &Arc<TestDb>, receiver: &Receiver) -> [Node; 2] {
    add_child(db.url(), "alice", "");
    add_receiver(db.url(), &receiver.url());
    [
        Node::start_on(db.clone(), "test.node", &[]),
        Node::start_on(db.clone(), "test.node", &[]),
    ]
}

const F02: Seen = Seen::Rejected(ErrorCode::F02_UNREACHABLE);

#[tokio::test]
async fn cli_changes_reach_every_replica_one_row_at_a_time() {
    // Proves each kind of change reaches both running replicas without a restart, and
    // without reloading the whole directory.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let db = Arc::new(TestDb::new().await);
    let nodes = two_replicas(&db, &receiver);
    let url = db.url();
    on_every_node(
        &nodes,
        "bob reachable",
        "alice-token",
        "test.node.bob",
        Seen::Fulfilled,
    )
    .await;
    on_every_node(
        &nodes,
        "no carol yet",
        "alice-token",
        "test.node.carol.x",
        F02,
    )
    .await;

    // An account added: its own address routes to it.
    let receiver_url = receiver.url();
    cli(
        url,
        &[
            "accounts",
            "add",
            "carol",
            "--relation",
            "child",
            "--asset-code",
            "USD",
            "--asset-scale",
            "2",
            "--outgoing-url",
            &receiver_url,
        ],
    );
    on_every_node(
        &nodes,
        "carol added",
        "alice-token",
        "test.node.carol.x",
        Seen::Fulfilled,
    )
    .await;

    // A route added, then removed.
    on_every_node(&nodes, "no route yet", "alice-token", "test.far.x", F02).await;
    cli(url, &["routes", "add", "test.far", "carol"]);
    on_every_node(
        &nodes,
        "route added",
        "alice-token",
        "test.far.x",
        Seen::Fulfilled,
    )
    .await;
    cli(url, &["routes", "remove", "test.far"]);
    on_every_node(&nodes, "route removed", "alice-token", "test.far.x", F02).await;

    // An account updated: alice's largest packet is now below 10.
    cli(
        url,
        &["accounts", "update", "alice", "--max-packet-amount", "5"],
    );
    let f08 = Seen::Rejected(ErrorCode::F08_AMOUNT_TOO_LARGE);
    on_every_node(&nodes, "alice limited", "alice-token", "test.node.bob", f08).await;
    cli(
        url,
        &["accounts", "update", "alice", "--max-packet-amount", ""],
    );
    on_every_node(
        &nodes,
        "alice unlimited",
        "alice-token",
        "test.node.bob",
        Seen::Fulfilled,
    )
    .await;

    // A token rotated: the old one is refused, the new one works.
    cli(
        url,
        &[
            "accounts",
            "update",
            "alice",
            "--incoming-token",
            "alice-new",
        ],
    );
    let unauthorized = Seen::Refused(StatusCode::UNAUTHORIZED);
    on_every_node(
        &nodes,
        "old token refused",
        "alice-token",
        "test.node.bob",
        unauthorized,
    )
    .await;
    on_every_node(
        &nodes,
        "new token",
        "alice-new",
        "test.node.bob",
        Seen::Fulfilled,
    )
    .await;

    // An account removed (dave never moved money, so removal is allowed).
    add_child(url, "dave", "");
    on_every_node(&nodes, "dave known", "dave-token", "test.nowhere", F02).await;
    cli(url, &["accounts", "remove", "dave"]);
    on_every_node(
        &nodes,
        "dave removed",
        "dave-token",
        "test.nowhere",
        unauthorized,
    )
    .await;

    for node in &nodes {
        assert!(
            node.log_lines("directory reloaded").is_empty(),
            "a change reloaded the whole directory"
        );
    }
}

#[tokio::test]
async fn changes_made_while_the_listen_connection_is_down_arrive_when_it_is_back() {
    // Proves no change is missed across a lost LISTEN connection: the changes are made
    // while the replicas cannot reconnect, so no notice can ever reach them.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let db = Arc::new(TestDb::new().await);
    let nodes = two_replicas(&db, &receiver);
    on_every_node(
        &nodes,
        "bob reachable",
        "alice-token",
        "test.node.bob",
        Seen::Fulfilled,
    )
    .await;
    on_every_node(&nodes, "no route yet", "alice-token", "test.hidden.x", F02).await;

    let base_url = std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap();
    let admin = connect(&base_url).await;
    // Opened before connections are refused: where the changes are made.
    let inside = connect(db.url()).await;
    let name = db.name();
    admin
        .batch_execute(&format!(
            r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS false"#
        ))
        .await
        .unwrap();
    let cut = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'ilp-connector-listen'",
            &[&name],
        )
        .await
        .unwrap();
    assert_eq!(cut.get::<_, i64>(0), 2, "both LISTEN connections cut");
    for (i, node) in nodes.iter().enumerate() {
        wait_for(
            Duration::from_secs(10),
            &format!("replica {i} retrying"),
            || async {
                (!node
                    .log_lines("cannot LISTEN for directory changes")
                    .is_empty())
                .then_some(())
            },
        )
        .await;
    }

    inside
        .batch_execute(
            "INSERT INTO routes (prefix, account_id) \
                 SELECT 'test.hidden', id FROM accounts WHERE username = 'bob'; \
             UPDATE accounts SET max_packet_amount = 5 WHERE username = 'alice'",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for node in &nodes {
        assert_eq!(
            outcome(node, "alice-token", "test.hidden.x", 1).await,
            F02,
            "a change arrived while LISTEN was down"
        );
    }

    admin
        .batch_execute(&format!(
            r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS true"#
        ))
        .await
        .unwrap();
    let f08 = Seen::Rejected(ErrorCode::F08_AMOUNT_TOO_LARGE);
    on_every_node(
        &nodes,
        "alice limited after",
        "alice-token",
        "test.node.bob",
        f08,
    )
    .await;
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(
            outcome(node, "alice-token", "test.hidden.x", 1).await,
            Seen::Fulfilled,
            "replica {i}: the route added while LISTEN was down"
        );
        assert_eq!(node.log_lines("LISTEN connection back").len(), 1);
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

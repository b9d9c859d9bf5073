//! Per-account packet and amount rates, enforced by two replicas on one database together.

// Fixtures panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{
    Behaviour, Node, Receiver, Traffic, add_child, add_receiver, cli, run_traffic, wait_for,
};
use schema::test_db::TestDb;

/// Two connectors on one database, each knowing the other is live; alice limited by `limit`.
async fn two_replicas(receiver: &Receiver, limit: &[&str]) -> (Arc<TestDb>, [Node; 2]) {
    let db = Arc::new(TestDb::new().await);
    add_child(db.url(), "alice", "");
    let mut update = vec!["accounts", "update", "alice"];
    update.extend_from_slice(limit);
    cli(db.url(), &update);
    add_receiver(db.url(), &receiver.url());
    let nodes = [
        Node::start_on(db.clone(), "test.node", &[]),
        Node::start_on(db.clone(), "test.node", &[]),
    ];
    for node in &nodes {
        wait_for(Duration::from_secs(15), "both replicas counted", || async {
            (!node.log_lines("\"replicas\":2").is_empty()).then_some(())
        })
        .await;
    }
    (db, nodes)
}

/// Closed-loop traffic from alice through both nodes for `duration`; what it saw, and how
/// long it really ran.
async fn traffic(nodes: &[Node; 2], amount: u64, duration: Duration) -> (Traffic, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let runs: Vec<_> = nodes
        .iter()
        .map(|node| {
            tokio::spawn(run_traffic(
                node.url(),
                "alice-token",
                "test.node.bob",
                amount,
                4,
                1_000_000,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::SeqCst);
    let mut seen = Traffic::default();
    for run in runs {
        seen.merge(run.await.unwrap());
    }
    (seen, started.elapsed())
}

#[tokio::test]
async fn two_replicas_together_stay_within_an_accounts_packet_rate() {
    // Proves max_packets_per_second holds across replicas: each enforces half, so both
    // together fulfil at most the limit per second plus one second's burst; the rest is T05.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let (_db, nodes) = two_replicas(&receiver, &["--max-packets-per-second", "40"]).await;
    let (seen, elapsed) = traffic(&nodes, 1, Duration::from_secs(3)).await;
    let allowed = 40.0 * elapsed.as_secs_f64() + 40.0;
    let fulfilled = seen.fulfilled as f64;
    assert!(
        fulfilled <= allowed,
        "{seen:?} in {elapsed:?}: over {allowed}"
    );
    assert!(
        fulfilled >= 0.6 * 40.0 * 3.0,
        "{seen:?}: the limit let too little through"
    );
    assert!(seen.rejected("T05") > 0, "{seen:?}");
    assert_eq!(seen.rejects.len(), 1, "only T05: {seen:?}");
}

#[tokio::test]
async fn two_replicas_together_stay_within_an_accounts_amount_rate() {
    // Proves max_amount_per_second likewise, in base units: 1,000/s in packets of 10.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let (db, nodes) = two_replicas(&receiver, &["--max-amount-per-second", "1000"]).await;
    let (seen, elapsed) = traffic(&nodes, 10, Duration::from_secs(3)).await;
    let allowed = 1000.0 * elapsed.as_secs_f64() + 1000.0;
    let moved = 10.0 * seen.fulfilled as f64;
    assert!(
        moved <= allowed,
        "{seen:?} in {elapsed:?}: {moved} over {allowed}"
    );
    assert!(
        moved >= 0.6 * 1000.0 * 3.0,
        "{seen:?}: the limit let too little through"
    );
    assert!(seen.rejected("T04") > 0, "{seen:?}");
    // The books agree with what was fulfilled.
    let balances = e2e::idle_balances(db.url(), Duration::from_secs(15)).await;
    let alice = balances.iter().find(|b| b.username == "alice").unwrap();
    assert_eq!(alice.balance, -(10 * seen.fulfilled as i64));
}

//! Balances end to end: real connector processes, killed and cut off from their database,
//! and the money still adds up.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{Behaviour, Node, Receiver, account_balances, cli, free_port, run_traffic};
use schema::test_db::TestDb;

/// alice sends (credit limit `limit`), bob receives through `receiver`.
fn add_accounts(url: &str, receiver: &Receiver, limit: &str) {
    e2e::add_sender(url, limit);
    e2e::add_receiver(url, &receiver.url());
}

/// Invariant 1 after a run: per account balance = sum(journal); alice's debits are bob's
/// credits; no hold is left; every Fulfill alice saw was recorded; nothing was debited that
/// was not forwarded.
async fn assert_conserved(url: &str, fulfilled_seen: u64, receiver: &Receiver) {
    let rows = account_balances(url).await;
    for row in &rows {
        assert_eq!(
            row.balance, row.journal,
            "balance != sum(journal) for {row:?}"
        );
        assert_eq!(row.held, 0, "hold left behind: {row:?}");
    }
    let (alice, bob) = (&rows[0], &rows[1]);
    assert_eq!(
        alice.balance + bob.balance,
        0,
        "debits != credits: {rows:?}"
    );
    let debited = u64::try_from(-alice.balance).expect("alice owes, never is owed");
    assert!(
        fulfilled_seen * 10 <= debited,
        "a Fulfill went upstream unrecorded: saw {fulfilled_seen}, debited {debited}"
    );
    assert!(
        debited <= receiver.received() * 10,
        "debited {debited} for {} forwarded",
        receiver.received()
    );
}

async fn wait_for_no_holds(url: &str, within: Duration) {
    let started = Instant::now();
    while account_balances(url).await.iter().any(|row| row.held != 0) {
        assert!(
            started.elapsed() < within,
            "holds still there after {within:?}: {:?}",
            account_balances(url).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn concurrent_prepares_through_two_connectors_never_exceed_the_credit_limit() {
    // Proves invariant 2 across replicas: 208 packets of 10 against a limit of 1000 on two
    // connector processes sharing one database: exactly 100 fulfilled, the rest T04.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let db = Arc::new(TestDb::new().await);
    add_accounts(db.url(), &receiver, "1000");
    let (one, two) = (
        Node::start_on(db.clone(), "test.node", &[]),
        Node::start_on(db.clone(), "test.node", &[]),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (a, b) = tokio::join!(
        run_traffic(
            one.url(),
            "alice-token",
            "test.node.bob",
            10,
            8,
            13,
            stop.clone()
        ),
        run_traffic(
            two.url(),
            "alice-token",
            "test.node.bob",
            10,
            8,
            13,
            stop.clone()
        ),
    );
    assert_eq!(a.errors + b.errors, 0);
    assert_eq!(a.fulfilled + b.fulfilled, 100, "{a:?} {b:?}");
    assert_eq!(a.rejected("T04") + b.rejected("T04"), 108, "{a:?} {b:?}");
    let rows = account_balances(db.url()).await;
    assert_eq!(
        (rows[0].balance, rows[0].held, rows[1].balance),
        (-1000, 0, 1000)
    );
    assert_conserved(db.url(), a.fulfilled + b.fulfilled, &receiver).await;
}

#[tokio::test]
async fn money_is_conserved_when_the_connector_is_killed_during_traffic() {
    // Proves invariants 1 and 3 under SIGKILL: four kills mid-traffic, and afterwards debits
    // equal credits, journals explain balances, and the sweeper has released every hold.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let db = Arc::new(TestDb::new().await);
    add_accounts(db.url(), &receiver, "");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut node = Node::start_with_url(
        db.url(),
        "test.node",
        &listen,
        &[("ILP_CONNECTOR_BALANCES__STALE_AFTER_SECS", "2")],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(run_traffic(
        node.url(),
        "alice-token",
        "test.node.bob",
        10,
        8,
        100_000,
        stop.clone(),
    ));
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        node.kill_and_restart();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = traffic.await.unwrap();
    assert!(seen.fulfilled > 0, "{seen:?}");
    // The killed processes' holds go once their heartbeat is 2 s old.
    wait_for_no_holds(db.url(), Duration::from_secs(15)).await;
    assert_conserved(db.url(), seen.fulfilled, &receiver).await;
    drop(db);
}

/// A private PostgreSQL cluster (scripts/db.sh in a temporary directory), to stop and start.
struct PrivateCluster {
    dir: PathBuf,
    port: u16,
}

impl PrivateCluster {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/db.sh")
    }

    fn run(&self, action: &str) -> String {
        let out = Command::new(Self::script())
            .arg(action)
            .env("ILP_PG_DIR", &self.dir)
            .env("ILP_PG_PORT", self.port.to_string())
            .env("ILP_PG_DB", "ilp")
            .output()
            .expect("running scripts/db.sh");
        assert!(
            out.status.success(),
            "db.sh {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn start() -> (PrivateCluster, String) {
        let dir =
            std::env::temp_dir().join(format!("ilp-e2e-pg-{}-{}", std::process::id(), free_port()));
        let cluster = PrivateCluster {
            dir,
            port: free_port(),
        };
        let line = cluster.run("start");
        let url = line
            .strip_prefix("DATABASE_URL=")
            .expect("db.sh prints the URL")
            .to_owned();
        (cluster, url)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("destroy")
            .env("ILP_PG_DIR", &self.dir)
            .env("ILP_PG_PORT", self.port.to_string())
            .output();
    }
}

#[tokio::test]
async fn connector_rejects_while_the_database_is_down_and_recovers_by_itself() {
    // Proves a database outage costs rejected packets, never unrecorded forwarding, and the
    // connector recovers unattended: PostgreSQL stopped and started mid-traffic.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let (cluster, url) = PrivateCluster::start();
    cli(&url, &["migrate"]);
    add_accounts(&url, &receiver, "");
    let node = Node::start_with_url(&url, "test.node", "127.0.0.1:0", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(run_traffic(
        node.url(),
        "alice-token",
        "test.node.bob",
        10,
        4,
        100_000,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.run("stop");
    // Every Prepare that arrives while the database is down is refused, none is forwarded.
    // (The background loops may all be waiting to post a Fulfill, so probe explicitly.)
    let forwarded_before = receiver.received();
    for _ in 0..5 {
        let probe = e2e::send_prepare(
            &node.url(),
            "alice-token",
            e2e::prepare("test.node.bob", 10, Duration::from_secs(5)),
        )
        .await;
        match probe {
            connector::packet::Packet::Reject(reject) => {
                assert_eq!(
                    reject.code(),
                    connector::packet::ErrorCode::T00_INTERNAL_ERROR
                )
            }
            other => panic!("a Prepare went through while the database was down: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        receiver.received() <= forwarded_before + 4,
        "Prepares were forwarded while the database was down"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.run("start");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);
    let during = traffic.await.unwrap();

    // Recovered: every packet now goes through.
    let after = run_traffic(
        node.url(),
        "alice-token",
        "test.node.bob",
        10,
        2,
        20,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    assert_eq!((after.fulfilled, after.errors), (40, 0), "{after:?}");
    wait_for_no_holds(&url, Duration::from_secs(10)).await;
    assert_conserved(&url, during.fulfilled + after.fulfilled, &receiver).await;
}

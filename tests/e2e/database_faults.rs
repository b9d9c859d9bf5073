//! PostgreSQL itself fails under load: killed, stopped, its writer connection cut while a
//! durable commit waits, and the books still hold: every Fulfill the next hop gave is posted
//! exactly once, none is relayed unrecorded, and reservations outlive the crash.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connector::packet::{ErrorCode, Packet};
use e2e::{
    Behaviour, Node, Receiver, Traffic, account_balances, cli, free_port, idle_balances,
    run_traffic_expiring,
};

/// How long test Prepares live: far longer than any outage here.
const EXPIRY: Duration = Duration::from_secs(30);

/// A private PostgreSQL cluster (scripts/db.sh in a temporary directory), to kill and restart.
struct PrivateCluster {
    dir: PathBuf,
    port: u16,
    url: String,
}

impl PrivateCluster {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/db.sh")
    }

    fn run(&self, action: &str) -> String {
        let out = Command::new(Self::script())
            .args(action.split(' '))
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

    fn start() -> PrivateCluster {
        let dir =
            std::env::temp_dir().join(format!("ilp-e2e-pg-{}-{}", std::process::id(), free_port()));
        let mut cluster = PrivateCluster {
            dir,
            port: free_port(),
            url: String::new(),
        };
        let line = cluster.run("start");
        cluster.url = line
            .strip_prefix("DATABASE_URL=")
            .expect("db.sh prints the URL")
            .to_owned();
        cli(&cluster.url, &["migrate"]);
        cluster
    }

    /// A synchronous streaming standby of `primary` (`scripts/db.sh standby-of`); its `url`
    /// names both hosts with `target_session_attrs=read-write`, so it reaches whichever of
    /// the two is the primary.
    fn standby_of(primary: &PrivateCluster) -> PrivateCluster {
        let dir =
            std::env::temp_dir().join(format!("ilp-e2e-pg-{}-{}", std::process::id(), free_port()));
        let mut standby = PrivateCluster {
            dir,
            port: free_port(),
            url: String::new(),
        };
        let line = standby.run(&format!("standby-of {}", primary.port));
        standby.url = line
            .strip_prefix("DATABASE_URL=")
            .expect("db.sh prints the URL")
            .to_owned();
        standby
    }

    /// SIGKILLs the postmaster and every backend at once: a crash, with no shutdown at all.
    fn kill(&self) {
        let pid_file = self.dir.join("data/postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file).expect("reading postmaster.pid");
        let pid = pid.lines().next().expect("a pid line").trim().to_owned();
        let children = Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .expect("pgrep");
        let mut pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        pids.push(pid);
        // A backend may exit by itself meanwhile: kill's status is not the test's business.
        let _ = Command::new("kill")
            .arg("-9")
            .args(&pids)
            .status()
            .expect("kill");
        // Wait until every process is gone, so a restart sees a crashed cluster.
        let started = Instant::now();
        while pids
            .iter()
            .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "postgres survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `statements` (separated by `;`) one by one: ALTER SYSTEM refuses to run in the
    /// implicit transaction of a multi-statement query. Returns the last one's messages.
    async fn sql(&self, statements: &str) -> Vec<tokio_postgres::SimpleQueryMessage> {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the private cluster");
        tokio::spawn(connection);
        let mut last = Vec::new();
        for statement in statements.split(';').filter(|s| !s.trim().is_empty()) {
            last = client.simple_query(statement).await.expect("running SQL");
        }
        last
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

/// alice (credit limit `limit`) sends to bob, who is `receiver`.
fn add_accounts(url: &str, receiver: &Receiver, limit: &str) {
    e2e::add_sender(url, limit);
    e2e::add_receiver(url, &receiver.url());
}

/// Fulfills posted on alice's account: the packet counts of her journal rows.
async fn posts_of_alice(url: &str) -> i64 {
    e2e::journal_packets(url, "alice").await
}

/// Exactly once, after a run: per account balance = sum(journal), balances sum to 0, no
/// reservation left once idle, and posts = Fulfills relayed = Fulfills the next hop gave.
async fn assert_exactly_once(url: &str, seen: &Traffic, receiver: &Receiver) {
    let rows = idle_balances(url, Duration::from_secs(20)).await;
    for row in &rows {
        assert_eq!(row.balance, row.journal, "balance != sum(journal): {row:?}");
    }
    assert_eq!(rows.iter().map(|r| r.balance).sum::<i64>(), 0, "{rows:?}");
    let relayed = i64::try_from(seen.fulfilled).unwrap();
    let given = i64::try_from(receiver.received()).unwrap();
    let posts = posts_of_alice(url).await;
    assert_eq!(
        (posts, relayed, given),
        (given, given, given),
        "posts, Fulfills relayed, Fulfills the next hop gave: {seen:?} {rows:?}"
    );
    assert_eq!(rows[0].balance, -10 * relayed, "{rows:?}");
}

fn traffic(
    node: &Node,
    concurrency: usize,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Traffic> {
    tokio::spawn(run_traffic_expiring(
        node.url(),
        "alice-token",
        "test.node.bob",
        10,
        concurrency,
        1_000_000,
        stop.clone(),
        EXPIRY,
    ))
}

/// Fulfills the next hop gave per second over `window`.
async fn rate(receiver: &Receiver, window: Duration) -> f64 {
    let before = receiver.received();
    tokio::time::sleep(window).await;
    (receiver.received() - before) as f64 / window.as_secs_f64()
}

#[tokio::test]
async fn postgres_killed_and_stopped_under_load_loses_and_doubles_nothing() {
    // Proves invariants 1, 3 and 6 when the database fails: PostgreSQL SIGKILLed three times
    // and fast-stopped twice under c=32: afterwards posts = Fulfills relayed = Fulfills the
    // next hop gave, balances equal their journals and sum to 0, nothing stays reserved, and
    // traffic comes back by itself after each restart.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let cluster = PrivateCluster::start();
    add_accounts(&cluster.url, &receiver, "1000000000000");
    let node = Node::start_with_url(&cluster.url, "test.node", "127.0.0.1:0", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&node, 32, &stop);
    let mut ratios = Vec::new();
    for round in 0..5 {
        let before = rate(&receiver, Duration::from_secs(1)).await;
        if round % 2 == 0 {
            cluster.kill();
        } else {
            cluster.run("stop");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.run("start");
        // Best one-second rate within 5 s of PostgreSQL answering again.
        let started = Instant::now();
        let mut best: f64 = 0.0;
        while started.elapsed() < Duration::from_secs(5) {
            best = best.max(rate(&receiver, Duration::from_millis(1000)).await);
        }
        ratios.push(best / before.max(1.0));
    }
    stop.store(true, Ordering::SeqCst);
    let seen = load.await.unwrap();
    eprintln!("throughput after each restart, relative to before: {ratios:.2?}; {seen:?}");
    assert_eq!(seen.errors, 0, "{seen:?}");
    assert!(
        seen.rejects.keys().all(|code| code == "T00"),
        "only T00 while the database was away: {seen:?}"
    );
    // On a quiet machine the ratio is about 1; a busy CI machine only has to show recovery.
    assert!(
        ratios.iter().all(|r| *r > 0.3),
        "traffic did not come back after a restart: {ratios:.2?}"
    );
    assert_exactly_once(&cluster.url, &seen, &receiver).await;
}

#[tokio::test]
async fn the_primary_lost_under_load_and_the_standby_promoted_loses_and_doubles_nothing() {
    // Proves the failover path (issue 17's core): with a synchronous standby and a two-host
    // URL, the primary is SIGKILLed under c=16 and the standby promoted; the connector finds
    // the new primary by itself, serves again, and on the new primary every Fulfill the next
    // hop gave is posted exactly once, balances equal their journals and sum to 0.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let primary = PrivateCluster::start();
    let standby = PrivateCluster::standby_of(&primary);
    let url = standby.url.clone(); // both hosts: whichever is the primary
    add_accounts(&url, &receiver, "1000000000000");
    let node = Node::start_with_url(&url, "test.node", "127.0.0.1:0", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&node, 16, &stop);
    let before = rate(&receiver, Duration::from_secs(1)).await;
    assert!(before > 0.0, "no traffic before the failover");
    primary.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    standby.run("promote");
    let promoted = Instant::now();
    let back = e2e::wait_for(
        Duration::from_secs(20),
        "traffic on the new primary",
        || async {
            (rate(&receiver, Duration::from_millis(500)).await > 0.0).then(|| promoted.elapsed())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = load.await.unwrap();
    eprintln!("serving again {back:?} after the promotion; {seen:?}");
    assert_eq!(seen.errors, 0, "{seen:?}");
    assert!(
        seen.rejects.keys().all(|code| code == "T00"),
        "only T00 while no primary answered: {seen:?}"
    );
    assert_exactly_once(&url, &seen, &receiver).await;
}

/// How a commit that waits for a standby ends.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// `pg_terminate_backend` on the balance writer's backend.
    TerminateWriter,
    /// SIGKILL of PostgreSQL.
    KillPostgres,
}

/// Makes every durable COMMIT wait after its local WAL flush (a synchronous standby that does
/// not exist), checks the writer's commit is waiting there, then cuts it as `cut` says: the
/// batch committed, but its answer is lost.
async fn committed_but_unanswered(cut: Cut) {
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let cluster = PrivateCluster::start();
    add_accounts(&cluster.url, &receiver, "1000000000000");
    let node = Node::start_with_url(
        &cluster.url,
        "test.node",
        "127.0.0.1:0",
        &[("ILP_CONNECTOR_ADMIN__LISTEN", "127.0.0.1:0")],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&node, 16, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster
        .sql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'; SELECT pg_reload_conf()")
        .await;
    // The writer's COMMIT is flushed locally and now waits for the standby.
    let started = Instant::now();
    loop {
        let rows = cluster
            .sql(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'ilp-connector-balances' AND wait_event = 'SyncRep'",
            )
            .await;
        let waiting = rows.iter().any(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0) == Some("1"),
            _ => false,
        });
        if waiting {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no commit waits for the standby"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fulfilled_before = receiver.received();
    match cut {
        Cut::TerminateWriter => {
            cluster
                .sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = 'ilp-connector-balances'",
                )
                .await;
            cluster
                .sql("ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf()")
                .await;
        }
        Cut::KillPostgres => {
            // Written to the configuration file now, read by the restarted server.
            cluster
                .sql("ALTER SYSTEM RESET synchronous_standby_names")
                .await;
            cluster.kill();
            cluster.run("start");
        }
    }
    // Traffic flows again, then stops.
    let started = Instant::now();
    while receiver.received() < fulfilled_before + 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "traffic did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let seen = load.await.unwrap();
    let (_, metrics) = node.admin_get("/metrics").await;
    let in_doubt = e2e::metric(&metrics, "ilp_balance_batches_in_doubt_total", &[]).unwrap_or(0.0);
    assert!(
        in_doubt >= 1.0,
        "no batch was in doubt ({cut:?}): {metrics}"
    );
    assert_exactly_once(&cluster.url, &seen, &receiver).await;
}

#[tokio::test]
async fn a_commit_whose_writer_connection_is_cut_is_applied_exactly_once() {
    // Proves invariant 6 for a lost answer: the writer's backend terminated while its durable
    // COMMIT waits (committed locally, unanswered): every packet of that batch posted once.
    committed_but_unanswered(Cut::TerminateWriter).await;
}

#[tokio::test]
async fn a_commit_cut_by_a_postgres_crash_is_applied_exactly_once() {
    // Proves invariant 6 across a crash: PostgreSQL SIGKILLed while the writer's durable
    // COMMIT waits (flushed locally, unanswered): after recovery every packet posted once.
    committed_but_unanswered(Cut::KillPostgres).await;
}

#[tokio::test]
async fn reservations_survive_a_postgres_crash_at_the_credit_limit() {
    // Proves invariant 2 across a database crash: 16 Prepares use all of alice's credit and
    // wait at a next hop that holds them; PostgreSQL is SIGKILLed and restarted; a fresh Prepare from
    // alice then gets T04 (the reservation was durable, the holds lived on in the connector),
    // nothing more is forwarded, and each of the 16 Fulfills is posted exactly once.
    // The next hop holds the 16 until the checks are done, however slow the machine.
    let receiver = Receiver::start(Behaviour::FulfillWhenReleased).await;
    let cluster = PrivateCluster::start();
    add_accounts(&cluster.url, &receiver, "160");
    let node = Node::start_with_url(&cluster.url, "test.node", "127.0.0.1:0", &[]);
    let waiting: Vec<_> = (0..16)
        .map(|_| {
            let url = node.url();
            tokio::spawn(async move {
                e2e::send_prepare(
                    &url,
                    "alice-token",
                    e2e::prepare("test.node.bob", 10, EXPIRY),
                )
                .await
            })
        })
        .collect();
    let started = Instant::now();
    while receiver.received() < 16 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the 16 did not reach the next hop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What an operator sees meanwhile (the in-flight figure is at most ~1 s old).
    let started = Instant::now();
    loop {
        let rows = cli(&cluster.url, &["balances", "--json"]);
        let alice = &rows[0];
        if alice["in_flight"] == 160 {
            assert_eq!(alice["reserved"], 160, "{rows}");
            assert_eq!(alice["available"], 0, "{rows}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "in flight not shown: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kill();
    cluster.run("start");
    // Until the connector has reconnected, Prepares get T00; then T04.
    let started = Instant::now();
    let answer = loop {
        let answer = e2e::send_prepare(
            &node.url(),
            "alice-token",
            e2e::prepare("test.node.bob", 10, EXPIRY),
        )
        .await;
        match &answer {
            Packet::Reject(reject) if reject.code() == ErrorCode::T00_INTERNAL_ERROR => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "still T00 after 5 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => break answer,
        }
    };
    assert!(
        waiting.iter().all(|task| !task.is_finished()),
        "the 16 finished before the check: it proves nothing"
    );
    match answer {
        Packet::Reject(reject) => {
            assert_eq!(
                reject.code(),
                ErrorCode::T04_INSUFFICIENT_LIQUIDITY,
                "{reject:?}"
            )
        }
        other => panic!("a Prepare beyond the credit limit went through: {other:?}"),
    }
    receiver.release();
    let mut seen = Traffic::default();
    for task in waiting {
        match task.await.unwrap() {
            Packet::Fulfill(_) => seen.fulfilled += 1,
            other => panic!("one of the 16 was not fulfilled: {other:?}"),
        }
    }
    assert_eq!(receiver.received(), 16, "a 17th packet was forwarded");
    assert_exactly_once(&cluster.url, &seen, &receiver).await;
}

#[tokio::test]
async fn connector_rejects_while_the_database_is_down_and_recovers_by_itself() {
    // Proves a database outage costs rejected packets, never unrecorded forwarding, and the
    // connector recovers unattended: PostgreSQL stopped and started mid-traffic.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let cluster = PrivateCluster::start();
    add_accounts(&cluster.url, &receiver, "");
    let node = Node::start_with_url(&cluster.url, "test.node", "127.0.0.1:0", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&node, 4, &stop);
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.run("stop");
    // Every Prepare that arrives while the database is down is refused at once, none is
    // forwarded. (The first may find the outage; allow the loops' owed posts through.)
    let forwarded_before = receiver.received();
    // Probes expire long after the outage ends: one forwarded before the connector saw the
    // outage waits for its post, and is counted as what it turns out to be.
    let mut probes = Vec::new();
    for _ in 0..10 {
        let url = node.url();
        probes.push(tokio::spawn(async move {
            e2e::send_prepare(
                &url,
                "alice-token",
                e2e::prepare("test.node.bob", 10, EXPIRY),
            )
            .await
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t00_at_once = probes.iter().filter(|probe| probe.is_finished()).count();
    assert!(
        t00_at_once >= 8,
        "Prepares were not refused at once while the database was down ({t00_at_once} answered)"
    );
    assert!(
        receiver.received() <= forwarded_before + 6,
        "Prepares were forwarded while the database was down"
    );
    cluster.run("start");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut seen = load.await.unwrap();
    // Recovered: every packet now goes through.
    let after = e2e::run_traffic(
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
    seen.merge(after);
    // The probes' Fulfills count as relayed too; every other probe got T00, nothing else.
    for probe in probes {
        match probe.await.unwrap() {
            Packet::Fulfill(_) => seen.fulfilled += 1,
            Packet::Reject(reject) if reject.code() == ErrorCode::T00_INTERNAL_ERROR => {}
            other => panic!("a probe got {other:?}"),
        }
    }
    let rows = account_balances(&cluster.url).await;
    assert_eq!(rows[0].balance, rows[0].journal);
    assert_exactly_once(&cluster.url, &seen, &receiver).await;
}

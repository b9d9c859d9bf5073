//! Balances end to end: real connector processes sharing credit, killed, and fed absurd
//! amounts, and the money still adds up. (Faults of PostgreSQL itself: `database_faults`.)
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::{Behaviour, Node, Receiver, account_balances, free_port, idle_balances, run_traffic};
use schema::test_db::TestDb;

/// alice sends (credit limit `limit`), bob receives through `receiver`.
fn add_accounts(url: &str, receiver: &Receiver, limit: &str) {
    e2e::add_sender(url, limit);
    e2e::add_receiver(url, &receiver.url());
}

/// Invariant 1 after a run: per account balance = sum(journal); alice's debits are bob's
/// credits; no reservation is left once idle; every Fulfill alice saw was recorded; nothing
/// was debited that was not forwarded.
pub async fn assert_conserved(url: &str, fulfilled_seen: u64, receiver: &Receiver) {
    let rows = idle_balances(url, Duration::from_secs(15)).await;
    for row in &rows {
        assert_eq!(
            row.balance, row.journal,
            "balance != sum(journal) for {row:?}"
        );
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

#[tokio::test]
async fn concurrent_prepares_through_two_connectors_never_exceed_the_credit_limit() {
    // Proves invariant 2 across replicas: 208 packets of 10 against a limit of 1000 on two
    // connector processes sharing one database: at most 100 fulfilled (credit one replica
    // still has reserved when the other runs short is not lent), every other one T04.
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
    let fulfilled = a.fulfilled + b.fulfilled;
    assert!((80..=100).contains(&fulfilled), "{a:?} {b:?}");
    assert_eq!(
        a.rejected("T04") + b.rejected("T04"),
        208 - fulfilled,
        "{a:?} {b:?}"
    );
    let rows = idle_balances(db.url(), Duration::from_secs(15)).await;
    let fulfilled = i64::try_from(fulfilled).unwrap();
    assert_eq!(
        (rows[0].balance, rows[1].balance),
        (-10 * fulfilled, 10 * fulfilled)
    );
    assert_conserved(db.url(), a.fulfilled + b.fulfilled, &receiver).await;
}

#[tokio::test]
async fn money_is_conserved_when_the_connector_is_killed_during_traffic() {
    // Proves invariants 1 and 3 under SIGKILL: four kills mid-traffic, and afterwards debits
    // equal credits, journals explain balances, and the sweeper has given back every
    // reservation of the killed processes.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let db = Arc::new(TestDb::new().await);
    add_accounts(db.url(), &receiver, "100000000");
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
    // The killed processes' reservations go once their heartbeat is 2 s old.
    assert_conserved(db.url(), seen.fulfilled, &receiver).await;
    drop(db);
}

#[tokio::test]
async fn two_replicas_near_the_credit_limit_never_overdraw_nor_deadlock() {
    // Proves invariants 2 and 7 under contention: two replicas with 16 loops each send for one
    // sender kept at its credit limit (it is credited back every 100 ms): it is never below the
    // limit (sampled while running), PostgreSQL sees no deadlock, no packet gets T00, and every
    // Fulfill relayed is posted once.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let db = Arc::new(TestDb::new().await);
    add_accounts(db.url(), &receiver, "2000");
    let (one, two) = (
        Node::start_on(db.clone(), "test.node", &[]),
        Node::start_on(db.clone(), "test.node", &[]),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let conn = &mut db.connect().await;
    let sampler = {
        let (url, stop) = (db.url().to_owned(), stop.clone());
        tokio::spawn(async move {
            let (mut samples, mut lowest) = (0u64, i64::MAX);
            while !stop.load(Ordering::SeqCst) {
                for row in account_balances(&url).await {
                    if row.username == "alice" {
                        assert!(
                            row.balance - row.reserved >= -2000,
                            "below the limit: {row:?}"
                        );
                        lowest = lowest.min(row.balance);
                    }
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (samples, lowest)
        })
    };
    let refill = {
        let (url, stop) = (db.url().to_owned(), stop.clone());
        tokio::spawn(async move {
            use diesel_async::{AsyncConnection, RunQueryDsl};
            let mut conn = diesel_async::AsyncPgConnection::establish(&url)
                .await
                .unwrap();
            let mut credited = 0i64;
            while !AtomicBool::load(&stop, Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                // An operator's adjustment, journaled like every balance change.
                diesel::sql_query(
                    "WITH a AS (SELECT id FROM accounts WHERE username = 'alice'), \
                     j AS (INSERT INTO balance_journal (account_id, amount, kind) SELECT id, 300, 'adjustment' FROM a) \
                     UPDATE balances SET balance = balance + 300 WHERE account_id = (SELECT id FROM a)",
                )
                .execute(&mut conn)
                .await
                .unwrap();
                credited += 300;
            }
            credited
        })
    };
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let (a, b) = tokio::join!(
        run_traffic(
            one.url(),
            "alice-token",
            "test.node.bob",
            10,
            16,
            100_000,
            stop.clone()
        ),
        run_traffic(
            two.url(),
            "alice-token",
            "test.node.bob",
            10,
            16,
            100_000,
            stop.clone()
        ),
    );
    timer.await.unwrap();
    let (samples, lowest) = sampler.await.unwrap();
    let credited = refill.await.unwrap();
    assert!(samples > 10, "the sampler ran {samples} times");
    assert_eq!(a.errors + b.errors, 0, "{a:?} {b:?}");
    assert_eq!(a.rejected("T00") + b.rejected("T00"), 0, "{a:?} {b:?}");
    assert!(
        a.fulfilled > 0 && b.fulfilled > 0,
        "both replicas relay: {a:?} {b:?}"
    );
    assert!(
        a.rejected("T04") + b.rejected("T04") > 0,
        "the limit was reached: {a:?} {b:?}"
    );
    assert!((-2000..-1000).contains(&lowest), "lowest balance {lowest}");
    let deadlocks: i64 = {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::Int8)]
            deadlocks: i64,
        }
        diesel::sql_query(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        )
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .deadlocks
    };
    assert_eq!(deadlocks, 0, "PostgreSQL detected deadlocks");
    let rows = idle_balances(db.url(), Duration::from_secs(15)).await;
    let relayed = i64::try_from(a.fulfilled + b.fulfilled).unwrap();
    assert_eq!(rows[0].balance, credited - 10 * relayed, "{rows:?}");
    assert_eq!(rows[1].balance, 10 * relayed, "{rows:?}");
    assert_eq!(u64::try_from(relayed).unwrap(), receiver.received());
    for row in &rows {
        assert_eq!(row.balance, row.journal, "{row:?}");
    }
}

#[tokio::test]
async fn absurd_amounts_from_one_account_hurt_no_other() {
    // Proves invariant 7 against hostile amounts: while mallory sends Prepares near and beyond
    // 2^63 (and just over her limit), alice's traffic sees no failure at all, and mallory gets
    // a clear T04 or F08 for each, with her balance inside her limit.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let db = Arc::new(TestDb::new().await);
    add_accounts(db.url(), &receiver, "");
    e2e::add_child(db.url(), "mallory", "1000");
    let node = Node::start_on(db.clone(), "test.node", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let alice = tokio::spawn(run_traffic(
        node.url(),
        "alice-token",
        "test.node.bob",
        10,
        8,
        100_000,
        stop.clone(),
    ));
    let amounts = [
        i64::MAX as u64,
        i64::MAX as u64 - 1,
        1 << 63,
        u64::MAX,
        1001,
        i64::MAX as u64 / 2 + 1,
    ];
    let mut answers = Vec::new();
    let url = node.url();
    for round in 0..20 {
        let sends = amounts.iter().map(|&amount| {
            e2e::send_prepare(
                &url,
                "mallory-token",
                e2e::prepare("test.node.bob", amount, Duration::from_secs(10)),
            )
        });
        answers.extend(futures_util::future::join_all(sends).await);
        if round == 10 {
            // One that fits, among them.
            let ok = e2e::send_prepare(
                &node.url(),
                "mallory-token",
                e2e::prepare("test.node.bob", 500, Duration::from_secs(10)),
            )
            .await;
            assert!(
                matches!(ok, connector::packet::Packet::Fulfill(_)),
                "{ok:?}"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    let alice = alice.await.unwrap();
    assert!(alice.fulfilled > 0);
    assert_eq!((alice.errors, alice.rejects.len()), (0, 0), "{alice:?}");
    for answer in answers {
        match answer {
            connector::packet::Packet::Reject(reject) => {
                let code = reject.code();
                assert!(
                    code == connector::packet::ErrorCode::T04_INSUFFICIENT_LIQUIDITY
                        || code == connector::packet::ErrorCode::F08_AMOUNT_TOO_LARGE,
                    "{reject:?}"
                );
                assert!(!reject.message().is_empty(), "{reject:?}");
            }
            other => panic!("an absurd amount went through: {other:?}"),
        }
    }
    let rows = idle_balances(db.url(), Duration::from_secs(15)).await;
    let mallory = rows.iter().find(|r| r.username == "mallory").unwrap();
    assert_eq!(mallory.balance, -500);
    for row in &rows {
        assert_eq!(row.balance, row.journal, "{row:?}");
    }
    assert_eq!(rows.iter().map(|r| r.balance).sum::<i64>(), 0, "{rows:?}");
}

//! The balance SQL: batches of holds, posts and releases, and the sweeper, on a real PostgreSQL.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::models::account::insert_account;
use schema::models::balance::{
    BalanceBatch, BalanceConnection, BatchError, Post, find_balance, register_instance,
    sum_journal, sweep_instances,
};
use schema::schema::{balance_holds, connector_instances};
use schema::test_db::TestDb;
use uuid::Uuid;

use crate::constraints::new_account;

async fn account(
    conn: &mut AsyncPgConnection,
    username: &str,
    seed: u8,
    limit: Option<i64>,
) -> i64 {
    insert_account(conn, &new_account(username, &[seed; 32]), limit)
        .await
        .expect("inserting an account")
        .id
}

async fn writer(db: &TestDb) -> BalanceConnection {
    BalanceConnection::connect(&schema::PoolConfig::new(db.url(), "test-writer"))
        .await
        .expect("connecting the writer")
}

async fn apply(
    writer: &BalanceConnection,
    instance: Uuid,
    batch: BalanceBatch,
    durable: bool,
) -> Vec<bool> {
    writer
        .apply(instance, Uuid::new_v4(), &batch, durable)
        .await
        .expect("applying a batch")
}

async fn instance_share(conn: &mut AsyncPgConnection, instance: Uuid) -> i64 {
    let amounts: Vec<i64> = balance_holds::table
        .filter(balance_holds::instance_id.eq(instance))
        .select(balance_holds::amount)
        .load(conn)
        .await
        .expect("reading holds");
    amounts.iter().sum()
}

#[tokio::test]
async fn batches_keep_balance_equal_to_the_journal() {
    // Proves invariant 1 per account: balance = sum(journal), and holds end when posted or released.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let w = writer(&db).await;
    let (alice, bob, carol) = (
        account(conn, "alice", 1, Some(1000)).await,
        account(conn, "bob", 2, Some(0)).await,
        account(conn, "carol", 3, None).await,
    );
    let me = register_instance(conn, "test").await.unwrap();

    let fits = apply(
        &w,
        me,
        BalanceBatch {
            holds: vec![(alice, 100), (alice, 200), (carol, 50)],
            ..Default::default()
        },
        false,
    )
    .await;
    assert_eq!(fits, vec![true, true, true]);
    assert_eq!(find_balance(conn, alice).await.unwrap().held, 300);
    assert_eq!(instance_share(conn, me).await, 350);

    let batch = BalanceBatch {
        holds: vec![(alice, 10)],
        posts: vec![
            Post {
                from: alice,
                to: bob,
                debit: 100,
                credit: 100,
            },
            Post {
                from: carol,
                to: bob,
                debit: 50,
                credit: 49,
            },
        ],
        releases: vec![(alice, 200)],
    };
    assert_eq!(apply(&w, me, batch, true).await, vec![true]);

    for (id, balance, held) in [(alice, -100, 10), (bob, 149, 0), (carol, -50, 0)] {
        let row = find_balance(conn, id).await.unwrap();
        assert_eq!((row.balance, row.held), (balance, held), "account {id}");
        assert_eq!(
            sum_journal(conn, id).await.unwrap(),
            row.balance,
            "journal of account {id}"
        );
    }
    assert_eq!(instance_share(conn, me).await, 10);
}

#[tokio::test]
async fn holds_that_do_not_fit_are_refused_in_arrival_order() {
    // Proves the credit limit is checked per hold, in order, when a batch's total does not fit.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let w = writer(&db).await;
    let alice = account(conn, "alice", 1, Some(100)).await;
    let me = register_instance(conn, "test").await.unwrap();
    let fits = apply(
        &w,
        me,
        BalanceBatch {
            holds: vec![(alice, 60), (alice, 50), (alice, 40), (alice, 1)],
            ..Default::default()
        },
        false,
    )
    .await;
    assert_eq!(fits, vec![true, false, true, false]);
    let row = find_balance(conn, alice).await.unwrap();
    assert_eq!((row.balance, row.held), (0, 100));
    assert_eq!(instance_share(conn, me).await, 100);
}

#[tokio::test]
async fn concurrent_batches_from_two_instances_never_overdraw() {
    // Proves invariant 2 across processes: two writers racing on one account stay within its limit.
    let db = TestDb::new().await;
    let setup = &mut db.connect().await;
    let alice = account(setup, "alice", 1, Some(1000)).await;
    let (a, b) = (
        register_instance(setup, "a").await.unwrap(),
        register_instance(setup, "b").await.unwrap(),
    );
    let run = |instance: Uuid| {
        let db = &db;
        async move {
            let w = writer(db).await;
            let mut placed = 0;
            for _ in 0..40 {
                let fits = apply(
                    &w,
                    instance,
                    BalanceBatch {
                        holds: vec![(alice, 7); 5],
                        ..Default::default()
                    },
                    false,
                )
                .await;
                placed += fits.iter().filter(|f| **f).count() as i64 * 7;
            }
            placed
        }
    };
    let (placed_a, placed_b) = tokio::join!(run(a), run(b));
    let row = find_balance(setup, alice).await.unwrap();
    assert_eq!(row.held, placed_a + placed_b);
    assert!(row.held <= 1000 && row.held > 1000 - 7, "held {}", row.held);
    assert_eq!(
        instance_share(setup, a).await + instance_share(setup, b).await,
        row.held
    );
}

#[tokio::test]
async fn sweeper_releases_the_holds_of_silent_instances_only() {
    // Proves a dead process's holds are released, a live one's kept, and the dead one is fenced off.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let w = writer(&db).await;
    let alice = account(conn, "alice", 1, Some(1000)).await;
    let (dead, live) = (
        register_instance(conn, "dead").await.unwrap(),
        register_instance(conn, "live").await.unwrap(),
    );
    apply(
        &w,
        dead,
        BalanceBatch {
            holds: vec![(alice, 50)],
            ..Default::default()
        },
        false,
    )
    .await;
    apply(
        &w,
        live,
        BalanceBatch {
            holds: vec![(alice, 30)],
            ..Default::default()
        },
        false,
    )
    .await;
    diesel::update(connector_instances::table.find(dead))
        .set(connector_instances::heartbeat_at.eq(diesel::dsl::sql("now() - interval '2 minutes'")))
        .execute(conn)
        .await
        .unwrap();

    assert_eq!(
        sweep_instances(conn, None, std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        1
    );
    assert_eq!(find_balance(conn, alice).await.unwrap().held, 30);
    assert_eq!(
        sweep_instances(conn, None, std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );

    // The swept process can neither post nor release what it held.
    let late = w
        .apply(
            dead,
            Uuid::new_v4(),
            &BalanceBatch {
                releases: vec![(alice, 50)],
                ..Default::default()
            },
            false,
        )
        .await;
    assert!(matches!(late, Err(BatchError::InstanceSwept(id)) if id == dead));
    assert_eq!(find_balance(conn, alice).await.unwrap().held, 30);
}

#[tokio::test]
async fn a_committed_batch_can_be_recognised_after_the_fact() {
    // Proves the writer can tell a committed batch of posts from a lost one after an ambiguous error.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let w = writer(&db).await;
    let alice = account(conn, "alice", 1, Some(1000)).await;
    let bob = account(conn, "bob", 2, Some(0)).await;
    let me = register_instance(conn, "test").await.unwrap();
    apply(
        &w,
        me,
        BalanceBatch {
            holds: vec![(alice, 1)],
            ..Default::default()
        },
        false,
    )
    .await;
    let batch_id = Uuid::new_v4();
    w.apply(
        me,
        batch_id,
        &BalanceBatch {
            posts: vec![Post {
                from: alice,
                to: bob,
                debit: 1,
                credit: 1,
            }],
            ..Default::default()
        },
        true,
    )
    .await
    .unwrap();
    assert!(w.batch_committed(me, batch_id).await.unwrap());
    assert!(!w.batch_committed(me, Uuid::new_v4()).await.unwrap());
}

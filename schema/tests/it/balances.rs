//! The balance SQL: durable batches of posts and reservation changes, the fence that settles a
//! lost answer, and the sweeper, on a real PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::models::account::insert_account;
use schema::models::balance::{
    find_balance, register_instance, report_in_flight, sum_journal, sweep_instances,
};
use schema::models::balance_batch::{
    AccountMove, AccountState, BalanceBatch, BalanceConnection, BatchError,
};
use schema::schema::{balance_reservations, connector_instances};
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
    moves: &[(i64, AccountMove)],
) -> Vec<AccountState> {
    writer
        .apply(
            instance,
            Uuid::new_v4(),
            &moves.iter().copied().collect(),
            &[],
        )
        .await
        .expect("applying a batch")
}

fn top_up(short: i64, want: i64) -> AccountMove {
    AccountMove {
        short,
        want,
        ..Default::default()
    }
}

/// A Fulfill of `amount` from a reserved sender: (sender move, receiver move).
fn post(amount: i64) -> (AccountMove, AccountMove) {
    (
        AccountMove {
            delta: -amount,
            consumed: amount,
            packets: 1,
            ..Default::default()
        },
        AccountMove {
            delta: amount,
            packets: 1,
            ..Default::default()
        },
    )
}

async fn instance_share(conn: &mut AsyncPgConnection, instance: Uuid) -> i64 {
    let amounts: Vec<i64> = balance_reservations::table
        .filter(balance_reservations::instance_id.eq(instance))
        .select(balance_reservations::amount)
        .load(conn)
        .await
        .expect("reading reservations");
    amounts.iter().sum()
}

#[tokio::test]
async fn posts_consume_the_reservation_and_keep_balance_equal_to_the_journal() {
    // Proves invariant 1 per account and the escrow bookkeeping: a post lowers the sender's
    // balance and its reservation by the same amount, raises the next hop's, and journals both.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let w = writer(&db).await;
    let (alice, bob, carol) = (
        account(conn, "alice", 1, Some(1000)).await,
        account(conn, "bob", 2, Some(0)).await,
        account(conn, "carol", 3, None).await,
    );
    let me = register_instance(conn, "test").await.unwrap();

    let states = apply(
        &w,
        me,
        &[(alice, top_up(300, 300)), (carol, top_up(50, 100))],
    )
    .await;
    assert_eq!(
        states,
        vec![
            AccountState {
                account_id: alice,
                balance: 0,
                unlimited: false,
                reserved: 300
            },
            AccountState {
                account_id: carol,
                balance: 0,
                unlimited: true,
                reserved: 0
            },
        ]
    );
    assert_eq!(find_balance(conn, alice).await.unwrap().reserved, 300);

    let (from, to) = post(100);
    let carol_post = AccountMove {
        delta: -50,
        packets: 1,
        ..Default::default()
    };
    let to = AccountMove {
        delta: to.delta + 49,
        packets: 2,
        ..to
    };
    apply(&w, me, &[(alice, from), (bob, to), (carol, carol_post)]).await;

    for (id, balance, reserved) in [(alice, -100, 200), (bob, 149, 0), (carol, -50, 0)] {
        let row = find_balance(conn, id).await.unwrap();
        assert_eq!(
            (row.balance, row.reserved),
            (balance, reserved),
            "account {id}"
        );
        assert_eq!(
            sum_journal(conn, id).await.unwrap(),
            row.balance,
            "journal of account {id}"
        );
    }
    assert_eq!(instance_share(conn, me).await, 200);
}

#[tokio::test]
async fn top_ups_take_what_is_short_and_at_most_half_of_the_rest() {
    // Proves the sharing rule: a top-up gets its `short` when that much is left, beyond it at
    // most half of what is left, and never more than is left; a give-back returns credit.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let w = writer(&db).await;
    let alice = account(conn, "alice", 1, Some(1000)).await;
    let (a, b) = (
        register_instance(conn, "a").await.unwrap(),
        register_instance(conn, "b").await.unwrap(),
    );
    assert_eq!(
        apply(&w, a, &[(alice, top_up(100, 900))]).await[0].reserved,
        500
    );
    assert_eq!(
        apply(&w, b, &[(alice, top_up(100, 900))]).await[0].reserved,
        250
    );
    // 250 left: asking for 400 gets all 250 (it cannot have its short).
    assert_eq!(
        apply(&w, b, &[(alice, top_up(400, 400))]).await[0].reserved,
        500
    );
    assert_eq!(
        apply(&w, a, &[(alice, top_up(1, 1))]).await[0].reserved,
        500
    );
    let row = find_balance(conn, alice).await.unwrap();
    assert_eq!((row.balance, row.reserved), (0, 1000));
    // a gives 200 back; b may now have it.
    let give_back = AccountMove {
        give_back: 200,
        ..Default::default()
    };
    assert_eq!(apply(&w, a, &[(alice, give_back)]).await[0].reserved, 300);
    assert_eq!(
        apply(&w, b, &[(alice, top_up(200, 200))]).await[0].reserved,
        700
    );
    assert_eq!(find_balance(conn, alice).await.unwrap().reserved, 1000);
}

#[tokio::test]
async fn absurd_amounts_neither_overflow_nor_break_the_batch_sql() {
    // Proves the top-up arithmetic is done without bigint overflow: a top-up of i64::MAX on a
    // huge limit is granted within bounds, and a balance that would leave 64 bits is refused
    // with nothing applied.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let w = writer(&db).await;
    let rich = account(conn, "rich", 1, Some(i64::MAX)).await;
    let bob = account(conn, "bob", 2, None).await;
    let me = register_instance(conn, "test").await.unwrap();
    let states = apply(&w, me, &[(rich, top_up(i64::MAX, i64::MAX))]).await;
    assert_eq!(states[0].reserved, i64::MAX);
    let huge = AccountMove {
        delta: i64::MAX,
        packets: 1,
        ..Default::default()
    };
    apply(&w, me, &[(bob, huge)]).await;
    let again = w
        .apply(
            me,
            Uuid::new_v4(),
            &[(bob, huge)].into_iter().collect(),
            &[],
        )
        .await;
    assert!(matches!(again, Err(BatchError::Refused(_))), "{again:?}");
    assert_eq!(find_balance(conn, bob).await.unwrap().balance, i64::MAX);
    assert_eq!(sum_journal(conn, bob).await.unwrap(), i64::MAX);
}

#[tokio::test]
async fn concurrent_top_ups_from_two_instances_never_overdraw() {
    // Proves invariant 2 across processes: two writers racing top-ups and posts on one account
    // stay within its limit, and their reservations add up to `reserved`.
    let db = TestDb::new().await;
    let setup = &mut db.connect().await;
    let alice = account(setup, "alice", 1, Some(1000)).await;
    let bob = account(setup, "bob", 2, Some(0)).await;
    let (a, b) = (
        register_instance(setup, "a").await.unwrap(),
        register_instance(setup, "b").await.unwrap(),
    );
    let run = |instance: Uuid| {
        let db = &db;
        async move {
            let w = writer(db).await;
            let mut reserved = 0;
            for round in 0..40 {
                let mut batch = BalanceBatch::new();
                batch.insert(alice, top_up(7, 35));
                if round % 3 == 0 && reserved >= 7 {
                    // Post one packet of 7 from what is reserved; bob's row too, in id order.
                    let (from, to) = post(7);
                    batch.insert(
                        alice,
                        AccountMove {
                            short: 7,
                            want: 35,
                            ..from
                        },
                    );
                    batch.insert(bob, to);
                }
                let states = w
                    .apply(instance, Uuid::new_v4(), &batch, &[])
                    .await
                    .unwrap();
                reserved = states[0].reserved;
            }
        }
    };
    tokio::join!(run(a), run(b));
    let row = find_balance(setup, alice).await.unwrap();
    assert!(row.balance - row.reserved >= -1000, "{row:?}");
    assert_eq!(
        instance_share(setup, a).await + instance_share(setup, b).await,
        row.reserved
    );
    assert_eq!(sum_journal(setup, alice).await.unwrap(), row.balance);
    assert_eq!(
        find_balance(setup, bob).await.unwrap().balance,
        -row.balance
    );
}

#[tokio::test]
async fn sweeper_gives_back_the_reservations_of_silent_instances_only() {
    // Proves a dead process's reservations are given back, a live one's kept, and the dead one
    // is fenced off: it can neither post nor reserve afterwards.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let w = writer(&db).await;
    let alice = account(conn, "alice", 1, Some(1000)).await;
    let bob = account(conn, "bob", 2, Some(0)).await;
    let (dead, live) = (
        register_instance(conn, "dead").await.unwrap(),
        register_instance(conn, "live").await.unwrap(),
    );
    apply(&w, dead, &[(alice, top_up(50, 50))]).await;
    apply(&w, live, &[(alice, top_up(30, 30))]).await;
    report_in_flight(conn, dead, &[(alice, 20, 2)])
        .await
        .unwrap();
    diesel::update(connector_instances::table.find(dead))
        .set(connector_instances::heartbeat_at.eq(diesel::dsl::sql("now() - interval '2 minutes'")))
        .execute(conn)
        .await
        .unwrap();

    assert_eq!(
        sweep_instances(conn, None, Duration::from_secs(60))
            .await
            .unwrap(),
        1
    );
    assert_eq!(find_balance(conn, alice).await.unwrap().reserved, 30);
    assert_eq!(
        sweep_instances(conn, None, Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );

    let (from, to) = post(20);
    let late = w
        .apply(
            dead,
            Uuid::new_v4(),
            &[(alice, from), (bob, to)].into_iter().collect(),
            &[],
        )
        .await;
    assert!(matches!(late, Err(BatchError::InstanceSwept(id)) if id == dead));
    let row = find_balance(conn, alice).await.unwrap();
    assert_eq!((row.balance, row.reserved), (0, 30));
    let in_flight: i64 =
        diesel::sql_query("SELECT in_flight FROM dashboard_balances WHERE account_id = $1")
            .bind::<diesel::sql_types::Int8, _>(alice)
            .get_result::<InFlight>(conn)
            .await
            .unwrap()
            .in_flight;
    assert_eq!(in_flight, 0, "a swept instance's in-flight report is gone");
}

#[derive(QueryableByName)]
struct InFlight {
    #[diesel(sql_type = diesel::sql_types::Int8)]
    in_flight: i64,
}

#[tokio::test]
async fn in_flight_reports_replace_each_other_and_show_in_the_view() {
    // Proves the dashboard's in-flight figure is the sum of every instance's latest report.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let alice = account(conn, "alice", 1, Some(1000)).await;
    let (a, b) = (
        register_instance(conn, "a").await.unwrap(),
        register_instance(conn, "b").await.unwrap(),
    );
    report_in_flight(conn, a, &[(alice, 20, 2)]).await.unwrap();
    report_in_flight(conn, b, &[(alice, 5, 1)]).await.unwrap();
    report_in_flight(conn, a, &[(alice, 7, 1)]).await.unwrap();
    let read = async |conn: &mut AsyncPgConnection| {
        diesel::sql_query("SELECT in_flight FROM dashboard_balances WHERE account_id = $1")
            .bind::<diesel::sql_types::Int8, _>(alice)
            .get_result::<InFlight>(conn)
            .await
            .unwrap()
            .in_flight
    };
    assert_eq!(read(conn).await, 12);
    report_in_flight(conn, a, &[]).await.unwrap();
    assert_eq!(read(conn).await, 5);
}

#[tokio::test]
async fn a_committed_batch_is_recognised_after_the_fact() {
    // Proves invariant 6's resolution: after a lost answer the fence tells a committed batch
    // from one that never was, so the writer never applies a post twice.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let w = writer(&db).await;
    let alice = account(conn, "alice", 1, Some(1000)).await;
    let bob = account(conn, "bob", 2, Some(0)).await;
    let me = register_instance(conn, "test").await.unwrap();
    apply(&w, me, &[(alice, top_up(1, 1))]).await;
    let batch_id = Uuid::new_v4();
    let (from, to) = post(1);
    w.apply(
        me,
        batch_id,
        &[(alice, from), (bob, to)].into_iter().collect(),
        &[],
    )
    .await
    .unwrap();
    assert!(w.batch_committed(me, batch_id).await.unwrap());
    assert!(!w.batch_committed(me, Uuid::new_v4()).await.unwrap());
}

#[tokio::test]
async fn resolving_a_lost_answer_waits_for_the_transaction_still_open() {
    // Proves the resolution is final: while the batch's transaction is still open (its COMMIT
    // not yet done, as when the client's connection broke mid-commit), the question waits, and
    // then answers what that transaction did.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let me = register_instance(conn, "test").await.unwrap();
    let batch_id = Uuid::new_v4();
    let open = tokio_postgres_client(&db).await;
    open.batch_execute(&format!(
        "BEGIN; UPDATE connector_instances SET last_batch_id = '{batch_id}' WHERE id = '{me}'"
    ))
    .await
    .unwrap();
    let w = writer(&db).await;
    let asking = w.batch_committed(me, batch_id);
    tokio::pin!(asking);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut asking)
            .await
            .is_err(),
        "answered while the batch was still open"
    );
    open.batch_execute("COMMIT").await.unwrap();
    assert!(asking.await.unwrap());

    // And a transaction that rolls back leaves the fence as it was.
    let other = Uuid::new_v4();
    open.batch_execute(&format!(
        "BEGIN; UPDATE connector_instances SET last_batch_id = '{other}' WHERE id = '{me}'"
    ))
    .await
    .unwrap();
    let asking = w.batch_committed(me, other);
    tokio::pin!(asking);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut asking)
            .await
            .is_err()
    );
    open.batch_execute("ROLLBACK").await.unwrap();
    assert!(!asking.await.unwrap());
}

async fn tokio_postgres_client(db: &TestDb) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn conversions_are_recorded_with_their_batch_and_explained_by_the_view() {
    // Proves a batch's conversions are written in its transaction (once, with the assets of
    // both accounts), that a batch the fence refuses writes none, and that the view's gain is
    // what the senders paid at the mid rate minus what the next hops got.
    use rust_decimal::Decimal;
    use schema::models::balance_batch::ConversionMove;
    use std::str::FromStr;
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let w = writer(&db).await;
    let alice = account(conn, "alice", 1, None).await;
    let mut eur = new_account("eur", &[2; 32]);
    eur.asset_code = "EUR";
    eur.asset_scale = 6;
    let bob = insert_account(conn, &eur, Some(0)).await.unwrap().id;
    let me = register_instance(conn, "test").await.unwrap();
    // alice (USD/2) paid 1000 (10 USD); at 0.5 EUR per USD with 1 % spread bob got 4.95 EUR.
    let conversion = ConversionMove {
        from: alice,
        to: bob,
        rate: Decimal::from_str("0.5").unwrap(),
        spread: Decimal::from_str("0.01").unwrap(),
        source: 1000,
        destination: 4_950_000,
        packets: 3,
    };
    let moves: BalanceBatch = [
        (
            alice,
            AccountMove {
                delta: -1000,
                packets: 3,
                ..Default::default()
            },
        ),
        (
            bob,
            AccountMove {
                delta: 4_950_000,
                packets: 3,
                ..Default::default()
            },
        ),
    ]
    .into_iter()
    .collect();
    let batch_id = Uuid::new_v4();
    w.apply(me, batch_id, &moves, &[conversion]).await.unwrap();
    let stranger = Uuid::new_v4();
    assert_eq!(
        w.apply(stranger, Uuid::new_v4(), &moves, &[conversion])
            .await,
        Err(BatchError::InstanceSwept(stranger))
    );

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        reference: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        pair: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        source_amount: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        destination_amount: i64,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT reference, from_asset_code || '/' || from_asset_scale || '>' || to_asset_code || '/' || to_asset_scale AS pair, \
         source_amount, destination_amount FROM balance_conversions",
    )
    .load(conn)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![Row {
            reference: batch_id.to_string(),
            pair: "USD/2>EUR/6".into(),
            source_amount: 1000,
            destination_amount: 4_950_000,
        }]
    );
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Gain {
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        gain: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        packets: i64,
    }
    let gain: Gain = diesel::sql_query(
        "SELECT round(value_whole, 6)::text AS value, round(gain_whole, 6)::text AS gain, packets \
         FROM dashboard_conversions WHERE from_asset_code = 'USD' AND to_asset_code = 'EUR'",
    )
    .get_result(conn)
    .await
    .unwrap();
    assert_eq!(
        gain,
        Gain {
            value: "5.000000".into(),
            gain: "0.050000".into(),
            packets: 3
        }
    );
    for (id, balance) in [(alice, -1000), (bob, 4_950_000)] {
        assert_eq!(sum_journal(conn, id).await.unwrap(), balance);
    }
}

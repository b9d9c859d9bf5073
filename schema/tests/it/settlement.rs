//! Settlement SQL on a real PostgreSQL: incoming credits exactly once with leftovers kept,
//! outgoing settlements lowered, refunded and confirmed with the journal in step.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::models::account::insert_account;
use schema::models::balance::{find_balance, sum_journal};
use schema::models::incoming_settlement::{CreditError, credit_incoming_settlement};
use schema::models::settlement::{
    confirm_settlement, cumulative_settled, find_settlement, list_accounts_to_settle,
    postpone_settlement, refund_settlement, start_settlement,
};
use schema::schema::{incoming_settlements, settlement_leftovers};
use schema::test_db::TestDb;
use serde_json::json;

use crate::constraints::new_account;

async fn account(conn: &mut AsyncPgConnection, username: &str, seed: u8) -> i64 {
    insert_account(conn, &new_account(username, &[seed; 32]), Some(0))
        .await
        .expect("inserting an account")
        .id
}

async fn balance(conn: &mut AsyncPgConnection, id: i64) -> i64 {
    let balance = find_balance(conn, id)
        .await
        .expect("reading the balance")
        .balance;
    assert_eq!(
        balance,
        sum_journal(conn, id).await.expect("summing the journal"),
        "balance = sum(journal)"
    );
    balance
}

async fn leftover(conn: &mut AsyncPgConnection, id: i64) -> Option<(String, i16)> {
    settlement_leftovers::table
        .find(id)
        .select((
            diesel::dsl::sql::<diesel::sql_types::Text>("amount::text"),
            settlement_leftovers::scale,
        ))
        .first(conn)
        .await
        .optional()
        .expect("reading leftovers")
}

#[tokio::test]
async fn incoming_credit_is_exactly_once_per_key() {
    // Proves the same idempotency key twice credits once and replays the same response.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let alice = account(conn, "alice", 1).await;

    let first = credit_incoming_settlement(conn, alice, "key-1", "500", 2)
        .await
        .unwrap();
    assert_eq!(first.credited, 500);
    assert!(!first.replayed);
    assert_eq!(first.response, json!({"amount": "500", "scale": 2}));
    assert_eq!(balance(conn, alice).await, 500);

    let again = credit_incoming_settlement(conn, alice, "key-1", "500", 2)
        .await
        .unwrap();
    assert_eq!(again.credited, 0);
    assert!(again.replayed);
    assert_eq!(again.response, first.response);
    assert_eq!(balance(conn, alice).await, 500);

    // The key is per account: another account may use it.
    let bob = account(conn, "bob", 2).await;
    let other = credit_incoming_settlement(conn, bob, "key-1", "7", 2)
        .await
        .unwrap();
    assert_eq!(other.credited, 7);
    assert_eq!(balance(conn, bob).await, 7);
    assert_eq!(balance(conn, alice).await, 500);
}

#[tokio::test]
async fn concurrent_credits_with_one_key_credit_once() {
    // Proves two racing calls with one key credit once (the balance lock serialises them).
    let db = TestDb::new().await;
    let alice = account(&mut db.connect().await, "alice", 1).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut conn = db.connect().await;
        tasks.push(tokio::spawn(async move {
            credit_incoming_settlement(&mut conn, alice, "same", "100", 2)
                .await
                .unwrap()
        }));
    }
    let mut credited = 0;
    for task in tasks {
        credited += task.await.unwrap().credited;
    }
    assert_eq!(credited, 100);
    assert_eq!(balance(&mut db.connect().await, alice).await, 100);
}

#[tokio::test]
async fn leftovers_are_kept_and_credited_once_they_add_up() {
    // Proves scale conversion keeps leftovers: 12345 at scale 4 credits 123 (scale 2) and
    // keeps 45; a later 55 at scale 4 credits 1 and clears them; finer and coarser scales mix.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let alice = account(conn, "alice", 1).await;

    let first = credit_incoming_settlement(conn, alice, "a", "12345", 4)
        .await
        .unwrap();
    assert_eq!(first.credited, 123);
    assert_eq!(first.response, json!({"amount": "12345", "scale": 4}));
    assert_eq!(leftover(conn, alice).await, Some(("45".to_owned(), 4)));
    assert_eq!(balance(conn, alice).await, 123);

    let second = credit_incoming_settlement(conn, alice, "b", "55", 4)
        .await
        .unwrap();
    assert_eq!(second.credited, 1);
    assert_eq!(leftover(conn, alice).await, None);
    assert_eq!(balance(conn, alice).await, 124);

    // Below one base unit: nothing credited, all kept (and no zero journal row).
    let third = credit_incoming_settlement(conn, alice, "c", "9", 3)
        .await
        .unwrap();
    assert_eq!(third.credited, 0);
    assert_eq!(leftover(conn, alice).await, Some(("9".to_owned(), 3)));
    // 0.009 + 0.00000000000000000001 at scale 20 -> still under a cent, kept exactly.
    let fourth = credit_incoming_settlement(conn, alice, "d", "1", 20)
        .await
        .unwrap();
    assert_eq!(fourth.credited, 0);
    assert_eq!(
        leftover(conn, alice).await,
        Some(("900000000000000001".to_owned(), 20))
    );
    // + 0.001 at scale 3 -> 0.01000000000000000001: one cent credited, the rest kept.
    let fifth = credit_incoming_settlement(conn, alice, "e", "1", 3)
        .await
        .unwrap();
    assert_eq!(fifth.credited, 1);
    assert_eq!(leftover(conn, alice).await, Some(("1".to_owned(), 20)));
    // A coarser scale than the account's: 3 whole units at scale 0 = 300 cents.
    let sixth = credit_incoming_settlement(conn, alice, "f", "3", 0)
        .await
        .unwrap();
    assert_eq!(sixth.credited, 300);
    assert_eq!(leftover(conn, alice).await, Some(("1".to_owned(), 20)));
    assert_eq!(balance(conn, alice).await, 425);
}

#[tokio::test]
async fn invalid_amounts_change_nothing() {
    // Proves malformed, oversized and overflowing amounts, unknown accounts and bad keys are
    // refused and leave no balance, journal, leftover or idempotency row behind.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let alice = account(conn, "alice", 1).await;
    for bad in ["", "-5", "1.5", "1e9", "abc", " 12", &"9".repeat(41)] {
        let err = credit_incoming_settlement(conn, alice, "k", bad, 2)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CreditError::InvalidAmount(_)),
            "{bad:?}: {err:?}"
        );
    }
    // Fits NUMERIC(40,0) but not a 64-bit balance once converted.
    let err = credit_incoming_settlement(conn, alice, "k", "99999999999999999999", 2)
        .await
        .unwrap_err();
    assert!(matches!(err, CreditError::InvalidAmount(_)), "{err:?}");
    let err = credit_incoming_settlement(conn, alice, "k", "1", 0).await;
    assert!(err.is_ok());
    let err = credit_incoming_settlement(conn, alice + 1000, "k2", "1", 2)
        .await
        .unwrap_err();
    assert!(matches!(err, CreditError::UnknownAccount), "{err:?}");
    let long_key = "k".repeat(201);
    let err = credit_incoming_settlement(conn, alice, &long_key, "1", 2)
        .await
        .unwrap_err();
    assert!(matches!(err, CreditError::Db(_)), "{err:?}");

    assert_eq!(balance(conn, alice).await, 100);
    assert_eq!(leftover(conn, alice).await, None);
    let rows: i64 = incoming_settlements::table
        .count()
        .get_result(conn)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

async fn settle_setup(conn: &mut AsyncPgConnection, ledger: Option<&str>) -> i64 {
    let mut new = new_account("carol", &[9; 32]);
    new.settle_threshold = Some(1000);
    new.settle_to = 100;
    new.ledger = ledger;
    let id = insert_account(conn, &new, Some(0))
        .await
        .expect("inserting carol")
        .id;
    credit_incoming_settlement(conn, id, "funding", "1500", 2)
        .await
        .expect("funding carol");
    id
}

#[tokio::test]
async fn outgoing_settlement_lowers_once_and_refunds_on_failure() {
    // Proves start_settlement lowers the balance to settle_to once (no second settlement
    // while one is pending), refund gives it back once, and the journal follows each step.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let carol = settle_setup(conn, Some("usd")).await;
    assert_eq!(
        list_accounts_to_settle(conn, "usd", 10).await.unwrap(),
        [carol]
    );
    assert!(
        list_accounts_to_settle(conn, "eur", 10)
            .await
            .unwrap()
            .is_empty()
    );

    let settlement = start_settlement(conn, carol, "usd").await.unwrap().unwrap();
    assert_eq!(settlement.amount, 1400);
    assert_eq!(settlement.state, schema::SettlementState::Pending);
    assert_eq!(balance(conn, carol).await, 100);
    assert!(
        start_settlement(conn, carol, "usd")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(cumulative_settled(conn, &settlement).await.unwrap(), 1400);

    assert!(
        postpone_settlement(
            conn,
            settlement.id,
            std::time::Duration::from_secs(5),
            "500"
        )
        .await
        .unwrap()
    );
    let postponed = find_settlement(conn, settlement.id).await.unwrap();
    assert_eq!(
        (postponed.attempts, postponed.state.as_str()),
        (1, "pending")
    );
    assert!(postponed.next_attempt_at > settlement.next_attempt_at);

    assert!(
        refund_settlement(conn, settlement.id, "rejected")
            .await
            .unwrap()
    );
    assert!(
        !refund_settlement(conn, settlement.id, "rejected")
            .await
            .unwrap()
    );
    assert!(!confirm_settlement(conn, settlement.id).await.unwrap());
    assert_eq!(
        find_settlement(conn, settlement.id).await.unwrap().state,
        schema::SettlementState::Failed
    );
    assert_eq!(balance(conn, carol).await, 1500);
    // Refused: carol is over her threshold again but is not listed during the cool-down.
    assert_eq!(
        list_accounts_to_settle(conn, "usd", 10).await.unwrap(),
        Vec::<i64>::new()
    );

    // Settled again; confirmed this time, and the failed one no longer counts as paid.
    let again = start_settlement(conn, carol, "usd").await.unwrap().unwrap();
    assert!(confirm_settlement(conn, again.id).await.unwrap());
    assert!(!confirm_settlement(conn, again.id).await.unwrap());
    assert_eq!(cumulative_settled(conn, &again).await.unwrap(), 1400);
    assert_eq!(balance(conn, carol).await, 100);
}

#[tokio::test]
async fn an_account_without_a_ledger_is_never_lowered() {
    // Proves a threshold without a ledger settles nothing, whatever ledger asks.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let carol = settle_setup(conn, None).await;
    assert!(
        list_accounts_to_settle(conn, "usd", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        start_settlement(conn, carol, "usd")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(balance(conn, carol).await, 1500);
}

#[tokio::test]
async fn a_settlement_leaves_the_credit_reserved_for_prepares_in_flight() {
    // Proves an account whose Prepares in flight hold part of its credit is paid only what
    // leaves that reservation within its credit limit (the CHECK never fires), and is paid
    // the rest once the reservation is given back.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let carol = settle_setup(conn, Some("usd")).await;
    // A connector has reserved 600 of carol's credit for her Prepares in flight.
    diesel::update(schema::schema::balances::table.find(carol))
        .set(schema::schema::balances::reserved.eq(600))
        .execute(conn)
        .await
        .unwrap();
    let settlement = start_settlement(conn, carol, "usd").await.unwrap().unwrap();
    assert_eq!(
        settlement.amount, 900,
        "1500 - 600 reserved, credit limit 0"
    );
    assert_eq!(balance(conn, carol).await, 600);
    assert!(confirm_settlement(conn, settlement.id).await.unwrap());
    // Fully reserved: nothing may be paid, and nothing is refused by the database either.
    assert!(
        start_settlement(conn, carol, "usd")
            .await
            .unwrap()
            .is_none()
    );
    // The Prepares ended: the reservation is back, and the rest is paid down to settle_to.
    diesel::update(schema::schema::balances::table.find(carol))
        .set(schema::schema::balances::reserved.eq(0))
        .execute(conn)
        .await
        .unwrap();
    credit_incoming_settlement(conn, carol, "more", "500", 2)
        .await
        .unwrap();
    let settlement = start_settlement(conn, carol, "usd").await.unwrap().unwrap();
    assert_eq!(settlement.amount, 1000, "1100 down to settle_to 100");
    assert_eq!(balance(conn, carol).await, 100);
}

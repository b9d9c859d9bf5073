//! Rules the database enforces by itself, whatever the code above it does.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::DbError;
use schema::models::account::{NewAccount, insert_account};
use schema::schema::{balance_journal, balances, incoming_settlements};
use schema::test_db::TestDb;

pub fn new_account<'a>(username: &'a str, token_hash: &'a [u8]) -> NewAccount<'a> {
    NewAccount {
        username,
        ilp_address: None,
        asset_code: "USD",
        asset_scale: 2,
        relation: schema::Relation::Child,
        max_packet_amount: None,
        settle_threshold: None,
        settle_to: 0,
        ledger: None,
        incoming_token_hash: token_hash,
        outgoing_url: None,
        outgoing_token: None,
        round_trip_time_ms: 500,
        claims_public_key: None,
        spread: None,
        max_packets_per_second: None,
        max_amount_per_second: None,
        stream_receiver: false,
    }
}

async fn account(
    conn: &mut AsyncPgConnection,
    username: &str,
    seed: u8,
    credit_limit: Option<i64>,
) -> i64 {
    insert_account(conn, &new_account(username, &[seed; 32]), credit_limit)
        .await
        .expect("inserting a test account")
        .id
}

#[tokio::test]
async fn balance_below_credit_limit_is_refused() {
    // Proves the no-overdraft CHECK: balance - reserved never goes below -credit_limit.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let id = account(conn, "alice", 1, Some(100)).await;

    // Down to exactly the limit is allowed, reservations included.
    diesel::update(balances::table.find(id))
        .set((balances::balance.eq(-60), balances::reserved.eq(40)))
        .execute(conn)
        .await
        .unwrap();
    // One more base unit, as a reservation or as a posted debit, is refused.
    let hold = diesel::update(balances::table.find(id))
        .set(balances::reserved.eq(41))
        .execute(conn)
        .await;
    assert!(
        matches!(hold.map_err(DbError::from), Err(DbError::Refused(msg)) if msg.contains("balances_within_credit_limit"))
    );
    let post = diesel::update(balances::table.find(id))
        .set(balances::balance.eq(-61))
        .execute(conn)
        .await;
    assert!(matches!(
        post.map_err(DbError::from),
        Err(DbError::Refused(_))
    ));

    let row = schema::models::balance::find_balance(conn, id)
        .await
        .unwrap();
    assert_eq!((row.balance, row.reserved), (-60, 40));
}

#[tokio::test]
async fn unlimited_credit_allows_any_negative_balance() {
    // Proves a NULL credit limit means no limit (as for the benchmark's sender).
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let id = account(conn, "bench", 1, None).await;
    diesel::update(balances::table.find(id))
        .set(balances::balance.eq(i64::MIN / 2))
        .execute(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn duplicate_idempotency_key_is_refused() {
    // Proves an incoming settlement cannot be recorded (and credited) twice under one key.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let id = account(conn, "alice", 1, Some(0)).await;
    let insert = || {
        diesel::insert_into(incoming_settlements::table).values((
            incoming_settlements::account_id.eq(id),
            incoming_settlements::idempotency_key.eq("key-1"),
            incoming_settlements::amount.eq(diesel::dsl::sql::<diesel::sql_types::Numeric>("100")),
            incoming_settlements::scale.eq(2i16),
            incoming_settlements::credited.eq(100i64),
        ))
    };
    insert().execute(conn).await.unwrap();
    let again = insert().execute(conn).await.map_err(DbError::from);
    assert!(
        matches!(again, Err(DbError::AlreadyExists(msg)) if msg.contains("incoming_settlements_idempotency_key"))
    );
    let count: i64 = incoming_settlements::table
        .count()
        .get_result(conn)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn usernames_differing_only_in_case_collide() {
    // Proves the one case rule: `Alice` and `alice` cannot both be live accounts.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    account(conn, "alice", 1, Some(0)).await;
    let again = insert_account(conn, &new_account("ALICE", &[2; 32]), Some(0)).await;
    assert!(
        matches!(again, Err(DbError::AlreadyExists(msg)) if msg.contains("accounts_username_live_key"))
    );
}

#[tokio::test]
async fn malformed_usernames_and_assets_are_refused() {
    // Proves the CHECKs on username and asset code, so a bad row cannot come from any client.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    for (username, asset) in [("has.dot", "USD"), ("", "USD"), ("ok", "USD/x"), ("ok", "")] {
        let mut new = new_account(username, &[3; 32]);
        new.asset_code = asset;
        let result = insert_account(conn, &new, Some(0)).await;
        assert!(
            matches!(result, Err(DbError::Refused(_))),
            "{username:?} {asset:?} was accepted"
        );
    }
}

#[tokio::test]
async fn journal_is_append_only() {
    // Proves no one can rewrite the history that explains a balance.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let id = account(conn, "alice", 1, Some(0)).await;
    diesel::insert_into(balance_journal::table)
        .values((
            balance_journal::account_id.eq(id),
            balance_journal::amount.eq(5i64),
            balance_journal::kind.eq("adjustment"),
        ))
        .execute(conn)
        .await
        .unwrap();
    let update = diesel::update(balance_journal::table)
        .set(balance_journal::amount.eq(6i64))
        .execute(conn)
        .await;
    assert!(update.is_err());
    let delete = diesel::delete(balance_journal::table).execute(conn).await;
    assert!(delete.is_err());
    assert_eq!(
        schema::models::balance::sum_journal(conn, id)
            .await
            .unwrap(),
        5
    );
}

#[derive(QueryableByName)]
struct CheckDefinition {
    #[diesel(sql_type = diesel::sql_types::Text)]
    definition: String,
}

/// The quoted words of the CHECK constraint on `table.column`, sorted.
async fn checked_words(conn: &mut AsyncPgConnection, table: &str, column: &str) -> Vec<String> {
    let rows: Vec<CheckDefinition> = diesel::sql_query(
        "SELECT pg_get_constraintdef(c.oid) AS definition FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid \
         WHERE t.relname = $1 AND c.contype = 'c' AND pg_get_constraintdef(c.oid) LIKE '%(' || $2 || ' = ANY (ARRAY[%'",
    )
    .bind::<diesel::sql_types::Text, _>(table)
    .bind::<diesel::sql_types::Text, _>(column)
    .load(conn)
    .await
    .expect("reading the CHECK");
    assert_eq!(rows.len(), 1, "one CHECK on {table}.{column}");
    let mut words: Vec<String> = rows[0]
        .definition
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    words.sort();
    words
}

fn sorted(words: impl Iterator<Item = &'static str>) -> Vec<String> {
    let mut words: Vec<String> = words.map(str::to_owned).collect();
    words.sort();
    words
}

// Proves every TEXT enum has exactly the words its column's CHECK allows: a variant the
// database refuses, or a word the database allows that Rust cannot read, fails this test.
#[tokio::test]
async fn every_text_enum_matches_its_check_constraint() {
    use schema::{ClaimState, JournalKind, LedgerKind, Relation, SettlementState};
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let cases = [
        (
            "accounts",
            "relation",
            sorted(Relation::ALL.iter().map(|v| v.as_str())),
        ),
        (
            "ledgers",
            "kind",
            sorted(LedgerKind::ALL.iter().map(|v| v.as_str())),
        ),
        (
            "settlements",
            "state",
            sorted(SettlementState::ALL.iter().map(|v| v.as_str())),
        ),
        (
            "settlement_claims",
            "state",
            sorted(ClaimState::ALL.iter().map(|v| v.as_str())),
        ),
        (
            "balance_journal",
            "kind",
            sorted(JournalKind::ALL.iter().map(|v| v.as_str())),
        ),
    ];
    for (table, column, words) in cases {
        assert_eq!(
            checked_words(conn, table, column).await,
            words,
            "{table}.{column}"
        );
    }
}

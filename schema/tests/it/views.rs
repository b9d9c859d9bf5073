//! The dashboard views return exactly what the balance and settlement tables hold.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int2, Nullable, Text};
use diesel_async::RunQueryDsl;
use rust_decimal::Decimal;
use schema::models::account::{NewAccount, insert_account, remove_account};
use schema::models::settlement::{confirm_settlement, refund_settlement, start_settlement};
use schema::schema::{accounts, balances, settlements};
use schema::test_db::TestDb;

#[derive(QueryableByName, Debug)]
struct BalanceViewRow {
    #[diesel(sql_type = BigInt)]
    account_id: i64,
    #[diesel(sql_type = Text)]
    username: String,
    #[diesel(sql_type = Int2)]
    asset_scale: i16,
    #[diesel(sql_type = BigInt)]
    balance: i64,
    #[diesel(sql_type = BigInt)]
    reserved: i64,
    #[diesel(sql_type = BigInt)]
    in_flight: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    available: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    credit_limit: Option<i64>,
    #[diesel(sql_type = Text)]
    balance_whole: String,
    #[diesel(sql_type = Text)]
    reserved_whole: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    settle_threshold: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    ledger: Option<String>,
}

/// id, username, scale, balance, reserved, credit limit, settle threshold, ledger.
type RawBalance = (
    i64,
    String,
    i16,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

#[derive(QueryableByName, Debug, PartialEq)]
struct InFlightRow {
    #[diesel(sql_type = Text)]
    ledger: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    settlements: i64,
    #[diesel(sql_type = BigInt)]
    amount: i64,
}

fn account<'a>(
    username: &'a str,
    seed: &'a [u8; 32],
    asset: &'a str,
    scale: i16,
) -> NewAccount<'a> {
    NewAccount {
        username,
        ilp_address: None,
        asset_code: asset,
        asset_scale: scale,
        relation: schema::Relation::Peer,
        max_packet_amount: None,
        settle_threshold: Some(1000),
        settle_to: 0,
        ledger: Some("l1"),
        incoming_token_hash: seed,
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

#[tokio::test]
async fn dashboard_views_match_the_tables() {
    // Proves each dashboard view row equals what an independent read of the tables gives.
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let mut ids = Vec::new();
    for (i, (name, asset, scale, balance, reserved, limit)) in [
        ("alice", "USD", 2i16, 1234i64, 0i64, Some(500i64)),
        ("bob", "EUR", 3, 5000, 250, None),
        ("carol", "XRP", 9, -7, 3, Some(100)),
        ("dave", "USD", 0, 2500, 0, Some(0)),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = [i as u8 + 1; 32];
        let id = insert_account(conn, &account(name, &seed, asset, scale), limit)
            .await
            .unwrap()
            .id;
        diesel::update(balances::table.find(id))
            .set((
                balances::balance.eq(balance),
                balances::reserved.eq(reserved),
            ))
            .execute(conn)
            .await
            .unwrap();
        ids.push(id);
    }
    // Settlements in three states on one ledger.
    let bob = start_settlement(conn, ids[1], "l1")
        .await
        .unwrap()
        .expect("bob is over his threshold");
    confirm_settlement(conn, bob.id).await.unwrap();
    let dave = start_settlement(conn, ids[3], "l1")
        .await
        .unwrap()
        .expect("dave is over his threshold");
    refund_settlement(conn, dave.id, "test").await.unwrap();
    diesel::update(balances::table.find(ids[3]))
        .set(balances::balance.eq(3000))
        .execute(conn)
        .await
        .unwrap();
    start_settlement(conn, ids[3], "l1")
        .await
        .unwrap()
        .expect("dave again");
    // A removed account disappears from the view (its balance must be zero first).
    let erin = insert_account(conn, &account("erin", &[9; 32], "USD", 2), Some(0))
        .await
        .unwrap()
        .id;
    remove_account(conn, "erin").await.unwrap();

    let view: Vec<BalanceViewRow> = diesel::sql_query(
        "SELECT account_id, username, asset_scale, balance, reserved, in_flight, available, credit_limit, \
         balance_whole::text AS balance_whole, reserved_whole::text AS reserved_whole, settle_threshold, ledger \
         FROM dashboard_balances ORDER BY account_id",
    )
    .load(conn)
    .await
    .unwrap();
    let raw: Vec<RawBalance> = accounts::table
        .inner_join(balances::table)
        .filter(accounts::deleted_at.is_null())
        .order(accounts::id)
        .select((
            accounts::id,
            accounts::username,
            accounts::asset_scale,
            balances::balance,
            balances::reserved,
            balances::credit_limit,
            accounts::settle_threshold,
            accounts::ledger,
        ))
        .load(conn)
        .await
        .unwrap();
    assert_eq!(view.len(), raw.len());
    assert!(view.iter().all(|row| row.account_id != erin));
    for (row, (id, username, scale, balance, reserved, limit, threshold, ledger)) in
        view.iter().zip(raw)
    {
        assert_eq!(
            (row.account_id, &row.username, row.asset_scale),
            (id, &username, scale)
        );
        assert_eq!(
            (row.balance, row.reserved, row.in_flight, row.available),
            (balance, reserved, 0, limit.map(|l| balance - reserved + l)),
            "{row:?}"
        );
        assert_eq!(
            (row.credit_limit, row.settle_threshold, &row.ledger),
            (limit, threshold, &ledger)
        );
        let whole = |base: i64| Decimal::new(base, u32::try_from(scale).unwrap());
        assert_eq!(
            row.balance_whole.parse::<Decimal>().unwrap(),
            whole(balance),
            "{row:?}"
        );
        assert_eq!(
            row.reserved_whole.parse::<Decimal>().unwrap(),
            whole(reserved),
            "{row:?}"
        );
    }

    let view: Vec<InFlightRow> = diesel::sql_query(
        "SELECT ledger, state, settlements::int8 AS settlements, amount::int8 AS amount \
         FROM dashboard_settlements_in_flight ORDER BY ledger, state",
    )
    .load(conn)
    .await
    .unwrap();
    let raw: Vec<(String, String, i64)> = settlements::table
        .select((settlements::ledger, settlements::state, settlements::amount))
        .load(conn)
        .await
        .unwrap();
    let mut expected: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for (ledger, state, amount) in raw {
        let entry = expected.entry((ledger, state)).or_default();
        entry.0 += 1;
        entry.1 += amount;
    }
    let expected: Vec<InFlightRow> = expected
        .into_iter()
        .map(|((ledger, state), (settlements, amount))| InFlightRow {
            ledger,
            state,
            settlements,
            amount,
        })
        .collect();
    assert_eq!(view, expected);
    assert_eq!(view.len(), 3, "confirmed, failed and pending: {view:?}");
}

#[tokio::test]
async fn grafana_dashboard_queries_run_on_the_schema() {
    // Proves every SQL panel of scripts/grafana/ilp-dashboard.json runs on the migrated schema.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/grafana/ilp-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("reading the dashboard"))
            .expect("dashboard JSON");
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let mut ran = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            if let Some(sql) = target["rawSql"].as_str() {
                diesel::sql_query(sql)
                    .execute(conn)
                    .await
                    .unwrap_or_else(|err| panic!("panel {:?}: {err}", panel["title"]));
                ran += 1;
            }
        }
    }
    assert!(ran >= 4, "only {ran} SQL panels");
}

//! `balances` and `balance_journal`: what each account holder is owed, and why.
//!
//! Sign: positive = we owe the account holder. With [`super::balance_batch`] (the writer's
//! batches) this module holds the only SQL that changes balances: [`move_balance`] for
//! settlements and claims, the instance registry and the sweeper that gives back a dead
//! instance's reservations.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::{balance_journal, balances};
use crate::{DbError, JournalKind};

/// A `balances` row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = balances, check_for_backend(diesel::pg::Pg))]
pub struct BalanceRow {
    /// The account.
    pub account_id: i64,
    /// Posted balance, base units.
    pub balance: i64,
    /// Sum of the credit reservations connector instances hold on this account.
    pub reserved: i64,
    /// How far below zero `balance - reserved` may go; `None`: unlimited.
    pub credit_limit: Option<i64>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A row of the `dashboard_balances` view, the one operators read.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct BalanceView {
    /// The account.
    #[diesel(sql_type = diesel::sql_types::Int8)]
    pub account_id: i64,
    /// Its username.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub username: String,
    /// Its asset code.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub asset_code: String,
    /// Its asset scale.
    #[diesel(sql_type = diesel::sql_types::Int2)]
    pub asset_scale: i16,
    /// Posted balance, base units.
    #[diesel(sql_type = diesel::sql_types::Int8)]
    pub balance: i64,
    /// Reserved by connector instances for Prepares, base units.
    #[diesel(sql_type = diesel::sql_types::Int8)]
    pub reserved: i64,
    /// Prepares in flight (part of `reserved` for limited accounts), as of the instances'
    /// last heartbeat, base units.
    #[diesel(sql_type = diesel::sql_types::Int8)]
    pub in_flight: i64,
    /// Credit limit, base units.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Int8>)]
    pub credit_limit: Option<i64>,
    /// Settle threshold, base units.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Int8>)]
    pub settle_threshold: Option<i64>,
    /// Settle-to, base units.
    #[diesel(sql_type = diesel::sql_types::Int8)]
    pub settle_to: i64,
    /// Ledger that settles it.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub ledger: Option<String>,
}

/// Every live account's balance, from the `dashboard_balances` view.
pub async fn list_balances(conn: &mut AsyncPgConnection) -> Result<Vec<BalanceView>, DbError> {
    Ok(diesel::sql_query(
        "SELECT account_id, username, asset_code, asset_scale, balance, reserved, in_flight, credit_limit, \
         settle_threshold, settle_to, ledger FROM dashboard_balances ORDER BY account_id",
    )
    .load(conn)
    .await?)
}

/// The balance row of one account.
pub async fn find_balance(
    conn: &mut AsyncPgConnection,
    account_id: i64,
) -> Result<BalanceRow, DbError> {
    Ok(balances::table
        .find(account_id)
        .select(BalanceRow::as_select())
        .first(conn)
        .await?)
}

/// Moves the balance of `account_id` by `amount` and writes the journal row that says why,
/// inside the caller's transaction (settlements, refunds, credited claims and notices).
/// The balance CHECKs refuse a move past the credit limit ([`DbError::Refused`]).
pub(crate) async fn move_balance(
    conn: &mut AsyncPgConnection,
    account_id: i64,
    amount: i64,
    kind: JournalKind,
    reference: &str,
) -> Result<(), DbError> {
    diesel::update(balances::table.find(account_id))
        .set((
            balances::balance.eq(balances::balance + amount),
            balances::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    diesel::insert_into(balance_journal::table)
        .values((
            balance_journal::account_id.eq(account_id),
            balance_journal::amount.eq(amount),
            balance_journal::kind.eq(kind),
            balance_journal::reference.eq(reference),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Sum of the journal of one account: equals its balance, always.
pub async fn sum_journal(conn: &mut AsyncPgConnection, account_id: i64) -> Result<i64, DbError> {
    let sum: Option<i64> = balance_journal::table
        .filter(balance_journal::account_id.eq(account_id))
        .select(diesel::dsl::sql::<
            diesel::sql_types::Nullable<diesel::sql_types::Int8>,
        >("sum(amount)::bigint"))
        .first(conn)
        .await?;
    Ok(sum.unwrap_or(0))
}

/// Registers a connector process; its reservations are kept under the returned id.
pub async fn register_instance(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> Result<uuid::Uuid, DbError> {
    use crate::schema::connector_instances;
    let id = uuid::Uuid::new_v4();
    diesel::insert_into(connector_instances::table)
        .values((
            connector_instances::id.eq(id),
            connector_instances::name.eq(name),
        ))
        .execute(conn)
        .await?;
    Ok(id)
}

/// Records that `instance` is alive; false when it was swept.
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    instance: uuid::Uuid,
) -> Result<bool, DbError> {
    use crate::schema::connector_instances;
    let updated = diesel::update(connector_instances::table.find(instance))
        .set(connector_instances::heartbeat_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

/// How many connector instances heartbeat within `within` (at least this one, once it has).
pub async fn count_live_instances(
    conn: &mut AsyncPgConnection,
    within: std::time::Duration,
) -> Result<i64, DbError> {
    use crate::schema::connector_instances;
    let since =
        chrono::Utc::now() - chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
    Ok(connector_instances::table
        .filter(connector_instances::heartbeat_at.gt(since))
        .count()
        .get_result(conn)
        .await?)
}

/// Removes a cleanly stopped instance and gives back its reservations.
pub async fn deregister_instance(
    conn: &mut AsyncPgConnection,
    instance: uuid::Uuid,
) -> Result<(), DbError> {
    sweep_instances(conn, Some(instance), std::time::Duration::ZERO)
        .await
        .map(|_| ())
}

/// Gives back the reservations of connector instances whose heartbeat is older than
/// `stale_after` (or of `only`, whatever its heartbeat), and forgets those instances.
/// Returns how many were swept.
pub async fn sweep_instances(
    conn: &mut AsyncPgConnection,
    only: Option<uuid::Uuid>,
    stale_after: std::time::Duration,
) -> Result<usize, DbError> {
    use diesel::sql_types::{Nullable, Uuid as SqlUuid};
    use diesel_async::AsyncConnection;
    let seconds = stale_after.as_secs_f64();
    conn.transaction::<_, DbError, _>(async |conn| {
        // Lock the stale instances first, in id order (two sweepers may race): a batch of
        // theirs still running holds their row (its fence), so this waits for it to end.
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = SqlUuid)]
            id: uuid::Uuid,
        }
        let stale: Vec<Id> = diesel::sql_query(
            "SELECT id FROM connector_instances \
             WHERE ($1::uuid IS NULL AND heartbeat_at < now() - make_interval(secs => $2)) OR id = $1 \
             ORDER BY id FOR UPDATE",
        )
        .bind::<Nullable<SqlUuid>, _>(only)
        .bind::<diesel::sql_types::Double, _>(seconds)
        .load(conn)
        .await?;
        if stale.is_empty() {
            return Ok(0);
        }
        let ids: Vec<uuid::Uuid> = stale.iter().map(|s| s.id).collect();
        // Then the balance rows, in account-id order like every balance batch.
        diesel::sql_query(
            "SELECT b.account_id FROM balances b WHERE b.account_id IN \
             (SELECT account_id FROM balance_reservations WHERE instance_id = ANY($1)) \
             ORDER BY b.account_id FOR UPDATE",
        )
        .bind::<diesel::sql_types::Array<SqlUuid>, _>(&ids)
        .execute(conn)
        .await?;
        diesel::sql_query(
            "WITH released AS (DELETE FROM balance_reservations WHERE instance_id = ANY($1) RETURNING account_id, amount), \
             per_account AS (SELECT account_id, sum(amount)::int8 AS amount FROM released GROUP BY account_id) \
             UPDATE balances b SET reserved = b.reserved - p.amount, updated_at = now() FROM per_account p \
             WHERE b.account_id = p.account_id AND p.amount <> 0",
        )
        .bind::<diesel::sql_types::Array<SqlUuid>, _>(&ids)
        .execute(conn)
        .await?;
        diesel::delete(
            crate::schema::connector_instances::table
                .filter(crate::schema::connector_instances::id.eq_any(&ids)),
        )
        .execute(conn)
        .await?;
        Ok(ids.len())
    })
    .await
}

/// Records what `instance` has in flight per account (account, amount, packets), replacing
/// what it recorded before. A gauge for dashboards (`dashboard_balances.in_flight`).
pub async fn report_in_flight(
    conn: &mut AsyncPgConnection,
    instance: uuid::Uuid,
    in_flight: &[(i64, i64, i64)],
) -> Result<(), DbError> {
    use diesel::sql_types::{Array, Int8, Uuid as SqlUuid};
    use diesel_async::AsyncConnection;
    let accounts: Vec<i64> = in_flight.iter().map(|e| e.0).collect();
    let amounts: Vec<i64> = in_flight.iter().map(|e| e.1).collect();
    let packets: Vec<i64> = in_flight.iter().map(|e| e.2).collect();
    conn.transaction::<_, DbError, _>(async |conn| {
        use crate::schema::connector_in_flight;
        diesel::delete(
            connector_in_flight::table
                .filter(connector_in_flight::instance_id.eq(instance))
                .filter(connector_in_flight::account_id.ne_all(&accounts)),
        )
        .execute(conn)
        .await?;
        diesel::sql_query(
            "INSERT INTO connector_in_flight (instance_id, account_id, amount, packets) \
             SELECT $1, * FROM unnest($2::int8[], $3::int8[], $4::int8[]) ORDER BY 2 \
             ON CONFLICT (instance_id, account_id) DO UPDATE \
             SET amount = EXCLUDED.amount, packets = EXCLUDED.packets, updated_at = now()",
        )
        .bind::<SqlUuid, _>(instance)
        .bind::<Array<Int8>, _>(&accounts)
        .bind::<Array<Int8>, _>(&amounts)
        .bind::<Array<Int8>, _>(&packets)
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
}

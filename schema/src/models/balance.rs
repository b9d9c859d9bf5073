//! `balances` and `balance_journal`: what each account holder is owed, and why.
//!
//! Sign: positive = we owe the account holder. This module holds the only SQL that changes
//! balances.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::DbError;
use crate::schema::{balance_journal, balances};

/// A `balances` row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = balances, check_for_backend(diesel::pg::Pg))]
pub struct BalanceRow {
    /// The account.
    pub account_id: i64,
    /// Posted balance, base units.
    pub balance: i64,
    /// Sum of Prepares in flight from this account.
    pub held: i64,
    /// How far below zero `balance - held` may go; `None`: unlimited.
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
    /// Held for Prepares in flight, base units.
    #[diesel(sql_type = diesel::sql_types::Int8)]
    pub held: i64,
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
        "SELECT account_id, username, asset_code, asset_scale, balance, held, credit_limit, \
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

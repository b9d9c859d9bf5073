//! `accounts`: peers, parents and children, with their limits and credentials.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rust_decimal::Decimal;

use crate::DbError;
pub use crate::enums::Relation;
use crate::schema::{accounts, balances, routes};

/// An account row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = accounts, check_for_backend(diesel::pg::Pg))]
pub struct Account {
    /// Surrogate key.
    pub id: i64,
    /// One ILP address segment; unique among live accounts, ignoring case.
    pub username: String,
    /// The account's ILP address, when set explicitly.
    pub ilp_address: Option<String>,
    /// Asset code, e.g. `USD`.
    pub asset_code: String,
    /// Base units per whole unit, as a power of ten.
    pub asset_scale: i16,
    /// Parent, peer or child.
    pub relation: Relation,
    /// Largest packet amount accepted from this account; `None`: no limit.
    pub max_packet_amount: Option<i64>,
    /// Balance at which the worker settles; `None`: never.
    pub settle_threshold: Option<i64>,
    /// Balance the worker settles down to.
    pub settle_to: i64,
    /// Ledger (worker config name) that settles this account.
    pub ledger: Option<String>,
    /// SHA-256 of the peer's incoming bearer token.
    pub incoming_token_hash: Vec<u8>,
    /// ILP-over-HTTP endpoint we send this account's packets to.
    pub outgoing_url: Option<String>,
    /// Bearer token we send to that endpoint.
    pub outgoing_token: Option<String>,
    /// Expected round trip in milliseconds; the expiry margin.
    pub round_trip_time_ms: i32,
    /// The peer's ed25519 public key for signed claims.
    pub claims_public_key: Option<Vec<u8>>,
    /// When the row was made.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was removed; removed accounts keep their history.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Spread kept when this account's packets are converted to another asset (a fraction
    /// below 1); `None`: the node's.
    pub spread: Option<Decimal>,
    /// Prepares per second it may send, across all connectors; `None`: no limit.
    pub max_packets_per_second: Option<i64>,
    /// Base units per second it may send, across all connectors; `None`: no limit.
    pub max_amount_per_second: Option<i64>,
    /// Paid at the connector: it answers the account's STREAM packets and SPSP queries, and
    /// credits what arrives to it.
    pub stream_receiver: bool,
}

/// A new account.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = accounts)]
pub struct NewAccount<'a> {
    /// See [`Account::username`].
    pub username: &'a str,
    /// See [`Account::ilp_address`].
    pub ilp_address: Option<&'a str>,
    /// See [`Account::asset_code`].
    pub asset_code: &'a str,
    /// See [`Account::asset_scale`].
    pub asset_scale: i16,
    /// See [`Account::relation`].
    pub relation: Relation,
    /// See [`Account::max_packet_amount`].
    pub max_packet_amount: Option<i64>,
    /// See [`Account::settle_threshold`].
    pub settle_threshold: Option<i64>,
    /// See [`Account::settle_to`].
    pub settle_to: i64,
    /// See [`Account::ledger`].
    pub ledger: Option<&'a str>,
    /// See [`Account::incoming_token_hash`].
    pub incoming_token_hash: &'a [u8],
    /// See [`Account::outgoing_url`].
    pub outgoing_url: Option<&'a str>,
    /// See [`Account::outgoing_token`].
    pub outgoing_token: Option<&'a str>,
    /// See [`Account::round_trip_time_ms`].
    pub round_trip_time_ms: i32,
    /// See [`Account::claims_public_key`].
    pub claims_public_key: Option<&'a [u8]>,
    /// See [`Account::spread`].
    pub spread: Option<Decimal>,
    /// See [`Account::max_packets_per_second`].
    pub max_packets_per_second: Option<i64>,
    /// See [`Account::max_amount_per_second`].
    pub max_amount_per_second: Option<i64>,
    /// See [`Account::stream_receiver`].
    pub stream_receiver: bool,
}

/// Changes to an account: `None` leaves a column as it is; `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = accounts)]
pub struct AccountChanges {
    /// New ILP address.
    pub ilp_address: Option<Option<String>>,
    /// New relation.
    pub relation: Option<Relation>,
    /// New per-packet limit.
    pub max_packet_amount: Option<Option<i64>>,
    /// New settle threshold.
    pub settle_threshold: Option<Option<i64>>,
    /// New settle-to.
    pub settle_to: Option<i64>,
    /// New ledger.
    pub ledger: Option<Option<String>>,
    /// New incoming token hash.
    pub incoming_token_hash: Option<Vec<u8>>,
    /// New outgoing URL.
    pub outgoing_url: Option<Option<String>>,
    /// New outgoing token.
    pub outgoing_token: Option<Option<String>>,
    /// New round-trip time.
    pub round_trip_time_ms: Option<i32>,
    /// New claims public key.
    pub claims_public_key: Option<Option<Vec<u8>>>,
    /// New spread.
    pub spread: Option<Option<Decimal>>,
    /// New packet rate limit.
    pub max_packets_per_second: Option<Option<i64>>,
    /// New amount rate limit.
    pub max_amount_per_second: Option<Option<i64>>,
    /// New STREAM receiver setting.
    pub stream_receiver: Option<bool>,
}

/// Inserts an account and its balance row (balance 0, the given credit limit), atomically.
pub async fn insert_account(
    conn: &mut AsyncPgConnection,
    new: &NewAccount<'_>,
    credit_limit: Option<i64>,
) -> Result<Account, DbError> {
    conn.transaction::<_, DbError, _>(async |conn| {
        let account: Account = diesel::insert_into(accounts::table)
            .values(new)
            .returning(Account::as_returning())
            .get_result(conn)
            .await?;
        diesel::insert_into(balances::table)
            .values((
                balances::account_id.eq(account.id),
                balances::credit_limit.eq(credit_limit),
            ))
            .execute(conn)
            .await?;
        Ok(account)
    })
    .await
}

/// Every live (not removed) account, by id.
pub async fn list_live_accounts(conn: &mut AsyncPgConnection) -> Result<Vec<Account>, DbError> {
    Ok(accounts::table
        .filter(accounts::deleted_at.is_null())
        .order(accounts::id)
        .select(Account::as_select())
        .load(conn)
        .await?)
}

/// The live accounts in id order, row by row as they arrive, so a large table is never held
/// in memory whole (the connector's directory is built from it).
pub async fn stream_live_accounts(
    conn: &mut AsyncPgConnection,
) -> Result<impl futures_util::Stream<Item = Result<Account, DbError>> + Send + '_, DbError> {
    use futures_util::TryStreamExt;
    Ok(accounts::table
        .filter(accounts::deleted_at.is_null())
        .order(accounts::id)
        .select(Account::as_select())
        .load_stream::<Account>(conn)
        .await?
        .map_err(DbError::from))
}

/// The accounts with these ids, removed ones included (a running connector drops those).
pub async fn find_accounts(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
) -> Result<Vec<Account>, DbError> {
    Ok(accounts::table
        .filter(accounts::id.eq_any(ids))
        .select(Account::as_select())
        .load(conn)
        .await?)
}

/// The live account with this username, compared without regard to case.
pub async fn find_account_by_username(
    conn: &mut AsyncPgConnection,
    username: &str,
) -> Result<Account, DbError> {
    Ok(accounts::table
        .filter(accounts::deleted_at.is_null())
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(username) = lower(")
                .bind::<diesel::sql_types::Text, _>(username)
                .sql(")"),
        )
        .select(Account::as_select())
        .first(conn)
        .await?)
}

/// Applies `changes` (and a new credit limit, when given) to the live account `username`.
pub async fn update_account(
    conn: &mut AsyncPgConnection,
    username: &str,
    changes: &AccountChanges,
    credit_limit: Option<Option<i64>>,
) -> Result<Account, DbError> {
    let username = username.to_owned();
    let changes = changes.clone();
    conn.transaction::<_, DbError, _>(async |conn| {
        let account = find_account_by_username(conn, &username).await?;
        let account: Account = diesel::update(accounts::table.find(account.id))
            .set((&changes, accounts::updated_at.eq(diesel::dsl::now)))
            .returning(Account::as_returning())
            .get_result(conn)
            .await?;
        if let Some(limit) = credit_limit {
            diesel::update(balances::table.find(account.id))
                .set(balances::credit_limit.eq(limit))
                .execute(conn)
                .await?;
        }
        Ok(account)
    })
    .await
}

/// Why an account could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveAccountError {
    /// Money is still owed one way or the other, or packets are in flight.
    #[error(
        "account {username} has balance {balance} and {reserved} reserved by connectors; settle it to zero first (reservations are given back within seconds of its last packet)"
    )]
    NotSettled {
        /// The account.
        username: String,
        /// Its balance.
        balance: i64,
        /// What connectors have reserved on it for its Prepares.
        reserved: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for RemoveAccountError {
    fn from(err: diesel::result::Error) -> Self {
        RemoveAccountError::Db(err.into())
    }
}

/// Removes a live account whose balance and reservations are zero: marks it deleted (its journal
/// stays) and drops its routes. The balance row is locked while checking, so no packet can
/// move it in between.
pub async fn remove_account(
    conn: &mut AsyncPgConnection,
    username: &str,
) -> Result<Account, RemoveAccountError> {
    let username = username.to_owned();
    conn.transaction::<_, RemoveAccountError, _>(async |conn| {
        let account = find_account_by_username(conn, &username).await?;
        let (balance, reserved): (i64, i64) = balances::table
            .find(account.id)
            .select((balances::balance, balances::reserved))
            .for_update()
            .first(conn)
            .await
            .map_err(DbError::from)?;
        if balance != 0 || reserved != 0 {
            return Err(RemoveAccountError::NotSettled {
                username: account.username,
                balance,
                reserved,
            });
        }
        diesel::delete(routes::table.filter(routes::account_id.eq(account.id)))
            .execute(conn)
            .await
            .map_err(DbError::from)?;
        let account = diesel::update(accounts::table.find(account.id))
            .set(accounts::deleted_at.eq(diesel::dsl::now))
            .returning(Account::as_returning())
            .get_result(conn)
            .await
            .map_err(DbError::from)?;
        Ok(account)
    })
    .await
}

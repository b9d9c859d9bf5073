//! `routes`: static prefixes and the accounts they lead to.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::DbError;
use crate::schema::{accounts, routes};

/// A static route, with the username it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct Route {
    /// Address prefix, matched at segment boundaries.
    pub prefix: String,
    /// The next hop's account.
    pub account_id: i64,
    /// The next hop's username.
    pub username: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Adds (or repoints) the route `prefix` → `account_id`.
pub async fn upsert_route(
    conn: &mut AsyncPgConnection,
    prefix: &str,
    account_id: i64,
) -> Result<(), DbError> {
    diesel::insert_into(routes::table)
        .values((routes::prefix.eq(prefix), routes::account_id.eq(account_id)))
        .on_conflict(routes::prefix)
        .do_update()
        .set(routes::account_id.eq(account_id))
        .execute(conn)
        .await?;
    Ok(())
}

/// Every static route, by prefix.
pub async fn list_routes(conn: &mut AsyncPgConnection) -> Result<Vec<Route>, DbError> {
    Ok(routes::table
        .inner_join(accounts::table)
        .order(routes::prefix)
        .select((
            routes::prefix,
            routes::account_id,
            accounts::username,
            routes::created_at,
        ))
        .load(conn)
        .await?)
}

/// Every static route as (prefix, account id), row by row as they arrive.
pub async fn stream_route_targets(
    conn: &mut AsyncPgConnection,
) -> Result<impl futures_util::Stream<Item = Result<(String, i64), DbError>> + Send + '_, DbError> {
    use futures_util::TryStreamExt;
    Ok(routes::table
        .select((routes::prefix, routes::account_id))
        .load_stream::<(String, i64)>(conn)
        .await?
        .map_err(DbError::from))
}

/// The static routes among these prefixes (a prefix without a row has none).
pub async fn find_routes(
    conn: &mut AsyncPgConnection,
    prefixes: &[String],
) -> Result<Vec<Route>, DbError> {
    Ok(routes::table
        .inner_join(accounts::table)
        .filter(routes::prefix.eq_any(prefixes))
        .select((
            routes::prefix,
            routes::account_id,
            accounts::username,
            routes::created_at,
        ))
        .load(conn)
        .await?)
}

/// Removes the route `prefix`; [`DbError::NotFound`] when there is none.
pub async fn delete_route(conn: &mut AsyncPgConnection, prefix: &str) -> Result<(), DbError> {
    let deleted = diesel::delete(routes::table.find(prefix))
        .execute(conn)
        .await?;
    if deleted == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

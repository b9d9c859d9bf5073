//! `rates`: what one whole unit of each asset is worth in the operator's base asset.
//!
//! Forwarding from asset A to asset B converts at `rate(A) / rate(B)`. A rate from a provider
//! carries `expires_at`; past it the rate is stale and connectors stop using it. Writing the
//! table notifies every connector (`ilp_config`), which reloads its cache.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rust_decimal::Decimal;

use crate::DbError;
use crate::schema::rates;

/// What `source` says of a rate set with the CLI.
pub const MANUAL: &str = "manual";

/// A rate row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = rates, check_for_backend(diesel::pg::Pg))]
pub struct Rate {
    /// The asset, e.g. `EUR`.
    pub asset_code: String,
    /// Value of one whole unit in the base asset; positive.
    pub rate: Decimal,
    /// [`MANUAL`] or the provider that fetched it.
    pub source: String,
    /// When it becomes stale; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

/// Sets (or replaces) the rate of `asset_code`.
pub async fn upsert_rate(
    conn: &mut AsyncPgConnection,
    asset_code: &str,
    rate: Decimal,
    source: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Rate, DbError> {
    Ok(diesel::insert_into(rates::table)
        .values((
            rates::asset_code.eq(asset_code),
            rates::rate.eq(rate),
            rates::source.eq(source),
            rates::expires_at.eq(expires_at),
        ))
        .on_conflict(rates::asset_code)
        .do_update()
        .set((
            rates::rate.eq(rate),
            rates::source.eq(source),
            rates::expires_at.eq(expires_at),
            rates::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Rate::as_returning())
        .get_result(conn)
        .await?)
}

/// Every rate, by asset code.
pub async fn list_rates(conn: &mut AsyncPgConnection) -> Result<Vec<Rate>, DbError> {
    Ok(rates::table
        .order(rates::asset_code)
        .select(Rate::as_select())
        .load(conn)
        .await?)
}

/// Removes the rate of `asset_code`; [`DbError::NotFound`] when there is none.
pub async fn delete_rate(conn: &mut AsyncPgConnection, asset_code: &str) -> Result<(), DbError> {
    let deleted = diesel::delete(rates::table.find(asset_code))
        .execute(conn)
        .await?;
    if deleted == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

/// Writes a provider's rates in one transaction (one reload for every connector), each
/// expiring at `expires_at`. Rates set by hand stay as they are. Returns how many were written.
pub async fn store_provided_rates(
    conn: &mut AsyncPgConnection,
    rates: &[(String, Decimal)],
    source: &str,
    expires_at: DateTime<Utc>,
) -> Result<usize, DbError> {
    let (codes, values): (Vec<&str>, Vec<Decimal>) = rates
        .iter()
        .map(|(code, rate)| (code.as_str(), *rate))
        .unzip();
    use diesel::sql_types::{Array, Numeric, Text, Timestamptz};
    Ok(diesel::sql_query(
        "INSERT INTO rates (asset_code, rate, source, expires_at) \
         SELECT code, rate, $3, $4 FROM unnest($1::text[], $2::numeric[]) AS r(code, rate) \
         ON CONFLICT (asset_code) DO UPDATE SET rate = excluded.rate, source = excluded.source, \
             expires_at = excluded.expires_at, updated_at = now() \
         WHERE rates.source <> 'manual'",
    )
    .bind::<Array<Text>, _>(codes)
    .bind::<Array<Numeric>, _>(values)
    .bind::<Text, _>(source)
    .bind::<Timestamptz, _>(expires_at)
    .execute(conn)
    .await?)
}

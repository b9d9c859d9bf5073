//! `ledger_accounts`: which accounts each RFC 38 ledger's engine has (`POST /accounts`
//! made), so the worker creates what is missing and deletes what is gone.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::DbError;
use crate::schema::{accounts, ledger_accounts};

/// Whether `ledger`'s settlement engine already has `account_id` (see [`record_ledger_account`]).
pub async fn ledger_account_exists(
    conn: &mut AsyncPgConnection,
    ledger: &str,
    account_id: i64,
) -> Result<bool, DbError> {
    Ok(diesel::select(diesel::dsl::exists(
        ledger_accounts::table
            .filter(ledger_accounts::ledger.eq(ledger))
            .filter(ledger_accounts::account_id.eq(account_id)),
    ))
    .get_result(conn)
    .await?)
}

/// Records that `ledger`'s settlement engine has `account_id`; idempotent.
pub async fn record_ledger_account(
    conn: &mut AsyncPgConnection,
    ledger: &str,
    account_id: i64,
) -> Result<(), DbError> {
    diesel::insert_into(ledger_accounts::table)
        .values((
            ledger_accounts::ledger.eq(ledger),
            ledger_accounts::account_id.eq(account_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// Live accounts settled through `ledger` that its engine does not have yet (no
/// `ledger_accounts` row), by id, at most `limit`.
pub async fn list_engine_accounts_missing(
    conn: &mut AsyncPgConnection,
    ledger: &str,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    Ok(accounts::table
        .filter(accounts::ledger.eq(ledger))
        .filter(accounts::deleted_at.is_null())
        .filter(diesel::dsl::not(diesel::dsl::exists(
            ledger_accounts::table
                .filter(ledger_accounts::ledger.eq(ledger))
                .filter(ledger_accounts::account_id.eq(accounts::id)),
        )))
        .order(accounts::id)
        .limit(limit)
        .select(accounts::id)
        .load(conn)
        .await?)
}

/// Live accounts settled through `ledger` with an id above `after`, by id, at most `limit`:
/// what a starting worker confirms on the engine again, page by page.
pub async fn list_ledger_accounts_after(
    conn: &mut AsyncPgConnection,
    ledger: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    Ok(accounts::table
        .filter(accounts::ledger.eq(ledger))
        .filter(accounts::deleted_at.is_null())
        .filter(accounts::id.gt(after))
        .order(accounts::id)
        .limit(limit)
        .select(accounts::id)
        .load(conn)
        .await?)
}

/// Accounts `ledger`'s engine has (a `ledger_accounts` row) that are no longer settled
/// through it: removed, or moved to another ledger or none. By id, at most `limit`.
pub async fn list_engine_accounts_gone(
    conn: &mut AsyncPgConnection,
    ledger: &str,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    Ok(ledger_accounts::table
        .inner_join(accounts::table)
        .filter(ledger_accounts::ledger.eq(ledger))
        .filter(
            accounts::deleted_at
                .is_not_null()
                .or(accounts::ledger.is_distinct_from(ledger)),
        )
        .order(ledger_accounts::account_id)
        .limit(limit)
        .select(ledger_accounts::account_id)
        .load(conn)
        .await?)
}

/// Forgets that `ledger`'s engine has `account_id` (after `DELETE /accounts/{id}`).
pub async fn forget_ledger_account(
    conn: &mut AsyncPgConnection,
    ledger: &str,
    account_id: i64,
) -> Result<(), DbError> {
    diesel::delete(ledger_accounts::table.find((ledger, account_id)))
        .execute(conn)
        .await?;
    Ok(())
}

//! `settlements`: the SQL that moves balances for outgoing settlement (incoming credits are
//! in [`super::incoming_settlement`], which accounts an RFC 38 engine has in
//! [`super::ledger_account`]).
//!
//! Sign: settlements we pay lower the balance (journal `settlement_sent`), a definite failure
//! gives it back (`settlement_refunded`), settlements we receive raise it
//! (`settlement_received`, in [`super::incoming_settlement`]). Every balance change here is one transaction with its journal
//! row, so `balance = sum(journal)` holds whatever is killed when.
//!
//! Outgoing, crash-safe: [`start_settlement`] lowers the balance and commits a `pending` row
//! whose id is the idempotency key *before* any ledger is called; the caller then calls the
//! ledger with that key (as often as it takes) and records the outcome with
//! [`confirm_settlement`], [`postpone_settlement`] or [`refund_settlement`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int8, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::account::Account;
use crate::models::balance::move_balance;
use crate::schema::{accounts, settlements};
use crate::{DbError, JournalKind, SettlementState};

/// Most characters of an error kept in `settlements.last_error`.
pub const MAX_ERROR_CHARS: usize = 1_000;

/// An outgoing `settlements` row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = settlements, check_for_backend(diesel::pg::Pg))]
pub struct Settlement {
    /// The idempotency key, committed before the ledger is called and reused on every retry.
    pub id: Uuid,
    /// The account paid.
    pub account_id: i64,
    /// The ledger that pays it.
    pub ledger: String,
    /// Base units paid (what the balance was lowered by).
    pub amount: i64,
    /// Where it stands.
    pub state: SettlementState,
    /// Ledger calls that ended without a definite answer.
    pub attempts: i32,
    /// When a pending settlement is next tried.
    pub next_attempt_at: DateTime<Utc>,
    /// The last error from the ledger.
    pub last_error: Option<String>,
    /// When the balance was lowered.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Order of settlements (across accounts; per account it orders cumulative claims).
    pub seq: i64,
}

/// How long an account is not settled again after a settlement of it was definitely refused.
pub const REFUND_COOL_DOWN: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(QueryableByName)]
struct AccountId {
    #[diesel(sql_type = Int8)]
    account_id: i64,
}

/// Up to `limit` live accounts settled through `ledger` whose balance has reached their
/// settle threshold and that have no pending settlement on it, by id. An account with a
/// threshold but another ledger (or none) is never listed.
///
/// One settlement in flight per account: a payment channel's claims must go out in order,
/// and an unreachable ledger should not pile up rows; the balance keeps what is owed meanwhile.
/// After a definite rejection (refund) the account waits [`REFUND_COOL_DOWN`], so a ledger
/// that keeps refusing does not get a new settlement, and the journal two rows, every poll.
pub async fn list_accounts_to_settle(
    conn: &mut AsyncPgConnection,
    ledger: &str,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    let rows: Vec<AccountId> = diesel::sql_query(
        "SELECT a.id AS account_id FROM accounts a JOIN balances b ON b.account_id = a.id \
         WHERE a.ledger = $1 AND a.deleted_at IS NULL AND a.settle_threshold IS NOT NULL \
           AND b.balance >= a.settle_threshold AND b.balance > a.settle_to \
           AND NOT EXISTS (SELECT 1 FROM settlements s \
                           WHERE s.account_id = a.id AND s.ledger = $1 AND s.state = $4) \
           AND NOT EXISTS (SELECT 1 FROM settlements s \
                           WHERE s.account_id = a.id AND s.ledger = $1 AND s.state = $5 \
                             AND s.updated_at > now() - make_interval(secs => $3)) \
         ORDER BY a.id LIMIT $2",
    )
    .bind::<Text, _>(ledger)
    .bind::<BigInt, _>(limit)
    .bind::<diesel::sql_types::Double, _>(REFUND_COOL_DOWN.as_secs_f64())
    .bind::<Text, _>(SettlementState::Pending)
    .bind::<Text, _>(SettlementState::Failed)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.account_id).collect())
}

#[derive(QueryableByName)]
struct ToSettle {
    #[diesel(sql_type = Nullable<Int8>)]
    settle_threshold: Option<i64>,
    #[diesel(sql_type = Int8)]
    settle_to: i64,
    #[diesel(sql_type = Int8)]
    balance: i64,
    #[diesel(sql_type = Int8)]
    reserved: i64,
    #[diesel(sql_type = Nullable<Int8>)]
    credit_limit: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pending: bool,
}

/// What may be paid now: down to `settle_to`, but never so far that the credit the
/// account's Prepares in flight have reserved would break the credit limit
/// (`balance - amount - reserved >= -credit_limit`, the `balances_within_credit_limit`
/// CHECK). `None` when nothing may be paid.
fn settleable(row: &ToSettle) -> Option<i64> {
    let owed = i128::from(row.balance) - i128::from(row.settle_to);
    let allowed = match row.credit_limit {
        None => owed,
        Some(limit) => {
            owed.min(i128::from(row.balance) - i128::from(row.reserved) + i128::from(limit))
        }
    };
    i64::try_from(allowed).ok().filter(|amount| *amount > 0)
}

/// The live account `account_id`; `None` when it does not exist or was removed.
pub async fn find_live_account(
    conn: &mut AsyncPgConnection,
    account_id: i64,
) -> Result<Option<Account>, DbError> {
    Ok(accounts::table
        .find(account_id)
        .filter(accounts::deleted_at.is_null())
        .select(Account::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// In one transaction, with the balance row locked: when `account_id` (live, settled through
/// `ledger`, no settlement pending there) has reached its threshold, lowers its balance to
/// `settle_to` (or less far, while credit reserved for its Prepares in flight needs the
/// rest; see `settleable`), journals it (`settlement_sent`, reference = the settlement id) and inserts a
/// `pending` settlement of the difference under a fresh UUID. `None` when there is nothing
/// to settle (anymore).
pub async fn start_settlement(
    conn: &mut AsyncPgConnection,
    account_id: i64,
    ledger: &str,
) -> Result<Option<Settlement>, DbError> {
    conn.transaction::<_, DbError, _>(async |conn| {
        let row: Option<ToSettle> = diesel::sql_query(
            "SELECT a.settle_threshold, a.settle_to, b.balance, b.reserved, b.credit_limit, \
                    EXISTS (SELECT 1 FROM settlements s WHERE s.account_id = a.id \
                            AND s.ledger = $2 AND s.state = $3) AS pending \
             FROM accounts a JOIN balances b ON b.account_id = a.id \
             WHERE a.id = $1 AND a.ledger = $2 AND a.deleted_at IS NULL \
             FOR UPDATE OF b",
        )
        .bind::<Int8, _>(account_id)
        .bind::<Text, _>(ledger)
        .bind::<Text, _>(SettlementState::Pending)
        .get_result(conn)
        .await
        .optional()?;
        let Some(row) = row else { return Ok(None) };
        let Some(threshold) = row.settle_threshold else {
            return Ok(None);
        };
        if row.pending || row.balance < threshold {
            return Ok(None);
        }
        let Some(amount) = settleable(&row) else {
            return Ok(None);
        };
        let id = Uuid::new_v4();
        move_balance(
            conn,
            account_id,
            -amount,
            JournalKind::SettlementSent,
            &id.to_string(),
        )
        .await?;
        let settlement = diesel::insert_into(settlements::table)
            .values((
                settlements::id.eq(id),
                settlements::account_id.eq(account_id),
                settlements::ledger.eq(ledger),
                settlements::amount.eq(amount),
            ))
            .returning(Settlement::as_returning())
            .get_result(conn)
            .await?;
        Ok(Some(settlement))
    })
    .await
}

/// Up to `limit` pending settlements of `ledger` due for another attempt, in `seq` order.
pub async fn list_due_settlements(
    conn: &mut AsyncPgConnection,
    ledger: &str,
    limit: i64,
) -> Result<Vec<Settlement>, DbError> {
    Ok(settlements::table
        .filter(settlements::ledger.eq(ledger))
        .filter(settlements::state.eq(SettlementState::Pending))
        .filter(settlements::next_attempt_at.le(diesel::dsl::now))
        .order(settlements::seq)
        .limit(limit)
        .select(Settlement::as_select())
        .load(conn)
        .await?)
}

/// One settlement; [`DbError::NotFound`] when there is none.
pub async fn find_settlement(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Settlement, DbError> {
    Ok(settlements::table
        .find(id)
        .select(Settlement::as_select())
        .first(conn)
        .await?)
}

/// The account a settlement pays, removed or not (it may have been removed once its balance
/// reached zero while the settlement was pending).
pub async fn find_settlement_account(
    conn: &mut AsyncPgConnection,
    settlement: &Settlement,
) -> Result<Account, DbError> {
    Ok(accounts::table
        .find(settlement.account_id)
        .select(Account::as_select())
        .first(conn)
        .await?)
}

/// Marks a pending settlement `confirmed`; `false` when it was not pending (another run
/// decided first).
pub async fn confirm_settlement(conn: &mut AsyncPgConnection, id: Uuid) -> Result<bool, DbError> {
    let updated = diesel::update(
        settlements::table
            .find(id)
            .filter(settlements::state.eq(SettlementState::Pending)),
    )
    .set((
        settlements::state.eq(SettlementState::Confirmed),
        settlements::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// Records an attempt without a definite answer: the settlement stays `pending`,
/// `attempts + 1`, next tried `wait` from now (database clock); `false` when it was not pending.
pub async fn postpone_settlement(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    wait: Duration,
    error: &str,
) -> Result<bool, DbError> {
    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    let updated = diesel::sql_query(
        "UPDATE settlements SET attempts = attempts + 1, \
             next_attempt_at = now() + $2 * interval '1 millisecond', \
             last_error = $3, updated_at = now() \
         WHERE id = $1 AND state = $4",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Int8, _>(wait_ms)
    .bind::<Text, _>(truncate(error))
    .bind::<Text, _>(SettlementState::Pending)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// After a definite rejection of a cumulative claim: when a later settlement of the same
/// account on the same ledger was confirmed, that claim's cumulative amount paid this one's
/// too, so this one is marked `confirmed` (the rejection kept in `last_error`) instead of
/// being refunded. `true` when it was superseded so.
pub async fn confirm_if_superseded(
    conn: &mut AsyncPgConnection,
    settlement: &Settlement,
    reason: &str,
) -> Result<bool, DbError> {
    let updated = diesel::sql_query(
        "UPDATE settlements s SET state = $2, last_error = $3, updated_at = now() \
         WHERE s.id = $1 AND s.state = $4 AND EXISTS (SELECT 1 FROM settlements l \
           WHERE l.account_id = s.account_id AND l.ledger = s.ledger AND l.seq > s.seq \
             AND l.state = $2)",
    )
    .bind::<diesel::sql_types::Uuid, _>(settlement.id)
    .bind::<Text, _>(SettlementState::Confirmed)
    .bind::<Text, _>(truncate(&format!(
        "superseded by a later confirmed claim; {reason}"
    )))
    .bind::<Text, _>(SettlementState::Pending)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// After a definite rejection by the ledger, in one transaction: gives the amount back to the
/// balance (journal `settlement_refunded`, reference = the settlement id) and marks the
/// settlement `failed`; `false` (nothing changed) when it was not pending.
pub async fn refund_settlement(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    reason: &str,
) -> Result<bool, DbError> {
    let reason = truncate(reason);
    conn.transaction::<_, DbError, _>(async |conn| {
        let settlement: Option<Settlement> = settlements::table
            .find(id)
            .filter(settlements::state.eq(SettlementState::Pending))
            .select(Settlement::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some(settlement) = settlement else {
            return Ok(false);
        };
        move_balance(
            conn,
            settlement.account_id,
            settlement.amount,
            JournalKind::SettlementRefunded,
            &id.to_string(),
        )
        .await?;
        diesel::update(settlements::table.find(id))
            .set((
                settlements::state.eq(SettlementState::Failed),
                settlements::attempts.eq(settlements::attempts + 1),
                settlements::last_error.eq(Some(reason.as_str())),
                settlements::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        Ok(true)
    })
    .await
}

#[derive(QueryableByName)]
struct Total {
    #[diesel(sql_type = Int8)]
    total: i64,
}

/// What a cumulative claim for `settlement` says: the sum of the amounts of its account's
/// non-failed settlements on its ledger up to and including its `seq`. Deterministic, so a
/// retry resends the very same claim.
pub async fn cumulative_settled(
    conn: &mut AsyncPgConnection,
    settlement: &Settlement,
) -> Result<i64, DbError> {
    let row: Total = diesel::sql_query(
        "SELECT coalesce(sum(amount), 0)::int8 AS total FROM settlements \
         WHERE account_id = $1 AND ledger = $2 AND seq <= $3 AND state <> $4",
    )
    .bind::<Int8, _>(settlement.account_id)
    .bind::<Text, _>(&settlement.ledger)
    .bind::<Int8, _>(settlement.seq)
    .bind::<Text, _>(SettlementState::Failed)
    .get_result(conn)
    .await?;
    Ok(row.total)
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

/// One ledger's pending settlements, from the `dashboard_settlements_in_flight` view.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct SettlementsInFlight {
    /// The ledger.
    #[diesel(sql_type = Text)]
    pub ledger: String,
    /// How many are pending.
    #[diesel(sql_type = Int8)]
    pub settlements: i64,
    /// Their sum, base units.
    #[diesel(sql_type = Int8)]
    pub amount: i64,
    /// Age of the oldest, whole seconds, as PostgreSQL prints an interval.
    #[diesel(sql_type = Text)]
    pub oldest_age: String,
}

/// Every ledger with pending settlements, by name (`balances --watch`).
pub async fn list_settlements_in_flight(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<SettlementsInFlight>, DbError> {
    Ok(diesel::sql_query(
        "SELECT ledger, settlements::int8 AS settlements, amount::int8 AS amount, \
         date_trunc('second', oldest_age)::text AS oldest_age \
         FROM dashboard_settlements_in_flight WHERE state = $1 ORDER BY ledger",
    )
    .bind::<Text, _>(SettlementState::Pending)
    .load(conn)
    .await?)
}

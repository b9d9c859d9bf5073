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

/// One Fulfill to post: the sender pays `debit` (and its hold of `debit` ends), the next hop
/// is owed `credit` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Post {
    /// The sender's account.
    pub from: i64,
    /// The next hop's account.
    pub to: i64,
    /// What the sender paid (its incoming amount), base units.
    pub debit: i64,
    /// What the next hop is owed (the outgoing amount), base units.
    pub credit: i64,
}

/// Balance changes gathered from many packets, applied in one transaction.
#[derive(Debug, Clone, Default)]
pub struct BalanceBatch {
    /// Holds to place, in arrival order: (account, amount). Each is checked against the
    /// credit limit; the result says which fit.
    pub holds: Vec<(i64, i64)>,
    /// Fulfills to post.
    pub posts: Vec<Post>,
    /// Holds to release after a Reject or a timeout: (account, amount).
    pub releases: Vec<(i64, i64)>,
}

impl BalanceBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.holds.is_empty() && self.posts.is_empty() && self.releases.is_empty()
    }
}

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// This connector instance is no longer registered: a sweeper released its holds after
    /// its heartbeat stopped. Nothing of the batch was applied; the process must not go on.
    #[error("connector instance {0} was swept; its holds were released")]
    InstanceSwept(uuid::Uuid),
    /// The database failed; whether the batch committed is settled by [`batch_committed`].
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for BatchError {
    fn from(err: diesel::result::Error) -> Self {
        BatchError::Db(err.into())
    }
}

#[derive(QueryableByName)]
struct AccountIdRow {
    #[diesel(sql_type = diesel::sql_types::Int8)]
    account_id: i64,
}

/// Applies `batch` in one transaction and returns, for each hold in order, whether it fit
/// under its account's credit limit.
///
/// Posts and releases are applied unconditionally (they never lower `balance - held`);
/// holds are added per account in one conditional statement (`balance - held - amount >=
/// -credit_limit`, re-checked by PostgreSQL on the latest row version, so correct across
/// connector processes); when an account's holds do not all fit, they are tried one by one.
/// The journal gets one row per account whose balance moved. `durable = false` commits with
/// `synchronous_commit = off` (batches of holds and releases only). The instance's share of
/// holds (`balance_holds`) moves in the same transaction, and `last_batch_id` records the
/// batch, so [`batch_committed`] can tell after an ambiguous error.
pub async fn apply_balance_batch(
    conn: &mut AsyncPgConnection,
    instance: uuid::Uuid,
    batch_id: uuid::Uuid,
    batch: &BalanceBatch,
    durable: bool,
) -> Result<Vec<bool>, BatchError> {
    use diesel::sql_types::{Array, Int8, Uuid as SqlUuid};
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    use std::collections::BTreeMap;

    // Per account: balance change, holds ended, packets.
    let mut moved: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    for post in &batch.posts {
        let from = moved.entry(post.from).or_default();
        from.0 = from.0.checked_sub(post.debit).ok_or_else(overflow)?;
        from.1 = from.1.checked_add(post.debit).ok_or_else(overflow)?;
        from.2 += 1;
        let to = moved.entry(post.to).or_default();
        to.0 = to.0.checked_add(post.credit).ok_or_else(overflow)?;
        to.2 += 1;
    }
    for &(account, amount) in &batch.releases {
        let entry = moved.entry(account).or_default();
        entry.1 = entry.1.checked_add(amount).ok_or_else(overflow)?;
    }
    let mut wanted: BTreeMap<i64, i64> = BTreeMap::new();
    for &(account, amount) in &batch.holds {
        let total = wanted.entry(account).or_default();
        *total = total.checked_add(amount).ok_or_else(overflow)?;
    }

    conn.transaction::<_, BatchError, _>(async |conn| {
        if !durable {
            conn.batch_execute("SET LOCAL synchronous_commit = off").await.map_err(DbError::from)?;
        }
        let fenced = diesel::sql_query(
            "UPDATE connector_instances SET last_batch_id = $2, heartbeat_at = now() WHERE id = $1",
        )
        .bind::<SqlUuid, _>(instance)
        .bind::<SqlUuid, _>(batch_id)
        .execute(conn)
        .await?;
        if fenced == 0 {
            return Err(BatchError::InstanceSwept(instance));
        }

        if !moved.is_empty() {
            let ids: Vec<i64> = moved.keys().copied().collect();
            let deltas: Vec<i64> = moved.values().map(|m| m.0).collect();
            let ended: Vec<i64> = moved.values().map(|m| m.1).collect();
            diesel::sql_query(
                "UPDATE balances b SET balance = b.balance + v.delta, held = b.held - v.ended, updated_at = now() \
                 FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS v(account_id, delta, ended) \
                 WHERE b.account_id = v.account_id",
            )
            .bind::<Array<Int8>, _>(&ids)
            .bind::<Array<Int8>, _>(&deltas)
            .bind::<Array<Int8>, _>(&ended)
            .execute(conn)
            .await?;
            let journal: Vec<(i64, i64, i64)> =
                moved.iter().filter(|(_, m)| m.0 != 0).map(|(id, m)| (*id, m.0, m.2)).collect();
            if !journal.is_empty() {
                diesel::sql_query(
                    "INSERT INTO balance_journal (account_id, amount, kind, reference, packet_count) \
                     SELECT account_id, amount, 'packets', $4::text, packets \
                     FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS v(account_id, amount, packets)",
                )
                .bind::<Array<Int8>, _>(journal.iter().map(|j| j.0).collect::<Vec<_>>())
                .bind::<Array<Int8>, _>(journal.iter().map(|j| j.1).collect::<Vec<_>>())
                .bind::<Array<Int8>, _>(journal.iter().map(|j| j.2).collect::<Vec<_>>())
                .bind::<diesel::sql_types::Text, _>(batch_id.to_string())
                .execute(conn)
                .await?;
            }
        }

        let mut fits = vec![false; batch.holds.len()];
        let mut placed: BTreeMap<i64, i64> = BTreeMap::new();
        if !wanted.is_empty() {
            let ids: Vec<i64> = wanted.keys().copied().collect();
            let totals: Vec<i64> = wanted.values().copied().collect();
            let whole: Vec<AccountIdRow> = diesel::sql_query(
                "UPDATE balances b SET held = b.held + v.amount, updated_at = now() \
                 FROM unnest($1::int8[], $2::int8[]) AS v(account_id, amount) \
                 WHERE b.account_id = v.account_id \
                 AND (b.credit_limit IS NULL OR b.balance - b.held - v.amount >= -b.credit_limit) \
                 RETURNING b.account_id",
            )
            .bind::<Array<Int8>, _>(&ids)
            .bind::<Array<Int8>, _>(&totals)
            .load(conn)
            .await?;
            let whole: std::collections::BTreeSet<i64> = whole.into_iter().map(|r| r.account_id).collect();
            for (i, &(account, amount)) in batch.holds.iter().enumerate() {
                if whole.contains(&account) {
                    fits[i] = true;
                } else {
                    // Not all of this account's holds fit: place them one by one, in order.
                    let one = diesel::sql_query(
                        "UPDATE balances SET held = held + $2, updated_at = now() WHERE account_id = $1 \
                         AND (credit_limit IS NULL OR balance - held - $2 >= -credit_limit)",
                    )
                    .bind::<Int8, _>(account)
                    .bind::<Int8, _>(amount)
                    .execute(conn)
                    .await?;
                    fits[i] = one == 1;
                }
                if fits[i] {
                    *placed.entry(account).or_default() += amount;
                }
            }
        }

        // This instance's share of the holds moves with balances.held.
        let mut share: BTreeMap<i64, i64> = placed;
        for (account, m) in &moved {
            if m.1 != 0 {
                *share.entry(*account).or_default() -= m.1;
            }
        }
        share.retain(|_, delta| *delta != 0);
        if !share.is_empty() {
            diesel::sql_query(
                // Not an upsert: PostgreSQL checks `amount >= 0` on the row an INSERT proposes
                // even when it ends in the DO UPDATE branch. Only this instance's writer
                // touches its rows, so update-then-insert cannot race.
                "WITH v AS (SELECT * FROM unnest($2::int8[], $3::int8[]) AS v(account_id, amount)), \
                 updated AS (UPDATE balance_holds h SET amount = h.amount + v.amount FROM v \
                             WHERE h.instance_id = $1 AND h.account_id = v.account_id RETURNING h.account_id) \
                 INSERT INTO balance_holds (instance_id, account_id, amount) \
                 SELECT $1, v.account_id, v.amount FROM v WHERE v.account_id NOT IN (SELECT account_id FROM updated)",
            )
            .bind::<SqlUuid, _>(instance)
            .bind::<Array<Int8>, _>(share.keys().copied().collect::<Vec<_>>())
            .bind::<Array<Int8>, _>(share.values().copied().collect::<Vec<_>>())
            .execute(conn)
            .await?;
        }
        Ok(fits)
    })
    .await
}

fn overflow() -> BatchError {
    BatchError::Db(DbError::Refused(
        "amounts in one batch overflow a 64-bit integer".to_owned(),
    ))
}

/// Whether the batch `batch_id` of `instance` committed (for after an ambiguous error).
pub async fn batch_committed(
    conn: &mut AsyncPgConnection,
    instance: uuid::Uuid,
    batch_id: uuid::Uuid,
) -> Result<bool, DbError> {
    use crate::schema::connector_instances;
    let last: Option<Option<uuid::Uuid>> = connector_instances::table
        .find(instance)
        .select(connector_instances::last_batch_id)
        .first(conn)
        .await
        .optional()?;
    Ok(last.flatten() == Some(batch_id))
}

/// Registers a connector process; its holds are tracked under the returned id.
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

/// Removes a cleanly stopped instance whose holds are all released.
pub async fn deregister_instance(
    conn: &mut AsyncPgConnection,
    instance: uuid::Uuid,
) -> Result<(), DbError> {
    sweep_instances(conn, Some(instance), std::time::Duration::ZERO)
        .await
        .map(|_| ())
}

/// Releases the holds of connector instances whose heartbeat is older than `stale_after`
/// (or of `only`, whatever its heartbeat), and forgets those instances. Returns how many
/// were swept.
pub async fn sweep_instances(
    conn: &mut AsyncPgConnection,
    only: Option<uuid::Uuid>,
    stale_after: std::time::Duration,
) -> Result<usize, DbError> {
    use diesel::sql_types::{Nullable, Uuid as SqlUuid};
    use diesel_async::AsyncConnection;
    let seconds = stale_after.as_secs_f64();
    conn.transaction::<_, DbError, _>(async |conn| {
        // Lock the stale instances first: a batch of theirs still running holds FOR KEY SHARE
        // on their row through balance_holds, so this waits for it.
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = SqlUuid)]
            id: uuid::Uuid,
        }
        let stale: Vec<Id> = diesel::sql_query(
            "SELECT id FROM connector_instances \
             WHERE ($1::uuid IS NULL AND heartbeat_at < now() - make_interval(secs => $2)) OR id = $1 \
             FOR UPDATE",
        )
        .bind::<Nullable<SqlUuid>, _>(only)
        .bind::<diesel::sql_types::Double, _>(seconds)
        .load(conn)
        .await?;
        if stale.is_empty() {
            return Ok(0);
        }
        let ids: Vec<uuid::Uuid> = stale.iter().map(|s| s.id).collect();
        diesel::sql_query(
            "WITH released AS (DELETE FROM balance_holds WHERE instance_id = ANY($1) RETURNING account_id, amount), \
             per_account AS (SELECT account_id, sum(amount)::int8 AS amount FROM released GROUP BY account_id) \
             UPDATE balances b SET held = b.held - p.amount, updated_at = now() FROM per_account p \
             WHERE b.account_id = p.account_id AND p.amount <> 0",
        )
        .bind::<diesel::sql_types::Array<SqlUuid>, _>(&ids)
        .execute(conn)
        .await?;
        diesel::sql_query("DELETE FROM connector_instances WHERE id = ANY($1)")
            .bind::<diesel::sql_types::Array<SqlUuid>, _>(&ids)
            .execute(conn)
            .await?;
        Ok(ids.len())
    })
    .await
}

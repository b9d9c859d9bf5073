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

/// The balance writer's own connection: tokio-postgres with its statements prepared once,
/// and each batch sent as one pipeline (`BEGIN`, the moves, the holds, `COMMIT`), so a batch
/// costs one round trip and no parsing or planning in the common case.
pub struct BalanceConnection {
    client: tokio_postgres::Client,
    apply_moves: tokio_postgres::Statement,
    place_holds: tokio_postgres::Statement,
    place_one_hold: tokio_postgres::Statement,
}

impl std::fmt::Debug for BalanceConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceConnection").finish_non_exhaustive()
    }
}

/// Fences the batch (this instance must still be registered; records the batch id), then
/// applies posts and releases per account: balance, held, journal, this instance's share.
const APPLY_MOVES: &str = "\
WITH fence AS (UPDATE connector_instances SET last_batch_id = $2::text::uuid, heartbeat_at = now() \
               WHERE id = $1::text::uuid RETURNING id), \
v AS (SELECT * FROM unnest($3::int8[], $4::int8[], $5::int8[], $6::int8[]) AS v(account_id, delta, ended, packets) \
      WHERE EXISTS (SELECT 1 FROM fence)), \
moved AS (UPDATE balances b SET balance = b.balance + v.delta, held = b.held - v.ended, updated_at = now() \
          FROM v WHERE b.account_id = v.account_id RETURNING b.account_id), \
journal AS (INSERT INTO balance_journal (account_id, amount, kind, reference, packet_count) \
            SELECT account_id, delta, 'packets', $2, packets FROM v WHERE delta <> 0), \
share AS (UPDATE balance_holds h SET amount = h.amount - v.ended FROM v \
          WHERE h.instance_id = $1::text::uuid AND h.account_id = v.account_id AND v.ended <> 0) \
SELECT (SELECT count(*) FROM fence) AS fenced, (SELECT count(*) FROM moved) AS moved";

/// Places each account's holds of the batch in one step, if they all fit under its credit
/// limit (PostgreSQL re-checks the condition on the latest row version, so this is safe
/// against other connector processes), and adds them to this instance's share. Returns the
/// accounts whose holds were placed.
const PLACE_HOLDS: &str = "\
WITH v AS (SELECT * FROM unnest($2::int8[], $3::int8[]) AS v(account_id, amount)), \
placed AS (UPDATE balances b SET held = b.held + v.amount, updated_at = now() FROM v \
           WHERE b.account_id = v.account_id \
           AND (b.credit_limit IS NULL OR b.balance - b.held - v.amount >= -b.credit_limit) \
           RETURNING b.account_id, v.amount), \
share AS (UPDATE balance_holds h SET amount = h.amount + p.amount FROM placed p \
          WHERE h.instance_id = $1::text::uuid AND h.account_id = p.account_id RETURNING h.account_id), \
fresh AS (INSERT INTO balance_holds (instance_id, account_id, amount) \
          SELECT $1::text::uuid, p.account_id, p.amount FROM placed p \
          WHERE p.account_id NOT IN (SELECT account_id FROM share)) \
SELECT account_id FROM placed";

/// One hold, for an account whose holds did not all fit: the check and the hold in one step.
const PLACE_ONE_HOLD: &str = "\
WITH placed AS (UPDATE balances SET held = held + $3, updated_at = now() WHERE account_id = $2 \
                AND (credit_limit IS NULL OR balance - held - $3 >= -credit_limit) RETURNING account_id), \
share AS (UPDATE balance_holds h SET amount = h.amount + $3 FROM placed p \
          WHERE h.instance_id = $1::text::uuid AND h.account_id = p.account_id RETURNING h.account_id), \
fresh AS (INSERT INTO balance_holds (instance_id, account_id, amount) \
          SELECT $1::text::uuid, p.account_id, $3 FROM placed p WHERE p.account_id NOT IN (SELECT account_id FROM share)) \
SELECT count(*) FROM placed";

fn pg_error(err: tokio_postgres::Error) -> DbError {
    use tokio_postgres::error::SqlState;
    let text = match err.as_db_error() {
        Some(db) => match db.constraint() {
            Some(constraint) => format!("{} ({constraint})", db.message()),
            None => db.message().to_owned(),
        },
        None => {
            let mut text = err.to_string();
            if let Some(source) = std::error::Error::source(&err) {
                text.push_str(&format!(": {source}"));
            }
            text
        }
    };
    match err.code() {
        Some(code)
            if *code == SqlState::CHECK_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION =>
        {
            DbError::Refused(text)
        }
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => DbError::AlreadyExists(text),
        Some(_) => DbError::Refused(text),
        None => DbError::Unavailable(text),
    }
}

impl BalanceConnection {
    /// Connects as `config` says and prepares the statements. Commits are asynchronous
    /// (`synchronous_commit = off`) unless a batch asks to be durable.
    pub async fn connect(config: &crate::PoolConfig) -> Result<BalanceConnection, DbError> {
        let connecting = async {
            let (client, connection) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
                .await
                .map_err(pg_error)?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "balance connection closed");
                }
            });
            client
                .batch_execute(&format!(
                    "SET statement_timeout = {}; SET application_name = '{}'; SET synchronous_commit = off; \
                     SET plan_cache_mode = force_generic_plan",
                    config.statement_timeout.as_millis(),
                    config.application_name.replace('\'', "''"),
                ))
                .await
                .map_err(pg_error)?;
            let apply_moves = client.prepare(APPLY_MOVES).await.map_err(pg_error)?;
            let place_holds = client.prepare(PLACE_HOLDS).await.map_err(pg_error)?;
            let place_one_hold = client.prepare(PLACE_ONE_HOLD).await.map_err(pg_error)?;
            Ok(BalanceConnection {
                client,
                apply_moves,
                place_holds,
                place_one_hold,
            })
        };
        tokio::time::timeout(config.connect_timeout, connecting)
            .await
            .map_err(|_| {
                DbError::Unavailable(format!("no connection within {:?}", config.connect_timeout))
            })?
    }

    /// True once the server side of the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Applies `batch` in one transaction and returns, for each hold in order, whether it fit
    /// under its account's credit limit.
    ///
    /// Posts and releases are applied unconditionally (they never lower `balance - held`);
    /// holds are placed per account in one conditional statement; when an account's holds do
    /// not all fit, they are placed one by one after the commit, each check-and-hold atomic.
    /// The journal gets one row per account whose balance moved. `durable` makes the commit
    /// wait for the WAL flush (batches with posts); otherwise it is asynchronous (holds and
    /// releases only: their packets die with the process anyway). The transaction is sent as
    /// one pipeline.
    pub async fn apply(
        &self,
        instance: uuid::Uuid,
        batch_id: uuid::Uuid,
        batch: &BalanceBatch,
        durable: bool,
    ) -> Result<Vec<bool>, BatchError> {
        use std::collections::{BTreeMap, BTreeSet};

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

        let (instance_text, batch_text) = (instance.to_string(), batch_id.to_string());
        let ids: Vec<i64> = moved.keys().copied().collect();
        let deltas: Vec<i64> = moved.values().map(|m| m.0).collect();
        let ended: Vec<i64> = moved.values().map(|m| m.1).collect();
        let packets: Vec<i64> = moved.values().map(|m| m.2).collect();
        let hold_ids: Vec<i64> = wanted.keys().copied().collect();
        let hold_totals: Vec<i64> = wanted.values().copied().collect();

        let client = &self.client;
        let begin = client.batch_execute(if durable {
            "BEGIN; SET LOCAL synchronous_commit = on"
        } else {
            "BEGIN"
        });
        let move_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&instance_text, &batch_text, &ids, &deltas, &ended, &packets];
        // A batch of holds only needs no fence: placing a hold writes this instance's share,
        // whose foreign key fails if the instance was swept, and an unanswered batch of holds
        // is reported as failed anyway. Skipping it saves a row update per batch.
        let moves = async {
            if moved.is_empty() {
                Ok(None)
            } else {
                client
                    .query_one(&self.apply_moves, &move_params)
                    .await
                    .map(Some)
            }
        };
        let holds = async {
            if hold_ids.is_empty() {
                Ok(Vec::new())
            } else {
                client
                    .query(
                        &self.place_holds,
                        &[&instance_text, &hold_ids, &hold_totals],
                    )
                    .await
            }
        };
        let commit = client.batch_execute("COMMIT");
        // Polled in order, so the four go out back to back: one round trip.
        let (begun, moves, holds, committed) =
            futures_util::future::join4(begin, moves, holds, commit).await;
        let swept = |err: tokio_postgres::Error| match pg_error(err) {
            DbError::Refused(text) if text.contains("balance_holds_instance_id_fkey") => {
                BatchError::InstanceSwept(instance)
            }
            other => BatchError::Db(other),
        };
        begun.map_err(swept)?;
        let moves = moves.map_err(swept)?;
        let holds = holds.map_err(swept)?;
        committed.map_err(swept)?;
        if let Some(moves) = moves
            && moves.get::<_, i64>("fenced") == 0
        {
            return Err(BatchError::InstanceSwept(instance));
        }

        let whole: BTreeSet<i64> = holds
            .iter()
            .map(|row| row.get::<_, i64>("account_id"))
            .collect();
        let mut fits = vec![false; batch.holds.len()];
        for (i, &(account, amount)) in batch.holds.iter().enumerate() {
            fits[i] = if whole.contains(&account) {
                true
            } else {
                let row = client
                    .query_one(&self.place_one_hold, &[&instance_text, &account, &amount])
                    .await
                    .map_err(swept)?;
                row.get::<_, i64>(0) == 1
            };
        }
        Ok(fits)
    }

    /// Whether the batch `batch_id` of `instance` committed (for after an ambiguous error).
    pub async fn batch_committed(
        &self,
        instance: uuid::Uuid,
        batch_id: uuid::Uuid,
    ) -> Result<bool, DbError> {
        let row = self
            .client
            .query_opt(
                "SELECT last_batch_id::text FROM connector_instances WHERE id = $1::text::uuid",
                &[&instance.to_string()],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.and_then(|row| row.get::<_, Option<String>>(0)) == Some(batch_id.to_string()))
    }
}

fn overflow() -> BatchError {
    BatchError::Db(DbError::Refused(
        "amounts in one batch overflow a 64-bit integer".to_owned(),
    ))
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

//! `ledgers`: each configured ledger's poll schedule and the lease that keeps two worker
//! replicas from polling one ledger at once.
//!
//! Every time here is the database's clock (`now()`), never a replica's, so replicas with
//! skewed clocks still agree on who holds a lease and what is due.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Int8, Nullable, Text, Timestamptz};
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::DbError;
pub use crate::enums::LedgerKind;
use crate::schema::ledgers;

/// A `ledgers` row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = ledgers, check_for_backend(diesel::pg::Pg))]
pub struct Ledger {
    /// The name the worker's configuration gives it.
    pub name: String,
    /// Which adaptor settles through it.
    pub kind: LedgerKind,
    /// When it is next due for a poll.
    pub next_poll_at: DateTime<Utc>,
    /// When its last poll finished; `None`: never polled.
    pub last_poll_at: Option<DateTime<Utc>>,
    /// The worker replica polling it now; `None`: nobody.
    pub lease_owner: Option<String>,
    /// When that replica's claim lapses, set together with `lease_owner`.
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// A configured ledger, as [`register_ledgers`] writes it.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = ledgers)]
pub struct NewLedger<'a> {
    /// See [`Ledger::name`].
    pub name: &'a str,
    /// See [`Ledger::kind`].
    pub kind: LedgerKind,
    /// Its first due time, used only when the ledger is new.
    pub next_poll_at: DateTime<Utc>,
}

/// A ledger that [`claim_due_ledger`] leased to one replica.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ClaimedLedger {
    /// Its name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Its kind.
    #[diesel(sql_type = Text)]
    pub kind: LedgerKind,
    /// The due time that made it claimable (`next_poll_at` at the claim).
    #[diesel(sql_type = Timestamptz)]
    pub due_at: DateTime<Utc>,
    /// When its previous poll finished.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_poll_at: Option<DateTime<Utc>>,
    /// When the lease lapses unless [`finish_poll`] clears it first.
    #[diesel(sql_type = Timestamptz)]
    pub lease_expires_at: DateTime<Utc>,
    /// The database's clock at the claim.
    #[diesel(sql_type = Timestamptz)]
    pub claimed_at: DateTime<Utc>,
}

/// The database's clock (`now()`), the one every lease and due time is measured with.
pub async fn database_now(conn: &mut AsyncPgConnection) -> Result<DateTime<Utc>, DbError> {
    Ok(diesel::select(diesel::dsl::sql::<Timestamptz>("now()"))
        .get_result(conn)
        .await?)
}

/// Inserts the configured ledgers that are new and updates the kind of those that exist,
/// in one statement. Schedule and lease state of existing rows is kept, so a restart neither
/// re-polls early nor steals a lease.
pub async fn register_ledgers(
    conn: &mut AsyncPgConnection,
    new_ledgers: &[NewLedger<'_>],
) -> Result<(), DbError> {
    if new_ledgers.is_empty() {
        return Ok(());
    }
    diesel::insert_into(ledgers::table)
        .values(new_ledgers)
        .on_conflict(ledgers::name)
        .do_update()
        .set(ledgers::kind.eq(excluded(ledgers::kind)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Leases to `owner` for `lease` the most overdue of `names` that is due and not leased by
/// anyone (or whose lease has lapsed); `None` when none is.
///
/// One statement: the inner `SELECT .. FOR UPDATE SKIP LOCKED` passes over a row another
/// replica is claiming right now, and re-checks the lease on a row that replica has just
/// committed, so two replicas never hold one ledger at once. A replica that dies keeps its
/// lease only until `lease_expires_at`; then the ledger is claimable again.
pub async fn claim_due_ledger(
    conn: &mut AsyncPgConnection,
    owner: &str,
    names: &[String],
    lease: Duration,
) -> Result<Option<ClaimedLedger>, DbError> {
    let lease_ms = i64::try_from(lease.as_millis())
        .map_err(|_| DbError::Refused(format!("lease of {lease:?} is too long")))?;
    Ok(diesel::sql_query(
        "UPDATE ledgers \
         SET lease_owner = $1, lease_expires_at = now() + $3 * interval '1 millisecond' \
         WHERE name = ( \
             SELECT name FROM ledgers \
             WHERE name = ANY($2) \
               AND next_poll_at <= now() \
               AND (lease_expires_at IS NULL OR lease_expires_at < now()) \
             ORDER BY next_poll_at \
             LIMIT 1 \
             FOR UPDATE SKIP LOCKED) \
         RETURNING name, kind, next_poll_at AS due_at, last_poll_at, lease_expires_at, \
                   now() AS claimed_at",
    )
    .bind::<Text, _>(owner)
    .bind::<Array<Text>, _>(names)
    .bind::<Int8, _>(lease_ms)
    .get_result(conn)
    .await
    .optional()?)
}

/// Records a finished poll of `name` by `owner`: `last_poll_at = now()`, the next due time,
/// and the lease released. Does nothing and returns `false` when `owner` no longer holds the
/// lease (it lapsed and another replica took the ledger over, and that replica now decides
/// the schedule).
pub async fn finish_poll(
    conn: &mut AsyncPgConnection,
    name: &str,
    owner: &str,
    next_poll_at: DateTime<Utc>,
) -> Result<bool, DbError> {
    let updated = diesel::update(
        ledgers::table
            .filter(ledgers::name.eq(name))
            .filter(ledgers::lease_owner.eq(owner)),
    )
    .set((
        ledgers::last_poll_at.eq(diesel::dsl::sql::<Nullable<Timestamptz>>("now()")),
        ledgers::next_poll_at.eq(next_poll_at),
        ledgers::lease_owner.eq(None::<String>),
        ledgers::lease_expires_at.eq(None::<DateTime<Utc>>),
    ))
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// One ledger row; [`DbError::NotFound`] when there is none.
pub async fn find_ledger(conn: &mut AsyncPgConnection, name: &str) -> Result<Ledger, DbError> {
    Ok(ledgers::table
        .find(name)
        .select(Ledger::as_select())
        .first(conn)
        .await?)
}

/// Writes the options of ledger `name` that connectors may read (`ledgers.options`, a JSON
/// object). The worker publishes only non-secret options (an rfc38 ledger's `engine_url`),
/// never tokens or keys. `false` when no such ledger is registered.
pub async fn publish_ledger_options(
    conn: &mut AsyncPgConnection,
    name: &str,
    options: &serde_json::Map<String, serde_json::Value>,
) -> Result<bool, DbError> {
    let json = serde_json::Value::Object(options.clone());
    let updated = diesel::update(
        ledgers::table
            .find(name)
            .filter(ledgers::options.is_distinct_from(&json)),
    )
    .set(ledgers::options.eq(&json))
    .execute(conn)
    .await?;
    if updated == 1 {
        return Ok(true);
    }
    // Unchanged options update nothing; tell that apart from a missing ledger.
    Ok(ledgers::table
        .find(name)
        .select(ledgers::name)
        .first::<String>(conn)
        .await
        .optional()?
        .is_some())
}

/// A ledger's kind and published options, as connectors read them.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = ledgers, check_for_backend(diesel::pg::Pg))]
pub struct LedgerOptions {
    /// The ledger's name.
    pub name: String,
    /// Its kind.
    pub kind: LedgerKind,
    /// Its published options, a JSON object (e.g. `{"engine_url": "http://.."}`).
    pub options: serde_json::Value,
}

/// Every registered ledger's kind and published options, by name.
pub async fn list_ledger_options(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<LedgerOptions>, DbError> {
    Ok(ledgers::table
        .order(ledgers::name)
        .select(LedgerOptions::as_select())
        .load(conn)
        .await?)
}

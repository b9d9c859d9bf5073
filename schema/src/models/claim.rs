//! `settlement_claims`: signed cumulative claims received over `peer.settle`. The connector
//! writes them ([`insert_claim`]); the worker verifies each and credits it exactly once
//! ([`list_received_claims`], [`process_claim`]).
//!
//! A claim says "the payer has paid you `cumulative_amount` in total on this channel". Only
//! the part above the highest claim already credited is new money, so a claim received twice
//! (or an older one arriving late) credits nothing.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::models::balance::move_balance;
use crate::schema::{accounts, balances, settlement_claims};
use crate::{ClaimState, DbError, JournalKind};

/// A claim as the `peer.settle` handler writes it (state `received`).
#[derive(Debug, Clone, Copy, Insertable)]
#[diesel(table_name = settlement_claims)]
pub struct NewClaim<'a> {
    /// The account (peer) that sent it.
    pub account_id: i64,
    /// The total it says the peer has paid us, base units (as parsed by the connector; the
    /// worker checks it against the signed payload).
    pub cumulative_amount: i64,
    /// Exactly the bytes that were signed.
    pub signed_payload: &'a [u8],
    /// The ed25519 signature over `signed_payload`, 64 bytes.
    pub signature: &'a [u8],
}

/// Writes a received claim (state `received`); returns its id.
pub async fn insert_claim(
    conn: &mut AsyncPgConnection,
    claim: &NewClaim<'_>,
) -> Result<i64, DbError> {
    Ok(diesel::insert_into(settlement_claims::table)
        .values(claim)
        .returning(settlement_claims::id)
        .get_result(conn)
        .await?)
}

/// A `settlement_claims` row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = settlement_claims, check_for_backend(diesel::pg::Pg))]
pub struct ClaimRow {
    /// Its id (also the journal reference once credited).
    pub id: i64,
    /// The account that sent it.
    pub account_id: i64,
    /// The total it claims, base units, as the connector read it.
    pub cumulative_amount: i64,
    /// Exactly the bytes that were signed.
    pub signed_payload: Vec<u8>,
    /// The ed25519 signature, 64 bytes.
    pub signature: Vec<u8>,
    /// `received`, `credited` or `rejected`.
    pub state: ClaimState,
    /// What crediting it added to the balance; set when `credited`.
    pub credited: Option<i64>,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// When the connector wrote it.
    pub received_at: DateTime<Utc>,
    /// When the worker decided on it.
    pub processed_at: Option<DateTime<Utc>>,
}

/// Up to `limit` claims in state `received` of the live accounts settled through `ledger`,
/// oldest (lowest id) first.
pub async fn list_received_claims(
    conn: &mut AsyncPgConnection,
    ledger: &str,
    limit: i64,
) -> Result<Vec<ClaimRow>, DbError> {
    Ok(settlement_claims::table
        .inner_join(accounts::table)
        .filter(settlement_claims::state.eq(ClaimState::Received))
        .filter(accounts::ledger.eq(ledger))
        .filter(accounts::deleted_at.is_null())
        .order(settlement_claims::id)
        .limit(limit)
        .select(ClaimRow::as_select())
        .load(conn)
        .await?)
}

/// What [`process_claim`] hands its check: the claim and what it is checked against.
#[derive(Debug, Clone)]
pub struct ClaimUnderReview {
    /// The claim, re-read under lock (state `received`).
    pub claim: ClaimRow,
    /// The account's asset code.
    pub asset_code: String,
    /// The account's asset scale.
    pub asset_scale: i16,
    /// The account's ed25519 public key; `None`: it cannot send claims.
    pub claims_public_key: Option<Vec<u8>>,
    /// The account's configured ILP address (a claim's payer); `None` for a child, whose
    /// address is `<our address>.<username>`.
    pub ilp_address: Option<String>,
    /// The account's username.
    pub username: String,
    /// The highest cumulative amount of the account's credited claims (0 when none).
    pub credited_so_far: i64,
}

/// What became of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Credited: the balance rose by `delta`.
    Credited {
        /// Base units credited.
        delta: i64,
    },
    /// Rejected, with the reason stored in the row; nothing credited.
    Rejected(String),
    /// Another run decided on it first; nothing changed.
    AlreadyProcessed,
}

/// Decides on the claim `claim_id` in one transaction, with the account's balance row and
/// the claim locked (so two runs never credit one account's claims at once).
///
/// `check` verifies the claim (signature, payload, asset) and returns the cumulative amount
/// it proves, or the reason it is refused. A claim whose cumulative amount is not above
/// [`ClaimUnderReview::credited_so_far`] is rejected; otherwise the difference is credited
/// (balance and journal `settlement_received` with the claim id as reference) and the claim
/// marked `credited`. Exactly once: a claim not in state `received` changes nothing.
pub async fn process_claim<F>(
    conn: &mut AsyncPgConnection,
    claim_id: i64,
    check: F,
) -> Result<ClaimOutcome, DbError>
where
    F: FnOnce(&ClaimUnderReview) -> Result<i64, String> + Send,
{
    conn.transaction::<_, DbError, _>(async move |conn| {
        let account_id: i64 = settlement_claims::table
            .find(claim_id)
            .select(settlement_claims::account_id)
            .first(conn)
            .await?;
        let balance: i64 = balances::table
            .find(account_id)
            .select(balances::balance)
            .for_update()
            .first(conn)
            .await?;
        let claim: ClaimRow = settlement_claims::table
            .find(claim_id)
            .select(ClaimRow::as_select())
            .for_update()
            .first(conn)
            .await?;
        if claim.state != ClaimState::Received {
            return Ok(ClaimOutcome::AlreadyProcessed);
        }
        let (asset_code, asset_scale, claims_public_key, ilp_address, username): (
            String,
            i16,
            Option<Vec<u8>>,
            Option<String>,
            String,
        ) = accounts::table
            .find(account_id)
            .select((
                accounts::asset_code,
                accounts::asset_scale,
                accounts::claims_public_key,
                accounts::ilp_address,
                accounts::username,
            ))
            .first(conn)
            .await?;
        let credited_so_far: Option<i64> = settlement_claims::table
            .filter(settlement_claims::account_id.eq(account_id))
            .filter(settlement_claims::state.eq(ClaimState::Credited))
            .select(diesel::dsl::max(settlement_claims::cumulative_amount))
            .first(conn)
            .await?;
        let review = ClaimUnderReview {
            claim,
            asset_code,
            asset_scale,
            claims_public_key,
            ilp_address,
            username,
            credited_so_far: credited_so_far.unwrap_or(0),
        };
        let verdict = check(&review).and_then(|cumulative| {
            if cumulative <= review.credited_so_far {
                Err(format!(
                    "cumulative amount {cumulative} is not above the last credited claim ({})",
                    review.credited_so_far
                ))
            } else {
                // Cannot overflow: cumulative > credited_so_far >= 0.
                Ok(cumulative - review.credited_so_far)
            }
        });
        let delta = match verdict {
            Ok(delta) => delta,
            Err(reason) => {
                mark_rejected(conn, claim_id, &reason).await?;
                return Ok(ClaimOutcome::Rejected(reason));
            }
        };
        if balance.checked_add(delta).is_none() {
            let reason = format!("crediting {delta} would overflow the balance");
            mark_rejected(conn, claim_id, &reason).await?;
            return Ok(ClaimOutcome::Rejected(reason));
        }
        move_balance(
            conn,
            account_id,
            delta,
            JournalKind::SettlementReceived,
            &claim_id.to_string(),
        )
        .await?;
        diesel::update(settlement_claims::table.find(claim_id))
            .set((
                settlement_claims::state.eq(ClaimState::Credited),
                settlement_claims::credited.eq(Some(delta)),
                settlement_claims::processed_at.eq(diesel::dsl::sql::<
                    diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
                >("now()")),
            ))
            .execute(conn)
            .await?;
        Ok(ClaimOutcome::Credited { delta })
    })
    .await
}

async fn mark_rejected(
    conn: &mut AsyncPgConnection,
    claim_id: i64,
    reason: &str,
) -> Result<(), DbError> {
    diesel::update(settlement_claims::table.find(claim_id))
        .set((
            settlement_claims::state.eq(ClaimState::Rejected),
            settlement_claims::reason.eq(Some(reason)),
            settlement_claims::processed_at.eq(diesel::dsl::sql::<
                diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
            >("now()")),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// One claim row; [`DbError::NotFound`] when there is none.
pub async fn find_claim(conn: &mut AsyncPgConnection, claim_id: i64) -> Result<ClaimRow, DbError> {
    Ok(settlement_claims::table
        .find(claim_id)
        .select(ClaimRow::as_select())
        .first(conn)
        .await?)
}

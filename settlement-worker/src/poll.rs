//! One poll of one ledger: retry the pending settlements that are due, start and pay new
//! ones for the accounts over their threshold, and (on a `claims` ledger) verify and credit
//! the claims peers sent.
//!
//! Crash safety comes from the order of steps, each its own transaction:
//! 1. `start_settlement` lowers the balance, journals it and commits a `pending` row whose
//!    UUID is the idempotency key;
//! 2. the adaptor is called with that key, outside any transaction or row lock;
//! 3. the outcome is recorded: `confirmed`, `pending` again with a later `next_attempt_at`
//!    (transient: retried with the same key, without an attempt limit), or refunded and
//!    `failed` (a definite rejection).
//!
//! A process killed between 1 and 3 leaves a `pending` row that is due at once, so the next
//! poll (by this or another replica) repeats step 2 with the same key; the ledger's
//! idempotency makes the repeat pay at most once. Every step 3 update is conditional on
//! `state = 'pending'`, so two runs racing (after a lapsed lease) cannot both decide.
//!
//! Each decision is counted where it is made: [`SETTLEMENTS_TOTAL`] and [`CLAIMS_TOTAL`]
//! (no-ops unless the binary installed a recorder, see `admin.listen`).

use std::time::{Duration, Instant};

use schema::models::claim::{ClaimOutcome, list_received_claims, process_claim};
use schema::models::settlement::{
    Settlement, confirm_if_superseded, confirm_settlement, find_live_account,
    find_settlement_account, list_accounts_to_settle, list_due_settlements, postpone_settlement,
    refund_settlement, start_settlement,
};
use schema::{DbError, DbPool};
use tracing::Instrument;

use crate::adaptor::claims::verify_claim;
use crate::adaptor::{Adaptor, AdaptorError};
use crate::backoff::Backoff;

/// Most settlements attempted (retries and new ones together) in one poll of one ledger:
/// bounds a poll's length, so it ends within its lease.
pub const MAX_SETTLEMENTS_PER_POLL: i64 = 100;
/// Most received claims verified in one poll of one ledger.
pub const MAX_CLAIMS_PER_POLL: i64 = 1_000;
/// Wait before the first retry of a settlement without a definite answer; doubles per attempt.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between retries (RFC 38: retry indefinitely, at most an hour apart).
pub const RETRY_MAX: Duration = Duration::from_secs(60 * 60);
/// Retries of a settlement without a definite answer: [`RETRY_FIRST`] doubled per attempt, at
/// most [`RETRY_MAX`], with jitter so that settlements failing together do not retry together.
pub const SETTLEMENT_BACKOFF: Backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);

/// Counter of settlement attempts decided, by `ledger` and `outcome`
/// ([`SETTLEMENT_CONFIRMED`], [`SETTLEMENT_RETRY`], [`SETTLEMENT_FAILED`]).
pub const SETTLEMENTS_TOTAL: &str = "ilp_settlements_total";
/// `outcome` of a settlement the ledger paid.
pub const SETTLEMENT_CONFIRMED: &str = "confirmed";
/// `outcome` of an attempt without a definite answer: still pending, retried with its key.
pub const SETTLEMENT_RETRY: &str = "retry";
/// `outcome` of a settlement the ledger definitely rejected: refunded.
pub const SETTLEMENT_FAILED: &str = "failed";
/// `outcome` of an account that could not be settled this poll (the database refused its
/// settlement): logged, skipped, tried again on the next poll; the ledger's other accounts
/// go on.
pub const SETTLEMENT_SKIPPED: &str = "skipped";
/// Counter of received claims processed, by `ledger` and `outcome` ([`CLAIM_CREDITED`],
/// [`CLAIM_REJECTED`]).
pub const CLAIMS_TOTAL: &str = "ilp_claims_total";
/// `outcome` of a claim whose delta was credited.
pub const CLAIM_CREDITED: &str = "credited";
/// `outcome` of a claim refused (bad signature, replay, ...): nothing credited.
pub const CLAIM_REJECTED: &str = "rejected";

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Settlements the ledger confirmed.
    pub confirmed: u32,
    /// Settlements without a definite answer, left pending for a retry.
    pub postponed: u32,
    /// Settlements the ledger rejected, refunded to the balance.
    pub refunded: u32,
    /// New settlements started (balance lowered, pending row written).
    pub started: u32,
    /// Received claims credited.
    pub claims_credited: u32,
    /// Received claims rejected.
    pub claims_rejected: u32,
    /// Accounts over their threshold whose settlement could not be started this poll.
    pub skipped: u32,
    /// Accounts created on the RFC 38 engine.
    pub engine_accounts_created: u32,
    /// Accounts deleted from the RFC 38 engine.
    pub engine_accounts_deleted: u32,
    /// Engine account calls that failed (tried again on a later poll).
    pub engine_accounts_failed: u32,
    /// Engine account creations not tried: the account backs off after failures.
    pub engine_accounts_backing_off: u32,
    /// Whether work was left for the next poll (the per-poll limit or the deadline).
    pub deferred: bool,
}

impl PollReport {
    fn attempted(&self) -> i64 {
        i64::from(self.confirmed + self.postponed + self.refunded)
    }
}

/// Polls `ledger` once through `adaptor`. Starts no ledger call after `deadline` (what is
/// left waits for the next poll). A database error ends the poll; the settlement in hand
/// stays `pending` and due, and is retried with its key on the next poll.
pub async fn poll_ledger(
    pool: &DbPool,
    ledger: &str,
    adaptor: &Adaptor,
    deadline: Instant,
) -> Result<PollReport, DbError> {
    let mut report = PollReport::default();

    // The engine's accounts first, so a peer's settlement to one of ours finds its account.
    if let Adaptor::Rfc38(engine) = adaptor {
        let sync = engine.sync_accounts(pool).await?;
        report.engine_accounts_created = sync.created;
        report.engine_accounts_deleted = sync.deleted;
        report.engine_accounts_failed = sync.failed;
        report.engine_accounts_backing_off = sync.backing_off;
    }

    // Retries first: they were owed before anything new.
    let due = {
        let mut conn = pool.get().await?;
        list_due_settlements(&mut conn, ledger, MAX_SETTLEMENTS_PER_POLL).await?
    };
    for settlement in due {
        if Instant::now() >= deadline {
            report.deferred = true;
            break;
        }
        attempt(pool, adaptor, settlement, &mut report).await?;
    }

    let room = MAX_SETTLEMENTS_PER_POLL - report.attempted();
    if room > 0 && !report.deferred {
        let accounts = {
            let mut conn = pool.get().await?;
            list_accounts_to_settle(&mut conn, ledger, room).await?
        };
        for account_id in accounts {
            if Instant::now() >= deadline {
                report.deferred = true;
                break;
            }
            let settlement = {
                let mut conn = pool.get().await?;
                let Some(account) = find_live_account(&mut conn, account_id).await? else {
                    continue;
                };
                if let Err(reason) = adaptor.ready_for(&account) {
                    tracing::warn!(
                        account.id = account.id,
                        account.username = %account.username,
                        %reason,
                        "over its settle threshold but cannot be settled; balance left as is"
                    );
                    continue;
                }
                match start_settlement(&mut conn, account_id, ledger).await {
                    Ok(settlement) => settlement,
                    // The database itself is away: no other account would fare better.
                    Err(err @ DbError::Unavailable(_)) => return Err(err),
                    // Anything else is this account's own trouble: the others go on.
                    Err(err) => {
                        report.skipped += 1;
                        count_settlement(ledger, SETTLEMENT_SKIPPED);
                        tracing::warn!(
                            account.id = account.id,
                            account.username = %account.username,
                            error = %err,
                            "settlement not started; tried again on the next poll"
                        );
                        continue;
                    }
                }
            };
            let Some(settlement) = settlement else {
                continue;
            };
            report.started += 1;
            tracing::info!(
                settlement.id = %settlement.id,
                account.id = settlement.account_id,
                settlement.amount = settlement.amount,
                "settlement started: balance lowered, pending"
            );
            attempt(pool, adaptor, settlement, &mut report).await?;
        }
    } else if room <= 0 {
        report.deferred = true;
    }

    if let Adaptor::Claims(claims) = adaptor {
        process_received_claims(pool, ledger, claims.node_address(), &mut report).await?;
    }
    Ok(report)
}

/// Calls the ledger for one pending settlement and records the outcome.
async fn attempt(
    pool: &DbPool,
    adaptor: &Adaptor,
    settlement: Settlement,
    report: &mut PollReport,
) -> Result<(), DbError> {
    let span = tracing::info_span!(
        "settlement.attempt",
        settlement.id = %settlement.id,
        account.id = settlement.account_id,
        settlement.amount = settlement.amount,
        settlement.attempt = i64::from(settlement.attempts) + 1,
    );
    async {
        let account = {
            let mut conn = pool.get().await?;
            find_settlement_account(&mut conn, &settlement).await?
        };
        let outcome = adaptor.settle(pool, &account, &settlement).await;
        let mut conn = pool.get().await?;
        match outcome {
            Ok(()) => {
                if confirm_settlement(&mut conn, settlement.id).await? {
                    report.confirmed += 1;
                    count_settlement(&settlement.ledger, SETTLEMENT_CONFIRMED);
                    tracing::info!("settlement confirmed");
                }
            }
            Err(AdaptorError::Transient(error)) => {
                let wait = SETTLEMENT_BACKOFF
                    .wait_with_jitter(u32::try_from(settlement.attempts).unwrap_or(0));
                if postpone_settlement(&mut conn, settlement.id, wait, &error).await? {
                    report.postponed += 1;
                    count_settlement(&settlement.ledger, SETTLEMENT_RETRY);
                    tracing::warn!(%error, retry_in = ?wait, "settlement not confirmed; retrying with the same key");
                }
            }
            Err(AdaptorError::Rejected(error)) => {
                // A cumulative claim is paid by any later claim the peer took.
                if matches!(adaptor, Adaptor::Claims(_))
                    && confirm_if_superseded(&mut conn, &settlement, &error).await?
                {
                    report.confirmed += 1;
                    count_settlement(&settlement.ledger, SETTLEMENT_CONFIRMED);
                    tracing::info!(%error, "claim rejected but superseded by a later confirmed claim; not refunded");
                } else if refund_settlement(&mut conn, settlement.id, &error).await? {
                    report.refunded += 1;
                    count_settlement(&settlement.ledger, SETTLEMENT_FAILED);
                    tracing::warn!(%error, "settlement rejected; amount refunded to the balance");
                }
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Verifies and credits the received claims of `ledger`'s accounts, oldest first.
async fn process_received_claims(
    pool: &DbPool,
    ledger: &str,
    our_address: Option<&str>,
    report: &mut PollReport,
) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    let claims = list_received_claims(&mut conn, ledger, MAX_CLAIMS_PER_POLL).await?;
    if i64::try_from(claims.len()).unwrap_or(i64::MAX) >= MAX_CLAIMS_PER_POLL {
        report.deferred = true;
    }
    for claim in claims {
        match process_claim(&mut conn, claim.id, |review| {
            verify_claim(review, our_address)
        })
        .await?
        {
            ClaimOutcome::Credited { delta } => {
                report.claims_credited += 1;
                count_claim(ledger, CLAIM_CREDITED);
                tracing::info!(
                    claim.id = claim.id,
                    account.id = claim.account_id,
                    credited = delta,
                    "claim credited"
                );
            }
            ClaimOutcome::Rejected(reason) => {
                report.claims_rejected += 1;
                count_claim(ledger, CLAIM_REJECTED);
                tracing::warn!(claim.id = claim.id, account.id = claim.account_id, %reason, "claim rejected");
            }
            ClaimOutcome::AlreadyProcessed => {}
        }
    }
    Ok(())
}

/// Counts one settlement decision. Only the run whose conditional update took effect
/// counts, so a decision is counted once even when two runs race.
fn count_settlement(ledger: &str, outcome: &'static str) {
    metrics::counter!(SETTLEMENTS_TOTAL, "ledger" => ledger.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Counts one processed claim.
fn count_claim(ledger: &str, outcome: &'static str) {
    metrics::counter!(CLAIMS_TOTAL, "ledger" => ledger.to_owned(), "outcome" => outcome)
        .increment(1);
}

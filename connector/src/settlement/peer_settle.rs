//! `PeerSettleService`: answers `peer.settle` Prepares here, by the sending account's
//! ledger, and never forwards them (RFC 38: "the peer connector MUST NOT forward").
//!
//! | sender's ledger | what happens | answer |
//! |---|---|---|
//! | none | nothing | F02 |
//! | `claims` | shape checked, a `settlement_claims` row written for the worker | Fulfill (empty data); bad shape → F00, database down → T00 |
//! | `rfc38` | data POSTed to `{engine_url}/accounts/{id}/messages`, bounded by the expiry | Fulfill with the engine's reply body; engine error, timeout or no connection → T00/T01 |
//!
//! Every Fulfill carries the peer-protocol fulfillment (32 zero bytes). The condition may
//! be either SHA-256 of that fulfillment (what Interledger.rs sends, and what matches) or
//! SHA-256 of the empty string (what RFC 38's text prints, which no fulfillment matches):
//! the answer is made here, so no fulfillment check downstream sees it, and a peer that
//! followed the RFC's text to the letter would otherwise never get a message through.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use schema::DbError;
use schema::DbPool;
use schema::models::ledger::LedgerKind;

use crate::accounts::{AccountInfo, LedgerInfo, SharedDirectory};
use crate::packet::ildcp::{PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};
use crate::packet::{Address, AddressRef, CONDITION_BYTES, ErrorCode, FulfillBuilder, Prepare};
use crate::service::{IlpResult, IncomingRequest, IncomingService, reject, time_left};

use super::claim::{ReceivedClaim, parse_claim};
use super::engine::{ENGINE_MESSAGE_TIMEOUT, EngineError, SettlementEngine};

/// Destination of settlement messages between peers.
pub const PEER_SETTLE_DESTINATION: AddressRef<'static> = match AddressRef::new("peer.settle") {
    Ok(address) => address,
    Err(_) => panic!("peer.settle is a valid ILP address"),
};

/// SHA-256 of the empty string (`e3b0c442…b855`): the `peer.settle` condition printed in
/// RFC 38, accepted next to [`PEER_PROTOCOL_CONDITION`].
pub const RFC38_PRINTED_CONDITION: [u8; CONDITION_BYTES] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Where received claims are written for the settlement worker.
pub trait ClaimStore: Send + Sync + 'static {
    /// Stores `claim` from `account_id`; returns the new row's id.
    fn insert_claim(
        &self,
        account_id: i64,
        claim: &ReceivedClaim,
    ) -> impl Future<Output = Result<i64, DbError>> + Send;
}

/// [`ClaimStore`] on the `settlement_claims` table.
#[derive(Clone)]
pub struct PgClaimStore {
    pool: DbPool,
}

impl std::fmt::Debug for PgClaimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgClaimStore").finish_non_exhaustive()
    }
}

impl PgClaimStore {
    /// Writes claims through `pool`.
    pub fn new(pool: DbPool) -> Self {
        PgClaimStore { pool }
    }
}

impl ClaimStore for PgClaimStore {
    async fn insert_claim(&self, account_id: i64, claim: &ReceivedClaim) -> Result<i64, DbError> {
        let mut conn = self.pool.get().await?;
        let row = schema::models::claim::NewClaim {
            account_id,
            cumulative_amount: claim.cumulative_amount,
            signed_payload: &claim.signed_payload,
            signature: &claim.signature,
        };
        schema::models::claim::insert_claim(&mut conn, &row).await
    }
}

/// Takes `peer.settle` Prepares; hands everything else to `next`.
#[derive(Debug)]
pub struct PeerSettleService<C, E, S> {
    node: Arc<Address>,
    directory: Arc<SharedDirectory>,
    claims: C,
    engine: E,
    next: S,
}

impl<C, E, S> PeerSettleService<C, E, S> {
    /// Answers `peer.settle` with `claims` (ledger kind `claims`) or `engine` (kind
    /// `rfc38`), looking ledgers up in `directory`; the rest goes to `next`.
    pub fn new(
        node: Arc<Address>,
        directory: Arc<SharedDirectory>,
        claims: C,
        engine: E,
        next: S,
    ) -> Self {
        PeerSettleService {
            node,
            directory,
            claims,
            engine,
            next,
        }
    }
}

impl<C: ClaimStore, E: SettlementEngine, S: IncomingService> IncomingService
    for PeerSettleService<C, E, S>
{
    async fn handle_request(&self, request: IncomingRequest) -> IlpResult {
        if request.prepare.destination() != PEER_SETTLE_DESTINATION {
            return self.next.handle_request(request).await;
        }
        let IncomingRequest { from, prepare } = request;
        let bad_request = |why: &str| {
            Err(reject(
                &self.node,
                ErrorCode::F00_BAD_REQUEST,
                &format!("peer.settle: {why}"),
                &[],
            ))
        };
        let condition = prepare.execution_condition();
        if *condition != PEER_PROTOCOL_CONDITION && *condition != RFC38_PRINTED_CONDITION {
            return bad_request("the condition must be the peer-protocol condition");
        }
        if prepare.amount() != 0 {
            return bad_request("the amount must be 0 (settlement messages carry no money)");
        }
        let Some(ledger_name) = &from.ledger else {
            return Err(reject(
                &self.node,
                ErrorCode::F02_UNREACHABLE,
                &format!(
                    "peer.settle: no settlement ledger is configured for account {}",
                    from.username
                ),
                &[],
            ));
        };
        let directory = self.directory.current();
        let Some(ledger) = directory.ledger(ledger_name) else {
            // Configuration in flux (the worker registers its ledgers when it starts):
            // temporary, so the peer retries.
            return Err(reject(
                &self.node,
                ErrorCode::T00_INTERNAL_ERROR,
                &format!("peer.settle: ledger {ledger_name} is not registered yet"),
                &[],
            ));
        };
        match ledger.kind {
            LedgerKind::Claims => self.record_claim(&from, &prepare).await,
            LedgerKind::Rfc38 => self.relay_to_engine(&from, ledger, prepare).await,
        }
    }
}

impl<C: ClaimStore, E: SettlementEngine, S> PeerSettleService<C, E, S> {
    async fn record_claim(&self, from: &AccountInfo, prepare: &Prepare) -> IlpResult {
        let claim = parse_claim(prepare.data(), &from.asset_code, from.asset_scale).map_err(
            |err| {
                tracing::info!(from.account = %from.username, error = %err, "peer.settle claim refused");
                reject(
                    &self.node,
                    ErrorCode::F00_BAD_REQUEST,
                    &format!("peer.settle: {err}"),
                    &[],
                )
            },
        )?;
        match self.claims.insert_claim(from.id, &claim).await {
            Ok(id) => {
                tracing::info!(
                    from.account = %from.username,
                    claim.id = id,
                    claim.cumulative_amount = claim.cumulative_amount,
                    "settlement claim received"
                );
                self.fulfill(&[])
            }
            Err(err) => {
                tracing::warn!(from.account = %from.username, error = %err, "cannot store a settlement claim");
                Err(reject(
                    &self.node,
                    ErrorCode::T00_INTERNAL_ERROR,
                    "peer.settle: the claim could not be stored; try again",
                    &[],
                ))
            }
        }
    }

    async fn relay_to_engine(
        &self,
        from: &AccountInfo,
        ledger: &LedgerInfo,
        prepare: Prepare,
    ) -> IlpResult {
        let Some(engine_url) = &ledger.engine_url else {
            return Err(reject(
                &self.node,
                ErrorCode::T00_INTERNAL_ERROR,
                &format!(
                    "peer.settle: ledger {} has no usable engine_url option",
                    ledger.name
                ),
                &[],
            ));
        };
        let timeout =
            time_left(prepare.expires_at(), SystemTime::now()).min(ENGINE_MESSAGE_TIMEOUT);
        let message = Bytes::from(prepare.into_data());
        match self
            .engine
            .send_message(engine_url, from.id, message, timeout)
            .await
        {
            Ok(reply) => self.fulfill(&reply),
            Err(err) => {
                tracing::warn!(
                    from.account = %from.username,
                    ledger.name = %ledger.name,
                    error = %err,
                    "settlement engine gave no reply to a peer.settle message"
                );
                let code = match err {
                    EngineError::Unreachable(_) | EngineError::BadUrl(_) => {
                        ErrorCode::T01_PEER_UNREACHABLE
                    }
                    EngineError::Timeout(_)
                    | EngineError::Status { .. }
                    | EngineError::TooLarge => ErrorCode::T00_INTERNAL_ERROR,
                };
                // The engine's error body, for the peer's engine to read.
                let data = match &err {
                    EngineError::Status { body, .. } => &body[..],
                    _ => &[],
                };
                Err(reject(
                    &self.node,
                    code,
                    &format!("peer.settle: settlement engine: {err}"),
                    data,
                ))
            }
        }
    }

    fn fulfill(&self, data: &[u8]) -> IlpResult {
        FulfillBuilder {
            fulfillment: &PEER_PROTOCOL_FULFILLMENT,
            data,
        }
        .build()
        .map_err(|err| {
            reject(
                &self.node,
                ErrorCode::T00_INTERNAL_ERROR,
                &format!("peer.settle: cannot build the Fulfill: {err}"),
                &[],
            )
        })
    }
}

#[cfg(test)]
mod tests;

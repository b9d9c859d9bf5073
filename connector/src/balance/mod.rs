//! `BalanceService`: every forwarded packet moves money, exactly once.
//!
//! On a Prepare it holds the incoming amount on the sender against this instance's credit
//! reservation (T04 when no more credit can be reserved, T00 at once while the database cannot
//! commit), forwards, and then either posts (Fulfill: the sender pays, the next hop is owed;
//! durable before the Fulfill goes upstream) or ends the hold (Reject, timeout: no row is
//! touched). Zero-amount packets touch nothing.
//!
//! - [`escrow`]: the reservations and the holds against them, in memory.
//! - [`writer`]: the PostgreSQL store: one task per process that commits posts and
//!   reservation changes in durable batches, exactly once even when the answer is lost.
//! - [`sweeper`]: keeps this process registered, reports what it has in flight, and gives
//!   back the reservations of processes that died.

pub mod escrow;
pub mod sweeper;
pub mod writer;

use std::sync::Arc;
use std::time::SystemTime;

pub use escrow::Hold;

use crate::packet::{Address, ErrorCode};
use crate::rates::Conversion;
use crate::service::{IlpResult, OutgoingRequest, OutgoingService, reject};

/// Why a balance operation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// No more credit can be reserved for the sender: its Prepare would take it below its
    /// credit limit (or beyond what a 64-bit balance holds).
    #[error("insufficient liquidity")]
    InsufficientLiquidity,
    /// The database cannot commit now (or the writer stopped); nothing was recorded.
    #[error("balance store unavailable")]
    Unavailable,
    /// The Fulfill could not be recorded before its packet expired.
    #[error("not recorded before the packet expired")]
    Expired,
    /// PostgreSQL refused this operation (and only this one).
    #[error("refused by the database")]
    Refused,
}

impl BalanceError {
    /// The Reject for a Prepare this error stopped: T04 or T00. Codes are chosen here only.
    pub fn to_reject(self, node: &Address, account: &str) -> crate::packet::Reject {
        match self {
            BalanceError::InsufficientLiquidity => reject(
                node,
                ErrorCode::T04_INSUFFICIENT_LIQUIDITY,
                &format!("{account} would exceed its credit limit"),
                &[],
            ),
            BalanceError::Unavailable | BalanceError::Expired | BalanceError::Refused => reject(
                node,
                ErrorCode::T00_INTERNAL_ERROR,
                "balances unavailable, nothing forwarded",
                &[],
            ),
        }
    }

    /// The Reject sent upstream instead of a Fulfill that could not be recorded.
    pub fn to_post_reject(self, node: &Address) -> crate::packet::Reject {
        let why = match self {
            BalanceError::Refused => "the payment was refused by the balance store",
            _ => "could not record the payment",
        };
        reject(node, ErrorCode::T00_INTERNAL_ERROR, why, &[])
    }
}

/// What `BalanceService` needs from storage.
pub trait BalanceStore: Send + Sync + 'static {
    /// Holds `amount` for a Prepare from `account`, unless that would take it below minus its
    /// credit limit counting everything already held or reserved.
    fn hold(
        &self,
        account: i64,
        amount: i64,
    ) -> impl Future<Output = Result<Hold, BalanceError>> + Send;
    /// Posts a Fulfill durably: the hold becomes the sender's debit, the next hop `to` is
    /// owed `credit` more (converted by `conversion`, which the books record). Retried while
    /// the database fails, until `deadline`. When this returns `Ok`, the change survives a
    /// crash; it is applied exactly once. Ends the hold whatever the outcome.
    fn post(
        &self,
        hold: Hold,
        to: i64,
        credit: i64,
        conversion: Option<Conversion>,
        deadline: SystemTime,
    ) -> impl Future<Output = Result<(), BalanceError>> + Send;
    /// Ends a hold without moving money.
    fn release(&self, hold: Hold);
}

impl<S: BalanceStore> BalanceStore for Arc<S> {
    fn hold(
        &self,
        account: i64,
        amount: i64,
    ) -> impl Future<Output = Result<Hold, BalanceError>> + Send {
        (**self).hold(account, amount)
    }
    fn post(
        &self,
        hold: Hold,
        to: i64,
        credit: i64,
        conversion: Option<Conversion>,
        deadline: SystemTime,
    ) -> impl Future<Output = Result<(), BalanceError>> + Send {
        (**self).post(hold, to, credit, conversion, deadline)
    }
    fn release(&self, hold: Hold) {
        (**self).release(hold)
    }
}

/// Holds on the way out, posts or releases on the way back.
#[derive(Debug)]
pub struct BalanceService<S, O> {
    node: Arc<Address>,
    store: S,
    next: O,
}

impl<S, O> BalanceService<S, O> {
    /// Keeps balances in `store` for packets sent through `next`.
    pub fn new(node: Arc<Address>, store: S, next: O) -> Self {
        BalanceService { node, store, next }
    }
}

impl<S: BalanceStore, O: OutgoingService> OutgoingService for BalanceService<S, O> {
    async fn send_request(&self, request: OutgoingRequest) -> IlpResult {
        let debit = request.original_amount;
        let credit = request.prepare.amount();
        if debit == 0 && credit == 0 {
            return self.next.send_request(request).await;
        }
        // The validator caps amounts at i64::MAX, so these conversions hold.
        let (Ok(debit), Ok(credit)) = (i64::try_from(debit), i64::try_from(credit)) else {
            return Err(reject(
                &self.node,
                ErrorCode::F08_AMOUNT_TOO_LARGE,
                "amount over 2^63 - 1",
                &[],
            ));
        };
        let (from, to) = (request.from.id, request.to.id);
        let from_name = request.from.username.clone();
        let to_name = request.to.username.clone();
        let conversion = request.conversion;
        // The incoming expiry: how long the sender still waits for our answer.
        let deadline = request.prepare.expires_at();
        let hold = match self.store.hold(from, debit).await {
            Ok(hold) => hold,
            Err(err) => return Err(err.to_reject(&self.node, &from_name)),
        };
        match self.next.send_request(request).await {
            Ok(fulfill) => match self
                .store
                .post(hold, to, credit, conversion, deadline)
                .await
            {
                Ok(()) => {
                    // Amounts moved, per account (u64: both are non-negative).
                    metrics::counter!("ilp_amount_total", "account" => from_name, "direction" => "in")
                        .increment(debit.unsigned_abs());
                    metrics::counter!("ilp_amount_total", "account" => to_name, "direction" => "out")
                        .increment(credit.unsigned_abs());
                    Ok(fulfill)
                }
                // The writer logs outages and refusals once; a line per packet would flood.
                Err(err) => {
                    tracing::debug!(from.account = %from_name, error = %err, "a Fulfill was not recorded; not relaying it");
                    Err(err.to_post_reject(&self.node))
                }
            },
            Err(rejected) => {
                self.store.release(hold);
                Err(rejected)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::service::testing::*;

    /// Balances in memory with the same rules as the database: (balance, held, limit).
    #[derive(Default)]
    struct MemoryStore {
        rows: Mutex<HashMap<i64, (i64, i64, i64)>>,
        journal: Mutex<Vec<(i64, i64)>>,
    }

    impl BalanceStore for MemoryStore {
        async fn hold(&self, account: i64, amount: i64) -> Result<Hold, BalanceError> {
            let mut rows = self.rows.lock().unwrap();
            let row = rows.entry(account).or_insert((0, 0, 0));
            if row.0 - row.1 - amount < -row.2 {
                return Err(BalanceError::InsufficientLiquidity);
            }
            row.1 += amount;
            Ok(Hold {
                account,
                amount,
                reserved: true,
            })
        }
        async fn post(
            &self,
            hold: Hold,
            to: i64,
            credit: i64,
            _conversion: Option<Conversion>,
            _deadline: SystemTime,
        ) -> Result<(), BalanceError> {
            let mut rows = self.rows.lock().unwrap();
            let from = rows.entry(hold.account).or_insert((0, 0, 0));
            from.0 -= hold.amount;
            from.1 -= hold.amount;
            rows.entry(to).or_insert((0, 0, 0)).0 += credit;
            let mut journal = self.journal.lock().unwrap();
            journal.push((hold.account, -hold.amount));
            journal.push((to, credit));
            Ok(())
        }
        fn release(&self, hold: Hold) {
            self.rows
                .lock()
                .unwrap()
                .entry(hold.account)
                .or_insert((0, 0, 0))
                .1 -= hold.amount;
        }
    }

    fn request(amount: u64) -> OutgoingRequest {
        OutgoingRequest {
            from: account(1, "alice"),
            to: account(2, "bob"),
            original_amount: amount,
            prepare: prepare("test.node.bob", amount, Duration::from_secs(5)),
            conversion: None,
        }
    }

    fn store(limit: i64) -> Arc<MemoryStore> {
        let store = MemoryStore::default();
        store.rows.lock().unwrap().insert(1, (0, 0, limit));
        store.rows.lock().unwrap().insert(2, (0, 0, 0));
        Arc::new(store)
    }

    #[tokio::test]
    async fn fulfill_moves_the_amount_from_sender_to_next_hop() {
        // Proves a fulfilled packet debits the sender, credits the next hop, and leaves no hold.
        let store = store(100);
        let service = BalanceService::new(
            Arc::new(node()),
            store.clone(),
            Recorder::new(|| Ok(fulfill())),
        );
        service.send_request(request(30)).await.unwrap();
        let rows = store.rows.lock().unwrap().clone();
        assert_eq!(rows[&1], (-30, 0, 100));
        assert_eq!(rows[&2].0, 30);
    }

    #[tokio::test]
    async fn reject_releases_the_hold_and_moves_nothing() {
        // Proves a rejected packet leaves both balances and the sender's holds as they were.
        let store = store(100);
        let next =
            Recorder::new(|| Err(reject(&node(), ErrorCode::F99_APPLICATION_ERROR, "no", &[])));
        let service = BalanceService::new(Arc::new(node()), store.clone(), next);
        let rejected = service.send_request(request(30)).await.unwrap_err();
        assert_eq!(rejected.code(), ErrorCode::F99_APPLICATION_ERROR);
        let rows = store.rows.lock().unwrap().clone();
        assert_eq!((rows[&1], rows[&2].0), ((0, 0, 100), 0));
        assert!(store.journal.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn over_the_credit_limit_is_t04_and_not_forwarded() {
        // Proves a Prepare that does not fit the sender's credit is refused before forwarding.
        let store = store(100);
        let next = Recorder::new(|| Ok(fulfill()));
        let service = BalanceService::new(Arc::new(node()), store.clone(), next.clone());
        service.send_request(request(60)).await.unwrap();
        let rejected = service.send_request(request(41)).await.unwrap_err();
        assert_eq!(rejected.code(), ErrorCode::T04_INSUFFICIENT_LIQUIDITY);
        assert_eq!(next.count(), 1);
        service.send_request(request(40)).await.unwrap();
        assert_eq!(store.rows.lock().unwrap()[&1], (-100, 0, 100));
    }

    #[tokio::test]
    async fn zero_amount_packets_touch_no_row() {
        // Proves a zero-amount packet is forwarded without any balance operation.
        let store = Arc::new(MemoryStore::default());
        let service = BalanceService::new(
            Arc::new(node()),
            store.clone(),
            Recorder::new(|| Ok(fulfill())),
        );
        service.send_request(request(0)).await.unwrap();
        assert!(store.rows.lock().unwrap().is_empty());
    }
}

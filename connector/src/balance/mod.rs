//! `BalanceService`: every forwarded packet moves money, exactly once.
//!
//! On a Prepare it holds the incoming amount on the sender (T04 if that would take the
//! sender below its credit limit), forwards, and then either posts (Fulfill: the sender
//! pays, the next hop is owed; durable before the Fulfill goes upstream) or releases the
//! hold (Reject, timeout). Zero-amount packets touch no row.
//!
//! [`writer`] is the PostgreSQL store: one task per process that batches everything arriving
//! while the previous batch commits. [`sweeper`] keeps this process registered and releases
//! the holds of processes that died.

pub mod sweeper;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use schema::models::balance::Post;

use crate::packet::{Address, ErrorCode};
use crate::service::{IlpResult, OutgoingRequest, OutgoingService, reject};

/// Pause between attempts to post a Fulfill while the database fails.
pub const POST_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Why a balance operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// The hold would take the account below its credit limit.
    #[error("insufficient liquidity")]
    InsufficientLiquidity,
    /// The database could not be reached or refused the batch; nothing was recorded.
    #[error("balance store unavailable: {0}")]
    Unavailable(String),
}

impl BalanceError {
    /// The Reject for this error: T04 or T00. Codes are chosen here only.
    pub fn to_reject(&self, node: &Address, account: &str) -> crate::packet::Reject {
        match self {
            BalanceError::InsufficientLiquidity => reject(
                node,
                ErrorCode::T04_INSUFFICIENT_LIQUIDITY,
                &format!("{account} would exceed its credit limit"),
                &[],
            ),
            BalanceError::Unavailable(_) => reject(
                node,
                ErrorCode::T00_INTERNAL_ERROR,
                "balances unavailable, nothing forwarded",
                &[],
            ),
        }
    }
}

/// What `BalanceService` needs from storage.
pub trait BalanceStore: Send + Sync + 'static {
    /// Holds `amount` on `account`, unless `balance - held - amount` would go below minus its
    /// credit limit. The check and the hold are one atomic step.
    fn hold(
        &self,
        account: i64,
        amount: i64,
    ) -> impl Future<Output = Result<(), BalanceError>> + Send;
    /// Posts a Fulfill durably: ends the sender's hold, lowers its balance, raises the next
    /// hop's. When this returns `Ok`, the change survives a crash.
    fn post(&self, post: Post) -> impl Future<Output = Result<(), BalanceError>> + Send;
    /// Ends a hold without moving money.
    fn release(
        &self,
        account: i64,
        amount: i64,
    ) -> impl Future<Output = Result<(), BalanceError>> + Send;
}

impl<S: BalanceStore> BalanceStore for Arc<S> {
    fn hold(
        &self,
        account: i64,
        amount: i64,
    ) -> impl Future<Output = Result<(), BalanceError>> + Send {
        (**self).hold(account, amount)
    }
    fn post(&self, post: Post) -> impl Future<Output = Result<(), BalanceError>> + Send {
        (**self).post(post)
    }
    fn release(
        &self,
        account: i64,
        amount: i64,
    ) -> impl Future<Output = Result<(), BalanceError>> + Send {
        (**self).release(account, amount)
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
        // The incoming expiry: how long the sender still waits for our answer.
        let deadline = request.prepare.expires_at();
        if let Err(err) = self.store.hold(from, debit).await {
            if let BalanceError::Unavailable(why) = &err {
                tracing::warn!(from.account = %from_name, error = %why, "hold failed");
            }
            return Err(err.to_reject(&self.node, &from_name));
        }
        match self.next.send_request(request).await {
            Ok(fulfill) => {
                // Durable before we relay: retry while the sender still waits for us.
                loop {
                    match self
                        .store
                        .post(Post {
                            from,
                            to,
                            debit,
                            credit,
                        })
                        .await
                    {
                        Ok(()) => {
                            // Amounts moved, per account (u64: both are non-negative).
                            metrics::counter!("ilp_amount_total", "account" => from_name, "direction" => "in")
                                .increment(debit.unsigned_abs());
                            metrics::counter!("ilp_amount_total", "account" => to_name, "direction" => "out")
                                .increment(credit.unsigned_abs());
                            return Ok(fulfill);
                        }
                        Err(err) if SystemTime::now() + POST_RETRY_DELAY < deadline => {
                            tracing::warn!(from.account = %from_name, error = %err, "posting a Fulfill failed; retrying");
                            tokio::time::sleep(POST_RETRY_DELAY).await;
                        }
                        Err(err) => {
                            tracing::error!(from.account = %from_name, error = %err, "could not record a Fulfill before the expiry; not relaying it");
                            return Err(reject(
                                &self.node,
                                ErrorCode::T00_INTERNAL_ERROR,
                                "could not record the payment",
                                &[],
                            ));
                        }
                    }
                }
            }
            Err(rejected) => {
                if let Err(err) = self.store.release(from, debit).await {
                    // The hold stays until this process's holds are swept (see sweeper).
                    tracing::warn!(from.account = %from_name, error = %err, "releasing a hold failed");
                }
                Err(rejected)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::service::testing::*;

    /// Balances in memory with the same rules as the database: (balance, held, limit).
    #[derive(Default)]
    struct MemoryStore {
        rows: Mutex<HashMap<i64, (i64, i64, i64)>>,
        journal: Mutex<Vec<(i64, i64)>>,
    }

    impl BalanceStore for MemoryStore {
        async fn hold(&self, account: i64, amount: i64) -> Result<(), BalanceError> {
            let mut rows = self.rows.lock().unwrap();
            let row = rows.entry(account).or_insert((0, 0, 0));
            if row.0 - row.1 - amount < -row.2 {
                return Err(BalanceError::InsufficientLiquidity);
            }
            row.1 += amount;
            Ok(())
        }
        async fn post(&self, post: Post) -> Result<(), BalanceError> {
            let mut rows = self.rows.lock().unwrap();
            let from = rows.entry(post.from).or_insert((0, 0, 0));
            from.0 -= post.debit;
            from.1 -= post.debit;
            rows.entry(post.to).or_insert((0, 0, 0)).0 += post.credit;
            let mut journal = self.journal.lock().unwrap();
            journal.push((post.from, -post.debit));
            journal.push((post.to, post.credit));
            Ok(())
        }
        async fn release(&self, account: i64, amount: i64) -> Result<(), BalanceError> {
            self.rows
                .lock()
                .unwrap()
                .entry(account)
                .or_insert((0, 0, 0))
                .1 -= amount;
            Ok(())
        }
    }

    fn request(amount: u64) -> OutgoingRequest {
        OutgoingRequest {
            from: account(1, "alice"),
            to: account(2, "bob"),
            original_amount: amount,
            prepare: prepare("test.node.bob", amount, Duration::from_secs(5)),
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

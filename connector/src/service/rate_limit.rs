//! `RateLimitService`: per-account packet and amount rates, shared across replicas.
//!
//! An account may have `max_packets_per_second` and `max_amount_per_second` (base units).
//! Every live connector instance enforces its *share* of each: the limit divided by the
//! number of live instances (from `connector_instances`, counted at each heartbeat), with a
//! token bucket that holds one second of that share. So the replicas together let through at
//! most the limit per second, plus one second's worth as a burst, whichever replicas the
//! packets reach; a replica that gets more than its share of an account's traffic refuses the
//! rest even if another replica is idle (the price of sharing nothing but the database).
//!
//! Over the packet rate: T05 Rate Limited. Over the amount rate: T04 Insufficient Liquidity
//! (RFC 27's "bandwidth"). A refused packet takes nothing from either bucket. Accounts
//! without limits pass without a lookup.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::packet::{Address, ErrorCode};
use crate::service::{IlpResult, IncomingRequest, IncomingService, reject};

/// Tokens are kept in billionths, so a bucket refills smoothly with integer arithmetic.
const SCALE: i128 = 1_000_000_000;

/// One token bucket: `tokens` (in billionths) refilled at `rate` per second, at most one
/// second's worth.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: i128,
    rate: i128,
    last: Instant,
}

impl Bucket {
    fn new(rate: i128, now: Instant) -> Bucket {
        Bucket {
            tokens: rate * SCALE,
            rate,
            last: now,
        }
    }

    /// Refills for the time since the last call at `rate` per second (one second at most),
    /// re-sizing to a new `rate` first.
    fn refill(&mut self, rate: i128, now: Instant) {
        if rate != self.rate {
            self.rate = rate;
            self.tokens = self.tokens.min(rate * SCALE);
        }
        let elapsed = i128::try_from(now.duration_since(self.last).as_nanos()).unwrap_or(i128::MAX);
        self.last = now;
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(rate))
            .min(rate * SCALE);
    }

    fn has(&self, cost: i128) -> bool {
        self.tokens >= cost * SCALE
    }

    fn take(&mut self, cost: i128) {
        self.tokens -= cost * SCALE;
    }
}

#[derive(Debug, Default)]
struct AccountBuckets {
    packets: Option<Bucket>,
    amount: Option<Bucket>,
}

/// Enforces this instance's share of each account's rates, then hands the Prepare on.
#[derive(Debug)]
pub struct RateLimitService<I> {
    node: Arc<Address>,
    replicas: Arc<AtomicUsize>,
    buckets: Mutex<HashMap<i64, AccountBuckets>>,
    next: I,
}

impl<I> RateLimitService<I> {
    /// Limits with `replicas` (live connector instances, at least 1) sharing each limit.
    pub fn new(node: Arc<Address>, replicas: Arc<AtomicUsize>, next: I) -> Self {
        RateLimitService {
            node,
            replicas,
            buckets: Mutex::new(HashMap::new()),
            next,
        }
    }

    /// This instance's share of `limit` per second: at least 1.
    fn share(&self, limit: u64) -> i128 {
        let replicas = self.replicas.load(Ordering::Relaxed).max(1) as i128;
        (i128::from(limit) / replicas).max(1)
    }

    /// `None` when the Prepare may go; else the Reject.
    fn check(
        &self,
        account: i64,
        username: &str,
        packets: Option<u64>,
        amounts: Option<u64>,
        amount: u64,
    ) -> Option<crate::packet::Reject> {
        let now = Instant::now();
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = all.entry(account).or_default();
        let packet_bucket = packets.map(|limit| {
            let rate = self.share(limit);
            let bucket = buckets
                .packets
                .get_or_insert_with(|| Bucket::new(rate, now));
            bucket.refill(rate, now);
            bucket
        });
        if let Some(bucket) = &packet_bucket
            && !bucket.has(1)
        {
            metrics::counter!("ilp_rate_limited_total", "limit" => "packets").increment(1);
            return Some(reject(
                &self.node,
                ErrorCode::T05_RATE_LIMITED,
                &format!("{username} is over its packet rate"),
                &[],
            ));
        }
        if let Some(limit) = amounts {
            let rate = self.share(limit);
            let bucket = buckets.amount.get_or_insert_with(|| Bucket::new(rate, now));
            bucket.refill(rate, now);
            if !bucket.has(i128::from(amount)) {
                metrics::counter!("ilp_rate_limited_total", "limit" => "amount").increment(1);
                return Some(reject(
                    &self.node,
                    ErrorCode::T04_INSUFFICIENT_LIQUIDITY,
                    &format!("{username} is over its amount rate"),
                    &[],
                ));
            }
            bucket.take(i128::from(amount));
        }
        if let Some(bucket) = packet_bucket {
            bucket.take(1);
        }
        None
    }
}

impl<I: IncomingService> IncomingService for RateLimitService<I> {
    async fn handle_request(&self, request: IncomingRequest) -> IlpResult {
        let from = &request.from;
        let (packets, amounts) = (from.max_packets_per_second, from.max_amount_per_second);
        if (packets.is_some() || amounts.is_some())
            && let Some(rejected) = self.check(
                from.id,
                &from.username,
                packets,
                amounts,
                request.prepare.amount(),
            )
        {
            return Err(rejected);
        }
        self.next.handle_request(request).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::service::testing::*;

    fn limited(packets: Option<u64>, amount: Option<u64>) -> Arc<crate::accounts::AccountInfo> {
        let mut info = (*account(1, "alice")).clone();
        info.max_packets_per_second = packets;
        info.max_amount_per_second = amount;
        Arc::new(info)
    }

    async fn send<I: IncomingService>(
        service: &RateLimitService<I>,
        from: &Arc<crate::accounts::AccountInfo>,
        amount: u64,
    ) -> Option<ErrorCode> {
        let request = IncomingRequest {
            from: from.clone(),
            prepare: prepare("test.node.bob", amount, Duration::from_secs(5)),
        };
        service
            .handle_request(request)
            .await
            .err()
            .map(|r| r.code())
    }

    #[tokio::test(start_paused = true)]
    async fn packets_beyond_the_share_get_t05_and_the_bucket_refills() {
        // Proves a 10/s limit shared by 2 replicas lets 5 through at once, refuses the 6th
        // with T05, and lets one more through every 200 ms.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = RateLimitService::new(
            Arc::new(node()),
            Arc::new(AtomicUsize::new(2)),
            next.clone(),
        );
        let alice = limited(Some(10), None);
        for _ in 0..5 {
            assert_eq!(send(&service, &alice, 1).await, None);
        }
        assert_eq!(
            send(&service, &alice, 1).await,
            Some(ErrorCode::T05_RATE_LIMITED)
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(send(&service, &alice, 1).await, None);
        assert_eq!(
            send(&service, &alice, 1).await,
            Some(ErrorCode::T05_RATE_LIMITED)
        );
        assert_eq!(next.count(), 6);
        // An account without limits is never refused.
        let free = account(2, "carol");
        for _ in 0..100 {
            assert_eq!(send(&service, &free, 1).await, None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn amounts_beyond_the_share_get_t04_and_refused_packets_take_nothing() {
        // Proves a 1000/s amount limit on one replica: 600 + 400 pass, 1 more is T04; a
        // refused packet costs neither bucket; half a second brings back 500.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = RateLimitService::new(
            Arc::new(node()),
            Arc::new(AtomicUsize::new(1)),
            next.clone(),
        );
        let alice = limited(Some(100), Some(1000));
        assert_eq!(send(&service, &alice, 600).await, None);
        assert_eq!(send(&service, &alice, 400).await, None);
        assert_eq!(
            send(&service, &alice, 1).await,
            Some(ErrorCode::T04_INSUFFICIENT_LIQUIDITY)
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            send(&service, &alice, 501).await,
            Some(ErrorCode::T04_INSUFFICIENT_LIQUIDITY)
        );
        assert_eq!(send(&service, &alice, 500).await, None);
        assert_eq!(next.count(), 3);
    }
}

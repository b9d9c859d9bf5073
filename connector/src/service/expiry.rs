//! The expiry shortener: the next hop gets a Prepare that expires earlier than ours, so we
//! still have time to relay its Fulfill upstream before our own Prepare expires.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::packet::{Address, ErrorCode};

use super::{IlpResult, OutgoingRequest, OutgoingService, reject, time_left};

/// Least margin kept for ourselves, whatever the next hop's round-trip time.
pub const MIN_EXPIRY_MARGIN: Duration = Duration::from_millis(500);
/// Longest we hold a Prepare for the next hop, whatever the sender allowed.
pub const MAX_HOLD_TIME: Duration = Duration::from_secs(30);
/// Least time the next hop must be given; less gets R02.
pub const MIN_OUTGOING_WINDOW: Duration = Duration::from_millis(500);

/// Subtracts a margin (the next hop's round-trip time, at least [`MIN_EXPIRY_MARGIN`]) from
/// the expiry, caps the hold at [`MAX_HOLD_TIME`], and rejects with R02 when less than
/// [`MIN_OUTGOING_WINDOW`] would be left.
#[derive(Debug)]
pub struct ExpiryShortener<O> {
    node: Arc<Address>,
    next: O,
}

impl<O> ExpiryShortener<O> {
    /// Shortens expiries on the way to `next`.
    pub fn new(node: Arc<Address>, next: O) -> Self {
        ExpiryShortener { node, next }
    }
}

impl<O: OutgoingService> OutgoingService for ExpiryShortener<O> {
    async fn send_request(&self, mut request: OutgoingRequest) -> IlpResult {
        let now = SystemTime::now();
        let margin = request.to.round_trip_time.max(MIN_EXPIRY_MARGIN);
        let ours = request.prepare.expires_at();
        let shortened = (ours.checked_sub(margin).unwrap_or(now)).min(now + MAX_HOLD_TIME);
        if time_left(shortened, now) < MIN_OUTGOING_WINDOW {
            return Err(reject(
                &self.node,
                ErrorCode::R02_INSUFFICIENT_TIMEOUT,
                &format!(
                    "{} ms left, too little after our {} ms margin",
                    time_left(ours, now).as_millis(),
                    margin.as_millis()
                ),
                &[],
            ));
        }
        request.prepare.set_expires_at(shortened);
        self.next.send_request(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::testing::*;

    fn request(expires_in: Duration) -> OutgoingRequest {
        OutgoingRequest {
            from: account(1, "alice"),
            to: account(2, "bob"),
            original_amount: 10,
            prepare: prepare("test.node.bob", 10, expires_in),
            conversion: None,
        }
    }

    #[tokio::test]
    async fn subtracts_the_margin_and_caps_the_hold() {
        // Proves the next hop sees our expiry minus its round trip, and never more than 30 s.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = ExpiryShortener::new(Arc::new(node()), next.clone());
        let start = SystemTime::now();
        service
            .send_request(request(Duration::from_secs(10)))
            .await
            .unwrap();
        service
            .send_request(request(Duration::from_secs(120)))
            .await
            .unwrap();
        let seen = next.seen.lock().unwrap().clone();
        let first = seen[0].2.duration_since(start).unwrap();
        assert!(
            first <= Duration::from_millis(9_500) && first > Duration::from_millis(9_300),
            "{first:?}"
        );
        let capped = seen[1].2.duration_since(start).unwrap();
        assert!(
            capped <= Duration::from_secs(31) && capped >= Duration::from_secs(29),
            "{capped:?}"
        );
    }

    #[tokio::test]
    async fn too_little_time_is_r02_and_not_forwarded() {
        // Proves a Prepare with less than margin + window left is rejected with R02 by us.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = ExpiryShortener::new(Arc::new(node()), next.clone());
        let reject = service
            .send_request(request(Duration::from_millis(900)))
            .await
            .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::R02_INSUFFICIENT_TIMEOUT);
        assert_eq!(next.count(), 0);
    }
}

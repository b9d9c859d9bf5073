//! Checks on Prepares coming in, and on what comes back from the next hop.

use std::sync::Arc;
use std::time::SystemTime;

use crate::packet::{Address, ErrorCode, MaxPacketAmountDetails};

use super::{
    IlpResult, IncomingRequest, IncomingService, OutgoingRequest, OutgoingService, reject,
    time_left,
};

/// Rejects Prepares that have already expired (R00) or exceed the sender's maximum packet
/// amount (F08, with the amounts RFC 27 puts in its data).
#[derive(Debug)]
pub struct IncomingValidator<S> {
    node: Arc<Address>,
    next: S,
}

impl<S> IncomingValidator<S> {
    /// Validates, then hands on to `next`.
    pub fn new(node: Arc<Address>, next: S) -> Self {
        IncomingValidator { node, next }
    }
}

impl<S: IncomingService> IncomingService for IncomingValidator<S> {
    async fn handle_request(&self, request: IncomingRequest) -> IlpResult {
        let prepare = &request.prepare;
        if prepare.expires_at() <= SystemTime::now() {
            return Err(reject(
                &self.node,
                ErrorCode::R00_TRANSFER_TIMED_OUT,
                "packet expired before it arrived",
                &[],
            ));
        }
        // Balances are 64-bit signed integers: nothing larger than i64::MAX can be held.
        let max = request
            .from
            .max_packet_amount
            .unwrap_or(u64::MAX)
            .min(i64::MAX as u64);
        if prepare.amount() > max {
            let details = MaxPacketAmountDetails {
                amount_received: prepare.amount(),
                max_amount: max,
            };
            return Err(reject(
                &self.node,
                ErrorCode::F08_AMOUNT_TOO_LARGE,
                &format!(
                    "amount {} is over the maximum packet amount {max}",
                    prepare.amount()
                ),
                &details.to_bytes(),
            ));
        }
        self.next.handle_request(request).await
    }
}

/// Gives up on the next hop at the (shortened) expiry with R00, and turns a Fulfill whose
/// SHA-256 is not the condition into F05, so the sender is never told it was fulfilled.
#[derive(Debug)]
pub struct OutgoingValidator<O> {
    node: Arc<Address>,
    next: O,
}

impl<O> OutgoingValidator<O> {
    /// Guards calls to `next`.
    pub fn new(node: Arc<Address>, next: O) -> Self {
        OutgoingValidator { node, next }
    }
}

impl<O: OutgoingService> OutgoingService for OutgoingValidator<O> {
    async fn send_request(&self, request: OutgoingRequest) -> IlpResult {
        let condition = *request.prepare.execution_condition();
        let left = time_left(request.prepare.expires_at(), SystemTime::now());
        let to = request.to.username.clone();
        match tokio::time::timeout(left, self.next.send_request(request)).await {
            Err(_) => Err(reject(
                &self.node,
                ErrorCode::R00_TRANSFER_TIMED_OUT,
                &format!("{to} did not answer before the packet expired"),
                &[],
            )),
            Ok(Ok(fulfill)) if !fulfill.matches_condition(&condition) => {
                tracing::warn!(to.account = %to, "fulfillment does not match the condition");
                Err(reject(
                    &self.node,
                    ErrorCode::F05_WRONG_CONDITION,
                    "fulfillment does not match the condition",
                    &[],
                ))
            }
            Ok(result) => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::packet::FulfillBuilder;
    use crate::service::testing::*;

    #[tokio::test]
    async fn expired_prepare_is_rejected_and_not_forwarded() {
        // Proves an already-expired Prepare gets R00 from us and never reaches the next link.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = IncomingValidator::new(Arc::new(node()), next.clone());
        let mut prepare = prepare("test.node.bob", 10, Duration::from_secs(10));
        prepare.set_expires_at(SystemTime::now() - Duration::from_millis(1));
        let reject = service
            .handle_request(IncomingRequest {
                from: account(1, "alice"),
                prepare,
            })
            .await
            .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::R00_TRANSFER_TIMED_OUT);
        assert_eq!(
            reject.triggered_by().map(|a| a.to_string()),
            Some("test.node".to_owned())
        );
        assert_eq!(next.count(), 0);
    }

    #[tokio::test]
    async fn over_max_packet_amount_is_f08_with_amounts() {
        // Proves F08 carries the received and maximum amounts as RFC 27 defines its data.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = IncomingValidator::new(Arc::new(node()), next.clone());
        let mut from = (*account(1, "alice")).clone();
        from.max_packet_amount = Some(100);
        let from = Arc::new(from);
        let ok = service
            .handle_request(IncomingRequest {
                from: from.clone(),
                prepare: prepare("test.x", 100, Duration::from_secs(5)),
            })
            .await;
        assert!(ok.is_ok());
        let reject = service
            .handle_request(IncomingRequest {
                from,
                prepare: prepare("test.x", 101, Duration::from_secs(5)),
            })
            .await
            .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::F08_AMOUNT_TOO_LARGE);
        let mut expected = 101u64.to_be_bytes().to_vec();
        expected.extend_from_slice(&100u64.to_be_bytes());
        assert_eq!(reject.data(), expected.as_slice());
        assert_eq!(next.count(), 1);
    }

    #[tokio::test]
    async fn amounts_beyond_a_signed_64_bit_balance_are_f08() {
        // Proves invariant 5 at the door: an amount no balance can hold is refused, not wrapped.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = IncomingValidator::new(Arc::new(node()), next.clone());
        let too_big = i64::MAX as u64 + 1;
        let reject = service
            .handle_request(IncomingRequest {
                from: account(1, "alice"),
                prepare: prepare("test.x", too_big, Duration::from_secs(5)),
            })
            .await
            .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::F08_AMOUNT_TOO_LARGE);
        let details = MaxPacketAmountDetails::from_bytes(reject.data()).unwrap();
        assert_eq!(
            (details.amount_received, details.max_amount),
            (too_big, i64::MAX as u64)
        );
        assert_eq!(next.count(), 0);
    }

    #[tokio::test]
    async fn wrong_fulfillment_becomes_f05() {
        // Proves a Fulfill that does not hash to the condition is turned into a Reject.
        let next = Recorder::new(|| {
            Ok(FulfillBuilder {
                fulfillment: &[9; 32],
                data: &[],
            }
            .build()
            .unwrap())
        });
        let service = OutgoingValidator::new(Arc::new(node()), next);
        let request = OutgoingRequest {
            from: account(1, "alice"),
            to: account(2, "bob"),
            original_amount: 10,
            prepare: prepare("test.node.bob", 10, Duration::from_secs(5)),
            conversion: None,
        };
        let reject = service.send_request(request).await.unwrap_err();
        assert_eq!(reject.code(), ErrorCode::F05_WRONG_CONDITION);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_next_hop_gets_r00_at_the_expiry() {
        // Proves we stop waiting at the Prepare's expiry and answer R00 ourselves.
        struct Silent;
        impl OutgoingService for Silent {
            async fn send_request(&self, _: OutgoingRequest) -> IlpResult {
                std::future::pending().await
            }
        }
        let service = OutgoingValidator::new(Arc::new(node()), Silent);
        let request = OutgoingRequest {
            from: account(1, "alice"),
            to: account(2, "bob"),
            original_amount: 10,
            prepare: prepare("test.node.bob", 10, Duration::from_secs(3)),
            conversion: None,
        };
        let started = tokio::time::Instant::now();
        let reject = service.send_request(request).await.unwrap_err();
        assert_eq!(reject.code(), ErrorCode::R00_TRANSFER_TIMED_OUT);
        let waited = started.elapsed();
        assert!(
            waited <= Duration::from_secs(3) && waited > Duration::from_millis(2900),
            "{waited:?}"
        );
    }
}

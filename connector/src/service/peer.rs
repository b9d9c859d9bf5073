//! `peer.*` addresses are between two neighbours and never routed onward (RFC 15). Handlers
//! before this link take the ones we speak (`peer.config`); everything else under `peer.`
//! stops here with F02.

use std::sync::Arc;

use crate::packet::{Address, ErrorCode};

use super::{IlpResult, IncomingRequest, IncomingService, reject};

/// Rejects any Prepare addressed under `peer.` that no earlier handler took.
#[derive(Debug)]
pub struct PeerProtocolGuard<S> {
    node: Arc<Address>,
    next: S,
}

impl<S> PeerProtocolGuard<S> {
    /// Guards `next` from `peer.*` packets.
    pub fn new(node: Arc<Address>, next: S) -> Self {
        PeerProtocolGuard { node, next }
    }
}

impl<S: IncomingService> IncomingService for PeerProtocolGuard<S> {
    async fn handle_request(&self, request: IncomingRequest) -> IlpResult {
        let destination = request.prepare.destination();
        if destination.scheme() == "peer" {
            return Err(reject(
                &self.node,
                ErrorCode::F02_UNREACHABLE,
                &format!(
                    "{destination}: peer.* addresses are not routed and no handler here takes this one"
                ),
                &[],
            ));
        }
        self.next.handle_request(request).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::service::testing::*;

    #[tokio::test]
    async fn peer_addresses_are_never_forwarded() {
        // Proves peer.* stops with F02 while other schemes pass.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = PeerProtocolGuard::new(Arc::new(node()), next.clone());
        for destination in ["peer.settle", "peer.route.update", "peer.x.y"] {
            let request = IncomingRequest {
                from: account(1, "a"),
                prepare: prepare(destination, 0, Duration::from_secs(5)),
            };
            let reject = service.handle_request(request).await.unwrap_err();
            assert_eq!(reject.code(), ErrorCode::F02_UNREACHABLE, "{destination}");
        }
        assert_eq!(next.count(), 0);
        let request = IncomingRequest {
            from: account(1, "a"),
            prepare: prepare("test.peer", 0, Duration::from_secs(5)),
        };
        service.handle_request(request).await.unwrap();
        assert_eq!(next.count(), 1);
    }
}

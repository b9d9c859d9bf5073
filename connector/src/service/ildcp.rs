//! The ILDCP host (RFC 31): answers `peer.config` with the requesting account's address
//! and asset, so a child learns its configuration from us.

use std::sync::Arc;

use crate::packet::ildcp::{IldcpError, IldcpResponse, check_ildcp_request};
use crate::packet::{Address, ErrorCode};

use super::{IlpResult, IncomingRequest, IncomingService, reject};

/// Answers `peer.config` Prepares; hands everything else on.
#[derive(Debug)]
pub struct IldcpService<S> {
    node: Arc<Address>,
    next: S,
}

impl<S> IldcpService<S> {
    /// Answers ILDCP, hands the rest to `next`.
    pub fn new(node: Arc<Address>, next: S) -> Self {
        IldcpService { node, next }
    }
}

impl<S: IncomingService> IncomingService for IldcpService<S> {
    async fn handle_request(&self, request: IncomingRequest) -> IlpResult {
        match check_ildcp_request(&request.prepare, std::time::SystemTime::now()) {
            Ok(()) => {}
            Err(IldcpError::NotIldcpRequest) => return self.next.handle_request(request).await,
            Err(err) => {
                return Err(reject(
                    &self.node,
                    ErrorCode::F00_BAD_REQUEST,
                    &err.to_string(),
                    &[],
                ));
            }
        }
        let from = &request.from;
        let response = IldcpResponse {
            address: from.ilp_address.clone(),
            asset_scale: from.asset_scale,
            asset_code: from.asset_code.clone(),
        };
        tracing::debug!(from.account = %from.username, address = %response.address, "answered ILDCP");
        response.to_fulfill().map_err(|err| {
            reject(
                &self.node,
                ErrorCode::T00_INTERNAL_ERROR,
                &format!("ILDCP answer: {err}"),
                &[],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::packet::ildcp::ildcp_request;
    use crate::service::testing::*;

    #[tokio::test]
    async fn answers_with_the_requesting_accounts_address_and_asset() {
        // Proves peer.config gets the sender's own address, code and scale, and goes no further.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = IldcpService::new(Arc::new(node()), next.clone());
        let request = IncomingRequest {
            from: account(3, "carol"),
            prepare: ildcp_request(SystemTime::now() + Duration::from_secs(30)),
        };
        let fulfill = service.handle_request(request).await.unwrap();
        let response = IldcpResponse::from_fulfill(&fulfill).unwrap();
        assert_eq!(response.address.as_str(), "test.node.carol");
        assert_eq!(
            (response.asset_code.as_str(), response.asset_scale),
            ("USD", 2)
        );
        assert_eq!(next.count(), 0);
    }

    #[tokio::test]
    async fn other_packets_pass_through() {
        // Proves a normal Prepare is not mistaken for ILDCP.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = IldcpService::new(Arc::new(node()), next.clone());
        let request = IncomingRequest {
            from: account(3, "carol"),
            prepare: prepare("test.x", 1, Duration::from_secs(5)),
        };
        service.handle_request(request).await.unwrap();
        assert_eq!(next.count(), 1);
    }
}

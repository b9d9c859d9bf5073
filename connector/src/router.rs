//! `Router`: picks the next hop for a Prepare from the in-memory routing table.

use std::sync::Arc;

use crate::accounts::SharedDirectory;
use crate::packet::{Address, ErrorCode};
use crate::service::{
    IlpResult, IncomingRequest, IncomingService, OutgoingRequest, OutgoingService, reject,
};

/// Chooses the next hop by longest-prefix match over the cached routing table (static routes
/// plus every account's own address) and hands the Prepare to the outgoing chain.
#[derive(Debug)]
pub struct Router<O> {
    node: Arc<Address>,
    directory: Arc<SharedDirectory>,
    next: O,
}

impl<O> Router<O> {
    /// Routes with `directory`'s table into `next`.
    pub fn new(node: Arc<Address>, directory: Arc<SharedDirectory>, next: O) -> Self {
        Router {
            node,
            directory,
            next,
        }
    }
}

impl<O: OutgoingService> IncomingService for Router<O> {
    async fn handle_request(&self, request: IncomingRequest) -> IlpResult {
        let directory = self.directory.current();
        let destination = request.prepare.destination();
        let Some(to) = directory.route(destination.as_str()) else {
            return Err(reject(
                &self.node,
                ErrorCode::F02_UNREACHABLE,
                &format!("no route to {destination}"),
                &[],
            ));
        };
        let to = to.clone();
        drop(directory);
        let original_amount = request.prepare.amount();
        self.next
            .send_request(OutgoingRequest {
                from: request.from,
                to,
                original_amount,
                prepare: request.prepare,
                conversion: None,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::accounts::Directory;
    use crate::service::testing::*;
    use schema::models::Account;
    use schema::models::route::Route;

    fn row(id: i64, username: &str, asset_code: &str) -> Account {
        let now = chrono::Utc::now();
        Account {
            id,
            username: username.to_owned(),
            ilp_address: None,
            asset_code: asset_code.to_owned(),
            asset_scale: 2,
            relation: schema::Relation::Child,
            max_packet_amount: None,
            settle_threshold: None,
            settle_to: 0,
            ledger: None,
            incoming_token_hash: vec![id as u8; 32],
            outgoing_url: None,
            outgoing_token: None,
            round_trip_time_ms: 500,
            claims_public_key: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            spread: None,
            max_packets_per_second: None,
            max_amount_per_second: None,
            stream_receiver: false,
        }
    }

    fn router(next: Arc<impl OutgoingService>) -> Router<Arc<impl OutgoingService>> {
        let accounts = [
            row(1, "alice", "USD"),
            row(2, "bob", "USD"),
            row(3, "eur", "EUR"),
        ];
        let routes = [Route {
            prefix: "g.bob".into(),
            account_id: 2,
            username: "bob".into(),
            created_at: chrono::Utc::now(),
        }];
        let directory = Directory::build(&node(), &accounts, &routes, &[]);
        Router::new(
            Arc::new(node()),
            Arc::new(SharedDirectory::new(directory)),
            next,
        )
    }

    #[tokio::test]
    async fn routes_by_static_prefix_and_by_account_address() {
        // Proves both kinds of route reach the right account, at segment boundaries.
        let next = Recorder::new(|| Ok(fulfill()));
        let router = router(next.clone());
        for destination in [
            "g.bob",
            "g.bob.x",
            "test.node.bob.receiver",
            "test.node.alice",
        ] {
            let request = IncomingRequest {
                from: account(1, "alice"),
                prepare: prepare(destination, 5, Duration::from_secs(5)),
            };
            router.handle_request(request).await.unwrap();
        }
        let to: Vec<i64> = next.seen.lock().unwrap().iter().map(|s| s.0).collect();
        assert_eq!(to, vec![2, 2, 2, 1]);
    }

    #[tokio::test]
    async fn unknown_destination_is_f02_naming_it() {
        // Proves a destination without a route is rejected by us with its name in the message.
        let next = Recorder::new(|| Ok(fulfill()));
        let router = router(next.clone());
        for destination in ["g.bobby", "test.node", "g.nobody"] {
            let request = IncomingRequest {
                from: account(1, "alice"),
                prepare: prepare(destination, 5, Duration::from_secs(5)),
            };
            let reject = router.handle_request(request).await.unwrap_err();
            assert_eq!(reject.code(), ErrorCode::F02_UNREACHABLE);
            assert!(
                reject.message_str().contains(destination),
                "{:?}",
                reject.message_str()
            );
        }
        assert_eq!(next.count(), 0);
    }
}

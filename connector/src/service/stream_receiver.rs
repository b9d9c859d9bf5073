//! The STREAM receivers the connector hosts: accounts with `stream_receiver` set are paid
//! here instead of at an outgoing URL.
//!
//! The innermost outgoing link: a Prepare whose next hop is such an account is answered by a
//! [`StreamReceiver`] of that account, and every other Prepare goes on to the HTTP client.
//! Being inside [`crate::balance::BalanceService`], a Fulfill from here is posted like one
//! from a peer: the sender is debited and the receiving account credited, durably and exactly
//! once, before the Fulfill goes back. A Reject touches no balance.
//!
//! Each account's receiver secret is derived from the node's `stream` secret (the
//! `node_secrets` table, shared by every replica) and the account id, so any replica answers
//! for a connection another one handed out, and one account's connection secrets say
//! nothing about another's.

use std::sync::Arc;

use crate::accounts::AccountInfo;
use crate::service::{IlpResult, OutgoingRequest, OutgoingService};
use crate::stream::crypto::hmac_sha256;
use crate::stream::{ConnectionDetails, GenerateError, ReceiverAccount, StreamReceiver};

/// The node's STREAM secret, from which each hosted account's receiver is derived.
#[derive(Clone)]
pub struct HostedReceivers {
    node_secret: Arc<[u8; 32]>,
}

impl std::fmt::Debug for HostedReceivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostedReceivers { node_secret: <redacted> }")
    }
}

impl HostedReceivers {
    /// Receivers derived from `node_secret` (`node_secrets` row `stream`).
    pub fn new(node_secret: [u8; 32]) -> HostedReceivers {
        HostedReceivers {
            node_secret: Arc::new(node_secret),
        }
    }

    /// The key our pings' return legs are fulfilled with (see [`crate::service::echo`]).
    pub fn ping_key(&self) -> [u8; 32] {
        crate::service::echo::ping_key(&self.node_secret)
    }

    /// The receiver of account `id`.
    pub fn receiver(&self, id: i64) -> StreamReceiver {
        let secret = hmac_sha256(
            self.node_secret.as_slice(),
            format!("stream receiver of account {id}").as_bytes(),
        );
        StreamReceiver::new(&secret)
    }

    /// A new STREAM connection to `account`, for SPSP: its destination (the account's
    /// address and a fresh token) and shared secret.
    pub fn connection(&self, account: &AccountInfo) -> Result<ConnectionDetails, GenerateError> {
        self.receiver(account.id).generate(&account.ilp_address)
    }
}

/// Answers Prepares to hosted receivers; hands every other one to `next`.
#[derive(Debug, Clone)]
pub struct StreamReceiverService<O> {
    receivers: HostedReceivers,
    next: O,
}

impl<O: OutgoingService> StreamReceiverService<O> {
    /// Wraps `next`, the HTTP client.
    pub fn new(receivers: HostedReceivers, next: O) -> Self {
        StreamReceiverService { receivers, next }
    }
}

impl<O: OutgoingService> OutgoingService for StreamReceiverService<O> {
    async fn send_request(&self, request: OutgoingRequest) -> IlpResult {
        let to = &request.to;
        if !to.stream_receiver {
            return self.next.send_request(request).await;
        }
        let account = ReceiverAccount {
            address: &to.ilp_address,
            asset_code: &to.asset_code,
            asset_scale: to.asset_scale,
        };
        let answer = self
            .receivers
            .receiver(to.id)
            .handle(&request.prepare, &account);
        let outcome = if answer.is_ok() {
            "fulfilled"
        } else {
            "rejected"
        };
        metrics::counter!("ilp_stream_received_packets_total", "outcome" => outcome).increment(1);
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::packet::{ErrorCode, PrepareBuilder};
    use crate::service::testing::*;
    use crate::stream::{Frame, StreamKeys, StreamPacket};

    /// A hosted account `username` under `node`, for the tests.
    fn hosted(node: &crate::packet::Address, id: i64, username: &str) -> Arc<AccountInfo> {
        let mut account = (*crate::service::testing::account(id, username)).clone();
        account.ilp_address = node.with_suffix(username).expect("a valid username");
        account.stream_receiver = true;
        Arc::new(account)
    }

    fn money_prepare(details: &ConnectionDetails, amount: u64) -> crate::packet::Prepare {
        let keys = StreamKeys::new(&details.shared_secret);
        let data = StreamPacket {
            sequence: 1,
            packet_type: crate::packet::PacketType::Prepare,
            prepare_amount: 0,
            frames: vec![Frame::StreamMoney {
                stream_id: 1,
                shares: 1,
            }],
        }
        .encrypt(&keys)
        .expect("encrypts");
        let condition = keys.condition(&data);
        PrepareBuilder {
            amount,
            expires_at: SystemTime::now() + Duration::from_secs(10),
            execution_condition: &condition,
            destination: details.destination.as_address_ref(),
            data: &data,
        }
        .build()
        .expect("builds")
    }

    fn request(to: Arc<AccountInfo>, prepare: crate::packet::Prepare) -> OutgoingRequest {
        OutgoingRequest {
            from: account(1, "alice"),
            to,
            original_amount: prepare.amount(),
            prepare,
            conversion: None,
        }
    }

    #[tokio::test]
    async fn a_hosted_account_is_paid_here_and_others_go_on() {
        // Proves a Prepare to a hosted receiver is fulfilled here without reaching the HTTP
        // client, and one to any other account is handed on untouched.
        let node = node();
        let receivers = HostedReceivers::new([7; 32]);
        let next = Recorder::new(|| Ok(fulfill()));
        let service = StreamReceiverService::new(receivers.clone(), next.clone());

        let carol = hosted(&node, 3, "carol");
        let details = receivers.connection(&carol).expect("generates");
        assert!(details.destination.as_str().starts_with("test.node.carol."));
        let fulfill = service
            .send_request(request(carol.clone(), money_prepare(&details, 50)))
            .await
            .expect("the hosted receiver fulfills");
        assert!(!fulfill.fulfillment().iter().all(|b| *b == 0));
        assert_eq!(next.count(), 0, "nothing went to the HTTP client");

        let bob = account(2, "bob");
        let _ = service
            .send_request(request(
                bob,
                prepare("test.node.bob.x", 5, Duration::from_secs(10)),
            ))
            .await;
        assert_eq!(next.count(), 1, "another account's Prepare is handed on");
    }

    #[tokio::test]
    async fn one_accounts_connection_does_not_pay_another() {
        // Proves each account has its own receiver secret: a connection handed out for carol
        // cannot be used to pay dave, even with dave's address in front of carol's token.
        let node = node();
        let receivers = HostedReceivers::new([7; 32]);
        let service =
            StreamReceiverService::new(receivers.clone(), Recorder::new(|| Ok(fulfill())));
        let (carol, dave) = (hosted(&node, 3, "carol"), hosted(&node, 4, "dave"));
        let details = receivers.connection(&carol).expect("generates");
        let token = details
            .destination
            .as_str()
            .rsplit('.')
            .next()
            .expect("a token")
            .to_owned();
        let misdirected = ConnectionDetails {
            destination: dave.ilp_address.with_suffix(&token).expect("valid"),
            shared_secret: details.shared_secret,
        };
        let reject = service
            .send_request(request(dave, money_prepare(&misdirected, 50)))
            .await
            .expect_err("dave's receiver cannot open carol's connection");
        assert_eq!(reject.code(), ErrorCode::F06_UNEXPECTED_PAYMENT);
    }
}

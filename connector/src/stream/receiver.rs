//! A stateless STREAM receiver: answers each Prepare from its bytes and the server secret.
//!
//! Any replica holding the same server secret gives the same answer to the same packet, so
//! no connection state is kept or shared. What a stateful receiver would track, the
//! connector's balance path does instead: **the caller credits `prepare.amount()` of every
//! Prepare that [`StreamReceiver::handle`] fulfills**, and nothing for a Reject. Fulfilling
//! is the receiver's only side effect.
//!
//! # Answers
//! | Prepare | answer |
//! |---|---|
//! | expired | R00, no STREAM data |
//! | no segment after the receiver's address | F02, no STREAM data |
//! | data that does not decrypt, is not a STREAM packet, or is not meant for a Prepare | F06 (RFC 29 §4.2), no STREAM data |
//! | a client stream with an even ID (server-initiated numbering) | F99 + `ConnectionClose(ProtocolViolation)` |
//! | amount below the packet's minimum, or a condition we cannot fulfill (probes, closes) | F99 |
//! | otherwise (money, or 0-amount control packets) | Fulfill |
//!
//! F99 and Fulfill carry an encrypted STREAM response with the request's sequence and the
//! amount that arrived (the Prepare's amount), which is how senders measure the exchange rate
//! with unfulfillable probes. The response frames:
//! - `ConnectionAssetDetails` (and `ConnectionMaxStreamId`) when the request has a
//!   `ConnectionNewAddress`, empty address included (the JS senders' way to ask for them);
//! - `StreamMaxMoney { receive_max: u64::MAX, total_received: 0 }` for each stream the request
//!   names in `StreamMoney` / `StreamMaxMoney` / `StreamData` / `StreamMaxData`: the limit
//!   never shrinks and never blocks the sender (totals are not known without state);
//! - `StreamClose(NoError)` echoing each `StreamClose`, so the sender sees the stream end.
//!
//! `ConnectionClose` needs no answer: with no state there is nothing to tear down, and a
//! late packet of a closed connection is answered like any other. `StreamData` is not kept
//! anywhere: this receiver takes money only.

use std::time::SystemTime;

use crate::packet::{Address, ErrorCode, Fulfill, FulfillBuilder, PacketType, Prepare, Reject};
use crate::service::reject;

use super::crypto::{
    ConnectionDetails, ConnectionGenerator, GenerateError, SECRET_BYTES, StreamKeys, sha256,
};
use super::packet::{Frame, StreamErrorCode, StreamPacket};

/// Largest stream ID advertised in `ConnectionMaxStreamId`: generous, and exact as a JS number.
pub const ADVERTISED_MAX_STREAM_ID: u64 = u32::MAX as u64;

/// Most frames in one response, so a request naming thousands of streams cannot make a
/// response that does not fit an ILP packet.
pub const MAX_RESPONSE_FRAMES: usize = 64;

/// The account a receiver answers for: the address tokens are appended to, and its asset.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverAccount<'a> {
    /// The address connections are generated under (`<address>.<token>`).
    pub address: &'a Address,
    /// Asset code reported in `ConnectionAssetDetails`.
    pub asset_code: &'a str,
    /// Asset scale reported in `ConnectionAssetDetails`.
    pub asset_scale: u8,
}

/// The STREAM receiver of one server secret.
#[derive(Debug, Clone)]
pub struct StreamReceiver {
    generator: ConnectionGenerator,
}

impl StreamReceiver {
    /// A receiver for `server_secret`; replicas must share it.
    pub fn new(server_secret: &[u8; SECRET_BYTES]) -> Self {
        Self {
            generator: ConnectionGenerator::new(server_secret),
        }
    }

    /// The generator behind this receiver (for SPSP: new destinations and secrets).
    pub fn generator(&self) -> &ConnectionGenerator {
        &self.generator
    }

    /// A new connection under `base`: destination `base.<token>` and its shared secret.
    pub fn generate(&self, base: &Address) -> Result<ConnectionDetails, GenerateError> {
        self.generator.generate(base)
    }

    /// Answers `prepare`, addressed to `account.address.<token>…`, at the current time.
    ///
    /// On `Ok`, the caller credits `prepare.amount()` to the account (see the module docs).
    pub fn handle(
        &self,
        prepare: &Prepare,
        account: &ReceiverAccount<'_>,
    ) -> Result<Fulfill, Reject> {
        self.handle_at(prepare, account, SystemTime::now())
    }

    /// [`handle`](Self::handle) with the clock given.
    pub fn handle_at(
        &self,
        prepare: &Prepare,
        account: &ReceiverAccount<'_>,
        now: SystemTime,
    ) -> Result<Fulfill, Reject> {
        let node = account.address;
        if prepare.expires_at() <= now {
            return Err(reject(
                node,
                ErrorCode::R00_TRANSFER_TIMED_OUT,
                "packet expired",
                &[],
            ));
        }
        let Some(shared_secret) = self
            .generator
            .shared_secret_for(node.as_address_ref(), prepare.destination())
        else {
            return Err(reject(
                node,
                ErrorCode::F02_UNREACHABLE,
                "no STREAM connection token in the destination",
                &[],
            ));
        };
        let keys = StreamKeys::new(&shared_secret);
        let unexpected =
            |message: &str| reject(node, ErrorCode::F06_UNEXPECTED_PAYMENT, message, &[]);
        let request = match StreamPacket::decrypt(&keys, prepare.data()) {
            Ok(request) => request,
            Err(_) => return Err(unexpected("data is not a STREAM packet of this connection")),
        };
        if request.packet_type != PacketType::Prepare {
            return Err(unexpected("STREAM packet is not meant for a Prepare"));
        }

        let answer = Answer::new(&request.frames, account);
        let respond = |packet_type: PacketType, frames: Vec<Frame>| StreamPacket {
            sequence: request.sequence,
            packet_type,
            prepare_amount: prepare.amount(),
            frames,
        };
        let reject_with = |frames: Vec<Frame>| {
            let data = match respond(PacketType::Reject, frames).encrypt(&keys) {
                Ok(data) => data,
                Err(_) => return reject(node, ErrorCode::T00_INTERNAL_ERROR, "", &[]),
            };
            reject(node, ErrorCode::F99_APPLICATION_ERROR, "", &data)
        };

        if let Some(violation) = answer.violation {
            return Err(reject_with(vec![violation]));
        }
        let fulfillment = keys.fulfillment(prepare.data());
        let fulfillable = sha256(&fulfillment) == *prepare.execution_condition();
        if !fulfillable || prepare.amount() < request.prepare_amount {
            return Err(reject_with(answer.frames));
        }
        let data = respond(PacketType::Fulfill, answer.frames)
            .encrypt(&keys)
            .map_err(|_| reject(node, ErrorCode::T00_INTERNAL_ERROR, "", &[]))?;
        FulfillBuilder {
            fulfillment: &fulfillment,
            data: &data,
        }
        .build()
        .map_err(|_| reject(node, ErrorCode::T00_INTERNAL_ERROR, "", &[]))
    }
}

/// The response frames for a request's frames, and a protocol violation if there is one.
struct Answer {
    frames: Vec<Frame>,
    violation: Option<Frame>,
}

impl Answer {
    fn new(request: &[Frame], account: &ReceiverAccount<'_>) -> Self {
        let mut answer = Answer {
            frames: Vec::new(),
            violation: None,
        };
        let mut asset_details_sent = false;
        let mut streams: Vec<u64> = Vec::new();
        let mut closed: Vec<u64> = Vec::new();
        for frame in request {
            match frame {
                Frame::ConnectionNewAddress { .. } if !asset_details_sent => {
                    asset_details_sent = true;
                    answer.push(Frame::ConnectionAssetDetails {
                        asset_code: account.asset_code.to_owned(),
                        asset_scale: account.asset_scale,
                    });
                    answer.push(Frame::ConnectionMaxStreamId {
                        max_stream_id: ADVERTISED_MAX_STREAM_ID,
                    });
                }
                Frame::StreamMoney { stream_id, .. }
                | Frame::StreamMaxMoney { stream_id, .. }
                | Frame::StreamData { stream_id, .. }
                | Frame::StreamMaxData { stream_id, .. } => {
                    // RFC 29 §4.4.1: client streams are odd; we are always the server.
                    if stream_id % 2 == 0 {
                        answer.violation = Some(Frame::ConnectionClose {
                            code: StreamErrorCode::PROTOCOL_VIOLATION,
                            message: format!(
                                "stream {stream_id} is even: client-initiated streams are odd"
                            ),
                        });
                    } else if !streams.contains(stream_id) && streams.len() < MAX_RESPONSE_FRAMES {
                        streams.push(*stream_id);
                    }
                }
                Frame::StreamClose { stream_id, .. }
                    if !closed.contains(stream_id) && closed.len() < MAX_RESPONSE_FRAMES =>
                {
                    closed.push(*stream_id);
                }
                _ => {}
            }
        }
        for &stream_id in &closed {
            answer.push(Frame::StreamClose {
                stream_id,
                code: StreamErrorCode::NO_ERROR,
                message: String::new(),
            });
        }
        for &stream_id in streams.iter().filter(|id| !closed.contains(id)) {
            answer.push(Frame::StreamMaxMoney {
                stream_id,
                receive_max: u64::MAX,
                total_received: 0,
            });
        }
        answer
    }

    /// Adds a response frame, up to [`MAX_RESPONSE_FRAMES`].
    fn push(&mut self, frame: Frame) {
        if self.frames.len() < MAX_RESPONSE_FRAMES {
            self.frames.push(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::packet::{AddressRef, PrepareBuilder};
    use crate::stream::crypto::random_condition;

    const SERVER_SECRET: [u8; 32] = [3; 32];

    struct Fixture {
        receiver: StreamReceiver,
        address: Address,
        details: ConnectionDetails,
        keys: StreamKeys,
    }

    impl Fixture {
        fn new() -> Self {
            let receiver = StreamReceiver::new(&SERVER_SECRET);
            let address = Address::new("test.connector.bob").unwrap();
            let details = receiver.generate(&address).unwrap();
            let keys = StreamKeys::new(&details.shared_secret);
            Self {
                receiver,
                address,
                details,
                keys,
            }
        }

        fn account(&self) -> ReceiverAccount<'_> {
            ReceiverAccount {
                address: &self.address,
                asset_code: "USD",
                asset_scale: 2,
            }
        }

        /// A Prepare of `amount` carrying `packet`, fulfillable or not.
        fn prepare(&self, amount: u64, packet: &StreamPacket, fulfillable: bool) -> Prepare {
            let data = packet.encrypt(&self.keys).unwrap();
            let condition = if fulfillable {
                self.keys.condition(&data)
            } else {
                random_condition().unwrap()
            };
            PrepareBuilder {
                amount,
                expires_at: SystemTime::now() + Duration::from_secs(30),
                execution_condition: &condition,
                destination: self.details.destination.as_address_ref(),
                data: &data,
            }
            .build()
            .unwrap()
        }

        fn handle(&self, prepare: &Prepare) -> Result<Fulfill, Reject> {
            self.receiver.handle(prepare, &self.account())
        }
    }

    fn money(sequence: u64, minimum: u64) -> StreamPacket {
        StreamPacket {
            sequence,
            packet_type: PacketType::Prepare,
            prepare_amount: minimum,
            frames: vec![Frame::StreamMoney {
                stream_id: 1,
                shares: 1,
            }],
        }
    }

    fn response(keys: &StreamKeys, data: &[u8]) -> StreamPacket {
        StreamPacket::decrypt(keys, data).unwrap()
    }

    #[test]
    fn fulfills_money_and_reports_what_arrived() {
        // Proves a valid money packet is fulfilled with the right fulfillment and an encrypted
        // response echoing the sequence, the arrived amount and an unlimited StreamMaxMoney.
        let fixture = Fixture::new();
        let prepare = fixture.prepare(500, &money(7, 495), true);
        let fulfill = fixture.handle(&prepare).unwrap();
        assert!(fulfill.matches_condition(prepare.execution_condition()));
        let response = response(&fixture.keys, fulfill.data());
        assert_eq!(response.sequence, 7);
        assert_eq!(response.packet_type, PacketType::Fulfill);
        assert_eq!(response.prepare_amount, 500);
        assert_eq!(
            response.frames,
            vec![Frame::StreamMaxMoney {
                stream_id: 1,
                receive_max: u64::MAX,
                total_received: 0
            }]
        );
    }

    #[test]
    fn probes_get_f99_with_the_amount_that_arrived() {
        // Proves an unfulfillable probe with ConnectionNewAddress("") is rejected F99 with a
        // Reject-type response carrying the amount and the account's asset details.
        let fixture = Fixture::new();
        let probe = StreamPacket {
            sequence: 1,
            packet_type: PacketType::Prepare,
            prepare_amount: 0,
            frames: vec![Frame::ConnectionNewAddress {
                source_address: String::new(),
            }],
        };
        let reject = fixture
            .handle(&fixture.prepare(1_000_000, &probe, false))
            .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::F99_APPLICATION_ERROR);
        assert_eq!(reject.triggered_by().unwrap(), fixture.address);
        let response = response(&fixture.keys, reject.data());
        assert_eq!(response.sequence, 1);
        assert_eq!(response.packet_type, PacketType::Reject);
        assert_eq!(response.prepare_amount, 1_000_000);
        assert_eq!(
            response.frames,
            vec![
                Frame::ConnectionAssetDetails {
                    asset_code: "USD".into(),
                    asset_scale: 2
                },
                Frame::ConnectionMaxStreamId {
                    max_stream_id: ADVERTISED_MAX_STREAM_ID
                },
            ]
        );
    }

    #[test]
    fn amounts_below_the_minimum_are_rejected_f99() {
        // Proves a fulfillable packet delivering 494 against a minimum of 495 is F99, amount 494.
        let fixture = Fixture::new();
        let reject = fixture
            .handle(&fixture.prepare(494, &money(3, 495), true))
            .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::F99_APPLICATION_ERROR);
        assert_eq!(response(&fixture.keys, reject.data()).prepare_amount, 494);
    }

    #[test]
    fn zero_amount_control_packets_are_fulfilled() {
        // Proves a fulfillable 0-amount packet (JS sends StreamClose this way) is fulfilled and
        // its StreamClose echoed, so the JS sender does not resend it forever.
        let fixture = Fixture::new();
        let close = StreamPacket {
            sequence: 9,
            packet_type: PacketType::Prepare,
            prepare_amount: 0,
            frames: vec![
                Frame::StreamMaxMoney {
                    stream_id: 1,
                    receive_max: 0,
                    total_received: 0,
                },
                Frame::StreamClose {
                    stream_id: 1,
                    code: StreamErrorCode::NO_ERROR,
                    message: String::new(),
                },
            ],
        };
        let fulfill = fixture.handle(&fixture.prepare(0, &close, true)).unwrap();
        assert_eq!(
            response(&fixture.keys, fulfill.data()).frames,
            vec![Frame::StreamClose {
                stream_id: 1,
                code: StreamErrorCode::NO_ERROR,
                message: String::new()
            }]
        );
    }

    #[test]
    fn undecryptable_or_misdirected_data_is_f06() {
        // Proves foreign data, a Fulfill-type STREAM packet and garbage all get F06, no data.
        let fixture = Fixture::new();
        let other = StreamKeys::new(&[1; 32]);
        let data = money(1, 0).encrypt(&other).unwrap();
        let foreign = PrepareBuilder {
            amount: 10,
            expires_at: SystemTime::now() + Duration::from_secs(30),
            execution_condition: &[0; 32],
            destination: fixture.details.destination.as_address_ref(),
            data: &data,
        }
        .build()
        .unwrap();
        let wrong_type = StreamPacket {
            packet_type: PacketType::Fulfill,
            ..money(1, 0)
        };
        for prepare in [foreign, fixture.prepare(10, &wrong_type, true)] {
            let reject = fixture.handle(&prepare).unwrap_err();
            assert_eq!(reject.code(), ErrorCode::F06_UNEXPECTED_PAYMENT);
            assert!(reject.data().is_empty());
        }
    }

    #[test]
    fn expired_and_tokenless_prepares_are_r00_and_f02() {
        // Proves an expired Prepare is R00 before anything else, and one to the bare address F02.
        let fixture = Fixture::new();
        let prepare = fixture.prepare(10, &money(1, 0), true);
        let later = prepare.expires_at() + Duration::from_millis(1);
        let reject = fixture
            .receiver
            .handle_at(&prepare, &fixture.account(), later)
            .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::R00_TRANSFER_TIMED_OUT);
        let bare = PrepareBuilder {
            amount: 10,
            expires_at: SystemTime::now() + Duration::from_secs(30),
            execution_condition: &[0; 32],
            destination: AddressRef::new("test.connector.bob").unwrap(),
            data: prepare.data(),
        }
        .build()
        .unwrap();
        assert_eq!(
            fixture.handle(&bare).unwrap_err().code(),
            ErrorCode::F02_UNREACHABLE
        );
    }

    #[test]
    fn even_client_stream_ids_close_the_connection() {
        // Proves money on stream 2 (server numbering) is F99 with ConnectionClose(ProtocolViolation).
        let fixture = Fixture::new();
        let packet = StreamPacket {
            frames: vec![Frame::StreamMoney {
                stream_id: 2,
                shares: 1,
            }],
            ..money(4, 0)
        };
        let reject = fixture
            .handle(&fixture.prepare(10, &packet, true))
            .unwrap_err();
        assert_eq!(reject.code(), ErrorCode::F99_APPLICATION_ERROR);
        let frames = response(&fixture.keys, reject.data()).frames;
        assert!(matches!(
            frames.as_slice(),
            [Frame::ConnectionClose { code, .. }] if *code == StreamErrorCode::PROTOCOL_VIOLATION
        ));
    }

    #[test]
    fn any_replica_with_the_server_secret_answers_the_same() {
        // Proves a second receiver built from the same secret fulfills a packet of a connection
        // the first one generated, with the same fulfillment: no state is needed.
        let fixture = Fixture::new();
        let replica = StreamReceiver::new(&SERVER_SECRET);
        let prepare = fixture.prepare(42, &money(2, 40), true);
        let first = fixture.handle(&prepare).unwrap();
        let second = replica.handle(&prepare, &fixture.account()).unwrap();
        assert_eq!(first.fulfillment(), second.fulfillment());
        let stranger = StreamReceiver::new(&[4; 32]);
        assert_eq!(
            stranger
                .handle(&prepare, &fixture.account())
                .unwrap_err()
                .code(),
            ErrorCode::F06_UNEXPECTED_PAYMENT
        );
    }

    #[test]
    fn responses_stay_small_whatever_the_request_names() {
        // Proves a request naming 2 000 streams gets at most MAX_RESPONSE_FRAMES frames back.
        let fixture = Fixture::new();
        let packet = StreamPacket {
            frames: (0..2_000)
                .map(|index| Frame::StreamMaxMoney {
                    stream_id: 2 * index + 1,
                    receive_max: 0,
                    total_received: 0,
                })
                .collect(),
            ..money(5, 0)
        };
        let fulfill = fixture.handle(&fixture.prepare(1, &packet, true)).unwrap();
        assert_eq!(
            response(&fixture.keys, fulfill.data()).frames.len(),
            MAX_RESPONSE_FRAMES
        );
    }
}

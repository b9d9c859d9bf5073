//! Sender ↔ receiver in-process, through a fake next hop that behaves like a connector:
//! it enforces a maximum packet amount (F08 with RFC 27 data), converts amounts at a rate,
//! floored, and hands the Prepare to the receiver; or it fails, hangs, or lies.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::time::Instant;

use super::*;
use crate::packet::{
    Address, ErrorCode, Fulfill, FulfillBuilder, MaxPacketAmountDetails, PacketType, Prepare,
    Reject,
};
use crate::rates::Conversion;
use crate::service::reject;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Convert and deliver.
    Forward,
    /// Reject everything with this code, from the connector.
    RejectAll(ErrorCode),
    /// Never answer.
    Hang,
    /// Never answer once this many packets were fulfilled.
    HangAfterFulfills(u64),
    /// Answer money packets with a Fulfill whose fulfillment is wrong.
    WrongFulfillment,
    /// The receiver answers money packets with F99 and `ConnectionClose`.
    CloseConnection,
}

struct FakeConnector {
    node: Address,
    receiver: StreamReceiver,
    receiver_address: Address,
    details: ConnectionDetails,
    keys: StreamKeys,
    conversion: Mutex<Conversion>,
    max_packet: AtomicU64,
    behaviour: Behaviour,
    /// Sum of the (converted) amounts of the Prepares the receiver fulfilled.
    received: AtomicU64,
    fulfilled: AtomicU64,
    /// Source amounts of the fulfilled Prepares, in order.
    fulfilled_amounts: Mutex<Vec<u64>>,
    closes: AtomicU64,
    asset_requests: AtomicU64,
}

impl FakeConnector {
    fn new(rate: &str, from_scale: u8, to_scale: u8, behaviour: Behaviour) -> Arc<Self> {
        let receiver = StreamReceiver::new(&[42; 32]);
        let receiver_address = Address::new("test.connector.bob").unwrap();
        let details = receiver.generate(&receiver_address).unwrap();
        let conversion = Conversion::new(
            Decimal::from_str(rate).unwrap(),
            Decimal::ZERO,
            from_scale,
            to_scale,
        )
        .unwrap();
        Arc::new(Self {
            node: Address::new("test.connector").unwrap(),
            receiver,
            receiver_address,
            keys: StreamKeys::new(&details.shared_secret),
            details,
            conversion: Mutex::new(conversion),
            max_packet: AtomicU64::new(u64::MAX),
            behaviour,
            received: AtomicU64::new(0),
            fulfilled: AtomicU64::new(0),
            fulfilled_amounts: Mutex::new(Vec::new()),
            closes: AtomicU64::new(0),
            asset_requests: AtomicU64::new(0),
        })
    }

    fn with_max_packet(self: Arc<Self>, max: u64) -> Arc<Self> {
        self.max_packet.store(max, Ordering::SeqCst);
        self
    }

    fn set_rate(&self, rate: &str) {
        let mut conversion = self.conversion.lock().unwrap();
        conversion.rate = Decimal::from_str(rate).unwrap();
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    fn fulfilled(&self) -> u64 {
        self.fulfilled.load(Ordering::SeqCst)
    }

    /// Counts what the sender's frames ask for (the fake knows the secret; a connector does not).
    fn inspect(&self, prepare: &Prepare) -> Option<StreamPacket> {
        let packet = StreamPacket::decrypt(&self.keys, prepare.data()).ok()?;
        for frame in &packet.frames {
            match frame {
                Frame::ConnectionClose { .. } => {
                    self.closes.fetch_add(1, Ordering::SeqCst);
                }
                Frame::ConnectionNewAddress { source_address } if source_address.is_empty() => {
                    self.asset_requests.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
        Some(packet)
    }

    fn f08(&self, received: u64, max: u64) -> Reject {
        let details = MaxPacketAmountDetails {
            amount_received: received,
            max_amount: max,
        };
        reject(
            &self.node,
            ErrorCode::F08_AMOUNT_TOO_LARGE,
            "amount too large",
            &details.to_bytes(),
        )
    }
}

impl IlpSend for FakeConnector {
    async fn send(&self, mut prepare: Prepare) -> Result<Fulfill, Reject> {
        let request = self.inspect(&prepare);
        match self.behaviour {
            Behaviour::RejectAll(code) => {
                return Err(reject(&self.node, code, "fake failure", &[]));
            }
            Behaviour::Hang => return std::future::pending().await,
            Behaviour::HangAfterFulfills(count) if self.fulfilled() >= count => {
                return std::future::pending().await;
            }
            _ => {}
        }
        let amount = prepare.amount();
        let max = self.max_packet.load(Ordering::SeqCst);
        if amount > max {
            return Err(self.f08(amount, max));
        }
        let conversion = *self.conversion.lock().unwrap();
        let converted = match conversion.apply(amount) {
            Ok(converted) => converted,
            Err(too_large) => return Err(self.f08(amount, too_large.max_source)),
        };
        prepare.set_amount(converted);
        let account = ReceiverAccount {
            address: &self.receiver_address,
            asset_code: "USD",
            asset_scale: 2,
        };
        let result = self.receiver.handle(&prepare, &account);
        if result.is_ok() {
            match self.behaviour {
                Behaviour::WrongFulfillment => {
                    return Ok(FulfillBuilder {
                        fulfillment: &[0; 32],
                        data: &[],
                    }
                    .build()
                    .unwrap());
                }
                Behaviour::CloseConnection => {
                    let response = StreamPacket {
                        sequence: request.unwrap().sequence,
                        packet_type: PacketType::Reject,
                        prepare_amount: converted,
                        frames: vec![Frame::ConnectionClose {
                            code: StreamErrorCode::APPLICATION_ERROR,
                            message: "receiver shutting down".into(),
                        }],
                    };
                    let data = response.encrypt(&self.keys).unwrap();
                    return Err(reject(
                        &self.receiver_address,
                        ErrorCode::F99_APPLICATION_ERROR,
                        "",
                        &data,
                    ));
                }
                _ => {}
            }
            self.received.fetch_add(converted, Ordering::SeqCst);
            self.fulfilled.fetch_add(1, Ordering::SeqCst);
            self.fulfilled_amounts.lock().unwrap().push(amount);
        }
        result
    }
}

async fn pay_through(
    fake: &Arc<FakeConnector>,
    amount: u64,
    options: PayOptions,
) -> Result<PayReport, PayError> {
    pay(
        fake,
        fake.details.destination.clone(),
        fake.details.shared_secret,
        amount,
        options,
    )
    .await
}

/// Short timers, for tests with the clock paused.
fn quick() -> PayOptions {
    PayOptions {
        packet_expiry: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        ..PayOptions::default()
    }
}

#[tokio::test]
async fn same_asset_payment_delivers_exactly_and_closes() {
    // Proves rate 1 delivers every unit, reports the receiver's asset, and ends with one
    // ConnectionClose; the probes asked for asset details with ConnectionNewAddress("").
    let fake = FakeConnector::new("1", 2, 2, Behaviour::Forward);
    let report = pay_through(&fake, 12_345, PayOptions::default())
        .await
        .unwrap();
    assert_eq!(report.source_sent, 12_345);
    assert_eq!(report.delivered, 12_345);
    assert_eq!(fake.received(), 12_345);
    assert_eq!(report.packets_fulfilled, fake.fulfilled());
    assert_eq!(
        report.destination_asset,
        Some(AssetDetails {
            code: "USD".into(),
            scale: 2
        })
    );
    assert_eq!(
        report.exchange_rate,
        Some(ExchangeRate {
            delivered: 1_000_000_000_000,
            sent: 1_000_000_000_000
        })
    );
    assert_eq!(report.probes, 5);
    assert!(fake.asset_requests.load(Ordering::SeqCst) >= 1);
    assert_eq!(fake.closes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cross_asset_payment_floors_per_packet_like_a_connector() {
    // Proves scale 9 → 2 at rate 0.5: 10 packets of 10^9 deliver 50 each, 500 in all, and
    // an uneven amount delivers exactly what the connector's per-packet floors add up to.
    let fake = FakeConnector::new("0.5", 9, 2, Behaviour::Forward);
    let options = PayOptions {
        max_packet_amount: Some(1_000_000_000),
        ..PayOptions::default()
    };
    let report = pay_through(&fake, 10_000_000_000, options.clone())
        .await
        .unwrap();
    assert_eq!(report.delivered, 500);
    assert_eq!(fake.received(), 500);
    assert_eq!(report.packets_fulfilled, 10);
    assert_eq!(
        report.exchange_rate.unwrap().to_decimal(),
        Decimal::from_str("0.00000005").ok()
    );

    let fake = FakeConnector::new("0.5", 9, 2, Behaviour::Forward);
    let report = pay_through(&fake, 1_234_567_891, options).await.unwrap();
    assert_eq!(report.source_sent, 1_234_567_891);
    assert_eq!(report.delivered, fake.received());
    // 10^9 → 50 and 234 567 891 → 11 (11.7 floored).
    assert_eq!(report.delivered, 61);
}

#[tokio::test]
async fn ten_thousand_packets_add_up_exactly_and_quickly() {
    // Proves 10^6 units through a path capped at 100 per packet take 10 000 Fulfills whose
    // amounts at the receiver sum to exactly 10^6, in bounded time.
    let started = std::time::Instant::now();
    let fake = FakeConnector::new("1", 0, 0, Behaviour::Forward).with_max_packet(100);
    let report = pay_through(&fake, 1_000_000, PayOptions::default())
        .await
        .unwrap();
    assert_eq!(report.delivered, 1_000_000);
    assert_eq!(fake.received(), 1_000_000);
    assert_eq!(report.packets_fulfilled, 10_000);
    assert_eq!(report.packets_rejected, 0);
    assert_eq!(report.max_packet_amount, Some(100));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn f08_during_the_payment_shrinks_packets_to_the_advertised_maximum() {
    // Proves that when the path's maximum drops from 1000 to 250 mid-payment, the F08 data
    // brings packets down to 250 and the total still arrives exactly.
    let fake = FakeConnector::new("1", 0, 0, Behaviour::Forward);
    let shrink = Arc::clone(&fake);
    let options = PayOptions {
        max_packet_amount: Some(1_000),
        progress: Some(Arc::new(move |_| {
            shrink.max_packet.store(250, Ordering::SeqCst);
        })),
        ..PayOptions::default()
    };
    let report = pay_through(&fake, 10_000, options).await.unwrap();
    assert_eq!(report.delivered, 10_000);
    assert_eq!(fake.received(), 10_000);
    assert!(report.packets_rejected >= 1);
    assert_eq!(report.max_packet_amount, Some(250));
    let amounts = fake.fulfilled_amounts.lock().unwrap().clone();
    let large = amounts.iter().filter(|&&amount| amount > 250).count();
    assert!((1..=2).contains(&large), "{amounts:?}");
    assert_eq!(amounts.iter().sum::<u64>(), 10_000);
}

#[tokio::test(start_paused = true)]
async fn a_failing_path_ends_with_no_reply_within_the_timeout() {
    // Proves T00, T01 and R00 on every probe end with NoReply naming the last Reject, within
    // the idle timeout (plus one packet's wait), with nothing sent.
    for code in [
        ErrorCode::T00_INTERNAL_ERROR,
        ErrorCode::T01_PEER_UNREACHABLE,
        ErrorCode::R00_TRANSFER_TIMED_OUT,
    ] {
        let fake = FakeConnector::new("1", 0, 0, Behaviour::RejectAll(code));
        let started = Instant::now();
        let error = pay_through(&fake, 1_000, quick()).await.unwrap_err();
        match &error {
            PayError::NoReply {
                last_reject: Some(last),
                ..
            } => assert_eq!(last.code, code),
            other => panic!("{other}"),
        }
        assert!(started.elapsed() <= Duration::from_secs(10 + 3), "{code}");
        assert!(
            error.to_string().contains("receiver unreachable"),
            "{error}"
        );
        assert_eq!(fake.closes.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_path_ends_with_no_reply_within_the_timeout() {
    // Proves a path that never answers ends with NoReply once the idle timeout passes.
    let fake = FakeConnector::new("1", 0, 0, Behaviour::Hang);
    let started = Instant::now();
    let error = pay_through(&fake, 1_000, quick()).await.unwrap_err();
    assert!(matches!(error, PayError::NoReply { .. }), "{error}");
    assert!(started.elapsed() <= Duration::from_secs(10 + 3));
    assert_eq!(fake.received(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_receiver_that_goes_silent_mid_payment_times_out_with_an_exact_report() {
    // Proves that after 3 Fulfills of 100 the payment stops at the idle timeout, waits out the
    // packets in flight, and reports exactly the 300 delivered.
    let fake = FakeConnector::new("1", 0, 0, Behaviour::HangAfterFulfills(3));
    let options = PayOptions {
        max_packet_amount: Some(100),
        ..quick()
    };
    let started = Instant::now();
    let error = pay_through(&fake, 1_000, options).await.unwrap_err();
    let PayError::Timeout { report, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(report.delivered, 300);
    assert_eq!(report.source_sent, 300);
    assert_eq!(fake.received(), 300);
    assert!(error.to_string().contains("delivered 300"), "{error}");
    // Idle timeout, one packet's wait to drain, the close's wait.
    assert!(started.elapsed() <= Duration::from_secs(10 + 3 + 3));
}

#[tokio::test]
async fn a_rate_below_the_expected_rate_less_slippage_is_refused() {
    // Proves a measured 0.5 against an expected 0.6 with 1 % slippage (limit 0.594) is
    // refused before any money moves, naming both rates; 0.5 expected is accepted.
    let fake = FakeConnector::new("0.5", 0, 0, Behaviour::Forward);
    let options = PayOptions {
        expected_rate: Some(Decimal::from_str("0.6").unwrap()),
        ..PayOptions::default()
    };
    let error = pay_through(&fake, 1_000, options).await.unwrap_err();
    assert!(matches!(error, PayError::RateBelowLimit { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("0.5 ") && message.contains("0.594"),
        "{message}"
    );
    assert_eq!(fake.fulfilled(), 0);

    let options = PayOptions {
        expected_rate: Some(Decimal::from_str("0.5").unwrap()),
        ..PayOptions::default()
    };
    let report = pay_through(&fake, 1_000, options).await.unwrap();
    assert_eq!(report.delivered, 500);
}

#[tokio::test]
async fn a_rate_that_worsens_mid_payment_stops_it_with_an_exact_report() {
    // Proves that when the rate drops from 0.5 to 0.4 after the first Fulfill, the receiver
    // refuses packets below their minimum (495 per 1000) and the payment ends RateSlipped,
    // reporting exactly what arrived at the old rate.
    let fake = FakeConnector::new("0.5", 0, 0, Behaviour::Forward);
    let worsen = Arc::clone(&fake);
    let options = PayOptions {
        max_packet_amount: Some(1_000),
        progress: Some(Arc::new(move |_| worsen.set_rate("0.4"))),
        ..PayOptions::default()
    };
    let error = pay_through(&fake, 10_000, options).await.unwrap_err();
    let PayError::RateSlipped {
        minimum,
        received,
        report,
        ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!((*minimum, *received), (495, 400));
    assert_eq!(report.delivered, fake.received());
    assert!(report.delivered >= 500 && report.delivered < 5_000);
    assert_eq!(report.source_sent, 2 * report.delivered);
}

#[tokio::test]
async fn an_amount_that_cannot_be_delivered_in_u64_is_refused() {
    // Proves u64::MAX at rate 2 is refused after probing, with nothing sent.
    let fake = FakeConnector::new("2", 0, 0, Behaviour::Forward);
    let error = pay_through(&fake, u64::MAX, PayOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, PayError::AmountTooLarge { .. }), "{error}");
    assert!(error.to_string().contains("does not fit"));
    assert_eq!(fake.fulfilled(), 0);
}

#[tokio::test]
async fn a_rate_without_enough_digits_is_refused() {
    // Proves ETH (scale 18) → USD (scale 2) at 3000 delivers 0 for every probe, so the rate
    // cannot be measured (the JS reference fails the same way).
    let fake = FakeConnector::new("3000", 18, 2, Behaviour::Forward);
    let error = pay_through(&fake, 1_000_000, PayOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            PayError::RatePrecision {
                digits: 0,
                needed: 3,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_wrong_shared_secret_is_a_final_f06() {
    // Proves the receiver's F06 (data does not decrypt) ends the payment at once.
    let fake = FakeConnector::new("1", 0, 0, Behaviour::Forward);
    let error = pay(
        &fake,
        fake.details.destination.clone(),
        [7; 32],
        1_000,
        PayOptions::default(),
    )
    .await
    .unwrap_err();
    let PayError::Rejected { reject, report } = &error else {
        panic!("{error}");
    };
    assert_eq!(reject.code, ErrorCode::F06_UNEXPECTED_PAYMENT);
    assert_eq!(report.delivered, 0);
}

#[tokio::test]
async fn a_fulfillment_that_does_not_match_is_an_error_not_a_delivery() {
    // Proves a Fulfill with a wrong fulfillment stops the payment and is not counted.
    let fake = FakeConnector::new("1", 0, 0, Behaviour::WrongFulfillment);
    let error = pay_through(&fake, 1_000, PayOptions::default())
        .await
        .unwrap_err();
    let PayError::InvalidFulfillment { report, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(report.source_sent, 0);
    assert_eq!(report.delivered, 0);
}

#[tokio::test]
async fn a_receiver_closing_the_connection_ends_the_payment() {
    // Proves a ConnectionClose in the receiver's response ends the payment with its reason,
    // and that we do not send a close of our own to a closed connection.
    let fake = FakeConnector::new("1", 0, 0, Behaviour::CloseConnection);
    let error = pay_through(&fake, 1_000, PayOptions::default())
        .await
        .unwrap_err();
    let PayError::ReceiverClosed {
        scope,
        code,
        report,
        ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(*scope, "connection");
    assert_eq!(*code, StreamErrorCode::APPLICATION_ERROR);
    assert_eq!(report.delivered, 0);
    assert!(error.to_string().contains("receiver shutting down"));
    assert_eq!(fake.closes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_path_whose_maximum_is_zero_is_refused() {
    // Proves F08s saying the maximum is 0 end the payment with PathMaxPacketAmountZero.
    let fake = FakeConnector::new("1", 0, 0, Behaviour::Forward).with_max_packet(0);
    let error = pay_through(&fake, 1_000, PayOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, PayError::PathMaxPacketAmountZero { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn progress_reports_running_totals_ending_at_the_report() {
    // Proves the callback sees non-decreasing totals and its last call equals the report.
    let fake = FakeConnector::new("1", 0, 0, Behaviour::Forward);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let options = PayOptions {
        max_packet_amount: Some(300),
        progress: Some(Arc::new(move |progress| {
            sink.lock().unwrap().push(progress)
        })),
        ..PayOptions::default()
    };
    let report = pay_through(&fake, 1_000, options).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, report.packets_fulfilled);
    assert!(
        seen.windows(2)
            .all(|pair| pair[0].delivered <= pair[1].delivered)
    );
    let last = seen.last().unwrap();
    assert_eq!(
        (last.source_sent, last.delivered, last.source_amount),
        (1_000, 1_000, 1_000)
    );
}

#[tokio::test]
async fn zero_amounts_and_bad_options_send_nothing() {
    // Proves a 0 amount and an invalid option are refused before any packet.
    let fake = FakeConnector::new("1", 0, 0, Behaviour::Forward);
    assert!(matches!(
        pay_through(&fake, 0, PayOptions::default()).await,
        Err(PayError::ZeroAmount)
    ));
    let options = PayOptions {
        max_slippage: Decimal::from_str("1.5").unwrap(),
        ..PayOptions::default()
    };
    assert!(matches!(
        pay_through(&fake, 10, options).await,
        Err(PayError::InvalidOptions { .. })
    ));
    assert_eq!(fake.asset_requests.load(Ordering::SeqCst), 0);
}

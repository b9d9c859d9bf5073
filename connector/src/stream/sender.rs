//! The STREAM sender: pays one amount to a receiver over any packet path ([`IlpSend`]).
//!
//! [`pay`] runs one connection with one stream (ID 1):
//! 1. **Probe** the exchange rate as the JS reference does: unfulfillable Prepares of
//!    1, 10^3, 10^6, 10^9 and 10^12 source units at once (capped by the path's F08s, not by
//!    [`PayOptions::max_packet_amount`]); the receiver rejects each with F99 data saying what
//!    arrived. The probe with the most digits wins; fewer than
//!    [`PayOptions::min_rate_precision_digits`] is an error. F08s on probes teach the path's
//!    maximum packet amount and are probed again at that size; T-class errors (and silence)
//!    are retried smaller after a backoff. The first probes carry `ConnectionNewAddress("")`
//!    (which asks the JS receiver, ≥ 2.5, and ours for `ConnectionAssetDetails` without
//!    making the JS one start sending to us) and our asset details when known.
//! 2. **Check** the measured rate against [`PayOptions::expected_rate`] less the slippage,
//!    and that the whole amount converts to at most `u64::MAX` destination units.
//! 3. **Send** money packets, each carrying the minimum destination amount
//!    `floor(amount × rate × (1 − max_slippage))`, computed exactly in 256-bit integers (with
//!    `rate` the probed rate, or the expected rate when that is higher). Packets are sized by
//!    the remaining amount, the path's maximum (F08 data shrinks it), the receiver's
//!    `StreamMaxMoney`, and a liquidity cap that T04 halves. Up to
//!    [`PayOptions::max_packets_in_flight`] packets travel at once, in a window that grows by
//!    one per Fulfill and halves (once per round trip) on temporary errors, which also delay
//!    the next packet (exponential backoff, bounded rounds).
//! 4. **Close**: a 0-amount packet with `StreamClose` and `ConnectionClose` (`NoError`, or
//!    `ApplicationError` with the reason), whose answer is not awaited for long.
//!
//! # What the report means
//! Every Prepare ends before [`pay`] returns: answered, or given up once its expiry (plus a
//! grace period) has passed, after which no connector on the path may fulfill it. So the
//! [`PayReport`] is exact, on success and in every error that carries one:
//! `source_sent` is the sum of the amounts of our fulfilled Prepares and `delivered` the sum
//! of what the receiver said arrived in them. Nothing is half-applied.
//!
//! # Time
//! Timers use `tokio::time`, so tests can pause the clock. A payment with no Fulfill for
//! [`PayOptions::idle_timeout`] stops sending, waits for the packets in flight (each bounded by
//! its expiry) and ends with [`PayError::Timeout`], or [`PayError::NoReply`] when the receiver
//! never answered at all.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ethnum::U256;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rust_decimal::Decimal;
use tokio::time::Instant;

use crate::packet::{
    Address, ErrorClass, ErrorCode, Fulfill, MaxPacketAmountDetails, PacketType, Prepare,
    PrepareBuilder, Reject,
};

use super::crypto::{CryptoError, SECRET_BYTES, StreamKeys, random_condition};
use super::packet::{Frame, StreamErrorCode, StreamPacket};

/// Default expiry of each Prepare, as in the JS reference.
pub const DEFAULT_PACKET_EXPIRY: Duration = Duration::from_secs(30);

/// Default time without a Fulfill (or, while probing, without an answer) before giving up,
/// as in the JS reference.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default cap on packets in flight at once.
pub const DEFAULT_MAX_PACKETS_IN_FLIGHT: usize = 16;

/// Default number of significant digits the probed rate needs, as in the JS reference.
pub const DEFAULT_MIN_RATE_PRECISION_DIGITS: u32 = 3;

/// Longest Prepare expiry accepted in [`PayOptions`].
pub const MAX_PACKET_EXPIRY: Duration = Duration::from_secs(3600);

/// Longest idle timeout accepted in [`PayOptions`] (timer arithmetic stays far from overflow).
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Largest [`PayOptions::max_packets_in_flight`] accepted.
pub const MAX_PACKETS_IN_FLIGHT_LIMIT: usize = 256;

/// How long after a Prepare's expiry we still wait for its answer before counting it as
/// not delivered (connectors reject at the expiry; this covers the trip back).
pub const RESPONSE_GRACE: Duration = Duration::from_secs(1);

/// Longest wait for the answer to the closing packet.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The stream every payment uses (client streams are odd).
const STREAM_ID: u64 = 1;

/// The probe amounts of the JS reference, in source units.
const PROBE_AMOUNTS: [u64; 5] = [1, 1_000, 1_000_000, 1_000_000_000, 1_000_000_000_000];

/// Most probe rounds (the first volley, then F08 sizes and smaller retries).
const MAX_PROBE_ROUNDS: usize = 10;

/// First backoff after a temporary error.
const INITIAL_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Longest backoff between packets.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Backoff rounds in a row without a Fulfill before giving up.
const MAX_BACKOFF_ROUNDS: u32 = 12;

/// Packets in flight when sending starts.
const INITIAL_WINDOW: usize = 2;

/// RFC 29 §5.1.3: close the connection once 2^31 packets were sent.
const MAX_PACKETS_PER_CONNECTION: u64 = 1 << 31;

/// Longest reason we put in our `ConnectionClose`, in bytes.
const MAX_CLOSE_MESSAGE_BYTES: usize = 200;

/// A path for ILP packets: sends one Prepare and resolves to the Fulfill or Reject that came
/// back. The CLI plugs an ILP-over-HTTP client in; tests plug in a fake connector.
///
/// Implementations return Rejects for transport failures (T01, T00, …) rather than hanging;
/// a future that never resolves is abandoned once the Prepare has expired (see the module
/// docs), so it delays a payment but cannot make its report wrong.
pub trait IlpSend: Send + Sync {
    /// Sends `prepare` to the next hop.
    fn send(&self, prepare: Prepare) -> impl Future<Output = Result<Fulfill, Reject>> + Send;
}

impl<T: IlpSend> IlpSend for &T {
    fn send(&self, prepare: Prepare) -> impl Future<Output = Result<Fulfill, Reject>> + Send {
        (**self).send(prepare)
    }
}

impl<T: IlpSend> IlpSend for Arc<T> {
    fn send(&self, prepare: Prepare) -> impl Future<Output = Result<Fulfill, Reject>> + Send {
        (**self).send(prepare)
    }
}

/// An asset, as `ConnectionAssetDetails` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetDetails {
    /// Asset code, e.g. `USD`.
    pub code: String,
    /// Asset scale.
    pub scale: u8,
}

/// Where a payment stands, handed to [`PayOptions::progress`] after each Fulfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Source units fulfilled so far.
    pub source_sent: u64,
    /// Destination units the receiver reported so far.
    pub delivered: u64,
    /// The amount being paid, in source units.
    pub source_amount: u64,
}

/// A progress callback (see [`PayOptions::progress`]).
pub type ProgressCallback = Arc<dyn Fn(Progress) + Send + Sync>;

/// How [`pay`] behaves. [`Default`] gives the JS reference's settings.
#[derive(Clone)]
pub struct PayOptions {
    /// Fraction the rate may fall below the reference rate: each packet's minimum
    /// destination amount is `amount × rate × (1 − max_slippage)`. In `[0, 1)`; default 0.01.
    pub max_slippage: Decimal,
    /// The rate the caller expects, in destination base units per source base unit (asset
    /// scales included). When set, a probed rate below `expected_rate × (1 − max_slippage)`
    /// refuses the payment before any money moves.
    pub expected_rate: Option<Decimal>,
    /// Significant digits the probed amount must have for the rate to count as measured.
    pub min_rate_precision_digits: u32,
    /// Expiry of each Prepare (at most [`MAX_PACKET_EXPIRY`]).
    pub packet_expiry: Duration,
    /// Time without progress before the payment ends (see the module docs); at most
    /// [`MAX_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// Most packets in flight at once (1..=[`MAX_PACKETS_IN_FLIGHT_LIMIT`]).
    pub max_packets_in_flight: usize,
    /// Largest money Prepare to send, in source units; the path's F08s can lower it further.
    /// Probes ignore it, as in the JS reference.
    pub max_packet_amount: Option<u64>,
    /// Our asset, announced to the receiver in `ConnectionAssetDetails` when set.
    pub source_asset: Option<AssetDetails>,
    /// Called after each Fulfill with the running totals.
    pub progress: Option<ProgressCallback>,
}

impl Default for PayOptions {
    fn default() -> Self {
        Self {
            max_slippage: Decimal::new(1, 2),
            expected_rate: None,
            min_rate_precision_digits: DEFAULT_MIN_RATE_PRECISION_DIGITS,
            packet_expiry: DEFAULT_PACKET_EXPIRY,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_packets_in_flight: DEFAULT_MAX_PACKETS_IN_FLIGHT,
            max_packet_amount: None,
            source_asset: None,
            progress: None,
        }
    }
}

impl fmt::Debug for PayOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayOptions")
            .field("max_slippage", &self.max_slippage)
            .field("expected_rate", &self.expected_rate)
            .field("min_rate_precision_digits", &self.min_rate_precision_digits)
            .field("packet_expiry", &self.packet_expiry)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_packets_in_flight", &self.max_packets_in_flight)
            .field("max_packet_amount", &self.max_packet_amount)
            .field("source_asset", &self.source_asset)
            .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

impl PayOptions {
    /// Refuses settings the sender cannot work with.
    fn validate(&self) -> Result<(), PayError> {
        let invalid = |reason| Err(PayError::InvalidOptions { reason });
        if self.max_slippage < Decimal::ZERO || self.max_slippage >= Decimal::ONE {
            return invalid("max_slippage must be at least 0 and below 1");
        }
        if self.expected_rate.is_some_and(|rate| rate <= Decimal::ZERO) {
            return invalid("expected_rate must be positive");
        }
        if self.min_rate_precision_digits > 20 {
            return invalid("min_rate_precision_digits must be at most 20 (digits of u64::MAX)");
        }
        if self.packet_expiry.is_zero() || self.packet_expiry > MAX_PACKET_EXPIRY {
            return invalid("packet_expiry must be positive and at most one hour");
        }
        if self.idle_timeout.is_zero() || self.idle_timeout > MAX_IDLE_TIMEOUT {
            return invalid("idle_timeout must be positive and at most one day");
        }
        if self.max_packets_in_flight == 0
            || self.max_packets_in_flight > MAX_PACKETS_IN_FLIGHT_LIMIT
        {
            return invalid("max_packets_in_flight must be between 1 and 256");
        }
        if self.max_packet_amount == Some(0) {
            return invalid("max_packet_amount must be positive");
        }
        Ok(())
    }
}

/// A probed exchange rate: `delivered` destination base units arrived for `sent` source
/// base units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeRate {
    /// What arrived at the receiver, in its base units.
    pub delivered: u64,
    /// What the probe carried, in our base units.
    pub sent: u64,
}

impl ExchangeRate {
    /// The rate as a decimal (rounded to 28 significant digits), `None` if `sent` is 0.
    pub fn to_decimal(&self) -> Option<Decimal> {
        Decimal::from(self.delivered).checked_div(Decimal::from(self.sent))
    }

    /// `floor(amount × rate)`, saturating at `u64::MAX`.
    fn convert(&self, amount: u64) -> u64 {
        match u128::from(amount).checked_mul(u128::from(self.delivered)) {
            Some(product) if self.sent > 0 => {
                u64::try_from(product / u128::from(self.sent)).unwrap_or(u64::MAX)
            }
            _ => u64::MAX,
        }
    }

    /// `floor(amount / rate)`: the source amount that delivers at most `amount`.
    fn invert(&self, amount: u64) -> u64 {
        if self.delivered == 0 {
            return u64::MAX;
        }
        let source = u128::from(amount) * u128::from(self.sent) / u128::from(self.delivered);
        u64::try_from(source).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for ExchangeRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_decimal() {
            Some(rate) => write!(
                f,
                "{} ({} per {})",
                rate.normalize(),
                self.delivered,
                self.sent
            ),
            None => write!(f, "{} per {}", self.delivered, self.sent),
        }
    }
}

/// What a payment achieved. Exact: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayReport {
    /// The amount asked for, in source units.
    pub source_amount: u64,
    /// Sum of our fulfilled Prepares' amounts, in source units.
    pub source_sent: u64,
    /// Sum of the amounts the receiver reported for them, in destination units.
    pub delivered: u64,
    /// Money packets fulfilled.
    pub packets_fulfilled: u64,
    /// Money packets rejected or unanswered (their amounts were sent again or not at all).
    pub packets_rejected: u64,
    /// Unfulfillable probe packets sent.
    pub probes: u64,
    /// The probed rate, once measured.
    pub exchange_rate: Option<ExchangeRate>,
    /// The receiver's asset, if it said.
    pub destination_asset: Option<AssetDetails>,
    /// The path's maximum packet amount as learned from F08s (or the option), if any.
    pub max_packet_amount: Option<u64>,
}

impl PayReport {
    fn new(source_amount: u64) -> Self {
        Self {
            source_amount,
            source_sent: 0,
            delivered: 0,
            packets_fulfilled: 0,
            packets_rejected: 0,
            probes: 0,
            exchange_rate: None,
            destination_asset: None,
            max_packet_amount: None,
        }
    }
}

impl fmt::Display for PayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} of {} source units in {} fulfilled packets, delivered {}",
            self.source_sent, self.source_amount, self.packets_fulfilled, self.delivered
        )?;
        if let Some(asset) = &self.destination_asset {
            write!(f, " {} (scale {})", asset.code, asset.scale)?;
        }
        Ok(())
    }
}

/// The parts of a Reject worth reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectSummary {
    /// Its code.
    pub code: ErrorCode,
    /// Who rejected, if the Reject says.
    pub triggered_by: Option<String>,
    /// Its message (lossy UTF-8).
    pub message: String,
}

impl From<&Reject> for RejectSummary {
    fn from(reject: &Reject) -> Self {
        Self {
            code: reject.code(),
            triggered_by: reject
                .triggered_by()
                .map(|address| address.as_str().to_owned()),
            message: reject.message_str().chars().take(200).collect(),
        }
    }
}

impl fmt::Display for RejectSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(name) = self.code.name() {
            write!(f, " {name}")?;
        }
        if let Some(node) = &self.triggered_by {
            write!(f, " from {node}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// Displays an optional last Reject as `"; last reject: …"`.
struct LastReject<'a>(&'a Option<RejectSummary>);

impl fmt::Display for LastReject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(reject) => write!(f, "; last reject: {reject}"),
            None => Ok(()),
        }
    }
}

/// Displays an optional probed rate as `" (rate …)"`.
struct BestRate<'a>(&'a Option<ExchangeRate>);

impl fmt::Display for BestRate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(rate) => write!(f, " (rate {rate})"),
            None => Ok(()),
        }
    }
}

/// Displays a close message as `": …"`, nothing when empty.
struct Detail<'a>(&'a str);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", self.0)
        }
    }
}

/// Why a payment did not complete. Variants with a `report` say exactly what was delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PayError {
    /// A setting in [`PayOptions`] is out of range; nothing was sent.
    #[error("invalid payment options: {reason}")]
    InvalidOptions {
        /// Which setting, and its range.
        reason: &'static str,
    },
    /// The amount is zero; nothing was sent.
    #[error("nothing to pay: the amount is 0")]
    ZeroAmount,
    /// No random bytes for nonces or conditions.
    #[error("cannot send: {0}")]
    Crypto(CryptoError),
    /// The receiver never answered a probe: unreachable, silent, or the path keeps failing.
    /// No money was sent.
    #[error("receiver unreachable: no reply within {waited:?}{}", LastReject(.last_reject))]
    NoReply {
        /// How long we tried.
        waited: Duration,
        /// The last Reject a connector sent, if any.
        last_reject: Option<RejectSummary>,
    },
    /// The receiver answered but no probe measured the rate to enough digits. No money was
    /// sent.
    #[error(
        "exchange rate cannot be measured: best probe gave {digits} significant digits, {needed} needed{}",
        BestRate(.best)
    )]
    RatePrecision {
        /// Digits of the best probe's delivered amount.
        digits: u32,
        /// Digits required.
        needed: u32,
        /// The best probe, if any arrived.
        best: Option<ExchangeRate>,
    },
    /// The probed rate is below the expected rate less the slippage. No money was sent.
    #[error(
        "exchange rate refused: measured {measured}, below the limit {limit} (expected {expected} less max slippage {max_slippage})"
    )]
    RateBelowLimit {
        /// The probed rate.
        measured: ExchangeRate,
        /// `expected × (1 − max_slippage)`.
        limit: Decimal,
        /// [`PayOptions::expected_rate`].
        expected: Decimal,
        /// [`PayOptions::max_slippage`].
        max_slippage: Decimal,
    },
    /// At the probed rate the amount exceeds what the receiver can be told it got
    /// (`u64::MAX` destination units). No money was sent.
    #[error(
        "amount does not fit: {source_amount} source units at rate {rate} exceed {} destination units",
        u64::MAX
    )]
    AmountTooLarge {
        /// The amount asked for.
        source_amount: u64,
        /// The probed rate.
        rate: ExchangeRate,
    },
    /// A connector (or the receiver, without STREAM data) rejected with a final error.
    #[error("payment rejected by the path: {reject}; {report}")]
    Rejected {
        /// The Reject.
        reject: RejectSummary,
        /// What was delivered before it.
        report: Box<PayReport>,
    },
    /// Temporary errors went on for too many backoff rounds without a Fulfill.
    #[error(
        "gave up after {rounds} backoff rounds without a Fulfill{}; {report}",
        LastReject(.last_reject)
    )]
    GaveUp {
        /// Backoff rounds in a row.
        rounds: u32,
        /// The last Reject.
        last_reject: Option<RejectSummary>,
        /// What was delivered.
        report: Box<PayReport>,
    },
    /// The path says even one source unit is too large a packet.
    #[error("the path's maximum packet amount is 0; {report}")]
    PathMaxPacketAmountZero {
        /// What was delivered.
        report: Box<PayReport>,
    },
    /// The rate got worse than the slippage allows: the receiver got less than a packet's
    /// minimum and refused it.
    #[error(
        "exchange rate fell beyond the max slippage: packet {sequence} delivered {received}, its minimum was {minimum}; {report}"
    )]
    RateSlipped {
        /// The packet's sequence.
        sequence: u64,
        /// Its minimum destination amount.
        minimum: u64,
        /// What arrived.
        received: u64,
        /// What was delivered before.
        report: Box<PayReport>,
    },
    /// The receiver closed the connection or the stream.
    #[error("receiver closed the {scope}: {code}{}; {report}", Detail(.message))]
    ReceiverClosed {
        /// `"connection"` or `"stream"`.
        scope: &'static str,
        /// Its error code.
        code: StreamErrorCode,
        /// Its message.
        message: String,
        /// What was delivered.
        report: Box<PayReport>,
    },
    /// The receiver will not take more on the stream (`StreamMaxMoney`).
    #[error("receiver limit reached: it accepts {receive_max} and has {received}; {report}")]
    ReceiverLimit {
        /// Its `receive_max`.
        receive_max: u64,
        /// What it has received, by its count or ours.
        received: u64,
        /// What was delivered.
        report: Box<PayReport>,
    },
    /// No Fulfill for [`PayOptions::idle_timeout`].
    #[error(
        "timed out: no progress for {idle:?}{}; {report}",
        LastReject(.last_reject)
    )]
    Timeout {
        /// The idle timeout.
        idle: Duration,
        /// The last Reject, if any.
        last_reject: Option<RejectSummary>,
        /// What was delivered.
        report: Box<PayReport>,
    },
    /// A Fulfill whose fulfillment does not match the condition: not counted as delivered.
    #[error(
        "packet {sequence} came back with a fulfillment that does not match its condition; {report}"
    )]
    InvalidFulfillment {
        /// The packet's sequence.
        sequence: u64,
        /// What was delivered (without that packet).
        report: Box<PayReport>,
    },
    /// A Fulfill without a readable STREAM response: the money left (counted in
    /// `source_sent`) but what arrived is unknown (not counted in `delivered`).
    #[error(
        "packet {sequence} was fulfilled without a readable STREAM response, so what it delivered is unknown; {report}"
    )]
    InvalidResponse {
        /// The packet's sequence.
        sequence: u64,
        /// What was delivered (the amount of that packet is in `source_sent` only).
        report: Box<PayReport>,
    },
    /// The connection reached RFC 29's packet limit (2^31).
    #[error("the connection reached 2^31 packets (RFC 29 §5.1.3); {report}")]
    TooManyPackets {
        /// What was delivered.
        report: Box<PayReport>,
    },
    /// A STREAM packet could not be made into a Prepare (a bug: ours are tiny).
    #[error("internal error: {reason}; {report}")]
    Internal {
        /// What failed.
        reason: &'static str,
        /// What was delivered.
        report: Box<PayReport>,
    },
}

impl PayError {
    /// The report of what was delivered, when money may have moved.
    pub fn report(&self) -> Option<&PayReport> {
        match self {
            PayError::Rejected { report, .. }
            | PayError::GaveUp { report, .. }
            | PayError::PathMaxPacketAmountZero { report }
            | PayError::RateSlipped { report, .. }
            | PayError::ReceiverClosed { report, .. }
            | PayError::ReceiverLimit { report, .. }
            | PayError::Timeout { report, .. }
            | PayError::InvalidFulfillment { report, .. }
            | PayError::InvalidResponse { report, .. }
            | PayError::TooManyPackets { report }
            | PayError::Internal { report, .. } => Some(report),
            PayError::InvalidOptions { .. }
            | PayError::ZeroAmount
            | PayError::Crypto(_)
            | PayError::NoReply { .. }
            | PayError::RatePrecision { .. }
            | PayError::RateBelowLimit { .. }
            | PayError::AmountTooLarge { .. } => None,
        }
    }
}

/// Pays `source_amount` (our base units) to `destination` over `path`, with the connection's
/// `shared_secret` (both from the receiver, e.g. through SPSP). See the module docs for the
/// steps and for what the report guarantees.
pub async fn pay<P: IlpSend>(
    path: &P,
    destination: Address,
    shared_secret: [u8; SECRET_BYTES],
    source_amount: u64,
    options: PayOptions,
) -> Result<PayReport, PayError> {
    options.validate()?;
    if source_amount == 0 {
        return Err(PayError::ZeroAmount);
    }
    let link = Link {
        path,
        keys: StreamKeys::new(&shared_secret),
        destination,
        wait: options.packet_expiry + RESPONSE_GRACE,
        options,
    };
    let mut state = State::new(source_amount);
    let result = run(&link, &mut state).await;
    if state.answered && !state.receiver_closed {
        close(&link, &mut state, result.as_ref().err()).await;
    }
    result.map(|()| state.report)
}

/// The probe, the checks, the money.
async fn run<P: IlpSend>(link: &Link<'_, P>, state: &mut State) -> Result<(), PayError> {
    let probed = probe(link, state).await?;
    let rate = probed.rate;
    let options = &link.options;
    let min_rate = match options.expected_rate {
        None => MinRate::new(Fraction::of(rate), options.max_slippage),
        Some(expected) => {
            let expected_fraction = Fraction::from_decimal(expected);
            let keep = Fraction::from_decimal(Decimal::ONE - options.max_slippage);
            let limit = expected_fraction.times(keep);
            if Fraction::of(rate).less_than(limit) {
                return Err(PayError::RateBelowLimit {
                    measured: rate,
                    limit: expected
                        .checked_mul(Decimal::ONE - options.max_slippage)
                        .unwrap_or(expected)
                        .normalize(),
                    expected,
                    max_slippage: options.max_slippage,
                });
            }
            let base = if Fraction::of(rate).less_than(expected_fraction) {
                expected_fraction
            } else {
                Fraction::of(rate)
            };
            MinRate::new(base, options.max_slippage)
        }
    };
    let total =
        U256::from(state.report.source_amount) * U256::from(rate.delivered) / U256::from(rate.sent);
    if total > U256::from(u64::MAX) {
        return Err(PayError::AmountTooLarge {
            source_amount: state.report.source_amount,
            rate,
        });
    }
    let max_packet = min_limit(probed.max_packet, options.max_packet_amount);
    send_money(link, state, rate, min_rate, max_packet).await
}

/// The tighter of two optional limits.
fn min_limit(first: Option<u64>, second: Option<u64>) -> Option<u64> {
    match (first, second) {
        (Some(first), Some(second)) => Some(first.min(second)),
        (limit, None) | (None, limit) => limit,
    }
}

/// What travels with every packet: the path, the keys, where to, how long to wait.
struct Link<'a, P> {
    path: &'a P,
    keys: StreamKeys,
    destination: Address,
    options: PayOptions,
    wait: Duration,
}

/// What came back for one Prepare.
enum Reply {
    /// Fulfilled with the right fulfillment; the receiver's response if it authenticated.
    Fulfilled(Option<StreamPacket>),
    /// A Fulfill whose fulfillment does not hash to the condition.
    WrongFulfillment,
    /// Rejected by the receiver, with an authenticated STREAM response.
    ReceiverRejected {
        reject: Reject,
        response: StreamPacket,
    },
    /// Rejected by a connector, or by the receiver without a readable response.
    PathRejected(Reject),
    /// No answer before the Prepare expired (plus [`RESPONSE_GRACE`]).
    NoAnswer,
}

impl<P: IlpSend> Link<'_, P> {
    /// Encrypts `frames` into a Prepare of `amount` asking for at least `minimum`.
    fn prepare(
        &self,
        sequence: u64,
        amount: u64,
        minimum: u64,
        frames: Vec<Frame>,
        fulfillable: bool,
    ) -> Result<(Prepare, [u8; 32]), Stop> {
        let packet = StreamPacket {
            sequence,
            packet_type: PacketType::Prepare,
            prepare_amount: minimum,
            frames,
        };
        let data = packet.encrypt(&self.keys).map_err(Stop::Crypto)?;
        let condition = if fulfillable {
            self.keys.condition(&data)
        } else {
            random_condition().map_err(Stop::Crypto)?
        };
        let now = SystemTime::now();
        let prepare = PrepareBuilder {
            amount,
            expires_at: now.checked_add(self.options.packet_expiry).unwrap_or(now),
            execution_condition: &condition,
            destination: self.destination.as_address_ref(),
            data: &data,
        }
        .build()
        .map_err(|_| Stop::Internal("a STREAM packet does not fit an ILP Prepare"))?;
        Ok((prepare, condition))
    }

    /// Sends one Prepare and reads the answer.
    async fn exchange(&self, prepare: Prepare, sequence: u64, condition: [u8; 32]) -> Reply {
        let Ok(result) = tokio::time::timeout(self.wait, self.path.send(prepare)).await else {
            return Reply::NoAnswer;
        };
        match result {
            Ok(fulfill) if fulfill.matches_condition(&condition) => {
                Reply::Fulfilled(self.response(fulfill.data(), sequence, PacketType::Fulfill))
            }
            Ok(_) => Reply::WrongFulfillment,
            Err(reject) => match self.response(reject.data(), sequence, PacketType::Reject) {
                Some(response) => Reply::ReceiverRejected { reject, response },
                None => Reply::PathRejected(reject),
            },
        }
    }

    /// The receiver's STREAM response in `data`, if it decrypts, echoes `sequence` and says
    /// it travels in `carrier` (RFC 29 §5.2: anything else is discarded).
    fn response(&self, data: &[u8], sequence: u64, carrier: PacketType) -> Option<StreamPacket> {
        if data.is_empty() {
            return None;
        }
        let packet = StreamPacket::decrypt(&self.keys, data).ok()?;
        (packet.sequence == sequence && packet.packet_type == carrier).then_some(packet)
    }
}

/// Why sending stopped, before the report is attached.
enum Stop {
    Rejected(RejectSummary),
    GaveUp {
        rounds: u32,
        last_reject: Option<RejectSummary>,
    },
    PathMaxPacketAmountZero,
    RateSlipped {
        sequence: u64,
        minimum: u64,
        received: u64,
    },
    ReceiverClosed {
        scope: &'static str,
        code: StreamErrorCode,
        message: String,
    },
    ReceiverLimit {
        receive_max: u64,
        received: u64,
    },
    Timeout {
        idle: Duration,
        last_reject: Option<RejectSummary>,
    },
    InvalidFulfillment {
        sequence: u64,
    },
    InvalidResponse {
        sequence: u64,
    },
    TooManyPackets,
    Crypto(CryptoError),
    Internal(&'static str),
}

impl Stop {
    fn into_error(self, report: &PayReport) -> PayError {
        let report = Box::new(report.clone());
        match self {
            Stop::Rejected(reject) => PayError::Rejected { reject, report },
            Stop::GaveUp {
                rounds,
                last_reject,
            } => PayError::GaveUp {
                rounds,
                last_reject,
                report,
            },
            Stop::PathMaxPacketAmountZero => PayError::PathMaxPacketAmountZero { report },
            Stop::RateSlipped {
                sequence,
                minimum,
                received,
            } => PayError::RateSlipped {
                sequence,
                minimum,
                received,
                report,
            },
            Stop::ReceiverClosed {
                scope,
                code,
                message,
            } => PayError::ReceiverClosed {
                scope,
                code,
                message,
                report,
            },
            Stop::ReceiverLimit {
                receive_max,
                received,
            } => PayError::ReceiverLimit {
                receive_max,
                received,
                report,
            },
            Stop::Timeout { idle, last_reject } => PayError::Timeout {
                idle,
                last_reject,
                report,
            },
            Stop::InvalidFulfillment { sequence } => {
                PayError::InvalidFulfillment { sequence, report }
            }
            Stop::InvalidResponse { sequence } => PayError::InvalidResponse { sequence, report },
            Stop::TooManyPackets => PayError::TooManyPackets { report },
            Stop::Crypto(error) => PayError::Crypto(error),
            Stop::Internal(reason) => PayError::Internal { reason, report },
        }
    }
}

/// The connection's state as the receiver's answers shape it.
struct State {
    next_sequence: u64,
    report: PayReport,
    /// The receiver's `StreamMaxMoney` for our stream: `None` until it says (no limit).
    receive_max: Option<u64>,
    /// The receiver's `total_received` for our stream.
    remote_received: u64,
    /// Whether any authenticated response arrived.
    answered: bool,
    /// Whether the receiver closed the connection or our stream.
    receiver_closed: bool,
}

impl State {
    fn new(source_amount: u64) -> Self {
        Self {
            next_sequence: 1,
            report: PayReport::new(source_amount),
            receive_max: None,
            remote_received: 0,
            answered: false,
            receiver_closed: false,
        }
    }

    fn sequence(&mut self) -> Result<u64, Stop> {
        if self.next_sequence >= MAX_PACKETS_PER_CONNECTION {
            return Err(Stop::TooManyPackets);
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        Ok(sequence)
    }

    /// Applies the receiver's frames; a close stops the payment.
    fn apply(&mut self, frames: &[Frame]) -> Option<Stop> {
        self.answered = true;
        let mut stop = None;
        for frame in frames {
            match frame {
                Frame::ConnectionAssetDetails {
                    asset_code,
                    asset_scale,
                } if self.report.destination_asset.is_none() => {
                    self.report.destination_asset = Some(AssetDetails {
                        code: asset_code.clone(),
                        scale: *asset_scale,
                    });
                }
                Frame::ConnectionClose { code, message } => {
                    self.receiver_closed = true;
                    stop.get_or_insert(Stop::ReceiverClosed {
                        scope: "connection",
                        code: *code,
                        message: message.clone(),
                    });
                }
                Frame::StreamClose {
                    stream_id: STREAM_ID,
                    code,
                    message,
                } => {
                    self.receiver_closed = true;
                    stop.get_or_insert(Stop::ReceiverClosed {
                        scope: "stream",
                        code: *code,
                        message: message.clone(),
                    });
                }
                Frame::StreamMaxMoney {
                    stream_id: STREAM_ID,
                    receive_max,
                    total_received,
                } => {
                    // RFC 29 §4.4.4: limits never shrink; ignore offsets that would.
                    self.receive_max = Some(
                        self.receive_max
                            .map_or(*receive_max, |known| known.max(*receive_max)),
                    );
                    self.remote_received = self.remote_received.max(*total_received);
                }
                _ => {}
            }
        }
        stop
    }

    /// What the receiver has, by its count or ours.
    fn received(&self) -> u64 {
        self.remote_received.max(self.report.delivered)
    }

    /// Source units the receiver still takes, `None` when it set no limit.
    fn receiver_room(&self, rate: ExchangeRate, in_flight_estimate: u64) -> Option<u64> {
        let receive_max = self.receive_max?;
        let committed = self.received().saturating_add(in_flight_estimate);
        Some(rate.invert(receive_max.saturating_sub(committed)))
    }
}

/// The probe's outcome.
struct Probed {
    rate: ExchangeRate,
    max_packet: Option<u64>,
}

/// How a Reject from the path is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RejectKind {
    /// F08: the packet was too large.
    TooLarge,
    /// T-class or R00: try again later.
    Temporary,
    /// R01: the amount converted to nothing.
    TooSmall,
    /// Anything else: do not retry.
    Final,
}

fn classify(code: ErrorCode) -> RejectKind {
    if code == ErrorCode::F08_AMOUNT_TOO_LARGE {
        RejectKind::TooLarge
    } else if code == ErrorCode::R00_TRANSFER_TIMED_OUT || code.class() == ErrorClass::Temporary {
        RejectKind::Temporary
    } else if code == ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT {
        RejectKind::TooSmall
    } else {
        RejectKind::Final
    }
}

/// The largest amount the F08 says fits, in our units: `sent × maximum / received` from its
/// data (RFC 27), or half of `sent` without usable data; always below `sent`.
fn max_from_f08(reject: &Reject, sent: u64) -> u64 {
    let below_sent = sent.saturating_sub(1);
    match MaxPacketAmountDetails::from_bytes(reject.data()) {
        Ok(details) if details.amount_received > 0 => {
            let max = u128::from(sent) * u128::from(details.max_amount)
                / u128::from(details.amount_received);
            u64::try_from(max).unwrap_or(u64::MAX).min(below_sent)
        }
        _ => sent / 2,
    }
}

/// Significant decimal digits of `value` (0 for 0).
fn count_digits(value: u64) -> u32 {
    value.checked_ilog10().map_or(0, |log| log + 1)
}

/// The frames of a probe: ask for asset details, announce ours.
fn probe_frames(options: &PayOptions) -> Vec<Frame> {
    let mut frames = vec![Frame::ConnectionNewAddress {
        source_address: String::new(),
    }];
    if let Some(asset) = &options.source_asset {
        frames.push(Frame::ConnectionAssetDetails {
            asset_code: asset.code.clone(),
            asset_scale: asset.scale,
        });
    }
    frames
}

/// Measures the rate (see the module docs).
async fn probe<P: IlpSend>(link: &Link<'_, P>, state: &mut State) -> Result<Probed, PayError> {
    let options = &link.options;
    let started = Instant::now();
    let deadline = started + options.idle_timeout;
    let needed = options.min_rate_precision_digits;
    // The path's maximum, as its F08s say. Probes are not capped by the option (they carry
    // no money, and smaller probes measure fewer digits), as in the JS reference.
    let mut max_packet: Option<u64> = None;
    let mut amounts: Vec<u64> = PROBE_AMOUNTS.to_vec();
    let mut tried_sizes: Vec<u64> = Vec::new();
    let mut best: Option<(u32, ExchangeRate)> = None;
    let mut last_reject: Option<RejectSummary> = None;
    let mut retry_delay = INITIAL_RETRY_DELAY;
    let fail = |stop: Stop, state: &State| Err(stop.into_error(&state.report));

    'rounds: for _ in 0..MAX_PROBE_ROUNDS {
        let cap = max_packet.unwrap_or(u64::MAX);
        let mut round: Vec<u64> = amounts.iter().map(|&amount| amount.min(cap)).collect();
        round.retain(|&amount| amount > 0);
        round.sort_unstable();
        round.dedup();
        if round.is_empty() {
            break;
        }
        let mut pending = FuturesUnordered::new();
        for &amount in &round {
            let sequence = match state.sequence() {
                Ok(sequence) => sequence,
                Err(stop) => return fail(stop, state),
            };
            let (prepare, condition) =
                match link.prepare(sequence, amount, 0, probe_frames(options), false) {
                    Ok(built) => built,
                    Err(stop) => return fail(stop, state),
                };
            state.report.probes += 1;
            pending.push(async move {
                let reply = link.exchange(prepare, sequence, condition).await;
                (amount, sequence, reply)
            });
        }
        tried_sizes.extend(&round);

        let mut next = Vec::new();
        let mut smallest_temporary: Option<u64> = None;
        loop {
            let (amount, sequence, reply) =
                match tokio::time::timeout_at(deadline, pending.next()).await {
                    Ok(Some(answer)) => answer,
                    Ok(None) => break,
                    // Probes carry no money: abandoning the rest is harmless.
                    Err(_) => break 'rounds,
                };
            match reply {
                Reply::ReceiverRejected { response, .. } => {
                    if let Some(stop) = state.apply(&response.frames) {
                        return fail(stop, state);
                    }
                    let delivered = response.prepare_amount;
                    let digits = count_digits(delivered);
                    let better = best.is_none_or(|(best_digits, best_rate)| {
                        digits > best_digits || (digits == best_digits && amount > best_rate.sent)
                    });
                    if better && delivered > 0 {
                        best = Some((
                            digits,
                            ExchangeRate {
                                delivered,
                                sent: amount,
                            },
                        ));
                    }
                }
                Reply::PathRejected(reject) => match classify(reject.code()) {
                    RejectKind::TooLarge => {
                        let max = max_from_f08(&reject, amount);
                        max_packet = Some(max_packet.map_or(max, |known| known.min(max)));
                        if max > 0 && !tried_sizes.contains(&max) {
                            next.push(max);
                        }
                    }
                    RejectKind::Temporary => {
                        smallest_temporary =
                            Some(smallest_temporary.map_or(amount, |known| known.min(amount)));
                        last_reject = Some(RejectSummary::from(&reject));
                    }
                    RejectKind::TooSmall => last_reject = Some(RejectSummary::from(&reject)),
                    RejectKind::Final => {
                        return fail(Stop::Rejected(RejectSummary::from(&reject)), state);
                    }
                },
                Reply::NoAnswer => {
                    smallest_temporary =
                        Some(smallest_temporary.map_or(amount, |known| known.min(amount)));
                }
                // No one can fulfill a random condition: the path is lying.
                Reply::Fulfilled(_) | Reply::WrongFulfillment => {
                    return fail(Stop::InvalidFulfillment { sequence }, state);
                }
            }
        }
        state.report.max_packet_amount = min_limit(max_packet, options.max_packet_amount);
        if max_packet == Some(0) {
            return fail(Stop::PathMaxPacketAmountZero, state);
        }
        if let Some((digits, rate)) = best
            && digits >= needed
        {
            state.report.exchange_rate = Some(rate);
            return Ok(Probed { rate, max_packet });
        }
        if let Some(amount) = smallest_temporary {
            next.push(amount - amount / 3);
            tokio::time::sleep_until((Instant::now() + retry_delay).min(deadline)).await;
            retry_delay = (retry_delay * 2).min(MAX_RETRY_DELAY);
        }
        if Instant::now() >= deadline {
            break;
        }
        amounts = next;
    }

    state.report.max_packet_amount = min_limit(max_packet, options.max_packet_amount);
    if state.answered {
        Err(PayError::RatePrecision {
            digits: best.map_or(0, |(digits, _)| digits),
            needed,
            best: best.map(|(_, rate)| rate),
        })
    } else {
        Err(PayError::NoReply {
            waited: started.elapsed(),
            last_reject,
        })
    }
}

/// A non-negative fraction in 256-bit integers.
#[derive(Debug, Clone, Copy)]
struct Fraction {
    numerator: U256,
    denominator: U256,
}

impl Fraction {
    fn of(rate: ExchangeRate) -> Self {
        Self {
            numerator: U256::from(rate.delivered),
            denominator: U256::from(rate.sent.max(1)),
        }
    }

    /// A non-negative decimal as mantissa / 10^scale (mantissa < 2^96, scale ≤ 28).
    fn from_decimal(value: Decimal) -> Self {
        let mut denominator = U256::ONE;
        for _ in 0..value.scale() {
            denominator *= U256::new(10);
        }
        Self {
            numerator: U256::new(value.mantissa().unsigned_abs()),
            denominator,
        }
    }

    /// The product; the factors here are below 2^96 and 2^94, so it fits.
    fn times(self, other: Self) -> Self {
        Self {
            numerator: self.numerator.saturating_mul(other.numerator),
            denominator: self.denominator.saturating_mul(other.denominator),
        }
    }

    /// `self < other`, by cross-multiplication (operands below 2^192 and 2^64: it fits).
    fn less_than(self, other: Self) -> bool {
        self.numerator.saturating_mul(other.denominator)
            < other.numerator.saturating_mul(self.denominator)
    }
}

/// The rate each packet's minimum destination amount is computed at: base × (1 − slippage).
struct MinRate(Fraction);

impl MinRate {
    fn new(base: Fraction, max_slippage: Decimal) -> Self {
        Self(base.times(Fraction::from_decimal(Decimal::ONE - max_slippage)))
    }

    /// `floor(amount × rate)`, exact; at most `amount × probed rate`, which fits a u64 once
    /// the total was checked.
    fn minimum(&self, amount: u64) -> u64 {
        let Fraction {
            numerator,
            denominator,
        } = self.0;
        let product = U256::from(amount).saturating_mul(numerator);
        u64::try_from(product / denominator.max(U256::ONE)).unwrap_or(u64::MAX)
    }
}

/// A money packet in flight.
struct Sent {
    sequence: u64,
    amount: u64,
    minimum: u64,
    /// What it should deliver at the probed rate, counted against the receiver's limit.
    estimate: u64,
    /// The congestion generation it was sent in (see [`Flow::on_temporary`]).
    generation: u64,
}

/// Packet sizing and the congestion window.
struct Flow {
    /// Source units neither fulfilled nor in flight.
    remaining: u64,
    in_flight_estimate: u64,
    window: usize,
    max_window: usize,
    max_packet: Option<u64>,
    liquidity_cap: Option<u64>,
    retry_delay: Duration,
    next_send_at: Instant,
    /// Bumped at each decrease, so one congestion event shrinks the window once.
    generation: u64,
    backoff_rounds: u32,
    last_reject: Option<RejectSummary>,
}

impl Flow {
    fn new(remaining: u64, max_packet: Option<u64>, max_window: usize) -> Self {
        let now = Instant::now();
        Self {
            remaining,
            in_flight_estimate: 0,
            window: INITIAL_WINDOW.min(max_window),
            max_window,
            max_packet,
            liquidity_cap: None,
            retry_delay: INITIAL_RETRY_DELAY,
            next_send_at: now,
            generation: 0,
            backoff_rounds: 0,
            last_reject: None,
        }
    }

    /// The next packet's amount (0: nothing may be sent now).
    fn next_amount(&self, state: &State, rate: ExchangeRate) -> u64 {
        let mut amount = self.remaining;
        for limit in [
            self.max_packet,
            self.liquidity_cap,
            state.receiver_room(rate, self.in_flight_estimate),
        ]
        .into_iter()
        .flatten()
        {
            amount = amount.min(limit);
        }
        amount
    }

    fn on_fulfill(&mut self) {
        self.window = (self.window + 1).min(self.max_window);
        self.retry_delay = INITIAL_RETRY_DELAY;
        self.backoff_rounds = 0;
    }

    /// A temporary failure of `sent`: shrink once per round trip and back off.
    fn on_temporary(
        &mut self,
        sent: &Sent,
        liquidity: bool,
        reject: RejectSummary,
    ) -> Option<Stop> {
        self.last_reject = Some(reject);
        if sent.generation != self.generation {
            // Sent before the last decrease: that decrease already answered this congestion.
            return None;
        }
        let now = Instant::now();
        self.window = (self.window / 2).max(1);
        if liquidity {
            let cap = (sent.amount / 2).max(1);
            self.liquidity_cap = Some(self.liquidity_cap.map_or(cap, |known| known.min(cap)));
        }
        self.generation += 1;
        self.next_send_at = now + self.retry_delay;
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY_DELAY);
        self.backoff_rounds += 1;
        (self.backoff_rounds > MAX_BACKOFF_ROUNDS).then(|| Stop::GaveUp {
            rounds: self.backoff_rounds,
            last_reject: self.last_reject.clone(),
        })
    }
}

/// Sends the money (see the module docs).
async fn send_money<P: IlpSend>(
    link: &Link<'_, P>,
    state: &mut State,
    rate: ExchangeRate,
    min_rate: MinRate,
    max_packet: Option<u64>,
) -> Result<(), PayError> {
    let options = &link.options;
    let mut flow = Flow::new(
        state.report.source_amount,
        max_packet,
        options.max_packets_in_flight,
    );
    let mut in_flight = FuturesUnordered::new();
    let mut idle_deadline = Instant::now() + options.idle_timeout;
    let mut idle = false;
    let mut stop: Option<Stop> = None;

    loop {
        let now = Instant::now();
        if stop.is_none() && !idle && now >= flow.next_send_at {
            while in_flight.len() < flow.window && flow.remaining > 0 {
                let amount = flow.next_amount(state, rate);
                if amount == 0 {
                    break;
                }
                let minimum = min_rate.minimum(amount);
                let frames = vec![Frame::StreamMoney {
                    stream_id: STREAM_ID,
                    shares: amount,
                }];
                let built = state.sequence().and_then(|sequence| {
                    Ok((
                        sequence,
                        link.prepare(sequence, amount, minimum, frames, true)?,
                    ))
                });
                let (sequence, (prepare, condition)) = match built {
                    Ok(built) => built,
                    Err(error) => {
                        stop = Some(error);
                        break;
                    }
                };
                let sent = Sent {
                    sequence,
                    amount,
                    minimum,
                    estimate: rate.convert(amount),
                    generation: flow.generation,
                };
                flow.remaining -= amount;
                flow.in_flight_estimate = flow.in_flight_estimate.saturating_add(sent.estimate);
                in_flight.push(async move {
                    let reply = link.exchange(prepare, sequence, condition).await;
                    (sent, reply)
                });
            }
        }

        if in_flight.is_empty() {
            let done = flow.remaining == 0;
            match stop {
                // The receiver closing as the last packet completes the payment is no failure.
                Some(Stop::ReceiverClosed { .. }) | None if done => return Ok(()),
                Some(stop) => return Err(stop.into_error(&state.report)),
                None => {}
            }
            if idle {
                let stop = Stop::Timeout {
                    idle: options.idle_timeout,
                    last_reject: flow.last_reject.clone(),
                };
                return Err(stop.into_error(&state.report));
            }
            if Instant::now() >= flow.next_send_at && flow.next_amount(state, rate) == 0 {
                let stop = Stop::ReceiverLimit {
                    receive_max: state.receive_max.unwrap_or(u64::MAX),
                    received: state.received(),
                };
                return Err(stop.into_error(&state.report));
            }
            tokio::time::sleep_until(flow.next_send_at.min(idle_deadline)).await;
            if Instant::now() >= idle_deadline {
                idle = true;
            }
            continue;
        }

        let waiting_to_send = stop.is_none()
            && !idle
            && flow.remaining > 0
            && in_flight.len() < flow.window
            && flow.next_send_at > now;
        tokio::select! {
            Some((sent, reply)) = in_flight.next() => {
                let outcome = settle(state, &mut flow, &sent, reply, options);
                if outcome.progressed {
                    idle_deadline = Instant::now() + options.idle_timeout;
                }
                if let Some(error) = outcome.stop {
                    stop.get_or_insert(error);
                }
            }
            () = tokio::time::sleep_until(flow.next_send_at), if waiting_to_send => {}
            () = tokio::time::sleep_until(idle_deadline), if !idle && stop.is_none() => {
                idle = true;
            }
        }
    }
}

/// What one answer changed.
struct Settled {
    progressed: bool,
    stop: Option<Stop>,
}

/// Books the answer to a money packet.
fn settle(
    state: &mut State,
    flow: &mut Flow,
    sent: &Sent,
    reply: Reply,
    options: &PayOptions,
) -> Settled {
    flow.in_flight_estimate = flow.in_flight_estimate.saturating_sub(sent.estimate);
    let report = &mut state.report;
    let mut settled = Settled {
        progressed: false,
        stop: None,
    };
    match reply {
        Reply::Fulfilled(response) => {
            report.source_sent += sent.amount;
            report.packets_fulfilled += 1;
            settled.progressed = true;
            flow.on_fulfill();
            match response {
                Some(response) => {
                    report.delivered = report.delivered.saturating_add(response.prepare_amount);
                    settled.stop = state.apply(&response.frames);
                }
                None => {
                    settled.stop = Some(Stop::InvalidResponse {
                        sequence: sent.sequence,
                    });
                }
            }
            if let Some(progress) = &options.progress {
                progress(Progress {
                    source_sent: state.report.source_sent,
                    delivered: state.report.delivered,
                    source_amount: state.report.source_amount,
                });
            }
        }
        Reply::WrongFulfillment => {
            flow.remaining += sent.amount;
            report.packets_rejected += 1;
            settled.stop = Some(Stop::InvalidFulfillment {
                sequence: sent.sequence,
            });
        }
        Reply::ReceiverRejected { reject, response } => {
            flow.remaining += sent.amount;
            report.packets_rejected += 1;
            settled.stop = state.apply(&response.frames);
            if settled.stop.is_none() {
                settled.stop = if response.prepare_amount < sent.minimum {
                    Some(Stop::RateSlipped {
                        sequence: sent.sequence,
                        minimum: sent.minimum,
                        received: response.prepare_amount,
                    })
                } else {
                    // It arrived in full and was still refused: most likely the receiver's
                    // limit, which its frames have just updated. Retry after a backoff.
                    flow.on_temporary(sent, false, RejectSummary::from(&reject))
                };
            }
        }
        Reply::PathRejected(reject) => {
            flow.remaining += sent.amount;
            report.packets_rejected += 1;
            let summary = RejectSummary::from(&reject);
            settled.stop = match classify(reject.code()) {
                RejectKind::TooLarge => {
                    let max = max_from_f08(&reject, sent.amount);
                    flow.max_packet = Some(flow.max_packet.map_or(max, |known| known.min(max)));
                    report.max_packet_amount = flow.max_packet;
                    flow.last_reject = Some(summary);
                    (max == 0).then_some(Stop::PathMaxPacketAmountZero)
                }
                RejectKind::Temporary => {
                    let liquidity = reject.code() == ErrorCode::T04_INSUFFICIENT_LIQUIDITY;
                    flow.on_temporary(sent, liquidity, summary)
                }
                RejectKind::TooSmall | RejectKind::Final => Some(Stop::Rejected(summary)),
            };
        }
        Reply::NoAnswer => {
            flow.remaining += sent.amount;
            report.packets_rejected += 1;
            let summary = RejectSummary {
                code: ErrorCode::R00_TRANSFER_TIMED_OUT,
                triggered_by: None,
                message: "no answer before the packet expired".to_owned(),
            };
            settled.stop = flow.on_temporary(sent, false, summary);
        }
    }
    settled
}

/// Sends the closing packet and waits briefly for its answer.
async fn close<P: IlpSend>(link: &Link<'_, P>, state: &mut State, error: Option<&PayError>) {
    let (code, message) = match error {
        None => (StreamErrorCode::NO_ERROR, String::new()),
        Some(error) => {
            let mut message = error.to_string();
            let mut end = message.len().min(MAX_CLOSE_MESSAGE_BYTES);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            (StreamErrorCode::APPLICATION_ERROR, message)
        }
    };
    let frames = vec![
        Frame::StreamClose {
            stream_id: STREAM_ID,
            code,
            message: message.clone(),
        },
        Frame::ConnectionClose { code, message },
    ];
    let Ok(sequence) = state.sequence() else {
        return;
    };
    let Ok((prepare, condition)) = link.prepare(sequence, 0, 0, frames, false) else {
        return;
    };
    // The answer changes nothing: the close carries no money.
    let _ = tokio::time::timeout(
        CLOSE_TIMEOUT.min(link.wait),
        link.exchange(prepare, sequence, condition),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{AddressRef, RejectBuilder};

    fn f08(data: &[u8]) -> Reject {
        RejectBuilder {
            code: ErrorCode::F08_AMOUNT_TOO_LARGE,
            triggered_by: Some(AddressRef::new("test.connector").unwrap()),
            message: b"",
            data,
        }
        .build()
        .unwrap()
    }

    #[test]
    fn f08_data_scales_the_maximum_into_our_units() {
        // Proves 1000 sent arriving as 500 with a maximum of 100 means 200 of ours; without
        // data the packet halves; the result is always below what was sent.
        let details = MaxPacketAmountDetails {
            amount_received: 500,
            max_amount: 100,
        };
        assert_eq!(max_from_f08(&f08(&details.to_bytes()), 1000), 200);
        assert_eq!(max_from_f08(&f08(&[]), 1000), 500);
        let bogus = MaxPacketAmountDetails {
            amount_received: 10,
            max_amount: 50,
        };
        assert_eq!(max_from_f08(&f08(&bogus.to_bytes()), 10), 9);
        assert_eq!(max_from_f08(&f08(&[]), 1), 0);
    }

    #[test]
    fn minimum_destination_amounts_are_exact_floors() {
        // Proves floor(amount × rate × (1 − slippage)) in integers, where a float would round
        // 0.29 × 100 × 0.99 = 28.71 differently at the edges.
        let rate = ExchangeRate {
            delivered: 29,
            sent: 100,
        };
        let min = MinRate::new(Fraction::of(rate), Decimal::new(1, 2));
        assert_eq!(min.minimum(100), 28);
        assert_eq!(min.minimum(10_000), 2871);
        assert_eq!(min.minimum(1), 0);
        let exact = MinRate::new(Fraction::of(rate), Decimal::ZERO);
        assert_eq!(exact.minimum(100), 29);
        let huge = ExchangeRate {
            delivered: u64::MAX,
            sent: u64::MAX,
        };
        assert_eq!(
            MinRate::new(Fraction::of(huge), Decimal::ZERO).minimum(u64::MAX),
            u64::MAX
        );
    }

    #[test]
    fn fractions_compare_without_rounding() {
        // Proves 0.5 < 0.6 × 0.99 = 0.594 and 0.594 is not below itself.
        let half = Fraction::of(ExchangeRate {
            delivered: 1,
            sent: 2,
        });
        let limit = Fraction::from_decimal(Decimal::new(6, 1))
            .times(Fraction::from_decimal(Decimal::new(99, 2)));
        assert!(half.less_than(limit));
        assert!(!limit.less_than(Fraction::from_decimal(Decimal::new(594, 3))));
        assert!(!Fraction::from_decimal(Decimal::new(594, 3)).less_than(limit));
    }

    #[test]
    fn digits_and_rate_conversions() {
        // Proves digit counts and the rate's forward and inverse conversions.
        assert_eq!(count_digits(0), 0);
        assert_eq!(count_digits(9), 1);
        assert_eq!(count_digits(100), 3);
        assert_eq!(count_digits(u64::MAX), 20);
        let rate = ExchangeRate {
            delivered: 50_000,
            sent: 1_000_000_000_000,
        };
        assert_eq!(rate.convert(1_000_000_000), 50);
        assert_eq!(rate.invert(50), 1_000_000_000);
        assert_eq!(rate.to_string(), "0.00000005 (50000 per 1000000000000)");
    }

    #[test]
    fn options_out_of_range_are_refused() {
        // Proves slippage 1, zero expiry, an empty window and a zero max packet are refused.
        let cases = [
            PayOptions {
                max_slippage: Decimal::ONE,
                ..PayOptions::default()
            },
            PayOptions {
                packet_expiry: Duration::ZERO,
                ..PayOptions::default()
            },
            PayOptions {
                max_packets_in_flight: 0,
                ..PayOptions::default()
            },
            PayOptions {
                idle_timeout: Duration::MAX,
                ..PayOptions::default()
            },
            PayOptions {
                max_packet_amount: Some(0),
                ..PayOptions::default()
            },
            PayOptions {
                expected_rate: Some(Decimal::ZERO),
                ..PayOptions::default()
            },
        ];
        for options in cases {
            assert!(matches!(
                options.validate(),
                Err(PayError::InvalidOptions { .. })
            ));
        }
        assert!(PayOptions::default().validate().is_ok());
    }
}

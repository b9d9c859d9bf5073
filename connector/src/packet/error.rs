//! Errors of the packet codec: what failed to parse or build, and where.
//!
//! Every variant names the field it concerns, so a connector can answer a malformed
//! packet with an `F01 Invalid Packet` Reject whose message says exactly what was wrong.

use std::fmt;

use super::address::AddressError;
use super::error_code::ErrorCodeError;
use super::{MAX_DATA_BYTES, PacketType};

/// A field of an ILP packet (RFC 27) or of an IL-DCP response (RFC 31), named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The type byte that opens every packet (12, 13 or 14).
    PacketType,
    /// The length-prefixed content that follows the type byte.
    Content,
    /// Prepare `amount` (UInt64).
    Amount,
    /// Prepare `expiresAt` (17 ASCII digits, `YYYYMMDDHHMMSSmmm`, UTC).
    ExpiresAt,
    /// Prepare `executionCondition` (32 bytes).
    ExecutionCondition,
    /// Prepare `destination` (ILP address).
    Destination,
    /// `data` of a Prepare, Fulfill or Reject.
    Data,
    /// Fulfill `fulfillment` (32 bytes).
    Fulfillment,
    /// Reject `code` (3 IA5 characters).
    Code,
    /// Reject `triggeredBy` (ILP address or empty).
    TriggeredBy,
    /// Reject `message`.
    Message,
    /// IL-DCP response `clientAddress`.
    ClientAddress,
    /// IL-DCP response `assetScale`.
    AssetScale,
    /// IL-DCP response `assetCode`.
    AssetCode,
    /// The 16-byte data of an `F08 Amount Too Large` Reject.
    MaxPacketAmountDetails,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::PacketType => "packet type",
            Field::Content => "content",
            Field::Amount => "amount",
            Field::ExpiresAt => "expiresAt",
            Field::ExecutionCondition => "executionCondition",
            Field::Destination => "destination",
            Field::Data => "data",
            Field::Fulfillment => "fulfillment",
            Field::Code => "code",
            Field::TriggeredBy => "triggeredBy",
            Field::Message => "message",
            Field::ClientAddress => "clientAddress",
            Field::AssetScale => "assetScale",
            Field::AssetCode => "assetCode",
            Field::MaxPacketAmountDetails => "F08 details",
        })
    }
}

/// A component of the `expiresAt` timestamp that was out of its calendar range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampComponent {
    /// Month, 01..=12.
    Month,
    /// Day of month, 01..=28/29/30/31 depending on month and leap year.
    Day,
    /// Hour, 00..=23.
    Hour,
    /// Minute, 00..=59.
    Minute,
    /// Second, 00..=59 (ILP has no leap seconds; 60 is rejected).
    Second,
}

impl fmt::Display for TimestampComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimestampComponent::Month => "month",
            TimestampComponent::Day => "day",
            TimestampComponent::Hour => "hour",
            TimestampComponent::Minute => "minute",
            TimestampComponent::Second => "second",
        })
    }
}

/// Why a buffer is not a valid packet. The codec is strict: it accepts exactly the
/// canonical encoding, so a packet that parses re-serializes to the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The buffer ended inside a fixed-size field or a length prefix.
    #[error("{field}: buffer ended, {needed} bytes needed, {available} left")]
    UnexpectedEnd {
        /// The field being read.
        field: Field,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The type byte is none of 12 (Prepare), 13 (Fulfill), 14 (Reject).
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// The type byte is valid but not the one the caller asked for.
    #[error("packet has incorrect type {actual}, expected {expected}")]
    WrongPacketType {
        /// The type the caller parsed for.
        expected: PacketType,
        /// The type byte found.
        actual: u8,
    },
    /// An OER length prefix is not in its shortest form (e.g. `81 05` for 5).
    #[error("{field}: non-canonical OER length prefix for length {length}")]
    NonCanonicalLength {
        /// The field whose length was read.
        field: Field,
        /// The length it declared.
        length: u64,
    },
    /// An OER long-form prefix announces 0 length octets (indefinite form) or more than
    /// [`MAX_LENGTH_PREFIX_OCTETS`](super::oer::MAX_LENGTH_PREFIX_OCTETS).
    #[error("{field}: OER length prefix announces {octets} length octets")]
    InvalidLengthPrefix {
        /// The field whose length was read.
        field: Field,
        /// The number of length octets announced.
        octets: u8,
    },
    /// A declared length is larger than what is left of the buffer (or of the content).
    #[error("{field}: declares {declared} bytes, only {available} left")]
    LengthOverrun {
        /// The field whose length was read.
        field: Field,
        /// The declared length.
        declared: u64,
        /// Bytes that were left.
        available: usize,
    },
    /// Bytes follow the packet's content.
    #[error("{count} unexpected outer trailing bytes after the packet")]
    OuterTrailingBytes {
        /// How many bytes follow.
        count: usize,
    },
    /// Bytes follow the last field inside the content.
    #[error("{count} unexpected inner trailing bytes after the last field")]
    InnerTrailingBytes {
        /// How many bytes follow.
        count: usize,
    },
    /// A byte of `expiresAt` is not an ASCII digit.
    #[error("expiresAt must be numeric: byte {index} is not a digit")]
    TimestampNotNumeric {
        /// Position of the byte within the 17 characters.
        index: usize,
    },
    /// A component of `expiresAt` is out of its calendar range.
    #[error("expiresAt {component} {value} is out of range")]
    TimestampOutOfRange {
        /// The component.
        component: TimestampComponent,
        /// Its value as read.
        value: u32,
    },
    /// `expiresAt` is valid but this platform's `SystemTime` cannot hold it.
    #[error("expiresAt cannot be represented on this platform")]
    TimestampUnrepresentable,
    /// `data` is longer than RFC 27 allows.
    #[error("data is {length} bytes, over the {MAX_DATA_BYTES}-byte limit")]
    DataTooLong {
        /// Its length.
        length: usize,
    },
    /// An address field is not a valid ILP address (RFC 15).
    #[error("{field}: {source}")]
    InvalidAddress {
        /// The address field.
        field: Field,
        /// What is wrong with it.
        source: AddressError,
    },
    /// The Reject code is not 3 alphanumeric IA5 characters.
    #[error("invalid error code: {0}")]
    InvalidErrorCode(#[from] ErrorCodeError),
    /// A text field that must be UTF-8 is not.
    #[error("{field} is not valid UTF-8")]
    NotUtf8 {
        /// The field.
        field: Field,
    },
}

/// Why a builder refused to build a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// `data` is longer than RFC 27 allows; the packet would not parse.
    #[error("data is {length} bytes, over the {MAX_DATA_BYTES}-byte limit")]
    DataTooLong {
        /// Its length.
        length: usize,
    },
}

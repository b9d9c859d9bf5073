//! ILPv4 packets (RFC 27): parsed once into a view over one buffer, fields read without
//! copying, `amount` and `expiresAt` rewritten in place, built with one allocation.
//!
//! # Layout
//! - this file: [`Packet`], the views [`Prepare`], [`Fulfill`], [`Reject`] and their
//!   builders, and [`MaxPacketAmountDetails`] (the data of an F08 Reject);
//! - [`oer`]: OER length prefixes, var-octet-strings, fixed integers, the timestamp;
//! - [`address`]: [`Address`] and [`AddressRef`] (RFC 15);
//! - [`error_code`]: [`ErrorCode`] and its [`ErrorClass`];
//! - [`error`]: [`ParseError`], [`BuildError`];
//! - [`ildcp`]: IL-DCP (RFC 31) requests and responses, peer-protocol condition.
//!
//! # Wire format
//! `type (u8) | OER length | content`, where the content is
//! - Prepare (12): `amount u64 | expiresAt 17 digits | executionCondition 32 | destination | data`
//! - Fulfill (13): `fulfillment 32 | data`
//! - Reject (14): `code 3 | triggeredBy | message | data`
//!
//! with `destination`, `triggeredBy`, `message` and `data` as var-octet-strings.
//!
//! # Strictness
//! A connector relays packets, so it must not forward what it did not check. Parsing
//! accepts exactly the canonical encoding: trailing bytes (outer or inner), non-canonical
//! length prefixes, impossible timestamps, invalid addresses and over-long data are all
//! errors. Hence a packet that parses re-serializes to the very same bytes.

pub mod address;
pub mod error;
pub mod error_code;
pub mod ildcp;
pub mod oer;

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::time::SystemTime;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

pub use address::{Address, AddressError, AddressRef, MAX_ADDRESS_BYTES};
pub use error::{BuildError, Field, ParseError, TimestampComponent};
pub use error_code::{ErrorClass, ErrorCode, ErrorCodeError};
pub use oer::TIMESTAMP_BYTES;

use error_code::ERROR_CODE_BYTES;
use oer::Reader;

/// Longest `data` of any packet, in bytes (RFC 27).
pub const MAX_DATA_BYTES: usize = 32_767;

/// Width of the Prepare `amount` (UInt64, big-endian).
pub const AMOUNT_BYTES: usize = 8;

/// Width of the Prepare `executionCondition` (a SHA-256 hash).
pub const CONDITION_BYTES: usize = 32;

/// Width of the Fulfill `fulfillment` (the SHA-256 preimage of the condition).
pub const FULFILLMENT_BYTES: usize = 32;

/// Width of the type byte that opens every packet.
const TYPE_BYTES: usize = 1;

/// The type byte of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// ILP Prepare, type 12.
    Prepare = 12,
    /// ILP Fulfill, type 13.
    Fulfill = 13,
    /// ILP Reject, type 14.
    Reject = 14,
}

impl PacketType {
    /// The type byte as on the wire.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for PacketType {
    type Error = ParseError;

    fn try_from(byte: u8) -> Result<Self, Self::Error> {
        match byte {
            12 => Ok(Self::Prepare),
            13 => Ok(Self::Fulfill),
            14 => Ok(Self::Reject),
            other => Err(ParseError::UnknownPacketType(other)),
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self, self.as_u8())
    }
}

/// Any ILPv4 packet, dispatched on the type byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// A Prepare (12).
    Prepare(Prepare),
    /// A Fulfill (13).
    Fulfill(Fulfill),
    /// A Reject (14).
    Reject(Reject),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Prepare(_) => PacketType::Prepare,
            Packet::Fulfill(_) => PacketType::Fulfill,
            Packet::Reject(_) => PacketType::Reject,
        }
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Packet::Prepare(prepare) => prepare.as_bytes(),
            Packet::Fulfill(fulfill) => fulfill.as_bytes(),
            Packet::Reject(reject) => reject.as_bytes(),
        }
    }

    /// The buffer holding the wire bytes.
    pub fn into_bytes(self) -> BytesMut {
        match self {
            Packet::Prepare(prepare) => prepare.into_bytes(),
            Packet::Fulfill(fulfill) => fulfill.into_bytes(),
            Packet::Reject(reject) => reject.into_bytes(),
        }
    }
}

impl TryFrom<BytesMut> for Packet {
    type Error = ParseError;

    fn try_from(buffer: BytesMut) -> Result<Self, Self::Error> {
        let Some(&type_byte) = buffer.first() else {
            return Err(ParseError::UnexpectedEnd {
                field: Field::PacketType,
                needed: TYPE_BYTES,
                available: 0,
            });
        };
        match PacketType::try_from(type_byte)? {
            PacketType::Prepare => Prepare::try_from(buffer).map(Packet::Prepare),
            PacketType::Fulfill => Fulfill::try_from(buffer).map(Packet::Fulfill),
            PacketType::Reject => Reject::try_from(buffer).map(Packet::Reject),
        }
    }
}

impl From<Prepare> for Packet {
    fn from(prepare: Prepare) -> Self {
        Packet::Prepare(prepare)
    }
}

impl From<Fulfill> for Packet {
    fn from(fulfill: Fulfill) -> Self {
        Packet::Fulfill(fulfill)
    }
}

impl From<Reject> for Packet {
    fn from(reject: Reject) -> Self {
        Packet::Reject(reject)
    }
}

impl From<Packet> for BytesMut {
    fn from(packet: Packet) -> Self {
        packet.into_bytes()
    }
}

/// Reads the type byte and the content length, and checks that the content ends the buffer.
fn read_envelope(buffer: &[u8], expected: PacketType) -> Result<Reader<'_>, ParseError> {
    let mut reader = Reader::new(buffer);
    let actual = reader.read_u8(Field::PacketType)?;
    if actual != expected.as_u8() {
        return Err(ParseError::WrongPacketType { expected, actual });
    }
    let content_length = reader.read_length(Field::Content)?;
    match reader.remaining() - content_length {
        0 => Ok(reader),
        count => Err(ParseError::OuterTrailingBytes { count }),
    }
}

/// Reads the `data` var-octet-string, enforcing [`MAX_DATA_BYTES`]; returns where it starts.
fn read_data(reader: &mut Reader<'_>) -> Result<usize, ParseError> {
    let data = reader.read_var_octet_string_range(Field::Data)?;
    if data.len() > MAX_DATA_BYTES {
        return Err(ParseError::DataTooLong { length: data.len() });
    }
    Ok(data.start)
}

/// Reads an address var-octet-string and validates it (RFC 15), empty allowed if `optional`.
fn read_address(
    reader: &mut Reader<'_>,
    buffer: &[u8],
    field: Field,
    optional: bool,
) -> Result<Range<usize>, ParseError> {
    let range = reader.read_var_octet_string_range(field)?;
    if !(optional && range.is_empty()) {
        address::validate(&buffer[range.clone()])
            .map_err(|source| ParseError::InvalidAddress { field, source })?;
    }
    Ok(range)
}

/// The `N` bytes at `offset`; parse and the builders guarantee they are there.
fn array_at<const N: usize>(buffer: &[u8], offset: usize) -> &[u8; N] {
    match buffer.get(offset..).and_then(<[u8]>::first_chunk::<N>) {
        Some(array) => array,
        None => unreachable!("parse and build place {N} bytes at this offset"),
    }
}

/// The address at `range`; parse and the builders validated it, so it is ASCII.
fn address_at(buffer: &[u8], range: Range<usize>) -> AddressRef<'_> {
    match std::str::from_utf8(&buffer[range]) {
        Ok(address) => AddressRef::from_validated(address),
        Err(_) => unreachable!("parse and build store only validated (ASCII) addresses"),
    }
}

/// Refuses `data` longer than [`MAX_DATA_BYTES`].
fn check_data_length(data: &[u8]) -> Result<(), BuildError> {
    if data.len() > MAX_DATA_BYTES {
        return Err(BuildError::DataTooLong { length: data.len() });
    }
    Ok(())
}

/// A buffer of exactly the packet's size, holding its type byte and content length.
fn packet_buffer(packet_type: PacketType, content_length: usize) -> BytesMut {
    let total = TYPE_BYTES + oer::length_prefix_len(content_length) + content_length;
    let mut buffer = BytesMut::with_capacity(total);
    buffer.put_u8(packet_type.as_u8());
    oer::put_length_prefix(&mut buffer, content_length);
    buffer
}

/// Appends a var-octet-string and returns where its value lies.
fn put_var_octet_string(buffer: &mut BytesMut, value: &[u8]) -> Range<usize> {
    oer::put_length_prefix(buffer, value.len());
    let start = buffer.len();
    buffer.put_slice(value);
    start..buffer.len()
}

/// The SHA-256 condition that `fulfillment` fulfills.
pub fn condition_for(fulfillment: &[u8; FULFILLMENT_BYTES]) -> [u8; CONDITION_BYTES] {
    Sha256::digest(fulfillment).into()
}

/// An ILP Prepare: a view over its wire bytes.
///
/// Parsing checks every field once and records offsets; accessors then slice the buffer.
#[derive(Clone)]
pub struct Prepare {
    buffer: BytesMut,
    content_offset: usize,
    amount: u64,
    expires_at: SystemTime,
    destination: Range<usize>,
    data_start: usize,
}

impl Prepare {
    /// Amount, in the units of the account it arrives on.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// Rewrites the amount in place (fixed width, so the packet length does not change).
    pub fn set_amount(&mut self, amount: u64) {
        let start = self.content_offset;
        self.buffer[start..start + AMOUNT_BYTES].copy_from_slice(&amount.to_be_bytes());
        self.amount = amount;
    }

    /// Expiry, exactly as on the wire (millisecond precision, UTC).
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Expiry as a chrono UTC date-time, for display and date arithmetic.
    pub fn expires_at_utc(&self) -> DateTime<Utc> {
        DateTime::from(self.expires_at)
    }

    /// Rewrites the expiry in place. `expires_at` is truncated to the millisecond and
    /// clamped to years 0000..=9999; [`expires_at`](Self::expires_at) then returns that.
    pub fn set_expires_at(&mut self, expires_at: SystemTime) {
        let (digits, written) = oer::encode_timestamp_normalized(expires_at);
        let start = self.content_offset + AMOUNT_BYTES;
        self.buffer[start..start + TIMESTAMP_BYTES].copy_from_slice(&digits);
        self.expires_at = written;
    }

    /// The 17 ASCII digits of the expiry as on the wire (`YYYYMMDDHHMMSSmmm`).
    pub fn expires_at_digits(&self) -> &[u8; TIMESTAMP_BYTES] {
        array_at(&self.buffer, self.content_offset + AMOUNT_BYTES)
    }

    /// The condition: SHA-256 of the fulfillment that settles this packet.
    pub fn execution_condition(&self) -> &[u8; CONDITION_BYTES] {
        array_at(
            &self.buffer,
            self.content_offset + AMOUNT_BYTES + TIMESTAMP_BYTES,
        )
    }

    /// The destination address, validated at parse time.
    pub fn destination(&self) -> AddressRef<'_> {
        address_at(&self.buffer, self.destination.clone())
    }

    /// The end-to-end data (e.g. STREAM frames).
    pub fn data(&self) -> &[u8] {
        &self.buffer[self.data_start..]
    }

    /// The data alone, without copying it.
    pub fn into_data(mut self) -> BytesMut {
        self.buffer.split_off(self.data_start)
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// The buffer holding the wire bytes.
    pub fn into_bytes(self) -> BytesMut {
        self.buffer
    }
}

impl TryFrom<BytesMut> for Prepare {
    type Error = ParseError;

    fn try_from(buffer: BytesMut) -> Result<Self, Self::Error> {
        let mut reader = read_envelope(&buffer, PacketType::Prepare)?;
        let content_offset = reader.position();
        let amount = reader.read_u64(Field::Amount)?;
        let expires_at = oer::decode_timestamp(reader.read_array(Field::ExpiresAt)?)?;
        reader.read_array::<CONDITION_BYTES>(Field::ExecutionCondition)?;
        let destination = read_address(&mut reader, &buffer, Field::Destination, false)?;
        let data_start = read_data(&mut reader)?;
        reader.finish()?;
        Ok(Self {
            buffer,
            content_offset,
            amount,
            expires_at,
            destination,
            data_start,
        })
    }
}

impl PartialEq for Prepare {
    fn eq(&self, other: &Self) -> bool {
        self.buffer == other.buffer
    }
}

impl Eq for Prepare {}

impl AsRef<[u8]> for Prepare {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl From<Prepare> for BytesMut {
    fn from(prepare: Prepare) -> Self {
        prepare.buffer
    }
}

impl fmt::Debug for Prepare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepare")
            .field("amount", &self.amount)
            .field("expires_at", &self.expires_at_utc())
            .field(
                "execution_condition",
                &hex::encode(self.execution_condition()),
            )
            .field("destination", &self.destination().as_str())
            .field("data_length", &self.data().len())
            .finish()
    }
}

/// The fields of a Prepare to build; [`build`](Self::build) allocates once.
#[derive(Debug, Clone, Copy)]
pub struct PrepareBuilder<'a> {
    /// Amount.
    pub amount: u64,
    /// Expiry; truncated to the millisecond, clamped to years 0000..=9999.
    pub expires_at: SystemTime,
    /// Condition.
    pub execution_condition: &'a [u8; CONDITION_BYTES],
    /// Destination.
    pub destination: AddressRef<'a>,
    /// Data, at most [`MAX_DATA_BYTES`].
    pub data: &'a [u8],
}

impl PrepareBuilder<'_> {
    /// Serializes into a buffer of exactly the packet's size.
    pub fn build(&self) -> Result<Prepare, BuildError> {
        check_data_length(self.data)?;
        Ok(self.build_checked())
    }

    /// [`build`](Self::build) once `data` is known to be within [`MAX_DATA_BYTES`].
    fn build_checked(&self) -> Prepare {
        let destination = self.destination.as_str().as_bytes();
        let content_length = AMOUNT_BYTES
            + TIMESTAMP_BYTES
            + CONDITION_BYTES
            + oer::var_octet_string_len(destination.len())
            + oer::var_octet_string_len(self.data.len());
        let mut buffer = packet_buffer(PacketType::Prepare, content_length);
        let content_offset = buffer.len();
        buffer.put_u64(self.amount);
        let (digits, expires_at) = oer::encode_timestamp_normalized(self.expires_at);
        buffer.put_slice(&digits);
        buffer.put_slice(self.execution_condition);
        let destination = put_var_octet_string(&mut buffer, destination);
        let data_start = put_var_octet_string(&mut buffer, self.data).start;
        debug_assert_eq!(buffer.len(), buffer.capacity());
        Prepare {
            buffer,
            content_offset,
            amount: self.amount,
            expires_at,
            destination,
            data_start,
        }
    }
}

/// An ILP Fulfill: a view over its wire bytes.
#[derive(Clone)]
pub struct Fulfill {
    buffer: BytesMut,
    content_offset: usize,
    data_start: usize,
}

impl Fulfill {
    /// The fulfillment: the preimage of the Prepare's condition.
    pub fn fulfillment(&self) -> &[u8; FULFILLMENT_BYTES] {
        array_at(&self.buffer, self.content_offset)
    }

    /// Whether SHA-256 of the fulfillment equals `condition`.
    pub fn matches_condition(&self, condition: &[u8; CONDITION_BYTES]) -> bool {
        condition_for(self.fulfillment()) == *condition
    }

    /// The end-to-end data.
    pub fn data(&self) -> &[u8] {
        &self.buffer[self.data_start..]
    }

    /// The data alone, without copying it.
    pub fn into_data(mut self) -> BytesMut {
        self.buffer.split_off(self.data_start)
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// The buffer holding the wire bytes.
    pub fn into_bytes(self) -> BytesMut {
        self.buffer
    }
}

impl TryFrom<BytesMut> for Fulfill {
    type Error = ParseError;

    fn try_from(buffer: BytesMut) -> Result<Self, Self::Error> {
        let mut reader = read_envelope(&buffer, PacketType::Fulfill)?;
        let content_offset = reader.position();
        reader.read_array::<FULFILLMENT_BYTES>(Field::Fulfillment)?;
        let data_start = read_data(&mut reader)?;
        reader.finish()?;
        Ok(Self {
            buffer,
            content_offset,
            data_start,
        })
    }
}

impl PartialEq for Fulfill {
    fn eq(&self, other: &Self) -> bool {
        self.buffer == other.buffer
    }
}

impl Eq for Fulfill {}

impl AsRef<[u8]> for Fulfill {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl From<Fulfill> for BytesMut {
    fn from(fulfill: Fulfill) -> Self {
        fulfill.buffer
    }
}

impl fmt::Debug for Fulfill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // House rule: fulfillments are never logged.
        f.debug_struct("Fulfill")
            .field("fulfillment", &"<redacted>")
            .field("data_length", &self.data().len())
            .finish()
    }
}

/// The fields of a Fulfill to build; [`build`](Self::build) allocates once.
#[derive(Clone, Copy)]
pub struct FulfillBuilder<'a> {
    /// Fulfillment.
    pub fulfillment: &'a [u8; FULFILLMENT_BYTES],
    /// Data, at most [`MAX_DATA_BYTES`].
    pub data: &'a [u8],
}

impl fmt::Debug for FulfillBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // House rule: fulfillments are never logged.
        f.debug_struct("FulfillBuilder")
            .field("fulfillment", &"<redacted>")
            .field("data_length", &self.data.len())
            .finish()
    }
}

impl FulfillBuilder<'_> {
    /// Serializes into a buffer of exactly the packet's size.
    pub fn build(&self) -> Result<Fulfill, BuildError> {
        check_data_length(self.data)?;
        let content_length = FULFILLMENT_BYTES + oer::var_octet_string_len(self.data.len());
        let mut buffer = packet_buffer(PacketType::Fulfill, content_length);
        let content_offset = buffer.len();
        buffer.put_slice(self.fulfillment);
        let data_start = put_var_octet_string(&mut buffer, self.data).start;
        debug_assert_eq!(buffer.len(), buffer.capacity());
        Ok(Fulfill {
            buffer,
            content_offset,
            data_start,
        })
    }
}

/// An ILP Reject: a view over its wire bytes.
#[derive(Clone)]
pub struct Reject {
    buffer: BytesMut,
    code: ErrorCode,
    triggered_by: Range<usize>,
    message: Range<usize>,
    data_start: usize,
}

impl Reject {
    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The address of the node that rejected, or `None` if the field is empty.
    pub fn triggered_by(&self) -> Option<AddressRef<'_>> {
        if self.triggered_by.is_empty() {
            None
        } else {
            Some(address_at(&self.buffer, self.triggered_by.clone()))
        }
    }

    /// The message bytes (meant to be UTF-8, not required to be).
    pub fn message(&self) -> &[u8] {
        &self.buffer[self.message.clone()]
    }

    /// The message as text, invalid UTF-8 replaced by U+FFFD (borrowed when valid).
    pub fn message_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.message())
    }

    /// The data.
    pub fn data(&self) -> &[u8] {
        &self.buffer[self.data_start..]
    }

    /// The data alone, without copying it.
    pub fn into_data(mut self) -> BytesMut {
        self.buffer.split_off(self.data_start)
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// The buffer holding the wire bytes.
    pub fn into_bytes(self) -> BytesMut {
        self.buffer
    }
}

impl TryFrom<BytesMut> for Reject {
    type Error = ParseError;

    fn try_from(buffer: BytesMut) -> Result<Self, Self::Error> {
        let mut reader = read_envelope(&buffer, PacketType::Reject)?;
        let code = ErrorCode::new(*reader.read_array::<ERROR_CODE_BYTES>(Field::Code)?)?;
        let triggered_by = read_address(&mut reader, &buffer, Field::TriggeredBy, true)?;
        let message = reader.read_var_octet_string_range(Field::Message)?;
        let data_start = read_data(&mut reader)?;
        reader.finish()?;
        Ok(Self {
            buffer,
            code,
            triggered_by,
            message,
            data_start,
        })
    }
}

impl PartialEq for Reject {
    fn eq(&self, other: &Self) -> bool {
        self.buffer == other.buffer
    }
}

impl Eq for Reject {}

impl AsRef<[u8]> for Reject {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl From<Reject> for BytesMut {
    fn from(reject: Reject) -> Self {
        reject.buffer
    }
}

impl fmt::Debug for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reject")
            .field("code", &self.code)
            .field(
                "triggered_by",
                &self.triggered_by().map(|address| address.as_str()),
            )
            .field("message", &self.message_str())
            .field("data_length", &self.data().len())
            .finish()
    }
}

/// The fields of a Reject to build; [`build`](Self::build) allocates once.
#[derive(Debug, Clone, Copy)]
pub struct RejectBuilder<'a> {
    /// Error code.
    pub code: ErrorCode,
    /// Address of the rejecting node; `None` writes an empty field.
    pub triggered_by: Option<AddressRef<'a>>,
    /// Message, usually UTF-8 text.
    pub message: &'a [u8],
    /// Data, at most [`MAX_DATA_BYTES`].
    pub data: &'a [u8],
}

impl RejectBuilder<'_> {
    /// Serializes into a buffer of exactly the packet's size.
    pub fn build(&self) -> Result<Reject, BuildError> {
        check_data_length(self.data)?;
        let triggered_by = self
            .triggered_by
            .map_or(&b""[..], |address| address.as_str().as_bytes());
        let content_length = ERROR_CODE_BYTES
            + oer::var_octet_string_len(triggered_by.len())
            + oer::var_octet_string_len(self.message.len())
            + oer::var_octet_string_len(self.data.len());
        let mut buffer = packet_buffer(PacketType::Reject, content_length);
        buffer.put_slice(self.code.as_bytes());
        let triggered_by = put_var_octet_string(&mut buffer, triggered_by);
        let message = put_var_octet_string(&mut buffer, self.message);
        let data_start = put_var_octet_string(&mut buffer, self.data).start;
        debug_assert_eq!(buffer.len(), buffer.capacity());
        Ok(Reject {
            buffer,
            code: self.code,
            triggered_by,
            message,
            data_start,
        })
    }
}

/// The data of an `F08 Amount Too Large` Reject: two big-endian u64 (RFC 27).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaxPacketAmountDetails {
    /// The amount that arrived, in the rejecting connector's units.
    pub amount_received: u64,
    /// The largest amount it accepts per packet.
    pub max_amount: u64,
}

impl MaxPacketAmountDetails {
    /// Encoded size in bytes.
    pub const BYTES: usize = 2 * AMOUNT_BYTES;

    /// The 16 data bytes.
    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut bytes = [0; Self::BYTES];
        bytes[..AMOUNT_BYTES].copy_from_slice(&self.amount_received.to_be_bytes());
        bytes[AMOUNT_BYTES..].copy_from_slice(&self.max_amount.to_be_bytes());
        bytes
    }

    /// Reads exactly 16 bytes of F08 data.
    pub fn from_bytes(data: &[u8]) -> Result<Self, ParseError> {
        let mut reader = Reader::new(data);
        let amount_received = reader.read_u64(Field::MaxPacketAmountDetails)?;
        let max_amount = reader.read_u64(Field::MaxPacketAmountDetails)?;
        reader.finish()?;
        Ok(Self {
            amount_received,
            max_amount,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::time::Duration;

    const PACKET_VECTORS: &str = include_str!("vectors/ilp-packet.json");

    // Section 1 of vectors/ilp-packet-vectors.md (Interledger.rs fixtures).
    const PREPARE_HEX: &str = "0c82014b000000000000006b3230313830363037323034383432343833117b434f1a54e9044f4f54923b2cff9e4a6d420ae281d5025d7bb040c4b4c04a0d6578616d706c652e616c6963658201016c99f6a969473028ef46e09b471581c915b6d5496329c1e3a1c2748d7422a7bdcc798e286cabe3197cccfc213e930b8dba57c7abdf2d1f3b2511689de4f0eff441f53da0feffd23249a355b26c3bd0256d5122e7ccdf159fd6cb083dd73cb29397967871becd04890492119c5e3e6b024be35de26466f60c16d90a21054fb13800120cfb85b0df76e50aacd68526fd043026d3d02010c671987a1f6501b5085f0d7d5897624be5862f98c01df65792970181a87d0f3c586a0ca6bd89dc372c45eef5b38a6307b16f1d7d31e8d92e5982c9dd2986eaad581f212d43da9c5cb7b948fc18914be90219709d0c26d3b5f4ad879d8494bb3aebfe612ec54041e4a380f0";
    const FULFILL_HEX: &str = "0d820124117b434f1a54e9044f4f54923b2cff9e4a6d420ae281d5025d7bb040c4b4c04a8201016c99f6a969473028ef46e09b471581c915b6d5496329c1e3a1c2748d7422a7bdcc798e286cabe3197cccfc213e930b8dba57c7abdf2d1f3b2511689de4f0eff441f53da0feffd23249a355b26c3bd0256d5122e7ccdf159fd6cb083dd73cb29397967871becd04890492119c5e3e6b024be35de26466f60c16d90a21054fb13800120cfb85b0df76e50aacd68526fd043026d3d02010c671987a1f6501b5085f0d7d5897624be5862f98c01df65792970181a87d0f3c586a0ca6bd89dc372c45eef5b38a6307b16f1d7d31e8d92e5982c9dd2986eaad581f212d43da9c5cb7b948fc18914be90219709d0c26d3b5f4ad879d8494bb3aebfe612ec54041e4a380f0";
    const REJECT_HEX: &str = "0e820124463939116578616d706c652e636f6e6e6563746f720a536f6d65206572726f728201016c99f6a969473028ef46e09b471581c915b6d5496329c1e3a1c2748d7422a7bdcc798e286cabe3197cccfc213e930b8dba57c7abdf2d1f3b2511689de4f0eff441f53da0feffd23249a355b26c3bd0256d5122e7ccdf159fd6cb083dd73cb29397967871becd04890492119c5e3e6b024be35de26466f60c16d90a21054fb13800120cfb85b0df76e50aacd68526fd043026d3d02010c671987a1f6501b5085f0d7d5897624be5862f98c01df65792970181a87d0f3c586a0ca6bd89dc372c45eef5b38a6307b16f1d7d31e8d92e5982c9dd2986eaad581f212d43da9c5cb7b948fc18914be90219709d0c26d3b5f4ad879d8494bb3aebfe612ec54041e4a380f0";
    const DATA_HEX: &str = "6c99f6a969473028ef46e09b471581c915b6d5496329c1e3a1c2748d7422a7bdcc798e286cabe3197cccfc213e930b8dba57c7abdf2d1f3b2511689de4f0eff441f53da0feffd23249a355b26c3bd0256d5122e7ccdf159fd6cb083dd73cb29397967871becd04890492119c5e3e6b024be35de26466f60c16d90a21054fb13800120cfb85b0df76e50aacd68526fd043026d3d02010c671987a1f6501b5085f0d7d5897624be5862f98c01df65792970181a87d0f3c586a0ca6bd89dc372c45eef5b38a6307b16f1d7d31e8d92e5982c9dd2986eaad581f212d43da9c5cb7b948fc18914be90219709d0c26d3b5f4ad879d8494bb3aebfe612ec54041e4a380f0";
    const CONDITION_HEX: &str = "117b434f1a54e9044f4f54923b2cff9e4a6d420ae281d5025d7bb040c4b4c04a";
    const FIXTURE_EXPIRES_AT: &str = "2018-06-07T20:48:42.483Z";

    // Section 3 (the benchmark packets; the Prepare equals the interledgerjs vector).
    const BENCH_PREPARE_HEX: &str = "0c68000000000000006b323031373132323330313231343035343974e1136dc71c9e5f283bec83461cbf1261c4014f72d48f8dd65453a0b84e7de10d6578616d706c652e616c696365205db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0";
    const BENCH_FULFILL_HEX: &str = "0d41117b434f1a54e9044f4f54923b2cff9e4a6d420ae281d5025d7bb040c4b4c04a205db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0";
    const BENCH_REJECT_HEX: &str = "0e41463939116578616d706c652e636f6e6e6563746f720a536f6d65206572726f72205db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0";
    const BENCH_DATA_HEX: &str = "5db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0";

    // Section 4 (CCP Prepares to peer.route.*).
    const CCP_PREPARES: [(&str, usize, &str, usize); 3] = [
        (
            "0c6c0000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f292512706565722e726f7574652e636f6e74726f6c1f0170d1a134a0df4f47964f6e19e2ab379000000020010203666f6f03626172",
            110,
            "peer.route.control",
            31,
        ),
        (
            "0c7e0000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f292511706565722e726f7574652e7570646174653221e55f8eabcd4e979ab9bf0ff00a224c000000340000003400000034000075300d6578616d706c652e616c69636501000100",
            128,
            "peer.route.update",
            50,
        ),
        (
            "0c8201520000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f292511706565722e726f7574652e757064617465820104bffbf6ad0ddc4d3ba1e5b4f0537365bd000000340000002e00000032000075300d6578616d706c652e616c69636501020f6578616d706c652e7072656669783101010f6578616d706c652e707265666978317a6c7d85867c46a2fabfad1afa7a4a5e229ce574fcce63f5edeedfc03f8468ea01000f6578616d706c652e707265666978320102126578616d706c652e636f6e6e6563746f72310f6578616d706c652e707265666978322b08e53fbcc17c5f1bd54ae0d9ad7ba39a5f9a7b126ca9b5c0945609a35324cc01025000000b68656c6c6f20776f726c64e0000104a0a0a0a001020f6578616d706c652e707265666978330f6578616d706c652e70726566697834",
            342,
            "peer.route.update",
            260,
        ),
    ];

    fn buffer(hex: &str) -> BytesMut {
        BytesMut::from(&hex::decode(hex).unwrap()[..])
    }

    fn time(rfc3339: &str) -> SystemTime {
        SystemTime::from(DateTime::parse_from_rfc3339(rfc3339).unwrap())
    }

    fn condition(hex: &str) -> [u8; 32] {
        hex::decode(hex).unwrap().try_into().unwrap()
    }

    fn address(text: &str) -> AddressRef<'_> {
        AddressRef::new(text).unwrap()
    }

    fn fixture_prepare_builder<'a>(condition: &'a [u8; 32], data: &'a [u8]) -> PrepareBuilder<'a> {
        PrepareBuilder {
            amount: 107,
            expires_at: time(FIXTURE_EXPIRES_AT),
            execution_condition: condition,
            destination: address("example.alice"),
            data,
        }
    }

    fn with_byte(hex: &str, index: usize, byte: u8) -> BytesMut {
        let mut bytes = buffer(hex);
        bytes[index] = byte;
        bytes
    }

    #[test]
    fn fixture_prepare_parses_to_its_fields_and_round_trips() {
        // Proves the 335-byte fixture Prepare decodes field by field and re-serializes unchanged.
        let prepare = Prepare::try_from(buffer(PREPARE_HEX)).unwrap();
        assert_eq!(prepare.as_bytes().len(), 335);
        assert_eq!(prepare.amount(), 107);
        assert_eq!(prepare.expires_at(), time(FIXTURE_EXPIRES_AT));
        assert_eq!(prepare.expires_at_digits(), b"20180607204842483");
        assert_eq!(
            prepare
                .expires_at_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            FIXTURE_EXPIRES_AT
        );
        assert_eq!(prepare.execution_condition(), &condition(CONDITION_HEX));
        assert_eq!(prepare.destination(), "example.alice");
        assert_eq!(prepare.data(), &hex::decode(DATA_HEX).unwrap()[..]);
        assert_eq!(prepare.as_bytes(), &buffer(PREPARE_HEX)[..]);
        assert_eq!(prepare.clone().into_data(), buffer(DATA_HEX));
        assert_eq!(prepare.into_bytes(), buffer(PREPARE_HEX));
    }

    #[test]
    fn fixture_prepare_builder_produces_the_fixture_bytes() {
        // Proves PrepareBuilder writes exactly the fixture, into a buffer of exactly its size.
        let data = hex::decode(DATA_HEX).unwrap();
        let condition = condition(CONDITION_HEX);
        let prepare = fixture_prepare_builder(&condition, &data).build().unwrap();
        assert_eq!(prepare.as_bytes(), &buffer(PREPARE_HEX)[..]);
        assert_eq!(prepare, Prepare::try_from(buffer(PREPARE_HEX)).unwrap());
        let bytes = prepare.into_bytes();
        assert_eq!(bytes.capacity(), bytes.len());
    }

    #[test]
    fn set_amount_rewrites_in_place_to_the_fixture_bytes() {
        // Proves set_amount(107) on a Prepare built with 9999 yields exactly the fixture bytes.
        let data = hex::decode(DATA_HEX).unwrap();
        let condition = condition(CONDITION_HEX);
        let mut prepare = PrepareBuilder {
            amount: 9999,
            ..fixture_prepare_builder(&condition, &data)
        }
        .build()
        .unwrap();
        assert_eq!(prepare.amount(), 9999);
        prepare.set_amount(107);
        assert_eq!(prepare.amount(), 107);
        assert_eq!(prepare.as_bytes(), &buffer(PREPARE_HEX)[..]);
    }

    #[test]
    fn set_expires_at_rewrites_in_place_to_the_fixture_bytes() {
        // Proves set_expires_at(2018-06-07T20:48:42.483Z) on a Prepare built with now yields the fixture.
        let data = hex::decode(DATA_HEX).unwrap();
        let condition = condition(CONDITION_HEX);
        let mut prepare = PrepareBuilder {
            expires_at: SystemTime::now(),
            ..fixture_prepare_builder(&condition, &data)
        }
        .build()
        .unwrap();
        prepare.set_expires_at(time(FIXTURE_EXPIRES_AT) + Duration::from_nanos(999_999));
        assert_eq!(prepare.expires_at(), time(FIXTURE_EXPIRES_AT));
        assert_eq!(prepare.as_bytes(), &buffer(PREPARE_HEX)[..]);
        assert_eq!(
            Prepare::try_from(prepare.into_bytes())
                .unwrap()
                .expires_at(),
            time(FIXTURE_EXPIRES_AT)
        );
    }

    #[test]
    fn fixture_fulfill_parses_round_trips_and_rebuilds() {
        // Proves the 296-byte fixture Fulfill decodes, re-serializes unchanged and is rebuilt exactly.
        let fulfill = Fulfill::try_from(buffer(FULFILL_HEX)).unwrap();
        assert_eq!(fulfill.as_bytes().len(), 296);
        assert_eq!(fulfill.fulfillment(), &condition(CONDITION_HEX));
        assert_eq!(fulfill.data(), &hex::decode(DATA_HEX).unwrap()[..]);
        assert_eq!(fulfill.as_bytes(), &buffer(FULFILL_HEX)[..]);
        let data = hex::decode(DATA_HEX).unwrap();
        let built = FulfillBuilder {
            fulfillment: &condition(CONDITION_HEX),
            data: &data,
        }
        .build()
        .unwrap();
        assert_eq!(built, fulfill);
        // The fixture's fulfillment is its own condition, so it does not fulfill it (md §1.5).
        assert!(!fulfill.matches_condition(&condition(CONDITION_HEX)));
        assert_eq!(
            hex::encode(condition_for(fulfill.fulfillment())),
            "22bd80d315f6103cb742acac4aa23201f270ad74547470d7ac444c5ef7e8b885"
        );
        assert!(fulfill.matches_condition(&condition_for(fulfill.fulfillment())));
        let builder = FulfillBuilder {
            fulfillment: &[9; 32],
            data: b"",
        };
        assert!(!format!("{builder:?}").contains('9'));
        assert_eq!(
            format!("{fulfill:?}"),
            "Fulfill { fulfillment: \"<redacted>\", data_length: 257 }"
        );
    }

    #[test]
    fn fixture_reject_parses_round_trips_and_rebuilds() {
        // Proves the 296-byte fixture Reject decodes to F99/example.connector/"Some error" and rebuilds.
        let reject = Reject::try_from(buffer(REJECT_HEX)).unwrap();
        assert_eq!(reject.as_bytes().len(), 296);
        assert_eq!(reject.code(), ErrorCode::F99_APPLICATION_ERROR);
        assert_eq!(reject.triggered_by(), Some(address("example.connector")));
        assert_eq!(reject.message(), b"Some error");
        assert_eq!(reject.message_str(), "Some error");
        assert_eq!(reject.data(), &hex::decode(DATA_HEX).unwrap()[..]);
        let data = hex::decode(DATA_HEX).unwrap();
        let built = RejectBuilder {
            code: ErrorCode::F99_APPLICATION_ERROR,
            triggered_by: Some(address("example.connector")),
            message: b"Some error",
            data: &data,
        }
        .build()
        .unwrap();
        assert_eq!(built.as_bytes(), &buffer(REJECT_HEX)[..]);
    }

    #[test]
    fn destination_byte_67_set_to_star_fails_address_validation() {
        // Proves the md §1.5 mutation: '*' inside "example.alice" is an invalid destination.
        assert_eq!(
            Prepare::try_from(with_byte(PREPARE_HEX, 67, b'*')).unwrap_err(),
            ParseError::InvalidAddress {
                field: Field::Destination,
                source: AddressError::InvalidCharacter {
                    byte: b'*',
                    offset: 5
                },
            }
        );
    }

    #[test]
    fn any_timestamp_byte_set_to_tab_fails_as_not_numeric() {
        // Proves the md §1.5 mutation: 0x09 at each of bytes 12..29 is "DateTime must be numeric".
        for index in 12..29 {
            assert_eq!(
                Prepare::try_from(with_byte(PREPARE_HEX, index, 0x09)).unwrap_err(),
                ParseError::TimestampNotNumeric { index: index - 12 }
            );
        }
    }

    #[test]
    fn changing_the_type_byte_fails_the_type_check() {
        // Proves the md §1.5 mutation (type 13 on a Prepare) and the other type mismatches.
        assert_eq!(
            Prepare::try_from(with_byte(PREPARE_HEX, 0, 13)).unwrap_err(),
            ParseError::WrongPacketType {
                expected: PacketType::Prepare,
                actual: 13
            }
        );
        assert_eq!(
            Fulfill::try_from(buffer(REJECT_HEX)).unwrap_err(),
            ParseError::WrongPacketType {
                expected: PacketType::Fulfill,
                actual: 14
            }
        );
        assert_eq!(
            Reject::try_from(buffer(PREPARE_HEX)).unwrap_err(),
            ParseError::WrongPacketType {
                expected: PacketType::Reject,
                actual: 12
            }
        );
        assert_eq!(
            Packet::try_from(with_byte(PREPARE_HEX, 0, 15)).unwrap_err(),
            ParseError::UnknownPacketType(15)
        );
        assert_eq!(
            Packet::try_from(BytesMut::new()).unwrap_err(),
            ParseError::UnexpectedEnd {
                field: Field::PacketType,
                needed: 1,
                available: 0
            }
        );
    }

    #[test]
    fn outer_trailing_bytes_are_rejected() {
        // Proves the strict codec refuses `11 12 13` after a valid packet (lenient upstream accepts it).
        for hex in [PREPARE_HEX, FULFILL_HEX, REJECT_HEX] {
            let mut bytes = buffer(hex);
            bytes.extend_from_slice(&[0x11, 0x12, 0x13]);
            assert_eq!(
                Packet::try_from(bytes).unwrap_err(),
                ParseError::OuterTrailingBytes { count: 3 }
            );
        }
    }

    #[test]
    fn fuzzed_0_non_ascii_error_code_is_rejected() {
        // Proves md §2 fuzzed_0: code bytes 74 77 ff are not IA5.
        assert_eq!(
            Reject::try_from(buffer("0e0d7477ff06746573742e7400002a")).unwrap_err(),
            ParseError::InvalidErrorCode(ErrorCodeError::NotIa5 {
                byte: 0xff,
                index: 2
            })
        );
    }

    #[test]
    fn fuzzed_1_is_rejected_for_its_code_and_for_its_inner_trailing_byte() {
        // Proves md §2 fuzzed_1: `tw\x7f` is not alphanumeric, and with a clean code the extra 2a byte fails.
        assert_eq!(
            Reject::try_from(buffer("0e0d74777f06746573742e7400002a")).unwrap_err(),
            ParseError::InvalidErrorCode(ErrorCodeError::NotAlphanumeric {
                byte: 0x7f,
                index: 2
            })
        );
        assert_eq!(
            Reject::try_from(buffer("0e0d74773106746573742e7400002a")).unwrap_err(),
            ParseError::InnerTrailingBytes { count: 1 }
        );
        let without_junk = Reject::try_from(buffer("0e0c74773106746573742e740000")).unwrap();
        assert_eq!(without_junk.triggered_by(), Some(address("test.t")));
        assert_eq!(without_junk.code().class(), ErrorClass::Unknown);
        assert!(without_junk.message().is_empty() && without_junk.data().is_empty());
    }

    #[test]
    fn fuzzed_2_second_60_is_rejected() {
        // Proves md §2 fuzzed_2: expiresAt 20000531160160251 (second = 60) is out of range, 59 parses.
        let hex = "0c4100000000000000013230303030353331313630313630323531000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f06746573742e6100";
        assert_eq!(
            Prepare::try_from(buffer(hex)).unwrap_err(),
            ParseError::TimestampOutOfRange {
                component: TimestampComponent::Second,
                value: 60
            }
        );
        let second_59 = hex.replacen("3630323531", "3539323531", 1);
        let prepare = Prepare::try_from(buffer(&second_59)).unwrap();
        assert_eq!(prepare.amount(), 1);
        assert_eq!(prepare.expires_at(), time("2000-05-31T16:01:59.251Z"));
        assert_eq!(
            prepare.execution_condition(),
            &std::array::from_fn(|i| i as u8)
        );
        assert_eq!(prepare.destination(), "test.a");
        assert!(prepare.data().is_empty());
    }

    #[test]
    fn fulfill_with_inner_trailing_bytes_is_rejected() {
        // Proves md §2 reject_try_from_data_with_trailing_bytes: 7 junk bytes after empty data fail.
        let hex =
            "0d28288801ffffffffffffffffffffa4ff0e0d88888801880800eeeeee000100000000005d000e282828";
        assert_eq!(
            Fulfill::try_from(buffer(hex)).unwrap_err(),
            ParseError::InnerTrailingBytes { count: 7 }
        );
    }

    #[test]
    fn max_packet_amount_details_vector_decodes_and_encodes() {
        // Proves md §2 MaxPacketAmountDetails: received 197121, max 394500, and its 16-byte encoding.
        let data = hex::decode("00000000000302010000000000060504").unwrap();
        let details = MaxPacketAmountDetails::from_bytes(&data).unwrap();
        assert_eq!(
            details,
            MaxPacketAmountDetails {
                amount_received: 197_121,
                max_amount: 394_500
            }
        );
        assert_eq!(details.to_bytes().to_vec(), data);
        assert_eq!(
            MaxPacketAmountDetails::from_bytes(&data[..15]),
            Err(ParseError::UnexpectedEnd {
                field: Field::MaxPacketAmountDetails,
                needed: 8,
                available: 7
            })
        );
        assert_eq!(
            MaxPacketAmountDetails::from_bytes(&[data.as_slice(), &[0]].concat()),
            Err(ParseError::InnerTrailingBytes { count: 1 })
        );
    }

    #[test]
    fn benchmark_packets_parse_and_rebuild_exactly() {
        // Proves the md §3 packets decode to their listed fields and the builders reproduce them.
        let data = hex::decode(BENCH_DATA_HEX).unwrap();
        let prepare_condition =
            condition("74e1136dc71c9e5f283bec83461cbf1261c4014f72d48f8dd65453a0b84e7de1");
        let prepare = Prepare::try_from(buffer(BENCH_PREPARE_HEX)).unwrap();
        assert_eq!(prepare.as_bytes().len(), 106);
        assert_eq!(prepare.expires_at(), time("2017-12-23T01:21:40.549Z"));
        let built = PrepareBuilder {
            amount: 107,
            expires_at: time("2017-12-23T01:21:40.549Z"),
            execution_condition: &prepare_condition,
            destination: address("example.alice"),
            data: &data,
        }
        .build()
        .unwrap();
        assert_eq!(built, prepare);

        let fulfill = Fulfill::try_from(buffer(BENCH_FULFILL_HEX)).unwrap();
        assert_eq!(fulfill.as_bytes().len(), 67);
        let built = FulfillBuilder {
            fulfillment: &condition(CONDITION_HEX),
            data: &data,
        }
        .build()
        .unwrap();
        assert_eq!(built, fulfill);

        let reject = Reject::try_from(buffer(BENCH_REJECT_HEX)).unwrap();
        assert_eq!(reject.as_bytes().len(), 67);
        let built = RejectBuilder {
            code: ErrorCode::F99_APPLICATION_ERROR,
            triggered_by: Some(address("example.connector")),
            message: b"Some error",
            data: &data,
        }
        .build()
        .unwrap();
        assert_eq!(built, reject);
    }

    #[test]
    fn ccp_peer_protocol_prepares_parse_and_round_trip() {
        // Proves the md §4 CCP Prepares parse with the peer-protocol condition and keep their bytes.
        for (hex, length, destination, data_length) in CCP_PREPARES {
            let prepare = Prepare::try_from(buffer(hex)).unwrap();
            assert_eq!(prepare.as_bytes().len(), length);
            assert_eq!(prepare.destination(), destination);
            assert_eq!(prepare.destination().scheme(), "peer");
            assert_eq!(prepare.data().len(), data_length);
            assert_eq!(prepare.amount(), 0);
            assert_eq!(prepare.expires_at(), time("2015-06-16T00:01:00.000Z"));
            assert_eq!(
                prepare.execution_condition(),
                &ildcp::PEER_PROTOCOL_CONDITION
            );
            let rebuilt = PrepareBuilder {
                amount: prepare.amount(),
                expires_at: prepare.expires_at(),
                execution_condition: prepare.execution_condition(),
                destination: prepare.destination(),
                data: prepare.data(),
            }
            .build()
            .unwrap();
            assert_eq!(rebuilt, prepare);
        }
    }

    #[test]
    fn interledgerjs_valid_vectors_parse_round_trip_and_rebuild() {
        // Proves every valid vector of ilp-packet.json decodes to its fields and the builders reproduce it.
        let json: Value = serde_json::from_str(PACKET_VECTORS).unwrap();
        let vectors = json["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 3);
        for vector in vectors {
            let hex = vector["hex"].as_str().unwrap();
            let fields = &vector["fields"];
            let fields_hex = &vector["fields_hex"];
            let bytes_of = |name: &str| hex::decode(fields_hex[name].as_str().unwrap()).unwrap();
            let packet = Packet::try_from(buffer(hex)).unwrap();
            assert_eq!(
                u64::from(packet.packet_type().as_u8()),
                vector["type_id"].as_u64().unwrap()
            );
            assert_eq!(packet.as_bytes(), &buffer(hex)[..]);
            let rebuilt = match &packet {
                Packet::Prepare(prepare) => {
                    assert_eq!(
                        prepare.amount().to_string(),
                        fields["amount"].as_str().unwrap()
                    );
                    assert_eq!(
                        prepare.expires_at(),
                        time(fields["expiresAt"].as_str().unwrap())
                    );
                    assert_eq!(
                        &prepare.expires_at_digits()[..],
                        fields_hex["expiresAt_wire_ascii"]
                            .as_str()
                            .unwrap()
                            .as_bytes()
                    );
                    assert_eq!(
                        &prepare.execution_condition()[..],
                        bytes_of("executionCondition")
                    );
                    assert_eq!(
                        prepare.destination(),
                        fields["destination"].as_str().unwrap()
                    );
                    assert_eq!(prepare.data(), bytes_of("data"));
                    PrepareBuilder {
                        amount: fields["amount"].as_str().unwrap().parse().unwrap(),
                        expires_at: time(fields["expiresAt"].as_str().unwrap()),
                        execution_condition: &bytes_of("executionCondition").try_into().unwrap(),
                        destination: address(fields["destination"].as_str().unwrap()),
                        data: &bytes_of("data"),
                    }
                    .build()
                    .map(Packet::from)
                }
                Packet::Fulfill(fulfill) => {
                    assert_eq!(&fulfill.fulfillment()[..], bytes_of("fulfillment"));
                    assert_eq!(fulfill.data(), bytes_of("data"));
                    FulfillBuilder {
                        fulfillment: &bytes_of("fulfillment").try_into().unwrap(),
                        data: &bytes_of("data"),
                    }
                    .build()
                    .map(Packet::from)
                }
                Packet::Reject(reject) => {
                    let code: ErrorCode = fields["code"].as_str().unwrap().parse().unwrap();
                    assert_eq!(reject.code(), code);
                    assert_eq!(reject.code(), ErrorCode::F01_INVALID_PACKET);
                    assert_eq!(
                        reject.triggered_by(),
                        Some(address(fields["triggeredBy"].as_str().unwrap()))
                    );
                    assert_eq!(reject.message_str(), fields["message"].as_str().unwrap());
                    assert_eq!(reject.message(), bytes_of("message_utf8_hex"));
                    assert_eq!(reject.data(), bytes_of("data"));
                    RejectBuilder {
                        code,
                        triggered_by: Some(address(fields["triggeredBy"].as_str().unwrap())),
                        message: fields["message"].as_str().unwrap().as_bytes(),
                        data: &bytes_of("data"),
                    }
                    .build()
                    .map(Packet::from)
                }
            };
            assert_eq!(rebuilt.unwrap(), packet, "{}", vector["name"]);
        }
    }

    #[test]
    fn interledgerjs_invalid_vectors_fail_with_their_errors() {
        // Proves the two invalid vectors of ilp-packet.json fail: '!' in the destination, and a wrong type.
        let json: Value = serde_json::from_str(PACKET_VECTORS).unwrap();
        let invalid = json["invalid"].as_array().unwrap();
        assert_eq!(
            Packet::try_from(buffer(invalid[0]["hex"].as_str().unwrap())).unwrap_err(),
            ParseError::InvalidAddress {
                field: Field::Destination,
                source: AddressError::InvalidCharacter {
                    byte: b'!',
                    offset: 13
                },
            }
        );
        assert_eq!(invalid[1]["decode_as"], "ilp_prepare");
        let error = Prepare::try_from(buffer(invalid[1]["hex"].as_str().unwrap())).unwrap_err();
        assert_eq!(
            error,
            ParseError::WrongPacketType {
                expected: PacketType::Prepare,
                actual: 13
            }
        );
        assert_eq!(
            error.to_string(),
            "packet has incorrect type 13, expected Prepare (12)"
        );
    }

    #[test]
    fn non_canonical_length_prefixes_in_packets_are_rejected() {
        // Proves `81 41` for a 65-byte content and a padded data length both fail as non-canonical.
        let long_form = BENCH_FULFILL_HEX.replacen("0d41", "0d8141", 1);
        assert_eq!(
            Fulfill::try_from(buffer(&long_form)).unwrap_err(),
            ParseError::NonCanonicalLength {
                field: Field::Content,
                length: 0x41
            }
        );
        // Data prefix `20` (32) rewritten as `81 20`, content length adjusted to 0x42.
        let padded_data = BENCH_FULFILL_HEX
            .replacen("0d41", "0d42", 1)
            .replacen("4a205d", "4a81205d", 1);
        assert_eq!(
            Fulfill::try_from(buffer(&padded_data)).unwrap_err(),
            ParseError::NonCanonicalLength {
                field: Field::Data,
                length: 0x20
            }
        );
    }

    #[test]
    fn truncated_and_overrunning_packets_are_rejected() {
        // Proves a cut packet overruns its content length and an inner length past the content fails.
        let whole = buffer(PREPARE_HEX);
        assert_eq!(
            Prepare::try_from(BytesMut::from(&whole[..300])).unwrap_err(),
            ParseError::LengthOverrun {
                field: Field::Content,
                declared: 331,
                available: 296
            }
        );
        assert_eq!(
            Prepare::try_from(BytesMut::from(&whole[..2])).unwrap_err(),
            ParseError::UnexpectedEnd {
                field: Field::Content,
                needed: 2,
                available: 0
            }
        );
        // Destination length byte (offset 59 of the 106-byte Prepare) raised from 13 to 0x7f.
        assert_eq!(
            Prepare::try_from(with_byte(BENCH_PREPARE_HEX, 59, 0x7f)).unwrap_err(),
            ParseError::LengthOverrun {
                field: Field::Destination,
                declared: 0x7f,
                available: 46
            }
        );
        let too_short = buffer("0c050000000000");
        assert_eq!(
            Prepare::try_from(too_short).unwrap_err(),
            ParseError::UnexpectedEnd {
                field: Field::Amount,
                needed: 8,
                available: 5
            }
        );
        let data_overrun = BENCH_FULFILL_HEX.replacen("4a205d", "4a215d", 1);
        assert_eq!(
            Fulfill::try_from(buffer(&data_overrun)).unwrap_err(),
            ParseError::LengthOverrun {
                field: Field::Data,
                declared: 33,
                available: 32
            }
        );
    }

    #[test]
    fn data_limit_is_32767_bytes_on_parse_and_build() {
        // Proves data of 32767 bytes round-trips and 32768 fails both the parser and the builders.
        let condition = [7; 32];
        let largest = vec![0xab; MAX_DATA_BYTES];
        let prepare = PrepareBuilder {
            data: &largest,
            ..fixture_prepare_builder(&condition, &[])
        }
        .build()
        .unwrap();
        let reparsed = Prepare::try_from(prepare.clone().into_bytes()).unwrap();
        assert_eq!(reparsed.data().len(), MAX_DATA_BYTES);
        assert_eq!(reparsed, prepare);

        let too_large = vec![0xab; MAX_DATA_BYTES + 1];
        let expected = BuildError::DataTooLong {
            length: MAX_DATA_BYTES + 1,
        };
        assert_eq!(
            PrepareBuilder {
                data: &too_large,
                ..fixture_prepare_builder(&condition, &[])
            }
            .build(),
            Err(expected)
        );
        assert_eq!(
            FulfillBuilder {
                fulfillment: &condition,
                data: &too_large
            }
            .build(),
            Err(expected)
        );
        let reject = RejectBuilder {
            code: ErrorCode::T00_INTERNAL_ERROR,
            triggered_by: None,
            message: b"",
            data: &too_large,
        };
        assert_eq!(reject.build(), Err(expected));

        // Hand-encode a Fulfill with 32768 bytes of data: the parser refuses it.
        let content_length = FULFILLMENT_BYTES + oer::var_octet_string_len(too_large.len());
        let mut bytes = packet_buffer(PacketType::Fulfill, content_length);
        bytes.put_slice(&condition);
        oer::put_var_octet_string(&mut bytes, &too_large);
        assert_eq!(
            Fulfill::try_from(bytes).unwrap_err(),
            ParseError::DataTooLong {
                length: MAX_DATA_BYTES + 1
            }
        );
    }

    #[test]
    fn destination_limit_is_1023_bytes() {
        // Proves a 1023-byte destination parses and a hand-encoded 1024-byte one fails as TooLong.
        let condition = [1; 32];
        let longest = format!("g.{}", "x".repeat(MAX_ADDRESS_BYTES - 2));
        let prepare = PrepareBuilder {
            destination: address(&longest),
            ..fixture_prepare_builder(&condition, b"hi")
        }
        .build()
        .unwrap();
        assert_eq!(
            Prepare::try_from(prepare.clone().into_bytes())
                .unwrap()
                .destination(),
            longest.as_str()
        );

        let too_long = format!("{longest}x");
        let content_length = AMOUNT_BYTES
            + TIMESTAMP_BYTES
            + CONDITION_BYTES
            + oer::var_octet_string_len(too_long.len())
            + oer::var_octet_string_len(0);
        let mut bytes = packet_buffer(PacketType::Prepare, content_length);
        bytes.put_u64(1);
        bytes.put_slice(b"20300101000000000");
        bytes.put_slice(&condition);
        oer::put_var_octet_string(&mut bytes, too_long.as_bytes());
        oer::put_var_octet_string(&mut bytes, b"");
        assert_eq!(
            Prepare::try_from(bytes).unwrap_err(),
            ParseError::InvalidAddress {
                field: Field::Destination,
                source: AddressError::TooLong { length: 1024 }
            }
        );
    }

    #[test]
    fn reject_triggered_by_may_be_empty_but_not_invalid() {
        // Proves an empty triggeredBy parses as None, and a non-empty invalid one is refused.
        let built = RejectBuilder {
            code: ErrorCode::T04_INSUFFICIENT_LIQUIDITY,
            triggered_by: None,
            message: b"",
            data: b"",
        }
        .build()
        .unwrap();
        assert_eq!(
            built.as_bytes(),
            &hex::decode("0e06543034000000").unwrap()[..]
        );
        let parsed = Reject::try_from(built.into_bytes()).unwrap();
        assert_eq!(parsed.triggered_by(), None);
        assert_eq!(parsed.code().class(), ErrorClass::Temporary);

        let bad = buffer("0e0a54303404706565720000");
        assert_eq!(
            Reject::try_from(bad).unwrap_err(),
            ParseError::InvalidAddress {
                field: Field::TriggeredBy,
                source: AddressError::MissingSegment
            }
        );
    }

    #[test]
    fn reject_message_may_be_any_bytes() {
        // Proves a non-UTF-8 message is kept byte for byte and message_str replaces it lossily.
        let message = [b'o', b'k', 0xff, 0xfe];
        let reject = RejectBuilder {
            code: ErrorCode::F00_BAD_REQUEST,
            triggered_by: Some(address("g.connector")),
            message: &message,
            data: b"",
        }
        .build()
        .unwrap();
        let parsed = Reject::try_from(reject.into_bytes()).unwrap();
        assert_eq!(parsed.message(), message);
        assert_eq!(parsed.message_str(), "ok\u{fffd}\u{fffd}");
    }

    #[test]
    fn packet_dispatches_on_the_type_byte() {
        // Proves Packet::try_from picks the right view for 12, 13 and 14 and into_bytes returns the input.
        for (hex, packet_type) in [
            (PREPARE_HEX, PacketType::Prepare),
            (FULFILL_HEX, PacketType::Fulfill),
            (REJECT_HEX, PacketType::Reject),
        ] {
            let packet = Packet::try_from(buffer(hex)).unwrap();
            assert_eq!(packet.packet_type(), packet_type);
            assert_eq!(BytesMut::from(packet), buffer(hex));
        }
    }

    #[test]
    fn parsing_keeps_the_buffer_and_accessors_point_into_it() {
        // Proves zero-copy parsing: the view owns the input allocation and fields are slices of it.
        let input = buffer(PREPARE_HEX);
        let start = input.as_ptr();
        let prepare = Prepare::try_from(input).unwrap();
        assert_eq!(prepare.as_bytes().as_ptr(), start);
        assert_eq!(
            prepare.execution_condition().as_ptr(),
            start.wrapping_add(29)
        );
        assert_eq!(
            prepare.destination().as_str().as_ptr(),
            start.wrapping_add(62)
        );
        assert_eq!(prepare.data().as_ptr(), start.wrapping_add(78));
        let data = prepare.into_data();
        assert_eq!(data.as_ptr(), start.wrapping_add(78));
    }

    #[test]
    fn builders_allocate_exactly_the_packet_size() {
        // Proves each builder's single allocation is exactly as large as the packet.
        let data = hex::decode(DATA_HEX).unwrap();
        let condition = condition(CONDITION_HEX);
        let packets: [BytesMut; 3] = [
            fixture_prepare_builder(&condition, &data)
                .build()
                .unwrap()
                .into_bytes(),
            FulfillBuilder {
                fulfillment: &condition,
                data: &data,
            }
            .build()
            .unwrap()
            .into_bytes(),
            RejectBuilder {
                code: ErrorCode::F99_APPLICATION_ERROR,
                triggered_by: Some(address("example.connector")),
                message: b"Some error",
                data: &data,
            }
            .build()
            .unwrap()
            .into_bytes(),
        ];
        for (packet, hex) in packets.iter().zip([PREPARE_HEX, FULFILL_HEX, REJECT_HEX]) {
            assert_eq!(&packet[..], &buffer(hex)[..]);
            assert_eq!(packet.capacity(), packet.len());
        }
    }

    #[test]
    fn builder_expiry_is_truncated_to_the_millisecond() {
        // Proves a built Prepare reports the expiry its digits hold, so a re-parse compares equal.
        let condition = [3; 32];
        let expires_at = time(FIXTURE_EXPIRES_AT) + Duration::from_micros(123);
        let prepare = PrepareBuilder {
            expires_at,
            ..fixture_prepare_builder(&condition, b"")
        }
        .build()
        .unwrap();
        assert_eq!(prepare.expires_at(), time(FIXTURE_EXPIRES_AT));
        assert_eq!(
            Prepare::try_from(prepare.clone().into_bytes())
                .unwrap()
                .expires_at(),
            prepare.expires_at()
        );
        assert!(format!("{prepare:?}").contains("destination: \"example.alice\""));
    }
}

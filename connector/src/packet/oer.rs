//! OER primitives used by ILPv4 (RFC 30): length prefixes, var-octet-strings, fixed
//! big-endian integers, and the 17-character `expiresAt` timestamp.
//!
//! Reading is strict: a length prefix must be in its shortest (canonical) form, so each
//! value has exactly one encoding and a parsed packet re-serializes byte for byte.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BufMut;

use super::error::{Field, ParseError, TimestampComponent};

/// Most length octets a long-form prefix may announce: lengths are read into a `u64`.
pub const MAX_LENGTH_PREFIX_OCTETS: u8 = 8;

/// Largest length that fits the one-byte short form.
pub const MAX_SHORT_FORM_LENGTH: usize = 0x7f;

/// Flag bit of the first prefix byte marking the long form (`0x80 | octets`).
const LONG_FORM_FLAG: u8 = 0x80;

/// Width of `expiresAt` on the wire: `YYYYMMDDHHMMSSmmm`, UTC.
pub const TIMESTAMP_BYTES: usize = 17;

/// Milliseconds in a (leap-second-free) day.
const MILLIS_PER_DAY: i64 = 86_400_000;

/// Earliest instant the wire format can hold: 0000-01-01T00:00:00.000Z, in Unix milliseconds.
const MIN_TIMESTAMP_MILLIS: i64 = days_from_civil(0, 1, 1) * MILLIS_PER_DAY;

/// Latest instant the wire format can hold: 9999-12-31T23:59:59.999Z, in Unix milliseconds.
const MAX_TIMESTAMP_MILLIS: i64 =
    days_from_civil(9999, 12, 31) * MILLIS_PER_DAY + MILLIS_PER_DAY - 1;

/// Bytes taken by the OER length prefix of a `length`-byte value.
pub const fn length_prefix_len(length: usize) -> usize {
    if length <= MAX_SHORT_FORM_LENGTH {
        1
    } else {
        1 + length_octets(length)
    }
}

/// Bytes taken by a var-octet-string holding `length` bytes (prefix plus value).
pub const fn var_octet_string_len(length: usize) -> usize {
    length_prefix_len(length) + length
}

/// Octets needed to write `length` big-endian without leading zeros.
const fn length_octets(length: usize) -> usize {
    let bits = usize::BITS - length.leading_zeros();
    bits.div_ceil(8) as usize
}

/// Appends the canonical OER length prefix of `length`.
pub fn put_length_prefix(buffer: &mut impl BufMut, length: usize) {
    if length <= MAX_SHORT_FORM_LENGTH {
        // Short form: the length itself, which is below 0x80 and so fits in a byte.
        buffer.put_u8(length as u8);
    } else {
        let octets = length_octets(length);
        // `octets` is at most size_of::<usize>(), well below 0x80.
        buffer.put_u8(LONG_FORM_FLAG | octets as u8);
        buffer.put_uint(length as u64, octets);
    }
}

/// Appends `value` as a var-octet-string (canonical length prefix, then the bytes).
pub fn put_var_octet_string(buffer: &mut impl BufMut, value: &[u8]) {
    put_length_prefix(buffer, value.len());
    buffer.put_slice(value);
}

/// A cursor over a byte slice that reads OER values and reports where it failed.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    /// Offset of the next byte to read, from the start of the slice.
    pub const fn position(&self) -> usize {
        self.position
    }

    /// Bytes not yet read.
    pub const fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// Reads `N` bytes as an array.
    pub fn read_array<const N: usize>(&mut self, field: Field) -> Result<&'a [u8; N], ParseError> {
        let rest = &self.bytes[self.position..];
        let array = rest.first_chunk::<N>().ok_or(ParseError::UnexpectedEnd {
            field,
            needed: N,
            available: rest.len(),
        })?;
        self.position += N;
        Ok(array)
    }

    /// Reads one byte.
    pub fn read_u8(&mut self, field: Field) -> Result<u8, ParseError> {
        let [byte] = *self.read_array::<1>(field)?;
        Ok(byte)
    }

    /// Reads a fixed-width big-endian `u64`.
    pub fn read_u64(&mut self, field: Field) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(*self.read_array::<8>(field)?))
    }

    /// Reads a canonical OER length prefix and checks that that many bytes remain.
    pub fn read_length(&mut self, field: Field) -> Result<usize, ParseError> {
        let first = self.read_u8(field)?;
        let length = if first & LONG_FORM_FLAG == 0 {
            u64::from(first)
        } else {
            let octets = first & !LONG_FORM_FLAG;
            if octets == 0 || octets > MAX_LENGTH_PREFIX_OCTETS {
                return Err(ParseError::InvalidLengthPrefix { field, octets });
            }
            let octets = usize::from(octets);
            let rest = &self.bytes[self.position..];
            let Some(length_bytes) = rest.get(..octets) else {
                return Err(ParseError::UnexpectedEnd {
                    field,
                    needed: octets,
                    available: rest.len(),
                });
            };
            self.position += octets;
            let length = length_bytes
                .iter()
                .fold(0u64, |length, &byte| (length << 8) | u64::from(byte));
            // Canonical means shortest: no leading zero octet, and no long form for
            // lengths the short form can hold.
            if length_bytes.first() == Some(&0) || length <= MAX_SHORT_FORM_LENGTH as u64 {
                return Err(ParseError::NonCanonicalLength { field, length });
            }
            length
        };
        let available = self.remaining();
        match usize::try_from(length) {
            Ok(length) if length <= available => Ok(length),
            _ => Err(ParseError::LengthOverrun {
                field,
                declared: length,
                available,
            }),
        }
    }

    /// Reads a var-octet-string and returns where its value lies in the slice.
    pub fn read_var_octet_string_range(
        &mut self,
        field: Field,
    ) -> Result<Range<usize>, ParseError> {
        let length = self.read_length(field)?;
        let start = self.position;
        self.position += length;
        Ok(start..self.position)
    }

    /// Reads a var-octet-string and returns its value.
    pub fn read_var_octet_string(&mut self, field: Field) -> Result<&'a [u8], ParseError> {
        let range = self.read_var_octet_string_range(field)?;
        Ok(&self.bytes[range])
    }

    /// Succeeds if every byte was read; otherwise reports the inner trailing bytes.
    pub const fn finish(&self) -> Result<(), ParseError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(ParseError::InnerTrailingBytes { count }),
        }
    }
}

/// Decodes and validates a wire timestamp `YYYYMMDDHHMMSSmmm` (UTC).
///
/// Every byte must be a digit and every component within its calendar range (day checked
/// against month and leap year; second 60 rejected), so the decoded instant encodes back
/// to the same 17 bytes. Plain integer arithmetic, no allocation.
pub fn decode_timestamp(digits: &[u8; TIMESTAMP_BYTES]) -> Result<SystemTime, ParseError> {
    if let Some(index) = digits.iter().position(|byte| !byte.is_ascii_digit()) {
        return Err(ParseError::TimestampNotNumeric { index });
    }
    let number = |range: Range<usize>| {
        digits[range]
            .iter()
            .fold(0u32, |value, &digit| value * 10 + u32::from(digit - b'0'))
    };
    let year = number(0..4);
    let month = number(4..6);
    let day = number(6..8);
    let hour = number(8..10);
    let minute = number(10..12);
    let second = number(12..14);
    let millisecond = number(14..17);

    let out_of_range = |component, value| ParseError::TimestampOutOfRange { component, value };
    if !(1..=12).contains(&month) {
        return Err(out_of_range(TimestampComponent::Month, month));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(out_of_range(TimestampComponent::Day, day));
    }
    if hour > 23 {
        return Err(out_of_range(TimestampComponent::Hour, hour));
    }
    if minute > 59 {
        return Err(out_of_range(TimestampComponent::Minute, minute));
    }
    if second > 59 {
        return Err(out_of_range(TimestampComponent::Second, second));
    }

    let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
    let millis_of_day = ((i64::from(hour) * 60 + i64::from(minute)) * 60 + i64::from(second))
        * 1000
        + i64::from(millisecond);
    system_time_from_unix_millis(days * MILLIS_PER_DAY + millis_of_day)
        .ok_or(ParseError::TimestampUnrepresentable)
}

/// Encodes `time` as a wire timestamp, truncated to the millisecond and clamped to the
/// range the format can hold (years 0000..=9999).
pub fn encode_timestamp(time: SystemTime) -> [u8; TIMESTAMP_BYTES] {
    encode_timestamp_normalized(time).0
}

/// Encodes `time` (see [`encode_timestamp`]) and also returns the instant the digits
/// stand for, i.e. `time` truncated to the millisecond and clamped.
pub(crate) fn encode_timestamp_normalized(time: SystemTime) -> ([u8; TIMESTAMP_BYTES], SystemTime) {
    let millis = unix_millis(time).clamp(MIN_TIMESTAMP_MILLIS, MAX_TIMESTAMP_MILLIS);
    let (year, month, day) = civil_from_days(millis.div_euclid(MILLIS_PER_DAY));
    let millis_of_day = millis.rem_euclid(MILLIS_PER_DAY);
    let fields = [
        (year, 4),
        (month, 2),
        (day, 2),
        (millis_of_day / 3_600_000, 2),
        (millis_of_day / 60_000 % 60, 2),
        (millis_of_day / 1000 % 60, 2),
        (millis_of_day % 1000, 3),
    ];
    let mut digits = [b'0'; TIMESTAMP_BYTES];
    let mut end = 0;
    for (value, width) in fields {
        end += width;
        let mut value = value;
        for digit in digits[end - width..end].iter_mut().rev() {
            // `value % 10` is in 0..=9 because every component here is non-negative.
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    // The clamped instant lies between `time` and the epoch (or is `time` truncated), so
    // it is representable whenever `time` is; the fallback is never taken.
    let normalized = system_time_from_unix_millis(millis).unwrap_or(time);
    (digits, normalized)
}

/// Milliseconds since the Unix epoch, rounded towards negative infinity.
fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let partial = u128::from(before.subsec_nanos() % 1_000_000 != 0);
            i64::try_from(before.as_millis() + partial).map_or(i64::MIN, |millis| -millis)
        }
    }
}

/// The instant `millis` milliseconds after (or before, if negative) the Unix epoch.
fn system_time_from_unix_millis(millis: i64) -> Option<SystemTime> {
    let offset = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
}

/// Whether `year` is a leap year in the proleptic Gregorian calendar.
const fn is_leap_year(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Days in `month` (1..=12) of `year`.
const fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's algorithm).
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date `days` days after 1970-01-01, as (year, month, day).
const fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use chrono::{DateTime, Utc};

    fn time(rfc3339: &str) -> SystemTime {
        SystemTime::from(
            DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .with_timezone(&Utc),
        )
    }

    fn digits(text: &str) -> [u8; TIMESTAMP_BYTES] {
        text.as_bytes().try_into().unwrap()
    }

    #[test]
    fn length_prefix_is_shortest_form_at_every_boundary() {
        // Proves the writer uses the canonical form and the reader reads it back.
        let cases: [(usize, &[u8]); 8] = [
            (0, &[0x00]),
            (5, &[0x05]),
            (127, &[0x7f]),
            (128, &[0x81, 0x80]),
            (255, &[0x81, 0xff]),
            (256, &[0x82, 0x01, 0x00]),
            (331, &[0x82, 0x01, 0x4b]),
            (65_536, &[0x83, 0x01, 0x00, 0x00]),
        ];
        for (length, expected) in cases {
            let mut buffer = BytesMut::new();
            put_length_prefix(&mut buffer, length);
            assert_eq!(&buffer[..], expected, "length {length}");
            assert_eq!(length_prefix_len(length), expected.len(), "length {length}");
            buffer.resize(buffer.len() + length, 0);
            let mut reader = Reader::new(&buffer);
            assert_eq!(reader.read_length(Field::Data), Ok(length));
        }
    }

    #[test]
    fn non_canonical_length_prefixes_are_rejected() {
        // Proves `81 05`, `82 00 85` and `81 00` (long forms of short or padded lengths) fail.
        let padded = [
            &[0x81, 0x05][..],
            &[0x82, 0x00, 0x85],
            &[0x81, 0x00],
            &[0x81, 0x7f],
        ];
        let lengths = [5, 0x85, 0, 0x7f];
        for (bytes, length) in padded.into_iter().zip(lengths) {
            let mut buffer = bytes.to_vec();
            buffer.resize(bytes.len() + 200, 0);
            assert_eq!(
                Reader::new(&buffer).read_length(Field::Destination),
                Err(ParseError::NonCanonicalLength {
                    field: Field::Destination,
                    length
                })
            );
        }
    }

    #[test]
    fn indefinite_and_oversized_length_prefixes_are_rejected() {
        // Proves `0x80` (indefinite form) and more than 8 length octets are refused.
        assert_eq!(
            Reader::new(&[0x80, 0, 0]).read_length(Field::Data),
            Err(ParseError::InvalidLengthPrefix {
                field: Field::Data,
                octets: 0
            })
        );
        assert_eq!(
            Reader::new(&[0x89; 12]).read_length(Field::Data),
            Err(ParseError::InvalidLengthPrefix {
                field: Field::Data,
                octets: 9
            })
        );
    }

    #[test]
    fn lengths_that_overrun_or_truncated_prefixes_are_rejected() {
        // Proves a declared length past the end and a cut-off long-form prefix both fail.
        assert_eq!(
            Reader::new(&[0x05, 1, 2]).read_length(Field::Message),
            Err(ParseError::LengthOverrun {
                field: Field::Message,
                declared: 5,
                available: 2
            })
        );
        assert_eq!(
            Reader::new(&[0x82, 0x01]).read_length(Field::Message),
            Err(ParseError::UnexpectedEnd {
                field: Field::Message,
                needed: 2,
                available: 1
            })
        );
        assert_eq!(
            Reader::new(&[0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .read_length(Field::Data),
            Err(ParseError::LengthOverrun {
                field: Field::Data,
                declared: u64::MAX,
                available: 0
            })
        );
        assert_eq!(
            Reader::new(&[]).read_length(Field::Data),
            Err(ParseError::UnexpectedEnd {
                field: Field::Data,
                needed: 1,
                available: 0
            })
        );
    }

    #[test]
    fn var_octet_string_and_u64_round_trip() {
        // Proves the writers and readers agree on var-octet-strings and fixed u64.
        let mut buffer = BytesMut::new();
        buffer.put_u64(0x0102_0304_0506_0708);
        put_var_octet_string(&mut buffer, b"hello");
        put_var_octet_string(&mut buffer, &[7; 300]);
        let mut reader = Reader::new(&buffer);
        assert_eq!(reader.read_u64(Field::Amount), Ok(0x0102_0304_0506_0708));
        assert_eq!(
            reader.read_var_octet_string(Field::Message),
            Ok(&b"hello"[..])
        );
        assert_eq!(reader.read_var_octet_string(Field::Data), Ok(&[7; 300][..]));
        assert_eq!(reader.finish(), Ok(()));
        assert_eq!(var_octet_string_len(300), 303);
    }

    #[test]
    fn timestamp_decodes_to_the_instant_it_names() {
        // Proves decoding matches chrono for fixture timestamps and calendar edges.
        let cases = [
            ("20180607204842483", "2018-06-07T20:48:42.483Z"),
            ("20171223012140549", "2017-12-23T01:21:40.549Z"),
            ("19700101000000000", "1970-01-01T00:00:00.000Z"),
            ("19691231235959999", "1969-12-31T23:59:59.999Z"),
            ("20000229120000000", "2000-02-29T12:00:00.000Z"),
            ("20240229235959999", "2024-02-29T23:59:59.999Z"),
            ("99991231235959999", "9999-12-31T23:59:59.999Z"),
            ("00000101000000000", "0000-01-01T00:00:00.000Z"),
            ("16000229000000000", "1600-02-29T00:00:00.000Z"),
        ];
        for (wire, rfc3339) in cases {
            assert_eq!(decode_timestamp(&digits(wire)), Ok(time(rfc3339)), "{wire}");
            assert_eq!(&encode_timestamp(time(rfc3339)), wire.as_bytes(), "{wire}");
        }
    }

    #[test]
    fn timestamp_components_out_of_range_are_rejected() {
        // Proves month, day (incl. leap years), hour, minute and second 60 are range-checked.
        use TimestampComponent::*;
        let cases = [
            ("20180007000000000", Month, 0),
            ("20181307000000000", Month, 13),
            ("20180600000000000", Day, 0),
            ("20180631000000000", Day, 31),
            ("20190229000000000", Day, 29),
            ("19000229000000000", Day, 29),
            ("20180132000000000", Day, 32),
            ("20180607240000000", Hour, 24),
            ("20180607236000000", Minute, 60),
            ("20000531160160251", Second, 60),
        ];
        for (wire, component, value) in cases {
            assert_eq!(
                decode_timestamp(&digits(wire)),
                Err(ParseError::TimestampOutOfRange { component, value }),
                "{wire}"
            );
        }
    }

    #[test]
    fn timestamp_with_non_digit_is_rejected_at_its_index() {
        // Proves any non-digit byte (tab, sign, letter, space) is reported with its position.
        for index in 0..TIMESTAMP_BYTES {
            for bad in [0x09, b'-', b'a', b' ', b'/', b':'] {
                let mut wire = digits("20180607204842483");
                wire[index] = bad;
                assert_eq!(
                    decode_timestamp(&wire),
                    Err(ParseError::TimestampNotNumeric { index })
                );
            }
        }
    }

    #[test]
    fn encoding_truncates_to_milliseconds_and_clamps_to_four_digit_years() {
        // Proves sub-millisecond parts are dropped (also before 1970) and out-of-range years clamp.
        let base = time("2018-06-07T20:48:42.483Z");
        assert_eq!(
            &encode_timestamp(base + Duration::from_micros(999)),
            b"20180607204842483"
        );
        let before_epoch = UNIX_EPOCH - Duration::from_micros(1);
        assert_eq!(&encode_timestamp(before_epoch), b"19691231235959999");
        let far_future = time("9999-12-31T23:59:59.999Z") + Duration::from_secs(86_400 * 400);
        assert_eq!(&encode_timestamp(far_future), b"99991231235959999");
        let far_past = time("0000-01-01T00:00:00.000Z") - Duration::from_secs(86_400);
        assert_eq!(&encode_timestamp(far_past), b"00000101000000000");
        let (_, normalized) = encode_timestamp_normalized(base + Duration::from_micros(999));
        assert_eq!(normalized, base);
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        // Proves civil_from_days and days_from_civil are inverses across a full 400-year cycle.
        let start = days_from_civil(1900, 1, 1);
        let mut expected = (1900, 1, 1);
        for days in start..start + 146_097 {
            assert_eq!(civil_from_days(days), expected);
            assert_eq!(days_from_civil(expected.0, expected.1, expected.2), days);
            let (year, month, day) = expected;
            expected = if day < i64::from(days_in_month(year as u32, month as u32)) {
                (year, month, day + 1)
            } else if month < 12 {
                (year, month + 1, 1)
            } else {
                (year + 1, 1, 1)
            };
        }
    }
}

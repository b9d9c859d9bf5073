//! ILP error codes (RFC 27 §"Error Codes"): three alphanumeric IA5 characters whose
//! first letter gives the class (F final, T temporary, R relative).

use std::fmt;
use std::str::FromStr;

/// Bytes in an error code on the wire.
pub const ERROR_CODE_BYTES: usize = 3;

/// How a sender should react to a Reject, from the first letter of its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// `F`: do not retry the same packet unchanged.
    Final,
    /// `T`: retry later, the condition may pass.
    Temporary,
    /// `R`: retry with different parameters (more amount or time), not forever.
    Relative,
    /// Any other first character; RFC 27 defines none, but a relay must carry it through.
    Unknown,
}

/// Why three bytes are not an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ErrorCodeError {
    /// A byte is not IA5 (7-bit ASCII).
    #[error("Reject.ErrorCode was not IA5String: byte {byte:#04x} at index {index}")]
    NotIa5 {
        /// The byte.
        byte: u8,
        /// Its index in the code.
        index: usize,
    },
    /// A byte is IA5 but not an ASCII letter or digit.
    #[error("Reject.ErrorCode is not alphanumeric: byte {byte:#04x} at index {index}")]
    NotAlphanumeric {
        /// The byte.
        byte: u8,
        /// Its index in the code.
        index: usize,
    },
    /// The text is not exactly three bytes long.
    #[error("error code must be 3 characters, got {length} bytes")]
    WrongLength {
        /// Its length in bytes.
        length: usize,
    },
}

/// An ILP error code such as `F02`; constants for every code RFC 27 defines.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode([u8; ERROR_CODE_BYTES]);

impl ErrorCode {
    /// F00 Bad Request: generic sender error.
    pub const F00_BAD_REQUEST: Self = Self::from_static(*b"F00");
    /// F01 Invalid Packet: the packet is syntactically invalid.
    pub const F01_INVALID_PACKET: Self = Self::from_static(*b"F01");
    /// F02 Unreachable: no route to the destination.
    pub const F02_UNREACHABLE: Self = Self::from_static(*b"F02");
    /// F03 Invalid Amount: amount too precise or impossible.
    pub const F03_INVALID_AMOUNT: Self = Self::from_static(*b"F03");
    /// F04 Insufficient Destination Amount: receiver deems the amount too low.
    pub const F04_INSUFFICIENT_DESTINATION_AMOUNT: Self = Self::from_static(*b"F04");
    /// F05 Wrong Condition: receiver generated a different condition.
    pub const F05_WRONG_CONDITION: Self = Self::from_static(*b"F05");
    /// F06 Unexpected Payment: receiver was not expecting this payment.
    pub const F06_UNEXPECTED_PAYMENT: Self = Self::from_static(*b"F06");
    /// F07 Cannot Receive: a receiver constraint, e.g. above its maximum balance.
    pub const F07_CANNOT_RECEIVE: Self = Self::from_static(*b"F07");
    /// F08 Amount Too Large: above the connector's max packet amount.
    pub const F08_AMOUNT_TOO_LARGE: Self = Self::from_static(*b"F08");
    /// F99 Application Error (final), reserved for applications.
    pub const F99_APPLICATION_ERROR: Self = Self::from_static(*b"F99");
    /// T00 Internal Error: unexpected exception.
    pub const T00_INTERNAL_ERROR: Self = Self::from_static(*b"T00");
    /// T01 Peer Unreachable: route exists but the next hop cannot be reached.
    pub const T01_PEER_UNREACHABLE: Self = Self::from_static(*b"T01");
    /// T02 Peer Busy: the next hop is overloaded.
    pub const T02_PEER_BUSY: Self = Self::from_static(*b"T02");
    /// T03 Connector Busy: this connector is overloaded.
    pub const T03_CONNECTOR_BUSY: Self = Self::from_static(*b"T03");
    /// T04 Insufficient Liquidity: not enough balance or bandwidth.
    pub const T04_INSUFFICIENT_LIQUIDITY: Self = Self::from_static(*b"T04");
    /// T05 Rate Limited: too many packets.
    pub const T05_RATE_LIMITED: Self = Self::from_static(*b"T05");
    /// T99 Application Error (temporary), reserved for applications.
    pub const T99_APPLICATION_ERROR: Self = Self::from_static(*b"T99");
    /// R00 Transfer Timed Out: the next hop did not answer before expiry.
    pub const R00_TRANSFER_TIMED_OUT: Self = Self::from_static(*b"R00");
    /// R01 Insufficient Source Amount: amount fell to zero or below along the path.
    pub const R01_INSUFFICIENT_SOURCE_AMOUNT: Self = Self::from_static(*b"R01");
    /// R02 Insufficient Timeout: expiry too short for the safety margin.
    pub const R02_INSUFFICIENT_TIMEOUT: Self = Self::from_static(*b"R02");
    /// R99 Application Error (relative), reserved for applications.
    pub const R99_APPLICATION_ERROR: Self = Self::from_static(*b"R99");

    /// Every code RFC 27 defines, in RFC order.
    pub const ALL: [Self; 21] = [
        Self::F00_BAD_REQUEST,
        Self::F01_INVALID_PACKET,
        Self::F02_UNREACHABLE,
        Self::F03_INVALID_AMOUNT,
        Self::F04_INSUFFICIENT_DESTINATION_AMOUNT,
        Self::F05_WRONG_CONDITION,
        Self::F06_UNEXPECTED_PAYMENT,
        Self::F07_CANNOT_RECEIVE,
        Self::F08_AMOUNT_TOO_LARGE,
        Self::F99_APPLICATION_ERROR,
        Self::T00_INTERNAL_ERROR,
        Self::T01_PEER_UNREACHABLE,
        Self::T02_PEER_BUSY,
        Self::T03_CONNECTOR_BUSY,
        Self::T04_INSUFFICIENT_LIQUIDITY,
        Self::T05_RATE_LIMITED,
        Self::T99_APPLICATION_ERROR,
        Self::R00_TRANSFER_TIMED_OUT,
        Self::R01_INSUFFICIENT_SOURCE_AMOUNT,
        Self::R02_INSUFFICIENT_TIMEOUT,
        Self::R99_APPLICATION_ERROR,
    ];

    /// Validates three bytes: each must be an IA5 letter or digit.
    pub const fn new(bytes: [u8; ERROR_CODE_BYTES]) -> Result<Self, ErrorCodeError> {
        let mut index = 0;
        while index < ERROR_CODE_BYTES {
            let byte = bytes[index];
            if !byte.is_ascii() {
                return Err(ErrorCodeError::NotIa5 { byte, index });
            }
            if !byte.is_ascii_alphanumeric() {
                return Err(ErrorCodeError::NotAlphanumeric { byte, index });
            }
            index += 1;
        }
        Ok(Self(bytes))
    }

    /// For the constants above: an invalid literal fails at compile time.
    const fn from_static(bytes: [u8; ERROR_CODE_BYTES]) -> Self {
        match Self::new(bytes) {
            Ok(code) => code,
            Err(_) => panic!("error code constants are alphanumeric IA5"),
        }
    }

    /// The class, from the first letter.
    pub const fn class(&self) -> ErrorClass {
        match self.0[0] {
            b'F' => ErrorClass::Final,
            b'T' => ErrorClass::Temporary,
            b'R' => ErrorClass::Relative,
            _ => ErrorClass::Unknown,
        }
    }

    /// The three bytes as on the wire.
    pub const fn as_bytes(&self) -> &[u8; ERROR_CODE_BYTES] {
        &self.0
    }

    /// The code as text, e.g. `"F02"`.
    pub fn as_str(&self) -> &str {
        match std::str::from_utf8(&self.0) {
            Ok(code) => code,
            Err(_) => unreachable!("ErrorCode::new admits ASCII only"),
        }
    }

    /// The code as a metric label: one of RFC 27's codes, or `"other"` for any code it does
    /// not define, so a peer's Rejects cannot multiply the label's values.
    pub const fn metric_label(&self) -> &'static str {
        match &self.0 {
            b"F00" => "F00",
            b"F01" => "F01",
            b"F02" => "F02",
            b"F03" => "F03",
            b"F04" => "F04",
            b"F05" => "F05",
            b"F06" => "F06",
            b"F07" => "F07",
            b"F08" => "F08",
            b"F99" => "F99",
            b"T00" => "T00",
            b"T01" => "T01",
            b"T02" => "T02",
            b"T03" => "T03",
            b"T04" => "T04",
            b"T05" => "T05",
            b"T99" => "T99",
            b"R00" => "R00",
            b"R01" => "R01",
            b"R02" => "R02",
            b"R99" => "R99",
            _ => "other",
        }
    }

    /// The RFC 27 name (`"Unreachable"` for F02), or `None` for a code RFC 27 does not define.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match &self.0 {
            b"F00" => "Bad Request",
            b"F01" => "Invalid Packet",
            b"F02" => "Unreachable",
            b"F03" => "Invalid Amount",
            b"F04" => "Insufficient Destination Amount",
            b"F05" => "Wrong Condition",
            b"F06" => "Unexpected Payment",
            b"F07" => "Cannot Receive",
            b"F08" => "Amount Too Large",
            b"F99" | b"T99" | b"R99" => "Application Error",
            b"T00" => "Internal Error",
            b"T01" => "Peer Unreachable",
            b"T02" => "Peer Busy",
            b"T03" => "Connector Busy",
            b"T04" => "Insufficient Liquidity",
            b"T05" => "Rate Limited",
            b"R00" => "Transfer Timed Out",
            b"R01" => "Insufficient Source Amount",
            b"R02" => "Insufficient Timeout",
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCode({})", self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = ErrorCodeError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; ERROR_CODE_BYTES] = code
            .as_bytes()
            .try_into()
            .map_err(|_| ErrorCodeError::WrongLength { length: code.len() })?;
        Self::new(bytes)
    }
}

impl TryFrom<[u8; ERROR_CODE_BYTES]> for ErrorCode {
    type Error = ErrorCodeError;

    fn try_from(bytes: [u8; ERROR_CODE_BYTES]) -> Result<Self, Self::Error> {
        Self::new(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rfc_code_has_its_class_and_name() {
        // Proves the 21 constants spell their codes and map to the class of their first letter.
        let expected_text = [
            "F00", "F01", "F02", "F03", "F04", "F05", "F06", "F07", "F08", "F99", "T00", "T01",
            "T02", "T03", "T04", "T05", "T99", "R00", "R01", "R02", "R99",
        ];
        for (code, text) in ErrorCode::ALL.iter().zip(expected_text) {
            assert_eq!(code.as_str(), text);
            assert_eq!(code.to_string().parse::<ErrorCode>(), Ok(*code));
            assert!(code.name().is_some(), "{text}");
            let class = match text.as_bytes()[0] {
                b'F' => ErrorClass::Final,
                b'T' => ErrorClass::Temporary,
                _ => ErrorClass::Relative,
            };
            assert_eq!(code.class(), class, "{text}");
        }
        assert_eq!(ErrorCode::F02_UNREACHABLE.name(), Some("Unreachable"));
        assert_eq!(
            ErrorCode::T04_INSUFFICIENT_LIQUIDITY.class(),
            ErrorClass::Temporary
        );
        assert_eq!(
            ErrorCode::R00_TRANSFER_TIMED_OUT.class(),
            ErrorClass::Relative
        );
    }

    #[test]
    fn metric_labels_are_the_rfc_codes_or_other() {
        // Proves a peer cannot create label values: every defined code labels as itself,
        // any other well-formed code as "other".
        for code in ErrorCode::ALL {
            assert_eq!(code.metric_label(), code.as_str());
        }
        for text in ["F50", "T98", "R03", "Xzz", "F0a"] {
            if let Ok(code) = text.parse::<ErrorCode>() {
                assert_eq!(code.metric_label(), "other", "{text}");
            }
        }
    }

    #[test]
    fn unknown_but_well_formed_codes_are_kept() {
        // Proves a relay accepts codes RFC 27 does not list, with Unknown class for odd letters.
        let f09: ErrorCode = "F09".parse().unwrap();
        assert_eq!((f09.class(), f09.name()), (ErrorClass::Final, None));
        let odd = ErrorCode::new(*b"tw1").unwrap();
        assert_eq!(odd.class(), ErrorClass::Unknown);
        assert_eq!(format!("{odd:?}"), "ErrorCode(tw1)");
    }

    #[test]
    fn malformed_codes_are_rejected_precisely() {
        // Proves non-IA5, non-alphanumeric and wrong-length codes each get their own error.
        assert_eq!(
            ErrorCode::new([b't', b'w', 0xff]),
            Err(ErrorCodeError::NotIa5 {
                byte: 0xff,
                index: 2
            })
        );
        assert_eq!(
            ErrorCode::new([b't', b'w', 0x7f]),
            Err(ErrorCodeError::NotAlphanumeric {
                byte: 0x7f,
                index: 2
            })
        );
        assert_eq!(
            ErrorCode::new(*b"F 1"),
            Err(ErrorCodeError::NotAlphanumeric {
                byte: b' ',
                index: 1
            })
        );
        assert_eq!(
            "F0".parse::<ErrorCode>(),
            Err(ErrorCodeError::WrongLength { length: 2 })
        );
        assert_eq!(
            "F001".parse::<ErrorCode>(),
            Err(ErrorCodeError::WrongLength { length: 4 })
        );
    }
}

//! ILP addresses (RFC 15), validated by a single byte scan, without a regex.
//!
//! An address is an allocation scheme (`g`, `private`, `example`, `peer`, `self`, `test`,
//! `test1`, `test2`, `test3`, `local`) followed by one or more segments of
//! `[A-Za-z0-9_~-]`, joined by `.`, at most [`MAX_ADDRESS_BYTES`] long.
//! [`Address`] owns its text (an `Arc<str>`, cheap to clone); [`AddressRef`] borrows it,
//! for instance from a packet buffer, and is what parsed packets hand out.

use std::borrow::Borrow;
use std::fmt;
use std::str::{FromStr, Split};
use std::sync::Arc;

/// Longest ILP address, in bytes (RFC 15).
pub const MAX_ADDRESS_BYTES: usize = 1023;

/// The allocation schemes of RFC 15, the only valid first segments.
pub const SCHEMES: [&str; 10] = [
    "g", "private", "example", "peer", "self", "test", "test1", "test2", "test3", "local",
];

/// Separator between segments.
const SEPARATOR: u8 = b'.';

/// Why a string is not a valid ILP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The address is empty.
    #[error("address is empty")]
    Empty,
    /// The address is longer than [`MAX_ADDRESS_BYTES`].
    #[error("address is {length} bytes, over the {MAX_ADDRESS_BYTES}-byte limit")]
    TooLong {
        /// Its length in bytes.
        length: usize,
    },
    /// A byte outside `[A-Za-z0-9_~-]` and `.`.
    #[error("byte {byte:#04x} at offset {offset} is not allowed in an ILP address")]
    InvalidCharacter {
        /// The byte.
        byte: u8,
        /// Its offset in the address.
        offset: usize,
    },
    /// Two dots in a row, or a dot at the start or end.
    #[error("empty segment at offset {offset}")]
    EmptySegment {
        /// Offset where the empty segment starts.
        offset: usize,
    },
    /// The first segment is not one of [`SCHEMES`].
    #[error("unknown allocation scheme")]
    UnknownScheme,
    /// The address is a scheme alone; at least one more segment is required.
    #[error("address has no segment after its allocation scheme")]
    MissingSegment,
}

/// Whether `byte` may appear in a segment: `[A-Za-z0-9_~-]`.
const fn is_segment_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'~' | b'-')
}

/// Whether `scheme` is one of [`SCHEMES`].
const fn is_scheme(scheme: &[u8]) -> bool {
    matches!(
        scheme,
        b"g" | b"private"
            | b"example"
            | b"peer"
            | b"self"
            | b"test"
            | b"test1"
            | b"test2"
            | b"test3"
            | b"local"
    )
}

/// Checks `bytes` against RFC 15 in one pass. A valid address is ASCII, hence UTF-8.
pub const fn validate(bytes: &[u8]) -> Result<(), AddressError> {
    let length = bytes.len();
    if length == 0 {
        return Err(AddressError::Empty);
    }
    if length > MAX_ADDRESS_BYTES {
        return Err(AddressError::TooLong { length });
    }
    let mut scheme_end = length;
    let mut segment_start = 0;
    let mut offset = 0;
    while offset < length {
        let byte = bytes[offset];
        if byte == SEPARATOR {
            if offset == segment_start {
                return Err(AddressError::EmptySegment { offset });
            }
            if scheme_end == length {
                scheme_end = offset;
            }
            segment_start = offset + 1;
        } else if !is_segment_byte(byte) {
            return Err(AddressError::InvalidCharacter { byte, offset });
        }
        offset += 1;
    }
    if segment_start == length {
        return Err(AddressError::EmptySegment { offset: length });
    }
    let (scheme, _) = bytes.split_at(scheme_end);
    if !is_scheme(scheme) {
        return Err(AddressError::UnknownScheme);
    }
    if scheme_end == length {
        return Err(AddressError::MissingSegment);
    }
    Ok(())
}

/// Segment-aware prefix test on validated address text.
fn starts_with_segments(address: &str, prefix: &str) -> bool {
    match address.as_bytes().strip_prefix(prefix.as_bytes()) {
        Some([]) => !prefix.is_empty(),
        Some([SEPARATOR, ..]) => !prefix.is_empty(),
        _ => false,
    }
}

/// A validated ILP address borrowed from elsewhere (a packet buffer, a string).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressRef<'a>(&'a str);

impl<'a> AddressRef<'a> {
    /// Validates `address` (RFC 15). Usable in `const` items, where an invalid literal
    /// is a compile error.
    pub const fn new(address: &'a str) -> Result<Self, AddressError> {
        match validate(address.as_bytes()) {
            Ok(()) => Ok(Self(address)),
            Err(error) => Err(error),
        }
    }

    /// Validates `bytes` as an address (RFC 15).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, AddressError> {
        validate(bytes)?;
        match std::str::from_utf8(bytes) {
            Ok(address) => Ok(Self(address)),
            Err(_) => unreachable!("a validated ILP address is ASCII"),
        }
    }

    /// Wraps text that [`validate`] already accepted (e.g. at packet parse time).
    pub(super) const fn from_validated(address: &'a str) -> Self {
        Self(address)
    }

    /// The address text.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a valid address has at least two segments. Present for API symmetry.
    pub const fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The segments, scheme first.
    pub fn segments(&self) -> Split<'a, char> {
        self.0.split('.')
    }

    /// The allocation scheme (first segment), e.g. `g` or `peer`.
    pub fn scheme(&self) -> &'a str {
        match self.0.split_once('.') {
            Some((scheme, _)) => scheme,
            None => self.0,
        }
    }

    /// Whether `prefix` is a whole-segment prefix of this address: `g.alice` is a prefix
    /// of `g.alice` and `g.alice.x`, not of `g.alicebob`. An empty prefix matches nothing.
    pub fn starts_with_segments(&self, prefix: &str) -> bool {
        starts_with_segments(self.0, prefix)
    }

    /// This address followed by `.` and `suffix` (one or more segments).
    pub fn with_suffix(&self, suffix: &str) -> Result<Address, AddressError> {
        let mut joined = String::with_capacity(self.0.len() + 1 + suffix.len());
        joined.push_str(self.0);
        joined.push('.');
        joined.push_str(suffix);
        Address::try_from(joined)
    }

    /// An owned copy.
    pub fn to_address(&self) -> Address {
        Address(Arc::from(self.0))
    }
}

impl fmt::Debug for AddressRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AddressRef").field(&self.0).finish()
    }
}

impl fmt::Display for AddressRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl AsRef<str> for AddressRef<'_> {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl<'a> TryFrom<&'a str> for AddressRef<'a> {
    type Error = AddressError;

    fn try_from(address: &'a str) -> Result<Self, Self::Error> {
        Self::new(address)
    }
}

impl PartialEq<str> for AddressRef<'_> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AddressRef<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<Address> for AddressRef<'_> {
    fn eq(&self, other: &Address) -> bool {
        self.0 == other.as_str()
    }
}

/// A validated, owned ILP address. Cloning bumps a reference count.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(Arc<str>);

impl Address {
    /// Validates `address` (RFC 15) and stores a copy.
    pub fn new(address: &str) -> Result<Self, AddressError> {
        AddressRef::new(address).map(|address| address.to_address())
    }

    /// The address text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text itself, for a map that keys by it without a copy.
    pub fn to_shared_str(&self) -> Arc<str> {
        self.0.clone()
    }

    /// A borrowed view, as packets hand out.
    pub fn as_address_ref(&self) -> AddressRef<'_> {
        AddressRef(&self.0)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a valid address has at least two segments. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The segments, scheme first.
    pub fn segments(&self) -> Split<'_, char> {
        self.0.split('.')
    }

    /// The allocation scheme (first segment), e.g. `g` or `peer`.
    pub fn scheme(&self) -> &str {
        self.as_address_ref().scheme()
    }

    /// Whether `prefix` is a whole-segment prefix of this address: `g.alice` is a prefix
    /// of `g.alice` and `g.alice.x`, not of `g.alicebob`. An empty prefix matches nothing.
    pub fn starts_with_segments(&self, prefix: &str) -> bool {
        starts_with_segments(&self.0, prefix)
    }

    /// This address followed by `.` and `suffix` (one or more segments).
    pub fn with_suffix(&self, suffix: &str) -> Result<Address, AddressError> {
        self.as_address_ref().with_suffix(suffix)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Address").field(&&*self.0).finish()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(address: &str) -> Result<Self, Self::Err> {
        Self::new(address)
    }
}

impl TryFrom<&str> for Address {
    type Error = AddressError;

    fn try_from(address: &str) -> Result<Self, Self::Error> {
        Self::new(address)
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;

    fn try_from(address: String) -> Result<Self, Self::Error> {
        validate(address.as_bytes())?;
        Ok(Self(Arc::from(address)))
    }
}

impl TryFrom<&[u8]> for Address {
    type Error = AddressError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        AddressRef::from_bytes(bytes).map(|address| address.to_address())
    }
}

impl From<AddressRef<'_>> for Address {
    fn from(address: AddressRef<'_>) -> Self {
        address.to_address()
    }
}

impl<'a> From<&'a Address> for AddressRef<'a> {
    fn from(address: &'a Address) -> Self {
        address.as_address_ref()
    }
}

impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Address {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Address {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Address {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<AddressRef<'_>> for Address {
    fn eq(&self, other: &AddressRef<'_>) -> bool {
        &*self.0 == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_scheme_with_a_segment_is_valid() {
        // Proves all ten RFC 15 schemes are accepted, including peer.config and peer.settle.
        for scheme in SCHEMES {
            let address = format!("{scheme}.a-b_c~D9");
            assert_eq!(
                Address::new(&address).map(|a| a.scheme().to_owned()),
                Ok(scheme.to_owned())
            );
        }
        for address in [
            "peer.config",
            "peer.settle",
            "peer.route.control",
            "g.us.bank.alice",
            "test1.-",
        ] {
            assert!(Address::new(address).is_ok(), "{address}");
        }
    }

    #[test]
    fn invalid_addresses_report_what_is_wrong() {
        // Proves each RFC 15 rule is enforced with a precise error.
        let cases: [(&str, AddressError); 12] = [
            ("", AddressError::Empty),
            ("g", AddressError::MissingSegment),
            ("peer", AddressError::MissingSegment),
            ("test4.alice", AddressError::UnknownScheme),
            ("G.alice", AddressError::UnknownScheme),
            ("gg.alice", AddressError::UnknownScheme),
            (
                "example.alice!",
                AddressError::InvalidCharacter {
                    byte: b'!',
                    offset: 13,
                },
            ),
            (
                "examp*e.alice",
                AddressError::InvalidCharacter {
                    byte: b'*',
                    offset: 5,
                },
            ),
            (
                "g.al ice",
                AddressError::InvalidCharacter {
                    byte: b' ',
                    offset: 4,
                },
            ),
            ("g..alice", AddressError::EmptySegment { offset: 2 }),
            (".g.alice", AddressError::EmptySegment { offset: 0 }),
            ("g.alice.", AddressError::EmptySegment { offset: 8 }),
        ];
        for (address, error) in cases {
            assert_eq!(Address::new(address), Err(error), "{address:?}");
        }
        assert_eq!(
            Address::new("g.é"),
            Err(AddressError::InvalidCharacter {
                byte: 0xc3,
                offset: 2
            })
        );
    }

    #[test]
    fn length_limit_is_1023_bytes() {
        // Proves 1023 bytes is accepted and 1024 is rejected as TooLong.
        let longest = format!("g.{}", "a".repeat(MAX_ADDRESS_BYTES - 2));
        assert_eq!(
            Address::new(&longest).map(|a| a.len()),
            Ok(MAX_ADDRESS_BYTES)
        );
        let too_long = format!("{longest}a");
        assert_eq!(
            Address::new(&too_long),
            Err(AddressError::TooLong { length: 1024 })
        );
    }

    #[test]
    fn prefix_matching_respects_segment_boundaries() {
        // Proves g.alice prefixes g.alice and g.alice.x but not g.alicebob, and odd prefixes fail.
        let address = Address::new("g.alice.x").unwrap();
        assert!(address.starts_with_segments("g.alice"));
        assert!(address.starts_with_segments("g.alice.x"));
        assert!(address.starts_with_segments("g"));
        assert!(!address.starts_with_segments("g.alice.x.y"));
        assert!(!address.starts_with_segments("g.al"));
        assert!(!address.starts_with_segments("g."));
        assert!(!address.starts_with_segments(""));
        let alice = Address::new("g.alice").unwrap();
        assert!(alice.starts_with_segments("g.alice"));
        assert!(
            !Address::new("g.alicebob")
                .unwrap()
                .starts_with_segments("g.alice")
        );
        assert!(alice.as_address_ref().starts_with_segments("g"));
    }

    #[test]
    fn segments_scheme_and_suffix() {
        // Proves segments/scheme split correctly and with_suffix validates the result.
        let address = Address::new("example.us.bob").unwrap();
        assert_eq!(
            address.segments().collect::<Vec<_>>(),
            ["example", "us", "bob"]
        );
        assert_eq!(address.scheme(), "example");
        assert_eq!(
            address.with_suffix("child.x"),
            Ok(Address::new("example.us.bob.child.x").unwrap())
        );
        assert_eq!(
            address.with_suffix(""),
            Err(AddressError::EmptySegment { offset: 15 })
        );
        assert_eq!(
            address.with_suffix("a/b"),
            Err(AddressError::InvalidCharacter {
                byte: b'/',
                offset: 16
            })
        );
        let near_limit = Address::new(&format!("g.{}", "a".repeat(1019))).unwrap();
        assert_eq!(
            near_limit.with_suffix("bc"),
            Err(AddressError::TooLong { length: 1024 })
        );
    }

    #[test]
    fn address_traits_behave_like_the_text() {
        // Proves Display, Debug, FromStr, Eq/Hash/Ord and the ref/owned conversions agree.
        let alice: Address = "g.alice".parse().unwrap();
        let bob = Address::try_from("g.bob").unwrap();
        assert_eq!(alice.to_string(), "g.alice");
        assert_eq!(format!("{alice:?}"), "Address(\"g.alice\")");
        assert!(alice < bob);
        assert_eq!(alice, "g.alice");
        assert_eq!(alice.as_address_ref(), alice);
        assert_eq!(Address::from(alice.as_address_ref()), alice);
        assert_eq!(Address::try_from(&b"g.alice"[..]), Ok(alice.clone()));
        let set: HashSet<Address> = [alice.clone(), alice.clone(), bob].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set.contains("g.alice"));
        const PEER_SETTLE: Result<AddressRef<'static>, AddressError> =
            AddressRef::new("peer.settle");
        assert_eq!(PEER_SETTLE.map(|a| a.as_str()), Ok("peer.settle"));
    }
}

//! IL-DCP (RFC 31): a child asks its parent for its ILP address, asset scale and code.
//!
//! The request is a Prepare to `peer.config`, amount 0, with the peer-protocol condition
//! and empty data; the response is a Fulfill with the peer-protocol fulfillment (32 zero
//! bytes) whose data is `clientAddress (var-octet-string) | assetScale (u8) |
//! assetCode (var-octet-string, UTF-8)`. The same condition/fulfillment pair serves the
//! other peer protocols (`peer.route.*`, `peer.settle`).

use std::time::{Duration, SystemTime};

use bytes::BufMut;

use super::oer::{self, Reader};
use super::{
    Address, AddressRef, BuildError, CONDITION_BYTES, FULFILLMENT_BYTES, Field, Fulfill,
    FulfillBuilder, ParseError, Prepare, PrepareBuilder,
};

/// Destination of IL-DCP requests.
pub const ILDCP_DESTINATION: AddressRef<'static> = match AddressRef::new("peer.config") {
    Ok(address) => address,
    Err(_) => panic!("peer.config is a valid ILP address"),
};

/// Fulfillment of every peer-protocol request: 32 zero bytes.
pub const PEER_PROTOCOL_FULFILLMENT: [u8; FULFILLMENT_BYTES] = [0; FULFILLMENT_BYTES];

/// Condition of every peer-protocol request: SHA-256 of [`PEER_PROTOCOL_FULFILLMENT`]
/// (`66687aad…2925`). RFC 38 prints SHA-256 of the empty string for `peer.settle`, which
/// this fulfillment does not match; Interledger.rs and this codec use this value.
pub const PEER_PROTOCOL_CONDITION: [u8; CONDITION_BYTES] = [
    0x66, 0x68, 0x7a, 0xad, 0xf8, 0x62, 0xbd, 0x77, 0x6c, 0x8f, 0xc1, 0x8b, 0x8e, 0x9f, 0x8e, 0x20,
    0x08, 0x97, 0x14, 0x85, 0x6e, 0xe2, 0x33, 0xb3, 0x90, 0x2a, 0x59, 0x1d, 0x0d, 0x5f, 0x29, 0x25,
];

/// How long an IL-DCP request stays valid by default (RFC 31 implementations use 60 s).
pub const DEFAULT_REQUEST_EXPIRY: Duration = Duration::from_secs(60);

/// Why a packet is not an acceptable IL-DCP request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IldcpError {
    /// The Prepare is not addressed to `peer.config`.
    #[error("packet is not an IL-DCP request")]
    NotIldcpRequest,
    /// The Prepare is addressed to `peer.config` but lacks the peer-protocol condition.
    #[error("packet does not contain correct condition for a peer protocol request")]
    WrongCondition,
    /// The request's expiry is not after `now`.
    #[error("IL-DCP request packet is expired")]
    Expired,
    /// The Fulfill's fulfillment is not 32 zero bytes.
    #[error("IL-DCP response does not contain the expected fulfillment")]
    WrongFulfillment,
    /// The Fulfill's data is not a valid IL-DCP response.
    #[error("invalid IL-DCP response: {0}")]
    InvalidResponse(#[from] ParseError),
}

/// Whether `prepare` is an IL-DCP request: to `peer.config` with the peer-protocol condition.
pub fn is_ildcp_request(prepare: &Prepare) -> bool {
    prepare.destination() == ILDCP_DESTINATION
        && *prepare.execution_condition() == PEER_PROTOCOL_CONDITION
}

/// Checks an incoming IL-DCP request, saying which rule it breaks.
pub fn check_ildcp_request(prepare: &Prepare, now: SystemTime) -> Result<(), IldcpError> {
    if prepare.destination() != ILDCP_DESTINATION {
        return Err(IldcpError::NotIldcpRequest);
    }
    if *prepare.execution_condition() != PEER_PROTOCOL_CONDITION {
        return Err(IldcpError::WrongCondition);
    }
    if prepare.expires_at() <= now {
        return Err(IldcpError::Expired);
    }
    Ok(())
}

/// Builds an IL-DCP request expiring at `expires_at` (usually now + [`DEFAULT_REQUEST_EXPIRY`]).
pub fn ildcp_request(expires_at: SystemTime) -> Prepare {
    PrepareBuilder {
        amount: 0,
        expires_at,
        execution_condition: &PEER_PROTOCOL_CONDITION,
        destination: ILDCP_DESTINATION,
        data: &[],
    }
    // Empty data is within every limit.
    .build_checked()
}

/// What a parent tells its child over IL-DCP.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IldcpResponse {
    /// The child's ILP address.
    pub address: Address,
    /// Decimal places of the asset (amount 1 = 10^-scale units).
    pub asset_scale: u8,
    /// Asset code, e.g. `USD` or `XRP`.
    pub asset_code: String,
}

impl IldcpResponse {
    /// Parses the data of an IL-DCP Fulfill (strict: no trailing bytes).
    pub fn parse(data: &[u8]) -> Result<Self, ParseError> {
        let mut reader = Reader::new(data);
        let address = reader.read_var_octet_string(Field::ClientAddress)?;
        let address = Address::try_from(address).map_err(|source| ParseError::InvalidAddress {
            field: Field::ClientAddress,
            source,
        })?;
        let asset_scale = reader.read_u8(Field::AssetScale)?;
        let asset_code = reader.read_var_octet_string(Field::AssetCode)?;
        let asset_code = std::str::from_utf8(asset_code)
            .map_err(|_| ParseError::NotUtf8 {
                field: Field::AssetCode,
            })?
            .to_owned();
        reader.finish()?;
        Ok(Self {
            address,
            asset_scale,
            asset_code,
        })
    }

    /// Checks the peer-protocol fulfillment, then parses the data.
    pub fn from_fulfill(fulfill: &Fulfill) -> Result<Self, IldcpError> {
        if *fulfill.fulfillment() != PEER_PROTOCOL_FULFILLMENT {
            return Err(IldcpError::WrongFulfillment);
        }
        Ok(Self::parse(fulfill.data())?)
    }

    /// The response data: `clientAddress | assetScale | assetCode`.
    pub fn to_data(&self) -> Vec<u8> {
        let address = self.address.as_str().as_bytes();
        let asset_code = self.asset_code.as_bytes();
        let mut data = Vec::with_capacity(
            oer::var_octet_string_len(address.len())
                + 1
                + oer::var_octet_string_len(asset_code.len()),
        );
        oer::put_var_octet_string(&mut data, address);
        data.put_u8(self.asset_scale);
        oer::put_var_octet_string(&mut data, asset_code);
        data
    }

    /// The Fulfill answering an IL-DCP request. Fails only if the asset code is so long
    /// that the data exceeds [`MAX_DATA_BYTES`](super::MAX_DATA_BYTES).
    pub fn to_fulfill(&self) -> Result<Fulfill, BuildError> {
        FulfillBuilder {
            fulfillment: &PEER_PROTOCOL_FULFILLMENT,
            data: &self.to_data(),
        }
        .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use chrono::DateTime;
    use serde_json::Value;

    const VECTORS: &str = include_str!("vectors/ildcp.json");

    fn vectors(list: &str) -> Vec<Value> {
        let json: Value = serde_json::from_str(VECTORS).unwrap();
        json[list].as_array().unwrap().clone()
    }

    fn bytes(vector: &Value) -> BytesMut {
        BytesMut::from(&hex::decode(vector["hex"].as_str().unwrap()).unwrap()[..])
    }

    fn time(rfc3339: &str) -> SystemTime {
        SystemTime::from(DateTime::parse_from_rfc3339(rfc3339).unwrap())
    }

    fn kind<'a>(list: &'a [Value], kind: &str) -> Vec<&'a Value> {
        list.iter().filter(|v| v["kind"] == kind).collect()
    }

    #[test]
    fn peer_protocol_condition_is_sha256_of_zero_fulfillment() {
        // Proves the condition constant equals SHA-256 of 32 zero bytes and the vector file's value.
        assert_eq!(
            super::super::condition_for(&PEER_PROTOCOL_FULFILLMENT),
            PEER_PROTOCOL_CONDITION
        );
        let json: Value = serde_json::from_str(VECTORS).unwrap();
        assert_eq!(
            hex::encode(PEER_PROTOCOL_CONDITION),
            json["peer_protocol_condition_hex"].as_str().unwrap()
        );
    }

    #[test]
    fn request_vectors_are_recognized_and_rebuilt_exactly() {
        // Proves both request vectors parse as IL-DCP requests and ildcp_request reproduces them.
        let list = vectors("vectors");
        let requests = kind(&list, "request");
        assert_eq!(requests.len(), 2);
        for vector in requests {
            let prepare = Prepare::try_from(bytes(vector)).unwrap();
            let expires_at = time(vector["fields"]["expiresAt"].as_str().unwrap());
            assert!(is_ildcp_request(&prepare));
            assert_eq!(prepare.amount(), 0);
            assert_eq!(prepare.expires_at(), expires_at);
            assert!(prepare.data().is_empty());
            let frozen_clock = time("2015-06-16T00:00:00.000Z");
            assert_eq!(check_ildcp_request(&prepare, frozen_clock), Ok(()));
            assert_eq!(ildcp_request(expires_at).as_bytes(), &bytes(vector)[..]);
        }
        let default = ildcp_request(time("2015-06-16T00:00:00.000Z") + DEFAULT_REQUEST_EXPIRY);
        assert_eq!(default.as_bytes(), &bytes(kind(&list, "request")[0])[..]);
    }

    #[test]
    fn response_vector_parses_and_rebuilds_exactly() {
        // Proves the response Fulfill decodes to example.client/13/XAM and to_fulfill re-encodes it.
        let list = vectors("vectors");
        let vector = kind(&list, "response")[0];
        let fulfill = Fulfill::try_from(bytes(vector)).unwrap();
        let response = IldcpResponse::from_fulfill(&fulfill).unwrap();
        let fields = &vector["fields"];
        assert_eq!(response.address, fields["clientAddress"].as_str().unwrap());
        assert_eq!(
            u64::from(response.asset_scale),
            fields["assetScale"].as_u64().unwrap()
        );
        assert_eq!(response.asset_code, fields["assetCode"].as_str().unwrap());
        assert_eq!(
            response.to_fulfill().unwrap().as_bytes(),
            &bytes(vector)[..]
        );
        assert_eq!(IldcpResponse::parse(fulfill.data()), Ok(response));
    }

    #[test]
    fn reject_vectors_parse_and_rebuild_exactly() {
        // Proves the server's Reject vectors decode field by field and the builder reproduces them.
        let list = vectors("vectors");
        let rejects = kind(&list, "reject");
        assert_eq!(rejects.len(), 2);
        for vector in rejects {
            let reject = super::super::Reject::try_from(bytes(vector)).unwrap();
            let fields = &vector["fields"];
            assert_eq!(reject.code().as_str(), fields["code"].as_str().unwrap());
            let triggered_by = reject.triggered_by().unwrap();
            assert_eq!(triggered_by, fields["triggeredBy"].as_str().unwrap());
            assert_eq!(reject.message_str(), fields["message"].as_str().unwrap());
            assert!(reject.data().is_empty());
            let rebuilt = super::super::RejectBuilder {
                code: reject.code(),
                triggered_by: Some(triggered_by),
                message: reject.message(),
                data: reject.data(),
            }
            .build()
            .unwrap();
            assert_eq!(rebuilt.as_bytes(), &bytes(vector)[..]);
        }
    }

    #[test]
    fn invalid_vectors_fail_with_the_matching_error() {
        // Proves wrong destination, wrong condition, expiry and wrong fulfillment each get their variant.
        let invalid = vectors("invalid");
        let frozen_clock = time("2015-06-16T00:00:00.000Z");
        let expected = [
            IldcpError::NotIldcpRequest,
            IldcpError::WrongCondition,
            IldcpError::Expired,
        ];
        for (vector, error) in invalid.iter().zip(expected) {
            let prepare = Prepare::try_from(bytes(vector)).unwrap();
            assert_eq!(
                check_ildcp_request(&prepare, frozen_clock),
                Err(error),
                "{}",
                vector["name"]
            );
        }
        assert!(!is_ildcp_request(
            &Prepare::try_from(bytes(&invalid[0])).unwrap()
        ));
        assert!(!is_ildcp_request(
            &Prepare::try_from(bytes(&invalid[1])).unwrap()
        ));
        let fulfill = Fulfill::try_from(bytes(&invalid[3])).unwrap();
        assert_eq!(
            IldcpResponse::from_fulfill(&fulfill),
            Err(IldcpError::WrongFulfillment)
        );
    }

    #[test]
    fn malformed_response_data_is_rejected_precisely() {
        // Proves bad address, non-UTF-8 code, truncation and trailing bytes in the data all fail.
        let good = hex::decode("0e6578616d706c652e636c69656e740d0358414d").unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            IldcpResponse::parse(&trailing),
            Err(ParseError::InnerTrailingBytes { count: 1 })
        );
        assert_eq!(
            IldcpResponse::parse(&good[..15]),
            Err(ParseError::UnexpectedEnd {
                field: Field::AssetScale,
                needed: 1,
                available: 0
            })
        );
        let mut bad_address = good.clone();
        bad_address[1] = b'X';
        assert_eq!(
            IldcpResponse::parse(&bad_address),
            Err(ParseError::InvalidAddress {
                field: Field::ClientAddress,
                source: super::super::AddressError::UnknownScheme
            })
        );
        let mut not_utf8 = good;
        let last = not_utf8.len() - 1;
        not_utf8[last] = 0xff;
        assert_eq!(
            IldcpResponse::parse(&not_utf8),
            Err(ParseError::NotUtf8 {
                field: Field::AssetCode
            })
        );
    }

    #[test]
    fn oversized_asset_code_cannot_build_a_fulfill() {
        // Proves to_fulfill refuses data over the RFC 27 limit instead of building an unparseable packet.
        let response = IldcpResponse {
            address: Address::new("example.client").unwrap(),
            asset_scale: 9,
            asset_code: "X".repeat(super::super::MAX_DATA_BYTES),
        };
        assert!(matches!(
            response.to_fulfill(),
            Err(BuildError::DataTooLong { .. })
        ));
    }
}

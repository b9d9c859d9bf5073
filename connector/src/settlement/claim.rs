//! The native `claims` message that a peer's settlement worker sends in a `peer.settle`
//! Prepare: its wire format ([`ClaimMessage`], [`ClaimPayload`], written by the worker's
//! `claims` adaptor and read here), and the shape checks the connector makes before storing
//! it.
//!
//! Prepare data (UTF-8 JSON): `{"claim":"<hex of signed_payload>","signature":"<hex, 64
//! bytes>"}`, where `signed_payload` is UTF-8 JSON `{"version":1,"payer":"<ILP address>",
//! "payee":"<ILP address>","asset_code":"..","asset_scale":N,"cumulative_amount":"<decimal>"}`.
//!
//! The connector checks only the shape and that the asset is the sending account's; the
//! settlement worker verifies the ed25519 signature against the account's
//! `claims_public_key` and credits the increase exactly once. The payload is stored exactly
//! as received (the bytes that were signed), never re-serialized.

use serde::{Deserialize, Serialize};

use crate::packet::Address;

/// The only payload version there is.
pub const CLAIM_VERSION: u32 = 1;
/// Length of an ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// A claim whose shape passed every check, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedClaim {
    /// The signed payload, byte for byte as received.
    pub signed_payload: Vec<u8>,
    /// The ed25519 signature over `signed_payload`.
    pub signature: [u8; SIGNATURE_BYTES],
    /// Total paid on this channel so far, in the account's base units.
    pub cumulative_amount: i64,
    /// Who pays (the peer), as the payload says.
    pub payer: Address,
    /// Who is paid (us), as the payload says.
    pub payee: Address,
}

/// Why a `peer.settle` claim message is refused (F00, nothing stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimShapeError {
    /// The Prepare data is not the JSON envelope.
    #[error("claim message is not JSON {{\"claim\",\"signature\"}}: {0}")]
    Envelope(String),
    /// `claim` or `signature` is not hex.
    #[error("{field} is not hex: {reason}")]
    Hex {
        /// Which field.
        field: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The signature is not 64 bytes.
    #[error("signature is {0} bytes; an ed25519 signature is 64")]
    SignatureLength(usize),
    /// The signed payload is not the JSON object described above.
    #[error("signed payload is not a valid claim: {0}")]
    Payload(String),
    /// A payload version we do not know.
    #[error("claim version {0} is not supported (only 1)")]
    Version(u32),
    /// `payer` or `payee` is not an ILP address.
    #[error("{field} {value:?} is not an ILP address")]
    Address {
        /// Which field.
        field: &'static str,
        /// The value received.
        value: String,
    },
    /// `cumulative_amount` is not a non-negative integer that fits in a signed 64-bit.
    #[error("cumulative_amount {0:?} is not a non-negative integer of at most 2^63-1")]
    Amount(String),
    /// The claim is in another asset than the sending account's.
    #[error(
        "claim is in {claim_code} scale {claim_scale}, the account is in {account_code} scale {account_scale}"
    )]
    AssetMismatch {
        /// The claim's asset code.
        claim_code: String,
        /// The claim's asset scale.
        claim_scale: u8,
        /// The account's asset code.
        account_code: String,
        /// The account's asset scale.
        account_scale: u8,
    },
}

/// The `peer.settle` data: the signed payload and its signature, hex-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimMessage {
    /// Hex of the exact signed bytes.
    pub claim: String,
    /// Hex of the 64-byte ed25519 signature.
    pub signature: String,
}

/// What a claim says, signed by the payer. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimPayload {
    /// [`CLAIM_VERSION`].
    pub version: u32,
    /// The payer's ILP address.
    pub payer: String,
    /// The payee's ILP address.
    pub payee: String,
    /// The channel's asset code.
    pub asset_code: String,
    /// The channel's asset scale.
    pub asset_scale: u8,
    /// Total paid on the channel so far, base units, as a decimal string.
    pub cumulative_amount: String,
}

/// Checks the shape of a claim message from an account in `asset_code` / `asset_scale`.
pub fn parse_claim(
    data: &[u8],
    asset_code: &str,
    asset_scale: u8,
) -> Result<ReceivedClaim, ClaimShapeError> {
    let envelope: ClaimMessage =
        serde_json::from_slice(data).map_err(|err| ClaimShapeError::Envelope(err.to_string()))?;
    let signed_payload = hex::decode(&envelope.claim).map_err(|err| ClaimShapeError::Hex {
        field: "claim",
        reason: err.to_string(),
    })?;
    let signature = hex::decode(&envelope.signature).map_err(|err| ClaimShapeError::Hex {
        field: "signature",
        reason: err.to_string(),
    })?;
    let signature = <[u8; SIGNATURE_BYTES]>::try_from(signature.as_slice())
        .map_err(|_| ClaimShapeError::SignatureLength(signature.len()))?;
    let payload: ClaimPayload = serde_json::from_slice(&signed_payload)
        .map_err(|err| ClaimShapeError::Payload(err.to_string()))?;
    if payload.version != CLAIM_VERSION {
        return Err(ClaimShapeError::Version(payload.version));
    }
    let address = |field: &'static str, value: &str| {
        Address::new(value).map_err(|_| ClaimShapeError::Address {
            field,
            value: value.to_owned(),
        })
    };
    let payer = address("payer", &payload.payer)?;
    let payee = address("payee", &payload.payee)?;
    let cumulative_amount = schema::digits::parse_i64(&payload.cumulative_amount)
        .ok_or_else(|| ClaimShapeError::Amount(payload.cumulative_amount.clone()))?;
    if payload.asset_code != asset_code || payload.asset_scale != asset_scale {
        return Err(ClaimShapeError::AssetMismatch {
            claim_code: payload.asset_code,
            claim_scale: payload.asset_scale,
            account_code: asset_code.to_owned(),
            account_scale: asset_scale,
        });
    }
    Ok(ReceivedClaim {
        signed_payload,
        signature,
        cumulative_amount,
        payer,
        payee,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(amount: &str, code: &str, scale: u8) -> Vec<u8> {
        format!(
            r#"{{"version":1,"payer":"test.a","payee":"test.b","asset_code":"{code}","asset_scale":{scale},"cumulative_amount":"{amount}"}}"#
        )
        .into_bytes()
    }

    fn message(payload: &[u8], signature: &[u8]) -> Vec<u8> {
        format!(
            r#"{{"claim":"{}","signature":"{}"}}"#,
            hex::encode(payload),
            hex::encode(signature)
        )
        .into_bytes()
    }

    #[test]
    fn a_well_formed_claim_keeps_the_exact_signed_bytes() {
        // Proves a valid message parses and the payload is stored byte for byte as signed.
        let signed = payload("1500", "USD", 2);
        let claim = parse_claim(&message(&signed, &[9; 64]), "USD", 2).unwrap();
        assert_eq!(claim.signed_payload, signed);
        assert_eq!(claim.signature, [9; 64]);
        assert_eq!(claim.cumulative_amount, 1500);
        assert_eq!(claim.payer.as_str(), "test.a");
    }

    #[test]
    fn amounts_must_be_plain_non_negative_integers_within_i64() {
        // Proves signs, decimals, blanks and values over i64::MAX are refused.
        for bad in ["-1", "+1", "1.5", "", " 1", "9223372036854775808", "1e3"] {
            let err = parse_claim(&message(&payload(bad, "USD", 2), &[0; 64]), "USD", 2);
            assert!(
                matches!(err, Err(ClaimShapeError::Amount(_))),
                "{bad:?}: {err:?}"
            );
        }
        let max = parse_claim(
            &message(&payload("9223372036854775807", "USD", 2), &[0; 64]),
            "USD",
            2,
        )
        .unwrap();
        assert_eq!(max.cumulative_amount, i64::MAX);
    }

    #[test]
    fn other_versions_and_bad_addresses_are_refused() {
        // Proves the version and both addresses are checked.
        let v2 = br#"{"version":2,"payer":"test.a","payee":"test.b","asset_code":"USD","asset_scale":2,"cumulative_amount":"1"}"#;
        assert_eq!(
            parse_claim(&message(v2, &[0; 64]), "USD", 2),
            Err(ClaimShapeError::Version(2))
        );
        let bad = br#"{"version":1,"payer":"not an address","payee":"test.b","asset_code":"USD","asset_scale":2,"cumulative_amount":"1"}"#;
        assert!(matches!(
            parse_claim(&message(bad, &[0; 64]), "USD", 2),
            Err(ClaimShapeError::Address { field: "payer", .. })
        ));
    }
}

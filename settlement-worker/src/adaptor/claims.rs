//! `claims`: our native, payment-channel style settlement. The payer signs a cumulative
//! claim ("I have paid you N in total") with ed25519 and sends it to the payee as a
//! `peer.settle` Prepare; the payee's connector writes it to `settlement_claims` and fulfils;
//! the payee's worker verifies it ([`verify_claim`]) and credits what is above the last
//! credited claim, exactly once.
//!
//! Options: `signing_key` (64 hex digits, an ed25519 seed; a secret: set it with
//! `ILP_WORKER_LEDGERS__<NAME>__SIGNING_KEY`), `node_address` (our ILP address, the claims'
//! payer), `call_timeout_ms`. Without `signing_key` the ledger only receives: it verifies and
//! credits incoming claims, and leaves accounts over their threshold alone (logged).
//!
//! Wire format. `signed_payload` is the UTF-8 JSON
//! `{"version":1,"payer":"..","payee":"..","asset_code":"..","asset_scale":N,"cumulative_amount":"<decimal>"}`
//! and the signature is ed25519 over exactly those bytes. The Prepare goes to `peer.settle`,
//! amount 0, condition [`PEER_PROTOCOL_CONDITION`], expiry now + [`CLAIM_EXPIRY`], data the
//! UTF-8 JSON `{"claim":"<hex of signed_payload>","signature":"<hex of the 64 bytes>"}`.
//! Fulfill pays; a final (`F`) Reject is a definite rejection; anything else is transient.
//!
//! The cumulative amount of a settlement is the sum of its account's non-failed settlements
//! on the ledger up to its `seq`, so a retry resends the very same claim, and a claim the
//! payee already has credits nothing there.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use connector::packet::ildcp::PEER_PROTOCOL_CONDITION;
use connector::packet::{Address, ErrorClass, Packet, PrepareBuilder};
use connector::settlement::peer_settle::PEER_SETTLE_DESTINATION;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use schema::DbPool;
use schema::models::Account;
use schema::models::claim::ClaimUnderReview;
use schema::models::settlement::{Settlement, cumulative_settled};
use serde_json::{Map, Value};

use super::{
    AdaptorError, HttpClient, OptionsError, call_timeout, check_known_keys, http_client, quote,
    read_body, string_option,
};

pub use connector::settlement::claim::{
    CLAIM_VERSION, ClaimMessage, ClaimPayload, SIGNATURE_BYTES,
};

/// The options a `claims` ledger takes.
pub const OPTIONS: &[&str] = &["signing_key", "node_address", "call_timeout_ms"];
/// How long a claim's Prepare stays valid.
pub const CLAIM_EXPIRY: Duration = Duration::from_secs(10);

/// Signs `payload`: the exact bytes and the signature over them.
pub fn sign_claim(key: &SigningKey, payload: &ClaimPayload) -> (Vec<u8>, [u8; SIGNATURE_BYTES]) {
    // Serializing a struct of strings and integers cannot fail.
    let bytes = serde_json::to_vec(payload).unwrap_or_default();
    let signature = key.sign(&bytes).to_bytes();
    (bytes, signature)
}

/// Checks a received claim against its account and returns the cumulative amount it proves,
/// or the reason it is refused: the account's public key must verify the signature over the
/// exact payload bytes, the payload must be a version-1 claim in the account's asset, its
/// payer the account's address and its payee `our_address` (each checked when known: the
/// payee needs the ledger's `node_address`; a child's address needs it too), and its amount
/// must be what the connector recorded.
pub fn verify_claim(review: &ClaimUnderReview, our_address: Option<&str>) -> Result<i64, String> {
    let Some(public_key) = &review.claims_public_key else {
        return Err("no public key".to_owned());
    };
    let public_key: [u8; 32] = public_key
        .as_slice()
        .try_into()
        .map_err(|_| "the account's public key is not 32 bytes".to_owned())?;
    let public_key = VerifyingKey::from_bytes(&public_key)
        .map_err(|_| "the account's public key is not a valid ed25519 key".to_owned())?;
    let signature: [u8; SIGNATURE_BYTES] = review
        .claim
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| "bad signature: not 64 bytes".to_owned())?;
    public_key
        .verify_strict(
            &review.claim.signed_payload,
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| "bad signature".to_owned())?;
    let payload: ClaimPayload = serde_json::from_slice(&review.claim.signed_payload)
        .map_err(|err| format!("the signed payload is not a claim: {err}"))?;
    if payload.version != CLAIM_VERSION {
        return Err(format!("unsupported claim version {}", payload.version));
    }
    if payload.asset_code != review.asset_code
        || i16::from(payload.asset_scale) != review.asset_scale
    {
        return Err(format!(
            "asset {} scale {} does not match the account's {} scale {}",
            payload.asset_code, payload.asset_scale, review.asset_code, review.asset_scale
        ));
    }
    let payer = match (&review.ilp_address, our_address) {
        (Some(address), _) => Some(address.clone()),
        (None, Some(ours)) => Some(format!("{ours}.{}", review.username)),
        (None, None) => None,
    };
    if let Some(payer) = payer
        && payload.payer != payer
    {
        return Err(format!(
            "payer {:?} is not the account's address {payer:?}",
            payload.payer
        ));
    }
    if let Some(ours) = our_address
        && payload.payee != ours
    {
        return Err(format!(
            "payee {:?} is not our address {ours:?}",
            payload.payee
        ));
    }
    let cumulative = parse_cumulative(&payload.cumulative_amount)?;
    if cumulative != review.claim.cumulative_amount {
        return Err(format!(
            "the signed cumulative amount {cumulative} differs from the recorded {}",
            review.claim.cumulative_amount
        ));
    }
    Ok(cumulative)
}

fn parse_cumulative(text: &str) -> Result<i64, String> {
    if !schema::digits::is_digits(text) {
        return Err(format!(
            "cumulative_amount {text:?} is not a decimal integer"
        ));
    }
    text.parse::<i64>()
        .map_err(|_| format!("cumulative_amount {text} does not fit 64 bits"))
}

/// Sends signed claims for one `claims` ledger.
#[derive(Clone)]
pub struct ClaimsAdaptor {
    signing_key: Option<SigningKey>,
    node_address: Option<Address>,
    timeout: Duration,
    client: HttpClient,
}

impl std::fmt::Debug for ClaimsAdaptor {
    // The signing key is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimsAdaptor")
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("node_address", &self.node_address)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClaimsAdaptor {
    /// Validates `options` (see the module docs).
    pub fn from_options(_ledger: &str, options: &Map<String, Value>) -> Result<Self, OptionsError> {
        check_known_keys(options, OPTIONS)?;
        let signing_key = match string_option(options, "signing_key")? {
            None => None,
            Some(hex_seed) => {
                // The value is a secret: never part of the message.
                let seed: [u8; 32] = hex::decode(hex_seed.trim())
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| {
                        OptionsError(
                            "options.signing_key: must be 64 hex digits (a 32-byte ed25519 seed)"
                                .to_owned(),
                        )
                    })?;
                Some(SigningKey::from_bytes(&seed))
            }
        };
        let node_address = match string_option(options, "node_address")? {
            None => None,
            Some(address) => Some(Address::new(&address).map_err(|err| {
                OptionsError(format!("options.node_address: {address:?}: {err}"))
            })?),
        };
        if signing_key.is_some() && node_address.is_none() {
            return Err(OptionsError(
                "options.node_address: required with signing_key (the claims' payer)".to_owned(),
            ));
        }
        Ok(ClaimsAdaptor {
            signing_key,
            node_address,
            timeout: call_timeout(options)?,
            client: http_client(),
        })
    }

    /// Our ILP address (`node_address`): the payer of our claims, the payee of theirs.
    pub fn node_address(&self) -> Option<&str> {
        self.node_address.as_ref().map(Address::as_str)
    }

    /// The public key peers must store for us (`--claims-public-key`), when we sign.
    pub fn public_key(&self) -> Option<[u8; 32]> {
        self.signing_key
            .as_ref()
            .map(|key| key.verifying_key().to_bytes())
    }

    /// Settlements need our key and the account's outgoing URL.
    pub fn ready_for(&self, account: &Account) -> Result<(), String> {
        if self.signing_key.is_none() {
            return Err("the ledger has no signing_key: it only receives claims".to_owned());
        }
        if account.outgoing_url.is_none() {
            return Err("the account has no outgoing URL to send claims to".to_owned());
        }
        Ok(())
    }

    /// Signs the settlement's cumulative claim and sends it as a `peer.settle` Prepare.
    pub async fn settle(
        &self,
        pool: &DbPool,
        account: &Account,
        settlement: &Settlement,
    ) -> Result<(), AdaptorError> {
        let (Some(key), Some(node)) = (&self.signing_key, &self.node_address) else {
            return Err(AdaptorError::Transient(
                "the ledger has no signing_key".to_owned(),
            ));
        };
        let Some(url) = &account.outgoing_url else {
            return Err(AdaptorError::Transient(
                "the account has no outgoing URL".to_owned(),
            ));
        };
        let cumulative = {
            let db = |err: schema::DbError| AdaptorError::Transient(format!("database: {err}"));
            let mut conn = pool.get().await.map_err(|err| db(err.into()))?;
            cumulative_settled(&mut conn, settlement)
                .await
                .map_err(db)?
        };
        let payee = match &account.ilp_address {
            Some(address) => address.clone(),
            None => format!("{node}.{}", account.username),
        };
        let asset_scale = u8::try_from(account.asset_scale).map_err(|_| {
            AdaptorError::Rejected(format!(
                "asset scale {} is not 0..=255",
                account.asset_scale
            ))
        })?;
        let payload = ClaimPayload {
            version: CLAIM_VERSION,
            payer: node.to_string(),
            payee,
            asset_code: account.asset_code.clone(),
            asset_scale,
            cumulative_amount: cumulative.to_string(),
        };
        let (signed, signature) = sign_claim(key, &payload);
        let data = serde_json::to_vec(&ClaimMessage {
            claim: hex::encode(&signed),
            signature: hex::encode(signature),
        })
        .unwrap_or_default();
        let destination = PEER_SETTLE_DESTINATION;
        let prepare = PrepareBuilder {
            amount: 0,
            expires_at: SystemTime::now() + CLAIM_EXPIRY,
            execution_condition: &PEER_PROTOCOL_CONDITION,
            destination,
            data: &data,
        }
        .build()
        .map_err(|err| AdaptorError::Rejected(format!("building the Prepare: {err}")))?;

        let mut request =
            Request::post(url.as_str()).header(CONTENT_TYPE, "application/octet-stream");
        if let Some(token) = &account.outgoing_token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(prepare.into_bytes().freeze()))
            .map_err(|err| {
                AdaptorError::Transient(format!("cannot build a request to {url}: {err}"))
            })?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| AdaptorError::Transient(format!("{url}: {err}")))?;
            let status = response.status();
            let body = read_body(response.into_body())
                .await
                .map_err(|err| AdaptorError::Transient(format!("{url}: {err}")))?;
            Ok::<(StatusCode, Bytes), AdaptorError>((status, body))
        };
        let (status, body) = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(AdaptorError::Transient(format!(
                    "{url}: no answer within {:?}",
                    self.timeout
                )));
            }
        };
        if status != StatusCode::OK {
            return Err(AdaptorError::Transient(format!(
                "{url} answered HTTP {status}: {}",
                quote(&body)
            )));
        }
        match Packet::try_from(BytesMut::from(&body[..])) {
            Ok(Packet::Fulfill(_)) => Ok(()),
            Ok(Packet::Reject(reject)) => {
                let message = format!(
                    "peer rejected the claim: {} {}",
                    reject.code(),
                    reject.message_str()
                );
                if reject.code().class() == ErrorClass::Final {
                    Err(AdaptorError::Rejected(message))
                } else {
                    Err(AdaptorError::Transient(message))
                }
            }
            Ok(Packet::Prepare(_)) => Err(AdaptorError::Transient(
                "peer answered with a Prepare".to_owned(),
            )),
            Err(err) => Err(AdaptorError::Transient(format!(
                "peer answered with an invalid packet: {err}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptor::tests::options;
    use schema::models::claim::ClaimRow;

    fn review(key: &SigningKey, payload: &ClaimPayload, recorded: i64) -> ClaimUnderReview {
        let (signed, signature) = sign_claim(key, payload);
        ClaimUnderReview {
            claim: ClaimRow {
                id: 1,
                account_id: 1,
                cumulative_amount: recorded,
                signed_payload: signed,
                signature: signature.to_vec(),
                state: schema::ClaimState::Received,
                credited: None,
                reason: None,
                received_at: chrono::Utc::now(),
                processed_at: None,
            },
            asset_code: "USD".to_owned(),
            asset_scale: 2,
            claims_public_key: Some(key.verifying_key().to_bytes().to_vec()),
            ilp_address: Some("g.alice".to_owned()),
            username: "alice".to_owned(),
            credited_so_far: 0,
        }
    }

    fn payload(cumulative: &str) -> ClaimPayload {
        ClaimPayload {
            version: 1,
            payer: "g.alice".to_owned(),
            payee: "g.bob".to_owned(),
            asset_code: "USD".to_owned(),
            asset_scale: 2,
            cumulative_amount: cumulative.to_owned(),
        }
    }

    // Proves the payload's wire form is the documented JSON, fields in order.
    #[test]
    fn payload_bytes_are_the_documented_json() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (bytes, _) = sign_claim(&key, &payload("150"));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"version":1,"payer":"g.alice","payee":"g.bob","asset_code":"USD","asset_scale":2,"cumulative_amount":"150"}"#
        );
    }

    // Proves a good claim verifies, and each kind of bad one is refused with a reason.
    #[test]
    fn claims_are_verified() {
        let key = SigningKey::from_bytes(&[7; 32]);
        assert_eq!(
            verify_claim(&review(&key, &payload("150"), 150), Some("g.bob")),
            Ok(150)
        );

        let mut tampered = review(&key, &payload("150"), 150);
        tampered.claim.signed_payload = serde_json::to_vec(&payload("1500")).unwrap();
        tampered.claim.cumulative_amount = 1500;
        assert_eq!(
            verify_claim(&tampered, Some("g.bob")),
            Err("bad signature".to_owned())
        );

        let other = SigningKey::from_bytes(&[8; 32]);
        let mut wrong_key = review(&other, &payload("150"), 150);
        wrong_key.claims_public_key = Some(key.verifying_key().to_bytes().to_vec());
        assert_eq!(
            verify_claim(&wrong_key, Some("g.bob")),
            Err("bad signature".to_owned())
        );

        let mut no_key = review(&key, &payload("150"), 150);
        no_key.claims_public_key = None;
        assert_eq!(
            verify_claim(&no_key, Some("g.bob")),
            Err("no public key".to_owned())
        );

        let mut eur = payload("150");
        eur.asset_code = "EUR".to_owned();
        assert!(
            verify_claim(&review(&key, &eur, 150), Some("g.bob"))
                .unwrap_err()
                .contains("asset")
        );
        assert!(
            verify_claim(&review(&key, &payload("150"), 151), Some("g.bob"))
                .unwrap_err()
                .contains("differs")
        );
        assert!(verify_claim(&review(&key, &payload("-1"), 0), Some("g.bob")).is_err());

        // Payer and payee: the account's address, and ours.
        let mut mallory = payload("150");
        mallory.payer = "g.mallory".to_owned();
        assert!(
            verify_claim(&review(&key, &mallory, 150), Some("g.bob"))
                .unwrap_err()
                .contains("payer")
        );
        assert!(
            verify_claim(&review(&key, &payload("150"), 150), Some("g.carol"))
                .unwrap_err()
                .contains("payee")
        );
        // A child's address is ours plus its username.
        let mut child = review(&key, &payload("150"), 150);
        child.ilp_address = None;
        child.username = "alice".to_owned();
        assert!(
            verify_claim(&child, Some("g.bob"))
                .unwrap_err()
                .contains("payer")
        );
        let mut child_payload = payload("150");
        child_payload.payer = "g.bob.alice".to_owned();
        let mut child = review(&key, &child_payload, 150);
        child.ilp_address = None;
        assert_eq!(verify_claim(&child, Some("g.bob")), Ok(150));
    }

    // Proves signing_key must be 32 bytes of hex and needs node_address; the key stays secret.
    #[test]
    fn options_are_validated() {
        let hex_key = "11".repeat(32);
        let err = ClaimsAdaptor::from_options("x", &options(&[("signing_key", "zz")])).unwrap_err();
        assert!(err.0.starts_with("options.signing_key"), "{err}");
        assert!(!err.0.contains("zz"));
        let err =
            ClaimsAdaptor::from_options("x", &options(&[("signing_key", &hex_key)])).unwrap_err();
        assert!(err.0.starts_with("options.node_address"), "{err}");
        let err = ClaimsAdaptor::from_options("x", &options(&[("node_address", "not an address")]))
            .unwrap_err();
        assert!(err.0.starts_with("options.node_address"), "{err}");
        let adaptor = ClaimsAdaptor::from_options(
            "x",
            &options(&[("signing_key", &hex_key), ("node_address", "g.alice")]),
        )
        .unwrap();
        assert!(!format!("{adaptor:?}").contains(&hex_key));
        assert!(adaptor.public_key().is_some());
        // Receive-only: no options at all.
        assert!(
            ClaimsAdaptor::from_options("x", &Map::new())
                .unwrap()
                .public_key()
                .is_none()
        );
    }
}

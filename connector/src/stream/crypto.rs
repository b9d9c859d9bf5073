//! STREAM cryptography (RFC 29 §5.1, §6) and the receiver's stateless connection secrets.
//!
//! - Encryption: key = HMAC-SHA256(shared_secret, `"ilp_stream_encryption"`), AES-256-GCM
//!   with a random 12-byte nonce; on the wire `nonce (12) | tag (16) | ciphertext`.
//! - Conditions: fulfillment key = HMAC-SHA256(shared_secret, `"ilp_stream_fulfillment"`),
//!   fulfillment = HMAC-SHA256(fulfillment key, ILP data), condition = SHA-256(fulfillment).
//!   Unfulfillable probes carry a random condition instead.
//! - Connection secrets ([`ConnectionGenerator`]), as the JS and Rust servers derive them: a
//!   random 18-byte token, URL-safe base64 without padding (24 characters), is appended to the
//!   receiver's address as one more segment; shared_secret = HMAC-SHA256(HMAC-SHA256(
//!   server_secret, `"ilp_stream_shared_secret"`), token as ASCII). Any replica holding the
//!   server secret recovers the shared secret from a Prepare's destination alone.
//!
//! Secrets are never printed: the types here redact them in `Debug`.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, digest, hmac};

use crate::packet::{Address, AddressError, AddressRef};

/// Length of a shared secret and of a server secret, in bytes (RFC 29 recommends 32).
pub const SECRET_BYTES: usize = 32;

/// Length of the AES-GCM nonce that opens every encrypted STREAM packet.
pub const NONCE_BYTES: usize = 12;

/// Length of the AES-GCM authentication tag that follows the nonce.
pub const TAG_BYTES: usize = 16;

/// Bytes encryption adds to a STREAM packet: nonce and tag.
pub const ENCRYPTION_OVERHEAD_BYTES: usize = NONCE_BYTES + TAG_BYTES;

/// Random bytes in a connection token (24 characters once base64-encoded), as in the JS server.
pub const TOKEN_RANDOM_BYTES: usize = 18;

/// HMAC message deriving the encryption key from the shared secret.
const ENCRYPTION_KEY_STRING: &[u8] = b"ilp_stream_encryption";

/// HMAC message deriving the fulfillment key from the shared secret.
const FULFILLMENT_KEY_STRING: &[u8] = b"ilp_stream_fulfillment";

/// HMAC message deriving the token key from the server secret (JS `generateSharedSecretFromToken`).
const SHARED_SECRET_KEY_STRING: &[u8] = b"ilp_stream_shared_secret";

/// What went wrong in a cryptographic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    RandomUnavailable,
    /// AES-GCM refused to seal (the plaintext is absurdly long).
    #[error("encryption failed")]
    EncryptionFailed,
    /// The data is shorter than a nonce and a tag, so it cannot be a STREAM packet.
    #[error(
        "encrypted data is {length} bytes, shorter than the {ENCRYPTION_OVERHEAD_BYTES}-byte nonce and tag"
    )]
    TooShort {
        /// Its length.
        length: usize,
    },
    /// Authentication failed: another key, or the data was altered.
    #[error("data does not decrypt with this shared secret (wrong secret or altered data)")]
    DecryptionFailed,
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    to_array(hmac::sign(&key, message).as_ref())
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    to_array(digest::digest(&digest::SHA256, data).as_ref())
}

/// `N` bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CryptoError::RandomUnavailable)?;
    Ok(bytes)
}

/// A condition no one can fulfill, for probes (RFC 29 §6.1).
pub fn random_condition() -> Result<[u8; 32], CryptoError> {
    random_bytes()
}

/// The first 32 bytes of a SHA-256 or HMAC-SHA256 output.
fn to_array(output: &[u8]) -> [u8; 32] {
    let mut array = [0; 32];
    array.copy_from_slice(&output[..32]);
    array
}

/// The keys of one connection, derived once from its shared secret.
pub struct StreamKeys {
    encryption: aead::LessSafeKey,
    fulfillment: hmac::Key,
}

impl StreamKeys {
    /// Derives the encryption and fulfillment keys from `shared_secret`.
    pub fn new(shared_secret: &[u8; SECRET_BYTES]) -> Self {
        Self::from_secret(shared_secret)
    }

    /// [`new`](Self::new) for a secret of any length (the JS test vectors use short ones).
    fn from_secret(shared_secret: &[u8]) -> Self {
        let encryption_key = hmac_sha256(shared_secret, ENCRYPTION_KEY_STRING);
        let fulfillment_key = hmac_sha256(shared_secret, FULFILLMENT_KEY_STRING);
        Self::from_keys(&encryption_key, &fulfillment_key)
    }

    /// The keys themselves, already derived.
    fn from_keys(encryption_key: &[u8; 32], fulfillment_key: &[u8; 32]) -> Self {
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, encryption_key)
            .expect("a 32-byte key is exactly what AES-256-GCM takes");
        Self {
            encryption: aead::LessSafeKey::new(unbound),
            fulfillment: hmac::Key::new(hmac::HMAC_SHA256, fulfillment_key),
        }
    }

    /// Encrypts `plaintext` under a fresh random nonce: `nonce | tag | ciphertext`.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.encrypt_with_nonce(random_bytes()?, plaintext)
    }

    /// [`encrypt`](Self::encrypt) with a given nonce; a nonce must never be used twice.
    fn encrypt_with_nonce(
        &self,
        nonce: [u8; NONCE_BYTES],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut ciphertext = plaintext.to_vec();
        let tag = self
            .encryption
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                &mut ciphertext,
            )
            .map_err(|_| CryptoError::EncryptionFailed)?;
        let mut data = Vec::with_capacity(ENCRYPTION_OVERHEAD_BYTES + ciphertext.len());
        data.extend_from_slice(&nonce);
        data.extend_from_slice(tag.as_ref());
        data.extend_from_slice(&ciphertext);
        Ok(data)
    }

    /// Decrypts and authenticates `nonce | tag | ciphertext`.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if data.len() < ENCRYPTION_OVERHEAD_BYTES {
            return Err(CryptoError::TooShort { length: data.len() });
        }
        let (nonce, rest) = data.split_at(NONCE_BYTES);
        let (tag, ciphertext) = rest.split_at(TAG_BYTES);
        let mut nonce_bytes = [0; NONCE_BYTES];
        nonce_bytes.copy_from_slice(nonce);
        // ring wants the tag after the ciphertext.
        let mut in_out = Vec::with_capacity(ciphertext.len() + TAG_BYTES);
        in_out.extend_from_slice(ciphertext);
        in_out.extend_from_slice(tag);
        let plaintext_length = self
            .encryption
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce_bytes),
                aead::Aad::empty(),
                &mut in_out,
            )
            .map_err(|_| CryptoError::DecryptionFailed)?
            .len();
        in_out.truncate(plaintext_length);
        Ok(in_out)
    }

    /// The fulfillment of a Prepare carrying `data` (the encrypted STREAM packet).
    pub fn fulfillment(&self, data: &[u8]) -> [u8; 32] {
        to_array(hmac::sign(&self.fulfillment, data).as_ref())
    }

    /// The condition of a fulfillable Prepare carrying `data`: SHA-256 of its fulfillment.
    pub fn condition(&self, data: &[u8]) -> [u8; 32] {
        sha256(&self.fulfillment(data))
    }
}

impl fmt::Debug for StreamKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamKeys(<redacted>)")
    }
}

/// What a receiver hands a sender (through SPSP): where to pay and the shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionDetails {
    /// The receiver's address followed by the connection token.
    pub destination: Address,
    /// The connection's shared secret.
    pub shared_secret: [u8; SECRET_BYTES],
}

impl fmt::Debug for ConnectionDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionDetails")
            .field("destination", &self.destination.as_str())
            .field("shared_secret", &"<redacted>")
            .finish()
    }
}

/// Why [`ConnectionGenerator::generate`] gave no connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// No random token could be drawn.
    #[error(transparent)]
    Random(#[from] CryptoError),
    /// The base address plus the token is not a valid address (too long).
    #[error("base address cannot take a connection token: {0}")]
    Address(#[from] AddressError),
}

/// Makes and recovers connection secrets from one server secret, without storing anything.
///
/// Compatible with the JS (`ilp-protocol-stream`) and Rust (Interledger.rs) servers: tokens
/// either of them generated under the same server secret resolve to the same shared secret,
/// including JS tokens with a `~connectionTag` suffix (the whole segment is the HMAC input).
#[derive(Clone)]
pub struct ConnectionGenerator {
    token_key: hmac::Key,
}

impl ConnectionGenerator {
    /// A generator for `server_secret`; every replica must use the same one.
    pub fn new(server_secret: &[u8; SECRET_BYTES]) -> Self {
        Self::from_seed(server_secret)
    }

    /// [`new`](Self::new) for a seed of any length (the JS test vector's seed).
    fn from_seed(seed: &[u8]) -> Self {
        let token_key = hmac_sha256(seed, SHARED_SECRET_KEY_STRING);
        Self {
            token_key: hmac::Key::new(hmac::HMAC_SHA256, &token_key),
        }
    }

    /// A fresh connection under `base`: `base.<token>` and its shared secret.
    pub fn generate(&self, base: &Address) -> Result<ConnectionDetails, GenerateError> {
        let token = base64url(&random_bytes::<TOKEN_RANDOM_BYTES>()?);
        let destination = base.with_suffix(&token)?;
        Ok(ConnectionDetails {
            destination,
            shared_secret: self.shared_secret_for_token(&token),
        })
    }

    /// The shared secret of the connection whose token is `token` (one address segment).
    pub fn shared_secret_for_token(&self, token: &str) -> [u8; SECRET_BYTES] {
        to_array(hmac::sign(&self.token_key, token.as_bytes()).as_ref())
    }

    /// The shared secret for a Prepare sent to `destination`, when `destination` is
    /// `base.<token>` or `base.<token>.<more segments>`; `None` when it has no segment after
    /// `base` (or does not start with `base`). Any token yields a secret: whether it is one
    /// of ours shows only when the data decrypts.
    pub fn shared_secret_for(
        &self,
        base: AddressRef<'_>,
        destination: AddressRef<'_>,
    ) -> Option<[u8; SECRET_BYTES]> {
        let token = connection_token(base, destination)?;
        Some(self.shared_secret_for_token(token))
    }
}

impl fmt::Debug for ConnectionGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectionGenerator(<redacted>)")
    }
}

/// The segment right after `base` in `destination`, if `destination` extends `base`.
pub fn connection_token<'a>(base: AddressRef<'_>, destination: AddressRef<'a>) -> Option<&'a str> {
    let destination = destination.as_str();
    let base = base.as_str();
    let rest = destination.strip_prefix(base)?.strip_prefix('.')?;
    rest.split('.').next().filter(|token| !token.is_empty())
}

/// URL-safe base64 without padding (RFC 4648 §5), as the JS server encodes tokens.
fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base64(text: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    }

    // Known answers published by Interledger.rs (crates/interledger-stream/src/crypto.rs,
    // tests `it_encrypts_to_same_as_javascript` and `it_generates_the_same_fulfillment_as_
    // javascript`), computed there with the JS implementation.
    const RS_SHARED_SECRET: [u8; 32] = [
        126, 219, 117, 93, 118, 248, 249, 211, 20, 211, 65, 110, 237, 80, 253, 179, 81, 146, 229,
        67, 231, 49, 92, 127, 254, 230, 144, 102, 103, 166, 150, 36,
    ];
    const RS_PLAINTEXT: [u8; 6] = [99, 0, 12, 255, 77, 31];
    const RS_NONCE: [u8; 12] = [119, 248, 213, 234, 63, 200, 224, 140, 212, 222, 105, 159];
    const RS_CIPHERTEXT: [u8; 34] = [
        119, 248, 213, 234, 63, 200, 224, 140, 212, 222, 105, 159, 246, 203, 66, 155, 151, 172, 68,
        24, 76, 232, 90, 10, 237, 146, 189, 73, 248, 196, 177, 108, 115, 223,
    ];
    const RS_FULFILLMENT: [u8; 32] = [
        24, 6, 56, 73, 229, 236, 88, 227, 82, 112, 152, 49, 152, 73, 182, 183, 198, 7, 233, 124,
        119, 65, 13, 68, 54, 108, 120, 193, 59, 226, 107, 39,
    ];

    #[test]
    fn encryption_matches_the_interledger_rs_javascript_vector() {
        // Proves nonce | tag | ciphertext and the key derivation match the published bytes.
        let keys = StreamKeys::new(&RS_SHARED_SECRET);
        assert_eq!(
            keys.encrypt_with_nonce(RS_NONCE, &RS_PLAINTEXT).unwrap(),
            RS_CIPHERTEXT
        );
        assert_eq!(keys.decrypt(&RS_CIPHERTEXT).unwrap(), RS_PLAINTEXT);
    }

    #[test]
    fn fulfillment_matches_the_interledger_rs_javascript_vector() {
        // Proves fulfillment = HMAC(HMAC(secret, "ilp_stream_fulfillment"), data) and its condition.
        let keys = StreamKeys::new(&RS_SHARED_SECRET);
        assert_eq!(keys.fulfillment(&RS_CIPHERTEXT), RS_FULFILLMENT);
        assert_eq!(keys.condition(&RS_CIPHERTEXT), sha256(&RS_FULFILLMENT));
    }

    // Known answers from the JS reference's own tests (ilp-protocol-stream
    // test/crypto.test.ts, `runCryptoTests`).
    #[test]
    fn key_derivations_match_the_javascript_vectors() {
        // Proves the encryption key, fulfillment key, fulfillment and hash of the JS suite.
        assert_eq!(
            hmac_sha256(b"foo", ENCRYPTION_KEY_STRING).to_vec(),
            base64("zfOGMU/uY+EOUCE6tN3WhE77bF/N6pS0wSOmMgEAMEA=")
        );
        assert_eq!(
            hmac_sha256(b"foo", FULFILLMENT_KEY_STRING).to_vec(),
            base64("lh8nGJCJosvfUePaU0uxxXK3jNvV2Y+5ivt1GH1Muhs=")
        );
        let zero_key = StreamKeys::from_keys(&[0; 32], &[0; 32]);
        assert_eq!(
            zero_key.fulfillment(b"foo").to_vec(),
            base64("DA2Y9+PZ1F5y6Id7wbEEMn77nAexjy/+ztdtgTB/H/8=")
        );
        assert_eq!(
            sha256(&[0; 32]).to_vec(),
            base64("Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU=")
        );
        // A StreamKeys from the short secret "foo" uses the same derivation.
        let from_foo = StreamKeys::from_secret(b"foo");
        let sealed = from_foo.encrypt(b"x").unwrap();
        let by_key = StreamKeys::from_keys(
            &hmac_sha256(b"foo", ENCRYPTION_KEY_STRING),
            &hmac_sha256(b"foo", FULFILLMENT_KEY_STRING),
        );
        assert_eq!(by_key.decrypt(&sealed).unwrap(), b"x");
    }

    #[test]
    fn decrypts_the_javascript_known_ciphertext() {
        // Proves the JS "decrypts known data" vector opens to "foo bar" with the given key.
        let key: [u8; 32] = base64("AOStyoBvoK9/OFhdmf2TzQRrJsCkxH/cj49Ya7RFOEc=")
            .try_into()
            .unwrap();
        let keys = StreamKeys::from_keys(&key, &[0; 32]);
        let ciphertext = base64("Y1UiXpDA1GwAv+h95CEv67O49MOAJQrnYEQMrOFsbv6rrlE=");
        assert_eq!(keys.decrypt(&ciphertext).unwrap(), b"foo bar");
    }

    #[test]
    fn shared_secret_from_token_matches_the_javascript_vector() {
        // Proves HMAC(HMAC(seed, "ilp_stream_shared_secret"), token) for seed 0^32, token "foo bar".
        let generator = ConnectionGenerator::from_seed(&[0; 32]);
        assert_eq!(
            generator.shared_secret_for_token("foo bar").to_vec(),
            base64("ImTMJmMhjK4VSEyhjCUwlUnatWGB+Pm/UMOrbE6ieWE=")
        );
        assert_eq!(
            ConnectionGenerator::new(&[0; 32]).shared_secret_for_token("foo bar"),
            generator.shared_secret_for_token("foo bar")
        );
    }

    #[test]
    fn generated_connections_are_recovered_from_the_destination_alone() {
        // Proves generate → shared_secret_for round-trips, for the address and deeper ones,
        // and that another replica with the same server secret recovers the same secret.
        let base = Address::new("test.receiver.bob").unwrap();
        let generator = ConnectionGenerator::new(&[9; 32]);
        let details = generator.generate(&base).unwrap();
        let token =
            connection_token(base.as_address_ref(), details.destination.as_address_ref()).unwrap();
        assert_eq!(token.len(), 24);
        assert!(
            token
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        );
        let replica = ConnectionGenerator::new(&[9; 32]);
        assert_eq!(
            replica.shared_secret_for(base.as_address_ref(), details.destination.as_address_ref()),
            Some(details.shared_secret)
        );
        let deeper = details.destination.with_suffix("extra.segments").unwrap();
        assert_eq!(
            replica.shared_secret_for(base.as_address_ref(), deeper.as_address_ref()),
            Some(details.shared_secret)
        );
        let other = ConnectionGenerator::new(&[8; 32]);
        assert_ne!(
            other.shared_secret_for(base.as_address_ref(), details.destination.as_address_ref()),
            Some(details.shared_secret)
        );
        assert_ne!(
            generator.generate(&base).unwrap(),
            details,
            "tokens are random"
        );
    }

    #[test]
    fn destinations_without_a_token_have_no_secret() {
        // Proves the base itself, a sibling (`bobby`) and an unrelated address yield None.
        let generator = ConnectionGenerator::new(&[1; 32]);
        let base = AddressRef::new("test.bob").unwrap();
        for destination in ["test.bob", "test.bobby.abc", "test.alice.abc"] {
            let destination = AddressRef::new(destination).unwrap();
            assert_eq!(generator.shared_secret_for(base, destination), None);
        }
    }

    #[test]
    fn generate_refuses_a_base_too_long_for_a_token() {
        // Proves a base address near the 1023-byte limit gives an Address error, no panic.
        let base = Address::new(&format!("test.{}", "a".repeat(1010))).unwrap();
        assert!(matches!(
            ConnectionGenerator::new(&[1; 32]).generate(&base),
            Err(GenerateError::Address(_))
        ));
    }

    #[test]
    fn altered_short_or_foreign_data_does_not_decrypt() {
        // Proves a flipped bit, a truncated envelope and another key all fail authentication.
        let keys = StreamKeys::new(&[5; 32]);
        let mut data = keys.encrypt(b"hello stream").unwrap();
        assert_eq!(data.len(), 12 + ENCRYPTION_OVERHEAD_BYTES);
        assert_eq!(keys.decrypt(&data).unwrap(), b"hello stream");
        assert!(StreamKeys::new(&[6; 32]).decrypt(&data).is_err());
        assert_eq!(
            keys.decrypt(&data[..27]),
            Err(CryptoError::TooShort { length: 27 })
        );
        let last = data.len() - 1;
        data[last] ^= 1;
        assert_eq!(keys.decrypt(&data), Err(CryptoError::DecryptionFailed));
        let first = keys.encrypt(b"same").unwrap();
        assert_ne!(first, keys.encrypt(b"same").unwrap(), "nonces are random");
    }

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        // Proves the RFC 4648 §10 vectors (URL-safe alphabet, no padding) and the '-' '_' digits.
        let cases = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64url(input.as_bytes()), expected);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        // Proves neither the keys nor a generated secret appear in Debug output.
        let details = ConnectionDetails {
            destination: Address::new("test.bob.token").unwrap(),
            shared_secret: [0xab; 32],
        };
        let printed = format!("{details:?} {:?}", StreamKeys::new(&[0xab; 32]));
        assert!(
            !printed.contains("171") && !printed.contains("ab, ab"),
            "{printed}"
        );
        assert!(printed.contains("<redacted>"));
    }
}

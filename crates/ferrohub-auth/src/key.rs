//! Symmetric keys: the shared secrets of devices, modules and shared access policies.
//!
//! Azure hands keys around as base64 text. A [`SymmetricKey`] holds the decoded bytes, which are
//! what HMAC-SHA256 is keyed with. Its `Debug` output never shows them.

use std::fmt;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

/// Shortest key, in decoded bytes, the identity registry accepts (Azure's `MinKeyLengthInBytes`).
pub const MIN_REGISTRY_KEY_BYTES: usize = 16;
/// Longest key, in decoded bytes, the identity registry accepts (Azure's `MaxKeyLengthInBytes`).
pub const MAX_REGISTRY_KEY_BYTES: usize = 64;
/// Length in bytes of keys made by [`SymmetricKey::generate`].
pub const GENERATED_KEY_BYTES: usize = 32;

/// Standard alphabet, padding optional, stray low bits in the last symbol ignored.
///
/// This matches Node's `Buffer.from(s, 'base64')` closely enough for real keys and for the SDK
/// test vector whose key is the unpadded text `key`.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Why a text is not an acceptable key. Messages never repeat the key text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key text is empty.
    #[error("the key is empty")]
    Empty,
    /// The key text is not base64.
    #[error("the key is not valid base64")]
    InvalidBase64,
    /// The decoded key has a length the registry does not accept.
    #[error(
        "the key decodes to {len} bytes; keys must be {MIN_REGISTRY_KEY_BYTES} to {MAX_REGISTRY_KEY_BYTES} bytes"
    )]
    BadLength {
        /// Decoded length in bytes.
        len: usize,
    },
    /// The system's random generator failed.
    #[error("the random generator failed")]
    Random,
}

/// A symmetric key: the decoded bytes of a base64 `SharedAccessKey`.
///
/// Equality is checked in constant time. `Debug` prints only the length.
#[derive(Clone)]
pub struct SymmetricKey(Vec<u8>);

impl SymmetricKey {
    /// Decodes a base64 key as the SDKs do: standard alphabet, `=` padding optional.
    ///
    /// Rejects the empty string and anything that is not base64 (including the URL-safe
    /// alphabet and whitespace).
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        let bytes = LENIENT.decode(s).map_err(|_| KeyError::InvalidBase64)?;
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self(bytes))
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// A fresh key of [`GENERATED_KEY_BYTES`] random bytes, or an error if the system's random
    /// generator fails.
    pub fn try_generate() -> Result<Self, KeyError> {
        let mut bytes = vec![0u8; GENERATED_KEY_BYTES];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// A fresh key of [`GENERATED_KEY_BYTES`] random bytes (44 characters of base64).
    ///
    /// # Panics
    ///
    /// Only if the operating system's random generator fails, which leaves nothing safe to do.
    /// Use [`SymmetricKey::try_generate`] to handle that case.
    pub fn generate() -> Self {
        #[allow(clippy::expect_used)]
        Self::try_generate().expect("the system random generator failed")
    }

    /// The key as padded standard base64, the form Azure shows and stores.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.0)
    }

    /// The decoded key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Checks a key given to the identity registry: canonical padded standard base64 that
    /// decodes to [`MIN_REGISTRY_KEY_BYTES`]..=[`MAX_REGISTRY_KEY_BYTES`] bytes.
    pub fn validate_registry_key(s: &str) -> Result<(), KeyError> {
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        // The longest acceptable key is 88 characters; refuse to decode anything much longer.
        if s.len() > 4 * MAX_REGISTRY_KEY_BYTES {
            return Err(KeyError::BadLength {
                len: s.len() / 4 * 3,
            });
        }
        let bytes = STANDARD.decode(s).map_err(|_| KeyError::InvalidBase64)?;
        if !(MIN_REGISTRY_KEY_BYTES..=MAX_REGISTRY_KEY_BYTES).contains(&bytes.len()) {
            return Err(KeyError::BadLength { len: bytes.len() });
        }
        Ok(())
    }
}

impl PartialEq for SymmetricKey {
    fn eq(&self, other: &Self) -> bool {
        verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl Eq for SymmetricKey {}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SymmetricKey(<{} bytes, redacted>)", self.0.len())
    }
}

impl std::str::FromStr for SymmetricKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_base64(s)
    }
}

/// The key as padded base64 text, for building connection strings.
impl From<&SymmetricKey> for String {
    fn from(key: &SymmetricKey) -> String {
        key.to_base64()
    }
}

/// The key as padded base64 text, for building connection strings.
impl From<SymmetricKey> for String {
    fn from(key: SymmetricKey) -> String {
        key.to_base64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_decoding_matches_node_for_unpadded_key() {
        // Node decodes the unpadded "key" to the two bytes 91 EC (azure-contract §2.6, vector 1).
        let k = SymmetricKey::from_base64("key").expect("lenient");
        assert_eq!(k.as_bytes(), &[0x91, 0xEC]);
        // Padded and unpadded forms of the same key decode alike.
        let padded = SymmetricKey::from_base64("cGFzc3dvcmQ=").expect("padded");
        let unpadded = SymmetricKey::from_base64("cGFzc3dvcmQ").expect("unpadded");
        assert_eq!(padded.as_bytes(), b"password");
        assert_eq!(padded, unpadded);
    }

    #[test]
    fn rejects_non_base64() {
        assert_eq!(SymmetricKey::from_base64(""), Err(KeyError::Empty));
        assert_eq!(
            SymmetricKey::from_base64("not base64!"),
            Err(KeyError::InvalidBase64)
        );
        assert_eq!(
            SymmetricKey::from_base64("ab-_"),
            Err(KeyError::InvalidBase64)
        );
        assert_eq!(SymmetricKey::from_base64("a"), Err(KeyError::InvalidBase64));
        assert_eq!(
            SymmetricKey::from_base64(" cGFzc3dvcmQ="),
            Err(KeyError::InvalidBase64)
        );
        assert!(SymmetricKey::from_base64("====").is_err());
    }

    #[test]
    fn generate_and_round_trip() {
        let a = SymmetricKey::generate();
        let b = SymmetricKey::generate();
        assert_eq!(a.as_bytes().len(), GENERATED_KEY_BYTES);
        assert_ne!(a, b, "two generated keys must differ");
        let text = a.to_base64();
        assert_eq!(text.len(), 44);
        assert!(text.ends_with('='));
        assert_eq!(SymmetricKey::from_base64(&text).expect("own output"), a);
        assert_eq!(SymmetricKey::validate_registry_key(&text), Ok(()));
        assert_eq!(String::from(&a), text);
    }

    #[test]
    fn debug_hides_the_key() {
        let k = SymmetricKey::from_base64("cGFzc3dvcmQ=").expect("valid");
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("cGFzc3dvcmQ"));
        assert!(!dbg.contains("password"));
        assert!(!dbg.contains("112")); // no byte values either
        assert!(dbg.contains("8 bytes"));
    }

    #[test]
    fn registry_key_rules() {
        // 16 and 64 bytes are the bounds.
        let k16 = STANDARD.encode([7u8; 16]);
        let k64 = STANDARD.encode([7u8; 64]);
        let k15 = STANDARD.encode([7u8; 15]);
        let k65 = STANDARD.encode([7u8; 65]);
        assert_eq!(SymmetricKey::validate_registry_key(&k16), Ok(()));
        assert_eq!(SymmetricKey::validate_registry_key(&k64), Ok(()));
        assert_eq!(
            SymmetricKey::validate_registry_key(&k15),
            Err(KeyError::BadLength { len: 15 })
        );
        assert_eq!(
            SymmetricKey::validate_registry_key(&k65),
            Err(KeyError::BadLength { len: 65 })
        );
        // Strict: padding required, no stray bits, no garbage.
        let unpadded = k16.trim_end_matches('=');
        assert_eq!(
            SymmetricKey::validate_registry_key(unpadded),
            Err(KeyError::InvalidBase64)
        );
        assert_eq!(
            SymmetricKey::validate_registry_key("key"),
            Err(KeyError::InvalidBase64)
        );
        assert_eq!(
            SymmetricKey::validate_registry_key("!!!!!!!!!!!!!!!!!!!!!!!!"),
            Err(KeyError::InvalidBase64)
        );
        assert_eq!(
            SymmetricKey::validate_registry_key(""),
            Err(KeyError::Empty)
        );
        assert!(SymmetricKey::validate_registry_key(&"A".repeat(10_000)).is_err());
    }

    #[test]
    fn error_messages_do_not_echo_the_key() {
        let secret = "s3cr3t-key!";
        let err = SymmetricKey::from_base64(secret).expect_err("invalid");
        assert!(!err.to_string().contains(secret));
    }
}

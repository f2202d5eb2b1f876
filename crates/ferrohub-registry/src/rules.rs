//! Azure's rules for identity inputs, and the values the hub generates: symmetric keys and
//! generation ids.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::RegistryError;
use crate::model::{AuthType, Authentication, SymmetricKeys, X509Thumbprints};

/// Longest `statusReason`, in characters.
pub const MAX_STATUS_REASON_CHARS: usize = 128;
/// Shortest symmetric key, in decoded bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// Longest symmetric key, in decoded bytes.
pub const MAX_KEY_BYTES: usize = 64;
/// Length of a generated symmetric key, in bytes (44 base64 characters).
pub const GENERATED_KEY_BYTES: usize = 32;

/// A new random symmetric key, base64.
pub(crate) fn generate_key() -> Result<String, RegistryError> {
    let mut bytes = [0u8; GENERATED_KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| RegistryError::Entropy(e.to_string()))?;
    Ok(STANDARD.encode(bytes))
}

/// A new generation id: 18 random decimal digits, the first not zero.
pub(crate) fn generation_id() -> Result<String, RegistryError> {
    const LOW: u64 = 100_000_000_000_000_000;
    let r = getrandom::u64().map_err(|e| RegistryError::Entropy(e.to_string()))?;
    Ok((LOW + r % (9 * LOW)).to_string())
}

/// Checks `statusReason`.
pub(crate) fn check_status_reason(reason: Option<&str>) -> Result<(), RegistryError> {
    match reason {
        Some(r) if r.chars().count() > MAX_STATUS_REASON_CHARS => {
            Err(RegistryError::InvalidArgument(format!(
                "The status reason is longer than {MAX_STATUS_REASON_CHARS} characters."
            )))
        }
        _ => Ok(()),
    }
}

/// Validates input credentials and puts them in stored form: SAS keys that are absent or empty
/// are generated, fields that do not belong to the authentication type are dropped.
pub(crate) fn resolve_authentication(
    auth: Authentication,
) -> Result<Authentication, RegistryError> {
    match auth.kind {
        AuthType::Sas => {
            let keys = auth.symmetric_key.unwrap_or_default();
            let primary_key = resolve_key("primary", keys.primary_key)?;
            let secondary_key = resolve_key("secondary", keys.secondary_key)?;
            Ok(Authentication {
                kind: AuthType::Sas,
                symmetric_key: Some(SymmetricKeys {
                    primary_key,
                    secondary_key,
                }),
                x509_thumbprint: X509Thumbprints::default(),
            })
        }
        AuthType::SelfSigned => {
            let tp = auth.x509_thumbprint;
            let primary = resolve_thumbprint("primary", tp.primary_thumbprint)?;
            let secondary = resolve_thumbprint("secondary", tp.secondary_thumbprint)?;
            if primary.is_none() {
                return Err(RegistryError::InvalidArgument(
                    "A self-signed identity needs a primary thumbprint.".to_owned(),
                ));
            }
            Ok(Authentication {
                kind: AuthType::SelfSigned,
                symmetric_key: None,
                x509_thumbprint: X509Thumbprints {
                    primary_thumbprint: primary,
                    secondary_thumbprint: secondary,
                },
            })
        }
        kind @ (AuthType::CertificateAuthority | AuthType::None) => Ok(Authentication {
            kind,
            symmetric_key: None,
            x509_thumbprint: X509Thumbprints::default(),
        }),
    }
}

/// An empty key is generated; any other must be strict base64 of 16–64 bytes.
fn resolve_key(which: &str, key: String) -> Result<String, RegistryError> {
    if key.is_empty() {
        return generate_key();
    }
    let bytes = STANDARD.decode(key.as_bytes()).map_err(|_| {
        RegistryError::InvalidArgument(format!("The {which} key is not valid base64."))
    })?;
    if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&bytes.len()) {
        return Err(RegistryError::InvalidArgument(format!(
            "The {which} key must decode to between {MIN_KEY_BYTES} and {MAX_KEY_BYTES} bytes; \
             it decodes to {}.",
            bytes.len()
        )));
    }
    Ok(key)
}

/// An empty thumbprint is none; any other must be 40 (SHA-1) or 64 (SHA-256) hex digits.
fn resolve_thumbprint(which: &str, tp: Option<String>) -> Result<Option<String>, RegistryError> {
    match tp {
        None => Ok(None),
        Some(tp) if tp.is_empty() => Ok(None),
        Some(tp) if matches!(tp.len(), 40 | 64) && tp.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(tp))
        }
        Some(_) => Err(RegistryError::InvalidArgument(format!(
            "The {which} thumbprint must be 40 or 64 hexadecimal digits."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_have_their_shape() {
        let k = generate_key().expect("entropy");
        assert_eq!(k.len(), 44);
        assert_eq!(STANDARD.decode(&k).expect("base64").len(), 32);
        let g = generation_id().expect("entropy");
        assert_eq!(g.len(), 18);
        assert!(g.bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn keys_are_checked() {
        let ok = STANDARD.encode([7u8; 16]);
        assert_eq!(resolve_key("primary", ok.clone()).expect("valid"), ok);
        assert!(resolve_key("primary", STANDARD.encode([7u8; 15])).is_err());
        assert!(resolve_key("primary", STANDARD.encode([7u8; 65])).is_err());
        assert!(resolve_key("primary", STANDARD.encode([7u8; 64])).is_ok());
        assert!(resolve_key("primary", "not base64!".to_owned()).is_err());
        // Unpadded and non-canonical forms are refused.
        let unpadded = STANDARD.encode([7u8; 17]).trim_end_matches('=').to_owned();
        assert!(resolve_key("primary", unpadded).is_err());
        assert_eq!(
            resolve_key("primary", String::new())
                .expect("generated")
                .len(),
            44
        );
    }

    #[test]
    fn authentication_is_normalized() {
        let a = resolve_authentication(Authentication::default()).expect("generated");
        let keys = a.symmetric_key.expect("sas keys");
        assert_ne!(keys.primary_key, keys.secondary_key);

        let tp = "a".repeat(40);
        let a = resolve_authentication(Authentication {
            symmetric_key: Some(SymmetricKeys::default()),
            ..Authentication::self_signed(tp.clone(), Some(String::new()))
        })
        .expect("valid");
        assert_eq!(a.symmetric_key, None);
        assert_eq!(a.x509_thumbprint.primary_thumbprint, Some(tp));
        assert_eq!(a.x509_thumbprint.secondary_thumbprint, None);

        assert!(resolve_authentication(Authentication::self_signed("xyz", None)).is_err());
        let none = Authentication {
            kind: AuthType::None,
            ..Authentication::sas("a", "b")
        };
        assert_eq!(
            resolve_authentication(none).expect("valid").symmetric_key,
            None
        );
    }

    #[test]
    fn status_reason_is_limited_in_characters() {
        assert!(check_status_reason(Some(&"é".repeat(128))).is_ok());
        assert!(check_status_reason(Some(&"é".repeat(129))).is_err());
        assert!(check_status_reason(None).is_ok());
    }
}

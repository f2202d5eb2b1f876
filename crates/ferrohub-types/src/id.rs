//! Identifiers of devices, modules and shared access policies.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest device, module or policy name Azure IoT Hub accepts.
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The identifier is the empty string.
    #[error("the {kind} is empty")]
    Empty {
        /// Which identifier ("device id", "module id", "policy name").
        kind: &'static str,
    },
    /// Longer than [`MAX_ID_LEN`] characters.
    #[error("the {kind} is longer than {MAX_ID_LEN} characters")]
    TooLong {
        /// Which identifier.
        kind: &'static str,
    },
    /// A character outside the allowed set.
    #[error("the {kind} contains the character {ch:?}, which is not allowed")]
    InvalidChar {
        /// Which identifier.
        kind: &'static str,
        /// The first offending character.
        ch: char,
    },
}

/// The characters Azure IoT Hub allows in device and module ids besides ASCII letters and digits.
///
/// This is the union of the documented sets without `+` and `#`: those are MQTT wildcards, so a
/// device whose id holds one could never publish on its own topic.
const ID_SPECIALS: &str = "-.%_*?!(),:=@;$'";

fn validate(kind: &'static str, s: &str, specials: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.chars().count() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind });
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || specials.contains(*c)))
    {
        Some(ch) => Err(IdError::InvalidChar { kind, ch }),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $specials:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks `s` against the identifier rules.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate($kind, &s, $specials)?;
                Ok(Self(s))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A device identity's id: case-sensitive, at most 128 ASCII letters, digits and
    /// `- . % _ * ? ! ( ) , : = @ ; $ '`.
    DeviceId,
    "device id",
    ID_SPECIALS
);
string_id!(
    /// A module identity's id within its device; the same rules as [`DeviceId`].
    ModuleId,
    "module id",
    ID_SPECIALS
);
string_id!(
    /// The name of a shared access policy, such as `iothubowner`.
    PolicyName,
    "policy name",
    "-._"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_specials() {
        assert!(DeviceId::new("dev-1.a%b_c*d?e!f(g)h,i:j=k@l;m$n'o").is_ok());
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(DeviceId::new(""), Err(IdError::Empty { kind: "device id" }));
        assert_eq!(
            DeviceId::new("a/b"),
            Err(IdError::InvalidChar {
                kind: "device id",
                ch: '/'
            })
        );
        assert!(matches!(
            DeviceId::new("a+b"),
            Err(IdError::InvalidChar { ch: '+', .. })
        ));
        assert!(matches!(
            DeviceId::new("a#b"),
            Err(IdError::InvalidChar { ch: '#', .. })
        ));
        assert!(matches!(
            DeviceId::new("é"),
            Err(IdError::InvalidChar { .. })
        ));
        assert!(DeviceId::new("x".repeat(128)).is_ok());
        assert_eq!(
            DeviceId::new("x".repeat(129)),
            Err(IdError::TooLong { kind: "device id" })
        );
        assert!(PolicyName::new("iothub owner").is_err());
    }

    #[test]
    fn serde_validates() {
        let ok: DeviceId = serde_json::from_str("\"d1\"").expect("valid id");
        assert_eq!(ok.as_str(), "d1");
        assert!(serde_json::from_str::<DeviceId>("\"d/1\"").is_err());
    }
}

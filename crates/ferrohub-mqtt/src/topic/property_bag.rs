//! Property bags: the `key=value&key=value` tail of telemetry and C2D topics.
//!
//! Keys and values are percent-encoded. Keys starting with `$.` (usually sent as `%24.`) are
//! system properties such as `$.mid` (message id); all others are application properties. A key
//! without `=` has a null value, `key=` an empty one.

use std::fmt;

use crate::topic::percent;

/// Why a property bag could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PropertyBagError {
    /// A `%` not followed by two hex digits. Likely cause: a client that does not escape `%`.
    #[error("malformed percent-escape at byte {offset} of the property bag")]
    MalformedEscape {
        /// Byte offset of the `%` within the bag.
        offset: usize,
    },
    /// A key or value decodes to bytes that are not UTF-8.
    #[error("a property decodes to invalid UTF-8")]
    InvalidUtf8,
    /// A pair with an empty key, such as `=v`.
    #[error("a property has an empty name")]
    EmptyKey,
}

/// A system property name, the part after `$.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SystemProperty {
    /// `$.mid`: message-id.
    MessageId,
    /// `$.cid`: correlation-id.
    CorrelationId,
    /// `$.uid`: user-id.
    UserId,
    /// `$.to`: destination, e.g. `/devices/{id}/messages/devicebound`.
    To,
    /// `$.ct`: content type, e.g. `application/json`.
    ContentType,
    /// `$.ce`: content encoding, e.g. `utf-8`.
    ContentEncoding,
    /// `$.exp`: absolute expiry time (ISO 8601).
    AbsoluteExpiryTime,
    /// `$.on`: output name of a module's `SendOutputEvent`.
    OutputName,
    /// `$.ifid`: iothub-interface-id.
    InterfaceId,
    /// `$.sub`: dt-subject, the Plug and Play component name.
    ComponentName,
    /// `$.schema`: iothub-message-schema.
    MessageSchema,
    /// `$.ctime`: iothub-creation-time-utc.
    CreationTimeUtc,
    /// `$.diagid`: diagnostic id.
    DiagnosticId,
    /// `$.diagctx`: diagnostic correlation context.
    DiagnosticContext,
    /// Any other `$.` name, kept as sent (without the `$.`).
    Other(String),
}

/// Whether a property is a system or an application property.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PropertyName {
    /// A `$.` key.
    System(SystemProperty),
    /// Any other key, decoded. Includes unprefixed hub names such as `iothub-ack`.
    Application(String),
}

/// One decoded `key[=value]` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The key.
    pub name: PropertyName,
    /// The value; `None` for a bare key.
    pub value: Option<String>,
}

/// An ordered list of properties, as it appears in a topic. Duplicates are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyBag {
    properties: Vec<Property>,
}

// === impl SystemProperty ===

impl SystemProperty {
    const KNOWN: [(&'static str, SystemProperty); 14] = [
        ("mid", Self::MessageId),
        ("cid", Self::CorrelationId),
        ("uid", Self::UserId),
        ("to", Self::To),
        ("ct", Self::ContentType),
        ("ce", Self::ContentEncoding),
        ("exp", Self::AbsoluteExpiryTime),
        ("on", Self::OutputName),
        ("ifid", Self::InterfaceId),
        ("sub", Self::ComponentName),
        ("schema", Self::MessageSchema),
        ("ctime", Self::CreationTimeUtc),
        ("diagid", Self::DiagnosticId),
        ("diagctx", Self::DiagnosticContext),
    ];

    /// Maps the part of a key after `$.`.
    pub fn from_suffix(suffix: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|(s, _)| *s == suffix)
            .map_or_else(|| Self::Other(suffix.to_owned()), |(_, p)| p.clone())
    }

    /// The part of the key after `$.`, e.g. `mid`.
    pub fn suffix(&self) -> &str {
        match self {
            Self::Other(s) => s,
            known => Self::KNOWN
                .iter()
                .find(|(_, p)| p == known)
                .map_or("", |(s, _)| s),
        }
    }
}

impl fmt::Display for SystemProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "$.{}", self.suffix())
    }
}

// === impl PropertyName ===

impl PropertyName {
    /// Classifies a decoded key.
    pub fn from_key(key: &str) -> Self {
        match key.strip_prefix("$.") {
            Some(suffix) => Self::System(SystemProperty::from_suffix(suffix)),
            None => Self::Application(key.to_owned()),
        }
    }
}

impl fmt::Display for PropertyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::System(p) => p.fmt(f),
            Self::Application(k) => f.write_str(k),
        }
    }
}

// === impl PropertyBag ===

impl PropertyBag {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes an encoded bag (without any surrounding `/`).
    ///
    /// Empty pairs (`a=1&&b=2`, a leading or trailing `&`) are skipped; only the first `=` of a
    /// pair separates key from value; any other character, `/` included, is data.
    pub fn parse(encoded: &str) -> Result<Self, PropertyBagError> {
        let mut properties = Vec::new();
        let mut start = 0;
        for pair in encoded.split('&') {
            let pair_start = start;
            start += pair.len() + 1;
            if pair.is_empty() {
                continue;
            }
            let at = |offset| {
                move |e| match e {
                    PropertyBagError::MalformedEscape { offset: o } => {
                        PropertyBagError::MalformedEscape { offset: offset + o }
                    }
                    other => other,
                }
            };
            let (key, value) = match pair.split_once('=') {
                Some((k, v)) => {
                    let v_start = pair_start + k.len() + 1;
                    (k, Some(percent::decode_strict(v).map_err(at(v_start))?))
                }
                None => (pair, None),
            };
            let key = percent::decode_strict(key).map_err(at(pair_start))?;
            if key.is_empty() {
                return Err(PropertyBagError::EmptyKey);
            }
            properties.push(Property {
                name: PropertyName::from_key(&key),
                value: value.map(|v| v.into_owned()),
            });
        }
        Ok(Self { properties })
    }

    /// Appends a property.
    pub fn push(&mut self, name: PropertyName, value: Option<String>) {
        self.properties.push(Property { name, value });
    }

    /// Appends a system property with a value.
    pub fn push_system(&mut self, property: SystemProperty, value: impl Into<String>) {
        self.push(PropertyName::System(property), Some(value.into()));
    }

    /// Appends an application property. A key starting with `$.` reads back as a system property.
    pub fn push_application(&mut self, key: impl Into<String>, value: Option<String>) {
        self.push(PropertyName::Application(key.into()), value);
    }

    /// The properties in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Property> {
        self.properties.iter()
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.properties.len()
    }

    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty()
    }

    /// The value of the first occurrence of a system property; `None` if absent or valueless.
    pub fn system(&self, property: &SystemProperty) -> Option<&str> {
        self.properties.iter().find_map(|p| match &p.name {
            PropertyName::System(s) if s == property => Some(p.value.as_deref()),
            _ => None,
        })?
    }

    /// The application properties in order, as `(key, value)`.
    pub fn application(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.properties.iter().filter_map(|p| match &p.name {
            PropertyName::Application(k) => Some((k.as_str(), p.value.as_deref())),
            PropertyName::System(_) => None,
        })
    }

    /// Encodes the bag: `$` as `%24`, everything but unreserved characters escaped in upper-case
    /// hex, null values as a bare key.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.properties.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            match &p.name {
                PropertyName::System(s) => {
                    out.push_str("%24.");
                    percent::encode_into(s.suffix(), &mut out);
                }
                PropertyName::Application(k) => percent::encode_into(k, &mut out),
            }
            if let Some(v) = &p.value {
                out.push('=');
                percent::encode_into(v, &mut out);
            }
        }
        out
    }
}

impl<'a> IntoIterator for &'a PropertyBag {
    type Item = &'a Property;
    type IntoIter = std::slice::Iter<'a, Property>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<Property> for PropertyBag {
    fn from_iter<I: IntoIterator<Item = Property>>(iter: I) -> Self {
        Self {
            properties: iter.into_iter().collect(),
        }
    }
}

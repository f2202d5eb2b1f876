//! MQTT topic names and topic filters, valid by construction (MQTT 3.1.1 §4.7).

use std::fmt;

/// Longest topic name or filter the wire format can carry: a UTF-8 string has a 16-bit length.
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Why a string is not a valid topic name or topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is the empty string, which MQTT forbids [MQTT-4.7.3-1].
    #[error("the topic is empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`] bytes, so it cannot be encoded.
    #[error("the topic is {0} bytes long, more than 65535")]
    TooLong(usize),
    /// Contains U+0000, which MQTT strings must not [MQTT-4.7.3-2].
    #[error("the topic contains U+0000")]
    NullCharacter,
    /// A topic *name* (as published) contains `+` or `#` [MQTT-3.3.2-2].
    #[error("a topic name contains a wildcard character")]
    WildcardInName,
    /// A topic *filter* uses `+` or `#` other than as a whole level, or `#` not as the last
    /// level [MQTT-4.7.1-2, MQTT-4.7.1-3].
    #[error("a topic filter uses a wildcard in an invalid position")]
    InvalidWildcard,
}

/// A topic name as carried by PUBLISH and the CONNECT will: non-empty, at most 65535 bytes, no
/// U+0000 and no wildcard characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

/// A topic filter as carried by SUBSCRIBE and UNSUBSCRIBE: like a topic name, but `+` may fill a
/// whole level and `#` may fill the last level.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(String);

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

// === impl TopicName ===

impl TopicName {
    /// Checks `s` against the topic-name rules.
    pub fn new(s: impl Into<String>) -> Result<Self, TopicError> {
        let s = s.into();
        check_common(&s)?;
        if s.contains(['+', '#']) {
            return Err(TopicError::WildcardInName);
        }
        Ok(Self(s))
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<&str> for TopicName {
    type Error = TopicError;

    fn try_from(s: &str) -> Result<Self, TopicError> {
        Self::new(s)
    }
}

impl TryFrom<String> for TopicName {
    type Error = TopicError;

    fn try_from(s: String) -> Result<Self, TopicError> {
        Self::new(s)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

// === impl TopicFilter ===

impl TopicFilter {
    /// Checks `s` against the topic-filter rules.
    pub fn new(s: impl Into<String>) -> Result<Self, TopicError> {
        let s = s.into();
        check_common(&s)?;
        let mut levels = s.split('/').peekable();
        while let Some(level) = levels.next() {
            let is_last = levels.peek().is_none();
            match level {
                "+" => {}
                "#" if is_last => {}
                _ if level.contains(['+', '#']) => return Err(TopicError::InvalidWildcard),
                _ => {}
            }
        }
        Ok(Self(s))
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The filter as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Whether the filter contains `+` or `#`.
    pub fn has_wildcard(&self) -> bool {
        self.0.contains(['+', '#'])
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = TopicError;

    fn try_from(s: &str) -> Result<Self, TopicError> {
        Self::new(s)
    }
}

impl TryFrom<String> for TopicFilter {
    type Error = TopicError;

    fn try_from(s: String) -> Result<Self, TopicError> {
        Self::new(s)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(TopicName::new("devices/d/messages/events/").is_ok());
        assert!(TopicName::new("/").is_ok());
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("a\0"), Err(TopicError::NullCharacter));
        assert_eq!(
            TopicName::new("a".repeat(65_536)),
            Err(TopicError::TooLong(65_536))
        );
        assert!(TopicName::new("a".repeat(65_535)).is_ok());
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/",
            "a//#",
            "+/#",
            "$iothub/twin/res/#",
        ] {
            assert!(TopicFilter::new(ok).is_ok(), "{ok}");
        }
        for bad in ["a#", "a/#/b", "#/", "a+", "a/b+/c", "##", "++"] {
            assert_eq!(
                TopicFilter::new(bad),
                Err(TopicError::InvalidWildcard),
                "{bad}"
            );
        }
        assert_eq!(TopicFilter::new(""), Err(TopicError::Empty));
    }
}

//! Azure's timestamp format: RFC 3339 in UTC, and `0001-01-01T00:00:00` for "never".

use std::fmt;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How Azure writes a time that was never set.
pub(crate) const NEVER: &str = "0001-01-01T00:00:00";

/// A point in time that may be unset; serialized as Azure does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timestamp(pub Option<DateTime<Utc>>);

impl Timestamp {
    /// The unset time.
    pub const NEVER: Timestamp = Timestamp(None);
}

impl From<Option<DateTime<Utc>>> for Timestamp {
    fn from(t: Option<DateTime<Utc>>) -> Self {
        Timestamp(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => f.write_str(NEVER),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        let Some(s) = s else {
            return Ok(Timestamp::NEVER);
        };
        if s.is_empty() || s.starts_with("0001-01-01") {
            return Ok(Timestamp::NEVER);
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
            return Ok(Timestamp(Some(t.with_timezone(&Utc))));
        }
        // Azure sometimes omits the zone; such times are UTC.
        NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|t| Timestamp(Some(t.and_utc())))
            .map_err(|_| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_round_trips() {
        let json = serde_json::to_string(&Timestamp::NEVER).expect("serializes");
        assert_eq!(json, "\"0001-01-01T00:00:00\"");
        let back: Timestamp = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, Timestamp::NEVER);
    }

    #[test]
    fn parses_zoned_and_unzoned() {
        let a: Timestamp = serde_json::from_str("\"2024-03-14T09:54:49.6536567Z\"").expect("z");
        let b: Timestamp = serde_json::from_str("\"2024-03-14T09:54:49.6536567\"").expect("naive");
        assert_eq!(a, b);
        assert!(a.0.is_some());
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}

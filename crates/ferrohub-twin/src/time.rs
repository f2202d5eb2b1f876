//! Timestamps as Azure writes them in twins: UTC, seven fractional digits (.NET ticks of
//! 100 ns), `Z` (contract §2.2), and `0001-01-01T00:00:00Z` for a time never set (§2.1).

use chrono::{DateTime, SubsecRound, Utc};

/// How a twin writes a time that was never set (`statusUpdateTime`, `lastActivityTime`).
pub(crate) const NEVER: &str = "0001-01-01T00:00:00Z";

/// `t` cut to whole 100 ns ticks, so that what is kept in memory is exactly what the wire and the
/// stored form can say.
pub(crate) fn to_ticks(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(7)
}

/// `2023-10-12T13:38:52.3108419Z`.
pub(crate) fn format(t: DateTime<Utc>) -> String {
    // A leap second shows as 1_000_000_000+ ns in chrono; keep it within seven digits.
    let ticks = t.timestamp_subsec_nanos().min(999_999_999) / 100;
    format!("{}.{ticks:07}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// [`format`], or [`NEVER`] for `None`.
pub(crate) fn format_optional(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| NEVER.to_owned(), format)
}

/// Parses an RFC 3339 time (as [`format`] writes it), cut to ticks.
pub(crate) fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| to_ticks(t.with_timezone(&Utc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn seven_digits_and_round_trip() {
        let t = Utc
            .timestamp_opt(1_697_117_932, 310_841_987)
            .single()
            .expect("valid time");
        assert_eq!(format(t), "2023-10-12T13:38:52.3108419Z");
        let cut = to_ticks(t);
        assert_eq!(parse(&format(t)), Some(cut));
        assert_eq!(format(cut), format(t));
        let whole = Utc.timestamp_opt(0, 0).single().expect("valid time");
        assert_eq!(format(whole), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(format_optional(None), NEVER);
        assert_eq!(parse("yesterday"), None);
    }
}

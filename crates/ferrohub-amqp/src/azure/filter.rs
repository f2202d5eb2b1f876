//! The Event Hubs selector filter: where a partition receiver starts (amqp-contract §3.4).
//!
//! A receiver's source carries, under the key `apache.org:selector-filter:string`, a described
//! string: Python describes it with that symbol, JS with the ulong `0x0000468C00000004`. The
//! string is one comparison on a message annotation:
//!
//! ```text
//! amqp.annotation.x-opt-offset > '-1'              start of the partition
//! amqp.annotation.x-opt-offset > '@latest'         only new events
//! amqp.annotation.x-opt-offset >= '12345'          from an offset
//! amqp.annotation.x-opt-sequence-number > '41'     after a sequence number
//! amqp.annotation.x-opt-enqueued-time > '1603288810824'   after a time (ms)
//! ```

use crate::performative::{Fields, Source};
use crate::types::{Symbol, Value};

/// The filter-set key, and Python's descriptor.
pub const SELECTOR_FILTER: Symbol = Symbol::from_static("apache.org:selector-filter:string");
/// JS's descriptor for the same filter.
pub const SELECTOR_FILTER_CODE: u64 = 0x0000_468C_0000_0004;

/// Where a receiver starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPosition {
    /// The first retained event (`offset > '-1'`, with either operator).
    Start,
    /// Only events enqueued from now on (`offset > '@latest'`).
    Latest,
    /// After (or, inclusive, from) an offset, compared in the hub's offset order.
    Offset {
        /// The offset as sent.
        offset: String,
        /// `>=` rather than `>`.
        inclusive: bool,
    },
    /// After (or from) a sequence number.
    SequenceNumber {
        /// The sequence number.
        sequence_number: i64,
        /// `>=` rather than `>`.
        inclusive: bool,
    },
    /// After (or from) an enqueued time.
    EnqueuedTime {
        /// Milliseconds since the epoch.
        enqueued_time: i64,
        /// `>=` rather than `>` (JS never sends it; Python may).
        inclusive: bool,
    },
}

/// Why a filter is not one the hub understands. The hub refuses the link with
/// `com.microsoft:argument-error` or `amqp:not-implemented` accordingly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The selector is described by something else than its symbol or ulong.
    #[error("unknown selector filter descriptor")]
    UnknownDescriptor,
    /// The selector's value is not a string.
    #[error("the selector filter is not a string")]
    NotAString,
    /// The expression does not have the shape `amqp.annotation.{name} {op} '{value}'`.
    #[error("unsupported selector expression {0:?}")]
    Syntax(String),
    /// An annotation other than the offset, sequence number and enqueued time.
    #[error("unsupported selector annotation {0:?}")]
    UnknownAnnotation(String),
    /// A sequence number or time that is not an integer.
    #[error("invalid number {0:?} in the selector")]
    InvalidNumber(String),
}

/// The start position a receiver's source asks for; `None` without a selector filter.
pub fn event_position(source: &Source) -> Result<Option<EventPosition>, FilterError> {
    match &source.filter {
        Some(filter) => from_filter_set(filter),
        None => Ok(None),
    }
}

/// The start position in a filter set; `None` without a selector filter.
pub fn from_filter_set(filter: &Fields) -> Result<Option<EventPosition>, FilterError> {
    let Some(value) = filter.get(SELECTOR_FILTER.as_str()) else {
        return Ok(None);
    };
    let expression = match value {
        Value::Described(d) => {
            let known = match &d.descriptor {
                Value::Symbol(s) => *s == SELECTOR_FILTER,
                Value::Ulong(code) => *code == SELECTOR_FILTER_CODE,
                _ => false,
            };
            if !known {
                return Err(FilterError::UnknownDescriptor);
            }
            &d.value
        }
        // Undescribed is not what the SDKs send, but means the same.
        other => other,
    };
    let expression = expression.as_text().ok_or(FilterError::NotAString)?;
    parse_selector(expression).map(Some)
}

/// Parses a selector expression.
pub fn parse_selector(expression: &str) -> Result<EventPosition, FilterError> {
    let syntax = || FilterError::Syntax(expression.to_owned());
    let text = expression.trim();
    let prefix = "amqp.annotation.";
    let name_start = text
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| prefix.len())
        .ok_or_else(syntax)?;
    let rest = &text[name_start..];
    let name_end = rest
        .find(|c: char| c.is_whitespace() || c == '>' || c == '=' || c == '<')
        .ok_or_else(syntax)?;
    let name = &rest[..name_end];
    let rest = rest[name_end..].trim_start();
    let (inclusive, rest) = if let Some(rest) = rest.strip_prefix(">=") {
        (true, rest)
    } else if let Some(rest) = rest.strip_prefix('>') {
        (false, rest)
    } else {
        return Err(syntax());
    };
    let value = rest
        .trim()
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .filter(|v| !v.contains('\''))
        .ok_or_else(syntax)?;
    let number = || {
        value
            .parse::<i64>()
            .map_err(|_| FilterError::InvalidNumber(value.to_owned()))
    };
    match name.to_ascii_lowercase().as_str() {
        "x-opt-offset" => Ok(match value {
            "-1" => EventPosition::Start,
            "@latest" => EventPosition::Latest,
            offset => EventPosition::Offset {
                offset: offset.to_owned(),
                inclusive,
            },
        }),
        "x-opt-sequence-number" => Ok(EventPosition::SequenceNumber {
            sequence_number: number()?,
            inclusive,
        }),
        "x-opt-enqueued-time" => Ok(EventPosition::EnqueuedTime {
            enqueued_time: number()?,
            inclusive,
        }),
        _ => Err(FilterError::UnknownAnnotation(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(descriptor: Value, expression: &str) -> Source {
        let mut filter = Fields::new();
        filter.insert(SELECTOR_FILTER, Value::described(descriptor, expression));
        Source {
            filter: Some(filter),
            ..Source::default()
        }
    }

    #[test]
    fn both_descriptor_forms() {
        for descriptor in [
            Value::Symbol(SELECTOR_FILTER),
            Value::Ulong(77_567_109_365_764),
        ] {
            let s = source(descriptor, "amqp.annotation.x-opt-offset > '@latest'");
            assert_eq!(event_position(&s), Ok(Some(EventPosition::Latest)));
        }
        let s = source(Value::Ulong(1), "amqp.annotation.x-opt-offset > '-1'");
        assert_eq!(event_position(&s), Err(FilterError::UnknownDescriptor));
        assert_eq!(event_position(&Source::default()), Ok(None));
    }

    #[test]
    fn every_position_the_sdks_send() {
        let cases = [
            ("amqp.annotation.x-opt-offset > '-1'", EventPosition::Start),
            ("amqp.annotation.x-opt-offset >= '-1'", EventPosition::Start),
            (
                "amqp.annotation.x-opt-offset > '@latest'",
                EventPosition::Latest,
            ),
            (
                "amqp.annotation.x-opt-offset >= '12345'",
                EventPosition::Offset {
                    offset: "12345".into(),
                    inclusive: true,
                },
            ),
            (
                "amqp.annotation.x-opt-offset > '12345'",
                EventPosition::Offset {
                    offset: "12345".into(),
                    inclusive: false,
                },
            ),
            (
                "amqp.annotation.x-opt-sequence-number > '41'",
                EventPosition::SequenceNumber {
                    sequence_number: 41,
                    inclusive: false,
                },
            ),
            (
                "amqp.annotation.x-opt-sequence-number >= '0'",
                EventPosition::SequenceNumber {
                    sequence_number: 0,
                    inclusive: true,
                },
            ),
            (
                "amqp.annotation.x-opt-enqueued-time > '1603288810824'",
                EventPosition::EnqueuedTime {
                    enqueued_time: 1_603_288_810_824,
                    inclusive: false,
                },
            ),
            (
                "  AMQP.Annotation.x-opt-offset>'-1'  ",
                EventPosition::Start,
            ),
        ];
        for (expression, position) in cases {
            assert_eq!(parse_selector(expression), Ok(position), "{expression}");
        }
    }

    #[test]
    fn anything_else_is_an_error() {
        for expression in [
            "x-opt-offset > '-1'",
            "amqp.annotation.x-opt-offset = '-1'",
            "amqp.annotation.x-opt-offset < '5'",
            "amqp.annotation.x-opt-offset > -1",
            "amqp.annotation.x-opt-offset > 'a'b'",
            "amqp.annotation.x-opt-offset",
        ] {
            assert!(
                matches!(parse_selector(expression), Err(FilterError::Syntax(_))),
                "{expression}"
            );
        }
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-partition-key > 'k'"),
            Err(FilterError::UnknownAnnotation("x-opt-partition-key".into()))
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-sequence-number > 'ten'"),
            Err(FilterError::InvalidNumber("ten".into()))
        );
        let mut filter = Fields::new();
        filter.insert(SELECTOR_FILTER, Value::Int(1));
        assert_eq!(from_filter_set(&filter), Err(FilterError::NotAString));
    }
}

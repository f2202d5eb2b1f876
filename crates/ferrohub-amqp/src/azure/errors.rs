//! The error conditions the hub uses (amqp-contract §2.4, §3.7, §3.8) and Azure-style error
//! descriptions.
//!
//! The SDKs map conditions to their own error types (Node's `translateError`, C#'s
//! `AmqpErrorMapper`, Python's retry tables), so the condition decides what a user sees. Real
//! IoT Hub errors also carry a JSON description, e.g.
//! `{"errorCode":404001,"trackingId":"…","message":"…","timestampUtc":"…"}`, and the tracking
//! id in `info` under `com.microsoft:tracking-id`.

use std::fmt::Write as _;

use crate::performative::{AmqpError, Fields};
use crate::types::{Symbol, Value};

pub use crate::condition::{
    DETACH_FORCED, INTERNAL_ERROR, LINK_REDIRECT, MESSAGE_SIZE_EXCEEDED, NOT_FOUND,
    NOT_IMPLEMENTED, RESOURCE_LIMIT_EXCEEDED, STOLEN, UNAUTHORIZED_ACCESS,
};

/// A bad argument (Node: ArgumentError). Python does not retry it.
pub const ARGUMENT_ERROR: Symbol = Symbol::from_static("com.microsoft:argument-error");
/// An argument out of range (e.g. an unknown partition).
pub const ARGUMENT_OUT_OF_RANGE: Symbol =
    Symbol::from_static("com.microsoft:argument-out-of-range");
/// The device is throttled (Node: ThrottlingError).
pub const DEVICE_CONTAINER_THROTTLED: Symbol =
    Symbol::from_static("com.microsoft:device-container-throttled");
/// The hub's daily quota is used up (Node: IotHubQuotaExceededError).
pub const QUOTA_EXCEEDED: Symbol = Symbol::from_static("com.microsoft:quota-exceeded");
/// A transient timeout (Node: ServiceUnavailableError; Python backs off 2 s).
pub const TIMEOUT: Symbol = Symbol::from_static("com.microsoft:timeout");
/// The service is busy (Python backs off 4 s).
pub const SERVER_BUSY: Symbol = Symbol::from_static("com.microsoft:server-busy");
/// The hub does not exist.
pub const IOT_HUB_NOT_FOUND: Symbol = Symbol::from_static("com.microsoft:iot-hub-not-found-error");
/// The hub is suspended.
pub const IOT_HUB_SUSPENDED: Symbol = Symbol::from_static("com.microsoft:iot-hub-suspended");
/// The entity is disabled. Python does not retry it.
pub const ENTITY_DISABLED: Symbol = Symbol::from_static("com.microsoft:entity-disabled");
/// Authentication failed. Python does not retry it.
pub const AUTH_FAILED: Symbol = Symbol::from_static("com.microsoft:auth-failed");
/// A precondition failed. Python does not retry it.
pub const PRECONDITION_FAILED: Symbol = Symbol::from_static("com.microsoft:precondition-failed");

/// The `info` key of the tracking id; C# appends it to the message.
pub const TRACKING_ID: Symbol = Symbol::from_static("com.microsoft:tracking-id");
/// The `info` key of Azure's numeric error code.
pub const ERROR_CODE: Symbol = Symbol::from_static("com.microsoft:error-code");

/// Azure's JSON error description:
/// `{"errorCode":N,"trackingId":"…","message":"…","timestampUtc":"…"}`, the time formatted by
/// [`format_timestamp_utc`] from `timestamp_ms`. Pure: the caller supplies the tracking id and
/// the time.
pub fn json_description(
    error_code: u32,
    tracking_id: &str,
    message: &str,
    timestamp_ms: i64,
) -> String {
    let mut out = String::with_capacity(96 + tracking_id.len() + message.len());
    let _ = write!(out, "{{\"errorCode\":{error_code},\"trackingId\":");
    json_string(&mut out, tracking_id);
    out.push_str(",\"message\":");
    json_string(&mut out, message);
    out.push_str(",\"timestampUtc\":");
    json_string(&mut out, &format_timestamp_utc(timestamp_ms));
    out.push('}');
    out
}

/// An error as IoT Hub sends it: `condition`, the JSON description, and the tracking id in
/// `info`.
pub fn azure_error(
    condition: Symbol,
    error_code: u32,
    tracking_id: &str,
    message: &str,
    timestamp_ms: i64,
) -> AmqpError {
    let mut info = Fields::new();
    info.insert(TRACKING_ID, tracking_id);
    AmqpError::new(
        condition,
        json_description(error_code, tracking_id, message, timestamp_ms),
    )
    .with_info(info)
}

/// An `amqp:link:redirect` error with the four `info` keys pyamqp reads (amqp-contract §3.8):
/// where a client should re-attach.
pub fn redirect(hostname: &str, network_host: &str, port: u16, address: &str) -> AmqpError {
    let mut info = Fields::new();
    info.insert(Symbol::from_static("hostname"), hostname);
    info.insert(Symbol::from_static("network-host"), network_host);
    info.insert(Symbol::from_static("port"), Value::Int(port.into()));
    info.insert(Symbol::from_static("address"), address);
    AmqpError::condition(LINK_REDIRECT).with_info(info)
}

/// Formats ms since the epoch as `YYYY-MM-DDTHH:MM:SS.fffZ` (UTC, proleptic Gregorian),
/// which every SDK's date parser reads. Times before the year 0 or after 9999 are clamped.
pub fn format_timestamp_utc(timestamp_ms: i64) -> String {
    // 0000-01-01 and 9999-12-31T23:59:59.999 in ms since the epoch.
    let ms = timestamp_ms.clamp(-62_167_219_200_000, 253_402_300_799_999);
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// Howard Hinnant's `civil_from_days`: the date of a day count from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_azure_json() {
        assert_eq!(
            json_description(
                404_001,
                "abc",
                "DEVICE_NOT_EXIST \"d1\"\n",
                1_603_288_810_824
            ),
            r#"{"errorCode":404001,"trackingId":"abc","message":"DEVICE_NOT_EXIST \"d1\"\n","timestampUtc":"2020-10-21T14:00:10.824Z"}"#
        );
    }

    #[test]
    fn timestamps_format_in_utc() {
        assert_eq!(format_timestamp_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp_utc(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format_timestamp_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_timestamp_utc(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_timestamp_utc(i64::MIN), "0000-01-01T00:00:00.000Z");
    }

    #[test]
    fn azure_errors_carry_the_tracking_id() {
        let e = azure_error(NOT_FOUND, 404_001, "t1", "no device", 0);
        assert_eq!(e.condition, NOT_FOUND);
        assert_eq!(
            e.info
                .as_ref()
                .and_then(|i| i.get("com.microsoft:tracking-id")),
            Some(&Value::from("t1"))
        );
        let r = redirect(
            "hub.example",
            "hub.example",
            5671,
            "amqps://hub.example:5671/hub",
        );
        assert_eq!(r.condition, LINK_REDIRECT);
        assert_eq!(r.info.map(|i| i.len()), Some(4));
    }
}

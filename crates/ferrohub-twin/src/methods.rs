//! Direct methods: the service's request, what the device gets, what the service gets back, and
//! the errors of a method that could not be delivered or answered (contract §4, §12.6).
//!
//! * [`CloudToDeviceMethod`] reads `POST /twins/{id}[/modules/{mid}]/methods` bodies:
//!   `methodName` (required; printable ASCII except `$ ( ) < > @ , ; : \ " / [ ] ? = { }`, no
//!   space or tab), `payload` (any JSON, at most 128 KB as JSON text),
//!   `responseTimeoutInSeconds` (default 30, 5–300) and `connectTimeoutInSeconds` (default 0,
//!   0–300). Absent and `null` timeouts take the default (Python omits unset ones); other members
//!   are ignored (Node sends the caller's whole parameter object). Python sends `"payload": ""`
//!   for "no payload": it is a JSON string and reaches the device as `""`, as Node's e2e tests
//!   expect of a real hub when they send `''`.
//! * [`CloudToDeviceMethod::device_body`] is the body published on
//!   [`crate::topics::method_request_topic`]: the payload's JSON text as the service sent it, or
//!   `null` when there is none. Never empty: Node answers an empty body with an automatic 400
//!   and never calls the handler.
//! * [`MethodResult::from_device_response`] turns the device's answer
//!   (`$iothub/methods/res/{status}/?$rid=…`) into the service's `200` body
//!   `{"status":N,"payload":…}`: the device's JSON embedded verbatim, an empty body as `null`,
//!   anything else refused ([`MethodError::InvalidResponse`], which the hub reports as 400004).
//! * [`device_not_online_body`] (404103) and [`gateway_timeout_body`] (504101) are the bodies a
//!   real hub sends when the device is not reachable for methods or does not answer in time
//!   (contract §4.4): JSON inside the legacy `Message` member.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferrohub_types::ErrorCode;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::MethodError;
use crate::render::{to_json_value, to_json_vec};
use crate::time;

/// `responseTimeoutInSeconds` when the request has none.
pub const DEFAULT_RESPONSE_TIMEOUT_SECS: u32 = 30;
/// Smallest `responseTimeoutInSeconds`.
pub const MIN_RESPONSE_TIMEOUT_SECS: u32 = 5;
/// Largest `responseTimeoutInSeconds`.
pub const MAX_RESPONSE_TIMEOUT_SECS: u32 = 300;
/// `connectTimeoutInSeconds` when the request has none: the device must already be connected.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u32 = 0;
/// Largest `connectTimeoutInSeconds`.
pub const MAX_CONNECT_TIMEOUT_SECS: u32 = 300;
/// Largest payload, as JSON text.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// The characters a method name may not hold besides spaces, tabs and non-printable ones.
const FORBIDDEN_NAME_CHARS: &str = "$()<>@,;:\\\"/[]?={}";

/// A valid direct-method name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MethodName(String);

impl MethodName {
    /// Checks a name: non-empty, printable ASCII without `$ ( ) < > @ , ; : \ " / [ ] ? = { }`
    /// and without spaces or tabs, so it is one topic segment that neither SDK misreads.
    pub fn new(name: impl Into<String>) -> Result<Self, MethodError> {
        let name = name.into();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_graphic() && !FORBIDDEN_NAME_CHARS.contains(c));
        if valid {
            Ok(MethodName(name))
        } else {
            Err(MethodError::InvalidMethodName { name })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A direct-method request from the service, read and validated.
#[derive(Debug, Clone)]
pub struct CloudToDeviceMethod {
    name: MethodName,
    payload: Option<Box<RawValue>>,
    response_timeout_secs: u32,
    connect_timeout_secs: u32,
}

impl CloudToDeviceMethod {
    /// Reads a request body (a `CloudToDeviceMethod` JSON object).
    pub fn from_slice(body: &[u8]) -> Result<Self, MethodError> {
        // Members as raw JSON text, so the payload reaches the device exactly as sent.
        let mut members: BTreeMap<String, Box<RawValue>> =
            serde_json::from_slice(body).map_err(|e| {
                MethodError::Malformed(format!(
                    "The method request must be a JSON object with a 'methodName': {e}."
                ))
            })?;
        let member = |name: &str| -> Option<Value> {
            members
                .get(name)
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
        };
        let name = match member("methodName") {
            Some(Value::String(name)) => MethodName::new(name)?,
            _ => return Err(MethodError::MissingMethodName),
        };
        let response_timeout_secs = timeout(
            "responseTimeoutInSeconds",
            member("responseTimeoutInSeconds").as_ref(),
            DEFAULT_RESPONSE_TIMEOUT_SECS,
            MIN_RESPONSE_TIMEOUT_SECS,
            MAX_RESPONSE_TIMEOUT_SECS,
        )?;
        let connect_timeout_secs = timeout(
            "connectTimeoutInSeconds",
            member("connectTimeoutInSeconds").as_ref(),
            DEFAULT_CONNECT_TIMEOUT_SECS,
            0,
            MAX_CONNECT_TIMEOUT_SECS,
        )?;
        let payload = members.remove("payload").filter(|raw| raw.get() != "null");
        if let Some(payload) = &payload
            && payload.get().len() > MAX_PAYLOAD_BYTES
        {
            return Err(MethodError::PayloadTooLarge {
                size: payload.get().len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(CloudToDeviceMethod {
            name,
            payload,
            response_timeout_secs,
            connect_timeout_secs,
        })
    }

    /// Reads a request already parsed as JSON (a scheduled job's `cloudToDeviceMethod`).
    pub fn from_json(body: &Value) -> Result<Self, MethodError> {
        Self::from_slice(body.to_string().as_bytes())
    }

    /// The method's name.
    pub fn method_name(&self) -> &MethodName {
        &self.name
    }

    /// The payload's JSON text as the service sent it; `None` when absent or `null`.
    pub fn payload(&self) -> Option<&RawValue> {
        self.payload.as_deref()
    }

    /// How long to wait for the device's answer once the request is published.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.response_timeout_secs))
    }

    /// How long to wait for the device to connect and subscribe to methods; zero means fail at
    /// once with 404103 if it is not.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.connect_timeout_secs))
    }

    /// The body of the request published to the device: the payload, or `null`.
    pub fn device_body(&self) -> Vec<u8> {
        match &self.payload {
            Some(p) => p.get().as_bytes().to_vec(),
            None => b"null".to_vec(),
        }
    }
}

/// Reads a timeout: absent or `null` is `default`; otherwise an integer (written with or without
/// a zero fraction) within `min..=max`.
fn timeout(
    field: &'static str,
    value: Option<&Value>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, MethodError> {
    let value = match value {
        None | Some(Value::Null) => return Ok(default),
        Some(v) => v,
    };
    let whole = match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(max))
                .map(|f| f as u64)
        }),
        _ => None,
    };
    match whole.and_then(|w| u32::try_from(w).ok()) {
        Some(w) if (min..=max).contains(&w) => Ok(w),
        _ => Err(MethodError::TimeoutOutOfRange {
            field,
            value: value.to_string(),
            min,
            max,
        }),
    }
}

/// What the service gets back from a method the device answered: `{"status":N,"payload":…}`,
/// sent with HTTP 200 whatever the device's status (contract §4.2).
#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    status: i32,
    payload: Option<Box<RawValue>>,
}

impl MethodResult {
    /// From the device's response: the status from its topic, the body as published. An empty
    /// (or all-whitespace) body is a `null` payload; a body that is not JSON is refused.
    pub fn from_device_response(status: i32, body: &[u8]) -> Result<Self, MethodError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(MethodResult {
                status,
                payload: None,
            });
        }
        let payload: Box<RawValue> = serde_json::from_slice(body)
            .map_err(|e| MethodError::InvalidResponse(e.to_string()))?;
        Ok(MethodResult {
            status,
            payload: Some(payload),
        })
    }

    /// The device's status.
    pub fn status(&self) -> i32 {
        self.status
    }

    /// The device's JSON as it sent it; `None` for an empty body.
    pub fn payload(&self) -> Option<&RawValue> {
        self.payload.as_deref()
    }

    /// The result as a JSON value.
    pub fn to_json(&self) -> Value {
        to_json_value(self)
    }

    /// The service's response body.
    pub fn body(&self) -> Vec<u8> {
        to_json_vec(self)
    }
}

/// The message of 404103 when the request had no connect timeout (2024 wording).
pub const DEVICE_NOT_ONLINE_MESSAGE: &str = "The operation failed because the requested device \
     isn't online or hasn't registered the direct method callback. To learn more, see \
     https://aka.ms/iothub404103";
/// The message of 404103 after waiting in vain for the connect timeout (2018 wording).
pub const CONNECT_TIMEOUT_MESSAGE: &str = "Timed out waiting for device to connect.";
/// The message of 504101.
pub const RESPONSE_TIMEOUT_MESSAGE: &str = "Timed out waiting for the response from device.";

/// The HTTP 404 body for 404103 `DeviceNotOnline`: the identity is not connected or not
/// subscribed to methods, at once when `connect_timeout` is zero, or after waiting that long.
/// `info.timeout` is the connect timeout as `hh:mm:ss`.
pub fn device_not_online_body(
    connect_timeout: Duration,
    tracking_id: &str,
    now: DateTime<Utc>,
) -> Vec<u8> {
    let secs = connect_timeout.as_secs();
    let message = if secs == 0 {
        DEVICE_NOT_ONLINE_MESSAGE
    } else {
        CONNECT_TIMEOUT_MESSAGE
    };
    let timeout = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    json_in_message(
        ErrorCode::DeviceNotOnline,
        message,
        Info {
            timeout: Some(timeout),
        },
        tracking_id,
        now,
    )
}

/// The HTTP 504 body for 504101 `GatewayTimeout`: the device did not answer within the response
/// timeout.
pub fn gateway_timeout_body(tracking_id: &str, now: DateTime<Utc>) -> Vec<u8> {
    json_in_message(
        ErrorCode::GatewayTimeout,
        RESPONSE_TIMEOUT_MESSAGE,
        Info { timeout: None },
        tracking_id,
        now,
    )
}

#[derive(Serialize)]
struct Info {
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
}

/// `{"Message":"<inner JSON as a string>","ExceptionMessage":""}` with the inner members in
/// Azure's order.
fn json_in_message(
    code: ErrorCode,
    message: &str,
    info: Info,
    tracking_id: &str,
    now: DateTime<Utc>,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Inner<'a> {
        error_code: u32,
        tracking_id: &'a str,
        message: &'a str,
        info: Info,
        timestamp_utc: String,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Outer {
        message: String,
        exception_message: &'static str,
    }
    let inner = to_json_vec(&Inner {
        error_code: code.number(),
        tracking_id,
        message,
        info,
        timestamp_utc: time::format(now),
    });
    to_json_vec(&Outer {
        message: String::from_utf8_lossy(&inner).into_owned(),
        exception_message: "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn parse(v: Value) -> Result<CloudToDeviceMethod, MethodError> {
        CloudToDeviceMethod::from_slice(v.to_string().as_bytes())
    }

    #[test]
    fn names() {
        for ok in ["reboot", "getCarVIN", "a-b_c.d!~*'%&#+|^`", "x"] {
            assert!(MethodName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a b", "a\tb", "a/b", "a?b", "a=b", "$edge", "(x)", "<x>", "a@b", "a,b", "a;b",
            "a:b", "a\\b", "a\"b", "[x]", "{x}", "é", "a\u{7f}",
        ] {
            assert_eq!(
                MethodName::new(bad),
                Err(MethodError::InvalidMethodName {
                    name: bad.to_owned()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn what_the_sdks_send() {
        // Node: every field, payload null.
        let m = parse(json!({"methodName":"ping","responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0,"payload":null}))
            .expect("Node's request");
        assert_eq!(m.method_name().as_str(), "ping");
        assert!(m.payload().is_none());
        assert_eq!(m.device_body(), b"null");
        assert_eq!(m.response_timeout(), Duration::from_secs(30));
        assert_eq!(m.connect_timeout(), Duration::ZERO);

        // Python with no payload and no timeouts.
        let m = CloudToDeviceMethod::from_slice(br#"{"methodName": "ping", "payload": ""}"#)
            .expect("Python's request");
        assert_eq!(m.device_body(), b"\"\"");
        assert_eq!(m.response_timeout(), Duration::from_secs(30));
        assert_eq!(m.connect_timeout(), Duration::ZERO);

        // Python with a payload, verbatim; Node's extra fields ignored.
        let m = CloudToDeviceMethod::from_slice(
            br#"{"methodName": "reboot", "payload": {"delay": 5}, "responseTimeoutInSeconds": 45, "connectTimeoutInSeconds": 15, "extra": true}"#,
        )
        .expect("valid");
        assert_eq!(m.device_body(), br#"{"delay": 5}"#);
        assert_eq!(m.response_timeout(), Duration::from_secs(45));
        assert_eq!(m.connect_timeout(), Duration::from_secs(15));

        // No payload member at all.
        let m = parse(json!({"methodName": "m"})).expect("valid");
        assert_eq!(m.device_body(), b"null");

        // Null timeouts take the defaults; a zero fraction is accepted.
        let m = parse(json!({"methodName": "m", "responseTimeoutInSeconds": null, "connectTimeoutInSeconds": 10.0}))
            .expect("valid");
        assert_eq!(m.response_timeout(), Duration::from_secs(30));
        assert_eq!(m.connect_timeout(), Duration::from_secs(10));

        let from_value =
            CloudToDeviceMethod::from_json(&json!({"methodName": "m", "payload": [1]}))
                .expect("valid");
        assert_eq!(from_value.device_body(), b"[1]");
    }

    #[test]
    fn timeout_ranges() {
        let with = |field: &str, v: Value| parse(json!({"methodName": "m", field: v}));
        for (field, ok, bad) in [
            (
                "responseTimeoutInSeconds",
                vec![5, 300],
                vec![json!(4), json!(301), json!(0)],
            ),
            ("connectTimeoutInSeconds", vec![0, 300], vec![json!(301)]),
        ] {
            for v in ok {
                assert!(with(field, json!(v)).is_ok(), "{field} {v}");
            }
            for v in bad
                .into_iter()
                .chain([json!(-1), json!(7.5), json!("30"), json!(true)])
            {
                assert!(
                    matches!(
                        with(field, v.clone()),
                        Err(MethodError::TimeoutOutOfRange { .. })
                    ),
                    "{field} {v}"
                );
            }
        }
        let err = with("responseTimeoutInSeconds", json!(3600)).expect_err("too long");
        assert_eq!(
            err.to_string(),
            "'responseTimeoutInSeconds' must be an integer from 5 to 300 seconds; it is 3600."
        );
        assert_eq!(err.code(), 400004);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse(json!({})).expect_err("no name"),
            MethodError::MissingMethodName
        );
        assert_eq!(
            parse(json!({"methodName": 5})).expect_err("not a string"),
            MethodError::MissingMethodName
        );
        assert!(matches!(
            parse(json!({"methodName": "a b"})),
            Err(MethodError::InvalidMethodName { .. })
        ));
        assert!(matches!(
            CloudToDeviceMethod::from_slice(b"[1]"),
            Err(MethodError::Malformed(_))
        ));
        assert!(matches!(
            CloudToDeviceMethod::from_slice(b"{"),
            Err(MethodError::Malformed(_))
        ));
    }

    #[test]
    fn payload_size_at_and_over_the_limit() {
        // A JSON string of n characters is n + 2 bytes of JSON text.
        let at_limit = "x".repeat(MAX_PAYLOAD_BYTES - 2);
        assert!(parse(json!({"methodName": "m", "payload": at_limit})).is_ok());
        let over = "x".repeat(MAX_PAYLOAD_BYTES - 1);
        assert_eq!(
            parse(json!({"methodName": "m", "payload": over})).expect_err("too large"),
            MethodError::PayloadTooLarge {
                size: MAX_PAYLOAD_BYTES + 1,
                max: MAX_PAYLOAD_BYTES
            }
        );
    }

    #[test]
    fn device_responses() {
        let r = MethodResult::from_device_response(201, br#"{"result": true}"#).expect("JSON");
        assert_eq!(r.status(), 201);
        assert_eq!(r.body(), br#"{"status":201,"payload":{"result": true}}"#);
        // Surrounding whitespace is not part of the value.
        let r = MethodResult::from_device_response(200, b" \"s\" \n").expect("JSON");
        assert_eq!(r.payload().map(RawValue::get), Some("\"s\""));
        // Numbers beyond 64 bits survive untouched.
        let r = MethodResult::from_device_response(200, b"123456789012345678901234567890")
            .expect("JSON");
        assert_eq!(
            r.body(),
            b"{\"status\":200,\"payload\":123456789012345678901234567890}"
        );
        // Empty body: null payload.
        let r = MethodResult::from_device_response(400, b"").expect("empty");
        assert_eq!(r.to_json(), json!({"status": 400, "payload": null}));
        assert!(MethodResult::from_device_response(200, b"  ").is_ok());
        let err = MethodResult::from_device_response(200, b"not json").expect_err("not JSON");
        assert!(matches!(err, MethodError::InvalidResponse(_)));
        assert_eq!(err.code(), 400004);
    }

    #[test]
    fn error_bodies_match_the_real_hub() {
        let now = Utc
            .timestamp_opt(1_710_410_089, 653_656_700)
            .single()
            .expect("valid time");
        let tracking = "aa761f96e9174d0e849c96a8b2e10a8c-TimeStamp:03/14/2024 09:54:49";
        let body = device_not_online_body(Duration::ZERO, tracking, now);
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            r#"{"Message":"{\"errorCode\":404103,\"trackingId\":\"aa761f96e9174d0e849c96a8b2e10a8c-TimeStamp:03/14/2024 09:54:49\",\"message\":\"The operation failed because the requested device isn't online or hasn't registered the direct method callback. To learn more, see https://aka.ms/iothub404103\",\"info\":{\"timeout\":\"00:00:00\"},\"timestampUtc\":\"2024-03-14T09:54:49.6536567Z\"}","ExceptionMessage":""}"#
        );

        let body = device_not_online_body(Duration::from_secs(60), "t", now);
        let outer: Value = serde_json::from_slice(&body).expect("JSON");
        let inner: Value =
            serde_json::from_str(outer["Message"].as_str().expect("string")).expect("JSON");
        assert_eq!(
            inner["message"],
            json!("Timed out waiting for device to connect.")
        );
        assert_eq!(inner["info"], json!({"timeout": "00:01:00"}));
        assert!(
            String::from_utf8(device_not_online_body(Duration::from_secs(300), "t", now))
                .expect("utf-8")
                .contains(r#"\"timeout\":\"00:05:00\""#)
        );

        let tracking = "40a7dd98fc2d4836b1c045996665b23d-G:9-TimeStamp:12/03/2019 15:00:09";
        let now = Utc
            .timestamp_opt(1_575_385_209, 8_252_300)
            .single()
            .expect("valid time");
        assert_eq!(
            String::from_utf8(gateway_timeout_body(tracking, now)).expect("utf-8"),
            r#"{"Message":"{\"errorCode\":504101,\"trackingId\":\"40a7dd98fc2d4836b1c045996665b23d-G:9-TimeStamp:12/03/2019 15:00:09\",\"message\":\"Timed out waiting for the response from device.\",\"info\":{},\"timestampUtc\":\"2019-12-03T15:00:09.0082523Z\"}","ExceptionMessage":""}"#
        );
    }
}

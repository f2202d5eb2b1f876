//! The MQTT topics of twins and direct methods (contract §1.1, §1.3, §4.1, §12.1), as string
//! functions for the MQTT layer.
//!
//! Devices publish:
//!
//! * `$iothub/twin/GET/?$rid={rid}` — get the twin ([`parse_twin_get_topic`]);
//! * `$iothub/twin/PATCH/properties/reported/?$rid={rid}[&$version={v}]` — patch the reported
//!   properties, optionally only if the reported `$version` is still `v`
//!   ([`parse_reported_patch_topic`]);
//! * `$iothub/methods/res/{status}/?$rid={rid}` — answer a direct method
//!   ([`parse_method_response_topic`]).
//!
//! The hub publishes:
//!
//! * `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]` ([`twin_response_topic`]);
//! * `$iothub/twin/PATCH/properties/desired/?$version={v}` ([`desired_patch_topic`]);
//! * `$iothub/methods/POST/{name}/?$rid={rid}` ([`method_request_topic`]).
//!
//! Rules the SDK parsers impose on what the hub publishes: the `/` before `?` stays (Python
//! takes the status or method name from the fourth `/` segment); the status is a decimal integer;
//! **every** query item is `key=value` (Python's `_extract_properties` indexes `pair[1]` of each
//! `&` item and fails otherwise); the `$rid` is the request's, byte for byte (both SDKs drop
//! responses whose rid they do not know). So the rid is kept exactly as the device wrote it
//! (never decoded) and echoed as is.
//!
//! Reading is lenient where it costs nothing: query items other than `$rid` and `$version` are
//! ignored, whatever their form. A request without a (non-empty) `$rid` cannot be answered; one
//! whose other parts are wrong carries its rid in the error ([`TopicError::request_id`]) so the
//! hub can still answer with an error status.

use crate::error::TopicError;
use crate::methods::MethodName;

/// The filter a device subscribes to for twin responses.
pub const TWIN_RESPONSE_FILTER: &str = "$iothub/twin/res/#";
/// The filter a device subscribes to for desired-property notifications.
pub const DESIRED_PATCH_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";
/// The filter a device subscribes to for direct-method requests. A device without it is not
/// reachable for methods (404103, contract §4.3).
pub const METHOD_REQUEST_FILTER: &str = "$iothub/methods/POST/#";

const TWIN_GET_PREFIX: &str = "$iothub/twin/GET/";
const REPORTED_PATCH_PREFIX: &str = "$iothub/twin/PATCH/properties/reported/";
const METHOD_RESPONSE_PREFIX: &str = "$iothub/methods/res/";

/// A reported-properties patch request, from its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedPatchTopic<'a> {
    /// The request id, to echo.
    pub rid: &'a str,
    /// The reported `$version` the device expects to patch, when it sent one.
    pub version: Option<u64>,
}

/// A device's answer to a direct method, from its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodResponseTopic<'a> {
    /// The status the device chose.
    pub status: i32,
    /// The request id the hub sent with the request.
    pub rid: &'a str,
}

/// Any twin request or method response a device publishes under `$iothub/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceTopic<'a> {
    /// `$iothub/twin/GET/?$rid=…`.
    TwinGet {
        /// The request id, to echo.
        rid: &'a str,
    },
    /// `$iothub/twin/PATCH/properties/reported/?$rid=…[&$version=…]`.
    ReportedPatch(ReportedPatchTopic<'a>),
    /// `$iothub/methods/res/{status}/?$rid=…`.
    MethodResponse(MethodResponseTopic<'a>),
}

/// Reads any device-published twin or method topic.
pub fn parse_device_topic(topic: &str) -> Result<DeviceTopic<'_>, TopicError> {
    if topic.starts_with(TWIN_GET_PREFIX) {
        parse_twin_get_topic(topic).map(|rid| DeviceTopic::TwinGet { rid })
    } else if topic.starts_with(REPORTED_PATCH_PREFIX) {
        parse_reported_patch_topic(topic).map(DeviceTopic::ReportedPatch)
    } else if topic.starts_with(METHOD_RESPONSE_PREFIX) {
        parse_method_response_topic(topic).map(DeviceTopic::MethodResponse)
    } else {
        Err(unrecognized(topic))
    }
}

/// Reads `$iothub/twin/GET/?$rid={rid}` and returns the rid.
pub fn parse_twin_get_topic(topic: &str) -> Result<&str, TopicError> {
    let query = topic
        .strip_prefix(TWIN_GET_PREFIX)
        .and_then(|rest| rest.strip_prefix('?'))
        .ok_or_else(|| unrecognized(topic))?;
    Ok(Query::parse(query)?.rid)
}

/// Reads `$iothub/twin/PATCH/properties/reported/?$rid={rid}[&$version={v}]`.
pub fn parse_reported_patch_topic(topic: &str) -> Result<ReportedPatchTopic<'_>, TopicError> {
    let query = topic
        .strip_prefix(REPORTED_PATCH_PREFIX)
        .and_then(|rest| rest.strip_prefix('?'))
        .ok_or_else(|| unrecognized(topic))?;
    let q = Query::parse(query)?;
    let version = match q.version {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| TopicError::InvalidVersion {
            rid: q.rid.to_owned(),
            value: v.to_owned(),
        })?),
    };
    Ok(ReportedPatchTopic {
        rid: q.rid,
        version,
    })
}

/// Reads `$iothub/methods/res/{status}/?$rid={rid}`.
pub fn parse_method_response_topic(topic: &str) -> Result<MethodResponseTopic<'_>, TopicError> {
    let (status, query) = topic
        .strip_prefix(METHOD_RESPONSE_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(status, rest)| Some((status, rest.strip_prefix('?')?)))
        .ok_or_else(|| unrecognized(topic))?;
    let rid = Query::parse(query)?.rid;
    let status = status
        .parse::<i32>()
        .map_err(|_| TopicError::InvalidStatus {
            rid: rid.to_owned(),
            value: status.to_owned(),
        })?;
    Ok(MethodResponseTopic { status, rid })
}

/// `$iothub/twin/res/{status}/?$rid={rid}`, with `&$version={v}` when `version` is given (the
/// new reported version, on the `204` answering a reported patch). `rid` is the request's, as
/// parsed.
pub fn twin_response_topic(status: u16, rid: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("$iothub/twin/res/{status}/?$rid={rid}&$version={v}"),
        None => format!("$iothub/twin/res/{status}/?$rid={rid}"),
    }
}

/// `$iothub/twin/PATCH/properties/desired/?$version={version}`.
pub fn desired_patch_topic(version: u64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

/// `$iothub/methods/POST/{name}/?$rid={rid}`. The name goes unencoded (Node takes the segment
/// raw, Python URL-decodes it; [`MethodName`]'s character set makes both read the same for names
/// without `%`). `rid` is the hub's own request id: non-empty and made of characters that need no
/// encoding (the real hub uses decimal counters), so that both SDKs echo it unchanged.
pub fn method_request_topic(name: &MethodName, rid: &str) -> String {
    format!("$iothub/methods/POST/{}/?$rid={rid}", name.as_str())
}

fn unrecognized(topic: &str) -> TopicError {
    TopicError::Unrecognized(topic.to_owned())
}

/// The items of a topic's query that the hub reads.
struct Query<'a> {
    rid: &'a str,
    version: Option<&'a str>,
}

impl<'a> Query<'a> {
    fn parse(query: &'a str) -> Result<Self, TopicError> {
        let mut rid = None;
        let mut version = None;
        for item in query.split('&') {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            match key {
                "$rid" if rid.is_some() => return Err(TopicError::DuplicateRequestId),
                "$rid" => rid = Some(value),
                "$version" => version = Some(value),
                _ => {}
            }
        }
        match rid {
            Some(rid) if !rid.is_empty() => Ok(Query { rid, version }),
            _ => Err(TopicError::MissingRequestId),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Python's `_extract_properties` and `get_twin_status_code_from_topic` do with a topic
    /// the hub publishes: status from segment 3, every `&` item split on `=` with `pair[1]`
    /// required, `$` stripped from keys. `None` where Python would raise.
    fn python_reads(topic: &str) -> Option<(String, Vec<(String, String)>)> {
        let parts: Vec<&str> = topic.split('/').collect();
        let segment = parts.get(3)?.to_string();
        let query = topic.split('?').nth(1)?;
        let mut items = Vec::new();
        for entry in query.split('&') {
            let pair: Vec<&str> = entry.split('=').collect();
            let value = pair.get(1)?;
            items.push((
                pair[0].trim_start_matches('$').to_owned(),
                (*value).to_owned(),
            ));
        }
        Some((segment, items))
    }

    #[test]
    fn get_topics() {
        let rid = "f6d09b74-1de0-4f88-9cdf-a44f7fea5127";
        let topic = format!("$iothub/twin/GET/?$rid={rid}");
        assert_eq!(parse_twin_get_topic(&topic), Ok(rid));
        assert_eq!(parse_device_topic(&topic), Ok(DeviceTopic::TwinGet { rid }));
        // Unknown items are ignored, whatever their form.
        assert_eq!(
            parse_twin_get_topic("$iothub/twin/GET/?x&$rid=7&y=1&"),
            Ok("7")
        );
        // The rid is kept exactly as sent (not URL-decoded).
        assert_eq!(
            parse_twin_get_topic("$iothub/twin/GET/?$rid=a%20b"),
            Ok("a%20b")
        );
        for missing in [
            "$iothub/twin/GET/?",
            "$iothub/twin/GET/?$rid=",
            "$iothub/twin/GET/?$rid",
            "$iothub/twin/GET/?rid=1",
        ] {
            assert_eq!(
                parse_twin_get_topic(missing),
                Err(TopicError::MissingRequestId),
                "{missing}"
            );
        }
        assert_eq!(
            parse_twin_get_topic("$iothub/twin/GET/?$rid=1&$rid=2"),
            Err(TopicError::DuplicateRequestId)
        );
        for wrong in [
            "$iothub/twin/GET/",
            "$iothub/twin/GET?$rid=1",
            "$iothub/twin/GET/x/?$rid=1",
            "$iothub/twin/get/?$rid=1",
        ] {
            assert!(
                matches!(
                    parse_twin_get_topic(wrong),
                    Err(TopicError::Unrecognized(_))
                ),
                "{wrong}"
            );
        }
    }

    #[test]
    fn reported_patch_topics() {
        assert_eq!(
            parse_reported_patch_topic("$iothub/twin/PATCH/properties/reported/?$rid=3d09"),
            Ok(ReportedPatchTopic {
                rid: "3d09",
                version: None
            })
        );
        assert_eq!(
            parse_device_topic("$iothub/twin/PATCH/properties/reported/?$rid=1&$version=5"),
            Ok(DeviceTopic::ReportedPatch(ReportedPatchTopic {
                rid: "1",
                version: Some(5)
            }))
        );
        assert_eq!(
            parse_reported_patch_topic("$iothub/twin/PATCH/properties/reported/?$version=5&$rid=1"),
            Ok(ReportedPatchTopic {
                rid: "1",
                version: Some(5)
            })
        );
        let err = parse_reported_patch_topic(
            "$iothub/twin/PATCH/properties/reported/?$rid=9&$version=five",
        )
        .expect_err("not a number");
        assert_eq!(err.request_id(), Some("9"));
        assert_eq!(
            parse_reported_patch_topic("$iothub/twin/PATCH/properties/reported/?$version=1"),
            Err(TopicError::MissingRequestId)
        );
        assert!(matches!(
            parse_reported_patch_topic("$iothub/twin/PATCH/properties/desired/?$rid=1"),
            Err(TopicError::Unrecognized(_))
        ));
    }

    #[test]
    fn method_response_topics() {
        assert_eq!(
            parse_method_response_topic("$iothub/methods/res/201/?$rid=1"),
            Ok(MethodResponseTopic {
                status: 201,
                rid: "1"
            })
        );
        assert_eq!(
            parse_device_topic("$iothub/methods/res/-1/?$rid=abc"),
            Ok(DeviceTopic::MethodResponse(MethodResponseTopic {
                status: -1,
                rid: "abc"
            }))
        );
        let err = parse_method_response_topic("$iothub/methods/res/ok/?$rid=4")
            .expect_err("not a status");
        assert_eq!(
            err,
            TopicError::InvalidStatus {
                rid: "4".to_owned(),
                value: "ok".to_owned()
            }
        );
        assert_eq!(err.request_id(), Some("4"));
        assert!(matches!(
            parse_method_response_topic("$iothub/methods/res/200?$rid=1"),
            Err(TopicError::Unrecognized(_))
        ));
        assert_eq!(
            parse_method_response_topic("$iothub/methods/res/200/?"),
            Err(TopicError::MissingRequestId)
        );
        assert!(matches!(
            parse_device_topic("devices/d1/messages/events/"),
            Err(TopicError::Unrecognized(_))
        ));
    }

    #[test]
    fn built_topics_read_back_in_python() {
        let rid = "3d091e6e-7c4b-4b1a-9d37-0c6e2b3c9a11";
        let t = twin_response_topic(204, rid, Some(5));
        assert_eq!(t, format!("$iothub/twin/res/204/?$rid={rid}&$version=5"));
        let (status, items) = python_reads(&t).expect("Python can read it");
        assert_eq!(status.parse::<i32>(), Ok(204));
        assert_eq!(
            items,
            [
                ("rid".to_owned(), rid.to_owned()),
                ("version".to_owned(), "5".to_owned())
            ]
        );

        let t = twin_response_topic(200, "get_twin", None);
        assert_eq!(t, "$iothub/twin/res/200/?$rid=get_twin");
        assert!(python_reads(&t).is_some());

        let t = desired_patch_topic(4);
        assert_eq!(t, "$iothub/twin/PATCH/properties/desired/?$version=4");
        let (_, items) = python_reads(&t).expect("Python can read it");
        assert_eq!(items, [("version".to_owned(), "4".to_owned())]);

        let name = MethodName::new("reboot").expect("valid name");
        let t = method_request_topic(&name, "1");
        assert_eq!(t, "$iothub/methods/POST/reboot/?$rid=1");
        let (segment, items) = python_reads(&t).expect("Python can read it");
        assert_eq!(segment, "reboot");
        assert_eq!(items, [("rid".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn rid_is_echoed_byte_for_byte() {
        for rid in [
            "1",
            "f6d09b74-1de0-4f88-9cdf-a44f7fea5127",
            "a%2Fb",
            "~x_y.z",
        ] {
            let request = format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}");
            let parsed = parse_reported_patch_topic(&request).expect("valid");
            let response = twin_response_topic(204, parsed.rid, Some(2));
            assert_eq!(
                response,
                format!("$iothub/twin/res/204/?$rid={rid}&$version=2")
            );
        }
    }
}

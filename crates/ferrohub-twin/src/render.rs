//! What the hub sends: the REST twin, the device's twin `GET` body, desired notifications and the
//! device-side error body.
//!
//! * [`RestTwin`] (`GET`/`PATCH`/`PUT /twins/{id}`, query rows, contract §2.1): the identity
//!   fields the caller passes in a [`TwinIdentity`] (they come from the registry and from
//!   connection tracking), `version`, `tags` (`{}` when empty: Python's `Twin.tags` would
//!   otherwise be `None`), and `properties.desired` / `.reported` each with its values,
//!   `$metadata` and `$version`. Times are UTC with seven fractional digits; a time never set is
//!   `0001-01-01T00:00:00Z`.
//! * [`DeviceTwin`] (MQTT/AMQP twin `GET`, contract §1.3, §12.2):
//!   `{"desired":{…,"$version":D},"reported":{…,"$version":R}}`, no tags, no `$metadata`.
//! * [`DesiredPatch::body`] (contract §1.1): the patch members and `"$version"`. Python drops a
//!   patch without `$version` silently.
//! * [`device_error_body`] (contract §1.4, §12.1):
//!   `{"errorCode":N,"trackingId":…,"message":…,"timestampUtc":…}`, which every twin response
//!   with a status of 300 or more must carry: Node ignores the status and looks only for
//!   `errorCode` (an error status with an empty body crashes Node on `GET`).
//!
//! The views serialize with their members in Azure's order; `to_json`/`body` helpers give a
//! `serde_json::Value` or bytes.

use chrono::{DateTime, Utc};
use ferrohub_types::ErrorCode;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::time;
use crate::topics;
use crate::twin::{DesiredPatch, Properties, Twin};

/// Serializes one of the crate's own views. They only write string keys and never fail on
/// their own, so serializing into memory cannot fail; an empty vector would be the answer if it
/// ever did.
pub(crate) fn to_json_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Like [`to_json_vec`], into a `Value`.
pub(crate) fn to_json_value<T: Serialize + ?Sized>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The identity fields of a REST twin, which the twin itself does not hold (contract §2.1).
/// Plain values: the caller maps them from the registry's types and connection tracking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinIdentity {
    /// `deviceId`.
    pub device_id: String,
    /// `moduleId`, for a module twin only (rendered right after `deviceId`).
    pub module_id: Option<String>,
    /// `deviceEtag`: the ETag of the device (or module) identity, unquoted.
    pub device_etag: String,
    /// `status`: `enabled` or `disabled`.
    pub status: String,
    /// `statusReason`, rendered only when set.
    pub status_reason: Option<String>,
    /// `statusUpdateTime` (the twin's name; the identity calls it `statusUpdatedTime`); `None`
    /// renders as `0001-01-01T00:00:00Z`.
    pub status_update_time: Option<DateTime<Utc>>,
    /// `connectionState`: `Connected` or `Disconnected` (capitalised).
    pub connection_state: String,
    /// `lastActivityTime`; `None` renders as `0001-01-01T00:00:00Z`.
    pub last_activity_time: Option<DateTime<Utc>>,
    /// `cloudToDeviceMessageCount`.
    pub cloud_to_device_message_count: u64,
    /// `authenticationType`: `sas`, `selfSigned`, `certificateAuthority` or `none`.
    pub authentication_type: String,
    /// `x509Thumbprint` (both null for SAS identities).
    pub x509_thumbprint: X509Thumbprint,
    /// `modelId`: the PnP model id from the device's MQTT username; `""` when none.
    pub model_id: String,
    /// `capabilities.iotEdge`; `None` leaves `capabilities` out (module twins).
    pub iot_edge: Option<bool>,
    /// `deviceScope`, for edge devices and their children; left out when `None`.
    pub device_scope: Option<String>,
    /// `parentScopes`, for nested edge; left out when empty.
    pub parent_scopes: Vec<String>,
}

impl Default for TwinIdentity {
    /// An enabled, disconnected SAS device with empty id and ETag and no edge capability.
    fn default() -> Self {
        TwinIdentity {
            device_id: String::new(),
            module_id: None,
            device_etag: String::new(),
            status: "enabled".to_owned(),
            status_reason: None,
            status_update_time: None,
            connection_state: "Disconnected".to_owned(),
            last_activity_time: None,
            cloud_to_device_message_count: 0,
            authentication_type: "sas".to_owned(),
            x509_thumbprint: X509Thumbprint::default(),
            model_id: String::new(),
            iot_edge: Some(false),
            device_scope: None,
            parent_scopes: Vec::new(),
        }
    }
}

/// `x509Thumbprint` of a twin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Thumbprint {
    /// `primaryThumbprint`, `null` when none.
    pub primary_thumbprint: Option<String>,
    /// `secondaryThumbprint`, `null` when none.
    pub secondary_thumbprint: Option<String>,
}

/// The REST rendering of a twin (contract §2.1); see [`Twin::rest_view`].
#[derive(Debug, Clone, Copy)]
pub struct RestTwin<'a> {
    twin: &'a Twin,
    identity: &'a TwinIdentity,
}

impl RestTwin<'_> {
    /// The rendering as a JSON value (for query rows and projections).
    pub fn to_json(&self) -> Value {
        to_json_value(self)
    }

    /// The rendering as a response body.
    pub fn body(&self) -> Vec<u8> {
        to_json_vec(self)
    }
}

impl Serialize for RestTwin<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let id = self.identity;
        let twin = self.twin;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("deviceId", &id.device_id)?;
        if let Some(module_id) = &id.module_id {
            map.serialize_entry("moduleId", module_id)?;
        }
        map.serialize_entry("etag", &twin.etag().to_string())?;
        map.serialize_entry("deviceEtag", &id.device_etag)?;
        map.serialize_entry("status", &id.status)?;
        if let Some(reason) = &id.status_reason {
            map.serialize_entry("statusReason", reason)?;
        }
        map.serialize_entry(
            "statusUpdateTime",
            &time::format_optional(id.status_update_time),
        )?;
        map.serialize_entry("connectionState", &id.connection_state)?;
        map.serialize_entry(
            "lastActivityTime",
            &time::format_optional(id.last_activity_time),
        )?;
        map.serialize_entry(
            "cloudToDeviceMessageCount",
            &id.cloud_to_device_message_count,
        )?;
        map.serialize_entry("authenticationType", &id.authentication_type)?;
        map.serialize_entry("x509Thumbprint", &id.x509_thumbprint)?;
        map.serialize_entry("modelId", &id.model_id)?;
        map.serialize_entry("version", &twin.version())?;
        map.serialize_entry("tags", twin.tags())?;
        map.serialize_entry(
            "properties",
            &RestProperties {
                desired: WithMetadata(twin.desired()),
                reported: WithMetadata(twin.reported()),
            },
        )?;
        if let Some(iot_edge) = id.iot_edge {
            map.serialize_entry("capabilities", &Capabilities { iot_edge })?;
        }
        if let Some(scope) = &id.device_scope {
            map.serialize_entry("deviceScope", scope)?;
        }
        if !id.parent_scopes.is_empty() {
            map.serialize_entry("parentScopes", &id.parent_scopes)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Capabilities {
    iot_edge: bool,
}

#[derive(Serialize)]
struct RestProperties<'a> {
    desired: WithMetadata<'a>,
    reported: WithMetadata<'a>,
}

/// A section as REST renders it: values, `$metadata`, `$version`.
struct WithMetadata<'a>(&'a Properties);

impl Serialize for WithMetadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut map = s.serialize_map(Some(p.values().len() + 2))?;
        for (k, v) in p.values() {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("$metadata", p.metadata())?;
        map.serialize_entry("$version", &p.version())?;
        map.end()
    }
}

/// Members followed by `"$version"`: a section as devices see it and as it is stored, or a
/// desired notification.
pub(crate) struct WithVersion<'a> {
    values: &'a Map<String, Value>,
    version: u64,
}

impl<'a> WithVersion<'a> {
    pub(crate) fn of(p: &'a Properties) -> Self {
        WithVersion {
            values: p.values(),
            version: p.version(),
        }
    }
}

impl Serialize for WithVersion<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.values.len() + 1))?;
        for (k, v) in self.values {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("$version", &self.version)?;
        map.end()
    }
}

/// The twin as a device gets it (contract §1.2, §1.3); see [`Twin::device_view`].
#[derive(Clone, Copy)]
pub struct DeviceTwin<'a>(&'a Twin);

impl DeviceTwin<'_> {
    /// The body as a JSON value.
    pub fn to_json(&self) -> Value {
        to_json_value(self)
    }

    /// The body of the `200` response to `$iothub/twin/GET`.
    pub fn body(&self) -> Vec<u8> {
        to_json_vec(self)
    }
}

impl Serialize for DeviceTwin<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("desired", &WithVersion::of(self.0.desired()))?;
        map.serialize_entry("reported", &WithVersion::of(self.0.reported()))?;
        map.end()
    }
}

impl Twin {
    /// The REST rendering of this twin with the identity's fields.
    pub fn rest_view<'a>(&'a self, identity: &'a TwinIdentity) -> RestTwin<'a> {
        RestTwin {
            twin: self,
            identity,
        }
    }

    /// The device's view of this twin: desired and reported properties with their `$version`s.
    pub fn device_view(&self) -> DeviceTwin<'_> {
        DeviceTwin(self)
    }
}

impl DesiredPatch {
    /// The notification as a JSON value: the patch members and `"$version"`.
    pub fn to_json(&self) -> Value {
        to_json_value(&self.with_version())
    }

    /// The notification body: the patch members and `"$version"`.
    pub fn body(&self) -> Vec<u8> {
        to_json_vec(&self.with_version())
    }

    /// The notification topic, `$iothub/twin/PATCH/properties/desired/?$version={version}`.
    pub fn topic(&self) -> String {
        topics::desired_patch_topic(self.version)
    }

    fn with_version(&self) -> WithVersion<'_> {
        WithVersion {
            values: &self.patch,
            version: self.version,
        }
    }
}

/// The body of a twin response with an error status (`$iothub/twin/res/{status}`, status =
/// `code.http_status()`): `{"errorCode":N,"trackingId":…,"message":…,"timestampUtc":…}`, the
/// shape real hubs send (contract §1.4). `tracking_id` and `now` are the caller's.
pub fn device_error_body(
    code: ErrorCode,
    message: &str,
    tracking_id: &str,
    now: DateTime<Utc>,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        error_code: u32,
        tracking_id: &'a str,
        message: &'a str,
        timestamp_utc: String,
    }
    to_json_vec(&Body {
        error_code: code.number(),
        tracking_id,
        message,
        timestamp_utc: time::format(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::IfMatch;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, nanos).single().expect("valid time")
    }

    #[test]
    fn fresh_device_get_body_matches_a_real_hub() {
        let twin = Twin::new(at(0, 0));
        assert_eq!(
            String::from_utf8(twin.device_view().body()).expect("utf-8"),
            r#"{"desired":{"$version":1},"reported":{"$version":1}}"#
        );
    }

    #[test]
    fn device_get_body_has_no_tags_and_no_metadata() {
        let twin = Twin::new(at(0, 0))
            .service_patch(
                &json!({"tags": {"t": 1}, "properties": {"desired": {"fw": "1.0"}}}),
                &IfMatch::Any,
                at(1, 0),
            )
            .expect("valid")
            .twin
            .device_report(br#"{"a": 0}"#, None, at(2, 0))
            .expect("valid")
            .twin;
        assert_eq!(
            twin.device_view().to_json(),
            json!({"desired": {"fw": "1.0", "$version": 2}, "reported": {"a": 0, "$version": 2}})
        );
        // Values come before "$version", as on a real hub.
        assert_eq!(
            String::from_utf8(twin.device_view().body()).expect("utf-8"),
            r#"{"desired":{"fw":"1.0","$version":2},"reported":{"a":0,"$version":2}}"#
        );
    }

    #[test]
    fn rest_twin_of_a_new_device() {
        let twin = Twin::new(at(1_697_117_932, 310_841_900));
        let identity = TwinIdentity {
            device_id: "dev1".to_owned(),
            device_etag: "NzMzMTE3MTAz".to_owned(),
            ..TwinIdentity::default()
        };
        let stamp = "2023-10-12T13:38:52.3108419Z";
        assert_eq!(
            twin.rest_view(&identity).to_json(),
            json!({
                "deviceId": "dev1",
                "etag": "AAAAAAAAAAE=",
                "deviceEtag": "NzMzMTE3MTAz",
                "status": "enabled",
                "statusUpdateTime": "0001-01-01T00:00:00Z",
                "connectionState": "Disconnected",
                "lastActivityTime": "0001-01-01T00:00:00Z",
                "cloudToDeviceMessageCount": 0,
                "authenticationType": "sas",
                "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
                "modelId": "",
                "version": 2,
                "tags": {},
                "properties": {
                    "desired": {"$metadata": {"$lastUpdated": stamp, "$lastUpdatedVersion": 1}, "$version": 1},
                    "reported": {"$metadata": {"$lastUpdated": stamp}, "$version": 1}
                },
                "capabilities": {"iotEdge": false}
            })
        );
        // Azure's member order.
        let body = String::from_utf8(twin.rest_view(&identity).body()).expect("utf-8");
        let order = [
            "\"deviceId\"",
            "\"etag\"",
            "\"deviceEtag\"",
            "\"status\"",
            "\"statusUpdateTime\"",
            "\"connectionState\"",
            "\"lastActivityTime\"",
            "\"cloudToDeviceMessageCount\"",
            "\"authenticationType\"",
            "\"x509Thumbprint\"",
            "\"modelId\"",
            "\"version\"",
            "\"tags\"",
            "\"properties\"",
            "\"capabilities\"",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|k| body.find(k).expect("member present"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{body}");
    }

    #[test]
    fn rest_twin_of_a_module_with_optional_fields() {
        let twin = Twin::new(at(0, 0))
            .service_patch(
                &json!({"properties": {"desired": {"a": {"b": 1}}}}),
                &IfMatch::Any,
                at(5, 0),
            )
            .expect("valid")
            .twin;
        let identity = TwinIdentity {
            device_id: "dev1".to_owned(),
            module_id: Some("mod1".to_owned()),
            status_reason: Some("maintenance".to_owned()),
            status_update_time: Some(at(3, 0)),
            connection_state: "Connected".to_owned(),
            last_activity_time: Some(at(4, 500)),
            x509_thumbprint: X509Thumbprint {
                primary_thumbprint: Some("AB".repeat(20)),
                secondary_thumbprint: None,
            },
            iot_edge: None,
            device_scope: Some("ms-azure-iot-edge://edge-1".to_owned()),
            parent_scopes: vec!["ms-azure-iot-edge://edge-0".to_owned()],
            ..TwinIdentity::default()
        };
        let j = twin.rest_view(&identity).to_json();
        assert_eq!(j["moduleId"], json!("mod1"));
        assert_eq!(j["statusReason"], json!("maintenance"));
        assert_eq!(j["statusUpdateTime"], json!("1970-01-01T00:00:03.0000000Z"));
        assert_eq!(j["lastActivityTime"], json!("1970-01-01T00:00:04.0000005Z"));
        assert_eq!(
            j["x509Thumbprint"]["primaryThumbprint"],
            json!("AB".repeat(20))
        );
        assert!(j.get("capabilities").is_none());
        assert_eq!(j["deviceScope"], json!("ms-azure-iot-edge://edge-1"));
        assert_eq!(j["parentScopes"], json!(["ms-azure-iot-edge://edge-0"]));
        assert_eq!(j["etag"], json!("AAAAAAAAAAI="));
        assert_eq!(j["version"], json!(3));
        assert_eq!(j["properties"]["desired"]["a"], json!({"b": 1}));
        assert_eq!(j["properties"]["desired"]["$version"], json!(2));
        assert_eq!(
            j["properties"]["desired"]["$metadata"]["a"]["b"]["$lastUpdatedVersion"],
            json!(2)
        );
        let body = String::from_utf8(twin.rest_view(&identity).body()).expect("utf-8");
        assert!(
            body.starts_with(r#"{"deviceId":"dev1","moduleId":"mod1","etag""#),
            "{body}"
        );
    }

    #[test]
    fn desired_notification_body_carries_the_version() {
        let updated = Twin::new(at(0, 0))
            .service_patch(
                &json!({"properties": {"desired": {"fw": "2.0", "old": null}}}),
                &IfMatch::Any,
                at(1, 0),
            )
            .expect("valid");
        let patch = updated.desired_patch.expect("desired changed");
        assert_eq!(
            patch.topic(),
            "$iothub/twin/PATCH/properties/desired/?$version=2"
        );
        assert_eq!(
            String::from_utf8(patch.body()).expect("utf-8"),
            r#"{"fw":"2.0","old":null,"$version":2}"#
        );
        assert_eq!(patch.to_json()["$version"], json!(2));
    }

    #[test]
    fn error_body_shape() {
        let body = device_error_body(
            ErrorCode::ArgumentInvalid,
            "bad key",
            "0345b491aa",
            at(1_704_067_200, 0),
        );
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            r#"{"errorCode":400004,"trackingId":"0345b491aa","message":"bad key","timestampUtc":"2024-01-01T00:00:00.0000000Z"}"#
        );
    }
}

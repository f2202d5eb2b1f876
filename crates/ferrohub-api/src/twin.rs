//! Twins and direct methods (twins-methods-contract §2–§4): the twin as `GET /twins/{id}`
//! returns it (and as `PATCH`/`PUT` bodies carry parts of it), and the method call and result
//! of `POST /twins/{id}/methods`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{ConnectionState, DeviceCapabilities, DeviceStatus, X509Thumbprint};

/// A device or module twin. Every member is optional so the same type reads the hub's full
/// twin and writes the partial twins of a `PATCH` (`tags`, `properties.desired`); members left
/// `None` are not sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Twin {
    /// The device.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub device_id: String,
    /// The module, for a module twin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The twin's ETag (base64 of an 8-byte counter, `AAAAAAAAAAE=` for a new twin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The identity's ETag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_etag: Option<String>,
    /// `enabled` or `disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    /// Why the status was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// When the status last changed (`0001-01-01T00:00:00Z`: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_update_time: Option<String>,
    /// `Connected` or `Disconnected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<ConnectionState>,
    /// When the identity was last active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<String>,
    /// Cloud-to-device messages waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_to_device_message_count: Option<u64>,
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_type: Option<String>,
    /// The identity's X.509 thumbprints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x509_thumbprint: Option<X509Thumbprint>,
    /// The PnP model id, `""` when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// The twin's version: ETag counter + reported `$version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Tags: the back end's, never sent to devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub tags: Option<Map<String, Value>>,
    /// Desired and reported properties.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<TwinProperties>,
    /// The device's capabilities (device twins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<DeviceCapabilities>,
    /// The edge scope of the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// The scopes of the device's parents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
}

/// `properties` of a twin: each section's members, with `$metadata` and `$version` when read
/// from the hub.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct TwinProperties {
    /// Written by the back end, sent to the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub desired: Option<Map<String, Value>>,
    /// Written by the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub reported: Option<Map<String, Value>>,
}

impl TwinProperties {
    /// A section's `$version`.
    pub fn version(section: Option<&Map<String, Value>>) -> Option<u64> {
        section?.get("$version")?.as_u64()
    }
}

/// A direct method call (`POST /twins/{id}[/modules/{mid}]/methods`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CloudToDeviceMethod {
    /// The method's name.
    pub method_name: String,
    /// The payload sent to the device, any JSON; the device gets `null` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub payload: Option<Value>,
    /// How long to wait for the device's answer: 5–300 s, 30 when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_timeout_in_seconds: Option<u32>,
    /// How long to wait for the device to connect: 0–300 s, 0 (it must be connected) when
    /// absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_in_seconds: Option<u32>,
}

/// The device's answer to a direct method.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct CloudToDeviceMethodResult {
    /// The status the device chose.
    pub status: i32,
    /// The device's JSON payload (`null` when it sent none).
    #[schema(value_type = Object)]
    pub payload: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hub_twin_reads_and_a_patch_writes_only_what_it_has() {
        let read: Twin = serde_json::from_value(json!({
            "deviceId": "d1", "etag": "AAAAAAAAAAI=", "deviceEtag": "MA==", "status": "enabled",
            "statusUpdateTime": "0001-01-01T00:00:00Z", "connectionState": "Connected",
            "lastActivityTime": "2024-03-14T09:54:49.6536567Z", "cloudToDeviceMessageCount": 0,
            "authenticationType": "sas",
            "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
            "modelId": "", "version": 3, "tags": {"a": 1},
            "properties": {"desired": {"x": 1, "$metadata": {}, "$version": 2},
                           "reported": {"$metadata": {}, "$version": 1}},
            "capabilities": {"iotEdge": false}
        }))
        .expect("a twin");
        assert_eq!(read.connection_state, Some(ConnectionState::Connected));
        let props = read.properties.as_ref().expect("properties");
        assert_eq!(TwinProperties::version(props.desired.as_ref()), Some(2));
        assert_eq!(read.version, Some(3));

        let patch = Twin {
            tags: Some(serde_json::from_value(json!({"loc": null})).expect("map")),
            ..Twin::default()
        };
        assert_eq!(
            serde_json::to_value(&patch).expect("json"),
            json!({"tags": {"loc": null}})
        );
    }

    #[test]
    fn method_calls_leave_out_unset_timeouts() {
        let call = CloudToDeviceMethod {
            method_name: "reboot".into(),
            ..CloudToDeviceMethod::default()
        };
        assert_eq!(
            serde_json::to_value(&call).expect("json"),
            json!({"methodName": "reboot"})
        );
        let result: CloudToDeviceMethodResult =
            serde_json::from_value(json!({"status": 201, "payload": {"ok": true}}))
                .expect("result");
        assert_eq!(result.status, 201);
    }
}

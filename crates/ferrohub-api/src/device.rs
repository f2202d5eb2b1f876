//! Device and module identities as Azure's registry API writes them (azure-contract §8.1).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// Whether a device may connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// The device may connect.
    #[serde(alias = "Enabled")]
    Enabled,
    /// The device is refused.
    #[serde(alias = "Disabled")]
    Disabled,
}

/// Whether a device has a live MQTT or AMQP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ConnectionState {
    /// No live connection.
    #[serde(alias = "disconnected")]
    Disconnected,
    /// A live connection.
    #[serde(alias = "connected")]
    Connected,
}

/// How an identity authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuthenticationType {
    /// Symmetric keys and SAS tokens.
    #[serde(alias = "Sas", alias = "SAS")]
    Sas,
    /// A self-signed X.509 certificate identified by thumbprint.
    #[serde(alias = "SelfSigned")]
    SelfSigned,
    /// An X.509 certificate signed by a CA the hub trusts.
    #[serde(alias = "CertificateAuthority")]
    CertificateAuthority,
    /// No credentials of its own (a module authenticating through its device, say).
    #[serde(alias = "None")]
    None,
}

/// A primary and a secondary symmetric key, base64. Empty or absent keys in a request ask the
/// hub to generate them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SymmetricKey {
    /// Base64 primary key.
    pub primary_key: Option<String>,
    /// Base64 secondary key.
    pub secondary_key: Option<String>,
}

/// X.509 thumbprints (hex SHA-1 or SHA-256 of the DER certificate).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct X509Thumbprint {
    /// Primary thumbprint.
    pub primary_thumbprint: Option<String>,
    /// Secondary thumbprint.
    pub secondary_thumbprint: Option<String>,
}

/// An identity's credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthenticationMechanism {
    /// Symmetric keys, for `sas`.
    pub symmetric_key: Option<SymmetricKey>,
    /// Thumbprints, for `selfSigned`.
    pub x509_thumbprint: Option<X509Thumbprint>,
    /// The kind of credential; `sas` when absent.
    #[serde(rename = "type")]
    pub kind: Option<AuthenticationType>,
}

/// Device capabilities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceCapabilities {
    /// Whether the device is an IoT Edge device.
    pub iot_edge: bool,
}

/// A device identity. In requests only `deviceId`, `status`, `statusReason`, `authentication`,
/// `capabilities`, `deviceScope` and `parentScopes` are read; the rest is the hub's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Device {
    /// The device id (case-sensitive).
    pub device_id: String,
    /// Hub-generated; changes when the device is deleted and created again.
    pub generation_id: Option<String>,
    /// The device's ETag (also in the `ETag` response header, quoted).
    pub etag: Option<String>,
    /// `Connected` or `Disconnected`.
    pub connection_state: Option<ConnectionState>,
    /// `enabled` or `disabled`.
    pub status: Option<DeviceStatus>,
    /// Why the status was set; up to 128 characters.
    pub status_reason: Option<String>,
    /// When the connection state last changed.
    #[schema(value_type = String)]
    pub connection_state_updated_time: Timestamp,
    /// When the status last changed.
    #[schema(value_type = String)]
    pub status_updated_time: Timestamp,
    /// When the device last connected, sent or received.
    #[schema(value_type = String)]
    pub last_activity_time: Timestamp,
    /// Messages waiting in the device's cloud-to-device queue.
    pub cloud_to_device_message_count: u32,
    /// Credentials.
    pub authentication: Option<AuthenticationMechanism>,
    /// Capabilities.
    pub capabilities: Option<DeviceCapabilities>,
    /// Edge device scope.
    pub device_scope: Option<String>,
    /// Edge parent scopes.
    pub parent_scopes: Option<Vec<String>>,
}

/// A module identity within a device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Module {
    /// The module id.
    pub module_id: String,
    /// The device the module belongs to.
    pub device_id: String,
    /// Hub-generated; changes when the module is deleted and created again.
    pub generation_id: Option<String>,
    /// The module's ETag.
    pub etag: Option<String>,
    /// `Connected` or `Disconnected`.
    pub connection_state: Option<ConnectionState>,
    /// When the connection state last changed.
    #[schema(value_type = String)]
    pub connection_state_updated_time: Timestamp,
    /// When the module last connected, sent or received.
    #[schema(value_type = String)]
    pub last_activity_time: Timestamp,
    /// Messages waiting in the module's queue.
    pub cloud_to_device_message_count: u32,
    /// Credentials.
    pub authentication: Option<AuthenticationMechanism>,
    /// Who manages the module (for example `IotEdge`).
    pub managed_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_serializes_like_azure() {
        let d = Device {
            device_id: "edison1".into(),
            status: Some(DeviceStatus::Enabled),
            ..Device::default()
        };
        let v = serde_json::to_value(&d).expect("serializes");
        assert_eq!(v["deviceId"], "edison1");
        assert_eq!(v["status"], "enabled");
        assert_eq!(v["statusReason"], serde_json::Value::Null);
        assert_eq!(v["lastActivityTime"], "0001-01-01T00:00:00");
        assert_eq!(v["cloudToDeviceMessageCount"], 0);
    }

    #[test]
    fn python_sdk_request_parses() {
        let body = r#"{"deviceId": "dev1", "status": "enabled", "authentication": {"symmetricKey": {"primaryKey": "", "secondaryKey": ""}, "type": "sas"}, "capabilities": {"iotEdge": false}, "etag": null}"#;
        let d: Device = serde_json::from_str(body).expect("parses");
        assert_eq!(d.device_id, "dev1");
        let auth = d.authentication.expect("authentication");
        assert_eq!(auth.kind, Some(AuthenticationType::Sas));
        assert_eq!(
            auth.symmetric_key.and_then(|k| k.primary_key).as_deref(),
            Some("")
        );
    }
}

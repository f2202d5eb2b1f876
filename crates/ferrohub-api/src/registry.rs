//! Bulk registry operations and statistics (azure-contract §8.3–8.5).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{AuthenticationMechanism, DeviceCapabilities, DeviceStatus};

/// One record of a bulk registry request (`POST /devices`) or of an import/export file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ExportImportDevice {
    /// The device id.
    pub id: String,
    /// The module id, for module records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The identity's ETag, for the `*IfMatchETag` modes.
    #[serde(
        rename = "eTag",
        alias = "etag",
        skip_serializing_if = "Option::is_none"
    )]
    pub e_tag: Option<String>,
    /// `create`, `update`, `updateIfMatchETag`, `createOrUpdate` (the default when absent),
    /// `createOrUpdateIfMatchETag`, `delete`, `deleteIfMatchETag`, `updateTwin`,
    /// `updateTwinIfMatchETag`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_mode: Option<String>,
    /// `enabled` or `disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    /// Why the status was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationMechanism>,
    /// The twin's ETag: exported; on import, checked by `updateTwinIfMatchETag` only.
    #[serde(
        rename = "twinETag",
        alias = "twinEtag",
        skip_serializing_if = "Option::is_none"
    )]
    pub twin_e_tag: Option<String>,
    /// Twin tags: exported; on import, they replace the twin's tags (every mode but the deletes).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub tags: Option<serde_json::Value>,
    /// Twin properties, `{"desired":{…},"reported":{…}}` with `$metadata` and `$version` as
    /// exported; on import, `desired` replaces the twin's desired properties (the rest is
    /// ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub properties: Option<serde_json::Value>,
    /// Capabilities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<DeviceCapabilities>,
    /// Edge device scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// Edge parent scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
}

/// The outcome of a bulk registry request: HTTP 200 when `isSuccessful`, else 400.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct BulkRegistryOperationResult {
    /// Whether every record succeeded.
    pub is_successful: bool,
    /// One entry per failed record.
    pub errors: Vec<DeviceRegistryOperationError>,
    /// One entry per record that succeeded with a warning.
    pub warnings: Vec<DeviceRegistryOperationWarning>,
}

/// Why one bulk record failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceRegistryOperationError {
    /// The record's device id.
    pub device_id: String,
    /// The error code's name, such as `DeviceAlreadyExists`.
    pub error_code: String,
    /// A human-readable explanation.
    pub error_status: String,
    /// The record's module id, for module records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The import mode of the failed record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// A warning about one bulk record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceRegistryOperationWarning {
    /// The record's device id.
    pub device_id: String,
    /// The warning's name.
    pub warning_code: String,
    /// A human-readable explanation.
    pub warning_status: String,
}

/// `GET /statistics/devices`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RegistryStatistics {
    /// All device identities.
    pub total_device_count: u64,
    /// Enabled devices.
    pub enabled_device_count: u64,
    /// Disabled devices.
    pub disabled_device_count: u64,
}

/// `GET /statistics/service`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceStatistics {
    /// Devices with a live connection.
    pub connected_device_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csharp_record_without_import_mode_parses() {
        let rec: ExportImportDevice =
            serde_json::from_str(r#"{"id":"Device1","eTag":"MA==","status":"enabled"}"#)
                .expect("parses");
        assert_eq!(rec.id, "Device1");
        assert_eq!(rec.e_tag.as_deref(), Some("MA=="));
        assert_eq!(rec.import_mode, None);
        // Node's Registry passes Device objects from get(), which spell it `etag`.
        let rec: ExportImportDevice =
            serde_json::from_str(r#"{"id":"d","etag":"MQ==","twinEtag":"AAAAAAAAAAE="}"#)
                .expect("parses");
        assert_eq!(rec.e_tag.as_deref(), Some("MQ=="));
        assert_eq!(rec.twin_e_tag.as_deref(), Some("AAAAAAAAAAE="));
    }
}

//! Bulk registry requests (`POST /devices`): wire records to registry records and back.
//!
//! A record the hub cannot even read (an invalid id, an unknown import mode) fails alone, as a
//! per-record error, like every other record-level failure; only a request the hub cannot
//! read as a whole is a 400 ArgumentInvalid.

use ferrohub_api as api;
use ferrohub_registry as reg;
use ferrohub_types::{DeviceId, ErrorCode, ModuleId};

use super::convert::auth_from_api;
use super::error::ApiError;

/// Most records one bulk request may carry.
pub(crate) const MAX_BULK_RECORDS: usize = 100;

/// Records ready for the registry, and errors for those that were not readable.
pub(crate) struct Records {
    pub(crate) valid: Vec<reg::ImportRecord>,
    pub(crate) invalid: Vec<api::DeviceRegistryOperationError>,
}

pub(crate) fn records(body: Vec<api::ExportImportDevice>) -> Result<Records, ApiError> {
    if body.len() > MAX_BULK_RECORDS {
        return Err(ApiError::new(
            ErrorCode::TooManyDevices,
            format!(
                "A bulk request may carry at most {MAX_BULK_RECORDS} devices; this one has {}.",
                body.len()
            ),
        ));
    }
    let mut out = Records {
        valid: Vec::with_capacity(body.len()),
        invalid: Vec::new(),
    };
    for rec in body {
        match record(&rec) {
            Ok(r) => out.valid.push(r),
            Err(message) => out.invalid.push(api::DeviceRegistryOperationError {
                device_id: rec.id.clone(),
                error_code: ErrorCode::ArgumentInvalid.name().to_owned(),
                error_status: message,
                module_id: rec.module_id.clone(),
                operation: rec.import_mode.clone(),
            }),
        }
    }
    Ok(out)
}

/// One wire record as a registry record (a missing `importMode` is `createOrUpdate`), or why it
/// cannot be read. Shared with import jobs.
pub(crate) fn record(rec: &api::ExportImportDevice) -> Result<reg::ImportRecord, String> {
    let device_id = DeviceId::new(rec.id.clone()).map_err(|e| e.to_string())?;
    let module_id = rec
        .module_id
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| ModuleId::new(m).map_err(|e| e.to_string()))
        .transpose()?;
    let import_mode = match rec.import_mode.as_deref() {
        None | Some("") => reg::ImportMode::CreateOrUpdate,
        Some(m) => m
            .parse()
            .map_err(|_| format!("Unknown importMode {m:?}."))?,
    };
    let mut r = reg::ImportRecord::new(device_id, import_mode);
    r.module_id = module_id;
    r.etag = rec.e_tag.clone();
    r.status = rec.status.map(|s| match s {
        api::DeviceStatus::Enabled => reg::DeviceStatus::Enabled,
        api::DeviceStatus::Disabled => reg::DeviceStatus::Disabled,
    });
    r.status_reason = rec.status_reason.clone();
    r.authentication = auth_from_api(rec.authentication.as_ref());
    r.iot_edge = rec.capabilities.as_ref().is_some_and(|c| c.iot_edge);
    r.device_scope = rec.device_scope.clone();
    r.parent_scopes = rec.parent_scopes.clone().unwrap_or_default();
    r.twin = twin_data(rec)?;
    r.twin_etag = rec.twin_e_tag.clone();
    Ok(r)
}

/// A record's twin data as a replace of the twin's `tags` and `properties.desired` (those it
/// carries; `properties.reported`, `$metadata` and `$version` of an exported record are
/// ignored), or `None` when it carries neither.
fn twin_data(rec: &api::ExportImportDevice) -> Result<Option<ferrohub_twin::TwinUpdate>, String> {
    if rec.tags.is_none() && rec.properties.is_none() {
        return Ok(None);
    }
    let mut body = serde_json::Map::new();
    if let Some(tags) = &rec.tags {
        body.insert("tags".to_owned(), tags.clone());
    }
    if let Some(properties) = &rec.properties {
        body.insert("properties".to_owned(), properties.clone());
    }
    ferrohub_twin::TwinUpdate::replace(&serde_json::Value::Object(body))
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The wire result: the unreadable records' errors first, then the registry's.
pub(crate) fn result_to_api(
    invalid: Vec<api::DeviceRegistryOperationError>,
    result: &reg::BulkResult,
) -> api::BulkRegistryOperationResult {
    let mut errors = invalid;
    errors.extend(
        result
            .errors
            .iter()
            .map(|e| api::DeviceRegistryOperationError {
                device_id: e.device_id.clone(),
                error_code: e.error_code.name().to_owned(),
                error_status: e.error_status.clone(),
                module_id: e.module_id.clone(),
                operation: None,
            }),
    );
    let warnings = result
        .warnings
        .iter()
        .map(|w| api::DeviceRegistryOperationWarning {
            device_id: w.device_id.clone(),
            warning_code: w.warning_code.clone(),
            warning_status: w.warning_status.clone(),
        })
        .collect();
    api::BulkRegistryOperationResult {
        is_successful: errors.is_empty(),
        errors,
        warnings,
    }
}

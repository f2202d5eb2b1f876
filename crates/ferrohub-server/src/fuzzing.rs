//! Entry points for the fuzz targets (`fuzz/`): the parsers that take untrusted REST input, run
//! exactly as the REST layer and the jobs run them. Not an API: hidden from the documentation
//! and free to change with the targets.
//!
//! Each function returns whether the input was accepted; a panic (or a broken invariant, which
//! they assert) is the bug the fuzzer looks for.

use std::path::{Component, Path};

use ferrohub_api as api;
use ferrohub_types::{DeviceId, ModuleId};

use crate::jobs::blob::{self, Container};
use crate::jobs::files::FileRoot;
use crate::rest::{bulk, convert, extract};

/// `PUT /devices/{id}` and `PUT /devices/{id}/modules/{mid}` bodies: parsed as a JSON object,
/// then converted to the registry's specification for the path's ids.
pub fn identity_body(bytes: &[u8]) -> bool {
    let device = extract::parse_json_object::<api::Device>(bytes).and_then(|body| {
        let id = DeviceId::new(if body.device_id.is_empty() {
            "fuzz-device"
        } else {
            body.device_id.as_str()
        })
        .map_err(|e| crate::rest::error::ApiError::invalid(e.to_string()))?;
        convert::device_spec(id, &body)
    });
    let module = extract::parse_json_object::<api::Module>(bytes).and_then(|body| {
        let id = DeviceId::new("fuzz-device")
            .map_err(|e| crate::rest::error::ApiError::invalid(e.to_string()))?;
        let mid = ModuleId::new("fuzz-module")
            .map_err(|e| crate::rest::error::ApiError::invalid(e.to_string()))?;
        convert::module_spec(id, mid, &body)
    });
    device.is_ok() || module.is_ok()
}

/// `POST /devices` bodies: a JSON array of records, split into readable records and per-record
/// errors. Every record lands on exactly one side.
pub fn bulk_body(bytes: &[u8]) -> bool {
    let Ok(records) = extract::parse_json::<Vec<api::ExportImportDevice>>(bytes) else {
        return false;
    };
    let count = records.len();
    match bulk::records(records) {
        Ok(split) => {
            assert_eq!(split.valid.len() + split.invalid.len(), count);
            true
        }
        Err(_) => {
            assert!(count > bulk::MAX_BULK_RECORDS);
            false
        }
    }
}

/// One line of an import job's input blob.
pub fn import_line(line: &[u8]) -> bool {
    crate::jobs::run::parse_import_line(line, 1).is_ok()
}

/// A job container URI and a blob name: parsed and, for a `file://` container, placed in a file
/// root at `/srv/jobs`. A container the root accepts is below it, with plain segments only; a
/// blob name accepted becomes plain segments of the blob's URL or path.
pub fn container_uri(uri: &str, blob_name: &str) -> bool {
    let Ok(container) = Container::parse(uri) else {
        return false;
    };
    let name_ok = blob::check_blob_name(blob_name).is_ok();
    if name_ok {
        let shown = container.describe(blob_name);
        // A URL container's signature never shows.
        assert!(!shown.contains('?') || !matches!(container, Container::Url(_)));
    }
    if let Container::Dir(dir) = &container {
        let root = FileRoot::unchecked(Path::new("/srv/jobs"));
        if let Ok(rel) = root.relative(dir) {
            assert!(
                rel.components().all(|c| matches!(c, Component::Normal(_))),
                "{}",
                rel.display()
            );
            assert!(Path::new("/srv/jobs").join(&rel).starts_with("/srv/jobs"));
        }
        if name_ok {
            assert!(
                Path::new(blob_name)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))),
                "{blob_name}"
            );
        }
    }
    true
}

//! Rendering results: aligned tables and key/value lists for people, pretty JSON for scripts.

use ferrohub_api::{
    AuthenticationMechanism, AuthenticationType, CloudToDeviceMethodResult, ConnectionState,
    Device, DeviceStatus, Module, Timestamp, Twin,
};
use serde::Serialize;

use super::{Failure, Output};

/// Pretty JSON of `value`.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, Failure> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Failure::Failed(format!("cannot print the result as JSON: {e}")))
}

/// Columns separated by two spaces and padded to the widest cell; the last column is not
/// padded, so lines carry no trailing spaces.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < widths.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One `name  value` line per field, names padded to the longest.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (name, value) in pairs {
        let line = format!("{name:<width$}  {value}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn time(t: &Timestamp) -> String {
    match t.0 {
        Some(_) => t.to_string(),
        None => "never".to_owned(),
    }
}

fn opt(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

fn status(s: Option<DeviceStatus>) -> String {
    match s {
        Some(DeviceStatus::Enabled) => "enabled",
        Some(DeviceStatus::Disabled) => "disabled",
        None => "-",
    }
    .to_owned()
}

fn connection(s: Option<ConnectionState>) -> String {
    match s {
        Some(ConnectionState::Connected) => "Connected",
        Some(ConnectionState::Disconnected) => "Disconnected",
        None => "-",
    }
    .to_owned()
}

fn auth_type(a: Option<&AuthenticationMechanism>) -> String {
    let kind = match a {
        None => return "-".to_owned(),
        Some(a) => a.kind.unwrap_or(AuthenticationType::Sas),
    };
    match kind {
        AuthenticationType::Sas => "sas",
        AuthenticationType::SelfSigned => "selfSigned",
        AuthenticationType::CertificateAuthority => "certificateAuthority",
        AuthenticationType::None => "none",
    }
    .to_owned()
}

/// The credential lines of an identity: keys for SAS, thumbprints for self-signed X.509.
fn credential_fields(a: Option<&AuthenticationMechanism>, out: &mut Vec<(&'static str, String)>) {
    out.push(("authentication", auth_type(a)));
    let Some(a) = a else { return };
    if let Some(k) = &a.symmetric_key {
        out.push(("primaryKey", opt(k.primary_key.as_deref())));
        out.push(("secondaryKey", opt(k.secondary_key.as_deref())));
    }
    if let Some(t) = &a.x509_thumbprint
        && (t.primary_thumbprint.is_some() || t.secondary_thumbprint.is_some())
    {
        out.push(("primaryThumbprint", opt(t.primary_thumbprint.as_deref())));
        out.push((
            "secondaryThumbprint",
            opt(t.secondary_thumbprint.as_deref()),
        ));
    }
}

/// A device as a key/value list.
pub(crate) fn device_fields(d: &Device) -> String {
    let mut f: Vec<(&str, String)> = vec![
        ("deviceId", d.device_id.clone()),
        ("status", status(d.status)),
        ("statusReason", opt(d.status_reason.as_deref())),
        ("connectionState", connection(d.connection_state)),
    ];
    credential_fields(d.authentication.as_ref(), &mut f);
    f.extend([
        (
            "iotEdge",
            d.capabilities
                .as_ref()
                .is_some_and(|c| c.iot_edge)
                .to_string(),
        ),
        ("etag", opt(d.etag.as_deref())),
        ("generationId", opt(d.generation_id.as_deref())),
        (
            "cloudToDeviceMessageCount",
            d.cloud_to_device_message_count.to_string(),
        ),
        ("statusUpdatedTime", time(&d.status_updated_time)),
        (
            "connectionStateUpdatedTime",
            time(&d.connection_state_updated_time),
        ),
        ("lastActivityTime", time(&d.last_activity_time)),
    ]);
    if let Some(scope) = &d.device_scope {
        f.push(("deviceScope", scope.clone()));
    }
    fields(&f)
}

/// Devices, one per row.
pub(crate) fn devices_table(devices: &[Device]) -> String {
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            vec![
                d.device_id.clone(),
                status(d.status),
                connection(d.connection_state),
                auth_type(d.authentication.as_ref()),
                if d.capabilities.as_ref().is_some_and(|c| c.iot_edge) {
                    "yes".to_owned()
                } else {
                    "no".to_owned()
                },
                d.cloud_to_device_message_count.to_string(),
                time(&d.last_activity_time),
            ]
        })
        .collect();
    table(
        &[
            "DEVICE ID",
            "STATUS",
            "CONNECTION",
            "AUTH",
            "EDGE",
            "C2D QUEUED",
            "LAST ACTIVITY",
        ],
        &rows,
    )
}

/// A module as a key/value list.
pub(crate) fn module_fields(m: &Module) -> String {
    let mut f: Vec<(&str, String)> = vec![
        ("deviceId", m.device_id.clone()),
        ("moduleId", m.module_id.clone()),
        ("connectionState", connection(m.connection_state)),
    ];
    credential_fields(m.authentication.as_ref(), &mut f);
    f.extend([
        ("managedBy", opt(m.managed_by.as_deref())),
        ("etag", opt(m.etag.as_deref())),
        ("generationId", opt(m.generation_id.as_deref())),
        (
            "cloudToDeviceMessageCount",
            m.cloud_to_device_message_count.to_string(),
        ),
        (
            "connectionStateUpdatedTime",
            time(&m.connection_state_updated_time),
        ),
        ("lastActivityTime", time(&m.last_activity_time)),
    ]);
    fields(&f)
}

/// Modules, one per row.
pub(crate) fn modules_table(modules: &[Module]) -> String {
    let rows: Vec<Vec<String>> = modules
        .iter()
        .map(|m| {
            vec![
                m.module_id.clone(),
                connection(m.connection_state),
                auth_type(m.authentication.as_ref()),
                opt(m.managed_by.as_deref()),
                time(&m.last_activity_time),
            ]
        })
        .collect();
    table(
        &[
            "MODULE ID",
            "CONNECTION",
            "AUTH",
            "MANAGED BY",
            "LAST ACTIVITY",
        ],
        &rows,
    )
}

/// A twin section's members as compact JSON, without `$metadata` and `$version` (the version is
/// a field of its own).
fn section(members: Option<&serde_json::Map<String, serde_json::Value>>) -> String {
    let Some(members) = members else {
        return "-".to_owned();
    };
    let user: serde_json::Map<String, serde_json::Value> = members
        .iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::Value::Object(user).to_string()
}

fn number(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// A twin as a key/value list: identity, versions, and each section as compact JSON.
pub(crate) fn twin_fields(t: &Twin) -> String {
    let properties = t.properties.as_ref();
    let desired = properties.and_then(|p| p.desired.as_ref());
    let reported = properties.and_then(|p| p.reported.as_ref());
    let mut f: Vec<(&str, String)> = vec![("deviceId", t.device_id.clone())];
    if let Some(m) = &t.module_id {
        f.push(("moduleId", m.clone()));
    }
    f.extend([
        ("etag", opt(t.etag.as_deref())),
        ("version", number(t.version)),
        ("status", status(t.status)),
        ("connectionState", connection(t.connection_state)),
        ("lastActivityTime", opt(t.last_activity_time.as_deref())),
        (
            "tags",
            t.tags.as_ref().map_or_else(
                || "-".to_owned(),
                |m| serde_json::Value::Object(m.clone()).to_string(),
            ),
        ),
        (
            "desiredVersion",
            number(ferrohub_api::TwinProperties::version(desired)),
        ),
        ("desired", section(desired)),
        (
            "reportedVersion",
            number(ferrohub_api::TwinProperties::version(reported)),
        ),
        ("reported", section(reported)),
    ]);
    fields(&f)
}

/// A direct method's answer: the device's status and payload.
pub(crate) fn method_result_fields(r: &CloudToDeviceMethodResult) -> String {
    fields(&[
        ("status", r.status.to_string()),
        ("payload", r.payload.to_string()),
    ])
}

/// Renders one API object: `table` for people, the object itself as JSON for scripts.
pub(crate) fn render<T: Serialize + ?Sized>(
    output: Output,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> Result<String, Failure> {
    match output {
        Output::Table => Ok(table(value)),
        Output::Json => json(value),
    }
}

#[cfg(test)]
mod tests {
    use ferrohub_api::{DeviceCapabilities, SymmetricKey};

    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let t = table(
            &["ID", "STATUS", "NOTE"],
            &[
                vec!["dev-long-name".into(), "enabled".into(), "".into()],
                vec!["d".into(), "disabled".into(), "x".into()],
            ],
        );
        assert_eq!(
            t,
            "ID             STATUS    NOTE\n\
             dev-long-name  enabled\n\
             d              disabled  x\n"
        );
    }

    #[test]
    fn empty_table_has_its_header() {
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
    }

    #[test]
    fn fields_align_names() {
        let f = fields(&[
            ("a", "1".into()),
            ("longer", "2".into()),
            ("empty", "".into()),
        ]);
        assert_eq!(f, "a       1\nlonger  2\nempty\n");
    }

    fn device() -> Device {
        Device {
            device_id: "dev1".into(),
            status: Some(DeviceStatus::Disabled),
            status_reason: Some("stolen".into()),
            etag: Some("MA==".into()),
            connection_state: Some(ConnectionState::Disconnected),
            authentication: Some(AuthenticationMechanism {
                symmetric_key: Some(SymmetricKey {
                    primary_key: Some("cHJpbWFyeQ==".into()),
                    secondary_key: Some("c2Vjb25kYXJ5".into()),
                }),
                x509_thumbprint: None,
                kind: Some(AuthenticationType::Sas),
            }),
            capabilities: Some(DeviceCapabilities { iot_edge: true }),
            ..Device::default()
        }
    }

    #[test]
    fn device_fields_show_keys_and_never() {
        let text = device_fields(&device());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "deviceId                    dev1");
        assert!(lines.contains(&"status                      disabled"));
        assert!(lines.contains(&"statusReason                stolen"));
        assert!(lines.contains(&"authentication              sas"));
        assert!(lines.contains(&"primaryKey                  cHJpbWFyeQ=="));
        assert!(lines.contains(&"iotEdge                     true"));
        assert!(lines.contains(&"lastActivityTime            never"));
        assert!(lines.contains(&"generationId                -"));
    }

    #[test]
    fn devices_table_rows() {
        let mut other = device();
        other.device_id = "a-much-longer-device-id".into();
        other.status = Some(DeviceStatus::Enabled);
        other.capabilities = None;
        let text = devices_table(&[device(), other]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("DEVICE ID                STATUS    CONNECTION"));
        assert!(lines[1].starts_with("dev1                     disabled  Disconnected  sas   yes"));
        assert!(lines[2].starts_with("a-much-longer-device-id  enabled   Disconnected  sas   no"));
        assert!(lines[1].ends_with("never"));
    }

    #[test]
    fn json_is_the_api_object() {
        let text = render(Output::Json, &device(), device_fields).expect("json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(v["deviceId"], "dev1");
        assert_eq!(v["status"], "disabled");
        assert_eq!(
            v["authentication"]["symmetricKey"]["primaryKey"],
            "cHJpbWFyeQ=="
        );
        assert!(text.contains("\n  \"deviceId\""), "pretty printed");
    }

    #[test]
    fn modules_table_rows() {
        let m = Module {
            module_id: "m1".into(),
            device_id: "dev1".into(),
            managed_by: Some("IotEdge".into()),
            ..Module::default()
        };
        let text = modules_table(std::slice::from_ref(&m));
        assert_eq!(
            text.lines().nth(1),
            Some("m1         -           -     IotEdge     never")
        );
        let f = module_fields(&m);
        assert!(f.contains("moduleId                    m1\n"));
        assert!(f.contains("authentication              -\n"));
    }
}
